//! The server's bounds against heavy or abusive clients (`docs/limits.md`), and the seat each
//! connection takes among the server's connections.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The server's bounds against heavy or abusive clients, each configurable; `docs/limits.md`
/// lists them with their defaults and what a client sees at each.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open WebSocket connections the server accepts; more are refused with HTTP 503.
    pub max_connections: usize,
    /// Largest inbound frame in bytes; larger closes the socket with 1009.
    pub max_frame: usize,
    /// Requests one connection may have in flight; more answer `rate_limited`.
    pub max_in_flight: usize,
    /// Subscriptions one connection may hold; more answer `rate_limited`.
    pub max_subscriptions: usize,
    /// Frames queued for one connection (replies and events) before it counts as behind:
    /// its events are then merged, and its requests wait until it reads.
    pub max_queued: usize,
    /// The same budget in bytes.
    pub max_queued_bytes: usize,
    /// How long a connection may stay behind (over its budget, or in a socket write) before
    /// it is closed with 4008.
    pub slow_consumer_grace: Duration,
    /// The size of the filters clients send (`in` lists, comparisons, nesting).
    pub filter: crate::filter::FilterLimits,
    /// Missed events a `subscribe` with `since` may replay; a longer gap answers
    /// `recovered: false` (the client reloads instead).
    pub max_replay: usize,
    /// Presence keys one connection may join or watch; more answer `rate_limited`.
    pub max_presence_keys: usize,
    /// Presence state changes one connection may make per second (and in a burst); faster
    /// ones are coalesced per key, the last state winning.
    pub presence_updates_per_second: u32,
    /// How often the server pings each connection. One that sends nothing, not even a
    /// pong, for two intervals is dropped (a half-open peer), leaving its presence.
    pub ping_interval: Duration,
    /// How long a connection may outlive its token's expiry without a new token
    /// (`dragon.auth`) before it is closed with 4003.
    pub token_grace: Duration,
    /// Close a connection that sends no request for this long (4009; off by default).
    pub idle_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 50_000,
            max_frame: 64 * 1024,
            max_in_flight: 64,
            max_subscriptions: 1000,
            max_queued: 4096,
            max_queued_bytes: 4 * 1024 * 1024,
            slow_consumer_grace: crate::hub::SLOW_CONSUMER_GRACE,
            filter: crate::filter::FilterLimits::default(),
            max_replay: 1000,
            max_presence_keys: 1000,
            presence_updates_per_second: 10,
            ping_interval: Duration::from_secs(15),
            token_grace: Duration::from_secs(30),
            idle_timeout: None,
        }
    }
}

/// A place among the server's connections ([`Limits::max_connections`]), held from the
/// upgrade request until the connection has ended.
pub(super) struct Seat {
    inner: Arc<super::Inner>,
}

impl Seat {
    pub(super) fn take(dragon: &super::Dragon) -> Option<Seat> {
        let inner = &dragon.inner;
        if inner.live.fetch_add(1, Ordering::AcqRel) >= inner.limits.max_connections {
            Seat::leave(inner);
            return None;
        }
        Some(Seat {
            inner: inner.clone(),
        })
    }

    fn leave(inner: &super::Inner) {
        if inner.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            inner.all_closed.notify_waiters();
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        Seat::leave(&self.inner);
    }
}
