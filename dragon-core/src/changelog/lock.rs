//! Which relay is the active one for a database: a lock that dies with its holder, so a
//! crashed node's successor starts at once rather than after a lease runs out.
//!
//! PostgreSQL: a session advisory lock on a connection the relay keeps (the server drops it
//! when that connection closes, as it does when the process dies). SQLite: an exclusive
//! `flock` on a file beside the database (the kernel drops it with the process). An
//! in-memory SQLite database belongs to one process: its relay always holds.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sea_orm::sqlx;
use sea_orm::sqlx::postgres::PgConnection;
use sea_orm::{DatabaseConnection, DbBackend, DbErr};

/// How often the holder makes sure its lock is still there.
const RENEW_EVERY: Duration = Duration::from_secs(1);

/// The advisory lock key ("drag" "relay"); advisory locks are per database.
const PG_KEY: i64 = 0x6472_6167_7265_6c79;

/// Proof of being the active relay; dropping it lets another relay take over.
pub(super) enum Hold {
    Postgres(PgConnection),
    File(#[allow(dead_code)] File),
    Memory,
}

fn db_err(err: sqlx::Error) -> DbErr {
    DbErr::Custom(format!("change log relay lock: {err}"))
}

/// Takes the relay lock of `db` if no one holds it.
pub(super) async fn try_take(db: &DatabaseConnection) -> Result<Option<Hold>, DbErr> {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            let mut conn = db
                .get_postgres_connection_pool()
                .acquire()
                .await
                .map_err(db_err)?;
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(PG_KEY)
                .fetch_one(&mut *conn)
                .await
                .map_err(db_err)?;
            // Detached from the pool: the lock lives exactly as long as this connection
            // (dropping it closes it), and the pool never hands the locked session out.
            Ok(got.then(|| Hold::Postgres(conn.detach())))
        }
        _ => {
            let Some(path) = lock_path(db) else {
                return Ok(Some(Hold::Memory));
            };
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| DbErr::Custom(format!("{}: {e}", path.display())))?;
            match file.try_lock() {
                Ok(()) => Ok(Some(Hold::File(file))),
                Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                Err(std::fs::TryLockError::Error(e)) => {
                    Err(DbErr::Custom(format!("{}: {e}", path.display())))
                }
            }
        }
    }
}

/// Whether the lock is still held (the PostgreSQL connection may have broken).
pub(super) async fn still_held(hold: &mut Hold) -> bool {
    match hold {
        Hold::Postgres(conn) => sqlx::query("SELECT 1").execute(conn).await.is_ok(),
        Hold::File(_) | Hold::Memory => true,
    }
}

/// `<database file>.dragon-relay`, or `None` for an in-memory database.
fn lock_path(db: &DatabaseConnection) -> Option<PathBuf> {
    let options = db.get_sqlite_connection_pool().connect_options();
    let file = options.get_filename();
    let name = file.to_string_lossy();
    if name.is_empty() || name.contains(":memory:") || name.starts_with("file::memory") {
        return None;
    }
    let mut path = file.as_os_str().to_owned();
    path.push(".dragon-relay");
    Some(PathBuf::from(path))
}

/// Whether a relay of this process is the active one (its writers need not `NOTIFY`).
/// With relays for several databases, any active one counts: the others poll.
pub(crate) fn active_here() -> bool {
    ACTIVE.load(Ordering::Relaxed) > 0
}

/// How many relays of this process are active.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// The relay lock as this node holds it: taken when free, checked while held, and counted
/// in [`ACTIVE`] while held (until dropped).
pub(super) struct Lease {
    hold: Option<Hold>,
    checked: Instant,
    counted: bool,
}

impl Lease {
    pub(super) fn new() -> Self {
        Lease {
            hold: None,
            checked: Instant::now(),
            counted: false,
        }
    }

    /// Tries to take the lock if it is not held, or makes sure it still is (every
    /// [`RENEW_EVERY`]). Whether this node holds it now.
    pub(super) async fn refresh(&mut self, db: &DatabaseConnection) -> bool {
        match &mut self.hold {
            None => {
                match try_take(db).await {
                    Ok(taken) => self.hold = taken,
                    Err(err) => tracing::warn!(error = %err, "change log: relay lock"),
                }
                self.checked = Instant::now();
            }
            Some(hold) if self.checked.elapsed() > RENEW_EVERY => {
                if !still_held(hold).await {
                    tracing::warn!("change log: lost the relay lock");
                    self.hold = None;
                }
                self.checked = Instant::now();
            }
            Some(_) => {}
        }
        let held = self.hold.is_some();
        if held != self.counted {
            self.counted = held;
            if held {
                ACTIVE.fetch_add(1, Ordering::Relaxed);
            } else {
                ACTIVE.fetch_sub(1, Ordering::Relaxed);
            }
        }
        held
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.counted {
            ACTIVE.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
