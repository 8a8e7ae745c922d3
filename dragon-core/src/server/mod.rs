//! The axum server: `/ws`, `/healthz`, the JS client, and graceful shutdown.
//!
//! [`Dragon::router`] is a plain `axum::Router`, to nest into an existing app or serve alone
//! with [`Dragon::serve`].

mod conn;
mod dragon_route;
mod health;
mod http_publish;
mod limits;
mod request;
mod writer;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sea_orm::DatabaseConnection;
use tokio::sync::{Notify, watch};

use crate::broker::{Broker, MemoryBroker};
use crate::hub::Hub;
use crate::router::Router;
use crate::{changelog, publish};

pub use limits::Limits;
use limits::Seat;

pub use crate::auth::Authenticator;

struct Inner {
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    routers: crate::router::Routers,
    limits: Limits,
    auth: Option<Arc<dyn Authenticator>>,
    require_auth: bool,
    allowed_origins: Option<Vec<String>>,
    db: Option<DatabaseConnection>,
    publish_secret: Option<String>,
    shutdown: watch::Sender<bool>,
    next_conn: AtomicU64,
    live: AtomicUsize,
    all_closed: Notify,
    requests: Arc<Requests>,
    relays: changelog::Relays,
    /// The app's metrics and Dragon's, served on `/metrics`.
    registry: prometheus_client::registry::Registry,
    on_connect: Option<Hook>,
    on_disconnect: Option<Hook>,
}

/// The requests under way on every connection of a server.
#[derive(Default)]
struct Requests {
    count: AtomicUsize,
    idle: Notify,
}

impl Requests {
    /// Waits until no request is under way.
    async fn idle(&self) {
        while self.count.load(Ordering::Acquire) > 0 {
            let notified = self.idle.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                break;
            }
            notified.await;
        }
    }
}

/// A Dragon server: routers, hub and broker, ready to serve.
#[derive(Clone)]
pub struct Dragon {
    inner: Arc<Inner>,
}

/// Configures a [`Dragon`]. `/metrics` works with no configuration; to serve the app's own
/// metrics there too, see [`Builder::metrics_registry`].
#[derive(Default)]
pub struct Builder {
    broker: Option<Arc<dyn Broker>>,
    routers: Vec<Arc<dyn Router>>,
    limits: Limits,
    auth: Option<Arc<dyn Authenticator>>,
    require_auth: bool,
    allowed_origins: Option<Vec<String>>,
    db: Option<DatabaseConnection>,
    publish_secret: Option<String>,
    metrics_registry: prometheus_client::registry::Registry,
    on_connect: Option<Hook>,
    on_disconnect: Option<Hook>,
}

impl Builder {
    /// Runs `hook` for each new connection, after its `hello` and before its first request
    /// is read (mark a user online, send a welcome with `ctx.send_to`).
    pub fn on_connect<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(crate::Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_connect = Some(Arc::new(move |ctx| Box::pin(hook(ctx))));
        self
    }

    /// Runs `hook` when a connection has closed (its subscriptions are gone already).
    pub fn on_disconnect<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(crate::Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_disconnect = Some(Arc::new(move |ctx| Box::pin(hook(ctx))));
        self
    }

    /// The broker (default: a fresh [`MemoryBroker`]).
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Serves a router on its route name.
    pub fn route(mut self, router: impl Router) -> Self {
        self.routers.push(Arc::new(router));
        self
    }

    /// The bounds against heavy or abusive clients (default: [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How tokens (`?token=` or `dragon.auth`) become users.
    pub fn auth(mut self, auth: impl Authenticator) -> Self {
        self.auth = Some(Arc::new(auth));
        self
    }

    /// Refuse connections without a valid token (close 4001).
    pub fn require_auth(mut self, required: bool) -> Self {
        self.require_auth = required;
        self
    }

    /// Also accept WebSockets from pages of these origins (`https://app.example.com`). By
    /// default only pages served by the host the socket connects to may open one (same
    /// origin; behind a proxy that rewrites `Host`, list your public origin here); others are
    /// closed with 1008. Clients that send no `Origin` (not browsers) are always accepted.
    pub fn allowed_origins<S: Into<String>>(
        mut self,
        origins: impl IntoIterator<Item = S>,
    ) -> Self {
        self.allowed_origins = Some(origins.into_iter().map(Into::into).collect());
        self
    }

    /// The database `/healthz` checks; the server also relays its change log (model routers'
    /// databases are relayed without this).
    pub fn database(mut self, db: DatabaseConnection) -> Self {
        self.db = Some(db);
        self
    }

    /// Enables `POST /dragon/publish` for callers presenting `Authorization: Bearer <secret>`
    /// (an empty secret leaves it disabled: 404).
    pub fn publish_secret(mut self, secret: impl Into<String>) -> Self {
        let secret = secret.into();
        self.publish_secret = (!secret.is_empty()).then_some(secret);
        self
    }

    /// Serves the app's metrics in `registry` on `/metrics` beside Dragon's own (`dragon_*`),
    /// so one scrape sees both; by default Dragon's are served alone. Register them before,
    /// and keep the handles: clones share one value.
    ///
    /// ```
    /// use dragon_core::Dragon;
    /// use dragon_core::prometheus_client::metrics::counter::Counter;
    /// use dragon_core::prometheus_client::registry::Registry;
    ///
    /// let signups = Counter::<u64>::default();
    /// let mut registry = Registry::default();
    /// // Served as `myapp_signups_total` (counters get `_total`).
    /// registry.register("myapp_signups", "Accounts created", signups.clone());
    /// let builder = Dragon::builder().metrics_registry(registry);
    /// signups.inc(); // wherever an account is created
    /// # drop(builder);
    /// ```
    pub fn metrics_registry(mut self, registry: prometheus_client::registry::Registry) -> Self {
        self.metrics_registry = registry;
        self
    }

    /// Starts the hub. Must run inside a tokio runtime.
    ///
    /// # Panics
    /// On a configuration mistake ([`BuildError`]), pointing at the caller's line; use
    /// [`Builder::try_build`] to handle it instead.
    #[track_caller]
    pub fn build(self) -> Dragon {
        match self.try_build() {
            Ok(dragon) => dragon,
            Err(err) => panic!("dragon: {err}"),
        }
    }

    /// Starts the hub, or says what is wrong with the configuration. Must run inside a tokio
    /// runtime.
    pub fn try_build(self) -> Result<Dragon, BuildError> {
        let mut routers = HashMap::new();
        for r in self.routers {
            let name = r.name().to_owned();
            if name == CONTROL_ROUTE {
                return Err(BuildError::ReservedRoute);
            }
            r.check().map_err(|problem| BuildError::Router {
                route: name.clone(),
                problem,
            })?;
            if routers.insert(name.clone(), r).is_some() {
                return Err(BuildError::DuplicateRoute(name));
            }
        }
        if !tracing::dispatcher::has_been_set() {
            eprintln!(
                "dragon: no tracing subscriber is installed, so errors will not be logged; \
                 add `tracing_subscriber::fmt().init()` at the start of main"
            );
        }
        let broker = self
            .broker
            .unwrap_or_else(|| Arc::new(MemoryBroker::new()) as Arc<dyn Broker>);
        publish::install_if_unset(&broker);
        let dbs = routers
            .values()
            .filter_map(|r| r.database().cloned())
            .chain(self.db.clone())
            .collect();
        let relays = changelog::Relays::start(dbs, &broker);
        let hub = Hub::start(broker.clone());
        let mut registry = self.metrics_registry;
        hub.metrics().register(&mut registry);
        Ok(Dragon {
            inner: Arc::new(Inner {
                hub,
                broker,
                routers: Arc::new(routers),
                limits: self.limits,
                auth: self.auth,
                require_auth: self.require_auth,
                allowed_origins: self.allowed_origins,
                db: self.db,
                publish_secret: self.publish_secret,
                shutdown: watch::channel(false).0,
                next_conn: AtomicU64::new(1),
                live: AtomicUsize::new(0),
                all_closed: Notify::new(),
                requests: Arc::default(),
                relays,
                registry,
                on_connect: self.on_connect,
                on_disconnect: self.on_disconnect,
            }),
        })
    }
}

/// A server that cannot start as configured.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A router is named `dragon`, the route of the connection-level verbs.
    #[error("the route name `dragon` is reserved")]
    ReservedRoute,
    /// Two routers share this route name.
    #[error("two routers are named {0:?}")]
    DuplicateRoute(String),
    /// A router's own check failed ([`Router::check`], [`Router::check_services`]).
    #[error("{problem}")]
    Router {
        /// The route name of the router whose check failed.
        route: String,
        /// What the check found wrong; this is the error's whole message.
        problem: String,
    },
}

/// The route of the connection-level verbs, and of control messages between nodes.
pub(crate) const CONTROL_ROUTE: &str = "dragon";

/// Sends a direct event to a connection through `broker` (the node holding it delivers).
pub(crate) async fn send_to(
    broker: &Arc<dyn Broker>,
    conn: &str,
    event: &str,
    data: serde_json::Value,
) -> Result<(), crate::Error> {
    let direct = serde_json::json!({"conn": conn, "event": event, "data": data});
    broker
        .publish(
            CONTROL_ROUTE,
            crate::broker::Message::custom("send", direct),
        )
        .await
        .map_err(crate::Error::from)
}

/// A connection hook: runs with the connection's context (its id, its user).
pub type Hook =
    Arc<dyn Fn(crate::Ctx) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

const DRAGON_JS: &str = include_str!("../../js/dragon.js");
const DRAGON_MJS: &str = include_str!("../../js/dragon.mjs");
const DRAGON_DTS: &str = include_str!("../../js/dragon.d.ts");

impl Dragon {
    /// Starts configuring a server: routes, broker, authentication, limits.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Live subscriptions on this node.
    pub fn subscription_count(&self) -> usize {
        self.inner.hub.subscription_count()
    }

    /// Presence keys this node's connections join or watch.
    pub fn presence_key_count(&self) -> usize {
        self.inner.hub.presence().view_count()
    }

    /// The broker this node publishes to and receives from (other nodes' changes too).
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// Revokes access on every node (see [`crate::auth::Revoke`]): the subscriptions
    /// concerned get an `error` event and stop, within moments, wherever they are.
    pub async fn revoke(&self, revoke: crate::auth::Revoke) -> Result<(), crate::Error> {
        let data = serde_json::to_value(&revoke)
            .map_err(|e| crate::Error::Internal(format!("revocation: {e}")))?;
        self.inner
            .broker
            .publish(
                CONTROL_ROUTE,
                crate::broker::Message::custom("revoke", data),
            )
            .await
            .map_err(crate::Error::from)
    }

    /// Sends `{"event": event, "data": data}` to connection `conn` (as its `hello` named
    /// it), on whichever node it is; nothing if it is gone.
    pub async fn send_to(
        &self,
        conn: &str,
        event: &str,
        data: serde_json::Value,
    ) -> Result<(), crate::Error> {
        send_to(&self.inner.broker, conn, event, data).await
    }

    /// Publishes a custom event on `route` to every matching subscriber on every node,
    /// except connection `except` if given.
    pub async fn broadcast(
        &self,
        route: &str,
        event: &str,
        data: serde_json::Value,
        except: Option<&str>,
    ) -> Result<(), crate::Error> {
        let mut message = crate::broker::Message::custom(event, data);
        if let Some(conn) = except {
            message = message.except(conn);
        }
        self.inner
            .broker
            .publish(route, message)
            .await
            .map_err(crate::Error::from)
    }

    /// The number of open WebSocket connections.
    pub fn connections(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// `/ws`, `/healthz` and `/dragon/dragon.js` (with `.mjs` and `.d.ts`).
    pub fn router(&self) -> axum::Router {
        let js = |body: &'static str| {
            move || async move {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    body,
                )
            }
        };
        axum::Router::new()
            .route("/ws", get(ws_handler))
            .route("/healthz", get(health::healthz))
            .route("/metrics", get(health::metrics))
            .route("/dragon/publish", post(http_publish::publish))
            .route("/dragon/dragon.js", get(js(DRAGON_JS)))
            .route("/dragon/dragon.mjs", get(js(DRAGON_MJS)))
            .route(
                "/dragon/dragon.d.ts",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "application/typescript")],
                        DRAGON_DTS,
                    )
                }),
            )
            .with_state(self.clone())
    }

    /// Closes every connection with 1001 (clients reconnect elsewhere) and waits, at most
    /// `grace`, for them to finish, for the requests under way to end (a write that
    /// committed is published before this returns) and for committed changes still waiting
    /// for the broker; then publishes the presence leaves and removes whatever presence this
    /// node still holds.
    pub async fn shutdown(&self, grace: Duration) {
        let started = tokio::time::Instant::now();
        let left = || {
            grace
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(500))
        };
        self.close_connections(grace).await;
        if tokio::time::timeout(left(), self.inner.requests.idle())
            .await
            .is_err()
        {
            tracing::warn!("shutting down with requests still under way");
        }
        // What those requests committed is in the change log: see it relayed (by this node
        // or the active relay elsewhere), then let its lock go so another node takes over.
        self.inner.relays.drain(left()).await;
        let drained = async {
            while publish::pending_retries() > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        if tokio::time::timeout(left(), drained).await.is_err() {
            tracing::error!(
                waiting = publish::pending_retries(),
                "shutting down with committed changes the broker has not taken"
            );
        }
        self.inner.hub.presence().retire(left()).await;
    }

    async fn close_connections(&self, grace: Duration) {
        self.inner.shutdown.send_replace(true);
        let wait = async {
            while self.inner.live.load(Ordering::Acquire) > 0 {
                let notified = self.inner.all_closed.notified();
                if self.inner.live.load(Ordering::Acquire) == 0 {
                    break;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(grace, wait).await;
    }

    /// Runs every router's [`Router::check_services`] (e.g. a SQLite database opened
    /// without Dragon's functions); `serve` does this before it serves.
    pub async fn check_services(&self) -> Result<(), BuildError> {
        for (route, router) in self.inner.routers.iter() {
            router
                .check_services()
                .await
                .map_err(|problem| BuildError::Router {
                    route: route.clone(),
                    problem,
                })?;
        }
        Ok(())
    }

    /// Serves `app` (typically `self.router()` merged into yours) until `signal` resolves,
    /// then shuts down gracefully. Fails at once if a router's services are not usable
    /// ([`Dragon::check_services`]).
    pub async fn serve_until(
        &self,
        listener: tokio::net::TcpListener,
        app: axum::Router,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        if let Err(err) = self.check_services().await {
            tracing::error!(error = %err, "cannot serve");
            return Err(std::io::Error::other(format!("dragon: {err}")));
        }
        let this = self.clone();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        // Small frames go out at once rather than waiting for Nagle's algorithm to batch them
        // (the writer already batches what is queued, then flushes once).
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(error = %err, "TCP_NODELAY not set");
            }
        });
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = done_rx.await;
        });
        let stopper = tokio::spawn(async move {
            signal.await;
            tracing::info!("shutting down: closing connections with 1001");
            this.shutdown(Duration::from_secs(5)).await;
            let _ = done_tx.send(());
        });
        let result = server.await;
        stopper.abort();
        result
    }

    /// Serves `app` until SIGINT or SIGTERM.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        app: axum::Router,
    ) -> std::io::Result<()> {
        self.serve_until(listener, app, shutdown_signal()).await
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn ws_handler(
    State(dragon): State<Dragon>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // Refused before any work for it: a full server answers at the cost of a status line.
    let Some(seat) = Seat::take(&dragon) else {
        tracing::warn!(
            max = dragon.inner.limits.max_connections,
            "connection refused: the server is full"
        );
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "too many connections (limit max_connections)",
        )
            .into_response();
    };
    let origin_ok = origin_allowed(&headers, dragon.inner.allowed_origins.as_deref());
    let identity = match &dragon.inner.auth {
        Some(auth) if origin_ok => {
            let credentials =
                crate::auth::Credentials::new(query.get("token").map(String::as_str), &headers);
            auth.identify_request(&credentials).await
        }
        _ => Ok(None),
    };
    let max = dragon.inner.limits.max_frame;
    // tungstenite reads through a 128 KiB buffer per socket by default; requests are small,
    // and the buffer still grows for a large frame, so a small one saves memory per connection.
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| {
            use futures_util::StreamExt;
            conn::run(dragon, socket.split(), identity, origin_ok, seat)
        })
}

/// Same-origin by default: a browser page may open the socket only if it was served by this
/// host (its `Origin` names the `Host` it connects to), or its origin is on the allow-list.
/// A request without `Origin` (not from a browser) is allowed.
fn origin_allowed(headers: &HeaderMap, allowed: Option<&[String]>) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed.is_some_and(|list| list.iter().any(|a| a == origin)) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Bytes each socket reads at a time (see `ws_handler`).
const READ_BUFFER: usize = 1024;
