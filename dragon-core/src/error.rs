//! Dragon's typed errors and their one mapping to protocol error codes.

use std::collections::BTreeMap;

use sea_orm::{DbErr, SqlErr};
use serde_json::{Value, json};

use crate::protocol::{ErrorBody, ErrorCode};

/// Field name to messages: the `details` of a `validation` error.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// Everything a request can fail with. Each variant maps to exactly one protocol code
/// in [`Error::to_body`]; nothing else decides codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request or its arguments were malformed; the message says how (`bad_request`).
    #[error("{0}")]
    BadRequest(String),
    /// No router serves the named route (`unknown_route`).
    #[error("no route named {0:?}")]
    UnknownRoute(String),
    /// The route's router does not offer the verb (`unknown_verb`).
    #[error("route {route:?} has no verb {verb:?}")]
    UnknownVerb {
        /// The route the request named.
        route: String,
        /// The verb that route's router does not offer.
        verb: String,
    },
    /// No such object, or one the caller may not see (`not_found`).
    #[error("not found")]
    NotFound,
    /// The data was refused; the field messages are sent as `details` (`validation`).
    #[error("the data was refused")]
    Validation(FieldErrors),
    /// The verb needs a logged-in user and there is none (`unauthenticated`).
    #[error("this needs a logged-in user")]
    Unauthenticated,
    /// The user may not do this; the message says what (`forbidden`).
    #[error("{0}")]
    Forbidden(String),
    /// A uniqueness or concurrency conflict (`conflict`).
    #[error("{0}")]
    Conflict(String),
    /// A per-connection limit was reached: requests in flight or subscriptions (`rate_limited`).
    #[error("{0}")]
    RateLimited(String),
    /// A backing service (database, broker) is down; the message is logged, clients see a generic
    /// text (`unavailable`).
    #[error("a backing service is unavailable: {0}")]
    Unavailable(String),
    /// The message is for the log only; clients see a generic text.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A `bad_request` error whose message tells the client what was wrong.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Error::BadRequest(msg.into())
    }

    /// The answer to a verb a router does not offer: the last arm of a custom router's
    /// `match verb`.
    pub fn unknown_verb(route: &str, verb: &str) -> Self {
        Error::UnknownVerb {
            route: route.to_owned(),
            verb: verb.to_owned(),
        }
    }

    /// A validation error on one field.
    pub fn field(field: &str, msg: impl Into<String>) -> Self {
        let mut errors = FieldErrors::new();
        errors.insert(field.to_owned(), vec![msg.into()]);
        Error::Validation(errors)
    }

    /// The protocol code this error is sent with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::BadRequest(_) => ErrorCode::BadRequest,
            Error::UnknownRoute(_) => ErrorCode::UnknownRoute,
            Error::UnknownVerb { .. } => ErrorCode::UnknownVerb,
            Error::NotFound => ErrorCode::NotFound,
            Error::Validation(_) => ErrorCode::Validation,
            Error::Unauthenticated => ErrorCode::Unauthenticated,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::Conflict(_) => ErrorCode::Conflict,
            Error::RateLimited(_) => ErrorCode::RateLimited,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The wire form. Internal details are logged here and never sent.
    pub fn to_body(&self) -> ErrorBody {
        let (message, details) = match self {
            Error::Validation(fields) => (self.to_string(), Some(json!(fields))),
            Error::Internal(msg) => {
                tracing::error!(error = %msg, "internal error");
                ("internal server error".to_owned(), None)
            }
            Error::Unavailable(msg) => {
                tracing::warn!(error = %msg, "backing service unavailable");
                (
                    "a backing service is unavailable; retry later".to_owned(),
                    None,
                )
            }
            other => (other.to_string(), None),
        };
        ErrorBody {
            code: self.code(),
            message,
            details,
        }
    }
}

impl From<DbErr> for Error {
    fn from(err: DbErr) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(msg)) => {
                return Error::Conflict(format!("uniqueness conflict: {msg}"));
            }
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => {
                return Error::field("_", "refers to an object that does not exist");
            }
            _ => {}
        }
        match &err {
            DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => Error::Unavailable(err.to_string()),
            DbErr::RecordNotFound(_) => Error::NotFound,
            _ => Error::Internal(err.to_string()),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::Internal(format!("json: {err}"))
    }
}

/// Reads a required argument's JSON value, or says which is missing.
pub fn arg<'a>(args: &'a Value, name: &str) -> Result<&'a Value, Error> {
    args.get(name)
        .filter(|v| !v.is_null())
        .ok_or_else(|| Error::bad_request(format!("missing argument {name:?}")))
}

/// A result whose error defaults to Dragon's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
