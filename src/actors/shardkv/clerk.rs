//! The sharded KV clerk: 6.5840's shardkv `Clerk`, with duplicate detection and leader hints.
//!
//! It starts with config 0 and, for each operation, finds the key's group in its config and
//! tries that group's servers (through ends it makes by server name, then keeps), starting
//! with the one that answered last. `WrongGroup` or a round with no answer makes it wait
//! 100 ms and ask the controller for the latest config, then try again, forever. Writes carry
//! the clerk's id and a new number (retries reuse it), so each takes effect once even if its
//! shard moves meanwhile. One operation at a time; [`ShardClerk`] is the async API.
//!
//! Handles: [`ShardClerkOp`]. Sends: `ShardKV.Get` / `ShardKV.PutAppend` to the groups, and
//! Queries to the controller through its [`CtrlerClerk`].

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;

use super::EndMaker;
use crate::actors::client_end::ClientEnd;
use crate::actors::ctrler::clerk::CtrlerClerk;
use crate::messages::ctrler::{key2shard, Config, Gid};
use crate::messages::kv::*;
use crate::messages::net::RpcError;
use crate::messages::shard::{ShardGetArgs, ShardPutAppendArgs};

/// Wait before asking the controller for a newer config (6.5840's clerk: 100 ms).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// One operation for the clerk; answers the value (for Get) or "".
#[derive(Message, Debug, Clone)]
#[rtype(result = "String")]
pub struct ShardClerkOp(pub KvCommand);

/// What the clerk learns while it works: carried into each operation and back.
#[derive(Default)]
struct Knowledge {
    config: Config,
    ends: BTreeMap<String, ClientEnd>,
    /// Per group, the server that answered last.
    leaders: BTreeMap<Gid, usize>,
}

/// The clerk actor.
pub struct ShardClerkActor {
    ctrler: CtrlerClerk,
    make_end: EndMaker,
    client_id: ClientId,
    seq: Seq,
    known: Knowledge,
}

impl Actor for ShardClerkActor {
    type Context = Context<Self>;
}

async fn call(
    end: &ClientEnd,
    command: &KvCommand,
    client_id: ClientId,
    seq: Seq,
) -> Result<KvReply, RpcError> {
    match command {
        KvCommand::Get { key } => end.call(&ShardGetArgs { key: key.clone() }).await,
        KvCommand::Put { key, value } | KvCommand::Append { key, value } => {
            let args = ShardPutAppendArgs {
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

impl Knowledge {
    async fn end(&mut self, make_end: &EndMaker, name: &str) -> Option<ClientEnd> {
        if let Some(end) = self.ends.get(name) {
            return Some(end.clone());
        }
        match make_end(name).await {
            Ok(end) => {
                self.ends.insert(name.to_string(), end.clone());
                Some(end)
            }
            Err(e) => {
                log::warn!("cannot make an end to {name}: {e}");
                None
            }
        }
    }

    /// One try at the group that owns the key's shard in the known config: the answer, or
    /// `None` after `WrongGroup` or when no server answered.
    async fn try_group(
        &mut self,
        make_end: &EndMaker,
        command: &KvCommand,
        client_id: ClientId,
        seq: Seq,
    ) -> Option<String> {
        let gid = self.config.shards[key2shard(command.key())];
        let servers = self.config.groups.get(&gid)?.clone();
        let first = self.leaders.get(&gid).copied().unwrap_or(0);
        for k in 0..servers.len() {
            let server = (first + k) % servers.len();
            let Some(end) = self.end(make_end, &servers[server]).await else {
                continue;
            };
            match call(&end, command, client_id, seq).await {
                Ok(KvReply { result: Ok(value) }) => {
                    self.leaders.insert(gid, server);
                    return Some(value);
                }
                Ok(KvReply {
                    result: Err(KvError::NoKey),
                }) => {
                    self.leaders.insert(gid, server);
                    return Some(String::new());
                }
                Ok(KvReply {
                    result: Err(KvError::WrongGroup),
                }) => return None,
                _ => {}
            }
        }
        None
    }
}

impl Handler<ShardClerkOp> for ShardClerkActor {
    // Atomic: one operation at a time, as 6.5840 assumes.
    type Result = AtomicResponse<Self, String>;

    fn handle(&mut self, op: ShardClerkOp, _: &mut Self::Context) -> Self::Result {
        if !matches!(op.0, KvCommand::Get { .. }) {
            self.seq += 1;
        }
        let (ctrler, make_end, client_id, seq) = (
            self.ctrler.clone(),
            self.make_end.clone(),
            self.client_id,
            self.seq,
        );
        // Nothing else runs while this operation does, so it may own what the clerk knows.
        let mut known = std::mem::take(&mut self.known);
        let attempt = async move {
            loop {
                if let Some(value) = known.try_group(&make_end, &op.0, client_id, seq).await {
                    return (known, value);
                }
                tokio::time::sleep(RETRY_PAUSE).await;
                match ctrler.query(-1).await {
                    Ok(config) => known.config = config,
                    Err(e) => log::warn!("clerk {client_id}: no config: {e}"),
                }
            }
        };
        AtomicResponse::new(Box::pin(attempt.into_actor(self).map(
            |(known, value), clerk, _| {
                clerk.known = known;
                value
            },
        )))
    }
}

/// The async face of a sharded KV clerk.
#[derive(Clone)]
pub struct ShardClerk {
    addr: Addr<ShardClerkActor>,
}

impl ShardClerk {
    /// Starts a clerk that asks `ctrler` for configs and reaches groups through `make_end`.
    pub fn start(ctrler: CtrlerClerk, make_end: EndMaker, client_id: ClientId) -> ShardClerk {
        let actor = ShardClerkActor {
            ctrler,
            make_end,
            client_id,
            seq: 0,
            known: Knowledge::default(),
        };
        ShardClerk {
            addr: actor.start(),
        }
    }

    async fn run(&self, command: KvCommand) -> String {
        match self.addr.send(ShardClerkOp(command)).await {
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
