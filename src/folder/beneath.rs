//! The short way to a name inside the shared folder: one `openat2` from a
//! descriptor of the root with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`,
//! which the kernel refuses if the walk would leave the root or meet a
//! symlink anywhere. Per file served or received that replaces an `lstat`
//! per component and a path walk per call. Whatever this way cannot
//! settle (a kernel without `openat2`, a symlink on the way, a missing
//! folder, any error) answers `None`, and the caller takes the long way,
//! which checks symlinks by resolving them and says what went wrong.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::names::STATE_DIR;

/// A descriptor of the shared folder's root to resolve names from.
pub struct Beneath {
    root: OwnedFd,
    /// Cleared when the kernel says it has no `openat2`.
    works: AtomicBool,
}

impl Beneath {
    pub fn new(root: &Path) -> Option<Beneath> {
        Some(Beneath {
            root: super::stat::dir_handle(root).ok()?,
            works: AtomicBool::new(true),
        })
    }

    /// Open `name` (already cleaned: relative, no `.` or `..`) with
    /// `flags`; `None` when this way cannot tell (see the module doc). The
    /// state folder is never reached this way.
    pub fn open(&self, name: &str, flags: libc::c_int) -> Option<File> {
        if !self.works.load(Ordering::Relaxed) || name.split('/').next() == Some(STATE_DIR) {
            return None;
        }
        let path = CString::new(name).ok()?;
        // SAFETY: plain data, all zero is valid (and what unset fields must be).
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (flags | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;
        // SAFETY: a valid directory descriptor, a NUL-terminated path and
        // an `open_how` of the size given, all alive for the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.root.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            let err = std::io::Error::last_os_error().raw_os_error();
            if matches!(err, Some(libc::ENOSYS) | Some(libc::EPERM)) {
                // No openat2 here (an old kernel, a seccomp filter).
                self.works.store(false, Ordering::Relaxed);
            }
            return None;
        }
        // SAFETY: a descriptor the kernel just gave us, owned from here on.
        Some(unsafe { File::from_raw_fd(fd as libc::c_int) })
    }

    /// The file type bits of `name` itself (not followed if a symlink), by
    /// `fstatat` from the root; a look, not a check (the open decides).
    pub fn file_type(&self, name: &str) -> Option<libc::mode_t> {
        Some(self.stat(name)?.st_mode & libc::S_IFMT)
    }

    /// `name` itself (not followed if a symlink) by `fstatat` from the root.
    pub fn stat(&self, name: &str) -> Option<libc::stat> {
        if !self.works.load(Ordering::Relaxed) {
            return None;
        }
        let path = CString::new(name).ok()?;
        super::stat::stat_at(self.root.as_raw_fd(), &path)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn opens_plain_names_and_leaves_symlinks_and_escapes_to_the_long_way() {
        let d = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("sub/f"), "x").unwrap();
        fs::write(out.path().join("secret"), "s").unwrap();
        fs::create_dir(root.join(STATE_DIR)).unwrap();
        fs::write(root.join(STATE_DIR).join("peer-id"), "id").unwrap();
        symlink(out.path(), root.join("away")).unwrap();
        symlink("sub", root.join("near")).unwrap();
        symlink("f", root.join("sub/alias")).unwrap();
        let b = Beneath::new(root).unwrap();
        let read = |f: File| std::io::read_to_string(f).unwrap();
        if b.open("sub/f", libc::O_RDONLY).is_none() {
            eprintln!("skipped: this kernel has no openat2");
            return;
        }
        assert_eq!(read(b.open("sub/f", libc::O_RDONLY).unwrap()), "x");
        // A symlink anywhere, even one that stays inside, is not followed.
        assert!(b.open("away/secret", libc::O_RDONLY).is_none());
        assert!(b.open("near/f", libc::O_RDONLY).is_none());
        assert!(b.open("sub/alias", libc::O_RDONLY).is_none());
        assert!(b.open("../x", libc::O_RDONLY).is_none());
        assert!(b.open("/etc/passwd", libc::O_RDONLY).is_none());
        assert!(
            b.open(&format!("{STATE_DIR}/peer-id"), libc::O_RDONLY)
                .is_none()
        );
        assert!(b.open("missing", libc::O_RDONLY).is_none());
        assert_eq!(b.file_type("sub/f"), Some(libc::S_IFREG));
        assert_eq!(b.file_type("sub"), Some(libc::S_IFDIR));
        assert_eq!(b.file_type("sub/alias"), Some(libc::S_IFLNK));
        assert_eq!(b.file_type("missing"), None);
    }
}
