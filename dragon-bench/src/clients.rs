//! The benchmark's clients and the measurement both systems share.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use crate::Figures;

/// What to measure for one client count.
pub struct Plan {
    pub clients: usize,
    pub burst_events: usize,
    pub paced_events: usize,
    pub pace: Duration,
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the benchmark started: the timestamp events carry.
pub fn now_micros() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Sends one event stamped with `t0` to every client (through the system under test).
pub trait Source {
    async fn send(&mut self, t0: u64);
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    target: AtomicU64,
    recording: AtomicBool,
    done: Notify,
    latencies: Mutex<Vec<u32>>,
}

/// Every connected client, counting what they receive.
pub struct Fleet {
    counters: Arc<Counters>,
}

/// The `t0` an event frame carries in `"text":"<t0>"`.
fn stamp(frame: &str) -> Option<u64> {
    let start = frame.find("\"text\":\"")? + 8;
    let digits = &frame[start..];
    let end = digits.find('"')?;
    digits[..end].parse().ok()
}

impl Fleet {
    /// Connects `n` clients; each sends `setup` first (e.g. a subscribe) and waits for its
    /// reply, skipping any greeting.
    /// Clients are spread round-robin over `urls` (the nodes of one system).
    pub async fn connect(urls: &[String], n: usize, setup: Option<String>) -> Fleet {
        let counters = Arc::new(Counters::default());
        let mut pending = Vec::new();
        for i in 0..n {
            let url = urls[i % urls.len()].clone();
            let setup = setup.clone();
            let counters = counters.clone();
            pending.push(tokio::spawn(async move {
                let (mut ws, _) = tokio_tungstenite::connect_async(url)
                    .await
                    .expect("connect");
                if let Some(frame) = setup {
                    ws.send(Message::Text(frame.into())).await.expect("setup");
                    while let Some(Ok(msg)) = ws.next().await {
                        if let Message::Text(t) = msg
                            && t.as_str().contains("\"ok\":")
                        {
                            assert!(t.as_str().contains("\"ok\":true"), "setup failed: {t}");
                            break;
                        }
                    }
                }
                let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    let _ = ready_tx.send(());
                    while let Some(Ok(msg)) = ws.next().await {
                        let Message::Text(t) = msg else { continue };
                        let Some(t0) = stamp(t.as_str()) else {
                            continue;
                        };
                        if counters.recording.load(Ordering::Relaxed) {
                            let micros = now_micros().saturating_sub(t0) as u32;
                            counters.latencies.lock().expect("latencies").push(micros);
                        }
                        let got = counters.received.fetch_add(1, Ordering::AcqRel) + 1;
                        if got == counters.target.load(Ordering::Acquire) {
                            counters.done.notify_one();
                        }
                    }
                });
                let _ = ready_rx.await;
            }));
            // Keep the accept backlog short.
            if pending.len() >= 256 {
                for p in pending.drain(..) {
                    p.await.expect("client");
                }
            }
        }
        for p in pending {
            p.await.expect("client");
        }
        Fleet { counters }
    }

    fn arm(&self, expected: u64, recording: bool) {
        self.counters.received.store(0, Ordering::Release);
        self.counters.latencies.lock().expect("latencies").clear();
        self.counters.recording.store(recording, Ordering::Release);
        self.counters.target.store(expected, Ordering::Release);
    }

    async fn wait(&self, limit: Duration) -> bool {
        let target = self.counters.target.load(Ordering::Acquire);
        let deadline = Instant::now() + limit;
        while self.counters.received.load(Ordering::Acquire) < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = tokio::time::timeout(
                left.min(Duration::from_millis(50)),
                self.counters.done.notified(),
            )
            .await;
        }
        true
    }

    /// The throughput burst, then the paced latency run.
    pub async fn measure(&self, plan: &Plan, source: &mut impl Source) -> Figures {
        let n = plan.clients as u64;
        self.arm(n * plan.burst_events as u64, false);
        let start = Instant::now();
        for _ in 0..plan.burst_events {
            source.send(now_micros()).await;
        }
        let sent = start.elapsed();
        let complete = self.wait(Duration::from_secs(120)).await;
        if std::env::var_os("DRAGON_BENCH_DEBUG").is_some() {
            eprintln!(
                "burst: {} events sent in {sent:?}, all delivered after {:?}",
                plan.burst_events,
                start.elapsed()
            );
        }
        let secs = start.elapsed().as_secs_f64();
        let received = self.counters.received.load(Ordering::Acquire);
        if !complete {
            eprintln!(
                "warning: burst incomplete: {received} of {} deliveries",
                n * plan.burst_events as u64
            );
        }
        let deliveries_per_sec = received as f64 / secs;

        self.arm(n * plan.paced_events as u64, true);
        for _ in 0..plan.paced_events {
            source.send(now_micros()).await;
            tokio::time::sleep(plan.pace).await;
        }
        if !self.wait(Duration::from_secs(60)).await {
            eprintln!("warning: paced run incomplete");
        }
        let mut lat = std::mem::take(&mut *self.counters.latencies.lock().expect("latencies"));
        lat.sort_unstable();
        let pct = |p: f64| {
            if lat.is_empty() {
                f64::NAN
            } else {
                lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1000.0
            }
        };
        Figures {
            deliveries_per_sec,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
        }
    }
}
