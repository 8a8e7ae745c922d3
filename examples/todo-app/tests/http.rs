//! HTTP beside the socket: health, metrics, and the JS client.

mod common;

use common::{Backend, TestApp, WAIT, http_raw};
use serde_json::{Value, json};

async fn health_metrics_and_client(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (status, body) = http_raw(app.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body).unwrap();
    let relaying = health["changelog"]["relaying"].clone();
    assert!(relaying.is_boolean(), "{health}");
    assert_eq!(
        health,
        json!({"database": true, "broker": true, "backlog": 0,
               "changelog": {"backlog": 0, "oldest_ms": null, "relaying": relaying}})
    );

    let c = app.client().await;
    let list = c
        .call("todo-list", "create", json!({"data": {"name": "L"}}))
        .await
        .unwrap();
    let mut sub = c
        .subscribe("todo-item", json!({"filter": {"list_id": list.data["id"]}}))
        .await
        .unwrap();
    c.call(
        "todo-item",
        "create",
        json!({"data": {"list_id": list.data["id"], "text": "x"}}),
    )
    .await
    .unwrap();
    sub.next_within(WAIT).await.expect("event");
    let _ = c.call("todo-item", "no-such-verb", json!({})).await;
    let _ = c.call("todo-list", "create", json!({"data": {}})).await;

    let (status, text) = http_raw(app.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200);
    for line in [
        "dragon_connections 1",
        "dragon_subscriptions 1",
        r#"dragon_requests_total{route="todo-item",verb="create",outcome="ok"} 1"#,
        r#"dragon_requests_total{route="todo-list",verb="create",outcome="validation"} 1"#,
        r#"dragon_requests_total{route="todo-item",verb="other",outcome="unknown_verb"} 1"#,
        "dragon_events_delivered_total 1",
        "dragon_delivery_latency_ms_count 1",
        "dragon_publish_backlog 0",
        "dragon_changelog_backlog 0",
        "dragon_changelog_oldest_unpublished_seconds 0.0",
        "dragon_changelog_relaying 1",
        "dragon_publish_backlog_oldest_seconds 0.0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }

    let (status, js) = http_raw(app.addr, "GET", "/dragon/dragon.js", &[], b"").await;
    assert_eq!(status, 200);
    assert!(
        js.contains("root.dragon = api"),
        "the classic script defines the global"
    );
    let (status, mjs) = http_raw(app.addr, "GET", "/dragon/dragon.mjs", &[], b"").await;
    assert_eq!(status, 200);
    assert!(mjs.contains("export"));
    let (status, dts) = http_raw(app.addr, "GET", "/dragon/dragon.d.ts", &[], b"").await;
    assert_eq!(status, 200);
    assert!(dts.contains("liveList"));
    let (status, page) = http_raw(app.addr, "GET", "/", &[], b"").await;
    assert_eq!(status, 200);
    assert!(page.contains("<html") || page.contains("<!doctype") || page.contains("<!DOCTYPE"));
}

/// Dragon's router nests into an existing axum app under a prefix of the app's choosing.
async fn nests_into_an_existing_app(backend: Backend) {
    let url = common::fresh_database(backend).await;
    let db = todo_app::open_database(&url).await.unwrap();
    let dragon = todo_app::dragon(&db, None);
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "the app's own page" }))
        .nest("/live", dragon.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        dragon
            .serve_until(listener, app, std::future::pending())
            .await
    });
    let (status, body) = http_raw(addr, "GET", "/", &[], b"").await;
    assert_eq!((status, body.as_str()), (200, "the app's own page"));
    let (status, _) = http_raw(addr, "GET", "/live/healthz", &[], b"").await;
    assert_eq!(status, 200);
    let c = dragon_core::client::Client::connect(&format!("ws://{addr}/live/ws"))
        .await
        .unwrap();
    let list = common::new_list(&c, "nested").await;
    assert!(list > 0);
}

both_backends!(health_metrics_and_client, nests_into_an_existing_app);
