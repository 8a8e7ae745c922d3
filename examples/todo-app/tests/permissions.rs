//! Users and permissions that hold on every event: two users with private lists and one
//! shared list, every verb and every filter form; no reply, event or error ever shows one
//! user another's object. Identity from signed, expiring tokens.

mod common;
#[path = "common/presence.rs"]
mod presence_support;
#[path = "common/redis.rs"]
mod redis_support;

use std::time::Duration;

use common::{Backend, QUIET, TestApp, WAIT};
use dragon_core::auth::Tokens;
use dragon_core::client::{Client, ClientError};
use dragon_core::presence::{Keys, Presence};
use dragon_core::protocol::close;
use dragon_core::router::{Rule, Verb};
use dragon_core::{Error, Limits, ModelRouter, now};
use serde_json::{Value, json};
use todo_app::entity::{todo_item, todo_list};

const SECRET: &[u8] = b"permissions test secret, 32 bytes or more";

/// Lists: 1 is alice's, 2 is bob's, 3 is shared (both read it, alice writes it).
fn user(name: &str) -> Value {
    match name {
        "alice" => json!({"name": "alice", "reads": [1, 3], "writes": [1, 3]}),
        _ => json!({"name": "bob", "reads": [2, 3], "writes": [2]}),
    }
}

fn lists_of(u: Option<&Value>, key: &str) -> Result<Value, Error> {
    Ok(u.ok_or(Error::Unauthenticated)?[key].clone())
}

async fn app(backend: Backend, limits: Limits) -> TestApp {
    let url = common::fresh_database(backend).await;
    let db = todo_app::open_database(&url).await.unwrap();
    let dragon = builder(&db).limits(limits).build();
    TestApp::serve(dragon, db, url).await
}

/// The routes with their rules, and the token authenticator.
fn builder(db: &sea_orm::DatabaseConnection) -> dragon_core::server::Builder {
    let items = ModelRouter::<todo_item::Model>::new(db.clone())
        .filterable(["id", "list_id", "text", "done"])
        .orderable(["id"])
        .writable(["list_id", "text", "done"])
        .server_set("created_at", |_| now())
        .references::<todo_list::Entity>("list_id")
        .readable_by(|u| Ok(json!({"list_id__in": lists_of(u, "reads")?})))
        .writable_by(|u| Ok(json!({"list_id__in": lists_of(u, "writes")?})))
        .permit(&Verb::ALL, Rule::Authenticated)
        .presence(Presence::new().keys(Keys::Objects));
    let lists = ModelRouter::<todo_list::Model>::new(db.clone())
        .filterable(["id"])
        .readable_by(|u| Ok(json!({"id__in": lists_of(u, "reads")?})))
        .permit(&Verb::READ, Rule::Authenticated);
    dragon_core::Dragon::builder()
        .route(items)
        .route(lists)
        .auth(Tokens::new(SECRET))
}

async fn connect(app: &TestApp, who: &str) -> Client {
    let token = Tokens::new(SECRET).issue(&user(who)).unwrap();
    Client::connect(&format!("{}?token={token}", app.ws_url()))
        .await
        .unwrap()
}

/// Creates lists 1..=3 and an item in each, as the server would (through the derive).
async fn seed(app: &TestApp) -> (i64, i64, i64) {
    use sea_orm::{ActiveModelTrait, Set};
    for name in ["alice's", "bob's", "shared"] {
        todo_list::ActiveModel {
            name: Set(name.into()),
            created_at: Set(chrono::Utc::now()),
            ..Default::default()
        }
        .insert(&app.db)
        .await
        .unwrap();
    }
    let mut ids = Vec::new();
    for (list, text) in [(1, "alice secret"), (2, "bob's own"), (3, "shared note")] {
        let item = todo_item::ActiveModel {
            list_id: Set(list),
            text: Set(text.into()),
            created_at: Set(chrono::Utc::now()),
            ..Default::default()
        }
        .insert(&app.db)
        .await
        .unwrap();
        ids.push(item.id);
    }
    (ids[0], ids[1], ids[2])
}

fn texts(rows: &Value) -> Vec<String> {
    let mut t: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["text"].as_str().unwrap().to_owned())
        .collect();
    t.sort();
    t
}

/// The error a call got, with its code and message.
fn refused(result: Result<dragon_core::protocol::Output, ClientError>) -> (String, String) {
    match result {
        Err(ClientError::Server(body)) => (body.code.as_str().to_owned(), body.message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn nothing_of_another_user_ever_shows(backend: Backend) {
    let app = app(backend, Limits::default()).await;
    let (secret, _own, shared) = seed(&app).await;
    let alice = connect(&app, "alice").await;
    let bob = connect(&app, "bob").await;
    let anonymous = app.client().await;

    // Anonymous callers are refused everything.
    let (code, _) = refused(anonymous.call("todo-item", "get_list", json!({})).await);
    assert_eq!(code, "unauthenticated");

    // Reads: every filter form.
    for filter in [
        json!({}),
        json!({"$or": [{"list_id": 1}, {"id": secret}]}),
        json!({"$not": {"list_id": 2}}),
        json!({"list_id__in": [1, 2, 3]}),
        json!({"id": secret}),
        json!({"text__icontains": "SECRET"}),
        json!({"$not": {"$or": [{"list_id": 2}, {"list_id": 3}]}}),
    ] {
        let rows = bob
            .call("todo-item", "get_list", json!({"filter": filter}))
            .await
            .unwrap()
            .data;
        assert!(
            !rows.to_string().contains("alice secret"),
            "{filter}: {rows}"
        );
    }
    let all = bob.call("todo-item", "get_list", json!({})).await.unwrap();
    assert_eq!(texts(&all.data), ["bob's own", "shared note"]);
    assert_eq!(
        all.meta.unwrap()["total"],
        2,
        "counts only what bob may see"
    );

    // A hidden object and a missing one are refused alike, by every verb.
    for (verb, args) in [
        ("get_single", json!({"id": secret})),
        ("update", json!({"id": secret, "data": {"text": "pwned"}})),
        ("delete", json!({"id": secret})),
        ("presence_join", json!({"key": secret})),
    ] {
        let hidden = refused(bob.call("todo-item", verb, args.clone()).await);
        let mut missing_args = args;
        let key = if verb == "presence_join" { "key" } else { "id" };
        missing_args[key] = json!(987_654);
        let missing = refused(bob.call("todo-item", verb, missing_args).await);
        assert_eq!(hidden, missing, "{verb}: a hidden object looks missing");
        assert!(!hidden.1.contains("secret"));
    }
    // Writing into, or moving into, a list bob may not write: refused, nothing changes.
    let (code, _) = refused(
        bob.call(
            "todo-item",
            "create",
            json!({"data": {"list_id": 1, "text": "x"}}),
        )
        .await,
    );
    assert_eq!(code, "forbidden");
    let (code, _) = refused(
        bob.call(
            "todo-item",
            "update",
            json!({"id": shared, "data": {"text": "mine now"}}),
        )
        .await,
    );
    assert_eq!(
        code, "forbidden",
        "bob reads the shared list but may not write it"
    );
    let (code, _) = refused(bob.call("todo-list", "create", json!({"data": {}})).await);
    assert_eq!(
        code, "forbidden",
        "no rule for create on lists: denied by default"
    );

    // Live: a subscription with a snapshot, and one replaying from a position.
    let mut everything = bob
        .subscribe("todo-item", json!({"filter": {}, "snapshot": true}))
        .await
        .unwrap();
    assert_eq!(
        texts(&everything.reply["items"]),
        ["bob's own", "shared note"]
    );
    let since = everything.reply["position"].as_str().unwrap().to_owned();
    let mut sneaky = bob
        .subscribe(
            "todo-item",
            json!({"filter": {"$or": [{"list_id": 1}, {"id": secret}]}}),
        )
        .await
        .unwrap();
    // Alice works in her own list: bob hears nothing.
    let a2 = alice
        .call(
            "todo-item",
            "create",
            json!({"data": {"list_id": 1, "text": "alice secret 2"}}),
        )
        .await
        .unwrap()
        .data;
    alice
        .call(
            "todo-item",
            "update",
            json!({"id": secret, "data": {"text": "alice secret!"}}),
        )
        .await
        .unwrap();
    alice
        .call("todo-item", "delete", json!({"id": a2["id"]}))
        .await
        .unwrap();
    for sub in [&mut everything, &mut sneaky] {
        if let Some(e) = sub.next_within(QUIET).await {
            panic!("bob received {e:?}");
        }
    }
    // Alice moves the shared note into her own list: bob sees it leave with the state he
    // was allowed to see, never the new one.
    alice
        .call(
            "todo-item",
            "update",
            json!({"id": shared, "data": {"list_id": 1, "text": "alice secret 3"}}),
        )
        .await
        .unwrap();
    let e = everything
        .next_within(WAIT)
        .await
        .expect("the note left bob's view");
    assert_eq!(e.event, "deleted");
    assert_eq!(e.data.as_ref().unwrap()["text"], "shared note");
    assert_eq!(e.data.as_ref().unwrap()["list_id"], 3);
    assert!(sneaky.next_within(QUIET).await.is_none());
    // And back: it enters as created, with its now-visible state.
    alice
        .call(
            "todo-item",
            "update",
            json!({"id": shared, "data": {"list_id": 3, "text": "shared again"}}),
        )
        .await
        .unwrap();
    let e = everything
        .next_within(WAIT)
        .await
        .expect("back in bob's view");
    assert_eq!(e.event, "created");
    assert_eq!(e.data.as_ref().unwrap()["text"], "shared again");

    // A replay from before all of it shows bob only what he may see.
    let mut replay = bob
        .subscribe("todo-item", json!({"filter": {}, "since": since}))
        .await
        .unwrap();
    let mut replayed = Vec::new();
    while let Some(e) = replay.next_within(QUIET).await {
        replayed.push(e);
    }
    assert_eq!(replayed.len(), 2, "{replayed:?}");
    for e in &replayed {
        let text = e.data.as_ref().unwrap().to_string();
        assert!(!text.contains("alice secret 3"), "{text}");
        assert!(!text.contains("alice secret\""), "{text}");
    }
    // Lists: bob sees his and the shared one, never alice's.
    let lists = bob
        .call("todo-list", "get_list", json!({}))
        .await
        .unwrap()
        .data;
    let names: Vec<_> = lists
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].clone())
        .collect();
    assert_eq!(names, [json!("bob's"), json!("shared")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_of_another_user_ever_shows_sqlite() {
    nothing_of_another_user_ever_shows(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_of_another_user_ever_shows_postgres() {
    nothing_of_another_user_ever_shows(Backend::Postgres).await;
}

/// A token that expires without a new one closes the connection with 4003 after the
/// grace period; `dragon.auth` with a fresh token in time keeps it open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_closes_the_connection_unless_renewed() {
    let limits = Limits {
        token_grace: Duration::from_millis(500),
        ..Limits::default()
    };
    let app = app(Backend::Sqlite, limits).await;
    let short = Tokens::new(SECRET).ttl(Duration::from_secs(1));
    let url = |token: &str| format!("{}?token={token}", app.ws_url());
    let lapsing = Client::connect(&url(&short.issue(&user("bob")).unwrap()))
        .await
        .unwrap();
    let renewed = Client::connect(&url(&short.issue(&user("bob")).unwrap()))
        .await
        .unwrap();
    assert_eq!(lapsing.hello()["user"]["name"], "bob");
    let fresh = Tokens::new(SECRET)
        .ttl(Duration::from_secs(60))
        .issue(&user("bob"))
        .unwrap();
    renewed
        .call("dragon", "auth", json!({"token": fresh}))
        .await
        .unwrap();
    assert_eq!(
        lapsing.closed(Duration::from_secs(5)).await,
        Some(close::TOKEN_EXPIRED)
    );
    assert!(
        renewed
            .call("todo-item", "get_list", json!({}))
            .await
            .is_ok()
    );
    // A forged or expired token is no identity at all.
    let forged = Client::connect(&url("not-a-token")).await.unwrap();
    assert_eq!(forged.hello()["user"], Value::Null);
    // The same token as a session cookie, or an Authorization header, identifies too.
    let cookie = Tokens::new(SECRET).session_cookie(&user("alice")).unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let bearer = format!(
        "Bearer {}",
        Tokens::new(SECRET).issue(&user("alice")).unwrap()
    );
    for (name, value) in [("Cookie", cookie), ("Authorization", bearer)] {
        assert_eq!(
            hello_user(&app, name, &value).await["name"],
            "alice",
            "{name}"
        );
    }
}

/// The `hello` user of a socket opened with one extra request header.
async fn hello_user(app: &TestApp, name: &'static str, value: &str) -> Value {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = app.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(name, value.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let hello = ws.next().await.unwrap().unwrap();
    let hello: Value = serde_json::from_str(hello.to_text().unwrap()).unwrap();
    hello["data"]["user"].clone()
}

/// Revoking a user on one node ends their subscriptions on every node within a second; a
/// hundred further changes reach them not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_holds_across_nodes() {
    use redis_support::{connect_broker, delete_keys, isolated_options, redis_url};
    let url = common::fresh_database(Backend::Postgres).await;
    let db = todo_app::open_database(&url).await.unwrap();
    let options = isolated_options();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let broker: std::sync::Arc<dyn dragon_core::broker::Broker> =
            connect_broker(&redis_url(), options.clone()).await;
        let dragon = builder(&db).broker(broker).build();
        nodes.push(TestApp::serve(dragon, db.clone(), url.clone()).await);
    }
    seed(&nodes[0]).await;
    let alice = connect(&nodes[0], "alice").await;
    let bob = connect(&nodes[1], "bob").await;
    let mut live = bob
        .subscribe("todo-item", json!({"filter": {"list_id": 3}}))
        .await
        .unwrap();
    let write = |n: usize| {
        let alice = &alice;
        async move {
            alice
                .call(
                    "todo-item",
                    "create",
                    json!({"data": {"list_id": 3, "text": format!("note {n}")}}),
                )
                .await
                .unwrap();
        }
    };
    write(0).await;
    assert_eq!(
        live.next_within(WAIT)
            .await
            .expect("bob sees the shared list")
            .event,
        "created"
    );
    while live.next_within(QUIET).await.is_some() {} // the seeded rows, relayed meanwhile

    let revoked_at = std::time::Instant::now();
    nodes[0]
        .dragon
        .revoke(dragon_core::auth::Revoke::User {
            field: "name".into(),
            value: json!("bob"),
        })
        .await
        .unwrap();
    let e = live
        .next_within(Duration::from_secs(1))
        .await
        .expect("told within 1 s");
    assert_eq!(e.event, "error");
    assert_eq!(e.data.as_ref().unwrap()["code"], "forbidden");
    println!("revoked on the other node in {:?}", revoked_at.elapsed());
    for n in 1..=100 {
        write(n).await;
    }
    let mut after = 0;
    while live.next_within(QUIET).await.is_some() {
        after += 1;
    }
    assert_eq!(after, 0, "nothing after the revocation");
    // The connection lost its user: it is refused until it signs in again.
    let (code, _) = refused(bob.call("todo-item", "get_list", json!({})).await);
    assert_eq!(code, "unauthenticated");
    delete_keys(&redis_url(), &options.key_prefix);
}

/// `references` checks the referenced row with the caller's rules on its own route: linking
/// to a list bob may not read is refused exactly like linking to a list that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_are_checked_with_the_readers_rules() {
    let url = common::fresh_database(Backend::Sqlite).await;
    let db = todo_app::open_database(&url).await.unwrap();
    // Items carry no rule of their own here: only the lists route decides what bob sees.
    let items = ModelRouter::<todo_item::Model>::new(db.clone())
        .writable(["list_id", "text"])
        .server_set("created_at", |_| now())
        .references::<todo_list::Entity>("list_id");
    let lists = ModelRouter::<todo_list::Model>::new(db.clone())
        .readable_by(|u| Ok(json!({"id__in": lists_of(u, "reads")?})));
    let dragon = dragon_core::Dragon::builder()
        .route(items)
        .route(lists)
        .auth(Tokens::new(SECRET))
        .build();
    let app = TestApp::serve(dragon, db, url).await;
    seed(&app).await;
    let bob = connect(&app, "bob").await;
    let attempt = |list: i64| {
        let bob = &bob;
        async move {
            match bob
                .call(
                    "todo-item",
                    "create",
                    json!({"data": {"list_id": list, "text": "x"}}),
                )
                .await
            {
                Err(ClientError::Server(body)) => (body.code, body.message, body.details),
                Ok(out) => panic!("created in list {list}: {out:?}"),
                Err(other) => panic!("{other:?}"),
            }
        }
    };
    let hidden = attempt(1).await; // alice's list: it exists
    let missing = attempt(99).await;
    assert_eq!(hidden, missing, "a hidden list looks missing");
    assert_eq!(hidden.0.as_str(), "validation");
    // Bob's own list works.
    bob.call(
        "todo-item",
        "create",
        json!({"data": {"list_id": 2, "text": "mine"}}),
    )
    .await
    .unwrap();
}

/// Revoking one connection, or one object, on one node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_connection_or_an_object() {
    use dragon_core::auth::Revoke;
    let app = app(Backend::Sqlite, Limits::default()).await;
    let (_, own, shared) = seed(&app).await;
    let bob1 = connect(&app, "bob").await;
    let bob2 = connect(&app, "bob").await;
    let mut one = bob1.subscribe("todo-item", json!({})).await.unwrap();
    let mut two = bob2.subscribe("todo-item", json!({})).await.unwrap();
    let mut pinned = bob2
        .subscribe("todo-item", json!({"filter": {"id": shared}}))
        .await
        .unwrap();
    while one.next_within(QUIET).await.is_some() {}
    while two.next_within(QUIET).await.is_some() {}
    while pinned.next_within(QUIET).await.is_some() {}
    let conn = bob1.hello()["conn"].as_str().unwrap().to_owned();
    app.dragon
        .revoke(Revoke::Connection { conn })
        .await
        .unwrap();
    let e = one.next_within(WAIT).await.expect("bob1 told");
    assert_eq!(e.event, "error");
    assert_eq!(e.data.as_ref().unwrap()["revoked"], "connection");
    assert!(two.next_within(QUIET).await.is_none(), "bob2 untouched");
    // One object: the subscription naming it ends; the others reload.
    app.dragon
        .revoke(Revoke::Object {
            route: "todo-item".into(),
            id: json!(shared),
        })
        .await
        .unwrap();
    let e = pinned.next_within(WAIT).await.expect("the pinned one ends");
    assert_eq!(e.event, "error");
    assert_eq!(e.data.as_ref().unwrap()["revoked"], "object");
    assert_eq!(
        two.next_within(WAIT).await.expect("a reload").event,
        "resync"
    );
    // bob2 keeps its user: it subscribes again and sees what the rules allow.
    let again = bob2
        .subscribe("todo-item", json!({"snapshot": true}))
        .await
        .unwrap();
    let ids: Vec<i64> = again.reply["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert!(ids.contains(&own) && ids.contains(&shared), "{ids:?}");
}

/// Presence joined as one user does not outlive a switch to another: `dragon.auth` as
/// someone else leaves every key the connection had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_left_when_the_user_changes() {
    let app = app(Backend::Sqlite, Limits::default()).await;
    let (_, _, shared) = seed(&app).await;
    let bob = connect(&app, "bob").await;
    let watcher = connect(&app, "alice").await;
    watcher
        .call("todo-item", "presence_watch", json!({"key": shared}))
        .await
        .unwrap();
    bob.call("todo-item", "presence_join", json!({"key": shared}))
        .await
        .unwrap();
    let joined = presence_support::expect_presence(&watcher).await;
    assert_eq!(joined.extra["joins"][0]["user"]["name"], "bob");
    let alice_token = Tokens::new(SECRET).issue(&user("alice")).unwrap();
    bob.call("dragon", "auth", json!({"token": alice_token}))
        .await
        .unwrap();
    let left = presence_support::expect_presence(&watcher).await;
    assert_eq!(left.extra["leaves"][0]["user"]["name"], "bob", "{left:?}");
}
