//! LAN discovery with real peers on loopback (mDNS on the loopback
//! interface, `--discover` since 127.0.0.1 is not announced by default):
//! peers find each other with no `--peer`, show in `peers` as found on the
//! LAN with their id, can be chosen by an id prefix with `peer use`, and a
//! clean exit withdraws a peer from the others' lists at once. Syncing
//! peers of one group (the same secret) sync by themselves; a peer of
//! another group is never synced with. A killed peer is dropped when its
//! records expire. (The flood of forged announcements has a binary of its
//! own: tests/discovery_flood.rs.)

mod util;

use std::time::Duration;

use util::*;

#[test]
fn five_peers_on_the_lan_find_each_other_and_a_clean_exit_withdraws_one() {
    let mut a = ShellPeer::start_in(tempfile::tempdir().unwrap(), &["--discover"]);
    let b = Peer::start(&["--discover"]);
    b.write("from-b.txt", b"hello from b");
    // Five peers in all: A's shell and four headless ones.
    let others: Vec<Peer> = (0..3).map(|_| Peer::start(&["--discover"])).collect();
    let b_id = id_of(b.dir.path());
    let mut ids: Vec<String> = others.iter().map(|p| id_of(p.dir.path())).collect();
    ids.push(b_id.clone());
    // (A hang guard: mDNS answers within a second or two.)
    let all = wait_for(EVENTUALLY, || {
        let seen: Vec<String> = lan_peers(&mut a)
            .iter()
            .map(|p| p["peer_id"].as_str().unwrap_or("").to_string())
            .collect();
        ids.iter().all(|id| seen.contains(id))
    });
    assert!(all, "{:?}", lan_peers(&mut a));
    let found_b = lan_peers(&mut a)
        .into_iter()
        .find(|p| p["peer_id"] == b_id.as_str())
        .unwrap();
    assert_eq!(found_b["address"], b.addr.as_str());
    assert_eq!(found_b["reachable"], true, "{found_b}");
    // `peer use` takes a prefix of the id; then commands go there.
    let prefix = &b_id[..6];
    let used = a.cmd(&format!("peer use {prefix}"));
    assert!(
        used["message"].as_str().unwrap().contains(&b.addr),
        "{used}"
    );
    let listing = a.cmd("index longlist");
    assert_eq!(listing["files"][0]["name"], "from-b.txt", "{listing}");
    // B leaves cleanly (SIGTERM): its goodbye drops it from A's list.
    b.stop("-TERM");
    let gone = wait_for(EVENTUALLY, || {
        !lan_peers(&mut a)
            .iter()
            .any(|p| p["peer_id"] == b_id.as_str())
    });
    assert!(gone, "{:?}", lan_peers(&mut a));
    let left = lan_peers(&mut a);
    for id in &ids[..3] {
        assert!(left.iter().any(|p| p["peer_id"] == id.as_str()), "{left:?}");
    }
}

#[test]
fn a_peer_on_loopback_is_not_announced_unless_asked() {
    let mut a = ShellPeer::start_in(tempfile::tempdir().unwrap(), &["--discover"]);
    let quiet = Peer::start(&[]);
    let loud = Peer::start(&["--discover"]);
    let loud_id = id_of(loud.dir.path());
    let quiet_id = id_of(quiet.dir.path());
    assert!(wait_for(EVENTUALLY, || {
        lan_peers(&mut a)
            .iter()
            .any(|p| p["peer_id"] == loud_id.as_str())
    }));
    assert!(
        !lan_peers(&mut a)
            .iter()
            .any(|p| p["peer_id"] == quiet_id.as_str())
    );
}

#[test]
fn syncing_peers_of_one_group_sync_by_themselves_and_strangers_never() {
    let keys = tempfile::tempdir().unwrap();
    let ours = new_secret(keys.path(), "ours");
    let theirs = new_secret(keys.path(), "theirs");
    let (ours, theirs) = (ours.to_str().unwrap(), theirs.to_str().unwrap());
    let a = syncing(&["--discover", "--secret-file", ours]);
    a.write("group-file.txt", b"for the group only");
    let b = syncing(&["--discover", "--secret-file", ours]);
    let stranger = syncing(&["--discover", "--secret-file", theirs]);
    // (A hang guard: discovery and a round take a second or two.)
    assert!(
        wait_for(EVENTUALLY, || b.path("group-file.txt").exists()),
        "{}",
        sync_status(b.dir.path())
    );
    assert_eq!(
        std::fs::read(b.path("group-file.txt")).unwrap(),
        b"for the group only"
    );
    // A is B's partner, found on the LAN; the stranger is never made a
    // partner, and gets nothing.
    let a_id = id_of(a.dir.path());
    let status = sync_status(b.dir.path());
    assert!(
        status["partners"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["peer_id"] == a_id.as_str() && q["peer"] == a.addr.as_str()),
        "{status}"
    );
    let stranger_id = id_of(stranger.dir.path());
    for p in [&a, &b] {
        let status = sync_status(p.dir.path());
        let partners = status["partners"].as_array().unwrap();
        assert!(
            !partners
                .iter()
                .any(|q| q["peer_id"] == stranger_id.as_str()),
            "{status}"
        );
    }
    assert!(!stranger.path("group-file.txt").exists());
}

#[test]
fn a_killed_peer_is_dropped_when_its_records_expire() {
    let mut a = ShellPeer::start_in(tempfile::tempdir().unwrap(), &["--discover"]);
    let b = Peer::start(&["--discover"]);
    let b_id = id_of(b.dir.path());
    assert!(wait_for(EVENTUALLY, || {
        lan_peers(&mut a)
            .iter()
            .any(|p| p["peer_id"] == b_id.as_str())
    }));
    // No goodbye: the others learn of it only when its records expire
    // (their TTL is 120 s; this is a hang guard, not a speed check).
    let killed = std::time::Instant::now();
    b.stop("-KILL");
    let gone = wait_for(Duration::from_secs(240), || {
        std::thread::sleep(Duration::from_secs(2));
        !lan_peers(&mut a)
            .iter()
            .any(|p| p["peer_id"] == b_id.as_str())
    });
    eprintln!("a killed peer was dropped after {:?}", killed.elapsed());
    assert!(gone, "{:?}", lan_peers(&mut a));
}

#[test]
fn stores_found_on_the_lan_take_deposits_and_each_other() {
    let zone_store = |z: &str| {
        Peer::start(&[
            "--discover",
            "--store",
            "--zone",
            z,
            "--repair-interval",
            "1",
        ])
    };
    let mut stores = vec![zone_store("za"), zone_store("zb")];
    let mut a = ShellPeer::start_in(tempfile::tempdir().unwrap(), &["--discover"]);
    std::fs::write(a.path("lan.bin"), random_bytes(9, 100_000)).unwrap();
    // No --peer anywhere: the owner finds both stores on the LAN.
    let mut last = serde_json::Value::Null;
    let placed = wait_for(EVENTUALLY, || {
        last = a.cmd("deposit lan.bin --copies 3");
        last["copies_made"] == 2
    });
    assert!(placed, "{last}");
    assert_eq!(last["error"], "2 of 3 copies: only 2 zones reachable");
    // A third zone joins: the stores find it on the LAN and give it a copy.
    stores.push(zone_store("zc"));
    assert!(
        wait_for(EVENTUALLY, || util::stores::holders(&stores, "lan.bin")
            .len()
            == 3),
        "{:?}",
        util::stores::holders(&stores, "lan.bin")
    );
}
