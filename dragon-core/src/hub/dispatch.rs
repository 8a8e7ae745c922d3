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

use axum::extract::ws::Utf8Bytes;

use super::Hub;
use super::frame::{self, EventKind, MessageFrames, classify};
use super::outbox::{Frames, Outbound, Outbox};
use super::route::{Group, GroupId, RouteState, Sub};
use crate::broker::{Envelope, Message};

/// One connection's share of a message: a frame kind and the subscriptions it names.
struct Delivery {
    outbox: Arc<Outbox>,
    event_kind: EventKind,
    ids: Vec<Arc<str>>,
}

fn is_gap(env: &Envelope) -> bool {
    matches!(*env.message, Message::Gap)
}

/// A run being fanned out: its messages (repeats dropped), their frames, built once each,
/// and what was delivered or held back.
struct Run<'a> {
    live: Vec<&'a Envelope>,
    per_message: Vec<MessageFrames<'a>>,
    /// For each message, the connection a custom event skips (its sender's), if any.
    except: Vec<Option<&'a Arc<str>>>,
    excepting: bool,
    /// Connections reached per message, and frames that joined a backlog instead.
    delivered: Vec<usize>,
    held: u64,
    /// Frames sent one by one after the batches (connections with several subscriptions
    /// here, and those a message skips), one per connection, message and kind.
    deliveries: Vec<(usize, Delivery)>,
    seen: HashMap<(u64, usize, EventKind), usize>,
}

impl<'a> Run<'a> {
    fn new(live: Vec<&'a Envelope>) -> Self {
        let per_message = live.iter().map(|&e| MessageFrames::new(e)).collect();
        let except: Vec<Option<&Arc<str>>> = live
            .iter()
            .map(|&e| match &*e.message {
                Message::Custom { except, .. } => except.as_ref(),
                _ => None,
            })
            .collect();
        Run {
            excepting: except.iter().any(Option::is_some),
            delivered: vec![0; live.len()],
            live,
            per_message,
            except,
            held: 0,
            deliveries: Vec::new(),
            seen: HashMap::new(),
        }
    }

    /// Which messages may concern each group, in order.
    fn concerns(&self, st: &RouteState) -> HashMap<GroupId, Vec<usize>> {
        let mut concerns: HashMap<GroupId, Vec<usize>> = HashMap::new();
        for (i, env) in self.live.iter().enumerate() {
            for gid in st.candidates(&env.message) {
                concerns.entry(gid).or_default().push(i);
            }
        }
        concerns
    }

    /// Queues one group's share of the run: a joining member buffers every message it may
    /// concern; the others get the frames of the messages their filter matches.
    fn fan_out(&mut self, group: &mut Group, idxs: &[usize]) {
        let items: Vec<(usize, EventKind)> = idxs
            .iter()
            .filter_map(|&i| {
                let event_kind = classify(&group.filter, &self.live[i].message)?;
                self.per_message[i]
                    .worth_sending(event_kind)
                    .then_some((i, event_kind))
            })
            .collect();
        if items.is_empty() && group.joining == 0 {
            return;
        }
        // The run's frames for each subscription id in the group (most share one).
        let mut batches: Vec<(Arc<str>, Arc<Frames>, usize)> = Vec::new();
        for sub in &mut group.members {
            if let Some(joining) = &mut sub.joining {
                joining.extend(idxs.iter().map(|&i| self.live[i].clone()));
                continue;
            }
            if items.is_empty() {
                continue;
            }
            if sub.shared_conn || self.excepting && items.iter().any(|&(i, _)| self.skips(i, sub)) {
                self.queue_deliveries(sub, &items);
            } else if let [(i, event_kind)] = items[..] {
                let ids = std::slice::from_ref(&sub.id);
                let frame = self.per_message[i].frame(event_kind, ids);
                self.send(&sub.outbox, frame, i, event_kind, ids);
            } else {
                self.send_batch(sub, &items, &mut batches);
            }
        }
        for (_, _, members) in batches {
            for &(i, _) in &items {
                self.delivered[i] += members;
            }
        }
    }

    /// Whether message `i` skips `sub`'s connection.
    fn skips(&self, i: usize, sub: &Sub) -> bool {
        self.except[i].is_some_and(|c| sub.outbox.conn().is_some_and(|own| own.as_str() == &**c))
    }

    /// Frame by frame: a connection with several subscriptions here gets one frame per
    /// message naming all of them; a message that skips this connection is left out.
    fn queue_deliveries(&mut self, sub: &Sub, items: &[(usize, EventKind)]) {
        for &(i, event_kind) in items {
            if self.skips(i, sub) {
                continue;
            }
            match self.seen.entry((sub.outbox.id(), i, event_kind)) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    self.deliveries[*e.get()].1.ids.push(sub.id.clone())
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(self.deliveries.len());
                    let delivery = Delivery {
                        outbox: sub.outbox.clone(),
                        event_kind,
                        ids: vec![sub.id.clone()],
                    };
                    self.deliveries.push((i, delivery));
                }
            }
        }
    }

    /// The run's frames for `sub` as one batch, shared with every member of the group with
    /// the same subscription id (built by the first of them).
    fn send_batch(
        &mut self,
        sub: &Sub,
        items: &[(usize, EventKind)],
        batches: &mut Vec<(Arc<str>, Arc<Frames>, usize)>,
    ) {
        let ids = std::slice::from_ref(&sub.id);
        let same = |(id, _, _): &(Arc<str>, _, _)| Arc::ptr_eq(id, &sub.id) || *id == sub.id;
        let at = match batches.iter().position(same) {
            Some(at) => at,
            None => {
                let frames = items
                    .iter()
                    .map(|&(i, event_kind)| self.per_message[i].frame(event_kind, ids))
                    .collect();
                batches.push((sub.id.clone(), Arc::new(Frames::new(frames)), 0));
                batches.len() - 1
            }
        };
        let (_, frames, members) = &mut batches[at];
        if sub.outbox.send_frames(frames) {
            *members += 1;
            return;
        }
        // Behind: each frame joins the backlog (or queues) on its own.
        for (frame, &(i, event_kind)) in frames.iter().zip(items) {
            self.send(&sub.outbox, frame.clone(), i, event_kind, ids);
        }
    }

    /// Queues one frame of message `i` and counts it as delivered or held.
    fn send(
        &mut self,
        outbox: &Outbox,
        frame: Utf8Bytes,
        i: usize,
        event_kind: EventKind,
        ids: &[Arc<str>],
    ) {
        if outbox.send_event(frame, self.live[i], event_kind, ids) {
            self.delivered[i] += 1;
        } else {
            self.held += 1;
        }
    }

    /// The frames of [`Run::queue_deliveries`]: per connection in message order, a connection's
    /// frames for one message in one order, whichever group came first.
    fn send_deliveries(&mut self) {
        let mut deliveries = std::mem::take(&mut self.deliveries);
        deliveries.sort_by_key(|(i, h)| (*i, h.outbox.id(), h.event_kind));
        for (i, mut delivery) in deliveries {
            delivery.ids.sort_unstable();
            let frame = self.per_message[i].frame(delivery.event_kind, &delivery.ids);
            self.send(
                &delivery.outbox,
                frame,
                i,
                delivery.event_kind,
                &delivery.ids,
            );
        }
    }
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
        let mut run = Run::new(live);
        for (gid, idxs) in run.concerns(&st) {
            if let Some(group) = st.group_mut(gid) {
                run.fan_out(group, &idxs);
            }
        }
        run.send_deliveries();
        // Announced once the frames are queued: a writer waiting for its change to be
        // relayed answers after the event.
        for env in &run.live {
            bump_version(&mut st, env);
        }
        drop(st);
        if run.held > 0 {
            self.metrics.backlogged(run.held);
        }
        for (env, n) in run.live.iter().zip(run.delivered) {
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
