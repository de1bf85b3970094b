//! Reading a data directory without changing it: the state a restart starts from and what it
//! will clean up (a torn final WAL record, temporary files of writes that never took effect),
//! or why it refuses the directory.
//!
//! [`super::FilePersister::open`] acts on what [`read_dir`] found only once it found nothing to
//! refuse, so a refused directory is left byte for byte as it was; [`super::check_wal`] reports
//! what it found. Both read the files through here, so `rainkv wal check` says exactly what a
//! restart would do.

use std::fmt;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use serde_bytes::ByteBuf;

use super::record::{read_wal, Record, SnapshotFile};
use super::wal::{self, End, FileKind};
use crate::messages::storage::{NewSnapshot, SavedState, StateUpdate};

/// The WAL's file name in a data directory.
pub(crate) const WAL: &str = "wal";
/// Where a new WAL is written before it is renamed over [`WAL`].
pub(crate) const WAL_TMP: &str = "wal.tmp";
/// The snapshot's file name in a data directory.
pub(crate) const SNAPSHOT: &str = "snapshot";
/// Where a new snapshot is written before it is renamed over [`SNAPSHOT`].
pub(crate) const SNAPSHOT_TMP: &str = "snapshot.tmp";

/// An error about the contents of `path`.
pub(crate) fn invalid(path: &Path, why: impl fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {why}", path.display()),
    )
}

/// Adds the path and what was being done to an I/O error, keeping its kind.
pub(crate) fn at<'a>(path: &'a Path, doing: &'a str) -> impl FnOnce(io::Error) -> io::Error + 'a {
    move |e| io::Error::new(e.kind(), format!("{}: {doing}: {e}", path.display()))
}

/// A torn final WAL record, which a restart cuts off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TornTail {
    /// Where it starts: the WAL's length once it is cut.
    pub offset: u64,
    /// How many bytes are cut.
    pub bytes: u64,
    /// What it looks like.
    pub reason: String,
}

/// The WAL of a data directory, as found.
#[derive(Debug)]
pub(crate) struct FoundWal {
    /// The file's id, which records appended to it must carry.
    pub id: u64,
    /// Its length once a torn tail is cut.
    pub valid_len: u64,
    /// The file's length once a torn tail is cut: `valid_len` and the zeros after it.
    pub allocated: u64,
    /// A torn final record, if it ends with one.
    pub torn: Option<TornTail>,
}

/// What a data directory holds, and what opening it will clean up.
#[derive(Debug)]
pub(crate) struct Found {
    /// The state a restart starts from.
    pub state: SavedState,
    /// The snapshot's bytes (empty if there is none).
    pub snapshot: Arc<Vec<u8>>,
    /// The WAL (`None`: there is none, and no snapshot either: a new directory).
    pub wal: Option<FoundWal>,
    /// Temporary files left by writes that never took effect, to be removed.
    pub leftovers: Vec<&'static str>,
}

/// Reads the data directory `dir` (which must exist) without changing anything: the state it
/// holds and what opening it cleans up, or an error naming the file, the offset and what is
/// wrong if a restart must refuse it.
pub(crate) fn read_dir(dir: &Path) -> io::Result<Found> {
    let snapshot_file = read_snapshot_file(&dir.join(SNAPSHOT))?;
    let wal_path = dir.join(WAL);
    let (mut state, wal) = match fs::read(&wal_path) {
        Ok(bytes) => {
            let (state, wal) = read_wal_file(&wal_path, &bytes)?;
            (state, Some(wal))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if snapshot_file.is_some() {
                // The WAL is created before any snapshot is taken: it was lost.
                return Err(invalid(
                    &wal_path,
                    "missing, but there is a snapshot file (the term, vote and log are lost)",
                ));
            }
            (SavedState::default(), None)
        }
        Err(e) => return Err(at(&wal_path, "read")(e)),
    };
    let snapshot = match snapshot_file {
        Some(file) if file.index < state.snapshot_index => {
            return Err(invalid(
                &dir.join(SNAPSHOT),
                format!(
                    "snapshot at {} is older than the log's snapshot point {}",
                    file.index, state.snapshot_index
                ),
            ));
        }
        Some(file) => {
            let data = Arc::clone(&file.data);
            // A crash between the snapshot's rename and its WAL record: adopt the snapshot.
            state.apply(StateUpdate {
                term: state.term,
                voted_for: state.voted_for,
                first_index: state.last_index().max(file.index) + 1,
                snapshot: Some(file),
                entries: Vec::new(),
            });
            data
        }
        None if state.snapshot_index > 0 => {
            return Err(invalid(
                &dir.join(SNAPSHOT),
                format!(
                    "missing, but the log needs the snapshot at {}",
                    state.snapshot_index
                ),
            ));
        }
        None => Arc::default(),
    };
    let mut leftovers = Vec::new();
    for tmp in [WAL_TMP, SNAPSHOT_TMP] {
        let path = dir.join(tmp);
        if path.try_exists().map_err(at(&path, "look for"))? {
            leftovers.push(tmp);
        }
    }
    Ok(Found {
        state,
        snapshot,
        wal,
        leftovers,
    })
}

/// The snapshot file at `path`, if there is one; refused if it is damaged in any way (it is
/// renamed into place only once complete, so even a torn one is damage).
fn read_snapshot_file(path: &Path) -> io::Result<Option<NewSnapshot>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(at(path, "read")(e)),
    };
    let scan = wal::scan(FileKind::Snapshot, &bytes);
    let payload = match (&scan.end, scan.records.as_slice()) {
        (End::Clean, [record]) => &bytes[record.payload.clone()],
        (End::Clean, records) => {
            return Err(invalid(
                path,
                format!("{} records, where a snapshot file holds one", records.len()),
            ))
        }
        (End::Torn { offset, reason } | End::Corrupt { offset, reason }, _) => {
            return Err(invalid(
                path,
                format!("corrupt at offset {offset}: {reason}"),
            ))
        }
    };
    let file: SnapshotFile<ByteBuf> = rmp_serde::from_slice(payload).map_err(|e| {
        invalid(
            path,
            format!(
                "the record at offset {} does not decode: {e}",
                wal::FILE_HEADER_LEN
            ),
        )
    })?;
    Ok(Some(NewSnapshot {
        index: file.index,
        term: file.term,
        data: Arc::new(file.data.into_vec()),
        membership: file.membership,
    }))
}

/// The state the WAL `bytes` (read from `path`) hold, and the WAL as found; refused if it is
/// damaged anywhere but in a torn final record.
fn read_wal_file(path: &Path, bytes: &[u8]) -> io::Result<(SavedState, FoundWal)> {
    let wal = read_wal(bytes);
    let torn = match wal.end {
        End::Clean => None,
        End::Corrupt { offset, reason } => {
            return Err(invalid(
                path,
                format!(
                    "corrupt at offset {offset}: {reason} (the file is left as it is; \
                     `rainkv wal check {}` lists its records)",
                    path.parent().unwrap_or(path).display()
                ),
            ))
        }
        End::Torn { offset, reason } => Some(TornTail {
            offset: offset as u64,
            bytes: (bytes.len() - offset) as u64,
            reason,
        }),
    };
    let mut state = SavedState::default();
    for located in wal.records {
        match located.record {
            Record::Checkpoint(whole) => state = whole,
            Record::Update {
                term,
                voted_for,
                snapshot,
                first_index,
                entries,
            } => state.apply(StateUpdate {
                term,
                voted_for,
                snapshot: snapshot.map(|(index, term)| NewSnapshot {
                    index,
                    term,
                    data: Arc::default(),
                    membership: None,
                }),
                first_index,
                entries,
            }),
        }
    }
    let found = FoundWal {
        id: wal.file_id,
        valid_len: wal.valid_len as u64,
        allocated: torn.as_ref().map_or(bytes.len() as u64, |torn| torn.offset),
        torn,
    };
    Ok((state, found))
}
