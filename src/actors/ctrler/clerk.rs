//! The controller clerk: a client of the replicated shard controller.
//!
//! It behaves like the KV clerk: a session opened before its first change
//! (`ShardCtrler.Register`), a number for each Join/Leave/Move (retries reuse it, so the
//! controller applies each change once), a leader hint (the server that answered last is tried
//! first) and retries forever, moving to the next server after a failure or a `WrongLeader`,
//! with the KV clerk's short pause after each full round of servers. A change refused as
//! `SessionExpired` on its first attempt is sent again under a new session; on a retry, its
//! outcome is unknown and the clerk answers [`CtrlerError::SessionExpired`]. `one_round` is a
//! single pass over the servers, for callers that poll and must not block forever (the shard
//! migrator). [`CtrlerClerk`] is the async API.
//!
//! Handles: [`CtrlerCall`]. Sends: `ShardCtrler.Register` / `.Join` / `.Leave` / `.Move` /
//! `.Query`.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::clerk::until_accepted;
use crate::actors::client_end::ClientEnd;
use crate::messages::ctrler::*;
use crate::messages::net::RpcError;
use crate::messages::rsm::{ClientId, Seq};

/// Pause after a full round of servers without an answer (the KV clerk's).
const ROUND_PAUSE: Duration = Duration::from_millis(10);

/// The controller clerk actor.
pub(crate) struct CtrlerClerkActor {
    servers: Vec<ClientEnd>,
    /// The open session and the number of its last change.
    session: Option<(ClientId, Seq)>,
    leader: usize,
}

impl Actor for CtrlerClerkActor {
    type Context = Context<Self>;
}

/// The RPC that carries `op`, under `session` for a change.
async fn call(
    end: &ClientEnd,
    op: &CtrlerOp,
    (client_id, seq): (ClientId, Seq),
) -> Result<CtrlerResult, RpcError> {
    match op {
        CtrlerOp::Join { servers } => {
            let servers = servers.clone();
            end.call(&JoinArgs {
                servers,
                client_id,
                seq,
            })
            .await
        }
        CtrlerOp::Leave { gids } => {
            let gids = gids.clone();
            end.call(&LeaveArgs {
                gids,
                client_id,
                seq,
            })
            .await
        }
        CtrlerOp::Move { shard, gid } => {
            let (shard, gid) = (*shard, *gid);
            end.call(&MoveArgs {
                shard,
                gid,
                client_id,
                seq,
            })
            .await
        }
        CtrlerOp::Query { num } => end.call(&QueryArgs { num: *num }).await,
    }
}

/// Tries each server once, starting at `first`, and returns the first answer that is not
/// `WrongLeader`, with the index of the server that gave it; `None` if no server answered.
/// `session` is the change's (client id, sequence number); a Query ignores it.
pub(crate) async fn one_round(
    servers: &[ClientEnd],
    first: usize,
    op: &CtrlerOp,
    session: (ClientId, Seq),
) -> Option<(usize, CtrlerResult)> {
    let n = servers.len();
    for k in 0..n {
        let server = (first + k) % n;
        match call(&servers[server], op, session).await {
            Ok(Err(CtrlerError::WrongLeader)) | Err(_) => continue,
            Ok(result) => return Some((server, result)),
        }
    }
    None
}

/// Where a clerk's operation ended: the server that answered, the session after it, and the
/// answer.
type Outcome = (usize, Option<(ClientId, Seq)>, CtrlerResult);

/// Carries out `op`, starting at server `first`: a Query as it is, a change under `session`
/// (opening one first if there is none).
async fn run(
    servers: Vec<ClientEnd>,
    mut first: usize,
    mut session: Option<(ClientId, Seq)>,
    op: CtrlerOp,
) -> Outcome {
    let change = !matches!(op, CtrlerOp::Query { .. });
    loop {
        let current = match session {
            _ if !change => (0, 0),
            Some((client, last)) => (client, last + 1),
            None => {
                let opened = |reply: Result<ClientId, CtrlerError>| reply.ok();
                let (client, _) = until_accepted(&servers, &mut first, &RegisterArgs, opened).await;
                (client, 1)
            }
        };
        if change {
            session = Some(current);
        }
        // Until a round passes without an answer, only the first server was asked.
        let mut first_round = true;
        loop {
            if let Some((server, result)) = one_round(&servers, first, &op, current).await {
                match result {
                    // The first attempt was refused: the change was never executed.
                    Err(CtrlerError::SessionExpired) if first_round && server == first => {
                        session = None;
                        break;
                    }
                    Err(CtrlerError::SessionExpired) => return (server, None, result),
                    _ => return (server, session, result),
                }
            }
            first_round = false;
            tokio::time::sleep(ROUND_PAUSE).await;
        }
    }
}

impl Handler<CtrlerCall> for CtrlerClerkActor {
    // Atomic: one operation at a time, so sequence numbers reach the servers in order.
    type Result = AtomicResponse<Self, CtrlerResult>;

    fn handle(&mut self, msg: CtrlerCall, _: &mut Self::Context) -> Self::Result {
        let attempt = run(self.servers.clone(), self.leader, self.session, msg.0);
        AtomicResponse::new(Box::pin(attempt.into_actor(self).map(
            |(leader, session, result), clerk, _| {
                clerk.leader = leader;
                clerk.session = session;
                result
            },
        )))
    }
}

/// The async face of a controller clerk.
#[derive(Clone)]
pub struct CtrlerClerk {
    addr: Addr<CtrlerClerkActor>,
}

impl CtrlerClerk {
    /// Starts a clerk reaching the controller servers through `servers` (it opens its session
    /// with its first change).
    pub fn start(servers: Vec<ClientEnd>) -> CtrlerClerk {
        let actor = CtrlerClerkActor {
            servers,
            session: None,
            leader: 0,
        };
        CtrlerClerk {
            addr: actor.start(),
        }
    }

    async fn run(&self, op: CtrlerOp) -> CtrlerResult {
        self.addr
            .send(CtrlerCall(op))
            .await
            .unwrap_or_else(|e| Err(CtrlerError::Unavailable(format!("clerk is gone: {e}"))))
    }

    async fn change(&self, op: CtrlerOp) -> Result<(), CtrlerError> {
        self.run(op).await.map(|_| ())
    }

    /// Adds groups (gid → server names), or replaces the servers of groups already present.
    pub async fn join(&self, servers: BTreeMap<Gid, Vec<String>>) -> Result<(), CtrlerError> {
        self.change(CtrlerOp::Join { servers }).await
    }

    /// Removes groups.
    pub async fn leave(&self, gids: Vec<Gid>) -> Result<(), CtrlerError> {
        self.change(CtrlerOp::Leave { gids }).await
    }

    /// Assigns `shard` to group `gid`.
    pub async fn move_shard(&self, shard: usize, gid: Gid) -> Result<(), CtrlerError> {
        self.change(CtrlerOp::Move { shard, gid }).await
    }

    /// The latest config (6.5840's `Query(-1)`).
    pub async fn latest(&self) -> Result<ShardConfig, CtrlerError> {
        self.query(None).await
    }

    /// Config `num`, or the latest if `num` is past it (6.5840's `Query(num)`).
    pub async fn config(&self, num: ConfigNum) -> Result<ShardConfig, CtrlerError> {
        self.query(Some(num)).await
    }

    async fn query(&self, num: Option<ConfigNum>) -> Result<ShardConfig, CtrlerError> {
        match self.run(CtrlerOp::Query { num }).await? {
            CtrlerReply::Config(config) => Ok(config),
            CtrlerReply::Done => Err(CtrlerError::Unavailable(
                "a query was answered without a config".into(),
            )),
        }
    }
}
