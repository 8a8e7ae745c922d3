//! Publishing what is not a logged model change (custom events, the `publish_*` helpers)
//! after commit: the current broker, transactions that hold such events back until commit,
//! and a retry queue while the broker is down.
//!
//! Model changes do not come here: they are recorded in the change log in their write's
//! transaction and relayed from there ([`crate::changelog`]); [`transaction`] only wakes the
//! relay when it commits. Events handed to [`emit`] inside a [`transaction`] are published
//! after it commits and dropped on rollback; outside one, at once.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sea_orm::{TransactionError, TransactionTrait};

use crate::broker::{Broker, Message};

type Pending = Arc<Mutex<Vec<(String, Message)>>>;

tokio::task_local! {
    static BROKER: Arc<dyn Broker>;
    static PENDING: Pending;
}

static GLOBAL: RwLock<Option<Arc<dyn Broker>>> = RwLock::new(None);

/// Makes `broker` the process-wide default publisher (used by code outside a server's
/// request handling, e.g. background jobs). A server installs its broker here when none is set.
pub fn install(broker: Arc<dyn Broker>) {
    *GLOBAL.write().expect("publisher lock") = Some(broker);
}

pub(crate) fn install_if_unset(broker: &Arc<dyn Broker>) {
    let mut global = GLOBAL.write().expect("publisher lock");
    if global.is_none() {
        *global = Some(broker.clone());
    }
}

/// Runs `fut` with `broker` as the publisher for every change it makes: how one process can
/// host several Dragon servers, each publishing to its own broker.
pub async fn with_broker<F: Future>(broker: Arc<dyn Broker>, fut: F) -> F::Output {
    BROKER.scope(broker, fut).await
}

/// The broker changes made here go to: the task's own, else the process default.
pub fn current() -> Option<Arc<dyn Broker>> {
    BROKER
        .try_with(Arc::clone)
        .ok()
        .or_else(|| GLOBAL.read().expect("publisher lock").clone())
}

/// Whether a [`transaction`] is open on this task (its changes wait for its commit).
pub fn in_transaction() -> bool {
    PENDING.try_with(|_| ()).is_ok()
}

/// The boxed-future callback sea-orm's transactions take.
pub type TxnFuture<'c, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>;

/// Runs `callback` in a database transaction whose model changes are published only after it
/// commits, and not at all if it rolls back. Nested calls publish with the outermost commit.
///
/// ```no_run
/// # mod todo_item {
/// #     use sea_orm::entity::prelude::*;
/// #     use serde::{Deserialize, Serialize};
/// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize, dragon_core::DragonModel)]
/// #     #[sea_orm(table_name = "todo_item")]
/// #     #[dragon(route = "todo-item")]
/// #     pub struct Model {
/// #         #[sea_orm(primary_key)]
/// #         pub id: i64,
/// #         pub text: String,
/// #     }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// #     pub enum Relation {}
/// # }
/// # use sea_orm::{ActiveModelTrait, Set};
/// # async fn save(db: sea_orm::DatabaseConnection) -> Result<(), Box<dyn std::error::Error>> {
/// let item = todo_item::ActiveModel { text: Set("milk".into()), ..Default::default() };
/// dragon_core::transaction(&db, |txn| Box::pin(async move {
///     item.insert(txn).await?;
///     Ok::<_, sea_orm::DbErr>(())
/// })).await?;
/// # Ok(())
/// # }
/// ```
pub async fn transaction<C, F, T, E>(db: &C, callback: F) -> Result<T, TransactionError<E>>
where
    C: TransactionTrait,
    F: for<'c> FnOnce(&'c C::Transaction) -> TxnFuture<'c, T, E> + Send,
    T: Send,
    E: std::fmt::Display + std::fmt::Debug + Send,
{
    let pending: Pending = Arc::default();
    let result = PENDING
        .scope(pending.clone(), db.transaction(callback))
        .await;
    if result.is_ok() {
        crate::changelog::wake();
        let changes = std::mem::take(&mut *pending.lock().expect("pending lock"));
        for (route, message) in changes {
            emit(&route, message).await;
        }
    }
    result
}

/// Publishes one change or event on `route`: queued if a [`transaction`] is open, else now.
/// A broker failure is never returned (the data is already committed): the change waits in
/// the retry queue and is published, in order, once the broker is back.
pub async fn emit(route: &str, message: Message) {
    let mut message = Some(message);
    let queued = PENDING
        .try_with(|p| {
            p.lock()
                .expect("pending lock")
                .push((route.to_owned(), message.take().expect("once")))
        })
        .is_ok();
    if queued {
        return;
    }
    let message = message.expect("not queued");
    match current() {
        Some(broker) => publish_or_retry(broker, route, message).await,
        None => tracing::warn!(%route, "no Dragon broker installed; change not published"),
    }
}

/// A committed change the broker refused, with the broker it is for and since when it waits.
#[derive(Clone)]
struct Waiting {
    broker: Arc<dyn Broker>,
    route: String,
    message: Message,
    since: Instant,
}

#[derive(Default)]
struct Retry {
    /// Oldest first.
    queue: VecDeque<Waiting>,
    running: bool,
    /// Routes that lost a change to a full queue: once the queue has drained, their
    /// subscribers are told to reload ([`Message::Gap`]), so the loss is never silent.
    lost: Vec<(Arc<dyn Broker>, String)>,
}

static RETRY: Mutex<Retry> = Mutex::new(Retry {
    queue: VecDeque::new(),
    running: false,
    lost: Vec::new(),
});

/// At most this many changes wait for a broker; beyond, the oldest are dropped (logged,
/// and their routes' subscribers told to reload once the broker is back).
#[cfg(not(test))]
const RETRY_CAPACITY: usize = 100_000;
#[cfg(test)]
const RETRY_CAPACITY: usize = 8;
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// How many committed changes are waiting for their broker.
pub fn pending_retries() -> usize {
    RETRY.lock().expect("retry lock").queue.len()
}

/// Committed changes not yet taken by the broker: how many, and how long the oldest waits.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    /// How many committed changes wait for the broker.
    pub waiting: usize,
    /// How long the oldest of them has waited; `None` when none waits.
    pub oldest: Option<Duration>,
}

/// The publish backlog now (for `/metrics` and `/healthz`).
pub fn backlog() -> Backlog {
    let retry = RETRY.lock().expect("retry lock");
    Backlog {
        waiting: retry.queue.len(),
        oldest: retry.queue.front().map(|w| w.since.elapsed()),
    }
}

async fn publish_or_retry(broker: Arc<dyn Broker>, route: &str, message: Message) {
    {
        let mut retry = RETRY.lock().expect("retry lock");
        if !retry.queue.is_empty() {
            // Keep order: nothing overtakes a change that is still waiting.
            enqueue(&mut retry, broker, route, message);
            return;
        }
    }
    if let Err(err) = broker.publish(route, message.clone()).await {
        tracing::warn!(%route, error = %err, "broker refused a committed change; will retry");
        enqueue(
            &mut RETRY.lock().expect("retry lock"),
            broker,
            route,
            message,
        );
    }
}

fn enqueue(retry: &mut Retry, broker: Arc<dyn Broker>, route: &str, message: Message) {
    if retry.queue.len() >= RETRY_CAPACITY
        && let Some(dropped) = retry.queue.pop_front()
    {
        tracing::error!(route = %dropped.route, "retry queue full: the oldest committed change \
            was dropped; the route's subscribers will be told to reload");
        if !retry.lost.iter().any(|(_, r)| *r == dropped.route) {
            retry.lost.push((dropped.broker, dropped.route));
        }
    }
    retry.queue.push_back(Waiting {
        broker,
        route: route.to_owned(),
        message,
        since: Instant::now(),
    });
    if !retry.running {
        retry.running = true;
        tokio::spawn(drain_retries());
    }
}

/// What the retry task does next.
enum Next {
    /// Publish the oldest waiting change.
    Change(Waiting),
    /// Everything waiting went out: tell a route that lost changes to reload.
    Reload(Arc<dyn Broker>, String),
    Done,
}

async fn drain_retries() {
    loop {
        let next = {
            let mut retry = RETRY.lock().expect("retry lock");
            match (retry.queue.front(), retry.lost.first()) {
                (Some(w), _) => Next::Change(w.clone()),
                (None, Some((broker, route))) => Next::Reload(broker.clone(), route.clone()),
                (None, None) => {
                    retry.running = false;
                    Next::Done
                }
            }
        };
        let sent = match next {
            Next::Done => return,
            Next::Change(w) => {
                let sent = w.broker.publish(&w.route, w.message).await.is_ok();
                if sent {
                    RETRY.lock().expect("retry lock").queue.pop_front();
                }
                sent
            }
            Next::Reload(broker, route) => {
                let sent = broker.publish(&route, Message::Gap).await.is_ok();
                if sent {
                    let mut retry = RETRY.lock().expect("retry lock");
                    retry.lost.retain(|(_, r)| *r != route);
                }
                sent
            }
        };
        if !sent {
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::mpsc;

    use super::*;
    use crate::broker::{BrokerError, Envelope, History, Position};

    /// Refuses the first `fail` publishes, then records them.
    struct Flaky {
        fail: AtomicUsize,
        got: Mutex<Vec<Message>>,
    }

    #[async_trait::async_trait]
    impl Broker for Flaky {
        async fn publish(&self, _route: &str, message: Message) -> Result<(), BrokerError> {
            if self.fail.load(Ordering::SeqCst) > 0 {
                self.fail.fetch_sub(1, Ordering::SeqCst);
                return Err(BrokerError::Unavailable("down".into()));
            }
            self.got.lock().unwrap().push(message);
            Ok(())
        }
        fn messages(&self) -> mpsc::UnboundedReceiver<Envelope> {
            mpsc::unbounded_channel().1
        }
        async fn history(&self, _: &str, _: Position) -> Result<History, BrokerError> {
            Ok(History::Gone)
        }
        async fn head(&self, _: &str) -> Result<Position, BrokerError> {
            Ok(Position(0, 0))
        }
    }

    #[tokio::test]
    async fn refused_changes_are_retried_in_order() {
        let flaky = Arc::new(Flaky {
            fail: AtomicUsize::new(3),
            got: Mutex::new(Vec::new()),
        });
        let broker: Arc<dyn Broker> = flaky.clone();
        with_broker(broker, async {
            for i in 0..5 {
                emit("r", Message::custom("e", serde_json::json!(i))).await;
            }
        })
        .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while flaky.got.lock().unwrap().len() < 5 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got: Vec<_> = flaky.got.lock().unwrap().clone();
        let order: Vec<_> = got
            .iter()
            .map(|m| match m {
                Message::Custom { data, .. } => data.as_i64().unwrap(),
                _ => -1,
            })
            .collect();
        assert_eq!(order, [0, 1, 2, 3, 4], "nothing lost, nothing reordered");
        assert_eq!(pending_retries(), 0);
    }

    #[tokio::test]
    async fn changes_dropped_from_a_full_queue_end_in_a_reload_signal() {
        let flaky = Arc::new(Flaky {
            fail: AtomicUsize::new(1_000_000),
            got: Mutex::new(Vec::new()),
        });
        let broker: Arc<dyn Broker> = flaky.clone();
        with_broker(broker, async {
            for i in 0..RETRY_CAPACITY + 3 {
                emit("r", Message::custom("e", serde_json::json!(i))).await;
            }
        })
        .await;
        assert_eq!(pending_retries(), RETRY_CAPACITY, "the queue stays bounded");
        let waiting = backlog();
        assert_eq!(waiting.waiting, RETRY_CAPACITY);
        assert!(waiting.oldest.is_some());
        flaky.fail.store(0, Ordering::SeqCst); // the broker is back
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while flaky.got.lock().unwrap().len() < RETRY_CAPACITY + 1
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = flaky.got.lock().unwrap().clone();
        assert_eq!(got.len(), RETRY_CAPACITY + 1, "{got:?}");
        assert!(
            matches!(got[0], Message::Custom { ref data, .. } if data == 3),
            "the oldest three were dropped: {got:?}"
        );
        assert_eq!(
            got.last(),
            Some(&Message::Gap),
            "then the route is told to reload"
        );
    }
}
