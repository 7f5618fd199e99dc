//! Two-way sync of the shared folder with partner peers.
//!
//! [`plan`] decides, purely, what to do with each path from the local, the
//! remote and the last-synced state; [`db`] keeps the last-synced state,
//! [`local`] our own index with its sequence numbers and [`remote`] what
//! partners sent of theirs; [`scan`] keeps our index true to the folder,
//! from the paths the watcher names ([`dirty`]) or a whole walk;
//! [`exchange`] swaps the changes of the two indexes with a partner;
//! [`engine`] is the actor that runs rounds on a timer, on file-system
//! events, on the shell's `sync` and when a partner exchanged with us;
//! [`lock`] lets only one process sync a folder, and [`control`] lets
//! another process of the folder reach the one that syncs it (`sync`,
//! `sync status`, `sync confirm`); [`guard`] holds back mass deletions,
//! counted over a window of time; [`stuck`] remembers failed actions so
//! they are not retried every round; [`trash`] is where deletions go;
//! [`schedule`] says when a round is due (debounce, timer, backoff).
//!
//! A round with a partner: on one connection, send the changes of our
//! index since the partner last saw it and receive the changes of theirs,
//! plan the paths that changed, then pull what we need over the same
//! connection and apply renames, deletions (to `.dropbox-shell/trash/`),
//! folders and modes locally. Every peer only ever changes its own folder; a partner
//! that sees our index and needs something runs a round back to us.

pub mod control;
pub mod db;
pub mod dirty;
pub mod engine;
pub mod exchange;
pub mod guard;
pub mod local;
pub mod lock;
pub mod plan;
mod reads;
pub mod remote;
pub mod scan;
pub mod schedule;
pub mod stuck;
pub mod trash;

pub use engine::{SyncCmd, SyncConfig, SyncContext, SyncEngine, SyncReport, SyncStatus};

use crate::folder::IgnoreRules;

/// `index` without the paths `rules` ignore: they take no part in a plan.
pub fn without_ignored(mut index: plan::Index, rules: &IgnoreRules) -> plan::Index {
    index.retain(|p, s| !rules.ignores(p, s.kind == crate::proto::Kind::Dir));
    index
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Kind;

    #[test]
    fn paths_the_patterns_ignore_take_no_part_in_a_plan() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(".dropboxignore"), "*.log\n").unwrap();
        let folder = crate::folder::Folder::open(d.path()).unwrap();
        let state = plan::FileState {
            kind: Kind::File,
            size: 1,
            mtime_ns: 1,
            mode: 0o644,
            md5: Some("a".into()),
        };
        let index: plan::Index = [("old.log", &state), ("kept.txt", &state)]
            .into_iter()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect();
        let kept = without_ignored(index, &folder.ignore_rules());
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["kept.txt"]);
    }
}
