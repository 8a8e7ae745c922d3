//! Opening the database the way Dragon's filters need it.

use std::ffi::c_int;
use std::ptr::NonNull;

use sea_orm::sqlx::sqlite::SqliteConnection;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, EntityTrait, Schema,
};

use crate::filter::SQLITE_LOWER_FN;
use crate::schema::fold_case;

/// Connects to `url` (`sqlite:` or `postgres://`) with statement logging off, and creates
/// or completes the change log's tables ([`crate::changelog::migrate`]). On SQLite it adds
/// the Unicode lower-casing function that `icontains` relies on and sets the journal as
/// production apps run it: WAL, `synchronous=NORMAL` (a commit survives a crash of the
/// process, and of the machine up to the last checkpoint), a 5 s busy timeout, no ping on
/// every checkout from the pool; the file is created if missing. Use [`connect_with`] to
/// change any of it.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    connect_with(url, |_| {}).await
}

/// [`connect`], with `configure` applied to the options last (pool size, timeouts, and on
/// SQLite [`ConnectOptions::map_sqlx_sqlite_opts`] for other journal settings).
pub async fn connect_with(
    url: &str,
    configure: impl FnOnce(&mut ConnectOptions),
) -> Result<DatabaseConnection, DbErr> {
    let mut url = url.to_owned();
    if url.starts_with("sqlite:") && !url.contains(":memory:") && !url.contains("mode=") {
        url.push_str(if url.contains('?') {
            "&mode=rwc"
        } else {
            "?mode=rwc"
        });
    }
    let sqlite = url.starts_with("sqlite:");
    let mut opts = ConnectOptions::new(url);
    opts.sqlx_logging(false);
    if sqlite {
        // A file connection does not go stale: no ping round trip on every checkout.
        opts.test_before_acquire(false);
    }
    opts.map_sqlx_sqlite_pool_opts(|pool| {
        pool.after_connect(|conn, _meta| {
            Box::pin(async move { register_sqlite_functions(conn).await })
        })
    });
    opts.map_sqlx_sqlite_opts(|o| {
        use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
        o.journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(5))
    });
    configure(&mut opts);
    let db = Database::connect(opts).await?;
    crate::changelog::migrate(&db).await?;
    Ok(db)
}

/// Creates the table of `entity` if it does not exist yet.
pub async fn create_table<E: EntityTrait>(db: &DatabaseConnection, entity: E) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let mut stmt = Schema::new(backend).create_table_from_entity(entity);
    stmt.if_not_exists();
    db.execute(&stmt).await.map(|_| ())
}

async fn register_sqlite_functions(
    conn: &mut SqliteConnection,
) -> Result<(), sea_orm::sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let raw: NonNull<libsqlite3_sys::sqlite3> = handle.as_raw_handle();
    let name = std::ffi::CString::new(SQLITE_LOWER_FN).expect("no NUL in name");
    // SAFETY: `raw` is a live connection handle held locked for this call; the function
    // pointer is a plain `extern "C"` fn with no user data.
    let rc = unsafe {
        libsqlite3_sys::sqlite3_create_function_v2(
            raw.as_ptr(),
            name.as_ptr(),
            1,
            libsqlite3_sys::SQLITE_UTF8 | libsqlite3_sys::SQLITE_DETERMINISTIC,
            std::ptr::null_mut(),
            Some(sqlite_lower),
            None,
            None,
            None,
        )
    };
    if rc == libsqlite3_sys::SQLITE_OK {
        Ok(())
    } else {
        Err(sea_orm::sqlx::Error::Protocol(format!(
            "could not register {SQLITE_LOWER_FN}: sqlite code {rc}"
        )))
    }
}

/// `dragon_lower(text)`: [`fold_case`] for SQLite; NULL stays NULL.
unsafe extern "C" fn sqlite_lower(
    ctx: *mut libsqlite3_sys::sqlite3_context,
    argc: c_int,
    argv: *mut *mut libsqlite3_sys::sqlite3_value,
) {
    // SAFETY: SQLite calls this with `argc` valid values in `argv` and a live context.
    unsafe {
        if argc != 1 {
            libsqlite3_sys::sqlite3_result_null(ctx);
            return;
        }
        let value = *argv;
        if libsqlite3_sys::sqlite3_value_type(value) == libsqlite3_sys::SQLITE_NULL {
            libsqlite3_sys::sqlite3_result_null(ctx);
            return;
        }
        let text = libsqlite3_sys::sqlite3_value_text(value);
        if text.is_null() {
            libsqlite3_sys::sqlite3_result_null(ctx);
            return;
        }
        let len = libsqlite3_sys::sqlite3_value_bytes(value).max(0) as usize;
        let bytes = std::slice::from_raw_parts(text, len);
        let s = String::from_utf8_lossy(bytes);
        let lowered = fold_case(&s);
        libsqlite3_sys::sqlite3_result_text(
            ctx,
            lowered.as_ptr() as *const std::ffi::c_char,
            lowered.len() as c_int,
            libsqlite3_sys::SQLITE_TRANSIENT(),
        );
    }
}
