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
use dragon_core::testing::TestServer;
use dragon_core::{Ctx, Dragon, Error, Limits, Router};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::clients::{now_micros, rss_kib};
use crate::pin::allowed_cpus;

mod cleanup;
mod fleet;
mod node;

pub(crate) use cleanup::redis_cleanup;
use fleet::*;
use node::*;

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

/// Pins this thread (and so the runtime threads it starts) to `cpu`: then one worker.
fn pin(cpu: usize) -> Option<usize> {
    crate::pin::pin(cpu).then_some(1)
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
