//! Runs the live blog: `cargo run -p liveblog`, then open http://127.0.0.1:8002/.
//!
//! `DRAGON_ADDR` (default 127.0.0.1:8002), `DATABASE_URL` (default a SQLite file),
//! `REDIS_URL` (optional), `LIVEBLOG_SECRET` (signs tokens), `LIVEBLOG_DEMO=1` (author
//! ann/ann-pass and the blog `news`), `RUST_LOG`.

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
    let addr = std::env::var("DRAGON_ADDR").unwrap_or_else(|_| "127.0.0.1:8002".into());
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| liveblog::DEFAULT_DATABASE_URL.into());
    let secret = std::env::var("LIVEBLOG_SECRET").unwrap_or_else(|_| {
        tracing::warn!("LIVEBLOG_SECRET is not set: tokens are signed with a development secret");
        "liveblog development secret, not for production".into()
    });
    let db = liveblog::open_database(&url).await?;
    if std::env::var("LIVEBLOG_DEMO").is_ok_and(|v| v == "1") {
        liveblog::demo(&db).await?;
    }
    let tokens = Tokens::new(secret.as_bytes()).ttl(std::time::Duration::from_secs(12 * 3600));
    let broker = liveblog::broker_from_env().await?;
    let dragon = liveblog::builder(&db, tokens.clone(), broker).build();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!("liveblog on http://{}/", listener.local_addr()?);
    dragon
        .serve(listener, liveblog::app(&dragon, Accounts { db, tokens }))
        .await?;
    Ok(())
}
