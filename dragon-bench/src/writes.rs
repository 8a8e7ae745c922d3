//! Write benchmark: `dragon-bench --writes`.
//!
//! Model writes record their change in the change log, in the write's own transaction, and a
//! relay publishes the log to the broker in order (see `dragon_core::changelog`). Before,
//! the derive's hooks published from memory after commit. The log costs an extra insert per
//! write and a relay reading it back; this measures what that costs a writer, on SQLite (a
//! WAL file, opened by `dragon_core::db::connect`) and PostgreSQL (a fresh database), in
//! one run:
//! - before: a plain sea-orm model, each write `dragon_core::transaction` + insert +
//!   `publish::emit` of its created message (queued, published after commit), as the hooks did;
//! - with log: a `DragonModel` on a `ModelRouter` (so its server runs the relay), each write
//!   `dragon_core::transaction` + insert.
//!
//! Each way, `writers` tasks write as fast as they can for `--writes-seconds`; the figure is
//! the changes that reached a receiver of the broker per second, from the first write to
//! the last change's arrival (so the relay's lag counts).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dragon_core::broker::{Broker, MemoryBroker, Message};
use dragon_core::db::create_table;
use dragon_core::publish::{emit, with_broker};
use dragon_core::{Dragon, DragonModel, ModelRouter};
use sea_orm::entity::prelude::*;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Set, TransactionError};
use serde::{Deserialize, Serialize};

/// The routes, by [`Way`]: the plain model's, and the `DragonModel`'s.
const ROUTES: [&str; 2] = ["bench-write-plain", "bench-write"];
/// How long to wait, after the writers stop, for the last changes to arrive.
const SETTLE: Duration = Duration::from_secs(30);

mod logged {
    use super::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize, DragonModel)]
    #[sea_orm(table_name = "bench_write")]
    #[dragon(route = "bench-write")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub text: String,
        pub n: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

mod plain {
    use super::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
    #[sea_orm(table_name = "bench_write_plain")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub text: String,
        pub n: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Run the write benchmark (change log against publishing after commit) instead.
    #[arg(long)]
    pub writes: bool,
    /// Seconds each measurement writes for.
    #[arg(long, default_value_t = 5)]
    pub writes_seconds: u64,
    /// Concurrent writers to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub writes_writers: Vec<usize>,
    /// Databases: `sqlite` (a temporary file) and/or `postgres` (`DRAGON_BENCH_PG`).
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    pub writes_db: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Before = 0,
    Log = 1,
}

/// One measurement.
struct Outcome {
    committed: u64,
    published: u64,
    failed: u64,
    per_sec: f64,
    /// From the writers' end to the last change's arrival.
    tail: Duration,
}

pub fn main(opts: &Options) {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(run(opts));
}

async fn run(opts: &Options) {
    let seconds = Duration::from_secs(opts.writes_seconds.max(1));
    let mut notes = Vec::new();
    let mut tail = [Duration::ZERO; 2]; // the longest, before and with log
    println!(
        "| database | writers | before: changes/s | with log: changes/s | ratio (log/before) |\n|---|---:|---:|---:|---:|"
    );
    for kind in &opts.writes_db {
        let (db, scratch) = open(kind).await;
        create_table(&db, plain::Entity).await.expect("schema");
        create_table(&db, logged::Entity).await.expect("schema");
        for (i, &writers) in opts.writes_writers.iter().enumerate() {
            // Alternate which way goes first, so neither always meets a warmer database.
            let order = if i % 2 == 0 {
                [Way::Before, Way::Log]
            } else {
                [Way::Log, Way::Before]
            };
            let mut per_sec = [0.0f64; 2]; // before, with log
            for way in order {
                let outcome = measure(&db, way, writers.max(1), seconds).await;
                if outcome.published < outcome.committed || outcome.failed > 0 {
                    notes.push(format!(
                        "{kind}, {writers} writers, {way:?}: {} committed, {} published, {} writes failed",
                        outcome.committed, outcome.published, outcome.failed
                    ));
                }
                per_sec[way as usize] = outcome.per_sec;
                tail[way as usize] = tail[way as usize].max(outcome.tail);
            }
            let [before, log] = per_sec;
            println!(
                "| {kind} | {writers} | {before:.0} | {log:.0} | {:.2} |",
                log / before
            );
        }
        db.close().await.ok();
        scratch.remove().await;
    }
    println!(
        "\nchanges/s: rows committed by the writers (each an insert in its own transaction) \
         whose change message reached a broker receiver, per second from the first write to \
         the last message's arrival; {}s of writing per figure. before = insert + emit queued \
         until commit, then published by the writer; with log = insert + change log row in the \
         same transaction, published by the relay. The last change arrived at most {:.1} ms \
         (before) and {:.1} ms (with log) after the writers stopped.",
        seconds.as_secs(),
        tail[0].as_secs_f64() * 1e3,
        tail[1].as_secs_f64() * 1e3
    );
    for note in notes {
        println!("note: {note}");
    }
}

/// What to remove once a database is measured: a SQLite file, or a PostgreSQL database.
enum Scratch {
    File(std::path::PathBuf),
    Database(DatabaseConnection, String),
}

impl Scratch {
    async fn remove(self) {
        match self {
            Scratch::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Scratch::Database(admin, name) => {
                let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                if let Err(err) = admin.execute_unprepared(&drop).await {
                    eprintln!("warning: could not drop database {name}: {err}");
                }
            }
        }
    }
}

/// A fresh database of `kind`, opened with `dragon_core::db::connect`.
async fn open(kind: &str) -> (DatabaseConnection, Scratch) {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let unique = format!("{}_{nanos}", std::process::id());
    match kind {
        "sqlite" => {
            let path = std::env::temp_dir().join(format!("dragon_bench_{unique}.db"));
            let db = dragon_core::db::connect(&format!("sqlite://{}", path.display()))
                .await
                .expect("sqlite");
            (db, Scratch::File(path))
        }
        "postgres" => {
            let url = std::env::var("DRAGON_BENCH_PG")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let admin = Database::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at {url}: {e}"));
            let name = format!("dragon_bench_{unique}");
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create database");
            let db = dragon_core::db::connect(&with_database(&url, &name))
                .await
                .expect("postgres");
            (db, Scratch::Database(admin, name))
        }
        other => panic!("unknown database {other:?}: sqlite or postgres"),
    }
}

/// `url` naming the database `name` instead of its own (the URL must name one).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, String::new()), |(b, q)| (b, format!("?{q}")));
    let root = base.rsplit_once('/').map_or(base, |(root, _)| root);
    format!("{root}/{name}{query}")
}

/// `writers` tasks writing one way for `seconds`, counted at a receiver of the broker.
async fn measure(db: &DatabaseConnection, way: Way, writers: usize, seconds: Duration) -> Outcome {
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
    let mut rx = broker.messages();
    let server = (way == Way::Log).then(|| {
        Dragon::builder()
            .broker(broker.clone())
            .route(ModelRouter::<logged::Model>::new(db.clone()))
            .build()
    });
    let route = ROUTES[way as usize];
    let arrived = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let last = Arc::new(Mutex::new(start));
    let counter = tokio::spawn({
        let (arrived, last) = (arrived.clone(), last.clone());
        async move {
            while let Some(envelope) = rx.recv().await {
                if &*envelope.route == route && matches!(*envelope.message, Message::Change { .. })
                {
                    *last.lock().expect("last lock") = Instant::now();
                    arrived.fetch_add(1, Ordering::Release);
                }
            }
        }
    });
    let committed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop_at = start + seconds;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (db, committed, failed) = (db.clone(), committed.clone(), failed.clone());
        let writer = async move {
            let mut k = 0i64;
            while Instant::now() < stop_at {
                k += 1;
                let Err(err) = write(&db, way, format!("writer {w} change {k}"), k).await else {
                    committed.fetch_add(1, Ordering::AcqRel);
                    continue;
                };
                if failed.fetch_add(1, Ordering::AcqRel) == 0 {
                    eprintln!("warning: a {way:?} write failed: {err}");
                }
            }
        };
        tasks.push(tokio::spawn(with_broker(broker.clone(), writer)));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let committed = committed.load(Ordering::Acquire);
    let wrote = start.elapsed();
    let settle_until = Instant::now() + SETTLE;
    while arrived.load(Ordering::Acquire) < committed && Instant::now() < settle_until {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let published = arrived.load(Ordering::Acquire);
    let elapsed = last.lock().expect("last lock").duration_since(start);
    counter.abort();
    if let Some(server) = server {
        // Drains the relay and gives its lease up, so the next server's relay starts at once.
        server.shutdown(Duration::from_secs(5)).await;
    }
    Outcome {
        committed,
        published,
        failed: failed.load(Ordering::Acquire),
        per_sec: published as f64 / elapsed.as_secs_f64().max(1e-9),
        tail: elapsed.saturating_sub(wrote),
    }
}

/// One write, in its own transaction.
async fn write(
    db: &DatabaseConnection,
    way: Way,
    text: String,
    n: i64,
) -> Result<(), TransactionError<DbErr>> {
    dragon_core::transaction(db, move |txn| {
        Box::pin(async move {
            if way == Way::Log {
                let am = logged::ActiveModel {
                    text: Set(text),
                    n: Set(n),
                    ..Default::default()
                };
                am.insert(txn).await?;
                return Ok::<_, DbErr>(());
            }
            let am = plain::ActiveModel {
                text: Set(text),
                n: Set(n),
                ..Default::default()
            };
            let model = am.insert(txn).await?;
            let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&model) else {
                unreachable!("a model serializes to an object");
            };
            emit(ROUTES[Way::Before as usize], Message::created(map)).await;
            Ok(())
        })
    })
    .await
}
