//! Two updates of one row racing: through two connections of one node, through two nodes on
//! Redis and one database, and with a broker that holds some publishes back. Every
//! subscriber must end with the database's final state, round after round, each version
//! arriving once and in order (and each writer's reply must be what it wrote, or the row as
//! the other left it).

mod common;
#[path = "common/redis.rs"]
mod redis_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Backend, TestApp, fresh_database, new_item, new_list};
use dragon_core::broker::{
    Broker, BrokerError, Envelope, History, MemoryBroker, Message, Position,
};
use dragon_core::client::Client;
use redis_support::{connect_broker, delete_keys, isolated_options, redis_url};
use serde_json::{Value, json};

/// Races `rounds` pairs of updates of one row, writer `a` against writer `b`, while
/// `watchers` subscribe; each must end every round at the database's state.
async fn race(setup: &Client, a: Arc<Client>, b: Arc<Client>, watchers: &[&Client], rounds: usize) {
    let list = new_list(setup, "race").await;
    let id = new_item(setup, list, "start").await["id"].clone();
    let mut subs = Vec::new();
    for w in watchers {
        let sub = w
            .subscribe("todo-item", json!({"filter": {"list_id": list}}))
            .await
            .unwrap();
        subs.push((sub, Value::Null, 0u64));
    }
    for round in 0..rounds {
        let write = |c: Arc<Client>, text: String, done: bool| {
            let id = id.clone();
            tokio::spawn(async move {
                c.call(
                    "todo-item",
                    "update",
                    json!({"id": id, "data": {"text": text, "done": done}}),
                )
                .await
                .expect("update")
            })
        };
        // Different fields and values, and sometimes the value the row already has.
        let ta = write(a.clone(), format!("a{}", round % 3), round % 2 == 0);
        let tb = write(b.clone(), format!("b{}", round % 2), round % 3 == 0);
        let (_, _) = (ta.await.unwrap(), tb.await.unwrap());
        let stored = setup
            .call("todo-item", "get_single", json!({"id": id}))
            .await
            .unwrap()
            .data;
        for (n, (live, latest, version)) in subs.iter_mut().enumerate() {
            let deadline = Instant::now() + Duration::from_secs(3);
            while *latest != stored {
                let left = deadline.saturating_duration_since(Instant::now());
                let Some(e) = live.next_within(left).await else {
                    panic!(
                        "round {round}: subscriber {n} holds {latest} but the database {stored}"
                    );
                };
                let v = e.version.expect("a version");
                assert!(v > *version, "round {round}: version {v} after {version}");
                *version = v;
                *latest = e.data.unwrap();
            }
        }
    }
}

async fn racing_updates_through_one_node(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (setup, watcher) = (app.client().await, app.client().await);
    let (a, b) = (Arc::new(app.client().await), Arc::new(app.client().await));
    race(&setup, a, b, &[&watcher], 150).await;
}

both_backends!(racing_updates_through_one_node);

/// Two nodes on one Redis and one database, each writer on its own node, a watcher on each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_updates_through_two_nodes() {
    let database_url = fresh_database(Backend::Postgres).await;
    let db = todo_app::open_database(&database_url).await.unwrap();
    let options = isolated_options();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let broker: Arc<dyn Broker> = connect_broker(&redis_url(), options.clone()).await;
        let dragon = todo_app::builder(&db).broker(broker).build();
        nodes.push(TestApp::serve(dragon, db.clone(), database_url.clone()).await);
    }
    let setup = nodes[0].client().await;
    let (w1, w2) = (nodes[0].client().await, nodes[1].client().await);
    let a = Arc::new(nodes[0].client().await);
    let b = Arc::new(nodes[1].client().await);
    race(&setup, a, b, &[&w1, &w2], 200).await;
    delete_keys(&redis_url(), &options.key_prefix);
}

/// A broker that holds every other publish back for a while: the change log still reaches
/// subscribers in commit order.
struct Slow {
    inner: MemoryBroker,
    calls: AtomicU64,
}

#[async_trait::async_trait]
impl Broker for Slow {
    async fn publish(&self, route: &str, message: Message) -> Result<(), BrokerError> {
        self.publish_many(route, vec![message]).await
    }
    async fn publish_many(&self, route: &str, messages: Vec<Message>) -> Result<(), BrokerError> {
        if self.calls.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        self.inner.publish_many(route, messages).await
    }
    fn messages(&self) -> tokio::sync::mpsc::UnboundedReceiver<Envelope> {
        self.inner.messages()
    }
    async fn history(&self, route: &str, after: Position) -> Result<History, BrokerError> {
        self.inner.history(route, after).await
    }
    async fn head(&self, route: &str) -> Result<Position, BrokerError> {
        self.inner.head(route).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_updates_with_publishes_held_back() {
    let slow: Arc<dyn Broker> = Arc::new(Slow {
        inner: MemoryBroker::new(),
        calls: AtomicU64::new(0),
    });
    let app = TestApp::start_with(Backend::Postgres, Some(slow), |b| b).await;
    let (setup, watcher) = (app.client().await, app.client().await);
    let (a, b) = (Arc::new(app.client().await), Arc::new(app.client().await));
    race(&setup, a, b, &[&watcher], 100).await;
}
