//! Scale-out through Redis: several Dragon servers in one process, on their own ports, sharing
//! one database and one Redis (each with its own `RedisBroker`), over real sockets.
//!
//! Needs Redis at 127.0.0.1:6379 (or `DRAGON_TEST_REDIS`) and `redis-server` on the PATH:
//! without them the tests fail. Each test uses a key prefix of its own, so they run in
//! parallel against the shared Redis without flushing it.

mod common;
#[path = "common/redis.rs"]
mod redis_support;

use std::time::{Duration, Instant};

use common::{WAIT, expect_quiet, new_list};
use std::sync::Arc;

use dragon_core::broker::{RedisBroker, RedisOptions};
use dragon_core::client::{Client, ClientError, Subscription};
use dragon_core::protocol::{ErrorCode, Event};
use redis_support::{Nodes, RedisServer, isolated_options, post_json, redis_url};
use serde_json::json;

async fn new_item(c: &Client, list: i64, text: &str) -> i64 {
    common::new_item(c, list, text).await["id"]
        .as_i64()
        .expect("id")
}

async fn subscribe_list(c: &Client, list: i64) -> Subscription {
    c.subscribe("todo-item", json!({"filter": {"list_id": list}}))
        .await
        .expect("subscribe")
}

async fn next(sub: &mut Subscription, what: &str) -> Event {
    sub.next_within(WAIT)
        .await
        .unwrap_or_else(|| panic!("no event arrived: expected {what}"))
}

/// `n` events, in arrival order.
async fn take(sub: &mut Subscription, n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match sub.next_within(WAIT).await {
            Some(e) => out.push(e),
            None => panic!("only {} of {n} events arrived", out.len()),
        }
    }
    out
}

fn position(e: &Event) -> (u64, u64) {
    let p = e.position.as_deref().expect("event has a position");
    let (a, b) = p.split_once('-').expect("position a-b");
    (a.parse().expect("a"), b.parse().expect("b"))
}

fn text_of(e: &Event) -> String {
    e.data.as_ref().expect("data")["text"]
        .as_str()
        .expect("text")
        .to_owned()
}

fn code(err: ClientError) -> ErrorCode {
    match err {
        ClientError::Server(body) => body.code,
        other => panic!("expected a server error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_and_custom_events_reach_every_node() {
    let cluster = Nodes::start(3, &redis_url(), isolated_options()).await;
    let [n1, n2, n3] = &cluster.nodes[..] else {
        unreachable!()
    };
    let (c1, c2, c3) = (n1.client().await, n2.client().await, n3.client().await);
    let list = new_list(&c2, "shared").await;
    let mut s1 = subscribe_list(&c1, list).await;
    let mut s3 = subscribe_list(&c3, list).await;

    // A create through node 2 reaches subscribers on nodes 1 and 3.
    let id = new_item(&c2, list, "milk").await;
    for sub in [&mut s1, &mut s3] {
        let e = next(sub, "created").await;
        assert_eq!(e.event, "created");
        assert_eq!(e.data.as_ref().unwrap()["id"], id);
        assert!(e.subs.contains(&sub.id));
    }
    // An update through node 3 reaches node 1; a delete through node 1 reaches node 3.
    c3.call(
        "todo-item",
        "update",
        json!({"id": id, "data": {"done": true}}),
    )
    .await
    .expect("update");
    let e = next(&mut s1, "updated").await;
    assert_eq!(e.event, "updated");
    assert_eq!(e.changed.as_deref(), Some(&["done".to_owned()][..]));
    assert_eq!(next(&mut s3, "updated").await.event, "updated");
    c1.call("todo-item", "delete", json!({"id": id}))
        .await
        .expect("delete");
    assert_eq!(next(&mut s3, "deleted").await.event, "deleted");
    assert_eq!(next(&mut s1, "deleted").await.event, "deleted");

    // A custom event published through node 2's broker reaches both nodes, filtered as usual.
    let broker = cluster.nodes[1].dragon.broker().clone();
    broker
        .publish(
            "todo-item",
            dragon_core::broker::Message::custom("nudge", json!({"list_id": list, "n": 1})),
        )
        .await
        .expect("publish");
    broker
        .publish(
            "todo-item",
            dragon_core::broker::Message::custom("nudge", json!({"list_id": list + 1000})),
        )
        .await
        .expect("publish");
    for sub in [&mut s1, &mut s3] {
        let e = next(sub, "nudge").await;
        assert_eq!(e.event, "nudge");
        assert_eq!(e.data, Some(json!({"list_id": list, "n": 1})));
        expect_quiet(sub).await;
    }
    // A list subscription on node 3 sees the list created through node 1.
    let mut lists = c3
        .subscribe("todo-list", json!({}))
        .await
        .expect("subscribe lists");
    let other = new_list(&c1, "another").await;
    let e = next(&mut lists, "created").await;
    assert_eq!(e.data.unwrap()["id"], other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_rapid_changes_arrive_in_the_same_order_on_every_node() {
    // Node 3 has a tiny receive buffer: it lags and must recover from the streams.
    let cluster = Nodes::start(2, &redis_url(), isolated_options()).await;
    let lagging = redis_support::connect_broker(
        &cluster.url,
        RedisOptions {
            receive_buffer: 1,
            ..cluster.options.clone()
        },
    )
    .await;
    let n3 = common::TestApp::serve(
        todo_app::builder(&cluster.nodes[0].db)
            .broker(lagging.clone())
            .build(),
        cluster.nodes[0].db.clone(),
        cluster.nodes[0].database_url.clone(),
    )
    .await;
    let nodes = [&cluster.nodes[0], &cluster.nodes[1], &n3];
    let mut clients = Vec::new();
    for n in nodes {
        clients.push(n.client().await);
    }
    let list = new_list(&clients[0], "rapid").await;
    let mut subs = Vec::new();
    for c in &clients {
        subs.push(subscribe_list(c, list).await);
    }
    // 50 changes at once, through all three nodes concurrently.
    let mut writers = Vec::new();
    for (w, n) in nodes.iter().enumerate() {
        let url = n.ws_url();
        let count = if w == 0 { 18 } else { 16 };
        writers.push(tokio::spawn(async move {
            let c = Client::connect(&url).await.expect("connect");
            let mut calls = Vec::new();
            for i in 0..count {
                calls.push(c.call(
                    "todo-item",
                    "create",
                    json!({"data": {"list_id": list, "text": format!("w{w}-{i}")}}),
                ));
            }
            for r in futures_util::future::join_all(calls).await {
                r.expect("create");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let mut seen: Vec<Vec<((u64, u64), String)>> = Vec::new();
    for sub in &mut subs {
        let events = take(sub, 50).await;
        expect_quiet(sub).await;
        seen.push(
            events
                .iter()
                .map(|e| {
                    assert_eq!(e.event, "created");
                    (position(e), text_of(e))
                })
                .collect(),
        );
    }
    for s in &seen {
        assert!(s.windows(2).all(|w| w[0].0 < w[1].0), "positions increase");
        let mut texts: Vec<&String> = s.iter().map(|(_, t)| t).collect();
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), 50, "each change exactly once");
    }
    assert_eq!(seen[0], seen[1], "node 1 and node 2 saw the same order");
    assert_eq!(seen[0], seen[2], "node 1 and node 3 saw the same order");
    eprintln!("lagging node: {:?}", lagging.stats());
}

/// One node, plus a second on the same database whose broker can buffer a single message:
/// a burst overflows it (`RecvError::Lagged`).
async fn lagging_node(options: RedisOptions) -> (Nodes, Arc<RedisBroker>, common::TestApp) {
    let cluster = Nodes::start(1, &redis_url(), options.clone()).await;
    let lagging = redis_support::connect_broker(
        &cluster.url,
        RedisOptions {
            receive_buffer: 1,
            ..options
        },
    )
    .await;
    let n2 = common::TestApp::serve(
        todo_app::builder(&cluster.nodes[0].db)
            .broker(lagging.clone())
            .build(),
        cluster.nodes[0].db.clone(),
        cluster.nodes[0].database_url.clone(),
    )
    .await;
    (cluster, lagging, n2)
}

/// `n` concurrent `tick` events {i} on `todo-item`, interleaved with as many `noise` events on
/// another route: a burst of one route would reach a node as one payload, these reach it as
/// `2n` payloads at once (one per script call, as the route changes at every message).
fn ticks(
    publisher: &Arc<dyn dragon_core::broker::Broker>,
    n: i64,
) -> impl Iterator<Item = impl std::future::Future<Output = Result<(), dragon_core::broker::BrokerError>>>
{
    (0..2 * n).map(move |k| {
        let p = publisher.clone();
        let (route, event) = match k % 2 {
            0 => ("todo-item", "tick"),
            _ => ("elsewhere", "noise"),
        };
        async move {
            p.publish(
                route,
                dragon_core::broker::Message::custom(event, json!({"i": k / 2})),
            )
            .await
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_buffer_overflow_is_replayed_from_the_streams() {
    // Node 2 can buffer one message: a burst overflows it (`RecvError::Lagged`), and the
    // broker must hand over everything anyway, in order, once.
    let options = isolated_options();
    let (cluster, lagging, n2) = lagging_node(options).await;
    let c = n2.client().await;
    let mut sub = c
        .subscribe("todo-item", json!({}))
        .await
        .expect("subscribe");
    let publisher = cluster.nodes[0].dragon.broker().clone();
    let burst = ticks(&publisher, 300);
    let t = Instant::now();
    for r in futures_util::future::join_all(burst).await {
        r.expect("publish");
    }
    let published = t.elapsed();
    let events = take(&mut sub, 300).await;
    eprintln!(
        "300 concurrent publishes: {published:?}; all delivered on the other node after {:?}",
        t.elapsed()
    );
    expect_quiet(&mut sub).await;
    assert!(events.windows(2).all(|w| position(&w[0]) < position(&w[1])));
    let mut seen: Vec<i64> = events
        .iter()
        .map(|e| e.data.as_ref().unwrap()["i"].as_i64().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..300).collect::<Vec<_>>());
    let stats = lagging.stats();
    eprintln!("lagging node: {stats:?}");
    assert!(
        stats.lagged > 0,
        "the burst should have overflowed a one-message buffer"
    );
    assert_eq!(stats.lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_recovers_exactly_the_missed_changes_on_another_node() {
    let cluster = Nodes::start(2, &redis_url(), isolated_options()).await;
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let writer = n1.client().await;
    let list = new_list(&writer, "recover").await;

    // A client on node 1 sees one change, then goes away.
    let reader = n1.client().await;
    let mut sub = subscribe_list(&reader, list).await;
    new_item(&writer, list, "before").await;
    let last = next(&mut sub, "created").await;
    let since = last.position.clone().expect("position");
    reader.close();
    drop(sub);

    // 100 changes happen while it is away (through both nodes).
    let other = n2.client().await;
    for i in 0..100 {
        let c = if i % 2 == 0 { &writer } else { &other };
        new_item(c, list, &format!("missed-{i}")).await;
    }

    // It comes back on node 2 with `since`: exactly those 100, in order, then live ones.
    let back = n2.client().await;
    let mut sub = back
        .subscribe(
            "todo-item",
            json!({"filter": {"list_id": list}, "since": since}),
        )
        .await
        .expect("resubscribe");
    assert_eq!(sub.reply["recovered"], true, "reply {:?}", sub.reply);
    let events = take(&mut sub, 100).await;
    let texts: Vec<String> = events.iter().map(text_of).collect();
    let expected: Vec<String> = (0..100).map(|i| format!("missed-{i}")).collect();
    assert_eq!(texts, expected, "no gap, no duplicate, in order");
    assert!(events.windows(2).all(|w| position(&w[0]) < position(&w[1])));
    expect_quiet(&mut sub).await;
    let c2 = n2.client().await;
    new_item(&c2, list, "live").await;
    let e = next(&mut sub, "live").await;
    assert_eq!(text_of(&e), "live");
    assert!(position(&e) > position(events.last().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_beyond_a_short_history_is_not_recovered() {
    let options = RedisOptions {
        history_len: 5,
        exact_trim: true,
        ..isolated_options()
    };
    let cluster = Nodes::start(2, &redis_url(), options).await;
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let writer = n1.client().await;
    let list = new_list(&writer, "short").await;
    let reader = n1.client().await;
    let sub = subscribe_list(&reader, list).await;
    let since = sub.reply["position"].as_str().expect("position").to_owned();
    reader.close();
    // A watcher on node 2 tells when node 2 has seen every change (so none is still on its
    // way there when the client comes back).
    let watcher_client = n2.client().await;
    let mut watcher = subscribe_list(&watcher_client, list).await;
    for i in 0..20 {
        new_item(&writer, list, &format!("gone-{i}")).await;
    }
    take(&mut watcher, 20).await;
    let back = n2.client().await;
    let mut sub = back
        .subscribe(
            "todo-item",
            json!({"filter": {"list_id": list}, "since": since}),
        )
        .await
        .expect("resubscribe");
    assert_eq!(sub.reply["recovered"], false, "reply {:?}", sub.reply);
    expect_quiet(&mut sub).await;

    // Within the kept history recovery still works.
    let last = sub.reply["position"].as_str().unwrap().to_owned();
    for i in 0..3 {
        new_item(&writer, list, &format!("kept-{i}")).await;
    }
    let third = n2.client().await;
    let mut again = third
        .subscribe(
            "todo-item",
            json!({"filter": {"list_id": list}, "since": last}),
        )
        .await
        .expect("resubscribe");
    assert_eq!(again.reply["recovered"], true, "reply {:?}", again.reply);
    let texts: Vec<String> = take(&mut again, 3).await.iter().map(text_of).collect();
    assert_eq!(texts, ["kept-0", "kept-1", "kept-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_publish_reaches_every_node() {
    let secret = "s3cret-token";
    let cluster = Nodes::start_with(3, &redis_url(), isolated_options(), |i, b| {
        // Node 3 has no secret: publishing there is disabled.
        if i < 2 { b.publish_secret(secret) } else { b }
    })
    .await;
    let (n1, n2, n3) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let (c1, c2) = (n1.client().await, n2.client().await);
    let list = new_list(&c1, "http").await;
    let mut s1 = subscribe_list(&c1, list).await;
    let mut s2 = subscribe_list(&c2, list).await;
    let body =
        json!({"route": "todo-item", "event": "ping", "data": {"list_id": list, "msg": "hi"}})
            .to_string();

    let (status, reply) = post_json(n1.addr, None, &body).await;
    assert_eq!(status, 401, "{reply}");
    assert_eq!(reply["error"]["code"], "unauthenticated");
    let (status, _) = post_json(n1.addr, Some("wrong"), &body).await;
    assert_eq!(status, 401);
    let (status, _) = post_json(n1.addr, Some(&format!("{secret}x")), &body).await;
    assert_eq!(status, 401);
    let (status, _) = post_json(n3.addr, Some(secret), &body).await;
    assert_eq!(status, 404, "disabled without a secret");
    expect_quiet(&mut s1).await;

    let (status, reply) = post_json(n1.addr, Some(secret), &body).await;
    assert_eq!(status, 202, "{reply}");
    for sub in [&mut s1, &mut s2] {
        let e = next(sub, "ping").await;
        assert_eq!(e.event, "ping");
        assert_eq!(e.route.as_deref(), Some("todo-item"));
        assert_eq!(e.data, Some(json!({"list_id": list, "msg": "hi"})));
        assert!(e.position.is_some());
    }

    let bad = [
        "not json",
        "[]",
        r#"{"event": "ping", "data": {}}"#,
        r#"{"route": "todo-item", "data": {}}"#,
        r#"{"route": "todo-item", "event": "", "data": {}}"#,
        r#"{"route": "todo-item", "event": "created", "data": {}}"#,
        r#"{"route": "todo-item", "event": "resync", "data": {}}"#,
        r#"{"route": "todo-item", "event": "presence", "data": {}}"#,
        r#"{"route": "nope", "event": "ping", "data": {}}"#,
        r#"{"route": "todo-item", "event": "ping", "data": [1]}"#,
        r#"{"route": "todo-item", "event": "ping", "data": {}, "extra": 1}"#,
        r#"{"route": 5, "event": "ping"}"#,
    ];
    for b in bad {
        let (status, reply) = post_json(n2.addr, Some(secret), b).await;
        assert_eq!(status, 400, "{b}: {reply}");
        assert!(reply["error"]["code"].is_string(), "{b}: {reply}");
        assert!(reply["error"]["message"].is_string(), "{b}: {reply}");
    }
    let huge = json!({"route": "todo-item", "event": "big", "data": {"x": "y".repeat(70_000)}})
        .to_string();
    let (status, _) = post_json(n2.addr, Some(secret), &huge).await;
    assert_eq!(status, 413);
    expect_quiet(&mut s1).await;
    expect_quiet(&mut s2).await;

    // Without data: `{}`; subscribers without a filter get it, filtered ones do not.
    let mut all = c2
        .subscribe("todo-item", json!({}))
        .await
        .expect("subscribe");
    let (status, _) = post_json(
        n2.addr,
        Some(secret),
        r#"{"route": "todo-item", "event": "bare"}"#,
    )
    .await;
    assert_eq!(status, 202);
    let e = next(&mut all, "bare").await;
    assert_eq!((e.event.as_str(), e.data), ("bare", Some(json!({}))));
    expect_quiet(&mut s1).await;
}

async fn wait_healthy(node: &common::TestApp, healthy: bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = redis_support::http(node.addr, "GET", "/healthz", &[], b"").await;
        if (status == 200) == healthy {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "healthz stayed {status} {body} (want healthy={healthy})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_and_lost_subscriber_connections_are_survived() {
    let mut redis = RedisServer::start().await;
    let options = RedisOptions {
        command_timeout: Duration::from_secs(1),
        ..isolated_options()
    };
    let secret = "restart";
    let cluster =
        Nodes::start_with(2, &redis.url(), options, |_, b| b.publish_secret(secret)).await;
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (c1, c2) = (n1.client().await, n2.client().await);
    let list = new_list(&c2, "restart").await;
    let mut s1 = subscribe_list(&c1, list).await;
    let start = s1.reply["position"].as_str().unwrap().to_owned();
    new_item(&c2, list, "before-kill").await;
    assert_eq!(text_of(&next(&mut s1, "before-kill").await), "before-kill");

    // The subscriber connections are cut (Redis stays up): what is published meanwhile is
    // replayed from the stream once they are back, in order, exactly once.
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(
        killed.trim().parse::<u32>().unwrap_or(0) >= 2,
        "killed {killed:?}"
    );
    for i in 0..20 {
        new_item(&c2, list, &format!("cut-{i}")).await;
    }
    let texts: Vec<String> = take(&mut s1, 20).await.iter().map(text_of).collect();
    let expected: Vec<String> = (0..20).map(|i| format!("cut-{i}")).collect();
    assert_eq!(texts, expected);
    expect_quiet(&mut s1).await;
    eprintln!("after cutting pub/sub: {:?}", cluster.brokers[0].stats());

    // Redis dies.
    redis.kill();
    wait_healthy(n1, false).await;
    wait_healthy(n2, false).await;
    // What needs Redis fails quickly with `unavailable`; the servers stay up.
    let t = Instant::now();
    let err = c2
        .subscribe(
            "todo-item",
            json!({"filter": {"list_id": list}, "since": start}),
        )
        .await
        .err()
        .expect("history needs Redis");
    assert_eq!(code(err), ErrorCode::Unavailable);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    let body = json!({"route": "todo-item", "event": "x", "data": {}}).to_string();
    let (status, reply) = post_json(n1.addr, Some(secret), &body).await;
    assert_eq!(status, 503, "{reply}");
    assert_eq!(reply["error"]["code"], "unavailable");
    let fresh = n1.client().await;
    fresh
        .call("dragon", "ping", json!({}))
        .await
        .expect("server is up");
    let listed = fresh
        .call(
            "todo-item",
            "get_list",
            json!({"filter": {"list_id": list}}),
        )
        .await
        .expect("reads work without Redis");
    assert_eq!(listed.data.as_array().unwrap().len(), 21);

    // Redis comes back with its data (append-only file); Dragon was not restarted.
    redis.restart().await;
    wait_healthy(n1, true).await;
    wait_healthy(n2, true).await;
    new_item(&c2, list, "after").await;
    assert_eq!(text_of(&next(&mut s1, "after").await), "after");
    expect_quiet(&mut s1).await;

    // `since` from before everything recovers what the history kept, across the restart.
    let c3 = n1.client().await;
    let mut back = c3
        .subscribe(
            "todo-item",
            json!({"filter": {"list_id": list}, "since": start}),
        )
        .await
        .expect("resubscribe");
    assert_eq!(back.reply["recovered"], true, "reply {:?}", back.reply);
    let texts: Vec<String> = take(&mut back, 22).await.iter().map(text_of).collect();
    assert_eq!(texts[0], "before-kill");
    assert_eq!(texts[1..21], expected[..]);
    assert_eq!(texts[21], "after");
    expect_quiet(&mut back).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_running_the_documented_script_reaches_every_node() {
    // docs/redis.md carries the exact script Dragon runs.
    let doc = include_str!("../../../docs/redis.md");
    let lua = doc
        .split_once("```lua\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(lua, _)| lua)
        .expect("a lua block in docs/redis.md");
    assert_eq!(
        lua,
        dragon_core::broker::PUBLISH_LUA,
        "docs/redis.md is out of date"
    );

    let options = isolated_options();
    let prefix = options.key_prefix.clone();
    let cluster = Nodes::start(2, &redis_url(), options).await;
    let (c1, c2) = (
        cluster.nodes[0].client().await,
        cluster.nodes[1].client().await,
    );
    let list = new_list(&c1, "foreign").await;
    let mut s1 = subscribe_list(&c1, list).await;
    let mut s2 = subscribe_list(&c2, list).await;
    let since = s2.reply["position"].as_str().unwrap().to_owned();

    // What another service would run (here through redis-cli, as the docs show).
    let message = json!({"type": "custom", "event": "nudge", "data": {"list_id": list}});
    let host_port = redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let (host, port) = host_port.split_once(':').unwrap_or((&host_port, "6379"));
    let out = std::process::Command::new("redis-cli")
        .args(["-h", host, "-p", port, "EVAL", lua, "1"])
        .arg(format!("{prefix}stream:todo-item"))
        .arg(format!("{prefix}events"))
        .arg("todo-item")
        .arg(message.to_string())
        .args(["10000", "300000", "~"])
        .output()
        .expect("redis-cli must be installed for these tests");
    let position = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(position.contains('-'), "EVAL answered {position:?}");
    for sub in [&mut s1, &mut s2] {
        let e = next(sub, "nudge").await;
        assert_eq!(e.event, "nudge");
        assert_eq!(e.position.as_deref(), Some(position.as_str()));
        assert_eq!(e.data, Some(json!({"list_id": list})));
    }
    // And it is part of the history like any other message.
    let c3 = cluster.nodes[1].client().await;
    let mut back = c3
        .subscribe(
            "todo-item",
            json!({"filter": {"list_id": list}, "since": since}),
        )
        .await
        .expect("resubscribe");
    assert_eq!(back.reply["recovered"], true);
    assert_eq!(next(&mut back, "nudge").await.event, "nudge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_the_history_no_longer_covers_sends_resync() {
    // Node 2 can buffer one message and Redis keeps five: a burst overflows the buffer, the
    // replay finds the history trimmed past the gap, and node 2's subscribers are told to
    // reload instead of silently missing messages.
    let options = RedisOptions {
        history_len: 5,
        exact_trim: true,
        ..isolated_options()
    };
    let (cluster, lagging, n2) = lagging_node(options).await;
    let c = n2.client().await;
    let mut sub = c
        .subscribe("todo-item", json!({}))
        .await
        .expect("subscribe");
    let publisher = cluster.nodes[0].dragon.broker().clone();
    let burst = ticks(&publisher, 300);
    for r in futures_util::future::join_all(burst).await {
        r.expect("publish");
    }
    let mut resyncs = 0;
    while let Some(e) = sub.next_within(std::time::Duration::from_secs(2)).await {
        if e.event == "resync" {
            assert_eq!(e.subs, [sub.id.clone()]);
            resyncs += 1;
        }
    }
    let stats = lagging.stats();
    assert!(
        stats.lost > 0,
        "the history was too short to replay: {stats:?}"
    );
    assert!(resyncs > 0, "the subscriber was told to reload");
}
