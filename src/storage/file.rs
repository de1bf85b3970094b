//! The durable persister: a checksummed write-ahead log plus a snapshot file in one directory.
//!
//! Layout of the data directory (both files framed by [`super::wal`], format 2):
//! - `wal`: records, each one [`StateUpdate`] (without the snapshot's bytes: only its index and
//!   term), then zeros. A save writes one record over the zeros after the last one and fsyncs
//!   its data, so a save that carries many entries costs one fsync (group commit), and that
//!   fsync has no file size or newly allocated blocks to record: the zeros were written and
//!   fsynced before. When a record does not fit in them, the same write is followed by
//!   `WAL_CHUNK` more zeros and the fsync includes the metadata, once per chunk. The WAL is
//!   created whole (header written to `wal.tmp`, fsynced, renamed), so its header is never
//!   torn; it gets its zeros with its first record.
//! - `snapshot`: the latest snapshot, one record (index, term, data). It is written to
//!   `snapshot.tmp`, fsynced, renamed over `snapshot` and the directory fsynced, *before* the
//!   WAL record that refers to it; a crash in between leaves the old snapshot or the new one,
//!   never a broken one.
//! - After a snapshot the WAL is rewritten (to `wal.tmp`, fsync, rename) as one record holding
//!   the whole current state, which truncates the log the snapshot covers.
//! - `lock`: see [`super::DataDirLock`]; this module does not use it.
//!
//! On open, the directory is read first without changing anything ([`super::recover`]); a
//! torn final WAL record (what a crash during an append leaves; [`super::wal`] says exactly
//! what that can look like) is cut off and logged, and unfinished temporary files removed, only
//! once nothing was found to refuse. Anything else that is wrong refuses to start with an error
//! naming the file, the offset and what is wrong, and leaves the files as they are. A save that
//! fails (no space, an I/O error, a failed fsync) leaves the store refusing every later save:
//! the bytes on disk may be fewer than those written, and a failed fsync says nothing about
//! which reached the disk, so nothing is retried as if it were safe.
//!
//! Two test hooks, [`FAIL_WRITES_AFTER_VAR`] and [`FAIL_FSYNC_VAR`], make writes fail once a
//! number of bytes has been written, or make one fsync fail, so tests can run a real process
//! out of disk space or onto a failing disk.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_bytes::Bytes;

use super::record::{Record, SnapshotFile};
use super::recover::{at, invalid, read_dir, SNAPSHOT, SNAPSHOT_TMP, WAL, WAL_TMP};
use super::wal::{self, FileKind, RECORD_HEADER_LEN};
use super::Persister;
use crate::messages::raft::LogEntry;
use crate::messages::storage::{SavedState, StateUpdate};

/// Bytes of zeros the WAL grows by when a record does not fit in the zeros after the last one.
/// The save that grows it writes them and fsyncs the new size: 0.9-1.6 ms for 1 MiB on the
/// development machine, against 0.12 ms for a save that fits (zeros and fsync alone: 64 KiB
/// 0.3 ms, 256 KiB 0.5 ms, 1 MiB 1.2 ms, 4 MiB 4 ms). A MiB makes that one save in thousands
/// of small ones, one per snapshot (whose rewritten WAL starts without zeros), and at most a
/// MiB of disk per data directory beyond its records.
const WAL_CHUNK: usize = 1 << 20;

/// A test hook: when set to a number of bytes N, every [`FilePersister`] this process opens
/// fails its writes once it has written N bytes (the write that crosses N writes up to N, then
/// fails as a full disk would; the zeros the WAL grows by count). Never set it outside tests;
/// a store that sees it logs a warning, and a value that is not a number refuses to open.
pub const FAIL_WRITES_AFTER_VAR: &str = "RAINKV_TEST_FAIL_WRITES_AFTER_BYTES";

/// A test hook: when set to N (from 1), the Nth fsync of every [`FilePersister`] this process
/// opens fails with an I/O error, after the data it should have made durable was written, as a
/// failing disk's fsync would. Every fsync counts, of a file or of the directory: opening a new
/// data directory takes two, each save one, a snapshot five. Never set it outside tests; a
/// store that sees it logs a warning, and a value that is not a positive number refuses to
/// open.
pub const FAIL_FSYNC_VAR: &str = "RAINKV_TEST_FAIL_FSYNC";

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

/// What the test hooks inject (all `None`: nothing, the hooks are off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Faults {
    /// Bytes that may still be written before writes fail ([`FAIL_WRITES_AFTER_VAR`]).
    write_budget: Option<u64>,
    /// Which fsync fails, from 1 ([`FAIL_FSYNC_VAR`]).
    failing_fsync: Option<u64>,
}

impl Faults {
    /// The hooks as the environment sets them.
    fn from_env(dir: &Path) -> io::Result<Faults> {
        let number = |var: &str, min: u64| -> io::Result<Option<u64>> {
            let Some(value) = std::env::var_os(var) else {
                return Ok(None);
            };
            let n = value
                .to_str()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&n| n >= min)
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("test hook {var}={value:?} is not a number of at least {min}"),
                    )
                })?;
            log::warn!("{}: test hook {var}={n} is set", dir.display());
            Ok(Some(n))
        };
        Ok(Faults {
            write_budget: number(FAIL_WRITES_AFTER_VAR, 0)?,
            failing_fsync: number(FAIL_FSYNC_VAR, 1)?,
        })
    }
}

/// Writes and fsyncs the files, failing them as the test hooks say.
struct Writer {
    faults: Faults,
    /// Fsyncs done so far.
    fsyncs: u64,
}

impl Writer {
    /// Writes `bytes` to `file` at `offset`.
    fn write(&mut self, file: &File, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let Some(budget) = self.faults.write_budget else {
            return file.write_all_at(bytes, offset);
        };
        let allowed = budget.min(bytes.len() as u64);
        self.faults.write_budget = Some(budget - allowed);
        file.write_all_at(&bytes[..allowed as usize], offset)?;
        if allowed < bytes.len() as u64 {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "no space left on device (injected by the test hook {FAIL_WRITES_AFTER_VAR})"
                ),
            ));
        }
        Ok(())
    }

    /// Fsyncs `file` (a file or a directory), data and metadata.
    fn sync_all(&mut self, file: &File) -> io::Result<()> {
        self.count_fsync()?;
        file.sync_all()
    }

    /// Fsyncs `file`'s data and what is needed to read it back (its size): enough for an
    /// append.
    fn sync_data(&mut self, file: &File) -> io::Result<()> {
        self.count_fsync()?;
        file.sync_data()
    }

    /// Counts an fsync about to be done; fails the one [`FAIL_FSYNC_VAR`] names.
    fn count_fsync(&mut self) -> io::Result<()> {
        self.fsyncs += 1;
        let n = self.fsyncs;
        if self.faults.failing_fsync != Some(n) {
            return Ok(());
        }
        log::error!("test hook {FAIL_FSYNC_VAR}: failing fsync {n}");
        Err(io::Error::other(format!(
            "input/output error (fsync {n} failed, injected by the test hook {FAIL_FSYNC_VAR})"
        )))
    }

    /// Writes `bytes` to `dir/tmp`, fsyncs it, renames it to `dir/name` and fsyncs `dir`.
    fn replace_file(&mut self, dir: &Path, tmp: &str, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = dir.join(tmp);
        let file = File::create(&tmp).map_err(at(&tmp, "create"))?;
        self.write(&file, 0, bytes).map_err(at(&tmp, "write"))?;
        self.sync_all(&file).map_err(at(&tmp, "fsync"))?;
        let path = dir.join(name);
        fs::rename(&tmp, &path).map_err(at(&path, "rename into place"))?;
        File::open(dir)
            .and_then(|d| self.sync_all(&d))
            .map_err(at(dir, "fsync the directory"))
    }
}

/// The open files and what they hold.
struct Disk {
    dir: PathBuf,
    wal: File,
    /// Where the next record goes: the end of the last one.
    wal_len: u64,
    /// The WAL file's length: zeros from `wal_len` to there.
    wal_allocated: u64,
    /// The WAL's file id, which each record's header checksum covers.
    wal_id: u64,
    /// What the files hold, kept in memory for `load` and WAL rewrites.
    state: SavedState,
    snapshot: Arc<Vec<u8>>,
    writer: Writer,
    /// Why every save now fails: the store was closed, or a write failed.
    refusing: Option<String>,
    /// The last save's record buffer, kept for the next one (unless it grew past
    /// [`KEPT_BUFFER`]) so that a save allocates nothing.
    buffer: Vec<u8>,
}

/// The largest record buffer a store keeps between saves.
const KEPT_BUFFER: usize = 4 << 20;

impl FilePersister {
    /// Opens (or creates) the data directory `dir` and recovers its state: cuts a torn final
    /// WAL record, and refuses (leaving the files as they are) anything else that is damaged,
    /// from another format, or inconsistent.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<FilePersister> {
        let dir = dir.as_ref();
        Self::open_with(dir, Faults::from_env(dir)?)
    }

    /// [`FilePersister::open`] with the test hooks' faults given.
    fn open_with(dir: &Path, faults: Faults) -> io::Result<FilePersister> {
        let writer = Writer { faults, fsyncs: 0 };
        let disk = Disk::open(dir, writer)?;
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
        self.disk().refusing = Some("the store was closed".into());
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
    fn open(dir: &Path, mut writer: Writer) -> io::Result<Disk> {
        let dir = dir.to_path_buf();
        fs::create_dir_all(&dir).map_err(at(&dir, "create the data directory"))?;
        // Everything that could refuse the directory is found before anything is changed.
        let found = read_dir(&dir)?;
        let wal_path = dir.join(WAL);
        if let Some(torn) = found.wal.as_ref().and_then(|wal| wal.torn.as_ref()) {
            log::warn!(
                "{}: cutting off a torn final record at offset {} ({} bytes): {}",
                wal_path.display(),
                torn.offset,
                torn.bytes,
                torn.reason
            );
            let file = OpenOptions::new()
                .write(true)
                .open(&wal_path)
                .map_err(at(&wal_path, "open to cut the torn tail"))?;
            file.set_len(torn.offset)
                .and_then(|()| writer.sync_all(&file))
                .map_err(at(&wal_path, "cut the torn tail"))?;
        }
        // A leftover temporary file is a write that never took effect.
        for tmp in found.leftovers {
            let path = dir.join(tmp);
            fs::remove_file(&path).map_err(at(&path, "remove"))?;
            log::info!("{}: removed unfinished {tmp}", dir.display());
        }
        let (wal_len, wal_allocated, wal_id) = match found.wal {
            Some(wal) => (wal.valid_len, wal.allocated, wal.id),
            None => {
                let (bytes, id) = wal::file_of(FileKind::Wal, [])?;
                writer.replace_file(&dir, WAL_TMP, WAL, &bytes)?;
                (bytes.len() as u64, bytes.len() as u64, id)
            }
        };
        // Not in append mode: records are written at `wal_len`, over the zeros.
        let wal = OpenOptions::new()
            .write(true)
            .open(&wal_path)
            .map_err(at(&wal_path, "open"))?;
        Ok(Disk {
            dir,
            wal,
            wal_len,
            wal_allocated,
            wal_id,
            state: found.state,
            snapshot: found.snapshot,
            writer,
            refusing: None,
            buffer: Vec::new(),
        })
    }

    fn append(&mut self, record: &Record<&[LogEntry], &SavedState>) -> io::Result<()> {
        let path = self.dir.join(WAL);
        // The payload is encoded right after room for its header, which is then filled in.
        let mut bytes = std::mem::take(&mut self.buffer);
        bytes.clear();
        bytes.resize(RECORD_HEADER_LEN, 0);
        rmp_serde::encode::write(&mut bytes, record).map_err(|e| invalid(&path, e))?;
        wal::seal(self.wal_id, self.wal_len, &mut bytes)?;
        let end = self.wal_len + bytes.len() as u64;
        self.writer
            .write(&self.wal, self.wal_len, &bytes)
            .map_err(at(&path, "append"))?;
        if end <= self.wal_allocated {
            // Written over zeros already on disk: only the data is to be made durable.
            self.writer
                .sync_data(&self.wal)
                .map_err(at(&path, "fsync"))?;
        } else {
            // The file grows: zeros after the record for the next ones, and an fsync of the
            // new size and blocks with the record's data.
            self.writer
                .write(&self.wal, end, &vec![0; WAL_CHUNK])
                .map_err(at(&path, "preallocate"))?;
            self.writer
                .sync_all(&self.wal)
                .map_err(at(&path, "fsync"))?;
            self.wal_allocated = end + WAL_CHUNK as u64;
        }
        self.wal_len = end;
        if bytes.capacity() <= KEPT_BUFFER {
            self.buffer = bytes;
        }
        Ok(())
    }

    /// Replaces the WAL by one checkpoint of the current state.
    fn rewrite_wal(&mut self) -> io::Result<()> {
        let path = self.dir.join(WAL);
        let record: Record<&[LogEntry], &SavedState> = Record::Checkpoint(&self.state);
        let payload = rmp_serde::to_vec(&record).map_err(|e| invalid(&path, e))?;
        let (bytes, id) = wal::file_of(FileKind::Wal, [payload.as_slice()])?;
        self.writer.replace_file(&self.dir, WAL_TMP, WAL, &bytes)?;
        self.wal = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(at(&path, "open"))?;
        self.wal_len = bytes.len() as u64;
        self.wal_allocated = self.wal_len;
        self.wal_id = id;
        Ok(())
    }

    /// Saves `update`, unless an earlier save failed or the store was closed; after a
    /// failure, refuses every later save.
    fn save(&mut self, update: StateUpdate) -> io::Result<()> {
        if let Some(why) = &self.refusing {
            return Err(io::Error::other(format!("{}: {why}", self.dir.display())));
        }
        let saved = self.write(update);
        if let Err(e) = &saved {
            self.refusing = Some(format!(
                "an earlier save failed ({e}), and no save is retried after a failed write or \
                 fsync: restart to recover from what is on disk"
            ));
        }
        saved
    }

    fn write(&mut self, update: StateUpdate) -> io::Result<()> {
        let snapshot = update.snapshot.clone();
        if let Some(new) = &snapshot {
            let file = SnapshotFile {
                index: new.index,
                term: new.term,
                data: Bytes::new(new.data.as_slice()),
                membership: new.membership.clone(),
            };
            let payload =
                rmp_serde::to_vec(&file).map_err(|e| invalid(&self.dir.join(SNAPSHOT), e))?;
            let (bytes, _) = wal::file_of(FileKind::Snapshot, [payload.as_slice()])?;
            self.writer
                .replace_file(&self.dir, SNAPSHOT_TMP, SNAPSHOT, &bytes)?;
        }
        let record: Record<&[LogEntry], &SavedState> = Record::Update {
            term: update.term,
            voted_for: update.voted_for,
            snapshot: snapshot.as_ref().map(|s| (s.index, s.term)),
            first_index: update.first_index,
            entries: &update.entries,
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
    use crate::messages::raft::{LogEntry, Membership};
    use crate::messages::storage::NewSnapshot;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rainkv-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn entry(term: u64, c: u8) -> LogEntry {
        LogEntry::command(term, vec![c; 10])
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
            membership: Some(Membership::with_voters(5)),
        });
        p.save(u).unwrap();
        assert!(p.raft_state_size() < before / 2);
        drop(p);
        let p = FilePersister::open(&dir).unwrap();
        let state = p.load().unwrap();
        assert_eq!((state.snapshot_index, state.last_index()), (18, 20));
        assert_eq!(state.snapshot_membership, Some(Membership::with_voters(5)));
        assert_eq!(*p.read_snapshot(), b"state".to_vec());
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The WAL file's bytes after its records: all zeros, and how many.
    fn zeros_after_the_records(dir: &Path, p: &FilePersister) -> usize {
        let bytes = fs::read(dir.join(WAL)).unwrap();
        let tail = &bytes[p.raft_state_size()..];
        assert!(tail.iter().all(|&b| b == 0), "only zeros after the records");
        tail.len()
    }

    #[test]
    fn the_zeros_after_the_records_are_a_clean_end_that_survives_reopen() {
        let dir = temp_dir("zeros");
        let mut p = FilePersister::open(&dir).unwrap();
        assert_eq!(zeros_after_the_records(&dir, &p), 0, "a new WAL has none");
        p.save(update(1, vec![entry(1, 1), entry(2, 2)])).unwrap();
        let first = p.raft_state_size();
        assert_eq!(zeros_after_the_records(&dir, &p), WAL_CHUNK);
        p.save(update(3, vec![entry(3, 3)])).unwrap();
        assert_eq!(
            zeros_after_the_records(&dir, &p),
            WAL_CHUNK + first - p.raft_state_size()
        );
        let expected = p.load().unwrap();
        let (size, bytes) = (p.raft_state_size(), fs::read(dir.join(WAL)).unwrap());
        drop(p);
        let mut p = FilePersister::open(&dir).unwrap();
        assert_eq!(p.load().unwrap(), expected);
        assert_eq!(p.raft_state_size(), size);
        assert_eq!(fs::read(dir.join(WAL)).unwrap(), bytes, "nothing was cut");
        // The next record goes over the zeros, right after the last one.
        p.save(update(4, vec![entry(4, 4)])).unwrap();
        let expected = p.load().unwrap();
        assert_eq!(
            fs::metadata(dir.join(WAL)).unwrap().len(),
            bytes.len() as u64
        );
        drop(p);
        let p = FilePersister::open(&dir).unwrap();
        assert_eq!(p.load().unwrap(), expected);
        assert_eq!(expected.last_index(), 4);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_record_before_the_zeros_is_cut_and_the_next_save_reopens() {
        let dir = temp_dir("torn-zeros");
        let mut p = FilePersister::open(&dir).unwrap();
        p.save(update(1, vec![entry(1, 1)])).unwrap();
        let last = p.raft_state_size();
        p.save(update(2, vec![entry(1, 2); 30])).unwrap();
        let used = p.raft_state_size();
        drop(p);
        // Only the start of the last record reached the disk: the rest reads as the zeros
        // that were there.
        let wal_path = dir.join(WAL);
        let mut bytes = fs::read(&wal_path).unwrap();
        bytes[last + 100..used].fill(0);
        fs::write(&wal_path, &bytes).unwrap();
        let mut p = FilePersister::open(&dir).unwrap();
        assert_eq!(p.load().unwrap().entries, vec![entry(1, 1)]);
        assert_eq!(
            fs::read(&wal_path).unwrap(),
            bytes[..last],
            "cut, zeros and all"
        );
        p.save(update(2, vec![entry(2, 2)])).unwrap();
        assert_eq!(
            zeros_after_the_records(&dir, &p),
            WAL_CHUNK,
            "preallocated again"
        );
        drop(p);
        let p = FilePersister::open(&dir).unwrap();
        assert_eq!(p.load().unwrap().entries, vec![entry(1, 1), entry(2, 2)]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_cross_the_end_of_the_zeros_and_survive_reopen() {
        let dir = temp_dir("chunks");
        let big = |c: u8, kib: usize| LogEntry::command(1, vec![c; kib << 10]);
        let mut p = FilePersister::open(&dir).unwrap();
        // Saves of 100 KiB until the first chunk is full, reopened half way.
        let mut index = 1;
        while p.raft_state_size() < WAL_CHUNK + (200 << 10) {
            p.save(update(index, vec![big(index as u8, 100)])).unwrap();
            index += 1;
            if index == 6 {
                drop(p);
                p = FilePersister::open(&dir).unwrap();
            }
        }
        let zeros = zeros_after_the_records(&dir, &p);
        assert!(
            zeros > 0 && zeros < WAL_CHUNK,
            "{zeros} zeros after a second extension"
        );
        // Reopened, then a record larger than a chunk, which must grow the file at once.
        drop(p);
        let mut p = FilePersister::open(&dir).unwrap();
        p.save(update(index, vec![big(0, 1536)])).unwrap();
        assert_eq!(zeros_after_the_records(&dir, &p), WAL_CHUNK);
        let expected = p.load().unwrap();
        assert_eq!(expected.last_index(), index);
        assert_eq!(
            expected.entries[usize::try_from(index).unwrap() - 1],
            big(0, 1536)
        );
        drop(p);
        let p = FilePersister::open(&dir).unwrap();
        assert_eq!(p.load().unwrap(), expected);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn torn_tail_is_cut_and_middle_corruption_refused() {
        let dir = temp_dir("torn");
        let mut p = FilePersister::open(&dir).unwrap();
        p.save(update(1, vec![entry(1, 1)])).unwrap();
        p.save(update(2, vec![entry(1, 2)])).unwrap();
        let used = p.raft_state_size();
        drop(p);
        let wal_path = dir.join(WAL);
        let whole = fs::read(&wal_path).unwrap();
        fs::write(&wal_path, &whole[..used - 3]).unwrap();
        let p = FilePersister::open(&dir).unwrap();
        assert_eq!(p.load().unwrap().last_index(), 1);
        drop(p);

        let mut bytes = whole.clone();
        let first = wal::FILE_HEADER_LEN;
        bytes[first + wal::RECORD_HEADER_LEN + 1] ^= 0xff; // inside the first record's payload
        fs::write(&wal_path, &bytes).unwrap();
        let err = FilePersister::open(&dir)
            .err()
            .expect("corruption is refused");
        let message = err.to_string();
        assert!(
            message.contains("wal") && message.contains(&format!("offset {first}")),
            "{message}"
        );
        assert_eq!(
            fs::read(&wal_path).unwrap(),
            bytes,
            "a refused WAL is left as it is"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The issue that brought format 2: a damaged length in the middle of the WAL was taken
    /// for a torn tail, and every record after it (term and vote updates too) was cut.
    #[test]
    fn a_damaged_length_mid_file_is_refused_and_the_file_left_as_it_is() {
        let dir = temp_dir("length");
        let mut p = FilePersister::open(&dir).unwrap();
        for i in 1..=50u8 {
            let mut u = update(u64::from(i), vec![entry(u64::from(i), i)]);
            u.term = u64::from(i);
            p.save(u).unwrap();
        }
        drop(p);
        let wal_path = dir.join(WAL);
        let mut bytes = fs::read(&wal_path).unwrap();
        let scan = wal::scan(FileKind::Wal, &bytes);
        let tenth = scan.records[9].offset;
        bytes[tenth..tenth + 4].copy_from_slice(&7u32.to_le_bytes());
        fs::write(&wal_path, &bytes).unwrap();
        let message = FilePersister::open(&dir)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            message.contains(&format!("corrupt at offset {tenth}"))
                && message.contains("header fails its checksum"),
            "{message}"
        );
        assert_eq!(fs::read(&wal_path).unwrap(), bytes, "nothing was cut");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Item 3 of issue 12 end to end, decoding included: a WAL written by saves, every byte
    /// flipped in turn, opened. Each open refuses and leaves the file byte for byte as it was,
    /// or (only for a flip in the final record) recovers exactly the state before the last
    /// save; never a state that differs from both. A flip in the zeros preallocated after the
    /// records (its first bytes, then one in 4 KiB: the rest of a chunk reads alike) is cut
    /// with them, every save kept.
    #[test]
    fn every_byte_flip_of_a_saved_wal_is_refused_untouched_or_cuts_only_the_last_save() {
        let dir = temp_dir("flips");
        let saves: Vec<StateUpdate> = (1..=6u8)
            .map(|i| {
                let mut u = update(u64::from(i), vec![entry(u64::from(i), i); usize::from(i)]);
                u.term = u64::from(i);
                u.voted_for = Some(usize::from(i % 3));
                u
            })
            .collect();
        let mut p = FilePersister::open(&dir).unwrap();
        for u in &saves {
            p.save(u.clone()).unwrap();
        }
        let whole_state = p.load().unwrap();
        drop(p);
        let mut before_last = SavedState::default();
        for u in &saves[..saves.len() - 1] {
            before_last.apply(u.clone());
        }
        let wal_path = dir.join(WAL);
        let bytes = fs::read(&wal_path).unwrap();
        let records = wal::scan(FileKind::Wal, &bytes).records;
        let (last, used) = (
            records[saves.len() - 1].offset,
            records[saves.len() - 1].end(),
        );
        assert!(bytes.len() > used + WAL_CHUNK / 2, "preallocated");
        let in_zeros: Vec<usize> = (used..used + 64)
            .chain((used + 4096..bytes.len()).step_by(4096))
            .chain([bytes.len() - 1])
            .collect();
        let (mut refused, mut cut, mut zeros_cut) = (0, 0, 0);
        for &at in (0..used).collect::<Vec<_>>().iter().chain(&in_zeros) {
            for mask in [0x01u8, 0xff] {
                let mut damaged = bytes.clone();
                damaged[at] ^= mask;
                fs::write(&wal_path, &damaged).unwrap();
                let what = format!("byte {at} ^ {mask:#x}");
                match FilePersister::open(&dir) {
                    Err(e) => {
                        assert!(e.to_string().contains("wal: "), "{what}: {e}");
                        assert_eq!(fs::read(&wal_path).unwrap(), damaged, "{what} changed");
                        refused += 1;
                    }
                    Ok(p) if at >= used => {
                        assert_eq!(p.load().unwrap(), whole_state, "{what}");
                        assert_eq!(fs::read(&wal_path).unwrap(), bytes[..used], "{what}");
                        zeros_cut += 1;
                    }
                    Ok(p) => {
                        assert!(at >= last, "{what} accepted, outside the last record");
                        assert_eq!(p.load().unwrap(), before_last, "{what}");
                        assert_eq!(fs::read(&wal_path).unwrap(), bytes[..last], "{what}");
                        cut += 1;
                    }
                }
            }
        }
        assert_ne!(whole_state, before_last);
        assert!(refused > 0 && cut > 0, "{refused} refused, {cut} cut");
        assert_eq!(zeros_cut, 2 * in_zeros.len(), "every flip in the zeros");
        eprintln!(
            "{used}-byte WAL of {} saves and {} zeros: {refused} flips refused, {cut} cut the \
             last save, {zeros_cut} in the zeros cut them",
            saves.len(),
            bytes.len() - used
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_refuses_every_later_save_and_a_restart_cuts_the_torn_record() {
        let dir = temp_dir("failed-write");
        // Room for the WAL's header, one save with the zeros after it, and part of the next.
        let budget = WAL_CHUNK as u64 + 200;
        let mut p = FilePersister::open_with(
            &dir,
            Faults {
                write_budget: Some(budget),
                ..Faults::default()
            },
        )
        .unwrap();
        p.save(update(1, vec![entry(1, 1)])).unwrap();
        let used = p.raft_state_size() as u64;
        let err = p
            .save(update(2, vec![entry(1, 2); 20]))
            .expect_err("the disk is full");
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
        assert!(err.to_string().contains("wal: append"), "{err}");
        let wal_path = dir.join(WAL);
        let bytes = fs::read(&wal_path).unwrap();
        assert_eq!(bytes.len() as u64, used + WAL_CHUNK as u64, "no more zeros");
        // The failed write left part of its record, over the zeros.
        let torn = budget - used - WAL_CHUNK as u64;
        let written = &bytes[used as usize..];
        assert!(written[..torn as usize].iter().any(|&b| b != 0));
        assert!(written[torn as usize..].iter().all(|&b| b == 0));
        // A retry is refused before it writes anything, even a save that would fit.
        let again = p.save(update(2, vec![])).expect_err("refused");
        assert!(
            again.to_string().contains("an earlier save failed"),
            "{again}"
        );
        assert_eq!(fs::read(&wal_path).unwrap(), bytes);
        drop(p);
        let p = FilePersister::open_with(&dir, Faults::default()).unwrap();
        assert_eq!(p.load().unwrap().entries, vec![entry(1, 1)]);
        assert_eq!(
            fs::metadata(&wal_path).unwrap().len(),
            used,
            "the torn record was cut"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_disk_that_fills_while_the_wal_grows_refuses_later_saves_and_recovers() {
        let dir = temp_dir("failed-zeros");
        // Room for the WAL's header, the first save and half of the zeros after it.
        let mut p = FilePersister::open_with(
            &dir,
            Faults {
                write_budget: Some(WAL_CHUNK as u64 / 2),
                ..Faults::default()
            },
        )
        .unwrap();
        let err = p
            .save(update(1, vec![entry(1, 1)]))
            .expect_err("the disk is full");
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
        assert!(err.to_string().contains("wal: preallocate"), "{err}");
        assert!(p.save(update(1, vec![])).is_err(), "refused");
        drop(p);
        // The record was written whole, and not fsynced: either is safe, since nothing that
        // depends on it was acknowledged. Here it reads back, and the store goes on.
        let mut p = FilePersister::open_with(&dir, Faults::default()).unwrap();
        assert_eq!(p.load().unwrap().entries, vec![entry(1, 1)]);
        p.save(update(2, vec![entry(1, 2)])).unwrap();
        drop(p);
        let p = FilePersister::open_with(&dir, Faults::default()).unwrap();
        assert_eq!(p.load().unwrap().entries, vec![entry(1, 1), entry(1, 2)]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_fsync_refuses_every_later_save() {
        let dir = temp_dir("failed-fsync");
        // Opening a new directory fsyncs twice (the new WAL, the directory); then one per save.
        let faults = Faults {
            failing_fsync: Some(4),
            ..Faults::default()
        };
        let mut p = FilePersister::open_with(&dir, faults).unwrap();
        p.save(update(1, vec![entry(1, 1)])).unwrap();
        let err = p
            .save(update(2, vec![entry(1, 2)]))
            .expect_err("the fsync fails");
        let message = err.to_string();
        assert!(
            message.contains("wal: fsync: input/output error (fsync 4 failed"),
            "{message}"
        );
        let wal_path = dir.join(WAL);
        let len = fs::metadata(&wal_path).unwrap().len();
        let again = p.save(update(2, vec![])).expect_err("refused");
        assert!(
            again.to_string().contains("an earlier save failed"),
            "{again}"
        );
        assert_eq!(
            fs::metadata(&wal_path).unwrap().len(),
            len,
            "nothing written"
        );
        drop(p);
        // The record whose fsync failed was written whole: whether a real disk kept it is
        // unknown, and either is safe, since nothing that depends on it was acknowledged.
        let p = FilePersister::open_with(&dir, Faults::default()).unwrap();
        assert_eq!(p.load().unwrap().entries, vec![entry(1, 1), entry(1, 2)]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_refused_directory_is_left_as_it_is_even_with_a_torn_tail_and_leftovers() {
        let dir = temp_dir("refused-untouched");
        let mut p = FilePersister::open(&dir).unwrap();
        p.save(update(1, vec![entry(1, 1), entry(1, 2), entry(1, 3)]))
            .unwrap();
        let mut u = update(4, vec![]);
        u.snapshot = Some(NewSnapshot {
            index: 2,
            term: 1,
            data: Arc::new(b"two".to_vec()),
            membership: None,
        });
        p.save(u).unwrap();
        p.save(update(4, vec![entry(1, 4)])).unwrap();
        let used = p.raft_state_size();
        drop(p);
        // A torn final record, an unfinished snapshot, and the snapshot the log needs lost.
        let wal_path = dir.join(WAL);
        let whole = fs::read(&wal_path).unwrap();
        let torn = &whole[..used - 5];
        fs::write(&wal_path, torn).unwrap();
        fs::write(dir.join(SNAPSHOT_TMP), b"half a snapshot").unwrap();
        fs::rename(dir.join(SNAPSHOT), dir.join("snapshot.away")).unwrap();
        let message = FilePersister::open(&dir)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            message.contains("snapshot: missing, but the log needs the snapshot at 2"),
            "{message}"
        );
        assert_eq!(
            fs::read(&wal_path).unwrap(),
            torn,
            "the torn tail is not cut"
        );
        assert!(dir.join(SNAPSHOT_TMP).exists(), "the leftover is kept");
        // Once the snapshot is back, the same directory opens: the tail is cut, the leftover
        // removed.
        fs::rename(dir.join("snapshot.away"), dir.join(SNAPSHOT)).unwrap();
        let p = FilePersister::open(&dir).unwrap();
        assert_eq!(p.load().unwrap().last_index(), 3);
        assert!(fs::metadata(&wal_path).unwrap().len() < torn.len() as u64);
        assert!(!dir.join(SNAPSHOT_TMP).exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn old_formats_and_lost_files_are_refused() {
        // A format-1 WAL: one record framed [length][CRC32][payload], no file header.
        let dir = temp_dir("format-1");
        fs::create_dir_all(&dir).unwrap();
        let record: Record = Record::Update {
            term: 1,
            voted_for: None,
            snapshot: None,
            first_index: 1,
            entries: vec![],
        };
        let payload = rmp_serde::to_vec(&record).unwrap();
        let mut old = (payload.len() as u32).to_le_bytes().to_vec();
        old.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        old.extend_from_slice(&payload);
        fs::write(dir.join(WAL), &old).unwrap();
        let message = FilePersister::open(&dir)
            .err()
            .expect("refused")
            .to_string();
        assert!(message.contains("format-1 WAL"), "{message}");
        assert_eq!(fs::read(dir.join(WAL)).unwrap(), old);
        fs::remove_dir_all(&dir).unwrap();

        // A snapshot without its WAL: the term and vote are gone.
        let dir = temp_dir("lost-wal");
        let mut p = FilePersister::open(&dir).unwrap();
        let mut u = update(2, vec![]);
        u.snapshot = Some(NewSnapshot {
            index: 1,
            term: 1,
            data: Arc::new(b"s".to_vec()),
            membership: None,
        });
        p.save(u).unwrap();
        drop(p);
        fs::remove_file(dir.join(WAL)).unwrap();
        let message = FilePersister::open(&dir)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            message.contains("missing, but there is a snapshot"),
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
            membership: None,
        };
        let payload = rmp_serde::to_vec(&file).unwrap();
        let (bytes, _) = wal::file_of(FileKind::Snapshot, [payload.as_slice()]).unwrap();
        fs::write(dir.join(SNAPSHOT), bytes).unwrap();
        let p = FilePersister::open(&dir).unwrap();
        let state = p.load().unwrap();
        assert_eq!((state.snapshot_index, state.last_index()), (2, 3));
        assert_eq!(*p.read_snapshot(), b"two".to_vec());
        fs::remove_dir_all(&dir).unwrap();
    }
}
