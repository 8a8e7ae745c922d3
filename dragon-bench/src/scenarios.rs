//! The scenarios of the fan-out table, and how each system is measured in them.

use std::time::Duration;

use crate::clients::{Fleet, Source, events_for};
use crate::pin::Placement;
use crate::reference::{self, Reference};
use crate::subject::{self, Kind, Subject};

/// Paced events sent, and not counted, before the paced scenario's.
const WARM_UP_PACED: usize = 5;

/// A row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    OneRoute1000,
    OneRoute5000,
    Filters500x10,
    Paced10000,
    IdleMemory,
    SqliteWrites,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::OneRoute1000,
        Scenario::OneRoute5000,
        Scenario::Filters500x10,
        Scenario::Paced10000,
        Scenario::IdleMemory,
        Scenario::SqliteWrites,
    ];

    /// The name `--scenario` takes.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::OneRoute1000 => "one-route-1000",
            Scenario::OneRoute5000 => "one-route-5000",
            Scenario::Filters500x10 => "filters-500x10",
            Scenario::Paced10000 => "paced-10000",
            Scenario::IdleMemory => "idle-memory",
            Scenario::SqliteWrites => "sqlite-writes",
        }
    }

    pub fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// A column of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Reference,
    Memory,
    Redis,
    Sqlite,
}

impl System {
    pub const ALL: [System; 4] = [
        System::Reference,
        System::Memory,
        System::Redis,
        System::Sqlite,
    ];

    /// The name `--systems` and `--rss-of` take.
    pub fn name(self) -> &'static str {
        match self {
            System::Reference => "reference",
            System::Memory => "memory",
            System::Redis => "redis",
            System::Sqlite => "sqlite",
        }
    }

    pub fn parse(name: &str) -> Option<System> {
        System::ALL.into_iter().find(|s| s.name() == name)
    }

    fn kind(self) -> Option<Kind> {
        match self {
            System::Reference => None,
            System::Memory => Some(Kind::Memory),
            System::Redis => Some(Kind::Redis),
            System::Sqlite => Some(Kind::Sqlite),
        }
    }
}

/// How big and how long.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Divides client counts by 5 and burst sizes by 2.
    pub quick: bool,
    /// Bursts per measurement (the median is reported).
    pub rounds: usize,
    pub paced_events: usize,
    /// Deliveries per second in the paced scenario.
    pub paced_rate: u64,
    pub idle_connections: usize,
    pub write_seconds: u64,
    pub systems: Vec<System>,
    pub placement: Placement,
}

/// What a scenario's clients and events are.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// `events` events as fast as the source takes them, spread over `rooms` rooms of
    /// `clients / rooms` subscribers.
    Burst {
        clients: usize,
        rooms: usize,
        events: usize,
    },
    /// `events` events to one room of `clients`, `pace` apart.
    Paced {
        clients: usize,
        events: usize,
        pace: Duration,
    },
    Idle {
        connections: usize,
    },
    Writes {
        seconds: u64,
    },
}

impl Settings {
    pub fn shape(&self, scenario: Scenario) -> Shape {
        let c = |n: usize| if self.quick { n / 5 } else { n };
        let e = |n: usize| if self.quick { n / 2 } else { n };
        match scenario {
            Scenario::OneRoute1000 => Shape::Burst {
                clients: c(1000),
                rooms: 1,
                events: e(200),
            },
            Scenario::OneRoute5000 => Shape::Burst {
                clients: c(5000),
                rooms: 1,
                events: e(100),
            },
            Scenario::Filters500x10 => Shape::Burst {
                clients: c(500) * 10,
                rooms: c(500),
                events: c(2000),
            },
            Scenario::Paced10000 => {
                let clients = c(10_000);
                Shape::Paced {
                    clients,
                    events: self.paced_events,
                    pace: Duration::from_micros(
                        clients as u64 * 1_000_000 / self.paced_rate.max(1),
                    ),
                }
            }
            Scenario::IdleMemory => Shape::Idle {
                connections: self.idle_connections,
            },
            Scenario::SqliteWrites => Shape::Writes {
                seconds: self.write_seconds,
            },
        }
    }
}

/// One system's figure in one scenario.
#[derive(Debug, Clone, Default)]
pub enum Cell {
    /// Not measured (not asked for, or not meaningful for this system).
    #[default]
    None,
    /// Deliveries per second (median of the rounds).
    Rate(f64),
    /// Commit (or send) to receipt, ms.
    Latency { p50: f64, p99: f64 },
    /// Server memory per idle subscribed connection.
    Kib(f64),
    /// Committed changes per second.
    Writes(f64),
}

/// One system's outcome: its figure and what went wrong, if anything.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub cell: Cell,
    pub problem: Option<String>,
    /// Bursts: the server process's CPU time per delivery, µs (median of the rounds).
    pub cpu_per_delivery: Option<f64>,
}

/// Measures `system` in `scenario`.
pub async fn measure(settings: &Settings, scenario: Scenario, system: System) -> Outcome {
    let pin = settings.placement.clients;
    let label = format!("{} / {}", scenario.name(), system.name());
    match settings.shape(scenario) {
        Shape::Burst {
            clients,
            rooms,
            events,
        } => {
            let capacity = (events_for(0, rooms, events) as usize)
                .next_power_of_two()
                .max(1024);
            with_system(
                system,
                clients,
                rooms,
                capacity,
                pin,
                async |fleet, source| {
                    bursts(&label, fleet, source, events, rooms, settings.rounds).await
                },
            )
            .await
        }
        Shape::Paced {
            clients,
            events,
            pace,
        } => {
            with_system(system, clients, 1, 1024, pin, async |fleet, source| {
                // A few events not counted first (buffers grow to size).
                let warm_up = fleet.paced(WARM_UP_PACED, pace, source).await;
                let warm_up = warm_up.problem().map(|p| format!("warm-up: {p}"));
                if let Some(p) = &warm_up {
                    eprintln!("WARNING: {label}, {p}");
                }
                let report = fleet.paced(events, pace, source).await;
                eprintln!(
                    "{label}: p50 {:.2} ms, p99 {:.2} ms",
                    report.p50_ms, report.p99_ms
                );
                if let Some(p) = report.problem() {
                    eprintln!("WARNING: {label}: {p}");
                }
                Outcome {
                    cell: Cell::Latency {
                        p50: report.p50_ms,
                        p99: report.p99_ms,
                    },
                    problem: report.problem().or(warm_up),
                    cpu_per_delivery: None,
                }
            })
            .await
        }
        Shape::Idle { connections } => idle(system, connections, pin),
        Shape::Writes { seconds } => {
            if system == System::Reference {
                let per_sec =
                    crate::driver_floor::writes_per_sec(Duration::from_secs(seconds.max(1))).await;
                eprintln!("{label}: the driver alone, {per_sec:.0} transactions/s");
                return Outcome {
                    cell: Cell::Writes(per_sec),
                    problem: None,
                    cpu_per_delivery: None,
                };
            }
            if system != System::Sqlite {
                return Outcome::default();
            }
            let w = subject::write_rate(Duration::from_secs(seconds.max(1))).await;
            eprintln!(
                "{label}: {} committed in {seconds}s ({:.0}/s), {} relayed to the broker, the last {:.1} ms after the last commit",
                w.committed,
                w.per_sec,
                w.published,
                w.tail.as_secs_f64() * 1e3
            );
            Outcome {
                cell: Cell::Writes(w.per_sec),
                problem: (w.published != w.committed).then(|| {
                    format!(
                        "{} changes committed but {} relayed to the broker",
                        w.committed, w.published
                    )
                }),
                cpu_per_delivery: None,
            }
        }
    }
}

/// Starts `system` and its clients, runs `f`, and stops both.
async fn with_system(
    system: System,
    clients: usize,
    rooms: usize,
    capacity: usize,
    pin: Option<usize>,
    f: impl AsyncFnOnce(&mut Fleet, &mut AnySource) -> Outcome,
) -> Outcome {
    match system.kind() {
        None => {
            let reference = Reference::start(rooms, capacity).await;
            let mut fleet = reference.fleet(clients, rooms, pin).await;
            let mut source = AnySource::Reference(reference.source());
            let mut outcome = f(&mut fleet, &mut source).await;
            let lagged = reference.lagged();
            if lagged > 0 {
                let note = format!("{lagged} events lost by lagging receivers");
                outcome.problem = Some(match outcome.problem {
                    Some(p) => format!("{p}; {note}"),
                    None => note,
                });
            }
            outcome
        }
        Some(kind) => {
            let dragon = Subject::start(kind).await;
            let mut fleet = dragon.fleet(clients, rooms, pin).await;
            let mut source = AnySource::Dragon(dragon.source());
            let outcome = f(&mut fleet, &mut source).await;
            drop((fleet, source));
            dragon.stop().await;
            outcome
        }
    }
}

/// Either system's source.
pub enum AnySource {
    Reference(reference::Broadcast),
    Dragon(subject::Commits),
}

impl Source for AnySource {
    async fn send(&mut self, room: usize, t0: u64) {
        match self {
            AnySource::Reference(s) => s.send(room, t0).await,
            AnySource::Dragon(s) => s.send(room, t0).await,
        }
    }
}

/// A burst not counted (buffers and tables grow to size), then `rounds` bursts; the median
/// rate, and the first problem seen (the warm-up's included).
async fn bursts(
    label: &str,
    fleet: &mut Fleet,
    source: &mut AnySource,
    events: usize,
    rooms: usize,
    rounds: usize,
) -> Outcome {
    let (mut rates, mut cpu) = (Vec::new(), Vec::new());
    let mut problem: Option<String> = None;
    let (_, warm_up, _) = fleet.burst(events, rooms, source).await;
    if let Some(p) = warm_up.problem() {
        eprintln!("WARNING: {label}, warm-up: {p}");
        problem = Some(format!("warm-up: {p}"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for round in 1..=rounds.max(1) {
        let (rate, report, busy) = fleet.burst(events, rooms, source).await;
        let us = busy.server_seconds * 1e6 / report.received.max(1) as f64;
        eprintln!(
            "{label}: round {round}: {} deliveries at {rate:.0}/s{}; CPU: server {:.0}%, clients {:.0}%; server {us:.2} µs per delivery",
            report.received,
            if report.exact() { "" } else { " (INCOMPLETE)" },
            busy.server * 100.0,
            busy.clients * 100.0
        );
        cpu.push(us);
        if let Some(p) = report.problem() {
            eprintln!("WARNING: {label}, round {round}: {p}");
            problem.get_or_insert(format!("round {round}: {p}"));
        }
        rates.push(rate);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rates.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    Outcome {
        cell: Cell::Rate(rates[rates.len() / 2]),
        problem,
        cpu_per_delivery: Some(cpu[cpu.len() / 2]),
    }
}

/// Server memory per idle subscribed connection, the system in a fresh process
/// (`--rss-of`), so it reuses no memory another freed.
fn idle(system: System, connections: usize, pin: Option<usize>) -> Outcome {
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("own path"));
    cmd.args(["--rss-of", system.name()])
        .args(["--idle-connections", &connections.to_string()]);
    if let Some(cpu) = pin {
        cmd.args(["--fleet-cpu", &cpu.to_string()]);
    }
    let out = cmd.output().expect("memory probe");
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find(|l| l.starts_with("rss ")) else {
        return Outcome {
            cell: Cell::None,
            problem: Some(format!(
                "the memory probe failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            cpu_per_delivery: None,
        };
    };
    // "rss <before> <after>": the word does not parse, the numbers do.
    let v: Vec<f64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let per_conn = (v[1] - v[0]) / connections.max(1) as f64;
    eprintln!(
        "idle-memory / {}: {} KiB before, {} KiB after {connections} connections: {per_conn:.1} KiB each",
        system.name(),
        v[0],
        v[1]
    );
    Outcome {
        cell: Cell::Kib(per_conn),
        problem: None,
        cpu_per_delivery: None,
    }
}

/// The memory probe's body (`--rss-of <system>`): resident KiB before and after.
pub async fn rss_of(system: System, connections: usize, pin: Option<usize>) -> (u64, u64) {
    match system.kind() {
        None => reference::rss(connections, pin).await,
        Some(kind) => subject::rss(kind, connections, pin).await,
    }
}
