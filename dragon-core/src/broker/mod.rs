//! Brokers carry committed changes and custom events between nodes, assign each route's
//! positions, and keep a bounded history for recovery.
//!
//! A broker is deliberately dumb about subscriptions: every node receives every message of
//! every route once and matches its own subscriptions (the hub, `hub/`).

mod decode;
mod memory;
mod memory_presence;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::presence::{JoinOutcome, Member, PresenceKey, PresenceSignal, Snapshot};
use crate::protocol::ChangeKind;

pub use memory::{HistoryLimits, MemoryBroker};
#[cfg(feature = "redis")]
pub use redis::{PRESENCE_LUA, PUBLISH_LUA, RedisBroker, RedisOptions, RedisStats};

/// One committed model change or one custom event on a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", try_from = "decode::Flat")]
pub enum Message {
    /// `old` is the published state before (updates, deletes), `new` after (creates, updates).
    Change {
        /// Whether the object was created, updated or deleted.
        kind: ChangeKind,
        /// The published object before the change (updates and deletes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        old: Option<Map<String, Value>>,
        /// The published object after the change (creates and updates).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        new: Option<Map<String, Value>>,
        /// Unique per change: a change published twice (a retry after a timeout that did
        /// reach the broker) is delivered once. Optional for other publishers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Arc<str>>,
        /// The object's version after this change (its id in the change log,
        /// see [`crate::changelog`]): clients ignore a version older than the one they hold.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
    },
    /// A router's own event (`message`, `like`, ...), delivered as `{"event": name, ...}`.
    Custom {
        /// The event's name, sent to clients as `event`.
        event: String,
        /// The event's payload (any JSON), sent to clients as `data`.
        data: Value,
        /// As for changes: repeats of one event are delivered once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Arc<str>>,
        /// A connection that does not get it (the sender of a typing indicator, say).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except: Option<Arc<str>>,
    },
    /// Messages of the route were lost: every subscription of the route gets `resync`. A
    /// broker makes this for its own node when its history no longer covers a gap; a node
    /// publishes it for everyone when its queue of committed changes waiting for the broker
    /// overflowed (see [`crate::publish`]).
    Gap,
}

/// A message id unique across processes and restarts: this process's random half (drawn
/// once) and a counter. A random UUID for every message cost a `getrandom` system call on
/// every publish.
fn fresh_id() -> Option<Arc<str>> {
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PROCESS: LazyLock<u64> = LazyLock::new(|| uuid::Uuid::new_v4().as_u64_pair().0);
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Some(Arc::from(format!("{:016x}{n:016x}", *PROCESS)))
}

impl Message {
    /// A change creating an object published as `new`, with a fresh id.
    pub fn created(new: Map<String, Value>) -> Self {
        Message::Change {
            kind: ChangeKind::Created,
            old: None,
            new: Some(new),
            id: fresh_id(),
            version: None,
        }
    }
    /// A change from `old` to `new`, with a fresh id.
    pub fn updated(old: Map<String, Value>, new: Map<String, Value>) -> Self {
        Message::Change {
            kind: ChangeKind::Updated,
            old: Some(old),
            new: Some(new),
            id: fresh_id(),
            version: None,
        }
    }
    /// A change deleting an object last published as `old`, with a fresh id.
    pub fn deleted(old: Map<String, Value>) -> Self {
        Message::Change {
            kind: ChangeKind::Deleted,
            old: Some(old),
            new: None,
            id: fresh_id(),
            version: None,
        }
    }
    /// A custom event `event` for every subscriber of the route, with a fresh id.
    pub fn custom(event: impl Into<String>, data: Value) -> Self {
        Message::Custom {
            event: event.into(),
            data,
            id: fresh_id(),
            except: None,
        }
    }

    /// This custom event for every subscriber but connection `conn`.
    pub fn except(mut self, conn: &str) -> Self {
        if let Message::Custom { except, .. } = &mut self {
            *except = Some(Arc::from(conn));
        }
        self
    }

    /// The message's unique id, if it has one.
    pub fn id(&self) -> Option<&Arc<str>> {
        match self {
            Message::Change { id, .. } | Message::Custom { id, .. } => id.as_ref(),
            Message::Gap => None,
        }
    }
}

/// A place in a route's stream. On the wire it is the opaque string `"<a>-<b>"`
/// (for Redis, the stream entry id; in memory, the broker's epoch and a counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(pub u64, pub u64);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// A string that is not a stream position (`MS-SEQ`, both unsigned integers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a stream position (expected MS-SEQ): {0:?}")]
pub struct ParsePositionError(String);

impl FromStr for Position {
    type Err = ParsePositionError;
    fn from_str(s: &str) -> Result<Self, ParsePositionError> {
        let bad = || ParsePositionError(s.to_owned());
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        Ok(Position(
            a.parse().map_err(|_| bad())?,
            b.parse().map_err(|_| bad())?,
        ))
    }
}

/// A message with its route and position, as every node receives it.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The route it was published on.
    pub route: Arc<str>,
    /// Its place in the route's stream, assigned by the broker.
    pub position: Position,
    /// The message itself, shared by every subscription that receives it.
    pub message: Arc<Message>,
    /// When it was published (unix ms), for the commit-to-send latency metric.
    pub published_ms: u64,
}

/// What a broker can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The broker could not be reached or did not answer in time; clients get `unavailable`.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// Any other failure; clients get an internal error.
    #[error("broker error: {0}")]
    Other(String),
}

impl From<BrokerError> for crate::Error {
    fn from(err: BrokerError) -> Self {
        match err {
            BrokerError::Unavailable(msg) => crate::Error::Unavailable(msg),
            BrokerError::Other(msg) => crate::Error::Internal(msg),
        }
    }
}

/// What `history` found.
#[derive(Debug)]
pub enum History {
    /// Every message after the asked position, in order (possibly none).
    Complete(Vec<Envelope>),
    /// The history no longer reaches back to that position (or never knew it).
    Gone,
    /// More messages than were asked for at most (see [`Broker::history_at_most`]).
    TooLong,
}

/// The transport between nodes. Implementations: [`MemoryBroker`] (one node, the default)
/// and the Redis broker.
#[async_trait::async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Publishes a message on `route`; every node's [`Broker::messages`] stream gets it once.
    async fn publish(&self, route: &str, message: Message) -> Result<(), BrokerError>;

    /// Publishes `messages` on `route`, in order, all or none where the broker can (the
    /// change log's relay publishes a route's changes this way).
    async fn publish_many(&self, route: &str, messages: Vec<Message>) -> Result<(), BrokerError> {
        for message in messages {
            self.publish(route, message).await?;
        }
        Ok(())
    }

    /// The stream of every message on every route, in position order within each route.
    /// Called once, by the hub, when a server starts.
    fn messages(&self) -> mpsc::UnboundedReceiver<Envelope>;

    /// The messages on `route` after `after`, or [`History::Gone`] if history does not reach.
    async fn history(&self, route: &str, after: Position) -> Result<History, BrokerError>;

    /// Like [`Broker::history`], but [`History::TooLong`] past `max` messages: a replay is
    /// bounded, so one client's old position cannot make the server read a whole stream.
    /// Brokers override it to stop reading at `max`.
    async fn history_at_most(
        &self,
        route: &str,
        after: Position,
        max: usize,
    ) -> Result<History, BrokerError> {
        Ok(match self.history(route, after).await? {
            History::Complete(events) if events.len() > max => History::TooLong,
            other => other,
        })
    }

    /// The position of the latest message on `route` (a starting position if none yet).
    async fn head(&self, route: &str) -> Result<Position, BrokerError>;

    /// Whether the broker can be reached (for `/healthz`).
    async fn healthy(&self) -> bool {
        true
    }

    /// Adds `member` to `key` of `route`, or replaces its state (see [`crate::presence`]),
    /// unless the key already has `max_members` other members. The change reaches every
    /// node's [`Broker::presence_diffs`], in the same order per key everywhere.
    async fn presence_join(
        &self,
        route: &str,
        key: &PresenceKey,
        member: &Member,
        max_members: usize,
    ) -> Result<JoinOutcome, BrokerError> {
        let _ = (route, key, member, max_members);
        Err(no_presence())
    }

    /// Removes connection `conn` from `key` of `route` (nothing if it is not there).
    async fn presence_leave(
        &self,
        route: &str,
        key: &PresenceKey,
        conn: &str,
    ) -> Result<(), BrokerError> {
        let _ = (route, key, conn);
        Err(no_presence())
    }

    /// The members of `key` on every node, and the version they are current at.
    async fn presence_members(
        &self,
        route: &str,
        key: &PresenceKey,
    ) -> Result<Snapshot, BrokerError> {
        let _ = (route, key);
        Err(no_presence())
    }

    /// Every presence change on every node. Called once, by the hub, when a server starts.
    fn presence_diffs(&self) -> mpsc::UnboundedReceiver<PresenceSignal> {
        mpsc::unbounded_channel().1
    }

    /// This node is going away: removes every member it still holds, at once.
    async fn presence_retire(&self) -> Result<(), BrokerError> {
        Ok(())
    }
}

fn no_presence() -> BrokerError {
    BrokerError::Other("this broker does not support presence".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_distinct() {
        let ids: std::collections::HashSet<Arc<str>> =
            (0..1000).filter_map(|_| fresh_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 32));
    }
}
