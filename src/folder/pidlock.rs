//! A lock file held for a process's life: an advisory `flock` on it, and
//! the holder's pid written in it for the message a second process shows.
//! The kernel drops the lock with the process, however it ends.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::{Context, Result};

/// Take the lock at `path`: the held file, or `Err` with the holder's pid
/// (` (pid N)`, or nothing when it wrote none) when another process has it.
pub fn take(path: &Path) -> Result<std::result::Result<File, String>> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .context(format_args!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.set_len(0);
            let _ = write!(file, "{}", std::process::id());
            Ok(Ok(file))
        }
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.rewind();
            let _ = file.read_to_string(&mut holder);
            Ok(Err(match holder.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            }))
        }
        Err(TryLockError::Error(e)) => Err(e).context(format_args!("locking {}", path.display())),
    }
}
