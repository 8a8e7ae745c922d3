//! Whisper end to end over real sockets: accounts, rooms, messages, and the permission
//! matrix of a non-staff user against the staff room: every verb, every filter form,
//! replays, presence; nothing of it ever reaches bob.

use std::time::Duration;

use dragon_core::auth::Tokens;
use dragon_core::client::{Client, ClientError};
use dragon_core::testing::TestServer;
use serde_json::{Value, json};
use whisper::accounts::Accounts;

const QUIET: Duration = Duration::from_millis(300);
const WAIT: Duration = Duration::from_secs(5);

struct App {
    server: TestServer,
    lobby: i64,
    staff: i64,
}

async fn start() -> App {
    let dir = std::env::temp_dir().join("whisper-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{}.sqlite", uuid::Uuid::new_v4().simple()));
    let db = whisper::open_database(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    whisper::demo(&db).await.unwrap();
    let tokens = Tokens::new(b"whisper tests secret, long enough to sign");
    let dragon = whisper::builder(&db, tokens.clone()).build();
    let app = whisper::app(&dragon, Accounts { db, tokens });
    let server = TestServer::start(&dragon, app).await.unwrap();
    let (status, body) = server
        .post_json(
            "/login",
            &json!({"username": "alice", "password": "alice-pass"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let alice = server
        .client_with_token(body["token"].as_str().unwrap())
        .await
        .unwrap();
    let rooms = alice
        .call("room", "get_list", json!({}))
        .await
        .unwrap()
        .data;
    let id = |name: &str| {
        rooms
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    App {
        lobby: id("lobby"),
        staff: id("staff"),
        server,
    }
}

async fn login(app: &App, who: &str) -> Client {
    let (status, body) = app
        .server
        .post_json(
            "/login",
            &json!({"username": who, "password": format!("{who}-pass")}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    app.server
        .client_with_token(body["token"].as_str().unwrap())
        .await
        .unwrap()
}

fn error(result: Result<dragon_core::protocol::Output, ClientError>) -> (String, String) {
    match result {
        Err(ClientError::Server(body)) => (body.code.as_str().to_owned(), body.message),
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn post(c: &Client, room: i64, text: &str) -> Value {
    c.call(
        "message",
        "create",
        json!({"data": {"room_id": room, "text": text}}),
    )
    .await
    .unwrap()
    .data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_sign_up_and_log_in() {
    let app = start().await;
    let s = &app.server;
    let (status, body) = s
        .post_json(
            "/signup",
            &json!({"username": "carol", "password": "carol-pass"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["username"], "carol");
    assert_eq!(body["user"]["staff"], false);
    let carol = s
        .client_with_token(body["token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(carol.hello()["user"]["username"], "carol");
    for (body, want) in [
        (
            json!({"username": "carol", "password": "another-pass"}),
            409,
        ),
        (json!({"username": "Bad Name", "password": "whatever"}), 400),
        (json!({"username": "dave", "password": "short"}), 400),
    ] {
        assert_eq!(
            s.post_json("/signup", &body).await.unwrap().0,
            want,
            "{body}"
        );
    }
    let wrong = json!({"username": "carol", "password": "not-it"});
    assert_eq!(s.post_json("/login", &wrong).await.unwrap().0, 401);
    let nobody = json!({"username": "nobody", "password": "whatever"});
    assert_eq!(s.post_json("/login", &nobody).await.unwrap().0, 401);
    // Without a token the socket is anonymous and every route refuses it.
    let anonymous = s.client().await.unwrap();
    assert_eq!(
        error(anonymous.call("room", "get_list", json!({})).await).0,
        "unauthenticated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_never_learns_anything_of_the_staff_room() {
    let app = start().await;
    let alice = login(&app, "alice").await;
    let bob = login(&app, "bob").await;
    let secret = post(&alice, app.staff, "staff secret").await;
    let secret_id = secret["id"].as_i64().unwrap();
    post(&alice, app.lobby, "hello lobby").await;

    // Rooms: bob sees the lobby only; the staff room looks like no room at all.
    let rooms = bob.call("room", "get_list", json!({})).await.unwrap().data;
    let names: Vec<_> = rooms
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].clone())
        .collect();
    assert_eq!(names, [json!("lobby")]);
    assert_eq!(
        error(
            bob.call("room", "get_single", json!({"id": app.staff}))
                .await
        ),
        error(bob.call("room", "get_single", json!({"id": 9999})).await)
    );
    // Messages: every filter form.
    for filter in [
        json!({}),
        json!({"room_id": app.staff}),
        json!({"$or": [{"room_id": app.staff}, {"id": secret_id}]}),
        json!({"$not": {"room_id": app.lobby}}),
        json!({"room_id__in": [app.lobby, app.staff]}),
        json!({"id": secret_id}),
        json!({"user": "alice"}),
    ] {
        let rows = bob
            .call("message", "get_list", json!({"filter": filter}))
            .await
            .unwrap()
            .data;
        assert!(
            !rows.to_string().contains("staff secret"),
            "{filter}: {rows}"
        );
    }
    // Every verb on the secret looks like a missing message.
    for (verb, args) in [
        ("get_single", json!({"id": secret_id})),
        ("update", json!({"id": secret_id, "data": {"text": "x"}})),
        ("delete", json!({"id": secret_id})),
    ] {
        let hidden = error(bob.call("message", verb, args.clone()).await);
        let mut missing = args;
        missing["id"] = json!(987_654);
        assert_eq!(
            hidden,
            error(bob.call("message", verb, missing).await),
            "{verb}"
        );
    }
    // Posting into the staff room: refused like posting into a room that does not exist.
    let into_staff = error(
        bob.call(
            "message",
            "create",
            json!({"data": {"room_id": app.staff, "text": "hi"}}),
        )
        .await,
    );
    let into_nothing = error(
        bob.call(
            "message",
            "create",
            json!({"data": {"room_id": 9999, "text": "hi"}}),
        )
        .await,
    );
    assert_eq!(into_staff, into_nothing);
    // Presence: the staff room is not a key bob may watch or join.
    for verb in ["presence_watch", "presence_join"] {
        let (code, _) = error(bob.call("room", verb, json!({"key": app.staff})).await);
        assert_eq!(code, "not_found", "{verb}");
    }
    // Live, with a snapshot, and a replay from before.
    let mut all = bob
        .subscribe("message", json!({"filter": {}, "snapshot": true}))
        .await
        .unwrap();
    assert!(!all.reply["items"].to_string().contains("staff secret"));
    let since = all.reply["position"].as_str().unwrap().to_owned();
    let mut sneaky = bob
        .subscribe("message", json!({"filter": {"room_id": app.staff}}))
        .await
        .unwrap();
    post(&alice, app.staff, "another staff secret").await;
    alice
        .call(
            "message",
            "update",
            json!({"id": secret_id, "data": {"text": "edited secret"}}),
        )
        .await
        .unwrap();
    post(&alice, app.lobby, "public again").await;
    let e = all.next_within(WAIT).await.expect("the public message");
    assert_eq!(e.data.unwrap()["text"], "public again");
    assert!(all.next_within(QUIET).await.is_none());
    assert!(sneaky.next_within(QUIET).await.is_none());
    let mut replay = bob
        .subscribe("message", json!({"filter": {}, "since": since}))
        .await
        .unwrap();
    let mut replayed = Vec::new();
    while let Some(e) = replay.next_within(QUIET).await {
        replayed.push(e.data.unwrap()["text"].clone());
    }
    assert_eq!(replayed, [json!("public again")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_edited_and_deleted_by_their_authors_and_paged_newest_first() {
    let app = start().await;
    let alice = login(&app, "alice").await;
    let bob = login(&app, "bob").await;
    let mut live = alice
        .subscribe("message", json!({"filter": {"room_id": app.lobby}}))
        .await
        .unwrap();
    let mine = post(&bob, app.lobby, "bob here").await;
    assert_eq!(
        mine["user"], "bob",
        "the author is the caller, not the client's say"
    );
    assert_eq!(mine["edited_at"], Value::Null);
    assert_eq!(live.next_within(WAIT).await.unwrap().event, "created");
    let theirs = post(&alice, app.lobby, "alice here").await;
    live.next_within(WAIT).await.unwrap();
    // Bob edits his own message: edited_at is stamped, everyone sees it.
    let edited = bob
        .call(
            "message",
            "update",
            json!({"id": mine["id"], "data": {"text": "bob, edited"}}),
        )
        .await
        .unwrap()
        .data;
    assert!(edited["edited_at"].is_string());
    let e = live.next_within(WAIT).await.unwrap();
    assert_eq!(
        (e.event.as_str(), e.data.unwrap()["text"].clone()),
        ("updated", json!("bob, edited"))
    );
    // ...but not alice's, nor can he claim to be someone else.
    let (code, _) = error(
        bob.call(
            "message",
            "update",
            json!({"id": theirs["id"], "data": {"text": "x"}}),
        )
        .await,
    );
    assert_eq!(code, "forbidden");
    let (code, _) = error(
        bob.call("message", "delete", json!({"id": theirs["id"]}))
            .await,
    );
    assert_eq!(code, "forbidden");
    let (code, _) = error(
        bob.call(
            "message",
            "create",
            json!({"data": {"room_id": app.lobby, "text": "x", "user": "alice"}}),
        )
        .await,
    );
    assert_eq!(code, "validation");
    // Staff may delete anyone's message, but edit only their own.
    let (code, _) = error(
        alice
            .call(
                "message",
                "update",
                json!({"id": mine["id"], "data": {"text": "x"}}),
            )
            .await,
    );
    assert_eq!(code, "forbidden");
    alice
        .call("message", "delete", json!({"id": mine["id"]}))
        .await
        .unwrap();
    assert_eq!(live.next_within(WAIT).await.unwrap().event, "deleted");
    // History: newest first, in pages.
    for n in 0..60 {
        post(&bob, app.lobby, &format!("n{n}")).await;
    }
    let page = bob
        .call(
            "message",
            "get_list",
            json!({"filter": {"room_id": app.lobby}, "order_by": ["-id"], "per_page": 50}),
        )
        .await
        .unwrap();
    let texts: Vec<_> = page
        .data
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(texts.len(), 50);
    assert_eq!(texts[0], "n59");
    assert_eq!(texts[49], "n10");
    assert_eq!(page.meta.unwrap()["total"], 61);
    // Only staff create rooms.
    let (code, _) = error(
        bob.call("room", "create", json!({"data": {"name": "mine"}}))
            .await,
    );
    assert_eq!(code, "forbidden");
    alice
        .call(
            "room",
            "create",
            json!({"data": {"name": "ops", "staff_only": true}}),
        )
        .await
        .unwrap();
}
