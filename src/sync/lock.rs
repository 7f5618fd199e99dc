//! One syncing process per folder. A process that syncs a folder holds an
//! advisory lock (`flock`) on `.dropbox-shell/sync.lock`: a second one would
//! race the first, throw away its temporary files as stale, pull the same
//! files and apply the same deletions. `--sync` holds the lock for the
//! life of the process, the shell's one-off `sync` for its round. The
//! kernel drops the lock with the process, however it ends.

use std::fs::File;

use crate::folder::{Folder, pidlock};
use crate::{Result, bail};

pub struct SyncLock {
    _file: File,
}

impl SyncLock {
    /// Take the folder's sync lock, or say which process holds it.
    pub fn take(folder: &Folder) -> Result<SyncLock> {
        match pidlock::take(&folder.state_dir().join("sync.lock"))? {
            Ok(file) => Ok(SyncLock { _file: file }),
            Err(holder) => bail!(
                "another dropbox-shell process{holder} already syncs {}; sync from that one",
                folder.root().display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_lock_goes_with_it() {
        let d = tempfile::tempdir().unwrap();
        let f = Folder::open(d.path()).unwrap();
        let held = SyncLock::take(&f).unwrap();
        let e = SyncLock::take(&f).err().unwrap();
        let pid = std::process::id();
        assert!(
            e.message()
                .contains(&format!("process (pid {pid}) already syncs")),
            "{e}"
        );
        drop(held);
        let again = SyncLock::take(&f);
        assert!(again.is_ok());
    }
}
