//! A real server for tests: an app on a free port of 127.0.0.1, its URLs, and a client.
//!
//! ```no_run
//! # async fn demo(dragon: dragon_core::Dragon) -> Result<(), Box<dyn std::error::Error>> {
//! use dragon_core::testing::TestServer;
//! let server = TestServer::start(&dragon, dragon.router()).await?;
//! let client = server.client().await?;
//! let pong = client.call("dragon", "ping", serde_json::json!({})).await?;
//! server.stop().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::client::{Client, ClientError};
use crate::server::Dragon;

/// A server running `app` until [`TestServer::stop`] or drop.
pub struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Serves `app` (usually `dragon.router()` with your pages) on a free port.
    pub async fn start(dragon: &Dragon, app: axum::Router) -> std::io::Result<TestServer> {
        dragon
            .check_services()
            .await
            .map_err(|e| std::io::Error::other(format!("dragon: {e}")))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let dragon = dragon.clone();
        let task = tokio::spawn(async move {
            let signal = async move {
                let _ = stopped.await;
            };
            if let Err(err) = dragon.serve_until(listener, app, signal).await {
                tracing::error!(error = %err, "test server failed");
            }
        });
        Ok(TestServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://127.0.0.1:<port>/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// A new client connection.
    pub async fn client(&self) -> Result<Client, ClientError> {
        Client::connect(&self.ws_url()).await
    }

    /// A client connected with `token` (as `?token=`).
    pub async fn client_with_token(&self, token: &str) -> Result<Client, ClientError> {
        Client::connect(&format!("{}?token={token}", self.ws_url())).await
    }

    /// `POST`s `body` as JSON to `path` of the app (a login endpoint, say): the status and
    /// the JSON answer (`null` if it is not JSON).
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> std::io::Result<(u16, serde_json::Value)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body = body.to_string();
        let mut stream = tokio::net::TcpStream::connect(self.addr).await?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {text:?}")))?;
        let json = text
            .split_once("\r\n\r\n")
            .and_then(|(_, b)| serde_json::from_str(b).ok())
            .unwrap_or(serde_json::Value::Null);
        Ok((status, json))
    }

    /// Stops the server gracefully (clients get 1001) and waits for it, at most 10 s.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
