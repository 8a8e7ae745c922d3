//! `Verbs`: a router of typed verbs, with rules that hold on every event: a chat whose staff
//! room no one else ever hears, whatever they subscribe to.

mod common;

use common::{Backend, QUIET, TestApp, WAIT};
use dragon_core::auth::Tokens;
use dragon_core::client::{Client, ClientError};
use dragon_core::router::{Rule, Subscribe, Verbs};
use dragon_core::schema::{FieldType, Schema};
use dragon_core::{Ctx, Error};
use serde::Deserialize;
use serde_json::{Value, json};

const SECRET: &[u8] = b"verbs router test secret, long enough";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Send {
    room: String,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Join {
    room: String,
    since: Option<String>,
}

fn staff(user: Option<&Value>) -> bool {
    user.is_some_and(|u| u["staff"] == true)
}

fn chat() -> Verbs<&'static str> {
    Verbs::new("chat", "greeting from the state")
        .events(Schema::new(vec![]).field("room", FieldType::Text, false))
        .verb("send", |_, ctx: Ctx, args: Send| async move {
            let user = ctx.require_user()?;
            if args.room == "staff" && !staff(Some(&user)) {
                return Err(Error::NotFound);
            }
            let message = json!({"room": args.room, "text": args.text, "user": user["name"]});
            ctx.publish("chat", "message", message).await?;
            Ok(json!({"sent": true}))
        })
        .verb(
            "state",
            |state, _ctx: Ctx, _: Value| async move { Ok(state) },
        )
        .verb("typing", |_, ctx: Ctx, args: Join| async move {
            let user = ctx.require_user()?;
            let data = json!({"room": args.room, "user": user["name"]});
            ctx.publish_to_others("chat", "typing", data).await?;
            Ok(Value::Null)
        })
        .subscription("join", |_, _ctx: Ctx, args: Join| async move {
            if args.room.is_empty() {
                return Err(Error::bad_request("room must not be empty"));
            }
            Ok(Subscribe::filter(json!({"room": args.room})).since(args.since))
        })
        .readable_by(|user| {
            Ok(if staff(user) {
                json!({})
            } else {
                json!({"room__ne": "staff"})
            })
        })
        .permit(
            &["send", "join", "subscribe", "state", "typing"],
            Rule::Authenticated,
        )
}

async fn connect(app: &TestApp, user: Value) -> Client {
    let token = Tokens::new(SECRET).issue(&user).unwrap();
    Client::connect(&format!("{}?token={token}", app.ws_url()))
        .await
        .unwrap()
}

fn code(result: Result<dragon_core::protocol::Output, ClientError>) -> String {
    match result {
        Err(ClientError::Server(body)) => body.code.as_str().to_owned(),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_verbs_and_rules_on_every_event() {
    let app = TestApp::start_with(Backend::Sqlite, None, |b| {
        b.route(chat()).auth(Tokens::new(SECRET))
    })
    .await;
    let alice = connect(&app, json!({"name": "alice", "staff": true})).await;
    let bob = connect(&app, json!({"name": "bob", "staff": false})).await;
    let anonymous = app.client().await;

    // Typed arguments and replies; the router's state reaches handlers.
    let out = alice
        .call("chat", "send", json!({"room": "lobby", "text": "hi"}))
        .await
        .unwrap();
    assert_eq!(out.data, json!({"sent": true}));
    assert_eq!(
        bob.call("chat", "state", json!(null)).await.unwrap().data,
        "greeting from the state"
    );
    let err = bob.call("chat", "send", json!({"room": "lobby"})).await;
    match err {
        Err(ClientError::Server(body)) => {
            assert_eq!(body.code.as_str(), "bad_request");
            assert!(body.message.contains("text"), "{}", body.message);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        code(
            bob.call(
                "chat",
                "send",
                json!({"room": "l", "text": "x", "extra": 1})
            )
            .await
        ),
        "bad_request"
    );
    assert_eq!(
        code(
            anonymous
                .call("chat", "send", json!({"room": "lobby", "text": "x"}))
                .await
        ),
        "unauthenticated"
    );
    assert_eq!(
        code(bob.call("chat", "nope", json!({})).await),
        "unknown_verb"
    );

    // Bob subscribes to everything, and joins the staff room by name: he hears the lobby,
    // never the staff room. Alice hears both.
    let mut bob_all = bob.subscribe("chat", json!({"filter": {}})).await.unwrap();
    let mut bob_staff = bob
        .subscribe_with("chat", "join", json!({"room": "staff"}))
        .await
        .unwrap();
    let mut bob_or = bob
        .subscribe(
            "chat",
            json!({"filter": {"$or": [{"room": "staff"}, {"room__ne": "x"}]}}),
        )
        .await
        .unwrap();
    let mut alice_all = alice.subscribe("chat", json!({})).await.unwrap();
    for (room, text) in [("staff", "secret plan"), ("lobby", "hello all")] {
        alice
            .call("chat", "send", json!({"room": room, "text": text}))
            .await
            .unwrap();
    }
    for sub in [&mut bob_all, &mut bob_or] {
        let e = sub.next_within(WAIT).await.expect("the lobby message");
        assert_eq!(e.data.as_ref().unwrap()["text"], "hello all");
        assert!(sub.next_within(QUIET).await.is_none());
    }
    assert!(
        bob_staff.next_within(QUIET).await.is_none(),
        "bob never hears the staff room"
    );
    let heard: Vec<_> = [
        alice_all.next_within(WAIT).await.unwrap(),
        alice_all.next_within(WAIT).await.unwrap(),
    ]
    .iter()
    .map(|e| e.data.as_ref().unwrap()["text"].clone())
    .collect();
    assert_eq!(heard, [json!("secret plan"), json!("hello all")]);

    // A subscription handler that refuses answers once, with its error, and subscribes
    // nothing.
    assert_eq!(
        code(bob.call("chat", "join", json!({"room": ""})).await),
        "bad_request"
    );
    alice
        .call("chat", "send", json!({"room": "", "text": "to nowhere"}))
        .await
        .unwrap();
    let e = bob_all
        .next_within(WAIT)
        .await
        .expect("bob_all still works");
    assert_eq!(e.data.as_ref().unwrap()["text"], "to nowhere");
    assert_eq!(bob.next_other(QUIET).await.map(|f| format!("{f:?}")), None);
}

/// Connection hooks, direct events to one connection, and events for everyone but the sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_direct_events_and_everyone_but_me() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let gone = Arc::new(AtomicUsize::new(0));
    let counted = gone.clone();
    let app = TestApp::start_with(Backend::Sqlite, None, move |b| {
        let counted = counted.clone();
        b.route(chat())
            .auth(Tokens::new(SECRET))
            .on_connect(|ctx: Ctx| async move {
                let name = ctx.user().map_or(json!("stranger"), |u| u["name"].clone());
                let id = ctx.conn_id().to_owned();
                ctx.send_to(&id, "welcome", json!({"hello": name}))
                    .await
                    .unwrap();
            })
            .on_disconnect(move |_ctx: Ctx| {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            })
    })
    .await;
    let alice = connect(&app, json!({"name": "alice", "staff": true})).await;
    let bob = connect(&app, json!({"name": "bob"})).await;
    for (client, name) in [(&alice, "alice"), (&bob, "bob")] {
        let frame = client.next_other(WAIT).await.expect("a welcome");
        let text = format!("{frame:?}");
        assert!(text.contains("welcome") && text.contains(name), "{text}");
    }
    // Typing reaches everyone in the room but the one typing.
    let mut alice_room = alice
        .subscribe_with("chat", "join", json!({"room": "lobby"}))
        .await
        .unwrap();
    let mut bob_room = bob
        .subscribe_with("chat", "join", json!({"room": "lobby"}))
        .await
        .unwrap();
    alice
        .call("chat", "typing", json!({"room": "lobby"}))
        .await
        .unwrap();
    let e = bob_room
        .next_within(WAIT)
        .await
        .expect("bob sees alice typing");
    assert_eq!(e.event, "typing");
    assert_eq!(e.data.unwrap()["user"], "alice");
    assert!(
        alice_room.next_within(QUIET).await.is_none(),
        "not the one typing"
    );
    // A direct event from the server to one connection.
    let bob_id = bob.hello()["conn"].as_str().unwrap().to_owned();
    app.dragon
        .send_to(&bob_id, "nudge", json!({"from": "server"}))
        .await
        .unwrap();
    let frame = bob.next_other(WAIT).await.expect("the nudge");
    assert!(format!("{frame:?}").contains("nudge"));
    assert!(alice.next_other(QUIET).await.is_none(), "only bob");
    // Disconnect hooks run when connections close.
    alice.close();
    bob.close();
    let deadline = std::time::Instant::now() + WAIT;
    while gone.load(Ordering::SeqCst) < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(gone.load(Ordering::SeqCst), 2);
}
