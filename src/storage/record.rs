//! What the files' records hold (a WAL record, the snapshot file's one record), and a WAL
//! file read whole: framed by [`super::wal`], each payload decoded into a [`Record`].
//! Recovery ([`super::FilePersister::open`]) and [`super::check_wal`] read a WAL through
//! [`read_wal`], so `rainkv wal check` says exactly what a restart would do with the file.

use serde::{Deserialize, Serialize};

use super::wal::{self, End, FileKind};
use crate::messages::raft::{LogEntry, Membership};
use crate::messages::storage::SavedState;

/// One WAL record. Read as `Record` (owned); written borrowed, `Record<&[LogEntry],
/// &SavedState>`, which encodes the same bytes without copying the entries first.
#[derive(Serialize, Deserialize)]
pub(crate) enum Record<E = Vec<LogEntry>, S = SavedState> {
    /// A [`crate::messages::storage::StateUpdate`]; a new snapshot is named by index and term,
    /// its bytes are in the snapshot file.
    Update {
        term: u64,
        voted_for: Option<usize>,
        snapshot: Option<(u64, u64)>,
        first_index: u64,
        entries: E,
    },
    /// The whole state: the first record of a rewritten WAL.
    Checkpoint(S),
}

/// The snapshot file's single record (`D`: `ByteBuf` to read, `&Bytes` to write without a
/// copy).
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotFile<D> {
    /// Last log index the snapshot covers.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// The service's encoded state.
    pub data: D,
    /// The membership at `index` (absent in files written before membership change).
    #[serde(default)]
    pub membership: Option<Membership>,
}

fn vote(voted_for: Option<usize>) -> String {
    voted_for.map_or("none".to_string(), |v| v.to_string())
}

/// `K entries at a..=b`, or `no entries`.
fn entries(first: u64, count: usize) -> String {
    match count {
        0 => "no entries".to_string(),
        1 => format!("1 entry at {first}"),
        n => format!("{n} entries at {first}..={}", first + n as u64 - 1),
    }
}

impl Record {
    /// A one-line summary: term, vote, snapshot point and which log entries it holds.
    pub(crate) fn describe(&self) -> String {
        match self {
            Record::Update {
                term,
                voted_for,
                snapshot,
                first_index,
                entries: new,
            } => {
                let snapshot = snapshot.map_or(String::new(), |(index, term)| {
                    format!(", snapshot at {index} (term {term})")
                });
                format!(
                    "update: term {term}, vote {}{snapshot}, {}",
                    vote(*voted_for),
                    entries(*first_index, new.len())
                )
            }
            Record::Checkpoint(state) => format!(
                "checkpoint: term {}, vote {}, snapshot at {} (term {}), {}",
                state.term,
                vote(state.voted_for),
                state.snapshot_index,
                state.snapshot_term,
                entries(state.snapshot_index + 1, state.entries.len())
            ),
        }
    }
}

/// One decoded record and where it is.
pub(crate) struct Located {
    /// Offset of its header.
    pub offset: usize,
    /// Its size in the file, header included.
    pub size: usize,
    /// What it holds.
    pub record: Record,
}

/// A WAL read whole: its valid records, decoded, and how it ends.
pub(crate) struct WalFile {
    /// The file's id, which records appended to it must carry.
    pub file_id: u64,
    /// The valid records, in order (up to a torn tail or damage).
    pub records: Vec<Located>,
    /// Where the valid part ends.
    pub valid_len: usize,
    /// How the file ends. A record whose checksums hold but which does not decode is damage
    /// too (at its offset).
    pub end: End,
}

/// Reads the WAL `bytes` (see [`super::wal`] for what is torn and what is refused).
pub(crate) fn read_wal(bytes: &[u8]) -> WalFile {
    let scan = wal::scan(FileKind::Wal, bytes);
    let mut valid_len = scan.valid_len();
    let mut end = scan.end;
    let mut records = Vec::with_capacity(scan.records.len());
    for span in scan.records {
        match rmp_serde::from_slice::<Record>(&bytes[span.payload.clone()]) {
            Ok(record) => records.push(Located {
                offset: span.offset,
                size: span.end() - span.offset,
                record,
            }),
            Err(e) => {
                // Its checksums hold: this is what was written, and it is not a record.
                valid_len = span.offset;
                end = End::Corrupt {
                    offset: span.offset,
                    reason: format!("the record passes its checksums but does not decode: {e}"),
                };
                break;
            }
        }
    }
    WalFile {
        file_id: scan.file_id,
        records,
        valid_len,
        end,
    }
}
