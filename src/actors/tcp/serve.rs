//! The serving side of one accepted connection: the handshake, then a loop that reads request
//! frames, hands each to its service as a [`Dispatch`] in a task of its own (so many requests
//! are in flight and a slow one holds up nobody) and queues the replies for the writer task,
//! tagged with the request's id.
//!
//! When its listener drains, a connection stops reading requests, answers those in flight,
//! sends the replies and closes.
//!
//! Bad input never stops the listener: a connection that fails the handshake, announces an
//! oversized frame, sends bytes that are not a frame or stalls in the middle of one is logged
//! and closed, and only that connection.
//!
//! Traces each request's `deliver` and `respond` when its listener records a trace.
//!
//! Sends: [`Dispatch`] to the services; [`ConnectionEvent`]s (opened, accepted, refused,
//! dropped, closed) to the recipient in [`Inbound`], the listener's counters.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use actix::WeakRecipient;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{timeout_at, Instant};

use super::admission::{Admission, FrameBudget, RateLimitedLog};
use super::connection::Connection;
use super::frame::{Frame, Outcome, REQUEST_OVERHEAD};
use super::handshake::{self, HandshakeError};
use super::methods::MethodTable;
use super::settings::TcpSettings;
use super::task::TaskGuard;
use crate::messages::net::{service_of, Dispatch, RpcError, Server};
use crate::messages::tcp::ConnectionEvent;
use crate::trace::{EventKind, NetStep, Tracer};

/// Replies that may wait for the writer of one connection.
const REPLY_QUEUE: usize = 1024;

/// What every connection of one listener shares.
pub(crate) struct Inbound {
    /// The services requests go to.
    pub services: Server,
    /// The method names they handle.
    pub methods: MethodTable,
    /// Which connections are in their handshake and which passed it.
    pub admission: RefCell<Admission>,
    /// The memory large frames may hold while they are read.
    pub budget: FrameBudget,
    /// Refusals, logged at most once a second.
    pub refusals: RefCell<RateLimitedLog>,
    /// Transport settings.
    pub settings: Arc<TcpSettings>,
    /// Names the listener in logs (for example `"node 1 peer port 127.0.0.1:7001"`).
    pub label: String,
    /// The listener's counters. Weak: the listener owns the tasks that hold this.
    pub events: WeakRecipient<ConnectionEvent>,
    /// Where requests' delivery and response are traced, named after the serving node.
    pub trace: Tracer,
    /// `true` once the listener drains.
    pub draining: watch::Receiver<bool>,
    /// Requests being served now, on every connection.
    pub in_flight: Cell<u64>,
}

impl Inbound {
    /// Traces step `step` of request `id`. The caller's name is not on the wire: `from` is
    /// left empty, and the caller's own `send` event (same `id`) names it.
    fn trace_step(&self, step: NetStep, id: u64, method: &str) {
        self.trace.emit(|| EventKind::Net {
            step,
            id,
            kind: method.to_string(),
            from: String::new(),
            to: self.trace.node().to_string(),
            dup: false,
        });
    }

    /// Tells the listener's counters.
    pub(crate) fn report(&self, event: ConnectionEvent) {
        if let Some(events) = self.events.upgrade() {
            events.do_send(event);
        }
    }

    /// Logs a refused connection, unless too many were logged just now.
    pub(crate) fn refused(&self, what: std::fmt::Arguments<'_>) {
        self.refusals.borrow_mut().warn(what);
    }

    /// Hands one request to its service and returns what to answer.
    async fn call(&self, wire_method: &str, args: Vec<u8>) -> Outcome {
        let Some(method) = self.methods.resolve(wire_method) else {
            log::warn!("{}: request for unknown method {wire_method:?}", self.label);
            return Outcome::UnknownMethod(wire_method.to_string());
        };
        let Some(service) = self.services.services.get(service_of(method)) else {
            log::warn!("{}: no service for method {method}", self.label);
            return Outcome::UnknownMethod(method.to_string());
        };
        match service.send(Dispatch { method, args }).await {
            Ok(Ok(reply)) if reply.len() + REQUEST_OVERHEAD > self.settings.max_frame => {
                let why = format!(
                    "reply to {method} of {} bytes exceeds the maximum frame size {}",
                    reply.len(),
                    self.settings.max_frame
                );
                log::error!("{}: {why}", self.label);
                Outcome::Failed(why)
            }
            Ok(Ok(reply)) => Outcome::Ok(reply),
            Ok(Err(RpcError::UnknownMethod(method))) => Outcome::UnknownMethod(method),
            Ok(Err(e)) => Outcome::Failed(e.to_string()),
            Err(_) => Outcome::Unavailable,
        }
    }
}

/// Keeps the listener's count of open connections right, however the connection ends.
struct OpenConnection<'a>(&'a Inbound);

impl<'a> OpenConnection<'a> {
    fn new(inbound: &'a Inbound) -> Self {
        inbound.report(ConnectionEvent::Opened);
        OpenConnection(inbound)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.report(ConnectionEvent::Closed);
    }
}

/// Counts one request in [`Inbound::in_flight`] while it is served, however it ends.
struct InFlight<'a>(&'a Inbound);

impl<'a> InFlight<'a> {
    fn new(inbound: &'a Inbound) -> Self {
        inbound.in_flight.set(inbound.in_flight.get() + 1);
        InFlight(inbound)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .set(self.0.in_flight.get().saturating_sub(1));
    }
}

/// Keeps the listener's admission right, however the connection ends (an eviction included).
struct Ticket<'a> {
    inbound: &'a Inbound,
    id: u64,
    authenticated: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.inbound
            .admission
            .borrow_mut()
            .closed(self.id, self.authenticated);
    }
}

/// Serves one accepted connection, admitted under `ticket`, until it closes or misbehaves.
pub(crate) async fn serve(stream: TcpStream, inbound: Rc<Inbound>, ticket: u64) {
    let _open = OpenConnection::new(&inbound);
    let mut ticket = Ticket {
        inbound: &inbound,
        id: ticket,
        authenticated: false,
    };
    let label = &inbound.label;
    let settings = &inbound.settings;
    let peer = match stream.peer_addr() {
        Ok(peer) => peer,
        Err(e) => {
            log::debug!("{label}: connection closed at once: {e}");
            return;
        }
    };
    // TLS (when on) and our handshake, within one limit. The connection stays open until the
    // refusal is logged: whoever was refused sees the close after the log line.
    let deadline = Instant::now() + settings.handshake_timeout;
    let mut refused_conn = None;
    let handshake = match timeout_at(deadline, Connection::accepted(stream, settings)).await {
        Ok(Ok(mut conn)) => {
            match timeout_at(deadline, handshake::answer(&mut conn, settings)).await {
                Ok(Ok(lane)) => Ok(Ok((conn, lane))),
                Ok(Err(e)) => {
                    refused_conn = Some(conn);
                    Ok(Err(match e {
                        HandshakeError::Closed => "closed before the handshake".to_string(),
                        other => other.to_string(),
                    }))
                }
                Err(elapsed) => {
                    refused_conn = Some(conn);
                    Err(elapsed)
                }
            }
        }
        Ok(Err(why)) => Ok(Err(why)),
        Err(elapsed) => Err(elapsed),
    };
    let (conn, lane) = match handshake {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(why)) => {
            inbound.refused(format_args!(
                "{label}: refused connection from {peer}: {why}"
            ));
            inbound.report(ConnectionEvent::Refused);
            drop(refused_conn);
            return;
        }
        Err(_) => {
            inbound.refused(format_args!(
                "{label}: refused connection from {peer}: no handshake within {:?}",
                settings.handshake_timeout
            ));
            inbound.report(ConnectionEvent::Refused);
            drop(refused_conn);
            return;
        }
    };
    if !inbound.admission.borrow_mut().authenticated(ticket.id) {
        inbound.refused(format_args!(
            "{label}: closed connection from {peer}: {} connections already open",
            settings.max_connections
        ));
        inbound.report(ConnectionEvent::Refused);
        return;
    }
    ticket.authenticated = true;
    log::debug!("{label}: accepted {lane:?} connection from {peer}");
    inbound.report(ConnectionEvent::Accepted);

    let Connection {
        mut reader, writer, ..
    } = conn;
    reader.set_budget(inbound.budget.clone());
    let (replies, queue) = mpsc::channel(REPLY_QUEUE);
    let writer = TaskGuard::spawn(async move {
        if let Err(e) = writer.drain(queue).await {
            log::debug!("connection from {peer}: cannot send replies: {e}");
        }
    });
    let mut in_flight = JoinSet::new();
    let mut draining = inbound.draining.clone();
    loop {
        if *draining.borrow() && in_flight.is_empty() {
            // Every reply is queued: the writer sends them and ends, then the socket closes.
            drop(replies);
            writer.finish().await;
            log::debug!("{label}: closed the connection from {peer}: draining");
            return;
        }
        tokio::select! {
            Ok(()) = draining.changed(), if !*draining.borrow() => {}
            frame = reader.read_frame(),
                if !*draining.borrow() && in_flight.len() < settings.max_in_flight => {
                match frame {
                    Ok(Some(Frame::Request { id, method, args })) => {
                        let (inbound, replies) = (inbound.clone(), replies.clone());
                        inbound.trace_step(NetStep::Deliver, id, &method);
                        in_flight.spawn_local(async move {
                            let _counted = InFlight::new(&inbound);
                            let outcome = inbound.call(&method, args).await;
                            inbound.trace_step(NetStep::Respond, id, &method);
                            // The connection may be gone by now; then so is the caller.
                            let _ = replies.send(Frame::Reply { id, outcome }).await;
                        });
                    }
                    Ok(Some(other)) => {
                        log::warn!(
                            "{label}: dropped connection from {peer}: unexpected {} frame",
                            other.kind()
                        );
                        inbound.report(ConnectionEvent::Dropped);
                        break;
                    }
                    Ok(None) => {
                        log::debug!("{label}: {peer} closed its {lane:?} connection");
                        break;
                    }
                    Err(e) => {
                        log::warn!("{label}: dropped connection from {peer}: {e}");
                        inbound.report(ConnectionEvent::Dropped);
                        break;
                    }
                }
            }
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
}
