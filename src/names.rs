//! Safe names: every file name that comes from a user or a peer becomes a
//! clean relative path (`a/b/c.txt`) or a clear refusal.
//!
//! This is the first of two guards (the second, in [`crate::folder`], checks
//! where symlinks really lead on disk). Nothing here touches the disk.

use crate::{Result, bail};

/// The peer's private state folder inside the shared folder.
pub const STATE_DIR: &str = ".dropbox-shell";
/// Suffix of the temporary files a transfer writes before the final rename.
pub const PART_SUFFIX: &str = ".dbsh-part";

/// Turn a user's or a peer's name into a clean relative path with `/`
/// separators. Refuses absolute paths, `..` that leaves the folder, the state
/// folder, temporary transfer files and names with NUL bytes.
pub fn clean_name(raw: &str) -> Result<String> {
    if raw.is_empty() {
        bail!(kind: BadInput, "empty file name");
    }
    if raw.contains('\0') {
        bail!(kind: BadInput, "file name contains a NUL byte");
    }
    if raw.starts_with('/') || raw.starts_with('\\') || has_drive_prefix(raw) {
        bail!(kind: BadInput, "absolute paths are refused ({raw}); name a file relative to the shared folder");
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    bail!(kind: BadInput, "{raw} leaves the shared folder; names must stay inside it");
                }
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        bail!(kind: BadInput, "{raw} names the shared folder itself, not a file in it");
    }
    if is_private(&parts.join("/")) {
        bail!(kind: BadInput, "{raw} is private to the peer and never served");
    }
    Ok(parts.join("/"))
}

/// True for relative paths that are never listed, served or synced: the
/// state folder and temporary transfer files.
pub fn is_private(rel: &str) -> bool {
    rel == STATE_DIR
        || rel.starts_with(".dropbox-shell/")
        || rel
            .rsplit('/')
            .next()
            .is_some_and(|base| base.ends_with(PART_SUFFIX))
}

fn has_drive_prefix(raw: &str) -> bool {
    let b = raw.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_names_pass_and_normalise() {
        assert_eq!(clean_name("a.txt").unwrap(), "a.txt");
        assert_eq!(clean_name("./dir//b c.txt").unwrap(), "dir/b c.txt");
        assert_eq!(clean_name("dir/../x").unwrap(), "x");
        assert_eq!(clean_name("ünï/cödé.md").unwrap(), "ünï/cödé.md");
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "..",
            ".",
            "C:/x",
            "\\x",
            "a\0b",
            ".dropbox-shell/history.log",
            ".dropbox-shell",
            "d/.x.dbsh-part",
        ] {
            assert!(clean_name(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn refusals_say_why() {
        let e = clean_name("../x").unwrap_err();
        assert!(e.message().contains("leaves the shared folder"), "{e}");
        assert_eq!(e.kind(), crate::ErrorKind::BadInput);
        let e = clean_name("/etc/passwd").unwrap_err();
        assert!(e.message().contains("absolute"), "{e}");
    }
}
