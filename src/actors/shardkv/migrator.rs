//! The migrator: one per sharded KV group member, active while its member leads the group. It
//! walks the group through the controller's configs and moves shards between groups.
//!
//! Its Raft peer tells it of every change of role ([`RoleChanged`]): it starts work the moment
//! its member becomes leader, and drops everything it has in flight the moment it is not.
//!
//! # Migration protocol: pull, install through the log, then delete at the old owner
//! While its member leads, every 100 ms (6.5840's pace for asking the controller), and at once
//! after any step that made progress, the migrator reads the group's [`Work`] from its [`Rsm`]
//! (with [`Read`]) and starts what is not already running. (The entries a new leader inherited, say the next config, commit
//! with the no-op the RSM layer has every new leader submit, even with no client traffic.)
//! 1. **Next config.** When every shard is settled, it asks the controller for config
//!    `num + 1` and submits it (`Configure`): configs are taken one at a time, in order, at a
//!    point of the log, so every replica switches at the same point. Shards lost become
//!    frozen, shards gained from another group wait for their data.
//! 2. **Pull.** For each previous owner of waiting shards, it calls `ShardKV.PullShards` on
//!    that group's servers (as listed in the previous config) until one answers. Any replica
//!    of the old owner that has reached config `num` answers from its frozen copy; one that
//!    has not answers `NotReady`. The data and its duplicate table are installed through the
//!    log (`Install`), and the shards serve at once.
//! 3. **Delete.** For each previous owner of installed shards, it calls
//!    `ShardKV.DeleteShards`, which the old owner puts through its own log (so every replica
//!    there drops its copy, and a restarted one finds it dropped) and answers once applied;
//!    then it submits `Confirmed`.
//!
//! A group leaves config `n` only after its own transfers at `n` are done in both directions,
//! so a frozen copy never changes and old copies are always deleted (challenge 1), while
//! shards untouched by a change, and shards already installed, keep serving (challenge 2).
//! Two groups moving shards to each other cannot deadlock: a pull is answered from the frozen
//! copy and needs nothing from the puller, and the group at the lowest config can always
//! proceed. Every step is re-checked by the state machine when applied, so stale views,
//! repeated RPCs and leader changes are harmless.
//!
//! All the migrator's calls run as futures in its own context: stopping it (a crash) drops
//! them, and it sends nothing more.
//!
//! Handles: [`RoleChanged`], [`Stop`]. Sends: [`SubscribeRoles`] to its Raft peer; [`Read`] and
//! [`Submit`] to its [`Rsm`]; `ShardCtrler.Query`, `ShardKV.PullShards`, `ShardKV.DeleteShards`.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use actix::prelude::*;

use super::store::{ShardCommand, ShardOutput, ShardStore, Transfer, Work};
use crate::actors::client_end::{ClientEnd, EndMaker};
use crate::actors::ctrler::clerk::one_round;
use crate::actors::raft::RaftPeer;
use crate::actors::rsm::Rsm;
use crate::messages::ctrler::{ConfigNum, CtrlerOp, CtrlerReply, Gid};
use crate::messages::lifecycle::Stop;
use crate::messages::net::Rpc;
use crate::messages::raft::{RoleChanged, SubscribeRoles};
use crate::messages::rsm::{Read, Submit};
use crate::messages::shard::{DeleteShardsArgs, PullShardsArgs};

/// How often a leader's migrator looks at the group's work and the controller (6.5840: about
/// every 100 ms).
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// One piece of work in flight; at most one of each runs at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Task {
    Configure,
    Pull(Gid),
    Confirm(Gid),
}

/// How a task ended.
struct Outcome {
    /// It changed the group's state: look for more work at once.
    progress: bool,
    /// Ends it made, to keep for next time.
    made: Vec<(String, ClientEnd)>,
    /// The controller server that answered, if one did.
    ctrler_leader: Option<usize>,
}

/// Ends to one group's servers, made on first use.
struct GroupEnds {
    servers: Vec<(String, Option<ClientEnd>)>,
    make_end: EndMaker,
    made: Vec<(String, ClientEnd)>,
}

impl GroupEnds {
    async fn end(&mut self, i: usize) -> Option<ClientEnd> {
        let (name, end) = self.servers.get_mut(i)?;
        if end.is_none() {
            match (self.make_end)(name).await {
                Ok(made) => {
                    *end = Some(made.clone());
                    self.made.push((name.clone(), made));
                }
                Err(e) => log::warn!("cannot make an end to {name}: {e}"),
            }
        }
        end.clone()
    }

    /// Calls each server in turn until one gives a reply that `accept` takes.
    async fn first_accepted<R: Rpc, T>(
        &mut self,
        args: &R,
        accept: impl Fn(R::Reply) -> Option<T>,
    ) -> Option<T> {
        for i in 0..self.servers.len() {
            let Some(end) = self.end(i).await else {
                continue;
            };
            if let Some(value) = end.call(args).await.ok().and_then(&accept) {
                return Some(value);
            }
        }
        None
    }
}

/// Submits a reconfiguration command; true once it is applied.
async fn submit(rsm: &Addr<Rsm<ShardStore>>, command: ShardCommand) -> bool {
    let submitted = rsm.send(Submit::new(None, command));
    matches!(submitted.await, Ok(Ok(ShardOutput::Done)))
}

/// The migrator of one group member.
pub struct Migrator {
    gid: Gid,
    rsm: Addr<Rsm<ShardStore>>,
    raft: Addr<RaftPeer>,
    ctrlers: Vec<ClientEnd>,
    ctrler_leader: usize,
    make_end: EndMaker,
    /// Ends to other groups' servers, by server name.
    ends: BTreeMap<String, ClientEnd>,
    polling: bool,
    poll_again: bool,
    /// Tasks in flight; dropped when the member stops leading.
    running: BTreeMap<Task, SpawnHandle>,
    /// While the member leads: the poll timer.
    leading: Option<SpawnHandle>,
}

impl Migrator {
    /// A migrator for a member of group `gid` whose replica is `rsm` on Raft peer `raft`.
    pub fn new(
        gid: Gid,
        rsm: Addr<Rsm<ShardStore>>,
        raft: Addr<RaftPeer>,
        ctrlers: Vec<ClientEnd>,
        make_end: EndMaker,
    ) -> Self {
        Migrator {
            gid,
            rsm,
            raft,
            ctrlers,
            ctrler_leader: 0,
            make_end,
            ends: BTreeMap::new(),
            polling: false,
            poll_again: false,
            running: BTreeMap::new(),
            leading: None,
        }
    }

    /// Reads the group's work and starts what is not running yet.
    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.leading.is_none() {
            return;
        }
        if self.polling {
            self.poll_again = true;
            return;
        }
        self.polling = true;
        let look = self.rsm.send(Read::new(|s: &ShardStore, _| s.work()));
        ctx.spawn(look.into_actor(self).map(|work, migrator, ctx| {
            migrator.polling = false;
            if let (Ok(Ok(work)), Some(_)) = (work, &migrator.leading) {
                migrator.start_work(work, ctx);
            }
            if std::mem::take(&mut migrator.poll_again) {
                migrator.poll(ctx);
            }
        }));
    }

    fn start_leading(&mut self, ctx: &mut Context<Self>) {
        log::debug!("group {}: migrator active", self.gid);
        let timer = ctx.run_interval(POLL_INTERVAL, |migrator, ctx| migrator.poll(ctx));
        self.leading = Some(timer);
        self.poll(ctx);
    }

    /// A deposed leader's migrator stops at once: its timer and every task in flight.
    fn stop_leading(&mut self, ctx: &mut Context<Self>) {
        log::debug!("group {}: migrator idle", self.gid);
        if let Some(timer) = self.leading.take() {
            ctx.cancel_future(timer);
        }
        for (_, task) in std::mem::take(&mut self.running) {
            ctx.cancel_future(task);
        }
    }

    fn start_work(&mut self, work: Work, ctx: &mut Context<Self>) {
        log::trace!("group {}: {work:?}, running {:?}", self.gid, self.running);
        if work.settled && !self.running.contains_key(&Task::Configure) {
            let task = self.configure(work.num);
            self.run(Task::Configure, task, ctx);
        }
        for transfer in work.pull {
            if !self.running.contains_key(&Task::Pull(transfer.gid)) {
                let gid = transfer.gid;
                let task = self.pull(work.num, transfer);
                self.run(Task::Pull(gid), task, ctx);
            }
        }
        for transfer in work.confirm {
            if !self.running.contains_key(&Task::Confirm(transfer.gid)) {
                let gid = transfer.gid;
                let task = self.confirm(work.num, transfer);
                self.run(Task::Confirm(gid), task, ctx);
            }
        }
    }

    fn run(
        &mut self,
        task: Task,
        work: impl Future<Output = Outcome> + 'static,
        ctx: &mut Context<Self>,
    ) {
        let handle = ctx.spawn(work.into_actor(self).map(move |outcome, migrator, ctx| {
            migrator.running.remove(&task);
            migrator.ends.extend(outcome.made);
            if let Some(leader) = outcome.ctrler_leader {
                migrator.ctrler_leader = leader;
            }
            if outcome.progress {
                migrator.poll(ctx);
            }
        }));
        self.running.insert(task, handle);
    }

    /// Asks the controller for config `num + 1` and submits it if it exists.
    fn configure(&self, num: ConfigNum) -> impl Future<Output = Outcome> + 'static {
        let (rsm, gid, ctrlers, first) = (
            self.rsm.clone(),
            self.gid,
            self.ctrlers.clone(),
            self.ctrler_leader,
        );
        async move {
            let query = CtrlerOp::Query { num: Some(num + 1) };
            let answer = one_round(&ctrlers, first, &query, (0, 0)).await;
            let ctrler_leader = answer.as_ref().map(|(server, _)| *server);
            let progress = match answer {
                Some((_, Ok(CtrlerReply::Config(config)))) if config.num == num + 1 => {
                    log::debug!(
                        "group {gid}: moving to config {}: {:?}",
                        config.num,
                        config.shards
                    );
                    submit(&rsm, ShardCommand::Configure { gid, config }).await
                }
                _ => false,
            };
            Outcome {
                progress,
                made: Vec::new(),
                ctrler_leader,
            }
        }
    }

    fn group_ends(&self, servers: &[String]) -> GroupEnds {
        GroupEnds {
            servers: servers
                .iter()
                .map(|name| (name.clone(), self.ends.get(name).cloned()))
                .collect(),
            make_end: self.make_end.clone(),
            made: Vec::new(),
        }
    }

    /// Pulls the shards gained from one group at config `num` and installs them.
    fn pull(&self, num: ConfigNum, transfer: Transfer) -> impl Future<Output = Outcome> + 'static {
        let rsm = self.rsm.clone();
        let mut ends = self.group_ends(&transfer.servers);
        async move {
            let args = PullShardsArgs {
                num,
                shards: transfer.shards,
            };
            let data = ends.first_accepted(&args, |reply| reply.result.ok()).await;
            let progress = match data {
                Some(shards) => submit(&rsm, ShardCommand::Install { num, shards }).await,
                None => false,
            };
            Outcome {
                progress,
                made: ends.made,
                ctrler_leader: None,
            }
        }
    }

    /// Has one previous owner delete its copies of the shards installed at config `num`.
    fn confirm(
        &self,
        num: ConfigNum,
        transfer: Transfer,
    ) -> impl Future<Output = Outcome> + 'static {
        let rsm = self.rsm.clone();
        let mut ends = self.group_ends(&transfer.servers);
        async move {
            let args = DeleteShardsArgs {
                num,
                shards: transfer.shards.clone(),
            };
            let deleted = ends.first_accepted(&args, |reply| reply.result.ok()).await;
            let progress = match deleted {
                Some(()) => {
                    let shards = transfer.shards;
                    submit(&rsm, ShardCommand::Confirmed { num, shards }).await
                }
                None => false,
            };
            Outcome {
                progress,
                made: ends.made,
                ctrler_leader: None,
            }
        }
    }
}

impl Actor for Migrator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.raft.do_send(SubscribeRoles(ctx.address().recipient()));
    }
}

impl Handler<RoleChanged> for Migrator {
    type Result = ();

    fn handle(&mut self, role: RoleChanged, ctx: &mut Self::Context) {
        match (role.leads(role.term), self.leading.is_some()) {
            (true, false) => self.start_leading(ctx),
            (false, true) => self.stop_leading(ctx),
            _ => {}
        }
    }
}

impl Handler<Stop> for Migrator {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
