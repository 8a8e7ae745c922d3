//! Presence for the in-memory broker: one process holds every key's members.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::presence::{JoinOutcome, Member, PresenceDiff, PresenceKey, PresenceSignal, Snapshot};
use crate::router::ConnId;

#[derive(Default)]
struct Key {
    version: u64,
    members: BTreeMap<ConnId, Member>,
}

#[derive(Default)]
struct Inner {
    /// The last version handed out, over every key.
    seq: u64,
    keys: HashMap<(Arc<str>, PresenceKey), Key>,
    receivers: Vec<mpsc::UnboundedSender<PresenceSignal>>,
}

/// Every key's members, changed and announced under one lock, so each key's diffs reach
/// every receiver in the order they were made.
#[derive(Default)]
pub(super) struct MemoryPresence {
    inner: Mutex<Inner>,
}

impl Inner {
    fn announce(
        &mut self,
        route: &str,
        key: &PresenceKey,
        prev: u64,
        joins: Vec<Member>,
        leaves: Vec<Member>,
    ) -> u64 {
        self.seq += 1;
        let diff = PresenceDiff {
            route: Arc::from(route),
            key: key.clone(),
            version: self.seq,
            prev,
            joins,
            leaves,
        };
        self.receivers
            .retain(|tx| tx.send(PresenceSignal::Diff(diff.clone())).is_ok());
        self.seq
    }
}

impl MemoryPresence {
    pub(super) fn join(
        &self,
        route: &str,
        key: &PresenceKey,
        member: &Member,
        max_members: usize,
    ) -> JoinOutcome {
        let mut inner = self.inner.lock().expect("presence lock");
        let id = (Arc::from(route), key.clone());
        let entry = inner.keys.entry(id.clone()).or_default();
        match entry.members.get(&member.conn) {
            Some(old) if old == member => return JoinOutcome::Joined(entry.version),
            None if entry.members.len() >= max_members => {
                if entry.members.is_empty() {
                    inner.keys.remove(&id);
                }
                return JoinOutcome::Full;
            }
            _ => {}
        }
        entry.members.insert(member.conn.clone(), member.clone());
        let prev = entry.version;
        let version = inner.announce(route, key, prev, vec![member.clone()], Vec::new());
        inner.keys.get_mut(&id).expect("entry").version = version;
        JoinOutcome::Joined(version)
    }

    pub(super) fn leave(&self, route: &str, key: &PresenceKey, conn: &str) {
        let mut inner = self.inner.lock().expect("presence lock");
        let id = (Arc::from(route), key.clone());
        let Some(entry) = inner.keys.get_mut(&id) else {
            return;
        };
        let Some(old) = entry.members.remove(conn) else {
            return;
        };
        let prev = entry.version;
        let empty = entry.members.is_empty();
        let version = inner.announce(route, key, prev, Vec::new(), vec![old]);
        if empty {
            // An empty key is forgotten; its next diff follows version 0.
            inner.keys.remove(&id);
        } else {
            inner.keys.get_mut(&id).expect("entry").version = version;
        }
    }

    pub(super) fn members(&self, route: &str, key: &PresenceKey) -> Snapshot {
        let inner = self.inner.lock().expect("presence lock");
        match inner.keys.get(&(Arc::from(route), key.clone())) {
            Some(k) => Snapshot {
                version: k.version,
                members: k.members.values().cloned().collect(),
            },
            None => Snapshot {
                version: inner.seq,
                members: Vec::new(),
            },
        }
    }

    pub(super) fn diffs(&self) -> mpsc::UnboundedReceiver<PresenceSignal> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner.lock().expect("presence lock").receivers.push(tx);
        rx
    }
}
