//! A file being received: bytes go to a hidden temporary file beside the
//! target while their MD5 is computed; only when size and MD5 match is the
//! file given its mode (the sender's permission bits, never setuid, setgid
//! or sticky; and for a download or upload never more than our umask
//! allows) and mtime (and, in a synced folder, flushed to the
//! disk) and renamed over the real name. Dropping an unfinished `Incoming`
//! removes the temporary file, so an interrupted transfer never leaves a
//! half file under the real name nor harms the old one.

use std::ffi::CString;
use std::fs;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tempfile::NamedTempFile;

use super::{Folder, Md5Pipe, PERMISSION_BITS, mode_for_new_file};
use crate::names::{PART_SUFFIX, clean_name};
use crate::proto::{FileMeta, hex};
use crate::{Context, Result, bail};

pub struct Incoming {
    meta: FileMeta,
    target: Target,
    /// Written directly: every write is a whole chunk already.
    out: Out,
    md5: Md5Pipe,
    written: u64,
    /// Give the file the sender's permission bits as they are (sync mirrors
    /// modes), not masked by our umask (downloads and uploads).
    exact_mode: bool,
    /// Land only where no name is (see [`Incoming::only_where_nothing_is`]).
    only_new: bool,
}

/// The folder the last file of a run of many landed in, opened the short
/// way (see `beneath.rs`), kept for the next file of the same folder while
/// its path still names that folder (same device and inode, looked up
/// with one `fstatat`): a sync pull of many small files opens each folder
/// once, not once per file. A folder renamed, replaced or removed since is
/// opened afresh (or the file takes the long way), as without the cache.
#[derive(Default)]
pub struct DirCache(Option<(String, Arc<fs::File>, (u64, u64))>);

impl DirCache {
    fn open(&mut self, folder: &Folder, rel: &str) -> Option<Arc<fs::File>> {
        if let Some((at, dir, id)) = &self.0
            && at == rel
            && folder.dir_identity(rel) == Some(*id)
        {
            return Some(dir.clone());
        }
        self.0 = None;
        let dir = folder.dir_beneath(rel)?;
        let st = dir.metadata().ok()?;
        let dir = Arc::new(dir);
        self.0 = Some((rel.to_string(), dir.clone(), (st.dev(), st.ino())));
        Some(dir)
    }
}

impl Incoming {
    /// Prepare to receive `meta` into the folder (creating parent folders).
    pub fn create(folder: &Folder, meta: &FileMeta) -> Result<Incoming> {
        Self::create_with(folder, meta, &mut DirCache::default())
    }

    /// [`Incoming::create`], its target's folder taken from `dirs` when it
    /// holds it.
    pub fn create_with(folder: &Folder, meta: &FileMeta, dirs: &mut DirCache) -> Result<Incoming> {
        let name = clean_name(&meta.name)?;
        let (dir_name, base) = name.rsplit_once('/').unwrap_or(("", &name));
        // Staged (a synced folder): the target's folder the short way when
        // it exists with no symlink on the way.
        let short = folder
            .staging()
            .and_then(|_| Some((dirs.open(folder, dir_name)?, CString::new(base).ok()?)));
        let (target, dir) = match short {
            Some((dir, base)) => {
                let at = Target::At {
                    dir,
                    base,
                    path: folder.root().join(&name),
                };
                (at, None)
            }
            None => {
                let target = folder.target_path(&name)?;
                let dir = target.parent().unwrap_or(folder.root()).to_path_buf();
                fs::create_dir_all(&dir).context(format_args!("creating the folder for {name}"))?;
                // Check again now that the folders exist: none may be a symlink out.
                folder.target_path(&name)?;
                (Target::Path(target), Some(dir))
            }
        };
        let out = match (folder.staging(), &dir) {
            (Some(staging), _) => Out::Staged(
                staging
                    .create(meta.mode & PERMISSION_BITS)
                    .context(format_args!("creating a temporary file for {name}"))?,
            ),
            (None, dir) => Out::Beside(beside(
                dir.as_deref().unwrap_or(folder.root()),
                base,
                &name,
            )?),
        };
        if let (true, Some(dir)) = (folder.sweeps_on_write(), &dir) {
            super::parts::sweep_dir(dir);
        }
        Ok(Incoming {
            meta: FileMeta {
                name,
                ..meta.clone()
            },
            target,
            out,
            md5: Md5Pipe::new(meta.size),
            written: 0,
            exact_mode: false,
            only_new: false,
        })
    }

    /// What the target's path holds now (before the rename over it).
    pub fn target_now(&self) -> Option<super::Glance> {
        self.target.now()
    }

    /// Mirror the sender's permission bits instead of masking them with
    /// the umask (sync: both folders keep the same modes).
    pub fn keep_exact_mode(&mut self) {
        self.exact_mode = true;
    }

    /// Land only if nothing has the name by then (checked as it lands):
    /// what took the name meanwhile is left alone and the receive fails.
    pub fn only_where_nothing_is(&mut self) {
        self.only_new = true;
    }

    pub fn meta(&self) -> &FileMeta {
        &self.meta
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Append bytes; more bytes than announced is an error.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let mut buf = self.buffer(data.len());
        buf[..data.len()].copy_from_slice(data);
        self.write_owned(buf, data.len())
    }

    /// A buffer of at least `len` bytes to fill and pass to [`Incoming::write_owned`].
    pub fn buffer(&mut self, len: usize) -> Vec<u8> {
        self.md5.buffer(len)
    }

    /// Append the first `used` bytes of `buf` (which then goes to the
    /// hashing thread); more bytes than announced is an error.
    pub fn write_owned(&mut self, buf: Vec<u8>, used: usize) -> Result<()> {
        if self.written + used as u64 > self.meta.size {
            bail!(
                "the peer sent more than the {} bytes it announced for {}",
                self.meta.size,
                self.meta.name
            );
        }
        self.out
            .file_mut()
            .write_all(&buf[..used])
            .context(format_args!("writing {}", self.meta.name))?;
        self.written += used as u64;
        self.md5.consume(buf, used);
        Ok(())
    }

    /// Check the size, then the MD5 against what the sender computed; on a
    /// match give the file its mode and mtime and rename it into place.
    /// A mismatch leaves everything as it was and says so.
    pub fn finish(self, folder: &Folder, sender_md5: &str) -> Result<Finish> {
        let name = self.meta.name.clone();
        if self.written != self.meta.size {
            bail!(
                "the transfer of {name} ended after {} of {} bytes",
                self.written,
                self.meta.size
            );
        }
        let out = self.out;
        let md5 = self.md5.finish()?;
        let ours = hex(&md5);
        if !ours.eq_ignore_ascii_case(sender_md5) {
            return Ok(Finish::Mismatch { ours });
        }
        let file = out.file();
        let mtime = super::file_time(self.meta.mtime_ns);
        filetime::set_file_handle_times(file, None, Some(mtime))
            .context(format_args!("setting the mtime of {name}"))?;
        let mode = if self.exact_mode {
            self.meta.mode & PERMISSION_BITS
        } else {
            mode_for_new_file(self.meta.mode)
        };
        if out.mode() != Some(mode) {
            file.set_permissions(fs::Permissions::from_mode(mode))
                .context(format_args!("setting the permissions of {name}"))?;
        }
        let durable = folder.durable();
        if durable {
            file.sync_data()
                .context(format_args!("writing {name} to the disk"))?;
        }
        let file = match self.target.land(out, mode, mtime, durable, self.only_new) {
            Ok(file) => file,
            Err(e) if self.only_new && e.kind() == io::ErrorKind::AlreadyExists => {
                bail!("{name} appeared here while it was received; left alone")
            }
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                bail!("{name} is a directory here; it cannot be replaced by a file")
            }
            Err(e) => return Err(e).context(format_args!("renaming {name} into place")),
        };
        // After the rename: it changes the ctime the cache key holds.
        let stat = file.metadata().context(&name)?;
        folder.remember(&name, &stat, md5);
        Ok(Finish::Done(ours, super::OnDisk::of(&stat)))
    }

    /// [`Incoming::finish`] where a mismatch is an error.
    pub fn finish_verified(self, folder: &Folder, sender_md5: &str) -> Result<String> {
        let name = self.meta.name.clone();
        match self.finish(folder, sender_md5)? {
            Finish::Done(md5, _) => Ok(md5),
            Finish::Mismatch { ours } => Err(mismatch(&name, &ours, sender_md5)),
        }
    }
}

/// Where a received file goes.
enum Target {
    /// A path resolved the long way.
    Path(PathBuf),
    /// `base` in the folder `dir`, opened the short way (see `beneath.rs`);
    /// `path` is the same place, for a copy across file systems.
    At {
        dir: Arc<fs::File>,
        base: CString,
        path: PathBuf,
    },
}

impl Target {
    /// What its path holds now.
    fn now(&self) -> Option<super::Glance> {
        match self {
            Target::At { dir, base, .. } => super::Glance::at(dir, base),
            Target::Path(path) => fs::symlink_metadata(path)
                .ok()
                .map(|m| super::Glance::of(&m)),
        }
    }

    /// Rename the finished `out` (given `mode` and `mtime` already) over
    /// the target; a target on another file system than `out` gets a copy
    /// beside it first (a mount inside the shared folder).
    /// Only where nothing is (`only_new`), which the rename or link
    /// itself checks.
    fn land(
        &self,
        out: Out,
        mode: u32,
        mtime: filetime::FileTime,
        durable: bool,
        only_new: bool,
    ) -> io::Result<fs::File> {
        let across = |file: &mut fs::File, path: &Path| {
            land_across(file, path, mode, mtime, durable, only_new)
        };
        let (mut staged, dir, to, path) = match (out, self) {
            (Out::Beside(tmp), Target::Path(path) | Target::At { path, .. }) => {
                let landed = match only_new {
                    true => tmp.persist_noclobber(path),
                    false => tmp.persist(path),
                };
                return match landed {
                    Ok(file) => Ok(file),
                    Err(e) if e.error.raw_os_error() == Some(libc::EXDEV) => {
                        across(e.file.into_file().by_ref(), path)
                    }
                    Err(e) => Err(e.error),
                };
            }
            (Out::Staged(s), Target::Path(path)) => {
                let to = CString::new(path.as_os_str().as_bytes())?;
                (s, libc::AT_FDCWD, to, path)
            }
            (Out::Staged(s), Target::At { dir, base, path }) => {
                (s, dir.as_raw_fd(), base.clone(), path)
            }
        };
        match staged.land(dir, &to, !only_new) {
            Ok(()) => Ok(staged.into_file()),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => across(staged.file_mut(), path),
            Err(e) => Err(e),
        }
    }
}

/// A received file's bytes: a part file beside its target, or in the
/// staging folder.
enum Out {
    Beside(NamedTempFile),
    Staged(super::staged::Staged),
}

impl Out {
    fn file(&self) -> &fs::File {
        match self {
            Out::Beside(t) => t.as_file(),
            Out::Staged(s) => s.file(),
        }
    }

    fn file_mut(&mut self) -> &mut fs::File {
        match self {
            Out::Beside(t) => t.as_file_mut(),
            Out::Staged(s) => s.file_mut(),
        }
    }

    /// Its permission bits, when known without asking.
    fn mode(&self) -> Option<u32> {
        match self {
            Out::Beside(_) => None,
            Out::Staged(s) => s.mode(),
        }
    }
}

/// A new part file beside the target `base` in `dir`, held while we write
/// it so a sweep knows it is not abandoned (a sweep that got to it first
/// makes us take another).
fn beside(dir: &Path, base: &str, name: &str) -> Result<NamedTempFile> {
    for _ in 0..3 {
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{base}."))
            .suffix(PART_SUFFIX)
            .tempfile_in(dir)
            .context(format_args!("creating a temporary file for {name}"))?;
        if super::parts::hold(tmp.as_file(), tmp.path()) {
            return Ok(tmp);
        }
    }
    bail!("creating a temporary file for {name}: it kept being taken away")
}

/// Land the bytes of `staged` at `target` on another file system: a copy
/// beside `target`, given `mode` and `mtime`, renamed over it.
fn land_across(
    staged: &mut fs::File,
    target: &Path,
    mode: u32,
    mtime: filetime::FileTime,
    durable: bool,
    only_new: bool,
) -> io::Result<fs::File> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let mut copy = tempfile::Builder::new()
        .prefix(".")
        .suffix(PART_SUFFIX)
        .tempfile_in(dir)?;
    staged.seek(SeekFrom::Start(0))?;
    io::copy(staged, copy.as_file_mut())?;
    filetime::set_file_handle_times(copy.as_file(), None, Some(mtime))?;
    copy.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    if durable {
        copy.as_file().sync_data()?;
    }
    match only_new {
        true => copy.persist_noclobber(target).map_err(|e| e.error),
        false => copy.persist(target).map_err(|e| e.error),
    }
}

/// The error for bytes that did not match the sender's MD5.
pub fn mismatch(name: &str, ours: &str, sender_md5: &str) -> crate::Error {
    crate::Error::new(format!(
        "MD5 mismatch for {name}: received {ours}, the sender had {sender_md5}; the old file is untouched"
    ))
}

/// How a verified receive ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Finish {
    /// Renamed into place; the MD5, and the file as it landed.
    Done(String, super::OnDisk),
    /// The bytes did not match the sender's MD5; nothing was changed.
    Mismatch { ours: String },
}

#[cfg(test)]
#[path = "incoming_tests.rs"]
mod tests;
