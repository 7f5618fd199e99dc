//! What a file is and whether it is still the same: opening only regular
//! files (never blocking on a FIFO or touching a device), the version of a
//! file that a rewrite cannot hide (size, mtime, ctime, inode, as git
//! checks its index against "racy" edits), the permission bits that may
//! travel between peers, and a file's times and header as they travel.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::OnceLock;

use crate::proto::FileMeta;

/// The only mode bits that travel: read, write and execute for owner,
/// group and others. Never setuid, setgid or sticky.
pub const PERMISSION_BITS: u32 = 0o777;

/// Open `path` for reading only if it is a regular file, without ever
/// opening anything else: the path is first opened with `O_PATH` (which
/// opens no device and never blocks), its type is checked on that
/// descriptor, and only then is that very inode opened for reading through
/// `/proc/self/fd`, so nothing can be swapped in between. Where `/proc` is
/// missing, a non-blocking open checked before and after stands in.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)?;
    let meta = handle.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    // The very inode checked above: a regular file, whose open never
    // blocks, so no O_NONBLOCK (and no call to clear it) is needed.
    let through = format!("/proc/self/fd/{}", handle.as_raw_fd());
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&through)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return open_without_proc(path, &meta),
        Err(e) => return Err(e),
    };
    let opened = file.metadata()?;
    if !opened.is_file() || Version::of(&opened).ino != Version::of(&meta).ino {
        return Err(not_regular(&opened));
    }
    Ok(file)
}

/// Without `/proc`: a non-blocking open of the path, checked to be the
/// regular file `meta` describes, then made blocking again (some network
/// file systems pass the flag on to reads).
fn open_without_proc(path: &Path, meta: &Metadata) -> io::Result<File> {
    let file = open_nonblocking(path)?;
    let opened = file.metadata()?;
    if !opened.is_file() || Version::of(&opened).ino != Version::of(meta).ino {
        return Err(not_regular(&opened));
    }
    clear_nonblocking(&file);
    Ok(file)
}

/// Make a file opened with `O_NONBLOCK` (and nothing else in F_SETFL's
/// reach) blocking again: some network file systems pass the flag on to
/// reads.
pub fn clear_nonblocking(file: &File) {
    // SAFETY: fcntl on an open fd, with integer arguments.
    unsafe {
        libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0);
    }
}

fn open_nonblocking(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

fn not_regular(meta: &Metadata) -> io::Error {
    let what = if meta.is_dir() {
        "a directory; name a file"
    } else if meta.file_type().is_symlink() {
        "a symlink"
    } else {
        "not a regular file (a FIFO, socket or device is never opened)"
    };
    io::Error::other(format!("is {what}"))
}

/// What a rewrite of a file cannot hide: a file with the same version was
/// not changed in between (an in-place edit changes the ctime even when the
/// mtime is set back; a replacement by rename changes the inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
}

/// What a path holds now, as much as "did it change since" asks: a folder,
/// or a file's size and mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Glance {
    pub is_dir: bool,
    pub size: u64,
    pub mtime_ns: i64,
}

impl Glance {
    pub fn of(meta: &Metadata) -> Glance {
        Glance {
            is_dir: meta.is_dir(),
            size: meta.len(),
            mtime_ns: mtime_ns(meta),
        }
    }

    /// `base` in the folder `dir`, not followed if a symlink.
    pub fn at(dir: &File, base: &std::ffi::CStr) -> Option<Glance> {
        let st = stat_at(dir.as_raw_fd(), base)?;
        Some(Glance {
            is_dir: st.st_mode & libc::S_IFMT == libc::S_IFDIR,
            size: st.st_size as u64,
            mtime_ns: st
                .st_mtime
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec),
        })
    }
}

/// `fstatat` of `name` in the folder `dir`, not followed if a symlink.
pub fn stat_at(dir: std::os::fd::RawFd, name: &std::ffi::CStr) -> Option<libc::stat> {
    // SAFETY: zeroed plain data, filled in by the call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: an open directory descriptor, a NUL-terminated name and a
    // `stat` to fill, all alive for the call.
    let r = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    (r == 0).then_some(st)
}

/// A descriptor of the folder at `path` to resolve names from (`O_PATH`:
/// nothing is read through it).
pub fn dir_handle(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_PATH)
        .open(path)?;
    Ok(dir.into())
}

/// A file as it lies on the disk: its version and permission bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnDisk {
    pub version: Version,
    pub mode: u32,
}

impl OnDisk {
    pub fn of(meta: &Metadata) -> OnDisk {
        OnDisk {
            version: Version::of(meta),
            mode: meta.permissions().mode() & PERMISSION_BITS,
        }
    }
}

impl Version {
    pub fn of(meta: &Metadata) -> Version {
        Version {
            size: meta.len(),
            mtime_ns: mtime_ns(meta),
            ctime_ns: meta
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }

    /// The version of the file now at `path` (following symlinks).
    pub fn at(path: &Path) -> Option<Version> {
        std::fs::metadata(path).ok().map(|m| Version::of(&m))
    }
}

/// Modification time in nanoseconds since the epoch.
pub fn mtime_ns(meta: &Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// A time in nanoseconds since the epoch, as `filetime` wants it.
pub fn file_time(nanos: i64) -> filetime::FileTime {
    filetime::FileTime::from_unix_time(
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000) as u32,
    )
}

/// The transfer header for a file with this metadata.
pub fn file_meta(name: String, meta: &Metadata) -> FileMeta {
    FileMeta {
        name,
        size: meta.len(),
        mtime_ns: mtime_ns(meta),
        mode: meta.permissions().mode() & PERMISSION_BITS,
    }
}

/// This process's umask: the bits a new file never gets.
pub fn umask() -> u32 {
    static MASK: OnceLock<u32> = OnceLock::new();
    *MASK.get_or_init(|| {
        // Linux reports it without changing it; elsewhere read it by
        // setting it and putting it back.
        let from_proc = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            });
        from_proc.unwrap_or_else(|| {
            // SAFETY: umask only swaps an integer of the process.
            unsafe {
                let m = libc::umask(0o022);
                libc::umask(m);
                m as u32
            }
        }) & PERMISSION_BITS
    })
}

/// The mode a file received from a peer gets when it is new here: the
/// sender's permission bits, never more than the umask allows.
pub fn mode_for_new_file(sent: u32) -> u32 {
    sent & PERMISSION_BITS & !umask()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_opened_and_a_fifo_never_blocks() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = open_regular(&fifo).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        assert!(open_regular(d.path()).is_err());
        // A device is never opened (O_PATH first), just refused.
        let e = open_regular(Path::new("/dev/null")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        std::fs::write(d.path().join("f"), b"x").unwrap();
        let f = open_regular(&d.path().join("f")).unwrap();
        // SAFETY: F_GETFL on an open fd.
        let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
    }

    #[test]
    fn a_rewrite_that_keeps_size_and_mtime_changes_the_version() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.txt");
        std::fs::write(&p, b"hello\n").unwrap();
        let t = filetime::FileTime::from_unix_time(1_714_557_600, 0);
        filetime::set_file_mtime(&p, t).unwrap();
        let before = Version::at(&p).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&p, b"HELLO\n").unwrap();
        filetime::set_file_mtime(&p, t).unwrap();
        let after = Version::at(&p).unwrap();
        assert_eq!((before.size, before.mtime_ns), (after.size, after.mtime_ns));
        assert_ne!(before, after);
    }

    #[test]
    fn special_bits_never_travel_and_the_umask_applies_to_new_files() {
        assert_eq!(mode_for_new_file(0o6755) & 0o7000, 0);
        assert_eq!(mode_for_new_file(0o777), 0o777 & !umask());
        assert_eq!(mode_for_new_file(0o4777) & !0o777, 0);
    }
}
