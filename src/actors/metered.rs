//! Counting wrappers a node puts in front of what it serves and what it calls, when its
//! [`Metrics`] are on, so that neither the services nor the transport count anything.
//!
//! A [`MeteredService`] stands where a service stands in a [`Server`](crate::messages::net::Server):
//! it passes each [`Dispatch`] on to the service and counts the request by method, outcome
//! and latency (a KV reply's `WrongLeader` or `SessionExpired` is an outcome of its own). A
//! [`MeteredLink`] stands where a transport stands behind a client end: it passes each
//! [`Call`] on and counts the RPC, its request and reply bytes and whether it failed, by
//! destination peer and method.
//!
//! `MeteredService` handles [`Dispatch`] and sends it to its service; `MeteredLink` handles
//! [`Call`] and sends it to its transport.

use std::time::Instant;

use actix::prelude::*;
use serde::de::IgnoredAny;
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::messages::kv::{GetArgs, KvError, PutAppendArgs, RegisterArgs};
use crate::messages::net::{Call, Dispatch, Rpc, RpcError};
use crate::metrics::Metrics;

/// A service, counted.
pub struct MeteredService {
    service: Recipient<Dispatch>,
    metrics: Metrics,
}

impl MeteredService {
    /// Counts into `metrics` every request `service` answers.
    pub fn new(service: Recipient<Dispatch>, metrics: Metrics) -> Self {
        MeteredService { service, metrics }
    }
}

impl Actor for MeteredService {
    type Context = Context<Self>;
}

/// The part of a KV reply that says whether it was served (every KV reply is a struct whose
/// one field is such a result).
#[derive(Deserialize)]
struct KvOutcome {
    result: Result<IgnoredAny, KvError>,
}

/// What became of a request, as a label.
fn outcome(method: &str, reply: &Result<Result<Vec<u8>, RpcError>, MailboxError>) -> &'static str {
    match reply {
        Ok(Ok(bytes)) => {
            let kv = [GetArgs::METHOD, PutAppendArgs::METHOD, RegisterArgs::METHOD];
            if !kv.contains(&method) {
                return "ok";
            }
            match rmp_serde::from_slice::<KvOutcome>(bytes) {
                Ok(KvOutcome { result: Ok(_) }) => "ok",
                Ok(KvOutcome {
                    result: Err(KvError::WrongLeader),
                }) => "wrong_leader",
                Ok(KvOutcome {
                    result: Err(KvError::SessionExpired),
                }) => "session_expired",
                Err(_) => "undecodable_reply",
            }
        }
        Ok(Err(RpcError::Unreachable)) => "unreachable",
        Ok(Err(RpcError::UnknownMethod(_))) => "unknown_method",
        Ok(Err(RpcError::Codec(_))) => "bad_request",
        Ok(Err(RpcError::NetworkDown)) => "network_down",
        Err(_) => "service_stopped",
    }
}

impl Handler<Dispatch> for MeteredService {
    type Result = ResponseFuture<Result<Vec<u8>, RpcError>>;

    fn handle(&mut self, msg: Dispatch, _: &mut Self::Context) -> Self::Result {
        let started = Instant::now();
        let method = msg.method;
        // Queued now, so requests reach the service in the order they came.
        let reply = self.service.send(msg);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let reply = reply.await;
            metrics.client_request(method, outcome(method, &reply), started.elapsed());
            reply.unwrap_or(Err(RpcError::Unreachable))
        })
    }
}

/// A transport to one peer, counted.
pub struct MeteredLink {
    to: usize,
    transport: Recipient<Call>,
    metrics: Metrics,
}

impl MeteredLink {
    /// Counts into `metrics` every call to peer `to` that goes through `transport`.
    pub fn new(to: usize, transport: Recipient<Call>, metrics: Metrics) -> Self {
        MeteredLink {
            to,
            transport,
            metrics,
        }
    }
}

impl Actor for MeteredLink {
    type Context = Context<Self>;
}

impl Handler<Call> for MeteredLink {
    type Result = ();

    fn handle(&mut self, call: Call, _: &mut Self::Context) {
        let Call {
            end,
            method,
            args,
            reply_to,
        } = call;
        let sent = args.len();
        let (counted, reply) = oneshot::channel();
        self.transport.do_send(Call {
            end,
            method,
            args,
            reply_to: counted,
        });
        let (to, metrics) = (self.to, self.metrics.clone());
        actix::spawn(async move {
            // A transport that dropped the call answers as the client end would have seen it.
            let result = reply.await.unwrap_or(Err(RpcError::NetworkDown));
            metrics.rpc(to, method, sent, result.as_ref().ok().map(Vec::len));
            let _ = reply_to.send(result);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::kv::KvReply;
    use crate::messages::net::encode;

    #[test]
    fn kv_replies_are_told_apart_by_their_result() {
        let reply = |result| Ok(Ok(encode(&KvReply { result }).expect("encodes")));
        assert_eq!(outcome(GetArgs::METHOD, &reply(Ok(None))), "ok");
        let wrong = reply(Err(KvError::WrongLeader));
        assert_eq!(outcome(PutAppendArgs::METHOD, &wrong), "wrong_leader");
        let expired = reply(Err(KvError::SessionExpired));
        assert_eq!(outcome(PutAppendArgs::METHOD, &expired), "session_expired");
        assert_eq!(outcome("Admin.Status", &wrong), "ok");
        assert_eq!(
            outcome("Admin.Status", &Ok(Err(RpcError::Unreachable))),
            "unreachable"
        );
    }
}
