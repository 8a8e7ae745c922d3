//! Getting committed changes to the broker: the current broker, and transactions that hold
//! their changes back until commit.
//!
//! sea-orm hooks get no application state and run inside the caller's transaction, so changes
//! are handed to [`emit`], which either queues them in the enclosing [`transaction`] (published
//! after commit, dropped on rollback) or, outside one, publishes at once (the statement has
//! already committed).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};

use sea_orm::{DbErr, TransactionError, TransactionTrait};

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
/// ```ignore
/// dragon_core::transaction(&db, |txn| Box::pin(async move {
///     item.insert(txn).await?;
///     Ok::<_, DbErr>(())
/// })).await?;
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
        let changes = std::mem::take(&mut *pending.lock().expect("pending lock"));
        for (route, message) in changes {
            emit(&route, message).await;
        }
    }
    result
}

/// Publishes one change or event on `route`: queued if a [`transaction`] is open, else now.
/// A broker failure is logged, never returned: the data is already committed.
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
        Some(broker) => {
            if let Err(err) = broker.publish(route, message).await {
                tracing::error!(%route, error = %err, "publishing a committed change failed");
            }
        }
        None => tracing::warn!(%route, "no Dragon broker installed; change not published"),
    }
}

/// The error a hook returns for a change made in a transaction Dragon cannot see commit.
pub(crate) fn foreign_transaction_error() -> DbErr {
    DbErr::Custom(
        "dragon: this change is inside a transaction opened without dragon_core::transaction; \
         Dragon cannot know whether it commits, so it refuses rather than publish too early"
            .to_owned(),
    )
}
