//! The storage actor: runs a Raft peer's [`Persister`] so the peer never waits for a disk.
//!
//! The peer sends one [`Save`] at a time and goes on handling votes, heartbeats and proposals
//! while the save runs; the answer says the update is durable. A persister whose saves block on
//! real I/O ([`Persister::blocks`]: the file store) gets a thread of its own, so an fsync
//! stalls nothing else of the node; an in-memory one runs on the caller's thread, which keeps
//! simulations deterministic. [`SetDiskLatency`] makes every save take longer and [`StallDisk`]
//! holds every save for a while, in simulations.
//!
//! With [`Metrics`] on it counts every save, its time (the fsync's, mostly) and whether it
//! wrote a snapshot or failed.
//!
//! Handles: [`Save`], [`SetDiskLatency`], [`StallDisk`], [`Stop`]. Sends nothing: each save
//! is answered.

use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use crate::messages::lifecycle::Stop;
use crate::messages::storage::StateUpdate;
use crate::messages::storage::{Save, SetDiskLatency, StallDisk};
use crate::metrics::Metrics;
use crate::storage::Persister;

/// The storage actor of one Raft peer. Start it with [`StorageHandle::start`].
pub struct Storage {
    persister: Box<dyn Persister + Send>,
    latency: Duration,
    /// No save completes before this instant.
    stalled_until: Option<Instant>,
    metrics: Metrics,
}

impl Storage {
    /// Saves `update`, counted.
    fn save(&mut self, update: StateUpdate) -> std::io::Result<()> {
        if !self.metrics.is_on() {
            return self.persister.save(update);
        }
        let snapshot = update.snapshot.is_some();
        let started = std::time::Instant::now();
        let saved = self.persister.save(update);
        self.metrics
            .save(started.elapsed(), saved.is_ok(), snapshot);
        saved
    }
}

impl Actor for Storage {
    type Context = Context<Self>;
}

impl Handler<Save> for Storage {
    // Atomic: one save at a time, in the order they came.
    type Result = AtomicResponse<Self, std::io::Result<()>>;

    fn handle(&mut self, Save(update): Save, _: &mut Self::Context) -> Self::Result {
        let now = Instant::now();
        let until = self.stalled_until.map_or(now, |stall| stall.max(now)) + self.latency;
        if until <= now {
            let saved = self.save(update);
            return AtomicResponse::new(Box::pin(fut::ready(saved)));
        }
        let delay = tokio::time::sleep_until(until).into_actor(self);
        AtomicResponse::new(Box::pin(
            delay.map(move |(), storage, _| storage.save(update)),
        ))
    }
}

impl Handler<SetDiskLatency> for Storage {
    type Result = ();

    fn handle(&mut self, SetDiskLatency(latency): SetDiskLatency, _: &mut Self::Context) {
        self.latency = latency;
    }
}

impl Handler<StallDisk> for Storage {
    type Result = ();

    fn handle(&mut self, StallDisk(stall): StallDisk, _: &mut Self::Context) {
        self.stalled_until = Some(Instant::now() + stall);
    }
}

impl Handler<Stop> for Storage {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// A running storage actor and, if it has one, its thread, which is stopped and joined when
/// the handle is dropped (so a restarted node never shares its files with the old one).
pub struct StorageHandle {
    addr: Addr<Storage>,
    thread: Option<Arbiter>,
}

impl StorageHandle {
    /// Starts a storage actor for `persister`: on a thread of its own if its saves block on
    /// real I/O, else on the current arbiter.
    /// With `metrics` on, it counts its saves.
    pub fn start(
        persister: Box<dyn Persister + Send>,
        metrics: Metrics,
    ) -> std::io::Result<StorageHandle> {
        let storage = Storage {
            latency: Duration::ZERO,
            stalled_until: None,
            persister,
            metrics,
        };
        if !storage.persister.blocks() {
            return Ok(StorageHandle {
                addr: storage.start(),
                thread: None,
            });
        }
        let thread = Arbiter::try_new()?;
        let addr = Storage::start_in_arbiter(&thread.handle(), move |_| storage);
        Ok(StorageHandle {
            addr,
            thread: Some(thread),
        })
    }

    /// The actor's address.
    pub fn addr(&self) -> &Addr<Storage> {
        &self.addr
    }
}

impl Drop for StorageHandle {
    fn drop(&mut self) {
        self.addr.do_send(Stop);
        if let Some(thread) = self.thread.take() {
            thread.stop();
            // The save in flight, if any, finishes first.
            if thread.join().is_err() {
                log::error!("the storage thread panicked");
            }
        }
    }
}
