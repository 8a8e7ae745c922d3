//! The change log: no committed change is lost, duplicated or reordered, whatever happens to
//! the node that wrote it. Nodes run as processes of their own on one Redis and one
//! PostgreSQL database; clients write through node B, a subscriber on node A must end with
//! exactly the database's rows, each object's versions arriving in commit order, once.

mod common;
#[path = "common/redis.rs"]
mod redis_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, fresh_database};
use dragon_core::client::{Client, Subscription};
use redis_support::{NodeProcess, RedisServer, delete_keys, isolated_options, redis_url};
use serde_json::{Value, json};

/// Every row of `list` as the database has it now: id -> row.
async fn rows(c: &Client, list: i64) -> HashMap<i64, Value> {
    common::items_by_id(c, list).await
}

/// A subscriber's view of a list, built from events only (and reloads when told to).
struct Mirror {
    state: HashMap<i64, Value>,
    versions: HashMap<i64, u64>,
    events: usize,
    resyncs: usize,
}

impl Mirror {
    /// Applies one event; panics on a version seen before or older than the last one.
    fn apply(&mut self, e: &dragon_core::protocol::Event) {
        let data = e.data.clone().unwrap_or(Value::Null);
        let id = data["id"].as_i64().expect("an id");
        let version = e.version.expect("model events carry their version");
        if let Some(last) = self.versions.get(&id) {
            assert!(
                version > *last,
                "object {id}: version {version} arrived after {last} (duplicate or out of order)"
            );
        }
        self.versions.insert(id, version);
        self.events += 1;
        match e.event.as_str() {
            "created" | "updated" => {
                self.state.insert(id, data);
            }
            "deleted" => {
                self.state.remove(&id);
            }
            other => panic!("unexpected event {other}"),
        }
    }

    /// Reads events until the mirror equals the database, at most until `deadline`.
    async fn catch_up(
        &mut self,
        sub: &mut Subscription,
        reader: &Client,
        list: i64,
        deadline: Instant,
    ) -> HashMap<i64, Value> {
        let stored = rows(reader, list).await;
        while self.state != stored {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(e) = sub.next_within(left.min(Duration::from_millis(500))).await else {
                assert!(
                    Instant::now() < deadline,
                    "the subscriber holds {} rows, the database {}; missing {:?}",
                    self.state.len(),
                    stored.len(),
                    stored
                        .iter()
                        .filter(|(id, row)| self.state.get(id) != Some(row))
                        .map(|(id, _)| id)
                        .take(10)
                        .collect::<Vec<_>>()
                );
                continue;
            };
            if e.event == "resync" {
                // Told to reload: what the database has now, versions start over.
                self.resyncs += 1;
                self.state = rows(reader, list).await;
                self.versions.clear();
                continue;
            }
            self.apply(&e);
        }
        stored
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Stop {
    Kill,
    Terminate,
}

async fn relaying(node: &NodeProcess) -> bool {
    let (_, body) = common::http_raw(node.addr, "GET", "/metrics", &[], b"").await;
    body.contains("dragon_changelog_relaying 1")
}

/// Committed changes the relay has not published yet.
async fn unrelayed(database_url: &str) -> i64 {
    use sea_orm::ConnectionTrait;
    let db = dragon_core::db::connect(database_url).await.unwrap();
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM dragon_changes \
             WHERE id > (SELECT COALESCE(MAX(seq), 0) FROM dragon_relayed)",
        ))
        .await
        .unwrap();
    row.map_or(0, |r| r.try_get::<i64>("", "n").unwrap())
}

/// Eight clients create and update rows through node B, which holds the relay lease; B is
/// stopped mid-stream (and Redis restarted, if asked) and never comes back.
async fn writes_through_a_node_that_stops(stop: Stop, restart_redis: bool) {
    let mut own_redis = if restart_redis {
        Some(RedisServer::start().await)
    } else {
        None
    };
    let url = own_redis.as_ref().map_or_else(redis_url, RedisServer::url);
    let prefix = isolated_options().key_prefix;
    let database_url = fresh_database(Backend::Postgres).await;
    // B starts first and takes the relay lease: its death must hand the relaying over.
    let mut b = NodeProcess::start(&url, &prefix, &database_url).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !relaying(&b).await {
        assert!(Instant::now() < deadline, "B never took the relay lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = NodeProcess::start(&url, &prefix, &database_url).await;
    assert!(!relaying(&a).await, "one relay per database");
    let reader = Client::connect(&a.ws_url()).await.unwrap();
    let list = reader
        .call("todo-list", "create", json!({"data": {"name": "stream"}}))
        .await
        .unwrap()
        .data["id"]
        .as_i64()
        .unwrap();
    let watcher = Client::connect(&a.ws_url()).await.unwrap();
    let mut live = watcher
        .subscribe("todo-item", json!({"filter": {"list_id": list}}))
        .await
        .unwrap();
    let mut writers = Vec::new();
    let created = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for w in 0..8 {
        let client = Arc::new(Client::connect(&b.ws_url()).await.unwrap());
        let created = created.clone();
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let data = json!({"data": {"list_id": list, "text": format!("w{w} n{n}")}});
                let Ok(created_row) = client.call("todo-item", "create", data).await else {
                    return;
                };
                created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let id = created_row.data["id"].clone();
                for v in 1..=3 {
                    let data = json!({"id": id, "data": {"text": format!("w{w} n{n} v{v}")}});
                    if client.call("todo-item", "update", data).await.is_err() {
                        return;
                    }
                }
            }
        }));
    }
    // Stopped mid-stream, once the stream is under way (however slow the machine is).
    let started = Instant::now();
    while created.load(std::sync::atomic::Ordering::Relaxed) < 30
        && started.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(redis) = own_redis.as_mut() {
        redis.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        redis.restart().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    match stop {
        Stop::Kill => b.kill(),
        Stop::Terminate => {
            let t = Instant::now();
            b.terminate();
            println!("B stopped in {:?}", t.elapsed());
            // It relayed what it committed before it exited (the lease was its own).
            assert_eq!(unrelayed(&database_url).await, 0, "left unrelayed at exit");
        }
    }
    let stopped = Instant::now();
    for w in writers {
        let _ = w.await;
    }
    println!("writers stopped {:?} after B", stopped.elapsed());
    let mut mirror = Mirror {
        state: HashMap::new(),
        versions: HashMap::new(),
        events: 0,
        resyncs: 0,
    };
    let stored = mirror
        .catch_up(&mut live, &reader, list, stopped + Duration::from_secs(10))
        .await;
    println!(
        "{} rows, {} events, {} resyncs, all on A {:?} after B stopped",
        stored.len(),
        mirror.events,
        mirror.resyncs,
        stopped.elapsed()
    );
    assert!(
        stored.len() > 20,
        "the stream wrote something: {}",
        stored.len()
    );
    // Nothing more arrives: no late duplicate.
    while let Some(e) = live.next_within(Duration::from_millis(500)).await {
        mirror.apply(&e);
    }
    assert_eq!(mirror.state, rows(&reader, list).await);
    drop(a);
    delete_keys(&url, &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_mid_stream_loses_nothing() {
    writes_through_a_node_that_stops(Stop::Kill, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_while_redis_restarts_loses_nothing() {
    writes_through_a_node_that_stops(Stop::Kill, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_stopped_for_a_deploy_publishes_everything_first() {
    writes_through_a_node_that_stops(Stop::Terminate, false).await;
}
