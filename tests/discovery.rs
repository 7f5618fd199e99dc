//! LAN discovery with real peers on loopback (mDNS on the loopback
//! interface, `--discover` since 127.0.0.1 is not announced by default):
//! peers find each other with no `--peer`, show in `peers` as found on the
//! LAN with their id, can be chosen by an id prefix with `peer use`, and a
//! clean exit withdraws a peer from the others' lists at once. Syncing
//! peers of one group (the same secret) sync by themselves; a peer of
//! another group is listed but never synced with.

mod util;

use std::time::Duration;

use util::*;

/// What `peers` says in the shell of the peer `shell`.
fn lan_peers(shell: &mut ShellPeer) -> Vec<serde_json::Value> {
    let answer = shell.cmd("peers");
    answer["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["found"] == "lan")
        .cloned()
        .collect()
}

#[test]
fn peers_on_the_lan_find_each_other_and_a_clean_exit_withdraws_one() {
    let mut a = ShellPeer::start_in(tempfile::tempdir().unwrap(), &["--discover"]);
    let b = Peer::start(&["--discover"]);
    b.write("from-b.txt", b"hello from b");
    let c = Peer::start(&["--discover"]);
    let (b_id, c_id) = (id_of(b.dir.path()), id_of(c.dir.path()));
    // (A hang guard: mDNS answers within a second or two.)
    let both = wait_for(Duration::from_secs(20), || {
        let ids: Vec<String> = lan_peers(&mut a)
            .iter()
            .map(|p| p["peer_id"].as_str().unwrap_or("").to_string())
            .collect();
        ids.contains(&b_id) && ids.contains(&c_id)
    });
    assert!(both, "{:?}", lan_peers(&mut a));
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
    let gone = wait_for(Duration::from_secs(20), || {
        !lan_peers(&mut a)
            .iter()
            .any(|p| p["peer_id"] == b_id.as_str())
    });
    assert!(gone, "{:?}", lan_peers(&mut a));
    assert!(
        lan_peers(&mut a)
            .iter()
            .any(|p| p["peer_id"] == c_id.as_str())
    );
}

#[test]
fn a_peer_on_loopback_is_not_announced_unless_asked() {
    let mut a = ShellPeer::start_in(tempfile::tempdir().unwrap(), &["--discover"]);
    let quiet = Peer::start(&[]);
    let loud = Peer::start(&["--discover"]);
    let loud_id = id_of(loud.dir.path());
    let quiet_id = id_of(quiet.dir.path());
    assert!(wait_for(Duration::from_secs(20), || {
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
        wait_for(Duration::from_secs(30), || b
            .path("group-file.txt")
            .exists()),
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

/// A DNS name in wire form.
fn dns_name(out: &mut Vec<u8>, name: &str) {
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

/// One resource record: name, type, class (cache flush for unique ones),
/// TTL and data.
fn record(out: &mut Vec<u8>, name: &str, rtype: u16, unique: bool, data: &[u8]) {
    dns_name(out, name);
    out.extend_from_slice(&rtype.to_be_bytes());
    let class: u16 = if unique { 0x8001 } else { 1 };
    out.extend_from_slice(&class.to_be_bytes());
    out.extend_from_slice(&120u32.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

/// An unsolicited mDNS answer announcing a made-up peer `n` (PTR, SRV,
/// TXT with a valid-looking id, A), as anyone on the LAN could send.
fn forged_announcement(n: u32, port: u16) -> Vec<u8> {
    let instance = format!("forged{n}._dropbox-shell._tcp.local.");
    let host = format!("forged{n}.local.");
    let id: String = {
        let mut raw = [0u8; 20];
        raw[..4].copy_from_slice(&n.to_be_bytes());
        data_encoding::BASE32_NOPAD.encode(&raw)
    };
    let mut p = vec![0, 0, 0x84, 0, 0, 0, 0, 4, 0, 0, 0, 0];
    let mut ptr = Vec::new();
    dns_name(&mut ptr, &instance);
    record(&mut p, "_dropbox-shell._tcp.local.", 12, false, &ptr);
    let mut srv = vec![0, 0, 0, 0];
    srv.extend_from_slice(&port.to_be_bytes());
    dns_name(&mut srv, &host);
    record(&mut p, &instance, 33, true, &srv);
    let mut txt = Vec::new();
    for kv in [format!("id={id}"), "v=3".into(), "group=".into()] {
        txt.push(kv.len() as u8);
        txt.extend_from_slice(kv.as_bytes());
    }
    record(&mut p, &instance, 16, true, &txt);
    record(&mut p, &host, 1, true, &[127, 0, 0, 1]);
    p
}

#[test]
fn ten_thousand_forged_announcements_leave_memory_bounded_and_the_peer_serving() {
    let mut a = ShellPeer::start_in(tempfile::tempdir().unwrap(), &["--discover"]);
    std::fs::write(a.path("a.txt"), b"still here").unwrap();
    let real = Peer::start(&["--discover"]);
    let real_id = id_of(real.dir.path());
    assert!(wait_for(Duration::from_secs(20), || {
        lan_peers(&mut a)
            .iter()
            .any(|p| p["peer_id"] == real_id.as_str())
    }));
    let before = proc_status(a.child.id(), "VmRSS").unwrap();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    sock.set_multicast_if_v4(&std::net::Ipv4Addr::LOCALHOST)
        .unwrap();
    sock.set_multicast_loop_v4(true).unwrap();
    let group: std::net::SocketAddr = "224.0.0.251:5353".parse().unwrap();
    for n in 0..10_000u32 {
        let _ = sock.send_to(&forged_announcement(n, 9), &group.into());
        if n % 500 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = proc_status(a.child.id(), "VmRSS").unwrap();
    eprintln!(
        "RSS before {} KiB, after 10,000 forged announcements {} KiB",
        before, after
    );
    assert!(after < before + (64 << 10), "{before} KiB -> {after} KiB");
    // It still serves, and the real peer is still listed.
    let me = tempfile::tempdir().unwrap();
    let (code, docs, err) = run_json(me.path(), &a.addr, &["index longlist"]);
    assert_eq!(code, 0, "{docs:?} {err}");
    assert!(
        lan_peers(&mut a)
            .iter()
            .any(|p| p["peer_id"] == real_id.as_str())
    );
}

#[test]
fn a_killed_peer_is_dropped_when_its_records_expire() {
    let mut a = ShellPeer::start_in(tempfile::tempdir().unwrap(), &["--discover"]);
    let b = Peer::start(&["--discover"]);
    let b_id = id_of(b.dir.path());
    assert!(wait_for(Duration::from_secs(20), || {
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
