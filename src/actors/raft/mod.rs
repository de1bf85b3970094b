//! Raft: a pure protocol core ([`RaftCore`]: Figure 2 plus snapshots, driven by `tick` and
//! `handle_*`, returning effects) and the actor shell around it ([`RaftPeer`]).
//!
//! Read `core.rs` beside the Raft paper's Figure 2; `log.rs` is the log with its compacted
//! prefix, `progress.rs` the leader's view of each follower, `majority.rs` the commit rule.
//! `membership.rs` is who votes and what one change makes of the members (chapter 4 of the
//! thesis); the core acts on the latest membership in its log.
//! `peer.rs` shows how an actor drives the core: timers, persistence, network, applier.

mod config;
mod core;
mod log;
mod majority;
mod membership;
mod peer;
mod progress;
mod read_only;

pub use self::config::{InvalidConfig, RaftConfig};
pub use self::core::{Message, RaftCore, Ready, RestoreError};
pub use self::peer::{Connector, PeerSetup, RaftPeer};
#[cfg(test)]
mod membership_tests;
