//! Coalescing for slow consumers: while a connection's queue is full, each object's changes
//! are merged into one pending event per subscription, carrying the latest state; the merged
//! events are sent once the queue has drained.
//!
//! Merging a subscription's first and last view of an object: created..deleted is nothing;
//! created..anything is `created`; anything..deleted is `deleted`; deleted..created is
//! `created` (it came back; clients apply events by id); otherwise `updated` with the union of
//! the fields that changed.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;

use super::frame::{EventKind, changed_fields, coalesced_frame};
use crate::broker::{Envelope, Message};

/// At most this many objects wait per connection; beyond, events fall back to `resync`.
pub(crate) const MAX_OBJECTS: usize = 10_000;

struct Pending {
    /// Per subscription: its first and last view.
    subs: BTreeMap<Arc<str>, (EventKind, EventKind)>,
    latest: Envelope,
    changed: BTreeSet<String>,
}

/// One connection's merged events, oldest object first.
#[derive(Default)]
pub(crate) struct Coalesced {
    order: VecDeque<(Arc<str>, String)>,
    pending: HashMap<(Arc<str>, String), Pending>,
}

/// The object id a change is about, if it is a change.
pub(crate) fn object_key(message: &Message) -> Option<String> {
    match message {
        Message::Change { old, new, .. } => new
            .as_ref()
            .or(old.as_ref())
            .and_then(|o| o.get("id"))
            .map(|id| id.to_string()),
        Message::Custom { .. } | Message::Gap => None,
    }
}

impl Coalesced {
    /// Merges one event; false if it cannot be (custom events, too many objects).
    pub(crate) fn add(&mut self, env: &Envelope, event_kind: EventKind, subs: &[Arc<str>]) -> bool {
        let Some(id) = object_key(&env.message) else {
            return false;
        };
        let key = (env.route.clone(), id);
        if !self.pending.contains_key(&key) && self.pending.len() >= MAX_OBJECTS {
            return false;
        }
        let changed = match &*env.message {
            Message::Change {
                old: Some(o),
                new: Some(n),
                ..
            } => changed_fields(o, n),
            _ => Vec::new(),
        };
        let entry = self.pending.entry(key.clone()).or_insert_with(|| {
            self.order.push_back(key);
            Pending {
                subs: BTreeMap::new(),
                latest: env.clone(),
                changed: BTreeSet::new(),
            }
        });
        entry.latest = env.clone();
        entry.changed.extend(changed);
        for sub in subs {
            entry
                .subs
                .entry(sub.clone())
                .and_modify(|(_, last)| *last = event_kind)
                .or_insert((event_kind, event_kind));
        }
        true
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The merged frames, oldest object first, one per object and event kind.
    pub(crate) fn take_frames(&mut self) -> Vec<Utf8Bytes> {
        let mut frames = Vec::new();
        while let Some(key) = self.order.pop_front() {
            let Some(p) = self.pending.remove(&key) else {
                continue;
            };
            let mut by_kind: BTreeMap<u8, (EventKind, Vec<Arc<str>>)> = BTreeMap::new();
            for (sub, (first, last)) in p.subs {
                let merged = match (first, last) {
                    (EventKind::Created, EventKind::Deleted) => continue,
                    (EventKind::Created, _) | (_, EventKind::Created) => EventKind::Created,
                    (_, EventKind::Deleted) => EventKind::Deleted,
                    _ => EventKind::Updated,
                };
                by_kind
                    .entry(merged as u8)
                    .or_insert_with(|| (merged, Vec::new()))
                    .1
                    .push(sub);
            }
            let changed: Vec<String> = p.changed.into_iter().collect();
            for (_, (event_kind, subs)) in by_kind {
                frames.push(coalesced_frame(&p.latest, event_kind, &subs, &changed));
            }
        }
        frames
    }
}
