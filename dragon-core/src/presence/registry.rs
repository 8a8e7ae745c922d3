//! This node's side of presence: a view of every key that local connections watch, kept
//! current from the broker's diffs, and the fan-out of those diffs to the watchers.
//!
//! A view follows its key's diffs in order: a diff applies when it follows the view's
//! version (`prev`); one that does not (a diff was lost on the way) makes the view read the
//! key again and send its watchers the difference, while later diffs wait in a buffer. A
//! watcher is inactive until its reply (the whole member list) is queued, under the view's
//! lock: so a client sees the list first and then every change after it, never one before.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use super::types::{Member, PresenceDiff, PresenceKey, PresenceSignal, Snapshot};
use crate::broker::Broker;
use crate::error::Error;
use crate::hub::{Outbound, Outbox};
use crate::router::ConnId;

/// A route and one of its keys.
pub(crate) type ViewKey = (Arc<str>, PresenceKey);

/// Count watchers get at most one count per key this often.
pub(crate) const COUNT_INTERVAL: Duration = Duration::from_millis(100);
/// Keys read from the broker at once, at most.
const MAX_READS: usize = 16;
/// How long a request waits for its key's view to catch up before reading the key again.
const SETTLE_WAIT: Duration = Duration::from_secs(3);

/// What a watcher receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Joins and leaves.
    Members,
    /// The number of members only, throttled.
    Count,
}

struct Watcher {
    outbox: Arc<Outbox>,
    conn: ConnId,
    mode: Mode,
    active: bool,
    last_count: Option<usize>,
}

struct View {
    key: ViewKey,
    version: u64,
    /// False while the key is being read (first load or after a lost diff).
    ready: bool,
    /// Another read was asked for while one was under way.
    reread: bool,
    /// Diffs that arrived while not ready, in order.
    buffer: Vec<PresenceDiff>,
    members: BTreeMap<ConnId, Member>,
    watchers: HashMap<u64, Watcher>,
    /// (ready, version), for requests waiting for their own change to arrive.
    progress: watch::Sender<(bool, u64)>,
    count_sent_at: Option<Instant>,
    count_scheduled: bool,
}

type SharedView = Arc<Mutex<View>>;

/// The presence views of one node.
pub struct Registry {
    broker: Arc<dyn Broker>,
    /// Bounds the reads of keys under way, so that re-reading every key (after a lost
    /// message) does not flood the broker and time out.
    reads: tokio::sync::Semaphore,
    views: Mutex<HashMap<ViewKey, SharedView>>,
    /// Leaves still being published (see [`Registry::leave_later`]).
    leaving: AtomicUsize,
    left: Notify,
    me: Weak<Registry>,
}

#[derive(Serialize)]
struct EventFrame<'a> {
    event: &'static str,
    route: &'a str,
    key: &'a PresenceKey,
    joins: Vec<&'a Member>,
    leaves: Vec<&'a Member>,
}

fn members_frame(
    route: &str,
    key: &PresenceKey,
    joins: &[&Member],
    leaves: &[&Member],
) -> Utf8Bytes {
    let frame = EventFrame {
        event: "presence",
        route,
        key,
        joins: joins.to_vec(),
        leaves: leaves.to_vec(),
    };
    Utf8Bytes::from(serde_json::to_string(&frame).expect("presence frames serialize"))
}

fn count_frame(route: &str, key: &PresenceKey, count: usize) -> Utf8Bytes {
    let frame = crate::protocol::Event::named("presence")
        .route(route)
        .with("key", key.to_json())
        .with("count", count);
    Utf8Bytes::from(frame.to_json())
}

impl Registry {
    /// A registry fed by `broker`'s presence diffs (spawns the task that applies them).
    pub(crate) fn start(broker: Arc<dyn Broker>) -> Arc<Registry> {
        let registry = Arc::new_cyclic(|me| Registry {
            broker: broker.clone(),
            reads: tokio::sync::Semaphore::new(MAX_READS),
            views: Mutex::new(HashMap::new()),
            leaving: AtomicUsize::new(0),
            left: Notify::new(),
            me: me.clone(),
        });
        let mut diffs = broker.presence_diffs();
        let weak = Arc::downgrade(&registry);
        tokio::spawn(async move {
            while let Some(signal) = diffs.recv().await {
                let Some(registry) = weak.upgrade() else {
                    break;
                };
                match signal {
                    PresenceSignal::Diff(diff) => registry.on_diff(diff),
                    PresenceSignal::Resync => registry.reread_all(),
                }
            }
        });
        registry
    }

    pub(crate) fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    fn view(&self, key: &ViewKey) -> Option<SharedView> {
        self.views.lock().expect("views lock").get(key).cloned()
    }

    /// How many keys this node has a view of (for tests and metrics).
    pub fn view_count(&self) -> usize {
        self.views.lock().expect("views lock").len()
    }

    /// Registers a watcher (inactive until [`Registry::reply`]); loads the key if new here.
    pub(crate) fn watch(&self, key: &ViewKey, outbox: &Arc<Outbox>, conn: &ConnId, mode: Mode) {
        let mut views = self.views.lock().expect("views lock");
        let (view, fresh) = match views.get(key) {
            Some(v) => (v.clone(), false),
            None => {
                let view = Arc::new(Mutex::new(View {
                    key: key.clone(),
                    version: 0,
                    ready: false,
                    reread: false,
                    buffer: Vec::new(),
                    members: BTreeMap::new(),
                    watchers: HashMap::new(),
                    progress: watch::channel((false, 0)).0,
                    count_sent_at: None,
                    count_scheduled: false,
                }));
                views.insert(key.clone(), view.clone());
                (view, true)
            }
        };
        view.lock().expect("view lock").watchers.insert(
            outbox.id(),
            Watcher {
                outbox: outbox.clone(),
                conn: conn.clone(),
                mode,
                active: false,
                last_count: None,
            },
        );
        drop(views);
        if fresh {
            self.spawn_read(view);
        }
    }

    /// Removes a connection's watcher; the view goes when its last watcher does.
    pub(crate) fn unwatch(&self, key: &ViewKey, outbox_id: u64) {
        let mut views = self.views.lock().expect("views lock");
        let Some(view) = views.get(key) else { return };
        let empty = {
            let mut v = view.lock().expect("view lock");
            v.watchers.remove(&outbox_id);
            v.watchers.is_empty()
        };
        if empty {
            views.remove(key);
        }
    }

    /// Waits until the view of `key` is loaded and at `version` or later (a change this node
    /// made has come back through the broker), reading the key again if it does not come.
    pub(crate) async fn settle(&self, key: &ViewKey, version: u64) -> Result<(), Error> {
        let view = self
            .view(key)
            .ok_or_else(|| Error::Internal("presence view vanished".into()))?;
        let mut progress = view.lock().expect("view lock").progress.subscribe();
        for attempt in 0..2 {
            let reached = tokio::time::timeout(
                SETTLE_WAIT,
                progress.wait_for(|(ready, v)| *ready && *v >= version),
            )
            .await;
            if matches!(reached, Ok(Ok(_))) {
                return Ok(());
            }
            if attempt == 0 {
                tracing::debug!(route = %key.0, key = %key.1, "presence change did not arrive; reading the key");
                let mut v = view.lock().expect("view lock");
                self.begin_read(&view, &mut v);
            }
        }
        Err(Error::Unavailable(
            "presence did not settle; retry later".into(),
        ))
    }

    /// Activates the connection's watcher and hands `send` the reply data (the member list,
    /// or the count), under the view's lock, so no event of the key can overtake it.
    pub(crate) fn reply(
        &self,
        key: &ViewKey,
        outbox_id: u64,
        send: impl FnOnce(Value),
    ) -> Result<Value, Error> {
        let view = self
            .view(key)
            .ok_or_else(|| Error::Internal("presence view vanished".into()))?;
        let mut v = view.lock().expect("view lock");
        let count = v.members.len();
        let mode = match v.watchers.get_mut(&outbox_id) {
            Some(w) => {
                w.active = true;
                w.last_count = Some(count);
                w.mode
            }
            None => Mode::Members,
        };
        let data = match mode {
            Mode::Members => json!({ "members": v.members.values().collect::<Vec<_>>() }),
            Mode::Count => json!({ "count": count }),
        };
        send(data.clone());
        Ok(data)
    }

    /// Publishes a leave, retrying in the background until the broker takes it.
    pub(crate) fn leave_later(&self, route: Arc<str>, key: PresenceKey, conn: ConnId) {
        self.leaving.fetch_add(1, Ordering::AcqRel);
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(100);
            loop {
                match me.broker.presence_leave(&route, &key, &conn).await {
                    Ok(()) => break,
                    Err(err) => {
                        tracing::warn!(%route, %key, error = %err, "presence leave failed; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(2));
                    }
                }
            }
            if me.leaving.fetch_sub(1, Ordering::AcqRel) == 1 {
                me.left.notify_waiters();
            }
        });
    }

    /// For shutdown: waits (at most `limit`) for pending leaves, then asks the broker to
    /// remove whatever this node still holds.
    pub(crate) async fn retire(&self, limit: Duration) {
        let wait = async {
            while self.leaving.load(Ordering::Acquire) > 0 {
                let notified = self.left.notified();
                if self.leaving.load(Ordering::Acquire) == 0 {
                    break;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
        if let Err(err) = self.broker.presence_retire().await {
            tracing::warn!(error = %err, "could not remove this node's presence at shutdown");
        }
    }

    fn on_diff(&self, diff: PresenceDiff) {
        let key = (diff.route.clone(), diff.key.clone());
        let Some(view) = self.view(&key) else { return };
        let mut v = view.lock().expect("view lock");
        if v.ready {
            self.apply(&view, &mut v, diff, true);
        } else {
            v.buffer.push(diff);
        }
    }

    fn reread_all(&self) {
        let views: Vec<SharedView> = self
            .views
            .lock()
            .expect("views lock")
            .values()
            .cloned()
            .collect();
        for view in views {
            let mut v = view.lock().expect("view lock");
            self.begin_read(&view, &mut v);
        }
    }

    /// Applies a diff to a ready view, or reads the key again (`reread`) if the diff does not
    /// follow: something between the view and it was lost.
    fn apply(&self, view: &SharedView, v: &mut View, diff: PresenceDiff, reread: bool) {
        let follows = diff.prev == v.version || (diff.prev == 0 && v.members.is_empty());
        if !follows {
            if diff.version <= v.version {
                return; // already part of the view
            }
            if reread {
                v.buffer.push(diff);
                self.begin_read(view, v);
            } else {
                // Received before a read that should include it, yet newer than the read:
                // not a lost diff but a broken one; reading again would not help.
                tracing::warn!(route = %v.key.0, key = %v.key.1, version = diff.version,
                    "a presence diff fits no version of its key; skipped");
            }
            return;
        }
        let before = v.members.len();
        for m in &diff.leaves {
            v.members.remove(&m.conn);
        }
        for m in &diff.joins {
            v.members.insert(m.conn.clone(), m.clone());
        }
        v.version = diff.version;
        let joins: Vec<&Member> = diff.joins.iter().collect();
        let leaves: Vec<&Member> = diff.leaves.iter().collect();
        let count_changed = before != v.members.len();
        self.emit(view, v, &joins, &leaves, count_changed);
        v.progress.send_replace((true, v.version));
    }

    /// Sends a change to the view's active watchers (never a member's own change to it).
    fn emit(
        &self,
        view: &SharedView,
        v: &mut View,
        joins: &[&Member],
        leaves: &[&Member],
        count_changed: bool,
    ) {
        let (route, key) = (&v.key.0, &v.key.1);
        let mut shared: Option<Utf8Bytes> = None;
        let mut counting = false;
        for w in v.watchers.values() {
            if !w.active {
                continue;
            }
            if w.mode == Mode::Count {
                counting = true;
                continue;
            }
            let others = |m: &&Member| m.conn != w.conn;
            let frame = if !joins.iter().all(others) || !leaves.iter().all(others) {
                let j: Vec<&Member> = joins.iter().copied().filter(others).collect();
                let l: Vec<&Member> = leaves.iter().copied().filter(others).collect();
                if j.is_empty() && l.is_empty() {
                    continue;
                }
                members_frame(route, key, &j, &l)
            } else {
                shared
                    .get_or_insert_with(|| members_frame(route, key, joins, leaves))
                    .clone()
            };
            w.outbox.send(Outbound::Text(frame));
        }
        if counting && count_changed {
            self.count_changed(view, v);
        }
    }

    /// Sends count watchers the count now, or schedules it if one went out too recently.
    fn count_changed(&self, view: &SharedView, v: &mut View) {
        if v.count_scheduled {
            return;
        }
        let due = v.count_sent_at.map(|t| t + COUNT_INTERVAL);
        match due {
            Some(due) if due > Instant::now() => {
                v.count_scheduled = true;
                let view = view.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(due.into()).await;
                    let mut v = view.lock().expect("view lock");
                    v.count_scheduled = false;
                    send_counts(&mut v);
                });
            }
            _ => send_counts(v),
        }
    }

    /// Starts reading the key again (unless a read is under way: then it is read once more).
    fn begin_read(&self, view: &SharedView, v: &mut View) {
        if !v.ready {
            v.reread = true;
            return;
        }
        v.ready = false;
        v.progress.send_replace((false, v.version));
        self.spawn_read(view.clone());
    }

    fn spawn_read(&self, view: SharedView) {
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move { me.read(view).await });
    }

    /// Reads the key from the broker and installs it, retrying while the broker is down.
    async fn read(&self, view: SharedView) {
        let key = view.lock().expect("view lock").key.clone();
        let mut wait = Duration::from_millis(100);
        loop {
            let read = {
                let _permit = self.reads.acquire().await.expect("never closed");
                self.broker.presence_members(&key.0, &key.1).await
            };
            match read {
                Ok(snapshot) => {
                    let again = {
                        let mut v = view.lock().expect("view lock");
                        let again = std::mem::take(&mut v.reread);
                        if !again {
                            self.install(&view, &mut v, snapshot);
                        }
                        again
                    };
                    if !again {
                        return;
                    }
                }
                Err(err) => {
                    tracing::warn!(route = %key.0, key = %key.1, error = %err, "reading presence failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
            let orphaned = view.lock().expect("view lock").watchers.is_empty();
            if orphaned {
                return;
            }
        }
    }

    /// Replaces the view's members by a snapshot, tells active watchers the difference,
    /// then applies the diffs that waited.
    fn install(&self, view: &SharedView, v: &mut View, snapshot: Snapshot) {
        let new: BTreeMap<ConnId, Member> = snapshot
            .members
            .into_iter()
            .map(|m| (m.conn.clone(), m))
            .collect();
        let old = std::mem::replace(&mut v.members, new);
        v.version = snapshot.version;
        v.ready = true;
        {
            let joins: Vec<&Member> = v
                .members
                .values()
                .filter(|m| old.get(&m.conn) != Some(*m))
                .collect();
            let leaves: Vec<&Member> = old
                .values()
                .filter(|m| !v.members.contains_key(&m.conn))
                .collect();
            if !joins.is_empty() || !leaves.is_empty() {
                let joins: Vec<Member> = joins.into_iter().cloned().collect();
                let leaves: Vec<Member> = leaves.into_iter().cloned().collect();
                let count_changed = old.len() != v.members.len();
                let (j, l): (Vec<&Member>, Vec<&Member>) =
                    (joins.iter().collect(), leaves.iter().collect());
                self.emit(view, v, &j, &l, count_changed);
            }
        }
        v.progress.send_replace((true, v.version));
        // These arrived before or while the key was read: each is either in the snapshot
        // (not newer) or follows it.
        for diff in std::mem::take(&mut v.buffer) {
            if v.ready {
                self.apply(view, v, diff, false);
            } else {
                v.buffer.push(diff);
            }
        }
    }
}

fn send_counts(v: &mut View) {
    v.count_sent_at = Some(Instant::now());
    let count = v.members.len();
    let mut frame: Option<Utf8Bytes> = None;
    for w in v.watchers.values_mut() {
        if w.active && w.mode == Mode::Count && w.last_count != Some(count) {
            w.last_count = Some(count);
            let f = frame
                .get_or_insert_with(|| count_frame(&v.key.0, &v.key.1, count))
                .clone();
            w.outbox.send(Outbound::Text(f));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use tokio::sync::mpsc;

    use super::*;
    use crate::broker::{BrokerError, Envelope, History, MemoryBroker, Message, Position};
    use crate::presence::JoinOutcome;

    /// A memory broker whose presence diffs can be lost on the way to the registry, and
    /// which counts the registry's reads.
    struct Lossy {
        inner: MemoryBroker,
        lose: Arc<AtomicBool>,
        reads: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Broker for Lossy {
        async fn publish(&self, route: &str, message: Message) -> Result<(), BrokerError> {
            self.inner.publish(route, message).await
        }
        fn messages(&self) -> mpsc::UnboundedReceiver<Envelope> {
            self.inner.messages()
        }
        async fn history(&self, route: &str, after: Position) -> Result<History, BrokerError> {
            self.inner.history(route, after).await
        }
        async fn head(&self, route: &str) -> Result<Position, BrokerError> {
            self.inner.head(route).await
        }
        async fn presence_join(
            &self,
            route: &str,
            key: &PresenceKey,
            member: &Member,
            max: usize,
        ) -> Result<JoinOutcome, BrokerError> {
            self.inner.presence_join(route, key, member, max).await
        }
        async fn presence_leave(
            &self,
            route: &str,
            key: &PresenceKey,
            conn: &str,
        ) -> Result<(), BrokerError> {
            self.inner.presence_leave(route, key, conn).await
        }
        async fn presence_members(
            &self,
            route: &str,
            key: &PresenceKey,
        ) -> Result<Snapshot, BrokerError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.inner.presence_members(route, key).await
        }
        fn presence_diffs(&self) -> mpsc::UnboundedReceiver<PresenceSignal> {
            let mut from = self.inner.presence_diffs();
            let (tx, rx) = mpsc::unbounded_channel();
            let lose = self.lose.clone();
            tokio::spawn(async move {
                while let Some(signal) = from.recv().await {
                    if !lose.load(Ordering::SeqCst) && tx.send(signal).is_err() {
                        break;
                    }
                }
            });
            rx
        }
    }

    fn member(conn: &str) -> Member {
        Member {
            conn: ConnId::test(conn),
            user: Value::Null,
            state: json!({}),
        }
    }

    fn key() -> ViewKey {
        (Arc::from("room"), PresenceKey::Str("k".into()))
    }

    async fn next_event(rx: &mut crate::hub::Receiver) -> Value {
        let frame = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("an event in time");
        let Outbound::Text(t) = frame else {
            panic!("not text")
        };
        serde_json::from_str(t.as_str()).unwrap()
    }

    fn conns(list: &Value) -> Vec<&str> {
        let mut out: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["conn"].as_str().unwrap())
            .collect();
        out.sort_unstable();
        out
    }

    /// A registry on a lossy broker, with one active watcher of `key()`.
    async fn watching() -> (Arc<Registry>, Arc<Lossy>, crate::hub::Receiver) {
        let broker = Arc::new(Lossy {
            inner: MemoryBroker::new(),
            lose: Arc::new(AtomicBool::new(false)),
            reads: AtomicUsize::new(0),
        });
        let registry = Registry::start(broker.clone());
        let (outbox, rx) = Outbox::new(1, crate::hub::test_budget());
        registry.watch(&key(), &outbox, &ConnId::test("watcher"), Mode::Members);
        registry.settle(&key(), 0).await.unwrap();
        let data = registry.reply(&key(), outbox.id(), |_| {}).unwrap();
        assert_eq!(data, json!({"members": []}));
        (registry, broker, rx)
    }

    async fn pause() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn a_lost_diff_is_repaired_by_reading_the_key_again() {
        let (registry, broker, mut rx) = watching().await;
        let (route, k) = key();
        broker
            .presence_join(&route, &k, &member("a"), 10)
            .await
            .unwrap();
        assert_eq!(conns(&next_event(&mut rx).await["joins"]), ["a"]);

        broker.lose.store(true, Ordering::SeqCst);
        broker
            .presence_join(&route, &k, &member("b"), 10)
            .await
            .unwrap();
        pause().await;
        broker.lose.store(false, Ordering::SeqCst);
        broker
            .presence_join(&route, &k, &member("c"), 10)
            .await
            .unwrap();

        // c's diff does not follow the view: the key is read again, and the watcher gets
        // the difference (b and c) once.
        let e = next_event(&mut rx).await;
        assert_eq!(conns(&e["joins"]), ["b", "c"]);
        assert_eq!(e["leaves"], json!([]));
        pause().await;
        assert!(rx.try_recv().is_none(), "c is not announced twice");
        let view = registry.view(&key()).unwrap();
        let v = view.lock().unwrap();
        assert_eq!(v.members.len(), 3);
        assert!(v.ready);
    }

    #[tokio::test]
    async fn a_key_emptied_while_the_view_lagged_settles_without_rereading_forever() {
        let (registry, broker, mut rx) = watching().await;
        let (route, k) = key();
        broker
            .presence_join(&route, &k, &member("a"), 10)
            .await
            .unwrap();
        next_event(&mut rx).await;
        broker.lose.store(true, Ordering::SeqCst);
        broker
            .presence_join(&route, &k, &member("b"), 10)
            .await
            .unwrap();
        pause().await;
        broker.lose.store(false, Ordering::SeqCst);
        // a's leave reveals the gap; b's leave (the key is now empty) arrives while the key
        // is read. Both are part of what the read finds.
        broker.presence_leave(&route, &k, "a").await.unwrap();
        broker.presence_leave(&route, &k, "b").await.unwrap();
        let mut left = Vec::new();
        while let Ok(Outbound::Text(t)) =
            tokio::time::timeout(Duration::from_millis(300), rx.recv()).await
        {
            let e: Value = serde_json::from_str(t.as_str()).unwrap();
            left.extend(conns(&e["leaves"]).into_iter().map(str::to_owned));
        }
        assert!(left.contains(&"a".to_owned()), "{left:?}");
        let view = registry.view(&key()).unwrap();
        assert!(view.lock().unwrap().members.is_empty());
        let reads = broker.reads.load(Ordering::Relaxed);
        pause().await;
        assert_eq!(
            broker.reads.load(Ordering::Relaxed),
            reads,
            "no reading in a loop"
        );
        assert!(reads <= 3, "{reads} reads");
        assert!(view.lock().unwrap().ready);
    }
}
