//! Checking a data directory without touching it: what `rainkv wal check DIR` prints.
//!
//! [`check_wal`] reads the directory exactly as recovery does (the same framing, decoding and
//! consistency checks of the WAL and the snapshot file) and reports each valid WAL record, the
//! state a restart would start from (term, vote, last index and term, snapshot point) and the
//! verdict: ok, a torn final write that a restart would cut, or damage that a restart refuses.
//! The zeros preallocated after the last record are neither: they are counted, not listed.
//! It never writes. Meant for a directory no process is using: a node appending meanwhile may
//! be seen in the middle of a write.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::record::read_wal;
use super::recover::{read_dir, WAL};
use super::wal::{End, FORMAT_VERSION};

/// One valid record of a checked WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecordInfo {
    /// Its position among the records, from 1.
    pub number: usize,
    /// Offset of its header in the file.
    pub offset: u64,
    /// Its size in the file, header included (the next record starts at `offset + size`).
    pub size: u64,
    /// What it holds, in one line (term, vote, snapshot point, log entries).
    pub description: String,
}

impl fmt::Display for WalRecordInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "record {}: offset {}, {} bytes: {}",
            self.number, self.offset, self.size, self.description
        )
    }
}

/// What recovery would do with a data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalVerdict {
    /// Every byte of the WAL belongs to a valid record or to the zeros preallocated after
    /// them, and the directory is consistent: it is read as it is.
    Ok,
    /// The WAL ends with a torn final write, which a restart cuts off.
    TornTail {
        /// Where the torn record starts (the file's valid length).
        offset: u64,
        /// How many bytes would be cut.
        bytes: u64,
        /// What the torn record looks like.
        reason: String,
    },
    /// The WAL is damaged where no crash can have torn it: a restart refuses it.
    Corrupt {
        /// Where the damage is (a record's or the file header's offset).
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The WAL reads, but a restart refuses the directory: the snapshot file is damaged or
    /// does not fit the WAL.
    Refused {
        /// Why, naming the file.
        reason: String,
    },
}

impl fmt::Display for WalVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalVerdict::Ok => write!(f, "ok"),
            WalVerdict::TornTail {
                offset,
                bytes,
                reason,
            } => write!(
                f,
                "torn tail at offset {offset} ({bytes} bytes) that would be cut: {reason}"
            ),
            WalVerdict::Corrupt { offset, reason } => {
                write!(f, "corrupt at offset {offset}: {reason}")
            }
            WalVerdict::Refused { reason } => write!(f, "refused: {reason}"),
        }
    }
}

/// The Raft state a restart would start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredState {
    /// The current term.
    pub term: u64,
    /// The vote in that term.
    pub voted_for: Option<usize>,
    /// Index of the last log entry (the snapshot's if the log after it is empty).
    pub last_index: u64,
    /// Term of that entry.
    pub last_term: u64,
    /// Last index the snapshot covers (0: no snapshot).
    pub snapshot_index: u64,
    /// Term of that entry.
    pub snapshot_term: u64,
    /// Size of the snapshot's state in bytes.
    pub snapshot_bytes: u64,
}

impl fmt::Display for RecoveredState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vote = self.voted_for.map_or("none".to_string(), |v| v.to_string());
        write!(
            f,
            "term {}, vote {vote}, last index {} (term {}), ",
            self.term, self.last_index, self.last_term
        )?;
        match self.snapshot_index {
            0 => write!(f, "no snapshot"),
            index => write!(
                f,
                "snapshot at {index} (term {}, {} bytes)",
                self.snapshot_term, self.snapshot_bytes
            ),
        }
    }
}

/// A data directory's WAL records, recovered state and verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalCheck {
    /// The WAL checked.
    pub path: PathBuf,
    /// Its length in bytes.
    pub len: u64,
    /// How many of them are the zeros preallocated after the last record (0 if the WAL ends
    /// with a torn tail or damage).
    pub zeros: u64,
    /// Its valid records, in order (up to a torn tail or the damage).
    pub records: Vec<WalRecordInfo>,
    /// What a restart would start from (`None` if it refuses the directory).
    pub state: Option<RecoveredState>,
    /// What recovery would do with the directory.
    pub verdict: WalVerdict,
}

impl WalCheck {
    /// Whether a restart would accept the directory (as it is, or with its torn tail cut).
    pub fn is_usable(&self) -> bool {
        self.state.is_some()
    }

    /// The first line of a report: which file, its format and size.
    pub fn summary(&self) -> String {
        let zeros = match self.zeros {
            0 => String::new(),
            n => format!(", then {n} bytes of zeros preallocated for the next ones"),
        };
        format!(
            "{}: {} bytes, {} valid records{zeros} (this build reads WAL format \
             {FORMAT_VERSION})",
            self.path.display(),
            self.len,
            self.records.len()
        )
    }
}

/// Checks the data directory `dir` without changing anything. Fails only if its WAL cannot be
/// read (or there is none).
pub fn check_wal(dir: &Path) -> io::Result<WalCheck> {
    let path = dir.join(WAL);
    let bytes = fs::read(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let wal = read_wal(&bytes);
    let records = wal
        .records
        .iter()
        .enumerate()
        .map(|(i, located)| WalRecordInfo {
            number: i + 1,
            offset: located.offset as u64,
            size: located.size as u64,
            description: located.record.describe(),
        })
        .collect();
    let zeros = match wal.end {
        End::Clean => (bytes.len() - wal.valid_len) as u64,
        End::Torn { .. } | End::Corrupt { .. } => 0,
    };
    let found = read_dir(dir);
    let verdict = match (wal.end, &found) {
        (End::Corrupt { offset, reason }, _) => WalVerdict::Corrupt {
            offset: offset as u64,
            reason,
        },
        (_, Err(e)) => WalVerdict::Refused {
            reason: e.to_string(),
        },
        (End::Torn { offset, reason }, Ok(_)) => WalVerdict::TornTail {
            offset: offset as u64,
            bytes: (bytes.len() - offset) as u64,
            reason,
        },
        (End::Clean, Ok(_)) => WalVerdict::Ok,
    };
    // A WAL that is corrupt is refused by recovery too: a state comes only with a usable one.
    let state = found.ok().map(|found| {
        let saved = found.state;
        RecoveredState {
            term: saved.term,
            voted_for: saved.voted_for,
            last_index: saved.last_index(),
            last_term: saved.entries.last().map_or(saved.snapshot_term, |e| e.term),
            snapshot_index: saved.snapshot_index,
            snapshot_term: saved.snapshot_term,
            snapshot_bytes: found.snapshot.len() as u64,
        }
    });
    Ok(WalCheck {
        path,
        len: bytes.len() as u64,
        zeros,
        records,
        state,
        verdict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::raft::LogEntry;
    use crate::messages::storage::{NewSnapshot, StateUpdate};
    use crate::storage::{FilePersister, Persister};
    use std::sync::Arc;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rainkv-check-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// A data directory with three saves: a vote, two entries, then a snapshot at 1 (which
    /// rewrites the WAL as a checkpoint) and one more entry.
    fn three_saves(dir: &Path, snapshot: bool) {
        let mut p = FilePersister::open(dir).unwrap();
        let entry = |c| LogEntry::command(2, vec![c; 5]);
        let update = |first_index, entries| StateUpdate {
            term: 2,
            voted_for: Some(1),
            snapshot: None,
            first_index,
            entries,
        };
        p.save(update(1, vec![])).unwrap();
        p.save(update(1, vec![entry(1), entry(2)])).unwrap();
        let mut last = update(3, vec![entry(3)]);
        if snapshot {
            last.snapshot = Some(NewSnapshot {
                index: 1,
                term: 2,
                data: Arc::new(vec![9]),
                membership: None,
            });
        }
        p.save(last).unwrap();
    }

    #[test]
    fn lists_the_records_of_a_good_wal() {
        let dir = temp_dir("good");
        three_saves(&dir, false);
        let check = check_wal(&dir).unwrap();
        assert_eq!(check.verdict, WalVerdict::Ok);
        assert!(check.is_usable());
        let lines: Vec<String> = check.records.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].starts_with("record 1: offset 20, ")
                && lines[0].ends_with("update: term 2, vote 1, no entries"),
            "{}",
            lines[0]
        );
        assert!(lines[1].ends_with("2 entries at 1..=2"), "{}", lines[1]);
        assert_eq!(
            check.records[1].offset,
            check.records[0].offset + check.records[0].size
        );
        assert_eq!(
            check.state.as_ref().map(ToString::to_string).as_deref(),
            Some("term 2, vote 1, last index 3 (term 2), no snapshot")
        );
        // The zeros preallocated after the records are counted, not listed.
        let third = &check.records[2];
        assert_eq!(check.zeros, check.len - third.offset - third.size);
        assert!(check.zeros > 0);
        assert_eq!(
            check.summary(),
            format!(
                "{}: {} bytes, 3 valid records, then {} bytes of zeros preallocated for the \
                 next ones (this build reads WAL format 2)",
                dir.join("wal").display(),
                check.len,
                check.zeros
            )
        );

        // After a snapshot the WAL is one checkpoint.
        let dir2 = temp_dir("checkpoint");
        three_saves(&dir2, true);
        let check = check_wal(&dir2).unwrap();
        assert_eq!(check.records.len(), 1);
        assert_eq!(
            check.records[0].description,
            "checkpoint: term 2, vote 1, snapshot at 1 (term 2), 2 entries at 2..=3"
        );
        assert_eq!(
            check.state.as_ref().map(ToString::to_string).as_deref(),
            Some("term 2, vote 1, last index 3 (term 2), snapshot at 1 (term 2, 1 bytes)")
        );

        // A damaged snapshot file: the WAL reads, the directory is refused.
        let snapshot = dir2.join("snapshot");
        let mut bytes = fs::read(&snapshot).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&snapshot, &bytes).unwrap();
        let check = check_wal(&dir2).unwrap();
        assert_eq!((check.records.len(), &check.state), (1, &None));
        assert!(!check.is_usable());
        let verdict = check.verdict.to_string();
        assert!(
            verdict.starts_with(&format!(
                "refused: {}: corrupt at offset 20: ",
                snapshot.display()
            )),
            "{verdict}"
        );
        assert_eq!(fs::read(&snapshot).unwrap(), bytes, "nothing changed");
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(&dir2).unwrap();
    }

    #[test]
    fn tells_a_torn_tail_from_damage_and_changes_nothing() {
        let dir = temp_dir("verdicts");
        three_saves(&dir, false);
        let path = dir.join(WAL);
        let whole = fs::read(&path).unwrap();
        let third = check_wal(&dir).unwrap().records[2].clone();
        let (third, end) = (third.offset, (third.offset + third.size) as usize);

        // The third record's last two bytes never reached the disk: zeros, as after it.
        let mut torn = whole.clone();
        torn[end - 2..end].fill(0);
        fs::write(&path, &torn).unwrap();
        let check = check_wal(&dir).unwrap();
        assert_eq!(check.records.len(), 2);
        let WalVerdict::TornTail { offset, bytes, .. } = &check.verdict else {
            panic!("{}", check.verdict);
        };
        assert_eq!((*offset, *bytes), (third, whole.len() as u64 - third));
        assert_eq!(check.zeros, 0, "the zeros are cut with the torn record");
        assert!(check.is_usable());
        assert_eq!(check.state.as_ref().map(|s| s.last_index), Some(2));
        assert!(check
            .verdict
            .to_string()
            .starts_with(&format!("torn tail at offset {third} (")));
        assert_eq!(fs::read(&path).unwrap(), torn, "nothing cut");

        let mut damaged = whole.clone();
        damaged[third as usize - 3] ^= 1; // the second record's payload
        fs::write(&path, &damaged).unwrap();
        let check = check_wal(&dir).unwrap();
        assert!(!check.is_usable());
        assert_eq!((check.records.len(), &check.state), (1, &None));
        let verdict = check.verdict.to_string();
        assert!(
            verdict.starts_with(&format!(
                "corrupt at offset {}: ",
                check.records[0].offset + check.records[0].size
            )),
            "{verdict}"
        );
        fs::remove_dir_all(&dir).unwrap();

        let missing = check_wal(&dir).expect_err("no WAL");
        assert!(missing.to_string().contains("wal"), "{missing}");
    }
}
