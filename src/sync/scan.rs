//! Keeping our index ([`super::local`]) true to the folder. A whole scan
//! walks the folder and compares each entry's metadata with what the
//! index holds: only files whose size, mtime, ctime or inode moved are
//! read and hashed (on all cores), and what the index holds that the walk
//! no longer finds becomes a tombstone. A scan of paths (the ones the
//! watcher named) looks at those alone, and walks only into a folder that
//! is new to the index. A path `.dropboxignore` now excludes is kept as it
//! was, marked ignored (its absence here must not read as a deletion
//! there: partners leave it alone); a file that cannot be read is kept as
//! it was, and read again next time.

use std::collections::{BTreeSet, HashMap};
use std::fs::Metadata;
use std::sync::atomic::Ordering;

use super::db::SyncDb;
use super::local::{LocalChange, Seen};
use super::plan::FileState;
use crate::Result;
use crate::folder::{Folder, IgnoreRules, Version};
use crate::proto::{Entry, Kind};

/// What one entry of a walk shows, before any file is read.
fn seen_of(e: &Entry, meta: &Metadata) -> Seen {
    let v = Version::of(meta);
    Seen {
        state: FileState {
            kind: e.kind,
            size: e.size,
            mtime_ns: e.mtime_ns,
            mode: e.mode,
            md5: None,
        },
        ctime_ns: v.ctime_ns,
        ino: v.ino,
    }
}

/// Changes being gathered: folders go straight in, files wait to be hashed.
#[derive(Default)]
struct Found {
    changes: Vec<LocalChange>,
    to_hash: Vec<(String, Seen)>,
}

impl Found {
    /// `seen` differs from `known` (or is new): record a folder now, hash a file.
    fn compare(&mut self, name: String, seen: Seen, known: Option<&Seen>) {
        if let Some(k) = known
            && k.unchanged(&seen)
        {
            return;
        }
        match seen.state.kind {
            Kind::Dir => self.changes.push(LocalChange::Present(name, seen)),
            Kind::File => self.to_hash.push((name, seen)),
        }
    }

    /// Hash the files on all cores (a file the cache knows unchanged is not
    /// read) and write everything in one transaction. A file that cannot
    /// be read stays as the index had it. Returns the changes recorded.
    fn apply(mut self, folder: &Folder, db: &SyncDb) -> Result<usize> {
        let names: Vec<String> = self.to_hash.iter().map(|(n, _)| n.clone()).collect();
        for ((name, mut seen), h) in self.to_hash.into_iter().zip(folder.hash_unsaved(&names)) {
            if let Some(md5) = h.md5 {
                seen.state.md5 = Some(md5);
                self.changes.push(LocalChange::Present(name, seen));
            }
        }
        // The folder vanished while we looked (an unmounted disk): record nothing.
        folder.check_present()?;
        db.local_apply(&self.changes)
    }
}

/// Walk the whole folder into the index. Returns the changes recorded.
pub fn full(folder: &Folder, db: &SyncDb) -> Result<usize> {
    let _one = db.scanning.lock();
    folder.check_present()?;
    db.walks.fetch_add(1, Ordering::Relaxed);
    let rules = folder.ignore_rules();
    let mut known = db.local_known()?;
    // Paths ignored until now that the walk finds are recorded afresh.
    let was_ignored = db.local_ignored()?;
    let mut found = Found::default();
    folder.walk_under(None, |e, meta| {
        let seen = seen_of(&e, meta);
        let k = known
            .remove(&e.name)
            .filter(|_| !was_ignored.contains(&e.name));
        found.compare(e.name, seen, k.as_ref());
    });
    found.changes.extend(gone(known, &rules));
    let n = found.apply(folder, db)?;
    db.set_local_scanned()?;
    Ok(n)
}

/// What the index held and a walk did not find: gone, or ignored now.
fn gone(known: HashMap<String, Seen>, rules: &IgnoreRules) -> Vec<LocalChange> {
    let mut gone: Vec<(String, bool)> = known
        .into_iter()
        .map(|(name, s)| {
            let ignored = rules.ignores(&name, s.state.kind == Kind::Dir);
            (name, ignored)
        })
        .collect();
    gone.sort();
    gone.into_iter()
        .map(|(name, ignored)| match ignored {
            true => LocalChange::Ignored(name),
            false => LocalChange::Gone(name),
        })
        .collect()
}

/// Look at these paths only (the watcher's), and into a folder only when
/// it is new to the index. Returns the changes recorded.
pub fn paths(folder: &Folder, db: &SyncDb, paths: &BTreeSet<String>) -> Result<usize> {
    let _one = db.scanning.lock();
    folder.check_present()?;
    let rules = folder.ignore_rules();
    let mut found = Found::default();
    // A folder walked whole covers every path below it.
    let mut walked: Option<String> = None;
    for p in paths {
        if walked.as_ref().is_some_and(|w| {
            p.strip_prefix(w.as_str())
                .is_some_and(|r| r.starts_with('/'))
        }) {
            continue;
        }
        let at = folder.entry_at(p);
        let is_dir = at.as_ref().is_some_and(|(e, _)| e.kind == Kind::Dir);
        if rules.ignores(p, is_dir) {
            continue;
        }
        let known = db.local_seen(p)?;
        let was_dir = known.as_ref().is_some_and(|k| k.state.kind == Kind::Dir);
        match at {
            None => {
                found.changes.push(LocalChange::Gone(p.clone()));
                if was_dir {
                    found
                        .changes
                        .extend(db.local_under(p)?.into_iter().map(LocalChange::Gone));
                }
            }
            Some((e, meta)) => {
                let seen = seen_of(&e, &meta);
                if was_dir && !is_dir {
                    found
                        .changes
                        .extend(db.local_under(p)?.into_iter().map(LocalChange::Gone));
                }
                found.compare(e.name, seen, known.as_ref());
                if is_dir && !was_dir {
                    walk_new_folder(folder, db, p, &mut found)?;
                    walked = Some(p.clone());
                }
            }
        }
    }
    found.apply(folder, db)
}

/// A folder new to the index (made, or moved in): everything in it.
fn walk_new_folder(folder: &Folder, db: &SyncDb, dir: &str, found: &mut Found) -> Result<()> {
    let mut failed = None;
    folder.walk_under(Some(dir), |e, meta| {
        let seen = seen_of(&e, meta);
        match db.local_seen(&e.name) {
            Ok(k) => found.compare(e.name, seen, k.as_ref()),
            Err(err) => failed = Some(err),
        }
    });
    failed.map_or(Ok(()), Err)
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
