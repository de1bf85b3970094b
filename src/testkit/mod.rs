//! The deterministic test harness: seeded, virtual-time scenarios over simulated networks.
//!
//! A scenario is an async closure given a [`Sim`]; [`run_test`] runs it inside an actix `System`
//! on a current-thread tokio runtime whose clock is paused, so sleeps and timeouts cost no wall
//! time and the clock only moves when every actor is idle. Everything random derives from one
//! master seed, so a run replays exactly. Environment variables:
//!
//! | variable | effect |
//! |---|---|
//! | `RAINKV_SEED=<u64>` | the master seed (random when unset; printed on failure) |
//! | `RAINKV_SEEDS=<n>` | run each test for `n` consecutive seeds |
//! | `RAINKV_REALTIME=1` | run on the real clock instead of virtual time |
//! | `RAINKV_TRACE_HASH=1` | print `trace-hash: <hex>` over every network event of each run |
//! | `RAINKV_TRACE=<path>` | write each run's trace events to `path` (`path.<seed>` for several) |

pub mod cluster;
pub mod ctrler;
pub mod kv;
pub mod raft;
mod runner;
mod seed;
pub mod settle;
pub mod shardkv;
pub mod traffic;

pub use cluster::{Cluster, ClusterOptions, ServerKind, StorageKind};
pub use runner::{
    check_time_limit, first_leader, report_trace_hash, run_seed, run_test, run_test_with, seeds,
    Sim, TestOptions, TIME_LIMIT,
};
pub use seed::{derive_seed, rand_string, seeded_rng};
