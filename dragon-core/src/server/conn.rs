//! One WebSocket connection: admission, hello, the read loop and its request tasks (the
//! socket's writer is `writer.rs`).
//!
//! Requests run concurrently (up to the in-flight limit); their replies and the hub's events
//! share one ordered [`Outbox`]. Bad input is answered, never fatal, except a frame over the
//! size limit (close 1009).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use futures_util::FutureExt;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::request::parse_request;
use super::{Dragon, dragon_route};
use crate::auth::Identity;
use crate::error::Error;
use crate::hub::{Budget, Outbound, Outbox, Stop};
use crate::protocol::{
    CloseCode, Event, Output, PROTOCOL_VERSION, Reply, Request, RequestId, close,
};
use crate::publish;
use crate::router::{Conn, ConnId, Ctx};

fn reply_frame(reply: &Reply) -> Outbound {
    Outbound::Text(Utf8Bytes::from(reply.to_json()))
}

fn failure(id: Option<RequestId>, err: &Error) -> Outbound {
    reply_frame(&Reply::failure(id, err.to_body()))
}

/// Serves one upgraded socket until it closes. The socket comes split: a whole one held
/// here would stay in this future's memory for the life of the connection.
pub(super) async fn run(
    dragon: Dragon,
    (mut sink, stream): (SplitSink<WebSocket, WsMessage>, SplitStream<WebSocket>),
    identity: Result<Option<Identity>, Error>,
    origin_ok: bool,
    _seat: super::Seat,
) {
    let inner = &dragon.inner;
    let Some(identity) = admit(&dragon, &mut sink, identity, origin_ok).await else {
        return;
    };
    let expires_at = identity.as_ref().and_then(|i| i.expires_at);
    let user = identity.map(|i| i.user);
    let n = inner.next_conn.fetch_add(1, Ordering::Relaxed);
    let conn_id = ConnId::generate(n);
    let (outbox, rx) = Outbox::new(n, Budget::of(&inner.limits));
    let conn = Arc::new(Conn::new(
        conn_id.clone(),
        user.clone(),
        outbox.clone(),
        &inner.limits,
    ));
    conn.set_expiry(expires_at);
    outbox.set_conn(conn.id.clone());
    inner.hub.register(&conn);
    tracing::debug!(conn = %conn_id, "connected");

    // Built and dropped here, not kept for the life of the connection.
    let hello = Event::named("hello")
        .data(json!({"protocol": PROTOCOL_VERSION, "conn": conn_id, "user": user}))
        .to_json();
    outbox.send(Outbound::Text(Utf8Bytes::from(hello)));

    let shutdown = inner.shutdown.subscribe();
    let writer = tokio::spawn(super::writer::write_loop(sink, rx, outbox.clone()));
    let hook_ctx = || {
        Ctx::new(
            conn.clone(),
            inner.hub.clone(),
            inner.routers.clone(),
            None,
            0,
        )
    };
    if let Some(hook) = &inner.on_connect {
        hook(hook_ctx()).await;
    }
    let mut tasks = JoinSet::new();
    let ended = read_loop(&dragon, &conn, stream, shutdown, &mut tasks).await;
    if ended == Ended::Shutdown {
        // The writer sends what is queued, then closes with 1001.
        outbox.raise(Stop::GoingAway);
    }
    end_requests(&mut tasks, ended).await;

    conn.close(&inner.hub);
    inner.hub.unregister(&conn.id);
    if let Some(hook) = &inner.on_disconnect {
        hook(hook_ctx()).await;
    }
    // Queued replies go out before the closing frame, unless the socket is gone.
    if !outbox.raised(Stop::SocketGone) && !*inner.shutdown.borrow() {
        outbox.send(Outbound::close(close::NORMAL, ""));
    }
    let _ = writer.await;
    tracing::debug!(conn = %conn_id, "disconnected");
}

/// Why the read loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The server shuts down: requests under way may still answer (the socket is fine).
    Shutdown,
    /// The peer left, the socket failed, or the server closed the connection.
    Gone,
}

/// Requests end with their connection: at once if it is gone, after a short wait for their
/// replies if the server shuts down (shutdown waits for them anyway).
async fn end_requests(tasks: &mut JoinSet<()>, ended: Ended) {
    if ended == Ended::Shutdown {
        let finish = async { while tasks.join_next().await.is_some() {} };
        let _ = Box::pin(tokio::time::timeout(
            std::time::Duration::from_secs(5),
            finish,
        ))
        .await;
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// Checks the origin and the identity; the identity (`Some(None)`: anonymous), or `None`
/// once the socket was closed with 1008, 1013 or 4001.
async fn admit(
    dragon: &Dragon,
    socket: &mut SplitSink<WebSocket, WsMessage>,
    identity: Result<Option<Identity>, Error>,
    origin_ok: bool,
) -> Option<Option<Identity>> {
    let inner = &dragon.inner;
    if !origin_ok {
        let _ = close_with(socket, close::POLICY, "origin not allowed").await;
        return None;
    }
    let user = match identity {
        Ok(identity) => identity,
        Err(err) => {
            // The token may be fine: the backend that checks it is not. A retryable
            // close (the client reconnects later), never 4001, which is final.
            tracing::warn!(error = %err, "the authenticator failed at connect");
            let _ = close_with(socket, close::TRY_AGAIN, "authentication unavailable").await;
            return None;
        }
    };
    if inner.require_auth && user.is_none() {
        let _ = close_with(socket, close::AUTH_REQUIRED, "authentication required").await;
        return None;
    }
    Some(user)
}

/// Reads frames until the peer closes, the socket fails, the server shuts down, the writer
/// gives up, or the peer stays silent through two pings (half-open). Reads nothing while
/// the connection's outbox is over budget (it must read its replies first). Raises the
/// outbox's [`Stop::SocketGone`] when the socket is unusable. Finished request tasks are reaped as
/// they end, so an idle connection keeps none.
async fn read_loop(
    dragon: &Dragon,
    conn: &Arc<Conn>,
    mut stream: SplitStream<WebSocket>,
    mut shutdown: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> Ended {
    let limits = &dragon.inner.limits;
    let every = limits.ping_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut reader = Reader::new(dragon, conn);
    loop {
        if conn.outbox.over_budget() {
            tokio::select! {
                within = conn.outbox.room() => if !within {
                    return reader.stuck();
                },
                _ = raised(&mut shutdown) => return Ended::Shutdown,
                _ = conn.outbox.writer_ended.raised() => return Ended::Gone,
            }
            // Time spent waiting for the client to read is not silence on its part.
            reader.heard = tokio::time::Instant::now();
            continue;
        }
        let deadline = conn.expiry_deadline(limits.token_grace);
        let idle_at = limits.idle_timeout.map(|t| reader.last_request + t);
        let msg = tokio::select! {
            msg = stream.next() => msg,
            _ = sleep_until_some(deadline) => match reader.token_timer() {
                Some(ended) => return ended,
                None => continue, // renewed meanwhile (`dragon.auth`)
            },
            _ = sleep_until_some(idle_at) => return reader.idle(),
            _ = ping.tick() => match reader.ping(every) {
                Some(ended) => return ended,
                None => continue,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            _ = raised(&mut shutdown) => return Ended::Shutdown,
            _ = conn.outbox.writer_ended.raised() => return Ended::Gone,
        };
        reader.heard = tokio::time::Instant::now();
        let Some(msg) = msg else { return Ended::Gone };
        if let Some(ended) = reader.frame(msg, tasks) {
            return ended;
        }
    }
}

/// The read loop's state, and what it does on each thing it waits for.
struct Reader<'a> {
    dragon: &'a Dragon,
    conn: &'a Arc<Conn>,
    /// Requests of this connection running now (bounded by the in-flight limit).
    in_flight: Arc<AtomicUsize>,
    /// Text frames read so far: a request's place in the connection's order.
    seq: u64,
    /// When the peer was last heard from (a frame, or reading what it was sent).
    heard: tokio::time::Instant,
    /// When the last request came: the idle timeout counts from it, not from heartbeats.
    last_request: tokio::time::Instant,
}

impl<'a> Reader<'a> {
    fn new(dragon: &'a Dragon, conn: &'a Arc<Conn>) -> Self {
        let now = tokio::time::Instant::now();
        Reader {
            dragon,
            conn,
            in_flight: Arc::new(AtomicUsize::new(0)),
            seq: 0,
            heard: now,
            last_request: now,
        }
    }

    /// Over its outbound budget for the whole grace: the client does not read.
    fn stuck(&self) -> Ended {
        tracing::debug!(conn = %self.conn.id, "over its outbound budget for the grace: closing with 4008");
        self.conn.outbox.kill();
        Ended::Gone
    }

    /// The token's deadline passed: closes with 4003, unless it was renewed meanwhile.
    fn token_timer(&self) -> Option<Ended> {
        if !self.conn.expired(self.dragon.inner.limits.token_grace) {
            return None;
        }
        tracing::debug!(conn = %self.conn.id, "token expired: closing with 4003");
        self.conn
            .outbox
            .send(Outbound::close(close::TOKEN_EXPIRED, "token expired"));
        Some(Ended::Gone)
    }

    /// No request for the idle timeout: closes with 4009.
    fn idle(&self) -> Ended {
        tracing::debug!(conn = %self.conn.id, "idle: closing with 4009");
        self.conn.outbox.send(Outbound::close(close::IDLE, "idle"));
        Ended::Gone
    }

    /// Pings, or drops a peer that answered nothing through two pings (half-open).
    fn ping(&self, every: std::time::Duration) -> Option<Ended> {
        if self.heard.elapsed() >= every * 2 {
            tracing::debug!(conn = %self.conn.id, "no answer to pings: dropping a half-open connection");
            self.conn.outbox.raise(Stop::SocketGone);
            return Some(Ended::Gone);
        }
        self.conn.outbox.send(Outbound::Ping);
        None
    }

    /// One frame (or socket error) from the peer; `Some` when the connection ends with it.
    fn frame(
        &mut self,
        msg: Result<WsMessage, axum::Error>,
        tasks: &mut JoinSet<()>,
    ) -> Option<Ended> {
        let outbox = &self.conn.outbox;
        match msg {
            Ok(WsMessage::Text(t)) => {
                self.seq += 1;
                let (dragon, conn) = (self.dragon, self.conn);
                if handle_text(dragon, conn, &self.in_flight, tasks, t.as_str(), self.seq) {
                    self.last_request = self.heard;
                }
                None
            }
            Ok(WsMessage::Binary(_)) => {
                self.last_request = self.heard;
                let err = Error::bad_request("binary frames are not supported; send JSON text");
                outbox.send(failure(None, &err));
                None
            }
            Ok(WsMessage::Close(_)) => Some(Ended::Gone),
            Ok(_) => None,
            Err(err) => Some(self.socket_error(&err)),
        }
    }

    /// A frame over the size limit (1009), a text frame that is not UTF-8 (1007), or a
    /// socket that failed.
    fn socket_error(&self, err: &axum::Error) -> Ended {
        let outbox = &self.conn.outbox;
        match SocketError::of(err) {
            SocketError::TooBig => {
                tracing::debug!(conn = %self.conn.id, "frame over the size limit");
                outbox.send(Outbound::close(close::TOO_BIG, "frame too large"));
            }
            SocketError::NotUtf8 => {
                // RFC 6455 fails the connection (1007); the client hears why first.
                let err = Error::bad_request(
                    "text frames must be valid UTF-8: closing the connection (1007)",
                );
                outbox.send(failure(None, &err));
                outbox.send(Outbound::close(close::INVALID_DATA, "invalid UTF-8"));
            }
            SocketError::Other => {
                tracing::debug!(conn = %self.conn.id, error = %err, "socket error");
                outbox.raise(Stop::SocketGone);
            }
        }
        Ended::Gone
    }
}

/// Sleeps until `deadline`, or forever without one. The timer is boxed, so the read loop's
/// state (kept by every idle connection) does not carry one when there is no deadline.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => Box::pin(tokio::time::sleep_until(d)).await,
        None => std::future::pending().await,
    }
}

/// Resolves once a watch flag is raised (or its sender is gone).
async fn raised(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await.map(|_| ());
}

/// The read errors the connection survives or answers.
enum SocketError {
    /// A frame over the size limit (close 1009).
    TooBig,
    /// A text frame that is not UTF-8: answered, then closed with 1007.
    NotUtf8,
    Other,
}

impl SocketError {
    fn of(err: &axum::Error) -> SocketError {
        use std::error::Error as _;
        use tokio_tungstenite::tungstenite::Error as WsError;
        let mut source = err.source();
        while let Some(e) = source {
            if let Some(t) = e.downcast_ref::<WsError>() {
                return match t {
                    WsError::Capacity(_) => SocketError::TooBig,
                    WsError::Utf8(_) => SocketError::NotUtf8,
                    _ => SocketError::Other,
                };
            }
            source = e.source();
        }
        let text = err.to_string();
        if text.to_lowercase().contains("too long") || text.contains("Capacity") {
            SocketError::TooBig
        } else {
            SocketError::Other
        }
    }
}

async fn close_with(
    socket: &mut SplitSink<WebSocket, WsMessage>,
    code: CloseCode,
    reason: &str,
) -> Result<(), axum::Error> {
    socket
        .send(WsMessage::Close(Some(CloseFrame {
            code: code.into(),
            reason: reason.into(),
        })))
        .await
}

/// Parses one request, answering malformed ones at once; runs valid ones as tasks. Whether
/// it counts as activity for the idle timeout: anything but the clients' heartbeat
/// (`dragon.ping`), which only says the peer is there.
fn handle_text(
    dragon: &Dragon,
    conn: &Arc<Conn>,
    in_flight: &Arc<AtomicUsize>,
    tasks: &mut JoinSet<()>,
    text: &str,
    seq: u64,
) -> bool {
    while tasks.try_join_next().is_some() {} // forget finished ones
    let outbox = &conn.outbox;
    let request = match parse_request(text) {
        Ok(r) => r,
        Err((id, err)) => {
            outbox.send(failure(id, &err));
            return true;
        }
    };
    let active = !(request.route == super::CONTROL_ROUTE && request.verb == "ping");
    let limit = dragon.inner.limits.max_in_flight;
    if in_flight.fetch_add(1, Ordering::AcqRel) >= limit {
        in_flight.fetch_sub(1, Ordering::AcqRel);
        let err = Error::RateLimited(format!("at most {limit} requests in flight"));
        outbox.send(failure(Some(request.id), &err));
        return active;
    }
    let dragon = dragon.clone();
    let conn = conn.clone();
    // Released when the task ends, even by a panic: the connection's slot, and the count
    // shutdown waits on (a write that committed is published before the process exits).
    let slot = InFlight::enter(in_flight.clone(), dragon.inner.requests.clone());
    let broker = dragon.inner.broker.clone();
    tasks.spawn(publish::with_broker(broker, async move {
        let _slot = slot;
        let id = request.id.clone();
        let ctx = Ctx::new(
            conn.clone(),
            dragon.inner.hub.clone(),
            dragon.inner.routers.clone(),
            Some(id.clone()),
            seq,
        );
        let (route, verb) = (request.route.clone(), request.verb.clone());
        // A panic in a verb is a fault like any other: answered `internal`, logged.
        let result = std::panic::AssertUnwindSafe(dispatch(&dragon, &ctx, request))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                let what = panic_message(panic.as_ref());
                tracing::error!(conn = %conn.id, %route, %verb, panic = what, "a request panicked");
                Err(Error::Internal(format!("the request panicked: {what}")))
            });
        let known = dragon.inner.routers.contains_key(&route) || route == super::CONTROL_ROUTE;
        let error = result.as_ref().err();
        dragon
            .inner
            .hub
            .metrics()
            .request(known, &route, &verb, error);
        let already = ctx.replied.load(Ordering::Acquire);
        match result {
            Ok(out) if !already => conn
                .outbox
                .send(reply_frame(&Reply::success(Some(id), out))),
            Ok(_) => {}
            Err(err) if already => {
                // The verb replied already (it subscribed, then failed): exactly one reply
                // per request, so this error is only logged.
                tracing::warn!(conn = %conn.id, error = %err, "request failed after its reply");
            }
            Err(err) => {
                if matches!(err, Error::Internal(_)) {
                    tracing::error!(conn = %conn.id, error = %err, "request failed");
                }
                conn.outbox.send(failure(Some(id), &err));
            }
        }
    }));
    active
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// A request's place in its connection's in-flight count and in the server's.
struct InFlight {
    conn: Arc<AtomicUsize>,
    server: Arc<super::Requests>,
}

impl InFlight {
    /// Takes a place that the caller already counted on the connection.
    fn enter(conn: Arc<AtomicUsize>, server: Arc<super::Requests>) -> Self {
        server.count.fetch_add(1, Ordering::AcqRel);
        InFlight { conn, server }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn.fetch_sub(1, Ordering::AcqRel);
        if self.server.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.server.idle.notify_waiters();
        }
    }
}

async fn dispatch(dragon: &Dragon, ctx: &Ctx, request: Request) -> Result<Output, Error> {
    if request.route == super::CONTROL_ROUTE {
        return dragon_route::call(dragon, ctx, &request.verb, request.args).await;
    }
    let router = dragon
        .inner
        .routers
        .get(&request.route)
        .ok_or_else(|| Error::UnknownRoute(request.route.clone()))?;
    router.call(ctx, &request.verb, request.args).await
}
