//! Settings from the environment, the seeded proptest runner for one family of frames, the
//! corpus replay, and how failures are shown.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use tokio::runtime::Runtime;

use super::oracle::Violation;
use super::session::Session;

/// Generated cases when `DRAGON_FUZZ_CASES` is unset: enough to touch every generator,
/// few enough that the debug-mode test stays well under 30 s.
const DEFAULT_CASES: u32 = 4_000;
/// Seed when `DRAGON_FUZZ_SEED` is unset: runs repeat unless asked not to.
const DEFAULT_SEED: u64 = 0xD4A6_0F22;
/// Time to minimize each kind of failure when `DRAGON_FUZZ_SHRINK_MS` is unset.
const DEFAULT_SHRINK_MS: u32 = 1_000;

/// What a run does, read once from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Generated cases in all (split over the families of a test).
    pub cases: u32,
    pub seed: u64,
    pub shrink_ms: u32,
    /// Where to write each minimized failing input (`DRAGON_FUZZ_SAVE`), ready for the corpus.
    pub save: Option<PathBuf>,
}

impl Settings {
    pub fn from_env() -> Settings {
        let num = |name: &str| std::env::var(name).ok().map(|v| parse_num(name, &v));
        Settings {
            cases: num("DRAGON_FUZZ_CASES").map_or(DEFAULT_CASES, |n| n as u32),
            seed: num("DRAGON_FUZZ_SEED").unwrap_or(DEFAULT_SEED),
            shrink_ms: num("DRAGON_FUZZ_SHRINK_MS").map_or(DEFAULT_SHRINK_MS, |n| n as u32),
            save: std::env::var_os("DRAGON_FUZZ_SAVE").map(PathBuf::from),
        }
    }

    /// The runner for family number `family`: its own seed, so families do not shift each
    /// other's inputs, and no proptest-regressions files (the corpus is kept by hand).
    pub fn runner(&self, family: u64) -> TestRunner {
        let config = Config {
            max_shrink_time: self.shrink_ms,
            failure_persistence: None,
            fork: false,
            timeout: 0,
            ..Config::default()
        };
        let mut seed = [0u8; 32];
        for (i, chunk) in seed.chunks_mut(8).enumerate() {
            let word = splitmix(self.seed ^ (family << 8) ^ i as u64);
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed))
    }
}

fn parse_num(name: &str, v: &str) -> u64 {
    let v = v.replace('_', "");
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// One kind of violated invariant: where it was found, the smallest input found for it,
/// what was seen, and how many generated inputs hit it.
#[derive(Debug)]
pub struct Failure {
    pub source: String,
    pub input: Vec<u8>,
    pub violation: Violation,
    pub hits: u64,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "[{}] {} ({} hit(s))\n    input: {}",
            self.source,
            self.violation,
            self.hits,
            show(&self.input)
        )
    }
}

/// An input as a reader wants it: the text (escaped) if UTF-8, else hex, clipped if long.
pub fn show(bytes: &[u8]) -> String {
    const MAX: usize = 600;
    let (head, more) = bytes.split_at(bytes.len().min(MAX));
    let text = match std::str::from_utf8(head) {
        Ok(s) => format!("{s:?}"),
        Err(_) => {
            let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
            format!(
                "hex {} (lossy: {:?})",
                hex.join(""),
                String::from_utf8_lossy(head)
            )
        }
    };
    if more.is_empty() {
        text
    } else {
        format!("{text} ... ({} bytes in all)", bytes.len())
    }
}

/// Cases and time of one run, for the benchmark-style summary.
#[derive(Debug, Default)]
pub struct Tally {
    pub cases: u64,
    pub secs: f64,
}

impl Tally {
    pub fn line(&self, what: &str) -> String {
        let rate = self.cases as f64 / self.secs.max(1e-9);
        format!(
            "{what}: {} cases in {:.1} s = {rate:.0} cases/s",
            self.cases, self.secs
        )
    }
}

/// Runs `cases` generated inputs. Each class of violation is minimized once (keeping to
/// its class) and reported; later inputs of a known class are only counted, so one finding
/// does not hide the others.
pub fn fuzz<S: Strategy>(
    runner: &mut TestRunner,
    strategy: &S,
    cases: u32,
    source: &str,
    check: impl Fn(&S::Value) -> Result<(), Violation>,
    bytes: impl Fn(&S::Value) -> Vec<u8>,
) -> (Tally, Vec<Failure>) {
    let start = Instant::now();
    let shrink = Duration::from_millis(runner.config().max_shrink_time.into());
    let mut failures: Vec<Failure> = Vec::new();
    for _ in 0..cases {
        let mut tree = strategy
            .new_tree(runner)
            .unwrap_or_else(|e| panic!("{source}: the generator gave up: {e}"));
        let Err(violation) = check(&tree.current()) else {
            continue;
        };
        if let Some(known) = failures
            .iter_mut()
            .find(|f| f.violation.class == violation.class)
        {
            known.hits += 1;
            continue;
        }
        let (input, violation) = minimize(&mut tree, violation, shrink, &check);
        failures.push(Failure {
            source: source.to_owned(),
            input: bytes(&input),
            violation,
            hits: 1,
        });
    }
    let tally = Tally {
        cases: cases.into(),
        secs: start.elapsed().as_secs_f64(),
    };
    (tally, failures)
}

/// proptest's shrinking loop, keeping to inputs that fail the same way, within `budget`.
fn minimize<T: ValueTree>(
    tree: &mut T,
    first: Violation,
    budget: Duration,
    check: impl Fn(&T::Value) -> Result<(), Violation>,
) -> (T::Value, Violation) {
    let start = Instant::now();
    let mut best = (tree.current(), first);
    let mut more = tree.simplify();
    while more && start.elapsed() < budget {
        let candidate = tree.current();
        more = match check(&candidate) {
            Err(v) if v.class == best.1.class => {
                best = (candidate, v);
                tree.simplify()
            }
            _ => tree.complicate(),
        };
    }
    best
}

/// Every corpus file, in name order.
pub fn corpus_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Sends every corpus file as one frame; a failure for each that breaks an invariant.
pub fn replay_corpus(rt: &Runtime, session: &RefCell<Session>, dir: &Path) -> Vec<Failure> {
    let mut failures = Vec::new();
    for path in corpus_files(dir) {
        let input = std::fs::read(&path).expect("read corpus file");
        if let Err(violation) = rt.block_on(session.borrow_mut().check(&input)) {
            let name = path.file_name().expect("name").to_string_lossy();
            failures.push(Failure {
                source: format!("corpus {name}"),
                input,
                violation,
                hits: 1,
            });
        }
    }
    failures
}

/// Writes each failing input to the `DRAGON_FUZZ_SAVE` folder, named by its source.
pub fn save(settings: &Settings, failures: &[Failure]) {
    let Some(dir) = &settings.save else { return };
    std::fs::create_dir_all(dir).expect("create DRAGON_FUZZ_SAVE folder");
    for (i, f) in failures.iter().enumerate() {
        let name: String = f
            .source
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        std::fs::write(dir.join(format!("{name}-{i}.bin")), &f.input).expect("save input");
    }
}
