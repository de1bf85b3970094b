//! Checking a data directory's WAL without touching it: what `rainkv wal check DIR` prints.
//!
//! [`check_wal`] reads the WAL exactly as recovery does (the same framing and decoding) and
//! reports each valid record and the verdict: ok, a torn final write that a restart would cut,
//! or damage that a restart refuses. It never writes.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::file::WAL;
use super::record::read_wal;
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

/// What recovery would do with a WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalVerdict {
    /// Every byte belongs to a valid record: it is read as it is.
    Ok,
    /// It ends with a torn final write, which a restart cuts off.
    TornTail {
        /// Where the torn record starts (the file's valid length).
        offset: u64,
        /// How many bytes would be cut.
        bytes: u64,
        /// What the torn record looks like.
        reason: String,
    },
    /// It is damaged where no crash can have torn it: a restart refuses it.
    Corrupt {
        /// Where the damage is (a record's or the file header's offset).
        offset: u64,
        /// What is wrong.
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
        }
    }
}

/// A WAL's records and verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalCheck {
    /// The file checked.
    pub path: PathBuf,
    /// Its length in bytes.
    pub len: u64,
    /// Its valid records, in order (up to a torn tail or the damage).
    pub records: Vec<WalRecordInfo>,
    /// What recovery would do with it.
    pub verdict: WalVerdict,
}

impl WalCheck {
    /// Whether a restart would accept the WAL (as it is, or with its torn tail cut).
    pub fn is_usable(&self) -> bool {
        !matches!(self.verdict, WalVerdict::Corrupt { .. })
    }

    /// The first line of a report: which file, its format and size.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} bytes, {} valid records (this build reads WAL format {FORMAT_VERSION})",
            self.path.display(),
            self.len,
            self.records.len()
        )
    }
}

/// Checks the WAL of the data directory `dir` without changing anything. Fails only if the
/// file cannot be read.
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
    let verdict = match wal.end {
        End::Clean => WalVerdict::Ok,
        End::Torn { offset, reason } => WalVerdict::TornTail {
            offset: offset as u64,
            bytes: (bytes.len() - offset) as u64,
            reason,
        },
        End::Corrupt { offset, reason } => WalVerdict::Corrupt {
            offset: offset as u64,
            reason,
        },
    };
    Ok(WalCheck {
        path,
        len: bytes.len() as u64,
        records,
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
        let entry = |c| LogEntry {
            term: 2,
            command: vec![c; 5],
        };
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
            check.summary(),
            format!(
                "{}: {} bytes, 3 valid records (this build reads WAL format 2)",
                dir.join("wal").display(),
                check.len
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
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(&dir2).unwrap();
    }

    #[test]
    fn tells_a_torn_tail_from_damage_and_changes_nothing() {
        let dir = temp_dir("verdicts");
        three_saves(&dir, false);
        let path = dir.join(WAL);
        let whole = fs::read(&path).unwrap();
        let third = check_wal(&dir).unwrap().records[2].offset;

        fs::write(&path, &whole[..whole.len() - 2]).unwrap();
        let check = check_wal(&dir).unwrap();
        assert_eq!(check.records.len(), 2);
        let WalVerdict::TornTail { offset, bytes, .. } = &check.verdict else {
            panic!("{}", check.verdict);
        };
        assert_eq!((*offset, *bytes), (third, whole.len() as u64 - 2 - third));
        assert!(check.is_usable());
        assert!(check
            .verdict
            .to_string()
            .starts_with(&format!("torn tail at offset {third} (")));
        assert_eq!(
            fs::read(&path).unwrap(),
            &whole[..whole.len() - 2],
            "nothing cut"
        );

        let mut damaged = whole.clone();
        damaged[third as usize - 3] ^= 1; // the second record's payload
        fs::write(&path, &damaged).unwrap();
        let check = check_wal(&dir).unwrap();
        assert!(!check.is_usable());
        assert_eq!(check.records.len(), 1);
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
