//! A connection's outbound queue, shared by its request tasks and the hub.
//!
//! Replies always queue. Events queue only while the queue is below its limit; past it the
//! connection is a slow consumer: the affected subscriptions are remembered and, once the
//! writer has caught up, told to reload with a `resync` frame, so nothing is dropped silently.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{Notify, mpsc};

/// What the writer sends next.
#[derive(Debug)]
pub enum Outbound {
    Text(Utf8Bytes),
    Close(u16, String),
}

/// How long a connection may stay over its queue limit before it is closed with 4008.
const SLOW_CONSUMER_GRACE: Duration = Duration::from_secs(10);

pub struct Outbox {
    id: u64,
    tx: mpsc::UnboundedSender<Outbound>,
    queued: AtomicUsize,
    limit: usize,
    overflowed: AtomicBool,
    overflow_since: Mutex<Option<Instant>>,
    resync: Mutex<BTreeMap<Arc<str>, BTreeSet<Arc<str>>>>,
    /// Wakes the writer to give up on a consumer that cannot be helped.
    pub(crate) kill: Notify,
}

impl Outbox {
    pub fn new(id: u64, limit: usize) -> (Arc<Self>, mpsc::UnboundedReceiver<Outbound>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let outbox = Outbox {
            id,
            tx,
            queued: AtomicUsize::new(0),
            limit,
            overflowed: AtomicBool::new(false),
            overflow_since: Mutex::new(None),
            resync: Mutex::new(BTreeMap::new()),
            kill: Notify::new(),
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

    /// Queues an event for `subs` of `route`, or, over the limit, marks them for resync
    /// (and returns false).
    pub fn send_event(&self, frame: Utf8Bytes, route: &Arc<str>, subs: &[Arc<str>]) -> bool {
        if self.queued.load(Ordering::Relaxed) < self.limit {
            self.send(Outbound::Text(frame));
            return true;
        }
        let mut resync = self.resync.lock().expect("resync lock");
        resync
            .entry(route.clone())
            .or_default()
            .extend(subs.iter().cloned());
        self.overflowed.store(true, Ordering::Release);
        let mut since = self.overflow_since.lock().expect("overflow lock");
        let first = *since.get_or_insert_with(Instant::now);
        if first.elapsed() > SLOW_CONSUMER_GRACE {
            tracing::warn!(conn = self.id, "slow consumer closed");
            self.kill.notify_one();
        }
        false
    }

    /// Called by the writer after each frame it sent.
    pub fn sent_one(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }

    /// Once the queue has drained: the `resync` frames owed for dropped events.
    pub fn take_resyncs(&self) -> Vec<Utf8Bytes> {
        if self.queued.load(Ordering::Relaxed) > 0 || !self.overflowed.swap(false, Ordering::AcqRel)
        {
            return Vec::new();
        }
        *self.overflow_since.lock().expect("overflow lock") = None;
        let owed = std::mem::take(&mut *self.resync.lock().expect("resync lock"));
        owed.into_iter()
            .map(|(route, subs)| {
                let frame = serde_json::json!({
                    "event": "resync",
                    "route": &*route,
                    "subs": subs.iter().map(|s| &**s).collect::<Vec<_>>(),
                });
                Utf8Bytes::from(frame.to_string())
            })
            .collect()
    }
}
