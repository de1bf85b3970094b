//! Runs one scenario per seed inside a fresh actix `System` on a paused-clock runtime.
//!
//! A failure (a panic in the scenario, a panic in any actor, or the virtual time limit) is
//! reported with the seed and the command that replays it.

use std::cell::Cell;
use std::future::Future;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use super::seed::{derive_seed, seeded_rng};
use actix::Addr;

use crate::actors::network::{Network, NetworkHandle};
use crate::actors::raft::RaftPeer;
use crate::messages::raft::GetState;

/// What one scenario run gets: its seed, its network and its clock.
#[derive(Clone)]
pub struct Sim {
    seed: u64,
    network: NetworkHandle,
    started: Instant,
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
}

/// Per-test settings.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// Fail the run when its scenario takes longer than this (6.5840: 120 s).
    pub time_limit: Duration,
    /// Run on the real clock instead of virtual time (default: `RAINKV_REALTIME`).
    pub realtime: bool,
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
        }
    }
}

thread_local! {
    /// Set by the panic hook when anything on this thread (an actor, the scenario) panics.
    static PANICKED: Cell<bool> = const { Cell::new(false) };
}

fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            PANICKED.with(|p| p.set(true));
            default(info);
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
    for seed in seeds() {
        PANICKED.with(|p| p.set(false));
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| run_seed(seed, &options, &scenario)));
        let actor_panicked = PANICKED.with(|p| p.get());
        if outcome.is_err() || actor_panicked {
            announce(&format!(
                "test {name} FAILED with RAINKV_SEED={seed}; replay: RAINKV_SEED={seed} cargo test --release {name}"
            ));
        }
        match outcome {
            Err(cause) => panic::resume_unwind(cause),
            Ok(_) if actor_panicked => panic!("an actor panicked during {name} (see above)"),
            Ok(((), hash)) => report_trace_hash(hash),
        }
    }
}

/// Runs `scenario` once with `seed` in a fresh System and returns its output and the network's
/// trace hash. It panics when the scenario panics or exceeds the time limit.
pub fn run_seed<F, Fut, T>(seed: u64, options: &TestOptions, scenario: F) -> (T, u64)
where
    F: FnOnce(Sim) -> Fut,
    Fut: Future<Output = T>,
{
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
        let sim = Sim {
            seed,
            network: NetworkHandle::from_actor(
                Network::new(derive_seed(seed, "network")).with_latency(latency),
            ),
            started: Instant::now(),
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
