//! The listening side of the TCP transport: a [`Listener`] accepts connections on one port and
//! serves each in a task of its own (`serve.rs`), handing requests to the services of its
//! [`Server`] as [`Dispatch`](crate::messages::net::Dispatch)es. Stopping it closes the port
//! and every connection it accepted, which is what a caller sees when a node dies. Who gets
//! in, and how much memory large frames may hold, is `admission.rs`'s business.
//!
//! With a recording [`Tracer`] ([`Listener::start_traced`]) its connections emit a `deliver`
//! event when a request arrives and a `respond` event when its reply is queued.
//!
//! Handles: [`Stop`] (answered once the port is closed), [`Drain`] (a graceful stop: answered
//! once the requests in flight are answered) and [`GetListenerStats`] (the control protocol,
//! `messages/tcp.rs`); [`ConnectionEvent`]s, which its connection tasks report to a weak
//! recipient for the counters. Sends: `Dispatch` to its services (from those tasks).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::admission::{Admission, Admit, FrameBudget, RateLimitedLog};
use super::methods::MethodTable;
use super::serve::{serve, Inbound};
use super::settings::TcpSettings;
use super::task::TaskGuard;
use crate::messages::lifecycle::Stop;
use crate::messages::net::Server;
use crate::messages::tcp::{ConnectionEvent, Drain, Drained, GetListenerStats, ListenerStats};
use crate::trace::Tracer;

/// Pause after a failed `accept` (out of file descriptors, say), so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// At most one line per this long about refused connections (a flood would write thousands).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// One listening port.
pub struct Listener {
    /// Set until `started` moves it into the accept task.
    socket: Option<TcpListener>,
    services: Option<(Server, MethodTable)>,
    settings: Arc<TcpSettings>,
    label: String,
    accept: Option<TaskGuard>,
    /// What the connections share, once started (the drain reads its count of requests).
    inbound: Option<Rc<Inbound>>,
    /// Set to `true` to drain.
    draining: watch::Sender<bool>,
    stats: ListenerStats,
    trace: Tracer,
}

impl Listener {
    /// Serves `services` (whose methods are `methods`) on an already bound `socket`. `label`
    /// names the port in logs.
    pub fn start(
        socket: TcpListener,
        services: Server,
        methods: MethodTable,
        settings: Arc<TcpSettings>,
        label: &str,
    ) -> std::io::Result<Addr<Listener>> {
        Listener::start_traced(socket, services, methods, settings, label, Tracer::off())
    }

    /// As [`Listener::start`], tracing each request's delivery and response to `trace`
    /// (named after the serving node, [`Tracer::for_node`]).
    pub fn start_traced(
        socket: TcpListener,
        services: Server,
        methods: MethodTable,
        settings: Arc<TcpSettings>,
        label: &str,
        trace: Tracer,
    ) -> std::io::Result<Addr<Listener>> {
        let local_addr = socket.local_addr()?;
        let listener = Listener {
            socket: Some(socket),
            services: Some((services, methods)),
            settings,
            label: format!("{label} {local_addr}"),
            accept: None,
            inbound: None,
            draining: watch::Sender::new(false),
            stats: ListenerStats::default(),
            trace,
        };
        Ok(listener.start())
    }
}

/// Accepts connections until a drain begins; then closes the port and waits for the
/// connections to finish.
async fn accept_loop(socket: TcpListener, inbound: Rc<Inbound>) {
    let mut connections = JoinSet::new();
    let mut draining = inbound.draining.clone();
    loop {
        tokio::select! {
            Ok(_) = draining.wait_for(|&drain| drain) => break,
            accepted = socket.accept() => match accepted {
                Ok((stream, peer)) => {
                    let verdict = inbound.admission.borrow_mut().admit(peer.ip());
                    let Admit::Yes { ticket, evict } = verdict else {
                        inbound.refused(format_args!(
                            "{}: refused connection from {peer}: {} connections already open",
                            inbound.label, inbound.settings.max_connections
                        ));
                        continue;
                    };
                    let task = connections.spawn_local(serve(stream, inbound.clone(), ticket));
                    let evicted: Vec<_> = {
                        let mut admission = inbound.admission.borrow_mut();
                        admission.waiting(ticket, peer.ip(), task);
                        evict.iter().filter_map(|&t| admission.take_evicted(t)).collect()
                    };
                    for task in evicted {
                        task.abort();
                        inbound.report(ConnectionEvent::Refused);
                        inbound.refused(format_args!(
                            "{}: closed the oldest connection still in its handshake to make \
                             room for {peer}",
                            inbound.label
                        ));
                    }
                }
                Err(e) => {
                    log::warn!("{}: accept failed: {e}", inbound.label);
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(socket);
    log::info!(
        "{}: draining: port closed, {} connection(s) finishing {} request(s)",
        inbound.label,
        connections.len(),
        inbound.in_flight.get()
    );
    while connections.join_next().await.is_some() {}
}

impl Actor for Listener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(usize::MAX);
        let (Some(socket), Some((services, methods))) = (self.socket.take(), self.services.take())
        else {
            return;
        };
        let inbound = Rc::new(Inbound {
            services,
            methods,
            admission: RefCell::new(Admission::new(&self.settings)),
            budget: FrameBudget::new(self.settings.max_buffered, self.settings.max_frame),
            refusals: RefCell::new(RateLimitedLog::new(REFUSAL_LOG_INTERVAL)),
            settings: self.settings.clone(),
            label: self.label.clone(),
            events: ctx.address().downgrade().recipient(),
            trace: self.trace.clone(),
            draining: self.draining.subscribe(),
            in_flight: Cell::new(0),
        });
        log::info!("{}: listening", self.label);
        self.inbound = Some(inbound.clone());
        // Dropping the accept task drops its JoinSet, which aborts every connection task.
        self.accept = Some(TaskGuard::spawn(accept_loop(socket, inbound)));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        log::debug!("{}: stopped", self.label);
    }
}

impl Handler<Stop> for Listener {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Stop, _: &mut Self::Context) -> Self::Result {
        let accept = self.accept.take();
        Box::pin(
            async move {
                if let Some(task) = accept {
                    task.cancel().await;
                }
            }
            .into_actor(self)
            .map(|(), _, ctx| ctx.stop()),
        )
    }
}

impl Handler<Drain> for Listener {
    type Result = ResponseActFuture<Self, Drained>;

    fn handle(&mut self, Drain { limit }: Drain, _: &mut Self::Context) -> Self::Result {
        let accept = self.accept.take();
        let at_start = self
            .inbound
            .as_ref()
            .map_or(0, |inbound| inbound.in_flight.get());
        self.draining.send_replace(true);
        Box::pin(
            async move {
                if let Some(task) = accept {
                    // A drain past its limit is cut off: dropping the timed-out future
                    // drops the task's guard, which aborts the connections.
                    let _ = tokio::time::timeout(limit, task.finish()).await;
                }
            }
            .into_actor(self)
            .map(move |(), listener, ctx| {
                let cut = listener
                    .inbound
                    .take()
                    .map_or(0, |inbound| inbound.in_flight.get());
                log::info!(
                    "{}: drained: {} request(s) in flight answered, {cut} cut off",
                    listener.label,
                    at_start.saturating_sub(cut)
                );
                ctx.stop();
                Drained {
                    in_flight: at_start,
                    cut,
                }
            }),
        )
    }
}

impl Handler<GetListenerStats> for Listener {
    type Result = MessageResult<GetListenerStats>;

    fn handle(&mut self, _: GetListenerStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.stats)
    }
}

impl Handler<ConnectionEvent> for Listener {
    type Result = ();

    fn handle(&mut self, event: ConnectionEvent, _: &mut Self::Context) {
        let stats = &mut self.stats;
        match event {
            ConnectionEvent::Opened => stats.open += 1,
            ConnectionEvent::Accepted => stats.accepted += 1,
            ConnectionEvent::Refused => stats.refused += 1,
            ConnectionEvent::Dropped => stats.dropped += 1,
            ConnectionEvent::Closed => stats.open = stats.open.saturating_sub(1),
        }
    }
}
