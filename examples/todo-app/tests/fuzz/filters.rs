//! Filters (protocol section 4) for the todo-app's routes: mostly well-formed enough to get
//! past the first check, with wrong types, unknown fields and lookups, `$or`/`$not` nesting
//! (and `$and`, which the language lacks), and `in` lists long enough to strain SQL.

use proptest::prelude::*;
use proptest::sample::select;

use super::json::{J, extreme_number, nested, odd_string, scalar, timestamp, wild};

/// The kind of value a field holds, for picking values that fit (or do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Text,
    Bool,
    Time,
}

/// Every field of both routes (some not filterable there), the in-process schema's
/// (`score`, `note`, `meta`), and names no schema has.
pub const FIELDS: &[(&str, Kind)] = &[
    ("id", Kind::Int),
    ("list_id", Kind::Int),
    ("position", Kind::Int),
    ("text", Kind::Text),
    ("name", Kind::Text),
    ("done", Kind::Bool),
    ("created_at", Kind::Time),
    ("colour", Kind::Text),
    ("score", Kind::Int),
    ("note", Kind::Text),
    ("meta", Kind::Text),
    ("", Kind::Text),
    ("ID", Kind::Int),
    ("id__id", Kind::Int),
];

const OPS: &[&str] = &[
    "eq",
    "ne",
    "lt",
    "lte",
    "gt",
    "gte",
    "in",
    "contains",
    "icontains",
    "startswith",
    "isnull",
    "near",
    "",
    "IN",
    "regex",
];

/// A value of the field's own kind: small and realistic, or at the edge.
pub fn typed(kind: Kind) -> BoxedStrategy<J> {
    match kind {
        Kind::Int => prop_oneof![
            3 => (-3i64..40).prop_map(J::int),
            2 => extreme_number(),
        ]
        .boxed(),
        Kind::Text => prop_oneof![
            2 => "[a-zA-Z ]{0,8}".prop_map(|s| J::str(&s)),
            2 => odd_string(),
        ]
        .boxed(),
        Kind::Bool => any::<bool>().prop_map(|b| J::lit(b.to_string())).boxed(),
        Kind::Time => timestamp().boxed(),
    }
}

/// A value for a field: its own kind mostly, else anything at all.
pub fn value_for(kind: Kind) -> BoxedStrategy<J> {
    prop_oneof![
        4 => typed(kind),
        1 => scalar(),
        1 => wild(),
    ]
    .boxed()
}

/// Up to ~25,000 copies of a short value (as many as fit 50 KB), near SQLite's 32,766
/// bound parameters.
fn long_list(kind: Kind) -> BoxedStrategy<J> {
    (0usize..30_000, typed(kind))
        .prop_map(|(n, v)| {
            let v = match v {
                J::Lit(s) if s.len() <= 4 => J::Lit(s),
                _ => J::int(7),
            };
            let each = v.render().len() + 1;
            J::Arr(vec![v; n.min(50_000 / each)])
        })
        .boxed()
}

/// The right-hand side for `field__op`.
fn operand(kind: Kind, op: &'static str) -> BoxedStrategy<J> {
    match op {
        "isnull" => prop_oneof![
            4 => any::<bool>().prop_map(|b| J::lit(b.to_string())),
            1 => scalar(),
        ]
        .boxed(),
        "in" => prop_oneof![
            4 => proptest::collection::vec(value_for(kind), 0..8).prop_map(J::Arr),
            1 => long_list(kind),
            1 => scalar(),
        ]
        .boxed(),
        _ => value_for(kind).boxed(),
    }
}

/// One comparison entry: `field` or `field__op` with an operand.
fn comparison() -> BoxedStrategy<(String, J)> {
    (
        proptest::sample::select(FIELDS),
        proptest::option::weighted(0.7, proptest::sample::select(OPS)),
    )
        .prop_flat_map(|((name, kind), op)| {
            let key = match op {
                Some(op) => format!("{name}__{op}"),
                None => name.to_owned(),
            };
            (Just(key), operand(kind, op.unwrap_or("eq")))
        })
        .boxed()
}

/// A filter object: comparisons combined with `$or`, `$not` and `$and`, sometimes with a
/// wrong shape where a filter or a list of filters belongs.
pub fn filter() -> BoxedStrategy<J> {
    let leaf = proptest::collection::vec(comparison(), 0..3).prop_map(J::Obj);
    leaf.prop_recursive(4, 48, 4, |inner| {
        let entry = prop_oneof![
            3 => comparison(),
            2 => proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|fs| ("$or".to_owned(), J::Arr(fs))),
            2 => inner.clone().prop_map(|f| ("$not".to_owned(), f)),
            1 => proptest::collection::vec(inner.clone(), 0..3)
                .prop_map(|fs| ("$and".to_owned(), J::Arr(fs))),
            1 => (proptest::sample::select(&["$or", "$not", "$nor", "$"][..]), wild())
                .prop_map(|(k, v)| (k.to_owned(), v)),
        ];
        proptest::collection::vec(entry, 0..4).prop_map(J::Obj)
    })
    .boxed()
}

/// A filter, or something in its place that is not one (nested deep, a list, a scalar).
pub fn filter_arg() -> BoxedStrategy<J> {
    prop_oneof![
        8 => filter(),
        1 => nested(filter()).prop_map(|n| match n {
            J::Nest { depth, inner, .. } => J::Nest {
                key: Some("$not".into()),
                depth,
                inner,
            },
            other => other,
        }),
        1 => wild(),
    ]
    .boxed()
}

/// `$or` with up to thousands of entries (as many as fit ~55 KB), maybe under `$not`: where
/// recursive SQL building and SQLite's expression-depth limit meet what one frame holds.
pub fn wide_or() -> BoxedStrategy<J> {
    const ENTRIES: &[&str] = &[
        r#"{"id":1}"#,
        r#"{"done":true}"#,
        r#"{"$not":{"id":2}}"#,
        "{}",
    ];
    (select(ENTRIES), 0usize..7_000, any::<bool>())
        .prop_map(|(entry, n, not)| {
            let n = n.min(55_000 / (entry.len() + 1));
            let or = J::obj([("$or", J::Arr(vec![J::lit(entry); n]))]);
            if not { J::obj([("$not", or)]) } else { or }
        })
        .boxed()
}
