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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use super::coalesce::Coalesced;
use super::frame::{EventKind, resync_frame};
use crate::broker::Envelope;
use crate::router::ConnId;

/// What the writer sends next.
#[derive(Debug)]
pub enum Outbound {
    Text(Utf8Bytes),
    /// A WebSocket ping (the server checks that the peer is still there).
    Ping,
    /// Boxed, so a queue event_kind is no larger than a text frame's.
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
    pub(crate) fn count(&self) -> usize {
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
    /// What waits for the writer. Unallocated while empty: an idle connection holds no
    /// queue memory (a channel would keep a block of kinds for its whole life).
    queue: Mutex<Queue>,
    /// The writer, when it waits for the queue.
    ready: AtomicWaker,
    queued: AtomicUsize,
    bytes: AtomicUsize,
    budget: Budget,
    /// Wakes a reader waiting for the queue to come back within budget.
    drained: Notify,
    /// Set while anything is owed: new events then join the backlog, to keep their order.
    backlogged: AtomicBool,
    backlog: Mutex<Backlog>,
    /// Why the writer must stop ([`Stop`] bits): plain bits that wake the writer through
    /// `ready`, so a waiting writer holds no future per reason.
    stop: AtomicU8,
    /// Raised when the writer has ended (the reader stops too).
    pub(crate) writer_ended: Flag,
    /// The connection's id, once it has one.
    conn: std::sync::OnceLock<ConnId>,
}

impl Outbox {
    /// Names the connection this outbox writes to.
    pub(crate) fn set_conn(&self, conn: ConnId) {
        let _ = self.conn.set(conn);
    }

    /// The connection this outbox writes to.
    pub(crate) fn conn(&self) -> Option<&ConnId> {
        self.conn.get()
    }

    /// An outbox with `budget`, and its writer's end.
    pub fn new(id: u64, budget: Budget) -> (Arc<Self>, Receiver) {
        let outbox = Outbox {
            id,
            queue: Mutex::default(),
            ready: AtomicWaker::new(),
            queued: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            budget,
            drained: Notify::new(),
            backlogged: AtomicBool::new(false),
            backlog: Mutex::new(Backlog::default()),
            stop: AtomicU8::new(0),
            writer_ended: Flag::default(),
            conn: std::sync::OnceLock::new(),
        };
        let outbox = Arc::new(outbox);
        let rx = Receiver {
            outbox: outbox.clone(),
            taken: VecDeque::new(),
        };
        (outbox, rx)
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queues a reply or control frame, whatever the queue length.
    pub fn send(&self, frame: Outbound) {
        let (count, cost) = (frame.count(), frame.cost());
        self.queued.fetch_add(count, Ordering::Relaxed);
        self.bytes.fetch_add(cost, Ordering::Relaxed);
        let mut queue = self.queue.lock().expect("queue lock");
        if queue.closed {
            drop(queue);
            self.queued.fetch_sub(count, Ordering::Relaxed);
            self.bytes.fetch_sub(cost, Ordering::Relaxed);
            return;
        }
        if queue.head.is_none() {
            queue.head = Some(frame);
        } else {
            queue.rest.push_back(frame);
        }
        drop(queue);
        self.ready.wake();
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
        self.raise(Stop::Killed);
    }

    /// Whether [`Outbox::kill`] was called.
    pub fn killed(&self) -> bool {
        self.raised(Stop::Killed)
    }

    /// Tells the writer to stop for `why` (see [`Receiver::next`]).
    pub(crate) fn raise(&self, why: Stop) {
        self.stop.fetch_or(why as u8, Ordering::AcqRel);
        self.ready.wake();
    }

    /// Whether `why` was raised.
    pub(crate) fn raised(&self, why: Stop) -> bool {
        self.stop.load(Ordering::Acquire) & why as u8 != 0
    }

    /// Resolves once the connection is killed (the writer waits on it while a write waits
    /// for the socket).
    pub(crate) async fn until_killed(&self) {
        self.wake_when(|| self.killed().then_some(())).await
    }

    /// Waits, as the writer, until `look` finds something: anything that changes what it
    /// finds (a send, a raised [`Stop`]) wakes the writer through `ready`.
    async fn wake_when<T>(&self, mut look: impl FnMut() -> Option<T>) -> T {
        std::future::poll_fn(|cx| {
            if let Some(found) = look() {
                return Poll::Ready(found);
            }
            self.ready.register(cx.waker());
            // Changed between the look and the registration: seen now, not lost.
            look().map_or(Poll::Pending, Poll::Ready)
        })
        .await
    }

    /// How long the connection may stay behind.
    pub fn grace(&self) -> Duration {
        self.budget.grace
    }

    /// Queues an event frame (kind `event_kind` of `env`, for `subs`), or, for a slow consumer,
    /// merges it into the backlog. Returns whether it was queued as is.
    pub(crate) fn send_event(
        &self,
        frame: Utf8Bytes,
        env: &Envelope,
        event_kind: EventKind,
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
        if !backlog.coalesced.add(env, event_kind, subs) {
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

/// Why a writer stops, besides its socket failing under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Stop {
    /// Given up on (a slow consumer, or over its budget for the grace): close with 4008.
    Killed = 1,
    /// The server shuts down: close with 1001 once the queue is written.
    GoingAway = 2,
    /// The reader found the socket unusable: stop without a close frame.
    SocketGone = 4,
}

/// The queue behind an [`Outbox`]. The first item waits inline: a connection that is sent
/// one item at a time (a reply, a run's batch of events) allocates nothing to queue it.
#[derive(Default)]
struct Queue {
    head: Option<Outbound>,
    /// After `head`, in order.
    rest: VecDeque<Outbound>,
    /// The writer is gone: nothing more is queued.
    closed: bool,
}

/// The writer's end of an [`Outbox`]: takes what was queued, in order. It takes the whole
/// queue at once (one lock per batch, not per item) and frees the buffer once it is empty.
pub struct Receiver {
    outbox: Arc<Outbox>,
    taken: VecDeque<Outbound>,
}

impl Receiver {
    /// The next item, if one is queued.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        take_next(&self.outbox, &mut self.taken)
    }

    /// The next item, or why to stop: a kill comes first, queued items before the rest.
    pub(crate) async fn next(&mut self) -> Result<Outbound, Stop> {
        let (outbox, taken) = (&self.outbox, &mut self.taken);
        outbox
            .wake_when(|| {
                if outbox.killed() {
                    return Some(Err(Stop::Killed));
                }
                if let Some(item) = take_next(outbox, taken) {
                    return Some(Ok(item));
                }
                [Stop::GoingAway, Stop::SocketGone]
                    .into_iter()
                    .find(|&why| outbox.raised(why))
                    .map(Err)
            })
            .await
    }

    /// The next item, once one is queued (tests read queues with it).
    #[cfg(test)]
    pub(crate) async fn recv(&mut self) -> Outbound {
        let (outbox, taken) = (&self.outbox, &mut self.taken);
        outbox.wake_when(|| take_next(outbox, taken)).await
    }
}

/// The next item: from what the writer took last, else the whole queue is taken (one lock
/// per batch). The writer's buffer is freed once drained.
fn take_next(outbox: &Outbox, taken: &mut VecDeque<Outbound>) -> Option<Outbound> {
    if let Some(item) = taken.pop_front() {
        if taken.is_empty() {
            *taken = VecDeque::new();
        }
        return Some(item);
    }
    let mut queue = outbox.queue.lock().expect("queue lock");
    let head = queue.head.take()?;
    std::mem::swap(taken, &mut queue.rest);
    Some(head)
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut queue = self.outbox.queue.lock().expect("queue lock");
        queue.closed = true;
        queue.head = None;
        queue.rest = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::test_budget;

    fn text(s: &str) -> Outbound {
        Outbound::Text(s.into())
    }

    fn texts_of(items: impl IntoIterator<Item = Outbound>) -> Vec<String> {
        items
            .into_iter()
            .flat_map(|o| o.texts())
            .map(|t| t.as_str().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn the_queue_keeps_order_across_takes_and_frees_its_buffer_when_drained() {
        let (outbox, mut rx) = Outbox::new(1, test_budget());
        for s in ["a", "b", "c"] {
            outbox.send(text(s));
        }
        let first = rx.try_recv().expect("a");
        // Queued while the writer holds the rest of what it took: after it, in order.
        outbox.send(text("d"));
        let rest: Vec<Outbound> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(
            texts_of([first].into_iter().chain(rest)),
            ["a", "b", "c", "d"]
        );
        // Drained: neither end keeps a buffer for an idle connection.
        assert_eq!(rx.taken.capacity(), 0);
        assert_eq!(outbox.queue.lock().unwrap().rest.capacity(), 0);
        // A waiting writer is woken by a send.
        let waiting = tokio::spawn(async move { texts_of([rx.recv().await]) });
        tokio::task::yield_now().await;
        outbox.send(text("e"));
        assert_eq!(waiting.await.unwrap(), ["e"]);
    }

    #[tokio::test]
    async fn a_kill_comes_before_queued_frames_and_a_shutdown_after_them() {
        let (outbox, mut rx) = Outbox::new(1, test_budget());
        outbox.send(text("a"));
        outbox.raise(Stop::GoingAway);
        outbox.raise(Stop::SocketGone);
        assert_eq!(texts_of([rx.next().await.unwrap()]), ["a"]);
        assert_eq!(rx.next().await.unwrap_err(), Stop::GoingAway);
        outbox.send(text("b"));
        outbox.kill();
        assert_eq!(rx.next().await.unwrap_err(), Stop::Killed);
        // A writer waiting for frames is woken by a kill.
        let (outbox, mut rx) = Outbox::new(2, test_budget());
        let waiting = tokio::spawn(async move { rx.next().await.unwrap_err() });
        tokio::task::yield_now().await;
        outbox.kill();
        assert_eq!(waiting.await.unwrap(), Stop::Killed);
        // Once the writer is gone, nothing more is queued or counted.
        outbox.send(text("c"));
        assert!(outbox.queue.lock().unwrap().head.is_none());
        assert_eq!(outbox.queued.load(Ordering::Relaxed), 0);
    }
}
