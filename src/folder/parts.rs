//! Temporary transfer files (`.<name>.<random>.dbsh-part`) and how the
//! ones a killed process left behind are found: a transfer holds an
//! exclusive `flock` on its part file for as long as it writes it, and the
//! kernel drops the lock when the process dies, however it dies. A part
//! file whose lock can be taken belongs to nobody and is removed; one being
//! written, by this process or another, is left alone.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::names::{PART_SUFFIX, STATE_DIR};

/// Mark a just-made part file at `path` as being written (until `file` is
/// closed). False if a sweep got to it first (it holds the lock, or has
/// removed the file already): then the caller makes another one.
pub fn hold(file: &File, path: &Path) -> bool {
    let locked = lock(file);
    let still_there = match (file.metadata(), fs::symlink_metadata(path)) {
        (Ok(ours), Ok(there)) => ours.ino() == there.ino() && ours.dev() == there.dev(),
        _ => false,
    };
    locked && still_there
}

/// Lock a part file as being written (until `file` is closed), where no
/// sweep can run meanwhile (the staging folder: swept before use). False
/// if someone holds it.
pub fn lock(file: &File) -> bool {
    // SAFETY: flock on an fd owned by `file`, which outlives the call.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

fn is_part_name(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| n.starts_with('.') && n.ends_with(PART_SUFFIX))
}

/// Remove `path` if it is a part file nobody writes. True if removed.
fn remove_if_abandoned(path: &Path) -> bool {
    let Ok(file) = super::stat::open_regular(path) else {
        return false;
    };
    // SAFETY: flock on an fd owned by `file`, which outlives the call.
    let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    free && fs::remove_file(path).is_ok()
}

/// Remove the abandoned part files in one folder (not below it).
pub fn sweep_dir(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| is_part_name(&e.file_name()) && e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| remove_if_abandoned(&e.path()))
        .count()
}

/// Remove the abandoned part files anywhere in the shared folder `root`
/// (never inside its state folder), until `stop` is set.
pub fn sweep_tree(root: &Path, stop: &AtomicBool) -> usize {
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| !(e.depth() == 1 && e.file_name() == STATE_DIR));
    let mut n = 0;
    for e in walker.flatten() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if e.file_type().is_file() && is_part_name(e.file_name()) && remove_if_abandoned(e.path()) {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_parts_nobody_writes_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n);
        fs::create_dir(p("sub")).unwrap();
        fs::write(p(".a.x1.dbsh-part"), b"left by a killed process").unwrap();
        fs::write(p("sub/.b.x2.dbsh-part"), b"left too").unwrap();
        fs::write(p(".c.x3.dbsh-part"), b"being written").unwrap();
        fs::write(p("keep.dbsh-part-not"), b"an ordinary file").unwrap();
        let live = File::options()
            .append(true)
            .open(p(".c.x3.dbsh-part"))
            .unwrap();
        assert!(hold(&live, &p(".c.x3.dbsh-part")));
        // A second holder (as when a sweep came first) is told so.
        let other = File::open(p(".c.x3.dbsh-part")).unwrap();
        assert!(!hold(&other, &p(".c.x3.dbsh-part")));
        drop(other);
        assert_eq!(sweep_dir(d.path()), 1);
        assert!(p("sub/.b.x2.dbsh-part").exists());
        assert_eq!(sweep_tree(d.path(), &AtomicBool::new(false)), 1);
        assert!(p(".c.x3.dbsh-part").exists());
        assert!(p("keep.dbsh-part-not").exists());
        drop(live);
        assert_eq!(sweep_dir(d.path()), 1);
    }

    #[test]
    fn a_part_file_swept_before_it_was_held_is_not_taken_for_ours() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(".a.x.dbsh-part");
        let file = File::create(&path).unwrap();
        // A sweep took the unlocked new file away before we locked it.
        assert_eq!(sweep_dir(d.path()), 1);
        assert!(!hold(&file, &path));
    }
}
