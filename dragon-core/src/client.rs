//! A Rust client for the Dragon protocol (tokio-tungstenite): calls and live subscriptions.
//!
//! ```no_run
//! # use dragon_core::client::{Client, ClientError};
//! # use serde_json::json;
//! # async fn demo() -> Result<(), ClientError> {
//! let client = Client::connect("ws://127.0.0.1:8000/ws").await?;
//! let items = client.call("todo-item", "get_list", json!({"filter": {"list_id": 1}})).await?;
//! let mut sub = client.subscribe("todo-item", json!({"filter": {"list_id": 1}})).await?;
//! while let Some(event) = sub.next().await { println!("{} {:?}", event.event, event.data); }
//! # let _ = items;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::protocol::{CloseCode, ErrorBody, Event, Output, Reply, RequestId, ServerFrame};

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket could not be opened; the message says why.
    #[error("connect failed: {0}")]
    Connect(String),
    /// The connection closed before the reply (or the `hello`) came, or before the request could be
    /// sent.
    #[error("the connection is closed")]
    Closed,
    /// No reply (or `hello`) came within the given time; the call is abandoned.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The server answered with a failure reply; this is its `error`.
    #[error("{}: {}", .0.code.as_str(), .0.message)]
    Server(ErrorBody),
    /// The server sent a frame this client did not expect (no `hello` first, a reply without
    /// `sub`).
    #[error("unexpected frame: {0}")]
    Protocol(String),
}

type Pending = HashMap<RequestId, (oneshot::Sender<Reply>, Option<mpsc::UnboundedSender<Event>>)>;

struct Shared {
    pending: Mutex<Pending>,
    subs: Mutex<HashMap<String, mpsc::UnboundedSender<Event>>>,
}

/// One connection to a Dragon server.
pub struct Client {
    out: mpsc::UnboundedSender<WsMessage>,
    shared: Arc<Shared>,
    next_id: AtomicI64,
    hello: Value,
    other: tokio::sync::Mutex<mpsc::UnboundedReceiver<ServerFrame>>,
    closed: watch::Receiver<Option<CloseCode>>,
    timeout: Duration,
}

/// A live subscription: its reply data and its events.
pub struct Subscription {
    /// The subscription's id (the reply's `sub`), as listed in its events' `subs`.
    pub id: String,
    /// The subscribe reply's data (`sub`, `position`, `recovered`, `items`).
    pub reply: Value,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Subscription {
    /// The next event, or `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next event within `limit`, if any.
    pub async fn next_within(&mut self, limit: Duration) -> Option<Event> {
        tokio::time::timeout(limit, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// An event already received, without waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }
}

/// A subscription is a stream of its events (ending when the connection does).
impl futures_util::Stream for Subscription {
    type Item = Event;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Event>> {
        self.events.poll_recv(cx)
    }
}

impl Client {
    /// Connects and waits for the server's `hello`.
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let (mut sink, mut stream) = socket.split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<WsMessage>();
        let (other_tx, mut other_rx) = mpsc::unbounded_channel();
        let (closed_tx, closed_rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            subs: Mutex::new(HashMap::new()),
        });
        tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                if sink.send(msg).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let reader_shared = shared.clone();
        tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                match msg {
                    Ok(WsMessage::Text(text)) => match ServerFrame::parse(text.as_str()) {
                        Ok(frame) => route_frame(&reader_shared, &other_tx, frame),
                        Err(e) => tracing::warn!(error = %e, "unreadable frame from server"),
                    },
                    Ok(WsMessage::Close(frame)) => {
                        let _ = closed_tx
                            .send(Some(CloseCode(frame.map_or(1005, |f| u16::from(f.code)))));
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        let _ = closed_tx.send(Some(CloseCode(1006)));
                        break;
                    }
                }
            }
            if closed_tx.borrow().is_none() {
                let _ = closed_tx.send(Some(CloseCode(1006)));
            }
            reader_shared.pending.lock().expect("pending").clear();
            reader_shared.subs.lock().expect("subs").clear();
        });
        let hello = match tokio::time::timeout(Duration::from_secs(10), other_rx.recv()).await {
            Ok(Some(ServerFrame::Event(e))) if e.event == "hello" => e.data.unwrap_or(Value::Null),
            Ok(Some(other)) => return Err(ClientError::Protocol(format!("{other:?}"))),
            Ok(None) => return Err(ClientError::Closed),
            Err(_) => return Err(ClientError::Timeout(Duration::from_secs(10))),
        };
        Ok(Client {
            out: out_tx,
            shared,
            next_id: AtomicI64::new(1),
            hello,
            other: tokio::sync::Mutex::new(other_rx),
            closed: closed_rx,
            timeout: Duration::from_secs(10),
        })
    }

    /// The `hello` event's data (`protocol`, `conn`, `user`).
    pub fn hello(&self) -> &Value {
        &self.hello
    }

    async fn request_inner(
        &self,
        route: &str,
        verb: &str,
        args: Value,
        events: Option<mpsc::UnboundedSender<Event>>,
    ) -> Result<Reply, ClientError> {
        let id = RequestId::Int(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        self.shared
            .pending
            .lock()
            .expect("pending")
            .insert(id.clone(), (tx, events));
        let frame = serde_json::json!({"id": id, "route": route, "verb": verb, "args": args});
        self.send_text(&frame.to_string())?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                self.shared.pending.lock().expect("pending").remove(&id);
                Err(ClientError::Timeout(self.timeout))
            }
        }
    }

    /// Sends a request and returns the raw reply (success or failure).
    pub async fn request(
        &self,
        route: &str,
        verb: &str,
        args: Value,
    ) -> Result<Reply, ClientError> {
        self.request_inner(route, verb, args, None).await
    }

    /// Calls a verb: its `data` and `meta`, or the server's error as [`ClientError::Server`].
    pub async fn call(&self, route: &str, verb: &str, args: Value) -> Result<Output, ClientError> {
        into_output(self.request(route, verb, args).await?)
    }

    /// Subscribes (`args`: `filter`, `since`, `snapshot`); events arrive on the subscription.
    pub async fn subscribe(&self, route: &str, args: Value) -> Result<Subscription, ClientError> {
        self.subscribe_with(route, "subscribe", args).await
    }

    /// Subscribes through a verb of the route's own (a custom router's `join`, say) whose
    /// reply is a subscription's.
    pub async fn subscribe_with(
        &self,
        route: &str,
        verb: &str,
        args: Value,
    ) -> Result<Subscription, ClientError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let out = into_output(self.request_inner(route, verb, args, Some(tx)).await?)?;
        let id = out.data["sub"]
            .as_str()
            .ok_or_else(|| ClientError::Protocol("subscribe reply without sub".into()))?
            .to_owned();
        Ok(Subscription {
            id,
            reply: out.data,
            events: rx,
        })
    }

    /// Sends a raw text frame (for tools and tests of bad input).
    pub fn send_text(&self, text: &str) -> Result<(), ClientError> {
        self.out
            .send(WsMessage::Text(text.into()))
            .map_err(|_| ClientError::Closed)
    }

    /// Sends a raw binary frame.
    pub fn send_binary(&self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.out
            .send(WsMessage::Binary(bytes.into()))
            .map_err(|_| ClientError::Closed)
    }

    /// The next frame no call or subscription claimed (`id: null` errors, resync, presence).
    pub async fn next_other(&self, limit: Duration) -> Option<ServerFrame> {
        let mut rx = self.other.lock().await;
        tokio::time::timeout(limit, rx.recv()).await.ok().flatten()
    }

    /// Waits until the server closes the connection; its close code.
    pub async fn closed(&self, limit: Duration) -> Option<CloseCode> {
        let mut rx = self.closed.clone();
        tokio::time::timeout(limit, rx.wait_for(|c| c.is_some()))
            .await
            .ok()
            .and_then(|r| r.ok().and_then(|c| *c))
    }

    /// Closes the connection normally.
    pub fn close(&self) {
        let _ = self.out.send(WsMessage::Close(None));
    }
}

fn into_output(reply: Reply) -> Result<Output, ClientError> {
    if reply.ok {
        Ok(Output {
            data: reply.data.unwrap_or(Value::Null),
            meta: reply.meta,
        })
    } else {
        Err(ClientError::Server(reply.error.unwrap_or(ErrorBody {
            code: crate::protocol::ErrorCode::Internal,
            message: "failure without error".into(),
            details: None,
        })))
    }
}

/// Hands a frame to its waiting call or subscriptions; anything else goes to `other`.
fn route_frame(shared: &Shared, other: &mpsc::UnboundedSender<ServerFrame>, frame: ServerFrame) {
    match frame {
        ServerFrame::Reply(reply) => {
            let waiting = reply
                .id
                .as_ref()
                .and_then(|id| shared.pending.lock().expect("pending").remove(id));
            match waiting {
                Some((tx, events)) => {
                    // Register before later frames are read: events may follow at once.
                    if let (Some(events), Some(sub)) =
                        (events, reply.data.as_ref().and_then(|d| d["sub"].as_str()))
                    {
                        shared
                            .subs
                            .lock()
                            .expect("subs")
                            .insert(sub.to_owned(), events);
                    }
                    let _ = tx.send(reply);
                }
                None => {
                    let _ = other.send(ServerFrame::Reply(reply));
                }
            }
        }
        ServerFrame::Event(event) => {
            let subs = shared.subs.lock().expect("subs");
            let targets: Vec<_> = event.subs.iter().filter_map(|s| subs.get(s)).collect();
            if targets.is_empty() {
                drop(subs);
                let _ = other.send(ServerFrame::Event(event));
            } else {
                for t in targets {
                    let _ = t.send(event.clone());
                }
            }
        }
    }
}
