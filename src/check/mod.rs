//! A linearizability checker for recorded histories (the algorithm of porcupine, written for
//! RainKV): given every completed operation with its call and return time, decide whether
//! some order of them, consistent with real time, is legal for a sequential model.
//!
//! Where to start reading:
//! - [`model`]: an [`Operation`] of a history and the [`Model`] trait (init, step, partition);
//! - [`kv`]: [`KvModel`], the Get/Put/Append model of the 6.5840 tests, one partition per key;
//! - [`checker`]: [`check_operations`], the depth-first search with memoisation;
//! - [`explain`]: [`Violation`], what a failure says and how it prints;
//! - [`html`]: [`write_html`], a timeline of a history for a browser.
//!
//! Typical use in a test:
//! ```
//! # use rainkv::check::*;
//! # use std::time::Duration;
//! let put = KvInput { op: KvOp::Put, key: "k".into(), value: "v".into() };
//! let get = KvInput { op: KvOp::Get, key: "k".into(), value: String::new() };
//! let history = vec![
//!     Operation { client_id: 1, input: put, call: 0, output: KvOutput::default(), return_time: 5 },
//!     Operation { client_id: 2, input: get, call: 6, output: KvOutput { value: "v".into() }, return_time: 9 },
//! ];
//! match check_operations::<KvModel>(&history, Duration::from_secs(20)) {
//!     CheckResult::Ok => {}
//!     other => panic!("{other}"), // Illegal and Unknown both fail our tests
//! }
//! ```

pub mod checker;
pub mod explain;
pub mod html;
pub mod kv;
pub mod model;

#[cfg(test)]
mod tests;

pub use checker::{check_operations, CheckResult};
pub use explain::{LinearizedOp, OpSummary, StuckOp, Violation, WhyStuck};
pub use html::write_html;
pub use kv::{KvInput, KvModel, KvOp, KvOutput, KvState};
pub use model::{Model, Operation, Partition};
