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
    to_hash: Vec<(String, Seen, Metadata)>,
    /// Changes recorded so far.
    recorded: usize,
    /// The first failure while walking, reported at the end.
    failed: Option<crate::Error>,
}

impl Found {
    /// `seen` differs from `known` (or is new): record a folder now, hash a file.
    fn compare(&mut self, e: Entry, meta: &Metadata, known: Option<&Seen>) {
        let seen = seen_of(&e, meta);
        let name = e.name;
        if let Some(k) = known
            && k.unchanged(&seen)
        {
            return;
        }
        match seen.state.kind {
            Kind::Dir => self.changes.push(LocalChange::Present(name, seen)),
            Kind::File => self.to_hash.push((name, seen, meta.clone())),
        }
    }

    /// Hash the files on all cores (a file the MD5 cache knows unchanged,
    /// as one just received, is not even opened) and write everything in
    /// one transaction. A file that cannot be read stays as the index had
    /// it. Returns the changes recorded.
    fn apply(&mut self, folder: &Folder, db: &SyncDb) -> Result<()> {
        let mut unknown = Vec::new();
        for (name, mut seen, meta) in std::mem::take(&mut self.to_hash) {
            match folder.cached(&name, &meta) {
                Some(md5) => {
                    seen.state.md5 = Some(crate::proto::hex(&md5));
                    self.changes.push(LocalChange::Present(name, seen));
                }
                None => unknown.push((name, seen)),
            }
        }
        let names: Vec<String> = unknown.iter().map(|(n, _)| n.clone()).collect();
        for ((name, mut seen), h) in unknown.into_iter().zip(folder.hash_unsaved(&names)) {
            if let Some(md5) = h.md5 {
                seen.state.md5 = Some(md5);
                self.changes.push(LocalChange::Present(name, seen));
            }
        }
        // The folder vanished while we looked (an unmounted disk): record nothing.
        folder.check_present()?;
        self.recorded += db.local_apply(&self.changes)?;
        self.changes.clear();
        Ok(())
    }

    /// Apply what was found so far when it is a part's worth (a walk of
    /// a large folder holds one part at a time); an error is kept for the
    /// end of the walk.
    fn flush_part(&mut self, folder: &Folder, db: &SyncDb) {
        if self.failed.is_some() || self.changes.len() + self.to_hash.len() < SCAN_PART {
            return;
        }
        if let Err(e) = self.apply(folder, db) {
            self.failed = Some(e);
        }
    }

    /// Apply the rest; the changes recorded in all, or the first failure.
    fn finish(mut self, folder: &Folder, db: &SyncDb) -> Result<usize> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.apply(folder, db)?;
        Ok(self.recorded)
    }
}

/// Changes a walk gathers before it records them.
const SCAN_PART: usize = 10_000;

/// Walk the whole folder into the index, comparing one folder at a time
/// with what the index holds in it. Returns the changes recorded.
pub fn full(folder: &Folder, db: &SyncDb) -> Result<usize> {
    let _one = db.scanning.lock();
    folder.check_present()?;
    db.walks.fetch_add(1, Ordering::Relaxed);
    let rules = folder.ignore_rules();
    // Paths ignored until now that the walk finds are recorded afresh.
    let was_ignored = db.local_ignored()?;
    let mut found = Found::default();
    let mut open = vec![Open {
        dir: String::new(),
        known: db.local_children("")?,
    }];
    folder.walk_under(None, |e, meta| {
        let parent = e.name.rsplit_once('/').map_or("", |(p, _)| p);
        // The walk left the folders on top of the stack: what they held and
        // it did not find went.
        while open.len() > 1 && open.last().is_some_and(|o| o.dir != parent) {
            if let Some(done) = open.pop() {
                done.close(db, &rules, &mut found);
            }
        }
        let k = match open.last_mut() {
            Some(o) if o.dir == parent => o.known.remove(&e.name),
            _ => db.local_seen(&e.name).unwrap_or_else(|err| {
                found.failed.get_or_insert(err);
                None
            }),
        };
        let k = k.filter(|_| !was_ignored.contains(&e.name));
        // A folder that became a file: what it held went.
        if e.kind == Kind::File && k.as_ref().is_some_and(|k| k.state.kind == Kind::Dir) {
            match db.local_under(&e.name) {
                Ok(inside) => found
                    .changes
                    .extend(inside.into_iter().map(|n| went(n, false, &rules))),
                Err(err) => {
                    found.failed.get_or_insert(err);
                }
            }
        }
        if e.kind == Kind::Dir {
            match db.local_children(&e.name) {
                Ok(known) => open.push(Open {
                    dir: e.name.clone(),
                    known,
                }),
                Err(err) => {
                    found.failed.get_or_insert(err);
                }
            }
        }
        found.compare(e, meta, k.as_ref());
        found.flush_part(folder, db);
    });
    while let Some(done) = open.pop() {
        done.close(db, &rules, &mut found);
    }
    let n = found.finish(folder, db)?;
    db.set_local_scanned()?;
    Ok(n)
}

/// A folder being walked, and what the index holds directly in it that
/// the walk has not found yet.
struct Open {
    dir: String,
    known: HashMap<String, Seen>,
}

impl Open {
    /// The walk is done with this folder: what it did not find went (with
    /// everything inside a folder that went), or is ignored now.
    fn close(self, db: &SyncDb, rules: &IgnoreRules, found: &mut Found) {
        let mut names: Vec<(String, bool)> = self
            .known
            .into_iter()
            .map(|(name, s)| (name, s.state.kind == Kind::Dir))
            .collect();
        names.sort();
        for (name, is_dir) in names {
            let inside = match is_dir {
                true => db.local_under(&name).unwrap_or_else(|err| {
                    found.failed.get_or_insert(err);
                    Vec::new()
                }),
                false => Vec::new(),
            };
            found.changes.push(went(name, is_dir, rules));
            found
                .changes
                .extend(inside.into_iter().map(|n| went(n, false, rules)));
        }
    }
}

/// A path the index held and a walk did not find: gone, or ignored now.
fn went(name: String, is_dir: bool, rules: &IgnoreRules) -> LocalChange {
    match rules.ignores(&name, is_dir) {
        true => LocalChange::Ignored(name),
        false => LocalChange::Gone(name),
    }
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
                if was_dir && !is_dir {
                    found
                        .changes
                        .extend(db.local_under(p)?.into_iter().map(LocalChange::Gone));
                }
                found.compare(e, &meta, known.as_ref());
                if is_dir && !was_dir {
                    walk_new_folder(folder, db, p, &mut found);
                    walked = Some(p.clone());
                }
            }
        }
    }
    found.finish(folder, db)
}

/// A folder new to the index (made, or moved in): everything in it.
fn walk_new_folder(folder: &Folder, db: &SyncDb, dir: &str, found: &mut Found) {
    folder.walk_under(Some(dir), |e, meta| {
        match db.local_seen(&e.name) {
            Ok(k) => found.compare(e, meta, k.as_ref()),
            Err(err) => found.failed = found.failed.take().or(Some(err)),
        }
        found.flush_part(folder, db);
    });
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
