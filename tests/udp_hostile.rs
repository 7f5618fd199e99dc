//! `download UDP` against odd files and hostile datagrams, with real peers
//! on loopback: a file rewritten or appended to during the transfer, a stale
//! MD5 cache on the server, requests that never acknowledge (amplification,
//! slot exhaustion), a flood of bad requests against the history log,
//! replayed, forged and ticketless datagrams, and a request of an older
//! protocol version. The hand-made requests are sealed under a ticket the
//! test asks for over TCP, as a real client does: the limits hold against
//! authenticated peers, and unauthenticated datagrams get nothing back.

mod util;

use std::fs;
use std::io::Write;
use std::net::{ToSocketAddrs, UdpSocket};
use std::time::Duration;

use dropbox_shell::relay::{Impairment, Relay};
use dropbox_shell::secure::udp::Sealer;
use dropbox_shell::transfer::wire::{Packet, decode, encode};
use util::*;

/// A plaintext request for `name`, padded as a receiver pads it.
fn plain_request(id: u64, name: &str, payload: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let p = Packet::Request {
        attempt: 1,
        payload,
        window: 1024,
        name,
    };
    encode(id, &p, &mut out, payload as usize + 24);
    out
}

/// [`plain_request`], sealed under the ticket of `sealer`.
fn request(sealer: &mut Sealer, id: u64, name: &str, payload: u32) -> Vec<u8> {
    let mut out = Vec::new();
    assert!(sealer.seal(&plain_request(id, name, payload), &mut out));
    out
}

/// Size of the transfer's temporary file in `dir`, if there is one.
fn part_len(dir: &std::path::Path) -> Option<u64> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".dbsh-part"))
        .and_then(|e| e.metadata().ok())
        .map(|m| m.len())
}

fn raw_socket(server: &Peer) -> UdpSocket {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(&server.addr).unwrap();
    sock
}

/// Download `big.bin` slowly (a lossy relay, small datagrams) while
/// `change` alters it on the server once the transfer is under way; the
/// result is one whole version (`versions`) or a clean failure.
fn download_while_changing(
    loss: f64,
    old: &[u8],
    change: impl FnOnce(&std::path::Path) -> Vec<u8> + Send + 'static,
) {
    let server = Peer::start(&[]);
    server.write("big.bin", old);
    let target = server.addr.to_socket_addrs().unwrap().next().unwrap();
    let imp = Impairment {
        loss,
        seed: 8,
        ..Default::default()
    };
    let relay = Relay::start("127.0.0.1:0", target, imp).unwrap();
    let me = tempfile::tempdir().unwrap();
    fs::write(me.path().join("big.bin"), b"precious old copy").unwrap();
    let dir = me.path().to_path_buf();
    let path = server.path("big.bin");
    let writer = std::thread::spawn(move || {
        // Well under way: a part of the old version has been sent.
        let started = wait_for(EVENTUALLY, || part_len(&dir).is_some_and(|n| n >= 1 << 20));
        assert!(started, "the transfer never started");
        let new = change(&path);
        // Whether the transfer was still running when the change landed.
        (new, part_len(&dir).is_some())
    });
    let out = run(
        me.path(),
        &relay.local_addr().to_string(),
        &["download UDP big.bin"],
        &["--json", "--udp-payload", "1024"],
    );
    let (new, overlapped) = writer.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.code() == Some(0) {
        let got = fs::read(me.path().join("big.bin")).unwrap();
        assert!(
            got == old || got == new,
            "a torn file was delivered: {text}"
        );
        let doc: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        let attempts = doc["attempts"].as_u64().unwrap();
        if overlapped && got == new {
            // The change was caught mid-transfer: a retry sent it whole.
            assert!(attempts >= 2, "{doc}");
        } else if overlapped {
            // The old version whole: only if the change came after the
            // sender's last check, so in one attempt (a machine slow
            // enough to let the change land that late is not a failure).
            assert_eq!(attempts, 1, "the old version after a retry: {doc}");
        }
    } else {
        assert!(text.contains("changed"), "{text}");
        assert_only_the_old_copy(me.path(), "big.bin", b"precious old copy");
    }
}

#[test]
fn a_file_rewritten_in_place_during_the_transfer_never_arrives_torn() {
    let old = random_bytes(80, 12 << 20);
    // No loss: no retransmission re-reads a changed chunk, so nothing but
    // the change check can tell (the sender's MD5 is of what it sent).
    download_while_changing(0.0, &old, move |path| {
        let new = random_bytes(81, 12 << 20);
        // In place: same inode, same size, no truncation.
        let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all(&new).unwrap();
        new
    });
}

#[test]
fn a_file_appended_to_during_the_transfer_never_arrives_as_a_prefix() {
    let old = random_bytes(82, 12 << 20);
    let mut new = old.clone();
    download_while_changing(0.05, &old, move |path| {
        let tail = random_bytes(83, 1 << 20);
        let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(&tail).unwrap();
        new.extend_from_slice(&tail);
        new
    });
}

#[test]
fn a_wrong_md5_in_the_server_cache_costs_one_retry_not_the_download() {
    let server = Peer::start(&[]);
    let data = random_bytes(90, 300_000);
    server.write("a.bin", &data);
    let me = tempfile::tempdir().unwrap();
    let (code, docs, err) = run_json(me.path(), &server.addr, &["hash verify a.bin"]);
    assert_eq!(code, 0, "{docs:?} {err}");
    let dir = server.stop("-TERM");
    // Plant a wrong MD5 under the right key (whatever fields the key has).
    let cache = dir.path().join(".dropbox-shell/md5-cache.json");
    let mut map: serde_json::Value = serde_json::from_slice(&fs::read(&cache).unwrap()).unwrap();
    map["a.bin"]["md5"] = serde_json::json!(vec![0u8; 16]);
    fs::write(&cache, serde_json::to_vec(&map).unwrap()).unwrap();
    let server = Peer::start_in(dir, &[]);
    let (code, docs, err) = run_json(me.path(), &server.addr, &["download UDP a.bin"]);
    assert_eq!(code, 0, "{docs:?} {err}");
    assert_eq!(docs[0]["attempts"], 2, "{docs:?}");
    assert_eq!(docs[0]["md5"], md5_hex(&data).as_str());
    assert!(fs::read(me.path().join("a.bin")).unwrap() == data);
}

/// Everything that comes back on `sock` until it is quiet for a while.
fn bytes_back(sock: &UdpSocket) -> u64 {
    sock.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut total = 0;
    while let Ok(n) = sock.recv(&mut buf) {
        total += n as u64;
    }
    total
}

#[test]
fn an_unacknowledged_request_gets_at_most_three_times_its_size_back() {
    let server = Peer::start(&["--udp-timeout", "3"]);
    server.write("big.bin", &random_bytes(91, 8 << 20));
    let mut sealer = udp_ticket(&server.addr);
    for payload in [1448, 16_000, 64_512] {
        let sock = raw_socket(&server);
        let req = request(&mut sealer, 7, "big.bin", payload);
        sock.send(&req).unwrap();
        let back = bytes_back(&sock);
        assert!(back > 0, "the meta is sent");
        assert!(
            back <= 3 * req.len() as u64,
            "{back} bytes back for a request of {}",
            req.len()
        );
    }
    // An error answer is cut to the same budget.
    let sock = raw_socket(&server);
    let name = "n".repeat(3000);
    let mut req = Vec::new();
    let p = Packet::Request {
        attempt: 1,
        payload: 16,
        window: 1,
        name: &name,
    };
    encode(9, &p, &mut req, 0);
    let mut sealed = Vec::new();
    sealer.seal(&req, &mut sealed);
    let req = sealed;
    sock.send(&req[..]).unwrap();
    let back = bytes_back(&sock);
    assert!(back > 0 && back <= 3 * req.len() as u64, "{back}");
}

#[test]
fn requests_that_never_acknowledge_do_not_make_the_peer_busy() {
    let server = Peer::start(&[]);
    let data = random_bytes(92, 12 << 20);
    server.write("big.bin", &data);
    // 200 requests from 200 addresses, none of which ever acknowledges.
    let mut sealer = udp_ticket(&server.addr);
    let socks: Vec<UdpSocket> = (0..200u64)
        .map(|i| {
            let s = raw_socket(&server);
            s.send(&request(&mut sealer, i, "big.bin", 1448)).unwrap();
            s
        })
        .collect();
    let me = tempfile::tempdir().unwrap();
    let (code, docs, err) = run_json(me.path(), &server.addr, &["download UDP big.bin"]);
    assert_eq!(code, 0, "{docs:?} {err}");
    assert!(fs::read(me.path().join("big.bin")).unwrap() == data);
    drop(socks);
    // And a download under way is never dropped for new unproven requests.
    let target = server.addr.to_socket_addrs().unwrap().next().unwrap();
    let imp = Impairment {
        loss: 0.05,
        seed: 9,
        ..Default::default()
    };
    let relay = Relay::start("127.0.0.1:0", target, imp).unwrap();
    let me = tempfile::tempdir().unwrap();
    let dir = me.path().to_path_buf();
    let addr = server.addr.clone();
    let flood = std::thread::spawn(move || {
        assert!(wait_for_part_file(&dir), "the transfer never started");
        let socks = (0..200u64)
            .map(|i| {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.connect(&addr).unwrap();
                s.send(&request(&mut sealer, 1000 + i, "big.bin", 1448))
                    .unwrap();
                s
            })
            .collect::<Vec<_>>();
        (socks, part_len(&dir).is_some())
    });
    let out = run(
        me.path(),
        &relay.local_addr().to_string(),
        &["download UDP big.bin"],
        &["--json", "--udp-payload", "1024"],
    );
    let (socks, overlapped) = flood.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(overlapped, "the requests came after the download ended");
    assert!(fs::read(me.path().join("big.bin")).unwrap() == data);
    drop(socks);
}

#[test]
fn a_flood_of_bad_requests_does_not_rotate_the_history_away() {
    let mut server = ShellPeer::start_in(tempfile::tempdir().unwrap(), &[]);
    fs::write(server.path("small.txt"), b"hello\n").unwrap();
    let me = tempfile::tempdir().unwrap();
    let (code, docs, err) = run_json(me.path(), &server.addr, &["download UDP small.txt"]);
    assert_eq!(code, 0, "{docs:?} {err}");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(&server.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = vec![0u8; 65536];
    let mut answered = 0;
    let mut sealer = udp_ticket(&server.addr);
    for i in 0..10_000u64 {
        sock.send(&request(&mut sealer, i, &format!("nope-{i}"), 16))
            .unwrap();
        // Wait for the refusal, so that the server has logged (or not) each.
        if let Ok(n) = sock.recv(&mut buf) {
            let inner = sealer.open(&mut buf[..n]).unwrap();
            assert!(matches!(decode(inner), Some((_, Packet::Error { .. }))));
            answered += 1;
        }
    }
    assert!(answered > 9_000, "{answered} refusals came back");
    // The next request logged says how many refusals were left out.
    let (code, docs, err) = run_json(me.path(), &server.addr, &["download UDP small.txt"]);
    assert_eq!(code, 0, "{docs:?} {err}");
    let log = fs::read_to_string(server.path(".dropbox-shell/history.log")).unwrap();
    let lines = log.lines().count();
    assert!(lines < 1_000, "{lines} lines in the history log");
    assert!(log.contains("refused requests were not logged"));
    let answer = server.cmd("history 100");
    let recs = answer["history"].as_array().unwrap();
    assert!(
        recs.iter()
            .any(|r| r["command"] == "download UDP small.txt" && r["outcome"] == "ok"),
        "{answer}"
    );
}

#[test]
fn a_request_of_an_older_protocol_version_gets_a_clear_error() {
    let server = Peer::start(&[]);
    let sock = raw_socket(&server);
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Version 2 (plaintext, as peers before encryption sent it) and
    // version 1 (the same header with another version byte).
    for version in [2u8, 1] {
        let mut req = plain_request(3, "x", 1448);
        req[2] = version;
        let n = req.len() - 4;
        let crc = crc32fast::hash(&req[..n]);
        req[n..].copy_from_slice(&crc.to_be_bytes());
        sock.send(&req).unwrap();
        let mut buf = vec![0u8; 65536];
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(buf[2], version, "answered in its own framing");
        let text = String::from_utf8_lossy(&buf[12..n - 4]).into_owned();
        assert!(text.contains("protocol version 3"), "{text}");
        assert!(
            n <= req.len(),
            "an answer in clear is no bigger than the request"
        );
    }
}

/// Whether anything comes back on `sock` within a second.
fn answered(sock: &UdpSocket) -> bool {
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    sock.recv(&mut [0u8; 65536]).is_ok()
}

#[test]
fn replayed_forged_and_ticketless_requests_get_nothing_back() {
    let server = Peer::start(&[]);
    server.write("a.txt", b"hello\n");
    let mut sealer = udp_ticket(&server.addr);
    // A good request gets the meta.
    let sock = raw_socket(&server);
    let req = request(&mut sealer, 1, "a.txt", 1448);
    sock.send(&req).unwrap();
    assert!(answered(&sock), "a sealed request is answered");
    let _ = bytes_back(&sock);
    // The same datagram again (after its transfer gave up, from another
    // address too) is a replay: nothing.
    let other = raw_socket(&server);
    other.send(&req).unwrap();
    assert!(!answered(&other), "a replayed request was answered");
    // One flipped bit: nothing.
    let mut bad = request(&mut sealer, 2, "a.txt", 1448);
    bad[40] ^= 4;
    other.send(&bad).unwrap();
    assert!(!answered(&other), "a forged request was answered");
    // A well-formed request under the real ticket's number, sealed with
    // another key (only the AEAD can tell): nothing.
    let forged = dropbox_shell::secure::udp::Ticket {
        id: sealer.ticket(),
        secret: [9; 32],
    };
    let mut forger = Sealer::new(&forged, dropbox_shell::secure::udp::Side::Client);
    // (Its packet numbers count from 0 as well: the first is taken for a
    // replay before any key is tried, the next ones reach the AEAD.)
    for _ in 0..3 {
        other.send(&request(&mut forger, 5, "a.txt", 1448)).unwrap();
    }
    assert!(
        !answered(&other),
        "a request sealed with another key was answered"
    );
    // A ticket the server never gave: nothing.
    let made_up = dropbox_shell::secure::udp::Ticket::random().unwrap();
    let mut stranger = Sealer::new(&made_up, dropbox_shell::secure::udp::Side::Client);
    other
        .send(&request(&mut stranger, 3, "a.txt", 1448))
        .unwrap();
    assert!(
        !answered(&other),
        "a request under a made-up ticket was answered"
    );
    // The peer still serves the real ticket.
    other.send(&request(&mut sealer, 4, "a.txt", 1448)).unwrap();
    assert!(answered(&other));
}
