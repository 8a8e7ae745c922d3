//! Whole frames: text that is not JSON, JSON that is no request, truncated requests, deep
//! nesting, odd ids; and text frames whose bytes are not UTF-8.

use proptest::prelude::*;
use proptest::sample::{Index, select};

use super::filters::filter;
use super::json::{J, nested, scalar, wild};
use super::requests::{filter_request, request, request_id};

/// Generated frames stay under the 64 KiB limit (over it, the server closes with 1009).
pub const MAX_FRAME: usize = 60 * 1024;

/// JSON tokens and near-tokens in random order.
fn token_soup() -> BoxedStrategy<String> {
    const TOKENS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "\"",
        "\"id\"",
        "\"route\"",
        "\"verb\"",
        "\"args\"",
        "\"dragon\"",
        "\"ping\"",
        "\"todo-item\"",
        "null",
        "nul",
        "true",
        "tru",
        "1",
        "-",
        "1e",
        "1e400",
        ".5",
        "0x10",
        "NaN",
        "Infinity",
        "\\",
        "\\u",
        "\\ud800",
        " ",
        "\n",
        "\u{0}",
        "//",
        "/*",
        "'",
        "\u{feff}",
        "é",
    ];
    let token = prop_oneof![
        4 => select(TOKENS).prop_map(str::to_owned),
        1 => "[ -~]{1,3}",
    ];
    proptest::collection::vec(token, 0..40)
        .prop_map(|ts| ts.concat())
        .boxed()
}

/// A request cut short, at a character boundary (so the frame is still UTF-8).
fn truncated() -> BoxedStrategy<String> {
    (request(), any::<Index>())
        .prop_map(|(r, at)| {
            let text = r.render();
            let mut cut = at.index(text.len() + 1);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text[..cut].to_owned()
        })
        .boxed()
}

/// Deep nesting: a bare tower, one in a ping's args (with a readable id), or an unclosed one.
fn deep() -> BoxedStrategy<String> {
    let in_args = nested(scalar()).prop_map(|n| {
        J::obj([
            ("id", J::int(1)),
            ("route", J::str("dragon")),
            ("verb", J::str("ping")),
            ("args", J::obj([("x", n)])),
        ])
        .render()
    });
    prop_oneof![
        nested(scalar()).prop_map(|n| n.render()),
        in_args,
        (1usize..20_000, select(&["[", "{\"a\":", "{"][..])).prop_map(|(n, s)| s.repeat(n)),
    ]
    .boxed()
}

/// A ping carrying an odd id and an odd value elsewhere in the frame.
fn odd_ping() -> BoxedStrategy<String> {
    (request_id(), scalar(), any::<bool>())
        .prop_map(|(id, v, top)| {
            let mut ping = J::obj([("route", J::str("dragon")), ("verb", J::str("ping"))]);
            if let Some(id) = id {
                ping.set("id", id);
            }
            let key = if top { "extra" } else { "args" };
            let v = if top { v } else { J::obj([("x", v)]) };
            ping.set(key, v);
            ping.render()
        })
        .boxed()
}

/// A valid ping with duplicate ids, a byte-order mark, whitespace, or trailing text.
fn framed_ping() -> BoxedStrategy<String> {
    const PINGS: &[&str] = &[
        r#"{"id":1,"id":"two","route":"dragon","verb":"ping"}"#,
        r#"{"id":"two","id":1,"route":"dragon","verb":"ping"}"#,
        r#"{"id":1,"route":"dragon","verb":"ping","route":"nope"}"#,
        r#"{"id":1,"route":"dragon","verb":"ping","args":null}"#,
        r#"{"id":1,"route":"dragon","verb":"ping","args":{}}"#,
    ];
    let around = select(&["", " \t\r\n", "\u{feff}", "x", "{}", "\u{0}", "]"][..]);
    (select(PINGS), around.clone(), around)
        .prop_map(|(p, before, after)| format!("{before}{p}{after}"))
        .boxed()
}

/// Any bytes, made into text by replacing what is not UTF-8.
fn lossy_bytes() -> BoxedStrategy<String> {
    proptest::collection::vec(any::<u8>(), 0..200)
        .prop_map(|b| String::from_utf8_lossy(&b).into_owned())
        .boxed()
}

/// Text frames that exercise the frame parser: mostly not requests at all.
pub fn text_frame() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => token_soup(),
        3 => truncated(),
        2 => deep(),
        2 => wild().prop_map(|j| j.render()),
        1 => filter().prop_map(|j| j.render()),
        3 => odd_ping(),
        1 => framed_ping(),
        1 => lossy_bytes(),
        1 => any::<String>(),
    ]
    .prop_map(String::into_bytes)
    .prop_filter("under the frame limit", |b| b.len() <= MAX_FRAME)
    .boxed()
}

/// Byte sequences that are never UTF-8: stray continuations, overlong forms, encoded
/// surrogates, code points past U+10FFFF, bytes that never occur, truncated sequences.
const NOT_UTF8: &[&[u8]] = &[
    b"\x80",
    b"\xbf",
    b"\xc0\x80",
    b"\xc1\xbf",
    b"\xe0\x80\x80",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xf0\x80\x80\x80",
    b"\xf4\x90\x80\x80",
    b"\xf5",
    b"\xff",
    b"\xfe\xff",
    b"\xf0\x9f",
    b"\xe2\x82",
    b"\xc3",
];

/// Text frames whose payload is not UTF-8: a request or garbage with bad bytes put in.
pub fn invalid_utf8_frame() -> BoxedStrategy<Vec<u8>> {
    let base = prop_oneof![
        2 => request().prop_map(|r| r.render().into_bytes()),
        1 => token_soup().prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
    ];
    (base, select(NOT_UTF8), any::<Index>())
        .prop_map(|(mut bytes, bad, at)| {
            let at = at.index(bytes.len() + 1);
            bytes.splice(at..at, bad.iter().copied());
            bytes
        })
        .prop_filter("not UTF-8, under the limit", |b| {
            std::str::from_utf8(b).is_err() && b.len() <= MAX_FRAME
        })
        .boxed()
}

/// Requests on valid skeletons with wrong or extreme fields.
pub fn request_frame() -> BoxedStrategy<Vec<u8>> {
    request()
        .prop_map(|r| r.render().into_bytes())
        .prop_filter("under the frame limit", |b| b.len() <= MAX_FRAME)
        .boxed()
}

/// `get_list`/`subscribe` with random filters.
pub fn filter_frame() -> BoxedStrategy<Vec<u8>> {
    filter_request()
        .prop_map(|r| r.render().into_bytes())
        .prop_filter("under the frame limit", |b| b.len() <= MAX_FRAME)
        .boxed()
}
