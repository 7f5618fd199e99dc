//! Files being received in the staging folder (see
//! [`super::Folder::stage_incoming`]), handled through descriptors so a
//! file costs no walk of the path to it. Where the kernel can, a file is
//! made without a name (`O_TMPFILE`): nothing to lock, nothing to remove
//! if we die, and it lands with one `linkat` into its folder (a rename
//! would take the file system's lock for moves across folders); a name
//! already there is replaced by a rename from a link made in the staging
//! folder. Elsewhere a part file is made under a random name, locked, and
//! renamed into place; one not renamed is removed when dropped.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use crate::names::PART_SUFFIX;

/// How a file made without a name gets one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Linking {
    /// `linkat(fd, "", …, AT_EMPTY_PATH)` (needs CAP_DAC_READ_SEARCH).
    EmptyPath,
    /// `linkat` of `/proc/self/fd/N`, following it.
    ThroughProc,
}

/// The staging folder, open.
pub struct StagingDir {
    fd: OwnedFd,
    /// `None`: files here are made under a name.
    linking: Option<Linking>,
    /// Whether a file made here gets the mode asked less the umask (no
    /// default ACL of the folder decides instead).
    umask_rules: bool,
}

impl StagingDir {
    pub fn open(path: &Path) -> io::Result<StagingDir> {
        let mut dir = StagingDir {
            fd: super::stat::dir_handle(path)?,
            linking: None,
            umask_rules: false,
        };
        dir.linking = dir.probe_linking();
        dir.umask_rules = dir.unnamed(0o777).is_ok_and(|f| {
            use std::os::unix::fs::PermissionsExt;
            f.metadata()
                .is_ok_and(|m| m.permissions().mode() & 0o777 == 0o777 & !super::stat::umask())
        });
        Ok(dir)
    }

    /// Files are made without a name only if one can be linked in here:
    /// tried once, on a file that is removed again.
    fn probe_linking(&self) -> Option<Linking> {
        let file = self.unnamed(0o600).ok()?;
        [Linking::EmptyPath, Linking::ThroughProc]
            .into_iter()
            .find(|&how| {
                let name = part_name();
                let linked = link(&file, how, self.fd.as_raw_fd(), &name).is_ok();
                if linked {
                    unlink(self.fd.as_raw_fd(), &name);
                }
                linked
            })
    }

    /// A file without a name in the staging folder, made with `mode`.
    fn unnamed(&self, mode: u32) -> io::Result<File> {
        // SAFETY: a valid directory descriptor and a NUL-terminated name,
        // alive for the call.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c".".as_ptr(),
                libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor the kernel just gave us, owned from here on.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// A new file to receive into: without a name where it can be (see
    /// the module doc), made with the permission bits `mode` (nobody can
    /// reach it by name), else a part file (owner-only, under a random
    /// name) locked as being written until it is closed.
    pub fn create(self: &Arc<Self>, mode: u32) -> io::Result<Staged> {
        if self.linking.is_some() {
            let mode = mode & 0o777;
            return Ok(Staged {
                file: self.unnamed(mode)?,
                dir: self.clone(),
                name: None,
                mode: self.umask_rules.then_some(mode & !super::stat::umask()),
            });
        }
        for _ in 0..8 {
            let name = part_name();
            // SAFETY: a valid directory descriptor and a NUL-terminated
            // name, alive for the call.
            let fd = unsafe {
                libc::openat(
                    self.fd.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                    0o600 as libc::c_uint,
                )
            };
            if fd < 0 {
                match io::Error::last_os_error() {
                    e if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    e => return Err(e),
                }
            }
            // SAFETY: a descriptor the kernel just gave us, owned from here on.
            let file = unsafe { File::from_raw_fd(fd) };
            let staged = Staged {
                file,
                dir: self.clone(),
                name: Some(PartName {
                    name,
                    dir: self.clone(),
                    landed: false,
                }),
                mode: None,
            };
            // Nobody else sweeps this folder while we write: a failure to
            // lock would mean a stranger holds our brand-new file.
            if !super::parts::lock(&staged.file) {
                return Err(io::Error::other(
                    "a new part file was locked by someone else",
                ));
            }
            return Ok(staged);
        }
        Err(io::Error::other("no free name for a part file"))
    }
}

/// A random name for a part file.
fn part_name() -> CString {
    CString::new(format!(".{:016x}{PART_SUFFIX}", fastrand::u64(..))).expect("a name without NUL")
}

/// Give the open `file` the name `to` in the folder `dir`.
fn link(file: &File, how: Linking, dir: RawFd, to: &CStr) -> io::Result<()> {
    let r = match how {
        // SAFETY: valid descriptors and NUL-terminated names, alive for the call.
        Linking::EmptyPath => unsafe {
            libc::linkat(
                file.as_raw_fd(),
                c"".as_ptr(),
                dir,
                to.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        },
        Linking::ThroughProc => {
            let proc = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
            // SAFETY: as above.
            unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    proc.as_ptr(),
                    dir,
                    to.as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                )
            }
        }
    };
    match r {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Put the part file `from` at `to` only if no name is there, the best
/// way the file system allows: a rename that refuses a taken name, else a
/// second name (the first goes when the part is dropped: returns false),
/// else (no hard links: vfat, some FUSE) a look first, then a rename.
fn land_named_new(staging: RawFd, from: &CStr, dir: RawFd, to: &CStr) -> io::Result<bool> {
    let unsupported = |e: &io::Error| {
        matches!(
            e.raw_os_error(),
            Some(libc::EINVAL | libc::ENOSYS | libc::EPERM | libc::EOPNOTSUPP)
        )
    };
    // SAFETY: valid descriptors and NUL-terminated names, alive for the call.
    let r = unsafe {
        libc::renameat2(
            staging,
            from.as_ptr(),
            dir,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    match (r == 0).then_some(()).ok_or_else(io::Error::last_os_error) {
        Ok(()) => return Ok(true),
        Err(e) if !unsupported(&e) => return Err(e),
        Err(_) => {}
    }
    match hard_link(staging, from, dir, to) {
        Ok(()) => return Ok(false),
        Err(e) if !unsupported(&e) => return Err(e),
        Err(_) => {}
    }
    if super::stat::stat_at(dir, to).is_some() {
        return Err(io::ErrorKind::AlreadyExists.into());
    }
    rename(staging, from, dir, to).map(|()| true)
}

/// Remove `name` from the folder `dir`, if it is there.
fn unlink(dir: RawFd, name: &CStr) {
    // SAFETY: a valid directory descriptor and a NUL-terminated name.
    unsafe { libc::unlinkat(dir, name.as_ptr(), 0) };
}

/// `linkat` from `from` in `from_dir` to `to` in `to_dir`.
fn hard_link(from_dir: RawFd, from: &CStr, to_dir: RawFd, to: &CStr) -> io::Result<()> {
    // SAFETY: valid descriptors and NUL-terminated names, alive for the call.
    match unsafe { libc::linkat(from_dir, from.as_ptr(), to_dir, to.as_ptr(), 0) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// `renameat` from `from` in `from_dir` to `to` in `to_dir`.
fn rename(from_dir: RawFd, from: &CStr, to_dir: RawFd, to: &CStr) -> io::Result<()> {
    // SAFETY: valid descriptors and NUL-terminated names, alive for the call.
    match unsafe { libc::renameat(from_dir, from.as_ptr(), to_dir, to.as_ptr()) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// A file being received in the staging folder.
pub struct Staged {
    file: File,
    dir: Arc<StagingDir>,
    /// Its name there, if it was made with one.
    name: Option<PartName>,
    /// Its permission bits, when known without asking.
    mode: Option<u32>,
}

/// The name of a part file, removed when dropped unless it was renamed
/// into place.
struct PartName {
    name: CString,
    dir: Arc<StagingDir>,
    landed: bool,
}

impl Drop for PartName {
    fn drop(&mut self) {
        if !self.landed {
            unlink(self.dir.fd.as_raw_fd(), &self.name);
        }
    }
}

impl Staged {
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    /// Its permission bits, when known without asking the kernel.
    pub fn mode(&self) -> Option<u32> {
        self.mode
    }

    /// Put it at `to` in the folder `dir` (`AT_FDCWD` with an absolute
    /// path), replacing what is there if `replace`, else failing with
    /// `AlreadyExists` when the name is taken (checked by the kernel as it
    /// lands, not before). From then on it is no longer ours to remove.
    pub fn land(&mut self, dir: RawFd, to: &CStr, replace: bool) -> io::Result<()> {
        let staging = self.dir.fd.as_raw_fd();
        if let Some(from) = &mut self.name {
            from.landed = match replace {
                true => rename(staging, &from.name, dir, to).map(|()| true)?,
                false => land_named_new(staging, &from.name, dir, to)?,
            };
            return Ok(());
        }
        let how = self.dir.linking.expect("an unnamed file is linked");
        match link(&self.file, how, dir, to) {
            Err(e) if replace && e.kind() == io::ErrorKind::AlreadyExists => {}
            done => return done,
        }
        // Taken: a name here first, then a rename over it.
        for _ in 0..8 {
            let name = part_name();
            match link(&self.file, how, staging, &name) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
                Ok(()) => {}
            }
            let renamed = rename(staging, &name, dir, to);
            if renamed.is_err() {
                unlink(staging, &name);
            }
            return renamed;
        }
        Err(io::Error::other("no free name for a part file"))
    }

    /// The open file (its name is removed unless it was renamed into place).
    pub fn into_file(self) -> File {
        self.file
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write;

    use super::*;

    fn path_of(p: &Path) -> CString {
        CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
    }

    /// Make, drop, land new and land over an old file in `dir`;
    /// `named`: whether files show in the staging folder while written.
    fn lands_and_leaves_nothing(d: &Path, dir: StagingDir, named: bool) {
        let staging = d.join("incoming");
        let dir = Arc::new(dir);
        let parts = || fs::read_dir(&staging).unwrap().count();
        // Dropped unfinished: gone.
        let mut s = dir.create(0o640).unwrap();
        s.file_mut().write_all(b"half").unwrap();
        assert_eq!(parts(), usize::from(named));
        drop(s);
        assert_eq!(parts(), 0);
        // Landed: the file stays there, open.
        let mut s = dir.create(0o640).unwrap();
        s.file_mut().write_all(b"whole").unwrap();
        s.land(libc::AT_FDCWD, &path_of(&d.join("f")), false)
            .unwrap();
        let f = s.into_file();
        assert_eq!(parts(), 0);
        assert_eq!(fs::read(d.join("f")).unwrap(), b"whole");
        assert!(f.metadata().unwrap().is_file());
        // Over an old file: refused unless asked, then replaced whole.
        let mut s = dir.create(0o640).unwrap();
        s.file_mut().write_all(b"again").unwrap();
        let to = path_of(&d.join("f"));
        let e = s.land(libc::AT_FDCWD, &to, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(d.join("f")).unwrap(), b"whole");
        s.land(libc::AT_FDCWD, &to, true).unwrap();
        assert_eq!(fs::read(d.join("f")).unwrap(), b"again");
        // Over a folder: refused, the folder stays.
        fs::create_dir(d.join("sub")).unwrap();
        let mut s = dir.create(0o640).unwrap();
        let e = s
            .land(libc::AT_FDCWD, &path_of(&d.join("sub")), true)
            .unwrap_err();
        assert!(
            matches!(e.raw_os_error(), Some(libc::EISDIR | libc::EEXIST)),
            "{e}"
        );
        assert!(d.join("sub").is_dir());
        drop(s);
        assert_eq!(parts(), 0);
    }

    #[test]
    fn a_staged_file_lands_whole_or_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let staging = d.path().join("incoming");
        fs::create_dir(&staging).unwrap();
        let dir = StagingDir::open(&staging).unwrap();
        // tmpfs and ext4 make files without a name (root or not, one of the
        // two ways links them); some file systems (older overlayfs) do not.
        if dir.linking.is_none() {
            eprintln!("skipped: no O_TMPFILE files in {}", staging.display());
            return;
        }
        lands_and_leaves_nothing(d.path(), dir, false);
        // Linked through /proc (no CAP_DAC_READ_SEARCH), the same.
        let other = tempfile::tempdir().unwrap();
        fs::create_dir(other.path().join("incoming")).unwrap();
        let mut dir = StagingDir::open(&other.path().join("incoming")).unwrap();
        dir.linking = Some(Linking::ThroughProc);
        lands_and_leaves_nothing(other.path(), dir, false);
    }

    #[test]
    fn a_part_file_is_renamed_in_or_removed() {
        let d = tempfile::tempdir().unwrap();
        let staging = d.path().join("incoming");
        fs::create_dir(&staging).unwrap();
        let mut dir = StagingDir::open(&staging).unwrap();
        dir.linking = None;
        lands_and_leaves_nothing(d.path(), dir, true);
    }
}
