//! One route's live subscriptions on this node, grouped by filter and indexed.
//!
//! Subscriptions with the same filter (a thousand browsers on `list_id = 3`) form one group:
//! a message is matched once per group, not once per subscription, and the group's members
//! are walked in a plain vector. A group whose filter pins a field to values (`list_id = 3`,
//! `list_id in [..]`) is found by looking those values up; only the others are scanned.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Outbox, SubKey};
use crate::broker::{Envelope, Message, Position};
use crate::filter::Filter;
use crate::schema::{FieldType, ScalarKey};

/// A group's key in its route.
pub(super) type GroupId = u64;

/// One subscription: where its events go.
pub(super) struct Sub {
    pub(super) key: SubKey,
    pub(super) outbox: Arc<Outbox>,
    pub(super) id: Arc<str>,
    /// Messages that arrived while the subscription was joining the stream.
    pub(super) joining: Option<Vec<Envelope>>,
    /// Whether its connection has other subscriptions on this route: their shares of a
    /// message are then merged into one frame naming them all.
    pub(super) shared_conn: bool,
}

/// The subscriptions of one filter.
pub(super) struct Group {
    pub(super) filter: Filter,
    pub(super) members: Vec<Sub>,
    /// How many members are still joining (they buffer every message).
    pub(super) joining: usize,
    /// Its key in `by_filter`.
    name: String,
}

/// The ids of a route's recent messages, to deliver a message published twice once.
#[derive(Default)]
pub(super) struct Recent {
    order: VecDeque<Arc<str>>,
    set: HashSet<Arc<str>>,
}

/// How many message ids each route remembers.
const RECENT_IDS: usize = 4096;

impl Recent {
    /// False if `id` was seen already.
    pub(super) fn insert(&mut self, id: &Arc<str>) -> bool {
        if !self.set.insert(id.clone()) {
            return false;
        }
        self.order.push_back(id.clone());
        if self.order.len() > RECENT_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// field -> (its type, value -> groups pinning the field to that value).
type Index = HashMap<String, (FieldType, HashMap<ScalarKey, HashSet<GroupId>>)>;

#[derive(Default)]
pub(super) struct RouteState {
    /// The position of the last message dispatched here.
    pub(super) position: Option<Position>,
    /// Ids of the messages dispatched lately (duplicates are dropped).
    pub(super) recent: Recent,
    /// The highest change-log version dispatched (see [`super::Hub::relayed`]).
    pub(super) version: tokio::sync::watch::Sender<u64>,
    groups: HashMap<GroupId, Group>,
    next_group: GroupId,
    by_filter: HashMap<String, GroupId>,
    /// Where each subscription is: its group and its place among the members.
    places: HashMap<SubKey, (GroupId, usize)>,
    /// Each connection's subscriptions here (by outbox id).
    conns: HashMap<u64, Vec<SubKey>>,
    index: Index,
    scan: HashSet<GroupId>,
    /// One `Arc` per subscription id in use here, with how many subscriptions have it
    /// (most connections' first subscription is `s1`): frames for an id are then found by
    /// pointer, not by comparing strings.
    ids: HashMap<Arc<str>, usize>,
}

impl RouteState {
    /// Adds subscription `key`, joining (buffering messages) until [`RouteState::joined`].
    pub(super) fn insert(
        &mut self,
        key: SubKey,
        outbox: Arc<Outbox>,
        id: Arc<str>,
        filter: Filter,
    ) {
        let id = match self.ids.get_key_value(&id) {
            Some((shared, _)) => shared.clone(),
            None => Arc::from(&*id),
        };
        *self.ids.entry(id.clone()).or_default() += 1;
        let name = format!("{filter:?}");
        let gid = match self.by_filter.get(&name) {
            Some(gid) => *gid,
            None => self.add_group(name, filter),
        };
        let mates = self.conns.entry(outbox.id()).or_default();
        mates.push(key);
        let shared_conn = mates.len() > 1;
        if mates.len() == 2 {
            let other = mates[0];
            self.set_shared(other, true);
        }
        let group = self.groups.get_mut(&gid).expect("group");
        group.members.push(Sub {
            key,
            outbox,
            id,
            joining: Some(Vec::new()),
            shared_conn,
        });
        group.joining += 1;
        self.places.insert(key, (gid, group.members.len() - 1));
    }

    fn add_group(&mut self, name: String, filter: Filter) -> GroupId {
        let gid = self.next_group;
        self.next_group += 1;
        match index_entry(&filter) {
            Some((field, ty, values)) => {
                let (_, by_value) = self
                    .index
                    .entry(field)
                    .or_insert_with(|| (ty, HashMap::new()));
                for v in values {
                    by_value.entry(v).or_default().insert(gid);
                }
            }
            None => {
                self.scan.insert(gid);
            }
        }
        self.by_filter.insert(name.clone(), gid);
        self.groups.insert(
            gid,
            Group {
                filter,
                members: Vec::new(),
                joining: 0,
                name,
            },
        );
        gid
    }

    fn set_shared(&mut self, key: SubKey, shared: bool) {
        if let Some(sub) = self.sub_mut(key) {
            sub.shared_conn = shared;
        }
    }

    /// Removes a subscription; false if it was not there.
    pub(super) fn remove(&mut self, key: SubKey) -> bool {
        let Some((gid, at)) = self.places.remove(&key) else {
            return false;
        };
        let group = self.groups.get_mut(&gid).expect("group");
        let sub = group.members.swap_remove(at);
        if let Some(moved) = group.members.get(at) {
            self.places.insert(moved.key, (gid, at));
        }
        if sub.joining.is_some() {
            group.joining -= 1;
        }
        if let Some(n) = self.ids.get_mut(&sub.id) {
            *n -= 1;
            if *n == 0 {
                self.ids.remove(&sub.id);
            }
        }
        if group.members.is_empty() {
            let group = self.groups.remove(&gid).expect("group");
            self.by_filter.remove(&group.name);
            self.unindex(gid, &group.filter);
        }
        let conn = sub.outbox.id();
        if let Some(mates) = self.conns.get_mut(&conn) {
            mates.retain(|k| *k != key);
            match mates.as_slice() {
                [] => {
                    self.conns.remove(&conn);
                }
                [last] => {
                    let last = *last;
                    self.set_shared(last, false);
                }
                _ => {}
            }
        }
        true
    }

    fn unindex(&mut self, gid: GroupId, filter: &Filter) {
        match index_entry(filter) {
            Some((field, _, values)) => {
                if let Some((_, by_value)) = self.index.get_mut(&field) {
                    for v in values {
                        if let Some(set) = by_value.get_mut(&v) {
                            set.remove(&gid);
                            if set.is_empty() {
                                by_value.remove(&v);
                            }
                        }
                    }
                    if by_value.is_empty() {
                        self.index.remove(&field);
                    }
                }
            }
            None => {
                self.scan.remove(&gid);
            }
        }
    }

    pub(super) fn sub_mut(&mut self, key: SubKey) -> Option<&mut Sub> {
        let (gid, at) = *self.places.get(&key)?;
        self.groups.get_mut(&gid)?.members.get_mut(at)
    }

    pub(super) fn filter_of(&self, key: SubKey) -> Option<&Filter> {
        let (gid, _) = self.places.get(&key)?;
        Some(&self.groups.get(gid)?.filter)
    }

    /// What a joining subscription buffered so far (it goes on buffering); `None` if it
    /// is gone.
    pub(super) fn take_buffer(&mut self, key: SubKey) -> Option<Vec<Envelope>> {
        let sub = self.sub_mut(key)?;
        Some(std::mem::take(sub.joining.get_or_insert_with(Vec::new)))
    }

    /// The subscription has joined: messages now reach it directly.
    pub(super) fn joined(&mut self, key: SubKey) {
        let Some((gid, at)) = self.places.get(&key).copied() else {
            return;
        };
        let group = self.groups.get_mut(&gid).expect("group");
        if group.members[at].joining.take().is_some() {
            group.joining -= 1;
        }
    }

    pub(super) fn group_mut(&mut self, gid: GroupId) -> Option<&mut Group> {
        self.groups.get_mut(&gid)
    }

    pub(super) fn subs_mut(&mut self) -> impl Iterator<Item = &mut Sub> {
        self.groups.values_mut().flat_map(|g| g.members.iter_mut())
    }

    pub(super) fn len(&self) -> usize {
        self.places.len()
    }

    /// The groups a message may concern: index hits for its old and new state, plus the
    /// unindexed ones. Everything else provably does not match.
    pub(super) fn candidates(&self, message: &Message) -> Vec<GroupId> {
        let mut out: Vec<GroupId> = self.scan.iter().copied().collect();
        let rows: [Option<&Map<String, Value>>; 2] = match message {
            Message::Change { old, new, .. } => [old.as_ref(), new.as_ref()],
            Message::Custom { data, .. } => [data.as_object(), None],
            Message::Gap => [None, None],
        };
        for (field, (ty, by_value)) in &self.index {
            for row in rows.iter().flatten() {
                let Some(key) = row.get(field).and_then(|v| ty.scalar(v)).map(|s| s.key()) else {
                    continue;
                };
                if let Some(groups) = by_value.get(&key) {
                    out.extend(groups.iter().copied());
                }
            }
        }
        if rows[1].is_some() || self.index.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
        out
    }

    #[cfg(test)]
    pub(super) fn indexed_values(&self, field: &str) -> usize {
        self.index
            .get(field)
            .map_or(0, |(_, by_value)| by_value.len())
    }

    #[cfg(test)]
    pub(super) fn interned_ids(&self) -> usize {
        self.ids.len()
    }

    #[cfg(test)]
    pub(super) fn group_count(&self) -> usize {
        self.groups.len()
    }
}

fn index_entry(filter: &Filter) -> Option<(String, FieldType, Vec<ScalarKey>)> {
    let (field, values) = filter.index_key()?;
    let ty = filter_field_type(filter, field)?;
    Some((field.to_owned(), ty, values))
}

fn filter_field_type(filter: &Filter, name: &str) -> Option<FieldType> {
    match filter {
        Filter::Cmp { field, ty, .. } if field == name => Some(*ty),
        Filter::And(parts) => parts.iter().find_map(|p| filter_field_type(p, name)),
        _ => None,
    }
}
