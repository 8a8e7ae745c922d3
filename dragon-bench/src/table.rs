//! The fan-out table: figures per scenario and system, ratios, and the acceptance targets
//! with PASS/FAIL.

use crate::scenarios::{Cell, Outcome, Scenario, Settings, Shape, System};

/// The "today's 9.1k": its table's cell for SQLite inserts through the derive in the
/// 500 filters x 10 subscribers scenario (deliveries/s there, with a rollback journal). The
/// target "3x" is checked against it twice: in that same cell (like for like), and as the
/// acceptance line words it, committed changes/s of one writer (`sqlite-writes`).
const OLD_SQLITE: f64 = 9_100.0;

/// One scenario's outcomes, by [`System::ALL`] order.
pub struct Row {
    pub scenario: Scenario,
    pub shape: Shape,
    pub outcomes: Vec<Outcome>,
}

impl Row {
    fn get(&self, system: System) -> &Outcome {
        let i = System::ALL
            .iter()
            .position(|&s| s == system)
            .expect("a system");
        &self.outcomes[i]
    }
}

/// `1234567.8` as `1,234,568`.
fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "NaN".to_owned();
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

fn label(scenario: Scenario, shape: Shape, settings: &Settings) -> String {
    let name = scenario.name();
    match shape {
        Shape::Burst {
            clients,
            rooms: 1,
            events,
        } => format!(
            "`{name}`: 1 route, {} subscribers, {events} changes (deliveries/s)",
            thousands(clients as f64)
        ),
        Shape::Burst {
            clients,
            rooms,
            events,
        } => format!(
            "`{name}`: {rooms} filters x {} subscribers, {} changes spread over the rooms (deliveries/s)",
            clients / rooms,
            thousands(events as f64)
        ),
        Shape::Paced {
            clients, events, ..
        } => format!(
            "`{name}`: {} clients, {events} paced events at {}/s deliveries (p50 / p99 ms, commit or send to receipt)",
            thousands(clients as f64),
            thousands(settings.paced_rate as f64)
        ),
        Shape::Idle { connections } => format!(
            "`{name}`: idle subscribed connection, server memory (KiB per connection, {} connections)",
            thousands(connections as f64)
        ),
        Shape::Writes { seconds } => format!(
            "`{name}`: SQLite file, one writer, inserts through the derive, no subscribers (committed changes/s, {seconds} s; reference column: the same transaction through the driver alone)"
        ),
    }
}

/// The figure `higher is better` can be compared on: rates as they are, latency (p99) and
/// memory inverted.
fn merit(cell: &Cell) -> Option<f64> {
    match *cell {
        Cell::Rate(x) | Cell::Writes(x) => Some(x),
        Cell::Latency { p99, .. } => Some(1.0 / p99),
        Cell::Kib(k) => Some(1.0 / k),
        Cell::None => None,
    }
}

/// How `a` compares with `b`, as "higher is better" (so 0.8x is 20% worse).
fn ratio(a: &Outcome, b: &Outcome) -> Option<f64> {
    Some(merit(&a.cell)? / merit(&b.cell)?)
}

fn cell_text(row: &Row, system: System) -> String {
    let out = row.get(system);
    let mut text = match out.cell {
        Cell::None if out.problem.is_some() => "failed".to_owned(),
        Cell::None => "—".to_owned(),
        Cell::Rate(x) => format!("{}/s", thousands(x)),
        Cell::Writes(x) => format!(
            "{}/s ({:.2}x the old {:.1}k/s)",
            thousands(x),
            x / OLD_SQLITE,
            OLD_SQLITE / 1e3
        ),
        Cell::Latency { p50, p99 } => format!("{p50:.1} / {p99:.1} ms"),
        Cell::Kib(k) => format!("{k:.1} KiB"),
    };
    let reference = row.get(System::Reference);
    let memory = row.get(System::Memory);
    let mut ratios = Vec::new();
    if system != System::Reference
        && let Some(r) = ratio(out, reference)
    {
        ratios.push(format!("{r:.2}x ref"));
    }
    if system == System::Redis
        && let Some(r) = ratio(out, memory)
    {
        ratios.push(format!("{r:.2}x mem"));
    }
    if !ratios.is_empty() {
        text.push_str(&format!(" ({})", ratios.join(", ")));
    }
    if out.problem.is_some() {
        text.push_str(" **INCOMPLETE**");
    }
    text
}

/// One acceptance target: what, and whether it passed (`None`: not measured).
struct Check {
    what: &'static str,
    result: Option<(bool, String)>,
}

/// `a` against `b` as "higher is better", at least `min`.
fn at_least(what: &'static str, a: &Outcome, b: &Outcome, min: f64) -> Check {
    let result = ratio(a, b).map(|r| {
        let complete = a.problem.is_none() && b.problem.is_none();
        let note = if complete { "" } else { ", incomplete" };
        (complete && r >= min, format!("{r:.2}x{note}"))
    });
    Check { what, result }
}

fn checks(row: &Row) -> Vec<Check> {
    let reference = row.get(System::Reference);
    let memory = row.get(System::Memory);
    let redis = row.get(System::Redis);
    let redis_check = at_least("Redis >= 0.8x Dragon", redis, memory, 0.8);
    match row.scenario {
        Scenario::OneRoute1000 | Scenario::OneRoute5000 => vec![
            at_least("Dragon >= 0.8x ref", memory, reference, 0.8),
            redis_check,
        ],
        Scenario::Filters500x10 => {
            let sqlite = row.get(System::Sqlite);
            vec![
                at_least("Dragon >= 1x ref", memory, reference, 1.0),
                redis_check,
                three_times_old("SQLite >= 3x the issue's 9.1k/s in this row", sqlite),
            ]
        }
        Scenario::Paced10000 => vec![
            at_least("Dragon p99 <= ref p99", memory, reference, 1.0),
            redis_check,
        ],
        Scenario::IdleMemory => {
            let limit = |what, o: &Outcome| Check {
                what,
                result: match o.cell {
                    Cell::Kib(k) => Some((k <= 8.0, format!("{k:.1} KiB"))),
                    _ => None,
                },
            };
            vec![limit("Dragon <= 8 KiB", memory), redis_check]
        }
        Scenario::SqliteWrites => vec![three_times_old(
            "SQLite >= 3x 9.1k changes/s",
            row.get(System::Sqlite),
        )],
    }
}

/// The SQLite column's rate (deliveries or committed changes) against 3x [`OLD_SQLITE`].
fn three_times_old(what: &'static str, sqlite: &Outcome) -> Check {
    let result = match sqlite.cell {
        Cell::Rate(x) | Cell::Writes(x) => Some((
            x >= 3.0 * OLD_SQLITE && sqlite.problem.is_none(),
            format!("{:.2}x", x / OLD_SQLITE),
        )),
        _ => None,
    };
    Check { what, result }
}

/// Prints the table, then any problem, then what the figures mean.
pub fn print(rows: &[Row], settings: &Settings) {
    println!("{}", settings.placement.describe());
    println!();
    println!(
        "| scenario | bare broadcaster | Dragon, event published after commit | Dragon on Redis (two nodes) | Dragon, SQLite insert + derive | targets | PASS/FAIL |"
    );
    println!("|---|---:|---:|---:|---:|---|---|");
    let (mut passed, mut failed) = (0, 0);
    for row in rows {
        let cells: Vec<String> = System::ALL.iter().map(|&s| cell_text(row, s)).collect();
        let checks = checks(row);
        let targets: Vec<&str> = checks.iter().map(|c| c.what).collect();
        let results: Vec<String> = checks
            .iter()
            .map(|c| match &c.result {
                Some((true, m)) => {
                    passed += 1;
                    format!("PASS ({m})")
                }
                Some((false, m)) => {
                    failed += 1;
                    format!("**FAIL** ({m})")
                }
                None => "n/a".to_owned(),
            })
            .collect();
        println!(
            "| {} | {} | {} | {} |",
            label(row.scenario, row.shape, settings),
            cells.join(" | "),
            targets.join("; "),
            results.join("; ")
        );
    }
    println!();
    println!("Targets: {passed} passed, {failed} failed.");
    print_cpu(rows);
    let problems: Vec<String> = rows
        .iter()
        .flat_map(|row| {
            System::ALL.iter().filter_map(move |&s| {
                row.get(s)
                    .problem
                    .as_ref()
                    .map(|p| format!("{} / {}: {p}", row.scenario.name(), s.name()))
            })
        })
        .collect();
    if !problems.is_empty() {
        println!();
        println!("**WARNING: clients did not receive what they should have:**");
        for p in problems {
            println!("- {p}");
        }
    }
    println!();
    println!(
        "Deliveries/s: frames received by all clients / time from the first send to the last \
         receipt, the median of {} burst(s) after one not counted; every client's count is checked against the events \
         of its room. Ratios are \"higher is better\": for latency the reference's p99 over \
         Dragon's, for memory the reference's KiB over Dragon's. ref = bare broadcaster \
         (axum, one tokio broadcast ring per room, one shared Utf8Bytes per event, drain then \
         one flush, TCP_NODELAY); mem = Dragon in memory, one node. Redis: two nodes, clients \
         split over both, events entering through the first. SQLite column: a real insert \
         (row + change-log row, one transaction) per event on a WAL file, relayed to the \
         clients; the event rate there is bounded by one sequential writer. In the \
         `sqlite-writes` row the reference is that transaction (BEGIN, INSERT … RETURNING, \
         change-log INSERT, COMMIT) made through sqlx alone on one connection, same file \
         settings and core: the most a framework logging its changes in the write's \
         transaction can get from this driver here.",
        settings.rounds
    );
}

/// The server's CPU time per delivery in the bursts: less noisy than wall-clock rates on a
/// shared machine, and what an optimization of the fan-out changes.
fn print_cpu(rows: &[Row]) {
    let bursts: Vec<&Row> = rows
        .iter()
        .filter(|r| r.outcomes.iter().any(|o| o.cpu_per_delivery.is_some()))
        .collect();
    if bursts.is_empty() {
        return;
    }
    println!();
    println!(
        "Server CPU time per delivery in the bursts (µs, the server process's user + system time \
         from the first send to the last receipt over the deliveries, median of the rounds; \
         lower is better; less noisy than rates when other work shares the machine):"
    );
    println!();
    println!(
        "| scenario | bare broadcaster | Dragon, after commit | Dragon on Redis | Dragon, SQLite |"
    );
    println!("|---|---:|---:|---:|---:|");
    for row in bursts {
        let reference = row.get(System::Reference).cpu_per_delivery;
        let cells: Vec<String> = System::ALL
            .iter()
            .map(|&s| match (row.get(s).cpu_per_delivery, reference) {
                (Some(us), Some(r)) if s != System::Reference => {
                    format!("{us:.2} ({:.1}x ref)", us / r)
                }
                (Some(us), _) => format!("{us:.2}"),
                (None, _) => "—".to_owned(),
            })
            .collect();
        println!("| `{}` | {} |", row.scenario.name(), cells.join(" | "));
    }
}
