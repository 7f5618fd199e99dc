//! The scan and need stages of the actor: bring our index up to what
//! changed (the paths the watcher named, or the whole folder), and plan
//! the paths that changed on either side since the last plan with a
//! partner, in parts of [`PLAN_PART`] so memory stays flat however much
//! changed.

use std::collections::BTreeSet;

use super::{Actor, SyncContext};
use crate::Result;
use crate::folder::IGNORE_FILE;
use crate::sync::dirty::ToScan;
use crate::sync::plan::{Index, Plan, plan};
use crate::sync::remote::Scope;

/// Paths planned at once: a round over more goes in parts of this many,
/// so its memory stays flat however many changed.
pub(super) const PLAN_PART: usize = 5_000;

/// The plan of one part of a round with one partner, and the states it
/// was made from.
pub(super) struct Work {
    pub(super) local: Index,
    pub(super) remote: Index,
    pub(super) plan: Plan,
}

impl Actor {
    /// Everything may have changed: the next scan walks the folder.
    pub(super) fn mark_everything(&self) {
        if let Ok(mut d) = self.dirty.lock() {
            d.everything();
        }
    }

    /// The scan stage: bring our index up to what changed (the paths the
    /// watcher named; the whole folder when it asked for that, when
    /// `.dropboxignore` changed, or when nothing watches it).
    pub(super) fn scan_dirty(&mut self) -> Result<()> {
        if let Some(before) = self.walks_at_start.take() {
            let db = self.shared.sync_db()?;
            if db.walks.load(std::sync::atomic::Ordering::Relaxed) <= before {
                self.mark_everything();
            }
        }
        let to_scan = match self.dirty.lock() {
            Ok(mut d) if self.cfg.enabled => d.take(),
            _ => ToScan::Everything,
        };
        match to_scan {
            ToScan::Nothing => Ok(()),
            ToScan::Paths(p) => self.scan_paths(&p),
            ToScan::Everything => self.scan_all(),
        }
    }

    /// Scan these paths into our index; the whole folder when the
    /// patterns file is one of them (what it keeps out changed).
    pub(super) fn scan_paths(&self, paths: &BTreeSet<String>) -> Result<()> {
        if paths.contains(IGNORE_FILE) {
            return self.scan_all();
        }
        let scanned = crate::sync::scan::paths(&self.shared.folder, self.shared.sync_db()?, paths);
        if scanned.is_err() {
            // Whatever it was, the next scan looks at everything.
            self.mark_everything();
        }
        scanned.map(|_| ())
    }

    fn scan_all(&self) -> Result<()> {
        let scanned = crate::sync::scan::full(&self.shared.folder, self.shared.sync_db()?);
        if scanned.is_err() {
            self.mark_everything();
        }
        scanned.map(|_| ())
    }

    /// What a round with `peer` plans: the paths changed on either side
    /// since the last plan with it (and those left pending then); every
    /// path when the `.dropboxignore` patterns changed since.
    pub(super) fn scope(&mut self, peer: &str) -> Result<Scope> {
        let db = self.shared.sync_db()?;
        let rules = self.shared.folder.ignore_rules();
        if !self.rules.as_ref().is_some_and(|r| r.same_as(&rules)) {
            if self.rules.is_some() {
                db.plan_all_again()?;
            }
            self.rules = Some(rules);
        }
        db.plan_scope(peer)
    }

    /// The need stage: the plan of `paths` with `peer`.
    pub(super) fn need(&self, peer: &str, paths: Vec<String>) -> Result<Work> {
        need_in(&self.shared, peer, paths)
    }
}

/// The need stage in `shared` (see [`Actor::need`]): reads the database and
/// the folder's patterns only, so it can run beside a part being applied.
pub(super) fn need_in(shared: &SyncContext, peer: &str, paths: Vec<String>) -> Result<Work> {
    let db = shared.sync_db()?;
    let rules = shared.folder.ignore_rules();
    let (local, view, base) = db.plan_view(peer, &paths)?;
    // What either side ignores takes no part.
    let ignored = &view.ignored;
    let keep = |mut i: Index| {
        i.retain(|p, _| !ignored.contains(p));
        crate::sync::without_ignored(i, &rules)
    };
    let (local, base) = (keep(local), keep(base));
    let (remote, their_base) = (keep(view.present), keep(view.agreed));
    let mut plan = plan(&local, &remote, &base, &their_base);
    // Counted only when it matters: against planned deletions.
    if plan.deletions() > 0 {
        plan.local_files = db.local_files()?;
    }
    Ok(Work {
        local,
        remote,
        plan,
    })
}
