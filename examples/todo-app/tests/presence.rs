//! Presence on one node (in-memory broker), over real sockets: every verb, what watchers
//! see, leaving on close, drop and silence, keys, limits and errors.

mod common;
#[path = "common/presence.rs"]
mod presence_support;

use std::time::{Duration, Instant};

use common::{Backend, TestApp, new_item, new_list};
use dragon_core::client::{Client, ClientError};
use dragon_core::presence::Presence;
use dragon_core::protocol::{ErrorCode, Output};
use dragon_core::server::Limits;
use dragon_core::{Ctx, Error, Router};
use futures_util::{SinkExt, StreamExt};
use presence_support::{conn_of, conns, expect_no_presence, expect_presence, presence_event};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn code(err: ClientError) -> ErrorCode {
    match err {
        ClientError::Server(body) => body.code,
        other => panic!("expected a server error, got {other}"),
    }
}

async fn call(c: &Client, verb: &str, args: Value) -> Result<Output, ClientError> {
    c.call("todo-item", verb, args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_joins_updates_and_leaves_in_order() {
    let app = TestApp::start(Backend::Sqlite).await;
    let (a, b) = (app.client().await, app.client().await);
    let list = new_list(&a, "groceries").await;
    let item = new_item(&a, list, "milk").await["id"].as_i64().unwrap();

    let watched = call(&a, "presence_watch", json!({"key": item}))
        .await
        .unwrap();
    assert_eq!(watched.data, json!({"members": []}));

    let joined = call(
        &b,
        "presence_join",
        json!({"key": item, "state": {"name": "Bo"}}),
    )
    .await
    .unwrap();
    let members = &joined.data["members"];
    assert_eq!(
        conns(members),
        [conn_of(&b)],
        "the reply lists the joiner itself"
    );
    assert_eq!(members[0]["user"], Value::Null);
    assert_eq!(members[0]["state"], json!({"name": "Bo"}));

    let e = expect_presence(&a).await;
    assert_eq!(e.route.as_deref(), Some("todo-item"));
    assert_eq!(e.extra["key"], json!(item));
    assert_eq!(e.extra["joins"][0]["conn"], json!(conn_of(&b)));
    assert_eq!(e.extra["joins"][0]["state"], json!({"name": "Bo"}));
    assert_eq!(e.extra["leaves"], json!([]));

    let updated = call(
        &b,
        "presence_update",
        json!({"key": item, "state": {"name": "Bo", "editing": true}}),
    )
    .await
    .unwrap();
    assert_eq!(updated.data["members"][0]["state"]["editing"], true);
    let e = expect_presence(&a).await;
    assert_eq!(
        e.extra["joins"][0]["state"]["editing"], true,
        "an update is a join with the new state"
    );

    let left = call(&b, "presence_leave", json!({"key": item}))
        .await
        .unwrap();
    assert_eq!(left.data, json!({"key": item}));
    let e = expect_presence(&a).await;
    assert_eq!(e.extra["joins"], json!([]));
    assert_eq!(e.extra["leaves"][0]["conn"], json!(conn_of(&b)));
    assert_eq!(
        e.extra["leaves"][0]["state"]["editing"], true,
        "a leave carries the last state"
    );

    expect_no_presence(&b).await; // never its own changes
    // Leaving twice is fine; updating a key one has left is not.
    call(&b, "presence_leave", json!({"key": item}))
        .await
        .unwrap();
    let err = call(&b, "presence_update", json!({"key": item, "state": {}}))
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::BadRequest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_see_each_other_and_keys_stay_separate() {
    let app = TestApp::start(Backend::Sqlite).await;
    let (a, b, c) = (app.client().await, app.client().await, app.client().await);
    let list = new_list(&a, "l").await;
    let one = new_item(&a, list, "one").await["id"].as_i64().unwrap();
    let two = new_item(&a, list, "two").await["id"].as_i64().unwrap();

    call(&a, "presence_join", json!({"key": one}))
        .await
        .unwrap();
    let r = call(&b, "presence_join", json!({"key": one}))
        .await
        .unwrap();
    assert_eq!(conns(&r.data["members"]), {
        let mut v = vec![conn_of(&a), conn_of(&b)];
        v.sort();
        v
    });
    let e = expect_presence(&a).await;
    assert_eq!(e.extra["joins"][0]["conn"], json!(conn_of(&b)));

    // Another item, a free string key, and the string "1" are all other keys.
    call(&c, "presence_join", json!({"key": two}))
        .await
        .unwrap();
    call(&c, "presence_join", json!({"key": format!("list:{list}")}))
        .await
        .unwrap();
    call(&c, "presence_join", json!({"key": one.to_string()}))
        .await
        .unwrap();
    expect_no_presence(&a).await;
    expect_no_presence(&b).await;
    let r = call(&a, "presence_watch", json!({"key": format!("list:{list}")}))
        .await
        .unwrap();
    assert_eq!(conns(&r.data["members"]), [conn_of(&c)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_leaves_everything_at_once() {
    let app = TestApp::start(Backend::Sqlite).await;
    let (a, b) = (app.client().await, app.client().await);
    call(&a, "presence_watch", json!({"key": "x"}))
        .await
        .unwrap();
    call(&a, "presence_watch", json!({"key": "y"}))
        .await
        .unwrap();
    call(&b, "presence_join", json!({"key": "x"}))
        .await
        .unwrap();
    call(&b, "presence_join", json!({"key": "y"}))
        .await
        .unwrap();
    expect_presence(&a).await;
    expect_presence(&a).await;
    let started = Instant::now();
    b.close();
    let mut keys = Vec::new();
    for _ in 0..2 {
        let e = expect_presence(&a).await;
        assert_eq!(e.extra["leaves"][0]["conn"], json!(conn_of(&b)));
        keys.push(e.extra["key"].as_str().unwrap().to_owned());
    }
    keys.sort();
    assert_eq!(keys, ["x", "y"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "left at once: {:?}",
        started.elapsed()
    );
    assert_eq!(
        app.dragon.presence_key_count(),
        2,
        "only the watcher's views remain"
    );
}

/// A raw client: the WebSocket handshake, one join, and its reply.
async fn raw_join(
    app: &TestApp,
    key: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(app.ws_url())
        .await
        .unwrap();
    let _hello = ws.next().await.unwrap().unwrap();
    let join =
        json!({"id": 1, "route": "todo-item", "verb": "presence_join", "args": {"key": key}});
    ws.send(WsMessage::Text(join.to_string().into()))
        .await
        .unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    assert!(
        reply.to_text().unwrap().contains(r#""ok":true"#),
        "{reply:?}"
    );
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abrupt_tcp_drop_leaves_within_two_seconds() {
    let app = TestApp::start(Backend::Sqlite).await;
    let a = app.client().await;
    call(&a, "presence_watch", json!({"key": "room"}))
        .await
        .unwrap();
    let ws = raw_join(&app, "room").await;
    expect_presence(&a).await;
    let started = Instant::now();
    drop(ws); // no closing handshake: the socket just goes away
    let e = presence_event(&a, Duration::from_secs(2))
        .await
        .expect("a leave within 2 s");
    assert_eq!(e.extra["leaves"].as_array().unwrap().len(), 1);
    println!("left {:?} after the drop", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_peer_is_dropped_by_pings() {
    let limits = Limits {
        ping_interval: Duration::from_millis(200),
        ..Limits::default()
    };
    let app = TestApp::start_with(Backend::Sqlite, None, |b| b.limits(limits)).await;
    let a = app.client().await;
    call(&a, "presence_watch", json!({"key": "room"}))
        .await
        .unwrap();
    // Joins, then never reads again: pings go unanswered, as with a peer that vanished.
    let silent = raw_join(&app, "room").await;
    expect_presence(&a).await;
    let started = Instant::now();
    let e = presence_event(&a, Duration::from_secs(2))
        .await
        .expect("dropped by pings");
    assert_eq!(e.extra["leaves"].as_array().unwrap().len(), 1);
    println!("half-open peer dropped after {:?}", started.elapsed());
    // A client that answers pings stays.
    tokio::time::sleep(Duration::from_millis(600)).await;
    call(&a, "presence_watch", json!({"key": "room"}))
        .await
        .expect("still connected");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_and_states_are_refused_and_change_nothing() {
    let app = TestApp::start(Backend::Sqlite).await;
    let a = app.client().await;
    let list = new_list(&a, "l").await;
    // Not on todo-list at all.
    let err = a
        .call("todo-list", "presence_join", json!({"key": list}))
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::UnknownVerb);
    // An item that does not exist (ids are checked like get_single).
    let err = call(&a, "presence_join", json!({"key": 999_999}))
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::NotFound);
    let err = call(&a, "presence_watch", json!({"key": 999_999}))
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::NotFound);
    for key in [
        json!(true),
        json!(1.5),
        json!({"a": 1}),
        json!(null),
        json!("k".repeat(300)),
    ] {
        let err = call(&a, "presence_join", json!({"key": key}))
            .await
            .unwrap_err();
        assert_eq!(code(err), ErrorCode::BadRequest, "key {key}");
    }
    let err = call(&a, "presence_join", json!({"key": "k", "state": [1]}))
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::BadRequest);
    let big = json!({"key": "k", "state": {"text": "x".repeat(2000)}});
    match call(&a, "presence_join", big).await.unwrap_err() {
        ClientError::Server(body) => {
            assert_eq!(body.code, ErrorCode::Validation);
            assert_eq!(
                body.details.unwrap()["state"][0],
                "at most 1024 bytes of JSON"
            );
        }
        other => panic!("{other}"),
    }
    let err = call(&a, "presence_watch", json!({"key": "k", "count": "yes"}))
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::BadRequest);
    // Nothing of that joined anything.
    let b = app.client().await;
    let r = call(&b, "presence_watch", json!({"key": "k"}))
        .await
        .unwrap();
    assert_eq!(r.data, json!({"members": []}));
}

/// `b` sends `verb` with states 1..=n on key "doc", a few ms apart (so the server starts them
/// in the order sent), and every request is answered; the states watcher `a` then saw.
async fn rapid_states(
    a: &Client,
    b: &std::sync::Arc<Client>,
    verb: &'static str,
    n: i64,
) -> Vec<i64> {
    let mut calls = Vec::new();
    for i in 1..=n {
        let b = b.clone();
        calls.push(tokio::spawn(async move {
            call(&b, verb, json!({"key": "doc", "state": {"n": i}})).await
        }));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for r in futures_util::future::join_all(calls).await {
        r.unwrap().expect("every request is answered");
    }
    let mut seen = Vec::new();
    while let Some(e) = presence_event(a, Duration::from_millis(500)).await {
        seen.push(e.extra["joins"][0]["state"]["n"].as_i64().unwrap());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_past_the_rate_are_coalesced_and_the_last_state_wins() {
    let app = TestApp::start(Backend::Sqlite).await;
    let (a, b) = (app.client().await, app.client().await);
    call(&a, "presence_watch", json!({"key": "doc"}))
        .await
        .unwrap();
    call(
        &b,
        "presence_join",
        json!({"key": "doc", "state": {"n": 0}}),
    )
    .await
    .unwrap();
    expect_presence(&a).await;
    // 40 updates within 80 ms: 10 go at once (the burst), the rest are folded together.
    // (A few ms apart, so the server starts them in the order sent.)
    let b = std::sync::Arc::new(b);
    let started = Instant::now();
    let seen = rapid_states(&a, &b, "presence_update", 40).await;
    assert_eq!(*seen.last().unwrap(), 40, "the last state wins: {seen:?}");
    assert!(
        seen.len() < 40,
        "coalesced: {} events for 40 updates",
        seen.len()
    );
    let r = call(&a, "presence_watch", json!({"key": "doc"}))
        .await
        .unwrap();
    assert_eq!(r.data["members"][0]["state"]["n"], 40);
    println!(
        "40 updates: {} events in {:?}",
        seen.len(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_watchers_get_counts_not_members() {
    let app = TestApp::start(Backend::Sqlite).await;
    let a = app.client().await;
    let r = call(&a, "presence_watch", json!({"key": "big", "count": true}))
        .await
        .unwrap();
    assert_eq!(r.data, json!({"count": 0}));
    let mut members = Vec::new();
    for _ in 0..5 {
        let c = app.client().await;
        call(&c, "presence_join", json!({"key": "big"}))
            .await
            .unwrap();
        members.push(c);
    }
    let mut last = None;
    while let Some(e) = presence_event(&a, Duration::from_millis(400)).await {
        assert!(e.extra.get("joins").is_none(), "no member lists: {e:?}");
        last = e.extra.get("count").cloned();
    }
    assert_eq!(last, Some(json!(5)));
    members.pop().unwrap().close();
    let e = expect_presence(&a).await;
    assert_eq!(e.extra["count"], 4);
}

/// A custom router with presence of its own: a cap of 2, a small state, and a check.
struct Room {
    presence: Presence,
}

#[async_trait::async_trait]
impl Router for Room {
    fn name(&self) -> &str {
        "room"
    }

    async fn call(&self, ctx: &Ctx, verb: &str, args: Value) -> Result<Output, Error> {
        if Presence::handles(verb) {
            return self
                .presence
                .call(ctx, "room", verb, args, |key| async move {
                    match key.as_str() {
                        Some("secret") => Err(Error::NotFound),
                        _ => Ok(()),
                    }
                })
                .await;
        }
        Err(Error::UnknownVerb {
            route: "room".into(),
            verb: verb.into(),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_routers_cap_members_limit_state_and_check_keys() {
    let room = Room {
        presence: Presence::new().max_members(2).max_state_bytes(32),
    };
    let app = TestApp::start_with(Backend::Sqlite, None, |b| b.route(room)).await;
    let clients = [app.client().await, app.client().await, app.client().await];
    for c in &clients[..2] {
        c.call("room", "presence_join", json!({"key": "lobby"}))
            .await
            .unwrap();
    }
    let err = clients[2]
        .call("room", "presence_join", json!({"key": "lobby"}))
        .await
        .unwrap_err();
    match err {
        ClientError::Server(body) => {
            assert_eq!(body.code, ErrorCode::RateLimited);
            assert!(
                body.message.contains("maximum of 2 members"),
                "{}",
                body.message
            );
        }
        other => panic!("{other}"),
    }
    // A member may still update; the full key still lists two.
    clients[0]
        .call(
            "room",
            "presence_update",
            json!({"key": "lobby", "state": {"t": 1}}),
        )
        .await
        .unwrap();
    let err = clients[0]
        .call(
            "room",
            "presence_update",
            json!({"key": "lobby", "state": {"t": "x".repeat(40)}}),
        )
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::Validation);
    let err = clients[2]
        .call("room", "presence_watch", json!({"key": "secret"}))
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::NotFound);
    // Once one leaves, the third gets in.
    clients[1]
        .call("room", "presence_leave", json!({"key": "lobby"}))
        .await
        .unwrap();
    let r = clients[2]
        .call("room", "presence_join", json!({"key": "lobby"}))
        .await
        .unwrap();
    assert_eq!(r.data["members"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_keys_served() {
    let app = TestApp::start(Backend::Sqlite).await;
    let a = app.client().await;
    call(&a, "presence_join", json!({"key": "x"}))
        .await
        .unwrap();
    call(&a, "presence_watch", json!({"key": "y"}))
        .await
        .unwrap();
    let (status, body) = common::http_raw(app.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200);
    assert!(body.contains("\ndragon_presence_keys 2\n"), "{body}");
    call(&a, "presence_leave", json!({"key": "x"}))
        .await
        .unwrap();
    let (_, body) = common::http_raw(app.addr, "GET", "/metrics", &[], b"").await;
    assert!(body.contains("\ndragon_presence_keys 1\n"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_again_is_an_update_within_the_same_rate_limit() {
    let app = TestApp::start(Backend::Sqlite).await;
    let (a, b) = (app.client().await, std::sync::Arc::new(app.client().await));
    call(&a, "presence_watch", json!({"key": "doc"}))
        .await
        .unwrap();
    call(
        &b,
        "presence_join",
        json!({"key": "doc", "state": {"n": 0}}),
    )
    .await
    .unwrap();
    expect_presence(&a).await;
    let seen = rapid_states(&a, &b, "presence_join", 30).await;
    assert_eq!(*seen.last().unwrap(), 30, "{seen:?}");
    assert!(seen.len() < 30, "re-joins are coalesced too: {seen:?}");
}
