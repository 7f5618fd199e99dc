//! Two-way sync of the shared folder with partner peers.
//!
//! [`plan`] decides, purely, what to do with each path from the local, the
//! remote and the last-synced state; [`db`] keeps the last-synced state;
//! [`engine`] is the actor that runs rounds on a timer, on file-system
//! events, on the shell's `sync` and when a partner offers its index;
//! [`lock`] lets only one process sync a folder, and [`control`] lets
//! another process of the folder reach the one that syncs it (`sync`,
//! `sync status`, `sync confirm`); [`guard`] holds back mass deletions,
//! counted over a window of time; [`stuck`] remembers failed actions so
//! they are not retried every round; [`trash`] is where deletions go;
//! [`schedule`] says when a round is due (debounce, timer, backoff).
//!
//! A round with a partner: send our index (with MD5s) and receive theirs on
//! one connection, plan, then pull what we need over the same connection
//! and apply renames, deletions (to `.dropbox-shell/trash/`), folders and
//! modes locally. Every peer only ever changes its own folder; a partner
//! that sees our index and needs something runs a round back to us.

pub mod control;
pub mod db;
pub mod engine;
pub mod guard;
pub mod lock;
pub mod plan;
pub mod schedule;
pub mod stuck;
pub mod trash;

pub use engine::{SyncCmd, SyncConfig, SyncContext, SyncEngine, SyncReport, SyncStatus};

use crate::folder::IgnoreRules;
use crate::proto::SyncEntry;

/// The state an offered entry describes.
pub fn state_of(e: &SyncEntry) -> plan::FileState {
    plan::FileState {
        kind: e.kind,
        size: e.size,
        mtime_ns: e.mtime_ns,
        mode: e.mode,
        md5: e.md5.clone(),
    }
}

/// What we offer a partner: our entries, each marked `agreed` when it is in
/// the state we last agreed on with that partner, plus a tombstone for
/// every path we last agreed on with it and no longer have. A path we
/// agreed on and now ignore (`.dropboxignore`) is offered as still in the
/// agreed state: its absence here must not read as a deletion there.
pub fn offer(
    mut entries: Vec<SyncEntry>,
    base_with_partner: &plan::Index,
    rules: &IgnoreRules,
) -> Vec<SyncEntry> {
    for e in &mut entries {
        e.agreed = base_with_partner
            .get(&e.name)
            .is_some_and(|b| b.same(&state_of(e)));
    }
    let present: std::collections::HashSet<&str> =
        entries.iter().map(|e| e.name.as_str()).collect();
    let mut tombs: Vec<SyncEntry> = base_with_partner
        .iter()
        .filter(|(p, _)| !present.contains(p.as_str()))
        .map(|(p, s)| {
            let ignored = rules.ignores(p, s.kind == crate::proto::Kind::Dir);
            SyncEntry {
                name: p.clone(),
                kind: s.kind,
                size: s.size,
                mtime_ns: s.mtime_ns,
                mode: s.mode,
                md5: s.md5.clone(),
                deleted: !ignored,
                agreed: ignored,
            }
        })
        .collect();
    tombs.sort_by(|a, b| a.name.cmp(&b.name));
    let mut all = entries;
    all.extend(tombs);
    all
}

/// `index` without the paths `rules` ignore: they take no part in a plan.
pub fn without_ignored(mut index: plan::Index, rules: &IgnoreRules) -> plan::Index {
    index.retain(|p, s| !rules.ignores(p, s.kind == crate::proto::Kind::Dir));
    index
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Kind;

    fn entry(name: &str, md5: &str) -> SyncEntry {
        SyncEntry {
            name: name.into(),
            kind: Kind::File,
            size: 1,
            mtime_ns: 1,
            mode: 0o644,
            md5: Some(md5.into()),
            deleted: false,
            agreed: false,
        }
    }

    fn base_of(files: &[(&str, &str)]) -> plan::Index {
        files
            .iter()
            .map(|(n, m)| (n.to_string(), state_of(&entry(n, m))))
            .collect()
    }

    /// Each offered path with its (agreed, deleted) flags.
    fn flags(offered: &[SyncEntry]) -> Vec<(&str, bool, bool)> {
        offered
            .iter()
            .map(|e| (e.name.as_str(), e.agreed, e.deleted))
            .collect()
    }

    #[test]
    fn an_offer_marks_what_was_agreed_and_lists_what_went() {
        let base = base_of(&[("same", "a"), ("edited", "b"), ("removed", "c")]);
        let offered = offer(
            vec![entry("same", "a"), entry("edited", "B"), entry("new", "d")],
            &base,
            &IgnoreRules::none(),
        );
        assert_eq!(
            flags(&offered),
            vec![
                ("same", true, false),
                ("edited", false, false),
                ("new", false, false),
                ("removed", false, true),
            ]
        );
    }

    #[test]
    fn a_path_we_now_ignore_is_offered_as_agreed_not_as_deleted() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(".dropboxignore"), "*.log\n").unwrap();
        let folder = crate::folder::Folder::open(d.path()).unwrap();
        let rules = folder.ignore_rules();
        let base = base_of(&[("old.log", "a"), ("gone.txt", "b")]);
        let offered = offer(Vec::new(), &base, &rules);
        assert_eq!(
            flags(&offered),
            vec![("gone.txt", false, true), ("old.log", true, false)]
        );
        assert!(without_ignored(base, &rules).contains_key("gone.txt"));
    }
}
