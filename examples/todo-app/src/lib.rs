//! The todo-app: live todo lists on Dragon. `main.rs` runs it; tests build it in-process.

pub mod entity;

use std::sync::Arc;

use axum::http::header;
use axum::routing::get;
use dragon_core::broker::Broker;
use dragon_core::presence::{Keys, Presence};
use dragon_core::{Dragon, ModelRouter, Validator, now};
use sea_orm::{DatabaseConnection, DbErr};

use entity::{todo_item, todo_list};

/// The default database: a SQLite file next to where the app runs, created on first run.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://todo-app.sqlite";

/// Connects to `url` and creates the schema if it is missing.
pub async fn open_database(url: &str) -> Result<DatabaseConnection, DbErr> {
    let db = dragon_core::db::connect(url).await?;
    dragon_core::db::create_table(&db, todo_list::Entity).await?;
    dragon_core::db::create_table(&db, todo_item::Entity).await?;
    Ok(db)
}

/// The broker `REDIS_URL` asks for (a [`dragon_core::broker::RedisBroker`]; `redis-cluster://`
/// and `redis-sentinel://` URLs work too), or `None` for the in-memory one.
/// `DRAGON_REDIS_PREFIX` sets its key prefix (default `dragon:`; nodes sharing a prefix serve
/// one app) and `DRAGON_PRESENCE_TIMEOUT_MS` how long a dead node's presence may outlive it.
pub async fn broker_from_env() -> Result<Option<Arc<dyn Broker>>, dragon_core::broker::BrokerError>
{
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => {
            let mut options = dragon_core::broker::RedisOptions::default();
            if let Ok(prefix) = std::env::var("DRAGON_REDIS_PREFIX") {
                options.key_prefix = prefix;
            }
            if let Some(ms) = std::env::var("DRAGON_PRESENCE_TIMEOUT_MS")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                options.presence_timeout = std::time::Duration::from_millis(ms);
            }
            let broker = dragon_core::broker::RedisBroker::connect(&url, options).await?;
            Ok(Some(Arc::new(broker)))
        }
        _ => Ok(None),
    }
}

/// The Dragon server with the todo-app's two routes.
pub fn dragon(db: &DatabaseConnection, broker: Option<Arc<dyn Broker>>) -> Dragon {
    let mut builder = builder(db);
    if let Some(broker) = broker {
        builder = builder.broker(broker);
    }
    builder.build()
}

/// The todo-app's routes on a builder, for callers that configure more (limits, auth).
pub fn builder(db: &DatabaseConnection) -> dragon_core::server::Builder {
    let lists = ModelRouter::<todo_list::Model>::new(db.clone())
        .filterable(["id", "name"])
        .orderable(["id", "name"])
        .writable(["name"])
        .validate("name", Validator::length(1, 200))
        .server_set("created_at", |_| now());
    let items = ModelRouter::<todo_item::Model>::new(db.clone())
        .filterable(["id", "list_id", "text", "done", "position", "created_at"])
        .orderable(["id", "list_id", "text", "done", "position", "created_at"])
        .writable(["list_id", "text", "done", "position"])
        .validate("text", Validator::length(1, 10_000))
        .references::<todo_list::Entity>("list_id")
        .server_set("created_at", |_| now())
        // Who is viewing and editing each item (item ids), and free keys such as "list:3".
        .presence(Presence::new().keys(Keys::ObjectsOrStrings));
    Dragon::builder()
        .route(lists)
        .route(items)
        .database(db.clone())
}

/// The whole HTTP app: Dragon's routes plus the page.
pub fn app(dragon: &Dragon) -> axum::Router {
    let page = |body: &'static str, mime: &'static str| {
        get(move || async move { ([(header::CONTENT_TYPE, mime)], body) })
    };
    dragon
        .router()
        .route(
            "/",
            page(
                include_str!("../static/index.html"),
                "text/html; charset=utf-8",
            ),
        )
        .route(
            "/static/app.js",
            page(
                include_str!("../static/app.js"),
                "text/javascript; charset=utf-8",
            ),
        )
        .route(
            "/static/style.css",
            page(
                include_str!("../static/style.css"),
                "text/css; charset=utf-8",
            ),
        )
}
