//! What operators watch: `/healthz` (can this node serve?) and `/metrics` (how is it doing?).

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Dragon;
use crate::metrics::{CONTENT_TYPE, Readings};
use crate::{changelog, publish};

pub(super) async fn metrics(State(dragon): State<Dragon>) -> Response {
    let hub = &dragon.inner.hub;
    let now = Readings {
        connections: dragon.connections(),
        subscriptions: hub.subscription_count(),
        presence_keys: hub.presence().view_count(),
        backlog: publish::backlog(),
        log: changelog::status(),
    };
    match hub.metrics().render(&dragon.inner.registry, now) {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(_) => {
            tracing::error!("/metrics: a registered metric failed to encode");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// `/healthz` fails while a committed change has waited this long for the broker (in the
/// retry queue, or in the change log: the relay is stuck).
const BACKLOG_STUCK: Duration = Duration::from_secs(30);

pub(super) async fn healthz(State(dragon): State<Dragon>) -> Response {
    let db_ok = match &dragon.inner.db {
        Some(db) => db.ping().await.is_ok(),
        None => true,
    };
    let broker_ok = dragon.inner.broker.healthy().await;
    // Committed changes the broker has not taken for this long: publishing is stuck.
    let backlog = publish::backlog();
    let log = changelog::status();
    let stuck = backlog.oldest.is_some_and(|d| d > BACKLOG_STUCK)
        || log.oldest.is_some_and(|d| d > BACKLOG_STUCK);
    let body = serde_json::json!({
        "database": db_ok,
        "broker": broker_ok,
        "backlog": backlog.waiting,
        "changelog": {
            "backlog": log.backlog,
            "oldest_ms": log.oldest.map(|d| d.as_millis() as u64),
            "relaying": log.relaying,
        },
    });
    let status = if db_ok && broker_ok && !stuck {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}
