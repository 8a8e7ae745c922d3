//! The SQLite write scenario's reference: the transaction Dragon makes for one insert
//! through the derive, made with the SQLite driver alone (sqlx, one connection, no ORM, no
//! pool, no relay): `BEGIN`, the row's `INSERT … RETURNING`, the change-log row, `COMMIT`.
//! Same file settings as `dragon_core::db::connect` (WAL, `synchronous=NORMAL`), same core,
//! the writer a task on the runtime as Dragon's is. What this reaches is the most any
//! framework writing the row and its log row in one transaction can reach through this
//! driver on this machine.

use std::time::{Duration, Instant};

use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::sqlx::{self, Connection, SqliteConnection};

/// Committed transactions per second of one writer for `seconds`.
pub async fn writes_per_sec(seconds: Duration) -> f64 {
    let path = std::env::temp_dir().join(format!(
        "dragon_bench_floor_{}_{}.db",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let rate = tokio::spawn(measure(path.clone(), seconds))
        .await
        .expect("driver floor");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    rate
}

async fn measure(path: std::path::PathBuf, seconds: Duration) -> f64 {
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .expect("open the floor's SQLite file");
    for ddl in [
        "CREATE TABLE bench_item (id INTEGER PRIMARY KEY, list_id BIGINT NOT NULL, \
         text TEXT NOT NULL)",
        "CREATE TABLE dragon_changes (id INTEGER PRIMARY KEY, route TEXT NOT NULL, \
         kind TEXT NOT NULL, old TEXT, new TEXT, at_ms BIGINT NOT NULL)",
    ] {
        sqlx::query(ddl).execute(&mut conn).await.expect("schema");
    }
    let start = Instant::now();
    let mut committed = 0u64;
    while start.elapsed() < seconds {
        let mut tx = conn.begin().await.expect("begin");
        let (id, list_id, text): (i64, i64, String) = sqlx::query_as(
            "INSERT INTO bench_item (list_id, text) VALUES (?, ?) RETURNING id, list_id, text",
        )
        .bind(1i64)
        .bind(format!("change {committed}"))
        .fetch_one(&mut *tx)
        .await
        .expect("insert");
        let new = serde_json::json!({"id": id, "list_id": list_id, "text": text}).to_string();
        sqlx::query(
            "INSERT INTO dragon_changes (route, kind, old, new, at_ms) VALUES (?, ?, ?, ?, ?)",
        )
        .bind("bench-item")
        .bind("created")
        .bind(None::<String>)
        .bind(new)
        .bind(dragon_core::metrics::unix_ms() as i64)
        .execute(&mut *tx)
        .await
        .expect("log row");
        tx.commit().await.expect("commit");
        committed += 1;
    }
    committed as f64 / start.elapsed().as_secs_f64()
}
