//! Fan-out: matching broker messages against a shard's subscriptions and queueing frames.
//!
//! Messages that arrive while the dispatcher is busy are taken together: a run of messages
//! of one route is matched group by group, and every connection whose only subscription on
//! the route is in a group gets the run's frames for it as one shared batch: one queue
//! push and one wake-up per connection for the whole run, and its writer sends them in one
//! socket write. Under load this is what keeps the work per delivery small; a lone message
//! goes out at once as before.

use std::collections::HashMap;
use std::sync::Arc;

use super::Hub;
use super::frame::{self, Prepared, Slot, classify};
use super::outbox::{Frames, Outbound, Outbox};
use super::route::{GroupId, RouteState};
use crate::broker::{Envelope, Message};

/// One connection's share of a message: a frame kind and the subscriptions it names.
struct Hit {
    outbox: Arc<Outbox>,
    slot: Slot,
    ids: Vec<Arc<str>>,
}

fn is_gap(env: &Envelope) -> bool {
    matches!(*env.message, Message::Gap)
}

impl Hub {
    /// Dispatches messages in the broker's order, in shard `shard`: consecutive messages
    /// of one route as a run; a gap on its own.
    pub(super) fn dispatch_all(&self, shard: usize, envs: &[Envelope]) {
        let same_run = |a: &Envelope, b: &Envelope| a.route == b.route && !is_gap(a) && !is_gap(b);
        for run in envs.chunk_by(same_run) {
            match run {
                [gap] if is_gap(gap) => {
                    let state = self.shards[shard].route(&gap.route);
                    self.resync_all(&mut state.lock().expect("route lock"), gap);
                }
                run => self.dispatch_run(shard, run),
            }
        }
    }

    /// Matches a run of messages of one route (no gaps) against shard `shard`'s
    /// subscriptions, group by group, and queues each connection's frames.
    fn dispatch_run(&self, shard: usize, envs: &[Envelope]) {
        let state = self.shards[shard].route(&envs[0].route);
        let mut st = state.lock().expect("route lock");
        let mut live: Vec<&Envelope> = Vec::with_capacity(envs.len());
        for env in envs {
            st.position = Some(env.position);
            if let Some(id) = env.message.id()
                && !st.recent.insert(id)
            {
                tracing::debug!(route = %env.route, %id, "a message published twice is delivered once");
                continue;
            }
            live.push(env);
        }
        let mut prepared: Vec<Prepared> = live.iter().map(|e| Prepared::new(e)).collect();
        // Custom events that skip one connection (its own).
        let except: Vec<Option<&Arc<str>>> = live
            .iter()
            .map(|e| match &*e.message {
                Message::Custom { except, .. } => except.as_ref(),
                _ => None,
            })
            .collect();
        let excepting = except.iter().any(Option::is_some);
        // Which messages may concern each group, in order.
        let mut concerns: HashMap<GroupId, Vec<usize>> = HashMap::new();
        for (i, env) in live.iter().enumerate() {
            for gid in st.candidates(&env.message) {
                concerns.entry(gid).or_default().push(i);
            }
        }
        let mut delivered = vec![0usize; live.len()];
        let mut held = 0;
        // Frames sent one by one, after the batches (different connections).
        let mut hits: Vec<(usize, Hit)> = Vec::new();
        let mut seen: HashMap<(u64, usize, Slot), usize> = HashMap::new();
        for (gid, idxs) in concerns {
            let Some(group) = st.group_mut(gid) else {
                continue;
            };
            let items: Vec<(usize, Slot)> = idxs
                .iter()
                .filter_map(|&i| {
                    let slot = classify(&group.filter, &live[i].message)?;
                    prepared[i].worth_sending(slot).then_some((i, slot))
                })
                .collect();
            if items.is_empty() && group.joining == 0 {
                continue;
            }
            // The run's frames for each subscription id in the group (most share one).
            let mut batches: Vec<(Arc<str>, Arc<Frames>, usize)> = Vec::new();
            for sub in &mut group.members {
                if let Some(joining) = &mut sub.joining {
                    joining.extend(idxs.iter().map(|&i| live[i].clone()));
                    continue;
                }
                if items.is_empty() {
                    continue;
                }
                let skips = |i: usize| except[i].is_some_and(|c| sub.outbox.conn() == Some(c));
                // Frame by frame: connections with several subscriptions here (one frame per
                // message naming all of theirs), and those a message skips.
                if sub.shared_conn || excepting && items.iter().any(|&(i, _)| skips(i)) {
                    for &(i, slot) in items.iter().filter(|&&(i, _)| !skips(i)) {
                        match seen.entry((sub.outbox.id(), i, slot)) {
                            std::collections::hash_map::Entry::Occupied(e) => {
                                hits[*e.get()].1.ids.push(sub.id.clone())
                            }
                            std::collections::hash_map::Entry::Vacant(e) => {
                                e.insert(hits.len());
                                let hit = Hit {
                                    outbox: sub.outbox.clone(),
                                    slot,
                                    ids: vec![sub.id.clone()],
                                };
                                hits.push((i, hit));
                            }
                        }
                    }
                    continue;
                }
                let ids = std::slice::from_ref(&sub.id);
                if let [(i, slot)] = items[..] {
                    let frame = prepared[i].frame(slot, ids);
                    if sub.outbox.send_event(frame, live[i], slot, ids) {
                        delivered[i] += 1;
                    } else {
                        held += 1;
                    }
                    continue;
                }
                let same =
                    |(id, _, _): &(Arc<str>, _, _)| Arc::ptr_eq(id, &sub.id) || *id == sub.id;
                let at = match batches.iter().position(same) {
                    Some(at) => at,
                    None => {
                        let frames = items
                            .iter()
                            .map(|&(i, slot)| prepared[i].frame(slot, ids))
                            .collect();
                        batches.push((sub.id.clone(), Arc::new(Frames::new(frames)), 0));
                        batches.len() - 1
                    }
                };
                let (_, frames, members) = &mut batches[at];
                if sub.outbox.send_frames(frames) {
                    *members += 1;
                    continue;
                }
                // Behind: each frame joins the backlog (or queues) on its own.
                for (frame, &(i, slot)) in frames.iter().zip(&items) {
                    if sub.outbox.send_event(frame.clone(), live[i], slot, ids) {
                        delivered[i] += 1;
                    } else {
                        held += 1;
                    }
                }
            }
            for (_, _, members) in batches {
                for &(i, _) in &items {
                    delivered[i] += members;
                }
            }
        }
        // Per connection in message order; a connection's frames for one message in one
        // order, whichever group came first.
        hits.sort_by_key(|(i, h)| (*i, h.outbox.id(), h.slot));
        for (i, mut hit) in hits {
            hit.ids.sort_unstable();
            let frame = prepared[i].frame(hit.slot, &hit.ids);
            if hit.outbox.send_event(frame, live[i], hit.slot, &hit.ids) {
                delivered[i] += 1;
            } else {
                held += 1;
            }
        }
        // Announced once the frames are queued: a writer waiting for its change to be
        // relayed answers after the event.
        for env in &live {
            bump_version(&mut st, env);
        }
        drop(st);
        if held > 0 {
            self.metrics.backlogged(held);
        }
        for (env, n) in live.iter().zip(delivered) {
            self.metrics.delivered(n as u64, env.published_ms);
        }
    }

    /// Tells every live subscription of the route to reload (one frame per connection).
    fn resync_all(&self, st: &mut RouteState, env: &Envelope) {
        let mut per_conn: HashMap<u64, (Arc<Outbox>, Vec<Arc<str>>)> = HashMap::new();
        for sub in st.subs_mut() {
            if let Some(joining) = &mut sub.joining {
                joining.push(env.clone());
                continue;
            }
            per_conn
                .entry(sub.outbox.id())
                .or_insert_with(|| (sub.outbox.clone(), Vec::new()))
                .1
                .push(sub.id.clone());
        }
        for (_, (outbox, mut ids)) in per_conn {
            ids.sort_unstable();
            outbox.send(Outbound::Text(frame::resync_frame(&env.route, &ids)));
        }
    }
}

/// Records the change-log version a message carries as dispatched (see [`Hub::relayed`]).
fn bump_version(st: &mut RouteState, env: &Envelope) {
    if let Message::Change {
        version: Some(v), ..
    } = *env.message
    {
        st.version.send_if_modified(|seen| {
            let newer = v > *seen;
            if newer {
                *seen = v;
            }
            newer
        });
    }
}
