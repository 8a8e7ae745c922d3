//! Presence: who is on each key of a route (an object id or a free string), with a small
//! state each (`{"editing": true}`), live on every node.
//!
//! - [`Presence`] is what a router enables: its limits, and the verbs `presence_join`,
//!   `presence_update`, `presence_leave` and `presence_watch` (protocol section 7).
//! - The broker keeps each key's members for all nodes and carries every change to every
//!   node, in one order per key ([`crate::broker::Broker::presence_join`] and friends); with
//!   Redis it also removes the members of nodes that died (leases, see `docs/presence.md`).
//! - Each node's registry keeps a view of the keys its connections watch and sends them
//!   the changes (`registry.rs`); each connection's session remembers its keys, so closing
//!   leaves them all at once, and limits its rate of updates (`limiter.rs`).
//!
//! Guarantees: every watcher of a key sees its changes in the same order, after the member
//! list it was given; a connection never gets events for its own changes; a closed
//! connection leaves everywhere at once.

mod limiter;
pub(crate) mod registry;
pub(crate) mod session;
mod types;

use std::future::Future;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::error::{Error, arg};
use crate::protocol::Output;
use crate::router::{Conn, Ctx};

use limiter::{Admit, Dropped, Next};
use registry::{Mode, ViewKey};

pub use registry::Registry;
pub use types::{
    JoinOutcome, MAX_KEY_BYTES, Member, PresenceDiff, PresenceKey, PresenceSignal, Snapshot,
};

/// The verbs of protocol section 7.
pub const VERBS: [&str; 4] = [
    "presence_join",
    "presence_update",
    "presence_leave",
    "presence_watch",
];

/// Which keys a [`crate::ModelRouter`] accepts (custom routers decide in their own check).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Keys {
    /// Any integer or string.
    #[default]
    Any,
    /// Only ids of objects the connection can read (`get_single`); others are `not_found`.
    Objects,
    /// Any string, and ids of objects the connection can read (for integer-keyed models).
    ObjectsOrStrings,
}

/// Presence on a route: enable it with [`crate::ModelRouter::presence`], or own one in a
/// custom router and hand it the presence verbs ([`Presence::handles`], [`Presence::call`]).
#[derive(Debug, Clone)]
pub struct Presence {
    max_members: usize,
    max_state_bytes: usize,
    keys: Keys,
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            max_members: 100,
            max_state_bytes: 1024,
            keys: Keys::Any,
        }
    }
}

impl Presence {
    /// Presence with the defaults: 100 members per key, 1,024 bytes of state, any key.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most members one key may have (default 100); one more is `rate_limited`.
    pub fn max_members(mut self, n: usize) -> Self {
        self.max_members = n;
        self
    }

    /// The largest state, as JSON, in bytes (default 1,024); larger is a `validation` error.
    pub fn max_state_bytes(mut self, n: usize) -> Self {
        self.max_state_bytes = n;
        self
    }

    /// Which keys a model router accepts.
    pub fn keys(mut self, keys: Keys) -> Self {
        self.keys = keys;
        self
    }

    /// The key rule set by [`Presence::keys`].
    pub fn key_rule(&self) -> Keys {
        self.keys
    }

    /// Whether `verb` is a presence verb.
    pub fn handles(verb: &str) -> bool {
        VERBS.contains(&verb)
    }

    /// Serves one presence verb on `route`. `check` runs for joins and watches with the key
    /// (refuse with `not_found` what the caller may not see).
    pub async fn call<F, Fut>(
        &self,
        ctx: &Ctx,
        route: &str,
        verb: &str,
        args: Value,
        check: F,
    ) -> Result<Output, Error>
    where
        F: FnOnce(PresenceKey) -> Fut,
        Fut: Future<Output = Result<(), Error>>,
    {
        let key = PresenceKey::parse(arg(&args, "key")?)?;
        let view_key: ViewKey = (Arc::from(route), key.clone());
        match verb {
            "presence_join" => {
                let state = self.state(&args, false)?;
                check(key).await?;
                if ctx.conn.presence.is_member(&view_key) {
                    // Joining again is an update: the same rate limit applies.
                    return update(ctx, view_key, state).await;
                }
                self.join(ctx, view_key, state).await
            }
            "presence_update" => {
                let state = self.state(&args, true)?;
                update(ctx, view_key, state).await
            }
            "presence_leave" => Ok(leave(ctx, view_key).await),
            "presence_watch" => {
                let mode = match args.get("count") {
                    None | Some(Value::Null) | Some(Value::Bool(false)) => Mode::Members,
                    Some(Value::Bool(true)) => Mode::Count,
                    Some(_) => return Err(Error::bad_request("count must be a boolean")),
                };
                check(key).await?;
                watch(ctx, view_key, mode).await
            }
            _ => Err(Error::UnknownVerb {
                route: route.to_owned(),
                verb: verb.to_owned(),
            }),
        }
    }

    /// The `state` argument: an object within the size limit (`{}` if a join leaves it out).
    fn state(&self, args: &Value, required: bool) -> Result<Value, Error> {
        let state = match args.get("state") {
            None | Some(Value::Null) if !required => return Ok(Value::Object(Map::new())),
            None | Some(Value::Null) => {
                return Err(Error::bad_request("missing argument \"state\""));
            }
            Some(v) => v,
        };
        if !state.is_object() {
            return Err(Error::bad_request("state must be an object"));
        }
        let size = serde_json::to_string(state)?.len();
        if size > self.max_state_bytes {
            return Err(Error::field(
                "state",
                format!("at most {} bytes of JSON", self.max_state_bytes),
            ));
        }
        Ok(state.clone())
    }

    async fn join(&self, ctx: &Ctx, key: ViewKey, state: Value) -> Result<Output, Error> {
        let conn = &ctx.conn;
        let registry = ctx.hub.presence();
        let was_member = conn.presence.is_member(&key);
        let fresh = conn.presence.track(&key)?;
        let conn_id = conn.id.clone();
        registry.watch(&key, &conn.outbox, &conn_id, Mode::Members);
        let member = Member {
            conn: conn_id.clone(),
            user: ctx.user().unwrap_or(Value::Null),
            state,
        };
        let outcome = registry
            .broker()
            .presence_join(&key.0, &key.1, &member, self.max_members)
            .await;
        let version = match outcome {
            Ok(JoinOutcome::Joined(v)) => v,
            Ok(JoinOutcome::Full) => {
                if fresh {
                    stop_watching(ctx, &key);
                }
                return Err(Error::RateLimited(format!(
                    "this key has its maximum of {} members",
                    self.max_members
                )));
            }
            Err(err) => {
                if fresh {
                    stop_watching(ctx, &key);
                }
                if !was_member {
                    // The join may have been applied all the same (a Redis command that
                    // timed out can still run): take it back, or it would stay forever.
                    registry.leave_later(key.0.clone(), key.1.clone(), conn_id);
                }
                return Err(err.into());
            }
        };
        if !conn.presence.joined(&key) {
            // The connection closed while joining: take the join back.
            registry.leave_later(key.0.clone(), key.1.clone(), conn_id);
            return Err(Error::Unavailable("the connection closed".into()));
        }
        registry.settle(&key, version).await?;
        reply(ctx, &key)
    }
}

/// Updates the connection's state on a key it joined, within its rate (see `limiter.rs`).
async fn update(ctx: &Ctx, key: ViewKey, state: Value) -> Result<Output, Error> {
    let conn = &ctx.conn;
    if !conn.presence.is_member(&key) {
        return Err(Error::bad_request(format!(
            "not a member of key {}: presence_join first",
            key.1
        )));
    }
    let registry = ctx.hub.presence();
    let version = match conn.presence.limiter.admit(&key, &state, ctx.seq) {
        Admit::Now => set_state(registry, conn, &key, state).await?,
        Admit::Superseded => 0,
        Admit::Later { answer, flush } => {
            if flush {
                tokio::spawn(flush_updates(conn.clone(), registry.clone()));
            }
            match answer.await {
                Ok(Ok(v)) => v,
                Ok(Err(Dropped::Left)) => {
                    return Err(Error::bad_request(format!(
                        "left key {} before the update was applied",
                        key.1
                    )));
                }
                Ok(Err(Dropped::Broker(msg))) => return Err(Error::Unavailable(msg)),
                Err(_) => return Err(Error::Unavailable("the connection closed".into())),
            }
        }
    };
    registry.settle(&key, version).await?;
    reply(ctx, &key)
}

/// Publishes a member's new state; the key's version after it.
async fn set_state(
    registry: &Registry,
    conn: &Conn,
    key: &ViewKey,
    state: Value,
) -> Result<u64, Error> {
    let member = Member {
        conn: conn.id.clone(),
        user: conn.user().unwrap_or(Value::Null),
        state,
    };
    match registry
        .broker()
        .presence_join(&key.0, &key.1, &member, usize::MAX)
        .await?
    {
        JoinOutcome::Joined(v) => Ok(v),
        JoinOutcome::Full => Err(Error::Internal("a member found its key full".into())),
    }
}

/// Applies a connection's coalesced updates as its budget allows, answering their requests.
async fn flush_updates(conn: Arc<Conn>, registry: Arc<Registry>) {
    loop {
        match conn.presence.limiter.next() {
            Next::Done => return,
            Next::Wait(d) => tokio::time::sleep(d).await,
            Next::Apply(key, state, waiters) => {
                let result = if conn.presence.is_member(&key) {
                    set_state(&registry, &conn, &key, state)
                        .await
                        .map_err(|e| Dropped::Broker(e.to_string()))
                } else {
                    Err(Dropped::Left)
                };
                for w in waiters {
                    let _ = w.send(result.clone());
                }
            }
        }
    }
}

/// Stops watching (and, for a member, leaves) a key. Idempotent; a leave the broker does
/// not take now is retried in the background.
async fn leave(ctx: &Ctx, key: ViewKey) -> Output {
    let conn = &ctx.conn;
    let role = conn.presence.forget(&key);
    conn.presence.limiter.forget(&key);
    let registry = ctx.hub.presence();
    registry.unwatch(&key, conn.outbox.id());
    if role.is_some_and(|r| r.member) {
        let conn_id = conn.id.clone();
        if let Err(err) = registry
            .broker()
            .presence_leave(&key.0, &key.1, &conn_id)
            .await
        {
            tracing::debug!(error = %err, "presence leave failed; retrying in the background");
            registry.leave_later(key.0.clone(), key.1.clone(), conn_id);
        }
    }
    Output::data(json!({ "key": key.1.to_json() }))
}

async fn watch(ctx: &Ctx, key: ViewKey, mode: Mode) -> Result<Output, Error> {
    let conn = &ctx.conn;
    let fresh = conn.presence.track(&key)?;
    let registry = ctx.hub.presence();
    let conn_id = conn.id.clone();
    registry.watch(&key, &conn.outbox, &conn_id, mode);
    if let Err(err) = registry.settle(&key, 0).await {
        if fresh {
            stop_watching(ctx, &key);
        }
        return Err(err);
    }
    reply(ctx, &key)
}

fn stop_watching(ctx: &Ctx, key: &ViewKey) {
    ctx.conn.presence.forget(key);
    ctx.hub.presence().unwatch(key, ctx.conn.outbox.id());
}

/// Queues the reply (member list or count) under the key's lock: no event overtakes it.
fn reply(ctx: &Ctx, key: &ViewKey) -> Result<Output, Error> {
    let data = ctx
        .hub
        .presence()
        .reply(key, ctx.conn.outbox.id(), |data| {
            ctx.reply_now(Output::data(data))
        })?;
    Ok(Output::data(data))
}

/// A closing connection leaves every key it joined, and stops watching the others.
pub(crate) fn close(conn: &Conn, registry: &Registry) {
    leave_all(conn, registry, conn.presence.close());
}

/// The connection's user changed (or lost its access): it leaves and stops watching every
/// key it had as the previous user; it may join again as the new one.
pub(crate) fn reset(conn: &Conn, registry: &Registry) {
    leave_all(conn, registry, conn.presence.reset());
}

fn leave_all(conn: &Conn, registry: &Registry, keys: Vec<(ViewKey, session::Role)>) {
    let conn_id = conn.id.clone();
    for (key, role) in keys {
        registry.unwatch(&key, conn.outbox.id());
        if role.member {
            registry.leave_later(key.0, key.1, conn_id.clone());
        }
    }
}
