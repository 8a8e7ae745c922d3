//! A real todo-app server on a free port, on SQLite or PostgreSQL, for tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use dragon_core::Dragon;
use dragon_core::broker::Broker;
use dragon_core::client::Client;
use dragon_core::testing::TestServer;
use sea_orm::{ConnectionTrait, DatabaseConnection};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server tests use: `DRAGON_TEST_PG`, default the local one.
pub fn pg_base() -> String {
    std::env::var("DRAGON_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh, empty database URL for one test.
pub async fn fresh_database(backend: Backend) -> String {
    let name = format!("dragon_{}", uuid::Uuid::new_v4().simple());
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join("dragon-tests");
            std::fs::create_dir_all(&dir).expect("temp dir");
            format!("sqlite://{}", dir.join(format!("{name}.sqlite")).display())
        }
        Backend::Postgres => {
            let base = pg_base();
            let admin = dragon_core::db::connect(&base)
                .await
                .expect("PostgreSQL must be running for these tests (see .ci/run)");
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            let (prefix, _) = base.rsplit_once('/').expect("database in url");
            format!("{prefix}/{name}")
        }
    }
}

pub struct TestApp {
    pub dragon: Dragon,
    pub db: DatabaseConnection,
    pub addr: std::net::SocketAddr,
    pub database_url: String,
    server: Option<TestServer>,
}

impl TestApp {
    pub async fn start(backend: Backend) -> TestApp {
        Self::start_with(backend, None, |b| b).await
    }

    /// Starts the todo-app with its own broker (or a given one) on a free port.
    pub async fn start_with(
        backend: Backend,
        broker: Option<Arc<dyn Broker>>,
        configure: impl FnOnce(dragon_core::server::Builder) -> dragon_core::server::Builder,
    ) -> TestApp {
        let url = fresh_database(backend).await;
        let db = todo_app::open_database(&url).await.expect("open database");
        let mut builder = configure(todo_app::builder(&db));
        if let Some(broker) = broker {
            builder = builder.broker(broker);
        }
        let dragon = builder.build();
        Self::serve(dragon, db, url).await
    }

    pub async fn serve(dragon: Dragon, db: DatabaseConnection, database_url: String) -> TestApp {
        let server = TestServer::start(&dragon, todo_app::app(&dragon))
            .await
            .expect("serve");
        TestApp {
            dragon,
            db,
            addr: server.addr(),
            database_url,
            server: Some(server),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url()).await.expect("connect")
    }

    /// Stops the server gracefully (clients get 1001).
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }
}

/// Runs an async test body once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::common::Backend::Sqlite).await }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::common::Backend::Postgres).await }
            )*
        }
    };
}

pub const WAIT: Duration = Duration::from_secs(5);
pub const QUIET: Duration = Duration::from_millis(300);

/// A raw HTTP/1.1 request over a real socket: the status and the body as text.
pub async fn http_raw(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    // The server may answer (413) before reading everything; ignore a reset here.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    )
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Creates a todo list; its id.
pub async fn new_list(c: &dragon_core::client::Client, name: &str) -> i64 {
    c.call(
        "todo-list",
        "create",
        serde_json::json!({"data": {"name": name}}),
    )
    .await
    .expect("create list")
    .data["id"]
        .as_i64()
        .expect("id")
}

/// Creates a todo item; the object as stored.
pub async fn new_item(c: &dragon_core::client::Client, list: i64, text: &str) -> serde_json::Value {
    c.call(
        "todo-item",
        "create",
        serde_json::json!({"data": {"list_id": list, "text": text}}),
    )
    .await
    .expect("create item")
    .data
}

/// Fails if an event arrives within [`QUIET`].
pub async fn expect_quiet(sub: &mut dragon_core::client::Subscription) {
    if let Some(e) = sub.next_within(QUIET).await {
        panic!("unexpected event {e:?}");
    }
}

/// Every item of `list` as the server answers `get_list` (page by page), by id.
pub async fn items_by_id(
    c: &dragon_core::client::Client,
    list: i64,
) -> std::collections::HashMap<i64, serde_json::Value> {
    let mut out = std::collections::HashMap::new();
    for page in 1.. {
        let got = c
            .call(
                "todo-item",
                "get_list",
                serde_json::json!({"filter": {"list_id": list}, "per_page": 500, "page": page}),
            )
            .await
            .expect("get_list")
            .data;
        let rows = got.as_array().expect("rows");
        for row in rows {
            out.insert(row["id"].as_i64().expect("id"), row.clone());
        }
        if rows.len() < 500 {
            break;
        }
    }
    out
}
