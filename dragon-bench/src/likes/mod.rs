//! Likes benchmark: `dragon-bench --likes`.
//!
//! The live blog (`examples/liveblog`, its release binary) runs in its own process on a
//! fresh SQLite file with the demo author; this process logs in as ann, creates one post,
//! then holds every connection: `--likes-clients` like-clients sending `post.like` at
//! `--likes-rate` per second in total for `--likes-seconds`, and `--likes-readers` readers
//! subscribed to the post (`filter {"id": post}`). The server is pinned to one core and
//! this process to another, when the machine has two.
//!
//! Likes are sent open loop (each at its time, whether or not earlier ones were answered).
//! Figures: likes sent, acknowledged (`{"liked": true}`), stored (the post's `likes` read
//! afterwards), the last count each reader saw (min and max over readers), `updated` events
//! per reader per second of liking, and the readers' latency: with acknowledgements sorted
//! by time, the k-th is covered by a reader's first event showing `likes >= k`; latency is
//! that event's arrival minus the k-th acknowledgement, over every reader and like.

mod load;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pin::{allowed_cpus, pin};

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Run the likes benchmark (the live blog's `post.like` under load) instead.
    #[arg(long)]
    pub likes: bool,
    /// Connections sending likes.
    #[arg(long, default_value_t = 200)]
    pub likes_clients: usize,
    /// Connections watching the liked post.
    #[arg(long, default_value_t = 1_000)]
    pub likes_readers: usize,
    /// Likes per second over all like-clients.
    #[arg(long, default_value_t = 1_000)]
    pub likes_rate: u64,
    /// Seconds of liking.
    #[arg(long, default_value_t = 10)]
    pub likes_seconds: u64,
    /// The liveblog binary (default: built with `cargo build --release -p liveblog`).
    #[arg(long)]
    pub likes_server: Option<PathBuf>,
    /// Do not pin the server and the clients to separate cores.
    #[arg(long)]
    pub likes_no_pin: bool,
}

impl Options {
    /// Connections this process holds (like-clients, readers, the author).
    pub fn connections(&self) -> usize {
        self.likes_clients + self.likes_readers + 1
    }
}

pub fn main(opts: &Options) {
    let bin = opts.likes_server.clone().unwrap_or_else(build_server);
    let allowed = allowed_cpus();
    let cpus = (!opts.likes_no_pin && allowed.len() >= 2).then(|| (allowed[0], allowed[1]));
    if cpus.is_none() && !opts.likes_no_pin {
        eprintln!("note: fewer than 2 cores: server and clients are not pinned");
    }
    let server = Server::start(&bin, cpus.map(|c| c.0));
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some((_, client)) = cpus
        && pin(client)
    {
        rt.worker_threads(1);
    }
    let rt = rt.enable_all().build().expect("runtime");
    let pinned = match cpus {
        Some((s, c)) => format!("server pinned to core {s}, clients to core {c}"),
        None => "not pinned".to_owned(),
    };
    rt.block_on(load::run(opts, &server, &pinned));
    drop(rt);
    drop(server);
}

/// Builds the release liveblog binary (a no-op when it is up to date); its path. Built
/// beside dragon-bench (`-p dragon-bench` too) so its dependencies get the same features as
/// this program's, and are not compiled a second time just for it.
fn build_server() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let how = "build it with `cargo build --release -p liveblog` and pass \
               `--likes-server target/release/liveblog`";
    eprintln!("building the liveblog server: cargo build --release -p liveblog (-p dragon-bench)");
    let mut child = Command::new(cargo)
        .args(["build", "--release", "-p", "liveblog", "-p", "dragon-bench"])
        .args(["--bin", "liveblog"])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(manifest)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run cargo ({e}): {how}"));
    let mut exe = None;
    for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line.unwrap_or_default()) else {
            continue;
        };
        if v["reason"] == "compiler-artifact"
            && v["target"]["name"] == "liveblog"
            && let Some(path) = v["executable"].as_str()
        {
            exe = Some(PathBuf::from(path));
        }
    }
    let status = child.wait().expect("cargo");
    match exe {
        Some(path) if status.success() => path,
        _ => panic!("building liveblog failed ({status}): {how}"),
    }
}

/// The liveblog process, on a fresh SQLite file in a directory of its own; killed and its
/// directory removed when dropped.
pub(crate) struct Server {
    child: Child,
    dir: PathBuf,
    pub(crate) addr: String,
}

impl Server {
    fn start(bin: &Path, cpu: Option<usize>) -> Server {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("dragon-bench-likes-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string()]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.env("DRAGON_ADDR", &addr)
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", dir.join("liveblog.sqlite").display()),
            )
            .env("LIVEBLOG_DEMO", "1")
            .env(
                "LIVEBLOG_SECRET",
                "dragon-bench likes secret, long enough to sign",
            )
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("warn".into()),
            )
            .env_remove("REDIS_URL")
            .stdout(Stdio::from(std::io::stderr()));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = Server { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&server.addr).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("the liveblog server ended with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the liveblog server did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// CPU seconds (user + system) process `pid` has used, from `/proc/<pid>/stat`.
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks / hz as f64)
}
