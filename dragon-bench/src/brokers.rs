//! The brokers the benchmark can run Dragon on, and how many nodes each uses.

use std::sync::Arc;

use dragon_core::broker::{Broker, MemoryBroker, RedisBroker, RedisOptions};

/// One broker per node: `memory` is one node; `redis` is two nodes sharing a Redis
/// (`REDIS_URL`, default the local one), under a key prefix of their own.
pub async fn make(kind: &str) -> Vec<Arc<dyn Broker>> {
    match kind {
        "memory" => vec![Arc::new(MemoryBroker::new())],
        "redis" => {
            let url =
                std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            let options = RedisOptions {
                key_prefix: format!("dragon-bench-{}:", std::process::id()),
                ..RedisOptions::default()
            };
            let mut nodes: Vec<Arc<dyn Broker>> = Vec::new();
            for _ in 0..2 {
                let broker = RedisBroker::connect(&url, options.clone())
                    .await
                    .unwrap_or_else(|e| panic!("Redis at {url}: {e}"));
                nodes.push(Arc::new(broker));
            }
            nodes
        }
        other => panic!("unknown broker {other:?}: memory or redis"),
    }
}
