//! The brokers the benchmark can run Dragon on.

use std::sync::Arc;

use dragon_core::broker::{Broker, MemoryBroker};

pub async fn make(kind: &str) -> Arc<dyn Broker> {
    match kind {
        "memory" => Arc::new(MemoryBroker::new()),
        other => panic!("unknown broker {other:?}; this build knows: memory"),
    }
}
