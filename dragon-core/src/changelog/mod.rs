//! The change log: every change a model write makes is recorded in the application's own
//! database, in the write's transaction, and a relay publishes the log to the broker.
//!
//! Publishing from memory after commit loses what a process knew when it dies (a crash, a
//! deploy) and lets racing writers reach the broker out of order. The log makes the database
//! the source of truth instead (the transactional outbox):
//! - a change commits with its write or not at all;
//! - each change gets the log's next id, which is also the changed object's **version**:
//!   writes of one object are serialized by the database (the row is locked from the write to
//!   the commit, and the log row is written after it), so an object's versions grow in
//!   commit order; writers take no lock of their own;
//! - one relay per database (the holder of a lock that dies with its process, so every
//!   node can run one and another takes over at once when the holder dies) publishes the
//!   log in id order, marks its progress, and prunes what is relayed and older than a
//!   minute;
//! - events carry the version and a change id, so a change relayed twice (after a failover)
//!   is delivered once by every node, and clients ignore a version older than theirs.
//!
//! The relay wakes at once for writes of its own process, by `LISTEN`/`NOTIFY` on
//! PostgreSQL for other nodes' writes, and polls as a fallback. Changes made outside the
//! ORM can be logged by a table trigger on PostgreSQL ([`install_trigger`]).

mod lock;
mod relay;
mod sql;
mod trigger;

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait};
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::protocol::ChangeKind;

pub(crate) use relay::Relays;
pub use trigger::install_trigger;

/// Creates (or completes) the log's tables. [`crate::db::connect`] runs it; call it yourself
/// for a database opened otherwise. Safe to run from several nodes at once.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let txn = db.begin().await?;
    if backend == DbBackend::Postgres {
        // Concurrent CREATE TABLE IF NOT EXISTS can still collide on PostgreSQL.
        txn.execute_unprepared("SELECT pg_advisory_xact_lock(7470617)")
            .await?;
    }
    for stmt in sql::TABLES.get(backend).split("; ") {
        txn.execute_unprepared(stmt).await?;
    }
    let epoch = uuid::Uuid::new_v4().simple().to_string();
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        sql::EPOCH_INIT.get(backend),
        [epoch.into()],
    ))
    .await?;
    txn.commit().await?;
    load_triggered(db).await
}

/// Routes whose table has Dragon's trigger (see [`install_trigger`]).
static TRIGGERED: LazyLock<RwLock<HashSet<String>>> = LazyLock::new(Default::default);

async fn load_triggered(db: &DatabaseConnection) -> Result<(), DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            sql::TRIGGERED,
        ))
        .await?;
    let mut set = TRIGGERED.write().expect("triggered lock");
    for row in rows {
        set.insert(row.try_get::<String>("", "route")?);
    }
    Ok(())
}

fn triggered(route: &str) -> bool {
    TRIGGERED.read().expect("triggered lock").contains(route)
}

/// Bumped after a commit that recorded changes: wakes this process's relays.
static WAKE: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

/// Tells this process's relays that changes were committed.
pub(crate) fn wake() {
    WAKE.send_modify(|n| *n = n.wrapping_add(1));
}

fn is_transaction<C>() -> bool {
    std::any::type_name::<C>() == std::any::type_name::<sea_orm::DatabaseTransaction>()
}

/// Before an ORM write of `route`: where a table trigger logs changes too, tells it that
/// this write is logged by the ORM (on a plain connection the trigger logs it instead).
pub(crate) async fn orm_write_begins<C: ConnectionTrait>(db: &C, route: &str) -> Result<(), DbErr> {
    if is_transaction::<C>() && triggered(route) {
        db.execute_unprepared(sql::ORM_WRITE_PG).await?;
    }
    Ok(())
}

/// Records a change of `route` in the log, in `db`'s transaction (or, on a plain connection,
/// as one statement of its own right after the write).
pub(crate) async fn record<C: ConnectionTrait>(
    db: &C,
    route: &str,
    kind: ChangeKind,
    old: Option<&Map<String, Value>>,
    new: Option<&Map<String, Value>>,
) -> Result<(), DbErr> {
    let in_txn = is_transaction::<C>();
    if !in_txn && triggered(route) {
        return Ok(()); // the table's trigger has logged it
    }
    let backend = db.get_database_backend();
    let json = |m: Option<&Map<String, Value>>| -> sea_orm::Value {
        match m {
            Some(m) => Value::Object(m.clone()).to_string().into(),
            None => sea_orm::Value::String(None),
        }
    };
    let at = crate::metrics::unix_ms() as i64;
    let sql = if backend == DbBackend::Postgres && lock::active_here() {
        sql::RECORD_QUIET_PG
    } else {
        sql::RECORD.get(backend)
    };
    let values = [
        route.into(),
        kind.as_str().into(),
        json(old),
        json(new),
        at.into(),
    ];
    let stmt = Statement::from_sql_and_values(backend, sql, values);
    let seq: i64 = if backend == DbBackend::Postgres {
        db.query_one_raw(stmt)
            .await?
            .ok_or_else(|| DbErr::Custom("dragon: the change log returned no id".into()))?
            .try_get("", "id")?
    } else {
        db.execute_raw(stmt).await?.last_insert_id() as i64
    };
    let _ = RECORDED.try_with(|r| {
        let mut r = r.lock().expect("recorded lock");
        match r.iter_mut().find(|(name, _)| name == route) {
            Some((_, last)) => *last = (*last).max(seq as u64),
            None => r.push((route.to_owned(), seq as u64)),
        }
    });
    if !in_txn {
        wake(); // committed already
    }
    Ok(())
}

tokio::task_local! {
    /// The last log id each route got from the writes of a [`recording`] scope.
    static RECORDED: Arc<Mutex<Vec<(String, u64)>>>;
}

/// Runs `fut`, and says which routes its writes recorded changes on, with the last
/// log id (version) each got: a model router waits for those to be relayed before it
/// answers, so a client that hears "done" never sees its own change arrive later as news.
pub(crate) async fn recording<F: Future>(fut: F) -> (F::Output, Vec<(String, u64)>) {
    let recorded: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let out = RECORDED.scope(recorded.clone(), fut).await;
    let list = std::mem::take(&mut *recorded.lock().expect("recorded lock"));
    (out, list)
}

/// The log as this process's relays last saw it (for `/metrics` and `/healthz`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Status {
    /// Committed changes not yet relayed to the broker.
    pub backlog: u64,
    /// How long the oldest of them has waited.
    pub oldest: Option<Duration>,
    /// From commit to publish, for the change relayed last.
    pub lag: Option<Duration>,
    /// Whether a relay of this process is the active one.
    pub relaying: bool,
}

/// The change log's status over every relay this process runs.
pub fn status() -> Status {
    relay::status()
}
