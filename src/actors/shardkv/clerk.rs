//! The sharded KV clerk: 6.5840's shardkv `Clerk`, with duplicate detection and leader hints.
//!
//! It starts with config 0 and, for each operation, finds the key's group in its config and
//! tries that group's servers (through ends it makes by server name, then keeps), starting
//! with the one that answered last. On `WrongGroup`, or when the config names no group for the
//! key, it waits 100 ms and asks the controller for the latest config (as 6.5840's clerk does).
//! When no server of the group answered (lost messages, no leader yet), it tries the group
//! again after a short pause like the KV clerk, and asks the controller again only once that
//! has gone on for 100 ms, in case the group is gone. It retries forever. Writes carry the
//! clerk's id and a new number (retries reuse it), so each takes effect once even if its
//! shard moves meanwhile. One operation at a time; [`start`] gives it the same async [`Clerk`] face as the KV clerk.
//!
//! Handles: [`ClerkOp`]. Sends: `ShardKV.Get` / `ShardKV.PutAppend` to the groups, and
//! Queries to the controller through its [`CtrlerClerk`].

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use tokio::time::Instant;

use crate::actors::clerk::Clerk;
use crate::actors::client_end::{ClientEnd, EndMaker};
use crate::actors::ctrler::clerk::CtrlerClerk;
use crate::messages::ctrler::{key2shard, Gid, ShardConfig};
use crate::messages::kv::*;
use crate::messages::net::RpcError;
use crate::messages::rsm::{ClientId, Seq};
use crate::messages::shard::{ShardGetArgs, ShardKvError, ShardKvReply, ShardPutAppendArgs};

/// Wait before asking the controller for a newer config (6.5840's clerk: 100 ms); also how
/// long a group may fail to answer before the clerk asks anyway.
const CONFIG_PAUSE: Duration = Duration::from_millis(100);
/// Pause between rounds over a group that did not answer (the KV clerk's).
const ROUND_PAUSE: Duration = Duration::from_millis(10);

/// How one round over the key's group ended.
enum Attempt {
    /// The value of a Get (`None` for a missing key), `None` for a write.
    Answer(Option<Bytes>),
    /// The config is stale: the group refused the key, or there is no group for it.
    Stale,
    /// No server of the group answered.
    NoAnswer,
}

/// What the clerk learns while it works: carried into each operation and back.
#[derive(Default)]
struct Knowledge {
    config: ShardConfig,
    ends: BTreeMap<String, ClientEnd>,
    /// Per group, the server that answered last.
    leaders: BTreeMap<Gid, usize>,
}

/// The clerk actor.
pub(crate) struct ShardClerkActor {
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
) -> Result<ShardKvReply, RpcError> {
    let (op, key, value) = match command {
        KvCommand::Get { key } => return end.call(&ShardGetArgs { key: key.clone() }).await,
        KvCommand::Put { key, value } => (WriteOp::Put, key, value),
        KvCommand::Append { key, value } => (WriteOp::Append, key, value),
    };
    let args = ShardPutAppendArgs {
        key: key.clone(),
        value: value.clone(),
        op,
        client_id,
        seq,
    };
    end.call(&args).await
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

    /// One round over the servers of the group that owns the key's shard in the known config.
    async fn try_group(
        &mut self,
        make_end: &EndMaker,
        command: &KvCommand,
        client_id: ClientId,
        seq: Seq,
    ) -> Attempt {
        let gid = self.config.shards[key2shard(command.key())];
        let Some(servers) = self.config.groups.get(&gid).cloned() else {
            return Attempt::Stale;
        };
        let first = self.leaders.get(&gid).copied().unwrap_or(0);
        for k in 0..servers.len() {
            let server = (first + k) % servers.len();
            let Some(end) = self.end(make_end, &servers[server]).await else {
                continue;
            };
            match call(&end, command, client_id, seq).await {
                Ok(ShardKvReply { result: Ok(value) }) => {
                    self.leaders.insert(gid, server);
                    return Attempt::Answer(value);
                }
                Ok(ShardKvReply {
                    result: Err(ShardKvError::WrongGroup),
                }) => return Attempt::Stale,
                Ok(ShardKvReply {
                    result: Err(ShardKvError::WrongLeader),
                })
                | Err(_) => {}
            }
        }
        Attempt::NoAnswer
    }
}

impl Handler<ClerkOp> for ShardClerkActor {
    // Atomic: one operation at a time, as 6.5840 assumes.
    type Result = AtomicResponse<Self, Result<Option<Bytes>, ClerkError>>;

    fn handle(&mut self, op: ClerkOp, _: &mut Self::Context) -> Self::Result {
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
            let mut failing_since = None;
            loop {
                match known.try_group(&make_end, &op.0, client_id, seq).await {
                    Attempt::Answer(value) => return (known, value),
                    Attempt::Stale => tokio::time::sleep(CONFIG_PAUSE).await,
                    Attempt::NoAnswer => {
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        if since.elapsed() < CONFIG_PAUSE {
                            tokio::time::sleep(ROUND_PAUSE).await;
                            continue;
                        }
                    }
                }
                failing_since = None;
                match ctrler.latest().await {
                    Ok(config) => known.config = config,
                    Err(e) => log::warn!("clerk {client_id}: no config: {e}"),
                }
            }
        };
        AtomicResponse::new(Box::pin(attempt.into_actor(self).map(
            |(known, value), clerk, _| {
                clerk.known = known;
                Ok(value)
            },
        )))
    }
}

/// Starts a sharded KV clerk that asks `ctrler` for configs and reaches groups through
/// `make_end`; it has the same async face as the KV clerk.
pub fn start(ctrler: CtrlerClerk, make_end: EndMaker, client_id: ClientId) -> Clerk {
    let actor = ShardClerkActor {
        ctrler,
        make_end,
        client_id,
        seq: 0,
        known: Knowledge::default(),
    };
    Clerk::of(actor.start().recipient())
}
