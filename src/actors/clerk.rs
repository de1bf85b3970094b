//! The KV clerk: a client of a replicated KV service.
//!
//! A [`ClerkActor`] has a client id, numbers its requests, remembers which server answered last
//! (the leader) and retries every request, on the next server after a failure or
//! `WrongLeader`, until it succeeds; the servers' session tables make each operation take
//! effect exactly once. It runs one operation at a time. [`Clerk`] is the async API on top:
//! `clerk.put(k, v).await`.
//!
//! Handles: [`ClerkOp`]. Sends: `KVServer.Get` / `KVServer.PutAppend` through its client ends.

use std::time::Duration;

use actix::prelude::*;

use crate::actors::client_end::ClientEnd;
use crate::messages::kv::*;
use crate::messages::net::RpcError;
use crate::messages::rsm::{ClientId, Seq};

/// Pause after a full round of servers without success, so a clerk does not spin while the
/// cluster elects a leader.
const ROUND_PAUSE: Duration = Duration::from_millis(10);

/// The clerk actor.
pub struct ClerkActor {
    servers: Vec<ClientEnd>,
    client_id: ClientId,
    seq: Seq,
    leader: usize,
}

impl ClerkActor {
    /// A clerk reaching the servers through `servers`.
    pub fn new(servers: Vec<ClientEnd>, client_id: ClientId) -> Self {
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
    match command {
        KvCommand::Get { key } => {
            let args = GetArgs {
                key: key.clone(),
                client_id,
                seq,
            };
            end.call(&args).await
        }
        KvCommand::Put { key, value } | KvCommand::Append { key, value } => {
            let args = PutAppendArgs {
                key: key.clone(),
                value: value.clone(),
                append: matches!(command, KvCommand::Append { .. }),
                client_id,
                seq,
            };
            end.call(&args).await
        }
    }
}

impl Handler<ClerkOp> for ClerkActor {
    // Atomic: the clerk handles one operation at a time, as 6.5840 assumes.
    type Result = AtomicResponse<Self, String>;

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
                            result: Err(KvError::NoKey),
                        }) => return (server, String::new()),
                        _ => server = (server + 1) % n,
                    }
                }
                tokio::time::sleep(ROUND_PAUSE).await;
            }
        };
        AtomicResponse::new(Box::pin(attempt.into_actor(self).map(
            |(leader, value), clerk, _| {
                clerk.leader = leader;
                value
            },
        )))
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

    /// Carries out `command`: the value for a Get ("" if missing), "" otherwise.
    pub async fn run(&self, command: KvCommand) -> String {
        match self.ops.send(ClerkOp(command)).await {
            Ok(value) => value,
            Err(e) => {
                log::error!("clerk is gone: {e}");
                String::new()
            }
        }
    }

    /// The value of `key` ("" if missing).
    pub async fn get(&self, key: &str) -> String {
        let key = key.to_string();
        self.run(KvCommand::Get { key }).await
    }

    /// Sets `key` to `value`.
    pub async fn put(&self, key: &str, value: &str) {
        let (key, value) = (key.to_string(), value.to_string());
        self.run(KvCommand::Put { key, value }).await;
    }

    /// Appends `value` to `key`.
    pub async fn append(&self, key: &str, value: &str) {
        let (key, value) = (key.to_string(), value.to_string());
        self.run(KvCommand::Append { key, value }).await;
    }
}
