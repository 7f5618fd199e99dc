//! The watch stage: the file-system watcher names the paths that changed
//! ([`Dirty`]) and wakes the engine; events inside the state folder and
//! on our own temporary files are dropped. A watcher that lost events (its
//! queue overflowed) asks for a whole scan. A folder that cannot be
//! watched (the inotify limit reached) is synced by rescans alone.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;

use crate::sync::dirty::Dirty;
use crate::{Error, Result};

/// Watch `root`: changed paths go into `dirty`, and `wake` gets a word.
pub fn watch(
    root: &Path,
    dirty: Arc<Mutex<Dirty>>,
    wake: Sender<()>,
) -> Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let base = root.to_path_buf();
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(mut d) = dirty.lock() else { return };
        let ev = match res {
            Ok(ev) => ev,
            // An error from the watcher: something may have been missed.
            Err(_) => {
                d.everything();
                let _ = wake.try_send(());
                return;
            }
        };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        if ev.need_rescan() {
            d.everything();
        }
        let mut relevant = ev.need_rescan();
        for p in &ev.paths {
            let rel = p.strip_prefix(&base).ok().and_then(|r| r.to_str());
            if let Some(rel) = rel.filter(|r| !r.is_empty() && !crate::names::is_private(r)) {
                d.add(rel);
                relevant = true;
            }
        }
        if relevant {
            let _ = wake.try_send(());
        }
    })
    .map_err(|e| Error::new(format!("cannot watch the folder: {e}")))?;
    w.watch(root, notify::RecursiveMode::Recursive)
        .map_err(|e| Error::new(format!("cannot watch {}: {e}", root.display())))?;
    Ok(w)
}
