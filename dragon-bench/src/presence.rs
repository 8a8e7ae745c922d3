//! Presence benchmark: `dragon-bench --presence`.
//!
//! 10,000 members (10 per key over 1,000 free-string keys of the `todo-item` route) join,
//! update and leave, each key watched by one more connection that never joins. Dragon runs
//! on one node with the memory broker, then on two nodes sharing Redis, where each key's
//! watcher is on one node and half its members on the other.
//!
//! Three processes, so no figure pays for another's work:
//! - the driver (`--presence`) starts one server process per broker, prints the table and,
//!   for Redis, deletes the keys the server process created;
//! - the server process (`--presence-node <broker>`) runs the Dragon nodes and measures its
//!   own resident memory; it pins itself to one core;
//! - the client process (`--presence-fleet <urls>`) holds every connection, sends the
//!   requests and times the events; it pins itself to another core.
//!
//! Phases, in order:
//! 1. join, paced (`--presence-join-rate` over all members): latency without load; the
//!    memory figure is taken after it;
//! 2. update, paced: every member updates its state `--presence-updates` times, the members
//!    together at `--presence-update-rate` per second (each well within its own limit of 10
//!    per second);
//! 3. update, burst: every member sends its updates back to back (at most 10: within the
//!    burst a connection may send, so none is coalesced);
//! 4. leave, paced; 5. join, burst; 6. leave, burst (every member at once: throughput).
//!
//! A member sends one request at a time (the next after the reply). Figures per phase:
//! - watcher changes/s: member changes (joins, updates, leaves) the watchers saw, per second
//!   from the phase's first request to the watchers' last change;
//! - frames/s to all: presence frames received by every connection (watchers and members),
//!   per second until the last one. A member that learns a change from its own reply gets no
//!   frame for it, and a view that reads its key again (after a lost diff) sends one frame
//!   with the difference: both lower this count;
//! - p50/p99: from sending a request to its key's watcher receiving the change;
//! - watchers in sync: watchers whose member list (built from their reply and events) is
//!   right at the end of the phase, given the answers the requests got (a failed request may
//!   or may not have taken effect: both are accepted);
//! - server KiB per member: the server process's resident memory after the paced join minus
//!   before it, per member (with Redis: both nodes, each holding a view of every key).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dragon_core::broker::{Broker, RedisBroker, RedisOptions};
use dragon_core::presence::Presence;
use dragon_core::protocol::Output;
use dragon_core::{Ctx, Dragon, Error, Limits, Router};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::clients::{now_micros, rss_kib};

/// The route the members join, as in the todo app (free string keys).
const ROUTE: &str = "todo-item";

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Run the presence benchmark instead of the fan-out one.
    #[arg(long)]
    pub presence: bool,
    /// Members in all (spread evenly over the keys).
    #[arg(long, default_value_t = 10_000)]
    pub presence_members: usize,
    /// Keys, each with one watcher that does not join.
    #[arg(long, default_value_t = 1_000)]
    pub presence_keys: usize,
    /// State updates per member in each update phase (at most 10: the burst a connection
    /// may send without being coalesced).
    #[arg(long, default_value_t = 5)]
    pub presence_updates: usize,
    /// Updates per second over all members in the paced update phase (each member then
    /// updates every `members / rate` seconds; the server allows 10 per second each).
    #[arg(long, default_value_t = 5_000)]
    pub presence_update_rate: u64,
    /// Joins (and leaves) per second over all members in the paced phases.
    #[arg(long, default_value_t = 2_000)]
    pub presence_join_rate: u64,
    /// Brokers: `memory` (one node) and/or `redis` (two nodes).
    #[arg(long, value_delimiter = ',', default_value = "memory,redis")]
    pub presence_brokers: Vec<String>,
    /// Capacity of each Redis node's pub/sub receive buffer (default: Dragon's, 1,024).
    #[arg(long)]
    pub presence_receive_buffer: Option<usize>,
    /// Do not pin the server and client processes to separate cores.
    #[arg(long)]
    pub presence_no_pin: bool,
    /// Internal: run the Dragon nodes on this broker.
    #[arg(long, hide = true)]
    pub presence_node: Option<String>,
    /// Internal: run the client process against these comma-separated URLs.
    #[arg(long, hide = true)]
    pub presence_fleet: Option<String>,
    /// Internal: the cores of the server process and of the client process.
    #[arg(long, hide = true)]
    pub presence_cpus: Option<String>,
}

impl Options {
    pub fn wanted(&self) -> bool {
        self.presence || self.presence_node.is_some() || self.presence_fleet.is_some()
    }

    /// Connections one process may hold (every member and watcher).
    pub fn connections(&self) -> usize {
        self.presence_members + self.presence_keys
    }

    /// The options a child process needs.
    fn forward(&self) -> Vec<String> {
        let mut v = vec![
            "--presence-members".to_owned(),
            self.presence_members.to_string(),
            "--presence-keys".to_owned(),
            self.presence_keys.to_string(),
            "--presence-updates".to_owned(),
            self.presence_updates.to_string(),
            "--presence-update-rate".to_owned(),
            self.presence_update_rate.to_string(),
            "--presence-join-rate".to_owned(),
            self.presence_join_rate.to_string(),
        ];
        if let Some(n) = self.presence_receive_buffer {
            v.push("--presence-receive-buffer".to_owned());
            v.push(n.to_string());
        }
        if let Some(cpus) = &self.presence_cpus {
            v.push("--presence-cpus".to_owned());
            v.push(cpus.clone());
        }
        v
    }

    /// (server core, client core), if the machine has two or more.
    fn cpus(&self) -> Option<(usize, usize)> {
        let v: Vec<usize> = self
            .presence_cpus
            .as_deref()?
            .split(',')
            .filter_map(|c| c.parse().ok())
            .collect();
        (v.len() == 2).then(|| (v[0], v[1]))
    }
}

/// Which process this is, by its options.
pub fn main(opts: &Options) {
    if let Some(urls) = &opts.presence_fleet {
        let workers = opts.cpus().and_then(|(_, client)| pin(client));
        runtime(workers).block_on(fleet_main(urls, opts));
    } else if let Some(broker) = &opts.presence_node {
        let workers = opts.cpus().and_then(|(server, _)| pin(server));
        runtime(workers).block_on(node_main(broker, opts));
    } else {
        driver(opts);
    }
}

fn runtime(workers: Option<usize>) -> tokio::runtime::Runtime {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        b.worker_threads(n);
    }
    b.enable_all().build().expect("runtime")
}

/// The cores this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read or fill it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins this thread (and so the runtime threads it starts) to `cpu`: then one worker.
fn pin(cpu: usize) -> Option<usize> {
    // SAFETY: as above; sched_setaffinity only reads the set.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    if !ok {
        eprintln!("warning: could not pin to core {cpu}");
    }
    ok.then_some(1)
}

// ---------------------------------------------------------------------------------------
// The driver: one server process per broker, one table.

fn driver(opts: &Options) {
    let mut opts = opts.clone();
    let cpus = allowed_cpus();
    if opts.presence_no_pin {
        opts.presence_cpus = None;
    } else if cpus.len() >= 2 {
        opts.presence_cpus = Some(format!("{},{}", cpus[0], cpus[1]));
    } else {
        eprintln!("note: fewer than 2 cores: server and clients are not pinned");
    }
    let per_member = opts.presence_update_rate as f64 / opts.presence_members.max(1) as f64;
    if per_member > 10.0 || opts.presence_updates > 10 {
        eprintln!(
            "warning: past a member's limit (10 updates per second, a burst of 10): updates \
             will be coalesced and the watchers will see fewer changes"
        );
    }
    println!(
        "Presence: {} members over {} keys of `{ROUTE}` (+1 watcher per key); {} updates per member in each update phase; paced joins and leaves {}/s, paced updates {}/s{}",
        opts.presence_members,
        opts.presence_keys,
        opts.presence_updates,
        opts.presence_join_rate,
        opts.presence_update_rate,
        match opts.cpus() {
            Some((s, c)) => format!("; server pinned to core {s}, clients to core {c}"),
            None => String::new(),
        }
    );
    println!();
    println!(
        "| mode | phase | watcher changes/s | frames/s to all | p50 ms | p99 ms | failed requests | watchers in sync | server KiB per member |\n|---|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for broker in &opts.presence_brokers {
        let mut child = std::process::Command::new(std::env::current_exe().expect("own path"))
            .arg("--presence-node")
            .arg(broker)
            .args(opts.forward())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("server process");
        let pid = child.id();
        let out = child.stdout.take().expect("stdout");
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if line.starts_with('|') {
                println!("{line}");
                let _ = std::io::stdout().flush();
            } else {
                eprintln!("{line}");
            }
        }
        let status = child.wait().expect("server process");
        if !status.success() {
            eprintln!("warning: the {broker} server process ended with {status}");
        }
        if broker == "redis" {
            // The server process is gone (its lease task too): nothing recreates its keys.
            let prefix = format!("dragon-bench-{pid}:");
            match redis_cleanup(&[format!("{prefix}*"), format!("{{{prefix}*")]) {
                Ok(n) => eprintln!("deleted {n} Redis keys of prefix {prefix}"),
                Err(e) => eprintln!("warning: could not delete Redis keys of {prefix}: {e}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The server process.

/// A custom router serving only presence on `todo-item`, any key allowed.
struct PresenceRoute {
    presence: Presence,
}

#[async_trait::async_trait]
impl Router for PresenceRoute {
    fn name(&self) -> &str {
        ROUTE
    }

    async fn call(&self, ctx: &Ctx, verb: &str, args: Value) -> Result<Output, Error> {
        if Presence::handles(verb) {
            return self
                .presence
                .call(ctx, ROUTE, verb, args, |_| async { Ok(()) })
                .await;
        }
        Err(Error::UnknownVerb {
            route: ROUTE.to_owned(),
            verb: verb.to_owned(),
        })
    }
}

type Stop = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
);

async fn node(broker: Arc<dyn Broker>) -> (String, Stop) {
    let dragon = Dragon::builder()
        .broker(broker)
        .limits(Limits::default())
        .route(PresenceRoute {
            presence: Presence::new(),
        })
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = dragon.router();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = dragon
            .serve_until(listener, app, async move {
                let _ = stop_rx.await;
            })
            .await;
    });
    (format!("ws://{addr}/ws"), (stop_tx, server))
}

/// What the client process reports for one phase.
struct PhaseResult {
    changes: u64,
    target: u64,
    complete: bool,
    secs: f64,
    deliveries: u64,
    deliveries_secs: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    /// Watchers whose member list was right at the end of the phase.
    in_sync: u64,
}

impl PhaseResult {
    fn parse(line: &str) -> PhaseResult {
        let p: Vec<&str> = line.split_whitespace().collect();
        assert!(
            p.first() == Some(&"done") && p.len() == 11,
            "client process said {line:?}"
        );
        let f = |i: usize| p[i].parse::<f64>().unwrap_or(f64::NAN);
        let u = |i: usize| p[i].parse::<u64>().unwrap_or(0);
        PhaseResult {
            changes: u(1),
            target: u(2),
            complete: p[3] == "1",
            secs: f(4),
            deliveries: u(5),
            deliveries_secs: f(6),
            p50_ms: f(7),
            p99_ms: f(8),
            errors: u(9),
            in_sync: u(10),
        }
    }
}

/// The server process's handle on the client process.
struct Fleet {
    keys: u64,
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Fleet {
    async fn start(urls: &[String], opts: &Options) -> Fleet {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(std::env::current_exe().expect("own path"))
            .arg("--presence-fleet")
            .arg(urls.join(","))
            .args(opts.forward())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("client process");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut fleet = Fleet {
            keys: opts.presence_keys as u64,
            child,
            stdin,
            stdout,
        };
        let ready = fleet.read().await;
        assert_eq!(ready, "ready", "client process failed to connect");
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

    async fn phase(&mut self, command: String) -> PhaseResult {
        let keys = self.keys;
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .expect("client process");
        let result = PhaseResult::parse(&self.read().await);
        eprintln!(
            "{command}: watchers saw {} of {} changes in {:.2}s; {} frames to all in {:.2}s",
            result.changes, result.target, result.secs, result.deliveries, result.deliveries_secs
        );
        if !result.complete {
            eprintln!(
                "note: {command}: watchers saw {} of {} changes (fewer: changes folded into the \
                 difference a re-read sends, or not made)",
                result.changes, result.target
            );
        }
        if result.in_sync < keys {
            eprintln!(
                "warning: {command}: {} of {keys} watchers have a wrong member list",
                keys - result.in_sync
            );
        }
        if result.errors > 0 {
            eprintln!("warning: {command}: {} requests failed", result.errors);
        }
        result
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Lag counters of the Redis nodes (receive-buffer overflows make every node read all its
/// keys again), printed after each phase.
fn redis_stats(redis: &[Arc<RedisBroker>]) -> String {
    redis
        .iter()
        .map(|b| {
            let s = b.stats();
            format!("lagged {} replayed {}", s.lagged, s.replayed)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

async fn node_main(broker: &str, opts: &Options) {
    // Dragon's warnings (a lagging receive buffer, failed reads) go to stderr.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let mut redis: Vec<Arc<RedisBroker>> = Vec::new();
    let brokers: Vec<Arc<dyn Broker>> = if broker == "redis" {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let mut options = RedisOptions {
            key_prefix: format!("dragon-bench-{}:", std::process::id()),
            ..RedisOptions::default()
        };
        if let Some(n) = opts.presence_receive_buffer {
            options.receive_buffer = n;
        }
        for _ in 0..2 {
            let b = RedisBroker::connect(&url, options.clone())
                .await
                .unwrap_or_else(|e| panic!("Redis at {url}: {e}"));
            redis.push(Arc::new(b));
        }
        redis.iter().map(|b| b.clone() as Arc<dyn Broker>).collect()
    } else {
        crate::brokers::make(broker).await
    };
    let mut urls = Vec::new();
    let mut stops = Vec::new();
    for b in &brokers {
        let (url, stop) = node(b.clone()).await;
        urls.push(url);
        stops.push(stop);
    }
    let mode = if broker == "redis" {
        "2 nodes, redis"
    } else {
        "1 node, memory"
    };
    let started = Instant::now();
    let bare = rss_kib();
    let mut fleet = Fleet::start(&urls, opts).await;
    let connected = rss_kib();
    eprintln!(
        "{mode}: {} connections up (watchers watching) in {:.1}s; server RSS {} MiB, {:.1} KiB per connection",
        opts.connections(),
        started.elapsed().as_secs_f64(),
        connected / 1024,
        (connected as f64 - bare as f64) / opts.connections().max(1) as f64
    );
    let members = opts.presence_members as f64;
    let rate = opts.presence_join_rate;
    let row = |phase: &str, r: &PhaseResult, kib: Option<f64>| {
        if !redis.is_empty() {
            eprintln!("{mode}, after {phase}: {}", redis_stats(&redis));
        }
        let per_sec = |n: u64, secs: f64| {
            if secs > 0.0 {
                format!("{:.0}", n as f64 / secs)
            } else {
                "-".to_owned()
            }
        };
        println!(
            "| {mode} | {phase} | {} | {} | {:.2} | {:.2} | {} | {}/{} | {} |",
            per_sec(r.changes, r.secs),
            per_sec(r.deliveries, r.deliveries_secs),
            r.p50_ms,
            r.p99_ms,
            r.errors,
            r.in_sync,
            opts.presence_keys,
            kib.map(|k| format!("{k:.2}")).unwrap_or_default()
        );
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib();
    let r = fleet.phase(format!("join {rate}")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    let kib = (after as f64 - before as f64) / members;
    row(&format!("join, paced {rate}/s"), &r, Some(kib));
    let (n, u) = (opts.presence_updates, opts.presence_update_rate);
    let r = fleet.phase(format!("update {n} {u}")).await;
    row(&format!("update, paced {u}/s ({n} each)"), &r, None);
    let r = fleet.phase(format!("update {n} 0")).await;
    row(&format!("update, burst ({n} each)"), &r, None);
    let r = fleet.phase(format!("leave {rate}")).await;
    row(&format!("leave, paced {rate}/s"), &r, None);
    let r = fleet.phase("join 0".to_owned()).await;
    row("join, burst", &r, None);
    let r = fleet.phase("leave 0".to_owned()).await;
    row("leave, burst", &r, None);
    drop(fleet);
    for (stop, server) in stops {
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    }
}

// ---------------------------------------------------------------------------------------
// The client process.

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;
type Stream = SplitStream<WebSocketStream<MaybeTlsStream<TcpStream>>>;

/// What the connections saw in the current phase.
#[derive(Default)]
struct Tally {
    /// Member changes (joins and leaves) the watchers are to see.
    target: AtomicU64,
    /// Member changes the watchers saw.
    changes: AtomicU64,
    /// Presence frames every connection received.
    frames: AtomicU64,
    /// When the watchers' changes reached the target (µs of the wall clock).
    reached_at: AtomicU64,
    /// The last presence frame anywhere.
    last_at: AtomicU64,
    /// Request sent -> watcher received, µs.
    latencies: Mutex<Vec<u32>>,
    /// Connection id -> when its leave was sent (leaves carry the last state, not a time).
    left_at: Mutex<HashMap<String, u64>>,
}

impl Tally {
    fn arm(&self, target: u64) {
        self.changes.store(0, Ordering::SeqCst);
        self.frames.store(0, Ordering::SeqCst);
        self.reached_at.store(0, Ordering::SeqCst);
        self.last_at.store(0, Ordering::SeqCst);
        self.latencies.lock().expect("latencies").clear();
        self.left_at.lock().expect("left_at").clear();
        self.target.store(target, Ordering::SeqCst);
    }

    /// A watcher's event: applied to its view; latency of each change, and the count.
    fn watched(&self, frame: &str, view: &View) {
        let now = now_micros();
        let Ok(v) = serde_json::from_str::<Value>(frame) else {
            return;
        };
        let mut n = 0;
        let mut lat = Vec::new();
        let mut view = view.lock().expect("view");
        let conn_of = |m: &Value| m.get("conn").and_then(Value::as_str).map(str::to_owned);
        if let Some(leaves) = v.get("leaves").and_then(Value::as_array) {
            let left_at = self.left_at.lock().expect("left_at");
            for m in leaves {
                n += 1;
                let Some(conn) = conn_of(m) else { continue };
                if let Some(t) = left_at.get(&conn) {
                    lat.push(now.saturating_sub(*t) as u32);
                }
                view.remove(&conn);
            }
        }
        if let Some(joins) = v.get("joins").and_then(Value::as_array) {
            for m in joins {
                n += 1;
                if let Some(t) = m.pointer("/state/t").and_then(Value::as_u64) {
                    lat.push(now.saturating_sub(t) as u32);
                }
                let version = m.pointer("/state/v").and_then(Value::as_u64).unwrap_or(0);
                if let Some(conn) = conn_of(m) {
                    view.insert(conn, version);
                }
            }
        }
        drop(view);
        self.latencies.lock().expect("latencies").extend(lat);
        let seen = self.changes.fetch_add(n, Ordering::SeqCst) + n;
        let target = self.target.load(Ordering::SeqCst);
        if seen >= target && seen - n < target {
            self.reached_at.store(now, Ordering::SeqCst);
        }
    }

    fn framed(&self) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.last_at.fetch_max(now_micros(), Ordering::Relaxed);
    }
}

/// What a watcher believes its key's members are: connection id -> state version (`v`).
type View = Arc<Mutex<HashMap<String, u64>>>;

/// A reply's request id, and `Err` with the frame of a failure.
type Replied = (u64, Result<(), String>);

/// How long a request may wait for its reply before it counts as failed.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection: its sink, and the replies its reader hands over.
struct Client {
    conn: String,
    sink: Sink,
    replies: mpsc::UnboundedReceiver<Replied>,
    next_id: u64,
}

impl Client {
    /// Connects; a watcher (`view` given) keeps its key's members in the view.
    async fn connect(url: &str, tally: Arc<Tally>, view: Option<View>) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        let (sink, mut stream) = ws.split();
        let conn = loop {
            match stream.next().await {
                Some(Ok(Message::Text(t))) if t.as_str().contains("\"hello\"") => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("hello");
                    break v["data"]["conn"].as_str().expect("conn id").to_owned();
                }
                Some(Ok(_)) => continue,
                other => panic!("no hello: {other:?}"),
            }
        };
        let (tx, replies) = mpsc::unbounded_channel();
        tokio::spawn(read_loop(stream, tally, view, tx));
        Client {
            conn,
            sink,
            replies,
            next_id: 0,
        }
    }

    /// Sends one request (args built just before sending) and waits for its reply.
    async fn request(&mut self, verb: &str, args: Value) -> Result<(), String> {
        self.next_id += 1;
        let frame = json!({"id": self.next_id, "route": ROUTE, "verb": verb, "args": args});
        self.sink
            .send(Message::Text(frame.to_string().into()))
            .await
            .map_err(|e| e.to_string())?;
        let id = self.next_id;
        let wait = async {
            loop {
                match self.replies.recv().await {
                    // A reply that came after its request timed out.
                    Some((got, _)) if got != id && got != 0 => continue,
                    Some((_, result)) => return result,
                    None => return Err("connection closed".to_owned()),
                }
            }
        };
        tokio::time::timeout(REPLY_TIMEOUT, wait)
            .await
            .unwrap_or_else(|_| Err(format!("{verb}: no reply within {REPLY_TIMEOUT:?}")))
    }
}

async fn read_loop(
    mut stream: Stream,
    tally: Arc<Tally>,
    view: Option<View>,
    replies: mpsc::UnboundedSender<Replied>,
) {
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(t) = msg else { continue };
        let t = t.as_str();
        if t.starts_with("{\"event\":\"presence\"") {
            if let Some(view) = &view {
                tally.watched(t, view);
            }
            tally.framed();
        } else if let Some(rest) = t.strip_prefix("{\"id\":") {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let id = rest[..digits].parse().unwrap_or(0);
            let ok = t.contains("\"ok\":true");
            let _ = replies.send((id, if ok { Ok(()) } else { Err(t.to_owned()) }));
        }
    }
    let _ = replies.send((0, Err("connection closed".to_owned())));
}

fn key_name(k: usize) -> String {
    format!("room-{k}")
}

/// A member's state: a name, a flag, and when it was sent (µs), for the watcher's latency.
fn state(m: usize, version: usize) -> Value {
    json!({"name": format!("Member {m}"), "editing": version % 2 == 1, "v": version, "t": now_micros()})
}

#[derive(Clone, Copy)]
enum Verb {
    Join,
    /// `n` updates per member, at `rate` per second over all members (0: back to back).
    Update {
        n: usize,
        rate: f64,
    },
    Leave,
}

struct Clients {
    tally: Arc<Tally>,
    members: Vec<Client>,
    keys: usize,
    _watchers: Vec<Client>,
    /// Per key: its watcher's view.
    views: Vec<View>,
    /// Per member: what its key's watcher may show.
    expect: Vec<Expect>,
}

/// The version of a leave in a member's outcomes.
const LEFT: u64 = u64::MAX;

/// What a watcher may show for one member, from the answers its requests got. A failed
/// request may or may not have taken effect, so it widens what is right.
#[derive(Debug, Clone, Default)]
struct Expect {
    /// `Some(true)`: a member; `Some(false)`: not one; `None`: either (a request failed).
    present: Option<bool>,
    /// The state versions its key's watcher may show.
    versions: Vec<u64>,
}

impl Expect {
    fn absent() -> Self {
        Expect {
            present: Some(false),
            versions: Vec::new(),
        }
    }

    /// A request's outcome: a join (`version` 0) or update, or a leave ([`LEFT`]).
    fn answered(&mut self, version: u64, ok: bool) {
        match (version, ok) {
            (LEFT, true) => *self = Expect::absent(),
            (LEFT, false) => self.present = None,
            (_, true) => {
                self.present = Some(true);
                self.versions = vec![version];
            }
            (_, false) => {
                if self.present == Some(false) {
                    self.present = None;
                }
                self.versions.push(version);
            }
        }
    }
}

impl Clients {
    /// Member `m` is on key `m % keys`; with two nodes, a key's watcher is on node
    /// `key % 2` and its members alternate between the nodes, so half are on the other.
    async fn connect(urls: &[String], opts: &Options) -> Clients {
        let tally = Arc::new(Tally::default());
        let keys = opts.presence_keys.max(1);
        let nodes = urls.len();
        let views: Vec<View> = (0..keys).map(|_| View::default()).collect();
        let mut watchers = Vec::new();
        let mut pending = Vec::new();
        for (k, view) in views.iter().enumerate() {
            let url = urls[k % nodes].clone();
            let tally = tally.clone();
            let view = Some(view.clone());
            pending.push(tokio::spawn(async move {
                let mut c = Client::connect(&url, tally, view).await;
                c.request("presence_watch", json!({"key": key_name(k)}))
                    .await
                    .expect("watch");
                c
            }));
            if pending.len() >= 256 {
                for p in pending.drain(..) {
                    watchers.push(p.await.expect("watcher"));
                }
            }
        }
        for p in pending.drain(..) {
            watchers.push(p.await.expect("watcher"));
        }
        let mut members = Vec::new();
        for m in 0..opts.presence_members {
            let k = m % keys;
            let url = urls[(k + m / keys) % nodes].clone();
            let tally = tally.clone();
            pending.push(tokio::spawn(async move {
                Client::connect(&url, tally, None).await
            }));
            if pending.len() >= 256 {
                for p in pending.drain(..) {
                    members.push(p.await.expect("member"));
                }
            }
        }
        for p in pending {
            members.push(p.await.expect("member"));
        }
        Clients {
            tally,
            expect: vec![Expect::absent(); members.len()],
            members,
            keys,
            _watchers: watchers,
            views,
        }
    }

    /// How many watchers show exactly what their key's members may be, given the answers
    /// the members' requests got (see [`Expect`]).
    fn in_sync(&self) -> usize {
        let mut of_key: Vec<Vec<usize>> = vec![Vec::new(); self.keys];
        for m in 0..self.members.len() {
            of_key[m % self.keys].push(m);
        }
        self.views
            .iter()
            .zip(&of_key)
            .filter(|(view, members)| {
                let view = view.lock().expect("view");
                let known = members
                    .iter()
                    .filter(|&&m| view.contains_key(&self.members[m].conn))
                    .count();
                known == view.len()
                    && members.iter().all(|&m| {
                        let e = &self.expect[m];
                        match (view.get(&self.members[m].conn), e.present) {
                            (Some(_), Some(false)) | (None, Some(true)) => false,
                            (Some(v), _) => e.versions.contains(v),
                            (None, _) => true,
                        }
                    })
            })
            .count()
    }

    /// Runs one phase: every member sends its requests (at `rate` per second over all
    /// members for joins and leaves, 0 for all at once); the result line for the server.
    async fn phase(&mut self, verb: Verb, rate: f64) -> String {
        let n = self.members.len();
        let target = match verb {
            Verb::Update { n: updates, .. } => (n * updates) as u64,
            _ => n as u64,
        };
        let tally = self.tally.clone();
        tally.arm(target);
        let start = tokio::time::Instant::now();
        let start_us = now_micros();
        let mut tasks = Vec::with_capacity(n);
        for (m, c) in self.members.drain(..).enumerate() {
            let key = key_name(m % self.keys);
            let tally = tally.clone();
            let delay = if rate > 0.0 {
                Duration::from_secs_f64(m as f64 / rate)
            } else {
                Duration::ZERO
            };
            let at = start + delay;
            tasks.push(tokio::spawn(member(c, m, key, verb, at, n, tally)));
        }
        let mut errors = 0u64;
        for (m, t) in tasks.into_iter().enumerate() {
            let (c, outcomes) = t.await.expect("member task");
            for (version, result) in outcomes {
                if let Err(e) = &result {
                    if errors < 3 {
                        eprintln!("request failed: {e}");
                    }
                    errors += 1;
                }
                self.expect[m].answered(version, result.is_ok());
            }
            self.members.push(c);
        }
        // Every reply is in; wait for the watchers (while they make progress) to see every
        // change or to be in sync (a re-read folds changes into one), then for the members'
        // last frames.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut progress = (tally.changes.load(Ordering::SeqCst), Instant::now());
        let mut synced_at = 0;
        let mut checked = Instant::now();
        loop {
            let changes = tally.changes.load(Ordering::SeqCst);
            if changes >= target || Instant::now() > deadline {
                break;
            }
            if checked.elapsed() > Duration::from_millis(50) {
                checked = Instant::now();
                if self.in_sync() == self.keys {
                    synced_at = now_micros();
                    break;
                }
            }
            if changes != progress.0 {
                progress = (changes, Instant::now());
            } else if progress.1.elapsed() > Duration::from_secs(5) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        loop {
            let frames = tally.frames.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            if tally.frames.load(Ordering::SeqCst) == frames || Instant::now() > deadline {
                break;
            }
        }
        let changes = tally.changes.load(Ordering::SeqCst);
        let complete = changes >= target;
        let in_sync = self.in_sync();
        let last = tally.last_at.load(Ordering::SeqCst);
        let end = match (tally.reached_at.load(Ordering::SeqCst), synced_at) {
            (0, 0) => last,
            (0, t) | (t, _) => t,
        };
        let secs = end.saturating_sub(start_us) as f64 / 1e6;
        let deliveries_secs = last.saturating_sub(start_us) as f64 / 1e6;
        let mut lat = std::mem::take(&mut *tally.latencies.lock().expect("latencies"));
        lat.sort_unstable();
        let pct = |p: f64| {
            if lat.is_empty() {
                f64::NAN
            } else {
                lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1000.0
            }
        };
        format!(
            "done {changes} {target} {} {secs} {} {deliveries_secs} {} {} {errors} {in_sync}",
            complete as u8,
            tally.frames.load(Ordering::SeqCst),
            pct(0.50),
            pct(0.99),
        )
    }
}

/// One member's part of a phase, from `at`: its requests (one at a time), and their
/// outcomes (the state version, or [`LEFT`]).
async fn member(
    mut c: Client,
    m: usize,
    key: String,
    verb: Verb,
    at: tokio::time::Instant,
    members: usize,
    tally: Arc<Tally>,
) -> (Client, Vec<(u64, Result<(), String>)>) {
    let mut outcomes = Vec::new();
    tokio::time::sleep_until(at).await;
    match verb {
        Verb::Join => {
            let args = json!({"key": key, "state": state(m, 0)});
            outcomes.push((0, c.request("presence_join", args).await));
        }
        Verb::Update { n, rate } => {
            // Every member updates once per round, so each waits `members / rate` between.
            let every = if rate > 0.0 {
                Duration::from_secs_f64(members as f64 / rate)
            } else {
                Duration::ZERO
            };
            for u in 1..=n {
                // A late reply delays the next update: never more than one in flight.
                tokio::time::sleep_until(at + every * (u as u32 - 1)).await;
                let args = json!({"key": key, "state": state(m, u)});
                outcomes.push((u as u64, c.request("presence_update", args).await));
            }
        }
        Verb::Leave => {
            let now = now_micros();
            let left_at = &tally.left_at;
            left_at.lock().expect("left_at").insert(c.conn.clone(), now);
            let args = json!({"key": key});
            outcomes.push((LEFT, c.request("presence_leave", args).await));
        }
    }
    (c, outcomes)
}

/// The client process: connects every watcher (each watches its key) and member, then
/// runs the phases it is told on stdin (`join <rate>`, `update <n> <rate>`,
/// `leave <rate>`), answering each with a `done ...` line.
async fn fleet_main(urls: &str, opts: &Options) {
    use tokio::io::AsyncBufReadExt;
    let urls: Vec<String> = urls.split(',').map(str::to_owned).collect();
    let mut fleet = Clients::connect(&urls, opts).await;
    println!("ready");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| {
            parts
                .get(i)
                .and_then(|x| x.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let result = match parts.first() {
            Some(&"join") => fleet.phase(Verb::Join, num(1)).await,
            Some(&"leave") => fleet.phase(Verb::Leave, num(1)).await,
            Some(&"update") => {
                let verb = Verb::Update {
                    n: num(1) as usize,
                    rate: num(2),
                };
                fleet.phase(verb, num(2)).await
            }
            _ => break,
        };
        println!("{result}");
    }
}

// ---------------------------------------------------------------------------------------
// Deleting the benchmark's Redis keys (a few RESP commands on a plain socket).

enum Resp {
    Text(String),
    Int(i64),
    Array(Vec<Resp>),
}

fn resp_send(w: &mut impl Write, args: &[&str]) -> std::io::Result<()> {
    let mut buf = format!("*{}\r\n", args.len());
    for a in args {
        buf.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    w.write_all(buf.as_bytes())
}

fn resp_read(r: &mut impl BufRead) -> std::io::Result<Resp> {
    let bad = |m: String| std::io::Error::other(m);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" => Ok(Resp::Text(rest.to_owned())),
        "-" => Err(bad(format!("Redis: {rest}"))),
        ":" => Ok(Resp::Int(rest.parse().map_err(|_| bad(line.to_owned()))?)),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| bad(line.to_owned()))?;
            if len < 0 {
                return Ok(Resp::Text(String::new()));
            }
            let mut data = vec![0u8; len as usize + 2];
            r.read_exact(&mut data)?;
            data.truncate(len as usize);
            Ok(Resp::Text(String::from_utf8_lossy(&data).into_owned()))
        }
        "*" => {
            let len: i64 = rest.parse().map_err(|_| bad(line.to_owned()))?;
            let mut items = Vec::new();
            for _ in 0..len.max(0) {
                items.push(resp_read(r)?);
            }
            Ok(Resp::Array(items))
        }
        _ => Err(bad(format!("unexpected reply {line:?}"))),
    }
}

/// Deletes every key matching one of `patterns`; how many went.
fn redis_cleanup(patterns: &[String]) -> std::io::Result<i64> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let rest = url.split("://").nth(1).unwrap_or(&url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
    let stream = std::net::TcpStream::connect(hostport)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut w = stream.try_clone()?;
    let mut r = std::io::BufReader::new(stream);
    let mut deleted = 0;
    for pattern in patterns {
        let mut cursor = "0".to_owned();
        loop {
            resp_send(
                &mut w,
                &["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"],
            )?;
            let Resp::Array(mut reply) = resp_read(&mut r)? else {
                return Err(std::io::Error::other("SCAN answered no array"));
            };
            let keys: Vec<String> = match reply.pop() {
                Some(Resp::Array(keys)) => keys
                    .into_iter()
                    .filter_map(|k| match k {
                        Resp::Text(k) => Some(k),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            if !keys.is_empty() {
                let mut cmd = vec!["DEL"];
                cmd.extend(keys.iter().map(String::as_str));
                resp_send(&mut w, &cmd)?;
                if let Resp::Int(n) = resp_read(&mut r)? {
                    deleted += n;
                }
            }
            cursor = match reply.pop() {
                Some(Resp::Text(c)) => c,
                _ => "0".to_owned(),
            };
            if cursor == "0" {
                break;
            }
        }
    }
    Ok(deleted)
}
