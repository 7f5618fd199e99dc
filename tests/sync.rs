//! Two-way sync between real peers on loopback: what one side creates,
//! changes, renames or deletes shows up on the other, and no version of a
//! file is ever lost (it is in place, in a conflict copy or in the trash).

mod util;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use util::*;

const LIMIT: Duration = Duration::from_secs(30);

fn converged(a: &Path, b: &Path) -> bool {
    tree(a) == tree(b)
}

fn assert_converges(a: &Path, b: &Path) {
    let ok = wait_for(LIMIT, || converged(a, b));
    assert!(ok, "did not converge:\n{:?}\n{:?}", tree(a), tree(b));
}

fn trash_files(dir: &Path) -> Vec<Vec<u8>> {
    let t = dir.join(".dropbox-shell/trash");
    if !t.exists() {
        return Vec::new();
    }
    walkdir::WalkDir::new(t)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| fs::read(e.path()).unwrap())
        .collect()
}

#[test]
fn everything_a_folder_holds_propagates_both_ways() {
    let a = syncing(&[]);
    a.write("docs/deep/note.txt", b"note");
    a.write("big.bin", &random_bytes(1, 20 << 20));
    fs::create_dir_all(a.path("empty/inner")).unwrap();
    let b = syncing(&["--peer", &a.addr]);
    b.write("from-b.txt", b"b was here");
    assert_converges(a.dir.path(), b.dir.path());
    assert!(fs::read(b.path("big.bin")).unwrap() == random_bytes(1, 20 << 20));
    assert!(b.path("empty/inner").is_dir());

    // Modify, chmod, create in a new nested folder, on either side.
    a.write("docs/deep/note.txt", b"note, edited");
    fs::set_permissions(b.path("from-b.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    b.write("new/nested/x.md", b"x");
    assert_converges(a.dir.path(), b.dir.path());
    assert_eq!(
        fs::read(b.path("docs/deep/note.txt")).unwrap(),
        b"note, edited"
    );
    assert_eq!(
        fs::metadata(a.path("from-b.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // Rename: arrives as a rename (no bytes pulled for it).
    fs::rename(a.path("big.bin"), a.path("renamed.bin")).unwrap();
    assert_converges(a.dir.path(), b.dir.path());
    let log = fs::read_to_string(b.path(".dropbox-shell/history.log")).unwrap();
    assert!(log.contains("sync rename big.bin -> renamed.bin"), "{log}");
    assert!(!log.contains("sync pull renamed.bin"));

    // Delete: gone on the other side, but kept in its trash.
    fs::remove_file(b.path("docs/deep/note.txt")).unwrap();
    fs::remove_dir_all(b.path("empty")).unwrap();
    assert_converges(a.dir.path(), b.dir.path());
    assert!(!a.path("docs/deep/note.txt").exists());
    assert!(!a.path("empty").exists());
    assert!(trash_files(a.dir.path()).contains(&b"note, edited".to_vec()));

    // Nothing echoes: each change was pulled once.
    let log = fs::read_to_string(a.path(".dropbox-shell/history.log")).unwrap();
    assert_eq!(log.matches("sync pull from-b.txt\"").count(), 1, "{log}");
}

#[test]
fn a_conflict_made_while_apart_keeps_both_versions_on_both_sides() {
    let a = syncing(&[]);
    a.write("report.txt", b"original");
    let b = syncing(&["--peer", &a.addr]);
    assert_converges(a.dir.path(), b.dir.path());
    let b_dir = b.stop("-TERM");
    // Both edit while they cannot talk; b's edit is the newer one.
    a.write("report.txt", b"edited on a");
    filetime::set_file_mtime(
        a.path("report.txt"),
        filetime::FileTime::from_unix_time(2_000_000_000, 0),
    )
    .unwrap();
    fs::write(b_dir.path().join("report.txt"), b"edited on b").unwrap();
    filetime::set_file_mtime(
        b_dir.path().join("report.txt"),
        filetime::FileTime::from_unix_time(2_000_000_100, 0),
    )
    .unwrap();
    let b = syncing_in(b_dir, &["--peer", &a.addr]);
    assert_converges(a.dir.path(), b.dir.path());
    assert_eq!(
        fs::read(a.path("report.txt")).unwrap(),
        b"edited on b",
        "the newer wins the name"
    );
    let copies: Vec<String> = visible_files(a.dir.path())
        .into_iter()
        .filter(|n| n.contains(".sync-conflict-"))
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(copies[0].starts_with("report.sync-conflict-") && copies[0].ends_with(".txt"));
    assert_eq!(
        fs::read(a.path(&copies[0])).unwrap(),
        b"edited on a",
        "the older is kept beside it"
    );
    assert!(b.path(&copies[0]).exists(), "on both sides");
}

#[test]
fn a_peer_killed_mid_sync_converges_after_restart() {
    let a = syncing(&[]);
    for i in 0..4 {
        a.write(&format!("f{i}.bin"), &random_bytes(10 + i, 20 << 20));
    }
    let b = syncing(&["--peer", &a.addr]);
    // Kill b while a pull is under way (its temporary file exists).
    let started = wait_for_pull(&b);
    let b_dir = b.stop("-KILL");
    assert!(started || tree(b_dir.path()).len() == 4, "no pull was seen");
    // Whatever b holds under a real name is complete.
    for (name, data, _) in tree(b_dir.path()) {
        let i: u64 = name[1..2].parse().unwrap();
        assert!(
            data.unwrap() == random_bytes(10 + i, 20 << 20),
            "{name} is a half file"
        );
    }
    let b = syncing_in(b_dir, &["--peer", &a.addr]);
    assert_converges(a.dir.path(), b.dir.path());
}

#[test]
fn a_hub_relays_changes_between_spokes() {
    let hub = syncing(&[]);
    let s1 = syncing(&["--peer", &hub.addr]);
    let s2 = syncing(&["--peer", &hub.addr]);
    s1.write("from-s1.txt", b"one");
    s2.write("d/from-s2.txt", b"two");
    assert_converges(s1.dir.path(), s2.dir.path());
    assert_converges(hub.dir.path(), s1.dir.path());
    fs::remove_file(s2.path("from-s1.txt")).unwrap();
    assert_converges(s1.dir.path(), s2.dir.path());
    assert!(!s1.path("from-s1.txt").exists());
    assert!(!hub.path("from-s1.txt").exists());
}

#[test]
fn a_mass_deletion_waits_for_confirmation() {
    let a = syncing(&[]);
    for i in 0..6 {
        a.write(&format!("keep{i}.txt"), format!("{i}").as_bytes());
    }
    let mut b = ShellPeer::start_in(
        tempfile::tempdir().unwrap(),
        &["--sync", "--interval", "1", "--peer", &a.addr],
    );
    assert_converges(a.dir.path(), b.dir.path());
    // A round by hand waits for the one that pulled to record what it did
    // (the files show up a moment before that).
    b.cmd("sync");
    // While b is away, a loses five of its six files.
    let b_dir = b.stop();
    a.remove_at_once(&(0..5).map(|i| format!("keep{i}.txt")).collect::<Vec<_>>());
    let mut b = ShellPeer::start_in(b_dir, &["--sync", "--interval", "1", "--peer", &a.addr]);
    // b holds back: more than half of its files would go.
    let paused = wait_for(LIMIT, || {
        let status = b.cmd("sync status");
        status["partners"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["paused_deletions"] == 5))
    });
    assert!(paused, "the deletions were not paused");
    assert_eq!(visible_files(b.dir.path()).len(), 6);
    // Confirmed in b's shell: the deletions go to the trash.
    let report = b.cmd("sync confirm");
    assert_eq!(report["partners"][0]["deleted"], 5, "{report}");
    assert_converges(a.dir.path(), b.dir.path());
    assert_eq!(trash_files(b.dir.path()).len(), 5);
}

#[test]
fn a_vanished_folder_never_deletes_the_other_side() {
    let a = syncing(&[]);
    for i in 0..4 {
        a.write(&format!("f{i}.txt"), b"data");
    }
    let mut b = ShellPeer::start_in(
        tempfile::tempdir().unwrap(),
        &["--sync", "--interval", "1", "--peer", &a.addr],
    );
    assert_converges(a.dir.path(), b.dir.path());
    // a's disk "unmounts": its whole folder disappears at once.
    let away = a.dir.path().with_extension("unmounted");
    fs::rename(a.dir.path(), &away).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        visible_files(b.dir.path()).len(),
        4,
        "b must keep its files"
    );
    let answer = b.cmd("sync");
    assert!(
        answer["error"].as_str().unwrap_or("").contains("gone"),
        "{answer}"
    );
    assert_eq!(visible_files(b.dir.path()).len(), 4);
    // And a peer whose own folder is gone refuses to sync, saying why.
    let (code, docs, _) = run_json(a.dir.path(), &b.addr, &["sync"]);
    assert_eq!(code, 2, "{docs:?}");
    let _ = fs::remove_dir_all(&away);
}

#[test]
fn a_peer_reconnecting_from_another_address_is_recognised() {
    let mut a = ShellPeer::start_in(tempfile::tempdir().unwrap(), &["--sync", "--interval", "1"]);
    fs::write(a.path("same.txt"), b"unchanged").unwrap();
    let b = syncing(&["--peer", &a.addr]);
    assert_converges(a.dir.path(), b.dir.path());
    let id = id_of(b.dir.path());
    let b_dir = b.stop("-TERM");
    let b = syncing_in(b_dir, &["--peer", &a.addr]); // a new port
    assert_eq!(id_of(b.dir.path()), id);
    b.write("later.txt", b"after the restart");
    assert_converges(a.dir.path(), b.dir.path());
    // Known state: nothing was pulled again, no conflict appeared.
    let log = fs::read_to_string(a.path(".dropbox-shell/history.log")).unwrap();
    assert_eq!(log.matches("sync pull same.txt").count(), 0);
    assert!(
        !visible_files(a.dir.path())
            .iter()
            .any(|n| n.contains("sync-conflict"))
    );
    let status = a.cmd("sync status");
    let partners = status["partners"].as_array().unwrap();
    assert_eq!(partners.len(), 1, "one partner, known by its id: {status}");
    assert_eq!(partners[0]["peer_id"], id.as_str());
    assert_eq!(partners[0]["peer"], b.addr.as_str(), "at its new address");
}

#[test]
fn sync_by_hand_without_the_flag_and_its_errors() {
    let a = Peer::start(&[]);
    a.write("x.txt", b"x");
    let me = tempfile::tempdir().unwrap();
    let (code, docs, err) = run_json(me.path(), &a.addr, &["sync", "sync status", "sync bogus"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(docs[0]["partners"][0]["pulled"], 1);
    assert_eq!(fs::read(me.path().join("x.txt")).unwrap(), b"x");
    assert_eq!(docs[1]["enabled"], false);
    assert!(docs[2]["error"].as_str().unwrap().contains("usage: sync"));
    let lonely = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["--listen", "127.0.0.1:0", "--json", "-c", "sync", "--dir"])
        .arg(lonely.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("no peer to sync with"));
}

#[test]
fn one_process_at_a_time_syncs_a_folder() {
    let a = syncing(&[]);
    a.write("mine.txt", b"a");
    // A second `--sync` on the same folder is refused at start.
    let out = bin()
        .args(["--listen", "127.0.0.1:0", "--headless", "--sync", "--dir"])
        .arg(a.dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let pid = a.child.id();
    assert!(err.contains(&format!("(pid {pid}) already syncs")), "{err}");
    // A one-off `sync` from a shell on that folder does not sync it
    // itself: the running peer does, with its own partners (none here).
    let other = Peer::start(&[]);
    other.write("theirs.txt", b"b");
    let (code, docs, err) = run_json(a.dir.path(), &other.addr, &["sync"]);
    assert_eq!(code, 1, "{err}");
    let error = docs[0]["error"].as_str().unwrap();
    assert!(
        error.contains("the process that syncs this folder has no peer"),
        "{error}"
    );
    assert!(!a.path("theirs.txt").exists());
    // Once the first has stopped, another may sync the folder.
    let dir = a.stop("-TERM");
    let b = syncing_in(dir, &[]);
    assert_eq!(visible_files(b.dir.path()), vec!["mine.txt"]);
}

#[test]
fn a_partner_that_is_gone_is_tried_less_and_less_often() {
    // An address where nobody listens.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = gone.local_addr().unwrap().to_string();
    drop(gone);
    let mut hub = ShellPeer::start_in(
        tempfile::tempdir().unwrap(),
        &["--sync", "--interval", "1", "--peer", &addr],
    );
    std::thread::sleep(Duration::from_millis(5500));
    // `sync status` says when it tries again.
    let status = hub.cmd("sync status");
    let partner = &status["partners"][0];
    assert!(partner["failures"].as_u64().unwrap() >= 2, "{status}");
    assert!(
        partner["next_try"].as_str().unwrap().ends_with('Z'),
        "{status}"
    );
    let log = fs::read_to_string(hub.path(".dropbox-shell/history.log")).unwrap();
    let tries = log
        .lines()
        .filter(|l| l.contains("\"sync round\"") && l.contains("unreachable"))
        .count();
    // Every second (--interval 1) would be six tries; with the backoff
    // they come at about 0, 1 and 3 s. A slow machine only makes fewer.
    assert!((1..=3).contains(&tries), "{tries} tries:\n{log}");
}

#[test]
fn sigterm_during_a_pull_cancels_it_and_the_peer_stops() {
    let a = Peer::start(&[]);
    a.write("big.bin", &random_bytes(9, 200 << 20));
    let mut b = syncing(&["--peer", &a.addr]);
    let started = wait_for_pull(&b);
    // The partner freezes mid-file: without a cancel the pull would wait
    // out its 30 s silence limit before the peer could stop.
    a.signal("-STOP");
    b.signal("-TERM");
    let stopped = wait_for(Duration::from_secs(15), || {
        matches!(b.child.try_wait(), Ok(Some(_)))
    });
    a.signal("-CONT");
    assert!(started, "the pull was never seen under way");
    assert!(stopped, "the syncing peer did not stop on SIGTERM");
    assert_eq!(b.child.wait().unwrap().code(), Some(0));
    assert!(
        visible_files(b.dir.path()).is_empty(),
        "{:?}",
        visible_files(b.dir.path())
    );
}

#[test]
fn deletions_made_before_we_learned_they_had_pulled_are_not_undone() {
    // No timer: a acts only on events and offers.
    let a = Peer::start(&["--sync", "--interval", "3600"]);
    for i in 0..6 {
        a.write(&format!("f{i}.txt"), format!("{i}").as_bytes());
    }
    // b pulls everything in a one-off round and is gone before it offers
    // again: a never learns that the two sides agree on these files.
    let b_dir = tempfile::tempdir().unwrap();
    let (code, docs, err) = run_json(b_dir.path(), &a.addr, &["sync"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(docs[0]["partners"][0]["pulled"], 6);
    a.remove_at_once(&(0..5).map(|i| format!("f{i}.txt")).collect::<Vec<_>>());
    // b comes back syncing and holds the mass deletion for confirmation.
    // Its offer marks the six files as agreed, so a does not take the five
    // for files new on b and pull them back meanwhile.
    let mut b = ShellPeer::start_in(b_dir, &["--sync", "--interval", "1", "--peer", &a.addr]);
    let paused = wait_for(LIMIT, || {
        b.cmd("sync status")["partners"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["paused_deletions"] == 5))
    });
    assert!(paused, "the deletions were not paused");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        visible_files(a.dir.path()),
        vec!["f5.txt"],
        "a pulled back what it deleted"
    );
    let a_log = fs::read_to_string(a.path(".dropbox-shell/history.log")).unwrap();
    assert!(
        !a_log
            .lines()
            .any(|l| l.contains("\"made\"") && l.contains("sync pull")),
        "a pulled from b:\n{a_log}"
    );
    let report = b.cmd("sync confirm");
    assert_eq!(report["partners"][0]["deleted"], 5, "{report}");
    assert_converges(a.dir.path(), b.dir.path());
}

#[test]
fn a_pulled_file_is_recorded_as_it_lands_not_when_the_round_ends() {
    // No timer: a acts only on events and offers.
    let a = Peer::start(&["--sync", "--interval", "3600"]);
    for i in 0..10 {
        a.write(&format!("s{i}.txt"), format!("{i}").as_bytes());
    }
    a.write("zz.bin", &random_bytes(10, 200 << 20));
    let b = syncing(&["--peer", &a.addr]);
    // The small files land first; the peer dies during the big one, long
    // after the first ones landed (records may lag 50 ms behind), long
    // before the round could end.
    let landed = wait_for(LIMIT, || b.path("s0.txt").exists());
    let started = wait_for_pull(&b);
    a.signal("-STOP");
    std::thread::sleep(Duration::from_millis(500));
    let b_dir = b.stop("-KILL");
    a.signal("-CONT");
    assert!(landed && started, "the round was never seen under way");
    // a deletes a file that b had pulled; b's restart must not bring it back.
    fs::remove_file(a.path("s0.txt")).unwrap();
    let b = syncing_in(b_dir, &["--peer", &a.addr]);
    assert!(wait_for(LIMIT, || !b.path("s0.txt").exists()), "b kept s0");
    assert_converges(a.dir.path(), b.dir.path());
    std::thread::sleep(Duration::from_secs(2));
    assert!(!a.path("s0.txt").exists(), "a pulled back what it deleted");
    assert_eq!(trash_files(b.dir.path()).len(), 1);
}

#[test]
fn without_the_flag_nothing_syncs_by_itself() {
    let a = syncing(&[]);
    a.write("only-on-a.txt", b"a");
    let mut b = ShellPeer::start_in(tempfile::tempdir().unwrap(), &["--peer", &a.addr]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        visible_files(b.dir.path()).is_empty(),
        "b synced without --sync"
    );
    assert!(visible_files(a.dir.path()) == vec!["only-on-a.txt"]);
    let status = b.cmd("sync status");
    assert_eq!(status["enabled"], false);
    assert_eq!(status["last_round"], serde_json::Value::Null);
}

#[test]
fn a_local_symlink_never_leads_a_sync_change_outside() {
    let a = syncing(&[]);
    a.write("out/x.txt", b"x");
    fs::set_permissions(a.path("out"), fs::Permissions::from_mode(0o700)).unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::set_permissions(outside.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), b_dir.path().join("out")).unwrap();
    let b = syncing_in(b_dir, &["--peer", &a.addr]);
    // Give it several rounds (interval 1 s).
    std::thread::sleep(Duration::from_secs(3));
    let mode = fs::metadata(outside.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o755,
        "sync changed a folder outside the shared folder"
    );
    assert!(
        fs::read_dir(outside.path()).unwrap().next().is_none(),
        "sync wrote outside"
    );
    let log = fs::read_to_string(b.path(".dropbox-shell/history.log")).unwrap();
    assert!(
        log.contains("outside the shared folder"),
        "the refusal is logged: {log}"
    );
}

/// The peers a partner served `download` requests to, from its history.
fn download_clients(p: &Peer, files: usize) -> std::collections::BTreeSet<String> {
    let served = || -> Vec<serde_json::Value> {
        fs::read_to_string(p.path(".dropbox-shell/history.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["direction"] == "served")
            .filter(|l| l["command"].as_str().unwrap_or("").starts_with("download"))
            .collect()
    };
    assert!(
        wait_for(LIMIT, || served().len() >= files),
        "{:?}",
        served()
    );
    served()
        .iter()
        .map(|l| l["peer"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn many_files_come_over_one_connection_per_core_and_a_busy_partner_still_serves_one() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for cap in [None, Some("1")] {
        let a = match cap {
            None => Peer::start(&[]),
            Some(n) => Peer::start(&["--max-connections", n]),
        };
        for i in 0..40 {
            a.write(
                &format!("d{}/f{i}.bin", i % 3),
                &random_bytes(i, 70_000 + i as usize),
            );
        }
        let me = tempfile::tempdir().unwrap();
        let (code, docs, err) = run_json(me.path(), &a.addr, &["sync"]);
        assert_eq!(code, 0, "{err} {docs:?}");
        assert_eq!(docs[0]["partners"][0]["pulled"], 40, "{docs:?}");
        assert_eq!(docs[0]["partners"][0]["errors"], serde_json::json!([]));
        for i in 0..40u64 {
            let name = format!("d{}/f{i}.bin", i % 3);
            assert!(
                fs::read(me.path().join(&name)).unwrap() == random_bytes(i, 70_000 + i as usize)
            );
        }
        let clients = download_clients(&a, 40);
        match cap {
            None if cores > 1 => assert!(clients.len() > 1, "one connection only: {clients:?}"),
            _ => assert_eq!(clients.len(), 1, "{clients:?}"),
        }
    }
}
