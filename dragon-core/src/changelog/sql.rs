//! The change log's SQL, per backend (PostgreSQL numbers its parameters, SQLite does not).

use sea_orm::DbBackend;

/// The tables, created if missing. `dragon_change_seq` holds each route's last sequence:
/// a writer takes the next one with an upsert that locks the route's row until it commits,
/// so sequences are handed out in commit order and without holes (a rollback takes its
/// number back). `dragon_relayed` is how far the relay got; `dragon_relay` holds the lease
/// and the log's epoch; `dragon_triggers` the routes whose table logs its own changes.
pub(super) const TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS dragon_changes (route TEXT NOT NULL, seq BIGINT NOT NULL, \
     kind TEXT NOT NULL, old TEXT, new TEXT, at_ms BIGINT NOT NULL, PRIMARY KEY (route, seq))",
    "CREATE TABLE IF NOT EXISTS dragon_change_seq (route TEXT PRIMARY KEY, seq BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS dragon_relayed (route TEXT PRIMARY KEY, seq BIGINT NOT NULL, \
     at_ms BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS dragon_relay (name TEXT PRIMARY KEY, value TEXT NOT NULL, \
     until_ms BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS dragon_triggers (route TEXT PRIMARY KEY, table_name TEXT NOT NULL)",
];

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

pub(super) const EPOCH_INIT: Sql = Sql {
    pg: "INSERT INTO dragon_relay (name, value, until_ms) VALUES ('epoch', $1, 0) \
         ON CONFLICT (name) DO NOTHING",
    sqlite: "INSERT INTO dragon_relay (name, value, until_ms) VALUES ('epoch', ?, 0) \
             ON CONFLICT (name) DO NOTHING",
};

pub(super) const EPOCH: &str = "SELECT value FROM dragon_relay WHERE name = 'epoch'";

pub(super) const TRIGGERED: &str = "SELECT route FROM dragon_triggers";

/// Records one change: the route's next sequence and the log row, in the writer's
/// transaction. On PostgreSQL also a `NOTIFY` (sent at commit) and the end of an ORM write
/// for the table trigger (see `trigger.rs`). Parameters: route, kind, old, new, at_ms.
pub(super) const RECORD_PG: &str = "WITH s AS (INSERT INTO dragon_change_seq (route, seq) \
     VALUES ($1, 1) ON CONFLICT (route) DO UPDATE SET seq = dragon_change_seq.seq + 1 \
     RETURNING seq), \
     n AS (SELECT pg_notify('dragon_changes', $1) AS x, \
           set_config('dragon.orm', 'off', true) AS y) \
     INSERT INTO dragon_changes (route, seq, kind, old, new, at_ms) \
     SELECT $1, s.seq, $2, $3, $4, $5 FROM s, n RETURNING seq";

/// SQLite: the log row with the route's next sequence in one statement (SQLite runs one
/// writer at a time, so reading the sequence and inserting are atomic even on a plain
/// connection); [`SEQ_TRIGGER_SQLITE`] moves the route's sequence on. Parameters: route,
/// kind, old, new, at_ms.
pub(super) const RECORD_SQLITE: &str = "INSERT INTO dragon_changes (route, seq, kind, old, \
     new, at_ms) VALUES (?1, COALESCE((SELECT seq FROM dragon_change_seq WHERE route = ?1), 0) \
     + 1, ?2, ?3, ?4, ?5) RETURNING seq";

pub(super) const SEQ_TRIGGER_SQLITE: &str = "CREATE TRIGGER IF NOT EXISTS dragon_change_seq_next \
     AFTER INSERT ON dragon_changes BEGIN \
     INSERT INTO dragon_change_seq (route, seq) VALUES (NEW.route, NEW.seq) \
     ON CONFLICT (route) DO UPDATE SET seq = excluded.seq; END";

/// Tells a table's trigger that the ORM records this write itself (PostgreSQL, in a
/// transaction; `RECORD_PG` turns it off again).
pub(super) const ORM_WRITE_PG: &str = "SELECT set_config('dragon.orm', 'on', true)";

/// Routes whose log is ahead of the relay: route, last sequence, last relayed.
pub(super) const BEHIND: &str = "SELECT s.route AS route, s.seq AS head, \
     COALESCE(r.seq, 0) AS done FROM dragon_change_seq s \
     LEFT JOIN dragon_relayed r ON r.route = s.route WHERE s.seq > COALESCE(r.seq, 0)";

/// The next changes of a route: route, after, limit.
pub(super) const NEXT: Sql = Sql {
    pg: "SELECT seq, kind, old, new, at_ms FROM dragon_changes \
         WHERE route = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    sqlite: "SELECT seq, kind, old, new, at_ms FROM dragon_changes \
             WHERE route = ? AND seq > ? ORDER BY seq LIMIT ?",
};

/// When the first unrelayed change of a route was recorded: route, relayed.
pub(super) const FIRST_AT: Sql = Sql {
    pg: "SELECT at_ms FROM dragon_changes WHERE route = $1 AND seq = $2",
    sqlite: "SELECT at_ms FROM dragon_changes WHERE route = ? AND seq = ?",
};

/// Marks a route relayed up to a sequence (never backwards): route, seq, at_ms.
pub(super) const MARK: Sql = Sql {
    pg: "INSERT INTO dragon_relayed (route, seq, at_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (route) DO UPDATE SET seq = excluded.seq, at_ms = excluded.at_ms \
         WHERE dragon_relayed.seq < excluded.seq",
    sqlite: "INSERT INTO dragon_relayed (route, seq, at_ms) VALUES (?, ?, ?) \
             ON CONFLICT (route) DO UPDATE SET seq = excluded.seq, at_ms = excluded.at_ms \
             WHERE dragon_relayed.seq < excluded.seq",
};

/// Takes or renews the relay lease: holder, until_ms, now_ms. One row changed: it is ours.
pub(super) const LEASE: Sql = Sql {
    pg: "INSERT INTO dragon_relay (name, value, until_ms) VALUES ('lease', $1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value, until_ms = excluded.until_ms \
         WHERE dragon_relay.value = excluded.value OR dragon_relay.until_ms < $3",
    sqlite: "INSERT INTO dragon_relay (name, value, until_ms) VALUES ('lease', ?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, \
             until_ms = excluded.until_ms \
             WHERE dragon_relay.value = excluded.value OR dragon_relay.until_ms < ?3",
};

/// Gives the lease up at once (a node stopping): holder.
pub(super) const RELEASE: Sql = Sql {
    pg: "UPDATE dragon_relay SET until_ms = 0 WHERE name = 'lease' AND value = $1",
    sqlite: "UPDATE dragon_relay SET until_ms = 0 WHERE name = 'lease' AND value = ?",
};

/// Forgets changes that were relayed and are older than the history window: before_ms.
pub(super) const PRUNE: Sql = Sql {
    pg: "DELETE FROM dragon_changes WHERE at_ms < $1 AND seq <= \
         (SELECT r.seq FROM dragon_relayed r WHERE r.route = dragon_changes.route)",
    sqlite: "DELETE FROM dragon_changes WHERE at_ms < ? AND seq <= \
             (SELECT r.seq FROM dragon_relayed r WHERE r.route = dragon_changes.route)",
};
