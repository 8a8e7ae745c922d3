//! Runs Whisper: `cargo run -p whisper`, then open http://127.0.0.1:8001/.
//!
//! `DRAGON_ADDR` (default 127.0.0.1:8001), `DATABASE_URL` (default a SQLite file, or
//! `postgres://...`), `REDIS_URL` (optional, for several nodes), `WHISPER_SECRET` (signs the
//! tokens; set it in production), `WHISPER_DEMO=1` (users alice/alice-pass, staff, and
//! bob/bob-pass; rooms lobby and staff), `RUST_LOG` for logs.

use dragon_core::auth::Tokens;
use tracing_subscriber::EnvFilter;
use whisper::accounts::Accounts;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let addr = std::env::var("DRAGON_ADDR").unwrap_or_else(|_| "127.0.0.1:8001".into());
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| whisper::DEFAULT_DATABASE_URL.into());
    let secret = std::env::var("WHISPER_SECRET").unwrap_or_else(|_| {
        tracing::warn!("WHISPER_SECRET is not set: tokens are signed with a development secret");
        "whisper development secret, not for production".into()
    });
    let db = whisper::open_database(&url).await?;
    if std::env::var("WHISPER_DEMO").is_ok_and(|v| v == "1") {
        whisper::demo(&db).await?;
    }
    let tokens = Tokens::new(secret.as_bytes()).ttl(std::time::Duration::from_secs(12 * 3600));
    let mut builder = whisper::builder(&db, tokens.clone());
    if let Some(broker) = whisper::broker_from_env().await? {
        builder = builder.broker(broker);
    }
    let dragon = builder.build();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!("whisper on http://{}/", listener.local_addr()?);
    let accounts = Accounts { db, tokens };
    dragon
        .serve(listener, whisper::app(&dragon, accounts))
        .await?;
    Ok(())
}
