//! The hub: this node's live subscriptions, indexed, and the fan-out of every broker message.
//!
//! A subscription whose filter pins a field to a value (`list_id = 3`, or `list_id in [..]`)
//! is found by looking that value up; only filters without such an equality are scanned.
//! Each message is matched under its route's lock, in the broker's order, so every
//! subscriber of a route sees the same order, and a new subscription can be joined to the
//! stream at an exact position (see [`Hub::subscribe`]).

mod coalesce;
mod dispatch;
mod frame;
mod outbox;
mod route;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use serde_json::Value;

use crate::broker::{Broker, Envelope, History, Message, Position};
use crate::error::Error;
use crate::filter::Filter;
use crate::metrics::Metrics;
use crate::presence::Registry;

use frame::{MessageFrames, classify};
pub(crate) use frame::{resync_frame, revoked_frame};
pub(crate) use outbox::Stop;
pub use outbox::{Budget, Outbound, Outbox, Receiver, SLOW_CONSUMER_GRACE};
use route::RouteState;

/// A small budget for unit tests.
#[cfg(test)]
pub(crate) fn test_budget() -> Budget {
    Budget {
        frames: 100,
        bytes: 1 << 20,
        grace: SLOW_CONSUMER_GRACE,
    }
}

/// The most dispatch workers a hub starts (one per core up to this).
const MAX_WORKERS: usize = 16;
/// The most messages dispatched together. A burst taken in one run reaches each connection
/// as one batch (one socket write); at 1,024 a burst of 2,000 changes over 500 filters cost
/// 9% more writes. A run holds its route's lock while it is matched (a few ms at this size).
const RUN: usize = 4096;

/// A subscription's key in this node's hub, unique for the hub's life. Not the client's
/// subscription id (`s1`, chosen per connection and reused across connections): the hub
/// keys by this, a connection maps its ids to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubKey(u64);

/// Where a new subscription joins its route's stream.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// From now on.
    Now,
    /// Right after this position: missed messages are replayed first.
    After(Position),
    /// After a position this node cannot read (another run's, or garbage): not recoverable.
    Unknown,
}

/// What joining the stream gave.
#[derive(Debug, Clone)]
pub struct Joined {
    pub key: SubKey,
    /// The position the subscription is current from.
    pub position: Position,
    /// With [`Start::After`]: whether every missed message could be replayed.
    pub recovered: bool,
}

/// Frames messages a joining subscription missed, for its connection alone.
struct Replayer<'a> {
    outbox: &'a Arc<Outbox>,
    route: &'a str,
    id: &'a Arc<str>,
    filter: &'a Filter,
}

impl Replayer<'_> {
    /// Queues the frames of `envs` this subscription should see, once per message id.
    fn send(&self, envs: &[Envelope], seen: &mut HashSet<Arc<str>>) {
        for env in envs {
            if let Some(id) = env.message.id()
                && !seen.insert(id.clone())
            {
                continue; // published twice: once is enough
            }
            if let Message::Gap = *env.message {
                let frame = frame::resync_frame(self.route, std::slice::from_ref(self.id));
                self.outbox.send(Outbound::Text(frame));
                continue;
            }
            let Some(event_kind) = classify(self.filter, &env.message) else {
                continue;
            };
            let mut frames = MessageFrames::new(env);
            if frames.worth_sending(event_kind) {
                let frame = frames.frame(event_kind, std::slice::from_ref(self.id));
                self.outbox.send(Outbound::Text(frame));
            }
        }
    }
}

/// One dispatch worker's share of the node's subscriptions: those of its connections.
#[derive(Default)]
struct Shard {
    routes: RwLock<HashMap<Arc<str>, Arc<Mutex<RouteState>>>>,
}

impl Shard {
    fn route(&self, route: &str) -> Arc<Mutex<RouteState>> {
        if let Some(state) = self.routes.read().expect("routes lock").get(route) {
            return state.clone();
        }
        self.routes
            .write()
            .expect("routes lock")
            .entry(Arc::from(route))
            .or_default()
            .clone()
    }
}

/// This node's subscriptions and fan-out. Connections are spread over dispatch workers
/// (shards), one per core: each worker matches every message against its own connections'
/// subscriptions, in the broker's order, so fan-out uses every core and each connection
/// still sees one order.
pub struct Hub {
    broker: Arc<dyn Broker>,
    presence: Arc<Registry>,
    metrics: Arc<Metrics>,
    shards: Vec<Shard>,
    next_key: AtomicU64,
    /// This node's connections, for revocation.
    conns: Mutex<HashMap<crate::router::ConnId, std::sync::Weak<crate::router::Conn>>>,
}

impl Hub {
    /// A hub fed by `broker`'s message stream, with a dispatch worker per core this
    /// process may use.
    pub fn start(broker: Arc<dyn Broker>) -> Arc<Hub> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_workers(broker, cores.min(MAX_WORKERS))
    }

    /// A hub with `workers` dispatch workers (at least one).
    pub fn with_workers(broker: Arc<dyn Broker>, workers: usize) -> Arc<Hub> {
        let hub = Arc::new(Hub {
            broker: broker.clone(),
            presence: Registry::start(broker.clone()),
            metrics: Arc::default(),
            shards: (0..workers.max(1)).map(|_| Shard::default()).collect(),
            next_key: AtomicU64::new(1),
            conns: Mutex::default(),
        });
        let mut messages = broker.messages();
        let weak = Arc::downgrade(&hub);
        // Control messages are handled here; the others go to every worker (one worker
        // dispatches in this task itself, without a hop).
        let mut workers: Vec<tokio::sync::mpsc::UnboundedSender<Arc<[Envelope]>>> = Vec::new();
        for shard in 1..hub.shards.len() {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Arc<[Envelope]>>();
            workers.push(tx);
            let weak = weak.clone();
            tokio::spawn(async move {
                while let Some(run) = rx.recv().await {
                    let Some(hub) = weak.upgrade() else { break };
                    hub.dispatch_all(shard, &run);
                }
            });
        }
        tokio::spawn(async move {
            // What arrived while the last messages were dispatched is taken at once: runs
            // of one route are fanned out together (see `dispatch.rs`).
            let mut ready: Vec<Envelope> = Vec::with_capacity(RUN);
            while messages.recv_many(&mut ready, RUN).await > 0 {
                // One turn for the tasks that are ready (publishers among them) first: what
                // they publish joins this run.
                tokio::task::yield_now().await;
                while ready.len() < RUN {
                    match messages.try_recv() {
                        Ok(env) => ready.push(env),
                        Err(_) => break,
                    }
                }
                let Some(hub) = weak.upgrade() else { break };
                // Control messages split the runs, each handled in its place.
                let control = |e: &Envelope| &*e.route == crate::server::CONTROL_ROUTE;
                for part in ready.split_inclusive(control) {
                    let (run, ctl) = match part.split_last() {
                        Some((last, run)) if control(last) => (run, Some(last)),
                        _ => (part, None),
                    };
                    if !run.is_empty() {
                        if !workers.is_empty() {
                            let shared: Arc<[Envelope]> = run.into();
                            for worker in &workers {
                                let _ = worker.send(shared.clone());
                            }
                        }
                        hub.dispatch_all(0, run);
                    }
                    if let Some(env) = ctl {
                        hub.control(env);
                    }
                }
                ready.clear();
            }
        });
        hub
    }

    /// The shard of the connection writing to `outbox`.
    fn shard(&self, outbox: &Outbox) -> &Shard {
        &self.shards[outbox.id() as usize % self.shards.len()]
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// This node's presence views.
    pub fn presence(&self) -> &Arc<Registry> {
        &self.presence
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The position a read made now by the connection of `outbox` is current at: the last
    /// message dispatched to its connections on `route`, or the broker's head if none was.
    pub async fn position(&self, outbox: &Outbox, route: &str) -> Result<Position, Error> {
        let state = self.shard(outbox).route(route);
        let known = state.lock().expect("route lock").position;
        match known {
            Some(p) => Ok(p),
            None => Ok(self.broker.head(route).await?),
        }
    }

    /// Waits (at most `timeout`) until the connection of `outbox` has been dispatched
    /// `route`'s change-log version `version`: the change is then on its way to every
    /// subscriber of it. False on timeout (the relay is slow or stuck; the change stays in
    /// the log and is published later).
    pub(crate) async fn relayed(
        &self,
        outbox: &Outbox,
        route: &str,
        version: u64,
        timeout: Duration,
    ) -> bool {
        let mut seen = self
            .shard(outbox)
            .route(route)
            .lock()
            .expect("route lock")
            .version
            .subscribe();
        tokio::time::timeout(timeout, seen.wait_for(|v| *v >= version))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub(crate) fn register(&self, conn: &Arc<crate::router::Conn>) {
        self.conns
            .lock()
            .expect("conns lock")
            .insert(conn.id.clone(), Arc::downgrade(conn));
    }

    pub(crate) fn unregister(&self, conn: &str) {
        self.conns.lock().expect("conns lock").remove(conn);
    }

    /// The filter of subscription `key` on `route`.
    pub(crate) fn filter_of(&self, outbox: &Outbox, route: &str, key: SubKey) -> Option<Filter> {
        let state = self.shard(outbox).route(route);
        let st = state.lock().expect("route lock");
        st.filter_of(key).cloned()
    }

    /// Delivers a direct event (`{"conn", "event", "data"}`) if its connection is here.
    fn send_to(&self, direct: &Value) {
        let Some(id) = direct["conn"].as_str() else {
            return;
        };
        let conn = self
            .conns
            .lock()
            .expect("conns lock")
            .get(id)
            .and_then(std::sync::Weak::upgrade);
        if let Some(conn) = conn {
            let event = direct["event"].as_str().unwrap_or_default();
            let frame = crate::protocol::Event::named(event).data(direct["data"].clone());
            conn.outbox
                .send(Outbound::Text(Utf8Bytes::from(frame.to_json())));
        }
    }

    /// Carries out a revocation (see [`crate::auth::Revoke`]) on this node.
    fn revoke(&self, revoke: &crate::auth::Revoke) {
        use crate::auth::Revoke;
        let conns: Vec<Arc<crate::router::Conn>> = self
            .conns
            .lock()
            .expect("conns lock")
            .values()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        for conn in conns {
            match revoke {
                Revoke::User { field, value } if conn.user_matches(field, value) => {
                    conn.revoke(self, "user")
                }
                Revoke::Connection { conn: id } if *conn.id == **id => {
                    conn.revoke(self, "connection")
                }
                Revoke::Object { route, id } => {
                    let names_it = |f: &Filter| f.pins("id", id);
                    conn.end_where(self, Some(route), names_it, |r, subs| {
                        revoked_frame(r, subs, "object")
                    });
                    conn.end_where(self, Some(route), |_| true, resync_frame);
                }
                _ => {}
            }
        }
    }

    /// Carries out a control message between nodes (revocations, direct events).
    fn control(&self, env: &Envelope) {
        match &*env.message {
            Message::Custom { event, data, .. } if event == "revoke" => {
                match serde_json::from_value(data.clone()) {
                    Ok(revoke) => self.revoke(&revoke),
                    Err(err) => tracing::warn!(error = %err, "an unreadable revocation"),
                }
            }
            Message::Custom { event, data, .. } if event == "send" => self.send_to(data),
            _ => {}
        }
    }

    /// Adds a subscription and joins it to the route's stream at `start`, with no gap and
    /// no duplicate between replayed and live messages. `reply` is queued first, given what
    /// the join found; replayed events follow it, then live ones. At most `max_replay`
    /// missed messages are replayed; a longer gap is not recovered (the client reloads).
    /// The replay is read and framed outside the route's lock, so it never holds up the
    /// route's live events for other subscribers.
    #[allow(clippy::too_many_arguments)]
    pub async fn subscribe(
        &self,
        outbox: &Arc<Outbox>,
        key: SubKey,
        route: &str,
        id: Arc<str>,
        filter: Filter,
        start: Start,
        max_replay: usize,
        reply: impl FnOnce(&Joined) -> Utf8Bytes,
    ) -> Result<Joined, Error> {
        let state = self.shard(outbox).route(route);
        let live_from = {
            let mut st = state.lock().expect("route lock");
            st.insert(key, outbox.clone(), id.clone(), filter.clone());
            st.position
        };
        let (position, recovered, replay) =
            match self.join(route, live_from, start, max_replay).await {
                Ok(j) => j,
                Err(err) => {
                    state.lock().expect("route lock").remove(key);
                    return Err(err);
                }
            };
        let joined = Joined {
            key,
            position,
            recovered,
        };
        // Live messages for this subscription wait in its join buffer meanwhile, so the
        // reply and the replay go out first whatever the lock lets through.
        let mut reply = Some(Outbound::Text(reply(&joined)));
        let mut send_reply = || {
            if let Some(reply) = reply.take() {
                outbox.send(reply);
            }
        };
        let mut replayed = HashSet::new();
        let sender = Replayer {
            outbox,
            route,
            id: &id,
            filter: &filter,
        };
        if !replay.is_empty() {
            send_reply();
            sender.send(&replay, &mut replayed);
        }
        // Then what was dispatched since the subscription was added, of which only what lies
        // past `position` is new to the client: in batches outside the lock while it keeps
        // coming, the last (small) one under it, after which live messages flow directly.
        // Without a replay the reply waits for that last step: sent under the route's lock
        // with the switch to live, so a client holding the reply never gets an event in a
        // frame of its own for this subscription while its other subscriptions share one.
        const LAST_BATCH: usize = 32;
        loop {
            let mut st = state.lock().expect("route lock");
            let Some(buffered) = st.take_buffer(key) else {
                // Ended meanwhile (unsubscribed, revoked, its connection closed).
                send_reply();
                return Ok(joined);
            };
            let fresh: Vec<Envelope> = buffered
                .into_iter()
                .filter(|e| e.position > position)
                .collect();
            if fresh.len() <= LAST_BATCH {
                send_reply();
                st.joined(key);
                sender.send(&fresh, &mut replayed);
                return Ok(joined);
            }
            drop(st);
            send_reply();
            sender.send(&fresh, &mut replayed);
        }
    }

    /// Finds where a joining subscription stands: its position, whether it recovered, and
    /// the history to replay up to `live_from` (later messages arrive through the join buffer).
    async fn join(
        &self,
        route: &str,
        live_from: Option<Position>,
        start: Start,
        max_replay: usize,
    ) -> Result<(Position, bool, Vec<Envelope>), Error> {
        let live_from = match live_from {
            Some(p) => p,
            None => self.broker.head(route).await?,
        };
        match start {
            Start::Now => Ok((live_from, true, Vec::new())),
            Start::Unknown => Ok((live_from, false, Vec::new())),
            Start::After(since) if since == live_from => Ok((live_from, true, Vec::new())),
            // Ahead of this node is fine if the broker knows the position (another node
            // dispatched further); a position it does not know must not become the join
            // point, or live events before it would be skipped.
            Start::After(since) => {
                match self
                    .broker
                    .history_at_most(route, since, max_replay)
                    .await?
                {
                    History::Complete(_) if since > live_from => Ok((since, true, Vec::new())),
                    History::Complete(events) => {
                        let replay = events
                            .into_iter()
                            .filter(|e| e.position <= live_from)
                            .collect();
                        Ok((live_from, true, replay))
                    }
                    History::TooLong => {
                        tracing::debug!(%route, max_replay, "a replay too long to send: not recovered");
                        Ok((live_from, false, Vec::new()))
                    }
                    History::Gone => Ok((live_from, false, Vec::new())),
                }
            }
        }
    }

    /// A new subscription key, for [`Hub::subscribe`].
    pub(crate) fn next_key(&self) -> SubKey {
        SubKey(self.next_key.fetch_add(1, Ordering::Relaxed))
    }

    /// Removes a subscription; false if it was not there.
    pub fn unsubscribe(&self, outbox: &Outbox, route: &str, key: SubKey) -> bool {
        self.shard(outbox)
            .route(route)
            .lock()
            .expect("route lock")
            .remove(key)
    }

    /// How many subscriptions this node holds (for metrics and tests).
    pub fn subscription_count(&self) -> usize {
        let count = |shard: &Shard| -> usize {
            shard
                .routes
                .read()
                .expect("routes lock")
                .values()
                .map(|s| s.lock().expect("route lock").len())
                .sum()
        };
        self.shards.iter().map(count).sum()
    }
}

#[cfg(test)]
mod tests;
