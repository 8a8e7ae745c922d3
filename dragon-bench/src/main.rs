//! Fan-out benchmark: Dragon against a minimal tokio-tungstenite broadcaster, in one run.
//!
//! For each client count, both systems get the same clients (real WebSockets on loopback)
//! and the same events:
//! - throughput: a burst of events as fast as they can be committed; deliveries per second
//!   until every client has every event;
//! - latency: events paced to a fixed delivery rate; the time from commit (Dragon) or send
//!   (reference) to receipt by each client, p50 and p99.
//!
//! Dragon is measured twice: with changes entering as the derive hands them over after
//! commit (Dragon's own cost), and with real SQLite inserts through the hooks (the path a
//! user's write takes, where one SQLite connection bounds the event rate).
//!
//! `cargo run --release -p dragon-bench` (add `-- --help` for options). Figures are printed
//! as a table with Dragon's throughput as a ratio of the reference measured in the same run.
//!
//! `-- --presence` runs the presence benchmark instead (see `presence.rs`), `-- --writes`
//! the write benchmark (see `writes.rs`), `-- --likes` the live blog's likes (see `likes/`).

mod brokers;
mod clients;
mod likes;
mod presence;
mod reference;
mod subject;
mod writes;

use std::time::Duration;

use clap::Parser;

/// What one system achieved for one client count.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub deliveries_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Parser, Debug)]
#[command(about = "Dragon fan-out benchmark against a minimal broadcaster")]
pub struct Args {
    /// Client counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub clients: Vec<usize>,
    /// Deliveries per client in the throughput burst is `burst_deliveries / clients` (min 20).
    #[arg(long, default_value_t = 400_000)]
    pub burst_deliveries: usize,
    /// Paced events for the latency phase.
    #[arg(long, default_value_t = 50)]
    pub paced_events: usize,
    /// Deliveries per second in the latency phase (events are spaced to give this rate).
    #[arg(long, default_value_t = 50_000)]
    pub paced_rate: u64,
    /// Internal: run as the client process for these comma-separated URLs.
    #[arg(long, hide = true)]
    pub fleet: Option<String>,
    /// Internal: the client process's first frame per client.
    #[arg(long, hide = true)]
    pub setup: Option<String>,
    /// Measure server memory per connection instead (each system in a fresh process).
    #[arg(long)]
    pub memory: bool,
    /// Internal: report this system's memory (`reference` or `dragon`) and exit.
    #[arg(long, hide = true)]
    pub rss_of: Option<String>,
    /// Brokers to measure Dragon on: `memory` (one node) and/or `redis` (two nodes).
    #[arg(long, value_delimiter = ',', default_value = "memory")]
    pub broker: Vec<String>,
    /// The presence benchmark (`--presence`) and its options.
    #[command(flatten)]
    pub presence: presence::Options,
    /// The write benchmark (`--writes`) and its options.
    #[command(flatten)]
    pub writes: writes::Options,
    /// The likes benchmark (`--likes`) and its options.
    #[command(flatten)]
    pub likes: likes::Options,
}

fn raise_fd_limit(needed: u64) {
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < needed {
            let target = libc::rlimit {
                rlim_cur: needed.max(lim.rlim_cur),
                rlim_max: needed.max(lim.rlim_max),
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &target) != 0 {
                eprintln!(
                    "warning: could not raise the open-file limit to {needed}; large client counts may fail"
                );
            }
        }
    }
}

fn main() {
    let args = Args::parse();
    if args.presence.wanted() {
        raise_fd_limit(args.presence.connections() as u64 + 1024);
        presence::main(&args.presence);
        return;
    }
    if args.writes.writes {
        writes::main(&args.writes);
        return;
    }
    if args.likes.likes {
        raise_fd_limit(args.likes.connections() as u64 + 1024);
        likes::main(&args.likes);
        return;
    }
    let max_clients = args.clients.iter().copied().max().unwrap_or(0) as u64;
    raise_fd_limit(max_clients + 1024);
    if let Some(urls) = &args.fleet {
        let urls: Vec<String> = urls.split(',').map(str::to_owned).collect();
        let n = args.clients.first().copied().unwrap_or(0);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(clients::fleet_main(urls, n, args.setup.clone()));
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(system) = &args.rss_of {
        let n = args.clients.first().copied().unwrap_or(0);
        let (before, after) = rt.block_on(async {
            match system.as_str() {
                "reference" => reference::rss(n).await,
                _ => subject::rss(n).await,
            }
        });
        println!("rss {before} {after}");
        return;
    }
    if args.memory {
        memory_table(&args.clients);
        return;
    }
    rt.block_on(async {
        println!(
            "| clients | system | deliveries/s | vs reference | p50 ms | p99 ms |\n|---:|---|---:|---:|---:|---:|"
        );
        for &n in &args.clients {
            let events = (args.burst_deliveries / n.max(1)).max(20);
            let plan = clients::Plan {
                clients: n,
                burst_events: events,
                paced_events: args.paced_events,
                pace: Duration::from_micros(n as u64 * 1_000_000 / args.paced_rate.max(1)),
            };
            let reference = reference::run(&plan).await;
            row(n, "reference (tokio-tungstenite broadcast)", &reference, 1.0);
            for broker in &args.broker {
                for (mode, label) in [
                    (subject::Mode::AfterCommit, "published after commit"),
                    (subject::Mode::Insert, "SQLite insert + hooks"),
                ] {
                    let dragon = subject::run(&plan, broker, mode).await;
                    let ratio = dragon.deliveries_per_sec / reference.deliveries_per_sec;
                    let nodes = if broker == "redis" { "2 nodes, redis" } else { "1 node, memory" };
                    row(n, &format!("dragon ({nodes}), {label}"), &dragon, ratio);
                }
            }
        }
    });
}

/// Server memory per connection, each system measured in a process of its own (so neither
/// reuses memory the other freed).
fn memory_table(clients: &[usize]) {
    println!(
        "| clients | system | server KiB per connection | vs reference |\n|---:|---|---:|---:|"
    );
    for &n in clients {
        let per_conn = |system: &str| {
            let out = std::process::Command::new(std::env::current_exe().expect("own path"))
                .args(["--rss-of", system, "--clients", &n.to_string()])
                .output()
                .expect("child");
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text
                .lines()
                .find(|l| l.starts_with("rss "))
                .unwrap_or_else(|| panic!("{system}: {text}"));
            // "rss <before> <after>": the word does not parse, the numbers do.
            let v: Vec<f64> = line
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (v[1] - v[0]) / n as f64
        };
        let reference = per_conn("reference");
        let dragon = per_conn("dragon");
        println!("| {n} | reference (tokio-tungstenite broadcast) | {reference:.1} | 1.00 |");
        println!(
            "| {n} | dragon (1 node, memory, 1 subscription each) | {dragon:.1} | {:.2} |",
            dragon / reference
        );
    }
}

fn row(n: usize, name: &str, f: &Figures, ratio: f64) {
    println!(
        "| {n} | {name} | {:.0} | {:.2} | {:.2} | {:.2} |",
        f.deliveries_per_sec, ratio, f.p50_ms, f.p99_ms
    );
}
