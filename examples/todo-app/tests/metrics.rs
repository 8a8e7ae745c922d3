//! `/metrics` over a real socket: the app's metrics beside Dragon's, and labels that made-up
//! route and verb names cannot multiply.

mod common;

use common::{Backend, TestApp, http_raw};
use dragon_core::client::ClientError;
use dragon_core::prometheus_client::metrics::counter::Counter;
use dragon_core::prometheus_client::metrics::gauge::Gauge;
use dragon_core::prometheus_client::registry::Registry;
use dragon_core::router::{Rule, Verb};
use dragon_core::{Dragon, ModelRouter};
use serde_json::json;
use todo_app::entity::todo_list;

/// The `dragon_requests_total` lines of a scrape, sorted (a family's order is unspecified).
fn request_series(text: &str) -> Vec<&str> {
    let mut series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("dragon_requests_total{"))
        .collect();
    series.sort_unstable();
    series
}

async fn scrape(app: &TestApp) -> String {
    let (status, text) = http_raw(app.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200, "{text}");
    text
}

fn code(result: Result<dragon_core::protocol::Output, ClientError>) -> &'static str {
    match result {
        Err(ClientError::Server(body)) => body.code.as_str(),
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_routes_and_verbs_count_as_one_other_series_each() {
    let app = TestApp::start(Backend::Sqlite).await;
    let c = app.client().await;
    let mut names = Vec::new();
    for _ in 0..500 {
        let route = format!("route-{}", uuid::Uuid::new_v4().simple());
        assert_eq!(
            code(c.call(&route, "get_list", json!({})).await),
            "unknown_route"
        );
        names.push(route);
    }
    for _ in 0..500 {
        let verb = format!("verb-{}", uuid::Uuid::new_v4().simple());
        assert_eq!(
            code(c.call("todo-item", &verb, json!({})).await),
            "unknown_verb"
        );
        names.push(verb);
    }
    c.call("todo-list", "get_list", json!({})).await.unwrap();

    let text = scrape(&app).await;
    assert_eq!(
        request_series(&text),
        [
            r#"dragon_requests_total{route="other",verb="other",outcome="unknown_route"} 500"#,
            r#"dragon_requests_total{route="todo-item",verb="other",outcome="unknown_verb"} 500"#,
            r#"dragon_requests_total{route="todo-list",verb="get_list",outcome="ok"} 1"#,
        ],
        "{text}"
    );
    assert!(
        names.iter().all(|n| !text.contains(n.as_str())),
        "a made-up name is in\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_own_metrics_are_served_beside_dragons() {
    let mut registry = Registry::default();
    let signups = Counter::<u64>::default();
    let queue = Gauge::<i64>::default();
    registry.register("myapp_signups", "Accounts created", signups.clone());
    registry.register("myapp_queue_depth", "Jobs waiting", queue.clone());
    let app = TestApp::start_with(Backend::Sqlite, None, |b| b.metrics_registry(registry)).await;
    signups.inc_by(3);
    queue.set(7);
    let c = app.client().await;
    c.call("todo-list", "get_list", json!({})).await.unwrap();

    let (status, head) = raw_head(app.addr).await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    let text = scrape(&app).await;
    for line in [
        "# TYPE myapp_signups counter",
        "myapp_signups_total 3",
        "myapp_queue_depth 7",
        "# TYPE dragon_requests counter",
        r#"dragon_requests_total{route="todo-list",verb="get_list",outcome="ok"} 1"#,
        "# TYPE dragon_connections gauge",
        "dragon_connections 1",
        "# TYPE dragon_delivery_latency_ms histogram",
        "# EOF",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(
        text.ends_with("# EOF\n"),
        "one exposition, ended once:\n{text}"
    );
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
}

/// A model route without presence answers `unknown_verb` to a presence verb before its
/// rules (not `unauthenticated`), so it is counted as `other` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbs_a_model_route_lacks_are_unknown_before_its_rules() {
    let url = common::fresh_database(Backend::Sqlite).await;
    let db = todo_app::open_database(&url).await.unwrap();
    let lists = ModelRouter::<todo_list::Model>::new(db.clone())
        .filterable(["id"])
        .permit(&Verb::READ, Rule::Authenticated);
    let dragon = Dragon::builder().route(lists).database(db.clone()).build();
    let app = TestApp::serve(dragon, db, url).await;
    let c = app.client().await;
    let join = json!({"key": "lobby"});
    assert_eq!(
        code(c.call("todo-list", "presence_join", join).await),
        "unknown_verb"
    );
    assert_eq!(
        code(c.call("todo-list", "get_list", json!({})).await),
        "unauthenticated"
    );
    let text = scrape(&app).await;
    assert_eq!(
        request_series(&text),
        [
            r#"dragon_requests_total{route="todo-list",verb="get_list",outcome="unauthenticated"} 1"#,
            r#"dragon_requests_total{route="todo-list",verb="other",outcome="unknown_verb"} 1"#,
        ],
        "{text}"
    );
}

/// The status line and headers of `GET /metrics`.
async fn raw_head(addr: std::net::SocketAddr) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let head = raw.split_once("\r\n\r\n").map_or(raw.as_str(), |(h, _)| h);
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_owned())
}
