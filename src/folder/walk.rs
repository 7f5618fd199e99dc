//! Walking the folder: every entry, recursively and sorted, with its
//! metadata, or one path as a walk would see it. The state folder,
//! temporary files, symlinks that lead outside and folders that
//! `.dropboxignore` excludes are never entered or listed; names that are
//! not UTF-8 are counted and a few kept, escaped, for a warning.

use std::fs::{self, Metadata};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{Folder, PERMISSION_BITS, mtime_ns};
use crate::names::{STATE_DIR, is_private};
use crate::proto::{Entry, Kind};

impl Folder {
    /// Every entry of the folder, recursively, sorted by path; the state
    /// folder, temporary files and symlinks that lead outside are left out.
    pub fn walk(&self, mut each: impl FnMut(Entry)) {
        self.walk_with_meta(|e, _| each(e))
    }

    /// [`Folder::walk`], with each entry's metadata (host-local: inode and
    /// all) beside it.
    pub(super) fn walk_with_meta(&self, each: impl FnMut(Entry, &Metadata)) {
        self.walk_under(None, each)
    }

    /// [`Folder::walk_with_meta`] of the whole folder, or (`under`) of one
    /// folder inside it, without that folder itself.
    pub fn walk_under(&self, under: Option<&str>, mut each: impl FnMut(Entry, &Metadata)) {
        let rules = self.ignore_rules();
        let root = self.root.clone();
        let state = self.state.clone();
        let start = under.map_or_else(|| self.root.clone(), |u| self.root.join(u));
        let walker = walkdir::WalkDir::new(&start)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(move |e| {
                if e.path() == state {
                    return false;
                }
                if rules.is_empty() {
                    return true;
                }
                // An ignored folder is not entered at all.
                let rel = e.path().strip_prefix(&root).ok().and_then(|r| r.to_str());
                !rel.is_some_and(|r| rules.ignores(r, e.file_type().is_dir()))
            });
        let mut odd = (0, Vec::new());
        for item in walker.flatten() {
            let Some(rel) = self.relative(item.path()) else {
                note_unservable(&mut odd, item.path().strip_prefix(&self.root).ok());
                continue;
            };
            if is_private(&rel) {
                continue;
            }
            let meta = if item.path_is_symlink() {
                self.through_link(item.path())
            } else {
                item.metadata().ok()
            };
            if let Some((entry, meta)) = meta.and_then(|m| entry_of(rel, m)) {
                each(entry, &meta);
            }
        }
        if under.is_none()
            && let Ok(mut last) = self.unservable.lock()
        {
            *last = odd;
        }
    }

    /// One path as a walk would see it: `None` when it is not there, not
    /// a file or folder, a symlink leading outside, private, or a folder
    /// the walk would not enter. (`.dropboxignore` is the caller's to
    /// apply.)
    pub fn entry_at(&self, rel: &str) -> Option<(Entry, Metadata)> {
        if is_private(rel) || rel.split('/').next() == Some(STATE_DIR) {
            return None;
        }
        let path = self.root.join(rel);
        let link = fs::symlink_metadata(&path).ok()?;
        let meta = if link.file_type().is_symlink() {
            self.through_link(&path)?
        } else {
            link
        };
        entry_of(rel.to_string(), meta)
    }

    /// The metadata of what the symlink `path` leads to, when that is
    /// inside the folder.
    fn through_link(&self, path: &Path) -> Option<Metadata> {
        match fs::canonicalize(path) {
            Ok(real) if self.inside(&real) => fs::metadata(&real).ok(),
            _ => None,
        }
    }
}

/// The listing entry of `rel` with metadata `meta` (a file or a folder;
/// anything else is left out), and the metadata.
fn entry_of(rel: String, meta: Metadata) -> Option<(Entry, Metadata)> {
    let kind = if meta.is_dir() {
        Kind::Dir
    } else if meta.is_file() {
        Kind::File
    } else {
        return None;
    };
    let entry = Entry {
        size: if kind == Kind::Dir { 0 } else { meta.len() },
        mtime_ns: mtime_ns(&meta),
        mode: meta.permissions().mode() & PERMISSION_BITS,
        kind,
        name: rel,
    };
    Some((entry, meta))
}

/// Count a path that is not UTF-8, keeping a few of them written out with
/// the bytes that are not UTF-8 as `\xNN`.
fn note_unservable(odd: &mut (usize, Vec<String>), rel: Option<&Path>) {
    use std::os::unix::ffi::OsStrExt;
    odd.0 += 1;
    let Some(rel) = rel else { return };
    if odd.1.len() < 5 {
        let mut shown = String::new();
        for chunk in rel.as_os_str().as_bytes().utf8_chunks() {
            shown.push_str(chunk.valid());
            for b in chunk.invalid() {
                shown.push_str(&format!("\\x{b:02x}"));
            }
        }
        odd.1.push(shown);
    }
}
