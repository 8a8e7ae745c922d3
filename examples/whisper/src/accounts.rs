//! Accounts: sign-up and login over HTTP, answering signed tokens the socket accepts.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use dragon_core::auth::Tokens;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Set,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::entity::account;

/// What the login and sign-up handlers need.
#[derive(Clone)]
pub struct Accounts {
    pub db: DatabaseConnection,
    pub tokens: Tokens,
}

#[derive(Deserialize)]
pub struct Credentials {
    username: String,
    password: String,
}

type Reply = (StatusCode, Json<Value>);

fn refuse(status: StatusCode, message: &str) -> Reply {
    (status, Json(json!({ "error": message })))
}

/// The user object tokens carry (and the socket's `hello` shows).
pub fn user_of(a: &account::Model) -> Value {
    json!({"id": a.id, "username": a.username, "staff": a.staff})
}

fn hash(password: &str) -> Result<String, DbErr> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| DbErr::Custom(format!("hashing: {e}")))
}

fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

fn valid_username(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Creates an account unless the name is taken: `Ok(None)` if it is.
pub async fn create(
    db: &DatabaseConnection,
    username: &str,
    password: &str,
    staff: bool,
) -> Result<Option<account::Model>, DbErr> {
    let taken = account::Entity::find()
        .filter(account::Column::Username.eq(username))
        .one(db)
        .await?;
    if taken.is_some() {
        return Ok(None);
    }
    let model = account::ActiveModel {
        username: Set(username.to_owned()),
        password_hash: Set(hash(password)?),
        staff: Set(staff),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(Some(model))
}

fn token_reply(accounts: &Accounts, a: &account::Model) -> Reply {
    let user = user_of(a);
    match accounts.tokens.issue(&user) {
        Ok(token) => (StatusCode::OK, Json(json!({"token": token, "user": user}))),
        Err(_) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "cannot sign a token"),
    }
}

/// `POST /signup` `{"username", "password"}`: a new (non-staff) account and its token.
pub async fn signup(State(accounts): State<Accounts>, Json(c): Json<Credentials>) -> Reply {
    if !valid_username(&c.username) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "username: 1 to 32 of a-z, 0-9 and _",
        );
    }
    if c.password.chars().count() < 6 {
        return refuse(StatusCode::BAD_REQUEST, "password: at least 6 characters");
    }
    match create(&accounts.db, &c.username, &c.password, false).await {
        Ok(Some(a)) => token_reply(&accounts, &a),
        Ok(None) => refuse(StatusCode::CONFLICT, "that username is taken"),
        Err(err) => {
            tracing::error!(error = %err, "signup failed");
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "signup failed")
        }
    }
}

/// `POST /login` `{"username", "password"}`: the account's token, or 401.
pub async fn login(State(accounts): State<Accounts>, Json(c): Json<Credentials>) -> Reply {
    let found = account::Entity::find()
        .filter(account::Column::Username.eq(&c.username))
        .one(&accounts.db)
        .await;
    match found {
        Ok(Some(a)) if verify(&c.password, &a.password_hash) => token_reply(&accounts, &a),
        Ok(_) => refuse(StatusCode::UNAUTHORIZED, "wrong username or password"),
        Err(err) => {
            tracing::error!(error = %err, "login failed");
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "login failed")
        }
    }
}
