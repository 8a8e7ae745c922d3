//! The receive side: the channel's messages handed to the hub exactly once, in stream order,
//! with gaps repaired from the streams (see the module docs of `broker::redis`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, PubsubInterface};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::{Entry, Shared};
use crate::broker::{BrokerError, Envelope, Message, Position};

/// What the receive loop knows about one route.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Track {
    /// The last position handed to the hub.
    pub(super) delivered: Option<Position>,
    /// With nothing delivered yet: the earliest head reported (where subscriptions joined).
    pub(super) joined_at: Option<Position>,
}

impl Track {
    /// Where the route's stream continues for this node: after what it delivered, or
    /// after where its first subscription joined. A gap check or a replay starts here.
    fn base(&self) -> Option<Position> {
        self.delivered.or(self.joined_at)
    }
}

/// The payload on the events channel: one message (what [`super::PUBLISH_LUA`] publishes)
/// or a run of consecutive ones (what [`super::batch::PUBLISH_BATCH_LUA`] publishes).
#[derive(Deserialize)]
struct Wire {
    route: String,
    #[serde(default)]
    prev: Option<String>,
    #[serde(default)]
    position: Option<String>,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    positions: Vec<String>,
    #[serde(default)]
    messages: Vec<Message>,
}

impl Wire {
    /// The entries it carries, in stream order, each with the position before it; `None`
    /// if it is malformed (no message, a bad position, positions and messages that do not
    /// pair up).
    fn entries(self) -> Option<Vec<Entry>> {
        let mut prev: Option<Position> = self.prev.as_deref().and_then(|p| p.parse().ok());
        let (positions, messages) = match (self.position, self.message) {
            (Some(position), Some(message)) => (vec![position], vec![message]),
            (None, None) if self.positions.len() == self.messages.len() => {
                (self.positions, self.messages)
            }
            _ => return None,
        };
        positions
            .iter()
            .zip(messages)
            .map(|(position, message)| {
                let position: Position = position.parse().ok()?;
                let entry = Entry {
                    position,
                    prev,
                    message: Ok(message),
                };
                prev = Some(position);
                Some(entry)
            })
            .collect()
    }
}

impl Shared {
    fn deliver(&self, route: &Arc<str>, position: Position, message: Message) {
        self.send_all(std::iter::once(Self::envelope(route, position, message)));
    }

    fn envelope(route: &Arc<str>, position: Position, message: Message) -> Envelope {
        Envelope {
            route: route.clone(),
            position,
            message: Arc::new(message),
            // A stream entry id starts with Redis's clock at XADD: the publish time.
            published_ms: position.0,
        }
    }

    /// Hands envelopes to every hub, under one lock for the whole run.
    fn send_all(&self, envs: impl IntoIterator<Item = Envelope>) {
        let mut senders = self.senders.lock().expect("senders lock");
        for env in envs {
            senders.retain(|tx| tx.send(env.clone()).is_ok());
        }
    }

    /// Hands `entries` (ascending) over, skipping what was delivered already: the route's
    /// track is read and moved once per run, and the run is sent under one lock.
    fn deliver_entries(&self, route: &Arc<str>, entries: Vec<Entry>, replayed: bool) {
        let fresh: Vec<Entry> = {
            let mut tracks = self.tracks.lock().expect("tracks lock");
            let track = tracks.entry(route.clone()).or_default();
            let fresh: Vec<Entry> = entries
                .into_iter()
                .filter(|e| track.delivered.is_none_or(|d| e.position > d))
                .collect();
            if let Some(last) = fresh.last() {
                track.delivered = Some(last.position);
            }
            fresh
        };
        let mut readable = 0u64;
        let envs = fresh.into_iter().filter_map(|e| match e.message {
            Ok(message) => {
                readable += 1;
                Some(Self::envelope(route, e.position, message))
            }
            Err(err) => {
                tracing::warn!(%route, position = %e.position, error = %err,
                    "unreadable message in the Redis stream; skipped");
                None
            }
        });
        self.send_all(envs);
        if replayed {
            self.stats.replayed.fetch_add(readable, Ordering::Relaxed);
        }
    }

    /// Reads and delivers everything after `base` on `route` (up to `until`).
    async fn fill(
        &self,
        route: &Arc<str>,
        base: Position,
        until: Option<Position>,
    ) -> Result<(), BrokerError> {
        let entries = self.range(route, base, until, usize::MAX).await?;
        if !entries.is_empty() && !self.chained(route, base, &entries).await? {
            self.stats.lost.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%route, after = %base,
                "messages were lost: the Redis history was trimmed past this node's gap");
            self.deliver_entries(route, entries, true);
            // Subscribers must reload: tell them, after what could be replayed.
            self.deliver(route, base, Message::Gap);
            return Ok(());
        }
        self.deliver_entries(route, entries, true);
        Ok(())
    }

    /// Replays every tracked route from its last delivered position. True when all done.
    async fn catch_up(&self) -> bool {
        let routes: Vec<(Arc<str>, Position)> = self
            .tracks
            .lock()
            .expect("tracks lock")
            .iter()
            .filter_map(|(r, t)| t.base().map(|b| (r.clone(), b)))
            .collect();
        for (route, base) in routes {
            if let Err(err) = self.fill(&route, base, None).await {
                tracing::warn!(%route, error = %err, "replay from Redis failed; will retry");
                return false;
            }
        }
        true
    }

    /// A live payload from the channel (one message or a run). False if a gap could not be
    /// filled (replay later).
    async fn on_live(&self, payload: &str) -> bool {
        let mut wire: Wire = match serde_json::from_str(payload) {
            Ok(w) => w,
            Err(err) => {
                tracing::warn!(error = %err, "unreadable message on the Dragon channel; skipped");
                return true;
            }
        };
        let route_name = std::mem::take(&mut wire.route);
        let Some(mut entries) = wire.entries() else {
            tracing::warn!(route = %route_name, "malformed payload on the Dragon channel; skipped");
            return true;
        };
        let (route, track) = {
            let mut tracks = self.tracks.lock().expect("tracks lock");
            let route: Arc<str> = match tracks.get_key_value(route_name.as_str()) {
                Some((k, _)) => k.clone(),
                None => Arc::from(route_name.as_str()),
            };
            let track = *tracks.entry(route.clone()).or_default();
            (route, track)
        };
        // Entries at or before the last position handed over were replayed from the stream.
        entries.retain(|e| track.delivered.is_none_or(|d| e.position > d));
        let Some(first) = entries.first() else {
            return true;
        };
        if let (Some(base), Some(prev)) = (track.base(), first.prev)
            && prev > base
        {
            // Something between what this node delivered and these messages never arrived.
            let until = entries.last().map(|e| e.position);
            return match self.fill(&route, base, until).await {
                Ok(()) => true,
                Err(err) => {
                    tracing::warn!(%route, error = %err, "could not read a gap from Redis");
                    false
                }
            };
        }
        self.deliver_entries(&route, entries, false);
        true
    }
}

/// Receives the channel, forever: live messages, lags and reconnects (see the module docs).
pub(super) async fn receive_loop(
    shared: Arc<Shared>,
    subscriber: SubscriberClient,
    mut messages: tokio::sync::broadcast::Receiver<fred::types::Message>,
    mut reconnects: tokio::sync::broadcast::Receiver<fred::prelude::Server>,
) {
    let mut replay_owed = false;
    let mut retry = tokio::time::interval(Duration::from_millis(500));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            event = reconnects.recv() => match event {
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    // Make sure the channel is subscribed again before reading the streams, so
                    // everything is either in what we read or arrives live afterwards.
                    replay_owed = true;
                    match subscriber.subscribe(shared.channels()).await {
                        Ok(()) => {
                            shared.presence.resync();
                            replay_owed = !shared.catch_up().await;
                        }
                        Err(err) => tracing::warn!(error = %err, "re-subscribing failed; will retry"),
                    }
                }
                Err(RecvError::Closed) => break,
            },
            received = messages.recv() => match received {
                Ok(msg) => {
                    if msg.channel == shared.presence.channel.as_str() {
                        match msg.value.as_str() {
                            Some(payload) => shared.presence.on_message(&payload),
                            None => tracing::warn!("non-text message on the presence channel; skipped"),
                        }
                        continue;
                    }
                    if msg.channel != shared.channel.as_str() {
                        continue;
                    }
                    if replay_owed {
                        replay_owed = !shared.catch_up().await;
                    }
                    let Some(payload) = msg.value.as_str() else {
                        tracing::warn!("non-text message on the Dragon channel; skipped");
                        continue;
                    };
                    if !shared.on_live(&payload).await {
                        replay_owed = true;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    shared.stats.lagged.fetch_add(1, Ordering::Relaxed);
                    shared.presence.resync();
                    tracing::warn!(missed = n, "Redis receive buffer overflowed; replaying from the streams");
                    replay_owed = !shared.catch_up().await;
                }
                Err(RecvError::Closed) => break,
            },
            _ = retry.tick(), if replay_owed => {
                if subscriber.is_connected() && shared.client().is_connected() {
                    match subscriber.subscribe(shared.channels()).await {
                        Ok(()) => replay_owed = !shared.catch_up().await,
                        Err(err) => tracing::debug!(error = %err, "still cannot subscribe"),
                    }
                }
            }
        }
    }
    tracing::debug!("Redis receive loop ended");
}
