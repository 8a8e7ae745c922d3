//! The in-memory broker: one node, positions from a counter, history in a ring buffer.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use super::memory_presence::MemoryPresence;
use super::{Broker, BrokerError, Envelope, History, Message, Position};
use crate::presence::{JoinOutcome, Member, PresenceKey, PresenceSignal, Snapshot};

/// How much history each route keeps.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    /// The most messages kept per route (default 10,000).
    pub max_len: usize,
    /// How long a message is kept (default five minutes).
    pub max_age: Duration,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            max_len: 10_000,
            max_age: Duration::from_secs(300),
        }
    }
}

#[derive(Default)]
struct RouteLog {
    seq: u64,
    /// Oldest first; each entry with the time it was published.
    ring: VecDeque<(Instant, Envelope)>,
}

struct Inner {
    routes: HashMap<Arc<str>, RouteLog>,
    subscribers: Vec<mpsc::UnboundedSender<Envelope>>,
}

/// A broker for a single process. Positions are `<epoch>-<n>`, where the epoch is fixed when
/// the broker starts, so positions from an earlier run are recognised as unrecoverable.
pub struct MemoryBroker {
    epoch: u64,
    limits: HistoryLimits,
    inner: Mutex<Inner>,
    presence: MemoryPresence,
}

impl MemoryBroker {
    /// A broker with the default [`HistoryLimits`].
    pub fn new() -> Self {
        Self::with_history(HistoryLimits::default())
    }

    /// A broker keeping `limits` of history for each route.
    pub fn with_history(limits: HistoryLimits) -> Self {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        MemoryBroker {
            epoch,
            limits,
            inner: Mutex::new(Inner {
                routes: HashMap::new(),
                subscribers: Vec::new(),
            }),
            presence: MemoryPresence::default(),
        }
    }

    fn trim(&self, log: &mut RouteLog, now: Instant) {
        while log.ring.len() > self.limits.max_len
            || log
                .ring
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > self.limits.max_age)
        {
            log.ring.pop_front();
        }
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, route: &str, message: Message) -> Result<(), BrokerError> {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("broker lock");
        let route: Arc<str> = match inner.routes.get_key_value(route) {
            Some((k, _)) => k.clone(),
            None => Arc::from(route),
        };
        let log = inner.routes.entry(route.clone()).or_default();
        log.seq += 1;
        let envelope = Envelope {
            route,
            position: Position(self.epoch, log.seq),
            message: Arc::new(message),
            published_ms: crate::metrics::unix_ms(),
        };
        log.ring.push_back((now, envelope.clone()));
        self.trim(log, now);
        // Sending under the lock keeps each route's order identical for every receiver.
        inner
            .subscribers
            .retain(|tx| tx.send(envelope.clone()).is_ok());
        Ok(())
    }

    fn messages(&self) -> mpsc::UnboundedReceiver<Envelope> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner.lock().expect("broker lock").subscribers.push(tx);
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
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("broker lock");
        if after.0 != self.epoch {
            return Ok(History::Gone);
        }
        let Some(log) = inner.routes.get_mut(route) else {
            // Nothing was ever published here: only the start position is known.
            return Ok(if after.1 == 0 {
                History::Complete(Vec::new())
            } else {
                History::Gone
            });
        };
        self.trim(log, now);
        if after.1 > log.seq {
            return Ok(History::Gone);
        }
        let oldest_kept = log.ring.front().map_or(log.seq + 1, |(_, e)| e.position.1);
        // Complete only if the ring still holds the message right after `after`.
        if after.1 + 1 < oldest_kept {
            return Ok(History::Gone);
        }
        let missed = log.ring.iter().filter(|(_, e)| e.position > after);
        if missed.clone().nth(max).is_some() {
            return Ok(History::TooLong);
        }
        Ok(History::Complete(missed.map(|(_, e)| e.clone()).collect()))
    }

    async fn head(&self, route: &str) -> Result<Position, BrokerError> {
        let inner = self.inner.lock().expect("broker lock");
        Ok(Position(
            self.epoch,
            inner.routes.get(route).map_or(0, |log| log.seq),
        ))
    }

    async fn presence_join(
        &self,
        route: &str,
        key: &PresenceKey,
        member: &Member,
        max_members: usize,
    ) -> Result<JoinOutcome, BrokerError> {
        Ok(self.presence.join(route, key, member, max_members))
    }

    async fn presence_leave(
        &self,
        route: &str,
        key: &PresenceKey,
        conn: &str,
    ) -> Result<(), BrokerError> {
        self.presence.leave(route, key, conn);
        Ok(())
    }

    async fn presence_members(
        &self,
        route: &str,
        key: &PresenceKey,
    ) -> Result<Snapshot, BrokerError> {
        Ok(self.presence.members(route, key))
    }

    fn presence_diffs(&self) -> mpsc::UnboundedReceiver<PresenceSignal> {
        self.presence.diffs()
    }
}
