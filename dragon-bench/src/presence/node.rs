//! The server process: Dragon nodes with presence, and the handle on the client process.

use super::*;

/// A custom router serving only presence on `todo-item`, any key allowed.
pub(super) struct PresenceRoute {
    pub(super) presence: Presence,
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

pub(super) async fn node(broker: Arc<dyn Broker>) -> (String, TestServer) {
    let dragon = Dragon::builder()
        .broker(broker)
        .limits(Limits::default())
        .route(PresenceRoute {
            presence: Presence::new(),
        })
        .build();
    let server = TestServer::start(&dragon, dragon.router())
        .await
        .expect("serve");
    (server.ws_url(), server)
}

/// What the client process reports for one phase.
pub(super) struct PhaseResult {
    pub(super) changes: u64,
    pub(super) target: u64,
    pub(super) complete: bool,
    pub(super) secs: f64,
    pub(super) deliveries: u64,
    pub(super) deliveries_secs: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) errors: u64,
    /// Watchers whose member list was right at the end of the phase.
    pub(super) in_sync: u64,
}

impl PhaseResult {
    pub(super) fn parse(line: &str) -> PhaseResult {
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
pub(super) struct Fleet {
    pub(super) keys: u64,
    pub(super) child: tokio::process::Child,
    pub(super) stdin: tokio::process::ChildStdin,
    pub(super) stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Fleet {
    pub(super) async fn start(urls: &[String], opts: &Options) -> Fleet {
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

    pub(super) async fn read(&mut self) -> String {
        self.stdout
            .next_line()
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    pub(super) async fn phase(&mut self, command: String) -> PhaseResult {
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
pub(super) fn redis_stats(redis: &[Arc<RedisBroker>]) -> String {
    redis
        .iter()
        .map(|b| {
            let s = b.stats();
            format!("lagged {} replayed {}", s.lagged, s.replayed)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub(super) async fn node_main(broker: &str, opts: &Options) {
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
    for server in stops {
        server.stop().await;
    }
}

// ---------------------------------------------------------------------------------------
// The client process.

pub(super) type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;
pub(super) type Stream = SplitStream<WebSocketStream<MaybeTlsStream<TcpStream>>>;
