//! The replicated state machine protocol: how a service's network face hands a command to its
//! replica ([`Submit`]) and looks at the replica's applied state ([`Read`]).
//!
//! A command that carries a [`Session`] (the client's id and its request number) is executed
//! at most once: a retry gets the output of the first execution.

use std::marker::PhantomData;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::messages::apply::HaltCause;

/// Identifies a client session: the log index of its registration ([`RegisterSession`]).
pub type ClientId = u64;
/// A client's request number: each new operation takes the next one; retries reuse it.
pub type Seq = u64;
/// A client's identity and request number, for at-most-once execution.
pub type Session = (ClientId, Seq);

/// Why a submitted command has no output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// This replica cannot commit the command now: ask another.
    WrongLeader,
    /// This replica has halted (see [`GetHealth`]): ask another.
    Halted,
    /// The client's session is gone (expired, or never registered with this service): the
    /// command was not executed, and an earlier attempt of it may or may not have been.
    /// Register a new session for the next command.
    SessionExpired,
}

/// Opens a client session: answered with the new client's id (the log index of its
/// registration) once the registration is applied.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<ClientId, SubmitError>")]
pub struct RegisterSession;

/// Lists a replica's live sessions: each client and its last executed request number, by
/// client (for tests and operators; every replica that applied the same entries lists the
/// same).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Vec<(ClientId, Seq)>")]
pub struct GetSessions;

/// The replica has halted: it serves nothing more (see [`GetHealth`] for why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Halted;

/// Whether a replica is serving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// It applies commands and answers requests.
    Serving,
    /// It stopped for good because something it cannot trust happened (an undecodable
    /// snapshot or log entry, a gap in the applied indexes, a failed save, a broken Raft
    /// invariant). Its data directory needs an operator.
    Halted {
        /// What happened.
        reason: String,
    },
}

/// Asks a replica whether it is serving.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Health")]
pub struct GetHealth;

/// Why a replica halted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Halt {
    /// Which kind of failure.
    pub cause: HaltCause,
    /// What happened (as [`Health::Halted`] tells it).
    pub reason: String,
}

/// Answered once the replica halts, with why (at once if it already has), or with `None` if
/// it stops without halting (it was stopped). A process that runs a replica waits on it to
/// exit when its storage fails.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Option<Halt>")]
pub struct WaitHalt;

/// Puts `command` in the log; answered with its output once it is applied at the index and
/// term Raft gave it, or with [`SubmitError`] when that cannot happen.
#[derive(Message)]
#[rtype(result = "Result<O, SubmitError>")]
pub struct Submit<C: 'static, O: 'static> {
    /// Who sent it, for duplicate suppression (`None`: no suppression).
    pub session: Option<Session>,
    /// The command.
    pub command: C,
    output: PhantomData<fn() -> O>,
}

impl<C, O> Submit<C, O> {
    /// Submits `command`, executed at most once per `session` if one is given.
    pub fn new(session: Option<Session>, command: C) -> Self {
        Submit {
            session,
            command,
            output: PhantomData,
        }
    }
}

/// Runs a read-only function on a replica's state once the read is linearizable, without a log
/// entry (Raft's ReadIndex): the leader confirms it still leads after the request arrived, and
/// the replica waits until it has applied everything committed at that point. A replica that
/// is not the leader, or stops leading meanwhile, answers `WrongLeader`.
#[derive(Message)]
#[rtype(result = "Result<R, SubmitError>")]
pub struct LinearizableRead<S: 'static, R: 'static>(pub ReadFn<S, R>);

impl<S, R> LinearizableRead<S, R> {
    /// Wraps `f`, which receives the state and the last applied index.
    pub fn new(f: impl FnOnce(&S, u64) -> R + Send + 'static) -> Self {
        LinearizableRead(Box::new(f))
    }
}

/// A read-only function of a service's state and the index applied so far.
pub type ReadFn<S, R> = Box<dyn FnOnce(&S, u64) -> R + Send>;

/// Runs a read-only function on a replica's state as last applied and answers its result
/// (or [`Halted`]: a halted replica's state is not to be trusted).
/// It does not go through the log, so that state may lag the leader's: use it for decisions
/// the log re-checks (the shard migrator) and to compare replicas in tests, never to answer a
/// client read.
#[derive(Message)]
#[rtype(result = "Result<R, Halted>")]
pub struct Read<S: 'static, R: 'static>(pub ReadFn<S, R>);

impl<S, R> Read<S, R> {
    /// Wraps `f`, which receives the state and the last applied index.
    pub fn new(f: impl FnOnce(&S, u64) -> R + Send + 'static) -> Self {
        Read(Box::new(f))
    }
}
