//! Reading a request frame: the request, or the error to answer with and the id to answer
//! it under. The id is read even when the rest of the frame is not usable JSON (a number
//! out of range, a lone surrogate, nesting too deep), so the client hears which call failed.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::error::Error;
use crate::protocol::{Request, RequestId};

/// Reads a request frame; on failure, the id to answer with (if it could be read).
pub(super) fn parse_request(text: &str) -> Result<Request, (Option<RequestId>, Error)> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        (
            lenient_id(text),
            Error::bad_request(format!("not JSON: {e}")),
        )
    })?;
    let Value::Object(map) = value else {
        return Err((None, Error::bad_request("a request must be a JSON object")));
    };
    let id = match map.get("id") {
        Some(Value::Number(n)) if n.is_i64() => RequestId::Int(n.as_i64().expect("i64")),
        Some(Value::String(s)) => RequestId::Str(s.clone()),
        _ => {
            return Err((
                None,
                Error::bad_request("id must be an integer or a string"),
            ));
        }
    };
    let field = |name: &str| match map.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err((
            Some(id.clone()),
            Error::bad_request(format!("{name} must be a string")),
        )),
    };
    let route = field("route")?;
    let verb = field("verb")?;
    let args = match map.get("args") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(Value::Object(o)) => Value::Object(o.clone()),
        Some(_) => {
            return Err((Some(id), Error::bad_request("args must be an object")));
        }
    };
    Ok(Request {
        id,
        route,
        verb,
        args,
    })
}

/// The top-level `id` of a frame serde_json could not read whole but that is JSON by the
/// grammar: everything else is skipped unread (numbers unconverted, strings unescaped,
/// nesting unlimited). None for a frame that is not JSON (trailing bytes, say).
fn lenient_id(text: &str) -> Option<RequestId> {
    let mut de = serde_json::Deserializer::from_str(text);
    let id = de.deserialize_map(TopLevel).ok()?;
    de.end().ok()?;
    id
}

/// Finds the top-level `id` of an object.
struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = Option<RequestId>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut id = None;
        while let Some(key) = map.next_key::<RawKey>()? {
            if key.0 {
                id = map.next_value::<LenientId>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(id)
    }
}

/// Whether a key is `id`, read as raw bytes (a key with a lone surrogate still reads).
struct RawKey(bool);

impl<'de> de::Deserialize<'de> for RawKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<RawKey, E> {
                Ok(RawKey(v == b"id"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawKey, E> {
                Ok(RawKey(v == "id"))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// An `id` value: an integer in i64 range or a string; anything else reads as none.
struct LenientId(Option<RequestId>);

impl<'de> de::Deserialize<'de> for LenientId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LenientId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_i64<E>(self, v: i64) -> Result<LenientId, E> {
                Ok(LenientId(Some(RequestId::Int(v))))
            }
            fn visit_u64<E>(self, v: u64) -> Result<LenientId, E> {
                Ok(LenientId(i64::try_from(v).ok().map(RequestId::Int)))
            }
            fn visit_f64<E>(self, _: f64) -> Result<LenientId, E> {
                Ok(LenientId(None))
            }
            fn visit_str<E>(self, v: &str) -> Result<LenientId, E> {
                Ok(LenientId(Some(RequestId::Str(v.to_owned()))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<LenientId, E> {
                Ok(LenientId(None))
            }
            fn visit_unit<E>(self) -> Result<LenientId, E> {
                Ok(LenientId(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<LenientId, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(LenientId(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<LenientId, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(LenientId(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_read_when_the_rest_is_not() {
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        for (frame, id) in [
            (
                r#"{"id": 7, "args": {"page": 1e400}}"#.to_owned(),
                Some(RequestId::Int(7)),
            ),
            (
                r#"{"args": {"x": "\ud800"}, "id": "a"}"#.to_owned(),
                Some(RequestId::Str("a".into())),
            ),
            (
                format!(r#"{{"id": 3, "args": {deep}}}"#),
                Some(RequestId::Int(3)),
            ),
            (r#"{"id": 1e400, "route": "x"}"#.to_owned(), None),
            (
                r#"{"id": 18446744073709551615, "x": 1e400}"#.to_owned(),
                None,
            ),
            ("not json".to_owned(), None),
            (r#"{"id": 1, "route": "dragon"}x"#.to_owned(), None),
        ] {
            let (got, err) = parse_request(&frame).expect_err("refused");
            assert_eq!(got, id, "{frame}");
            assert!(err.to_body().message.contains("not JSON"), "{frame}");
        }
    }
}
