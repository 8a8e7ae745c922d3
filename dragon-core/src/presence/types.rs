//! Presence's data: keys, members, and the diffs brokers carry between nodes.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;
use crate::router::ConnId;

/// The longest string key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// What a presence set is about: an object id or a free string. `42` and `"42"` differ.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PresenceKey {
    /// An integer key, usually an object's id.
    Int(i64),
    /// A string key of at most [`MAX_KEY_BYTES`] bytes (`"lobby"`).
    Str(String),
}

impl PresenceKey {
    /// Reads a key argument: a JSON integer, or a string of at most [`MAX_KEY_BYTES`].
    pub fn parse(value: &Value) -> Result<Self, Error> {
        match value {
            Value::Number(n) => n
                .as_i64()
                .map(PresenceKey::Int)
                .ok_or_else(|| Error::bad_request("key must be an integer or a string")),
            Value::String(s) if s.len() <= MAX_KEY_BYTES => Ok(PresenceKey::Str(s.clone())),
            Value::String(_) => Err(Error::bad_request(format!(
                "key must be at most {MAX_KEY_BYTES} bytes"
            ))),
            _ => Err(Error::bad_request("key must be an integer or a string")),
        }
    }

    /// The key if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PresenceKey::Str(s) => Some(s),
            PresenceKey::Int(_) => None,
        }
    }

    /// The key if it is an integer (an object id).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            PresenceKey::Int(i) => Some(*i),
            PresenceKey::Str(_) => None,
        }
    }

    /// The key as JSON, as it appears on the wire.
    pub fn to_json(&self) -> Value {
        match self {
            PresenceKey::Int(i) => Value::from(*i),
            PresenceKey::Str(s) => Value::from(s.as_str()),
        }
    }
}

impl fmt::Display for PresenceKey {
    /// The key's JSON text (`42`, `"lobby"`), which also names it in Redis.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

/// One connection's presence on a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The connection's id (as in its `hello`).
    pub conn: ConnId,
    /// The connection's user, or null.
    pub user: Value,
    /// What the client says about itself (`{"editing": true}`).
    pub state: Value,
}

/// One change to a key's members, as every node receives it, in the same order everywhere.
///
/// `prev` is the version the key had before the change (0: it had no members); a node
/// whose view is at another version missed something and reads the key again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceDiff {
    /// The route the key belongs to.
    pub route: Arc<str>,
    /// The key whose members changed.
    pub key: PresenceKey,
    /// The key's version after this change.
    pub version: u64,
    /// The key's version before it (0: it had no members).
    pub prev: u64,
    /// Members that joined or changed state: a state update is a join carrying the new state.
    #[serde(default)]
    pub joins: Vec<Member>,
    /// Members that left, each with its last state.
    #[serde(default)]
    pub leaves: Vec<Member>,
}

/// What a broker hands a node's presence registry.
#[derive(Debug, Clone)]
pub enum PresenceSignal {
    /// One change to a key's members.
    Diff(PresenceDiff),
    /// Diffs may have been lost (reconnection, receive overflow): read every key again.
    Resync,
}

/// How a join went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    /// The member is in; the key's version now (at least the join's own).
    Joined(u64),
    /// The key already has its maximum of members.
    Full,
}

/// A key's members as read in one step, with the version they are current at: every diff
/// of the key published before the read has a version at most this (for a key without
/// members, the broker's latest version of any key), every later one a greater version.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The version the members are current at (see above).
    pub version: u64,
    /// Every member of the key, on every node.
    pub members: Vec<Member>,
}
