//! Two-way sync of the shared folder with partner peers.
//!
//! [`plan`] decides, purely, what to do with each path from the local, the
//! remote and the last-synced state; [`db`] keeps the last-synced state;
//! [`engine`] is the actor that runs rounds on a timer, on file-system
//! events, on the shell's `sync` and when a partner offers its index;
//! [`lock`] lets only one process sync a folder.
//!
//! A round with a partner: send our index (with MD5s) and receive theirs on
//! one connection, plan, then pull what we need over the same connection
//! and apply renames, deletions (to `.dropbox-shell/trash/`), folders and
//! modes locally. Every peer only ever changes its own folder; a partner
//! that sees our index and needs something runs a round back to us.

pub mod db;
pub mod engine;
pub mod lock;
pub mod plan;

pub use engine::{SyncCmd, SyncConfig, SyncEngine, SyncReport, SyncStatus};

use crate::proto::SyncEntry;

/// What we offer a partner: our entries, plus a tombstone for every path we
/// last agreed on with it and no longer have.
pub fn offer(entries: Vec<SyncEntry>, base_with_partner: &plan::Index) -> Vec<SyncEntry> {
    let present: std::collections::HashSet<&str> =
        entries.iter().map(|e| e.name.as_str()).collect();
    let mut tombs: Vec<SyncEntry> = base_with_partner
        .iter()
        .filter(|(p, _)| !present.contains(p.as_str()))
        .map(|(p, s)| SyncEntry {
            name: p.clone(),
            kind: s.kind,
            size: s.size,
            mtime_ns: s.mtime_ns,
            mode: s.mode,
            md5: s.md5.clone(),
            deleted: true,
        })
        .collect();
    tombs.sort_by(|a, b| a.name.cmp(&b.name));
    let mut all = entries;
    all.extend(tombs);
    all
}
