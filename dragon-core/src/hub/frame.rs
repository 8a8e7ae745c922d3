//! Event frames: which frame a subscription gets for a message, and its bytes, built once
//! per message and frame kind and shared by every connection with the same `subs`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use serde_json::{Map, Value};

use crate::broker::{Envelope, Message};
use crate::filter::Filter;
use crate::protocol::{ChangeKind, Event};

/// The event a subscription sees of one message (the frame's `event`): unlike
/// [`ChangeKind`], an update can be seen as created or deleted when the object enters or
/// leaves the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum EventKind {
    Created,
    Updated,
    Deleted,
    Custom,
}

impl EventKind {
    /// Its place in a per-kind array.
    fn index(self) -> usize {
        self as usize
    }
}

/// Enter/leave semantics: what a subscription with `filter` sees of `message`.
pub(crate) fn classify(filter: &Filter, message: &Message) -> Option<EventKind> {
    match message {
        Message::Change { old, new, .. } => {
            let was = old.as_ref().is_some_and(|o| filter.matches(o));
            let is = new.as_ref().is_some_and(|n| filter.matches(n));
            match (was, is) {
                (false, true) => Some(EventKind::Created),
                (true, false) => Some(EventKind::Deleted),
                (true, true) => Some(EventKind::Updated),
                (false, false) => None,
            }
        }
        Message::Custom { data, .. } => {
            let empty = Map::new();
            let object = data.as_object().unwrap_or(&empty);
            filter.matches(object).then_some(EventKind::Custom)
        }
        Message::Gap => None,
    }
}

/// The published fields whose values differ between two states, in the new state's order.
pub(crate) fn changed_fields(old: &Map<String, Value>, new: &Map<String, Value>) -> Vec<String> {
    new.iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(old.keys().filter(|k| !new.contains_key(*k)).cloned())
        .collect()
}

/// The `resync` frame for `subs` of `route`: reload, something was missed.
pub(crate) fn resync_frame(route: &str, subs: &[Arc<str>]) -> Utf8Bytes {
    Utf8Bytes::from(Event::named("resync").route(route).subs(subs).to_json())
}

/// The `error` frame for `subs` of `route` whose access was revoked (`what`: `user`,
/// `connection` or `object`): they have ended.
pub(crate) fn revoked_frame(route: &str, subs: &[Arc<str>], what: &str) -> Utf8Bytes {
    let data =
        serde_json::json!({"code": "forbidden", "message": "access revoked", "revoked": what});
    Utf8Bytes::from(
        Event::named("error")
            .route(route)
            .subs(subs)
            .data(data)
            .to_json(),
    )
}

/// A frame and the `subs` it names.
type Shared = (Vec<Arc<str>>, Utf8Bytes);

/// How many one-subscription frames are looked up in a list before the map.
const SINGLE_CACHE: usize = 16;

/// A frame's bytes around its `subs` list: `{"event":..,"route":..,"subs":` and the rest.
struct Parts {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
}

/// One message's frames, serialized lazily and at most once per event_kind and `subs` list.
pub(crate) struct MessageFrames<'a> {
    env: &'a Envelope,
    /// By event_kind (see [`EventKind::index`]): one for each of the four.
    parts: [Option<Parts>; 4],
    /// Frames naming one subscription: a handful of distinct ids (`s1`, `s2`, ...) cover
    /// most connections, so a short list beats hashing the id for every delivery.
    single: Vec<(EventKind, Arc<str>, Utf8Bytes)>,
    /// The other frames, by event_kind and a hash of their `subs` (looked up without allocating).
    cache: HashMap<(EventKind, u64), Vec<Shared>>,
}

impl<'a> MessageFrames<'a> {
    pub(crate) fn new(env: &'a Envelope) -> Self {
        MessageFrames {
            env,
            parts: Default::default(),
            single: Vec::new(),
            cache: HashMap::new(),
        }
    }

    /// Whether a event_kind carries anything (an update that changed no field carries nothing).
    pub(crate) fn worth_sending(&self, event_kind: EventKind) -> bool {
        match (&*self.env.message, event_kind) {
            (
                Message::Change {
                    old: Some(old),
                    new: Some(new),
                    ..
                },
                EventKind::Updated,
            ) => old != new,
            _ => true,
        }
    }

    /// The frame for `subs` (sorted), from the cache when another connection had the
    /// same list (subscription ids are per connection, so most lists repeat).
    pub(crate) fn frame(&mut self, event_kind: EventKind, subs: &[Arc<str>]) -> Utf8Bytes {
        if let [one] = subs {
            let found = self
                .single
                .iter()
                .find(|(s, id, _)| *s == event_kind && (Arc::ptr_eq(id, one) || id == one));
            if let Some((_, _, bytes)) = found {
                return bytes.clone();
            }
        }
        let hash = hash_ids(subs);
        let same = |(ids, _): &&Shared| ids.as_slice() == subs;
        if let Some((_, bytes)) = self
            .cache
            .get(&(event_kind, hash))
            .and_then(|v| v.iter().find(same))
        {
            return bytes.clone();
        }
        let env = self.env;
        let parts =
            self.parts[event_kind.index()].get_or_insert_with(|| parts(env, event_kind, None));
        let bytes = parts.with_subs(subs);
        match subs {
            [one] if self.single.len() < SINGLE_CACHE => {
                self.single.push((event_kind, one.clone(), bytes.clone()))
            }
            _ => self
                .cache
                .entry((event_kind, hash))
                .or_default()
                .push((subs.to_vec(), bytes.clone())),
        }
        bytes
    }
}

impl Parts {
    /// The whole frame, naming `subs`.
    fn with_subs(&self, subs: &[Arc<str>]) -> Utf8Bytes {
        let ids: usize = subs.iter().map(|s| s.len() + 3).sum();
        let mut frame = Vec::with_capacity(self.prefix.len() + ids + 2 + self.suffix.len());
        frame.extend_from_slice(&self.prefix);
        push_json(&mut frame, subs);
        frame.extend_from_slice(&self.suffix);
        Utf8Bytes::try_from(frame).expect("serde_json writes UTF-8")
    }
}

fn hash_ids(ids: &[Arc<str>]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    ids.hash(&mut h);
    h.finish()
}

/// A frame for merged events (see `coalesce.rs`): the latest state, and for `updated` the
/// given changed fields rather than the last message's.
pub(crate) fn coalesced_frame(
    env: &Envelope,
    event_kind: EventKind,
    subs: &[Arc<str>],
    changed: &[String],
) -> Utf8Bytes {
    parts(env, event_kind, Some(changed)).with_subs(subs)
}

/// Appends `value` as JSON.
fn push_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(out, value).expect("JSON values serialize");
}

/// The frame around its `subs` list, written straight into its buffers (it is built once
/// per message and event_kind, on the fan-out's path: no intermediate JSON values).
fn parts(env: &Envelope, event_kind: EventKind, changed_override: Option<&[String]>) -> Parts {
    use std::borrow::Cow;
    use std::io::Write;
    let mut suffix = Vec::with_capacity(160);
    suffix.extend_from_slice(br#","data":"#);
    let (event, changed, version) = match (&*env.message, event_kind) {
        (Message::Custom { event, data, .. }, _) => {
            push_json(&mut suffix, data);
            (event.as_str(), None, None)
        }
        (Message::Gap, _) => {
            suffix.extend_from_slice(b"null");
            ("resync", None, None)
        }
        (
            Message::Change {
                old,
                new,
                kind,
                version,
                ..
            },
            event_kind,
        ) => {
            let name = match event_kind {
                EventKind::Created => ChangeKind::Created,
                EventKind::Updated => ChangeKind::Updated,
                _ => ChangeKind::Deleted,
            };
            // A deleted row, and a row that left the filter through an update, are described
            // by their state before the change: the last one the subscription was entitled to
            // see (the new state may be outside its scope).
            let object = match (kind, event_kind) {
                (ChangeKind::Deleted, _) | (_, EventKind::Deleted) => old,
                _ => new,
            };
            match object {
                Some(object) => push_json(&mut suffix, object),
                None => suffix.extend_from_slice(b"{}"),
            }
            let changed = match (event_kind, old, new, changed_override) {
                (EventKind::Updated, _, _, Some(fields)) => Some(Cow::Borrowed(fields)),
                (EventKind::Updated, Some(o), Some(n), None) => {
                    Some(Cow::Owned(changed_fields(o, n)))
                }
                _ => None,
            };
            (name.as_str(), changed, *version)
        }
    };
    if let Some(changed) = changed {
        suffix.extend_from_slice(br#","changed":"#);
        push_json(&mut suffix, &changed);
    }
    if let Some(version) = version {
        write!(suffix, r#","version":{version}"#).expect("writes to a Vec");
    }
    write!(suffix, r#","position":"{}"}}"#, env.position).expect("writes to a Vec");
    let mut prefix = Vec::with_capacity(48 + env.route.len());
    prefix.extend_from_slice(br#"{"event":"#);
    push_json(&mut prefix, event);
    prefix.extend_from_slice(br#","route":"#);
    push_json(&mut prefix, &*env.route);
    prefix.extend_from_slice(br#","subs":"#);
    Parts { prefix, suffix }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::*;
    use crate::broker::Position;
    use crate::protocol::ServerFrame;
    use crate::schema::{FieldType, Schema};

    fn schema() -> Schema {
        Schema::new(vec![])
            .field("id", FieldType::Integer, false)
            .field("list_id", FieldType::Integer, false)
            .field("done", FieldType::Bool, false)
    }

    fn row() -> impl Strategy<Value = Map<String, Value>> {
        (1i64..5, 1i64..4, any::<bool>()).prop_map(|(id, list, done)| {
            json!({"id": id, "list_id": list, "done": done})
                .as_object()
                .cloned()
                .expect("object")
        })
    }

    /// Filters of every form a client can send over the three fields.
    fn filter() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            (1i64..4).prop_map(|l| json!({"list_id": l})),
            (1i64..4).prop_map(|l| json!({"list_id__ne": l})),
            prop::collection::vec(1i64..4, 0..3).prop_map(|v| json!({"list_id__in": v})),
            (1i64..5).prop_map(|i| json!({"id": i})),
            (1i64..5).prop_map(|i| json!({"id__gte": i})),
            any::<bool>().prop_map(|d| json!({"done": d})),
            Just(json!({})),
        ];
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(|v| json!({"$or": v})),
                inner.clone().prop_map(|f| json!({"$not": f})),
                (inner.clone(), inner).prop_map(|(a, b)| json!({"$or": [a, {"$not": b}]})),
            ]
        })
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            row().prop_map(Message::created),
            (row(), row()).prop_map(|(old, mut new)| {
                new.insert("id".into(), old["id"].clone());
                Message::updated(old, new)
            }),
            row().prop_map(Message::deleted),
        ]
    }

    proptest! {
        /// Whatever a subscriber's filter, and whatever the change, the object in any frame
        /// it gets lies inside its readable set: a row leaving the set is described by its
        /// state before, never by the new one.
        #[test]
        fn frames_never_show_an_object_outside_the_readable_set(
            readable in prop::collection::vec(1i64..4, 0..3),
            client in filter(),
            message in message(),
        ) {
            let schema = schema();
            let scope = Filter::parse(Some(&json!({"list_id__in": readable})), &schema).unwrap();
            let filter = scope.clone().and(Filter::parse(Some(&client), &schema).unwrap());
            let env = Envelope {
                route: Arc::from("items"),
                position: Position(1, 1),
                message: Arc::new(message),
                published_ms: 0,
            };
            if let Some(event_kind) = classify(&filter, &env.message) {
                let bytes = parts(&env, event_kind, None).with_subs(&[Arc::from("s1")]);
                let frame: Value = serde_json::from_str(bytes.as_str()).unwrap();
                let data = frame["data"].as_object().cloned().unwrap_or_default();
                prop_assert!(scope.matches(&data), "{frame} outside {readable:?}");
                prop_assert!(filter.matches(&data), "{frame} outside the subscription");
            }
        }

        /// The shared bytes a connection gets are exactly what encoding its own frame would
        /// give: same JSON, whichever connection asked first and however many share it.
        #[test]
        fn shared_frames_equal_the_per_connection_encoding(
            message in message(),
            conns in prop::collection::vec(prop::collection::btree_set(1u8..6, 1..4), 1..30),
        ) {
            let env = Envelope {
                route: Arc::from("items"),
                position: Position(7, 9),
                message: Arc::new(message),
                published_ms: 0,
            };
            let mut frames = MessageFrames::new(&env);
            for ids in conns {
                let subs: Vec<Arc<str>> = ids.iter().map(|i| Arc::from(format!("s{i}"))).collect();
                for event_kind in [EventKind::Created, EventKind::Updated, EventKind::Deleted] {
                    let shared = frames.frame(event_kind, &subs);
                    let again = frames.frame(event_kind, &subs);
                    prop_assert_eq!(shared.as_str(), again.as_str());
                    let own = own_encoding(&env, event_kind, &subs);
                    let got: Value = serde_json::from_str(shared.as_str()).unwrap();
                    // The protocol's own event type reads it and writes it back the same.
                    let ServerFrame::Event(typed) = ServerFrame::parse(shared.as_str()).unwrap() else {
                        panic!("not an event frame: {}", shared.as_str());
                    };
                    let retyped: Value = serde_json::from_str(&typed.to_json()).unwrap();
                    prop_assert_eq!(&retyped, &got);
                    prop_assert_eq!(got, own);
                }
            }
        }
    }

    /// A router's own event: its name, the route, the subs and its data, nothing else.
    #[test]
    fn custom_frames_carry_the_event_and_its_data() {
        let env = Envelope {
            route: Arc::from("rooms"),
            position: Position(3, 4),
            message: Arc::new(Message::custom(
                "typing \"now\"",
                json!({"user": "ann", "n": [1, 2]}),
            )),
            published_ms: 0,
        };
        let subs: Vec<Arc<str>> = vec![Arc::from("s1"), Arc::from("s2")];
        let frame = MessageFrames::new(&env).frame(EventKind::Custom, &subs);
        let got: Value = serde_json::from_str(frame.as_str()).unwrap();
        assert_eq!(
            got,
            json!({"event": "typing \"now\"", "route": "rooms", "subs": ["s1", "s2"],
                "data": {"user": "ann", "n": [1, 2]}, "position": "3-4"})
        );
    }

    /// A frame built field by field for one connection, as a plain JSON value.
    fn own_encoding(env: &Envelope, event_kind: EventKind, subs: &[Arc<str>]) -> Value {
        let Message::Change {
            old,
            new,
            kind,
            version,
            ..
        } = &*env.message
        else {
            unreachable!("changes only")
        };
        let name = match event_kind {
            EventKind::Created => "created",
            EventKind::Updated => "updated",
            _ => "deleted",
        };
        let object = match (kind, event_kind) {
            (ChangeKind::Deleted, _) | (_, EventKind::Deleted) => old,
            _ => new,
        };
        let mut frame = json!({
            "event": name,
            "route": "items",
            "subs": subs.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "data": object.clone().unwrap_or_default(),
            "position": env.position.to_string(),
        });
        if let (EventKind::Updated, Some(o), Some(n)) = (event_kind, old, new) {
            frame["changed"] = json!(changed_fields(o, n));
        }
        if let Some(v) = version {
            frame["version"] = json!(v);
        }
        frame
    }
}
