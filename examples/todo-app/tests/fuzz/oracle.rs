//! What the protocol promises for any frame: the id a reply must carry, and what a reply
//! may say. Written from the contract, not from the server's code, so it can disagree.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// The error codes of the protocol (section 2); `internal` is one, but never a fair answer
/// to bad input.
pub const CODES: &[&str] = &[
    "bad_request",
    "unknown_route",
    "unknown_verb",
    "not_found",
    "validation",
    "unauthenticated",
    "forbidden",
    "conflict",
    "rate_limited",
    "internal",
    "unavailable",
];

/// The id the reply to `frame` must carry: the frame's `id` when it can be read (an
/// integer in i64 range or a string), else `null`.
///
/// "Read" means: the frame is UTF-8 and JSON by the grammar (RFC 8259), whatever its
/// numbers' range or its nesting depth elsewhere, and its top level is an object. A value
/// serde_json refuses (`1e400`, `"\ud800"`, nesting past 128) outside `id` does not make
/// the id unreadable. (With duplicate keys the last wins, unless an earlier `id` is itself
/// unreadable: an edge this oracle gives up on, answering `null`.)
pub fn readable_id(frame: &[u8]) -> Value {
    let Ok(text) = std::str::from_utf8(frame) else {
        return Value::Null;
    };
    if serde_json::from_str::<IgnoredAny>(text).is_err() {
        return Value::Null; // not JSON at all
    }
    let mut de = serde_json::Deserializer::from_str(text);
    match de.deserialize_map(TopLevel) {
        Ok(Some(id)) => id,
        _ => Value::Null,
    }
}

/// Finds the top-level `id` of an object; `None` when there is none or it is unusable.
/// Everything else is skipped as `IgnoredAny`, which neither recurses nor checks ranges.
struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut id = None;
        while let Some(key) = map.next_key::<KeyBytes>()? {
            if key.0 == b"id" {
                id = map.next_value::<IdValue>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(id)
    }
}

/// A key as bytes, so a key holding a lone surrogate escape still reads.
struct KeyBytes(Vec<u8>);

impl<'de> de::Deserialize<'de> for KeyBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyBytes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<KeyBytes, E> {
                Ok(KeyBytes(v.to_vec()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyBytes, E> {
                Ok(KeyBytes(v.as_bytes().to_vec()))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// The `id` value: `Some` for an integer in i64 range or a string, `None` for the rest.
struct IdValue(Option<Value>);

impl<'de> de::Deserialize<'de> for IdValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IdValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_i64<E>(self, v: i64) -> Result<IdValue, E> {
                Ok(IdValue(Some(v.into())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<IdValue, E> {
                Ok(IdValue(i64::try_from(v).ok().map(Value::from)))
            }
            fn visit_f64<E>(self, _: f64) -> Result<IdValue, E> {
                Ok(IdValue(None))
            }
            fn visit_str<E>(self, v: &str) -> Result<IdValue, E> {
                Ok(IdValue(Some(v.into())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<IdValue, E> {
                Ok(IdValue(None))
            }
            fn visit_unit<E>(self) -> Result<IdValue, E> {
                Ok(IdValue(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<IdValue, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(IdValue(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<IdValue, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(IdValue(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A broken invariant: `class` names its kind (inputs of one class are one finding, and
/// shrinking keeps to it), `detail` says what was seen.
#[derive(Debug, Clone)]
pub struct Violation {
    pub class: String,
    pub detail: String,
}

impl Violation {
    pub fn new(class: impl Into<String>, detail: impl Into<String>) -> Violation {
        Violation {
            class: class.into(),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}\n    seen: {}", self.class, self.detail)
    }
}

/// A message with its numbers blanked out (`#`) and its position dropped, so one cause
/// is one class whatever the input's values.
pub fn shape(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    let mut out = String::new();
    for c in message.chars().take(100) {
        if c.is_ascii_digit() {
            if !out.ends_with('#') {
                out.push('#');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `route.verb` of a frame, for telling `internal` errors apart.
fn route_verb(frame: &[u8]) -> String {
    let v: Value = serde_json::from_slice(frame).unwrap_or(Value::Null);
    let part = |k: &str| {
        v[k].as_str()
            .unwrap_or("?")
            .chars()
            .take(20)
            .collect::<String>()
    };
    format!("{}.{}", part("route"), part("verb"))
}

/// Checks the reply to `frame`: the expected id, and `ok: true` or an error whose code is
/// the protocol's and not `internal`.
pub fn check_reply(reply: &Value, expected_id: &Value, frame: &[u8]) -> Result<(), Violation> {
    let seen = || reply.to_string();
    let Some(obj) = reply.as_object() else {
        return Err(Violation::new("the reply is not an object", seen()));
    };
    let message = shape(reply["error"]["message"].as_str().unwrap_or(""));
    let id = obj.get("id").unwrap_or(&Value::Null);
    if id != expected_id {
        let class = match (id, expected_id) {
            (Value::Null, _) => {
                format!("the reply's id is null though the request's was readable ({message})")
            }
            (_, Value::Null) => "the reply has an id though the request's was unreadable".into(),
            _ => "the reply's id is not the request's".to_owned(),
        };
        return Err(Violation::new(class, seen()));
    }
    match obj.get("ok") {
        Some(Value::Bool(true)) => Ok(()),
        Some(Value::Bool(false)) => {
            let code = reply["error"]["code"].as_str().unwrap_or("");
            if !CODES.contains(&code) {
                Err(Violation::new(
                    format!("error code {code:?} is not the protocol's"),
                    seen(),
                ))
            } else if code == "internal" {
                let class = format!("`internal` answered to {}", route_verb(frame));
                Err(Violation::new(class, seen()))
            } else {
                Ok(())
            }
        }
        _ => Err(Violation::new("the reply has no ok flag", seen())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_read_as_the_contract_says() {
        let id = |s: &str| readable_id(s.as_bytes());
        assert_eq!(id(r#"{"id":7}"#), json!(7));
        assert_eq!(id(r#"{"id":"a"}"#), json!("a"));
        assert_eq!(id(r#"{"id":9223372036854775808}"#), Value::Null);
        assert_eq!(id(r#"{"id":1.5}"#), Value::Null);
        assert_eq!(id(r#"{"id":1e400}"#), Value::Null);
        assert_eq!(id(r#"{"id":7,"args":{"page":1e400}}"#), json!(7));
        assert_eq!(id(r#"{"id":7,"x":"\ud800"}"#), json!(7));
        assert_eq!(id(r#"{"\ud800":1,"id":7}"#), json!(7));
        assert_eq!(
            id(&format!(
                r#"{{"id":7,"x":{}1{}}}"#,
                "[".repeat(500),
                "]".repeat(500)
            )),
            json!(7)
        );
        assert_eq!(id(r#"{"id":7,"id":"b"}"#), json!("b"));
        assert_eq!(id(r#"[{"id":7}]"#), Value::Null);
        assert_eq!(id(r#"{"id":7"#), Value::Null);
        assert_eq!(id("\u{feff}{\"id\":7}"), Value::Null);
        assert_eq!(readable_id(b"{\"id\":7,\"x\":\"\xff\"}"), Value::Null);
    }
}
