//! The sync decision, without I/O: for every path, one pure function of
//! (local state, remote state, last-synced state) returns an [`Action`];
//! [`plan`] applies it to whole indexes, turns a pull plus a delete of the
//! same bytes into a rename, and orders the work.
//!
//! The rules: when only one side changed since the last sync, that side
//! wins (a deletion is a change); when both changed, the newer version keeps
//! the name and the older one is moved aside to a conflict copy by the side
//! that holds it; nothing is deleted that changed since it was last synced.
//! Each side only ever acts on its own folder, and the other side reaches
//! the mirror-image decision, so the two converge.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::proto::Kind;

/// What is known of one path on one side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    pub kind: Kind,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    /// MD5 of a file; `None` for folders.
    pub md5: Option<String>,
}

impl FileState {
    /// Same kind and (for files) same bytes.
    pub fn same_content(&self, other: &FileState) -> bool {
        self.kind == other.kind && (self.kind == Kind::Dir || self.md5 == other.md5)
    }

    /// Same content and same permission bits (`0o777`: setuid, setgid and
    /// sticky never travel, so they make no difference either).
    pub fn same(&self, other: &FileState) -> bool {
        self.same_content(other) && self.perm() == other.perm()
    }

    /// The permission bits that sync compares and sets.
    pub fn perm(&self) -> u32 {
        self.mode & PERM_BITS
    }
}

/// The mode bits that travel: read, write and execute, never setuid,
/// setgid or sticky.
pub const PERM_BITS: u32 = 0o777;

/// What to do with one path on the local side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing here (the other side may act).
    Nothing,
    /// Both sides agree and the last-synced state is older: remember this.
    Record,
    /// Gone on both sides: forget it.
    Forget,
    /// Fetch the remote file: new there, or changed only there.
    Pull,
    /// Create the remote folder here.
    MakeDir,
    /// Same bytes; the permission bits changed there.
    SetMode(u32),
    /// Deleted there and unchanged here: move ours to the trash.
    Delete,
    /// Folder removed there: remove ours if it is empty.
    RemoveDir,
    /// Both changed and theirs is newer: move ours to a conflict copy, then pull.
    ConflictPull,
    /// Instead of pulling: the same bytes are here under `from`, which is
    /// deleted there (a rename).
    Rename { from: String },
    /// A file here and a folder there: the folder wins the name (as in
    /// Syncthing). Move our file aside to a conflict copy (the other side
    /// pulls it later), then make the folder; its contents follow as pulls.
    /// The side that holds the folder does nothing.
    FolderWins,
}

impl Action {
    /// Nothing to do on disk: at most a note in the last-synced state.
    pub fn is_bookkeeping(&self) -> bool {
        matches!(self, Action::Nothing | Action::Record | Action::Forget)
    }
}

/// True when `a` is the version that wins a conflict against `b`: the newer,
/// and on equal times the larger MD5, so both sides pick the same one.
fn wins(a: &FileState, b: &FileState) -> bool {
    (a.mtime_ns, &a.md5) > (b.mtime_ns, &b.md5)
}

/// The decision for one path.
pub fn decide(
    local: Option<&FileState>,
    remote: Option<&FileState>,
    base: Option<&FileState>,
) -> Action {
    match (local, remote) {
        (None, None) => {
            if base.is_some() {
                Action::Forget
            } else {
                Action::Nothing
            }
        }
        (Some(l), Some(r)) if l.same(r) => {
            if base.is_some_and(|b| b.same(l)) {
                Action::Nothing
            } else {
                Action::Record
            }
        }
        (Some(l), Some(r)) if l.kind != r.kind => {
            if l.kind == Kind::File {
                Action::FolderWins
            } else {
                Action::Nothing
            }
        }
        (Some(l), Some(r)) if l.same_content(r) => {
            // Only the permission bits differ.
            match base {
                Some(b) if l.perm() == b.perm() => Action::SetMode(r.perm()),
                Some(b) if r.perm() == b.perm() => Action::Nothing,
                // Both changed it, or no history: the larger mode, on both sides.
                _ if r.perm() > l.perm() => Action::SetMode(r.perm()),
                _ => Action::Nothing,
            }
        }
        (Some(l), Some(r)) => {
            let local_changed = base.is_none_or(|b| !l.same_content(b));
            let remote_changed = base.is_none_or(|b| !r.same_content(b));
            match (local_changed, remote_changed) {
                (false, true) => Action::Pull,
                (true, false) => Action::Nothing,
                _ if wins(r, l) => Action::ConflictPull,
                _ => Action::Nothing,
            }
        }
        (None, Some(r)) => {
            let fetch = if r.kind == Kind::Dir {
                Action::MakeDir
            } else {
                Action::Pull
            };
            match base {
                // New there.
                None => fetch,
                // We deleted it and they did not touch it: they will delete too.
                Some(b) if r.same_content(b) => Action::Nothing,
                // We deleted it but they changed it since: keep their version.
                Some(_) => fetch,
            }
        }
        (Some(l), None) => match base {
            // New here: they will pull it.
            None => Action::Nothing,
            Some(b) if l.same_content(b) => {
                if l.kind == Kind::Dir {
                    Action::RemoveDir
                } else {
                    Action::Delete
                }
            }
            // Changed here after they deleted it: keep ours, they will pull it.
            Some(_) => Action::Nothing,
        },
    }
}

pub type Index = HashMap<String, FileState>;

/// The actions of one round, in the order to run them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<(String, Action)>,
    /// Files that exist here now.
    pub local_files: usize,
}

impl Plan {
    pub fn count(&self, f: impl Fn(&Action) -> bool) -> usize {
        self.actions.iter().filter(|(_, a)| f(a)).count()
    }

    /// Files this plan would move to the trash.
    pub fn deletions(&self) -> usize {
        self.count(|a| matches!(a, Action::Delete))
    }

    /// The bookkeeping of this plan: paths both sides agree on (to record)
    /// and paths gone on both (to forget).
    pub fn bookkeeping(&self, local: &Index) -> Vec<(String, Option<FileState>)> {
        self.actions
            .iter()
            .filter_map(|(p, a)| match a {
                Action::Record => Some((p.clone(), local.get(p).cloned())),
                Action::Forget => Some((p.clone(), None)),
                _ => None,
            })
            .collect()
    }

    /// True when nothing but bookkeeping is planned.
    pub fn is_idle(&self) -> bool {
        self.actions.iter().all(|(_, a)| a.is_bookkeeping())
    }
}

fn rank(a: &Action) -> u8 {
    match a {
        Action::MakeDir | Action::FolderWins => 0,
        Action::Rename { .. } => 1,
        Action::ConflictPull | Action::Pull => 2,
        Action::SetMode(_) => 3,
        Action::Delete => 4,
        Action::RemoveDir => 5,
        _ => 6,
    }
}

/// Decide every path of the indexes, detect renames, and order the work:
/// folders first, then renames, pulls, modes, deletions, and folder
/// removals deepest first. `their_base` holds the states the remote last
/// agreed on with us: its tombstones (paths it no longer has) and the paths
/// it still holds in the agreed state. It stands in for our own last-synced
/// state where we have none (we may not have seen the agreement: it pulled,
/// then went away before telling us), so their deletion still propagates,
/// and only onto the very version they had; and a path we deleted since is
/// not pulled back from them as if it were new there.
pub fn plan(local: &Index, remote: &Index, base: &Index, their_base: &Index) -> Plan {
    let paths: BTreeSet<&String> = local
        .keys()
        .chain(remote.keys())
        .chain(base.keys())
        .collect();
    let mut decided: BTreeMap<String, Action> = paths
        .into_iter()
        .map(|p| {
            let b = base.get(p).or_else(|| their_base.get(p));
            (p.clone(), decide(local.get(p), remote.get(p), b))
        })
        .collect();
    // A pull of bytes we hold under a name that is being deleted is a rename.
    let mut deleted_by_md5: HashMap<&str, Vec<String>> = HashMap::new();
    for (p, a) in &decided {
        if *a == Action::Delete
            && let Some(md5) = local.get(p).and_then(|s| s.md5.as_deref())
        {
            deleted_by_md5.entry(md5).or_default().push(p.clone());
        }
    }
    let pulls: Vec<String> = decided
        .iter()
        .filter(|(p, a)| **a == Action::Pull && !local.contains_key(*p))
        .map(|(p, _)| p.clone())
        .collect();
    for p in pulls {
        let Some(md5) = remote.get(&p).and_then(|s| s.md5.as_deref()) else {
            continue;
        };
        if let Some(from) = deleted_by_md5.get_mut(md5).and_then(|v| v.pop()) {
            decided.insert(from.clone(), Action::Nothing);
            decided.insert(p, Action::Rename { from });
        }
    }
    // Each path's rank and depth counted once, not at every comparison.
    let mut keyed: Vec<(u8, usize, (String, Action))> = decided
        .into_iter()
        .map(|(p, a)| (rank(&a), p.bytes().filter(|&b| b == b'/').count(), (p, a)))
        .collect();
    keyed.sort_by(|(ra, da, (pa, a)), (rb, db, (pb, _))| {
        ra.cmp(rb).then_with(|| match a {
            Action::RemoveDir => db.cmp(da).then(pb.cmp(pa)),
            _ => da.cmp(db).then(pa.cmp(pb)),
        })
    });
    let actions: Vec<(String, Action)> = keyed.into_iter().map(|(_, _, pa)| pa).collect();
    Plan {
        actions,
        local_files: local.values().filter(|s| s.kind == Kind::File).count(),
    }
}

const CONFLICT_MARK: &str = ".sync-conflict-";

/// The name of a conflict copy: `dir/name.sync-conflict-<date>-<peer>.ext`.
/// A conflict copy of a conflict copy gets a fresh marker in place of the
/// old one, not a second one.
pub fn conflict_name(path: &str, date: &str, peer: &str) -> String {
    let (dir, base) = match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    };
    // The marker runs to the next dot (dates and peer ids have none).
    let unmarked;
    let base = match base.find(CONFLICT_MARK) {
        Some(i) if i > 0 => {
            let rest = &base[i + CONFLICT_MARK.len()..];
            let end = rest
                .find('.')
                .map_or(base.len(), |j| i + CONFLICT_MARK.len() + j);
            unmarked = format!("{}{}", &base[..i], &base[end..]);
            unmarked.as_str()
        }
        _ => base,
    };
    let (stem, ext) = match base.rfind('.') {
        Some(i) if i > 0 => (&base[..i], &base[i..]),
        _ => (base, ""),
    };
    // The id's short form (its first characters, without the dashes).
    let short: String = peer
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(crate::secure::keys::SHORT_LEN)
        .collect();
    format!("{dir}{stem}{CONFLICT_MARK}{date}-{short}{ext}")
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
