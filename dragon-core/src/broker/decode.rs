//! Reading a [`Message`] from JSON in one pass.
//!
//! serde's derive for an internally tagged enum (`"type": "change"`) first buffers the whole
//! object into its private `Content` tree (an allocation per key and value), then reads the
//! variant from that. A node reads every message of every route from Redis, so the message
//! is read instead into one flat struct of every field, straight from the text, and then
//! checked against its `type`: the same forms are accepted, and a refusal names the field
//! that is missing or wrong, as serde's would.

use std::sync::Arc;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::Message;
use crate::protocol::ChangeKind;

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Type {
    Change,
    Custom,
    Gap,
}

/// Every field any variant has; which ones must be there depends on `type`.
#[derive(Deserialize)]
pub(super) struct Flat {
    #[serde(rename = "type")]
    ty: Type,
    kind: Option<ChangeKind>,
    old: Option<Map<String, Value>>,
    new: Option<Map<String, Value>>,
    id: Option<Arc<str>>,
    version: Option<u64>,
    event: Option<String>,
    /// `Some(Value::Null)` for `"data": null` (a custom event's data may be null).
    #[serde(default, deserialize_with = "present")]
    data: Option<Value>,
    except: Option<Arc<str>>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A required field that is not there, in serde's words.
fn missing(field: &'static str) -> String {
    format!("missing field `{field}`")
}

impl TryFrom<Flat> for Message {
    type Error = String;

    fn try_from(f: Flat) -> Result<Message, String> {
        Ok(match f.ty {
            Type::Change => Message::Change {
                kind: f.kind.ok_or_else(|| missing("kind"))?,
                old: f.old,
                new: f.new,
                id: f.id,
                version: f.version,
            },
            Type::Custom => Message::Custom {
                event: f.event.ok_or_else(|| missing("event"))?,
                data: f.data.ok_or_else(|| missing("data"))?,
                id: f.id,
                except: f.except,
            },
            Type::Gap => Message::Gap,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read(v: Value) -> Result<Message, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn every_message_reads_back_as_written() {
        let mut row = Map::new();
        row.insert("id".into(), json!(1));
        row.insert("text".into(), json!("milk \"2%\""));
        let messages = [
            Message::created(row.clone()),
            Message::updated(row.clone(), row.clone()),
            Message::Change {
                kind: ChangeKind::Deleted,
                old: Some(row),
                new: None,
                id: None,
                version: Some(7),
            },
            Message::Custom {
                event: "typing".into(),
                data: Value::Null,
                id: Some("x".into()),
                except: Some("conn-1".into()),
            },
            Message::Custom {
                event: "message".into(),
                data: json!({"room_id": 4, "text": "hi"}),
                id: None,
                except: None,
            },
            Message::Gap,
        ];
        for m in messages {
            let text = serde_json::to_string(&m).expect("serialize");
            let back: Message = serde_json::from_str(&text).expect(&text);
            assert_eq!(back, m, "{text}");
        }
    }

    #[test]
    fn malformed_messages_are_refused_with_the_reason() {
        let cases = [
            (json!({"kind": "created"}), "missing field `type`"),
            (json!({"type": "change"}), "missing field `kind`"),
            (
                json!({"type": "custom", "data": 1}),
                "missing field `event`",
            ),
            (
                json!({"type": "custom", "event": "e"}),
                "missing field `data`",
            ),
            (json!({"type": "nope"}), "unknown variant `nope`"),
            (
                json!({"type": "change", "kind": "moved"}),
                "unknown variant `moved`",
            ),
            (
                json!({"type": "change", "kind": "created", "new": 3}),
                "invalid type",
            ),
            (
                json!({"type": "change", "kind": "created", "version": -1}),
                "invalid value",
            ),
            (json!([1, 2]), "invalid type"),
        ];
        for (input, reason) in cases {
            let err = read(input.clone()).expect_err(&input.to_string());
            assert!(err.contains(reason), "{input}: {err}");
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let m = read(json!({"type": "gap", "from": "elsewhere"})).expect("gap");
        assert_eq!(m, Message::Gap);
    }
}
