//! How much a store may still take: `--store-quota SIZE` (parsed here)
//! less what its deposits hold and what transfers under way reserved, and
//! never more than the disk has free (less a margin for everything else).

use std::path::Path;

use crate::{Error, Result};

/// Room left on the disk for everything that is not a deposit.
pub const DISK_MARGIN: u64 = 64 << 20;

/// `50G`, `512M`, `1.5T`, `100` (bytes), `10KiB`: binary units, K to T.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let bad = || {
        Error::of(
            crate::ErrorKind::BadInput,
            format!(
                "{text:?} is not a size; write bytes or a number with K, M, G or T (binary, e.g. 50G)"
            ),
        )
    };
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        Some('T' | 't') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    let n: f64 = digits.parse().map_err(|_| bad())?;
    let bytes = n * (1u64 << shift) as f64;
    if !(1.0..1.8e19).contains(&bytes) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// Bytes a non-root user may still write on the file system of `dir`.
pub fn disk_free(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed struct for the kernel to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// What a store may still take: the quota's rest, at most the disk's.
pub fn free(quota: Option<u64>, taken: u64, disk: Option<u64>) -> u64 {
    let by_disk = disk.map_or(u64::MAX, |d| d.saturating_sub(DISK_MARGIN));
    let by_quota = quota.map_or(u64::MAX, |q| q.saturating_sub(taken));
    by_disk.min(by_quota)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("50G").unwrap(), 50 << 30);
        assert_eq!(parse_size("1M").unwrap(), 1 << 20);
        assert_eq!(parse_size("10KiB").unwrap(), 10 << 10);
        assert_eq!(parse_size("2TB").unwrap(), 2 << 40);
        assert_eq!(parse_size("1.5K").unwrap(), 1536);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in [
            "",
            "G",
            "5X",
            "-1G",
            "0",
            "1e3",
            "abc",
            "1..2M",
            "99999999999T",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn free_is_the_smaller_of_quota_and_disk() {
        assert_eq!(free(Some(100), 30, None), 70);
        assert_eq!(free(Some(100), 130, None), 0);
        assert_eq!(free(None, 30, Some(DISK_MARGIN + 5)), 5);
        assert_eq!(free(Some(1 << 40), 0, Some(DISK_MARGIN + 5)), 5);
        assert_eq!(free(None, 0, None), u64::MAX);
    }
}
