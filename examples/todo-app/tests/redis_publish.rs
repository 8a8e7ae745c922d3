//! The Redis broker's publishing, on its own (no servers): many publishes at once, over
//! several routes, go to Redis as pipelined script calls; each route keeps its order on
//! every node, nothing is lost or doubled, and a Redis that forgot the script (a restart,
//! `SCRIPT FLUSH`) gets it again without losing a publish.
//!
//! Needs Redis at 127.0.0.1:6379 (or `DRAGON_TEST_REDIS`) and `redis-server` on the PATH:
//! without them the tests fail.

mod common;
#[path = "common/redis.rs"]
mod redis_support;

use std::collections::HashMap;
use std::sync::Arc;

use dragon_core::broker::{Broker, Envelope, History, Message, Position, RedisBroker};
use redis_support::{RedisServer, connect_broker, isolated_options, redis_url};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

const ROUTES: [&str; 3] = ["alpha", "beta", "gamma"];

/// Deletes the test's keys from the shared Redis when the test ends, failed or not.
struct DeleteKeys(String, String);

impl Drop for DeleteKeys {
    fn drop(&mut self) {
        redis_support::delete_keys(&self.0, &self.1);
    }
}

/// Asks `broker` for each route's head, as a subscription does before it goes live: the
/// node hands over everything after it (pub/sub alone may drop what is published in the
/// moment a node's subscriber connection takes to become effective; the head is the point a
/// node repairs gaps from).
async fn track_routes(broker: &Arc<RedisBroker>) {
    for route in ROUTES {
        broker.head(route).await.expect("head");
    }
}

/// `count` custom events per route, published at once from `broker`, the routes interleaved
/// (so the queue holds many short runs of one route, pipelined together).
async fn publish_interleaved(broker: &Arc<RedisBroker>, count: usize) {
    let mut publishes = Vec::new();
    for i in 0..count {
        for route in ROUTES {
            let broker = broker.clone();
            publishes.push(async move {
                broker
                    .publish(route, Message::custom("n", json!({ "i": i })))
                    .await
            });
        }
    }
    for result in futures_util::future::join_all(publishes).await {
        result.expect("publish");
    }
}

/// Takes `n` envelopes of the test's routes from `rx`: per route, (position, `i`) in arrival order.
async fn receive(
    rx: &mut UnboundedReceiver<Envelope>,
    n: usize,
) -> HashMap<String, Vec<(Position, u64)>> {
    let mut seen: HashMap<String, Vec<(Position, u64)>> = HashMap::new();
    let mut got = 0;
    while got < n {
        let env = tokio::time::timeout(common::WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {got} of {n} messages arrived"))
            .expect("broker stream open");
        let Message::Custom { data, .. } = &*env.message else {
            continue;
        };
        let i = data["i"].as_u64().expect("i");
        seen.entry(env.route.to_string())
            .or_default()
            .push((env.position, i));
        got += 1;
    }
    seen
}

/// Every route's messages arrived once each, in stream order, the same as its history.
async fn assert_in_stream_order(
    broker: &Arc<RedisBroker>,
    seen: &HashMap<String, Vec<(Position, u64)>>,
    count: usize,
) {
    for route in ROUTES {
        let got = &seen[route];
        assert_eq!(got.len(), count, "{route}: every message once");
        assert!(
            got.windows(2).all(|w| w[0].0 < w[1].0),
            "{route}: positions increase"
        );
        let mut values: Vec<u64> = got.iter().map(|(_, i)| *i).collect();
        values.sort_unstable();
        values.dedup();
        assert_eq!(values.len(), count, "{route}: no message doubled or lost");
        let History::Complete(history) = broker
            .history(route, Position(0, 0))
            .await
            .expect("history")
        else {
            panic!("{route}: history not complete");
        };
        let positions: Vec<Position> = history.iter().map(|e| e.position).collect();
        let arrived: Vec<Position> = got.iter().map(|(p, _)| *p).collect();
        assert_eq!(positions, arrived, "{route}: arrived in the stream's order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_publishes_over_several_routes_keep_each_routes_order_on_every_node() {
    let options = isolated_options();
    let sender = connect_broker(&redis_url(), options.clone()).await;
    let other = connect_broker(&redis_url(), options.clone()).await;
    let _cleanup = DeleteKeys(redis_url(), options.key_prefix.clone());
    let mut on_sender = sender.messages();
    let mut on_other = other.messages();
    track_routes(&sender).await;
    track_routes(&other).await;
    let count = 400;
    publish_interleaved(&sender, count).await;
    for rx in [&mut on_sender, &mut on_other] {
        let seen = receive(rx, count * ROUTES.len()).await;
        assert_in_stream_order(&sender, &seen, count).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_goes_on_after_redis_forgets_the_script() {
    let server = RedisServer::start().await;
    let options = isolated_options();
    let sender = connect_broker(&server.url(), options.clone()).await;
    let other = connect_broker(&server.url(), options).await;
    let mut on_other = other.messages();
    track_routes(&other).await;
    publish_interleaved(&sender, 5).await;
    receive(&mut on_other, 5 * ROUTES.len()).await;

    assert_eq!(server.cli(&["SCRIPT", "FLUSH"]).trim(), "OK");
    publish_interleaved(&sender, 50).await;
    let seen = receive(&mut on_other, 50 * ROUTES.len()).await;
    for route in ROUTES {
        let values: Vec<u64> = seen[route].iter().map(|(_, i)| *i).collect();
        let mut sorted = values.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted,
            (0..50).collect::<Vec<u64>>(),
            "{route}: all 50 once after the flush"
        );
        assert!(
            seen[route].windows(2).all(|w| w[0].0 < w[1].0),
            "{route}: positions increase"
        );
    }
}

/// Every payload names the position it follows on: when that predecessor never reached a
/// node (here published to another channel), the node reads it from the stream first, so
/// nothing is lost or reordered; payloads it cannot read are skipped without harm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_after_a_missed_one_is_repaired_and_bad_payloads_are_skipped() {
    let server = RedisServer::start().await;
    let options = isolated_options();
    let prefix = options.key_prefix.clone();
    let sender = connect_broker(&server.url(), options.clone()).await;
    let other = connect_broker(&server.url(), options).await;
    let mut on_other = other.messages();
    track_routes(&other).await;
    publish_interleaved(&sender, 3).await;
    receive(&mut on_other, 3 * ROUTES.len()).await;

    // A message in alpha's stream that no node receives live.
    let missed = json!({"type": "custom", "event": "n", "data": {"i": 1000}}).to_string();
    let stream = format!("{prefix}stream:alpha");
    let nowhere = format!("{prefix}nowhere");
    let lua = dragon_core::broker::PUBLISH_LUA;
    let args = [
        "EVAL", lua, "1", &stream, &nowhere, "alpha", &missed, "10000", "0", "~",
    ];
    assert!(
        server.cli(&args).contains('-'),
        "the missed message is in the stream"
    );
    // Payloads no node can read: not JSON, no message, a bad position, a bad message, a run
    // whose positions and messages do not pair up, a run with a bad position.
    let channel = format!("{prefix}events");
    for bad in [
        "{not json",
        r#"{"route":"alpha","position":"1-1"}"#,
        r#"{"route":"alpha","position":"x","prev":"0-0","message":{"type":"gap"}}"#,
        r#"{"route":"alpha","position":"1-1","prev":"0-0","message":{"type":"change"}}"#,
        r#"{"route":"alpha","prev":"0-0","positions":["1-1","1-2"],"messages":[]}"#,
        r#"{"route":"alpha","prev":"0-0","positions":["x"],"messages":[{"type":"gap"}]}"#,
    ] {
        server.cli(&["PUBLISH", &channel, bad]);
    }

    // A burst published at once (one payload): its first message follows the missed one.
    let burst: Vec<Message> = (0..40)
        .map(|i| Message::custom("n", json!({ "i": i })))
        .collect();
    sender.publish_many("alpha", burst).await.expect("publish");
    let seen = receive(&mut on_other, 41).await;
    let values: Vec<u64> = seen["alpha"].iter().map(|(_, i)| *i).collect();
    let expected: Vec<u64> = std::iter::once(1000).chain(0..40).collect();
    assert_eq!(
        values, expected,
        "the missed message first, then the burst in order"
    );
    let History::Complete(history) = other
        .history("alpha", Position(0, 0))
        .await
        .expect("history")
    else {
        panic!("alpha: history not complete");
    };
    let arrived: Vec<Position> = seen["alpha"].iter().map(|(p, _)| *p).collect();
    let stored: Vec<Position> = history
        .iter()
        .map(|e| e.position)
        .rev()
        .take(41)
        .rev()
        .collect();
    assert_eq!(arrived, stored, "arrived in the stream's order");
    let stats = other.stats();
    assert!(
        stats.replayed >= 1,
        "the missed message came from the stream: {stats:?}"
    );
    assert_eq!(stats.lost, 0, "nothing was lost");
}
