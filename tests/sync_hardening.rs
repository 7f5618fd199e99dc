//! Sync under stress, between real peers on loopback: a file against a
//! folder, a folder emptied one file at a time, a second process reaching
//! the one that syncs, mode bits that must not travel, and a full disk.

mod util;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use util::*;

const LIMIT: Duration = Duration::from_secs(60);

fn assert_converges(a: &Path, b: &Path) {
    let ok = wait_for(LIMIT, || tree(a) == tree(b));
    assert!(ok, "did not converge:\n{:?}\n{:?}", names(a), names(b));
}

fn names(dir: &Path) -> Vec<String> {
    let mut v = visible_files(dir);
    v.truncate(20);
    v
}

/// History lines of a peer, parsed.
fn history(dir: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(dir.join(".dropbox-shell/history.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn conflict_copies(dir: &Path) -> Vec<String> {
    visible_files(dir)
        .into_iter()
        .filter(|n| n.contains(".sync-conflict-"))
        .collect()
}

#[test]
fn a_file_against_a_folder_keeps_both_and_stops_pulling() {
    let ga = syncing(&[]);
    ga.write("z", b"x\n");
    let gb_dir = tempfile::tempdir().unwrap();
    let inner = random_bytes(5, 10 << 20);
    fs::create_dir(gb_dir.path().join("z")).unwrap();
    fs::write(gb_dir.path().join("z/inner.bin"), &inner).unwrap();
    let gb = syncing_in(gb_dir, &["--peer", &ga.addr]);
    assert_converges(ga.dir.path(), gb.dir.path());
    // The folder has the name on both sides, the file is a conflict copy.
    for dir in [ga.dir.path(), gb.dir.path()] {
        assert!(fs::read(dir.join("z/inner.bin")).unwrap() == inner);
        let copies = conflict_copies(dir);
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert!(copies[0].starts_with("z.sync-conflict-"), "{copies:?}");
        assert_eq!(fs::read(dir.join(&copies[0])).unwrap(), b"x\n");
    }
    // Several more rounds (one a second): nothing is pulled again.
    std::thread::sleep(Duration::from_secs(3));
    let served = history(gb.dir.path())
        .iter()
        .filter(|l| l["direction"] == "served" && served_download(l, "z/inner.bin"))
        .count();
    // Once for the pull that made ga's copy (twice if a round raced it).
    assert!(
        (1..=2).contains(&served),
        "z/inner.bin served {served} times"
    );
    assert_converges(ga.dir.path(), gb.dir.path());
}

/// A history line of ours serving `name` (by TCP, as sync pulls).
fn served_download(line: &serde_json::Value, name: &str) -> bool {
    line["command"]
        .as_str()
        .is_some_and(|c| c.starts_with(&format!("download TCP {name}")))
}

#[test]
fn a_pull_that_cannot_land_is_not_made_and_reported_once() {
    // On ga, a FIFO holds the name (sync ignores it): neither the folder z
    // nor anything in it can be made there.
    let ga_dir = tempfile::tempdir().unwrap();
    let fifo = std::ffi::CString::new(ga_dir.path().join("z").to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let ga = syncing_in(ga_dir, &[]);
    let gb_dir = tempfile::tempdir().unwrap();
    fs::create_dir(gb_dir.path().join("z")).unwrap();
    fs::write(gb_dir.path().join("z/inner.bin"), random_bytes(6, 1 << 20)).unwrap();
    fs::write(gb_dir.path().join("other.txt"), b"this one lands").unwrap();
    let gb = syncing_in(gb_dir, &["--peer", &ga.addr]);
    assert!(wait_for(LIMIT, || ga.path("other.txt").exists()));
    // Several more rounds (one a second).
    std::thread::sleep(Duration::from_secs(4));
    let served = history(gb.dir.path())
        .iter()
        .filter(|l| l["direction"] == "served" && served_download(l, "z/inner.bin"))
        .count();
    assert_eq!(served, 0, "bytes that could not land were pulled");
    for path in ["z", "z/inner.bin"] {
        let reports = history(ga.dir.path())
            .iter()
            .filter(|l| {
                l["direction"] == "made"
                    && l["command"]
                        .as_str()
                        .unwrap()
                        .ends_with(&format!(" {path}"))
                    && l["outcome"].as_str().unwrap().starts_with("error")
            })
            .count();
        assert_eq!(reports, 1, "{path}: {:?}", history(ga.dir.path()));
    }
}

#[test]
fn a_folder_emptied_one_file_at_a_time_keeps_half_until_confirmed() {
    const FILES: usize = 1200;
    let a = syncing(&[]);
    for i in 0..FILES {
        a.write(&format!("d{}/f{i}.txt", i % 4), format!("{i}").as_bytes());
    }
    let mut b = ShellPeer::start_in(
        tempfile::tempdir().unwrap(),
        &["--sync", "--interval", "1", "--peer", &a.addr],
    );
    assert_converges(a.dir.path(), b.dir.path());
    // A round by hand: both sides have recorded what they agree on.
    b.cmd("sync");
    // a loses all but 100 of its files, a few at a time, over several rounds.
    for i in 0..FILES - 100 {
        fs::remove_file(a.path(&format!("d{}/f{i}.txt", i % 4))).unwrap();
        if i % 20 == 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let files_of = |dir: &Path| {
        visible_files(dir)
            .iter()
            .filter(|n| n.ends_with(".txt"))
            .count()
    };
    // b stops deleting: what it still has beyond a's files all waits.
    let paused = wait_for(LIMIT, || {
        let status = b.cmd("sync status");
        let waiting = status["partners"][0]["paused_deletions"]
            .as_u64()
            .unwrap_or(0);
        waiting > 0 && waiting as usize == files_of(b.dir.path()) - 100
    });
    assert!(paused, "{}", b.cmd("sync status"));
    let kept = files_of(b.dir.path());
    assert!(kept >= FILES / 2, "b kept only {kept} of {FILES}");
    // Confirmed: the rest goes to the trash, in one folder (a day's).
    let report = b.cmd("sync confirm");
    assert_eq!(
        report["partners"][0]["deleted"].as_u64().unwrap() as usize,
        kept - 100,
        "{report}"
    );
    assert_converges(a.dir.path(), b.dir.path());
    let trash = fs::read_dir(b.path(".dropbox-shell/trash"))
        .unwrap()
        .count();
    assert!(trash <= 2, "{trash} trash folders");
}

/// Run `-c` commands as a second process in `dir` (its own engine does
/// not sync), as JSON.
/// `dropbox-shell --dir DIR --json -c ...`, as a user types it beside a
/// running peer: a client only, with no server of its own.
fn second_process(dir: &Path, cmds: &[&str]) -> (i32, Vec<serde_json::Value>) {
    let mut c = bin();
    c.args(["--json", "--dir"]).arg(dir);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.stdin(std::process::Stdio::null()).output().unwrap();
    let docs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.code().unwrap_or(-1), docs)
}

#[test]
fn a_second_process_reaches_the_headless_peer_that_syncs_the_folder() {
    let a = syncing(&[]);
    for i in 0..6 {
        a.write(&format!("keep{i}.txt"), format!("{i}").as_bytes());
    }
    let b = syncing(&["--peer", &a.addr]);
    assert_converges(a.dir.path(), b.dir.path());
    // A round by hand, through b's control socket.
    let (code, docs) = second_process(b.dir.path(), &["sync"]);
    assert_eq!(code, 0, "{docs:?}");
    assert_eq!(docs[0]["partners"][0]["peer"], a.addr.as_str());
    let sock = b.path(".dropbox-shell/control.sock");
    let mode = fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is the owner's only");
    // While b is away, a loses five of its six files.
    let b_dir = b.stop("-TERM");
    assert!(!b_dir.path().join(".dropbox-shell/control.sock").exists());
    a.remove_at_once(&(0..5).map(|i| format!("keep{i}.txt")).collect::<Vec<_>>());
    let b = syncing_in(b_dir, &["--peer", &a.addr]);
    let paused = wait_for(LIMIT, || {
        let (_, docs) = second_process(b.dir.path(), &["sync status"]);
        docs[0]["enabled"] == true && docs[0]["partners"][0]["paused_deletions"] == 5
    });
    assert!(
        paused,
        "{:?}",
        second_process(b.dir.path(), &["sync status"]).1
    );
    assert_eq!(visible_files(b.dir.path()).len(), 6);
    // Confirmed from the second process: b applies the deletions.
    let (code, docs) = second_process(b.dir.path(), &["sync confirm"]);
    assert_eq!(code, 0, "{docs:?}");
    assert_eq!(docs[0]["partners"][0]["deleted"], 5, "{docs:?}");
    assert_converges(a.dir.path(), b.dir.path());
}

#[test]
fn setuid_setgid_and_sticky_never_travel_by_sync() {
    let a = syncing(&[]);
    a.write("tool", b"#!/bin/sh\n");
    fs::set_permissions(a.path("tool"), fs::Permissions::from_mode(0o755)).unwrap();
    let mut b = ShellPeer::start_in(
        tempfile::tempdir().unwrap(),
        &["--sync", "--interval", "1", "--peer", &a.addr],
    );
    assert_converges(a.dir.path(), b.dir.path());
    b.cmd("sync");
    fs::set_permissions(a.path("tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir(a.path("shared")).unwrap();
    fs::set_permissions(a.path("shared"), fs::Permissions::from_mode(0o3777)).unwrap();
    // Rounds by hand come after any round under way: the chmod was seen.
    assert!(wait_for(LIMIT, || b.path("shared").is_dir()));
    b.cmd("sync");
    b.cmd("sync");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&b.path("tool")), 0o755);
    assert_eq!(mode(&b.path("shared")), 0o777);
    // And no round chmods the file on either side: 4755 and 0755 are the same.
    for dir in [a.dir.path(), b.dir.path()] {
        let chmods = history(dir)
            .iter()
            .filter(|l| {
                let c = l["command"].as_str().unwrap_or("");
                c.starts_with("sync chmod") && c.ends_with(" tool")
            })
            .count();
        assert_eq!(chmods, 0, "{:?}", history(dir));
    }
}

#[test]
fn a_new_setuid_file_arrives_without_the_bit() {
    let a = syncing(&[]);
    a.write("tool", b"#!/bin/sh\n");
    fs::set_permissions(a.path("tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    let b = syncing(&["--peer", &a.addr]);
    assert!(wait_for(LIMIT, || b.path("tool").exists()));
    let mode = fs::metadata(b.path("tool")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755);
}

#[test]
fn a_round_asked_by_hand_is_shown_by_the_command_not_as_an_event() {
    // The library's own peers, as examples/fetch.rs uses them.
    use dropbox_shell::peer::{Peer, PeerConfig};
    use dropbox_shell::sync::SyncCmd;
    use std::path::Path;
    let start = |dir: &Path, sync: bool, peers: Vec<String>| {
        Peer::start(PeerConfig {
            dir: dir.to_path_buf(),
            sync,
            interval: Duration::from_secs(1),
            peers,
            ..PeerConfig::default()
        })
        .unwrap()
    };
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    std::fs::write(da.path().join("x.txt"), b"x").unwrap();
    let a = start(da.path(), false, Vec::new());
    let partner = vec![a.local_addr().unwrap().to_string()];
    // By hand (`sync`): the report is the answer, no event.
    let b = start(db.path(), false, partner.clone());
    let events = b.shared.events.receiver();
    let (tx, rx) = crossbeam_channel::bounded(1);
    let engine = b.shared.sync_engine().unwrap();
    engine.send(SyncCmd::RunNow(false, tx)).unwrap();
    assert_eq!(rx.recv().unwrap().partners[0].pulled, 1);
    assert_eq!(events.try_recv().ok(), None);
    // A round the engine starts by itself is told to the shell.
    let c = start(dc.path(), true, partner);
    let event = c
        .shared
        .events
        .receiver()
        .recv_timeout(Duration::from_secs(30));
    let event = event.unwrap();
    assert_eq!(event.source, dropbox_shell::events::EventSource::Sync);
    assert!(event.text.contains("pulled 1"), "{event:?}");
    for p in [c, b, a] {
        p.shutdown();
    }
}

/// A tmpfs of `size` mounted on a folder of its own, unmounted when
/// dropped; `None` where mounting is not allowed (not root).
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let at = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk(at))
    }

    fn resize(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.0.path())
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn a_full_disk_stops_the_pulls_with_one_error_and_they_go_on_when_there_is_room() {
    let Some(disk) = SmallDisk::mount("2m") else {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root)");
        return;
    };
    let a = syncing(&[]);
    for i in 0..60 {
        a.write(&format!("f{i:02}.bin"), &random_bytes(i, 100 << 10));
    }
    let mut b = syncing_in(
        tempfile::tempdir_in(disk.0.path()).unwrap(),
        &["--peer", &a.addr],
    );
    let said = |b: &Peer| {
        let s = sync_status(b.dir.path());
        s["partners"][0]["last_result"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let full = wait_for(LIMIT, || {
        said(&b).contains("no space left on the disk here")
    });
    assert!(full, "no word of the full disk: {}", said(&b));
    // Still running, and what it holds under a real name is whole.
    assert!(matches!(b.child.try_wait(), Ok(None)), "the peer stopped");
    assert_eq!(sync_status(b.dir.path())["enabled"], true);
    for name in visible_files(b.dir.path()) {
        let i: u64 = name[1..3].parse().unwrap();
        assert_eq!(
            fs::read(b.path(&name)).unwrap(),
            random_bytes(i, 100 << 10),
            "{name}"
        );
    }
    // A line or so per round, not one per file it could not pull.
    let errors = history(b.dir.path())
        .iter()
        .filter(|l| l["outcome"].as_str().is_some_and(|o| o.contains("error")))
        .count();
    assert!(errors < 30, "{errors} error lines");
    disk.resize("64m");
    assert_converges(a.dir.path(), b.dir.path());
}
