//! Presence on Redis: members in one hash per key, every change one atomic script call that
//! also publishes the diff on the presence channel, and node leases that let the survivors
//! remove the members of a node that died. Layout and timings: `docs/presence.md`.
//!
//! - Each node holds a lease (a score in a sorted set, by Redis's clock) refreshed every
//!   `timeout / 5` and lasting `timeout * 0.6`; every `timeout / 10` each node reaps the
//!   nodes whose lease ran out (one script: their members leave, their diffs go out). A
//!   killed node's members are thus gone within `timeout` of its last refresh.
//! - A refresh that finds its lease missing (Redis restarted empty, or this node was cut off
//!   long enough to be reaped) announces again every member this node holds.
//! - After a reconnection or a receive overflow diffs may be lost: the hub is told to read
//!   every key it serves again ([`PresenceSignal::Resync`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::types::Value as RedisValue;
use fred::types::scripts::Script;
use tokio::sync::{Notify, RwLock, mpsc};

use super::{Shared, unavailable};
use crate::broker::BrokerError;
use crate::presence::{JoinOutcome, Member, PresenceDiff, PresenceKey, PresenceSignal, Snapshot};

/// The presence script (join, leave, lease, reap), see `presence.lua`.
pub const PRESENCE_LUA: &str = include_str!("presence.lua");

/// (route, key JSON, conn) -> member JSON: what this node holds, to announce again.
type Held = HashMap<(String, String, String), String>;

pub(super) struct PresenceState {
    node: String,
    base: String,
    seq_key: String,
    pub(super) channel: String,
    script: Script,
    timeout: Duration,
    held: Mutex<Held>,
    /// Announcing again excludes joins and leaves, so none is undone by a stale re-join.
    gate: RwLock<()>,
    senders: Mutex<Vec<mpsc::UnboundedSender<PresenceSignal>>>,
    /// Wakes the lease task at once (after a reconnection).
    kick: Notify,
}

impl PresenceState {
    pub(super) fn new(prefix: &str, timeout: Duration) -> Self {
        let base = format!("{{{prefix}presence}}:");
        PresenceState {
            node: uuid::Uuid::new_v4().simple().to_string(),
            seq_key: format!("{base}seq"),
            base,
            channel: format!("{prefix}presence"),
            script: Script::from_lua(PRESENCE_LUA),
            timeout,
            held: Mutex::new(HashMap::new()),
            gate: RwLock::new(()),
            senders: Mutex::new(Vec::new()),
            kick: Notify::new(),
        }
    }

    pub(super) fn script(&self) -> &Script {
        &self.script
    }

    fn send(&self, signal: PresenceSignal) {
        self.senders
            .lock()
            .expect("senders lock")
            .retain(|tx| tx.send(signal.clone()).is_ok());
    }

    pub(super) fn diffs(&self) -> mpsc::UnboundedReceiver<PresenceSignal> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.senders.lock().expect("senders lock").push(tx);
        rx
    }

    /// A diff from the presence channel.
    pub(super) fn on_message(&self, payload: &str) {
        match serde_json::from_str::<PresenceDiff>(payload) {
            Ok(diff) => self.send(PresenceSignal::Diff(diff)),
            Err(err) => {
                tracing::warn!(error = %err, "unreadable presence diff; reading keys again")
            }
        }
    }

    /// Diffs may have been lost: every node's views are read again, and this node's lease
    /// checked at once.
    pub(super) fn resync(&self) {
        self.send(PresenceSignal::Resync);
        self.kick.notify_one();
    }
}

impl Shared {
    /// One call of the presence script: `op` with its own arguments.
    async fn presence_call<R: fred::types::FromValue>(
        &self,
        op: &str,
        args: Vec<RedisValue>,
    ) -> Result<R, BrokerError> {
        let p = &self.presence;
        let mut all: Vec<RedisValue> = Vec::with_capacity(4 + args.len());
        all.push(op.into());
        all.push(p.base.as_str().into());
        all.push(p.channel.as_str().into());
        all.push(p.node.as_str().into());
        all.extend(args);
        p.script
            .evalsha_with_reload(self.client(), p.seq_key.as_str(), all)
            .await
            .map_err(unavailable)
    }

    async fn join_script(
        &self,
        route: &str,
        key_json: &str,
        conn: &str,
        member_json: &str,
        max_members: usize,
    ) -> Result<String, BrokerError> {
        let args = vec![
            route.into(),
            key_json.into(),
            conn.into(),
            member_json.into(),
            max_members.to_string().into(),
        ];
        self.presence_call("join", args).await
    }

    pub(super) async fn presence_join(
        &self,
        route: &str,
        key: &PresenceKey,
        member: &Member,
        max_members: usize,
    ) -> Result<JoinOutcome, BrokerError> {
        self.ensure_connected()?;
        let key_json = key.to_string();
        let member_json =
            serde_json::to_string(member).map_err(|e| BrokerError::Other(e.to_string()))?;
        let _gate = self.presence.gate.read().await;
        let answer = self
            .join_script(route, &key_json, &member.conn, &member_json, max_members)
            .await?;
        if answer == "full" {
            return Ok(JoinOutcome::Full);
        }
        let version = answer
            .parse()
            .map_err(|_| BrokerError::Other(format!("presence join answered {answer:?}")))?;
        self.presence.held.lock().expect("held lock").insert(
            (route.to_owned(), key_json, member.conn.to_string()),
            member_json,
        );
        Ok(JoinOutcome::Joined(version))
    }

    pub(super) async fn presence_leave(
        &self,
        route: &str,
        key: &PresenceKey,
        conn: &str,
    ) -> Result<(), BrokerError> {
        let key_json = key.to_string();
        let _gate = self.presence.gate.read().await;
        // Forgotten first: even if Redis is down now, it is never announced again.
        self.presence.held.lock().expect("held lock").remove(&(
            route.to_owned(),
            key_json.clone(),
            conn.to_owned(),
        ));
        self.ensure_connected()?;
        let _: String = self
            .presence_call("leave", vec![route.into(), key_json.into(), conn.into()])
            .await?;
        Ok(())
    }

    pub(super) async fn presence_members(
        &self,
        route: &str,
        key: &PresenceKey,
    ) -> Result<Snapshot, BrokerError> {
        self.ensure_connected()?;
        let flat: Vec<String> = self
            .presence_call("read", vec![route.into(), key.to_string().into()])
            .await?;
        let mut snapshot = Snapshot::default();
        for pair in flat.chunks_exact(2) {
            let (field, value) = (&pair[0], &pair[1]);
            if field == "#" {
                snapshot.version = value.parse().unwrap_or(0);
                continue;
            }
            match serde_json::from_str::<Member>(value) {
                Ok(m) => snapshot.members.push(m),
                Err(err) => {
                    tracing::warn!(%route, %key, error = %err, "unreadable presence member; skipped")
                }
            }
        }
        snapshot.members.sort_by(|a, b| a.conn.cmp(&b.conn));
        Ok(snapshot)
    }

    /// Removes every member of this node at once (a graceful shutdown).
    pub(super) async fn presence_retire(&self) -> Result<(), BrokerError> {
        self.ensure_connected()?;
        let _gate = self.presence.gate.write().await;
        self.presence.held.lock().expect("held lock").clear();
        let _: i64 = self.presence_call("reap", vec!["self".into()]).await?;
        Ok(())
    }

    /// Refreshes this node's lease; announces everything again if it had gone.
    async fn refresh_lease(&self) -> Result<(), BrokerError> {
        let p = &self.presence;
        let ttl = (p.timeout.as_millis() * 6 / 10).max(1) as u64;
        let added: i64 = self
            .presence_call("lease", vec![ttl.to_string().into()])
            .await?;
        if added == 1 {
            self.announce_again().await?;
        }
        Ok(())
    }

    async fn announce_again(&self) -> Result<(), BrokerError> {
        let _gate = self.presence.gate.write().await;
        let held: Vec<_> = self
            .presence
            .held
            .lock()
            .expect("held lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !held.is_empty() {
            tracing::info!(
                members = held.len(),
                "presence lease was missing: announcing this node's members again"
            );
        }
        for ((route, key_json, conn), member_json) in held {
            self.join_script(&route, &key_json, &conn, &member_json, usize::MAX)
                .await?;
        }
        Ok(())
    }

    async fn reap(&self) -> Result<(), BrokerError> {
        let reaped: i64 = self.presence_call("reap", vec!["expired".into()]).await?;
        if reaped > 0 {
            tracing::info!(
                nodes = reaped,
                "removed the presence of nodes whose lease expired"
            );
        }
        Ok(())
    }
}

/// Keeps this node's lease and reaps dead nodes, forever (see the module docs).
pub(super) async fn lease_loop(shared: Arc<Shared>) {
    let tick = (shared.presence.timeout / 10).max(Duration::from_millis(10));
    let mut n: u64 = 0;
    loop {
        if n.is_multiple_of(2)
            && let Err(err) = shared.refresh_lease().await
        {
            tracing::warn!(error = %err, "could not refresh the presence lease");
        }
        if let Err(err) = shared.reap().await {
            tracing::debug!(error = %err, "could not reap expired presence leases");
        }
        n += 1;
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shared.presence.kick.notified() => n = 0,
        }
    }
}
