//! Files being received in the staging folder (see
//! [`super::Folder::stage_incoming`]): made, locked and renamed into place
//! through the staging folder's descriptor, so a file costs no walk of
//! the path to it. One not renamed into place is removed when dropped.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use crate::names::PART_SUFFIX;

/// The staging folder, open.
pub struct StagingDir {
    fd: OwnedFd,
}

impl StagingDir {
    pub fn open(path: &Path) -> io::Result<StagingDir> {
        Ok(StagingDir {
            fd: super::stat::dir_handle(path)?,
        })
    }

    /// A new part file (owner-only, under a random name), locked as being
    /// written until it is closed.
    pub fn create(self: &Arc<Self>) -> io::Result<Staged> {
        for _ in 0..8 {
            let name = CString::new(format!(".{:016x}{PART_SUFFIX}", fastrand::u64(..)))?;
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
                name: PartName {
                    name,
                    dir: self.clone(),
                    landed: false,
                },
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

/// A part file in the staging folder.
pub struct Staged {
    file: File,
    name: PartName,
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
            // SAFETY: a valid directory descriptor and a NUL-terminated name.
            unsafe {
                libc::unlinkat(self.dir.fd.as_raw_fd(), self.name.as_ptr(), 0);
            }
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

    /// Rename it over `to` in the folder `dir` (`AT_FDCWD` with an absolute
    /// path); from then on it is no longer ours to remove.
    pub fn rename_to(&mut self, dir: RawFd, to: &CStr) -> io::Result<()> {
        let from = &self.name;
        // SAFETY: valid descriptors and NUL-terminated names, alive for the call.
        let r = unsafe {
            libc::renameat(
                from.dir.fd.as_raw_fd(),
                from.name.as_ptr(),
                dir,
                to.as_ptr(),
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        self.name.landed = true;
        Ok(())
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

    #[test]
    fn a_part_file_is_renamed_in_or_removed() {
        let d = tempfile::tempdir().unwrap();
        let staging = d.path().join("incoming");
        fs::create_dir(&staging).unwrap();
        let dir = Arc::new(StagingDir::open(&staging).unwrap());
        let parts = || fs::read_dir(&staging).unwrap().count();
        // Dropped unfinished: gone.
        let mut s = dir.create().unwrap();
        s.file_mut().write_all(b"half").unwrap();
        assert_eq!(parts(), 1);
        drop(s);
        assert_eq!(parts(), 0);
        // Renamed into place: the file stays there, open.
        let mut s = dir.create().unwrap();
        s.file_mut().write_all(b"whole").unwrap();
        let to = CString::new(d.path().join("f").into_os_string().into_encoded_bytes()).unwrap();
        s.rename_to(libc::AT_FDCWD, &to).unwrap();
        let f = s.into_file();
        assert_eq!(parts(), 0);
        assert_eq!(fs::read(d.path().join("f")).unwrap(), b"whole");
        assert!(f.metadata().unwrap().is_file());
    }
}
