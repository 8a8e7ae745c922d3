//! A node stopped for a deploy (SIGTERM) publishes every change its writes committed before it
//! exits: nodes run as processes of their own on one Redis and one SQLite file, clients write
//! through the one that stops, a subscriber on the other must see every row the database has.

mod common;
#[path = "common/redis.rs"]
mod redis_support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, fresh_database};
use dragon_core::client::Client;
use redis_support::{NodeProcess, delete_keys, isolated_options, redis_url};
use serde_json::json;

async fn ids_in_database(c: &Client, list: i64) -> HashSet<i64> {
    common::items_by_id(c, list).await.into_keys().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_sigterm_publishes_what_it_committed() {
    let prefix = isolated_options().key_prefix;
    let database_url = fresh_database(Backend::Sqlite).await;
    let a = NodeProcess::start(&redis_url(), &prefix, &database_url).await;
    let reader = Client::connect(&a.ws_url()).await.unwrap();
    for round in 0..3 {
        let list = reader
            .call(
                "todo-list",
                "create",
                json!({"data": {"name": format!("round {round}")}}),
            )
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
        let mut b = NodeProcess::start(&redis_url(), &prefix, &database_url).await;
        let mut writers = Vec::new();
        for w in 0..8 {
            let client = Arc::new(Client::connect(&b.ws_url()).await.unwrap());
            writers.push(tokio::spawn(async move {
                for n in 0.. {
                    let data = json!({"data": {"list_id": list, "text": format!("w{w} n{n}")}});
                    if client.call("todo-item", "create", data).await.is_err() {
                        break;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        b.terminate(); // SIGTERM, mid-stream; returns once the process has exited
        for w in writers {
            let _ = w.await;
        }
        let committed = ids_in_database(&reader, list).await;
        let mut seen = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.len() < committed.len() && Instant::now() < deadline {
            if let Some(e) = live.next_within(Duration::from_millis(200)).await {
                assert_eq!(e.event, "created");
                assert!(
                    seen.insert(e.data.unwrap()["id"].as_i64().unwrap()),
                    "no duplicate"
                );
            }
        }
        let missing: Vec<_> = committed.difference(&seen).collect();
        println!(
            "round {round}: {} rows committed, {} missing",
            committed.len(),
            missing.len()
        );
        assert!(!committed.is_empty());
        assert!(
            missing.is_empty(),
            "committed but never published: {missing:?}"
        );
    }
    drop(a);
    delete_keys(&redis_url(), &prefix);
}
