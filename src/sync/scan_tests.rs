use std::fs;
use std::sync::atomic::Ordering;

use super::*;

struct Fixture {
    dir: tempfile::TempDir,
    folder: Folder,
    db: SyncDb,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let folder = Folder::open(dir.path()).unwrap();
    let db = SyncDb::open(folder.state_dir()).unwrap();
    Fixture { dir, folder, db }
}

impl Fixture {
    fn write(&self, name: &str, text: &str) {
        let p = self.dir.path().join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    /// (name, deleted) of every entry after `since`.
    fn changed_since(&self, since: u64) -> Vec<(String, bool)> {
        self.db
            .local_since("p", since, 1000)
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.deleted))
            .collect()
    }

    fn paths(&self, names: &[&str]) -> usize {
        let set: BTreeSet<String> = names.iter().map(|s| s.to_string()).collect();
        paths(&self.folder, &self.db, &set).unwrap()
    }
}

fn names(list: &[(&str, bool)]) -> Vec<(String, bool)> {
    list.iter().map(|(n, d)| (n.to_string(), *d)).collect()
}

#[test]
fn a_whole_scan_records_what_changed_and_tombstones_what_went() {
    let f = fixture();
    f.write("a", "1");
    f.write("d/b", "2");
    assert_eq!(full(&f.folder, &f.db).unwrap(), 3);
    assert!(f.db.local_scanned().unwrap());
    // Nothing changed: nothing recorded, no file read.
    assert_eq!(full(&f.folder, &f.db).unwrap(), 0);
    let seq = f.db.local_seq().unwrap();
    f.write("a", "changed");
    fs::remove_file(f.dir.path().join("d/b")).unwrap();
    assert_eq!(full(&f.folder, &f.db).unwrap(), 2);
    let mut got = f.changed_since(seq);
    got.sort();
    assert_eq!(got, names(&[("a", false), ("d/b", true)]));
    assert_eq!(f.db.walks.load(Ordering::Relaxed), 3);
}

#[test]
fn a_scan_of_named_paths_looks_at_them_alone_and_walks_no_folder_it_knows() {
    let f = fixture();
    f.write("a", "1");
    f.write("b", "1");
    full(&f.folder, &f.db).unwrap();
    let seq = f.db.local_seq().unwrap();
    f.write("a", "new a");
    f.write("b", "new b");
    // Only "a" was named: "b" waits for its own event or the rescan.
    assert_eq!(f.paths(&["a"]), 1);
    assert_eq!(f.changed_since(seq), names(&[("a", false)]));
    assert_eq!(f.db.walks.load(Ordering::Relaxed), 1);
}

#[test]
fn a_folder_new_to_the_index_is_walked_and_one_that_went_takes_its_contents() {
    let f = fixture();
    full(&f.folder, &f.db).unwrap();
    // A folder moved in whole: one event names only the folder.
    f.write("new/x", "1");
    f.write("new/deep/y", "2");
    assert_eq!(f.paths(&["new"]), 4);
    let seq = f.db.local_seq().unwrap();
    fs::remove_dir_all(f.dir.path().join("new")).unwrap();
    assert_eq!(f.paths(&["new"]), 4);
    let mut got = f.changed_since(seq);
    got.sort();
    assert_eq!(
        got,
        names(&[
            ("new", true),
            ("new/deep", true),
            ("new/deep/y", true),
            ("new/x", true)
        ])
    );
}

#[test]
fn ignored_paths_stay_as_they_were_and_private_ones_never_appear() {
    let f = fixture();
    f.write("keep.log", "1");
    f.write("b", "1");
    full(&f.folder, &f.db).unwrap();
    let seq = f.db.local_seq().unwrap();
    f.write(".dropboxignore", "*.log\n");
    fs::remove_file(f.dir.path().join("keep.log")).unwrap();
    f.write("new.log", "x");
    full(&f.folder, &f.db).unwrap();
    // The ignored file is marked ignored, not tombstoned; the new ignored
    // one is not recorded.
    let mut got: Vec<(String, bool, bool)> =
        f.db.local_since("p", seq, 100)
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.deleted, e.ignored))
            .collect();
    got.sort();
    let row = |n: &str, ignored| (n.to_string(), false, ignored);
    assert_eq!(got, [row(".dropboxignore", false), row("keep.log", true)]);
    assert_eq!(f.paths(&[".dropbox-shell/sync.db", "new.log"]), 0);
    // Patterns gone: the ignored files come back as present.
    let seq = f.db.local_seq().unwrap();
    fs::remove_file(f.dir.path().join(".dropboxignore")).unwrap();
    f.write("keep.log", "back");
    full(&f.folder, &f.db).unwrap();
    let mut back = f.changed_since(seq);
    back.sort();
    assert_eq!(
        back,
        names(&[
            (".dropboxignore", true),
            ("keep.log", false),
            ("new.log", false)
        ])
    );
}

#[test]
fn a_file_that_cannot_be_read_stays_as_the_index_had_it() {
    let f = fixture();
    f.write("locked", "1");
    full(&f.folder, &f.db).unwrap();
    let before = f.db.local_seen("locked").unwrap();
    let p = f.dir.path().join("locked");
    fs::write(&p, "changed").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::read(&p).is_ok() {
        eprintln!("skipped: running as root, every file can be read");
        return;
    }
    full(&f.folder, &f.db).unwrap();
    assert_eq!(f.db.local_seen("locked").unwrap(), before);
}

#[test]
fn a_whole_scan_finds_what_went_in_every_folder_and_inside_folders_that_went() {
    let f = fixture();
    for name in ["top", "a/x", "a/b/y", "a/b/c/z", "d/w", "e/v"] {
        f.write(name, "1");
    }
    full(&f.folder, &f.db).unwrap();
    let seq = f.db.local_seq().unwrap();
    fs::remove_file(f.dir.path().join("top")).unwrap();
    fs::remove_dir_all(f.dir.path().join("a/b")).unwrap();
    // A folder replaced by a file of the same name.
    fs::remove_dir_all(f.dir.path().join("d")).unwrap();
    f.write("d", "now a file");
    f.write("e/new", "2");
    full(&f.folder, &f.db).unwrap();
    let mut got = f.changed_since(seq);
    got.sort();
    assert_eq!(
        got,
        names(&[
            ("a/b", true),
            ("a/b/c", true),
            ("a/b/c/z", true),
            ("a/b/y", true),
            ("d", false),
            ("d/w", true),
            ("e/new", false),
            ("top", true),
        ])
    );
}
