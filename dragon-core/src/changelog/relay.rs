//! The relay: publishes each route's log to the broker in order, on one node per database at
//! a time (the holder of its lock, see `lock.rs`), and marks its progress in the database.

use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, QueryResult, Statement};
use serde_json::{Map, Value};
use tokio::sync::{Notify, watch};

use super::{Status, WAKE, lock, sql};
use crate::broker::{Broker, BrokerError, Message};
use crate::metrics::unix_ms;
use crate::protocol::ChangeKind;

/// How often a relay without the lock tries to take it (a dead holder's lock is gone at
/// once, so its successor starts within this).
const LEASE_CHECK: Duration = Duration::from_millis(500);
/// The holder's fallback poll (writes of this process and NOTIFYs wake it sooner).
const POLL: Duration = Duration::from_millis(250);
/// How long a woken relay waits for more commits before it reads the log.
const GATHER: Duration = Duration::from_millis(2);
/// After a failure (broker or database down), the pause before trying again.
const RETRY: Duration = Duration::from_millis(250);
/// Changes published per step.
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
    /// active relay), at most `timeout`. False if it timed out.
    async fn drain(&self, timeout: Duration) -> bool {
        super::wake();
        let db = &self.shared.db;
        let wait = async {
            let mut goal = None;
            loop {
                let step = async {
                    let goal = match goal {
                        Some(g) => g,
                        None => *goal.insert(head(db).await?),
                    };
                    Ok::<_, DbErr>(progress(db).await? >= goal)
                };
                match step.await {
                    Ok(true) => return,
                    Ok(false) => {}
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
    /// and lets the lock go, so another node takes over at once.
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
            // Stopping drops the lock: another node's relay takes over at once.
            relay.shared.stop.send_replace(true);
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

/// The active relay's place in the log.
#[derive(Default)]
struct Cursor {
    /// The last id relayed (or skipped as a hole), once loaded.
    done: Option<i64>,
    /// The last id written to `dragon_relayed`, and when.
    marked: i64,
    marked_at: Option<Instant>,
    /// A missing id the relay waits for (PostgreSQL): the id, and the snapshot `xmax` when
    /// it was first missed.
    hole: Option<(i64, u64)>,
    epoch: Option<String>,
}

/// What the relay does after a step.
#[derive(PartialEq)]
enum Next {
    /// Caught up: wait for a wake-up.
    Idle,
    /// More is waiting: go on at once.
    More,
    /// Waiting for a transaction that holds an earlier id to end: look again very soon.
    Soon,
}

/// How often progress is written while changes keep coming (a relay that takes over
/// republishes at most this much, which every node and client drops as repeats).
const MARK_EVERY: Duration = Duration::from_millis(200);

/// The relay's life: while this node holds the lock it relays, otherwise it keeps the
/// status current and waits for the lock.
async fn run(s: Arc<Shared>) {
    let mut wake = WAKE.subscribe();
    let mut stop = s.stop.subscribe();
    let notified = Arc::new(Notify::new());
    let listener = (s.db.get_database_backend() == DbBackend::Postgres)
        .then(|| tokio::spawn(listen(s.db.clone(), notified.clone())));
    let mut lease = lock::Lease::new();
    let mut pruned = Instant::now();
    let mut cursor = Cursor::default();
    while !*stop.borrow() {
        let held = lease.refresh(&s.db).await;
        s.status.lock().expect("status lock").relaying = held;
        if !held {
            cursor = Cursor::default(); // whoever holds the lock moves the log on
        }
        let next = turn(&s, held.then_some(&mut cursor)).await;
        if held && pruned.elapsed() > PRUNE_EVERY {
            pruned = Instant::now();
            if let Err(err) = prune(&s.db, cursor.marked).await {
                tracing::warn!(error = %err, "change log: prune failed");
            }
        }
        match next {
            Next::More => continue,
            Next::Soon => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            Next::Idle if held => {
                let woken = tokio::select! {
                    _ = wake.changed() => true,
                    _ = notified.notified() => true,
                    _ = tokio::time::sleep(POLL) => false,
                    _ = stop.changed() => false,
                };
                if woken {
                    // Let the commits of this moment gather: one step relays them all, rather
                    // than one step per commit competing with the writers.
                    tokio::time::sleep(GATHER).await;
                }
            }
            Next::Idle => {
                tokio::select! {
                    _ = tokio::time::sleep(LEASE_CHECK) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
    if let Some(listener) = listener {
        listener.abort();
    }
}

/// One turn: a relay step with the lock (`cursor`), a status update without it. A failure
/// is logged and waited out; the next turn tries again.
async fn turn(s: &Shared, cursor: Option<&mut Cursor>) -> Next {
    let result = match cursor {
        Some(cursor) => step(s, cursor).await,
        None => measure(s)
            .await
            .map(|()| Next::Idle)
            .map_err(RelayError::from),
    };
    match result {
        Ok(next) => next,
        Err(err) => {
            tracing::warn!(error = %err, "change log: relay step failed; retrying");
            tokio::time::sleep(RETRY).await;
            Next::Idle
        }
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

async fn scalar<T: sea_orm::TryGetable>(
    db: &DatabaseConnection,
    stmt: Statement,
    col: &str,
) -> Result<Option<T>, DbErr> {
    match db.query_one_raw(stmt).await? {
        Some(row) => row.try_get("", col),
        None => Ok(None),
    }
}

/// How far the relay got, as recorded in the database.
async fn progress(db: &DatabaseConnection) -> Result<i64, DbErr> {
    let stmt = Statement::from_string(db.get_database_backend(), sql::PROGRESS);
    Ok(scalar::<Option<i64>>(db, stmt, "seq")
        .await?
        .flatten()
        .unwrap_or(0))
}

/// The last id recorded so far.
async fn head(db: &DatabaseConnection) -> Result<i64, DbErr> {
    let stmt = Statement::from_string(db.get_database_backend(), sql::HEAD);
    Ok(scalar::<i64>(db, stmt, "head").await?.unwrap_or(0))
}

/// PostgreSQL's snapshot bound `query` (`XMAX_PG` or `XMIN_PG`) as a number.
async fn xid(db: &DatabaseConnection, query: &str) -> Result<u64, DbErr> {
    let stmt = Statement::from_string(DbBackend::Postgres, query);
    let text = scalar::<String>(db, stmt, "x").await?.unwrap_or_default();
    Ok(text.parse().unwrap_or(0))
}

/// Updates the backlog figures: changes after `done`, and how old the first is.
async fn backlog(s: &Shared, done: i64) -> Result<(), DbErr> {
    let backend = s.db.get_database_backend();
    let row =
        s.db.query_one_raw(Statement::from_sql_and_values(
            backend,
            sql::BACKLOG.get(backend),
            [done.into()],
        ))
        .await?;
    let (n, first) = match row {
        Some(row) => (
            row.try_get::<i64>("", "n")?,
            row.try_get::<Option<i64>>("", "first")?,
        ),
        None => (0, None),
    };
    let mut status = s.status.lock().expect("status lock");
    status.backlog = n.max(0) as u64;
    status.oldest = first.map(age);
    Ok(())
}

/// Updates the status without relaying (a node without the lock).
async fn measure(s: &Shared) -> Result<(), DbErr> {
    let done = progress(&s.db).await?;
    backlog(s, done).await
}

fn age(at_ms: i64) -> Duration {
    Duration::from_millis((unix_ms() as i64 - at_ms).max(0) as u64)
}

/// Relays the next changes, in id order, one broker call per run of one route.
///
/// Ids are taken when a change is recorded, not when it commits, so on PostgreSQL a
/// later id can be visible while an earlier one's transaction is still open. The relay
/// stops at such a hole and waits until every transaction that was running when it first
/// saw the hole has ended (the oldest running transaction is past that moment's `xmax`);
/// if the id is still missing then, it was rolled back, and the relay passes it. (SQLite
/// writes one transaction at a time and gives rolled-back ids out again: no holes.)
async fn step(s: &Shared, c: &mut Cursor) -> Result<Next, RelayError> {
    let done = c.load(s).await?;
    let Read {
        runs,
        rows,
        last,
        last_at,
        blocked,
    } = read(s, c, done).await?;
    for (route, messages) in runs {
        s.broker.publish_many(&route, messages).await?;
    }
    c.done = Some(last);
    let caught_up = !blocked && (rows as i64) < BATCH;
    c.mark(s, last, caught_up).await?;
    {
        let mut status = s.status.lock().expect("status lock");
        if let Some(at) = last_at {
            status.lag = Some(age(at));
        }
        if caught_up {
            status.backlog = 0;
            status.oldest = None;
        }
    }
    if !caught_up {
        backlog(s, last).await?;
    }
    Ok(if blocked {
        Next::Soon
    } else if caught_up {
        Next::Idle
    } else {
        Next::More
    })
}

impl Cursor {
    /// The log's epoch and the last id relayed, read from the database on the first step.
    async fn load(&mut self, s: &Shared) -> Result<i64, DbErr> {
        if self.epoch.is_none() {
            let stmt = Statement::from_string(s.db.get_database_backend(), sql::EPOCH);
            let epoch = scalar::<String>(&s.db, stmt, "value").await?;
            self.epoch = Some(epoch.unwrap_or_default());
        }
        Ok(match self.done {
            Some(done) => done,
            None => {
                let done = progress(&s.db).await?;
                self.marked = done;
                *self.done.insert(done)
            }
        })
    }

    /// Records progress up to `last` in the database: when caught up, and every
    /// [`MARK_EVERY`] while changes keep coming.
    async fn mark(&mut self, s: &Shared, last: i64, caught_up: bool) -> Result<(), DbErr> {
        let due = caught_up || self.marked_at.is_none_or(|t| t.elapsed() > MARK_EVERY);
        if last <= self.marked || !due {
            return Ok(());
        }
        let backend = s.db.get_database_backend();
        s.db.execute_raw(Statement::from_sql_and_values(
            backend,
            sql::MARK.get(backend),
            [last.into(), (unix_ms() as i64).into()],
        ))
        .await?;
        self.marked = last;
        self.marked_at = Some(Instant::now());
        Ok(())
    }
}

/// What one read of the log after `done` gave.
struct Read {
    /// The readable changes, as runs of one route, in id order.
    runs: Vec<(String, Vec<Message>)>,
    /// Rows read (a full batch means more may be waiting).
    rows: usize,
    /// The last id passed, and when it was recorded.
    last: i64,
    last_at: Option<i64>,
    /// Stopped at a hole whose transaction may still commit.
    blocked: bool,
}

/// Reads up to [`BATCH`] changes after `done`, up to the first hole that is not known to
/// be a rollback (see [`step`]).
async fn read(s: &Shared, c: &mut Cursor, done: i64) -> Result<Read, DbErr> {
    let backend = s.db.get_database_backend();
    // Checked before reading, so a transaction that commits in between is read below.
    let hole_over = match c.hole {
        Some((_, xmax)) => xid(&s.db, sql::XMIN_PG).await? >= xmax,
        None => false,
    };
    let rows =
        s.db.query_all_raw(Statement::from_sql_and_values(
            backend,
            sql::NEXT.get(backend),
            [done.into(), BATCH.into()],
        ))
        .await?;
    let epoch = c.epoch.as_deref().unwrap_or_default();
    let mut read = Read {
        runs: Vec::new(),
        rows: rows.len(),
        last: done,
        last_at: None,
        blocked: false,
    };
    for row in &rows {
        let id: i64 = row.try_get("", "id")?;
        let next = read.last + 1;
        if id != next && backend == DbBackend::Postgres {
            match c.hole {
                Some((missing, _)) if missing == next && hole_over => {
                    tracing::debug!(from = next, to = id - 1, "change log: ids rolled back");
                }
                Some((missing, _)) if missing == next => {
                    read.blocked = true;
                    break;
                }
                _ => {
                    c.hole = Some((next, xid(&s.db, sql::XMAX_PG).await?));
                    read.blocked = true;
                    break;
                }
            }
        }
        c.hole = None;
        let (route, at, message) = change(row, epoch)?;
        if let Some(message) = message {
            match read.runs.last_mut() {
                Some((r, messages)) if *r == route => messages.push(message),
                _ => read.runs.push((route, vec![message])),
            }
        }
        read.last = id;
        read.last_at = Some(at);
    }
    Ok(read)
}

/// One log row as a message: its route, when it was recorded, and the change (none if
/// the row cannot be read, which is logged).
fn change(row: &QueryResult, epoch: &str) -> Result<(String, i64, Option<Message>), DbErr> {
    let id: i64 = row.try_get("", "id")?;
    let route: String = row.try_get("", "route")?;
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
            tracing::error!(id, kind = other, "change log: unknown kind; skipped");
            return Ok((route, at, None));
        }
    };
    let message = Message::Change {
        kind,
        old: state("old")?,
        new: state("new")?,
        id: Some(Arc::from(format!("{epoch}.{id}"))),
        version: Some(id as u64),
    };
    Ok((route, at, Some(message)))
}

async fn prune(db: &DatabaseConnection, relayed: i64) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let before = unix_ms() as i64 - KEEP.as_millis() as i64;
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        sql::PRUNE.get(backend),
        [relayed.into(), before.into()],
    ))
    .await
    .map(|_| ())
}
