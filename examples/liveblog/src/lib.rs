//! Liveblog: blogs whose posts appear, change and vanish live for every reader; authors
//! (staff) write them, anyone reads them, readers like them (`post.like`), counted exactly
//! and shown as coalesced updates. Accounts and tokens as in `examples/whisper`.
//! `main.rs` runs it; tests build it in-process.

pub mod entity;
pub mod likes;

use std::sync::Arc;

use axum::routing::post;
use dragon_core::auth::Tokens;
use dragon_core::broker::Broker;
use dragon_core::router::{Rule, Verb};
use dragon_core::{Ctx, Dragon, ModelRouter, Validator, now};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Set,
};
use serde::Deserialize;
use serde_json::{Value, json};
use whisper::accounts::{self, Accounts};

use entity::{blog, post};
use likes::Likes;

/// The default database: a SQLite file next to where the app runs.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://liveblog.sqlite";

/// Connects to `url` and creates the tables if they are missing.
pub async fn open_database(url: &str) -> Result<DatabaseConnection, DbErr> {
    let db = dragon_core::db::connect(url).await?;
    dragon_core::db::create_table(&db, whisper::entity::account::Entity).await?;
    dragon_core::db::create_table(&db, blog::Entity).await?;
    dragon_core::db::create_table(&db, post::Entity).await?;
    Ok(db)
}

/// `LIVEBLOG_DEMO=1`: the author ann (`ann-pass`, staff) and the blog `news`, if missing.
pub async fn demo(db: &DatabaseConnection) -> Result<(), DbErr> {
    accounts::create(db, "ann", "ann-pass", true).await?;
    let exists = blog::Entity::find()
        .filter(blog::Column::Slug.eq("news"))
        .one(db)
        .await?;
    if exists.is_none() {
        blog::ActiveModel {
            slug: Set("news".into()),
            title: Set("News".into()),
            created_at: Set(chrono::Utc::now()),
            ..Default::default()
        }
        .insert(db)
        .await?;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Like {
    id: i64,
}

/// The routes with their rules: anyone reads and likes; staff write.
pub fn builder(
    db: &DatabaseConnection,
    tokens: Tokens,
    broker: Arc<dyn Broker>,
) -> dragon_core::server::Builder {
    let staff = || Rule::user(|u| u["staff"] == true);
    let blogs = ModelRouter::<blog::Model>::new(db.clone())
        .filterable(["id", "slug"])
        .orderable(["id", "title", "created_at"])
        .writable(["slug", "title"])
        .validate("slug", Validator::length(1, 60))
        .validate("title", Validator::length(1, 200))
        .server_set("created_at", |_| now())
        .permit(&Verb::READ, Rule::Anyone)
        .permit(&Verb::WRITE, staff());
    let likes = Likes::start(db.clone(), broker.clone());
    let posts = ModelRouter::<post::Model>::new(db.clone())
        .filterable(["id", "blog_id", "published_at"])
        .orderable(["id", "published_at", "likes"])
        .writable(["blog_id", "title", "body"])
        .validate("title", Validator::length(1, 300))
        .validate("body", Validator::length(0, 100_000))
        .references::<blog::Entity>("blog_id")
        .server_set("published_at", |_| now())
        .permit(&Verb::READ, Rule::Anyone)
        .permit(&Verb::WRITE, staff())
        .verb("like", move |_ctx: Ctx, args: Like| {
            let likes = likes.clone();
            async move {
                likes.like(args.id).await?;
                Ok(json!({"liked": true}))
            }
        })
        .permit_verbs(&["like"], Rule::Anyone);
    Dragon::builder()
        .broker(broker)
        .route(blogs)
        .route(posts)
        .auth(tokens)
        .database(db.clone())
}

/// The broker: Redis if `REDIS_URL` says so, else in memory.
pub async fn broker_from_env() -> Result<Arc<dyn Broker>, dragon_core::broker::BrokerError> {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => {
            let options = dragon_core::broker::RedisOptions {
                key_prefix: "liveblog:".into(),
                ..Default::default()
            };
            Ok(Arc::new(
                dragon_core::broker::RedisBroker::connect(&url, options).await?,
            ))
        }
        _ => Ok(Arc::new(dragon_core::broker::MemoryBroker::new())),
    }
}

/// The whole HTTP app: Dragon's routes, login, and the pages (front page, blog, author).
pub fn app(dragon: &Dragon, accounts: Accounts) -> axum::Router {
    let page = |body: &'static str, mime: &'static str| {
        axum::routing::get(
            move || async move { ([(axum::http::header::CONTENT_TYPE, mime)], body) },
        )
    };
    const HTML: &str = "text/html; charset=utf-8";
    let auth = axum::Router::new()
        .route("/login", post(accounts::login))
        .with_state(accounts);
    dragon
        .router()
        .merge(auth)
        .route("/", page(include_str!("../static/index.html"), HTML))
        .route("/blog", page(include_str!("../static/blog.html"), HTML))
        .route("/author", page(include_str!("../static/author.html"), HTML))
        .route(
            "/static/liveblog.js",
            page(
                include_str!("../static/liveblog.js"),
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

/// For tests: the user object of an account, as tokens carry it.
pub fn user(id: i64, username: &str, staff: bool) -> Value {
    json!({"id": id, "username": username, "staff": staff})
}
