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

use super::{Dragon, Inner};
use crate::broker::{BrokerError, Message};
use crate::protocol::ErrorCode;

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
    match accept(&dragon.inner, &headers, body).await {
        Ok(()) => (StatusCode::ACCEPTED, axum::Json(json!({"ok": true}))).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// Checks the request, in order (secret, body, route, event), and publishes its event
/// through the broker.
async fn accept(inner: &Inner, headers: &HeaderMap, body: Body) -> Result<(), Refusal> {
    authorize(inner.publish_secret.as_deref(), headers)?;
    let body = read_body(headers, body, inner.limits.max_frame).await?;
    if !inner.routers.contains_key(&body.route) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "unknown_route",
            format!("no router named {:?}", body.route),
        ));
    }
    let (event, data) = event_of(body.event, body.data)?;
    let message = Message::custom(event, data);
    inner
        .broker
        .publish(&body.route, message)
        .await
        .map_err(Refusal::from)
}

/// Why a publish is refused: its status and the code and message of the error body.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Refusal::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

/// A broker failure, logged and worded as every failure is ([`crate::Error::to_body`]):
/// 503 `unavailable` while the broker is down, else 500 `internal`.
impl From<BrokerError> for Refusal {
    fn from(err: BrokerError) -> Self {
        let body = crate::Error::from(err).to_body();
        let status = match body.code {
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Refusal::new(status, body.code.as_str(), body.message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut resp = error(self.status, self.code, self.message);
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

/// 404 while no secret is configured; 401 (with `WWW-Authenticate`) without the right one.
fn authorize(secret: Option<&str>, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(secret) = secret else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "HTTP publishing is disabled (no publish secret configured)",
        ));
    };
    if bearer(headers).is_some_and(|t| same_secret(t, secret.as_bytes())) {
        return Ok(());
    }
    Err(Refusal::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "a valid `Authorization: Bearer <publish secret>` header is required",
    ))
}

/// The body, at most `limit` bytes (413 past it, refused from `Content-Length` before
/// reading when declared), as `{"route", "event", "data"}` (400 otherwise).
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<PublishBody, Refusal> {
    let too_large = || {
        Refusal::new(
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
        return Err(too_large());
    }
    let bytes = to_bytes(body, limit).await.map_err(|_| too_large())?;
    serde_json::from_slice(&bytes).map_err(|err| {
        Refusal::bad_request(format!(
            "the body must be {{\"route\", \"event\", \"data\"}}: {err}"
        ))
    })
}

/// The event's name (1 to [`MAX_EVENT_LEN`] characters, no control characters, none of
/// Dragon's own) and its data (an object; none or `null` is `{}`), or a 400.
fn event_of(event: String, data: Option<Value>) -> Result<(String, Value), Refusal> {
    if event.is_empty() || event.len() > MAX_EVENT_LEN || event.chars().any(char::is_control) {
        return Err(Refusal::bad_request(format!(
            "event must be a name of 1 to {MAX_EVENT_LEN} characters"
        )));
    }
    if RESERVED_EVENTS.contains(&event.as_str()) {
        return Err(Refusal::bad_request(format!(
            "the event name {event:?} is reserved for Dragon's own events"
        )));
    }
    match data {
        None | Some(Value::Null) => Ok((event, Value::Object(Map::new()))),
        Some(Value::Object(o)) => Ok((event, Value::Object(o))),
        Some(_) => Err(Refusal::bad_request("data must be a JSON object")),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;

    use super::{BrokerError, Refusal, authorize};

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().expect("header value"));
        headers
    }

    #[test]
    fn a_wrong_or_missing_secret_is_answered_401_with_a_bearer_challenge() {
        for headers in [
            HeaderMap::new(),
            with_auth("Bearer nope"),
            with_auth("Basic s3cret"),
        ] {
            let resp = authorize(Some("s3cret"), &headers)
                .expect_err("refused")
                .into_response();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], "Bearer");
        }
        assert!(authorize(Some("s3cret"), &with_auth("bearer s3cret")).is_ok());
    }

    #[test]
    fn without_a_secret_publishing_is_not_found_and_asks_for_nothing() {
        let resp = authorize(None, &with_auth("Bearer s3cret"))
            .expect_err("disabled")
            .into_response();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert!(resp.headers().get(header::WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn broker_failures_are_503_unavailable_or_500_internal_with_nothing_internal_shown() {
        let down = Refusal::from(BrokerError::Unavailable("redis: connection refused".into()));
        assert_eq!(
            (down.status, down.code),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
        let other = Refusal::from(BrokerError::Other("script: bad reply".into()));
        assert_eq!(
            (other.status, other.code),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        );
        for refusal in [down, other] {
            assert!(!refusal.message.contains("redis") && !refusal.message.contains("script"));
        }
    }
}
