//! The real transport: RPCs over TCP between processes and machines, behind the same
//! interface as the simulated network, so Raft peers, KV servers and clerks run unchanged.
//!
//! - Dialling side: a [`Link`] actor per remote address handles [`Call`](crate::messages::net::Call);
//!   a [`ClientEnd`] made with [`client_end`] calls through it. `Err(Unreachable)` whenever
//!   labrpc's `Call` would return false: the connection is down, breaks, or no reply comes in
//!   time.
//! - Listening side: a [`Listener`] actor accepts connections on a port and hands requests to
//!   the services of a [`Server`](crate::messages::net::Server), as the simulated network does.
//! - Control: links and listeners are driven with the messages of
//!   [`messages::tcp`](crate::messages::tcp) (block a link, ask a link's status or a listener's
//!   counters) and stopped with [`Stop`](crate::messages::lifecycle::Stop). The tasks that run
//!   their connections report back with that module's `LaneEvent` and `ConnectionEvent`, sent
//!   to a weak recipient: no task file imports the actor that owns it.
//!
//! Where to read: `frame.rs` (the wire format: length-prefixed rmp-serde frames with a
//! maximum size, and why the framing is ours), `connection.rs` (moving frames over a socket),
//! `tls.rs` (mutual TLS under everything, when configured), `handshake.rs` (cluster name,
//! shared token, lane), `link.rs` (calls, request ids,
//! reconnect with back-off, two lanes so snapshots never delay heartbeats) and `lane.rs` (the
//! task that dials, writes and reads one lane's connection), `listener.rs` (the accept loop
//! and counters), `admission.rs` (limits on connections in and past their handshake, a flood
//! displaces only itself; the memory large frames may hold) and `serve.rs` (one accepted connection), `methods.rs` (wire method names
//! back to `&'static str`), `settings.rs` (timeouts and limits), `task.rs` (tasks that end
//! with their owner).

mod admission;
mod connection;
mod frame;
mod handshake;
mod lane;
mod link;
mod listener;
mod methods;
mod serve;
mod settings;
mod task;
mod tls;

pub use frame::{Frame, FrameError, Hello, Lane, Outcome, PROTOCOL_VERSION};
pub(crate) use handshake::HELLO_MAX_FRAME;
pub use link::Link;
pub use listener::Listener;
pub use methods::MethodTable;
pub use settings::TcpSettings;
pub use tls::{TlsConfig, CLIENT_NAME, SERVER_NAME};

use actix::Addr;

use crate::actors::client_end::ClientEnd;

/// A client end named `name` whose calls travel over `link`.
pub fn client_end(name: &str, link: &Addr<Link>) -> ClientEnd {
    ClientEnd::new(name, link.clone().recipient())
}
