//! Dragon under test: a model router over a SQLite file (opened by
//! `dragon_core::db::connect`, so WAL and `synchronous=NORMAL`); every client subscribes with
//! a filter on `list_id` (its room).
//!
//! Three ways, the columns of the table ([`Kind`]):
//! - memory: one node; each event is the change the derive hands the broker after commit
//!   (`Message::created` of the row, published), without a database write: Dragon's own cost;
//! - redis: the same on two nodes sharing a Redis, clients split over both, events entering
//!   through the first;
//! - sqlite: one node, memory broker; each event is a real insert through the derive (a
//!   transaction: the row and its change-log row), relayed to the broker by Dragon's relay.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dragon_core::broker::{Broker, Message};
use dragon_core::testing::TestServer;
use dragon_core::{Dragon, DragonModel, ModelRouter, Publish};
use sea_orm::entity::prelude::*;
use sea_orm::{DatabaseConnection, Set};
use serde::{Deserialize, Serialize};

use crate::clients::{Fleet, FleetSpec, Source, list_id};

mod bench_item {
    use super::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize, DragonModel)]
    #[sea_orm(table_name = "bench_item")]
    #[dragon(route = "bench-item")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub list_id: i64,
        pub text: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

const ROUTE: &str = "bench-item";

/// Publishes to Redis in flight at once: as many as a burst has, so that, as in memory and
/// in the reference, every event is published as soon as the source makes it, none waiting
/// for another's round trip.
const IN_FLIGHT: usize = 4096;

/// Every client's subscription (`{room}` becomes its room's `list_id`).
const SUBSCRIBE: &str =
    r#"{"id":1,"route":"bench-item","verb":"subscribe","args":{"filter":{"list_id":{room}}}}"#;

/// Which Dragon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One node, memory broker, events published as after commit.
    Memory,
    /// Two nodes on one Redis, events published as after commit through the first.
    Redis,
    /// One node, memory broker, events are SQLite inserts through the derive.
    Sqlite,
}

/// A SQLite file of its own, removed on drop.
pub struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("dragon_bench_{}_{nanos}.db", std::process::id());
        Scratch(std::env::temp_dir().join(name))
    }

    /// Where the file is.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.0.display())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", ".dragon-relay"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

/// A fresh SQLite file with the benchmark's table (and Dragon's change log).
pub async fn database() -> (DatabaseConnection, Scratch) {
    let scratch = Scratch::new();
    let db = dragon_core::db::connect(&scratch.url())
        .await
        .expect("sqlite");
    dragon_core::db::create_table(&db, bench_item::Entity)
        .await
        .expect("schema");
    (db, scratch)
}

/// One Dragon node on a free port.
async fn node(db: &DatabaseConnection, broker: Arc<dyn Broker>) -> TestServer {
    let router = ModelRouter::<bench_item::Model>::new(db.clone()).filterable(["list_id"]);
    let dragon = Dragon::builder().broker(broker).route(router).build();
    TestServer::start(&dragon, dragon.router())
        .await
        .expect("serve")
}

/// Dragon running: its nodes, their brokers and the database.
pub struct Subject {
    kind: Kind,
    db: DatabaseConnection,
    brokers: Vec<Arc<dyn Broker>>,
    nodes: Vec<TestServer>,
    prefix: Option<String>,
    _scratch: Scratch,
}

impl Subject {
    pub async fn start(kind: Kind) -> Subject {
        let (db, scratch) = database().await;
        let (brokers, prefix) = if kind == Kind::Redis {
            let prefix = crate::brokers::unique_prefix();
            (crate::brokers::redis(&prefix, 2).await, Some(prefix))
        } else {
            (crate::brokers::make("memory").await, None)
        };
        let mut nodes = Vec::new();
        for broker in &brokers {
            nodes.push(node(&db, broker.clone()).await);
        }
        Subject {
            kind,
            db,
            brokers,
            nodes,
            prefix,
            _scratch: scratch,
        }
    }

    /// Starts `clients` clients spread over the nodes and rooms, each subscribed.
    pub async fn fleet(&self, clients: usize, rooms: usize, pin: Option<usize>) -> Fleet {
        let urls: Vec<String> = self.nodes.iter().map(TestServer::ws_url).collect();
        Fleet::connect(FleetSpec {
            urls: &urls,
            clients,
            rooms,
            setup: Some(SUBSCRIBE),
            pin,
        })
        .await
    }

    /// Where this Dragon's events come from.
    pub fn source(&self) -> Commits {
        Commits {
            db: self.db.clone(),
            broker: self.brokers[0].clone(),
            insert: self.kind == Kind::Sqlite,
            remote: self.kind == Kind::Redis,
            next_id: 0,
            inflight: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
        }
    }

    pub async fn stop(self) {
        // Each stop closes the node's connections and drains its relay.
        for server in self.nodes {
            server.stop().await;
        }
        self.db.close().await.ok();
        // The last handles on the brokers (a source must be dropped first): a Redis broker's
        // tasks, such as its presence lease, stop with it, so they write no key after the
        // cleanup.
        drop(self.brokers);
        if let Some(prefix) = self.prefix {
            tokio::time::sleep(Duration::from_millis(200)).await;
            crate::brokers::cleanup(&prefix);
        }
    }
}

/// How events enter Dragon.
pub struct Commits {
    db: DatabaseConnection,
    broker: Arc<dyn Broker>,
    insert: bool,
    /// Whether the broker is across the network (Redis).
    remote: bool,
    next_id: i64,
    inflight: Arc<tokio::sync::Semaphore>,
}

impl Source for Commits {
    async fn send(&mut self, room: usize, t0: u64) {
        let list_id = list_id(room) as i64;
        if self.insert {
            insert(&self.db, list_id, t0.to_string())
                .await
                .expect("insert");
            return;
        }
        self.next_id += 1;
        let row = bench_item::Model {
            id: self.next_id,
            list_id,
            text: t0.to_string(),
        };
        let message = Message::created(row.to_published());
        if !self.remote {
            // In memory, a publish is the caller's own work, as the reference's source sends
            // into its rings: published from this task, in order, no hop.
            self.broker.publish(ROUTE, message).await.expect("publish");
            return;
        }
        // Many requests publish at once in a real app: each publish in flight on its own
        // (up to `IN_FLIGHT`), so a broker's round trip bounds latency, not the event rate.
        let permit = self
            .inflight
            .clone()
            .acquire_owned()
            .await
            .expect("permits");
        let broker = self.broker.clone();
        tokio::spawn(async move {
            broker.publish(ROUTE, message).await.expect("publish");
            drop(permit);
        });
    }
}

/// One insert through the derive, in its own transaction (as a model router writes).
async fn insert(db: &DatabaseConnection, list_id: i64, text: String) -> Result<(), DbErr> {
    dragon_core::transaction(db, move |txn| {
        Box::pin(async move {
            bench_item::ActiveModel {
                list_id: Set(list_id),
                text: Set(text),
                ..Default::default()
            }
            .insert(txn)
            .await
            .map(|_| ())
        })
    })
    .await
    .map_err(|e| DbErr::Custom(e.to_string()))
}

/// Resident memory (KiB) of this process before and after `n` clients connect and subscribe.
pub async fn rss(kind: Kind, n: usize, pin: Option<usize>) -> (u64, u64) {
    let subject = Subject::start(kind).await;
    let before = crate::clients::rss_kib();
    let fleet = subject.fleet(n, 1, pin).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = crate::clients::rss_kib();
    drop(fleet);
    subject.stop().await;
    (before, after)
}

/// One writer's inserts through the derive for `seconds`, no clients.
pub struct Writes {
    pub committed: u64,
    /// Changes the relay published to the broker by the end.
    pub published: u64,
    /// Committed per second of writing.
    pub per_sec: f64,
    /// From the last commit to the last change reaching the broker.
    pub tail: Duration,
}

pub async fn write_rate(seconds: Duration) -> Writes {
    let subject = Subject::start(Kind::Sqlite).await;
    let mut rx = subject.brokers[0].messages();
    let counter = tokio::spawn(async move {
        let mut n = 0u64;
        let mut last = Instant::now();
        while let Ok(Some(envelope)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await
        {
            if &*envelope.route == ROUTE && matches!(*envelope.message, Message::Change { .. }) {
                n += 1;
                last = Instant::now();
            }
        }
        (n, last)
    });
    // The writer runs as a task on the runtime, as a model router's write does in an app
    // (not on the thread blocked in `block_on`, which would add a thread hop per statement).
    let db = subject.db.clone();
    let start = Instant::now();
    let committed = tokio::spawn(async move {
        let mut committed = 0u64;
        while start.elapsed() < seconds {
            insert(&db, 1, format!("change {committed}"))
                .await
                .expect("insert");
            committed += 1;
        }
        committed
    })
    .await
    .expect("writer");
    let wrote = Instant::now();
    let per_sec = committed as f64 / (wrote - start).as_secs_f64();
    let (published, last) = counter.await.expect("counter");
    subject.stop().await;
    Writes {
        committed,
        published,
        per_sec,
        tail: last.saturating_duration_since(wrote),
    }
}
