//! Helpers for the Redis scale-out tests: nodes sharing Redis and a database, a private
//! `redis-server` that can be killed and restarted, and a tiny HTTP client.
//!
//! Redis must be running at `DRAGON_TEST_REDIS` (default `redis://127.0.0.1:6379`) and
//! `redis-server` must be on the PATH: without them these tests fail, they never skip.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dragon_core::broker::{Broker, RedisBroker, RedisOptions};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Backend, TestApp, fresh_database};

/// The shared Redis the tests use.
pub fn redis_url() -> String {
    std::env::var("DRAGON_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Options with a key prefix of their own, so tests never see each other's keys.
pub fn isolated_options() -> RedisOptions {
    RedisOptions {
        key_prefix: format!("dragon-test:{}:", uuid::Uuid::new_v4().simple()),
        ..RedisOptions::default()
    }
}

pub async fn connect_broker(url: &str, options: RedisOptions) -> Arc<RedisBroker> {
    match RedisBroker::connect(url, options).await {
        Ok(b) => Arc::new(b),
        Err(err) => {
            panic!("Redis must be running at {url} for these tests (set DRAGON_TEST_REDIS): {err}")
        }
    }
}

/// Several todo-app servers on their own ports, one database, each with its own
/// `RedisBroker` on the same Redis and key prefix.
pub struct Nodes {
    pub nodes: Vec<TestApp>,
    pub brokers: Vec<Arc<RedisBroker>>,
    pub options: RedisOptions,
    pub url: String,
}

impl Nodes {
    pub async fn start(count: usize, url: &str, options: RedisOptions) -> Nodes {
        Self::start_with(count, url, options, |_, b| b).await
    }

    /// `configure(node index, builder)` adds per-node settings (publish secret, ...).
    pub async fn start_with(
        count: usize,
        url: &str,
        options: RedisOptions,
        configure: impl Fn(usize, dragon_core::server::Builder) -> dragon_core::server::Builder,
    ) -> Nodes {
        let database_url = fresh_database(Backend::Sqlite).await;
        let db = todo_app::open_database(&database_url)
            .await
            .expect("open database");
        let mut nodes = Vec::new();
        let mut brokers = Vec::new();
        for i in 0..count {
            let broker = connect_broker(url, options.clone()).await;
            let dyn_broker: Arc<dyn Broker> = broker.clone();
            let dragon = configure(i, todo_app::builder(&db).broker(dyn_broker)).build();
            nodes.push(TestApp::serve(dragon, db.clone(), database_url.clone()).await);
            brokers.push(broker);
        }
        Nodes {
            nodes,
            brokers,
            options,
            url: url.to_owned(),
        }
    }
}

impl Drop for Nodes {
    /// Deletes the test's keys (even when the test failed), so a shared Redis stays clean.
    fn drop(&mut self) {
        delete_keys(&self.url, &self.options.key_prefix);
    }
}

/// Deletes every key under `prefix` with redis-cli (best effort).
pub fn delete_keys(url: &str, prefix: &str) {
    let Ok(out) = Command::new("redis-cli")
        .args(["-u", url, "--scan", "--pattern"])
        .arg(format!("{prefix}*"))
        .output()
    else {
        return;
    };
    let keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    for chunk in keys.chunks(100) {
        let _ = Command::new("redis-cli")
            .args(["-u", url, "DEL"])
            .args(chunk)
            .stdout(Stdio::null())
            .status();
    }
}

/// A raw HTTP/1.1 request; the status and the body parsed as JSON (`Null` if it is not).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let (status, body) = crate::common::http_raw(addr, method, path, headers, body).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

pub async fn post_json(
    addr: std::net::SocketAddr,
    secret: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let auth = secret.map(|s| format!("Bearer {s}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    http(addr, "POST", "/dragon/publish", &headers, body.as_bytes()).await
}

/// A `redis-server` of the test's own, on a free port, persisting to an append-only file in
/// a temp dir (fsync on every write), so a restart keeps the streams.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let dir =
            std::env::temp_dir().join(format!("dragon-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut server = RedisServer {
            port,
            dir,
            child: None,
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port and directory; waits until it answers.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for these tests");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping().await {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn ping(&self) -> bool {
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if s.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await,
            Ok(Ok(n)) if buf[..n].starts_with(b"+PONG")
        )
    }

    /// Kills the server (SIGKILL: a crash, not a clean shutdown) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Deletes what the server persisted (call while it is down): it restarts empty.
    pub fn wipe(&self) {
        assert!(self.child.is_none(), "wipe a stopped server");
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).expect("temp dir");
    }

    /// Runs a command with redis-cli against this server.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli must be installed for these tests");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A todo-app server in a process of its own (the binary Cargo built for these tests), so it
/// can be killed with SIGKILL like a crashed node, or stopped with SIGTERM like a deploy.
pub struct NodeProcess {
    pub addr: std::net::SocketAddr,
    child: Option<Child>,
}

impl NodeProcess {
    /// Starts a node on Redis `url` with key `prefix`, on the SQLite file `database_url`;
    /// waits until it answers `/healthz`.
    pub async fn start(url: &str, prefix: &str, database_url: &str) -> NodeProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let child = Command::new(env!("CARGO_BIN_EXE_todo-app"))
            .env("DRAGON_ADDR", addr.to_string())
            .env("DATABASE_URL", database_url)
            .env("REDIS_URL", url)
            .env("DRAGON_REDIS_PREFIX", prefix)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start the todo-app binary");
        let node = NodeProcess {
            addr,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                let (status, _) = http(addr, "GET", "/healthz", &[], b"").await;
                if status == 200 {
                    return node;
                }
            }
            assert!(Instant::now() < deadline, "the node did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// SIGKILL: the process dies at once, cleaning nothing up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as a deploy stops a node; waits for it to exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
