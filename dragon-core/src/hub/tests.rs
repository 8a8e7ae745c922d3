//! The hub's index, join and fan-out, without a server.
use serde_json::json;

use super::*;
use crate::broker::{BrokerError, MemoryBroker};
use crate::schema::{FieldType, Schema};
use std::sync::{Mutex, MutexGuard};

fn schema() -> Schema {
    Schema::new(vec![])
        .field("list_id", FieldType::Integer, false)
        .field("text", FieldType::Text, false)
}

/// Adds a subscription with `filter` to `st`.
fn add(st: &mut RouteState, key: u64, filter: serde_json::Value, outbox: &Arc<Outbox>, id: &str) {
    let filter = Filter::parse(Some(&filter), &schema()).unwrap();
    st.insert(SubKey(key), outbox.clone(), Arc::from(id), filter);
    st.joined(SubKey(key));
}

fn change(old_list: Option<i64>, new_list: Option<i64>) -> Message {
    let row = |l: i64| {
        json!({"id": 1, "list_id": l, "text": "x"})
            .as_object()
            .unwrap()
            .clone()
    };
    Message::Change {
        kind: crate::protocol::ChangeKind::Updated,
        old: old_list.map(row),
        new: new_list.map(row),
        id: None,
        version: None,
    }
}

/// Subscribes `outbox` to `items` as `id` with `filter` from `start` (the reply: `reply`).
async fn subscribe(
    hub: &Hub,
    outbox: &Arc<Outbox>,
    id: &str,
    filter: Filter,
    start: Start,
) -> Joined {
    let key = hub.next_key();
    let reply = |_: &Joined| "reply".into();
    hub.subscribe(
        outbox,
        key,
        "items",
        Arc::from(id),
        filter,
        start,
        1000,
        reply,
    )
    .await
    .unwrap()
}

/// Publishes a created item of list 3 on `items`.
async fn publish_item(hub: &Hub) {
    let row = json!({"id": 1, "list_id": 3, "text": "x"});
    let row = row.as_object().unwrap().clone();
    hub.broker()
        .publish("items", Message::created(row))
        .await
        .unwrap();
}

#[test]
fn pinned_equalities_are_looked_up_not_scanned() {
    let (outbox, _rx) = Outbox::new(1, test_budget());
    let mut st = RouteState::default();
    for list in 0..10_000 {
        add(
            &mut st,
            list as u64,
            json!({"list_id": list}),
            &outbox,
            "s1",
        );
    }
    add(
        &mut st,
        20_000,
        json!({"text__contains": "x"}),
        &outbox,
        "s2",
    );
    add(
        &mut st,
        20_001,
        json!({"list_id__in": [5, 6]}),
        &outbox,
        "s3",
    );
    // A change in list 5 concerns list 5's group, the `in` one, and the unindexed one.
    assert_eq!(st.candidates(&change(Some(5), Some(5))).len(), 3);
    // Moving a row from list 7 to list 8 concerns both lists' groups and the unindexed one.
    assert_eq!(st.candidates(&change(Some(7), Some(8))).len(), 3);
    // Removal cleans the index.
    assert!(st.remove(SubKey(5)));
    assert!(!st.remove(SubKey(5)));
    assert_eq!(st.candidates(&change(None, Some(5))).len(), 2);
    assert_eq!(
        st.indexed_values("list_id"),
        10_000 - 1 + 1,
        "list 5 stays for the `in` sub"
    );
}

#[test]
fn subscriptions_with_one_filter_share_a_group() {
    let mut st = RouteState::default();
    let mut outboxes = Vec::new();
    for conn in 0..100u64 {
        let (outbox, rx) = Outbox::new(conn, test_budget());
        add(&mut st, conn, json!({"list_id": 3}), &outbox, "s1");
        outboxes.push((outbox, rx));
    }
    // A second subscription of one connection, with another filter.
    add(&mut st, 1000, json!({"list_id": 4}), &outboxes[0].0, "s2");
    assert_eq!(st.group_count(), 2);
    assert_eq!(st.len(), 101);
    assert_eq!(st.candidates(&change(None, Some(3))).len(), 1);
    assert_eq!(st.interned_ids(), 2, "s1 and s2");
    for key in 0..100 {
        assert!(st.remove(SubKey(key)));
    }
    assert!(st.remove(SubKey(1000)));
    assert_eq!((st.group_count(), st.len()), (0, 0));
    assert_eq!(st.interned_ids(), 0);
    assert_eq!(st.indexed_values("list_id"), 0);
}

#[tokio::test]
async fn an_unknown_future_position_is_not_a_join_point() {
    let hub = Hub::start(Arc::new(MemoryBroker::new()));
    let (outbox, mut rx) = Outbox::new(1, test_budget());
    let head = hub.broker().head("items").await.unwrap();
    let future = Position(head.0 + 1, 7);
    let joined = subscribe(&hub, &outbox, "s1", Filter::all(), Start::After(future)).await;
    assert!(
        !joined.recovered,
        "a position the broker never made is not recoverable"
    );
    assert!(joined.position < future);
    let _ = rx.recv().await; // the reply
    publish_item(&hub).await;
    let Outbound::Text(frame) = rx.recv().await else {
        panic!()
    };
    assert!(
        frame.as_str().contains(r#""event":"created""#),
        "live events still arrive"
    );
}

#[tokio::test]
async fn one_frame_per_connection_shared_bytes() {
    let hub = Hub::start(Arc::new(MemoryBroker::new()));
    let (a, mut rx_a) = Outbox::new(1, test_budget());
    let (b, mut rx_b) = Outbox::new(2, test_budget());
    for (outbox, id) in [(&a, "s1"), (&a, "s2"), (&b, "s1")] {
        let filter = Filter::parse(Some(&json!({"list_id": 3})), &schema()).unwrap();
        subscribe(&hub, outbox, id, filter, Start::Now).await;
    }
    let _ = (rx_a.recv().await, rx_a.recv().await, rx_b.recv().await); // replies
    publish_item(&hub).await;
    let Outbound::Text(fa) = rx_a.recv().await else {
        panic!()
    };
    let Outbound::Text(fb) = rx_b.recv().await else {
        panic!()
    };
    assert!(
        fa.as_str().contains(r#""subs":["s1","s2"]"#),
        "{}",
        fa.as_str()
    );
    assert!(fb.as_str().contains(r#""subs":["s1"]"#));
    assert!(rx_a.try_recv().is_none(), "one frame per connection");
}

#[tokio::test]
async fn a_message_published_twice_is_delivered_once() {
    let hub = Hub::start(Arc::new(MemoryBroker::new()));
    let (outbox, mut rx) = Outbox::new(1, test_budget());
    subscribe(&hub, &outbox, "s1", Filter::all(), Start::Now).await;
    let _ = rx.recv().await; // the reply
    let row = json!({"id": 1, "list_id": 3, "text": "x"});
    let message = Message::created(row.as_object().unwrap().clone());
    // As after a publish that timed out but reached the broker, and was retried.
    hub.broker()
        .publish("items", message.clone())
        .await
        .unwrap();
    hub.broker().publish("items", message).await.unwrap();
    hub.broker()
        .publish("items", Message::custom("ping", json!({})))
        .await
        .unwrap();
    let mut events = Vec::new();
    while let Ok(item) =
        tokio::time::timeout(std::time::Duration::from_millis(200), rx.recv()).await
    {
        for t in item.texts() {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            events.push(v["event"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(events, ["created", "ping"]);
    // A subscriber replaying the history gets it once too.
    let (late, mut late_rx) = Outbox::new(2, test_budget());
    let start = Position(hub.broker().head("items").await.unwrap().0, 0);
    subscribe(&hub, &late, "s1", Filter::all(), Start::After(start)).await;
    let mut replayed = Vec::new();
    while let Ok(Outbound::Text(t)) =
        tokio::time::timeout(std::time::Duration::from_millis(200), late_rx.recv()).await
    {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(t.as_str()) {
            replayed.push(v["event"].as_str().unwrap_or("").to_owned());
        }
    }
    assert_eq!(replayed, ["created", "ping"]);
}

/// With several dispatch workers, every connection gets every message once, in order,
/// whichever worker its connection belongs to.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn every_worker_delivers_every_message_in_order() {
    let hub = Hub::with_workers(Arc::new(MemoryBroker::new()), 3);
    let mut receivers = Vec::new();
    for conn in 1..=7u64 {
        let (outbox, rx) = Outbox::new(conn, test_budget());
        let filter = Filter::parse(Some(&json!({"list_id": 3})), &schema()).unwrap();
        subscribe(&hub, &outbox, "s1", filter, Start::Now).await;
        receivers.push((outbox, rx));
    }
    assert_eq!(hub.subscription_count(), 7);
    for i in 0..50 {
        let row = json!({"id": i, "list_id": 3, "text": "x"});
        hub.broker()
            .publish("items", Message::created(row.as_object().unwrap().clone()))
            .await
            .unwrap();
    }
    for (_, rx) in &mut receivers {
        let _ = rx.recv().await; // the reply
        let mut texts = Vec::new();
        while texts.len() < 50 {
            texts.extend(rx.recv().await.texts());
        }
        for (i, t) in texts.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            assert_eq!(v["data"]["id"], json!(i));
        }
    }
}

/// Every frame queued so far, batches flattened.
fn drain(outbox: &Outbox, rx: &mut crate::hub::Receiver) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(item) = rx.try_recv() {
        out.extend(item.texts().iter().map(|t| t.as_str().to_owned()));
        outbox.sent(&item);
    }
    out
}

/// A route's subscribers: single and multiple subscriptions per connection, shared and
/// distinct ids, indexed and scanned filters, one joining, one with a tiny budget.
fn subscribers(hub: &Hub) -> Vec<(Arc<Outbox>, crate::hub::Receiver)> {
    let filters = [
        json!({"list_id": 1}),
        json!({"list_id": 2}),
        json!({"list_id__in": [1, 2]}),
        json!({"text__contains": "a"}),
        json!({}),
    ];
    let state = hub.shards[0].route("items");
    let mut st = state.lock().unwrap();
    let mut conns = Vec::new();
    let mut key = 0;
    for conn in 0..30u64 {
        // Connection 28 has one subscription: its runs overflow the budget.
        let budget = if conn == 28 {
            Budget {
                frames: 3,
                ..test_budget()
            }
        } else {
            test_budget()
        };
        let (outbox, rx) = Outbox::new(conn, budget);
        outbox.set_conn(crate::router::ConnId::test(&format!("c{conn}")));
        let subs = if conn % 6 == 5 { 2 } else { 1 };
        for n in 0..subs {
            key += 1;
            let filter = &filters[(conn as usize + n * 2) % filters.len()];
            let id = if conn % 4 == 3 {
                format!("s{}", n + 2)
            } else {
                format!("s{}", n + 1)
            };
            let filter = Filter::parse(Some(filter), &schema()).unwrap();
            st.insert(SubKey(key), outbox.clone(), Arc::from(id), filter);
            if conn != 7 {
                st.joined(SubKey(key));
            }
        }
        conns.push((outbox, rx));
    }
    conns
}

/// Messages of every kind on `items`: creations, moves between lists, edits, deletions,
/// custom events (two skipping a connection), one published twice.
fn burst() -> Vec<Envelope> {
    let row = |id: i64, list: i64, text: &str| {
        json!({"id": id, "list_id": list, "text": text})
            .as_object()
            .unwrap()
            .clone()
    };
    let mut messages = Vec::new();
    for i in 0..60i64 {
        let (list, text) = (i % 3, ["a", "b", "ab"][(i % 5 % 3) as usize]);
        messages.push(match i % 4 {
            0 => Message::created(row(i, list, text)),
            1 => Message::updated(row(i, list, text), row(i, (list + 1) % 3, "a")),
            2 => Message::deleted(row(i, list, text)),
            _ => Message::Custom {
                event: "ping".into(),
                data: json!({"list_id": list, "text": text}),
                id: Some(Arc::from(format!("m{i}"))),
                // Two skip a connection: one with one subscription, one with two.
                except: match i {
                    3 => Some(Arc::from("c4")),
                    7 => Some(Arc::from("c5")),
                    _ => None,
                },
            },
        });
    }
    messages.insert(10, messages[9].clone());
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| Envelope {
            route: Arc::from("items"),
            position: Position(1, i as u64 + 1),
            message: Arc::new(m),
            published_ms: 0,
        })
        .collect()
}

/// A run dispatched at once gives every connection the frames, in the order, that the
/// messages dispatched one by one give: one frame per message naming all of a
/// connection's matching subscriptions, slow consumers' backlogs alike.
#[tokio::test]
async fn a_run_dispatched_at_once_equals_one_message_at_a_time() {
    let (one, run) = (
        Hub::with_workers(Arc::new(MemoryBroker::new()), 1),
        Hub::with_workers(Arc::new(MemoryBroker::new()), 1),
    );
    let (mut by_one, mut by_run) = (subscribers(&one), subscribers(&run));
    let envs = burst();
    for env in &envs {
        one.dispatch_all(0, std::slice::from_ref(env));
    }
    run.dispatch_all(0, &envs);
    let mut batched = 0;
    for ((a, rx_a), (b, rx_b)) in by_one.iter_mut().zip(by_run.iter_mut()) {
        let items: Vec<Outbound> = std::iter::from_fn(|| rx_b.try_recv()).collect();
        items.iter().for_each(|i| b.sent(i));
        batched += items
            .iter()
            .filter(|i| matches!(i, Outbound::Batch(_)))
            .count();
        let b_frames: Vec<String> = items
            .iter()
            .flat_map(|i| i.texts())
            .map(|t| t.as_str().to_owned())
            .collect();
        let a_frames = drain(a, rx_a);
        assert_eq!(a_frames, b_frames, "connection {}", a.id());
        let owed = a.take_owed();
        assert_eq!(owed, b.take_owed(), "backlog of connection {}", a.id());
        assert_eq!(
            !owed.is_empty(),
            a.id() == 28,
            "only connection 28 falls behind"
        );
    }
    assert!(batched > 10, "runs are queued as batches ({batched})");
    // The joining subscription buffered the same messages.
    let key = (0..7).map(|c| if c % 6 == 5 { 2 } else { 1 }).sum::<u64>() + 1;
    let [a, b] = [&one, &run].map(|h| {
        let state = h.shards[0].route("items");
        let mut st = state.lock().unwrap();
        let buffered = st.take_buffer(SubKey(key)).unwrap();
        buffered
            .iter()
            .map(|e| e.position)
            .collect::<Vec<Position>>()
    });
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

/// A reader waiting for room is woken when the writer brings the queue back within budget,
/// and told "no" if it stays over it for the grace.
#[tokio::test]
async fn room_waits_for_the_budget_and_gives_up_after_the_grace() {
    let budget = Budget {
        frames: 3,
        bytes: 1 << 20,
        grace: std::time::Duration::from_millis(200),
    };
    let (outbox, mut rx) = Outbox::new(1, budget);
    for _ in 0..3 {
        outbox.send(Outbound::Text("x".into()));
    }
    assert!(outbox.over_budget());
    let waiter = tokio::spawn({
        let outbox = outbox.clone();
        async move { outbox.room().await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let frame = rx.recv().await;
    outbox.sent(&frame);
    assert!(waiter.await.unwrap(), "back within budget");
    outbox.send(Outbound::Text("y".into()));
    let t = std::time::Instant::now();
    assert!(!outbox.room().await, "still over after the grace");
    assert!(t.elapsed() >= std::time::Duration::from_millis(200));
}

/// A memory broker whose `head` waits until the test lets it answer.
struct GatedHead {
    inner: MemoryBroker,
    gate: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl Broker for GatedHead {
    async fn publish(&self, route: &str, message: Message) -> Result<(), BrokerError> {
        self.inner.publish(route, message).await
    }
    fn messages(&self) -> tokio::sync::mpsc::UnboundedReceiver<Envelope> {
        self.inner.messages()
    }
    async fn history(&self, route: &str, after: Position) -> Result<History, BrokerError> {
        self.inner.history(route, after).await
    }
    async fn head(&self, route: &str) -> Result<Position, BrokerError> {
        let _open = self.gate.acquire().await.expect("gate");
        self.inner.head(route).await
    }
}

/// The route's lock, if subscription `key` is there and still joining.
fn while_joining(state: &Mutex<RouteState>, key: SubKey) -> Option<MutexGuard<'_, RouteState>> {
    let mut st = state.lock().unwrap();
    st.take_buffer(key).is_some().then_some(st)
}

/// A subscription is live by the time its reply can be read: the reply goes out under the
/// route's lock together with the switch from joining to live, so an event the client causes
/// after the reply reaches all its subscriptions in one frame (never one per subscription).
/// The test holds the route's lock while the subscription (added, still joining: its broker
/// read is held back) goes on: the reply must not be out before the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_live_when_its_reply_is_out() {
    let broker = Arc::new(GatedHead {
        inner: MemoryBroker::new(),
        gate: tokio::sync::Semaphore::new(0),
    });
    let hub = Hub::start(broker.clone());
    let (outbox, mut rx) = Outbox::new(1, test_budget());
    let state = hub.shard(&outbox).route("items");
    let key = hub.next_key();
    let joining = {
        let (hub, outbox) = (hub.clone(), outbox.clone());
        tokio::spawn(async move {
            let reply = |_: &Joined| "reply".into();
            hub.subscribe(
                &outbox,
                key,
                "items",
                "s1".into(),
                Filter::all(),
                Start::Now,
                10,
                reply,
            )
            .await
            .unwrap()
        })
    };
    // Added, still joining (waiting for the broker's head): hold the lock.
    let held = loop {
        if let Some(st) = while_joining(&state, key) {
            break st;
        }
        tokio::task::yield_now().await;
    };
    broker.gate.add_permits(1);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        rx.try_recv().is_none(),
        "the reply went out while the subscription was still joining"
    );
    drop(held);
    joining.await.unwrap();
    let Some(Outbound::Text(reply)) = rx.try_recv() else {
        panic!("no reply")
    };
    assert_eq!(reply.as_str(), "reply");
}
