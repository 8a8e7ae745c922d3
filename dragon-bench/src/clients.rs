//! The benchmark's clients, in a process of their own (`dragon-bench --fleet`), and the
//! server side's handle on that process ([`Fleet`]).
//!
//! Clients are spread over the nodes of a system first and over the rooms second (client
//! `i` is on node `i % nodes`, in room `(i / nodes) % rooms`), so every room has clients on
//! every node. Event `j` of a run goes to room `j % rooms`. Each client counts what it
//! receives, so a shortfall is found client by client, not only in the total.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

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

/// The room of client `i`.
pub fn room_of(i: usize, nodes: usize, rooms: usize) -> usize {
    (i / nodes.max(1)) % rooms.max(1)
}

/// How many of `events` events go to `room` (event `j` goes to room `j % rooms`).
pub fn events_for(room: usize, rooms: usize, events: usize) -> u64 {
    let rooms = rooms.max(1);
    (events / rooms + usize::from(room < events % rooms)) as u64
}

/// Rooms on the wire are numbered from 1 (Dragon's `list_id`, the reference's path).
pub fn list_id(room: usize) -> usize {
    room + 1
}

/// `template` with `{room}` replaced by the room's `list_id`.
pub fn for_room(template: &str, room: usize) -> String {
    template.replace("{room}", &list_id(room).to_string())
}

/// Sends one event stamped with `t0` to every client of `room` (through the system under
/// test).
pub trait Source {
    async fn send(&mut self, room: usize, t0: u64);
}

/// The `t0` an event frame carries in `"text":"<t0>"`.
fn stamp(frame: &str) -> Option<u64> {
    number_after(frame, "\"text\":\"")
}

/// The digits right after `key` in `frame`.
fn number_after(frame: &str, key: &str) -> Option<u64> {
    let start = frame.find(key)? + key.len();
    let rest = &frame[start..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

// ---------------------------------------------------------------------------------------
// The client process.

struct Counters {
    received: AtomicU64,
    target: AtomicU64,
    recording: AtomicBool,
    done: Notify,
    latencies: Mutex<Vec<u32>>,
    /// With `DRAGON_BENCH_DEBUG`: each recorded latency with its event's `t0`.
    by_event: Option<Mutex<Vec<(u64, u32)>>>,
    /// Wall-clock µs of the last event received.
    last: AtomicU64,
    /// Events whose `list_id` was not the client's room.
    misrouted: AtomicU64,
    /// Events each client received since the last `arm`.
    per_client: Vec<AtomicU32>,
}

/// Every connected client, counting what they receive. Lives in the client process.
struct Clients {
    counters: Arc<Counters>,
    rooms: Vec<usize>,
    room_count: usize,
    expected: Vec<u64>,
}

impl Clients {
    /// Connects `n` clients to `urls` (the nodes of one system; `{room}` in a URL or in
    /// `setup` becomes the client's room). Each sends `setup` first (a subscribe) and waits
    /// for its reply, skipping any greeting.
    async fn connect(urls: &[String], n: usize, rooms: usize, setup: Option<String>) -> Clients {
        let debug = std::env::var_os("DRAGON_BENCH_DEBUG").is_some();
        let counters = Arc::new(Counters {
            received: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            recording: AtomicBool::new(false),
            done: Notify::new(),
            latencies: Mutex::new(Vec::new()),
            by_event: debug.then(Mutex::default),
            last: AtomicU64::new(0),
            misrouted: AtomicU64::new(0),
            per_client: (0..n).map(|_| AtomicU32::new(0)).collect(),
        });
        let mut pending = Vec::new();
        let mut room_list = Vec::with_capacity(n);
        for i in 0..n {
            let room = room_of(i, urls.len(), rooms);
            room_list.push(room);
            let url = for_room(&urls[i % urls.len()], room);
            let setup = setup.as_deref().map(|s| for_room(s, room));
            let counters = counters.clone();
            pending.push(tokio::spawn(async move {
                let (mut ws, _) =
                    tokio_tungstenite::connect_async_with_config(&url, Some(client_config()), true)
                        .await
                        .unwrap_or_else(|e| panic!("client {i}: connect {url}: {e}"));
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
                let mine = list_id(room) as u64;
                let mut shown = !(debug && i == 0);
                let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    let _ = ready_tx.send(());
                    while let Some(Ok(msg)) = ws.next().await {
                        let Message::Text(t) = msg else { continue };
                        let frame = t.as_str();
                        let Some(t0) = stamp(frame) else { continue };
                        let now = now_micros();
                        if !shown {
                            shown = true;
                            eprintln!("client 0's first event ({} bytes): {frame}", frame.len());
                        }
                        if number_after(frame, "\"list_id\":") != Some(mine) {
                            counters.misrouted.fetch_add(1, Ordering::Relaxed);
                        }
                        if counters.recording.load(Ordering::Relaxed) {
                            let micros = now.saturating_sub(t0) as u32;
                            counters.latencies.lock().expect("latencies").push(micros);
                            if let Some(by_event) = &counters.by_event {
                                by_event.lock().expect("by event").push((t0, micros));
                            }
                        }
                        counters.per_client[i].fetch_add(1, Ordering::Relaxed);
                        counters.last.fetch_max(now, Ordering::AcqRel);
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
        Clients {
            counters,
            rooms: room_list,
            room_count: rooms.max(1),
            expected: Vec::new(),
        }
    }

    /// Expects `events` events spread over the rooms; records latencies if `recording`.
    fn arm(&mut self, events: usize, recording: bool) {
        let per_room: Vec<u64> = (0..self.room_count)
            .map(|r| events_for(r, self.room_count, events))
            .collect();
        self.expected = self.rooms.iter().map(|&r| per_room[r]).collect();
        let c = &self.counters;
        c.target.store(u64::MAX, Ordering::Release);
        for n in &c.per_client {
            n.store(0, Ordering::Relaxed);
        }
        c.received.store(0, Ordering::Release);
        c.misrouted.store(0, Ordering::Release);
        c.last.store(0, Ordering::Release);
        c.latencies.lock().expect("latencies").clear();
        if let Some(by_event) = &c.by_event {
            by_event.lock().expect("by event").clear();
        }
        c.recording.store(recording, Ordering::Release);
        c.target
            .store(self.expected.iter().sum(), Ordering::Release);
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

    /// The `done` line: see [`Report`].
    async fn report(&self, limit: Duration) -> String {
        let complete = self.wait(limit).await;
        // Late duplicates would show as extras: give them a moment.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let c = &self.counters;
        let (mut short, mut missing, mut extra) = (0u64, 0u64, 0u64);
        for (got, &want) in c.per_client.iter().zip(&self.expected) {
            let got = u64::from(got.load(Ordering::Relaxed));
            if got < want {
                short += 1;
                missing += want - got;
            } else {
                extra += got - want;
            }
        }
        if let Some(by_event) = &c.by_event {
            print_by_event(std::mem::take(&mut *by_event.lock().expect("by event")));
        }
        let lat = std::mem::take(&mut *c.latencies.lock().expect("latencies"));
        let (p50, p99) = p50_p99_ms(lat);
        format!(
            "done {} {} {} {p50} {p99} {} {short} {missing} {extra} {}",
            c.received.load(Ordering::Acquire),
            c.target.load(Ordering::Acquire),
            complete as u8,
            c.last.load(Ordering::Acquire),
            c.misrouted.load(Ordering::Acquire),
        )
    }
}

/// Debugging a latency tail: each event's receipts, p50 and max (on stderr).
fn print_by_event(mut samples: Vec<(u64, u32)>) {
    samples.sort_unstable();
    let Some(&(start, _)) = samples.first() else {
        return;
    };
    for event in samples.chunk_by(|a, b| a.0 == b.0) {
        let mut lat: Vec<u32> = event.iter().map(|&(_, l)| l).collect();
        lat.sort_unstable();
        eprintln!(
            "event sent at +{:.3}s: {} receipts, p50 {:.1} ms, max {:.1} ms",
            (event[0].0 - start) as f64 / 1e6,
            lat.len(),
            f64::from(lat[lat.len() / 2]) / 1e3,
            f64::from(lat[lat.len() - 1]) / 1e3
        );
    }
}

/// The client process: `dragon-bench --fleet`. Connects the clients, then obeys lines on
/// stdin (`arm <events> <record 0|1>`, `wait <ms>`) and answers on stdout.
pub async fn fleet_main(urls: Vec<String>, n: usize, rooms: usize, setup: Option<String>) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut clients = Clients::connect(&urls, n, rooms, setup).await;
    println!("ready");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["arm", events, record] => {
                clients.arm(events.parse().unwrap_or(0), *record == "1");
                println!("armed");
            }
            ["wait", ms] => {
                let limit = Duration::from_millis(ms.parse().unwrap_or(0));
                println!("{}", clients.report(limit).await);
            }
            _ => break,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The server side.

/// What the clients got in one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Report {
    pub received: u64,
    pub expected: u64,
    pub complete: bool,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Wall-clock µs of the last event received.
    pub last_micros: u64,
    /// Clients that received fewer events than they should have, and how many they missed.
    pub short_clients: u64,
    pub missing: u64,
    /// Events received beyond a client's due (duplicates).
    pub extra: u64,
    /// Events a client received for another room.
    pub misrouted: u64,
}

impl Report {
    /// Every client got exactly what it should have.
    pub fn exact(&self) -> bool {
        self.complete && self.short_clients == 0 && self.extra == 0 && self.misrouted == 0
    }

    /// What went wrong, if anything.
    pub fn problem(&self) -> Option<String> {
        (!self.exact()).then(|| {
            format!(
                "{} of {} deliveries; {} clients short by {} events in all; {} extra; {} for the wrong room",
                self.received,
                self.expected,
                self.short_clients,
                self.missing,
                self.extra,
                self.misrouted
            )
        })
    }
}

/// CPU seconds (user + system) this process has used, to the microsecond (`getrusage`;
/// `/proc` counts 10 ms ticks).
fn own_cpu_seconds() -> f64 {
    // SAFETY: a zeroed rusage is valid; getrusage only fills it.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return f64::NAN;
        }
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        secs(usage.ru_utime) + secs(usage.ru_stime)
    }
}

/// How busy the server process and the client process were during a burst: CPU time over
/// wall time (1.0 is one core; the client process's is read from `/proc`, in 10 ms ticks).
#[derive(Debug, Clone, Copy)]
pub struct Busy {
    pub server: f64,
    pub clients: f64,
    /// CPU seconds the server process used.
    pub server_seconds: f64,
}

/// Which clients to start: `urls` (one per node, `{room}` replaced per client), how many,
/// over how many rooms, the first frame each sends, and the core to pin the process to.
pub struct FleetSpec<'a> {
    pub urls: &'a [String],
    pub clients: usize,
    pub rooms: usize,
    pub setup: Option<&'a str>,
    pub pin: Option<usize>,
}

/// The server process's handle on the client process (clients live in their own process,
/// with their own open-file limit, runtime and core).
pub struct Fleet {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Fleet {
    pub async fn connect(spec: FleetSpec<'_>) -> Fleet {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = tokio::process::Command::new(std::env::current_exe().expect("own path"));
        cmd.arg("--fleet")
            .arg(spec.urls.join(","))
            .arg("--fleet-clients")
            .arg(spec.clients.to_string())
            .arg("--fleet-rooms")
            .arg(spec.rooms.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(frame) = spec.setup {
            cmd.arg("--fleet-setup").arg(frame);
        }
        if let Some(cpu) = spec.pin {
            cmd.arg("--fleet-cpu").arg(cpu.to_string());
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

    async fn arm(&mut self, events: usize, record: bool) {
        let reply = self.say(format!("arm {events} {}", record as u8)).await;
        assert_eq!(reply, "armed", "client process said {reply:?}");
    }

    async fn wait(&mut self, limit: Duration) -> Report {
        let reply = self.say(format!("wait {}", limit.as_millis())).await;
        let p: Vec<&str> = reply.split_whitespace().collect();
        assert!(
            p.first() == Some(&"done") && p.len() == 11,
            "client process said {reply:?}"
        );
        let int = |i: usize| p[i].parse::<u64>().unwrap_or(0);
        Report {
            received: int(1),
            expected: int(2),
            complete: p[3] == "1",
            p50_ms: p[4].parse().unwrap_or(f64::NAN),
            p99_ms: p[5].parse().unwrap_or(f64::NAN),
            last_micros: int(6),
            short_clients: int(7),
            missing: int(8),
            extra: int(9),
            misrouted: int(10),
        }
    }

    /// CPU seconds used so far by this process and by the client process.
    fn cpu(&self) -> (f64, f64) {
        let clients = self.child.id().map(|pid| pid.to_string());
        (
            own_cpu_seconds(),
            clients
                .and_then(|pid| crate::likes::cpu_seconds(&pid))
                .unwrap_or(f64::NAN),
        )
    }

    /// A burst of `events` events as fast as the source takes them, spread over `rooms`;
    /// deliveries per second from the first send to the last receipt, and the report.
    pub async fn burst(
        &mut self,
        events: usize,
        rooms: usize,
        source: &mut impl Source,
    ) -> (f64, Report, Busy) {
        self.arm(events, false).await;
        let cpu = self.cpu();
        let start = Instant::now();
        let first = now_micros();
        for j in 0..events {
            source.send(j % rooms.max(1), now_micros()).await;
        }
        let report = self.wait(Duration::from_secs(120)).await;
        let (wall, after) = (start.elapsed().as_secs_f64(), self.cpu());
        let busy = Busy {
            server: (after.0 - cpu.0) / wall,
            clients: (after.1 - cpu.1) / wall,
            server_seconds: after.0 - cpu.0,
        };
        let secs = report.last_micros.saturating_sub(first).max(1) as f64 / 1e6;
        (report.received as f64 / secs, report, busy)
    }

    /// `events` events to room 0, one every `pace`; latencies in the report.
    pub async fn paced(
        &mut self,
        events: usize,
        pace: Duration,
        source: &mut impl Source,
    ) -> Report {
        self.arm(events, true).await;
        let mut next = tokio::time::Instant::now();
        for _ in 0..events {
            source.send(0, now_micros()).await;
            next += pace;
            tokio::time::sleep_until(next).await;
        }
        self.wait(Duration::from_secs(60)).await
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The load clients' WebSocket settings: a 16 KiB read buffer. tungstenite zero-fills its
/// read buffer's free space before every read (128 KiB by default), which made the clients'
/// process spend a quarter of its time in `memset` and set the pace of the 500-room bursts,
/// whichever server it was measuring. Frames here are a few hundred bytes; a one-route burst
/// (up to 200 frames per client) still takes a read or two. No Nagle delay on the clients'
/// few requests either (the servers set `TCP_NODELAY` too).
fn client_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024)
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
