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
    tokio::spawn(measure(seconds)).await.expect("driver floor")
}

async fn measure(seconds: Duration) -> f64 {
    // The same file as Dragon's writes get: its tables made by `dragon_core::db::connect`.
    let (db, scratch) = crate::subject::database().await;
    db.close().await.expect("close the setup connection");
    let options = SqliteConnectOptions::new()
        .filename(scratch.path())
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .expect("open the floor's SQLite file");
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
