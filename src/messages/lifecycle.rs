//! The one message that ends an actor's life.
//!
//! Every actor that can be stopped from outside handles [`Stop`]: a Raft peer, a replicated
//! state machine (which stops its peer), an applier, a migrator, a TCP link or listener. It
//! is a crash, not a goodbye: the actor drops its queued messages, timers and calls in flight
//! and sends nothing more; whoever waited on it gets its error (`WrongLeader`,
//! `Unreachable`, ...).

use actix::prelude::*;

/// Stops the receiving actor for good (see the module docs).
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct Stop;
