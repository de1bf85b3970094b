//! The storage protocol: a Raft peer hands its state changes to its storage actor, one save at
//! a time, and learns from the answer when they are durable.

use std::time::Duration;

use actix::prelude::*;

use crate::storage::StateUpdate;

/// Saves one state update atomically; answered once it is durable (or with the I/O error that
/// stopped it).
#[derive(Message, Debug)]
#[rtype(result = "std::io::Result<()>")]
pub struct Save(pub StateUpdate);

/// A simulated disk latency: every save from now on takes this much longer (zero: none).
/// Tests use it to show that nothing leaves a peer before the state it depends on is durable.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct SetDiskLatency(pub Duration);
