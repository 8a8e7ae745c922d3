//! The relay: publishes each route's log to the broker in order, on one node per database at
//! a time (the lease holder), and marks its progress in the database.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, QueryResult, Statement};
use serde_json::{Map, Value};
use tokio::sync::{Notify, watch};

use super::{Status, WAKE, sql};
use crate::broker::{Broker, BrokerError, Message};
use crate::metrics::unix_ms;
use crate::protocol::ChangeKind;

/// How long a lease lasts without renewal: a dead holder's successor starts within this
/// and [`LEASE_CHECK`].
const LEASE: Duration = Duration::from_secs(3);
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often a node without the lease tries to take it.
const LEASE_CHECK: Duration = Duration::from_secs(1);
/// The holder's fallback poll (writes of this process and NOTIFYs wake it sooner).
const POLL: Duration = Duration::from_millis(250);
/// After a failure (broker or database down), the pause before trying again.
const RETRY: Duration = Duration::from_millis(250);
/// Changes of one route published per step.
const BATCH: i64 = 500;
/// Relayed changes are kept this long (the log is not the history; the broker keeps that).
const KEEP: Duration = Duration::from_secs(60);
const PRUNE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

struct Shared {
    db: DatabaseConnection,
    broker: Arc<dyn Broker>,
    /// This relay's name in the lease.
    me: String,
    stop: watch::Sender<bool>,
    status: Mutex<Status>,
}

/// Every relay of this process, for [`super::status`].
static ALL: LazyLock<Mutex<Vec<Weak<Shared>>>> = LazyLock::new(Default::default);

pub(crate) fn status() -> Status {
    let mut all = ALL.lock().expect("relays lock");
    all.retain(|w| w.strong_count() > 0);
    all.iter()
        .filter_map(Weak::upgrade)
        .map(|s| *s.status.lock().expect("status lock"))
        .fold(Status::default(), |a, b| Status {
            backlog: a.backlog.max(b.backlog),
            oldest: a.oldest.max(b.oldest),
            lag: a.lag.max(b.lag),
            relaying: a.relaying || b.relaying,
        })
}

/// One database's relay, running in the background until stopped or dropped.
pub(crate) struct Relay {
    shared: Arc<Shared>,
}

impl Relay {
    fn start(db: DatabaseConnection, broker: Arc<dyn Broker>) -> Self {
        let shared = Arc::new(Shared {
            db,
            broker,
            me: uuid::Uuid::new_v4().simple().to_string(),
            stop: watch::channel(false).0,
            status: Mutex::default(),
        });
        ALL.lock()
            .expect("relays lock")
            .push(Arc::downgrade(&shared));
        tokio::spawn(run(shared.clone()));
        Relay { shared }
    }

    /// Waits until everything committed before the call is relayed (by this node or the
    /// lease holder), at most `timeout`. False if it timed out.
    async fn drain(&self, timeout: Duration) -> bool {
        super::wake();
        let s = &self.shared;
        let wait = async {
            let mut goal: Option<HashMap<String, i64>> = None;
            loop {
                match behind(&s.db).await {
                    Ok(rows) => {
                        let goal = goal.get_or_insert_with(|| {
                            rows.iter().map(|b| (b.route.clone(), b.head)).collect()
                        });
                        let done = rows
                            .iter()
                            .all(|b| goal.get(&b.route).is_none_or(|head| b.done >= *head));
                        if done {
                            return;
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "change log: cannot read progress"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
    }
}

/// The relays of one server: one per distinct database its routers write to.
#[derive(Default)]
pub(crate) struct Relays(Vec<Relay>);

impl Relays {
    pub(crate) fn start(dbs: Vec<DatabaseConnection>, broker: &Arc<dyn Broker>) -> Self {
        let mut seen = Vec::new();
        let mut relays = Vec::new();
        for db in dbs {
            let id = identity(&db);
            if id.is_some() && seen.contains(&id) {
                continue;
            }
            seen.push(id);
            relays.push(Relay::start(db, broker.clone()));
        }
        Relays(relays)
    }

    /// Waits, at most `timeout`, until every change committed so far is relayed; then stops
    /// and gives up the lease, so another node takes over at once.
    pub(crate) async fn drain(&self, timeout: Duration) {
        let started = Instant::now();
        for relay in &self.0 {
            let left = timeout.saturating_sub(started.elapsed());
            if !relay.drain(left).await {
                tracing::error!(
                    "stopping with committed changes not yet relayed; another node's relay will publish them"
                );
            }
        }
        for relay in &self.0 {
            relay.shared.stop.send_replace(true);
            let s = &relay.shared;
            let backend = s.db.get_database_backend();
            let release = Statement::from_sql_and_values(
                backend,
                sql::RELEASE.get(backend),
                [s.me.clone().into()],
            );
            if let Err(err) = s.db.execute_raw(release).await {
                tracing::warn!(error = %err, "change log: could not give the lease up");
            }
        }
    }
}

/// The pool behind a connection, so routers sharing one get one relay.
fn identity(db: &DatabaseConnection) -> Option<usize> {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            Some(Arc::as_ptr(&db.get_postgres_connection_pool().connect_options()) as usize)
        }
        DbBackend::Sqlite => {
            Some(Arc::as_ptr(&db.get_sqlite_connection_pool().connect_options()) as usize)
        }
        _ => None,
    }
}

async fn run(s: Arc<Shared>) {
    let mut wake = WAKE.subscribe();
    let mut stop = s.stop.subscribe();
    let notified = Arc::new(Notify::new());
    let listener = (s.db.get_database_backend() == DbBackend::Postgres)
        .then(|| tokio::spawn(listen(s.db.clone(), notified.clone())));
    let mut epoch = None;
    let mut renewed: Option<Instant> = None;
    let mut pruned = Instant::now();
    while !*stop.borrow() {
        let held = match keep_lease(&s, &mut renewed).await {
            Ok(held) => held,
            Err(err) => {
                tracing::warn!(error = %err, "change log: lease");
                false
            }
        };
        s.status.lock().expect("status lock").relaying = held;
        let step = if held {
            step(&s, &mut epoch).await
        } else {
            measure(&s).await.map(|()| false).map_err(RelayError::from)
        };
        let more = match step {
            Ok(more) => more,
            Err(err) => {
                tracing::warn!(error = %err, "change log: relay step failed; retrying");
                tokio::time::sleep(RETRY).await;
                false
            }
        };
        if held && pruned.elapsed() > PRUNE_EVERY {
            pruned = Instant::now();
            if let Err(err) = prune(&s.db).await {
                tracing::warn!(error = %err, "change log: prune failed");
            }
        }
        if more {
            continue;
        }
        if held {
            tokio::select! {
                _ = wake.changed() => {}
                _ = notified.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => {}
            }
        } else {
            tokio::select! {
                _ = tokio::time::sleep(LEASE_CHECK) => {}
                _ = stop.changed() => {}
            }
        }
    }
    if let Some(listener) = listener {
        listener.abort();
    }
}

/// Wakes the relay on every `NOTIFY dragon_changes` (another node's commit).
async fn listen(db: DatabaseConnection, notified: Arc<Notify>) {
    use sea_orm::sqlx::postgres::PgListener;
    loop {
        let listener = async {
            let mut l = PgListener::connect_with(db.get_postgres_connection_pool()).await?;
            l.listen("dragon_changes").await?;
            loop {
                l.recv().await?;
                notified.notify_one();
            }
        };
        let result: Result<(), sea_orm::sqlx::Error> = listener.await;
        if let Err(err) = result {
            tracing::debug!(error = %err, "change log: LISTEN failed; polling meanwhile");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn keep_lease(s: &Shared, renewed: &mut Option<Instant>) -> Result<bool, DbErr> {
    if renewed.is_some_and(|at| at.elapsed() < RENEW_EVERY) {
        return Ok(true);
    }
    let backend = s.db.get_database_backend();
    let now = unix_ms() as i64;
    let until = now + LEASE.as_millis() as i64;
    let result =
        s.db.execute_raw(Statement::from_sql_and_values(
            backend,
            sql::LEASE.get(backend),
            [s.me.clone().into(), until.into(), now.into()],
        ))
        .await;
    let held = match result {
        Ok(r) => r.rows_affected() == 1,
        Err(err) => {
            *renewed = None;
            return Err(err);
        }
    };
    *renewed = held.then(Instant::now);
    Ok(held)
}

/// A route whose log is ahead of the relay.
struct Behind {
    route: String,
    head: i64,
    done: i64,
}

async fn behind(db: &DatabaseConnection) -> Result<Vec<Behind>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            sql::BEHIND,
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Behind {
                route: r.try_get("", "route")?,
                head: r.try_get("", "head")?,
                done: r.try_get("", "done")?,
            })
        })
        .collect()
}

/// Updates the status without relaying (a node without the lease).
async fn measure(s: &Shared) -> Result<(), DbErr> {
    let routes = behind(&s.db).await?;
    let backend = s.db.get_database_backend();
    let mut oldest = None;
    for b in routes.iter().take(16) {
        let row =
            s.db.query_one_raw(Statement::from_sql_and_values(
                backend,
                sql::FIRST_AT.get(backend),
                [b.route.clone().into(), (b.done + 1).into()],
            ))
            .await?;
        if let Some(row) = row {
            let at: i64 = row.try_get("", "at_ms")?;
            oldest = oldest.max(Some(age(at)));
        }
    }
    let mut status = s.status.lock().expect("status lock");
    status.backlog = routes.iter().map(|b| (b.head - b.done) as u64).sum();
    status.oldest = oldest;
    Ok(())
}

fn age(at_ms: i64) -> Duration {
    Duration::from_millis((unix_ms() as i64 - at_ms).max(0) as u64)
}

/// Relays the next changes of every route that is behind. True if more are waiting.
async fn step(s: &Shared, epoch: &mut Option<String>) -> Result<bool, RelayError> {
    let backend = s.db.get_database_backend();
    if epoch.is_none() {
        let row =
            s.db.query_one_raw(Statement::from_string(backend, sql::EPOCH))
                .await?;
        *epoch = Some(match row {
            Some(row) => row.try_get("", "value")?,
            None => String::new(),
        });
    }
    let epoch = epoch.as_deref().unwrap_or_default();
    let routes = behind(&s.db).await?;
    let mut more = false;
    let mut backlog = 0;
    let mut oldest = None;
    let mut lag = None;
    for b in &routes {
        let rows =
            s.db.query_all_raw(Statement::from_sql_and_values(
                backend,
                sql::NEXT.get(backend),
                [b.route.clone().into(), b.done.into(), BATCH.into()],
            ))
            .await?;
        let mut messages = Vec::with_capacity(rows.len() + 1);
        let mut expected = b.done + 1;
        let mut last = (b.head, unix_ms() as i64);
        for row in &rows {
            let (seq, at, message) = change(row, epoch)?;
            if seq != expected {
                // Rows missing from the log (deleted by hand): subscribers must reload.
                tracing::error!(route = %b.route, from = expected, to = seq - 1,
                    "change log: changes missing; telling subscribers to reload");
                messages.push(Message::Gap);
            }
            if oldest.is_none() {
                oldest = Some(age(at));
            }
            messages.extend(message);
            expected = seq + 1;
            last = (seq, at);
        }
        if rows.is_empty() {
            tracing::error!(route = %b.route, "change log: changes missing; telling subscribers to reload");
            messages.push(Message::Gap);
        }
        if !messages.is_empty() {
            s.broker.publish_many(&b.route, messages).await?;
        }
        s.db.execute_raw(Statement::from_sql_and_values(
            backend,
            sql::MARK.get(backend),
            [
                b.route.clone().into(),
                last.0.into(),
                (unix_ms() as i64).into(),
            ],
        ))
        .await?;
        lag = lag.max(Some(age(last.1)));
        backlog += (b.head - last.0).max(0) as u64;
        more |= last.0 < b.head;
    }
    let mut status = s.status.lock().expect("status lock");
    status.backlog = backlog;
    status.oldest = if more { oldest } else { None };
    if lag.is_some() {
        status.lag = lag;
    }
    Ok(more)
}

/// One log row as a message: its sequence, when it was recorded, and the change (none if
/// the row cannot be read, which is logged).
fn change(row: &QueryResult, epoch: &str) -> Result<(i64, i64, Option<Message>), DbErr> {
    let seq: i64 = row.try_get("", "seq")?;
    let at: i64 = row.try_get("", "at_ms")?;
    let kind: String = row.try_get("", "kind")?;
    let state = |col: &str| -> Result<Option<Map<String, Value>>, DbErr> {
        let text: Option<String> = row.try_get("", col)?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    };
    let kind = match kind.as_str() {
        "created" => ChangeKind::Created,
        "updated" => ChangeKind::Updated,
        "deleted" => ChangeKind::Deleted,
        other => {
            tracing::error!(seq, kind = other, "change log: unknown kind; skipped");
            return Ok((seq, at, None));
        }
    };
    let message = Message::Change {
        kind,
        old: state("old")?,
        new: state("new")?,
        id: Some(Arc::from(format!("{epoch}.{seq}"))),
        version: Some(seq as u64),
    };
    Ok((seq, at, Some(message)))
}

async fn prune(db: &DatabaseConnection) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let before = unix_ms() as i64 - KEEP.as_millis() as i64;
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        sql::PRUNE.get(backend),
        [before.into()],
    ))
    .await
    .map(|_| ())
}
