//! `.dropboxignore`: gitignore-syntax patterns at the folder's root (read
//! by the `ignore` crate's gitignore matcher) that keep matching paths out
//! of listings, hashes and sync. The file is read again whenever its
//! version changes, so an edit takes effect at the next walk; the file
//! itself is never ignored (it syncs like any other), and neither is
//! anything of ours (temporary files and the state folder are private
//! anyway).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::Version;

/// The name of the patterns file at the folder's root.
pub const IGNORE_FILE: &str = ".dropboxignore";

/// The patterns in force at one moment.
#[derive(Clone)]
pub struct IgnoreRules(Arc<Gitignore>);

impl IgnoreRules {
    /// No patterns: nothing is ignored.
    pub fn none() -> IgnoreRules {
        IgnoreRules(Arc::new(Gitignore::empty()))
    }

    /// True when `other` is these very patterns (read from the same
    /// version of the file).
    pub fn same_as(&self, other: &IgnoreRules) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// True when there are no patterns (a walk then skips the checks).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the relative path `rel` (a folder if `is_dir`) is excluded,
    /// by a pattern for it or for one of its parent folders.
    pub fn ignores(&self, rel: &str, is_dir: bool) -> bool {
        if rel == IGNORE_FILE || self.0.is_empty() {
            return false;
        }
        self.0
            .matched_path_or_any_parents(Path::new(rel), is_dir)
            .is_ignore()
    }
}

/// The folder's patterns, reloaded when the file changes.
pub struct Ignores {
    root: PathBuf,
    loaded: Mutex<(Option<Version>, IgnoreRules)>,
}

impl Ignores {
    pub fn new(root: &Path) -> Ignores {
        Ignores {
            root: root.to_path_buf(),
            loaded: Mutex::new((None, IgnoreRules::none())),
        }
    }

    /// The patterns as last read, without looking at the file (for a
    /// request by name: a walk reads them again).
    pub fn last(&self) -> IgnoreRules {
        self.loaded
            .lock()
            .map(|l| l.1.clone())
            .unwrap_or_else(|_| IgnoreRules::none())
    }

    /// The patterns in force now (read again if the file changed, is new or
    /// is gone). Lines that are not valid patterns are skipped.
    pub fn current(&self) -> IgnoreRules {
        let path = self.root.join(IGNORE_FILE);
        let now = std::fs::metadata(&path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| Version::of(&m));
        let Ok(mut loaded) = self.loaded.lock() else {
            return IgnoreRules::none();
        };
        if loaded.0 != now {
            let rules = match now {
                None => IgnoreRules::none(),
                Some(_) => {
                    let mut b = GitignoreBuilder::new(&self.root);
                    // Bad lines are reported per line; the good ones stay.
                    let _ = b.add(&path);
                    IgnoreRules(Arc::new(b.build().unwrap_or_else(|_| Gitignore::empty())))
                }
            };
            *loaded = (now, rules);
        }
        loaded.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_files_folders_and_what_is_inside_them() {
        let d = tempfile::tempdir().unwrap();
        let ig = Ignores::new(d.path());
        assert!(!ig.current().ignores("a.log", false));
        std::fs::write(
            d.path().join(IGNORE_FILE),
            "*.log\nbuild/\n!keep.log\n[bad\n",
        )
        .unwrap();
        let r = ig.current();
        assert!(r.ignores("a.log", false));
        assert!(r.ignores("deep/b.log", false));
        assert!(!r.ignores("keep.log", false));
        assert!(r.ignores("build", true));
        assert!(r.ignores("build/out/x.bin", false));
        assert!(!r.ignores("build", false), "build/ names folders only");
        assert!(!r.ignores(IGNORE_FILE, false));
        assert!(!r.ignores("a.txt", false));
        // Changed, then removed: the next look sees it.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(d.path().join(IGNORE_FILE), "*.txt\n").unwrap();
        let r = ig.current();
        assert!(r.ignores("a.txt", false) && !r.ignores("a.log", false));
        std::fs::remove_file(d.path().join(IGNORE_FILE)).unwrap();
        assert!(!ig.current().ignores("a.txt", false));
    }
}
