//! Counters for `GET /metrics` (Prometheus text format).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Upper bounds (ms) of the delivery latency histogram's buckets.
const BUCKETS_MS: [u64; 11] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000];

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What one server counts. Connection and subscription gauges are read when rendered.
#[derive(Default)]
pub struct Metrics {
    /// (route, verb, outcome) -> count; outcome is `ok` or an error code.
    requests: Mutex<BTreeMap<(String, String, &'static str), u64>>,
    events_delivered: AtomicU64,
    backlogged: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS_MS.len()],
    latency_count: AtomicU64,
    latency_sum_ms: AtomicU64,
}

impl Metrics {
    pub fn request(&self, route: &str, verb: &str, outcome: &'static str) {
        *self
            .requests
            .lock()
            .expect("metrics lock")
            .entry((route.to_owned(), verb.to_owned(), outcome))
            .or_default() += 1;
    }

    /// `n` event frames queued for sockets, for a message published at `published_ms`.
    pub fn delivered(&self, n: u64, published_ms: u64) {
        if n == 0 {
            return;
        }
        self.events_delivered.fetch_add(n, Ordering::Relaxed);
        let latency = unix_ms().saturating_sub(published_ms);
        for (i, bound) in BUCKETS_MS.iter().enumerate() {
            if latency <= *bound {
                self.latency_buckets[i].fetch_add(n, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(n, Ordering::Relaxed);
        self.latency_sum_ms
            .fetch_add(latency * n, Ordering::Relaxed);
    }

    /// An event held back for a slow consumer (merged, or owed as `resync`).
    pub fn backlogged(&self) {
        self.backlogged.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus exposition text.
    pub fn render(
        &self,
        connections: usize,
        subscriptions: usize,
        presence_keys: usize,
        backlog: crate::publish::Backlog,
        log: crate::changelog::Status,
    ) -> String {
        let mut out = String::new();
        let secs = |d: Option<std::time::Duration>| d.map_or(0.0, |d| d.as_secs_f64());
        let _ = writeln!(
            out,
            "# HELP dragon_changelog_backlog Committed changes in the change log not yet relayed to the broker.\n\
             # TYPE dragon_changelog_backlog gauge\ndragon_changelog_backlog {}\n\
             # HELP dragon_changelog_oldest_unpublished_seconds How long the oldest of them has waited.\n\
             # TYPE dragon_changelog_oldest_unpublished_seconds gauge\n\
             dragon_changelog_oldest_unpublished_seconds {:.3}\n\
             # HELP dragon_changelog_relay_lag_seconds From commit to publish, for the change relayed last.\n\
             # TYPE dragon_changelog_relay_lag_seconds gauge\n\
             dragon_changelog_relay_lag_seconds {:.3}\n\
             # HELP dragon_changelog_relaying Whether this node holds the relay lease.\n\
             # TYPE dragon_changelog_relaying gauge\ndragon_changelog_relaying {}",
            log.backlog,
            secs(log.oldest),
            secs(log.lag),
            u8::from(log.relaying)
        );
        let oldest = backlog.oldest.map_or(0.0, |d| d.as_secs_f64());
        let _ = writeln!(
            out,
            "# HELP dragon_publish_backlog Committed changes waiting for the broker.\n\
             # TYPE dragon_publish_backlog gauge\ndragon_publish_backlog {}\n\
             # HELP dragon_publish_backlog_oldest_seconds How long the oldest of them waits.\n\
             # TYPE dragon_publish_backlog_oldest_seconds gauge\n\
             dragon_publish_backlog_oldest_seconds {oldest:.3}",
            backlog.waiting
        );
        let _ = writeln!(
            out,
            "# HELP dragon_presence_keys Presence keys this node's connections join or watch.\n\
             # TYPE dragon_presence_keys gauge\ndragon_presence_keys {presence_keys}"
        );
        let _ = writeln!(out, "# HELP dragon_connections Open WebSocket connections.");
        let _ = writeln!(
            out,
            "# TYPE dragon_connections gauge\ndragon_connections {connections}"
        );
        let _ = writeln!(
            out,
            "# HELP dragon_subscriptions Live subscriptions on this node."
        );
        let _ = writeln!(
            out,
            "# TYPE dragon_subscriptions gauge\ndragon_subscriptions {subscriptions}"
        );
        let _ = writeln!(
            out,
            "# HELP dragon_requests_total Requests by route, verb and outcome."
        );
        let _ = writeln!(out, "# TYPE dragon_requests_total counter");
        for ((route, verb, outcome), n) in self.requests.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "dragon_requests_total{{route=\"{}\",verb=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(route),
                escape(verb)
            );
        }
        let delivered = self.events_delivered.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP dragon_events_delivered_total Event frames queued to connections."
        );
        let _ = writeln!(
            out,
            "# TYPE dragon_events_delivered_total counter\ndragon_events_delivered_total {delivered}"
        );
        let backlogged = self.backlogged.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP dragon_events_backlogged_total Events held back for slow consumers (coalesced or owed as resync)."
        );
        let _ = writeln!(
            out,
            "# TYPE dragon_events_backlogged_total counter\ndragon_events_backlogged_total {backlogged}"
        );
        let _ = writeln!(
            out,
            "# HELP dragon_delivery_latency_ms From publish (after commit) to queued for the socket."
        );
        let _ = writeln!(out, "# TYPE dragon_delivery_latency_ms histogram");
        for (i, bound) in BUCKETS_MS.iter().enumerate() {
            let n = self.latency_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "dragon_delivery_latency_ms_bucket{{le=\"{bound}\"}} {n}"
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "dragon_delivery_latency_ms_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "dragon_delivery_latency_ms_sum {}",
            self.latency_sum_ms.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "dragon_delivery_latency_ms_count {count}");
        out
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
