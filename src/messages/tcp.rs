//! The TCP transport's local control protocol: what a node or client asks of its links and
//! listeners (`actors/tcp/`), what they answer, and what their connection tasks report back
//! to them. Nothing here crosses the wire; the wire format is `actors/tcp/frame.rs`.
//!
//! A link or listener is stopped with the crate's one stop message,
//! [`Stop`](crate::messages::lifecycle::Stop); a listener can also be stopped gracefully,
//! with [`Drain`].

use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;

use crate::messages::net::RpcError;

/// Blocks (`true`) or unblocks a link: while blocked every call fails `Unreachable` at once
/// and no connection is kept. The demo and tests cut nodes off with it.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub(crate) struct SetBlocked(pub bool);

/// Asks a link how it stands.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "LinkStatus")]
pub struct GetLinkStatus;

/// How a link stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    /// Where it leads.
    pub target: SocketAddr,
    /// `"down"`, `"dialling"` or `"up"`.
    pub control: &'static str,
    /// The same for the bulk lane.
    pub bulk: &'static str,
    /// Why the last connection attempt failed or the last connection broke, if it did and
    /// nothing has connected since.
    pub last_error: Option<String>,
}

/// Stops a listener gracefully: its port closes at once; each connection stops reading
/// requests, answers the ones it has in flight and closes. Answered once every connection
/// has closed, or when `limit` has passed (then the rest are cut off, as by `Stop`).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Drained")]
pub struct Drain {
    /// The longest the listener waits for its connections.
    pub limit: Duration,
}

/// What a [`Drain`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    /// Requests in flight when the drain began.
    pub in_flight: u64,
    /// Of those, the ones cut off unanswered at the limit.
    pub cut: u64,
}

/// Asks a listener for its counters.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "ListenerStats")]
pub struct GetListenerStats;

/// Counters of one listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// Connections that passed the handshake.
    pub accepted: u64,
    /// Connections refused at the handshake (wrong token or cluster, garbage, silence).
    pub refused: u64,
    /// Connections closed later for bad input (oversized, malformed or stalled frames).
    pub dropped: u64,
    /// Connections open now.
    pub open: u64,
}

/// What the task running one of a link's connections reports to the link.
///
/// `generation` numbers the dialling attempt and the connection it makes; a link never
/// reuses a number, on either lane, so it names the connection (and its lane) alone, and an
/// event about a connection the link has since dropped is recognised and ignored.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) enum LaneEvent {
    /// The connection is up and past the handshake; queued requests are going out.
    Connected {
        /// The connection.
        generation: u64,
    },
    /// The attempt failed; the task has ended.
    DialFailed {
        /// The attempt.
        generation: u64,
        /// Why, for the log and the link's status.
        reason: String,
    },
    /// A reply arrived.
    Reply {
        /// The connection it came on.
        generation: u64,
        /// The request it answers.
        id: u64,
        /// What the caller gets: the encoded reply, or why there is none.
        result: Result<Vec<u8>, RpcError>,
    },
    /// The connection broke or was closed; the task has ended.
    Lost {
        /// The connection.
        generation: u64,
        /// Why, for the log and the link's status.
        reason: String,
    },
}

/// What happened to one accepted connection, reported by its task to the listener's counters.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub(crate) enum ConnectionEvent {
    /// A connection was accepted (before the handshake).
    Opened,
    /// It passed the handshake.
    Accepted,
    /// It failed the handshake and was closed.
    Refused,
    /// It passed the handshake but later sent bad input and was closed.
    Dropped,
    /// It is closed, for whatever reason.
    Closed,
}
