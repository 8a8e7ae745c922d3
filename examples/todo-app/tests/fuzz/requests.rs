//! Requests built on valid skeletons (`id`, `route`, `verb`, `args`) for every route and
//! verb the todo-app answers, with arguments that are right, of the wrong type, or extreme.

use proptest::prelude::*;

use super::filters::{Kind, filter_arg, value_for, wide_or};
use super::json::{J, extreme_number, odd_string, scalar, wild};

/// `get_list` reads the most arguments, so it comes up three times as often.
const MODEL_VERBS: &[&str] = &[
    "get_list",
    "get_list",
    "get_list",
    "get_single",
    "create",
    "update",
    "delete",
    "subscribe",
    "unsubscribe",
    "presence_join",
    "presence_update",
    "presence_leave",
    "presence_watch",
];
const DRAGON_VERBS: &[&str] = &["ping", "whoami", "auth"];

/// A route and one of its verbs, sometimes a name no route or verb has.
fn route_verb() -> BoxedStrategy<(String, String)> {
    let model = (
        proptest::sample::select(&["todo-item", "todo-list"][..]),
        proptest::sample::select(MODEL_VERBS),
    );
    let dragon = (Just("dragon"), proptest::sample::select(DRAGON_VERBS));
    let odd = "[a-z_-]{0,12}";
    prop_oneof![
        8 => model.prop_map(|(r, v)| (r.to_owned(), v.to_owned())),
        2 => dragon.prop_map(|(r, v)| (r.to_owned(), v.to_owned())),
        1 => (odd, odd),
    ]
    .boxed()
}

/// An argument: mostly a good value, so a request gets past its other arguments to the
/// one that is wrong; else a value at an edge or of another type.
fn arg(good: BoxedStrategy<J>, bad: BoxedStrategy<J>) -> BoxedStrategy<J> {
    prop_oneof![3 => good, 1 => bad].boxed()
}

/// Anything at all in place of an argument.
fn anything() -> BoxedStrategy<J> {
    prop_oneof![scalar(), wild()].boxed()
}

fn boolean() -> BoxedStrategy<J> {
    any::<bool>().prop_map(|b| J::lit(b.to_string())).boxed()
}

/// `page` and `per_page`: in range, or at and past the edges (0, -1, 2^63, 2^64, 1e400, a
/// string, null, a list, an object).
fn page() -> BoxedStrategy<J> {
    const EDGES: &[&str] = &[
        "0",
        "-1",
        "500",
        "501",
        "-0",
        "1.5",
        "1e2",
        "1e400",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775809",
        "\"1\"",
        "null",
        "[]",
        "{}",
        "true",
    ];
    let bad = prop_oneof![
        3 => proptest::sample::select(EDGES).prop_map(J::lit),
        1 => extreme_number(),
        1 => anything(),
    ];
    arg((1i64..6).prop_map(J::int).boxed(), bad.boxed())
}

/// Ids of rows that exist (the session seeds some), of rows that do not, or no id at all.
fn object_id() -> BoxedStrategy<J> {
    let bad = prop_oneof![2 => extreme_number(), 1 => anything()];
    arg((1i64..24).prop_map(J::int).boxed(), bad.boxed())
}

/// Filters valid on both model routes, or random ones (mostly invalid).
fn some_filter() -> BoxedStrategy<J> {
    const GOOD: &[&str] = &[
        "{}",
        r#"{"id__gte":1}"#,
        r#"{"id__in":[1,2,3]}"#,
        r#"{"$or":[{"id":1},{"$not":{"id__lt":5}}]}"#,
    ];
    let good = proptest::sample::select(GOOD).prop_map(J::lit).boxed();
    arg(good, filter_arg())
}

/// `data` for `create`/`update`: the writable fields (and read-only or unknown ones).
fn data() -> BoxedStrategy<J> {
    const KEYS: &[(&str, Kind)] = &[
        ("name", Kind::Text),
        ("list_id", Kind::Int),
        ("text", Kind::Text),
        ("done", Kind::Bool),
        ("position", Kind::Int),
        ("id", Kind::Int),
        ("created_at", Kind::Time),
        ("bogus", Kind::Text),
    ];
    let entry = proptest::sample::select(KEYS)
        .prop_flat_map(|(k, kind)| (Just(k.to_owned()), value_for(kind)));
    let list = "[a-zA-Z ]{1,12}".prop_map(|n| J::obj([("name", J::str(&n))]));
    let item = (1i64..4, "[a-z ]{1,12}", boolean(), -5i64..50).prop_map(|(l, t, d, p)| {
        J::obj([
            ("list_id", J::int(l)),
            ("text", J::str(&t)),
            ("done", d),
            ("position", J::int(p)),
        ])
    });
    let bad = prop_oneof![
        6 => proptest::collection::vec(entry, 0..5).prop_map(J::Obj),
        1 => wild(),
    ];
    arg(prop_oneof![list, item].boxed(), bad.boxed())
}

/// `order_by`: field names (descending with `-`), unknown ones, or not a list.
fn order_by() -> BoxedStrategy<J> {
    const NAMES: &[&str] = &[
        "text",
        "-position",
        "done",
        "created_at",
        "-",
        "--id",
        "",
        "colour",
        "name",
    ];
    let good = proptest::sample::select(&["id", "-id"][..])
        .prop_map(|n| J::Arr(vec![J::str(n)]))
        .boxed();
    let name = proptest::sample::select(NAMES).prop_map(J::str);
    let bad = prop_oneof![
        4 => proptest::collection::vec(name, 0..4).prop_map(J::Arr),
        1 => proptest::collection::vec(scalar(), 0..3).prop_map(J::Arr),
        1 => anything(),
    ];
    arg(good, bad.boxed())
}

/// Subscription positions: ours look like `a-b`; also past u64 and broken ones.
fn position() -> BoxedStrategy<J> {
    const EDGES: &[&str] = &[
        "0-0",
        "-1-1",
        "18446744073709551616-1",
        "18446744073709551615-18446744073709551615",
        "a-b",
        "",
        "-",
        "1",
    ];
    let good = (0u64..1 << 50, 0u64..100)
        .prop_map(|(a, b)| J::str(&format!("{a}-{b}")))
        .boxed();
    let bad = prop_oneof![
        2 => proptest::sample::select(EDGES).prop_map(J::str),
        1 => odd_string(),
        1 => anything(),
    ];
    arg(good, bad.boxed())
}

/// Presence keys: object ids, strings, or neither.
fn presence_key() -> BoxedStrategy<J> {
    let good = prop_oneof![
        (1i64..24).prop_map(J::int),
        "(list:)?[0-9]{0,3}".prop_map(|s| J::str(&s)),
    ];
    let bad = prop_oneof![extreme_number(), odd_string(), anything()];
    arg(good.boxed(), bad.boxed())
}

/// Presence state: small objects, one over the 1,024-byte limit, or not an object.
fn presence_state() -> BoxedStrategy<J> {
    let good = proptest::collection::vec(("[a-z]{1,5}", scalar()), 0..3).prop_map(J::Obj);
    let bad = prop_oneof![
        (900usize..1_200).prop_map(|n| J::obj([("pad", J::str(&"x".repeat(n)))])),
        anything(),
    ];
    arg(good.boxed(), bad.boxed())
}

/// The arguments a verb reads, each present or not, right or wrong.
fn args_for(verb: &str) -> BoxedStrategy<Vec<(&'static str, J)>> {
    use proptest::option::weighted;
    let some = |name: &'static str, s: BoxedStrategy<J>| {
        weighted(0.6, s)
            .prop_map(move |v| v.map(|v| (name, v)))
            .boxed()
    };
    let sub = "s[0-9]{1,2}".prop_map(|s| J::str(&s)).boxed();
    let token = "[a-zA-Z0-9.]{0,20}".prop_map(|s| J::str(&s)).boxed();
    let parts: Vec<BoxedStrategy<Option<(&'static str, J)>>> = match verb {
        "get_list" => vec![
            some("filter", some_filter()),
            some("order_by", order_by()),
            some("page", page()),
            some("per_page", page()),
        ],
        "get_single" | "delete" => vec![some("id", object_id())],
        "create" => vec![some("data", data())],
        "update" => vec![some("id", object_id()), some("data", data())],
        "subscribe" => vec![
            some("filter", some_filter()),
            some("since", position()),
            some("snapshot", arg(boolean(), anything())),
        ],
        "unsubscribe" => vec![some("sub", arg(sub, anything()))],
        "presence_join" | "presence_update" => {
            vec![some("key", presence_key()), some("state", presence_state())]
        }
        "presence_leave" => vec![some("key", presence_key())],
        "presence_watch" => vec![
            some("key", presence_key()),
            some("count", arg(boolean(), anything())),
        ],
        "auth" => vec![some("token", arg(token, odd_string()))],
        _ => vec![some("bogus", wild())],
    };
    parts
        .prop_map(|ps| ps.into_iter().flatten().collect())
        .boxed()
}

/// Request ids: mostly usable, sometimes of a type or size the server cannot read.
pub fn request_id() -> BoxedStrategy<Option<J>> {
    prop_oneof![
        8 => any::<i64>().prop_map(|n| Some(J::int(n))),
        3 => "[ -~]{0,10}".prop_map(|s| Some(J::str(&s))),
        1 => extreme_number().prop_map(Some),
        1 => odd_string().prop_map(Some),
        1 => scalar().prop_map(Some),
        1 => Just(None),
    ]
    .boxed()
}

/// How the top level departs from the skeleton: none mostly, or one field broken.
#[derive(Debug, Clone)]
enum Twist {
    None,
    Replace(&'static str, J),
    Remove(&'static str),
    Extra(String, J),
}

fn twist() -> BoxedStrategy<Twist> {
    let field = proptest::sample::select(&["route", "verb", "args"][..]);
    prop_oneof![
        24 => Just(Twist::None),
        2 => (field.clone(), wild()).prop_map(|(f, v)| Twist::Replace(f, v)),
        1 => field.prop_map(Twist::Remove),
        1 => ("[a-z_]{0,8}", wild()).prop_map(|(k, v)| Twist::Extra(k, v)),
    ]
    .boxed()
}

/// A whole request frame as a tree.
pub fn request() -> BoxedStrategy<J> {
    (route_verb(), request_id(), twist())
        .prop_flat_map(|((route, verb), id, twist)| {
            let args = args_for(&verb);
            (Just((route, verb, id, twist)), args)
        })
        .prop_map(|((route, verb, id, twist), args)| {
            let mut req = J::obj(Vec::<(String, J)>::new());
            if let Some(id) = id {
                req.set("id", id);
            }
            req.set("route", J::str(&route));
            req.set("verb", J::str(&verb));
            req.set("args", J::obj(args));
            match twist {
                Twist::None => {}
                Twist::Replace(f, v) => req.set(f, v),
                Twist::Remove(f) => req.remove(f),
                Twist::Extra(k, v) => req.set(&k, v),
            }
            req
        })
        .boxed()
}

/// `get_list` or `subscribe` on either model route, with a readable id and a random filter
/// (now and then a very wide one).
pub fn filter_request() -> BoxedStrategy<J> {
    let route = proptest::sample::select(&["todo-item", "todo-list"][..]);
    let verb = proptest::sample::select(&["get_list", "subscribe"][..]);
    let filter = prop_oneof![30 => filter_arg(), 1 => wide_or()];
    (route, verb, any::<u32>(), filter)
        .prop_map(|(route, verb, id, filter)| {
            J::obj([
                ("id", J::int(id.into())),
                ("route", J::str(route)),
                ("verb", J::str(verb)),
                ("args", J::obj([("filter", filter)])),
            ])
        })
        .boxed()
}
