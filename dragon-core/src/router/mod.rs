//! Routers: named handlers of verbs. [`ModelRouter`] serves a model's CRUD and live
//! subscriptions; implement [`Router`] for custom verbs (chat, likes, anything).

mod conn_id;
mod model;
mod rules;
mod validate;
mod verbs;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::ws::Utf8Bytes;
use serde_json::{Value, json};

use crate::broker::{Message, Position};
use crate::error::Error;
use crate::filter::Filter;
use crate::hub::{Hub, Outbound, Outbox, Start, SubKey};
use crate::presence::session::Session;
use crate::protocol::{Output, Reply, RequestId};

pub use conn_id::ConnId;
pub use model::ModelRouter;
pub use rules::{ParseVerbError, RowRule, Rule, Verb};
pub use validate::Validator;
pub use verbs::{Subscribe, Verbs};

/// A named set of verbs, served at `route`.
#[async_trait::async_trait]
pub trait Router: Send + Sync + 'static {
    /// The route name clients address (`todo-item`).
    fn name(&self) -> &str;
    /// Handles one verb. Unknown verbs answer [`Error::UnknownVerb`], before any other
    /// check: `/metrics` labels a verb by its name unless it answered that.
    async fn call(&self, ctx: &Ctx, verb: &str, args: Value) -> Result<Output, Error>;

    /// A mistake in the router's own configuration, found when the server is built (so it
    /// fails at start-up, not on a client's request). The default finds none.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }

    /// A problem with what the router needs at run time (its database, say), checked once
    /// before the server serves. The default finds none.
    async fn check_services(&self) -> Result<(), String> {
        Ok(())
    }

    /// The database this router's models write to: the server runs a change-log relay for
    /// it ([`crate::changelog`]). The default is none.
    fn database(&self) -> Option<&sea_orm::DatabaseConnection> {
        None
    }
}

type SubEntry = (Arc<str>, SubKey);

/// A server's routers by route name.
pub(crate) type Routers = Arc<HashMap<String, Arc<dyn Router>>>;

/// A place among a connection's subscriptions, held while one is being made; given back on
/// drop unless the subscription took it.
pub(crate) struct SubSlot {
    conn: Arc<Conn>,
    taken: bool,
}

impl SubSlot {
    /// The subscription is in the connection's map now (call under the `subs` lock).
    fn take(&mut self) {
        self.taken = true;
        self.conn.joining.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for SubSlot {
    fn drop(&mut self) {
        if !self.taken {
            let _subs = self.conn.subs.lock().expect("subs lock");
            self.conn.joining.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// One connection's state shared by its request tasks.
pub(crate) struct Conn {
    /// Shared, not copied, by everything that names the connection (presence members).
    pub(crate) id: ConnId,
    pub(crate) user: RwLock<Option<Value>>,
    pub(crate) outbox: Arc<Outbox>,
    /// Subscription id -> (route, hub key).
    subs: Mutex<HashMap<Arc<str>, SubEntry>>,
    /// Subscriptions being made (see [`SubSlot`]); changed under the `subs` lock, so that
    /// with `subs` it counts exactly against the limit.
    joining: AtomicUsize,
    /// Set (under the `subs` lock) once the connection has closed.
    closed: AtomicBool,
    next_sub: AtomicU64,
    /// The server's limits.
    pub(crate) limits: crate::server::Limits,
    /// The presence keys it joined or watches.
    pub(crate) presence: Session,
    /// Routes' row rules compiled for the current user.
    pub(crate) rules: rules::Compiled,
    /// When the current identity expires (its token).
    expires_at: Mutex<Option<std::time::SystemTime>>,
}

impl Conn {
    pub(crate) fn new(
        id: ConnId,
        user: Option<Value>,
        outbox: Arc<Outbox>,
        limits: &crate::server::Limits,
    ) -> Self {
        Conn {
            id,
            user: RwLock::new(user),
            outbox,
            subs: Mutex::new(HashMap::new()),
            joining: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            next_sub: AtomicU64::new(1),
            limits: *limits,
            presence: Session::new(limits.max_presence_keys, limits.presence_updates_per_second),
            rules: rules::Compiled::default(),
            expires_at: Mutex::new(None),
        }
    }

    pub(crate) fn set_expiry(&self, at: Option<std::time::SystemTime>) {
        *self.expires_at.lock().expect("expiry lock") = at;
    }

    /// When the connection must close unless its identity is renewed: expiry + `grace`.
    pub(crate) fn expiry_deadline(
        &self,
        grace: std::time::Duration,
    ) -> Option<tokio::time::Instant> {
        let end = (*self.expires_at.lock().expect("expiry lock"))? + grace;
        let left = end
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        Some(tokio::time::Instant::now() + left)
    }

    /// Whether the identity expired more than `grace` ago.
    pub(crate) fn expired(&self, grace: std::time::Duration) -> bool {
        self.expires_at
            .lock()
            .expect("expiry lock")
            .is_some_and(|at| std::time::SystemTime::now() >= at + grace)
    }

    /// The authenticated user object, if any.
    pub(crate) fn user(&self) -> Option<Value> {
        self.user.read().expect("user lock").clone()
    }

    /// Ends every subscription (the connection stays open): each route's subscribers get
    /// one `resync` frame naming them, so clients subscribe again (liveList does by itself).
    pub(crate) fn end_subscriptions(&self, hub: &Hub) {
        let subs = std::mem::take(&mut *self.subs.lock().expect("subs lock"));
        let mut by_route: std::collections::BTreeMap<Arc<str>, Vec<Arc<str>>> =
            std::collections::BTreeMap::new();
        for (sub, (route, key)) in subs {
            hub.unsubscribe(&self.outbox, &route, key);
            by_route.entry(route).or_default().push(sub);
        }
        for (route, mut subs) in by_route {
            subs.sort_unstable();
            self.outbox
                .send(Outbound::Text(crate::hub::resync_frame(&route, &subs)));
        }
    }

    /// Ends the subscriptions of `route` (all routes if `None`) that `pick` selects, telling
    /// the client with one frame per route made by `frame`.
    pub(crate) fn end_where(
        &self,
        hub: &Hub,
        route: Option<&str>,
        pick: impl Fn(&Filter) -> bool,
        frame: impl Fn(&str, &[Arc<str>]) -> Utf8Bytes,
    ) -> usize {
        let ended: Vec<(Arc<str>, SubEntry)> = {
            let mut subs = self.subs.lock().expect("subs lock");
            let chosen: Vec<Arc<str>> = subs
                .iter()
                .filter(|(_, (r, key))| {
                    route.is_none_or(|want| &**r == want)
                        && hub
                            .filter_of(&self.outbox, r, *key)
                            .is_some_and(|f| pick(&f))
                })
                .map(|(id, _)| id.clone())
                .collect();
            chosen
                .into_iter()
                .filter_map(|id| subs.remove(&id).map(|e| (id, e)))
                .collect()
        };
        let count = ended.len();
        let mut by_route: std::collections::BTreeMap<Arc<str>, Vec<Arc<str>>> =
            std::collections::BTreeMap::new();
        for (sub, (route, key)) in ended {
            hub.unsubscribe(&self.outbox, &route, key);
            by_route.entry(route).or_default().push(sub);
        }
        for (route, mut subs) in by_route {
            subs.sort_unstable();
            self.outbox.send(Outbound::Text(frame(&route, &subs)));
        }
        count
    }

    /// Access revoked (`what`: `user` or `connection`): every subscription ends with an
    /// `error` event (one on the `dragon` route if it had none), and the user is gone.
    pub(crate) fn revoke(&self, hub: &Hub, what: &str) {
        let ended = self.end_where(
            hub,
            None,
            |_| true,
            |route, subs| crate::hub::revoked_frame(route, subs, what),
        );
        if ended == 0 {
            let frame = crate::hub::revoked_frame(crate::server::CONTROL_ROUTE, &[], what);
            self.outbox.send(Outbound::Text(frame));
        }
        *self.user.write().expect("user lock") = None;
        self.rules.clear();
        self.set_expiry(None);
        crate::presence::reset(self, hub.presence());
    }

    /// The connection's user, for revocation by user.
    pub(crate) fn user_matches(&self, field: &str, value: &Value) -> bool {
        self.user
            .read()
            .expect("user lock")
            .as_ref()
            .is_some_and(|u| u.get(field) == Some(value))
    }

    /// Drops every subscription of a closing connection.
    pub(crate) fn close(&self, hub: &Hub) {
        let subs = {
            let mut subs = self.subs.lock().expect("subs lock");
            self.closed.store(true, Ordering::Release);
            std::mem::take(&mut *subs)
        };
        for (_, (route, key)) in subs {
            hub.unsubscribe(&self.outbox, &route, key);
        }
        crate::presence::close(self, hub.presence());
    }
}

/// What a verb handler knows of its caller, and what it can do on the connection. Cheap to
/// clone (handlers of [`Verbs`] get their own).
#[derive(Clone)]
pub struct Ctx {
    pub(crate) conn: Arc<Conn>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) routers: Routers,
    pub(crate) request_id: Option<RequestId>,
    /// The request's place among its connection's requests (they run concurrently).
    pub(crate) seq: u64,
    pub(crate) replied: Arc<AtomicBool>,
}

impl Ctx {
    pub(crate) fn new(
        conn: Arc<Conn>,
        hub: Arc<Hub>,
        routers: Routers,
        request_id: Option<RequestId>,
        seq: u64,
    ) -> Self {
        Ctx {
            conn,
            hub,
            routers,
            request_id,
            seq,
            replied: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The connection's id (as in its `hello`).
    pub fn conn_id(&self) -> &str {
        &self.conn.id
    }

    /// The authenticated user object, if any.
    pub fn user(&self) -> Option<Value> {
        self.conn.user()
    }

    /// The user, or [`Error::Unauthenticated`].
    pub fn require_user(&self) -> Result<Value, Error> {
        self.user().ok_or(Error::Unauthenticated)
    }

    /// Queues this request's reply now (for verbs whose reply must precede events they
    /// cause); the connection then sends no other.
    pub(crate) fn reply_now(&self, out: Output) {
        let reply = Reply::success(self.request_id.clone(), out);
        self.conn
            .outbox
            .send(Outbound::Text(Utf8Bytes::from(reply.to_json())));
        self.replied.store(true, Ordering::Release);
    }

    /// Whether the caller may see object `id` of `route`: what its `get_single` answers for
    /// them, with every rule of that route. `Ok(false)` for objects that are missing or
    /// not theirs to see (the two are never told apart); an error for other failures. A
    /// route this server does not serve is an error.
    pub async fn can_see(&self, route: &str, id: &Value) -> Result<bool, Error> {
        let router = self
            .routers
            .get(route)
            .ok_or_else(|| Error::Internal(format!("no router serves {route:?}")))?;
        let inner = Ctx::new(
            self.conn.clone(),
            self.hub.clone(),
            self.routers.clone(),
            None,
            self.seq,
        );
        match router.call(&inner, "get_single", json!({ "id": id })).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound | Error::Forbidden(_) | Error::Unauthenticated) => Ok(false),
            Err(Error::BadRequest(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Publishes a custom event on `route` to every matching subscriber on every node.
    pub async fn publish(&self, route: &str, event: &str, data: Value) -> Result<(), Error> {
        self.hub
            .broker()
            .publish(route, Message::custom(event, data))
            .await
            .map_err(Error::from)
    }

    /// Publishes a custom event on `route` to every matching subscriber on every node except
    /// this connection (a typing indicator, a cursor: the sender knows already).
    pub async fn publish_to_others(
        &self,
        route: &str,
        event: &str,
        data: Value,
    ) -> Result<(), Error> {
        let message = Message::custom(event, data).except(&self.conn.id);
        self.hub
            .broker()
            .publish(route, message)
            .await
            .map_err(Error::from)
    }

    /// Sends `{"event": event, "data": data}` to connection `conn`, on whichever node it is.
    pub async fn send_to(&self, conn: &str, event: &str, data: Value) -> Result<(), Error> {
        crate::server::send_to(self.hub.broker(), conn, event, data).await
    }

    /// The position reads on `route` are current at.
    pub async fn position(&self, route: &str) -> Result<Position, Error> {
        self.hub.position(&self.conn.outbox, route).await
    }

    /// Subscribes this connection to `route` with `filter`, joining the stream at `start`.
    /// The reply is sent from here (before any replayed event); `snapshot` items, if given,
    /// go into it. Returns the reply's data. Routers reach it by returning a subscription
    /// ([`Subscribe`] from a [`Verbs`] handler), so no handler can answer twice.
    /// Parses a client's filter under the server's filter limits ([`crate::Limits::filter`]).
    pub fn client_filter(
        &self,
        value: Option<&Value>,
        schema: &crate::schema::Schema,
    ) -> Result<Filter, Error> {
        Filter::parse_limited(value, schema, &self.conn.limits.filter)
    }

    /// Takes a place among the connection's subscriptions, before any work for a new one
    /// (its snapshot query): `rate_limited` if they are all taken. Exact under concurrent
    /// subscribes: places being taken count as taken.
    pub(crate) fn reserve_subscription(&self) -> Result<SubSlot, Error> {
        let subs = self.conn.subs.lock().expect("subs lock");
        let max = self.conn.limits.max_subscriptions;
        if subs.len() + self.conn.joining.load(Ordering::Acquire) >= max {
            return Err(Error::RateLimited(format!(
                "at most {max} subscriptions per connection (limit max_subscriptions)"
            )));
        }
        self.conn.joining.fetch_add(1, Ordering::AcqRel);
        Ok(SubSlot {
            conn: self.conn.clone(),
            taken: false,
        })
    }

    pub(crate) async fn subscribe(
        &self,
        mut slot: SubSlot,
        route: &str,
        filter: Filter,
        start: Start,
        show_recovered: bool,
        snapshot: Option<Vec<Value>>,
    ) -> Result<Value, Error> {
        let sub_id: Arc<str> = Arc::from(format!(
            "s{}",
            self.conn.next_sub.fetch_add(1, Ordering::Relaxed)
        ));
        let route_name: Arc<str> = Arc::from(route);
        // Known to the connection before its reply goes out, so an `unsubscribe` sent right
        // after the reply finds it even while its replay is still being sent.
        let key = self.hub.next_key();
        {
            let mut subs = self.conn.subs.lock().expect("subs lock");
            if self.conn.closed.load(Ordering::Acquire) {
                return Err(Error::Internal("the connection closed".into()));
            }
            slot.take();
            subs.insert(sub_id.clone(), (route_name.clone(), key));
        }
        let mut data = Value::Null;
        let request_id = self.request_id.clone();
        let joined = self
            .hub
            .subscribe(
                &self.conn.outbox,
                key,
                route,
                sub_id.clone(),
                filter,
                start,
                self.conn.limits.max_replay,
                |j| {
                    let mut body = json!({"sub": &*sub_id, "position": j.position.to_string()});
                    if show_recovered {
                        body["recovered"] = Value::Bool(j.recovered);
                    }
                    if let Some(items) = snapshot {
                        body["items"] = Value::Array(items);
                    }
                    data = body.clone();
                    Utf8Bytes::from(Reply::success(request_id, Output::data(body)).to_json())
                },
            )
            .await;
        let joined = match joined {
            Ok(joined) => joined,
            Err(err) => {
                self.conn.subs.lock().expect("subs lock").remove(&sub_id);
                return Err(err);
            }
        };
        self.replied.store(true, Ordering::Release);
        if self.conn.closed.load(Ordering::Acquire) {
            // The connection closed while this subscription was joining: drop it too.
            self.hub.unsubscribe(&self.conn.outbox, route, joined.key);
        }
        Ok(data)
    }

    /// Ends one of this connection's subscriptions.
    pub fn unsubscribe(&self, sub: &str) -> Result<Output, Error> {
        let removed = self.conn.subs.lock().expect("subs lock").remove(sub);
        match removed {
            Some((route, key)) => {
                self.hub.unsubscribe(&self.conn.outbox, &route, key);
                Ok(Output::data(json!({ "sub": sub })))
            }
            None => Err(Error::NotFound),
        }
    }
}
