use serde_json::{Map, Value, json};

use super::*;
use crate::schema::{FieldType, Schema};

fn schema() -> Schema {
    let mut s = Schema::new(vec![])
        .field("n", FieldType::Integer, true)
        .field("s", FieldType::Text, true)
        .field("b", FieldType::Bool, false)
        .field("t", FieldType::Timestamp, true)
        .field("secret", FieldType::Text, false);
    s.get_mut("secret").unwrap().filterable = false;
    s
}

fn parse(v: Value) -> Result<Filter, Error> {
    Filter::parse(Some(&v), &schema())
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn refuses_bad_filters_naming_the_problem() {
    let cases = [
        json!({"nope": 1}),
        json!({"secret": "x"}),
        json!({"n__between": 1}),
        json!({"n": "3"}),
        json!({"n": 1.5}),
        json!({"b": 1}),
        json!({"n": null}),
        json!({"b__lt": true}),
        json!({"n__contains": "1"}),
        json!({"n__in": 3}),
        json!({"n__in": [1, "2"]}),
        json!({"s__isnull": "yes"}),
        json!({"$or": {"n": 1}}),
        json!({"$not": [1]}),
        json!({"t__gt": "yesterday"}),
    ];
    for case in cases {
        let err = parse(case.clone()).expect_err(&case.to_string());
        assert_eq!(err.code(), crate::protocol::ErrorCode::BadRequest, "{case}");
    }
    let err = parse(json!({"secret": "x"})).unwrap_err();
    assert!(
        err.to_string().contains("secret"),
        "the error names the field"
    );
    assert!(Filter::parse(Some(&json!([1])), &schema()).is_err());
}

#[test]
fn two_valued_logic_with_nulls() {
    let null_row = obj(json!({"n": null, "s": null, "b": true}));
    let f = parse(json!({"n": 1})).unwrap();
    assert!(!f.matches(&null_row));
    let not = parse(json!({"$not": {"n": 1}})).unwrap();
    assert!(
        not.matches(&null_row),
        "$not of a comparison with null is true"
    );
    let ne = parse(json!({"n__ne": 1})).unwrap();
    assert!(!ne.matches(&null_row), "ne with null is false");
    assert!(
        parse(json!({"n__isnull": true}))
            .unwrap()
            .matches(&null_row)
    );
    assert!(
        !parse(json!({"n__isnull": false}))
            .unwrap()
            .matches(&null_row)
    );
    assert!(
        !parse(json!({"n__in": []}))
            .unwrap()
            .matches(&obj(json!({"n": 1})))
    );
    assert!(!parse(json!({"$or": []})).unwrap().matches(&null_row));
    assert!(parse(json!({})).unwrap().matches(&null_row));
}

#[test]
fn strings_are_literal_and_ordered_by_code_point() {
    let row = obj(json!({"s": "50%_off\\now", "b": false}));
    assert!(parse(json!({"s__contains": "%_"})).unwrap().matches(&row));
    assert!(!parse(json!({"s__contains": "5_%"})).unwrap().matches(&row));
    assert!(
        parse(json!({"s__startswith": "50%"}))
            .unwrap()
            .matches(&row)
    );
    assert!(parse(json!({"s__contains": "\\n"})).unwrap().matches(&row));
    let upper = obj(json!({"s": "B", "b": false}));
    assert!(
        parse(json!({"s__lt": "a"})).unwrap().matches(&upper),
        "\"B\" < \"a\""
    );
    let accent = obj(json!({"s": "École", "b": false}));
    assert!(
        parse(json!({"s__icontains": "éC"}))
            .unwrap()
            .matches(&accent)
    );
    assert!(
        !parse(json!({"s__contains": "éc"}))
            .unwrap()
            .matches(&accent)
    );
}

#[test]
fn timestamps_compare_as_instants() {
    let row = obj(json!({"t": "2026-01-01T10:00:00.5Z", "b": false}));
    assert!(
        parse(json!({"t__gt": "2026-01-01T10:00:00Z"}))
            .unwrap()
            .matches(&row)
    );
    assert!(parse(json!({"t__lt": "2026-01-01T11:00:00+01:00:00"})).is_err());
    assert!(
        parse(json!({"t__lt": "2026-01-01T12:00:00+01:00"}))
            .unwrap()
            .matches(&row)
    );
    assert!(
        parse(json!({"t": "2026-01-01T11:00:00.500+01:00"}))
            .unwrap()
            .matches(&row)
    );
}

#[test]
fn index_key_finds_pinned_equalities() {
    let f = parse(json!({"n": 3, "s__contains": "x"})).unwrap();
    assert_eq!(
        f.index_key().map(|(k, v)| (k.to_owned(), v.len())),
        Some(("n".into(), 1))
    );
    let f = parse(json!({"n__in": [1, 2]})).unwrap();
    assert_eq!(f.index_key().map(|(_, v)| v.len()), Some(2));
    assert!(
        parse(json!({"$or": [{"n": 1}, {"n": 2}]}))
            .unwrap()
            .index_key()
            .is_none()
    );
    assert!(
        parse(json!({"$not": {"n": 1}}))
            .unwrap()
            .index_key()
            .is_none()
    );
}
