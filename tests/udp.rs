//! `download UDP` between real peers, directly and through a relay that
//! loses, duplicates, reorders, corrupts and replays datagrams: every
//! datagram is sealed, so corrupted ones are dropped as forged and old
//! ones as replays, and both are counted.

mod util;

use std::fs;
use std::net::ToSocketAddrs;
use std::process::{Command, Stdio};
use std::time::Duration;

use dropbox_shell::relay::{Impairment, Relay};
use util::*;

/// Download 64 MiB through a relay with `imp`; the report.
fn through(imp: Impairment, server: &Peer) -> serde_json::Value {
    let data = random_bytes(imp.seed, 64 << 20);
    server.write("big.bin", &data);
    let target = server.addr.to_socket_addrs().unwrap().next().unwrap();
    let relay = Relay::start("127.0.0.1:0", target, imp).unwrap();
    let me = tempfile::tempdir().unwrap();
    let (code, docs, err) = run_json(
        me.path(),
        &relay.local_addr().to_string(),
        &["download UDP big.bin"],
    );
    assert_eq!(code, 0, "{docs:?} {err}");
    let d = &docs[0];
    assert_eq!(d["protocol"], "UDP");
    assert_eq!(d["md5"], md5_hex(&data).as_str());
    assert!(d["attempts"].as_u64().unwrap() >= 1);
    assert!(fs::read(me.path().join("big.bin")).unwrap() == data);
    assert_eq!(visible_files(me.path()), vec!["big.bin"]);
    d.clone()
}

fn through_relay(loss: f64, seed: u64) {
    let imp = Impairment {
        loss,
        duplicate: loss / 5.0,
        reorder: loss / 2.0,
        corrupt: loss / 10.0,
        replay: loss / 10.0,
        seed,
    };
    let d = through(imp, &Peer::start(&[]));
    if loss > 0.0 {
        for n in ["retransmissions", "dropped_datagrams", "replayed_datagrams"] {
            assert!(d[n].as_u64().unwrap() > 0, "{n}: {d}");
        }
    }
}

#[test]
fn bit_flips_are_dropped_as_forged_and_counted_on_both_sides() {
    let server = Peer::start(&[]);
    let imp = Impairment {
        corrupt: 0.03,
        loss: 0.01,
        seed: 11,
        ..Default::default()
    };
    let d = through(imp, &server);
    assert!(d["dropped_datagrams"].as_u64().unwrap() > 0, "{d}");
    // The server counted the flipped acknowledgements too (its line is
    // written when the transfer's end reaches it).
    let log = || fs::read_to_string(server.path(".dropbox-shell/history.log")).unwrap();
    let counted = wait_for(EVENTUALLY, || {
        log()
            .lines()
            .any(|l| l.contains("download UDP big.bin") && l.contains("failed authentication"))
    });
    assert!(counted, "{}", log());
}

#[test]
fn replayed_datagrams_are_ignored_and_counted() {
    // Replays only (no duplicates): every one counted comes from the
    // relay's sending of old datagrams again.
    let imp = Impairment {
        replay: 0.05,
        seed: 12,
        ..Default::default()
    };
    let d = through(imp, &Peer::start(&[]));
    assert!(d["replayed_datagrams"].as_u64().unwrap() > 0, "{d}");
    assert_eq!(d["dropped_datagrams"], 0, "{d}");
}

#[test]
fn sixty_four_mib_through_a_clean_relay() {
    through_relay(0.0, 1);
}

#[test]
fn sixty_four_mib_at_ten_percent_loss() {
    through_relay(0.10, 2);
}

#[test]
fn sixty_four_mib_at_thirty_percent_loss() {
    through_relay(0.30, 3);
}

#[test]
fn direct_download_keeps_mode_and_mtime_and_small_payloads_work() {
    let server = Peer::start(&[]);
    let data = random_bytes(4, 3 << 20);
    server.write("d/x.bin", &data);
    server.write("empty", b"");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(server.path("d/x.bin"), fs::Permissions::from_mode(0o751)).unwrap();
    let when = filetime::FileTime::from_unix_time(1_234_567_890, 5);
    filetime::set_file_mtime(server.path("d/x.bin"), when).unwrap();
    for payload in [None, Some("1448"), Some("512")] {
        let me = tempfile::tempdir().unwrap();
        let mut extra = vec!["--json"];
        if let Some(p) = payload {
            extra.extend(["--udp-payload", p]);
        }
        let out = run(
            me.path(),
            &server.addr,
            &["download UDP d/x.bin", "download udp empty"],
            &extra,
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(fs::read(me.path().join("d/x.bin")).unwrap() == data);
        assert_eq!(fs::read(me.path().join("empty")).unwrap(), b"");
        let m = fs::metadata(me.path().join("d/x.bin")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o751);
        assert_eq!(filetime::FileTime::from_last_modification_time(&m), when);
    }
}

#[test]
fn a_killed_server_ends_the_transfer_in_bounded_time_and_keeps_the_old_copy() {
    let server = Peer::start(&[]);
    server.write("big.bin", &random_bytes(5, 64 << 20));
    let target = server.addr.to_socket_addrs().unwrap().next().unwrap();
    // A lossy relay slows the transfer so the kill lands in the middle.
    let relay = Relay::start(
        "127.0.0.1:0",
        target,
        Impairment {
            loss: 0.3,
            seed: 5,
            ..Default::default()
        },
    )
    .unwrap();
    let me = tempfile::tempdir().unwrap();
    fs::write(me.path().join("big.bin"), b"precious old copy").unwrap();
    let client = bin()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--json",
            "--udp-timeout",
            "2",
            "--dir",
        ])
        .arg(me.path())
        .args([
            "--peer",
            &relay.local_addr().to_string(),
            "-c",
            "download UDP big.bin",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the server once the transfer is under way (its temporary file exists).
    let started = wait_for_part_file(me.path());
    assert!(started, "the transfer never started");
    server.signal("-KILL");
    // A watchdog, not a speed check: a client that never gives up is killed
    // (and then fails the assertions below).
    let pid = client.id();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    });
    let out = client.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the client did not end by itself: {text}"
    );
    assert!(text.contains("silent"), "{text}");
    assert_only_the_old_copy(me.path(), "big.bin", b"precious old copy");
}

#[test]
fn a_peer_that_does_not_answer_udp_is_a_clear_error() {
    // A peer that gives a ticket over TCP; on its UDP port nobody
    // answers: the request goes unanswered.
    let addr = fake_peer(|req, w| {
        if req == dropbox_shell::proto::Request::UdpTicket {
            let t = dropbox_shell::secure::udp::Ticket::random().unwrap();
            let answer = dropbox_shell::proto::Response::UdpTicket {
                ticket: t.id,
                secret: t.secret_hex(),
            };
            dropbox_shell::proto::write_msg(w, &answer).unwrap();
        }
    });
    let sock = std::net::UdpSocket::bind(&addr).unwrap();
    let me = tempfile::tempdir().unwrap();
    let out = run(
        me.path(),
        &addr,
        &["download UDP x"],
        &["--json", "--udp-timeout", "1"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("did not answer"), "{text}");
    drop(sock);
    let out = run(
        me.path(),
        &addr,
        &["download UDP x"],
        &["--json", "--udp-timeout", "1"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("not listening") || text.contains("did not answer"),
        "{text}"
    );
}
