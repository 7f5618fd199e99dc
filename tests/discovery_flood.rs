//! A flood of forged LAN announcements against a real peer on loopback:
//! 10,000 hand-made mDNS answers, each announcing a made-up peer, leave
//! the peer's memory bounded, the peer serving, and the real peer it
//! found before listed. In a test binary of its own: the forged
//! announcements reach every peer on loopback, and would crowd the lists
//! of the other discovery tests.

mod util;

use std::time::Duration;

use util::*;

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
    for kv in [
        format!("id={id}"),
        format!("v={}", dropbox_shell::proto::VERSION),
        "group=".into(),
    ] {
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
    assert!(wait_for(EVENTUALLY, || {
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
