//! Under abuse and overload: every queue bounded, every bad input answered, no client able to
//! hurt another (issue 12). Real server, real sockets; limits in `docs/limits.md`.

mod common;
#[path = "common/redis.rs"]
mod redis_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Backend, TestApp, WAIT, new_item, new_list};
use dragon_core::Limits;
use dragon_core::client::Client;
use dragon_core::protocol::{CloseCode, ErrorCode};
use dragon_core::router::{Ctx, Verbs};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type RawSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn start(limits: Limits) -> TestApp {
    TestApp::start_with(Backend::Sqlite, None, move |b| b.limits(limits)).await
}

/// A WebSocket over a socket with a tiny receive buffer, which the test never reads.
async fn raw_socket(app: &TestApp) -> RawSocket {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(app.addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(app.ws_url(), stream)
        .await
        .unwrap();
    ws
}

/// The process's resident memory in KiB (the server runs in this process).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn wait_for_connections(app: &TestApp, n: usize, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if app.dragon.connections() == n {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn error_of(c: &Client, route: &str, verb: &str, args: Value) -> (ErrorCode, String) {
    let reply = c.request(route, verb, args).await.expect("a reply");
    assert!(!reply.ok, "{route}.{verb} should fail");
    let e = reply.error.unwrap();
    (e.code, e.message)
}

async fn still_works(c: &Client) {
    c.call("dragon", "ping", json!({}))
        .await
        .expect("the connection still answers");
}

/// A client that floods big requests and never reads is closed within the grace, the
/// server's memory stays bounded meanwhile, and another client's pings stay fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_and_costs_a_bounded_amount() {
    let grace = Duration::from_secs(2);
    let app = start(Limits {
        slow_consumer_grace: grace,
        ..Limits::default()
    })
    .await;
    let seeder = app.client().await;
    let list = new_list(&seeder, "big").await;
    let text = "x".repeat(1000);
    for _ in 0..300 {
        new_item(&seeder, list, &text).await;
    }
    // One reply to this request is about 350 KB.
    let big = json!({"id": 1, "route": "todo-item", "verb": "get_list",
        "args": {"filter": {"list_id": list}, "per_page": 500}})
    .to_string();

    let pinger = app.client().await;
    let worst_ping = Arc::new(AtomicU64::new(0));
    let pinging = Arc::new(AtomicBool::new(true));
    let ping_task = tokio::spawn({
        let (worst, on) = (worst_ping.clone(), pinging.clone());
        async move {
            while on.load(Ordering::Relaxed) {
                let t = Instant::now();
                pinger.call("dragon", "ping", json!({})).await.unwrap();
                worst.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let before = rss_kib();
    let peak = Arc::new(AtomicU64::new(before));
    let sampling = tokio::spawn({
        let (peak, on) = (peak.clone(), pinging.clone());
        async move {
            while on.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    let mut flood = raw_socket(&app).await;
    assert_eq!(app.dragon.connections(), 3);
    let started = Instant::now();
    let mut sent = 0;
    let mut closed_after = None;
    while started.elapsed() < grace * 4 {
        // The server stops reading from a client over its budget: sends then block.
        let send = flood.send(Message::text(big.clone()));
        match tokio::time::timeout(Duration::from_millis(50), send).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) => {}
            Err(_) => {}
        }
        if app.dragon.connections() == 2 {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = match closed_after {
        Some(t) => t,
        None => wait_for_connections(&app, 2, grace)
            .await
            .map(|t| t + started.elapsed())
            .expect("the flooding client was never closed"),
    };
    pinging.store(false, Ordering::Relaxed);
    ping_task.await.unwrap();
    sampling.await.unwrap();
    let grew_mib = (peak.load(Ordering::Relaxed).saturating_sub(before)) as f64 / 1024.0;
    let worst = worst_ping.load(Ordering::Relaxed);
    eprintln!(
        "sent {sent} requests of ~350 KB replies; closed after {closed_after:?}; \
         server memory grew at most {grew_mib:.1} MiB; worst ping of another client {worst} ms"
    );
    // Over budget within moments of the flood, then at most the grace (plus a socket-write
    // timeout's worth of slack).
    assert!(
        closed_after < grace * 2 + Duration::from_secs(1),
        "closed after {closed_after:?}"
    );
    // The budget (4 MiB) plus 64 replies in flight (~22 MiB) plus the allocator's slack.
    assert!(grew_mib < 96.0, "memory grew {grew_mib:.1} MiB");
    assert!(worst < 1000, "another client's ping took {worst} ms");
    still_works(&seeder).await;
}

/// A stuck writer does not hold up shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_not_held_up_by_a_client_that_never_reads() {
    let app = start(Limits {
        slow_consumer_grace: Duration::from_secs(30),
        ..Limits::default()
    })
    .await;
    let seeder = app.client().await;
    let list = new_list(&seeder, "big").await;
    for _ in 0..100 {
        new_item(&seeder, list, &"y".repeat(2000)).await;
    }
    let big = json!({"id": 1, "route": "todo-item", "verb": "get_list",
        "args": {"filter": {"list_id": list}, "per_page": 500}})
    .to_string();
    let mut flood = raw_socket(&app).await;
    for _ in 0..200 {
        let _ = tokio::time::timeout(
            Duration::from_millis(20),
            flood.send(Message::text(big.clone())),
        )
        .await;
    }
    let t = Instant::now();
    app.dragon.shutdown(Duration::from_secs(2)).await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        t.elapsed()
    );
    assert!(
        wait_for_connections(&app, 0, Duration::from_secs(5))
            .await
            .is_some(),
        "connections left after shutdown: {}",
        app.dragon.connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_pages_and_out_of_range_integers_are_bad_requests() {
    let app = start(Limits::default()).await;
    let c = app.client().await;
    for args in [
        json!({"page": 9_223_372_036_854_775_807_u64}),
        json!({"page": u64::MAX}),
        json!({"page": 18_446_744_073_709_551_615_u64, "per_page": 500}),
        json!({"page": 100_000_000_000_000_000_u64, "per_page": 100}),
        json!({"page": 0}),
        json!({"page": -1}),
        json!({"per_page": 501}),
        json!({"per_page": 1.5}),
    ] {
        for _ in 0..70 {
            // More than the in-flight limit: each answered, each slot released.
            let (code, message) = error_of(&c, "todo-item", "get_list", args.clone()).await;
            assert_eq!(code, ErrorCode::BadRequest, "{args}: {message}");
        }
    }
    // The largest page that fits is answered (empty).
    let last = i64::MAX as u64 / 50;
    let reply = c
        .call("todo-item", "get_list", json!({"page": last}))
        .await
        .unwrap();
    assert_eq!(reply.data, json!([]));
    still_works(&c).await;
}

/// A verb that panics, one that never ends, and one that counts its drops.
fn faulty(dropped: Arc<AtomicBool>) -> Verbs<()> {
    Verbs::new("faulty", ())
        .verb("panic", |_, _ctx: Ctx, _: Value| async move {
            if true {
                panic!("a bug in a verb");
            }
            Ok(Value::Null)
        })
        .verb("hang", move |_, _ctx: Ctx, _: Value| {
            let dropped = dropped.clone();
            async move {
                struct Flag(Arc<AtomicBool>);
                impl Drop for Flag {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::SeqCst);
                    }
                }
                let _flag = Flag(dropped);
                std::future::pending::<()>().await;
                Ok(Value::Null)
            }
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_verb_answers_internal_and_frees_its_slot() {
    let dropped = Arc::new(AtomicBool::new(false));
    let router = faulty(dropped);
    let app = TestApp::start_with(Backend::Sqlite, None, move |b| b.route(router)).await;
    let c = app.client().await;
    for _ in 0..100 {
        let (code, message) = error_of(&c, "faulty", "panic", json!({})).await;
        assert_eq!(code, ErrorCode::Internal);
        assert!(
            !message.contains("a bug"),
            "details stay in the log: {message}"
        );
    }
    still_works(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_tasks_end_with_their_connection() {
    let dropped = Arc::new(AtomicBool::new(false));
    let router = faulty(dropped.clone());
    let app = TestApp::start_with(Backend::Sqlite, None, move |b| b.route(router)).await;
    let c = app.client().await;
    c.send_text(r#"{"id":1,"route":"faulty","verb":"hang"}"#)
        .unwrap();
    still_works(&c).await; // the hanging request is under way
    assert!(!dropped.load(Ordering::SeqCst));
    c.close();
    let t = Instant::now();
    while !dropped.load(Ordering::SeqCst) && t.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        dropped.load(Ordering::SeqCst),
        "the request outlived its connection"
    );
    // And the server's count of requests under way went back to zero: shutdown is quick.
    let t = Instant::now();
    app.dragon.shutdown(Duration::from_secs(10)).await;
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_filters_are_refused_naming_the_limit() {
    let app = start(Limits {
        max_frame: 2 * 1024 * 1024,
        ..Limits::default()
    })
    .await;
    let c = app.client().await;
    let many: Vec<i64> = (0..50_000).collect();
    let ors: Vec<Value> = (0..5_000)
        .map(|i| json!({"text__icontains": format!("w{i}")}))
        .collect();
    let mut deep = json!({"done": false});
    for _ in 0..20 {
        deep = json!({"$not": deep});
    }
    for (filter, limit) in [
        (json!({"id__in": many}), "max_in"),
        (json!({"$or": ors}), "max_terms"),
        (deep, "max_depth"),
    ] {
        for verb in ["get_list", "subscribe"] {
            let (code, message) =
                error_of(&c, "todo-item", verb, json!({"filter": filter.clone()})).await;
            assert_eq!(code, ErrorCode::BadRequest);
            assert!(message.contains(limit), "{verb}: {message}");
        }
    }
    assert_eq!(app.dragon.subscription_count(), 0);
    // Within the limits: fine.
    let ok: Vec<i64> = (0..1000).collect();
    c.call("todo-item", "subscribe", json!({"filter": {"id__in": ok}}))
        .await
        .unwrap();
    still_works(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_subscribes_never_pass_the_limit() {
    let app = start(Limits {
        max_in_flight: 2000,
        ..Limits::default()
    })
    .await;
    let c = Arc::new(app.client().await);
    let list = new_list(&c, "l").await;
    new_item(&c, list, "x").await;
    let mut calls = Vec::new();
    for _ in 0..1100 {
        let c = c.clone();
        calls.push(tokio::spawn(async move {
            c.request(
                "todo-item",
                "subscribe",
                json!({"filter": {"list_id": list}, "snapshot": true}),
            )
            .await
            .unwrap()
        }));
    }
    let (mut ok, mut limited) = (0, 0);
    for call in calls {
        let reply = call.await.unwrap();
        if reply.ok {
            ok += 1;
        } else {
            assert_eq!(reply.error.unwrap().code, ErrorCode::RateLimited);
            limited += 1;
        }
    }
    assert_eq!((ok, limited), (1000, 100));
    assert_eq!(app.dragon.subscription_count(), 1000);
}

/// Twenty connections replaying history over and over do not slow another client's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_storm_does_not_delay_live_events() {
    let app = start(Limits {
        max_in_flight: 256,
        ..Limits::default()
    })
    .await;
    let writer = app.client().await;
    let list = new_list(&writer, "history").await;
    let first = writer
        .call("todo-item", "subscribe", json!({"filter": {"list_id": -1}}))
        .await
        .unwrap()
        .data["position"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut since = String::new();
    for i in 0..1200 {
        let item = new_item(&writer, list, &format!("old {i}")).await;
        if i == 299 {
            let meta = writer
                .call(
                    "todo-item",
                    "get_list",
                    json!({"filter": {"id": item["id"]}}),
                )
                .await
                .unwrap()
                .meta
                .expect("meta");
            since = meta["position"].as_str().unwrap().to_owned();
        }
    }
    // 900 back: replayed. 1,200 back: more than `max_replay` (1,000): not recovered.
    let c = app.client().await;
    let recent = c
        .call("todo-item", "subscribe", json!({"since": since.clone()}))
        .await
        .unwrap();
    assert_eq!(recent.data["recovered"], json!(true));
    let old = c
        .call("todo-item", "subscribe", json!({"since": first}))
        .await
        .unwrap();
    assert_eq!(
        old.data["recovered"],
        json!(false),
        "a replay over the limit"
    );

    let storming = Arc::new(AtomicBool::new(true));
    let mut storm = Vec::new();
    for _ in 0..20 {
        let client = app.client().await;
        let (on, since) = (storming.clone(), since.clone());
        storm.push(tokio::spawn(async move {
            let mut replays = 0;
            while on.load(Ordering::Relaxed) {
                let mut sub = client
                    .subscribe("todo-item", json!({"since": since}))
                    .await
                    .unwrap();
                while sub.next_within(Duration::from_millis(5)).await.is_some() {}
                client
                    .call("todo-item", "unsubscribe", json!({"sub": sub.id}))
                    .await
                    .unwrap();
                replays += 1;
            }
            replays
        }));
    }
    let watcher = app.client().await;
    let watched = new_list(&writer, "watched").await;
    let mut sub = watcher
        .subscribe("todo-item", json!({"filter": {"list_id": watched}}))
        .await
        .unwrap();
    let mut worst = Duration::ZERO;
    for i in 0..40 {
        let t = Instant::now();
        new_item(&writer, watched, &format!("live {i}")).await;
        let event = sub
            .next_within(Duration::from_secs(5))
            .await
            .expect("event");
        assert_eq!(event.event, "created");
        worst = worst.max(t.elapsed());
    }
    storming.store(false, Ordering::Relaxed);
    let mut replays = 0;
    for s in storm {
        replays += s.await.unwrap();
    }
    eprintln!("{replays} replays of 900 events meanwhile; worst change-to-event {worst:?}");
    assert!(replays >= 20, "the storm ran ({replays} replays)");
    assert!(worst < Duration::from_secs(2), "worst {worst:?}");
}

/// Garbage frames are each answered and the connection stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames_are_answered_and_the_socket_kept() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let app = start(Limits::default()).await;
    // A text frame that is not UTF-8: RFC 6455 requires failing the connection, so it is
    // answered (why) and then closed with 1007; the server goes on serving everyone.
    let mut bad = raw_socket(&app).await;
    let _hello = next_text(&mut bad).await;
    let invalid_utf8 = vec![b'{', 0xff, 0xfe, b'}'];
    let frame = Frame::message(invalid_utf8, OpCode::Data(Data::Text), true);
    bad.send(Message::Frame(frame)).await.unwrap();
    let reply = next_text(&mut bad).await;
    assert_eq!(reply["id"], Value::Null);
    assert_eq!(reply["error"]["code"], "bad_request", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("UTF-8")
    );
    assert_eq!(close_code(&mut bad).await, Some(1007));

    let mut ws = raw_socket(&app).await;
    let _hello = next_text(&mut ws).await;
    for raw in [
        "not json",
        "{\"id\": 1, \"route\": \"dragon\", \"verb\": ",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    ] {
        ws.send(Message::text(raw)).await.unwrap();
        let reply = next_text(&mut ws).await;
        assert_eq!(reply["error"]["code"], "bad_request", "{raw}: {reply}");
    }
    for raw in [
        r#"{"id": 1e400, "route": "dragon", "verb": "ping"}"#,
        r#"{"id": 18446744073709551616, "route": "dragon", "verb": "ping"}"#,
        r#"{"id": -0, "route": "dragon", "verb": "ping"}"#,
        r#"{"id": 7, "route": "todo-item", "verb": "get_list", "args": {"page": 1e400}}"#,
        r#"{"id": 8, "route": "todo-item", "verb": "get_list", "args": {"page": -0}}"#,
        r#"{"id": 9, "route": "todo-item", "verb": "get_single", "args": {"id": 18446744073709551616}}"#,
        r#"{"id": 10, "route": "todo-item", "verb": "get_list", "args": {"filter": {"id": 1e400}}}"#,
        r#"{"id": 11, "route": "todo-item", "verb": "get_list", "args": {"filter": {"id__in": [-0, 2e308]}}}"#,
    ] {
        ws.send(Message::text(raw)).await.unwrap();
        let reply = next_text(&mut ws).await;
        assert!(reply.get("ok").is_some(), "{raw}: {reply}");
        assert_ne!(reply["error"]["code"], "internal", "{raw}: {reply}");
    }
    ws.send(Message::text(
        r#"{"id": "last", "route": "dragon", "verb": "ping"}"#,
    ))
    .await
    .unwrap();
    assert_eq!(next_text(&mut ws).await["ok"], json!(true));
}

/// The close code the server sent, reading past other frames.
async fn close_code(ws: &mut RawSocket) -> Option<u16> {
    use futures_util::StreamExt;
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code.into()),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

async fn next_text(ws: &mut RawSocket) -> Value {
    use futures_util::StreamExt;
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame")
            .expect("open")
            .expect("readable");
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_peer_is_dropped_by_the_ping_timeout() {
    let app = start(Limits {
        ping_interval: Duration::from_millis(200),
        ..Limits::default()
    })
    .await;
    // Connected, then silent: never reads (so never answers a ping), never writes.
    let _silent = raw_socket(&app).await;
    let live = app.client().await; // the Rust client answers pings
    assert_eq!(app.dragon.connections(), 2);
    let dropped = wait_for_connections(&app, 1, Duration::from_secs(3)).await;
    assert!(dropped.is_some(), "the silent peer was kept");
    tokio::time::sleep(Duration::from_millis(600)).await;
    still_works(&live).await;
    assert_eq!(app.dragon.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_with_4009_when_configured() {
    let app = start(Limits {
        idle_timeout: Some(Duration::from_millis(500)),
        ..Limits::default()
    })
    .await;
    let idle = app.client().await;
    let busy = app.client().await;
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1200) {
        // A heartbeat (`dragon.ping`, as the JS client sends) is not activity; a call is.
        let _ = idle.send_text(r#"{"id": "hb", "route": "dragon", "verb": "ping"}"#);
        busy.call("dragon", "whoami", json!({})).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(idle.closed(WAIT).await, Some(CloseCode::IDLE));
    busy.call("dragon", "whoami", json!({})).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_refuses_connections_cleanly() {
    let app = start(Limits {
        max_connections: 3,
        ..Limits::default()
    })
    .await;
    let mut kept = Vec::new();
    for _ in 0..3 {
        kept.push(app.client().await);
    }
    match tokio_tungstenite::connect_async(app.ws_url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!("expected a 503 refusal, got {:?}", other.map(|_| ())),
    }
    for c in &kept {
        still_works(c).await;
    }
    kept.pop().unwrap().close();
    assert!(
        wait_for_connections(&app, 2, WAIT).await.is_some(),
        "the seat was given back"
    );
    let again = app.client().await;
    still_works(&again).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_errors_keep_a_refused_frame_from_changing_anything() {
    // A refused subscribe (over a limit) leaves no subscription behind.
    let app = start(Limits {
        max_subscriptions: 2,
        ..Limits::default()
    })
    .await;
    let c = app.client().await;
    for _ in 0..2 {
        c.call("todo-item", "subscribe", json!({})).await.unwrap();
    }
    let (code, message) = error_of(&c, "todo-item", "subscribe", json!({})).await;
    assert_eq!(code, ErrorCode::RateLimited);
    assert!(message.contains("max_subscriptions"), "{message}");
    assert_eq!(app.dragon.subscription_count(), 2);
}

/// On Redis, a replay is read in pages and stops past `max_replay`: a gap longer than that
/// is not recovered, a shorter one is replayed whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_replays_are_bounded_too() {
    use dragon_core::broker::{Broker, Message};
    let url = redis_support::redis_url();
    let broker = redis_support::connect_broker(&url, redis_support::isolated_options()).await;
    let app = TestApp::start_with(Backend::Sqlite, Some(broker.clone()), |b| {
        b.limits(Limits {
            max_replay: 500,
            ..Limits::default()
        })
    })
    .await;
    let c = app.client().await;
    let start = c
        .call("todo-item", "subscribe", json!({"filter": {"list_id": 7}}))
        .await
        .unwrap()
        .data["position"]
        .as_str()
        .unwrap()
        .to_owned();
    let row = |i: i64| {
        json!({"id": i, "list_id": 7, "text": format!("t{i}"), "done": false, "position": 0})
            .as_object()
            .unwrap()
            .clone()
    };
    // A watcher subscribed first sees every message: once it has, this node has dispatched
    // them, and a position read then is current at the last of them.
    let mut watcher = c
        .subscribe("todo-item", json!({"filter": {"list_id": 7}}))
        .await
        .unwrap();
    for i in 1..=800 {
        broker
            .publish("todo-item", Message::created(row(i)))
            .await
            .unwrap();
    }
    let mut count = 0;
    while count < 800 && watcher.next_within(WAIT).await.is_some() {
        count += 1;
    }
    assert_eq!(count, 800);
    let live = c
        .subscribe("todo-item", json!({"filter": {"list_id": 7}}))
        .await
        .unwrap();
    let head = live.reply["position"].as_str().unwrap().to_owned();
    let old = c
        .call("todo-item", "subscribe", json!({"since": start}))
        .await
        .unwrap();
    assert_eq!(old.data["recovered"], json!(false), "800 missed > 500");
    for i in 801..=1100 {
        broker
            .publish("todo-item", Message::created(row(i)))
            .await
            .unwrap();
    }
    let mut count = 0;
    while count < 300 && watcher.next_within(WAIT).await.is_some() {
        count += 1;
    }
    assert_eq!(count, 300);
    let mut recent = c
        .subscribe("todo-item", json!({"since": head}))
        .await
        .unwrap();
    assert_eq!(recent.reply["recovered"], json!(true), "300 missed <= 500");
    let mut replayed = 0;
    while replayed < 300 && recent.next_within(WAIT).await.is_some() {
        replayed += 1;
    }
    // And nothing beyond the 300 missed.
    while recent
        .next_within(Duration::from_millis(300))
        .await
        .is_some()
    {
        replayed += 1;
    }
    assert_eq!(replayed, 300);
}
