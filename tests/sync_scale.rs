//! Sync at scale between real peers on loopback: a change the watcher
//! names costs no walk of the folder, a change it cannot see is found by
//! the rescan, our index (its sequence numbers and id) outlives a restart
//! so a partner is sent only what changed, a partner that starts over
//! with a fresh database is sent the whole index and converges, and two
//! peers converge after a seeded storm of changes on both sides with
//! kills in between.

mod util;

use std::collections::{BTreeSet, HashMap, HashSet};
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
    if !ok {
        // What each side did and holds, to tell a lost change from a slow one.
        for dir in [a, b] {
            eprintln!("--- {}\n{}", dir.display(), log_since(dir, 0).join("\n"));
            eprintln!("{}", sync_status(dir));
        }
    }
    assert!(ok, "did not converge:\n{:?}\n{:?}", tree(a), tree(b));
}

/// Whole walks of the folder by the syncing peer in `dir` since it started.
fn walks(dir: &Path) -> u64 {
    let s = sync_status(dir);
    s["walks"]
        .as_u64()
        .unwrap_or_else(|| panic!("no walks in {s}"))
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
        a.write(
            &format!("d{}/f{i}.txt", i % 3),
            format!("file {i}").as_bytes(),
        );
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

#[test]
fn without_a_watcher_changes_are_found_by_rescans_every_interval() {
    // syncing() gives --interval 1: a rescan every second without a watcher.
    let a = syncing(&["--no-watch"]);
    a.write("first.txt", b"1");
    let b = syncing(&["--peer", &a.addr]);
    assert_converges(a.dir.path(), b.dir.path());
    let status = sync_status(a.dir.path());
    assert_eq!(status["watching"], false, "{status}");
    let before = walks(a.dir.path());
    a.write("d/second.txt", b"2");
    fs::remove_file(a.path("first.txt")).unwrap();
    assert_converges(a.dir.path(), b.dir.path());
    assert!(walks(a.dir.path()) > before, "rescans found the changes");
    assert_eq!(sync_status(b.dir.path())["watching"], true);
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

/// Exchanges a partner opened with the peer in `dir` (served lines).
fn served_exchanges(dir: &Path) -> usize {
    log_since(dir, 0)
        .iter()
        .filter(|l| l.contains("\"served\"") && l.contains("\"sync exchange\""))
        .count()
}

#[test]
fn a_round_right_after_the_partner_exchanged_with_us_does_not_exchange_again() {
    // a acts on offers and its own changes only (no timer).
    let a = Peer::start(&["--sync", "--interval", "3600"]);
    for i in 0..5 {
        a.write(&format!("a{i}.txt"), format!("a{i}").as_bytes());
    }
    let b_dir = tempfile::tempdir().unwrap();
    fs::write(b_dir.path().join("b.txt"), "from b").unwrap();
    // b's exchange gives a b.txt to pull: a's round for it skips its own
    // exchange (a's index did not change since it sent it to b). Only the
    // round after a pulled b.txt (a's index changed) exchanges with b.
    let b = Peer::start_in(b_dir, &["--sync", "--interval", "3600", "--peer", &a.addr]);
    assert_converges(a.dir.path(), b.dir.path());
    std::thread::sleep(Duration::from_secs(2));
    let pulled = log_since(a.dir.path(), 0)
        .iter()
        .any(|l| l.contains("\"made\"") && l.contains("sync pull b.txt"));
    assert!(pulled, "a pulled b.txt in a round of its own");
    let served = served_exchanges(b.dir.path());
    assert!(served <= 1, "a exchanged {served} times with b");
    // A change on a is exchanged: one more.
    a.write("later.txt", b"later");
    assert!(wait_for(EVENTUALLY, || b.path("later.txt").exists()));
    assert!(served_exchanges(b.dir.path()) > served);
}

#[test]
fn a_round_over_more_than_one_part_converges_part_by_part() {
    // More paths than one plan part (10,000): the round plans the next
    // part while it applies this one.
    let a = Peer::start(&["--sync", "--interval", "3600"]);
    for d in 0..11 {
        fs::create_dir(a.path(&format!("d{d:02}"))).unwrap();
        for f in 0..1000 {
            fs::write(a.path(&format!("d{d:02}/f{f:04}")), format!("{d}/{f}")).unwrap();
        }
    }
    let b = syncing(&["--peer", &a.addr]);
    assert_converges(a.dir.path(), b.dir.path());
    let parts = log_since(b.dir.path(), 0)
        .iter()
        .filter(|l| l.contains("\"made\"") && l.contains("\"sync pull ") && l.contains(" files\""))
        .count();
    assert!(parts >= 2, "pulled in {parts} part(s)");
    // Changes in two parts at once, on both sides.
    fs::remove_file(a.path("d00/f0000")).unwrap();
    fs::write(a.path("d10/f0999"), "edited on a").unwrap();
    fs::write(b.path("d05/new"), "made on b").unwrap();
    assert_converges(a.dir.path(), b.dir.path());
    assert_eq!(fs::read(b.path("d10/f0999")).unwrap(), b"edited on a");
    assert!(!b.path("d00/f0000").exists());
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
    let held = || {
        query_i64(
            b.dir.path(),
            "SELECT COUNT(*) FROM remote WHERE deleted = 0",
        )
    };
    assert!(wait_for(EVENTUALLY, || held() == a_paths), "{}", held());
    let b_id = index_id(b.dir.path());
    let a_holds = || {
        db(a.dir.path())
            .query_row("SELECT index_id FROM partners", [], |r| {
                r.get::<_, String>(0)
            })
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
    assert!(
        wait_for(EVENTUALLY, || b_mark() == seq),
        "{} {seq}",
        b_mark()
    );
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
    assert!(
        sent < 300,
        "b was sent {sent} bytes of names for one new file"
    );
}

/// The storm's memory of what it did, by content: every content written
/// is unique, so where a version went can be told at the end whatever
/// its path (in place, renamed, or in a conflict copy).
#[derive(Default)]
struct Model {
    written: Vec<Vec<u8>>,
    /// Versions a side replaced or deleted while it held them: they may go.
    superseded: HashSet<Vec<u8>>,
    deleted_by: HashMap<Vec<u8>, BTreeSet<usize>>,
    renamed_by: HashMap<Vec<u8>, BTreeSet<usize>>,
    /// What happened, for the message of a failed assertion.
    ops: Vec<String>,
}

const SIDES: [&str; 2] = ["a", "b"];
const FOLDERS: [&str; 5] = ["", "d0/", "d1/", "d2/", "d1/e/"];

/// The regular files a side shows now (not our temporary files).
fn regular_files(dir: &Path) -> Vec<String> {
    visible_files(dir)
        .into_iter()
        .filter(|n| dir.join(n).is_file())
        .collect()
}

struct Storm {
    rng: fastrand::Rng,
    model: Model,
    made: u64,
}

impl Storm {
    /// A new, unique content.
    fn content(&mut self, side: usize) -> Vec<u8> {
        self.made += 1;
        let mut c = format!("{} {} ", SIDES[side], self.made).into_bytes();
        let len = self.rng.usize(0..300);
        c.extend((0..len).map(|_| self.rng.alphanumeric() as u8));
        self.model.written.push(c.clone());
        c
    }

    fn new_name(&mut self, stem: &str) -> String {
        self.made += 1;
        let folder = FOLDERS[self.rng.usize(..FOLDERS.len())];
        format!("{folder}{stem}{}.txt", self.made)
    }

    /// One random change on `side`, in its folder `dir`: mostly creates,
    /// edits and renames, a few deletions (the mass-deletion guard would
    /// pause a majority).
    fn act(&mut self, side: usize, dir: &Path) {
        let files = regular_files(dir);
        let op = if files.is_empty() {
            0
        } else {
            self.rng.u8(..10)
        };
        let picked = match files.is_empty() {
            true => None,
            false => Some(files[self.rng.usize(..files.len())].clone()),
        };
        let s = SIDES[side];
        match (op, picked) {
            (0..=3, _) | (_, None) => {
                let name = self.new_name("n");
                let c = self.content(side);
                let p = dir.join(&name);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(p, &c).unwrap();
                self.model.ops.push(format!("{s} create {name}"));
            }
            (4..=6, Some(name)) => {
                // The file may be replaced by a pull at any moment: skip it then.
                let Ok(old) = fs::read(dir.join(&name)) else {
                    return;
                };
                let c = self.content(side);
                if fs::write(dir.join(&name), &c).is_ok() {
                    self.model.ops.push(format!("{s} edit {name}"));
                    self.model.superseded.insert(old);
                }
            }
            (7..=8, Some(name)) => {
                let Ok(old) = fs::read(dir.join(&name)) else {
                    return;
                };
                let to = self.new_name("r");
                let target = dir.join(&to);
                fs::create_dir_all(target.parent().unwrap()).unwrap();
                if fs::rename(dir.join(&name), target).is_ok() {
                    self.model.ops.push(format!("{s} rename {name} -> {to}"));
                    self.model.renamed_by.entry(old).or_default().insert(side);
                }
            }
            (_, Some(name)) => {
                let Ok(old) = fs::read(dir.join(&name)) else {
                    return;
                };
                if fs::remove_file(dir.join(&name)).is_ok() {
                    self.model.ops.push(format!("{s} delete {name}"));
                    self.model.superseded.insert(old.clone());
                    self.model.deleted_by.entry(old).or_default().insert(side);
                }
            }
        }
    }
}

/// Names of our temporary files anywhere in a folder outside its state.
fn part_files(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".dropbox-shell")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".dbsh-part"))
        .collect()
}

/// Converged, and still the same a moment later (no round was under way).
fn settled(a: &Path, b: &Path) -> bool {
    let first = tree(a);
    if first != tree(b) {
        return false;
    }
    std::thread::sleep(Duration::from_secs(2));
    tree(a) == first && tree(b) == first
}

/// The storm's versions that must be somewhere at the end, and the
/// deleted ones that must not come back: deleted by one side, and never
/// renamed by the other (a rename there, concurrent with the deletion,
/// keeps the version under its new name).
fn check_the_model(model: &Model, end: &HashSet<Vec<u8>>) -> Vec<String> {
    let show = |c: &[u8]| String::from_utf8_lossy(&c[..c.len().min(12)]).into_owned();
    let mut wrong = Vec::new();
    for c in &model.written {
        if !model.superseded.contains(c) && !end.contains(c) {
            wrong.push(format!("lost: {:?}", show(c)));
        }
    }
    for (c, by) in &model.deleted_by {
        let renamed_elsewhere = model
            .renamed_by
            .get(c)
            .is_some_and(|r| r.iter().any(|s| !by.contains(s)));
        if !renamed_elsewhere && end.contains(c) {
            wrong.push(format!("resurrected: {:?} (deleted by {by:?})", show(c)));
        }
    }
    wrong
}

/// What two folders that did not converge still differ in, what their
/// peers say, and what the storm did.
fn differences(a: &Path, b: &Path, model: &Model) -> String {
    let (ta, tb) = (tree(a), tree(b));
    let only = |x: &[(String, Option<Vec<u8>>, u32)], y: &[(String, Option<Vec<u8>>, u32)]| {
        x.iter()
            .filter(|e| !y.contains(e))
            .map(|(n, d, m)| format!("{n} {:?} {m:o}", d.as_ref().map(|d| md5_hex(d))))
            .collect::<Vec<_>>()
    };
    let log = |d: &Path| {
        let all = log_since(d, 0);
        all[all.len().saturating_sub(40)..].join("\n")
    };
    format!(
        "did not converge\nonly a: {:#?}\nonly b: {:#?}\na: {}\nb: {}\n{:#?}\na's log:\n{}\nb's log:\n{}",
        only(&ta, &tb),
        only(&tb, &ta),
        sync_status(a),
        sync_status(b),
        model.ops,
        log(a),
        log(b)
    )
}

/// It found three defects, now fixed: a rename pulled onto a file edited
/// here since the plan moved the edited bytes without looking (seed 9:
/// both sides "in sync" with different contents under one name); a file
/// renamed on both sides to different names left one side's pull "left
/// alone" for good (seed 8); and a pull cut off by a killed partner was
/// left alone for 15 minutes as if the file were at fault (seed 7).
/// `STORM_SEED=n` runs another storm.
#[test]
fn two_peers_converge_after_a_seeded_storm_with_kills() {
    let seed: u64 = std::env::var("STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_122);
    println!("storm seed {seed} (STORM_SEED={seed} repeats its changes)");
    let mut storm = Storm {
        rng: fastrand::Rng::with_seed(seed),
        model: Model::default(),
        made: 0,
    };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for _ in 0..40 {
        storm.act(0, dirs[0].path());
    }
    let [a_dir, b_dir] = dirs;
    let a = syncing_in(a_dir, &[]);
    let addrs = [a.addr.clone(), "127.0.0.1:0".to_string()];
    let b = syncing_in(b_dir, &["--peer", &addrs[0]]);
    let addrs = [addrs[0].clone(), b.addr.clone()];
    let extra = |side: usize| match side {
        0 => Vec::new(),
        _ => vec!["--peer".to_string(), addrs[0].clone()],
    };
    let mut peers = [Some(a), Some(b)];
    let dir_of = |p: &[Option<Peer>; 2], side: usize| {
        p[side]
            .as_ref()
            .map(|p| p.dir.path().to_path_buf())
            .unwrap()
    };
    for round in 0..12 {
        for side in 0..2 {
            let dir = dir_of(&peers, side);
            for _ in 0..storm.rng.usize(2..6) {
                storm.act(side, &dir);
            }
        }
        if storm.rng.u8(..3) == 0 {
            // Killed at some moment of its work; changed while down; back.
            let side = storm.rng.usize(..2);
            std::thread::sleep(Duration::from_millis(storm.rng.u64(0..500)));
            let dir = peers[side].take().unwrap().stop("-KILL");
            storm
                .model
                .ops
                .push(format!("round {round}: {} killed", SIDES[side]));
            for _ in 0..storm.rng.usize(0..3) {
                storm.act(side, dir.path());
            }
            let args = extra(side);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            peers[side] = Some(syncing_at(dir, &addrs[side], &args));
        }
        std::thread::sleep(Duration::from_millis(storm.rng.u64(50..600)));
    }
    let (a, b) = (dir_of(&peers, 0), dir_of(&peers, 1));
    let ok = wait_for(EVENTUALLY, || settled(&a, &b));
    assert!(ok, "seed {seed}: {}", differences(&a, &b, &storm.model));
    assert_eq!(part_files(&a), Vec::<String>::new());
    assert_eq!(part_files(&b), Vec::<String>::new());
    let end: HashSet<Vec<u8>> = contents(&a).into_iter().map(|(_, c)| c).collect();
    println!(
        "{} changes ({} kills), {} versions written, {} files at the end",
        storm.model.ops.len(),
        storm
            .model
            .ops
            .iter()
            .filter(|o| o.ends_with("killed"))
            .count(),
        storm.model.written.len(),
        end.len(),
    );
    let wrong = check_the_model(&storm.model, &end);
    assert!(
        wrong.is_empty(),
        "seed {seed}: {wrong:#?}\nends with {:#?}\nafter {:#?}",
        visible_files(&a),
        storm.model.ops
    );
}
