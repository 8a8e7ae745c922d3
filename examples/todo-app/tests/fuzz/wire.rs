//! A raw WebSocket to the server: any bytes as one text frame (UTF-8 or not), and the
//! replies as JSON, skipping events. A panic in the server is noticed at once instead of
//! waiting out the timeout, so shrinking a panic is fast.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::oracle::Violation;

/// How long a reply may take before it counts as missing.
const WAIT: Duration = Duration::from_secs(5);
/// How often the wait looks for a server panic.
const TICK: Duration = Duration::from_millis(20);

/// A panic on a server thread: its message and where it happened.
#[derive(Debug, Clone)]
pub struct Panic {
    pub what: String,
    pub place: String,
}

static PANICS: Mutex<Vec<Panic>> = Mutex::new(Vec::new());

/// Records a panic of the server process (see `child.rs`).
pub fn record_panic(panic: Panic) {
    PANICS.lock().unwrap().push(panic);
}

/// How many server panics so far; pass it to [`RawConn::reply`] to see new ones.
pub fn panic_mark() -> usize {
    PANICS.lock().unwrap().len()
}

fn panics_since(mark: usize) -> Vec<Panic> {
    PANICS.lock().unwrap()[mark..].to_vec()
}

/// Every panic message recorded, for the final report.
pub fn all_panics() -> Vec<Panic> {
    PANICS.lock().unwrap().clone()
}

pub struct RawConn {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pings: u64,
}

impl RawConn {
    /// Connects and reads the `hello` event.
    pub async fn connect(url: &str) -> Result<RawConn, Violation> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| Violation::new("cannot connect", e.to_string()))?;
        let mut conn = RawConn { ws, pings: 0 };
        let hello = conn.next_frame(usize::MAX).await?;
        if hello["event"] != "hello" {
            return Err(Violation::new("no hello first", hello.to_string()));
        }
        Ok(conn)
    }

    /// Sends `bytes` as one text frame, whether or not they are UTF-8.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        let frame = Frame::message(bytes.to_vec(), OpCode::Data(Data::Text), true);
        self.ws
            .send(Message::Frame(frame))
            .await
            .map_err(|e| Violation::new("the socket is gone", e.to_string()))
    }

    /// The next reply (events skipped), or why none came: closed, dropped, timed out, or a
    /// server task panicked since `mark`.
    pub async fn reply(&mut self, mark: usize) -> Result<Value, Violation> {
        loop {
            let frame = self.next_frame(mark).await?;
            if frame.get("event").is_none() {
                return Ok(frame);
            }
        }
    }

    /// A request and its reply (for seeding; the frame is ours, so it is well-formed).
    pub async fn call(&mut self, route: &str, verb: &str, args: Value) -> Result<Value, Violation> {
        let frame = json!({"id": "seed", "route": route, "verb": verb, "args": args});
        self.send_raw(frame.to_string().as_bytes()).await?;
        self.reply(panic_mark()).await
    }

    /// Checks the socket still serves: `dragon.ping` answers, and no stray reply comes first.
    pub async fn ping(&mut self) -> Result<(), Violation> {
        self.pings += 1;
        let id = format!("fuzz-ping-{}", self.pings);
        let frame = json!({"id": id, "route": "dragon", "verb": "ping"});
        let mark = panic_mark();
        let after =
            |v: Violation| Violation::new(format!("after the reply, {}", v.class), v.detail);
        self.send_raw(frame.to_string().as_bytes())
            .await
            .map_err(after)?;
        let reply = self.reply(mark).await.map_err(after)?;
        if reply["id"] != id.as_str() {
            return Err(Violation::new("a second reply came", reply.to_string()));
        }
        if reply["ok"] != true {
            return Err(Violation::new("dragon.ping failed", reply.to_string()));
        }
        Ok(())
    }

    /// The code of the close frame the server sends next (other frames skipped).
    pub async fn close_code(&mut self) -> Result<u16, Violation> {
        let start = Instant::now();
        while start.elapsed() < WAIT {
            match tokio::time::timeout(TICK, self.ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Ok(frame.map_or(1005, |f| u16::from(f.code)));
                }
                Ok(Some(Ok(_))) | Err(_) => continue,
                Ok(Some(Err(e))) => {
                    return Err(Violation::new("the connection dropped", e.to_string()));
                }
                Ok(None) => return Err(Violation::new("the connection dropped", "no close frame")),
            }
        }
        Err(Violation::new(
            format!("no close frame within {WAIT:?}"),
            "",
        ))
    }

    /// The next text frame as JSON.
    async fn next_frame(&mut self, mark: usize) -> Result<Value, Violation> {
        let start = Instant::now();
        loop {
            let msg = match tokio::time::timeout(TICK, self.ws.next()).await {
                Ok(msg) => msg,
                Err(_) => {
                    self.check_waiting(start, mark)?;
                    continue;
                }
            };
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(t.as_str()).map_err(|e| {
                        Violation::new("the server sent no JSON", format!("{e}: {t}"))
                    });
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, why) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    let class = format!("the server closed the socket with {code}");
                    return Err(Violation::new(class, format!("close {code} {why:?}")));
                }
                Some(Ok(Message::Binary(b))) => {
                    return Err(Violation::new(
                        "the server sent a binary frame",
                        format!("{b:?}"),
                    ));
                }
                Some(Ok(_)) => continue, // ping, pong
                Some(Err(e)) => {
                    return Err(Violation::new("the connection dropped", e.to_string()));
                }
                None => return Err(Violation::new("the connection dropped", "no close frame")),
            }
        }
    }

    /// Fails once the wait is over: a server task panicked, or [`WAIT`] passed.
    fn check_waiting(&self, start: Instant, mark: usize) -> Result<(), Violation> {
        if mark != usize::MAX
            && let Some(p) = panics_since(mark).first()
        {
            let class = format!("no reply: a server task panicked at {}", p.place);
            return Err(Violation::new(class, p.what.clone()));
        }
        if start.elapsed() > WAIT {
            return Err(Violation::new(format!("no reply within {WAIT:?}"), ""));
        }
        Ok(())
    }
}
