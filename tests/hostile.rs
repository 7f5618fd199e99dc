//! What a hostile peer, an odd file or a careless default can do: every
//! case a defect once let through, each against the real binary on
//! loopback (or a fake peer built from the library's own protocol parts).

mod util;

use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use dropbox_shell::proto::{self, FileMeta, Request, Response};
use util::*;

fn send_file(s: &mut RawOut, name: &str, data: &[u8], mode: u32, md5: &str) {
    let meta = FileMeta {
        name: name.into(),
        size: data.len() as u64,
        mtime_ns: 1_600_000_000_000_000_000,
        mode,
    };
    proto::write_msg(s, &Response::File { meta }).unwrap();
    s.write_all(data).unwrap();
    proto::write_msg(s, &Response::Done { md5: md5.into() }).unwrap();
}

fn umask() -> u32 {
    dropbox_shell::folder::umask()
}

fn mode_of(p: &std::path::Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn mkfifo(p: &std::path::Path) {
    assert!(Command::new("mkfifo").arg(p).status().unwrap().success());
}

#[test]
fn a_sender_whose_md5_never_matches_never_replaces_the_local_file() {
    let addr = fake_peer(|req, s| {
        if let Request::Download { name, .. } = req {
            send_file(s, &name, b"forged bytes", 0o644, &"0".repeat(32));
        }
    });
    let me = tempfile::tempdir().unwrap();
    fs::write(me.path().join("f.bin"), b"old").unwrap();
    let (code, docs, _) = run_json(me.path(), &addr, &["download TCP f.bin"]);
    assert_eq!(code, 1);
    let e = docs[0]["error"].as_str().unwrap();
    assert!(e.contains("MD5 mismatch"), "{e}");
    assert_only_the_old_copy(me.path(), "f.bin", b"old");
}

#[test]
fn an_edit_that_sets_the_mtime_back_is_seen_by_hash_and_download() {
    let server = Peer::start(&[]);
    let me = tempfile::tempdir().unwrap();
    let touch = |p: &std::path::Path| {
        let t = filetime::FileTime::from_unix_time(1_714_557_600, 0);
        filetime::set_file_mtime(p, t).unwrap();
    };
    let a = server.path("a.txt");
    fs::write(&a, b"hello\n").unwrap();
    touch(&a);
    let (_, docs, _) = run_json(me.path(), &server.addr, &["hash verify a.txt"]);
    assert_eq!(docs[0]["files"][0]["md5"], md5_hex(b"hello\n"));
    // Same size, same mtime, other bytes.
    std::thread::sleep(Duration::from_millis(20));
    fs::write(&a, b"HELLO\n").unwrap();
    touch(&a);
    let (code, docs, _) = run_json(
        me.path(),
        &server.addr,
        &["hash verify a.txt", "download TCP a.txt"],
    );
    assert_eq!(code, 0, "{docs:?}");
    assert_eq!(docs[0]["files"][0]["md5"], md5_hex(b"HELLO\n"));
    assert_eq!(docs[1]["attempts"], 1);
    assert_eq!(fs::read(me.path().join("a.txt")).unwrap(), b"HELLO\n");
}

#[test]
fn a_fifo_is_refused_at_once_and_holds_no_thread() {
    // Few slots: six requests that each held one would leave none.
    let server = Peer::start(&["--max-connections", "4"]);
    fs::create_dir(server.path("weird")).unwrap();
    mkfifo(&server.path("weird/fifo"));
    server.write("ok.txt", b"fine");
    let me = tempfile::tempdir().unwrap();
    // More requests than connection slots: a held slot would show.
    let mut cmds = Vec::new();
    for _ in 0..3 {
        cmds.extend([
            "download UDP weird/fifo",
            "download TCP weird/fifo",
            "hash verify weird/fifo",
        ]);
    }
    cmds.extend(["download UDP ok.txt", "download TCP ok.txt"]);
    let (code, docs, err) = run_json(me.path(), &server.addr, &cmds);
    assert_eq!(code, 1, "{err}");
    for d in &docs[..9] {
        let e = d["error"].as_str().unwrap_or_else(|| panic!("{d}"));
        assert!(e.contains("not a regular file"), "{e}");
    }
    assert_eq!(docs[9]["md5"], md5_hex(b"fine"), "{}", docs[9]);
    assert_eq!(docs[10]["md5"], md5_hex(b"fine"), "{}", docs[10]);
    // `hash checkall` walks past it.
    let (code, docs, _) = run_json(me.path(), &server.addr, &["hash checkall"]);
    assert_eq!(code, 0);
    assert_eq!(docs[0]["files"].as_array().unwrap().len(), 1);
}

#[test]
fn uploading_a_fifo_is_a_clear_error_not_a_hang() {
    let server = Peer::start(&["--allow-upload"]);
    let me = tempfile::tempdir().unwrap();
    mkfifo(&me.path().join("myfifo"));
    let (code, docs, _) = run_json(me.path(), &server.addr, &["upload myfifo"]);
    assert_eq!(code, 1);
    let e = docs[0]["error"].as_str().unwrap();
    assert!(e.contains("not a regular file"), "{e}");
    assert!(!server.path("myfifo").exists());
}

#[test]
fn setuid_setgid_and_sticky_never_travel() {
    let server = Peer::start(&["--allow-upload"]);
    server.write("suid", b"#!/bin/sh\n");
    fs::set_permissions(server.path("suid"), fs::Permissions::from_mode(0o6755)).unwrap();
    let me = tempfile::tempdir().unwrap();
    fs::write(me.path().join("mine"), b"x").unwrap();
    fs::set_permissions(me.path().join("mine"), fs::Permissions::from_mode(0o4777)).unwrap();
    let (code, docs, err) = run_json(
        me.path(),
        &server.addr,
        &["index longlist", "download TCP suid", "upload mine"],
    );
    assert_eq!(code, 0, "{docs:?} {err}");
    // Listed with its permission bits only.
    let suid = docs[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "suid")
        .unwrap();
    assert_eq!(suid["mode"], "0755");
    assert_eq!(mode_of(&me.path().join("suid")), 0o755 & !umask());
    assert_eq!(mode_of(&server.path("mine")), 0o777 & !umask());
    // A malicious peer announcing a setuid mode gets nothing of it.
    let evil = fake_peer(|req, s| {
        if let Request::Download { name, .. } = req {
            let md5 = md5_hex(b"payload");
            send_file(s, &name, b"payload", 0o4777, &md5);
        }
    });
    let (code, _, _) = run_json(me.path(), &evil, &["download TCP evil"]);
    assert_eq!(code, 0);
    assert_eq!(mode_of(&me.path().join("evil")), 0o777 & !umask());
}

fn resident_mib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS").unwrap() >> 10
}

/// Open a sync exchange as `peer_id` on a raw connection: the hello and
/// its answer.
fn sync_hello(s: &mut impl Write, r: &mut impl std::io::Read, peer_id: &str) -> Response {
    let hello = Request::SyncHello {
        peer_id: peer_id.into(),
        listen_port: 1,
        index_id: "flood-index".into(),
        seen: None,
    };
    proto::write_msg(s, &hello).unwrap();
    proto::read_msg::<Response>(r, &mut Vec::new()).unwrap()
}

#[test]
fn endless_sync_entries_are_cut_off_and_memory_and_disk_stay_bounded() {
    // Even on a peer without --sync: exchanges are answered there too.
    let server = Peer::start(&[]);
    let (mut s, mut r, me) = raw_client(&server.addr);
    let answer = sync_hello(&mut s, &mut r, &me);
    assert!(matches!(answer, Response::SyncHello { .. }), "{answer:?}");
    let mut n = 0usize;
    let mut batch = || {
        let entries = flood_batch(n + 1);
        n += entries.len();
        let mut frame = Vec::new();
        proto::write_msg(
            &mut frame,
            &Request::SyncDelta {
                entries,
                more: true,
            },
        )
        .unwrap();
        frame
    };
    // 640 MiB of names, far past what one exchange may bring (128 MiB).
    let mut sent = 0usize;
    let mut cut_off = false;
    while sent < 640 << 20 {
        let frame = batch();
        if s.write_all(&frame).is_err() {
            cut_off = true;
            break;
        }
        sent += frame.len();
    }
    match proto::read_msg::<Response>(&mut r, &mut Vec::new()) {
        Ok(Response::Error { message }) => {
            assert!(message.contains("MiB"), "{message}");
            cut_off = true;
        }
        other => assert!(cut_off, "{other:?} after {} MiB", sent >> 20),
    }
    assert!(cut_off, "the peer took all {} MiB", sent >> 20);
    let rss = resident_mib(server.child.id());
    assert!(rss < 400, "the peer holds {rss} MiB");
    let db = fs::metadata(server.path(".dropbox-shell/sync.db"))
        .unwrap()
        .len()
        + fs::metadata(server.path(".dropbox-shell/sync.db-wal")).map_or(0, |m| m.len());
    assert!(db < 600 << 20, "the sync database holds {} MiB", db >> 20);
    // It still serves.
    let me = tempfile::tempdir().unwrap();
    let (code, _, err) = run_json(me.path(), &server.addr, &["index longlist"]);
    assert_eq!(code, 0, "{err}");
}

/// A batch of 2,000 sync entries numbered from `first`, each a name of
/// about 1.9 KiB: 4 MiB of names a frame.
fn flood_batch(first: usize) -> Vec<proto::SyncEntry> {
    (first..first + 2000)
        .map(|n| proto::SyncEntry {
            name: format!("{n:08}-{}", "x".repeat(1900)),
            kind: proto::Kind::File,
            size: 1,
            mtime_ns: 1,
            mode: 0o644,
            md5: Some("0".repeat(32)),
            deleted: false,
            agreed: false,
            ignored: false,
            seq: n as u64,
        })
        .collect()
}

/// A sync partner that answers a hello with its own, then, once the
/// syncing peer has sent its entries, streams [`flood_batch`]es without
/// end (`more` always set). Returns its address and a channel that tells
/// how many MiB it got out before the peer hung up.
fn endless_partner() -> (String, std::sync::mpsc::Receiver<usize>) {
    let creds = new_credentials();
    let id = creds.keys.id().to_string();
    let (told, cut) = std::sync::mpsc::channel();
    let addr = fake_peer_with(creds, move |req, w| {
        let answer = match req {
            Request::SyncHello { .. } => Response::SyncHello {
                peer_id: id.clone(),
                index_id: "endless".into(),
                seen: None,
            },
            Request::SyncDelta { more: true, .. } => return,
            Request::SyncDelta { more: false, .. } => {
                let mut sent = 0usize;
                for k in 0usize.. {
                    let mut frame = Vec::new();
                    let batch = Response::SyncDelta {
                        entries: flood_batch(k * 2000 + 1),
                        more: true,
                    };
                    proto::write_msg(&mut frame, &batch).unwrap();
                    if w.write_all(&frame).is_err() {
                        break;
                    }
                    sent += frame.len();
                }
                let _ = told.send(sent >> 20);
                return;
            }
            _ => Response::Error {
                message: "not here".into(),
            },
        };
        let _ = proto::write_msg(w, &answer);
    });
    (addr, cut)
}

#[test]
fn a_sync_partner_streaming_endless_entries_is_cut_off_and_the_peer_goes_on() {
    let (partner, cut) = endless_partner();
    let me = Peer::start(&["--sync", "--interval", "3600", "--peer", &partner]);
    // The exchange stops at its bound (128 MiB of names), well before this.
    let sent = cut
        .recv_timeout(EVENTUALLY)
        .expect("the peer kept taking entries");
    assert!(sent < 640, "the peer took {sent} MiB of entries");
    let rss = resident_mib(me.child.id());
    assert!(rss < 400, "the peer holds {rss} MiB");
    let db = fs::metadata(me.path(".dropbox-shell/sync.db"))
        .unwrap()
        .len()
        + fs::metadata(me.path(".dropbox-shell/sync.db-wal")).map_or(0, |m| m.len());
    assert!(db < 600 << 20, "the sync database holds {} MiB", db >> 20);
    // The round says why it failed, and the peer still serves.
    let said = wait_for(EVENTUALLY, || {
        fs::read_to_string(me.path(".dropbox-shell/history.log"))
            .is_ok_and(|h| h.contains("MiB of names in one exchange; refused"))
    });
    assert!(said, "no refusal in the history");
    let other = tempfile::tempdir().unwrap();
    let (code, _, err) = run_json(other.path(), &me.addr, &["index longlist"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_server_streaming_endless_entries_is_cut_off() {
    let addr = fake_peer(|req, s| {
        if let Request::Index { .. } = req {
            let entries: Vec<proto::Entry> = (0..2000)
                .map(|i| proto::Entry {
                    name: format!("{i}-{}", "y".repeat(2000)),
                    size: 1,
                    mtime_ns: 1,
                    kind: proto::Kind::File,
                    mode: 0o644,
                })
                .collect();
            let mut frame = Vec::new();
            proto::write_msg(&mut frame, &Response::Entries { entries }).unwrap();
            // Endless, until the client hangs up.
            while s.write_all(&frame).is_ok() {}
        }
    });
    let me = tempfile::tempdir().unwrap();
    let mut child = bin()
        .args(["--json", "--peer", &addr, "-c", "index longlist", "--dir"])
        .arg(me.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    let ended = wait_for(EVENTUALLY, || {
        if let Some(kb) = proc_status(pid, "VmRSS") {
            peak = peak.max(kb >> 10);
        }
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(ended, "the client kept reading");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("MiB; refused"), "{text}");
    assert!(peak < 800, "the client held {peak} MiB");
}

#[test]
fn a_huge_or_costly_regex_is_refused_by_the_server() {
    let server = Peer::start(&[]);
    server.write("a.txt", b"a");
    let (mut s, mut r, _) = raw_client(&server.addr);
    let mut buf = Vec::new();
    for (expr, says) in [
        ("a".repeat(3 << 20), "at most 4096"),
        (r"\w{1000}{1000}".to_string(), "bad regular expression"),
    ] {
        let req = Request::Index {
            filter: proto::Filter::Regex { expr },
        };
        proto::write_msg(&mut s, &req).unwrap();
        match proto::read_msg::<Response>(&mut r, &mut buf).unwrap() {
            Response::Error { message } => assert!(message.contains(says), "{message}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(resident_mib(server.child.id()) < 200);
}

#[test]
fn a_client_trickling_a_byte_now_and_then_loses_its_slot_after_the_timeout() {
    let server = Peer::start(&["--io-timeout", "2", "--max-connections", "1"]);
    server.write("a.txt", b"a");
    let (mut s, _r, _) = raw_client(&server.addr);
    // A frame that announces 1 MiB, then one byte every 300 ms.
    s.write_all(&(1u32 << 20).to_be_bytes()).unwrap();
    s.write_all(&[0]).unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(300));
            if s.write_all(b" ").is_err() {
                return true;
            }
        }
        false
    });
    // Well past the 2 s timeout (and far short of the 30 s of trickling).
    assert!(
        trickle.join().unwrap(),
        "the trickling client kept its connection"
    );
    let me = tempfile::tempdir().unwrap();
    let (code, _, err) = run_json(me.path(), &server.addr, &["index longlist"]);
    assert_eq!(code, 0, "the slot is free again: {err}");
}

fn part_files(dir: &std::path::Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".dbsh-part"))
        .collect()
}

#[test]
fn a_part_file_left_by_a_kill_is_cleared_by_the_next_run() {
    let server = Peer::start(&[]);
    server.write("big.bin", &random_bytes(1, 300 << 20));
    server.write("small.txt", b"small");
    let me = tempfile::tempdir().unwrap();
    // A client only, killed with SIGKILL while its download runs.
    let mut client = bin()
        .args([
            "--peer",
            &server.addr,
            "-c",
            "download TCP big.bin",
            "--dir",
        ])
        .arg(me.path())
        .spawn()
        .unwrap();
    assert!(wait_for_part_file(me.path()));
    client.kill().unwrap();
    client.wait().unwrap();
    assert_eq!(
        part_files(me.path()).len(),
        1,
        "the kill left its part file"
    );
    // The next client-only run that receives a file into that folder clears it.
    run_client_only(me.path(), &server.addr, "download TCP small.txt");
    assert!(
        part_files(me.path()).is_empty(),
        "{:?}",
        part_files(me.path())
    );
    // A serving peer clears them anywhere in its folder at start.
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("deep")).unwrap();
    fs::write(dir.path().join("deep/.x.abc123.dbsh-part"), b"half").unwrap();
    let peer = Peer::start_in(dir, &[]);
    assert!(wait_for(EVENTUALLY, || part_files(peer.dir.path()).is_empty()));
}

#[test]
fn a_name_that_is_not_utf8_is_reported_not_dropped_in_silence() {
    use std::os::unix::ffi::OsStrExt;
    let server = Peer::start(&[]);
    server.write("fine.txt", b"fine");
    let odd = std::ffi::OsStr::from_bytes(b"bad\xffname.txt");
    fs::write(server.dir.path().join(odd), b"odd").unwrap();
    let me = tempfile::tempdir().unwrap();
    let (code, docs, _) = run_json(
        me.path(),
        &server.addr,
        &["index longlist", "hash checkall"],
    );
    assert_eq!(code, 0);
    for d in &docs {
        assert_eq!(d["files"].as_array().unwrap().len(), 1, "{d}");
        let w = d["warnings"][0].as_str().unwrap_or_else(|| panic!("{d}"));
        assert!(
            w.contains(r"bad\xffname.txt") && w.contains("1 name"),
            "{w}"
        );
    }
    let out = run(me.path(), &server.addr, &["index longlist"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(r"warning: 1 name is not valid UTF-8"),
        "{text}"
    );
}

#[test]
fn a_name_that_is_not_utf8_is_reported_once_by_sync_and_not_synced() {
    use std::os::unix::ffi::OsStrExt;
    let server = Peer::start(&["--sync", "--interval", "1"]);
    let me = tempfile::tempdir().unwrap();
    fs::write(me.path().join("fine.txt"), b"fine").unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"bad\xffname.txt");
    fs::write(me.path().join(odd), b"odd").unwrap();
    // One process runs both rounds: the word is said in the first only.
    let (_, docs, err) = run_json(me.path(), &server.addr, &["sync", "sync"]);
    let first = docs[0].to_string();
    assert!(first.contains(r"bad\\xffname.txt"), "{first} {err}");
    assert!(!docs[1].to_string().contains("UTF-8"), "{}", docs[1]);
    assert!(
        visible_files(server.dir.path())
            .iter()
            .all(|n| !n.contains("bad"))
    );
}

#[test]
fn a_huge_name_in_a_request_makes_no_huge_history_line() {
    let server = Peer::start(&[]);
    let (mut s, mut r, _) = raw_client(&server.addr);
    let name = format!("/{}", "A".repeat(3 << 20));
    proto::write_msg(&mut s, &Request::Hash { name: Some(name) }).unwrap();
    let mut buf = Vec::new();
    let answer = proto::read_msg::<Response>(&mut r, &mut buf).unwrap();
    assert!(matches!(answer, Response::Error { .. }));
    // The server logs a request before it reads the next: once `info` is
    // answered, the refusal's line is in the log.
    proto::write_msg(&mut s, &Request::Info).unwrap();
    let answer = proto::read_msg::<Response>(&mut r, &mut buf).unwrap();
    assert!(matches!(answer, Response::Info { .. }), "{answer:?}");
    let log = server.path(".dropbox-shell/history.log");
    assert!(fs::read_to_string(&log).unwrap().contains("hash verify"));
    let longest = fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::len)
        .max()
        .unwrap();
    assert!(longest < 4096, "a history line of {longest} bytes");
}

#[test]
fn offers_from_ever_new_ids_do_not_grow_the_partner_list_without_end() {
    let server = Peer::start(&["--sync", "--interval", "3600"]);
    for _ in 0..80 {
        let (mut s, mut r, me) = raw_client(&server.addr);
        let answer = sync_hello(&mut s, &mut r, &me);
        assert!(matches!(answer, Response::SyncHello { .. }), "{answer:?}");
        let none = Request::SyncDelta {
            entries: Vec::new(),
            more: false,
        };
        proto::write_msg(&mut s, &none).unwrap();
        let answer = proto::read_msg::<Response>(&mut r, &mut Vec::new()).unwrap();
        assert!(matches!(answer, Response::SyncDelta { .. }), "{answer:?}");
    }
    // Asked through the folder's control socket, as a user would.
    let status = || {
        let out = bin()
            .args(["--json", "-c", "sync status", "--dir"])
            .arg(server.dir.path())
            .output()
            .unwrap();
        let doc: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
        doc["partners"].as_array().map_or(0, Vec::len)
    };
    assert!(wait_for(EVENTUALLY, || status() == 64), "{}", status());
}

/// Our side of a handshake by hand, up to the client's preamble.
fn preamble_sent(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut theirs = [0u8; 9];
    std::io::Read::read_exact(&mut s, &mut theirs).unwrap();
    assert_eq!(&theirs[..4], b"DBSH");
    s.write_all(&theirs[..8]).unwrap();
    s.write_all(&[0]).unwrap();
    s
}

#[test]
fn a_huge_or_garbled_first_handshake_message_ends_that_connection_only() {
    let server = Peer::start(&[]);
    server.write("a.txt", b"a");
    for bad in [
        &[1u8, 0xff, 0xff][..],       // a Noise message of 65535 bytes
        &[9u8, 0, 1, 0][..],          // a record type nobody knows
        &[1u8, 0, 48, 1, 2, 3][..],   // message 1 cut short
        &[1u8, 0, 4, 0, 0, 0, 0][..], // message 1 that is not one
    ] {
        let mut s = preamble_sent(&server.addr);
        s.write_all(bad).unwrap();
        if bad[2] == 48 {
            // Cut short: the rest never comes; the client hangs up.
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        // The server closes it: the end comes, not the read timeout.
        let mut rest = Vec::new();
        let end = std::io::Read::read_to_end(&mut s, &mut rest);
        assert!(end.is_ok(), "{bad:?} held the connection: {end:?}");
        // Nothing but perhaps a refusal: never message 2 (a server key).
        assert!(rest.len() < 300, "{bad:?}: {} bytes", rest.len());
    }
    let me = tempfile::tempdir().unwrap();
    let (code, _, err) = run_json(me.path(), &server.addr, &["index longlist"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_handshake_that_goes_silent_is_freed_after_the_io_timeout() {
    let server = Peer::start(&["--io-timeout", "1", "--max-connections", "1"]);
    server.write("a.txt", b"a");
    let mut silent = preamble_sent(&server.addr);
    // Half of message 1, then nothing.
    silent.write_all(&[1, 0, 48, 7, 7, 7]).unwrap();
    // The server closes it after its 1 s timeout: the end comes, not our
    // own read timeout.
    let mut rest = Vec::new();
    let end = std::io::Read::read_to_end(&mut silent, &mut rest);
    assert!(end.is_ok(), "the silent handshake kept its slot: {end:?}");
    let me = tempfile::tempdir().unwrap();
    let served = wait_for(Duration::from_secs(10), || {
        run_json(me.path(), &server.addr, &["index longlist"]).0 == 0
    });
    assert!(served, "the slot never came free");
}
