//! The Raft peer actor: the shell around the pure [`RaftCore`].
//!
//! It owns what the core must not: the tick timer, the persister, the client ends to the other
//! peers and the applier. Every input (a tick, an RPC, a reply, a client command) goes into the
//! core. Once the mailbox is drained, the peer drains the core's [`Ready`] in one go (group
//! commit: one save for everything that arrived together): it saves the state first, then
//! sends the messages, releases the replies to the RPCs it handled, and hands committed
//! entries to the [`Applier`]. No reply leaves before the state it depends on is saved.
//!
//! Handles: [`Dispatch`] (`Raft.RequestVote`, `Raft.AppendEntries`, `Raft.InstallSnapshot`),
//! [`Propose`], [`GetState`], [`SubscribeRoles`], [`Snapshot`], [`Stop`], and [`PeerReply`]
//! (replies to its own calls). Sends: Raft RPCs through its [`ClientEnd`]s, [`ApplyBatch`] to
//! its applier, [`RoleChanged`] to its subscribers whenever its term, role or leader changes.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::core::{Config, Message, RaftCore, Ready, RestoreError};
use crate::actors::applier::Applier;
use crate::actors::client_end::ClientEnd;
use crate::messages::apply::{ApplyBatch, ApplyMsg};
use crate::messages::lifecycle::Stop;
use crate::messages::net::{encode, Dispatch, Rpc, RpcError};
use crate::messages::raft::*;
use crate::storage::Persister;

/// Wall (or virtual) time of one core tick.
pub const TICK: Duration = Duration::from_millis(10);

/// One Raft peer. Build it with [`RaftPeer::start`].
pub struct RaftPeer {
    core: RaftCore,
    me: usize,
    /// `peers[j]` reaches peer j; `peers[me]` is never used.
    peers: Vec<ClientEnd>,
    persister: Box<dyn Persister>,
    applier: Addr<Applier>,
    /// A flush is scheduled for the end of the current mailbox batch.
    flush_scheduled: bool,
    /// Replies to RPCs handled in this batch, released once the state is saved.
    replies: Vec<(oneshot::Sender<Reply>, Reply)>,
    /// Who hears of every change of term, role or leader.
    subscribers: Vec<Recipient<RoleChanged>>,
    /// The latest state they were told of.
    role: Option<RoleChanged>,
}

type Reply = Result<Vec<u8>, RpcError>;

impl RaftPeer {
    /// Starts peer `me` of `peers.len()`, restoring whatever `persister` holds, delivering
    /// committed entries to `service`. Fails on a corrupt persisted state.
    pub fn start(
        peers: Vec<ClientEnd>,
        me: usize,
        persister: Box<dyn Persister>,
        service: Recipient<ApplyMsg>,
        seed: u64,
    ) -> Result<Addr<RaftPeer>, RestoreError> {
        let config = Config {
            id: me,
            peers: peers.len(),
            ..Config::default()
        };
        let saved = persister
            .load()
            .map_err(|e| RestoreError::Decode(format!("cannot load Raft state: {e}")))?;
        let core = RaftCore::restore(config, seed, saved, persister.read_snapshot())?;
        let applier = Applier::new(service, core.last_applied()).start();
        let peer = RaftPeer {
            core,
            me,
            peers,
            persister,
            applier,
            flush_scheduled: false,
            replies: Vec::new(),
            subscribers: Vec::new(),
            role: None,
        };
        Ok(peer.start())
    }

    /// Flushes once the mailbox is drained: actix polls spawned futures after it has handled
    /// every queued message, so everything that arrived together shares one save.
    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.spawn(fut::ready(()).map(|(), peer: &mut Self, ctx| {
                peer.flush_scheduled = false;
                peer.flush(ctx);
            }));
        }
    }

    /// Drains the core's effects: persist, then send and reply, then apply.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let Ready {
            messages,
            persist,
            apply,
            role_changed,
        } = self.core.take_ready();
        if let Some(update) = persist {
            if let Err(e) = self.persister.save(update) {
                // Answering anything now could acknowledge state that is not durable.
                log::error!(
                    "peer {}: cannot persist Raft state: {e}; stopping",
                    self.me()
                );
                ctx.stop();
                return;
            }
        }
        for (to, message) in messages {
            self.send(to, message, ctx);
        }
        for (reply_to, reply) in self.replies.drain(..) {
            // The caller may have given up; nothing to do then.
            let _ = reply_to.send(reply);
        }
        if !apply.is_empty() {
            self.applier.do_send(ApplyBatch(apply));
        }
        if let Some(role) = role_changed {
            self.role = Some(role);
            for subscriber in &self.subscribers {
                subscriber.do_send(role);
            }
        }
    }

    fn me(&self) -> usize {
        self.me
    }

    fn send(&self, to: usize, message: Message, ctx: &mut Context<Self>) {
        let Some(end) = self.peers.get(to).cloned() else {
            log::error!("peer {}: message to unknown peer {to}", self.me());
            return;
        };
        let me = ctx.address();
        // Each call runs as its own task: the peer never waits for the network.
        actix::spawn(async move {
            let reply = match message {
                Message::RequestVote(args) => end.call(&args).await.map(|r| PeerReply::Vote(to, r)),
                Message::AppendEntries(args) => {
                    end.call(&args).await.map(|r| PeerReply::Append(to, r))
                }
                Message::InstallSnapshot(args) => {
                    end.call(&args).await.map(|r| PeerReply::Snapshot(to, r))
                }
            };
            if let Ok(reply) = reply {
                me.do_send(reply);
            }
        });
    }

    fn handle_rpc(&mut self, msg: &Dispatch) -> Result<Vec<u8>, RpcError> {
        match msg.method {
            RequestVoteArgs::METHOD => {
                let args = msg.decode::<RequestVoteArgs>()?;
                let from = args.candidate_id;
                encode(&self.core.handle_request_vote(from, args))
            }
            AppendEntriesArgs::METHOD => {
                let args = msg.decode::<AppendEntriesArgs>()?;
                let from = args.leader_id;
                encode(&self.core.handle_append_entries(from, args))
            }
            InstallSnapshotArgs::METHOD => {
                let args = msg.decode::<InstallSnapshotArgs>()?;
                let from = args.leader_id;
                encode(&self.core.handle_install_snapshot(from, args))
            }
            other => Err(RpcError::UnknownMethod(other.to_string())),
        }
    }
}

impl Actor for RaftPeer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(TICK, |peer, ctx| {
            peer.core.tick();
            peer.schedule_flush(ctx);
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.applier.do_send(Stop);
        log::debug!("peer {} stopped in term {}", self.me(), self.core.term());
    }
}

impl Handler<Dispatch> for RaftPeer {
    type Result = ResponseFuture<Reply>;

    fn handle(&mut self, msg: Dispatch, ctx: &mut Self::Context) -> Self::Result {
        let reply = self.handle_rpc(&msg);
        // The reply leaves only after the state it depends on is saved.
        let (reply_to, saved) = oneshot::channel();
        self.replies.push((reply_to, reply));
        self.schedule_flush(ctx);
        Box::pin(async move { saved.await.unwrap_or(Err(RpcError::Unreachable)) })
    }
}

impl Handler<PeerReply> for RaftPeer {
    type Result = ();

    fn handle(&mut self, msg: PeerReply, ctx: &mut Self::Context) {
        match msg {
            PeerReply::Vote(from, reply) => self.core.handle_request_vote_reply(from, reply),
            PeerReply::Append(from, reply) => self.core.handle_append_entries_reply(from, reply),
            PeerReply::Snapshot(from, reply) => {
                self.core.handle_install_snapshot_reply(from, reply)
            }
        }
        self.schedule_flush(ctx);
    }
}

impl Handler<Propose> for RaftPeer {
    type Result = MessageResult<Propose>;

    fn handle(&mut self, msg: Propose, ctx: &mut Self::Context) -> Self::Result {
        let proposed = self.core.propose(msg.0);
        self.schedule_flush(ctx);
        MessageResult(proposed)
    }
}

impl Handler<SubscribeRoles> for RaftPeer {
    type Result = ();

    fn handle(&mut self, msg: SubscribeRoles, _: &mut Self::Context) {
        // Until the first flush reports it, the state is the one the peer started in.
        let current = self.role.unwrap_or(RoleChanged {
            term: self.core.term(),
            role: self.core.role(),
            leader: self.core.leader_id(),
        });
        msg.0.do_send(current);
        self.subscribers.push(msg.0);
    }
}

impl Handler<GetState> for RaftPeer {
    type Result = MessageResult<GetState>;

    fn handle(&mut self, _: GetState, _: &mut Self::Context) -> Self::Result {
        MessageResult(RaftState {
            term: self.core.term(),
            role: self.core.role(),
            leader: self.core.leader_id(),
            commit_index: self.core.commit_index(),
            last_applied: self.core.last_applied(),
        })
    }
}

impl Handler<Snapshot> for RaftPeer {
    type Result = ();

    fn handle(&mut self, msg: Snapshot, ctx: &mut Self::Context) {
        self.core.snapshot(msg.index, msg.data);
        self.schedule_flush(ctx);
    }
}

impl Handler<Stop> for RaftPeer {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
