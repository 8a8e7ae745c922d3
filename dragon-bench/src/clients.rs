//! The benchmark's clients and the measurement both systems share.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// Microseconds of the wall clock: the timestamp events carry, shared by the benchmark's
/// server process and its client process.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// This process's resident memory in KiB (`VmRSS`).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0)
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

/// Every connected client, counting what they receive. Lives in the client process.
struct Clients {
    counters: Arc<Counters>,
}

/// The `t0` an event frame carries in `"text":"<t0>"`.
fn stamp(frame: &str) -> Option<u64> {
    let start = frame.find("\"text\":\"")? + 8;
    let digits = &frame[start..];
    let end = digits.find('"')?;
    digits[..end].parse().ok()
}

impl Clients {
    /// Connects `n` clients, spread round-robin over `urls` (the nodes of one system); each
    /// sends `setup` first (e.g. a subscribe) and waits for its reply, skipping any greeting.
    async fn connect(urls: &[String], n: usize, setup: Option<String>) -> Clients {
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
        Clients { counters }
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

    /// Received so far, whether all arrived, and latency p50/p99 in ms.
    fn summary(&self, complete: bool) -> String {
        let received = self.counters.received.load(Ordering::Acquire);
        let lat = std::mem::take(&mut *self.counters.latencies.lock().expect("latencies"));
        let (p50, p99) = p50_p99_ms(lat);
        format!("done {received} {} {p50} {p99}", complete as u8)
    }
}

/// The client process: `dragon-bench --fleet`. Connects the clients, then obeys lines on
/// stdin (`arm <expected> <record 0|1>`, `wait <ms>`) and answers on stdout.
pub async fn fleet_main(urls: Vec<String>, n: usize, setup: Option<String>) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let clients = Clients::connect(&urls, n, setup).await;
    println!("ready");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["arm", expected, record] => {
                clients.arm(expected.parse().unwrap_or(0), *record == "1");
                println!("armed");
            }
            ["wait", ms] => {
                let complete = clients
                    .wait(Duration::from_millis(ms.parse().unwrap_or(0)))
                    .await;
                println!("{}", clients.summary(complete));
            }
            _ => break,
        }
    }
}

/// The server process's handle on the client process (clients live in their own process,
/// with their own open-file limit and runtime, so they do not share the server's).
pub struct Fleet {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Fleet {
    pub async fn connect(urls: &[String], n: usize, setup: Option<String>) -> Fleet {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = tokio::process::Command::new(std::env::current_exe().expect("own path"));
        cmd.arg("--fleet")
            .arg(urls.join(","))
            .arg("--clients")
            .arg(n.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(frame) = setup {
            cmd.arg("--setup").arg(frame);
        }
        let mut child = cmd.spawn().expect("client process");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut fleet = Fleet {
            child,
            stdin,
            stdout,
        };
        assert_eq!(
            fleet.read().await,
            "ready",
            "client process failed to connect"
        );
        fleet
    }

    async fn read(&mut self) -> String {
        self.stdout
            .next_line()
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    async fn say(&mut self, line: String) -> String {
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("client process");
        self.read().await
    }

    /// Returns (received, complete, p50 ms, p99 ms).
    async fn wait(&mut self, limit: Duration) -> (u64, bool, f64, f64) {
        let reply = self.say(format!("wait {}", limit.as_millis())).await;
        let p: Vec<&str> = reply.split_whitespace().collect();
        assert_eq!(p.first(), Some(&"done"), "client process said {reply:?}");
        (
            p[1].parse().unwrap_or(0),
            p[2] == "1",
            p[3].parse().unwrap_or(f64::NAN),
            p[4].parse().unwrap_or(f64::NAN),
        )
    }

    /// The throughput burst, then the paced latency run.
    pub async fn measure(&mut self, plan: &Plan, source: &mut impl Source) -> Figures {
        let n = plan.clients as u64;
        let expected = n * plan.burst_events as u64;
        self.say(format!("arm {expected} 0")).await;
        let start = Instant::now();
        for _ in 0..plan.burst_events {
            source.send(now_micros()).await;
        }
        let sent = start.elapsed();
        let (received, complete, _, _) = self.wait(Duration::from_secs(120)).await;
        let secs = start.elapsed().as_secs_f64();
        if std::env::var_os("DRAGON_BENCH_DEBUG").is_some() {
            eprintln!(
                "burst: {} events sent in {sent:?}, delivered after {secs:.3}s",
                plan.burst_events
            );
        }
        if !complete {
            eprintln!("warning: burst incomplete: {received} of {expected} deliveries");
        }
        let deliveries_per_sec = received as f64 / secs;

        self.say(format!("arm {} 1", n * plan.paced_events as u64))
            .await;
        for _ in 0..plan.paced_events {
            source.send(now_micros()).await;
            tokio::time::sleep(plan.pace).await;
        }
        let (_, complete, p50_ms, p99_ms) = self.wait(Duration::from_secs(60)).await;
        if !complete {
            eprintln!("warning: paced run incomplete");
        }
        Figures {
            deliveries_per_sec,
            p50_ms,
            p99_ms,
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The 50th and 99th percentiles, in ms, of latencies in µs (NaN if there are none).
pub fn p50_p99_ms(mut lat: Vec<u32>) -> (f64, f64) {
    lat.sort_unstable();
    let pct = |p: f64| {
        if lat.is_empty() {
            f64::NAN
        } else {
            lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1000.0
        }
    };
    (pct(0.50), pct(0.99))
}
