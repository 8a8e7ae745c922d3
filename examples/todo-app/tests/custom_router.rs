//! Custom routers (own verbs, own events), auth, and the `dragon` route.

mod common;

use std::time::Duration;

use common::{Backend, QUIET, TestApp, WAIT};
use dragon_core::client::{Client, ClientError};
use dragon_core::protocol::{ErrorCode, Output};
use dragon_core::router::{Subscribe, Verbs};
use dragon_core::schema::{FieldType, Schema};
use dragon_core::{Authenticator, Ctx, Error};
use serde_json::{Value, json};

#[derive(serde::Deserialize)]
struct SendArgs {
    room: String,
    text: Value,
}

/// A tiny chat: `send` publishes a `message` event; `subscribe` takes a filter on `room`.
fn chat() -> Verbs {
    Verbs::new("chat", ())
        .events(Schema::new(vec![]).field("room", FieldType::Text, false))
        .verb("send", |_, ctx: Ctx, args: SendArgs| async move {
            let user = ctx.require_user()?;
            if args.room == "staff" && user["staff"] != true {
                return Err(Error::Forbidden("staff only".into()));
            }
            let data = json!({"room": args.room, "text": args.text, "user": user["name"]});
            ctx.publish("chat", "message", data).await?;
            Ok(json!({"sent": true}))
        })
        // A subscription whose handler fails: one reply (the error), no subscription.
        .subscription("subscribe_then_fail", |_, _ctx: Ctx, _: Value| async move {
            Err::<Subscribe, _>(Error::Internal("failed before subscribing".into()))
        })
}

struct Tokens;

#[async_trait::async_trait]
impl Authenticator for Tokens {
    async fn authenticate(&self, token: &str) -> Result<Option<Value>, Error> {
        Ok(match token {
            "alice" => Some(json!({"name": "alice", "staff": true, "list": 1})),
            "bob" => Some(json!({"name": "bob", "staff": false, "list": 2})),
            "backend-down" => return Err(Error::Unavailable("user store unreachable".into())),
            _ => None,
        })
    }
}

async fn custom_verbs_and_events(backend: Backend) {
    let app = TestApp::start_with(backend, None, |b| b.route(chat()).auth(Tokens)).await;
    let alice = Client::connect(&format!("{}?token=alice", app.ws_url()))
        .await
        .unwrap();
    assert_eq!(alice.hello()["user"]["name"], "alice");
    let bob = app.client().await;
    assert_eq!(bob.hello()["user"], Value::Null);
    assert_eq!(
        bob.call("dragon", "whoami", json!({})).await.unwrap().data,
        Value::Null
    );

    // Anonymous users may not send; after `dragon.auth` they may.
    let err = bob
        .call("chat", "send", json!({"room": "lobby", "text": "hi"}))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Server(ref b) if b.code == ErrorCode::Unauthenticated));
    let bad = bob
        .call("dragon", "auth", json!({"token": "mallory"}))
        .await
        .unwrap_err();
    assert!(matches!(bad, ClientError::Server(ref b) if b.code == ErrorCode::Unauthenticated));
    let me = bob
        .call("dragon", "auth", json!({"token": "bob"}))
        .await
        .unwrap();
    assert_eq!(me.data["name"], "bob");
    assert_eq!(
        bob.call("dragon", "whoami", json!({})).await.unwrap().data["name"],
        "bob"
    );

    alice
        .call("chat", "subscribe", json!({"filter": {"room": "lobby"}}))
        .await
        .unwrap();
    let mut sub = alice
        .subscribe("chat", json!({"filter": {"room": "lobby"}}))
        .await
        .unwrap();
    bob.call("chat", "send", json!({"room": "lobby", "text": "hello"}))
        .await
        .unwrap();
    let e = sub.next_within(WAIT).await.expect("message event");
    assert_eq!(e.event, "message");
    assert_eq!(e.data.as_ref().unwrap()["user"], "bob");
    assert_eq!(
        e.subs.len(),
        2,
        "both of alice's lobby subscriptions in one frame"
    );
    bob.call("chat", "send", json!({"room": "kitchen", "text": "psst"}))
        .await
        .unwrap();
    assert!(
        sub.next_within(QUIET).await.is_none(),
        "other rooms are not delivered"
    );

    let err = bob
        .call(
            "chat",
            "send",
            json!({"room": "staff", "text": "let me in"}),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Server(ref b) if b.code == ErrorCode::Forbidden));
}

async fn required_auth_closes_4001(backend: Backend) {
    let app = TestApp::start_with(backend, None, |b| b.auth(Tokens).require_auth(true)).await;
    let (mut anon, _) = tokio_tungstenite::connect_async(app.ws_url())
        .await
        .unwrap();
    use futures_util::StreamExt;
    let frame = tokio::time::timeout(Duration::from_secs(5), anon.next())
        .await
        .unwrap();
    match frame {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
            assert_eq!(u16::from(f.code), 4001)
        }
        other => panic!("expected close 4001, got {other:?}"),
    }
    let bad = Client::connect(&format!("{}?token=mallory", app.ws_url())).await;
    assert!(bad.is_err(), "a bad token is refused too");
    let alice = Client::connect(&format!("{}?token=alice", app.ws_url()))
        .await
        .unwrap();
    assert_eq!(
        alice
            .call("dragon", "whoami", json!({}))
            .await
            .unwrap()
            .data["name"],
        "alice"
    );
}

/// A router may force a scope: here each user sees and writes only their own list's items.
async fn scope_is_forced_on_everything(backend: Backend) {
    use dragon_core::ModelRouter;
    use todo_app::entity::{todo_item, todo_list};
    let url = common::fresh_database(backend).await;
    let db = todo_app::open_database(&url).await.unwrap();
    let items = ModelRouter::<todo_item::Model>::new(db.clone())
        .filterable(["list_id", "text"])
        .writable(["list_id", "text"])
        .server_set("created_at", |_| dragon_core::now())
        .scope(|ctx| Ok(json!({"list_id": ctx.require_user()?["list"]})))
        .authorize(|ctx, verb| match verb {
            "delete" if ctx.user().is_some_and(|u| u["staff"] != true) => {
                Err(Error::Forbidden("only staff may delete".into()))
            }
            _ => Ok(()),
        });
    let lists = ModelRouter::<todo_list::Model>::new(db.clone())
        .writable(["name"])
        .server_set("created_at", |_| dragon_core::now());
    let dragon = dragon_core::Dragon::builder()
        .route(items)
        .route(lists)
        .auth(Tokens)
        .build();
    let app = TestApp::serve(dragon, db, url).await;
    let alice = Client::connect(&format!("{}?token=alice", app.ws_url()))
        .await
        .unwrap();
    let bob = Client::connect(&format!("{}?token=bob", app.ws_url()))
        .await
        .unwrap();
    for name in ["A", "B"] {
        alice
            .call("todo-list", "create", json!({"data": {"name": name}}))
            .await
            .unwrap();
    }
    let mut alice_sub = alice.subscribe("todo-item", json!({})).await.unwrap();
    let mine = alice
        .call(
            "todo-item",
            "create",
            json!({"data": {"list_id": 1, "text": "a"}}),
        )
        .await
        .unwrap()
        .data;
    let theirs = bob
        .call(
            "todo-item",
            "create",
            json!({"data": {"list_id": 2, "text": "b"}}),
        )
        .await
        .unwrap()
        .data;
    assert_eq!(
        alice_sub.next_within(WAIT).await.unwrap().data.unwrap()["id"],
        mine["id"]
    );
    assert!(
        alice_sub.next_within(QUIET).await.is_none(),
        "bob's item is outside alice's scope"
    );

    let code = |r: Result<Output, ClientError>| match r {
        Err(ClientError::Server(b)) => b.code,
        other => panic!("expected an error, got {other:?}"),
    };
    let seen = alice
        .call("todo-item", "get_list", json!({"filter": {"list_id": 2}}))
        .await
        .unwrap();
    assert_eq!(
        seen.data,
        json!([]),
        "the client's filter cannot lift the scope"
    );
    assert_eq!(
        alice
            .call("todo-item", "get_list", json!({}))
            .await
            .unwrap()
            .data
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        code(
            alice
                .call("todo-item", "get_single", json!({"id": theirs["id"]}))
                .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(
            alice
                .call(
                    "todo-item",
                    "update",
                    json!({"id": theirs["id"], "data": {"text": "x"}})
                )
                .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(
            alice
                .call("todo-item", "delete", json!({"id": theirs["id"]}))
                .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(
            alice
                .call(
                    "todo-item",
                    "create",
                    json!({"data": {"list_id": 2, "text": "sneaky"}})
                )
                .await
        ),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(
            alice
                .call(
                    "todo-item",
                    "update",
                    json!({"id": mine["id"], "data": {"list_id": 2}})
                )
                .await
        ),
        ErrorCode::Forbidden
    );
    // A list that does not exist answers the same as another tenant's list: the scope is
    // checked before the reference, so ids cannot be probed.
    for list in [2, 999_999] {
        let create = json!({"data": {"list_id": list, "text": "probe"}});
        assert_eq!(
            code(alice.call("todo-item", "create", create).await),
            ErrorCode::Forbidden,
            "create in list {list}"
        );
        let update = json!({"id": mine["id"], "data": {"list_id": list}});
        assert_eq!(
            code(alice.call("todo-item", "update", update).await),
            ErrorCode::Forbidden,
            "move to list {list}"
        );
    }
    let still = bob
        .call("todo-item", "get_list", json!({}))
        .await
        .unwrap()
        .data;
    assert_eq!(
        still.as_array().unwrap().len(),
        1,
        "nothing was created or moved into bob's list"
    );
    let anon = app.client().await;
    assert_eq!(
        code(anon.call("todo-item", "get_list", json!({})).await),
        ErrorCode::Unauthenticated
    );
    // The router's own permission check: bob (not staff) may not delete, even his own item.
    assert_eq!(
        code(
            bob.call("todo-item", "delete", json!({"id": theirs["id"]}))
                .await
        ),
        ErrorCode::Forbidden
    );
    alice
        .call("todo-item", "delete", json!({"id": mine["id"]}))
        .await
        .unwrap();
}

/// With allowed origins configured, a socket from another origin is closed with 1008.
async fn foreign_origin_closes_1008(backend: Backend) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = TestApp::start_with(backend, None, |b| {
        b.allowed_origins(["http://good.example"])
    })
    .await;
    let connect = |origin: &'static str| {
        let mut req = app.ws_url().into_client_request().unwrap();
        req.headers_mut().insert("Origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(req)
    };
    let (mut bad, _) = connect("http://evil.example").await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), bad.next())
        .await
        .unwrap()
    {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
            assert_eq!(u16::from(f.code), 1008)
        }
        other => panic!("expected close 1008, got {other:?}"),
    }
    let (mut good, _) = connect("http://good.example").await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), good.next())
        .await
        .unwrap()
    {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
            assert!(t.as_str().contains("hello"))
        }
        other => panic!("expected hello, got {other:?}"),
    }
}

/// A snapshot larger than the router allows is refused with a clear error, not loaded.
async fn oversized_snapshot_is_refused(backend: Backend) {
    use dragon_core::ModelRouter;
    use todo_app::entity::{todo_item, todo_list};
    let url = common::fresh_database(backend).await;
    let db = todo_app::open_database(&url).await.unwrap();
    let items = ModelRouter::<todo_item::Model>::new(db.clone())
        .filterable(["list_id", "text"])
        .writable(["list_id", "text"])
        .server_set("created_at", |_| dragon_core::now())
        .max_snapshot(2);
    let lists = ModelRouter::<todo_list::Model>::new(db.clone())
        .writable(["name"])
        .server_set("created_at", |_| dragon_core::now());
    let dragon = dragon_core::Dragon::builder()
        .route(items)
        .route(lists)
        .build();
    let app = TestApp::serve(dragon, db, url).await;
    let c = app.client().await;
    let list = common::new_list(&c, "L").await;
    for text in ["a", "b", "c"] {
        common::new_item(&c, list, text).await;
    }
    let err = c
        .subscribe("todo-item", json!({"snapshot": true}))
        .await
        .err()
        .expect("too large");
    match err {
        ClientError::Server(b) => {
            assert_eq!(b.code, ErrorCode::BadRequest);
            assert!(b.message.contains("more than 2"), "{}", b.message);
        }
        other => panic!("{other}"),
    }
    let ok = c
        .subscribe(
            "todo-item",
            json!({"snapshot": true, "filter": {"text__ne": "c"}}),
        )
        .await
        .unwrap();
    assert_eq!(ok.reply["items"].as_array().unwrap().len(), 2);
}

both_backends!(
    oversized_snapshot_is_refused,
    custom_verbs_and_events,
    required_auth_closes_4001,
    scope_is_forced_on_everything,
    foreign_origin_closes_1008
);

/// The protocol promises exactly one reply per request: a subscription handler that fails
/// answers once, with its error, and subscribes nothing (a handler cannot reply itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_answered_once_even_if_its_router_fails_after_replying() {
    let app = TestApp::start_with(Backend::Sqlite, None, |b| b.route(chat())).await;
    let c = app.client().await;
    c.send_text(r#"{"id": 99, "route": "chat", "verb": "subscribe_then_fail"}"#)
        .unwrap();
    let mut replies = Vec::new();
    while let Some(frame) = c.next_other(QUIET).await {
        if let dragon_core::protocol::ServerFrame::Reply(r) = frame {
            replies.push(r);
        }
    }
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(!replies[0].ok);
    assert_eq!(app.dragon.subscription_count(), 0);
}

/// An authenticator whose backend fails closes with 1013 (try again later), which clients
/// retry, not with the final 4001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticator_failure_is_a_retryable_close() {
    let app = TestApp::start_with(Backend::Sqlite, None, |b| b.auth(Tokens)).await;
    let url = format!("{}?token=backend-down", app.ws_url());
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    use futures_util::StreamExt;
    let frame = ws.next().await.unwrap().unwrap();
    match frame {
        tokio_tungstenite::tungstenite::Message::Close(Some(close)) => {
            assert_eq!(u16::from(close.code), 1013)
        }
        other => panic!("expected a close, got {other:?}"),
    }
    // A good token still works.
    let ok = Client::connect(&format!("{}?token=alice", app.ws_url()))
        .await
        .unwrap();
    assert_eq!(ok.hello()["user"]["name"], "alice");
}

/// Without an allow-list, only the app's own pages may open a socket (same origin);
/// clients that send no `Origin` (not browsers) are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_origin_is_the_default() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message as Ws;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = TestApp::start(Backend::Sqlite).await;
    let first_frame = |origin: String| {
        let mut req = app.ws_url().into_client_request().unwrap();
        req.headers_mut().insert("Origin", origin.parse().unwrap());
        async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
            tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
        }
    };
    match first_frame("http://evil.example".into()).await {
        Ws::Close(Some(f)) => assert_eq!(u16::from(f.code), 1008),
        other => panic!("a foreign page must be refused, got {other:?}"),
    }
    match first_frame(format!("http://{}", app.addr)).await {
        Ws::Text(t) => assert!(t.as_str().contains("hello")),
        other => panic!("the app's own page must be accepted, got {other:?}"),
    }
    let plain = app.client().await; // no Origin header
    assert!(plain.hello()["conn"].is_string());
}

/// `dragon.auth` as another user ends the subscriptions made as the previous one: they get
/// `resync`, and nothing their old scope let through reaches the new user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticating_as_another_user_ends_the_old_subscriptions() {
    use dragon_core::ModelRouter;
    use todo_app::entity::{todo_item, todo_list};
    let url = common::fresh_database(Backend::Sqlite).await;
    let db = todo_app::open_database(&url).await.unwrap();
    let items = ModelRouter::<todo_item::Model>::new(db.clone())
        .filterable(["list_id", "text"])
        .writable(["list_id", "text"])
        .server_set("created_at", |_| dragon_core::now())
        .scope(|ctx| Ok(json!({"list_id": ctx.require_user()?["list"]})));
    let lists = ModelRouter::<todo_list::Model>::new(db.clone())
        .writable(["name"])
        .server_set("created_at", |_| dragon_core::now());
    let dragon = dragon_core::Dragon::builder()
        .route(items)
        .route(lists)
        .auth(Tokens)
        .build();
    let app = TestApp::serve(dragon, db, url).await;
    let url = app.ws_url();
    let connect = |who: &str| {
        let url = format!("{url}?token={who}");
        async move { Client::connect(&url).await }
    };
    let (c, alice) = (
        connect("alice").await.unwrap(),
        connect("alice").await.unwrap(),
    );
    for name in ["A", "B"] {
        c.call("todo-list", "create", json!({"data": {"name": name}}))
            .await
            .unwrap();
    }
    let mut old = c.subscribe("todo-item", json!({})).await.unwrap();
    let me = c
        .call("dragon", "auth", json!({"token": "bob"}))
        .await
        .unwrap();
    assert_eq!(me.data["name"], "bob");
    let e = old.next_within(WAIT).await.expect("resync");
    assert_eq!(e.event, "resync");
    assert_eq!(e.subs, [old.id.clone()]);
    // Alice's new item would have matched the old (alice-scoped) subscription.
    alice
        .call(
            "todo-item",
            "create",
            json!({"data": {"list_id": 1, "text": "alice's"}}),
        )
        .await
        .unwrap();
    assert!(
        old.next_within(QUIET).await.is_none(),
        "the old subscription is gone"
    );
    // Subscribing again is as bob.
    let mut new = c.subscribe("todo-item", json!({})).await.unwrap();
    alice
        .call(
            "todo-item",
            "create",
            json!({"data": {"list_id": 1, "text": "more"}}),
        )
        .await
        .unwrap();
    assert!(
        new.next_within(QUIET).await.is_none(),
        "bob does not see list 1"
    );
    let bob = connect("bob").await.unwrap();
    bob.call(
        "todo-item",
        "create",
        json!({"data": {"list_id": 2, "text": "bob's"}}),
    )
    .await
    .unwrap();
    assert_eq!(new.next_within(WAIT).await.unwrap().event, "created");
}
