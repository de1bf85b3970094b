//! The durable persister: a checksummed write-ahead log plus a snapshot file in one directory.
//!
//! Layout of the data directory:
//! - `wal`: records framed by [`super::wal`], each one [`StateUpdate`] (without the snapshot's
//!   bytes: only its index and term). A save appends one record and fsyncs, so a save that
//!   carries many entries costs one fsync (group commit).
//! - `snapshot`: the latest snapshot, itself one framed record (index, term, data). It is
//!   written to `snapshot.tmp`, fsynced, renamed over `snapshot` and the directory fsynced,
//!   *before* the WAL record that refers to it; a crash in between leaves the old snapshot or
//!   the new one, never a broken one.
//! - After a snapshot the WAL is rewritten (to `wal.tmp`, fsync, rename) as one record holding
//!   the whole current state, which truncates the log the snapshot covers.
//!
//! On open, a torn last record of the WAL is cut off (and logged); a damaged record anywhere
//! else refuses to start with an error naming the file and offset.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_bytes::{ByteBuf, Bytes};

use super::wal::{self, frame};
use super::Persister;
use crate::messages::raft::LogEntry;
use crate::messages::storage::{NewSnapshot, SavedState, StateUpdate};

const WAL: &str = "wal";
const WAL_TMP: &str = "wal.tmp";
const SNAPSHOT: &str = "snapshot";
const SNAPSHOT_TMP: &str = "snapshot.tmp";

/// One WAL record.
#[derive(Serialize, Deserialize)]
enum Record {
    /// A [`StateUpdate`]; a new snapshot is named by index and term, its bytes are in the
    /// snapshot file.
    Update {
        term: u64,
        voted_for: Option<usize>,
        snapshot: Option<(u64, u64)>,
        first_index: u64,
        entries: Vec<LogEntry>,
    },
    /// The whole state: the first record of a rewritten WAL.
    Checkpoint(SavedState),
}

/// The snapshot file's single record (`D`: `ByteBuf` to read, `&Bytes` to write without a
/// copy).
#[derive(Serialize, Deserialize)]
struct SnapshotFile<D> {
    index: u64,
    term: u64,
    data: D,
}

/// A [`Persister`] on disk; clones share the same files (the service reads sizes through one).
#[derive(Clone)]
pub struct FilePersister {
    disk: Arc<Mutex<Disk>>,
    /// The files' sizes, readable without waiting for a save that holds the lock through an
    /// fsync (the replicated state machine asks after every command it applies).
    sizes: Arc<Sizes>,
}

/// Bytes in the WAL and in the snapshot, as of the last completed save.
#[derive(Default)]
struct Sizes {
    wal: AtomicU64,
    snapshot: AtomicU64,
}

impl Sizes {
    fn record(&self, disk: &Disk) {
        self.wal.store(disk.wal_len, Ordering::Release);
        self.snapshot
            .store(disk.snapshot.len() as u64, Ordering::Release);
    }
}

/// The open files and what they hold.
struct Disk {
    dir: PathBuf,
    wal: File,
    wal_len: u64,
    /// What the files hold, kept in memory for `load` and WAL rewrites.
    state: SavedState,
    snapshot: Arc<Vec<u8>>,
    /// Set by [`FilePersister::close`]: every later save fails.
    closed: bool,
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {why}", path.display()),
    )
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `dir/tmp`, fsyncs it, renames it to `dir/name` and fsyncs `dir`.
fn replace_file(dir: &Path, tmp: &str, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(tmp);
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

impl FilePersister {
    /// Opens (or creates) the data directory `dir` and recovers its state.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<FilePersister> {
        let disk = Disk::open(dir.as_ref())?;
        let sizes = Sizes::default();
        sizes.record(&disk);
        Ok(FilePersister {
            disk: Arc::new(Mutex::new(disk)),
            sizes: Arc::new(sizes),
        })
    }

    /// Closes the store for every handle: later saves fail. A simulated crash uses it so that
    /// an instance still winding down can never write after its successor opened the files.
    pub fn close(&self) {
        self.disk().closed = true;
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        // Updates either complete or return an error before touching the in-memory state, so a
        // poisoned lock still guards a consistent state.
        self.disk
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Disk {
    fn open(dir: &Path) -> io::Result<Disk> {
        let dir = dir.to_path_buf();
        fs::create_dir_all(&dir)?;
        // A leftover temporary file is a write that never took effect.
        for tmp in [WAL_TMP, SNAPSHOT_TMP] {
            match fs::remove_file(dir.join(tmp)) {
                Ok(()) => log::info!("{}: removed unfinished {tmp}", dir.display()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let snapshot_file = Self::read_snapshot_file(&dir.join(SNAPSHOT))?;
        let (mut state, wal_len) = Self::replay_wal(&dir.join(WAL))?;
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
        let wal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(WAL))?;
        Ok(Disk {
            dir,
            wal,
            wal_len,
            state,
            snapshot,
            closed: false,
        })
    }

    fn read_snapshot_file(path: &Path) -> io::Result<Option<NewSnapshot>> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let scan = wal::scan(&bytes).map_err(|e| invalid(path, e))?;
        // The file is renamed into place only once complete: a short one is damage, not a tear.
        let (Some(payload), true) = (scan.records.first(), scan.valid_len == bytes.len()) else {
            return Err(invalid(path, "damaged snapshot file at offset 0"));
        };
        let file: SnapshotFile<ByteBuf> =
            rmp_serde::from_slice(payload).map_err(|e| invalid(path, format!("offset 0: {e}")))?;
        Ok(Some(NewSnapshot {
            index: file.index,
            term: file.term,
            data: Arc::new(file.data.into_vec()),
        }))
    }

    fn replay_wal(path: &Path) -> io::Result<(SavedState, u64)> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((SavedState::default(), 0)),
            Err(e) => return Err(e),
        };
        let scan = wal::scan(&bytes).map_err(|e| invalid(path, e))?;
        let mut state = SavedState::default();
        let mut offset = 0;
        for payload in &scan.records {
            let record: Record = rmp_serde::from_slice(payload)
                .map_err(|e| invalid(path, format!("record at offset {offset}: {e}")))?;
            match record {
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
                    }),
                    first_index,
                    entries,
                }),
            }
            offset += wal::HEADER_LEN + payload.len();
        }
        if scan.valid_len < bytes.len() {
            log::warn!(
                "{}: cutting off a torn record at offset {} ({} bytes)",
                path.display(),
                scan.valid_len,
                bytes.len() - scan.valid_len
            );
            let file = OpenOptions::new().write(true).open(path)?;
            file.set_len(scan.valid_len as u64)?;
            file.sync_all()?;
        }
        Ok((state, scan.valid_len as u64))
    }

    fn append(&mut self, record: &Record) -> io::Result<()> {
        let payload = rmp_serde::to_vec(record).map_err(|e| invalid(&self.dir.join(WAL), e))?;
        let bytes = frame(&payload);
        self.wal.write_all(&bytes)?;
        self.wal.sync_data()?;
        self.wal_len += bytes.len() as u64;
        Ok(())
    }

    /// Replaces the WAL by one checkpoint of the current state.
    fn rewrite_wal(&mut self) -> io::Result<()> {
        let payload = rmp_serde::to_vec(&Record::Checkpoint(self.state.clone()))
            .map_err(|e| invalid(&self.dir.join(WAL), e))?;
        let bytes = frame(&payload);
        replace_file(&self.dir, WAL_TMP, WAL, &bytes)?;
        self.wal = OpenOptions::new().append(true).open(self.dir.join(WAL))?;
        self.wal_len = bytes.len() as u64;
        Ok(())
    }
}

impl Disk {
    fn save(&mut self, update: StateUpdate) -> io::Result<()> {
        if self.closed {
            return Err(io::Error::other(format!(
                "{}: the store was closed",
                self.dir.display()
            )));
        }
        let snapshot = update.snapshot.clone();
        if let Some(new) = &snapshot {
            let file = SnapshotFile {
                index: new.index,
                term: new.term,
                data: Bytes::new(new.data.as_slice()),
            };
            let payload =
                rmp_serde::to_vec(&file).map_err(|e| invalid(&self.dir.join(SNAPSHOT), e))?;
            replace_file(&self.dir, SNAPSHOT_TMP, SNAPSHOT, &frame(&payload))?;
        }
        let record = Record::Update {
            term: update.term,
            voted_for: update.voted_for,
            snapshot: snapshot.as_ref().map(|s| (s.index, s.term)),
            first_index: update.first_index,
            entries: update.entries.clone(),
        };
        self.append(&record)?;
        self.state.apply(update);
        if let Some(new) = snapshot {
            self.snapshot = new.data;
            self.rewrite_wal()?;
        }
        Ok(())
    }
}

impl Persister for FilePersister {
    fn save(&mut self, update: StateUpdate) -> io::Result<()> {
        let mut disk = self.disk();
        let saved = disk.save(update);
        self.sizes.record(&disk);
        saved
    }

    fn load(&self) -> io::Result<SavedState> {
        Ok(self.disk().state.clone())
    }

    fn read_snapshot(&self) -> Arc<Vec<u8>> {
        Arc::clone(&self.disk().snapshot)
    }

    fn raft_state_size(&self) -> usize {
        self.sizes.wal.load(Ordering::Acquire) as usize
    }

    fn snapshot_size(&self) -> usize {
        self.sizes.snapshot.load(Ordering::Acquire) as usize
    }

    /// Saves write and fsync files.
    fn blocks(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rainkv-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn entry(term: u64, c: u8) -> LogEntry {
        LogEntry {
            term,
            command: vec![c; 10],
        }
    }

    fn update(first_index: u64, entries: Vec<LogEntry>) -> StateUpdate {
        StateUpdate {
            term: 3,
            voted_for: Some(2),
            snapshot: None,
            first_index,
            entries,
        }
    }

    #[test]
    fn state_survives_reopen() {
        let dir = temp_dir("reopen");
        let mut p = FilePersister::open(&dir).unwrap();
        p.save(update(1, vec![entry(1, 1), entry(2, 2)])).unwrap();
        p.save(update(2, vec![entry(3, 3)])).unwrap();
        let expected = p.load().unwrap();
        drop(p);
        let p = FilePersister::open(&dir).unwrap();
        assert_eq!(p.load().unwrap(), expected);
        assert_eq!(expected.entries, vec![entry(1, 1), entry(3, 3)]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn snapshot_truncates_the_wal_and_survives_reopen() {
        let dir = temp_dir("snapshot");
        let mut p = FilePersister::open(&dir).unwrap();
        let entries: Vec<LogEntry> = (1..=20).map(|i| entry(1, i)).collect();
        p.save(update(1, entries)).unwrap();
        let before = p.raft_state_size();
        let mut u = update(21, vec![]);
        u.snapshot = Some(NewSnapshot {
            index: 18,
            term: 1,
            data: Arc::new(b"state".to_vec()),
        });
        p.save(u).unwrap();
        assert!(p.raft_state_size() < before / 2);
        drop(p);
        let p = FilePersister::open(&dir).unwrap();
        let state = p.load().unwrap();
        assert_eq!((state.snapshot_index, state.last_index()), (18, 20));
        assert_eq!(*p.read_snapshot(), b"state".to_vec());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn torn_tail_is_cut_and_middle_corruption_refused() {
        let dir = temp_dir("torn");
        let mut p = FilePersister::open(&dir).unwrap();
        p.save(update(1, vec![entry(1, 1)])).unwrap();
        p.save(update(2, vec![entry(1, 2)])).unwrap();
        drop(p);
        let wal_path = dir.join(WAL);
        let whole = fs::read(&wal_path).unwrap();
        fs::write(&wal_path, &whole[..whole.len() - 3]).unwrap();
        let p = FilePersister::open(&dir).unwrap();
        assert_eq!(p.load().unwrap().last_index(), 1);
        drop(p);

        let mut bytes = whole.clone();
        bytes[wal::HEADER_LEN + 1] ^= 0xff; // inside the first record's payload
        fs::write(&wal_path, &bytes).unwrap();
        let err = FilePersister::open(&dir)
            .err()
            .expect("corruption is refused");
        let message = err.to_string();
        assert!(
            message.contains("wal") && message.contains("offset 0"),
            "{message}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn crash_before_the_snapshot_rename_keeps_the_old_state() {
        let dir = temp_dir("rename");
        let mut p = FilePersister::open(&dir).unwrap();
        p.save(update(1, vec![entry(1, 1), entry(1, 2)])).unwrap();
        drop(p);
        // A snapshot written but never renamed: ignored.
        fs::write(dir.join(SNAPSHOT_TMP), b"half a snapshot").unwrap();
        let p = FilePersister::open(&dir).unwrap();
        assert_eq!(p.load().unwrap().last_index(), 2);
        assert!(p.read_snapshot().is_empty());
        assert!(!dir.join(SNAPSHOT_TMP).exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn crash_after_the_snapshot_rename_adopts_the_snapshot() {
        let dir = temp_dir("adopt");
        let mut p = FilePersister::open(&dir).unwrap();
        p.save(update(1, vec![entry(1, 1), entry(1, 2), entry(1, 3)]))
            .unwrap();
        drop(p);
        // The snapshot file is in place but its WAL record never made it.
        let file = SnapshotFile {
            index: 2,
            term: 1,
            data: Bytes::new(b"two"),
        };
        fs::write(
            dir.join(SNAPSHOT),
            frame(&rmp_serde::to_vec(&file).unwrap()),
        )
        .unwrap();
        let p = FilePersister::open(&dir).unwrap();
        let state = p.load().unwrap();
        assert_eq!((state.snapshot_index, state.last_index()), (2, 3));
        assert_eq!(*p.read_snapshot(), b"two".to_vec());
        fs::remove_dir_all(&dir).unwrap();
    }
}
