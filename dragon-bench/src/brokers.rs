//! The brokers the benchmark can run Dragon on, and how many nodes each uses.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dragon_core::broker::{Broker, MemoryBroker, RedisBroker, RedisOptions};

/// One broker per node: `memory` is one node; `redis` is two nodes sharing a Redis
/// (`REDIS_URL`, default the local one), under a key prefix of their own.
pub async fn make(kind: &str) -> Vec<Arc<dyn Broker>> {
    match kind {
        "memory" => vec![Arc::new(MemoryBroker::new())],
        "redis" => redis(&format!("dragon-bench-{}:", std::process::id()), 2).await,
        other => panic!("unknown broker {other:?}: memory or redis"),
    }
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `nodes` brokers on the Redis at `REDIS_URL`, sharing the key prefix `prefix`.
pub async fn redis(prefix: &str, nodes: usize) -> Vec<Arc<dyn Broker>> {
    let url = redis_url();
    let options = RedisOptions {
        key_prefix: prefix.to_owned(),
        ..RedisOptions::default()
    };
    let mut brokers: Vec<Arc<dyn Broker>> = Vec::new();
    for _ in 0..nodes {
        let broker = RedisBroker::connect(&url, options.clone())
            .await
            .unwrap_or_else(|e| panic!("Redis at {url}: {e}"));
        brokers.push(Arc::new(broker));
    }
    brokers
}

/// Prefixes [`unique_prefix`] handed out, for [`cleanup_all`].
static PREFIXES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A key prefix no other cluster of this process or another uses.
pub fn unique_prefix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let prefix = format!(
        "dragon-bench-{}-{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    PREFIXES.lock().expect("prefixes").push(prefix.clone());
    prefix
}

/// Deletes the keys of every prefix handed out. Call it once the runtime is gone: a stopped
/// Dragon node does not release its Redis broker, whose presence lease would write its key
/// again after a [`cleanup`].
pub fn cleanup_all() {
    for prefix in std::mem::take(&mut *PREFIXES.lock().expect("prefixes")) {
        cleanup(&prefix);
    }
}

/// Deletes the keys under `prefix` (with redis-cli; a warning if that fails).
pub fn cleanup(prefix: &str) {
    if let Err(err) =
        crate::presence::redis_cleanup(&[format!("{prefix}*"), format!("{{{prefix}*")])
    {
        eprintln!("warning: could not delete the Redis keys {prefix}*: {err}");
    }
}
