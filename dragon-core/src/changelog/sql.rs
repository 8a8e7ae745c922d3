//! The change log's SQL, per backend (PostgreSQL numbers its parameters, SQLite does not).

use sea_orm::DbBackend;

/// One statement per backend.
pub(super) struct Sql {
    pub pg: &'static str,
    pub sqlite: &'static str,
}

impl Sql {
    pub fn get(&self, backend: DbBackend) -> &'static str {
        match backend {
            DbBackend::Postgres => self.pg,
            _ => self.sqlite,
        }
    }
}

/// The tables, created if missing. `dragon_changes.id` orders the log and is each change's
/// version: ids are never reused (a PostgreSQL identity; on SQLite the rowid, one more than
/// the largest, and pruning always keeps the largest). Writers take no lock to get one. `dragon_relayed` holds how far the relay got (one row, `*`);
/// `dragon_relay` the log's epoch; `dragon_triggers` the routes whose table
/// logs its own changes.
pub(super) const TABLES: Sql = Sql {
    pg: "CREATE TABLE IF NOT EXISTS dragon_changes (id BIGINT GENERATED ALWAYS AS IDENTITY \
         PRIMARY KEY, route TEXT NOT NULL, kind TEXT NOT NULL, old TEXT, new TEXT, \
         at_ms BIGINT NOT NULL); \
         CREATE TABLE IF NOT EXISTS dragon_relayed (route TEXT PRIMARY KEY, seq BIGINT NOT NULL, \
         at_ms BIGINT NOT NULL); \
         CREATE TABLE IF NOT EXISTS dragon_relay (name TEXT PRIMARY KEY, value TEXT NOT NULL, \
         until_ms BIGINT NOT NULL); \
         CREATE TABLE IF NOT EXISTS dragon_triggers (route TEXT PRIMARY KEY, \
         table_name TEXT NOT NULL)",
    sqlite: "CREATE TABLE IF NOT EXISTS dragon_changes (id INTEGER PRIMARY KEY, \
         route TEXT NOT NULL, kind TEXT NOT NULL, old TEXT, new TEXT, at_ms BIGINT NOT NULL); \
         CREATE TABLE IF NOT EXISTS dragon_relayed (route TEXT PRIMARY KEY, seq BIGINT NOT NULL, \
         at_ms BIGINT NOT NULL); \
         CREATE TABLE IF NOT EXISTS dragon_relay (name TEXT PRIMARY KEY, value TEXT NOT NULL, \
         until_ms BIGINT NOT NULL); \
         CREATE TABLE IF NOT EXISTS dragon_triggers (route TEXT PRIMARY KEY, \
         table_name TEXT NOT NULL)",
};

pub(super) const EPOCH_INIT: Sql = Sql {
    pg: "INSERT INTO dragon_relay (name, value, until_ms) VALUES ('epoch', $1, 0) \
         ON CONFLICT (name) DO NOTHING",
    sqlite: "INSERT INTO dragon_relay (name, value, until_ms) VALUES ('epoch', ?, 0) \
             ON CONFLICT (name) DO NOTHING",
};

pub(super) const EPOCH: &str = "SELECT value FROM dragon_relay WHERE name = 'epoch'";

pub(super) const TRIGGERED: &str = "SELECT route FROM dragon_triggers";

/// Records one change in the writer's transaction; on PostgreSQL also a `NOTIFY` (sent at
/// commit) and the end of an ORM write for the table trigger (see `trigger.rs`), returning
/// the id (SQLite reports it as the last insert id).
/// Parameters: route, kind, old, new, at_ms.
pub(super) const RECORD: Sql = Sql {
    pg: "WITH n AS (SELECT pg_notify('dragon_changes', '') AS x, \
         set_config('dragon.orm', 'off', true) AS y) \
         INSERT INTO dragon_changes (route, kind, old, new, at_ms) \
         SELECT $1, $2, $3, $4, $5 FROM n RETURNING id",
    sqlite: "INSERT INTO dragon_changes (route, kind, old, new, at_ms) VALUES (?, ?, ?, ?, ?)",
};

/// [`RECORD`] without the `NOTIFY`, for writers whose own process runs the active relay (it
/// is woken in-process; `NOTIFY` makes PostgreSQL serialize the commits that send one).
pub(super) const RECORD_QUIET_PG: &str = "WITH n AS (SELECT set_config('dragon.orm', 'off', true) \
     AS y) INSERT INTO dragon_changes (route, kind, old, new, at_ms) \
     SELECT $1, $2, $3, $4, $5 FROM n RETURNING id";

/// Tells a table's trigger that the ORM records this write itself (PostgreSQL, in a
/// transaction; `RECORD` turns it off again).
pub(super) const ORM_WRITE_PG: &str = "SELECT set_config('dragon.orm', 'on', true)";

/// How far the relay got.
pub(super) const PROGRESS: &str = "SELECT seq FROM dragon_relayed WHERE route = '*'";

/// The next changes: after, limit.
pub(super) const NEXT: Sql = Sql {
    pg: "SELECT id, route, kind, old, new, at_ms FROM dragon_changes \
         WHERE id > $1 ORDER BY id LIMIT $2",
    sqlite: "SELECT id, route, kind, old, new, at_ms FROM dragon_changes \
             WHERE id > ? ORDER BY id LIMIT ?",
};

/// Changes after a point, and when the first was recorded: after.
pub(super) const BACKLOG: Sql = Sql {
    pg: "SELECT COUNT(*) AS n, MIN(at_ms) AS first FROM dragon_changes WHERE id > $1",
    sqlite: "SELECT COUNT(*) AS n, MIN(at_ms) AS first FROM dragon_changes WHERE id > ?",
};

/// The last id recorded so far (0 if none).
pub(super) const HEAD: &str = "SELECT COALESCE(MAX(id), 0) AS head FROM dragon_changes";

/// PostgreSQL: the transactions running now will all have ended once the oldest running
/// transaction is past this (see `relay.rs` on holes).
pub(super) const XMAX_PG: &str = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS x";
pub(super) const XMIN_PG: &str = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS x";

/// Marks the log relayed up to an id (never backwards): seq, at_ms.
pub(super) const MARK: Sql = Sql {
    pg: "INSERT INTO dragon_relayed (route, seq, at_ms) VALUES ('*', $1, $2) \
         ON CONFLICT (route) DO UPDATE SET seq = excluded.seq, at_ms = excluded.at_ms \
         WHERE dragon_relayed.seq < excluded.seq",
    sqlite: "INSERT INTO dragon_relayed (route, seq, at_ms) VALUES ('*', ?, ?) \
             ON CONFLICT (route) DO UPDATE SET seq = excluded.seq, at_ms = excluded.at_ms \
             WHERE dragon_relayed.seq < excluded.seq",
};

/// Forgets changes that were relayed and are older than the keep window: relayed, before_ms.
pub(super) const PRUNE: Sql = Sql {
    pg: "DELETE FROM dragon_changes WHERE id <= $1 AND at_ms < $2",
    sqlite: "DELETE FROM dragon_changes WHERE id <= ? AND at_ms < ? \
             AND id < (SELECT MAX(id) FROM dragon_changes)",
};
