//! A connection's outbound queue, shared by its request tasks and the hub.
//!
//! The queue has a budget in frames and in bytes. Replies always queue (each request is
//! answered), but while the queue is over budget the connection reads no new request, so a
//! client that does not read cannot make the server hold more than the budget plus its
//! requests in flight. Events queue only while the queue is within budget; past it the
//! connection is a slow consumer: its events are merged per object (coalescing: the latest
//! state, see `coalesce.rs`), and those that cannot be merged (custom events, too many
//! objects) mark their subscriptions for a `resync` frame. Once the writer has caught up it
//! sends what is owed, so nothing is dropped silently. A connection behind for longer than
//! the grace is closed with 4008.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{Notify, mpsc};

use super::coalesce::Coalesced;
use super::frame::{Slot, resync_frame};
use crate::broker::Envelope;

/// What the writer sends next.
#[derive(Debug)]
pub enum Outbound {
    Text(Utf8Bytes),
    /// A WebSocket ping (the server checks that the peer is still there).
    Ping,
    /// Boxed, so a queue slot is no larger than a text frame's (every connection's queue
    /// allocates a block of slots up front).
    Close(Box<(crate::protocol::CloseCode, String)>),
    /// Event frames sent together, shared with other connections (see [`Frames`]).
    Batch(Arc<Frames>),
}

/// Event text frames queued as one item: a run of messages that one subscription matched,
/// built once and shared by every connection whose subscription has the same id and
/// filter. Counted against the budget frame by frame.
#[derive(Debug)]
pub(crate) struct Frames {
    frames: Vec<Utf8Bytes>,
    bytes: usize,
}

impl Frames {
    pub(crate) fn new(frames: Vec<Utf8Bytes>) -> Frames {
        let bytes = frames.iter().map(|f| f.len()).sum();
        Frames { frames, bytes }
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, Utf8Bytes> {
        self.frames.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.frames.len()
    }
}

impl Outbound {
    /// A close frame with `code` and `reason`.
    pub fn close(code: crate::protocol::CloseCode, reason: impl Into<String>) -> Outbound {
        Outbound::Close(Box::new((code, reason.into())))
    }
}

/// How long a connection may stay behind by default before it is closed with 4008.
pub const SLOW_CONSUMER_GRACE: Duration = Duration::from_secs(10);

/// What a slow consumer is owed once its queue drains.
#[derive(Default)]
struct Backlog {
    coalesced: Coalesced,
    resync: BTreeMap<Arc<str>, BTreeSet<Arc<str>>>,
    since: Option<Instant>,
}

impl Backlog {
    fn is_empty(&self) -> bool {
        self.coalesced.is_empty() && self.resync.is_empty()
    }
}

impl Outbound {
    /// What the item counts against the byte budget.
    fn cost(&self) -> usize {
        match self {
            Outbound::Text(t) => t.len(),
            Outbound::Ping => 2,
            Outbound::Close(close) => 4 + close.1.len(),
            Outbound::Batch(frames) => frames.bytes,
        }
    }

    /// How many frames the item is.
    fn count(&self) -> usize {
        match self {
            Outbound::Batch(frames) => frames.len(),
            _ => 1,
        }
    }

    /// Its text frames, in order (tests read queues with it).
    #[cfg(test)]
    pub(crate) fn texts(&self) -> Vec<Utf8Bytes> {
        match self {
            Outbound::Text(t) => vec![t.clone()],
            Outbound::Batch(frames) => frames.frames.clone(),
            _ => Vec::new(),
        }
    }
}

/// A one-way signal between a connection's reader and writer: raised once, awaited by the
/// other side. Two atomics and a `Notify` inside the outbox, where a watch channel would
/// allocate hundreds of bytes per connection.
#[derive(Default)]
pub struct Flag {
    raised: AtomicBool,
    notify: Notify,
}

impl Flag {
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Resolves once the flag is raised.
    pub async fn raised(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_raised() {
                return;
            }
            notified.await;
        }
    }
}

/// A connection's outbound budget (see [`crate::Limits`]).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub frames: usize,
    pub bytes: usize,
    /// How long the connection may stay over it.
    pub grace: Duration,
}

impl Budget {
    pub fn of(limits: &crate::Limits) -> Self {
        Budget {
            frames: limits.max_queued,
            bytes: limits.max_queued_bytes,
            grace: limits.slow_consumer_grace,
        }
    }
}

pub struct Outbox {
    id: u64,
    tx: mpsc::UnboundedSender<Outbound>,
    queued: AtomicUsize,
    bytes: AtomicUsize,
    budget: Budget,
    /// Wakes a reader waiting for the queue to come back within budget.
    drained: Notify,
    /// Set while anything is owed: new events then join the backlog, to keep their order.
    backlogged: AtomicBool,
    backlog: Mutex<Backlog>,
    /// Raised to make the writer give up on a consumer that cannot be helped.
    pub(crate) give_up: Flag,
    /// Raised by the reader when the socket is unusable (the writer stops without a close).
    pub(crate) socket_gone: Flag,
    /// Raised when the writer has ended (the reader stops too).
    pub(crate) writer_ended: Flag,
    /// The connection's id, once it has one.
    conn: std::sync::OnceLock<Arc<str>>,
}

impl Outbox {
    /// Names the connection this outbox writes to.
    pub(crate) fn set_conn(&self, conn: Arc<str>) {
        let _ = self.conn.set(conn);
    }

    /// The connection this outbox writes to.
    pub(crate) fn conn(&self) -> Option<&Arc<str>> {
        self.conn.get()
    }

    /// An outbox with `budget`.
    pub fn new(id: u64, budget: Budget) -> (Arc<Self>, mpsc::UnboundedReceiver<Outbound>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let outbox = Outbox {
            id,
            tx,
            queued: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            budget,
            drained: Notify::new(),
            backlogged: AtomicBool::new(false),
            backlog: Mutex::new(Backlog::default()),
            give_up: Flag::default(),
            socket_gone: Flag::default(),
            writer_ended: Flag::default(),
            conn: std::sync::OnceLock::new(),
        };
        (Arc::new(outbox), rx)
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queues a reply or control frame, whatever the queue length.
    pub fn send(&self, frame: Outbound) {
        let (count, cost) = (frame.count(), frame.cost());
        self.queued.fetch_add(count, Ordering::Relaxed);
        self.bytes.fetch_add(cost, Ordering::Relaxed);
        if self.tx.send(frame).is_err() {
            self.queued.fetch_sub(count, Ordering::Relaxed);
            self.bytes.fetch_sub(cost, Ordering::Relaxed);
        }
    }

    /// Whether the queue is over its budget in frames or bytes.
    pub fn over_budget(&self) -> bool {
        self.queued.load(Ordering::Relaxed) >= self.budget.frames
            || self.bytes.load(Ordering::Relaxed) >= self.budget.bytes
    }

    /// Waits until the queue is within budget; false if it stayed over it for the grace.
    pub async fn room(&self) -> bool {
        let deadline = tokio::time::Instant::now() + self.budget.grace;
        loop {
            let drained = self.drained.notified();
            if !self.over_budget() {
                return true;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                return !self.over_budget();
            }
        }
    }

    /// Gives up on the connection: the writer closes it with 4008.
    pub fn kill(&self) {
        self.give_up.raise();
    }

    /// Whether [`Outbox::kill`] was called.
    pub fn killed(&self) -> bool {
        self.give_up.is_raised()
    }

    /// How long the connection may stay behind.
    pub fn grace(&self) -> Duration {
        self.budget.grace
    }

    /// Queues an event frame (kind `slot` of `env`, for `subs`), or, for a slow consumer,
    /// merges it into the backlog. Returns whether it was queued as is.
    pub(crate) fn send_event(
        &self,
        frame: Utf8Bytes,
        env: &Envelope,
        slot: Slot,
        subs: &[Arc<str>],
    ) -> bool {
        let room = || !self.over_budget();
        if !self.backlogged.load(Ordering::Acquire) && room() {
            self.send(Outbound::Text(frame));
            return true;
        }
        let mut backlog = self.backlog.lock().expect("backlog lock");
        if backlog.is_empty() && room() {
            drop(backlog);
            self.send(Outbound::Text(frame));
            return true;
        }
        self.backlogged.store(true, Ordering::Release);
        if !backlog.coalesced.add(env, slot, subs) {
            backlog
                .resync
                .entry(env.route.clone())
                .or_default()
                .extend(subs.iter().cloned());
        }
        let first = *backlog.since.get_or_insert_with(Instant::now);
        if first.elapsed() > self.budget.grace {
            tracing::warn!(conn = self.id, "slow consumer closed");
            self.kill();
        }
        false
    }

    /// Queues a batch of event frames as one item if nothing is owed and the whole batch
    /// fits the budget; false otherwise (each frame must then go through
    /// [`Outbox::send_event`], which queues or merges it as it would have alone).
    pub(crate) fn send_frames(&self, frames: &Arc<Frames>) -> bool {
        let fits = self.queued.load(Ordering::Relaxed) + frames.len() <= self.budget.frames
            && self.bytes.load(Ordering::Relaxed) + frames.bytes <= self.budget.bytes;
        if !fits || self.backlogged.load(Ordering::Acquire) {
            return false;
        }
        self.send(Outbound::Batch(frames.clone()));
        true
    }

    /// Called by the writer for each item it took from the queue.
    pub fn sent(&self, frame: &Outbound) {
        let frames = self.queued.fetch_sub(frame.count(), Ordering::Relaxed);
        let cost = frame.cost();
        let bytes = self.bytes.fetch_sub(cost, Ordering::Relaxed);
        // Only the frame that brings the queue back within budget wakes a waiting reader:
        // no lock taken for every frame sent.
        let was_over = frames >= self.budget.frames || bytes >= self.budget.bytes;
        if was_over && !self.over_budget() {
            self.drained.notify_waiters();
        }
    }

    /// Once the queue has drained: the merged events and `resync` frames owed.
    pub fn take_owed(&self) -> Vec<Utf8Bytes> {
        if self.queued.load(Ordering::Relaxed) > 0 || !self.backlogged.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut backlog = self.backlog.lock().expect("backlog lock");
        let mut frames = backlog.coalesced.take_frames();
        for (route, subs) in std::mem::take(&mut backlog.resync) {
            let subs: Vec<Arc<str>> = subs.into_iter().collect();
            frames.push(resync_frame(&route, &subs));
        }
        backlog.since = None;
        self.backlogged.store(false, Ordering::Release);
        frames
    }
}
