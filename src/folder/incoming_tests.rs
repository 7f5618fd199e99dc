//! Tests of receiving a file: landing, modes, refusals, staging.

use super::*;

fn meta(name: &str, size: u64) -> FileMeta {
    FileMeta {
        name: name.into(),
        size,
        mtime_ns: 1_600_000_000_123_456_789,
        mode: 0o640,
    }
}

fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != ".dropbox-shell")
        .collect();
    v.sort();
    v
}

#[test]
fn verified_file_lands_with_mode_and_mtime() {
    let d = tempfile::tempdir().unwrap();
    let f = Folder::open(d.path()).unwrap();
    let mut inc = Incoming::create(&f, &meta("x/y.txt", 3)).unwrap();
    inc.write(b"abc").unwrap();
    inc.finish_verified(&f, "900150983cd24fb0d6963f7d28e17f72")
        .unwrap();
    let m = fs::metadata(d.path().join("x/y.txt")).unwrap();
    assert_eq!(
        m.permissions().mode() & 0o777,
        0o640 & !super::super::umask()
    );
    assert_eq!(super::super::mtime_ns(&m), 1_600_000_000_123_456_789);
    assert_eq!(names_in(&d.path().join("x")), vec!["y.txt"]);
}

#[test]
fn setuid_setgid_and_sticky_never_land_and_the_umask_applies() {
    let d = tempfile::tempdir().unwrap();
    let f = Folder::open(d.path()).unwrap();
    let md5 = "900150983cd24fb0d6963f7d28e17f72";
    let mode_of = |name: &str| {
        fs::metadata(d.path().join(name))
            .unwrap()
            .permissions()
            .mode()
    };
    let mut m = meta("suid", 3);
    m.mode = 0o7777;
    let mut inc = Incoming::create(&f, &m).unwrap();
    inc.write(b"abc").unwrap();
    inc.finish_verified(&f, md5).unwrap();
    assert_eq!(mode_of("suid") & 0o7777, 0o777 & !super::super::umask());
    // Sync mirrors the permission bits, still never the special ones.
    m.name = "mirrored".into();
    let mut inc = Incoming::create(&f, &m).unwrap();
    inc.keep_exact_mode();
    inc.write(b"abc").unwrap();
    inc.finish_verified(&f, md5).unwrap();
    assert_eq!(mode_of("mirrored") & 0o7777, 0o777);
}

#[test]
fn the_cache_knows_a_received_file_after_its_rename() {
    let d = tempfile::tempdir().unwrap();
    let f = Folder::open(d.path()).unwrap();
    let mut inc = Incoming::create(&f, &meta("a", 3)).unwrap();
    inc.write(b"abc").unwrap();
    inc.finish_verified(&f, "900150983cd24fb0d6963f7d28e17f72")
        .unwrap();
    let stat = fs::metadata(d.path().join("a")).unwrap();
    assert!(f.cached("a", &stat).is_some());
}

#[test]
fn mismatch_or_interruption_keeps_the_old_file() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("old"), b"precious").unwrap();
    let f = Folder::open(d.path()).unwrap();
    let mut inc = Incoming::create(&f, &meta("old", 3)).unwrap();
    inc.write(b"abc").unwrap();
    let e = inc
        .finish_verified(&f, "00000000000000000000000000000000")
        .unwrap_err();
    assert!(e.message().contains("MD5 mismatch"));
    let mut inc = Incoming::create(&f, &meta("old", 3)).unwrap();
    inc.write(b"ab").unwrap();
    drop(inc);
    let mut inc = Incoming::create(&f, &meta("old", 3)).unwrap();
    assert!(inc.write(b"abcd").is_err());
    drop(inc);
    assert_eq!(fs::read(d.path().join("old")).unwrap(), b"precious");
    assert_eq!(names_in(d.path()), vec!["old"]);
}

#[test]
fn staged_files_land_the_short_or_long_way_and_leave_no_part_behind() {
    let d = tempfile::tempdir().unwrap();
    let away = tempfile::tempdir().unwrap();
    let incoming = d.path().join(".dropbox-shell/incoming");
    fs::create_dir_all(&incoming).unwrap();
    // What a killed process left: swept when staging starts.
    fs::write(incoming.join(".0123456789abcdef.dbsh-part"), b"left").unwrap();
    fs::create_dir(d.path().join("here")).unwrap();
    fs::write(d.path().join("here/old"), b"precious").unwrap();
    std::os::unix::fs::symlink(away.path(), d.path().join("out")).unwrap();
    let f = Folder::open(d.path()).unwrap();
    f.stage_incoming().unwrap();
    assert!(
        names_in(&incoming).is_empty(),
        "the abandoned part was swept"
    );
    let md5 = "900150983cd24fb0d6963f7d28e17f72";
    let land = |name: &str| {
        let mut inc = Incoming::create(&f, &meta(name, 3))?;
        inc.write(b"abc")?;
        inc.finish_verified(&f, md5)
    };
    // The short way (its folder exists), the long way (made for it).
    land("here/new").unwrap();
    land("made/for/it").unwrap();
    assert_eq!(fs::read(d.path().join("here/new")).unwrap(), b"abc");
    assert_eq!(fs::read(d.path().join("made/for/it")).unwrap(), b"abc");
    // A symlink out is refused, a folder is not replaced.
    assert!(land("out/x").is_err());
    assert!(names_in(away.path()).is_empty());
    let e = land("here").unwrap_err();
    assert!(e.message().contains("is a directory here"), "{e}");
    // Unfinished or refused: nothing of it stays, the old file is whole.
    let mut inc = Incoming::create(&f, &meta("here/old", 3)).unwrap();
    inc.write(b"ab").unwrap();
    drop(inc);
    assert!(land("here/old").is_ok());
    let mut inc = Incoming::create(&f, &meta("here/old", 3)).unwrap();
    inc.write(b"xyz").unwrap();
    assert!(inc.finish_verified(&f, md5).is_err());
    assert_eq!(fs::read(d.path().join("here/old")).unwrap(), b"abc");
    assert!(names_in(&incoming).is_empty(), "no part left behind");
}

#[test]
fn a_file_for_an_empty_name_leaves_alone_what_took_it_meanwhile() {
    let d = tempfile::tempdir().unwrap();
    let f = Folder::open(d.path()).unwrap();
    let md5 = "900150983cd24fb0d6963f7d28e17f72";
    let receive = |name: &str| {
        let mut inc = Incoming::create(&f, &meta(name, 3)).unwrap();
        inc.only_where_nothing_is();
        inc.write(b"abc").unwrap();
        inc
    };
    let mine = |name: &str| fs::write(d.path().join(name), b"mine").unwrap();
    // Beside its target (a download folder), then staged (a synced one).
    let inc = receive("beside");
    mine("beside");
    let e = inc.finish_verified(&f, md5).unwrap_err();
    assert!(e.message().contains("appeared here"), "{e}");
    f.stage_incoming().unwrap();
    let inc = receive("staged");
    mine("staged");
    let e = inc.finish_verified(&f, md5).unwrap_err();
    assert!(e.message().contains("appeared here"), "{e}");
    receive("free").finish_verified(&f, md5).unwrap();
    assert_eq!(fs::read(d.path().join("beside")).unwrap(), b"mine");
    assert_eq!(fs::read(d.path().join("staged")).unwrap(), b"mine");
    assert_eq!(fs::read(d.path().join("free")).unwrap(), b"abc");
    assert_eq!(names_in(d.path()), ["beside", "free", "staged"]);
    let staging = d.path().join(".dropbox-shell/incoming");
    assert!(names_in(&staging).is_empty(), "no part left behind");
}

/// Files of one folder share its opened folder while its path still names
/// it; renamed, made anew or swapped for a symlink meanwhile, the next
/// file goes where the path leads now, as without the cache.
#[test]
fn a_cached_folder_serves_only_while_its_path_still_names_it() {
    let d = tempfile::tempdir().unwrap();
    let away = tempfile::tempdir().unwrap();
    fs::create_dir(d.path().join("a")).unwrap();
    let f = Folder::open(d.path()).unwrap();
    f.stage_incoming().unwrap();
    let md5 = "900150983cd24fb0d6963f7d28e17f72";
    let mut dirs = DirCache::default();
    let land = |name: &str, dirs: &mut DirCache| {
        let mut inc = Incoming::create_with(&f, &meta(name, 3), dirs)?;
        inc.write(b"abc")?;
        inc.finish_verified(&f, md5)
    };
    land("a/one", &mut dirs).unwrap();
    land("a/two", &mut dirs).unwrap();
    assert_eq!(names_in(&d.path().join("a")), vec!["one", "two"]);
    // Renamed: the next file goes to the path, not where the folder went.
    fs::rename(d.path().join("a"), d.path().join("b")).unwrap();
    land("a/three", &mut dirs).unwrap();
    assert_eq!(names_in(&d.path().join("a")), vec!["three"]);
    assert_eq!(names_in(&d.path().join("b")), vec!["one", "two"]);
    // Removed and made anew: the new folder.
    fs::remove_dir_all(d.path().join("a")).unwrap();
    fs::create_dir(d.path().join("a")).unwrap();
    land("a/four", &mut dirs).unwrap();
    assert_eq!(names_in(&d.path().join("a")), vec!["four"]);
    // Swapped for a symlink out of the folder: refused, nothing lands there.
    fs::rename(d.path().join("a"), d.path().join("c")).unwrap();
    std::os::unix::fs::symlink(away.path(), d.path().join("a")).unwrap();
    assert!(land("a/five", &mut dirs).is_err());
    assert!(names_in(away.path()).is_empty());
    assert_eq!(names_in(&d.path().join("c")), vec!["four"]);
    assert!(names_in(&d.path().join(".dropbox-shell/incoming")).is_empty());
}
