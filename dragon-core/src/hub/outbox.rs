//! A connection's outbound queue, shared by its request tasks and the hub.
//!
//! Replies always queue. Events queue only while the queue is below its limit; past it the
//! connection is a slow consumer: its events are merged per object (coalescing: the latest
//! state, see `coalesce.rs`), and those that cannot be merged (custom events, too many
//! objects) mark their subscriptions for a `resync` frame. Once the writer has caught up it
//! sends what is owed, so nothing is dropped silently.

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
    Close(crate::protocol::CloseCode, String),
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

pub struct Outbox {
    id: u64,
    tx: mpsc::UnboundedSender<Outbound>,
    queued: AtomicUsize,
    limit: usize,
    grace: Duration,
    /// Set while anything is owed: new events then join the backlog, to keep their order.
    backlogged: AtomicBool,
    backlog: Mutex<Backlog>,
    /// Wakes the writer to give up on a consumer that cannot be helped.
    pub(crate) kill: Notify,
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

    /// An outbox queueing up to `limit` events, closing a consumer behind for `grace`.
    pub fn new(
        id: u64,
        limit: usize,
        grace: Duration,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Outbound>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let outbox = Outbox {
            id,
            tx,
            queued: AtomicUsize::new(0),
            limit,
            grace,
            backlogged: AtomicBool::new(false),
            backlog: Mutex::new(Backlog::default()),
            kill: Notify::new(),
            conn: std::sync::OnceLock::new(),
        };
        (Arc::new(outbox), rx)
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queues a reply or control frame, whatever the queue length.
    pub fn send(&self, frame: Outbound) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(frame).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
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
        let room = || self.queued.load(Ordering::Relaxed) < self.limit;
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
        if first.elapsed() > self.grace {
            tracing::warn!(conn = self.id, "slow consumer closed");
            self.kill.notify_one();
        }
        false
    }

    /// Called by the writer after each frame it sent.
    pub fn sent_one(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
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
