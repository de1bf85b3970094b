//! The data directory's lock: one process at a time may use a data directory.
//!
//! [`DataDirLock::acquire`] takes an exclusive `flock` on the file `lock` in the directory
//! (through `std::fs::File::try_lock`), without waiting: a second process is refused at once,
//! with a message naming the directory and the process that holds it (its pid is written in
//! the file). The operating system releases the lock when its holder exits, however it exits,
//! so a crash never leaves a stale lock behind. A node takes it before anything else: before it
//! binds its ports or reads its files.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::Path;

/// The lock file's name in a data directory.
const LOCK: &str = "lock";

/// The lock on one data directory, held while this value lives.
#[derive(Debug)]
pub struct DataDirLock {
    /// The locked file: closing it releases the lock.
    _file: File,
}

impl DataDirLock {
    /// Creates `dir` if needed and locks it; fails at once, with
    /// [`io::ErrorKind::ResourceBusy`], if another process (or another lock in this one) holds
    /// it.
    pub fn acquire(dir: &Path) -> io::Result<DataDirLock> {
        let with_path = |path: &Path, e: io::Error| {
            io::Error::new(e.kind(), format!("{}: {e}", path.display()))
        };
        fs::create_dir_all(dir).map_err(|e| with_path(dir, e))?;
        let path = dir.join(LOCK);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| with_path(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path)
                    .ok()
                    .map(|text| text.trim().to_string())
                    .filter(|pid| !pid.is_empty())
                    .map_or(String::new(), |pid| format!(" (pid {pid})"));
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!(
                        "the data directory {} is in use: another process{holder} holds its \
                         lock {}",
                        dir.display(),
                        path.display()
                    ),
                ));
            }
            Err(TryLockError::Error(e)) => return Err(with_path(&path, e)),
        }
        // Who holds it, for the message a second process prints.
        file.set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(|e| with_path(&path, e))?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_at_once_until_the_first_is_dropped() {
        let dir = std::env::temp_dir().join(format!("rainkv-lock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let first = DataDirLock::acquire(&dir).expect("the first lock");
        // flock locks belong to an open file, so a second open in the same process conflicts
        // just as another process would.
        let err = DataDirLock::acquire(&dir).expect_err("held");
        assert_eq!(err.kind(), io::ErrorKind::ResourceBusy);
        let message = err.to_string();
        assert!(
            message.contains(&dir.display().to_string())
                && message.contains("another process")
                && message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        drop(first);
        let again = DataDirLock::acquire(&dir).expect("free again");
        drop(again);
        fs::remove_dir_all(&dir).unwrap();
    }
}
