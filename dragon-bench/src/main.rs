//! Fan-out benchmark: Dragon against the strongest minimal Rust broadcaster, in one run.
//!
//! `cargo run --release -p dragon-bench` runs every scenario of the table (see
//! `scenarios.rs`) on four systems, each in the same run with the same clients (real
//! WebSockets on loopback, in a process of their own) and the same events:
//! - the bare broadcaster (`reference.rs`): axum, one tokio broadcast ring per room;
//! - Dragon, events published as the derive hands them over after commit (one node, memory);
//! - the same on two nodes sharing Redis;
//! - Dragon with real inserts through the derive on a SQLite file.
//!
//! The server side runs in this process, pinned to the first core, and the clients in
//! another pinned to the second (when there are two). Figures are printed as a markdown
//! table with ratios and the acceptance targets (`table.rs`).
//!
//! `-- --scenario one-route-1000` runs one scenario (a comma-separated list is fine),
//! `-- --systems reference,memory` some columns, `-- --quick` smaller counts, one round.
//! `-- --memory` is `--scenario idle-memory`. With `DRAGON_BENCH_DEBUG=1` the clients print
//! the first event frame of each system and, in the paced scenario, each event's p50 and max.
//!
//! `-- --presence` runs the presence benchmark instead (see `presence/`), `-- --writes`
//! the write benchmark (see `writes.rs`), `-- --likes` the live blog's likes (see `likes/`).

mod brokers;
mod clients;
mod driver_floor;
mod likes;
mod pin;
mod presence;
mod reference;
mod scenarios;
mod subject;
mod table;
mod writes;

use clap::Parser;

use scenarios::{Scenario, Settings, System};

#[derive(Parser, Debug)]
#[command(about = "Dragon fan-out benchmark against a minimal broadcaster")]
pub struct Args {
    /// Scenarios to run (default: all): one-route-1000, one-route-5000, filters-500x10,
    /// paced-10000, idle-memory, sqlite-writes.
    #[arg(long, value_delimiter = ',')]
    pub scenario: Vec<String>,
    /// Systems (columns) to measure: reference, memory, redis, sqlite.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "reference,memory,redis,sqlite"
    )]
    pub systems: Vec<String>,
    /// Smaller counts (clients / 5, bursts / 2), one round, 20 paced events, 1,000 idle
    /// connections, 1 s of writes: for iterating.
    #[arg(long)]
    pub quick: bool,
    /// Bursts per throughput measurement, after one not counted; the median is reported
    /// (default 5, quick 1).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Paced events in the latency scenario (default 40, quick 20).
    #[arg(long)]
    pub paced_events: Option<usize>,
    /// Deliveries per second in the latency scenario (events are spaced to give this rate).
    /// At 50,000 (an event every 200 ms to 10,000 clients) both systems fell behind on this
    /// 2-core machine when other work shared it, and p99 measured the backlog.
    #[arg(long, default_value_t = 25_000)]
    pub paced_rate: u64,
    /// Idle subscribed connections for the memory scenario (default 5,000, quick 1,000).
    #[arg(long)]
    pub idle_connections: Option<usize>,
    /// Seconds of writing in the SQLite write scenario (default 3, quick 1).
    #[arg(long)]
    pub write_seconds: Option<u64>,
    /// Do not pin the server and the clients to separate cores.
    #[arg(long)]
    pub no_pin: bool,
    /// Only the memory scenario (`--scenario idle-memory`).
    #[arg(long)]
    pub memory: bool,
    /// Internal: run as the client process for these comma-separated URLs.
    #[arg(long, hide = true)]
    pub fleet: Option<String>,
    /// Internal: the client process's client count.
    #[arg(long, hide = true, default_value_t = 0)]
    pub fleet_clients: usize,
    /// Internal: the client process's room count.
    #[arg(long, hide = true, default_value_t = 1)]
    pub fleet_rooms: usize,
    /// Internal: the client process's first frame per client.
    #[arg(long, hide = true)]
    pub fleet_setup: Option<String>,
    /// Internal: the core the client process pins itself to.
    #[arg(long, hide = true)]
    pub fleet_cpu: Option<usize>,
    /// Internal: report this system's memory and exit.
    #[arg(long, hide = true)]
    pub rss_of: Option<String>,
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

/// A runtime; one worker when this process is pinned to one core.
fn runtime(pinned: bool) -> tokio::runtime::Runtime {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if pinned {
        b.worker_threads(1);
    }
    b.enable_all().build().expect("runtime")
}

fn main() {
    let args = Args::parse();
    // Dragon's warnings on stderr, for every benchmark (`RUST_LOG` to see more).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
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
    if let Some(urls) = &args.fleet {
        raise_fd_limit(args.fleet_clients as u64 + 1024);
        let pinned = args.fleet_cpu.is_some_and(pin::pin);
        let urls: Vec<String> = urls.split(',').map(str::to_owned).collect();
        runtime(pinned).block_on(clients::fleet_main(
            urls,
            args.fleet_clients,
            args.fleet_rooms,
            args.fleet_setup.clone(),
        ));
        return;
    }
    let settings = settings(&args);
    // The server side holds at most the paced scenario's clients, or the idle ones.
    raise_fd_limit(10_000.max(settings.idle_connections) as u64 + 1024);
    let rt = runtime(settings.placement.server.is_some());
    if let Some(system) = &args.rss_of {
        let system = System::parse(system).unwrap_or_else(|| panic!("unknown system {system}"));
        let (before, after) = rt.block_on(scenarios::rss_of(
            system,
            settings.idle_connections,
            args.fleet_cpu,
        ));
        drop(rt);
        brokers::cleanup_all();
        println!("rss {before} {after}");
        return;
    }
    let scenarios = chosen_scenarios(&args);
    eprintln!("{}", settings.placement.describe());
    // The scenarios run as a task on the server's runtime, not in `block_on`: on the main
    // thread, a second OS thread on the server's core, the source of a burst gets preempted
    // mid-burst, so bursts reach the hubs split in two or three runs and most connections
    // pay two socket writes per burst (about 60% more server CPU per delivery).
    let body_settings = settings.clone();
    let body = async move {
        let settings = body_settings;
        let mut rows = Vec::new();
        for scenario in scenarios {
            let mut outcomes = Vec::new();
            for system in System::ALL {
                let outcome = if settings.systems.contains(&system) {
                    scenarios::measure(&settings, scenario, system).await
                } else {
                    scenarios::Outcome::default()
                };
                outcomes.push(outcome);
            }
            rows.push(table::Row {
                scenario,
                shape: settings.shape(scenario),
                outcomes,
            });
        }
        rows
    };
    let rows = rt
        .block_on(rt.spawn(body))
        .expect("the scenarios' task panicked");
    drop(rt);
    brokers::cleanup_all();
    table::print(&rows, &settings);
}

fn settings(args: &Args) -> Settings {
    let quick = args.quick;
    let systems = args
        .systems
        .iter()
        .map(|s| System::parse(s).unwrap_or_else(|| panic!("unknown system {s:?}")))
        .collect();
    // The memory probe inherits this process's core; it pins nothing itself.
    let placement = if args.rss_of.is_some() {
        pin::Placement::inherited()
    } else {
        pin::Placement::apply(!args.no_pin)
    };
    Settings {
        quick,
        rounds: args.rounds.unwrap_or(if quick { 1 } else { 5 }),
        paced_events: args.paced_events.unwrap_or(if quick { 20 } else { 40 }),
        paced_rate: args.paced_rate,
        idle_connections: args
            .idle_connections
            .unwrap_or(if quick { 1000 } else { 5000 }),
        write_seconds: args.write_seconds.unwrap_or(if quick { 1 } else { 3 }),
        systems,
        placement,
    }
}

fn chosen_scenarios(args: &Args) -> Vec<Scenario> {
    if args.memory {
        return vec![Scenario::IdleMemory];
    }
    if args.scenario.is_empty() {
        return Scenario::ALL.to_vec();
    }
    args.scenario
        .iter()
        .map(|name| {
            Scenario::parse(name).unwrap_or_else(|| {
                let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                panic!("unknown scenario {name:?}: one of {}", names.join(", "))
            })
        })
        .collect()
}
