//! Sync at scale between real peers on loopback: a change the watcher
//! names costs no walk of the folder, a change it cannot see is found by
//! the rescan, our index (its sequence numbers and id) outlives a restart
//! so a partner is sent only what changed, a partner that starts over
//! with a fresh database is sent the whole index and converges, and two
//! peers converge after a seeded storm of changes on both sides with
//! kills in between.

mod util;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use util::*;

fn converged(a: &Path, b: &Path) -> bool {
    tree(a) == tree(b)
}

fn assert_converges(a: &Path, b: &Path) {
    let ok = wait_for(EVENTUALLY, || converged(a, b));
    assert!(ok, "did not converge:\n{:?}\n{:?}", tree(a), tree(b));
}

/// Whole walks of the folder by the syncing peer in `dir` since it started.
fn walks(dir: &Path) -> u64 {
    let s = sync_status(dir);
    s["walks"].as_u64().unwrap_or_else(|| panic!("no walks in {s}"))
}

/// Whether the syncing peer in `dir` finished a round of its own with a
/// partner (so the scan it was asked for at its start is done).
fn did_a_round(dir: &Path) -> bool {
    let s = sync_status(dir);
    s["partners"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| !p["last_round"].is_null()))
}

/// The sync database of a folder, opened beside the peer that may be
/// using it (never created here).
fn db(dir: &Path) -> rusqlite::Connection {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        dir.join(".dropbox-shell/sync.db"),
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap();
    conn.busy_timeout(Duration::from_secs(20)).unwrap();
    conn
}

fn query_i64(dir: &Path, sql: &str) -> i64 {
    db(dir)
        .query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn index_id(dir: &Path) -> String {
    db(dir)
        .query_row("SELECT value FROM meta WHERE key = 'index_id'", [], |r| {
            r.get(0)
        })
        .unwrap()
}

/// Files with contents, without the folders and modes.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    tree(dir)
        .into_iter()
        .filter_map(|(n, d, _)| Some((n, d?)))
        .collect()
}

#[test]
fn a_change_the_watcher_names_is_scanned_without_a_walk() {
    let a = syncing(&[]);
    for i in 0..20 {
        a.write(&format!("d{}/f{i}.txt", i % 3), format!("file {i}").as_bytes());
    }
    let b = syncing(&["--peer", &a.addr]);
    assert_converges(a.dir.path(), b.dir.path());
    // Once a has run a round of its own, its first (whole) scan is done.
    assert!(wait_for(EVENTUALLY, || did_a_round(a.dir.path())));
    let before = walks(a.dir.path());
    assert!(before >= 1, "the first scan walks the folder");

    a.write("new/deep/n.txt", b"new");
    a.write("d0/f0.txt", b"file 0, edited");
    fs::remove_file(a.path("d1/f1.txt")).unwrap();
    fs::rename(a.path("d2/f2.txt"), a.path("d0/renamed.txt")).unwrap();
    let arrived = wait_for(EVENTUALLY, || {
        fs::read(b.path("new/deep/n.txt")).is_ok_and(|d| d == b"new")
            && fs::read(b.path("d0/f0.txt")).is_ok_and(|d| d == b"file 0, edited")
            && !b.path("d1/f1.txt").exists()
            && !b.path("d2/f2.txt").exists()
            && fs::read(b.path("d0/renamed.txt")).is_ok_and(|d| d == b"file 2")
    });
    assert!(arrived, "b has {:?}", contents(b.dir.path()));
    assert_converges(a.dir.path(), b.dir.path());
    assert_eq!(
        walks(a.dir.path()),
        before,
        "the changes the watcher named were scanned without a walk"
    );
}

#[test]
fn a_change_the_watcher_cannot_see_is_found_by_the_rescan() {
    let a = syncing(&["--rescan", "2"]);
    a.write("f.txt", b"version one");
    let b = syncing(&["--peer", &a.addr]);
    assert_converges(a.dir.path(), b.dir.path());
    // A write through a hard link outside the folder: the folder's watcher
    // is not told (its events follow the name the file was opened by).
    let outside = tempfile::tempdir().unwrap();
    let link = outside.path().join("f-link");
    fs::hard_link(a.path("f.txt"), &link).unwrap();
    let before = walks(a.dir.path());

    // Same size: only the mtime and ctime tell.
    let mut f = fs::OpenOptions::new().write(true).open(&link).unwrap();
    f.write_all(b"version two").unwrap();
    drop(f);
    let arrived = wait_for(EVENTUALLY, || {
        fs::read(b.path("f.txt")).is_ok_and(|d| d == b"version two")
    });
    assert!(arrived, "b has {:?}", contents(b.dir.path()));
    assert!(walks(a.dir.path()) > before, "a rescan found it");

    // Another size.
    fs::write(&link, b"version three, longer").unwrap();
    let arrived = wait_for(EVENTUALLY, || {
        fs::read(b.path("f.txt")).is_ok_and(|d| d == b"version three, longer")
    });
    assert!(arrived, "b has {:?}", contents(b.dir.path()));
    assert_converges(a.dir.path(), b.dir.path());
}

/// Lines of a folder's history log from line `from` on.
fn log_since(dir: &Path, from: usize) -> Vec<String> {
    fs::read_to_string(dir.join(".dropbox-shell/history.log"))
        .unwrap_or_default()
        .lines()
        .skip(from)
        .map(str::to_string)
        .collect()
}

fn trash_is_empty(dir: &Path) -> bool {
    let t = dir.join(".dropbox-shell/trash");
    !walkdir::WalkDir::new(t)
        .into_iter()
        .flatten()
        .any(|e| e.file_type().is_file())
}

#[test]
fn a_partner_with_a_fresh_database_gets_the_whole_index_and_converges() {
    let a = syncing(&[]);
    for i in 0..30 {
        a.write(&format!("s{}/f{i}.txt", i % 4), format!("a {i}").as_bytes());
    }
    let b = syncing(&["--peer", &a.addr]);
    b.write("from-b.txt", b"b");
    assert_converges(a.dir.path(), b.dir.path());
    let b_dir = b.stop("-TERM");
    let state = b_dir.path().join(".dropbox-shell");
    for name in ["sync.db", "sync.db-wal", "sync.db-shm"] {
        let _ = fs::remove_file(state.join(name));
    }
    assert!(!state.join("sync.db").exists());
    a.write("s1/while-away.txt", b"new on a");
    let log_lines = log_since(b_dir.path(), 0).len();
    let expected = contents(a.dir.path());

    let b = syncing_in(b_dir, &["--peer", &a.addr]);
    assert_converges(a.dir.path(), b.dir.path());
    assert_eq!(contents(b.dir.path()), expected, "nothing lost or doubled");
    assert!(
        !visible_files(a.dir.path())
            .iter()
            .any(|n| n.contains(".sync-conflict-")),
        "no conflict copies"
    );
    assert!(trash_is_empty(a.dir.path()) && trash_is_empty(b.dir.path()));
    // Only the new file was pulled: the rest b had already.
    let pulls: Vec<String> = log_since(b.dir.path(), log_lines)
        .into_iter()
        .filter(|l| l.contains("sync pull"))
        .collect();
    assert!(
        pulls.iter().all(|l| l.contains("s1/while-away.txt")),
        "{pulls:#?}"
    );
    // b holds a's whole index, and a holds b's new one.
    let a_paths = query_i64(a.dir.path(), "SELECT COUNT(*) FROM local WHERE deleted = 0");
    let held = || query_i64(b.dir.path(), "SELECT COUNT(*) FROM remote WHERE deleted = 0");
    assert!(wait_for(EVENTUALLY, || held() == a_paths), "{}", held());
    let b_id = index_id(b.dir.path());
    let a_holds = || {
        db(a.dir.path())
            .query_row("SELECT index_id FROM partners", [], |r| r.get::<_, String>(0))
            .unwrap()
    };
    assert!(wait_for(EVENTUALLY, || a_holds() == b_id), "{}", a_holds());
    // Once: the rounds that follow send it no more (an entry may travel
    // twice when both sides' exchanges cross, never the whole index).
    let bytes = || query_i64(b.dir.path(), "SELECT bytes FROM partners");
    let first = bytes();
    let rounds = || sync_status(b.dir.path())["last_round"].clone();
    let last = rounds();
    assert!(wait_for(EVENTUALLY, || rounds() != last));
    let last = rounds();
    assert!(wait_for(EVENTUALLY, || rounds() != last));
    let again = bytes() - first;
    assert!(
        again < first / 2,
        "{again} bytes of names sent again after the {first} of a's whole index"
    );
}

#[test]
fn sequence_numbers_and_the_index_id_survive_a_restart() {
    let a_dir = tempfile::tempdir().unwrap();
    for i in 0..300 {
        let p = a_dir.path().join(format!("d{}/f{i}.txt", i % 10));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, format!("file {i}")).unwrap();
    }
    let a = syncing_in(a_dir, &[]);
    let b = syncing(&["--peer", &a.addr]);
    assert_converges(a.dir.path(), b.dir.path());
    assert!(wait_for(EVENTUALLY, || did_a_round(a.dir.path())));
    let top = "SELECT MAX(seq) FROM local";
    let seq = query_i64(a.dir.path(), top);
    let id = index_id(a.dir.path());
    assert!(query_i64(a.dir.path(), "SELECT COUNT(*) FROM local") >= 300);
    // b holds a's index up to its last change.
    let b_mark = || query_i64(b.dir.path(), "SELECT seq FROM partners");
    assert!(wait_for(EVENTUALLY, || b_mark() == seq), "{} {seq}", b_mark());
    let b_bytes = query_i64(b.dir.path(), "SELECT bytes FROM partners");

    let addr = a.addr.clone();
    let a_dir = a.stop("-TERM");
    assert_eq!(query_i64(a_dir.path(), top), seq);
    let a = syncing_at(a_dir, &addr, &[]);
    // Its first scan after the restart walks the folder and finds nothing new.
    assert!(wait_for(EVENTUALLY, || did_a_round(a.dir.path())));
    assert!(walks(a.dir.path()) >= 1);
    assert_eq!(query_i64(a.dir.path(), top), seq, "nothing changed");
    assert_eq!(index_id(a.dir.path()), id, "the same index");

    a.write("after-restart.txt", b"new");
    let arrived = wait_for(EVENTUALLY, || {
        fs::read(b.path("after-restart.txt")).is_ok_and(|d| d == b"new")
    });
    assert!(arrived);
    let new_seq = query_i64(
        a.dir.path(),
        "SELECT seq FROM local WHERE path = 'after-restart.txt'",
    );
    assert!(new_seq > seq, "{new_seq} after {seq}");
    assert!(wait_for(EVENTUALLY, || b_mark() >= new_seq));
    let grew = b_mark() - seq;
    assert!(
        (1..=5).contains(&grew),
        "b's mark of a grew by {grew}: the changes, not the folder"
    );
    // What b was sent since: the new entry's name, not 300 others.
    let sent = query_i64(b.dir.path(), "SELECT bytes FROM partners") - b_bytes;
    assert!(sent < 300, "b was sent {sent} bytes of names for one new file");
}
