//! The reference: the strongest minimal broadcaster we could write in Rust.
//!
//! - axum WebSocket, TCP_NODELAY on every accepted socket, the same 4 KiB read buffer per
//!   socket as Dragon;
//! - one `tokio::sync::broadcast` ring per room (a client picks its room by the URL path,
//!   `/room/{room}`, so it needs no subscribe round trip);
//! - each event is one frame, shaped like Dragon's event frame, built once and shared by
//!   every subscriber as one `Utf8Bytes` (a reference count, no copy);
//! - one task per connection: it waits for the first event, drains everything else ready
//!   from its receiver (`try_recv`), feeds each frame to the socket and flushes once.
//!
//! It does nothing else: no protocol, no filters, no replay, no slow-consumer policy (a
//! receiver that falls a whole ring behind loses events, counted as lagged).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use crate::clients::{Fleet, FleetSpec, Source};

/// Bytes each socket reads at a time (as Dragon's server).
const READ_BUFFER: usize = 4096;

struct Hub {
    rooms: Vec<broadcast::Sender<Utf8Bytes>>,
    subscribed: AtomicUsize,
    lagged: AtomicU64,
}

/// A running broadcaster.
pub struct Reference {
    hub: Arc<Hub>,
    url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Reference {
    /// Serves `rooms` rooms on a free port, each ring holding `capacity` frames.
    pub async fn start(rooms: usize, capacity: usize) -> Reference {
        let hub = Arc::new(Hub {
            rooms: (0..rooms.max(1))
                .map(|_| broadcast::channel(capacity.max(16)).0)
                .collect(),
            subscribed: AtomicUsize::new(0),
            lagged: AtomicU64::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let listener = listener.tap_io(|tcp| {
            if let Err(err) = tcp.set_nodelay(true) {
                eprintln!("warning: TCP_NODELAY: {err}");
            }
        });
        let app = axum::Router::new()
            .route("/room/{room}", axum::routing::get(upgrade))
            .with_state(hub.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Reference {
            hub,
            url: format!("ws://{addr}/room/{{room}}"),
            server,
        }
    }

    /// The URL template (`{room}` is the room's number, from 1).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Waits until `n` clients are subscribed (an upgrade completes after the client has
    /// its handshake answer).
    pub async fn subscribed(&self, n: usize) {
        while self.hub.subscribed.load(Ordering::Acquire) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Events receivers lost because their ring overflowed.
    pub fn lagged(&self) -> u64 {
        self.hub.lagged.load(Ordering::Acquire)
    }

    /// A source sending to this broadcaster's rooms.
    pub fn source(&self) -> Broadcast {
        Broadcast {
            hub: self.hub.clone(),
            seq: 0,
        }
    }

    /// Starts `clients` clients spread over the rooms and waits for all to subscribe.
    pub async fn fleet(&self, clients: usize, rooms: usize, pin: Option<usize>) -> Fleet {
        let fleet = Fleet::connect(FleetSpec {
            urls: &[self.url()],
            clients,
            rooms,
            setup: None,
            pin,
        })
        .await;
        self.subscribed(clients).await;
        fleet
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn upgrade(
    State(hub): State<Arc<Hub>>,
    Path(room): Path<usize>,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(tx) = room.checked_sub(1).and_then(|r| hub.rooms.get(r)) else {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    };
    let rx = tx.subscribe();
    ws.read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| subscriber(hub, socket, rx))
}

/// One connection: frames from the room's ring to the socket, everything ready at once and
/// one flush; reads only to notice the peer leaving.
async fn subscriber(hub: Arc<Hub>, socket: WebSocket, mut rx: broadcast::Receiver<Utf8Bytes>) {
    hub.subscribed.fetch_add(1, Ordering::AcqRel);
    let (mut sink, mut stream) = socket.split();
    loop {
        tokio::select! {
            first = rx.recv() => {
                let frame = match first {
                    Ok(frame) => frame,
                    Err(RecvError::Lagged(n)) => {
                        hub.lagged.fetch_add(n, Ordering::Relaxed);
                        continue;
                    }
                    Err(RecvError::Closed) => break,
                };
                if sink.feed(Message::Text(frame)).await.is_err() {
                    break;
                }
                loop {
                    match rx.try_recv() {
                        Ok(frame) => {
                            if sink.feed(Message::Text(frame)).await.is_err() {
                                return;
                            }
                        }
                        Err(TryRecvError::Lagged(n)) => {
                            hub.lagged.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                    }
                }
                if sink.flush().await.is_err() {
                    break;
                }
            }
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    hub.subscribed.fetch_sub(1, Ordering::AcqRel);
}

/// Sends events through the broadcaster.
pub struct Broadcast {
    hub: Arc<Hub>,
    seq: u64,
}

impl Source for Broadcast {
    async fn send(&mut self, room: usize, t0: u64) {
        // Shaped like Dragon's event frame (same keys, same length as its in-memory one), so
        // both move the same bytes.
        self.seq += 1;
        let (seq, list_id) = (self.seq, crate::clients::list_id(room));
        let frame = format!(
            r#"{{"event":"created","route":"bench-item","subs":["s1"],"data":{{"id":{seq},"list_id":{list_id},"text":"{t0}"}},"position":"{t0}-{seq}"}}"#
        );
        let _ = self.hub.rooms[room].send(Utf8Bytes::from(frame));
    }
}

/// Resident memory (KiB) of this process before and after `n` clients connect to one room.
pub async fn rss(n: usize, pin: Option<usize>) -> (u64, u64) {
    let reference = Reference::start(1, 1024).await;
    let before = crate::clients::rss_kib();
    let _fleet = reference.fleet(n, 1, pin).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    (before, crate::clients::rss_kib())
}
