//! The applier: hands committed entries and snapshots from a Raft peer to its service.
//!
//! Handles [`ApplyBatch`] and [`Stop`] from the peer (never blocking it) and delivers [`ApplyMsg`]s one at a
//! time to the service's `Recipient`, waiting for each to be handled before the next, so the
//! service applies in index order, exactly once per index, at its own pace. When a snapshot
//! arrives while commands are still queued, the commands it covers are dropped unseen. The
//! service may ask its peer for a snapshot while handling an `ApplyMsg`: nothing waits on it.

use std::collections::VecDeque;

use actix::prelude::*;

use crate::messages::apply::{ApplyBatch, ApplyMsg};
use crate::messages::lifecycle::Stop;

/// The applier actor of one Raft peer.
pub struct Applier {
    service: Recipient<ApplyMsg>,
    queue: VecDeque<ApplyMsg>,
    /// Index of the last message queued or delivered: anything at or below is stale.
    last_index: u64,
    delivering: bool,
}

impl Applier {
    /// An applier whose service has already applied everything up to `applied` (the snapshot
    /// index a restarted peer starts from).
    pub fn new(service: Recipient<ApplyMsg>, applied: u64) -> Self {
        Applier {
            service,
            queue: VecDeque::new(),
            last_index: applied,
            delivering: false,
        }
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.delivering {
            return;
        }
        let Some(msg) = self.queue.pop_front() else {
            return;
        };
        self.delivering = true;
        let delivery = self
            .service
            .send(msg)
            .into_actor(self)
            .map(|result, applier, ctx| {
                applier.delivering = false;
                match result {
                    Ok(()) => applier.pump(ctx),
                    Err(_) => {
                        log::debug!("service is gone; applier stops");
                        ctx.stop();
                    }
                }
            });
        ctx.spawn(delivery);
    }
}

impl Actor for Applier {
    type Context = Context<Self>;
}

impl Handler<ApplyBatch> for Applier {
    type Result = ();

    fn handle(&mut self, batch: ApplyBatch, ctx: &mut Self::Context) {
        for msg in batch.0 {
            match msg {
                ApplyMsg::Command { index, .. } if index <= self.last_index => {
                    log::trace!("applier skips stale command {index}");
                }
                ApplyMsg::Command { index, .. } if index > self.last_index + 1 => {
                    log::error!("applier got command {index} after {}: gap", self.last_index);
                }
                ApplyMsg::Snapshot { index, .. } if index <= self.last_index => {
                    log::trace!("applier skips stale snapshot {index}");
                }
                ApplyMsg::Snapshot { index, .. } => {
                    // Everything queued is older than the snapshot, which replaces it.
                    self.queue.clear();
                    self.last_index = index;
                    self.queue.push_back(msg);
                }
                ApplyMsg::Command { index, .. } => {
                    self.last_index = index;
                    self.queue.push_back(msg);
                }
            }
        }
        self.pump(ctx);
    }
}

impl Handler<Stop> for Applier {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
