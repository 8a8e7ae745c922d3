//! Presence across nodes on a real Redis: joins and leaves reach every node; a node killed
//! with SIGKILL or stopped for a deploy leaves no ghosts; a Redis restart that lost every key
//! is repaired. Nodes run in this process or, to be killed, as processes of their own.
//!
//! Needs Redis at 127.0.0.1:6379 (or `DRAGON_TEST_REDIS`) and `redis-server` on the PATH;
//! each test uses a key prefix of its own.

mod common;
#[path = "common/presence.rs"]
mod presence_support;
#[path = "common/redis.rs"]
mod redis_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Backend, WAIT, fresh_database};
use dragon_core::client::Client;
use dragon_core::protocol::Event;
use presence_support::{Mirror, conn_of, conns, expect_presence, presence_event};
use redis_support::{NodeProcess, Nodes, RedisServer, delete_keys, isolated_options, redis_url};
use serde_json::{Value, json};

/// The documented bound: members of a dead node are gone within `presence_timeout`.
const PRESENCE_TIMEOUT: Duration = Duration::from_secs(10);

async fn join(c: &Client, key: &str, state: Value) -> Value {
    c.call(
        "todo-item",
        "presence_join",
        json!({"key": key, "state": state}),
    )
    .await
    .expect("join")
    .data
}

async fn watch(c: &Client, key: &str) -> Value {
    c.call("todo-item", "presence_watch", json!({"key": key}))
        .await
        .expect("watch")
        .data
}

fn joined(e: &Event) -> Vec<String> {
    conns(&e.extra["joins"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_updates_and_leaves_reach_every_node_in_order() {
    let nodes = Nodes::start(3, &redis_url(), isolated_options()).await;
    let watchers = [nodes.nodes[0].client().await, nodes.nodes[1].client().await];
    for w in &watchers {
        assert_eq!(watch(w, "room").await, json!({"members": []}));
    }
    let b = nodes.nodes[1].client().await;
    let c = nodes.nodes[2].client().await;
    let r = join(&b, "room", json!({"n": 1})).await;
    assert_eq!(conns(&r["members"]), [conn_of(&b)]);
    let r = join(&c, "room", json!({"n": 1})).await;
    assert_eq!(
        conns(&r["members"]).len(),
        2,
        "the reply lists members of every node"
    );
    for n in 2..=5 {
        b.call(
            "todo-item",
            "presence_update",
            json!({"key": "room", "state": {"n": n}}),
        )
        .await
        .unwrap();
    }
    b.close();
    for w in &watchers {
        // The same changes, in the same order, on both nodes.
        assert_eq!(joined(&expect_presence(w).await), [conn_of(&b)]);
        assert_eq!(joined(&expect_presence(w).await), [conn_of(&c)]);
        for n in 2..=5 {
            let e = expect_presence(w).await;
            assert_eq!(e.extra["joins"][0]["state"]["n"], n);
        }
        let e = expect_presence(w).await;
        assert_eq!(conns(&e.extra["leaves"]), [conn_of(&b)]);
    }
    // A late watcher on another node sees the current list.
    let late = nodes.nodes[2].client().await;
    assert_eq!(conns(&watch(&late, "room").await["members"]), [conn_of(&c)]);
}

/// Two node processes on one Redis and one SQLite file, with a key prefix of their own.
async fn node_processes(count: usize) -> (Vec<NodeProcess>, String) {
    let prefix = isolated_options().key_prefix;
    let database_url = fresh_database(Backend::Sqlite).await;
    let mut nodes = Vec::new();
    for _ in 0..count {
        nodes.push(NodeProcess::start(&redis_url(), &prefix, &database_url).await);
    }
    (nodes, prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_leaves_no_ghosts() {
    let (mut nodes, prefix) = node_processes(2).await;
    let watcher = Client::connect(&nodes[0].ws_url()).await.unwrap();
    let here = Client::connect(&nodes[0].ws_url()).await.unwrap();
    join(&here, "room", json!({})).await;
    let mut mirror = Mirror::new(&watch(&watcher, "room").await["members"]);
    let mut doomed = Vec::new();
    for _ in 0..5 {
        let c = Client::connect(&nodes[1].ws_url()).await.unwrap();
        join(&c, "room", json!({"editing": true})).await;
        doomed.push(c);
    }
    let all: Vec<String> = std::iter::once(conn_of(&here))
        .chain(doomed.iter().map(conn_of))
        .collect();
    mirror
        .until(&watcher, &all, WAIT)
        .await
        .expect("everyone joined");

    let killed = Instant::now();
    nodes[1].kill();
    let took = mirror
        .until(
            &watcher,
            &[conn_of(&here)],
            PRESENCE_TIMEOUT + Duration::from_secs(5),
        )
        .await
        .map(|_| killed.elapsed());
    println!("members of the killed node were gone after {took:?}");
    let took = took.expect("the killed node's members left");
    assert!(
        took <= PRESENCE_TIMEOUT,
        "took {took:?}, the timeout is {PRESENCE_TIMEOUT:?}"
    );
    // A fresh look agrees, and the survivor's own member is still there.
    let fresh = Client::connect(&nodes[0].ws_url()).await.unwrap();
    assert_eq!(
        conns(&watch(&fresh, "room").await["members"]),
        [conn_of(&here)]
    );
    drop(nodes);
    delete_keys(&redis_url(), &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_for_a_deploy_leaves_at_once() {
    let (mut nodes, prefix) = node_processes(2).await;
    let watcher = Client::connect(&nodes[0].ws_url()).await.unwrap();
    let mut mirror = Mirror::new(&watch(&watcher, "room").await["members"]);
    let mut leaving = Vec::new();
    for _ in 0..3 {
        let c = Client::connect(&nodes[1].ws_url()).await.unwrap();
        join(&c, "room", json!({})).await;
        leaving.push(c);
    }
    let all: Vec<String> = leaving.iter().map(conn_of).collect();
    mirror.until(&watcher, &all, WAIT).await.expect("joined");
    let stopped = Instant::now();
    nodes[1].terminate();
    let took = mirror.until(&watcher, &[], WAIT).await.expect("they left");
    println!(
        "a stopped node's members left {took:?} after SIGTERM (exit took {:?})",
        stopped.elapsed()
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "no waiting for a lease to expire"
    );
    drop(nodes);
    delete_keys(&redis_url(), &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_that_lost_everything_is_repaired_under_load() {
    let mut redis = RedisServer::start().await;
    let nodes = Nodes::start(2, &redis.url(), isolated_options()).await;
    let watcher = nodes.nodes[0].client().await;
    let mut mirror = Mirror::new(&watch(&watcher, "doc").await["members"]);
    let mut members = Vec::new();
    for i in 0..6 {
        let c = Arc::new(nodes.nodes[i % 2].client().await);
        join(&c, "doc", json!({"typing": false})).await;
        members.push(c);
    }
    let want: Vec<String> = members.iter().map(|c| conn_of(c)).collect();
    mirror.until(&watcher, &want, WAIT).await.expect("joined");

    // Load: half the members keep changing their state, through the outage and after; the
    // other half say nothing (only their node can bring them back).
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for c in members.iter().step_by(2) {
        let (c, stop) = (c.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let _ = c
                    .call(
                        "todo-item",
                        "presence_update",
                        json!({"key": "doc", "state": {"n": n}}),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    redis.wipe();
    // One member goes away while Redis is down: it must not come back as a ghost.
    let gone = members.pop().unwrap();
    gone.close();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restarted = Instant::now();
    redis.restart().await;
    let mut want: Vec<String> = members.iter().map(|c| conn_of(c)).collect();
    want.sort();
    let took = mirror
        .until(&watcher, &want, PRESENCE_TIMEOUT)
        .await
        .expect("the watcher's list is right again");
    println!("membership correct {took:?} after Redis came back empty");
    // Fresh looks on both nodes agree, and stay right while the load goes on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for node in &nodes.nodes {
        let c = node.client().await;
        assert_eq!(conns(&watch(&c, "doc").await["members"]), want);
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    while let Some(e) = presence_event(&watcher, Duration::from_millis(300)).await {
        mirror.apply(&e);
    }
    assert_eq!(mirror.conns(), want, "no ghost, nobody missing");
    assert!(restarted.elapsed() < PRESENCE_TIMEOUT + Duration::from_secs(5));
}
