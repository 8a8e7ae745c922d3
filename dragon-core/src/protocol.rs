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
    /// An integer id, as in `"id": 7`.
    Int(i64),
    /// A string id, as in `"id": "a1"`.
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
    /// Chosen by the client and echoed in the reply, so the two can be matched.
    pub id: RequestId,
    /// The route (router name) the request is for, e.g. `todo-item`, or `dragon` for
    /// connection-level verbs.
    pub route: String,
    /// The operation on that route, e.g. `get_list` or `subscribe`.
    pub verb: String,
    /// The verb's arguments, an object; `{}` when the frame leaves `args` out.
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
    /// Not JSON, not an object, missing route or verb, wrong argument types, or a field that may
    /// not be filtered on.
    BadRequest,
    /// No router serves the route the request named.
    UnknownRoute,
    /// The route's router does not offer the verb.
    UnknownVerb,
    /// No such object, or the caller may not see it (existence is not leaked).
    NotFound,
    /// The data was refused; `details` maps each field to its messages.
    Validation,
    /// The verb needs a logged-in user and the connection has none.
    Unauthenticated,
    /// The user is known but may not do this.
    Forbidden,
    /// A uniqueness or concurrency conflict.
    Conflict,
    /// Too many requests in flight or too many subscriptions; the connection stays open.
    RateLimited,
    /// A server fault; the message says nothing secret, the server log has the rest.
    Internal,
    /// A backing service (database, broker) is down; retry later.
    Unavailable,
}

impl ErrorCode {
    /// The stable string the code has on the wire, e.g. `"rate_limited"`.
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
    /// The stable code clients branch on.
    pub code: ErrorCode,
    /// Text for people, not for matching on; never holds internal details.
    pub message: String,
    /// Structured extra information where the code defines it (a `validation` error's field
    /// messages); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// A reply frame: exactly one per request, carrying the request's id (`null` if unreadable).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// The request's id, echoed; `null` when the request's id could not be read.
    pub id: Option<RequestId>,
    /// `true` for success (the reply has `data`), `false` for failure (it has `error`).
    pub ok: bool,
    /// The verb's result; present only on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Extra result information where the verb defines it (e.g. `get_list`'s paging); absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
    /// What went wrong; present only on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Reply {
    /// A success reply to request `id`, carrying the verb's output.
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

    /// A failure reply to request `id` (`None`: the id could not be read).
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
    /// What the reply's `data` carries.
    pub data: Value,
    /// What the reply's `meta` carries, for verbs that define one; `None` leaves `meta` out.
    pub meta: Option<Value>,
}

impl Output {
    /// An output with `data` only, for verbs without `meta`.
    pub fn data(data: Value) -> Self {
        Output { data, meta: None }
    }
    /// An output with both `data` and `meta` (e.g. `get_list` with its paging).
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
    /// The event's name: `hello`, `created`, `updated`, `deleted`, `resync`, `presence`, `error`,
    /// or a router's own.
    pub event: String,
    /// The route the event comes from; absent on connection-level events such as `hello`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// This connection's subscriptions the event concerns, all in one frame; left out when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subs: Vec<String>,
    /// The payload: the object of a model change, a custom event's data, the `hello` details;
    /// absent where the event has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// On `updated`: the published fields that changed; absent on other events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<Vec<String>>,
    /// The route's opaque position after this event, to pass as `since` when resubscribing; absent
    /// on events outside a route's stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// A model change's object version: higher is newer for the same object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Presence events carry their key and member lists at the top level.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Event {
    /// An event called `event`, with nothing else set yet.
    pub(crate) fn named(event: impl Into<String>) -> Self {
        Event {
            event: event.into(),
            route: None,
            subs: Vec::new(),
            data: None,
            changed: None,
            position: None,
            version: None,
            extra: Map::new(),
        }
    }

    pub(crate) fn route(mut self, route: &str) -> Self {
        self.route = Some(route.to_owned());
        self
    }

    pub(crate) fn subs(mut self, subs: &[std::sync::Arc<str>]) -> Self {
        self.subs = subs.iter().map(|s| s.to_string()).collect();
        self
    }

    pub(crate) fn data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// A top-level field of its own (presence's `key` and `count`).
    pub(crate) fn with(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(field.to_owned(), value.into());
        self
    }

    /// The frame's text. Every event frame but the hot path's model and custom events (which
    /// `hub::frame` writes straight from the row, checked against this type by its tests) is
    /// encoded here.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("events serialize")
    }
}

/// Any frame a server sends, as a client reads it.
#[derive(Debug, Clone)]
pub enum ServerFrame {
    /// A reply to one of the client's requests (the frame has `id`).
    Reply(Reply),
    /// An event, answering no request (the frame has `event`).
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
    /// A normal close: nothing went wrong.
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
    /// 1000, a normal close ([`CloseCode::NORMAL`]).
    pub const NORMAL: CloseCode = CloseCode::NORMAL;
    /// 1001, the server is going away: reconnect ([`CloseCode::GOING_AWAY`]).
    pub const GOING_AWAY: CloseCode = CloseCode::GOING_AWAY;
    /// 1008, the page's origin is not allowed: final ([`CloseCode::POLICY`]).
    pub const POLICY: CloseCode = CloseCode::POLICY;
    /// 1007, a text frame that was not UTF-8 ([`CloseCode::INVALID_DATA`]).
    pub const INVALID_DATA: CloseCode = CloseCode::INVALID_DATA;
    /// 1009, a frame over the size limit ([`CloseCode::TOO_BIG`]).
    pub const TOO_BIG: CloseCode = CloseCode::TOO_BIG;
    /// 1013, the authenticator's backend failed: reconnect later ([`CloseCode::TRY_AGAIN`]).
    pub const TRY_AGAIN: CloseCode = CloseCode::TRY_AGAIN;
    /// 4001, the token was missing or invalid where one is required: final
    /// ([`CloseCode::AUTH_REQUIRED`]).
    pub const AUTH_REQUIRED: CloseCode = CloseCode::AUTH_REQUIRED;
    /// 4003, the token expired with no new one in time ([`CloseCode::TOKEN_EXPIRED`]).
    pub const TOKEN_EXPIRED: CloseCode = CloseCode::TOKEN_EXPIRED;
    /// 4008, the client did not read its events for too long ([`CloseCode::SLOW_CONSUMER`]).
    pub const SLOW_CONSUMER: CloseCode = CloseCode::SLOW_CONSUMER;
    /// 4009, no request for the idle timeout ([`CloseCode::IDLE`]).
    pub const IDLE: CloseCode = CloseCode::IDLE;
}

/// The kind of a model change, as named on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A new object (`created`); a subscription also gets it for an update that makes the object
    /// start matching its filter.
    Created,
    /// An object that changed and still matches (`updated`, with `changed` naming the fields).
    Updated,
    /// An object that was deleted, or stopped matching a subscription (`deleted`, with its last
    /// published state).
    Deleted,
}

impl ChangeKind {
    /// The event name on the wire: `created`, `updated` or `deleted`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Deleted => "deleted",
        }
    }
}
