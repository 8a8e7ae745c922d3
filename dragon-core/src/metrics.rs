//! Dragon's own metrics for `GET /metrics`. They go into one `prometheus_client`
//! [`Registry`] with the app's ([`crate::server::Builder::metrics_registry`]), so a single
//! scrape sees both.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::error::Error;

/// The content type of `/metrics`: OpenMetrics text, which `prometheus_client` writes and
/// Prometheus reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `route` or `verb` label of a request to a route the server does not serve, or of a
/// verb its route does not offer: made-up names from clients cannot add series.
pub const OTHER: &str = "other";

/// Upper bounds (ms) of the delivery latency histogram's buckets.
const BUCKETS_MS: [u64; 11] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000];

/// The wall-clock time in Unix milliseconds (0 if the clock is before 1970), for commit-to-send
/// latency.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    verb: String,
    /// `ok` or an error code.
    outcome: &'static str,
}

/// What `/metrics` reads from the server at each scrape.
pub(crate) struct Readings {
    pub connections: usize,
    pub subscriptions: usize,
    pub presence_keys: usize,
    pub backlog: crate::publish::Backlog,
    pub log: crate::changelog::Status,
}

/// The gauges set from [`Readings`] just before each scrape is written.
#[derive(Default)]
struct Gauges {
    changelog_backlog: Gauge,
    changelog_oldest: Gauge<f64, AtomicU64>,
    changelog_lag: Gauge<f64, AtomicU64>,
    changelog_relaying: Gauge,
    publish_backlog: Gauge,
    publish_oldest: Gauge<f64, AtomicU64>,
    presence_keys: Gauge,
    connections: Gauge,
    subscriptions: Gauge,
}

/// What one server counts. Cheap handles: the registry holds clones of the same values.
#[derive(Default)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    events_delivered: Counter,
    backlogged: Counter,
    latency: Latency,
    gauges: Gauges,
}

impl Metrics {
    /// Adds Dragon's metrics to `registry` (once per server).
    pub(crate) fn register(&self, registry: &mut Registry) {
        let g = &self.gauges;
        registry.register(
            "dragon_changelog_backlog",
            "Committed changes in the change log not yet relayed to the broker",
            g.changelog_backlog.clone(),
        );
        registry.register(
            "dragon_changelog_oldest_unpublished_seconds",
            "How long the oldest of them has waited",
            g.changelog_oldest.clone(),
        );
        registry.register(
            "dragon_changelog_relay_lag_seconds",
            "From commit to publish, for the change relayed last",
            g.changelog_lag.clone(),
        );
        registry.register(
            "dragon_changelog_relaying",
            "Whether this node holds the relay lease",
            g.changelog_relaying.clone(),
        );
        registry.register(
            "dragon_publish_backlog",
            "Committed changes waiting for the broker",
            g.publish_backlog.clone(),
        );
        registry.register(
            "dragon_publish_backlog_oldest_seconds",
            "How long the oldest of them waits",
            g.publish_oldest.clone(),
        );
        registry.register(
            "dragon_presence_keys",
            "Presence keys this node's connections join or watch",
            g.presence_keys.clone(),
        );
        registry.register(
            "dragon_connections",
            "Open WebSocket connections",
            g.connections.clone(),
        );
        registry.register(
            "dragon_subscriptions",
            "Live subscriptions on this node",
            g.subscriptions.clone(),
        );
        // Counters are named without `_total`: prometheus-client adds it.
        registry.register(
            "dragon_requests",
            "Requests by route, verb and outcome",
            self.requests.clone(),
        );
        registry.register(
            "dragon_events_delivered",
            "Event frames queued to connections",
            self.events_delivered.clone(),
        );
        registry.register(
            "dragon_events_backlogged",
            "Events held back for slow consumers (coalesced or owed as resync)",
            self.backlogged.clone(),
        );
        registry.register(
            "dragon_delivery_latency_ms",
            "From publish (after commit) to queued for the socket",
            self.latency.clone(),
        );
    }

    /// Counts one request; `error` is how it failed, if it did. A route the server does not
    /// serve (`known_route` false) and a verb its route does not offer (it answered
    /// `unknown_route` or `unknown_verb`, which routers do before any rule) count as
    /// [`OTHER`], so the series stay those of the server's own routes and verbs.
    pub(crate) fn request(
        &self,
        known_route: bool,
        route: &str,
        verb: &str,
        error: Option<&Error>,
    ) {
        let known_verb = known_route
            && !matches!(
                error,
                Some(Error::UnknownVerb { .. } | Error::UnknownRoute(_))
            );
        let labels = RequestLabels {
            route: if known_route { route } else { OTHER }.to_owned(),
            verb: if known_verb { verb } else { OTHER }.to_owned(),
            outcome: error.map_or("ok", |e| e.code().as_str()),
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// `n` event frames queued for sockets, for a message published at `published_ms`.
    pub fn delivered(&self, n: u64, published_ms: u64) {
        if n == 0 {
            return;
        }
        self.events_delivered.inc_by(n);
        self.latency
            .observe(unix_ms().saturating_sub(published_ms), n);
    }

    /// An event held back for a slow consumer (merged, or owed as `resync`).
    pub fn backlogged(&self, n: u64) {
        self.backlogged.inc_by(n);
    }

    /// Sets the gauges from `now`, then writes `registry` (Dragon's metrics and the app's)
    /// as OpenMetrics text. Fails only if one of the app's own metrics fails to encode.
    pub(crate) fn render(
        &self,
        registry: &Registry,
        now: Readings,
    ) -> Result<String, std::fmt::Error> {
        let g = &self.gauges;
        let secs = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        g.changelog_backlog
            .set(i64::try_from(now.log.backlog).unwrap_or(i64::MAX));
        g.changelog_oldest.set(secs(now.log.oldest));
        g.changelog_lag.set(secs(now.log.lag));
        g.changelog_relaying.set(i64::from(now.log.relaying));
        g.publish_backlog.set(count(now.backlog.waiting));
        g.publish_oldest.set(secs(now.backlog.oldest));
        g.presence_keys.set(count(now.presence_keys));
        g.connections.set(count(now.connections));
        g.subscriptions.set(count(now.subscriptions));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry)?;
        Ok(out)
    }
}

/// The delivery latency histogram (ms). Not prometheus-client's `Histogram`, which takes one
/// observation at a time under a lock: a broadcast queues thousands of frames with one
/// latency, and these atomics count them at once.
#[derive(Clone, Debug, Default)]
struct Latency(Arc<LatencyCounts>);

#[derive(Debug, Default)]
struct LatencyCounts {
    /// One per bound, not cumulative; the last is over every bound (`+Inf`).
    buckets: [AtomicU64; BUCKETS_MS.len() + 1],
    sum_ms: AtomicU64,
}

impl Latency {
    fn observe(&self, ms: u64, n: u64) {
        let i = BUCKETS_MS
            .iter()
            .position(|bound| ms <= *bound)
            .unwrap_or(BUCKETS_MS.len());
        self.0.buckets[i].fetch_add(n, Ordering::Relaxed);
        self.0.sum_ms.fetch_add(ms * n, Ordering::Relaxed);
    }
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let bounds = BUCKETS_MS.iter().map(|b| *b as f64).chain([f64::INFINITY]);
        let counts = self.0.buckets.iter().map(|b| b.load(Ordering::Relaxed));
        let buckets: Vec<(f64, u64)> = bounds.zip(counts).collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_ms.load(Ordering::Relaxed) as f64;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(metrics: &Metrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let now = Readings {
            connections: 3,
            subscriptions: 2,
            presence_keys: 1,
            backlog: crate::publish::Backlog {
                waiting: 0,
                oldest: None,
            },
            log: crate::changelog::Status::default(),
        };
        metrics.render(&registry, now).expect("encodes")
    }

    #[test]
    fn unknown_routes_and_verbs_share_one_series() {
        let m = Metrics::default();
        m.request(true, "todo", "create", None);
        m.request(
            false,
            "nope",
            "create",
            Some(&Error::UnknownRoute("nope".into())),
        );
        m.request(
            false,
            "nada",
            "zap",
            Some(&Error::UnknownRoute("nada".into())),
        );
        let unknown = |verb: &str| Error::UnknownVerb {
            route: "todo".into(),
            verb: verb.into(),
        };
        m.request(true, "todo", "fly", Some(&unknown("fly")));
        m.request(true, "todo", "swim", Some(&unknown("swim")));
        let text = text(&m);
        for line in [
            r#"dragon_requests_total{route="todo",verb="create",outcome="ok"} 1"#,
            r#"dragon_requests_total{route="other",verb="other",outcome="unknown_route"} 2"#,
            r#"dragon_requests_total{route="todo",verb="other",outcome="unknown_verb"} 2"#,
            "dragon_connections 3",
            "dragon_subscriptions 2",
            "dragon_presence_keys 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        assert_eq!(text.matches("dragon_requests_total{").count(), 3, "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn latency_counts_every_frame_of_a_delivery() {
        let m = Metrics::default();
        m.delivered(1000, unix_ms());
        m.delivered(2, 0);
        let text = text(&m);
        for line in [
            "dragon_events_delivered_total 1002",
            "dragon_delivery_latency_ms_count 1002",
            r#"dragon_delivery_latency_ms_bucket{le="+Inf"} 1002"#,
            r#"dragon_delivery_latency_ms_bucket{le="5000.0"} 1000"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
    }
}
