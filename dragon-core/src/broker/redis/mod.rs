//! The Redis broker: several Dragon nodes behind one Redis (feature `redis`, on `fred`).
//!
//! # Data layout (see `docs/redis.md` for publishing from other languages)
//! - Each route has a stream `<prefix>stream:<route>`; an entry's id (`<ms>-<seq>`) is the
//!   message's [`Position`]. Fields: `m` = the [`Message`] as JSON, `p` = the id of the entry
//!   before it on that route (`0-0` for the first), which chains the entries together.
//! - Every message is also published on ONE channel, `<prefix>events`, as
//!   `{"route", "position", "prev", "message"}`, or, for a run of one route's messages
//!   published together, as one payload `{"route", "prev", "positions", "messages"}` (a burst
//!   reaches a node as one run). Every node subscribes to that channel only and
//!   its hub matches its own subscriptions: the cost of a publish does not depend on how many
//!   nodes or subscriptions there are.
//! - A publish is one `EVALSHA` of [`PUBLISH_LUA`]: XADD (trimmed with `MAXLEN ~ history_len`,
//!   then `MINID ~ now - history_age`) and PUBLISH, atomically, so the channel carries each
//!   route's messages in stream order and every node receives them in that same order.
//!
//! # Gaps, outages and replay
//! Pub/sub is at-most-once: a node misses messages while its subscriber connection is down or
//! when its receive buffer overflows (`RecvError::Lagged`). This broker never lets that pass
//! silently; it **replays from the streams**:
//! - it remembers, per route, the last position it handed to the hub (and, for a route it has
//!   handed nothing on yet, the earliest head it reported: a subscription may have joined there);
//! - after a reconnect (once the channel subscription is confirmed again), after a lag, and
//!   while a previous replay failed (retried every 500 ms), it reads each such route's stream
//!   after that position (`XRANGE (pos +`) and hands the missing messages over, in order, before
//!   any later live one;
//! - a live message whose `prev` is newer than the last position handed over reveals a gap
//!   too: the gap is read from the stream first;
//! - live messages at or before the last position handed over are duplicates and dropped.
//!
//! So each node hands every route's messages to its hub exactly once, in stream order. If the
//! stream was trimmed past a gap (an outage longer than the history), the rest is replayed and
//! the loss is logged at `error` level.
//!
//! `history` is exact thanks to the `p` chain: it is complete only when the first entry after
//! `after` names `after` as its predecessor (or, with nothing after it, when `after` is the
//! stream's last entry); a position from a trimmed range, from a Redis that lost its data, or
//! from anywhere else is [`History::Gone`].
//!
//! # Outages
//! Both connections reconnect by themselves (fred's `ReconnectPolicy`, exponential back-off up
//! to 2 s, forever); the subscriber re-subscribes (`manage_subscriptions`). While Redis is
//! unreachable `publish`, `history` and `head` fail at once with [`BrokerError::Unavailable`]
//! (or after `command_timeout` for a command already in flight); `healthy` is false.
//! Commands are written at most once (`max_command_attempts = 1`), so a publish cut off by a
//! disconnection fails rather than risk being added twice.
//!
//! # Cluster and Sentinel
//! The URL scheme chooses: `redis://host:6379/0`, `rediss://` (TLS, needs a fred TLS feature),
//! `redis-cluster://host1:6379?node=host2:6379`, `redis-sentinel://host:26379/0?sentinelServiceName=mymaster`.
//! A publish touches one key (the route's stream), so it works on a cluster; PUBLISH reaches
//! subscribers on every cluster node.

mod batch;
mod presence;
mod receive;

pub use presence::PRESENCE_LUA;

use receive::{Track, receive_loop};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::clients::{Client, Pool, SubscriberClient};
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface, StreamsInterface};
use fred::types::Builder;
use fred::types::config::{Config, ReconnectPolicy};
use fred::types::scripts::Script;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Broker, BrokerError, Envelope, History, Message, Position};
use crate::presence::{JoinOutcome, Member, PresenceKey, PresenceSignal, Snapshot};

/// The publish script: one atomic round trip per message, whatever the number of nodes.
///
/// `KEYS[1]` = the route's stream; `ARGV` = channel, route, message JSON, max length,
/// max age in ms (0: none), trim mode (`~` approximate or `=` exact). Returns the new id.
pub const PUBLISH_LUA: &str = r#"-- dragon publish v1
local key = KEYS[1]
local ok = pcall(cjson.decode, ARGV[3])
if not ok then return redis.error_reply('ERR dragon: message is not valid JSON') end
local prev = '0-0'
local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
if #last > 0 then prev = last[1][1] end
local id = redis.call('XADD', key, 'MAXLEN', ARGV[6], ARGV[4], '*', 'm', ARGV[3], 'p', prev)
local age = tonumber(ARGV[5])
if age > 0 then
  local ms = tonumber(string.match(id, '^(%d+)'))
  if ms > age then
    redis.call('XTRIM', key, 'MINID', ARGV[6], string.format('%.0f', ms - age))
  end
end
redis.call('PUBLISH', ARGV[1], '{"route":' .. cjson.encode(ARGV[2]) .. ',"position":"' .. id ..
  '","prev":"' .. prev .. '","message":' .. ARGV[3] .. '}')
return id
"#;

/// How many stream entries one `XRANGE` reads.
const BATCH: u64 = 1000;

/// Configures a [`RedisBroker`].
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Messages kept per route for recovery (`MAXLEN`; at least 1 is always kept).
    pub history_len: usize,
    /// How long messages are kept per route (`MINID`, applied when the route is published on);
    /// `None`: no age limit.
    pub history_age: Option<Duration>,
    /// Trim to exactly `history_len` (`MAXLEN =`) instead of Redis's cheaper approximate
    /// trimming (`MAXLEN ~`, which keeps up to one stream node, ~100 entries, more).
    pub exact_trim: bool,
    /// How long one Redis command may take before it fails with `Unavailable`.
    pub command_timeout: Duration,
    /// How long [`RedisBroker::connect`] waits for Redis.
    pub connect_timeout: Duration,
    /// Prepended to every key and the channel: nodes sharing a prefix form one cluster of
    /// Dragon nodes; different prefixes share a Redis without seeing each other.
    pub key_prefix: String,
    /// Capacity of fred's pub/sub receive buffer (overflow is recovered from the streams).
    pub receive_buffer: usize,
    /// How long the presence of a node that died may outlive it (see `docs/presence.md`).
    pub presence_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            history_len: 10_000,
            history_age: Some(Duration::from_secs(300)),
            exact_trim: false,
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            key_prefix: "dragon:".to_owned(),
            receive_buffer: 8192,
            presence_timeout: Duration::from_secs(10),
        }
    }
}

struct Shared {
    /// Commands go round-robin over a few connections: fred sends scripts one at a time
    /// per connection, so one connection would serialize every publish of the node.
    pool: Pool,
    script: Script,
    batch_script: Script,
    /// Publishes wait here for the batching task (see `batch.rs`).
    jobs: mpsc::UnboundedSender<batch::Job>,
    prefix: String,
    channel: String,
    history_len: String,
    history_age_ms: String,
    trim: &'static str,
    tracks: Mutex<HashMap<Arc<str>, Track>>,
    senders: Mutex<Vec<mpsc::UnboundedSender<Envelope>>>,
    stats: Stats,
    presence: presence::PresenceState,
}

#[derive(Default)]
struct Stats {
    lagged: AtomicU64,
    replayed: AtomicU64,
    lost: AtomicU64,
}

/// Counters for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// Times the pub/sub receive buffer overflowed.
    pub lagged: u64,
    /// Messages handed over from the streams rather than live.
    pub replayed: u64,
    /// Gaps that could not be replayed because the history was trimmed past them.
    pub lost: u64,
}

/// The command pool and the subscriber connection, both connected within
/// `options.connect_timeout`.
async fn connections(
    url: &str,
    options: &RedisOptions,
) -> Result<(Pool, SubscriberClient), BrokerError> {
    let config = Config::from_url(url).map_err(|e| BrokerError::Other(e.to_string()))?;
    let mut builder = Builder::from_config(config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = options.connect_timeout;
            c.internal_command_timeout = options.command_timeout;
            // A command cut off by a disconnection fails instead of being written again:
            // a re-sent publish could be added to the stream twice.
            c.max_command_attempts = 1;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = options.command_timeout;
            // Command connections receive no messages: small broadcast buffers (each
            // slot of fred's buffers costs memory on every client).
            p.broadcast_channel_capacity = 32;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2));
    let pool = builder
        .build_pool(COMMAND_CONNECTIONS)
        .map_err(unavailable)?;
    builder.with_performance_config(|p| {
        p.broadcast_channel_capacity = options.receive_buffer.max(1);
    });
    let subscriber = builder.build_subscriber_client().map_err(unavailable)?;
    let limit = options.connect_timeout;
    let timed_out = || BrokerError::Unavailable(format!("could not reach Redis within {limit:?}"));
    tokio::time::timeout(limit, pool.init())
        .await
        .map_err(|_| timed_out())?
        .map_err(unavailable)?;
    tokio::time::timeout(limit, subscriber.init())
        .await
        .map_err(|_| timed_out())?
        .map_err(unavailable)?;
    Ok((pool, subscriber))
}

impl Shared {
    fn new(pool: Pool, jobs: mpsc::UnboundedSender<batch::Job>, options: &RedisOptions) -> Self {
        let prefix = options.key_prefix.clone();
        Shared {
            pool,
            script: Script::from_lua(PUBLISH_LUA),
            batch_script: batch::script(),
            jobs,
            channel: format!("{prefix}events"),
            prefix,
            history_len: options.history_len.max(1).to_string(),
            history_age_ms: options
                .history_age
                .map_or(0, |d| d.as_millis().max(1) as u64)
                .to_string(),
            trim: if options.exact_trim { "=" } else { "~" },
            tracks: Mutex::new(HashMap::new()),
            senders: Mutex::new(Vec::new()),
            stats: Stats::default(),
            presence: presence::PresenceState::new(&options.key_prefix, options.presence_timeout),
        }
    }

    /// Loads the publish, batch and presence scripts into Redis (if Redis loses them later,
    /// the calls load them again themselves).
    async fn load_scripts(&self) -> Result<(), BrokerError> {
        for script in [&self.script, &self.batch_script, self.presence.script()] {
            script.load(self.client()).await.map_err(unavailable)?;
        }
        Ok(())
    }
}

/// A [`Broker`] on Redis streams and one pub/sub channel. See the module docs.
pub struct RedisBroker {
    shared: Arc<Shared>,
    subscriber: SubscriberClient,
    tasks: Vec<JoinHandle<()>>,
}

impl RedisBroker {
    /// Connects (both the command and the subscriber connection) and starts receiving.
    /// Fails if Redis cannot be reached within `options.connect_timeout`.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<RedisBroker, BrokerError> {
        let (pool, subscriber) = connections(url, &options).await?;
        let (jobs, job_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(pool, jobs, &options));
        shared.load_scripts().await?;
        let publisher = tokio::spawn(batch::run(shared.clone(), job_rx));

        // Receivers first, so nothing published after the SUBSCRIBE below is missed.
        let messages = subscriber.message_rx();
        let reconnects = subscriber.reconnect_rx();
        let manage = subscriber.manage_subscriptions();
        tokio::time::timeout(
            options.command_timeout,
            subscriber.subscribe(shared.channels()),
        )
        .await
        .map_err(|_| BrokerError::Unavailable("SUBSCRIBE timed out".into()))?
        .map_err(unavailable)?;
        let receive = tokio::spawn(receive_loop(
            shared.clone(),
            subscriber.clone(),
            messages,
            reconnects,
        ));
        let leases = tokio::spawn(presence::lease_loop(shared.clone()));
        Ok(RedisBroker {
            shared,
            subscriber,
            tasks: vec![receive, manage, publisher, leases],
        })
    }

    /// The stream key of `route`.
    pub fn stream_key(&self, route: &str) -> String {
        self.shared.stream_key(route)
    }

    /// The channel every node listens on.
    pub fn channel(&self) -> &str {
        &self.shared.channel
    }

    /// Lag, replay and loss counters since the broker started.
    pub fn stats(&self) -> RedisStats {
        let s = &self.shared.stats;
        RedisStats {
            lagged: s.lagged.load(Ordering::Relaxed),
            replayed: s.replayed.load(Ordering::Relaxed),
            lost: s.lost.load(Ordering::Relaxed),
        }
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let pool = self.shared.pool.clone();
            let subscriber = self.subscriber.clone();
            rt.spawn(async move {
                let _ = subscriber.quit().await;
                let _ = pool.quit().await;
            });
        }
    }
}

/// Fred's error as a broker error: connection trouble is `Unavailable`.
fn unavailable(err: FredError) -> BrokerError {
    let transient = matches!(
        err.kind(),
        ErrorKind::IO
            | ErrorKind::Timeout
            | ErrorKind::Canceled
            | ErrorKind::Backpressure
            | ErrorKind::Routing
            | ErrorKind::Cluster
            | ErrorKind::Sentinel
    ) || [
        "LOADING",
        "MASTERDOWN",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "READONLY",
    ]
    .iter()
    .any(|p| err.details().starts_with(p));
    if transient {
        BrokerError::Unavailable(err.to_string())
    } else {
        BrokerError::Other(err.to_string())
    }
}

fn parse_id(id: &str) -> Result<Position, BrokerError> {
    id.parse()
        .map_err(|_| BrokerError::Other(format!("bad stream id {id:?}")))
}

/// One stream entry: its position, its predecessor (if recorded) and its message.
struct Entry {
    position: Position,
    prev: Option<Position>,
    message: Result<Message, String>,
}

/// How many command connections each node keeps (see `Shared::pool`).
const COMMAND_CONNECTIONS: usize = 8;

impl Shared {
    /// The next command connection.
    fn client(&self) -> &Client {
        self.pool.next()
    }

    /// The channels every node listens on: changes and presence.
    fn channels(&self) -> Vec<String> {
        vec![self.channel.clone(), self.presence.channel.clone()]
    }

    fn stream_key(&self, route: &str) -> String {
        format!("{}stream:{route}", self.prefix)
    }

    fn ensure_connected(&self) -> Result<(), BrokerError> {
        if self.client().is_connected() {
            Ok(())
        } else {
            Err(BrokerError::Unavailable(
                "not connected to Redis (reconnecting)".into(),
            ))
        }
    }

    /// Entries of `route` after `after` (exclusive) up to `until` (inclusive), in batches.
    async fn range(
        &self,
        route: &str,
        after: Position,
        until: Option<Position>,
        max: usize,
    ) -> Result<Vec<Entry>, BrokerError> {
        let key = self.stream_key(route);
        let end = until.map_or_else(|| "+".to_owned(), |p| p.to_string());
        let mut out: Vec<Entry> = Vec::new();
        let mut cursor = after;
        loop {
            let batch: Vec<(String, HashMap<String, String>)> = self
                .client()
                .xrange_values(&key, format!("({cursor}"), end.as_str(), Some(BATCH))
                .await
                .map_err(unavailable)?;
            let n = batch.len() as u64;
            for (id, mut fields) in batch {
                let position = parse_id(&id)?;
                let prev = fields.get("p").and_then(|p| p.parse().ok());
                let message = match fields.remove("m") {
                    Some(m) => serde_json::from_str(&m).map_err(|e| e.to_string()),
                    None => Err("entry without field m".to_owned()),
                };
                cursor = position;
                out.push(Entry {
                    position,
                    prev,
                    message,
                });
            }
            // One past `max` tells the caller there is more than it wants.
            if n < BATCH || out.len() > max {
                return Ok(out);
            }
        }
    }

    async fn last_id(&self, route: &str) -> Result<Position, BrokerError> {
        let last: Vec<(String, HashMap<String, String>)> = self
            .client()
            .xrevrange_values(self.stream_key(route), "+", "-", Some(1))
            .await
            .map_err(unavailable)?;
        match last.first() {
            Some((id, _)) => parse_id(id),
            None => Ok(Position(0, 0)),
        }
    }

    /// Whether `entries` (read after `after`) are everything published after `after`.
    async fn chained(
        &self,
        route: &str,
        after: Position,
        entries: &[Entry],
    ) -> Result<bool, BrokerError> {
        if entries.is_empty() {
            // Nothing after `after`: complete if `after` is the latest entry (the last entry is
            // never trimmed), or the start (`0-0`) of a stream that has none.
            return Ok(self.last_id(route).await? == after);
        }
        // Each entry must name the one before it; the first must name `after` itself.
        let mut expect = after;
        for e in entries {
            if e.prev != Some(expect) {
                return Ok(false);
            }
            expect = e.position;
        }
        Ok(true)
    }
}

#[async_trait::async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, route: &str, message: Message) -> Result<(), BrokerError> {
        self.publish_many(route, vec![message]).await
    }

    /// One script call for all of `messages` (a batch is never split): all or none.
    async fn publish_many(&self, route: &str, messages: Vec<Message>) -> Result<(), BrokerError> {
        let s = &self.shared;
        s.ensure_connected()?;
        let json = messages
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BrokerError::Other(e.to_string()))?;
        let (done, result) = tokio::sync::oneshot::channel();
        s.jobs
            .send(batch::Job {
                route: route.to_owned(),
                json,
                done,
            })
            .map_err(|_| BrokerError::Unavailable("the publisher task stopped".into()))?;
        result
            .await
            .map_err(|_| BrokerError::Unavailable("the publisher task stopped".into()))?
    }

    fn messages(&self) -> mpsc::UnboundedReceiver<Envelope> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared.senders.lock().expect("senders lock").push(tx);
        rx
    }

    async fn history(&self, route: &str, after: Position) -> Result<History, BrokerError> {
        self.history_at_most(route, after, usize::MAX).await
    }

    async fn history_at_most(
        &self,
        route: &str,
        after: Position,
        max: usize,
    ) -> Result<History, BrokerError> {
        let s = &self.shared;
        s.ensure_connected()?;
        let entries = s.range(route, after, None, max).await?;
        if !s.chained(route, after, &entries).await? {
            return Ok(History::Gone);
        }
        if entries.len() > max {
            return Ok(History::TooLong);
        }
        let route: Arc<str> = Arc::from(route);
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            match e.message {
                Ok(message) => out.push(Envelope {
                    route: route.clone(),
                    position: e.position,
                    message: Arc::new(message),
                    published_ms: e.position.0,
                }),
                Err(err) => tracing::warn!(%route, position = %e.position, error = %err,
                    "unreadable message in the Redis stream; skipped"),
            }
        }
        Ok(History::Complete(out))
    }

    async fn head(&self, route: &str) -> Result<Position, BrokerError> {
        let s = &self.shared;
        s.ensure_connected()?;
        let head = s.last_id(route).await?;
        let mut tracks = s.tracks.lock().expect("tracks lock");
        let route: Arc<str> = match tracks.get_key_value(route) {
            Some((k, _)) => k.clone(),
            None => Arc::from(route),
        };
        let track = tracks.entry(route).or_default();
        if track.delivered.is_none() {
            track.joined_at = Some(track.joined_at.map_or(head, |f| f.min(head)));
        }
        Ok(head)
    }

    async fn healthy(&self) -> bool {
        let s = &self.shared;
        if !s.client().is_connected() || !self.subscriber.is_connected() {
            return false;
        }
        s.client().ping::<String>(None).await.is_ok()
    }

    async fn presence_join(
        &self,
        route: &str,
        key: &PresenceKey,
        member: &Member,
        max_members: usize,
    ) -> Result<JoinOutcome, BrokerError> {
        self.shared
            .presence_join(route, key, member, max_members)
            .await
    }

    async fn presence_leave(
        &self,
        route: &str,
        key: &PresenceKey,
        conn: &str,
    ) -> Result<(), BrokerError> {
        self.shared.presence_leave(route, key, conn).await
    }

    async fn presence_members(
        &self,
        route: &str,
        key: &PresenceKey,
    ) -> Result<Snapshot, BrokerError> {
        self.shared.presence_members(route, key).await
    }

    fn presence_diffs(&self) -> mpsc::UnboundedReceiver<PresenceSignal> {
        self.shared.presence.diffs()
    }

    async fn presence_retire(&self) -> Result<(), BrokerError> {
        self.shared.presence_retire().await
    }
}
