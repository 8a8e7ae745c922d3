//! Every verb and live subscription over real WebSockets, on SQLite and PostgreSQL.

mod common;

use common::{Backend, TestApp, WAIT, expect_quiet, new_item, new_list};
use dragon_core::client::{ClientError, Subscription};
use dragon_core::protocol::ErrorCode;
use serde_json::json;

fn code(err: ClientError) -> ErrorCode {
    match err {
        ClientError::Server(body) => body.code,
        other => panic!("expected a server error, got {other}"),
    }
}

async fn expect_event(sub: &mut Subscription, kind: &str) -> dragon_core::protocol::Event {
    let e = sub
        .next_within(WAIT)
        .await
        .unwrap_or_else(|| panic!("no {kind} event arrived"));
    assert_eq!(e.event, kind, "event {e:?}");
    assert!(e.subs.contains(&sub.id), "event names its subscription");
    e
}

async fn crud(backend: Backend) {
    let app = TestApp::start(backend).await;
    let c = app.client().await;
    assert_eq!(c.hello()["protocol"], 1);
    let list = new_list(&c, "Groceries").await;

    // create fills defaults and server-set fields, and returns exactly the published fields.
    let item = new_item(&c, list, "milk").await;
    let keys: Vec<&str> = item
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        ["created_at", "done", "id", "list_id", "position", "text"]
    );
    assert_eq!(item["done"], false);
    assert_eq!(item["position"], 0);
    assert!(item["created_at"].as_str().unwrap().ends_with('Z'));
    let id = item["id"].as_i64().unwrap();

    let single = c
        .call("todo-item", "get_single", json!({"id": id}))
        .await
        .unwrap();
    assert_eq!(single.data, item);

    let updated = c
        .call(
            "todo-item",
            "update",
            json!({"id": id, "data": {"done": true, "position": 3}}),
        )
        .await
        .unwrap();
    assert_eq!(updated.data["done"], true);
    assert_eq!(updated.data["position"], 3);
    assert_eq!(
        updated.data["text"], "milk",
        "update returns the whole object"
    );

    let deleted = c
        .call("todo-item", "delete", json!({"id": id}))
        .await
        .unwrap();
    assert_eq!(deleted.data, json!({"id": id}));
    let gone = c
        .call("todo-item", "get_single", json!({"id": id}))
        .await
        .unwrap_err();
    assert_eq!(code(gone), ErrorCode::NotFound);
    let again = c
        .call("todo-item", "delete", json!({"id": id}))
        .await
        .unwrap_err();
    assert_eq!(code(again), ErrorCode::NotFound);
    let upd = c
        .call(
            "todo-item",
            "update",
            json!({"id": id, "data": {"done": false}}),
        )
        .await;
    assert_eq!(code(upd.unwrap_err()), ErrorCode::NotFound);
}

async fn get_list_pages_and_order(backend: Backend) {
    let app = TestApp::start(backend).await;
    let c = app.client().await;
    let list = new_list(&c, "L").await;
    for (i, text) in ["b", "a", "C", "a", "é"].iter().enumerate() {
        let item = new_item(&c, list, text).await;
        c.call(
            "todo-item",
            "update",
            json!({"id": item["id"], "data": {"position": i as i64 % 2}}),
        )
        .await
        .unwrap();
    }
    // Code point order: "C" < "a" < "b" < "é"; ties by id.
    let all = c
        .call(
            "todo-item",
            "get_list",
            json!({"order_by": ["text"], "per_page": 2}),
        )
        .await
        .unwrap();
    let meta = all.meta.unwrap();
    assert_eq!(meta["total"], 5);
    assert_eq!(meta["pages"], 3);
    assert_eq!(meta["page"], 1);
    assert_eq!(meta["per_page"], 2);
    assert!(meta["position"].is_string());
    let mut seen = Vec::new();
    for page in 1..=3 {
        let out = c
            .call(
                "todo-item",
                "get_list",
                json!({"order_by": ["text"], "per_page": 2, "page": page}),
            )
            .await
            .unwrap();
        for item in out.data.as_array().unwrap() {
            seen.push((
                item["text"].as_str().unwrap().to_owned(),
                item["id"].as_i64().unwrap(),
            ));
        }
    }
    let texts: Vec<&str> = seen.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(texts, ["C", "a", "a", "b", "é"]);
    assert!(seen[1].1 < seen[2].1, "ties break by id");

    let desc = c
        .call(
            "todo-item",
            "get_list",
            json!({"order_by": ["-position", "-text"]}),
        )
        .await
        .unwrap();
    let order: Vec<(i64, String)> = desc
        .data
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["position"].as_i64().unwrap(),
                i["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut expected = order.clone();
    expected.sort_by(|a, b| b.cmp(a));
    assert_eq!(order, expected);

    let filtered = c
        .call(
            "todo-item",
            "get_list",
            json!({"filter": {"text__in": ["a", "é"], "position": 0}}),
        )
        .await
        .unwrap();
    assert_eq!(
        filtered.meta.unwrap()["total"],
        filtered.data.as_array().unwrap().len()
    );
    for item in filtered.data.as_array().unwrap() {
        assert_eq!(item["position"], 0);
        assert!(item["text"] == "a" || item["text"] == "é");
    }
    let ic = c
        .call(
            "todo-item",
            "get_list",
            json!({"filter": {"text__icontains": "É"}}),
        )
        .await
        .unwrap();
    assert_eq!(
        ic.data.as_array().unwrap().len(),
        1,
        "icontains folds non-ASCII case"
    );
}

async fn live_filtered_subscriptions(backend: Backend) {
    let app = TestApp::start(backend).await;
    let writer = app.client().await;
    let reader = app.client().await;
    let a = new_list(&writer, "A").await;
    let b = new_list(&writer, "B").await;
    let mut sub_a = reader
        .subscribe("todo-item", json!({"filter": {"list_id": a}}))
        .await
        .unwrap();
    let mut sub_b = reader
        .subscribe("todo-item", json!({"filter": {"list_id": b}}))
        .await
        .unwrap();
    assert!(sub_a.reply["position"].is_string());

    let item = new_item(&writer, a, "in A").await;
    let id = item["id"].as_i64().unwrap();
    let e = expect_event(&mut sub_a, "created").await;
    assert_eq!(e.data.as_ref().unwrap(), &item);
    assert_eq!(e.route.as_deref(), Some("todo-item"));
    expect_quiet(&mut sub_b).await;

    writer
        .call(
            "todo-item",
            "update",
            json!({"id": id, "data": {"text": "still A", "done": false}}),
        )
        .await
        .unwrap();
    let e = expect_event(&mut sub_a, "updated").await;
    assert_eq!(
        e.changed.as_deref(),
        Some(&["text".to_owned()][..]),
        "changed is exact"
    );
    assert_eq!(e.data.as_ref().unwrap()["text"], "still A");

    // An update that changes no published field is not sent.
    writer
        .call(
            "todo-item",
            "update",
            json!({"id": id, "data": {"done": false}}),
        )
        .await
        .unwrap();
    expect_quiet(&mut sub_a).await;

    // Moving the item (and renaming it): A sees it leave, B sees it arrive.
    writer
        .call(
            "todo-item",
            "update",
            json!({"id": id, "data": {"list_id": b, "text": "now in B"}}),
        )
        .await
        .unwrap();
    let left = expect_event(&mut sub_a, "deleted").await;
    let left = left.data.as_ref().unwrap();
    assert_eq!(left["id"], id);
    // A leaves with the state A could see, never the new one (which may be outside A's scope).
    assert_eq!(left["list_id"], a, "{left}");
    assert_eq!(left["text"], "still A", "{left}");
    let arrived = expect_event(&mut sub_b, "created").await;
    assert_eq!(arrived.data.as_ref().unwrap()["list_id"], b);

    writer
        .call("todo-item", "delete", json!({"id": id}))
        .await
        .unwrap();
    let e = expect_event(&mut sub_b, "deleted").await;
    assert_eq!(
        e.data.as_ref().unwrap()["text"],
        "now in B",
        "deleted carries the last state"
    );
    expect_quiet(&mut sub_a).await;

    // Positions increase.
    new_item(&writer, b, "x").await;
    let p1 = expect_event(&mut sub_b, "created").await.position.unwrap();
    new_item(&writer, b, "y").await;
    let p2 = expect_event(&mut sub_b, "created").await.position.unwrap();
    let parse = |p: &str| {
        p.split_once('-')
            .map(|(a, b)| (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()))
            .unwrap()
    };
    assert!(parse(&p2) > parse(&p1));

    // A subscription is also a Stream.
    new_item(&writer, b, "streamed").await;
    let streamed = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut sub_b)).await;
    assert_eq!(streamed.unwrap().unwrap().data.unwrap()["text"], "streamed");

    // Unsubscribed: nothing more.
    reader
        .call("todo-item", "unsubscribe", json!({"sub": sub_b.id}))
        .await
        .unwrap();
    new_item(&writer, b, "z").await;
    expect_quiet(&mut sub_b).await;
    let again = reader
        .call("todo-item", "unsubscribe", json!({"sub": sub_b.id}))
        .await;
    assert_eq!(code(again.unwrap_err()), ErrorCode::NotFound);

    // A closed connection leaves no subscription behind.
    assert_eq!(app.dragon.subscription_count(), 1);
    reader.close();
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.dragon.subscription_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(app.dragon.subscription_count(), 0);
}

async fn one_frame_per_connection(backend: Backend) {
    let app = TestApp::start(backend).await;
    let writer = app.client().await;
    let list = new_list(&writer, "L").await;
    let reader = app.client().await;
    let s1 = reader
        .subscribe("todo-item", json!({"filter": {"list_id": list}}))
        .await
        .unwrap();
    let mut s2 = reader
        .subscribe("todo-item", json!({"filter": {"text__startswith": "hi"}}))
        .await
        .unwrap();
    let mut s3 = reader.subscribe("todo-item", json!({})).await.unwrap();
    new_item(&writer, list, "hi there").await;
    let e = expect_event(&mut s2, "created").await;
    let mut subs = e.subs.clone();
    subs.sort();
    let mut expected = vec![s1.id.clone(), s2.id.clone(), s3.id.clone()];
    expected.sort();
    assert_eq!(
        subs, expected,
        "one frame lists every matching subscription"
    );
    // The same frame was handed to each local subscription; there is no second frame.
    let dup = s3.next_within(WAIT).await.expect("s3 gets the same frame");
    assert_eq!(dup, e);
    expect_quiet(&mut s3).await;
}

async fn snapshot_and_since(backend: Backend) {
    let app = TestApp::start(backend).await;
    let c = app.client().await;
    let list = new_list(&c, "L").await;
    new_item(&c, list, "one").await;
    new_item(&c, list, "two").await;
    let sub = c
        .subscribe(
            "todo-item",
            json!({"filter": {"list_id": list}, "snapshot": true}),
        )
        .await
        .unwrap();
    let items = sub.reply["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(
        sub.reply.get("recovered").is_none(),
        "recovered only with since"
    );
    let position = sub.reply["position"].as_str().unwrap().to_owned();

    // Changes after that position are replayed to a later subscriber, in order.
    let third = new_item(&c, list, "three").await;
    let elsewhere = new_list(&c, "other").await;
    new_item(&c, elsewhere, "elsewhere").await;
    c.call(
        "todo-item",
        "update",
        json!({"id": third["id"], "data": {"done": true}}),
    )
    .await
    .unwrap();
    let other = app.client().await;
    let mut replay = other
        .subscribe(
            "todo-item",
            json!({"filter": {"list_id": list}, "since": position}),
        )
        .await
        .unwrap();
    assert_eq!(replay.reply["recovered"], true);
    let e1 = expect_event(&mut replay, "created").await;
    assert_eq!(e1.data.unwrap()["text"], "three");
    let e2 = expect_event(&mut replay, "updated").await;
    assert_eq!(e2.changed.unwrap(), ["done"]);
    expect_quiet(&mut replay).await;
    // Then live ones.
    new_item(&c, list, "four").await;
    assert_eq!(
        expect_event(&mut replay, "created").await.data.unwrap()["text"],
        "four"
    );

    // A position this server cannot know: not recovered, but live.
    let mut lost = other
        .subscribe(
            "todo-item",
            json!({"filter": {"list_id": list}, "since": "1-5"}),
        )
        .await
        .unwrap();
    assert_eq!(lost.reply["recovered"], false);
    new_item(&c, list, "five").await;
    expect_event(&mut lost, "created").await;
}

async fn validation_errors(backend: Backend) {
    let app = TestApp::start(backend).await;
    let c = app.client().await;
    let list = new_list(&c, "L").await;
    let cases = [
        (json!({"list_id": list}), "text", "this field is required"),
        (
            json!({"list_id": list, "text": "x", "bogus": 1}),
            "bogus",
            "unknown field",
        ),
        (
            json!({"list_id": list, "text": "x", "id": 5}),
            "id",
            "read-only field",
        ),
        (
            json!({"list_id": list, "text": "x", "created_at": "2020-01-01T00:00:00Z"}),
            "created_at",
            "read-only field",
        ),
        (
            json!({"list_id": list, "text": 5}),
            "text",
            "of type string",
        ),
        (
            json!({"list_id": list, "text": "x", "done": 1}),
            "done",
            "of type boolean",
        ),
        (
            json!({"list_id": list, "text": "x", "position": 1.5}),
            "position",
            "of type integer",
        ),
        (
            json!({"list_id": list, "text": "x", "position": "3"}),
            "position",
            "of type integer",
        ),
        (
            json!({"list_id": 999_999, "text": "x"}),
            "list_id",
            "does not exist",
        ),
        (
            json!({"list_id": list, "text": ""}),
            "text",
            "may not be empty",
        ),
        (
            json!({"list_id": list, "text": null}),
            "text",
            "may not be null",
        ),
    ];
    for (data, field, message) in cases {
        let err = c
            .call("todo-item", "create", json!({"data": data}))
            .await
            .unwrap_err();
        let ClientError::Server(body) = err else {
            panic!("server error expected")
        };
        assert_eq!(body.code, ErrorCode::Validation, "{data}");
        let details = body.details.expect("details");
        let msgs = details[field]
            .as_array()
            .unwrap_or_else(|| panic!("{field} in {details}"));
        assert!(
            msgs.iter().any(|m| m.as_str().unwrap().contains(message)),
            "{data}: {details}"
        );
    }
    let long = "x".repeat(201);
    let err = c
        .call("todo-list", "create", json!({"data": {"name": long}}))
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::Validation);
    // Nothing was created by any of those.
    let out = c.call("todo-item", "get_list", json!({})).await.unwrap();
    assert_eq!(out.meta.unwrap()["total"], 0);
    // Update refuses the same way and changes nothing.
    let item = new_item(&c, list, "keep").await;
    let err = c
        .call(
            "todo-item",
            "update",
            json!({"id": item["id"], "data": {"text": "new", "done": "yes"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::Validation);
    let same = c
        .call("todo-item", "get_single", json!({"id": item["id"]}))
        .await
        .unwrap();
    assert_eq!(
        same.data["text"], "keep",
        "a failed request changes nothing"
    );
}

async fn deleting_a_list_publishes_its_items(backend: Backend) {
    let app = TestApp::start(backend).await;
    let c = app.client().await;
    let list = new_list(&c, "L").await;
    new_item(&c, list, "a").await;
    new_item(&c, list, "b").await;
    let mut sub = c
        .subscribe("todo-item", json!({"filter": {"list_id": list}}))
        .await
        .unwrap();
    c.call("todo-list", "delete", json!({"id": list}))
        .await
        .unwrap();
    expect_event(&mut sub, "deleted").await;
    expect_event(&mut sub, "deleted").await;
    let out = c
        .call(
            "todo-item",
            "get_list",
            json!({"filter": {"list_id": list}}),
        )
        .await
        .unwrap();
    assert_eq!(out.data, json!([]));
}

both_backends!(
    crud,
    get_list_pages_and_order,
    live_filtered_subscriptions,
    one_frame_per_connection,
    snapshot_and_since,
    validation_errors,
    deleting_a_list_publishes_its_items,
);
