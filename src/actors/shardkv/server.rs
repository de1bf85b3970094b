//! The network face of one sharded KV group member: the "ShardKV" service.
//!
//! A client's `ShardKV.PutAppend` goes through the group's log without an RSM session: the
//! store keeps one duplicate table per shard, which travels with the shard. A `ShardKV.Get` is
//! a [`LinearizableRead`] (no log entry), answered `WrongGroup` when the group does not serve
//! the key's shard in the state the read sees. From other groups' migrators, `ShardKV.PullShards` is answered from the applied
//! state with [`Read`] (a frozen copy never changes), and `ShardKV.DeleteShards` goes through
//! the log. For operators, `ShardKV.Status` reports the member's config and shard statuses
//! from its applied state with [`Read`].
//!
//! Handles: [`Dispatch`]. Sends: [`Submit`], [`LinearizableRead`] and [`Read`] to its [`Rsm`].

use actix::prelude::*;
use bytes::Bytes;

use super::store::{ShardCommand, ShardOutput, ShardStore};
use crate::actors::rsm::Rsm;
use crate::messages::net::{encode, Dispatch, Rpc, RpcError};
use crate::messages::rsm::Submit;
use crate::messages::rsm::{LinearizableRead, Read, Session, SubmitError};
use crate::messages::shard::*;

/// The network face of one group member.
pub struct ShardKv {
    pub(super) rsm: Addr<Rsm<ShardStore>>,
}

impl Actor for ShardKv {
    type Context = Context<Self>;
}

/// A client's answer from what the replica answered.
fn client_reply(
    answer: Result<Result<ShardOutput, SubmitError>, MailboxError>,
) -> Result<Option<Bytes>, ShardKvError> {
    match answer {
        Ok(Ok(ShardOutput::Kv(value))) => Ok(value),
        Ok(Ok(ShardOutput::WrongGroup)) => Err(ShardKvError::WrongGroup),
        _ => Err(ShardKvError::WrongLeader),
    }
}

async fn serve(rsm: Addr<Rsm<ShardStore>>, msg: Dispatch) -> Result<Vec<u8>, RpcError> {
    match msg.method {
        ShardGetArgs::METHOD => {
            let key = msg.decode::<ShardGetArgs>()?.key;
            let read = LinearizableRead::new(move |s: &ShardStore, _| s.read(&key));
            let result = client_reply(rsm.send(read).await);
            encode(&ShardKvReply { result })
        }
        ShardPutAppendArgs::METHOD => {
            let args = msg.decode::<ShardPutAppendArgs>()?;
            let session: Option<Session> = Some((args.client_id, args.seq));
            let command = ShardCommand::Client {
                command: args.command(),
                session,
            };
            let result = client_reply(rsm.send(Submit::new(None, command)).await);
            encode(&ShardKvReply { result })
        }
        PullShardsArgs::METHOD => {
            let args = msg.decode::<PullShardsArgs>()?;
            let read = Read::new(move |s: &ShardStore, _| s.frozen(args.num, &args.shards));
            // A replica that is gone or halted cannot vouch for its copy: ask another.
            let result = match rsm.send(read).await {
                Ok(Ok(frozen)) => frozen,
                Ok(Err(_)) | Err(_) => Err(MigrationError::WrongLeader),
            };
            encode(&PullShardsReply { result })
        }
        DeleteShardsArgs::METHOD => {
            let args = msg.decode::<DeleteShardsArgs>()?;
            let command = ShardCommand::Delete {
                num: args.num,
                shards: args.shards,
            };
            let result = match rsm.send(Submit::new(None, command)).await {
                Ok(Ok(ShardOutput::Done)) => Ok(()),
                Ok(Ok(ShardOutput::NotReady)) => Err(MigrationError::NotReady),
                _ => Err(MigrationError::WrongLeader),
            };
            encode(&DeleteShardsReply { result })
        }
        ShardStatusArgs::METHOD => {
            msg.decode::<ShardStatusArgs>()?;
            let read = Read::new(|s: &ShardStore, _| s.report());
            let report = match rsm.send(read).await {
                Ok(Ok(report)) => Ok(report),
                Ok(Err(_)) | Err(_) => Err(MigrationError::WrongLeader),
            };
            encode(&report)
        }
        other => Err(RpcError::UnknownMethod(other.to_string())),
    }
}

impl Handler<Dispatch> for ShardKv {
    type Result = ResponseFuture<Result<Vec<u8>, RpcError>>;

    fn handle(&mut self, msg: Dispatch, _: &mut Self::Context) -> Self::Result {
        Box::pin(serve(self.rsm.clone(), msg))
    }
}
