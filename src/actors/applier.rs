//! The applier: hands committed entries and snapshots from a Raft peer to its service.
//!
//! It delivers [`ApplyMsg`]s one at a time to the service's `Recipient`, waiting for each to be
//! handled before the next, so the service applies in index order, exactly once per index, at
//! its own pace, and the peer never waits for it. When a snapshot arrives while commands are
//! still queued, the commands it covers are dropped unseen. The service may ask its peer for a
//! snapshot while handling an `ApplyMsg`: nothing waits on it.
//!
//! A command whose index skips past the next one means Raft broke its promise: the applier
//! delivers what came before, then [`ApplyMsg::Halted`], and stops. So does a `Halted` from the
//! peer (its storage failed, or an invariant broke).
//!
//! Handles: [`ApplyBatch`], [`Stop`] (both from its peer). Sends: [`ApplyMsg`] to its service.

use std::collections::VecDeque;

use actix::prelude::*;

use crate::messages::apply::{ApplyBatch, ApplyMsg, HaltCause};
use crate::messages::lifecycle::Stop;

/// The applier actor of one Raft peer.
pub struct Applier {
    service: Recipient<ApplyMsg>,
    queue: VecDeque<ApplyMsg>,
    /// Index of the last message queued or delivered: anything at or below is stale.
    last_index: u64,
    delivering: bool,
    /// `Halted` is queued: nothing after it is taken.
    halted: bool,
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
            halted: false,
        }
    }

    fn halt(&mut self, cause: HaltCause, reason: String) {
        log::error!("applier: {reason}; the service is told to stop");
        self.halted = true;
        self.queue.push_back(ApplyMsg::Halted { cause, reason });
    }

    fn take(&mut self, msg: ApplyMsg) {
        if self.halted {
            return;
        }
        match msg {
            ApplyMsg::Command { index, .. } | ApplyMsg::Membership { index, .. }
                if index <= self.last_index =>
            {
                log::trace!("applier skips stale entry {index}");
            }
            ApplyMsg::Command { index, .. } | ApplyMsg::Membership { index, .. }
                if index > self.last_index + 1 =>
            {
                let last = self.last_index;
                let reason = format!("Raft committed index {index} right after {last}");
                self.halt(HaltCause::Untrusted, reason);
            }
            ApplyMsg::Command { index, .. } | ApplyMsg::Membership { index, .. } => {
                self.last_index = index;
                self.queue.push_back(msg);
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
            ApplyMsg::Halted { cause, reason } => self.halt(cause, reason),
        }
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.delivering {
            return;
        }
        let Some(msg) = self.queue.pop_front() else {
            return;
        };
        let last = matches!(msg, ApplyMsg::Halted { .. });
        self.delivering = true;
        let delivery = self
            .service
            .send(msg)
            .into_actor(self)
            .map(move |result, applier, ctx| {
                applier.delivering = false;
                match result {
                    Ok(()) if last => ctx.stop(),
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
            self.take(msg);
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

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    /// Records what it is given.
    struct Service(Rc<RefCell<Vec<ApplyMsg>>>);

    impl Actor for Service {
        type Context = Context<Self>;
    }

    impl Handler<ApplyMsg> for Service {
        type Result = ();

        fn handle(&mut self, msg: ApplyMsg, _: &mut Self::Context) {
            self.0.borrow_mut().push(msg);
        }
    }

    fn command(index: u64) -> ApplyMsg {
        ApplyMsg::Command {
            index,
            term: 1,
            command: vec![index as u8],
        }
    }

    #[actix::test]
    async fn a_gap_in_the_indexes_halts_the_service_after_what_came_before() {
        let got = Rc::new(RefCell::new(Vec::new()));
        let service = Service(got.clone()).start();
        let applier = Applier::new(service.recipient(), 0).start();
        applier.do_send(ApplyBatch(vec![command(1), command(2), command(4)]));
        applier.do_send(ApplyBatch(vec![command(5)]));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let got = got.borrow();
        assert_eq!(got[..2], [command(1), command(2)]);
        assert!(
            matches!(&got[2], ApplyMsg::Halted { cause: HaltCause::Untrusted, reason }
                if reason.contains("index 4 right after 2")),
            "{:?}",
            got[2]
        );
        assert_eq!(got.len(), 3, "nothing after the halt");
        assert!(!applier.connected(), "the applier stopped");
    }
}
