//! Every bad input of the protocol gets its error, changes nothing, and the connection stays.

mod common;

use std::time::Duration;

use common::{Backend, TestApp, WAIT};
use dragon_core::Limits;
use dragon_core::client::Client;
use dragon_core::protocol::{CloseCode, ErrorCode, ServerFrame};
use serde_json::{Value, json};

/// The reply to a raw frame that has no readable id.
async fn orphan_error(c: &Client) -> ErrorCode {
    match c.next_other(WAIT).await {
        Some(ServerFrame::Reply(r)) => {
            assert!(r.id.is_none(), "id is null when it could not be read");
            assert!(!r.ok);
            r.error.expect("error").code
        }
        other => panic!("expected an error reply, got {other:?}"),
    }
}

async fn still_works(c: &Client) {
    let pong = c
        .call("dragon", "ping", json!({}))
        .await
        .expect("connection still works");
    assert!(pong.data["time"].as_u64().unwrap() > 1_600_000_000_000);
}

async fn error_of(c: &Client, route: &str, verb: &str, args: Value) -> (ErrorCode, String) {
    let reply = c.request(route, verb, args).await.expect("a reply");
    assert!(!reply.ok, "{route}.{verb} should fail");
    let e = reply.error.unwrap();
    (e.code, e.message)
}

async fn malformed_frames(backend: Backend) {
    let app = TestApp::start(backend).await;
    let c = app.client().await;
    for frame in [
        "not json",
        "[1,2]",
        "42",
        r#"{"route":"todo-item","verb":"get_list"}"#,
        r#"{"id":1.5,"route":"todo-item","verb":"get_list"}"#,
        r#"{"id":true,"route":"todo-item","verb":"get_list"}"#,
    ] {
        c.send_text(frame).unwrap();
        assert_eq!(orphan_error(&c).await, ErrorCode::BadRequest, "{frame}");
        still_works(&c).await;
    }
    c.send_binary(vec![1, 2, 3]).unwrap();
    assert_eq!(orphan_error(&c).await, ErrorCode::BadRequest);
    still_works(&c).await;

    // Missing route or verb, or args that are no object: answered with the request's id.
    for raw in [
        json!({"id": "a", "verb": "get_list"}),
        json!({"id": "b", "route": "todo-item"}),
        json!({"id": "c", "route": 5, "verb": "get_list"}),
        json!({"id": "d", "route": "todo-item", "verb": "get_list", "args": [1]}),
    ] {
        let id = raw["id"].clone();
        c.send_text(&raw.to_string()).unwrap();
        match c.next_other(WAIT).await {
            Some(ServerFrame::Reply(r)) => {
                assert_eq!(serde_json::to_value(&r.id).unwrap(), id);
                assert_eq!(r.error.unwrap().code, ErrorCode::BadRequest);
            }
            other => panic!("expected a reply, got {other:?}"),
        }
    }
    // Unknown top-level keys are ignored.
    let ok = c.request("dragon", "whoami", json!({})).await.unwrap();
    assert!(ok.ok);
    still_works(&c).await;
}

async fn bad_requests(backend: Backend) {
    let app = TestApp::start(backend).await;
    let c = app.client().await;
    let list = c
        .call("todo-list", "create", json!({"data": {"name": "L"}}))
        .await
        .unwrap()
        .data["id"]
        .clone();
    let cases: Vec<(&str, &str, Value, ErrorCode, &str)> = vec![
        (
            "nope",
            "get_list",
            json!({}),
            ErrorCode::UnknownRoute,
            "nope",
        ),
        (
            "todo-item",
            "frobnicate",
            json!({}),
            ErrorCode::UnknownVerb,
            "frobnicate",
        ),
        (
            "dragon",
            "frobnicate",
            json!({}),
            ErrorCode::UnknownVerb,
            "frobnicate",
        ),
        (
            "todo-item",
            "get_list",
            json!({"filter": {"colour": "red"}}),
            ErrorCode::BadRequest,
            "colour",
        ),
        (
            "todo-list",
            "get_list",
            json!({"filter": {"created_at__gt": "2020-01-01T00:00:00Z"}}),
            ErrorCode::BadRequest,
            "created_at",
        ),
        (
            "todo-item",
            "get_list",
            json!({"filter": {"list_id": "1"}}),
            ErrorCode::BadRequest,
            "list_id",
        ),
        (
            "todo-item",
            "get_list",
            json!({"filter": {"done": 1}}),
            ErrorCode::BadRequest,
            "done",
        ),
        (
            "todo-item",
            "get_list",
            json!({"filter": {"text__near": "x"}}),
            ErrorCode::BadRequest,
            "near",
        ),
        (
            "todo-item",
            "get_list",
            json!({"filter": [1]}),
            ErrorCode::BadRequest,
            "filter",
        ),
        (
            "todo-item",
            "get_list",
            json!({"order_by": ["colour"]}),
            ErrorCode::BadRequest,
            "colour",
        ),
        (
            "todo-item",
            "get_list",
            json!({"order_by": "text"}),
            ErrorCode::BadRequest,
            "order_by",
        ),
        (
            "todo-item",
            "get_list",
            json!({"page": 0}),
            ErrorCode::BadRequest,
            "page",
        ),
        (
            "todo-item",
            "get_list",
            json!({"per_page": 501}),
            ErrorCode::BadRequest,
            "per_page",
        ),
        (
            "todo-item",
            "get_list",
            json!({"page": "2"}),
            ErrorCode::BadRequest,
            "page",
        ),
        (
            "todo-item",
            "get_single",
            json!({}),
            ErrorCode::BadRequest,
            "id",
        ),
        (
            "todo-item",
            "get_single",
            json!({"id": "1"}),
            ErrorCode::BadRequest,
            "id",
        ),
        (
            "todo-item",
            "create",
            json!({}),
            ErrorCode::BadRequest,
            "data",
        ),
        (
            "todo-item",
            "create",
            json!({"data": [1]}),
            ErrorCode::BadRequest,
            "data",
        ),
        (
            "todo-item",
            "create",
            json!({"data": {"list_id": list, "text": "x", "bogus": 1}}),
            ErrorCode::Validation,
            "refused",
        ),
        (
            "todo-item",
            "create",
            json!({"data": {"list_id": list}}),
            ErrorCode::Validation,
            "refused",
        ),
        (
            "todo-item",
            "subscribe",
            json!({"filter": {"colour": 1}}),
            ErrorCode::BadRequest,
            "colour",
        ),
        (
            "todo-item",
            "subscribe",
            json!({"since": 5}),
            ErrorCode::BadRequest,
            "since",
        ),
        (
            "todo-item",
            "subscribe",
            json!({"snapshot": "yes"}),
            ErrorCode::BadRequest,
            "snapshot",
        ),
        (
            "todo-item",
            "unsubscribe",
            json!({}),
            ErrorCode::BadRequest,
            "sub",
        ),
        (
            "dragon",
            "auth",
            json!({"token": "x"}),
            ErrorCode::Unauthenticated,
            "",
        ),
    ];
    for (route, verb, args, code, mention) in cases {
        let (got, message) = error_of(&c, route, verb, args.clone()).await;
        assert_eq!(got, code, "{route}.{verb} {args}");
        assert!(
            message.contains(mention),
            "{route}.{verb}: {message:?} should mention {mention:?}"
        );
    }
    let total = c
        .call("todo-item", "get_list", json!({}))
        .await
        .unwrap()
        .meta
        .unwrap()["total"]
        .clone();
    assert_eq!(total, 0, "no failed request created anything");
    still_works(&c).await;
}

async fn oversized_frame_closes_1009(backend: Backend) {
    let app = TestApp::start(backend).await;
    let c = app.client().await;
    // Just under the limit is fine (and unknown top-level keys are ignored).
    let near = json!({"id": 9, "route": "dragon", "verb": "ping", "pad": "x".repeat(60 * 1024)});
    c.send_text(&near.to_string()).unwrap();
    match c.next_other(WAIT).await {
        Some(ServerFrame::Reply(r)) => assert!(r.ok, "{r:?}"),
        other => panic!("expected a reply, got {other:?}"),
    }
    let big = format!(
        r#"{{"id":1,"route":"todo-list","verb":"create","args":{{"data":{{"name":"{}"}}}}}}"#,
        "x".repeat(70 * 1024)
    );
    c.send_text(&big).unwrap();
    assert_eq!(c.closed(WAIT).await, Some(CloseCode::TOO_BIG));
    // The server is fine and nothing was created.
    let other = app.client().await;
    let out = other
        .call("todo-list", "get_list", json!({}))
        .await
        .unwrap();
    assert_eq!(out.meta.unwrap()["total"], 0);
}

async fn limits_answer_rate_limited(backend: Backend) {
    let limits = Limits {
        max_in_flight: 4,
        max_subscriptions: 3,
        ..Limits::default()
    };
    let app = TestApp::start_with(backend, None, |b| b.limits(limits)).await;
    let c = app.client().await;
    for _ in 0..3 {
        c.subscribe("todo-item", json!({})).await.unwrap();
    }
    let (code, _) = error_of(&c, "todo-item", "subscribe", json!({})).await;
    assert_eq!(code, ErrorCode::RateLimited);
    // Too many in flight: fire 40 requests at once; some must be refused, all answered.
    for i in 0..40 {
        let frame = json!({"id": 1000 + i, "route": "todo-item", "verb": "get_list", "args": {}});
        c.send_text(&frame.to_string()).unwrap();
    }
    let mut limited = 0;
    let mut ok = 0;
    while ok + limited < 40 {
        match c.next_other(WAIT).await {
            Some(ServerFrame::Reply(r)) if r.ok => ok += 1,
            Some(ServerFrame::Reply(r)) => {
                assert_eq!(r.error.unwrap().code, ErrorCode::RateLimited);
                limited += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(limited > 0, "the in-flight limit refused some");
    assert!(ok >= 4);
    still_works(&c).await;
}

async fn graceful_shutdown_closes_1001(backend: Backend) {
    let mut app = TestApp::start(backend).await;
    let c = app.client().await;
    app.stop().await;
    assert_eq!(
        c.closed(Duration::from_secs(10)).await,
        Some(CloseCode::GOING_AWAY)
    );
}

both_backends!(
    malformed_frames,
    bad_requests,
    oversized_frame_closes_1009,
    limits_answer_rate_limited,
    graceful_shutdown_closes_1001,
);

/// A client that stops reading gets, once it reads again, each object's latest state rather
/// than every intermediate one (coalescing), and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_gets_coalesced_latest_state() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Ws;
    let limits = Limits {
        max_queued: 8,
        slow_consumer_grace: Duration::from_secs(120),
        ..Limits::default()
    };
    let app = TestApp::start_with(Backend::Sqlite, None, |b| b.limits(limits)).await;
    let writer = app.client().await;
    let list = writer
        .call("todo-list", "create", json!({"data": {"name": "L"}}))
        .await
        .unwrap()
        .data["id"]
        .clone();
    let item = writer
        .call(
            "todo-item",
            "create",
            json!({"data": {"list_id": list, "text": "start"}}),
        )
        .await
        .unwrap()
        .data;
    let (mut slow, _) = tokio_tungstenite::connect_async(app.ws_url())
        .await
        .unwrap();
    let sub = json!({"id": 1, "route": "todo-item", "verb": "subscribe", "args": {"filter": {"list_id": list}}});
    slow.send(Ws::Text(sub.to_string().into())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Big updates, so the socket's buffers fill while the client reads nothing.
    let updates = 1500;
    for i in 0..updates {
        let text = format!("{i:04}{}", "x".repeat(9_000));
        writer
            .call(
                "todo-item",
                "update",
                json!({"id": item["id"], "data": {"text": text, "position": i}}),
            )
            .await
            .unwrap();
    }
    let mut updated = 0;
    let mut last_position = None;
    let mut resyncs = 0;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(2), slow.next()).await {
        let Ws::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        match v["event"].as_str() {
            Some("updated") => {
                updated += 1;
                last_position = v["data"]["position"].as_i64();
                let changed: Vec<&str> = v["changed"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap())
                    .collect();
                assert!(changed.contains(&"text"), "{changed:?}");
            }
            Some("resync") => resyncs += 1,
            _ => {}
        }
    }
    assert_eq!(
        last_position,
        Some(updates - 1),
        "the last event carries the latest state"
    );
    assert!(
        updated < updates,
        "intermediate states were coalesced ({updated} of {updates} sent)"
    );
    assert_eq!(resyncs, 0, "changes to objects are merged, not dropped");
    let (_, metrics) = common::http_raw(app.addr, "GET", "/metrics", &[], b"").await;
    assert!(
        !metrics.contains("dragon_events_backlogged_total 0\n"),
        "{metrics}"
    );
}
