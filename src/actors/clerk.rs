//! The KV clerk: a client of a replicated KV service.
//!
//! A `ClerkActor` has a client id, numbers its requests, remembers which server answered last
//! (the leader) and retries every request, on the next server after a failure or
//! `WrongLeader`, until it succeeds; the servers' session tables make each operation take
//! effect exactly once. It runs one operation at a time. [`Clerk`] is the async API on top:
//! `clerk.put(k, v).await?`, `clerk.get(k).await?` (`Some(value)`, or `None` for a missing
//! key). Keys and values are bytes; an operation fails only with [`ClerkError::Stopped`], when
//! the clerk actor is gone.
//!
//! Handles: [`ClerkOp`], [`Stop`]. Sends: `KVServer.Get` / `KVServer.PutAppend` through its
//! client ends.

use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;

use crate::actors::client_end::ClientEnd;
use crate::messages::kv::*;
use crate::messages::lifecycle::Stop;
use crate::messages::net::RpcError;
use crate::messages::rsm::{ClientId, Seq};

/// Pause after a full round of servers without success, so a clerk does not spin while the
/// cluster elects a leader.
const ROUND_PAUSE: Duration = Duration::from_millis(10);

/// The clerk actor.
pub(crate) struct ClerkActor {
    servers: Vec<ClientEnd>,
    client_id: ClientId,
    seq: Seq,
    leader: usize,
}

impl ClerkActor {
    /// A clerk reaching the servers through `servers`.
    pub(crate) fn new(servers: Vec<ClientEnd>, client_id: ClientId) -> Self {
        ClerkActor {
            servers,
            client_id,
            seq: 0,
            leader: 0,
        }
    }
}

impl Actor for ClerkActor {
    type Context = Context<Self>;
}

async fn call(
    end: &ClientEnd,
    command: &KvCommand,
    client_id: ClientId,
    seq: Seq,
) -> Result<KvReply, RpcError> {
    let (op, key, value) = match command {
        KvCommand::Get { key } => {
            let args = GetArgs {
                key: key.clone(),
                client_id,
                seq,
            };
            return end.call(&args).await;
        }
        KvCommand::Put { key, value } => (WriteOp::Put, key, value),
        KvCommand::Append { key, value } => (WriteOp::Append, key, value),
    };
    let args = PutAppendArgs {
        key: key.clone(),
        value: value.clone(),
        op,
        client_id,
        seq,
    };
    end.call(&args).await
}

impl Handler<ClerkOp> for ClerkActor {
    // Atomic: the clerk handles one operation at a time, as 6.5840 assumes.
    type Result = AtomicResponse<Self, Result<Option<Bytes>, ClerkError>>;

    fn handle(&mut self, op: ClerkOp, _: &mut Self::Context) -> Self::Result {
        self.seq += 1;
        let (servers, client_id, seq, first) =
            (self.servers.clone(), self.client_id, self.seq, self.leader);
        let attempt = async move {
            let n = servers.len().max(1);
            let mut server = first;
            loop {
                for _ in 0..n {
                    let Some(end) = servers.get(server) else {
                        break;
                    };
                    match call(end, &op.0, client_id, seq).await {
                        Ok(KvReply { result: Ok(value) }) => return (server, value),
                        Ok(KvReply {
                            result: Err(KvError::WrongLeader),
                        })
                        | Err(_) => server = (server + 1) % n,
                    }
                }
                tokio::time::sleep(ROUND_PAUSE).await;
            }
        };
        AtomicResponse::new(Box::pin(attempt.into_actor(self).map(
            |(leader, value), clerk, _| {
                clerk.leader = leader;
                Ok(value)
            },
        )))
    }
}

impl Handler<Stop> for ClerkActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// The async face of a clerk: any actor that carries out [`ClerkOp`]s (the KV clerk here, the
/// sharded KV clerk in `actors::shardkv::clerk`).
#[derive(Clone)]
pub struct Clerk {
    ops: Recipient<ClerkOp>,
}

impl Clerk {
    /// Starts a KV clerk actor.
    pub fn start(servers: Vec<ClientEnd>, client_id: ClientId) -> Clerk {
        Clerk::of(ClerkActor::new(servers, client_id).start().recipient())
    }

    /// The async face of any clerk actor.
    pub fn of(ops: Recipient<ClerkOp>) -> Clerk {
        Clerk { ops }
    }

    /// Carries out `command`: the value for a Get (`None` if the key is missing), `None`
    /// for a Put or an Append; [`ClerkError::Stopped`] if the clerk actor is gone.
    pub async fn run(&self, command: KvCommand) -> Result<Option<Bytes>, ClerkError> {
        self.ops.send(ClerkOp(command)).await.unwrap_or_else(|e| {
            log::debug!("clerk is gone: {e}");
            Err(ClerkError::Stopped)
        })
    }

    /// The value of `key`, `None` if it has none.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>, ClerkError> {
        self.run(KvCommand::Get { key: key.into() }).await
    }

    /// The value of `key` as text (invalid UTF-8 replaced by U+FFFD), `None` if it has none.
    pub async fn get_string(&self, key: impl Into<Bytes>) -> Result<Option<String>, ClerkError> {
        let value = self.get(key).await?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Sets `key` to `value`.
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<(), ClerkError> {
        let (key, value) = (key.into(), value.into());
        self.run(KvCommand::Put { key, value }).await.map(drop)
    }

    /// Appends `value` to `key`'s value (a missing key counts as empty).
    pub async fn append(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<(), ClerkError> {
        let (key, value) = (key.into(), value.into());
        self.run(KvCommand::Append { key, value }).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix::test]
    async fn a_stopped_clerk_answers_an_error_not_an_empty_value() {
        let actor = ClerkActor::new(Vec::new(), 1).start();
        let clerk = Clerk::of(actor.clone().recipient());
        actor.send(Stop).await.expect("the clerk takes Stop");
        assert_eq!(clerk.get("k").await, Err(ClerkError::Stopped));
        assert_eq!(clerk.get_string("k").await, Err(ClerkError::Stopped));
        assert_eq!(clerk.put("k", "v").await, Err(ClerkError::Stopped));
        assert_eq!(clerk.append("k", "v").await, Err(ClerkError::Stopped));
    }
}
