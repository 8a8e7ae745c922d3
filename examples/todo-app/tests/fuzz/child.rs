//! The server under test runs in a child process: this same test binary running the
//! `server_child` test, which starts the todo-app (`TestApp` on SQLite, tokio's default
//! 2 MiB worker stacks as in production). A crash (a stack overflow aborts the whole
//! process) is then a finding to report, and the fuzzer restarts the server and goes on.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::wire::{Panic, record_panic};
use crate::common::{Backend, TestApp};

/// Set in the child's environment: `server_child` serves instead of returning at once.
pub const CHILD_ENV: &str = "DRAGON_FUZZ_SERVER_CHILD";
const ADDR: &str = "dragon-fuzz-addr ";
const PANIC: &str = "dragon-fuzz-panic\t";
/// Lines of the child's stderr kept for the report of its death.
const TAIL: usize = 12;

/// In the child: serves the todo-app until stdin closes (the parent is gone or done).
/// Panics go to stderr as one line each, for the parent to match to the frame that caused
/// them.
pub fn serve() {
    std::panic::set_hook(Box::new(|info| {
        let place = info.location().map(|l| l.to_string()).unwrap_or_default();
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default()
            .replace(['\n', '\t'], " ");
        eprintln!("{PANIC}{place}\t{what}");
    }));
    // Server errors (the cause behind an `internal` reply) go to stderr as well.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter("warn")
        .init();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let app = TestApp::start(Backend::Sqlite).await;
        // On a line of its own: libtest has printed "test server_child ... " already.
        println!("\n{ADDR}{}", app.ws_url());
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                line.clear();
            }
        })
        .await;
    });
}

/// The running server process, its socket URL, and the end of its stderr.
pub struct Child {
    process: std::process::Child,
    pub url: String,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Child {
    /// Starts the server process and waits for its address.
    pub fn start() -> Child {
        let exe = std::env::current_exe().expect("test binary");
        let mut process = Command::new(exe)
            .args([
                "--exact",
                "server_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server process");
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr = process.stderr.take().expect("stderr");
        let keep = tail.clone();
        std::thread::spawn(move || read_stderr(BufReader::new(stderr), &keep));
        let stdout = BufReader::new(process.stdout.take().expect("stdout"));
        let url = stdout
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.split_once(ADDR).map(|(_, url)| url.to_owned()))
            .expect("the server process printed its address");
        Child { process, url, tail }
    }

    /// Why the process ended (exit status and the end of its stderr), if it has or does
    /// within `wait` (an abort takes a moment after the socket drops).
    pub fn death(&mut self, wait: Duration) -> Option<(String, String)> {
        let deadline = Instant::now() + wait;
        let status = loop {
            match self.process.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => return None,
            }
        };
        // Give the stderr reader a moment to take the last lines.
        std::thread::sleep(Duration::from_millis(50));
        let tail: Vec<String> = self.tail.lock().unwrap().iter().cloned().collect();
        let cause = tail
            .iter()
            .rev()
            .find(|l| l.contains("overflowed") || l.contains("panicked") || l.contains("error"))
            .cloned()
            .unwrap_or_else(|| status.to_string());
        Some((
            cause,
            format!("{status}; stderr ends: {}", tail.join(" | ")),
        ))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Child {
    /// The last line of the server's stderr that contains `what` (its log says what an
    /// `internal` reply does not).
    pub fn last_line_with(&self, what: &str) -> Option<String> {
        std::thread::sleep(Duration::from_millis(20)); // the reader thread may lag
        let tail = self.tail.lock().unwrap();
        tail.iter().rev().find(|l| l.contains(what)).cloned()
    }
}

/// Records the child's panic lines and keeps the last lines of its stderr.
fn read_stderr(stderr: impl BufRead, tail: &Mutex<VecDeque<String>>) {
    for line in stderr.lines().map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix(PANIC) {
            let (place, what) = rest.split_once('\t').unwrap_or((rest, ""));
            record_panic(Panic {
                place: place.to_owned(),
                what: what.to_owned(),
            });
        }
        let mut tail = tail.lock().unwrap();
        if tail.len() == TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}
