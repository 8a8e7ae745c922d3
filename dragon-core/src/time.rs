//! Timestamps as Dragon publishes them.

use chrono::{SecondsFormat, SubsecRound, Utc};
use serde_json::Value;

/// Now, in UTC, as an RFC 3339 string to the microsecond (what every supported database
/// keeps, so the value a client gets back equals the one stored). For server-set fields:
/// `ModelRouter::server_set("created_at", |_| now())`.
pub fn now() -> Value {
    Value::from(
        Utc::now()
            .trunc_subsecs(6)
            .to_rfc3339_opts(SecondsFormat::AutoSi, true),
    )
}
