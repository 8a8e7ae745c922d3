//! One WebSocket connection: hello, the read loop, request tasks and the writer.
//!
//! Requests run concurrently (up to the in-flight limit); their replies and the hub's events
//! share one ordered [`Outbox`]. Bad input is answered, never fatal, except a frame over the
//! size limit (close 1009).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::{Dragon, dragon_route};
use crate::auth::Identity;
use crate::error::Error;
use crate::hub::{Outbound, Outbox};
use crate::protocol::{CloseCode, Output, PROTOCOL_VERSION, Reply, Request, RequestId, close};
use crate::publish;
use crate::router::{Conn, Ctx};

fn reply_frame(reply: &Reply) -> Outbound {
    Outbound::Text(Utf8Bytes::from(reply.to_json()))
}

fn failure(id: Option<RequestId>, err: &Error) -> Outbound {
    reply_frame(&Reply::failure(id, err.to_body()))
}

pub(super) async fn run(
    dragon: Dragon,
    mut socket: WebSocket,
    identity: Result<Option<Identity>, Error>,
    origin_ok: bool,
) {
    let inner = &dragon.inner;
    let Some(identity) = admit(&dragon, &mut socket, identity, origin_ok).await else {
        return;
    };
    let expires_at = identity.as_ref().and_then(|i| i.expires_at);
    let user = identity.map(|i| i.user);
    let n = inner.next_conn.fetch_add(1, Ordering::Relaxed);
    let conn_id = format!("c{n}-{}", uuid::Uuid::new_v4().simple());
    let (outbox, rx) = Outbox::new(n, inner.limits.max_queued, inner.limits.slow_consumer_grace);
    let conn = Arc::new(Conn::new(
        conn_id.clone(),
        user.clone(),
        outbox.clone(),
        &inner.limits,
    ));
    conn.set_expiry(expires_at);
    outbox.set_conn(conn.id.clone());
    inner.live.fetch_add(1, Ordering::AcqRel);
    inner.hub.register(&conn);
    tracing::debug!(conn = %conn_id, "connected");

    let hello = json!({"event": "hello", "data": {"protocol": PROTOCOL_VERSION, "conn": conn_id, "user": user}});
    outbox.send(Outbound::Text(Utf8Bytes::from(hello.to_string())));

    let (sink, stream) = socket.split();
    let shutdown = inner.shutdown.subscribe();
    let (stop_tx, stop_rx) = watch::channel(false);
    let writer = tokio::spawn(write_loop(
        sink,
        rx,
        outbox.clone(),
        shutdown.clone(),
        stop_rx,
    ));
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
    read_loop(&dragon, &conn, stream, shutdown, &stop_tx).await;

    conn.close(&inner.hub);
    inner.hub.unregister(&conn.id);
    if let Some(hook) = &inner.on_disconnect {
        hook(hook_ctx()).await;
    }
    // Queued replies go out before the closing frame, unless the socket is gone.
    if !*stop_tx.borrow() && !*inner.shutdown.borrow() {
        outbox.send(Outbound::Close(close::NORMAL, String::new()));
    }
    let _ = writer.await;
    tracing::debug!(conn = %conn_id, "disconnected");
    if inner.live.fetch_sub(1, Ordering::AcqRel) == 1 {
        inner.all_closed.notify_waiters();
    }
}

/// Checks the origin and the identity; the identity (`Some(None)`: anonymous), or `None`
/// once the socket was closed with 1008, 1013 or 4001.
async fn admit(
    dragon: &Dragon,
    socket: &mut WebSocket,
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

/// Reads frames until the peer closes, the socket fails, the server shuts down, or the peer
/// stays silent through two pings (half-open). Raises `stop` when the socket is unusable.
async fn read_loop(
    dragon: &Dragon,
    conn: &Arc<Conn>,
    mut stream: SplitStream<WebSocket>,
    mut shutdown: watch::Receiver<bool>,
    stop: &watch::Sender<bool>,
) {
    let outbox = &conn.outbox;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut seq: u64 = 0;
    let every = dragon.inner.limits.ping_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut heard = tokio::time::Instant::now();
    let grace = dragon.inner.limits.token_grace;
    loop {
        let deadline = conn.expiry_deadline(grace);
        let msg = tokio::select! {
            msg = stream.next() => msg,
            _ = sleep_until_some(deadline) => {
                if conn.expired(grace) {
                    tracing::debug!(conn = %conn.id, "token expired: closing with 4003");
                    outbox.send(Outbound::Close(close::TOKEN_EXPIRED, "token expired".into()));
                    return;
                }
                continue; // renewed meanwhile (`dragon.auth`)
            }
            _ = ping.tick() => {
                if heard.elapsed() >= every * 2 {
                    tracing::debug!(conn = %conn.id, "no answer to pings: dropping a half-open connection");
                    let _ = stop.send(true);
                    return;
                }
                outbox.send(Outbound::Ping);
                continue;
            }
            _ = raised(&mut shutdown) => return,
        };
        heard = tokio::time::Instant::now();
        let Some(msg) = msg else { return };
        match msg {
            Ok(WsMessage::Text(t)) => {
                seq += 1;
                handle_text(dragon, conn, &in_flight, t.as_str(), seq);
            }
            Ok(WsMessage::Binary(_)) => {
                let err = Error::bad_request("binary frames are not supported; send JSON text");
                outbox.send(failure(None, &err));
            }
            Ok(WsMessage::Close(_)) => return,
            Ok(_) => {}
            Err(err) => {
                if is_capacity_error(&err) {
                    tracing::debug!(conn = %conn.id, "frame over the size limit");
                    outbox.send(Outbound::Close(close::TOO_BIG, "frame too large".into()));
                } else {
                    tracing::debug!(conn = %conn.id, error = %err, "socket error");
                    let _ = stop.send(true);
                }
                return;
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The only task that writes to the socket. Frames already queued are written together
/// and flushed once, so a busy connection costs one syscall per batch, not per frame.
async fn write_loop(
    mut sink: SplitSink<WebSocket, WsMessage>,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
    outbox: Arc<Outbox>,
    mut shutdown: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    const BATCH: usize = 256;
    let shutdown = raised(&mut shutdown);
    let stop = raised(&mut stop);
    let kill = outbox.kill.notified();
    tokio::pin!(shutdown, stop, kill);
    let closing: Option<(CloseCode, String)> = 'outer: loop {
        let first = tokio::select! {
            biased;
            frame = rx.recv() => frame,
            _ = &mut kill => break Some((close::SLOW_CONSUMER, "slow consumer".into())),
            _ = &mut shutdown => break Some((close::GOING_AWAY, "server going away".into())),
            _ = &mut stop => break None,
        };
        let mut next = first;
        let mut written = 0;
        while let Some(frame) = next.take() {
            match frame {
                Outbound::Text(t) => {
                    outbox.sent_one();
                    if sink.feed(WsMessage::Text(t)).await.is_err() {
                        break 'outer None;
                    }
                }
                Outbound::Ping => {
                    outbox.sent_one();
                    if sink
                        .feed(WsMessage::Ping(Default::default()))
                        .await
                        .is_err()
                    {
                        break 'outer None;
                    }
                }
                Outbound::Close(code, reason) => {
                    let _ = sink.flush().await;
                    break 'outer Some((code, reason));
                }
            }
            written += 1;
            if written < BATCH {
                next = rx.try_recv().ok();
            }
        }
        for owed in outbox.take_owed() {
            if sink.feed(WsMessage::Text(owed)).await.is_err() {
                break 'outer None;
            }
        }
        if written == 0 || sink.flush().await.is_err() {
            break None;
        }
    };
    if let Some((code, reason)) = closing {
        let frame = CloseFrame {
            code: code.into(),
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            sink.send(WsMessage::Close(Some(frame))),
        )
        .await;
    }
    let _ = sink.close().await;
}

/// Resolves once a watch flag is raised (or its sender is gone).
async fn raised(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await.map(|_| ());
}

fn is_capacity_error(err: &axum::Error) -> bool {
    use std::error::Error as _;
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(t) = e.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
            return matches!(t, tokio_tungstenite::tungstenite::Error::Capacity(_));
        }
        source = e.source();
    }
    err.to_string().to_lowercase().contains("too long") || err.to_string().contains("Capacity")
}

async fn close_with(
    socket: &mut WebSocket,
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

/// Parses one request, answering malformed ones at once; runs valid ones as tasks.
fn handle_text(
    dragon: &Dragon,
    conn: &Arc<Conn>,
    in_flight: &Arc<AtomicUsize>,
    text: &str,
    seq: u64,
) {
    let outbox = &conn.outbox;
    let request = match parse_request(text) {
        Ok(r) => r,
        Err((id, err)) => {
            outbox.send(failure(id, &err));
            return;
        }
    };
    let limit = dragon.inner.limits.max_in_flight;
    if in_flight.fetch_add(1, Ordering::AcqRel) >= limit {
        in_flight.fetch_sub(1, Ordering::AcqRel);
        let err = Error::RateLimited(format!("at most {limit} requests in flight"));
        outbox.send(failure(Some(request.id), &err));
        return;
    }
    let dragon = dragon.clone();
    let conn = conn.clone();
    // Released when the task ends, even by a panic: the connection's slot, and the count
    // shutdown waits on (a write that committed is published before the process exits).
    let slot = InFlight::enter(in_flight.clone(), dragon.inner.requests.clone());
    let broker = dragon.inner.broker.clone();
    tokio::spawn(publish::with_broker(broker, async move {
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
        let result = dispatch(&dragon, &ctx, request).await;
        let known = dragon.inner.routers.contains_key(&route) || route == "dragon";
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
    if request.route == "dragon" {
        return dragon_route::call(dragon, ctx, &request.verb, request.args).await;
    }
    let router = dragon
        .inner
        .routers
        .get(&request.route)
        .ok_or_else(|| Error::UnknownRoute(request.route.clone()))?;
    router.call(ctx, &request.verb, request.args).await
}

/// Reads a request frame; on failure, the id to answer with (if it could be read).
fn parse_request(text: &str) -> Result<Request, (Option<RequestId>, Error)> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| (None, Error::bad_request(format!("not JSON: {e}"))))?;
    let Value::Object(map) = value else {
        return Err((None, Error::bad_request("a request must be a JSON object")));
    };
    let id = match map.get("id") {
        Some(Value::Number(n)) if n.is_i64() => RequestId::Int(n.as_i64().expect("i64")),
        Some(Value::String(s)) => RequestId::Str(s.clone()),
        _ => {
            return Err((
                None,
                Error::bad_request("id must be an integer or a string"),
            ));
        }
    };
    let field = |name: &str| match map.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err((
            Some(id.clone()),
            Error::bad_request(format!("{name} must be a string")),
        )),
    };
    let route = field("route")?;
    let verb = field("verb")?;
    let args = match map.get("args") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(Value::Object(o)) => Value::Object(o.clone()),
        Some(_) => {
            return Err((Some(id), Error::bad_request("args must be an object")));
        }
    };
    Ok(Request {
        id,
        route,
        verb,
        args,
    })
}
