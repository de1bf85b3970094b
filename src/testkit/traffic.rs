//! Counts the Raft traffic each server of a cluster receives.
//!
//! The cluster puts a [`RaftTap`] in front of every server's "Raft" service. It forwards each
//! request unchanged and counts what it is: RequestVote, AppendEntries (and the entries they
//! carry), InstallSnapshot. Tests use the counts to pin down efficiency ("each entry is sent
//! about once") and paths ("the lagging replica caught up through a snapshot").
//!
//! Handles: [`Dispatch`] (forwarded to the Raft peer).

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;

use actix::prelude::*;
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

use crate::messages::net::{decode, Dispatch, Rpc, RpcError};
use crate::messages::raft::{AppendEntriesArgs, InstallSnapshotArgs, RequestVoteArgs};

/// What one server's Raft service has received (over all its incarnations).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RaftTraffic {
    /// RequestVote RPCs.
    pub request_votes: u64,
    /// AppendEntries RPCs, heartbeats included.
    pub append_entries: u64,
    /// Log entries those AppendEntries carried.
    pub entries: u64,
    /// The most entries one AppendEntries carried.
    pub largest_append: u64,
    /// InstallSnapshot RPCs.
    pub install_snapshots: u64,
}

impl RaftTraffic {
    /// The traffic since `earlier` (a reading of the same counters); `largest_append` is the
    /// largest over all time.
    pub fn since(&self, earlier: &RaftTraffic) -> RaftTraffic {
        RaftTraffic {
            request_votes: self.request_votes - earlier.request_votes,
            append_entries: self.append_entries - earlier.append_entries,
            entries: self.entries - earlier.entries,
            largest_append: self.largest_append,
            install_snapshots: self.install_snapshots - earlier.install_snapshots,
        }
    }

    /// The sum of two readings.
    pub fn plus(&self, other: &RaftTraffic) -> RaftTraffic {
        RaftTraffic {
            request_votes: self.request_votes + other.request_votes,
            append_entries: self.append_entries + other.append_entries,
            entries: self.entries + other.entries,
            largest_append: self.largest_append.max(other.largest_append),
            install_snapshots: self.install_snapshots + other.install_snapshots,
        }
    }
}

/// The counters of one server, shared by the taps of its incarnations.
pub type TrafficCounter = Rc<Cell<RaftTraffic>>;

/// Sits in front of a Raft peer on the network and counts what reaches it.
pub struct RaftTap {
    raft: Recipient<Dispatch>,
    counter: TrafficCounter,
}

impl RaftTap {
    /// A tap forwarding to `raft` and counting into `counter`.
    pub fn new(raft: Recipient<Dispatch>, counter: TrafficCounter) -> Self {
        RaftTap { raft, counter }
    }

    fn count(&self, msg: &Dispatch) {
        let mut traffic = self.counter.get();
        match msg.method {
            RequestVoteArgs::METHOD => traffic.request_votes += 1,
            AppendEntriesArgs::METHOD => {
                traffic.append_entries += 1;
                // A request the peer cannot decode is the peer's to refuse; count no entries.
                let entries = decode::<EntryCount>(&msg.args).map_or(0, |c| c.entries.0);
                traffic.entries += entries;
                traffic.largest_append = traffic.largest_append.max(entries);
            }
            InstallSnapshotArgs::METHOD => traffic.install_snapshots += 1,
            _ => {}
        }
        self.counter.set(traffic);
    }
}

impl Actor for RaftTap {
    type Context = Context<Self>;
}

impl Handler<Dispatch> for RaftTap {
    type Result = ResponseFuture<Result<Vec<u8>, RpcError>>;

    fn handle(&mut self, msg: Dispatch, _: &mut Self::Context) -> Self::Result {
        self.count(&msg);
        let raft = self.raft.clone();
        Box::pin(async move { raft.send(msg).await.unwrap_or(Err(RpcError::Unreachable)) })
    }
}

/// AppendEntriesArgs read only as far as the number of entries, without copying them.
#[derive(Deserialize)]
struct EntryCount {
    #[serde(rename = "term")]
    _term: IgnoredAny,
    #[serde(rename = "leader_id")]
    _leader_id: IgnoredAny,
    #[serde(rename = "prev_log_index")]
    _prev_log_index: IgnoredAny,
    #[serde(rename = "prev_log_term")]
    _prev_log_term: IgnoredAny,
    entries: Count,
    #[serde(rename = "leader_commit")]
    _leader_commit: IgnoredAny,
    #[serde(rename = "read_round")]
    _read_round: IgnoredAny,
}

/// The length of a sequence whose elements are skipped.
struct Count(u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Counter;
        impl<'de> Visitor<'de> for Counter {
            type Value = Count;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                let mut n = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(Count(n))
            }
        }
        deserializer.deserialize_seq(Counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::net::encode;
    use crate::messages::raft::LogEntry;

    #[test]
    fn counts_the_entries_of_an_append_without_decoding_them() {
        let args = AppendEntriesArgs {
            term: 3,
            leader_id: 1,
            prev_log_index: 7,
            prev_log_term: 2,
            entries: vec![LogEntry::command(3, vec![1; 100]); 5],
            leader_commit: 6,
            read_round: 0,
        };
        let bytes = encode(&args).expect("encodes");
        assert_eq!(decode::<EntryCount>(&bytes).map(|c| c.entries.0), Ok(5));
    }
}
