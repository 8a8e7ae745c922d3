//! Whisper: a multi-room chat on Dragon. Accounts with hashed passwords, signed tokens, rooms
//! some of which only staff may see (no one else can read, subscribe to, or learn of their
//! messages by any filter or id), presence and typing per room, history on join.
//! `main.rs` runs it; tests build it in-process.

pub mod accounts;
pub mod entity;

use std::sync::Arc;

use axum::http::header;
use axum::routing::{get, post};
use dragon_core::auth::Tokens;
use dragon_core::broker::Broker;
use dragon_core::presence::{Keys, Presence};
use dragon_core::router::{Rule, Verb};
use dragon_core::{Dragon, Error, ModelRouter, Validator, now};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Set,
};
use serde_json::{Value, json};

use accounts::Accounts;
use entity::{account, message, room};

/// The default database: a SQLite file next to where the app runs.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://whisper.sqlite";

/// Connects to `url` and creates the tables if they are missing.
pub async fn open_database(url: &str) -> Result<DatabaseConnection, DbErr> {
    let db = dragon_core::db::connect(url).await?;
    dragon_core::db::create_table(&db, account::Entity).await?;
    dragon_core::db::create_table(&db, room::Entity).await?;
    dragon_core::db::create_table(&db, message::Entity).await?;
    Ok(db)
}

/// `WHISPER_DEMO=1`: users alice (`alice-pass`, staff) and bob (`bob-pass`), rooms `lobby`
/// and `staff` (staff only), each created if missing.
pub async fn demo(db: &DatabaseConnection) -> Result<(), DbErr> {
    accounts::create(db, "alice", "alice-pass", true).await?;
    accounts::create(db, "bob", "bob-pass", false).await?;
    for (name, staff_only) in [("lobby", false), ("staff", true)] {
        let exists = room::Entity::find()
            .filter(room::Column::Name.eq(name))
            .one(db)
            .await?;
        if exists.is_none() {
            room::ActiveModel {
                name: Set(name.to_owned()),
                staff_only: Set(staff_only),
                created_at: Set(chrono::Utc::now()),
                ..Default::default()
            }
            .insert(db)
            .await?;
        }
    }
    Ok(())
}

fn is_staff(user: &Value) -> bool {
    user["staff"] == true
}

/// Staff see everything; others what is not staff-only; no one without signing in.
fn readable(user: Option<&Value>) -> Result<Value, Error> {
    let user = user.ok_or(Error::Unauthenticated)?;
    Ok(if is_staff(user) {
        json!({})
    } else {
        json!({"staff_only": false})
    })
}

/// The two routes, with their rules, and the token authenticator.
pub fn builder(db: &DatabaseConnection, tokens: Tokens) -> dragon_core::server::Builder {
    let staff = || Rule::user(is_staff);
    let rooms = ModelRouter::<room::Model>::new(db.clone())
        .filterable(["id", "name", "staff_only"])
        .orderable(["id", "name"])
        .writable(["name", "staff_only"])
        .validate("name", Validator::length(1, 60))
        .server_set("created_at", |_| now())
        .readable_by(readable)
        .permit(&Verb::READ, Rule::Authenticated)
        .permit(&[Verb::Create, Verb::Update, Verb::Delete], staff())
        // Who is in each room (keys are room ids the caller may see) and who is typing.
        .permit(
            &[
                Verb::PresenceJoin,
                Verb::PresenceUpdate,
                Verb::PresenceLeave,
                Verb::PresenceWatch,
            ],
            Rule::Authenticated,
        )
        .presence(Presence::new().keys(Keys::Objects));
    let messages = ModelRouter::<message::Model>::new(db.clone())
        .filterable(["id", "room_id", "user", "created_at"])
        .orderable(["id", "created_at"])
        .writable(["room_id", "text"])
        .validate("text", Validator::length(1, 4000))
        .references::<room::Entity>("room_id")
        .server_set("user", |ctx| {
            ctx.user().map_or(Value::Null, |u| u["username"].clone())
        })
        .server_set("created_at", |_| now())
        .readable_by(readable)
        // You edit your own messages; staff may also delete anyone's.
        .writable_by(|user| {
            let user = user.ok_or(Error::Unauthenticated)?;
            Ok(json!({"user": user["username"]}))
        })
        .deletable_by(|user| {
            let user = user.ok_or(Error::Unauthenticated)?;
            Ok(if is_staff(user) {
                json!({})
            } else {
                json!({"user": user["username"]})
            })
        })
        .permit(&Verb::READ, Rule::Authenticated)
        .permit(&Verb::WRITE, Rule::Authenticated);
    Dragon::builder()
        .route(rooms)
        .route(messages)
        .auth(tokens)
        .database(db.clone())
}

/// The broker `REDIS_URL` asks for, or `None` for the in-memory one.
pub async fn broker_from_env() -> Result<Option<Arc<dyn Broker>>, dragon_core::broker::BrokerError>
{
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => {
            let options = dragon_core::broker::RedisOptions {
                key_prefix: "whisper:".into(),
                ..Default::default()
            };
            let broker = dragon_core::broker::RedisBroker::connect(&url, options).await?;
            Ok(Some(Arc::new(broker)))
        }
        _ => Ok(None),
    }
}

/// The whole HTTP app: Dragon's routes, login and sign-up, and the page.
pub fn app(dragon: &Dragon, accounts: Accounts) -> axum::Router {
    let page = |body: &'static str, mime: &'static str| {
        get(move || async move { ([(header::CONTENT_TYPE, mime)], body) })
    };
    let auth = axum::Router::new()
        .route("/login", post(accounts::login))
        .route("/signup", post(accounts::signup))
        .with_state(accounts);
    dragon
        .router()
        .merge(auth)
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
