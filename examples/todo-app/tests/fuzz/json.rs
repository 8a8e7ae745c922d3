//! A JSON tree rendered to text, so frames can hold what `serde_json::Value` cannot:
//! `1e400`, lone surrogate escapes, `-0`, duplicate keys, nesting thousands deep.

use proptest::prelude::*;
use serde_json::Value;

/// One JSON value as text. Deep nesting is one [`J::Nest`] node rather than a deep tree, so
/// rendering, shrinking and dropping never recurse thousands deep.
#[derive(Debug, Clone)]
pub enum J {
    /// A literal written as is: a number, `true`, `null`, a string with quotes and escapes.
    Lit(String),
    Arr(Vec<J>),
    /// Keys are plain text (escaped when rendered); duplicates are kept.
    Obj(Vec<(String, J)>),
    /// `inner` wrapped `depth` times in `[...]` or in `{"key": ...}`.
    Nest {
        key: Option<String>,
        depth: usize,
        inner: Box<J>,
    },
}

impl J {
    pub fn lit(s: impl Into<String>) -> J {
        J::Lit(s.into())
    }

    pub fn str(s: &str) -> J {
        J::Lit(serde_json::to_string(s).expect("a str serializes"))
    }

    pub fn int(n: i64) -> J {
        J::Lit(n.to_string())
    }

    pub fn obj<K: Into<String>>(entries: impl IntoIterator<Item = (K, J)>) -> J {
        J::Obj(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// Sets `key` (replacing every entry of that name), or adds it; objects only.
    pub fn set(&mut self, key: &str, value: J) {
        if let J::Obj(entries) = self {
            entries.retain(|(k, _)| k != key);
            entries.push((key.to_owned(), value));
        }
    }

    /// Drops every entry named `key`; objects only.
    pub fn remove(&mut self, key: &str) {
        if let J::Obj(entries) = self {
            entries.retain(|(k, _)| k != key);
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out);
        out
    }

    fn render_into(&self, out: &mut String) {
        match self {
            J::Lit(s) => out.push_str(s),
            J::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.render_into(out);
                }
                out.push(']');
            }
            J::Obj(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).expect("a key serializes"));
                    out.push(':');
                    v.render_into(out);
                }
                out.push('}');
            }
            J::Nest { key, depth, inner } => {
                let open = match key {
                    Some(k) => format!("{{{}:", serde_json::to_string(k).expect("key")),
                    None => "[".to_owned(),
                };
                let close = if key.is_some() { "}" } else { "]" };
                out.push_str(&open.repeat(*depth));
                inner.render_into(out);
                out.push_str(&close.repeat(*depth));
            }
        }
    }

    /// The nearest `serde_json::Value`: a literal serde_json refuses (`1e400`, `"\ud800"`)
    /// becomes a string of its text, and each nesting stops at 127 deep, as deep as
    /// serde_json reads from a frame (deeper would only test the stack).
    pub fn to_value(&self) -> Value {
        match self {
            J::Lit(s) => serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())),
            J::Arr(items) => Value::Array(items.iter().map(J::to_value).collect()),
            J::Obj(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value()))
                    .collect(),
            ),
            J::Nest { key, depth, inner } => {
                let mut v = inner.to_value();
                for _ in 0..(*depth).min(127) {
                    v = match key {
                        Some(k) => Value::Object([(k.clone(), v)].into_iter().collect()),
                        None => Value::Array(vec![v]),
                    };
                }
                v
            }
        }
    }
}

/// Numbers at and past every edge: i64/u64/f64 limits, `-0`, exponents, long digit runs.
pub fn extreme_number() -> BoxedStrategy<J> {
    const EDGES: &[&str] = &[
        "0",
        "-0",
        "-0.0",
        "1",
        "-1",
        "1.5",
        "1.0",
        "1e2",
        "1E+2",
        "1e-2",
        "1e400",
        "-1e400",
        "1e-400",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
        "18446744073709551615",
        "18446744073709551616",
        "-18446744073709551616",
        "4294967296",
        "2147483648",
        "1.7976931348623157e308",
        "5e-324",
        "123456789012345678901234567890",
    ];
    prop_oneof![
        4 => proptest::sample::select(EDGES).prop_map(J::lit),
        2 => any::<i64>().prop_map(J::int),
        1 => any::<u64>().prop_map(|n| J::lit(n.to_string())),
        1 => proptest::num::f64::NORMAL.prop_map(|f| J::lit(f.to_string())),
        1 => ("-?[1-9][0-9]{18,400}", "(\\.[0-9]{1,30})?", "([eE][-+]?[0-9]{1,5})?")
            .prop_map(|(a, b, c)| J::lit(format!("{a}{b}{c}"))),
    ]
    .boxed()
}

/// Strings a parser or a database may trip on: NULs, lone surrogates, SQL wildcards,
/// quotes, very long ones, and arbitrary Unicode.
pub fn odd_string() -> BoxedStrategy<J> {
    const RAW: &[&str] = &[
        r#""""#,
        r#""\u0000""#,
        r#""a\u0000b""#,
        r#""\ud800""#,
        r#""\udc00""#,
        r#""x\ud800y""#,
        r#""\ud800\udc00""#,
        r#""\udbff\udfff""#,
        r#""\ud800\ud800""#,
        r#""%""#,
        r#""_""#,
        r#""\\""#,
        r#""'; DROP TABLE todo_item; --""#,
        r#""\"""#,
        r#""\/""#,
        r#""\b\f\n\r\t""#,
        r#""İ""#,
        r#""\uFEFF""#,
    ];
    prop_oneof![
        3 => proptest::sample::select(RAW).prop_map(J::lit),
        3 => any::<String>().prop_map(|s| J::str(&s)),
        1 => (0usize..20_000).prop_map(|n| J::str(&"x".repeat(n))),
        1 => "[a-z0-9:_-]{0,12}".prop_map(|s| J::str(&s)),
    ]
    .boxed()
}

/// RFC 3339 timestamps, good, extreme and broken.
pub fn timestamp() -> BoxedStrategy<J> {
    const RAW: &[&str] = &[
        "2020-01-01T00:00:00Z",
        "2020-01-01T00:00:00+14:00",
        "2020-01-01T00:00:00-23:59",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999999Z",
        "9999-12-31T23:59:59.999999999-23:59",
        "0000-01-01T00:00:00+23:59",
        "2020-02-30T00:00:00Z",
        "2020-13-45T99:99:99Z",
        "2016-12-31T23:59:60Z",
        "2020-01-01",
        "2020-01-01T00:00:00",
        "+275760-09-13T00:00:00Z",
        "1970-01-01T00:00:00.0000000000000000001Z",
    ];
    prop_oneof![
        3 => proptest::sample::select(RAW).prop_map(J::str),
        1 => any::<i64>().prop_map(|s| {
            let t = chrono::DateTime::from_timestamp(s % 253_402_300_800, 0).unwrap_or_default();
            J::str(&t.to_rfc3339())
        }),
    ]
    .boxed()
}

/// Any scalar: null, booleans, numbers, strings.
pub fn scalar() -> BoxedStrategy<J> {
    prop_oneof![
        1 => Just(J::lit("null")),
        1 => any::<bool>().prop_map(|b| J::lit(b.to_string())),
        3 => extreme_number(),
        3 => odd_string(),
    ]
    .boxed()
}

/// Any JSON: scalars, small arrays and objects (empty ones too), deep nesting.
pub fn wild() -> BoxedStrategy<J> {
    let leaf = prop_oneof![
        6 => scalar(),
        1 => Just(J::Arr(vec![])),
        1 => Just(J::Obj(vec![])),
    ];
    let tree = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(J::Arr),
            proptest::collection::vec(("[a-z$_]{0,6}", inner), 0..4).prop_map(J::Obj),
        ]
    });
    prop_oneof![
        8 => tree,
        1 => nested(scalar()),
    ]
    .boxed()
}

/// `inner` nested 1 to 5,000 deep in arrays or one-key objects (serde_json stops at 128).
pub fn nested(inner: impl Strategy<Value = J> + 'static) -> BoxedStrategy<J> {
    let key = proptest::option::of(prop_oneof![Just("$not".to_owned()), "[a-z]{0,3}"]);
    (key, 1usize..5_000, inner)
        .prop_map(|(key, depth, inner)| J::Nest {
            key,
            depth,
            inner: Box::new(inner),
        })
        .boxed()
}
