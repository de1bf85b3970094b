//! Runs one scenario per seed inside a fresh actix `System` on a paused-clock runtime.
//!
//! A failure (a panic in the scenario, a panic in any actor, or the virtual time limit) is
//! reported with the seed and the command that replays it, and the seed is run once more with
//! trace recording on (a run replays exactly, so this is the same run): the failure message
//! names the trace it wrote under `target/`. Passing runs record nothing unless asked
//! (`RAINKV_TRACE=PATH` or [`TestOptions::trace`]).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Once;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use super::seed::{derive_seed, seeded_rng};
use actix::Addr;

use crate::actors::network::{Network, NetworkHandle};
use crate::actors::raft::RaftPeer;
use crate::messages::raft::GetState;
use crate::trace::{self, Tracer};

/// What one scenario run gets: its seed, its network and its clock.
#[derive(Clone)]
pub struct Sim {
    seed: u64,
    network: NetworkHandle,
    started: Instant,
    trace: Tracer,
}

impl Sim {
    /// The master seed of this run.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The simulated network of this run.
    pub fn network(&self) -> &NetworkHandle {
        &self.network
    }

    /// A generator for the consumer named `label`, derived from the master seed.
    pub fn rng(&self, label: &str) -> ChaCha8Rng {
        seeded_rng(self.seed, label)
    }

    /// A seed for the consumer named `label`.
    pub fn derive(&self, label: &str) -> u64 {
        derive_seed(self.seed, label)
    }

    /// Time since the run started (virtual unless `RAINKV_REALTIME` is set).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// When the run started: the origin of the servers' session clock.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Where this run's trace events go (off unless the run records a trace).
    pub fn trace(&self) -> &Tracer {
        &self.trace
    }
}

/// Per-test settings.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// Fail the run when its scenario takes longer than this (6.5840: 120 s).
    pub time_limit: Duration,
    /// Run on the real clock instead of virtual time (default: `RAINKV_REALTIME`).
    pub realtime: bool,
    /// Record the run's trace events and write them to this file as JSON Lines; a run over
    /// several seeds writes `PATH.<seed>` for each (default: `RAINKV_TRACE`).
    pub trace: Option<PathBuf>,
}

/// 6.5840's per-test limit, counted from the test's configuration.
pub const TIME_LIMIT: Duration = Duration::from_secs(120);

/// 6.5840's `checkTimeout`: fails the test if more than [`TIME_LIMIT`] passed since `created`.
pub fn check_time_limit(created: Instant) {
    let took = created.elapsed();
    assert!(
        took <= TIME_LIMIT,
        "test took longer than {} seconds ({took:?})",
        TIME_LIMIT.as_secs()
    );
}

/// 6.5840's `Leader()`: the first running server (in index order) whose Raft says it leads.
pub async fn first_leader(rafts: Vec<Option<Addr<RaftPeer>>>) -> Option<usize> {
    for (i, raft) in rafts.into_iter().enumerate() {
        if let Some(raft) = raft {
            if raft.send(GetState).await.is_ok_and(|s| s.is_leader()) {
                return Some(i);
            }
        }
    }
    None
}

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions {
            time_limit: TIME_LIMIT,
            realtime: env_flag("RAINKV_REALTIME"),
            trace: std::env::var_os("RAINKV_TRACE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }
}

thread_local! {
    /// Set by the panic hook when anything on this thread (an actor, the scenario) panics.
    static PANICKED: Cell<bool> = const { Cell::new(false) };
    /// Set while a failed seed is replayed to record its trace: its panic is the one already
    /// printed, so the hook notes it without printing it again.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            PANICKED.with(|p| p.set(true));
            if !QUIET.with(|q| q.get()) {
                default(info);
            }
        }));
    });
}

pub(crate) fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Writes straight to stderr, past the test harness's output capture, so the line is seen
/// whether the test passes or fails.
fn announce(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// The seeds this run covers: `RAINKV_SEED` (or a random one) and the `RAINKV_SEEDS - 1`
/// seeds after it.
pub fn seeds() -> Vec<u64> {
    let first = match std::env::var("RAINKV_SEED") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("RAINKV_SEED must be an unsigned integer, got {v:?}")),
        Err(_) => rand::random::<u64>() >> 1,
    };
    let count: u64 = match std::env::var("RAINKV_SEEDS") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("RAINKV_SEEDS must be a count, got {v:?}")),
        Err(_) => 1,
    };
    (0..count.max(1)).map(|i| first.wrapping_add(i)).collect()
}

/// Prints `trace-hash: <hex>` when `RAINKV_TRACE_HASH` is set.
pub fn report_trace_hash(hash: u64) {
    if env_flag("RAINKV_TRACE_HASH") {
        announce(&format!("trace-hash: {hash:016x}"));
    }
}

/// Runs `scenario` under the default options for every seed of this run.
pub fn run_test<F, Fut>(name: &str, scenario: F)
where
    F: Fn(Sim) -> Fut,
    Fut: Future<Output = ()>,
{
    run_test_with(name, TestOptions::default(), scenario)
}

/// Runs `scenario` for every seed of this run (`RAINKV_SEED`, `RAINKV_SEEDS`); on the first
/// failure prints how to replay it and fails the test.
pub fn run_test_with<F, Fut>(name: &str, options: TestOptions, scenario: F)
where
    F: Fn(Sim) -> Fut,
    Fut: Future<Output = ()>,
{
    install_panic_hook();
    let _ = env_logger::builder().is_test(true).try_init();
    let seeds = seeds();
    let several = seeds.len() > 1;
    for seed in seeds {
        PANICKED.with(|p| p.set(false));
        let options = TestOptions {
            trace: options.trace.as_ref().map(|path| match several {
                true => seed_path(path, seed),
                false => path.clone(),
            }),
            ..options.clone()
        };
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| run_seed(seed, &options, &scenario)));
        let actor_panicked = PANICKED.with(|p| p.get());
        if outcome.is_err() || actor_panicked {
            announce(&format!(
                "test {name} FAILED with RAINKV_SEED={seed}; replay: RAINKV_SEED={seed} cargo test --release {name}"
            ));
            let (trace, html) = match &options.trace {
                Some(path) => {
                    let mut html = path.as_os_str().to_owned();
                    html.push(".html");
                    (path.clone(), PathBuf::from(html))
                }
                None => record_failure(name, seed, &options, &scenario),
            };
            let title = format!("{name}, RAINKV_SEED={seed} (failed)");
            match write_timeline(&trace, &html, &title) {
                Ok(()) => announce(&format!(
                    "test {name}: timeline: {} (trace: {})",
                    html.display(),
                    trace.display()
                )),
                Err(e) => announce(&format!("test {name}: no timeline ({e})")),
            }
        }
        match outcome {
            Err(cause) => panic::resume_unwind(cause),
            Ok(_) if actor_panicked => panic!("an actor panicked during {name} (see above)"),
            Ok(((), hash)) => report_trace_hash(hash),
        }
    }
}

/// `PATH.<seed>`.
fn seed_path(path: &Path, seed: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{seed}"));
    PathBuf::from(name)
}

/// The directory for files a failing test leaves: `CARGO_TARGET_DIR` or `target`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
}

/// The timeline page of the trace in `trace`, written to `html`.
fn write_timeline(trace: &Path, html: &Path, title: &str) -> std::io::Result<()> {
    let jsonl = std::fs::read_to_string(trace)?;
    std::fs::write(html, trace::timeline::render(&jsonl, title))
}

/// Runs the failed seed again with recording on and returns where its trace will go and
/// where its timeline page should. The run replays exactly (same seed, same code), and
/// recording does not change it, so this trace is the failed run's.
fn record_failure<F, Fut>(
    name: &str,
    seed: u64,
    options: &TestOptions,
    scenario: &F,
) -> (PathBuf, PathBuf)
where
    F: Fn(Sim) -> Fut,
    Fut: Future<Output = ()>,
{
    let file = name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "-");
    let path = target_dir().join(format!("trace-{file}-{seed}.jsonl"));
    let html = target_dir().join(format!("timeline-{file}-{seed}.html"));
    let options = TestOptions {
        trace: Some(path.clone()),
        ..options.clone()
    };
    log::info!("running seed {seed} of {name} again to record its trace");
    QUIET.with(|q| q.set(true));
    let _ = panic::catch_unwind(AssertUnwindSafe(|| run_seed(seed, &options, scenario)));
    QUIET.with(|q| q.set(false));
    (path, html)
}

/// Writes the run's trace when dropped, so a run that panics leaves its trace too.
struct TraceFile {
    path: PathBuf,
    tracer: Rc<RefCell<Tracer>>,
}

impl Drop for TraceFile {
    fn drop(&mut self) {
        trace::set_current(Tracer::off());
        let events = self.tracer.borrow().events();
        match trace::write_jsonl(&events, &self.path) {
            Ok(()) => log::info!("{} trace events in {}", events.len(), self.path.display()),
            Err(e) => announce(&format!(
                "cannot write the trace to {}: {e}",
                self.path.display()
            )),
        }
    }
}

/// Runs `scenario` once with `seed` in a fresh System and returns its output and the network's
/// trace hash. It panics when the scenario panics or exceeds the time limit. With
/// [`TestOptions::trace`] set it records the run's trace events and writes them there, also
/// when the run fails.
pub fn run_seed<F, Fut, T>(seed: u64, options: &TestOptions, scenario: F) -> (T, u64)
where
    F: FnOnce(Sim) -> Fut,
    Fut: Future<Output = T>,
{
    let tracer = Rc::new(RefCell::new(Tracer::off()));
    let _trace_file = options.trace.as_ref().map(|path| TraceFile {
        path: path.clone(),
        tracer: tracer.clone(),
    });
    let recording = options.trace.is_some();
    let realtime = options.realtime;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(!realtime)
        .build()
        .expect("cannot build a tokio runtime");
    let latency = if realtime {
        Duration::ZERO
    } else {
        Duration::from_millis(1)
    };
    let system = actix_rt::System::with_tokio_rt(|| runtime);
    system.block_on(async {
        // Made inside the runtime, so its clock is the run's (virtual) one.
        let trace = match recording {
            true => Tracer::recording(),
            false => Tracer::off(),
        };
        *tracer.borrow_mut() = trace.clone();
        trace::set_current(trace.clone());
        let sim = Sim {
            seed,
            network: NetworkHandle::from_actor(
                Network::new(derive_seed(seed, "network"))
                    .with_latency(latency)
                    .with_trace(trace.clone()),
            ),
            started: Instant::now(),
            trace,
        };
        let limit = options.time_limit;
        let output = match tokio::time::timeout(limit, scenario(sim.clone())).await {
            Ok(output) => output,
            Err(_) => panic!("test took longer than {limit:?} (the time limit)"),
        };
        let hash = sim.network().trace_hash().await.unwrap_or(0);
        (output, hash)
    })
}
