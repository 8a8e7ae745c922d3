//! Wire types of protocol version 1, shared by the server and the Rust client.
//!
//! The contract lives in `docs/protocol.md`; these types are its single Rust spelling.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The protocol version this crate speaks, announced in the `hello` event.
pub const PROTOCOL_VERSION: u32 = 1;

/// A request id: the client chooses an integer or a string, the reply echoes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    Int(i64),
    Str(String),
}

impl From<i64> for RequestId {
    fn from(v: i64) -> Self {
        RequestId::Int(v)
    }
}

/// A request frame. Unknown top-level keys are ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    pub route: String,
    pub verb: String,
    #[serde(default = "empty_object")]
    pub args: Value,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// Stable error codes of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    UnknownRoute,
    UnknownVerb,
    NotFound,
    Validation,
    Unauthenticated,
    Forbidden,
    Conflict,
    RateLimited,
    Internal,
    Unavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownRoute => "unknown_route",
            ErrorCode::UnknownVerb => "unknown_verb",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Validation => "validation",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// The `error` object of a failed reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// A reply frame: exactly one per request, carrying the request's id (`null` if unreadable).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub id: Option<RequestId>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Reply {
    pub fn success(id: Option<RequestId>, out: Output) -> Self {
        Reply {
            id,
            ok: true,
            data: Some(out.data),
            meta: out.meta,
            error: None,
        }
    }

    /// The frame's text: the one place a reply is encoded.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("replies serialize")
    }

    pub fn failure(id: Option<RequestId>, error: ErrorBody) -> Self {
        Reply {
            id,
            ok: false,
            data: None,
            meta: None,
            error: Some(error),
        }
    }
}

/// What a verb returns on success: `data`, and `meta` where the verb defines one.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub data: Value,
    pub meta: Option<Value>,
}

impl Output {
    pub fn data(data: Value) -> Self {
        Output { data, meta: None }
    }
    pub fn with_meta(data: Value, meta: Value) -> Self {
        Output {
            data,
            meta: Some(meta),
        }
    }
}

impl From<Value> for Output {
    fn from(data: Value) -> Self {
        Output::data(data)
    }
}

/// An event frame: anything the server sends that answers no request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// A model change's object version: higher is newer for the same object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Presence events carry their key and member lists at the top level.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Any frame a server sends, as a client reads it.
#[derive(Debug, Clone)]
pub enum ServerFrame {
    Reply(Reply),
    Event(Event),
}

impl ServerFrame {
    /// Parses one text frame; replies have `id`, events have `event`.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        let value: Value = serde_json::from_str(text)?;
        if value.get("event").is_some() {
            Ok(ServerFrame::Event(serde_json::from_value(value)?))
        } else {
            Ok(ServerFrame::Reply(serde_json::from_value(value)?))
        }
    }
}

/// A WebSocket close code (section 1): what the client should do next is in the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// The server is going away (a deploy): reconnect, elsewhere if need be.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// The page's origin is not allowed: final.
    pub const POLICY: CloseCode = CloseCode(1008);
    /// A text frame that was not UTF-8: RFC 6455 requires failing the connection.
    pub const INVALID_DATA: CloseCode = CloseCode(1007);
    /// A frame over the size limit.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// The authenticator's backend failed: not the client's fault, reconnect later.
    pub const TRY_AGAIN: CloseCode = CloseCode(1013);
    /// Authentication is required and the token was missing or invalid: final.
    pub const AUTH_REQUIRED: CloseCode = CloseCode(4001);
    /// The connection's token expired and no new one came within the grace period: get a
    /// fresh token and reconnect (or send `dragon.auth` before it runs out).
    pub const TOKEN_EXPIRED: CloseCode = CloseCode(4003);
    /// The client did not read its events for too long: reconnect and resubscribe.
    pub const SLOW_CONSUMER: CloseCode = CloseCode(4008);
    /// The connection sent no request for the server's idle timeout: reconnect when the
    /// server is needed again (the JS client does, on its next call or when the page shows).
    pub const IDLE: CloseCode = CloseCode(4009);

    /// Whether a client should stop reconnecting (it would be refused again).
    pub fn is_final(self) -> bool {
        matches!(self, CloseCode::POLICY | CloseCode::AUTH_REQUIRED)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.0
    }
}

impl PartialEq<u16> for CloseCode {
    fn eq(&self, other: &u16) -> bool {
        self.0 == *other
    }
}

/// The close codes of section 1, by name.
pub mod close {
    use super::CloseCode;
    pub const NORMAL: CloseCode = CloseCode::NORMAL;
    pub const GOING_AWAY: CloseCode = CloseCode::GOING_AWAY;
    pub const POLICY: CloseCode = CloseCode::POLICY;
    pub const INVALID_DATA: CloseCode = CloseCode::INVALID_DATA;
    pub const TOO_BIG: CloseCode = CloseCode::TOO_BIG;
    pub const TRY_AGAIN: CloseCode = CloseCode::TRY_AGAIN;
    pub const AUTH_REQUIRED: CloseCode = CloseCode::AUTH_REQUIRED;
    pub const TOKEN_EXPIRED: CloseCode = CloseCode::TOKEN_EXPIRED;
    pub const SLOW_CONSUMER: CloseCode = CloseCode::SLOW_CONSUMER;
    pub const IDLE: CloseCode = CloseCode::IDLE;
}

/// The kind of a model change, as named on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Deleted => "deleted",
        }
    }
}
