//! The watch stage: inotify on every folder of the tree names the paths
//! that changed ([`Dirty`]) and wakes the engine. Only what changes a
//! folder is asked for (made, written, closed after writing, attributes,
//! moved, deleted), never opens, reads or closes after reading: serving a
//! file costs no event, and a peer serving a million files is not woken a
//! million times. A folder made or moved in is watched at once, and it and
//! everything already in it are named dirty: files made in it before its
//! watch was added have no event of their own, and a whole walk that
//! listed the folder just before them would not find them either. Lost events (the queue overflowed) or a folder
//! that cannot be watched ask for a whole scan. The state folder and our
//! own temporary files never count. After telling of a change the thread
//! lets events gather for a few milliseconds, so a burst (a pull of many
//! files) costs a read per burst, not a wake-up per event. It wakes twice a
//! second to see whether it should stop.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use inotify::{EventMask, Inotify, WatchMask};

use crate::names::{STATE_DIR, is_private};
use crate::sync::dirty::Dirty;
use crate::{Error, Result};

/// How long the thread lets events gather after telling some: far below
/// the engine's debounce, and far too short to fill the kernel's queue.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// What each folder's watch asks for.
fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MODIFY
        | WatchMask::CLOSE_WRITE
        | WatchMask::ATTRIB
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW
        | WatchMask::EXCL_UNLINK
}

/// A running watcher; dropping it stops its thread.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The watches: inotify and, per watch, the folder it is on (relative to
/// the root; `""` the root itself).
struct Tree {
    inotify: Inotify,
    root: PathBuf,
    dirs: HashMap<i32, String>,
}

impl Tree {
    /// Watch folder `rel` and every folder inside it. A folder whose name
    /// is not UTF-8 (it cannot be synced) is left out.
    fn add(&mut self, rel: &str) -> Result<()> {
        let start = if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        };
        let state = self.root.join(STATE_DIR);
        let walker = walkdir::WalkDir::new(&start)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| e.file_type().is_dir() && e.path() != state);
        for entry in walker.flatten() {
            let Some(name) = entry
                .path()
                .strip_prefix(&self.root)
                .ok()
                .and_then(Path::to_str)
            else {
                continue;
            };
            if is_private(name) {
                continue;
            }
            let wd = self
                .inotify
                .watches()
                .add(entry.path(), mask())
                .map_err(|e| Error::new(format!("cannot watch {}: {e}", entry.path().display())))?;
            self.dirs
                .insert(wd.get_watch_descriptor_id(), name.to_string());
        }
        Ok(())
    }

    /// What folder `rel` holds now, all the way down (name, and whether it
    /// is a file), our own private names left out.
    fn contents(&self, rel: &str) -> Vec<(String, bool)> {
        let state = self.root.join(STATE_DIR);
        walkdir::WalkDir::new(self.root.join(rel))
            .min_depth(1)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| e.path() != state)
            .flatten()
            .filter_map(|e| {
                let name = e.path().strip_prefix(&self.root).ok()?.to_str()?;
                (!is_private(name)).then(|| (name.to_string(), !e.file_type().is_dir()))
            })
            .collect()
    }

    /// Read what is waiting and note it in `dirty`: `None` when nothing
    /// was, else whether something counted (a pull's landings do not).
    fn read(&mut self, buf: &mut [u8], dirty: &Mutex<Dirty>) -> Option<bool> {
        let mut seen = Vec::new();
        let mut lost = false;
        match self.inotify.read_events(buf) {
            Ok(events) => {
                for ev in events {
                    if ev.mask.contains(EventMask::Q_OVERFLOW) {
                        lost = true;
                        continue;
                    }
                    let id = ev.wd.get_watch_descriptor_id();
                    if ev.mask.contains(EventMask::IGNORED) {
                        self.dirs.remove(&id);
                        continue;
                    }
                    let Some(dir) = self.dirs.get(&id) else {
                        continue;
                    };
                    let rel = match ev.name.and_then(|n| n.to_str()) {
                        Some(n) if dir.is_empty() => n.to_string(),
                        Some(n) => format!("{dir}/{n}"),
                        // The watched folder itself moved or went.
                        None => dir.clone(),
                    };
                    let made = ev.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO);
                    let is_dir = ev.mask.contains(EventMask::ISDIR);
                    seen.push((rel, made && is_dir, made && !is_dir));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
            Err(_) => lost = true,
        }
        let mut counted = lost;
        let now = std::time::Instant::now();
        for (rel, new_dir, lands_file) in seen {
            if rel.is_empty() {
                // The root itself moved or went: only a whole scan can tell.
                lost = true;
                continue;
            }
            if is_private(&rel) {
                continue;
            }
            let mut inside = Vec::new();
            if new_dir {
                match self.add(&rel) {
                    Ok(()) => inside = self.contents(&rel),
                    Err(_) => lost = true,
                }
            }
            if let Ok(mut d) = dirty.lock() {
                counted |= d.saw(&rel, lands_file, now);
                for (child, is_file) in &inside {
                    counted |= d.saw(child, *is_file, now);
                }
            }
        }
        if lost && let Ok(mut d) = dirty.lock() {
            d.everything();
        }
        Some(counted)
    }
}

/// Watch `root`: changed paths go into `dirty`, and `wake` gets a word.
/// Fails when a folder cannot be watched (the inotify limit reached).
pub fn watch(root: &Path, dirty: Arc<Mutex<Dirty>>, wake: Sender<()>) -> Result<Watcher> {
    let inotify =
        Inotify::init().map_err(|e| Error::new(format!("cannot watch the folder: {e}")))?;
    let mut tree = Tree {
        inotify,
        root: root.to_path_buf(),
        dirs: HashMap::new(),
    };
    tree.add("")?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            while !flag.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd {
                    fd: tree.inotify.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, for the length given.
                let ready = unsafe { libc::poll(&mut pfd, 1, 500) };
                let Some(counted) = (ready > 0).then(|| tree.read(&mut buf, &dirty)).flatten()
                else {
                    continue;
                };
                if counted {
                    let _ = wake.try_send(());
                }
                // The first event of a burst is told at once; the rest
                // gather in the queue meanwhile and are read together, not
                // with a wake-up (or, for a pull's landings, a read) each.
                std::thread::sleep(GATHER);
            }
        })?;
    Ok(Watcher {
        stop,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fs;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::sync::dirty::ToScan;

    /// Wait (boundedly) until `dirty` holds `path`, then take it all.
    fn taken_once_it_has(dirty: &Mutex<Dirty>, path: &str) -> BTreeSet<String> {
        let mut all = BTreeSet::new();
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            match dirty.lock().unwrap().take() {
                ToScan::Paths(p) => all.extend(p),
                ToScan::Everything => panic!("a whole scan asked for"),
                ToScan::Nothing => {}
            }
            if all.contains(path) {
                return all;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{path} never named; saw {all:?}");
    }

    #[test]
    fn reads_cost_no_event_and_new_folders_are_watched_at_once() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::write(root.join("a"), "1").unwrap();
        fs::create_dir(root.join(STATE_DIR)).unwrap();
        let dirty = Arc::new(Mutex::new(Dirty::default()));
        let (tx, rx) = crossbeam_channel::bounded(1);
        let _w = watch(root, dirty.clone(), tx).unwrap();
        // A read, a write in the state folder, a temporary file of ours:
        // none counts. Events come in order, so once "b" is named, any of
        // them would have been too.
        fs::read(root.join("a")).unwrap();
        fs::write(root.join(STATE_DIR).join("x"), "state").unwrap();
        fs::write(root.join(".a.1234.dbsh-part"), "part").unwrap();
        fs::write(root.join("b"), "2").unwrap();
        assert!(rx.recv_timeout(Duration::from_secs(20)).is_ok());
        assert_eq!(
            taken_once_it_has(&dirty, "b"),
            BTreeSet::from(["b".to_string()])
        );
        // A new folder is named (a scan walks it), and watched from then on.
        fs::create_dir(root.join("n")).unwrap();
        let seen = taken_once_it_has(&dirty, "n");
        assert!(
            seen.iter().all(|p| p == "n" || p.starts_with("n/")),
            "{seen:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
        fs::write(root.join("n/g"), "3").unwrap();
        taken_once_it_has(&dirty, "n/g");
        // A folder made with a file at once: the folder is named; the file
        // may come before its watch, and the scan's walk of it finds it.
        fs::create_dir(root.join("n/deeper")).unwrap();
        fs::write(root.join("n/deeper/f"), "4").unwrap();
        taken_once_it_has(&dirty, "n/deeper");
        fs::remove_file(root.join("a")).unwrap();
        taken_once_it_has(&dirty, "a");
    }

    #[test]
    fn files_made_in_a_new_folder_before_its_watch_are_named_too() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let dirty = Arc::new(Mutex::new(Dirty::default()));
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let _w = watch(root, dirty.clone(), tx).unwrap();
        // Made at once: most files land before the folder's watch exists
        // (the folder may even be known to the index by then, so a scan
        // of the folder's own name would not list them).
        fs::create_dir_all(root.join("m/sub")).unwrap();
        for i in 0..50 {
            fs::write(root.join(format!("m/{i}")), "x").unwrap();
            fs::write(root.join(format!("m/sub/{i}")), "y").unwrap();
        }
        let mut named = BTreeSet::new();
        for i in 0..50 {
            for p in [format!("m/{i}"), format!("m/sub/{i}")] {
                if !named.contains(&p) {
                    named.extend(taken_once_it_has(&dirty, &p));
                }
            }
        }
    }

    #[test]
    fn a_pulls_landings_wake_nothing_and_a_change_after_them_does() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let stage = tempfile::tempdir_in(root).unwrap();
        let dirty = Arc::new(Mutex::new(Dirty::default()));
        let (tx, rx) = crossbeam_channel::bounded(1);
        let _w = watch(root, dirty.clone(), tx).unwrap();
        let staged = stage.path().join("x");
        // Made outside the watched folder's own names, then landed as a
        // pull lands: a link (a new name) and a rename (over an old one).
        fs::write(&staged, "new").unwrap();
        fs::write(root.join("old"), "old").unwrap();
        taken_once_it_has(&dirty, "old");
        let _ = rx.try_recv();
        for name in ["new", "old"] {
            dirty.lock().unwrap().expect_ours(name, Instant::now());
        }
        fs::hard_link(&staged, root.join("new")).unwrap();
        fs::rename(&staged, root.join("old")).unwrap();
        // Events come in order: once "later" is named, the landings were read.
        fs::write(root.join("later"), "1").unwrap();
        let seen = taken_once_it_has(&dirty, "later");
        assert!(!seen.contains("new") && !seen.contains("old"), "{seen:?}");
        // A write to a landed file is someone's change.
        fs::write(root.join("new"), "edited").unwrap();
        taken_once_it_has(&dirty, "new");
    }
}
