//! A client end: the only way to call a server, whatever carries the call.
//!
//! An end has a name and a transport, any actor that handles [`Call`]: the simulated network
//! in tests, the TCP transport in deployment. Raft peers, servers and clerks hold ends and never
//! know which transport is behind them.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::messages::net::*;

/// Makes a fresh client end to a server given by name (6.5840's `make_end`), for calls to
/// servers that are not known in advance: other replica groups.
pub type EndMaker = Rc<dyn Fn(&str) -> Pin<Box<dyn Future<Output = Result<ClientEnd, NetError>>>>>;

/// One named client end: the only way to call a server.
#[derive(Clone)]
pub struct ClientEnd {
    name: EndName,
    transport: Recipient<Call>,
}

impl fmt::Debug for ClientEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ClientEnd").field(&self.name).finish()
    }
}

impl ClientEnd {
    /// An end named `name` whose calls go to `transport`.
    pub fn new(name: &str, transport: Recipient<Call>) -> Self {
        ClientEnd {
            name: name.to_string(),
            transport,
        }
    }

    /// The end's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Calls `R::METHOD` on the server this end is connected to. `Err(Unreachable)` is labrpc's
    /// `false`: the request or reply was lost or the server is dead or cut off.
    pub async fn call<R: Rpc>(&self, args: &R) -> Result<R::Reply, RpcError> {
        let reply = self.call_raw(R::METHOD, encode_request(args)?).await?;
        decode(&reply)
    }

    /// Calls with an already encoded request and returns the encoded reply.
    pub async fn call_raw(&self, method: &'static str, args: Vec<u8>) -> Result<Vec<u8>, RpcError> {
        let (reply_to, reply) = oneshot::channel();
        self.transport.do_send(Call {
            end: self.name.clone(),
            method,
            args,
            reply_to,
        });
        reply.await.map_err(|_| RpcError::NetworkDown)?
    }
}
