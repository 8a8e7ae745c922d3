//! Runs the todo-app: `cargo run -p todo-app`, then open http://127.0.0.1:8000/.
//!
//! `DRAGON_ADDR` (default 127.0.0.1:8000), `DATABASE_URL` (default a SQLite file,
//! or `postgres://...`), `REDIS_URL` (several nodes share changes through Redis; default
//! in-memory, one node), `DRAGON_PUBLISH_SECRET` (enables `POST /dragon/publish`),
//! `RUST_LOG` for logs.

use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let addr = std::env::var("DRAGON_ADDR").unwrap_or_else(|_| "127.0.0.1:8000".into());
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| todo_app::DEFAULT_DATABASE_URL.into());
    let db = todo_app::open_database(&url).await?;
    let mut builder = todo_app::builder(&db);
    if let Some(broker) = todo_app::broker_from_env().await? {
        tracing::info!("broker: Redis");
        builder = builder.broker(broker);
    }
    if let Ok(secret) = std::env::var("DRAGON_PUBLISH_SECRET") {
        builder = builder.publish_secret(secret);
    }
    let dragon = builder.build();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(
        "todo-app on http://{}/ (database {})",
        listener.local_addr()?,
        redact(&url)
    );
    dragon.serve(listener, todo_app::app(&dragon)).await?;
    Ok(())
}

/// The database URL without its password, for the log.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}
