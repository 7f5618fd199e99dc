//! The trash: what sync deletes is moved to `.dropbox-shell/trash/<day>/`,
//! one folder per day (local date) whatever the number of rounds, keeping
//! the file's path inside it. A name already taken there that day (the
//! same path deleted twice, or a file where a folder is needed) goes to a
//! fresh subfolder `<day>/<time>-<n>/` instead, so nothing in the trash is
//! ever overwritten.

use std::fs;
use std::path::{Path, PathBuf};

use crate::{Context, Result, bail};

/// Where `path`, deleted at `now`, goes in the trash folder `trash`.
fn place(trash: &Path, path: &str, now: chrono::DateTime<chrono::Local>) -> Result<PathBuf> {
    let day = trash.join(now.format("%Y-%m-%d").to_string());
    let time = now.format("%H%M%S").to_string();
    let candidates =
        std::iter::once(day.clone()).chain((1..=100).map(|n| day.join(format!("{time}-{n}"))));
    for base in candidates {
        let dest = base.join(path);
        if is_free(trash, &dest) {
            return Ok(dest);
        }
    }
    bail!("no free name for {path} in the trash")
}

/// True when nothing is at `dest` and every folder above it (up to the
/// trash) is a folder or absent.
fn is_free(trash: &Path, dest: &Path) -> bool {
    if fs::symlink_metadata(dest).is_ok() {
        return false;
    }
    dest.ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(trash) && *a != trash)
        .all(|a| fs::symlink_metadata(a).map_or(true, |m| m.is_dir()))
}

/// Move `from` (the file `path` of the shared folder) into the trash
/// folder `trash`.
pub fn move_to_trash(
    trash: &Path,
    from: &Path,
    path: &str,
    now: chrono::DateTime<chrono::Local>,
) -> Result<()> {
    let dest = place(trash, path, now)?;
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).context("creating the trash folder")?;
    }
    fs::rename(from, &dest).context(format_args!("moving {path} to the trash"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> chrono::DateTime<chrono::Local> {
        chrono::Local
            .with_ymd_and_hms(2026, 5, 1, h, m, s)
            .single()
            .unwrap()
    }

    #[test]
    fn one_folder_a_day_and_nothing_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let trash = d.path().join("trash");
        let src = d.path().join("src");
        fs::create_dir_all(&src).unwrap();
        let put = |name: &str, data: &str, when| {
            let f = src.join(name.replace('/', "_"));
            fs::write(&f, data).unwrap();
            move_to_trash(&trash, &f, name, when).unwrap();
        };
        // Many deletions at many times of one day: one folder.
        for i in 0..50 {
            put(&format!("f{i}.txt"), "x", at(10, i / 60, i % 60));
        }
        put("d/a.txt", "first", at(11, 0, 0));
        // The same path again, and a folder's name taken by a file.
        put("d/a.txt", "second", at(11, 0, 1));
        put("f1.txt/x", "under", at(11, 0, 2));
        let days: Vec<_> = fs::read_dir(&trash).unwrap().flatten().collect();
        assert_eq!(days.len(), 1);
        let day = trash.join("2026-05-01");
        assert_eq!(fs::read_to_string(day.join("d/a.txt")).unwrap(), "first");
        assert_eq!(
            fs::read_to_string(day.join("110001-1/d/a.txt")).unwrap(),
            "second"
        );
        assert_eq!(
            fs::read_to_string(day.join("110002-1/f1.txt/x")).unwrap(),
            "under"
        );
        assert_eq!(fs::read_to_string(day.join("f1.txt")).unwrap(), "x");
        // Another day, another folder.
        let next = chrono::Local
            .with_ymd_and_hms(2026, 5, 2, 9, 0, 0)
            .single()
            .unwrap();
        put("d/a.txt", "third", next);
        assert_eq!(
            fs::read_to_string(trash.join("2026-05-02/d/a.txt")).unwrap(),
            "third"
        );
    }
}
