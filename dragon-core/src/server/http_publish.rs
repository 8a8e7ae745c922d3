//! `POST /dragon/publish` (protocol section 8): other services publish custom events.
//!
//! - Enabled only when a publish secret is configured ([`super::Builder::publish_secret`]);
//!   otherwise the route answers 404, as if it did not exist.
//! - `Authorization: Bearer <secret>`; a missing or wrong secret answers 401 (the body is not
//!   read first).
//! - Body: `{"route": "<a served route>", "event": "<name>", "data": {...}}` (`data` optional,
//!   default `{}`; unknown keys refused). The event names Dragon uses itself (`created`,
//!   `updated`, `deleted`, `hello`, `resync`, `presence`) are refused, so clients can tell them
//!   apart. Bad input answers 400, a body over the server's frame limit 413.
//! - The event goes through the server's broker, so with Redis it reaches every node. Success
//!   answers 202 `{"ok": true}`; a broker that is down answers 503 with code `unavailable`.
//!
//! Error bodies have the socket's shape: `{"ok": false, "error": {"code", "message"}}`.

use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Dragon;
use crate::broker::{BrokerError, Message};

/// Event names reserved for Dragon's own frames.
pub const RESERVED_EVENTS: [&str; 6] = [
    "created", "updated", "deleted", "hello", "resync", "presence",
];

/// Longest accepted event name.
const MAX_EVENT_LEN: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    route: String,
    event: String,
    #[serde(default)]
    data: Option<Value>,
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({"ok": false, "error": {"code": code, "message": message.into()}});
    (status, axum::Json(body)).into_response()
}

/// Compares without stopping at the first different byte.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
}

pub(super) async fn publish(
    State(dragon): State<Dragon>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let inner = &dragon.inner;
    let Some(secret) = inner.publish_secret.as_deref() else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "HTTP publishing is disabled (no publish secret configured)",
        );
    };
    if !bearer(&headers).is_some_and(|t| same_secret(t, secret.as_bytes())) {
        let mut resp = error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid `Authorization: Bearer <publish secret>` header is required",
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return resp;
    }
    let limit = inner.limits.max_frame;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "bad_request",
            format!("the body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let Ok(bytes) = to_bytes(body, limit).await else {
        return too_large();
    };
    let parsed: PublishBody = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the body must be {{\"route\", \"event\", \"data\"}}: {err}"),
            );
        }
    };
    if !inner.routers.contains_key(&parsed.route) {
        return error(
            StatusCode::BAD_REQUEST,
            "unknown_route",
            format!("no router named {:?}", parsed.route),
        );
    }
    let event = parsed.event;
    if event.is_empty() || event.len() > MAX_EVENT_LEN || event.chars().any(char::is_control) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("event must be a name of 1 to {MAX_EVENT_LEN} characters"),
        );
    }
    if RESERVED_EVENTS.contains(&event.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the event name {event:?} is reserved for Dragon's own events"),
        );
    }
    let data = match parsed.data {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::Object(o)) => Value::Object(o),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "data must be a JSON object",
            );
        }
    };
    match inner
        .broker
        .publish(&parsed.route, Message::custom(event, data))
        .await
    {
        Ok(()) => (StatusCode::ACCEPTED, axum::Json(json!({"ok": true}))).into_response(),
        Err(BrokerError::Unavailable(msg)) => {
            tracing::warn!(error = %msg, "HTTP publish: broker unavailable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the broker is unavailable; retry later",
            )
        }
        Err(BrokerError::Other(msg)) => {
            tracing::error!(error = %msg, "HTTP publish failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal server error",
            )
        }
    }
}
