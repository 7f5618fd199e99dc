//! The shared folder on disk: listing it, resolving names so that nothing
//! outside it is ever read or written, MD5s with a cache, and files written
//! under a temporary name and renamed into place only when verified.
//!
//! Names reaching this module are already clean ([`crate::names`]); here the
//! second guard runs: the real, symlink-resolved path must lie inside the
//! folder and outside its private state folder.

mod beneath;
mod hashcache;
mod hashlots;
mod ignore;
mod incoming;
mod md5pipe;
mod parts;
pub mod pidlock;
mod staged;
mod stat;
mod walk;

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use md5::{Digest, Md5};
use rayon::prelude::*;

pub use hashcache::HashCache;
pub use ignore::{IGNORE_FILE, IgnoreRules};
pub use incoming::{DirCache, Finish, Incoming, mismatch};
pub use md5pipe::Md5Pipe;
pub use stat::{
    Glance, OnDisk, PERMISSION_BITS, Version, file_meta, file_time, mode_for_new_file, mtime_ns,
    open_regular, umask,
};

use crate::names::{STATE_DIR, clean_name};
use crate::proto::{FileMeta, HashEntry, hex};
use crate::{Context, Error, Result, bail};

/// The state folder's folder of files being received (see
/// [`Folder::stage_incoming`]).
const STAGING_DIR: &str = "incoming";

/// A shared folder and its private state folder.
pub struct Folder {
    root: PathBuf,
    state: PathBuf,
    /// Set once the state folder exists (it is made on first need).
    state_made: std::sync::OnceLock<()>,
    cache: Mutex<HashCache>,
    /// Received files reach the disk before they are renamed into place.
    durable: AtomicBool,
    /// A client only (no sweep at start): each received file first clears
    /// abandoned part files out of its folder.
    sweep_on_write: bool,
    /// Paths the last walk passed over because they are not UTF-8 (the
    /// protocol names files in UTF-8), shown escaped; a few at most.
    unservable: Mutex<(usize, Vec<String>)>,
    /// The `.dropboxignore` patterns.
    ignores: ignore::Ignores,
    /// Where received files are written before their rename into place,
    /// once [`Folder::stage_incoming`] set it (else beside their target).
    staging: std::sync::OnceLock<std::sync::Arc<staged::StagingDir>>,
    /// The root's descriptor, for names resolved in one system call.
    beneath: Option<beneath::Beneath>,
    /// The root's device and inode when opened: a folder made again at
    /// the same path (by anything) is another folder.
    root_id: (u64, u64),
}

impl Folder {
    /// Open a shared folder (a serving peer) and create its state folder.
    pub fn open(dir: &Path) -> Result<Folder> {
        let mut folder = Folder::open_unshared(dir)?;
        folder.make_state_dir()?;
        folder.sweep_on_write = false;
        Ok(folder)
    }

    /// Open the folder of a client-only run: its state folder is made only
    /// when something has to be written there (a downloaded file's MD5, a
    /// sync by hand), so a run that writes no file leaves nothing behind.
    pub fn open_unshared(dir: &Path) -> Result<Folder> {
        let root =
            fs::canonicalize(dir).context(format_args!("shared folder {}", dir.display()))?;
        if !root.is_dir() {
            bail!("shared folder {} is not a directory", root.display());
        }
        let state = root.join(STATE_DIR);
        let root_id = fs::metadata(&root)
            .map(|m| (m.dev(), m.ino()))
            .context(format_args!("shared folder {}", root.display()))?;
        let cache = HashCache::load(state.join("md5-cache.json"));
        let ignores = ignore::Ignores::new(&root);
        Ok(Folder {
            state,
            state_made: std::sync::OnceLock::new(),
            cache: Mutex::new(cache),
            durable: AtomicBool::new(false),
            sweep_on_write: true,
            unservable: Mutex::new((0, Vec::new())),
            ignores,
            staging: std::sync::OnceLock::new(),
            beneath: beneath::Beneath::new(&root),
            root_id,
            root,
        })
    }

    /// Create the state folder (owner-only) if it is not there yet.
    fn make_state_dir(&self) -> Result<()> {
        if self.state_made.get().is_some() {
            return Ok(());
        }
        if !self.state.is_dir() {
            fs::create_dir_all(&self.state)
                .context(format_args!("creating {}", self.state.display()))?;
            fs::set_permissions(&self.state, fs::Permissions::from_mode(0o700)).ok();
        }
        let _ = self.state_made.set(());
        Ok(())
    }

    /// From now on, every received file is flushed to the disk (fsync)
    /// before it is renamed into place. Sync asks for this: it records a
    /// pulled file as synced, and a file that a power cut left empty would
    /// otherwise look like a local edit and overwrite the partner's good
    /// copy. Without sync a download is like rsync's: the disk gets it when
    /// the kernel writes it back.
    pub fn keep_durable(&self) {
        self.durable.store(true, Ordering::Relaxed);
    }

    /// From now on, received files are written in the state folder's
    /// `incoming` folder, which nothing watches, and only their rename
    /// lands in the shared folder: a watcher on it (sync's) then sees one
    /// event per received file instead of one per write, mode and time.
    /// What killed processes left there is removed first.
    pub fn stage_incoming(&self) -> Result<()> {
        if self.staging.get().is_some() {
            return Ok(());
        }
        let dir = self.state_dir().join(STAGING_DIR);
        fs::create_dir_all(&dir).context(format_args!("creating {}", dir.display()))?;
        parts::sweep_dir(&dir);
        let opened =
            staged::StagingDir::open(&dir).context(format_args!("opening {}", dir.display()))?;
        let _ = self.staging.set(std::sync::Arc::new(opened));
        Ok(())
    }

    /// Where received files are written first, when not beside their target.
    pub fn staging(&self) -> Option<&std::sync::Arc<staged::StagingDir>> {
        self.staging.get()
    }

    /// True for a client only's folder: see [`Incoming::create`].
    pub fn sweeps_on_write(&self) -> bool {
        self.sweep_on_write
    }

    pub fn durable(&self) -> bool {
        self.durable.load(Ordering::Relaxed)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the private state folder is (or would be), without making it:
    /// for looking only.
    pub fn state_path(&self) -> &Path {
        &self.state
    }

    /// The private state folder, made now if it was not there yet (a
    /// failure shows when the caller writes into it).
    pub fn state_dir(&self) -> &Path {
        let _ = self.make_state_dir();
        &self.state
    }

    fn inside(&self, real: &Path) -> bool {
        real.starts_with(&self.root) && !real.starts_with(&self.state)
    }

    /// Where a file named `name` is to be written (by a rename over it).
    /// Refuses a name whose existing parent folders lead outside the shared
    /// folder via symlinks, and a name that is a folder here.
    pub fn target_path(&self, name: &str) -> Result<PathBuf> {
        let path = self.checked_path(name, false)?;
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            bail!(
                "{} is a directory here; it cannot be replaced by a file",
                clean_name(name)?
            );
        }
        Ok(path)
    }

    /// The path of `name`, to change it in place (create, chmod or remove
    /// a folder): the path itself, when it exists, and its existing parents
    /// must resolve inside the shared folder, so a symlink never leads a
    /// change out of it.
    pub fn local_path(&self, name: &str) -> Result<PathBuf> {
        self.checked_path(name, true)
    }

    fn checked_path(&self, name: &str, including_itself: bool) -> Result<PathBuf> {
        let name = clean_name(name)?;
        let parts = name.split('/').count();
        let upto = if including_itself { parts } else { parts - 1 };
        if let Some(plain) = self.plain_path(&name, upto, true) {
            return Ok(plain);
        }
        let path = self.root.join(&name);
        let mut next = if including_itself {
            Some(path.as_path())
        } else {
            path.parent()
        };
        while let Some(p) = next {
            match fs::canonicalize(p) {
                Ok(real) => {
                    if !self.inside(&real) {
                        bail!(kind: Refused, "{name} leads outside the shared folder through a symlink");
                    }
                    break;
                }
                Err(_) => next = p.parent(),
            }
        }
        Ok(path)
    }

    /// `root/name` when none of its first `upto` components is a symlink:
    /// then it is its own real path (the root is), one `lstat` a component
    /// instead of resolving the whole path. `None` when one is a symlink,
    /// when it names the state folder, or (`missing_ok` false) when a
    /// component is missing: the caller resolves it in full.
    fn plain_path(&self, name: &str, upto: usize, missing_ok: bool) -> Option<PathBuf> {
        if name.split('/').next() == Some(STATE_DIR) {
            return None;
        }
        let mut at = self.root.clone();
        for part in name.split('/').take(upto) {
            at.push(part);
            match fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => return None,
                Ok(_) => {}
                // Nothing further exists, so nothing further resolves.
                Err(_) if missing_ok => break,
                Err(_) => return None,
            }
        }
        Some(self.root.join(name))
    }

    /// Open an existing regular file for reading, refusing anything that
    /// resolves outside the shared folder, and never blocking on (or even
    /// opening) a FIFO, socket or device.
    pub fn open_file(&self, name: &str) -> Result<(File, FileMeta)> {
        self.open_file_stat(name).map(|(f, m, _)| (f, m))
    }

    /// [`Folder::open_file`], with the opened file's metadata.
    pub fn open_file_stat(&self, name: &str) -> Result<(File, FileMeta, Metadata)> {
        let name = clean_name(name)?;
        // The patterns of the last walk (a listing, a sync scan): one stat
        // less per file served.
        if self.ignores.last().ignores(&name, false) {
            bail!(kind: Refused, "{name} is excluded by {IGNORE_FILE}; it is not shared");
        }
        if let Some((file, stat)) = self.open_regular_beneath(&name) {
            return Ok((file, file_meta(name, &stat), stat));
        }
        let path = self.root.join(&name);
        let plain = self.plain_path(&name, usize::MAX, false);
        let real = match plain.map_or_else(|| fs::canonicalize(&path), Ok) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                bail!(kind: NotFound, "no such file: {name}")
            }
            Err(e) => return Err(e).context(&name),
        };
        if !self.inside(&real) {
            bail!(kind: Refused, "{name} leads outside the shared folder; refused");
        }
        let file = match open_regular(&real) {
            Ok(f) => f,
            // "<name> is not a regular file ...": the reason reads on from the name.
            Err(e) if e.kind() == io::ErrorKind::Other => bail!(kind: Refused, "{name} {e}"),
            Err(e) => return Err(e).context(&name),
        };
        let stat = file.metadata().context(&name)?;
        Ok((file, file_meta(name, &stat), stat))
    }

    /// The folder `rel` (`""` the root) opened the short way (see
    /// `beneath.rs`) for the `*at` calls of a file written into it; `None`
    /// when it is missing or the short way cannot tell.
    pub fn dir_beneath(&self, rel: &str) -> Option<File> {
        let rel = if rel.is_empty() { "." } else { rel };
        self.beneath
            .as_ref()?
            .open(rel, libc::O_PATH | libc::O_DIRECTORY)
    }

    /// The device and inode the folder `rel` (`""` the root) has now, the
    /// last component not followed; `None` when it cannot be told.
    pub fn dir_identity(&self, rel: &str) -> Option<(u64, u64)> {
        let rel = if rel.is_empty() { "." } else { rel };
        let st = self.beneath.as_ref()?.stat(rel)?;
        Some((st.st_dev, st.st_ino))
    }

    /// [`Folder::open_file`] the short way (see `beneath.rs`): a name that
    /// is a regular file here, with no symlink on the way, opened and
    /// checked to be one still. `None` leaves it to the long way, which
    /// also says what is wrong. Nothing but a regular file is opened: its
    /// type is looked at first (only root can make a device, so none can
    /// be swapped in after the look), and checked again on the descriptor.
    fn open_regular_beneath(&self, name: &str) -> Option<(File, Metadata)> {
        let beneath = self.beneath.as_ref()?;
        if beneath.file_type(name)? != libc::S_IFREG {
            return None;
        }
        let file = beneath.open(name, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY)?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() {
            return None;
        }
        stat::clear_nonblocking(&file);
        Some((file, meta))
    }

    /// The `.dropboxignore` patterns in force now (read again when the file
    /// changed).
    pub fn ignore_rules(&self) -> IgnoreRules {
        self.ignores.current()
    }

    /// What the last walk passed over because it is not UTF-8: a sentence
    /// naming a few of them, or `None`.
    pub fn unservable_names(&self) -> Option<String> {
        let last = self.unservable.lock().ok()?;
        let (n, some) = &*last;
        (*n > 0).then(|| {
            let more = if *n > some.len() { ", ..." } else { "" };
            let (what, verb) = if *n == 1 { ("name is", "it") } else { ("names are", "them") };
            format!(
                "{n} {what} not valid UTF-8 and cannot be listed, served or synced (rename {verb}): {}{more}",
                some.join(", ")
            )
        })
    }

    fn relative(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.root).ok()?;
        let s = rel.to_str()?;
        Some(s.to_string())
    }

    /// MD5 of one file, from the cache when its [`Version`] is unchanged.
    pub fn hash_one(&self, name: &str) -> Result<HashEntry> {
        let entry = self.hash_opened(name);
        self.save_cache();
        entry
    }

    /// The one way to a file's MD5: open it (a regular file in the folder
    /// only), take the cached MD5 if its version is unchanged, else read
    /// it whole and remember what it hashed to.
    fn hash_opened(&self, name: &str) -> Result<HashEntry> {
        let (file, meta) = self.open_file(name)?;
        let stat = file.metadata().context(&meta.name)?;
        let md5 = match self.cached(&meta.name, &stat) {
            Some(md5) => md5,
            None => {
                let md5 = md5_reader(file).context(&meta.name)?;
                // A client only's folder keeps no state for files it only
                // read (a deposit): its MD5s are kept for files it received.
                if !self.sweep_on_write {
                    self.remember(&meta.name, &stat, md5);
                }
                md5
            }
        };
        Ok(HashEntry {
            name: meta.name,
            md5: Some(hex(&md5)),
            mtime_ns: meta.mtime_ns,
            error: None,
        })
    }

    /// Remove the temporary transfer files that killed processes left
    /// anywhere in the folder (they hold no lock; see `folder/parts.rs`); stops early when `stop` is
    /// set. Returns how many.
    pub fn remove_abandoned_parts(&self, stop: &AtomicBool) -> usize {
        parts::sweep_tree(&self.root, stop)
    }

    /// Refuse to go on when the folder or its state folder has vanished (an
    /// unmounted disk would otherwise look like everything was deleted).
    pub fn check_present(&self) -> Result<()> {
        let same_root = fs::metadata(&self.root)
            .is_ok_and(|m| m.is_dir() && (m.dev(), m.ino()) == self.root_id);
        if !same_root || !self.state.is_dir() {
            bail!(
                "the shared folder {} or its {STATE_DIR} marker is gone or was made anew (an unmounted disk?); refusing to sync",
                self.root.display()
            );
        }
        Ok(())
    }

    /// MD5 of every file: cached ones are not read again, the rest are hashed
    /// on all cores. A file that cannot be read is reported and the rest go on.
    pub fn hash_all(&self) -> Vec<HashEntry> {
        let mut all = Vec::new();
        let _ = self.hash_all_in(crate::proto::BATCH, &mut |lot| {
            all.extend(lot);
            Ok(())
        });
        all
    }

    /// MD5 of the named files; each failure is reported in its own entry.
    pub fn hash_files(&self, files: &[String]) -> Vec<HashEntry> {
        let results = self.hash_unsaved(files);
        self.save_cache();
        results
    }

    /// [`Folder::hash_files`] on all cores, leaving the cache file as it
    /// is (sync keeps what it hashed in its own index).
    pub fn hash_unsaved(&self, files: &[String]) -> Vec<HashEntry> {
        files
            .par_iter()
            .map(|name| self.hash_opened(name).unwrap_or_else(|e| failed(name, e)))
            .collect()
    }

    /// The cached MD5 of a file whose metadata is `stat`, if still valid.
    pub fn cached(&self, name: &str, stat: &Metadata) -> Option<[u8; 16]> {
        self.cache.lock().ok()?.get(name, stat)
    }

    /// Forget the cached MD5 of `name` (a receiver found it wrong).
    pub fn forget_md5(&self, name: &str) {
        if let Ok(mut c) = self.cache.lock() {
            c.forget(name);
        }
    }

    /// Record the MD5 of a file whose metadata is `stat`.
    pub fn remember(&self, name: &str, stat: &Metadata, md5: [u8; 16]) {
        if let Ok(mut c) = self.cache.lock() {
            c.put(name, stat, md5);
        }
    }

    /// Write the MD5 cache to disk if it changed.
    pub fn save_cache(&self) {
        if let Ok(mut c) = self.cache.lock()
            && c.is_dirty()
            && self.make_state_dir().is_ok()
        {
            c.save();
        }
    }
}

fn failed(name: &str, e: Error) -> HashEntry {
    HashEntry {
        name: name.to_string(),
        md5: None,
        mtime_ns: 0,
        error: Some(e.to_string()),
    }
}

/// MD5 of everything a reader yields. The read buffer is the thread's
/// own, kept between calls: a fresh one, zeroed, cost more than hashing
/// a small file (a scan of 100k files of 100 B spent its time in memset).
pub fn md5_reader(mut r: impl Read) -> io::Result<[u8; 16]> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with_borrow_mut(|buf| {
        buf.resize(256 << 10, 0);
        let mut h = Md5::new();
        loop {
            match r.read(buf) {
                Ok(0) => break,
                Ok(n) => h.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(h.finalize().into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Kind;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_folder_made_anew_at_the_same_path_is_not_present() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("shared");
        fs::create_dir(&root).unwrap();
        let folder = Folder::open(&root).unwrap();
        folder.check_present().unwrap();
        // Unmounted, then something makes the path and its marker again.
        fs::rename(&root, d.path().join("away")).unwrap();
        assert!(folder.check_present().is_err());
        fs::create_dir_all(root.join(STATE_DIR)).unwrap();
        let err = folder.check_present().unwrap_err().to_string();
        assert!(err.contains("gone"), "{err}");
    }

    #[test]
    fn walk_lists_recursively_and_hides_private_things() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("sub/empty")).unwrap();
        fs::write(d.path().join("sub/a.txt"), b"hello").unwrap();
        fs::write(d.path().join("sub/.a.txt.x.dbsh-part"), b"half").unwrap();
        symlink("/etc/passwd", d.path().join("evil")).unwrap();
        symlink("sub/a.txt", d.path().join("good")).unwrap();
        let f = Folder::open(d.path()).unwrap();
        let mut names = Vec::new();
        f.walk(|e| names.push((e.name, e.kind, e.size)));
        assert_eq!(
            names,
            vec![
                ("good".into(), Kind::File, 5),
                ("sub".into(), Kind::Dir, 0),
                ("sub/a.txt".into(), Kind::File, 5),
                ("sub/empty".into(), Kind::Dir, 0),
            ]
        );
    }

    #[test]
    fn symlinks_out_of_the_folder_are_refused() {
        let d = tempfile::tempdir().unwrap();
        symlink("/etc", d.path().join("etc")).unwrap();
        symlink("/etc/passwd", d.path().join("pw")).unwrap();
        let f = Folder::open(d.path()).unwrap();
        assert!(f.open_file("pw").unwrap_err().message().contains("outside"));
        assert!(
            f.open_file("etc/passwd")
                .unwrap_err()
                .message()
                .contains("outside")
        );
        assert!(
            f.target_path("etc/x")
                .unwrap_err()
                .message()
                .contains("outside")
        );
        let missing = f.open_file("missing").unwrap_err();
        assert!(missing.message().contains("no such file"));
        assert_eq!(missing.kind(), crate::ErrorKind::NotFound);
        assert_eq!(
            f.open_file("pw").unwrap_err().kind(),
            crate::ErrorKind::Refused
        );
    }

    #[test]
    fn a_file_that_cannot_be_read_is_reported_and_the_rest_hashed() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("ok"), b"abc").unwrap();
        let f = Folder::open(d.path()).unwrap();
        // Listed, then gone before it was read (or unreadable): one entry says why.
        let out = f.hash_files(&["gone".to_string(), "ok".to_string()]);
        assert_eq!(out[0].md5, None);
        assert!(out[0].error.as_deref().unwrap().contains("no such file"));
        assert_eq!(
            out[1].md5.as_deref(),
            Some("900150983cd24fb0d6963f7d28e17f72")
        );
    }

    #[test]
    fn hashes_come_from_the_cache_until_the_file_changes() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a"), b"abc").unwrap();
        let f = Folder::open(d.path()).unwrap();
        let h = f.hash_one("a").unwrap();
        assert_eq!(h.md5.as_deref(), Some("900150983cd24fb0d6963f7d28e17f72"));
        // A planted wrong cache entry is trusted while the metadata matches ...
        let stat = fs::metadata(d.path().join("a")).unwrap();
        f.remember("a", &stat, [0; 16]);
        assert_eq!(
            f.hash_all()[0].md5.as_deref(),
            Some("00000000000000000000000000000000")
        );
        // ... and ignored once the file changes.
        fs::write(d.path().join("a"), b"abcd").unwrap();
        assert_eq!(
            f.hash_all()[0].md5.as_deref(),
            Some("e2fc714c4727ee9395f324cd2e7f331f")
        );
        // The cache survives a restart.
        drop(f);
        let f = Folder::open(d.path()).unwrap();
        let stat = fs::metadata(d.path().join("a")).unwrap();
        assert!(f.cached("a", &stat).is_some());
    }
}
