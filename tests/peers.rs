//! Two or more real peers on loopback: every command, and every way to fail.

mod util;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use util::*;

fn names(doc: &serde_json::Value) -> Vec<String> {
    doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn index_lists_recursively_with_types_and_hides_state() {
    let server = Peer::start(&[]);
    server.write("a.txt", b"hello");
    server.write("dir/sub/b.json", b"{}");
    server.write("ünï cödé.md", b"# hi");
    fs::create_dir_all(server.path("empty")).unwrap();
    let me = tempfile::tempdir().unwrap();
    let (code, docs, _) = run_json(me.path(), &server.addr, &["index longlist"]);
    assert_eq!(code, 0);
    assert_eq!(
        names(&docs[0]),
        vec![
            "a.txt",
            "dir",
            "dir/sub",
            "dir/sub/b.json",
            "empty",
            "ünï cödé.md"
        ]
    );
    let files = docs[0]["files"].as_array().unwrap();
    let b = files
        .iter()
        .find(|f| f["name"] == "dir/sub/b.json")
        .unwrap();
    assert_eq!(b["type"], "application/json");
    assert_eq!(b["kind"], "file");
    assert_eq!(b["size"], 2);
    assert_eq!(
        files.iter().find(|f| f["name"] == "empty").unwrap()["kind"],
        "dir"
    );
    assert_eq!(docs[0]["peer"], server.addr.as_str());
    // The table form prints too.
    let out = run(me.path(), &server.addr, &["index longlist"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("dir/sub/b.json") && text.contains("6 entries"),
        "{text}"
    );
}

#[test]
fn shortlist_and_regex_filter() {
    let server = Peer::start(&[]);
    server.write("old.txt", b"o");
    server.write("new.txt", b"n");
    server.write("new.bin", b"n");
    let old = filetime::FileTime::from_unix_time(1_000_000_000, 0); // 2001-09-09
    filetime::set_file_mtime(server.path("old.txt"), old).unwrap();
    let me = tempfile::tempdir().unwrap();
    let (code, docs, _) = run_json(
        me.path(),
        &server.addr,
        &[
            "index shortlist 2001-09-01 2001-09-30",
            "index shortlist 999999999 1000000000",
            "index shortlist \"2001-09-09 00:00\" 2001-09-10T00:00:00",
            "index shortlist 2001-09-09T01:46:40Z 2001-09-09T01:46:40Z",
            "index shortlist 2020-01-01 2100-01-01",
            r"index regex \.txt$",
            "index regex '^new'",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(names(&docs[0]), vec!["old.txt"]);
    assert_eq!(names(&docs[1]), vec!["old.txt"]);
    assert_eq!(names(&docs[2]), vec!["old.txt"]);
    assert_eq!(names(&docs[3]), vec!["old.txt"]);
    assert_eq!(names(&docs[4]), vec!["new.bin", "new.txt"]);
    assert_eq!(names(&docs[5]), vec!["new.txt", "old.txt"]);
    assert_eq!(names(&docs[6]), vec!["new.bin", "new.txt"]);
}

#[test]
fn bad_arguments_are_clear_errors_and_the_run_goes_on() {
    let server = Peer::start(&[]);
    server.write("a.txt", b"a");
    let me = tempfile::tempdir().unwrap();
    let out = run(
        me.path(),
        &server.addr,
        &[
            "index regex (unclosed",
            "index shortlist someday today",
            "index shortlist 2024-02-01 2024-01-01",
            "frobnicate",
            "index longlist",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad regular expression"), "{err}");
    assert!(err.contains("RFC 3339"), "{err}");
    assert!(err.contains("is after the end"), "{err}");
    assert!(err.contains("unknown command"), "{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("a.txt"),
        "later commands still run"
    );
}

#[test]
fn hashes_match_md5() {
    let server = Peer::start(&[]);
    let data = random_bytes(1, 300_000);
    server.write("r.bin", &data);
    server.write("d/e.txt", b"");
    let me = tempfile::tempdir().unwrap();
    let (code, docs, _) = run_json(
        me.path(),
        &server.addr,
        &["hash verify r.bin", "hash checkall", "hash checkall"],
    );
    assert_eq!(code, 0);
    assert_eq!(docs[0]["files"][0]["md5"], md5_hex(&data).as_str());
    assert!(
        docs[0]["files"][0]["mtime"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let all = &docs[1]["files"];
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert_eq!(all[0]["name"], "d/e.txt");
    assert_eq!(all[0]["md5"], "d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!(docs[1], docs[2], "a warm checkall answers the same");
    assert!(server.path(".dropbox-shell/md5-cache.json").exists());
}

#[test]
fn download_tcp_keeps_bytes_mode_and_mtime() {
    let server = Peer::start(&[]);
    let big = random_bytes(2, 1 << 20);
    server.write("my file.txt", b"spaces");
    server.write("ünï/cödé.bin", &big);
    server.write("empty", b"");
    fs::set_permissions(
        server.path("my file.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let when = filetime::FileTime::from_unix_time(1_500_000_000, 123_000_000);
    filetime::set_file_mtime(server.path("ünï/cödé.bin"), when).unwrap();
    let me = tempfile::tempdir().unwrap();
    let (code, docs, err) = run_json(
        me.path(),
        &server.addr,
        &[
            "download TCP \"my file.txt\"",
            "download tcp ünï/cödé.bin",
            "download TCP empty",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read(me.path().join("my file.txt")).unwrap(), b"spaces");
    assert_eq!(fs::read(me.path().join("ünï/cödé.bin")).unwrap(), big);
    assert_eq!(fs::read(me.path().join("empty")).unwrap(), b"");
    let mode = fs::metadata(me.path().join("my file.txt"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let m = fs::metadata(me.path().join("ünï/cödé.bin")).unwrap();
    assert_eq!(filetime::FileTime::from_last_modification_time(&m), when);
    assert_eq!(docs[1]["md5"], md5_hex(&big).as_str());
    assert_eq!(docs[1]["size"], 1 << 20);
    assert_eq!(docs[1]["protocol"], "TCP");
    assert_eq!(docs[1]["mtime"], "2017-07-14T02:40:00Z");
    assert!(docs[1]["seconds"].as_f64().is_some());
    assert_eq!(
        visible_files(me.path()),
        vec!["empty", "my file.txt", "ünï", "ünï/cödé.bin"]
    );
}

#[test]
fn download_of_100_mib_streams() {
    let server = Peer::start(&[]);
    let data = random_bytes(3, 100 << 20);
    server.write("big.bin", &data);
    let me = tempfile::tempdir().unwrap();
    let (code, docs, err) = run_json(me.path(), &server.addr, &["download TCP big.bin"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(docs[0]["md5"], md5_hex(&data).as_str());
    assert!(fs::read(me.path().join("big.bin")).unwrap() == data);
}

#[test]
fn missing_files_and_directories_are_clear_errors() {
    let server = Peer::start(&[]);
    fs::create_dir_all(server.path("adir")).unwrap();
    let me = tempfile::tempdir().unwrap();
    let (code, docs, _) = run_json(
        me.path(),
        &server.addr,
        &[
            "download TCP nope.txt",
            "hash verify nope.txt",
            "download TCP adir",
            "download UDP nope.txt",
        ],
    );
    assert_eq!(code, 1);
    assert!(
        docs[0]["error"]
            .as_str()
            .unwrap()
            .contains("no such file: nope.txt")
    );
    assert!(docs[1]["error"].as_str().unwrap().contains("no such file"));
    assert!(
        docs[2]["error"]
            .as_str()
            .unwrap()
            .contains("is a directory")
    );
    assert!(docs[3]["error"].as_str().unwrap().contains("no such file"));
    assert!(visible_files(me.path()).is_empty());
}

#[test]
fn hostile_names_are_refused_on_both_sides() {
    let server = Peer::start(&[]);
    symlink("/etc/passwd", server.path("pw")).unwrap();
    symlink("/etc", server.path("etc")).unwrap();
    server.write("ok.txt", b"ok");
    let me = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), me.path().join("out")).unwrap();
    let (code, docs, _) = run_json(
        me.path(),
        &server.addr,
        &[
            "download TCP ../x",
            "download TCP /etc/passwd",
            "download TCP pw",
            "download TCP etc/passwd",
            "hash verify pw",
            "hash verify .dropbox-shell/history.log",
            "index longlist",
        ],
    );
    assert_eq!(code, 1);
    for (i, want) in [
        "leaves the shared folder",
        "absolute",
        "outside",
        "outside",
        "outside",
        "private",
    ]
    .iter()
    .enumerate()
    {
        let e = docs[i]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("doc {i}: {}", docs[i]));
        assert!(e.contains(want), "doc {i}: {e}");
    }
    assert_eq!(
        names(&docs[6]),
        vec!["ok.txt"],
        "symlinks out and the state folder are not listed"
    );
    // Our own side: a symlink in our folder that leads out is not written through.
    server.write("out/evil.txt", b"x");
    let (_, docs, _) = run_json(me.path(), &server.addr, &["download TCP out/evil.txt"]);
    assert!(
        docs[0]["error"].as_str().unwrap().contains("outside"),
        "{}",
        docs[0]
    );
    assert!(fs::read_dir(outside.path()).unwrap().next().is_none());
    // A peer that sends a hostile name on the wire is refused by the server too.
    let mut c = dropbox_shell::client::Client::connect(
        &server.addr,
        &new_credentials(),
        Arc::new(AtomicBool::new(false)),
        Duration::from_secs(5),
    )
    .unwrap();
    let e = c.hashes(Some("../../etc/passwd")).unwrap_err();
    assert!(e.to_string().contains("leaves the shared folder"), "{e}");
}

#[test]
fn upload_needs_permission_and_force_to_replace() {
    let closed = Peer::start(&[]);
    let open = Peer::start(&["--allow-upload"]);
    let me = tempfile::tempdir().unwrap();
    fs::write(me.path().join("up.txt"), b"first").unwrap();
    let (code, docs, _) = run_json(me.path(), &closed.addr, &["upload up.txt"]);
    assert_eq!(code, 1);
    assert!(
        docs[0]["error"]
            .as_str()
            .unwrap()
            .contains("--allow-upload")
    );
    assert!(!closed.path("up.txt").exists());

    let (code, docs, err) = run_json(me.path(), &open.addr, &["upload up.txt"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(docs[0]["md5"], md5_hex(b"first").as_str());
    assert_eq!(fs::read(open.path("up.txt")).unwrap(), b"first");

    fs::write(me.path().join("up.txt"), b"second").unwrap();
    let (code, docs, _) = run_json(me.path(), &open.addr, &["upload up.txt"]);
    assert_eq!(code, 1);
    assert!(
        docs[0]["error"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
    assert_eq!(fs::read(open.path("up.txt")).unwrap(), b"first");

    let (code, _, _) = run_json(
        me.path(),
        &open.addr,
        &["upload --force up.txt", "upload missing.txt"],
    );
    assert_eq!(code, 1, "the missing file fails");
    assert_eq!(fs::read(open.path("up.txt")).unwrap(), b"second");
}

#[test]
fn garbage_on_the_port_does_not_stop_the_peer() {
    let server = Peer::start(&[]);
    server.write("a.txt", b"a");
    let garbage = random_bytes(4, 1 << 20);
    let mut s = TcpStream::connect(&server.addr).unwrap();
    let _ = s.write_all(&garbage);
    drop(s);
    // A valid handshake followed by an oversized frame and by bad JSON.
    for tail in [
        &[0xffu8, 0xff, 0xff, 0xff, 0][..],
        &[0, 0, 0, 4, 0, b'{', b'x', b'}'][..],
    ] {
        let (mut s, mut r, _) = raw_client(&server.addr);
        s.write_all(tail).unwrap();
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
    }
    // Garbage datagrams to the UDP port as well.
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for chunk in garbage.chunks(1000).take(200) {
        let _ = u.send_to(chunk, &server.addr);
    }
    let me = tempfile::tempdir().unwrap();
    let (code, docs, _) = run_json(
        me.path(),
        &server.addr,
        &["index longlist", "download UDP a.txt"],
    );
    assert_eq!(code, 0, "{docs:?}");
    assert_eq!(names(&docs[0]), vec!["a.txt"]);
}

#[test]
fn another_protocol_version_is_a_clear_error() {
    let server = Peer::start(&[]);
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.write_all(b"DBSH\0\0\0\x63").unwrap();
    let mut hello = [0u8; 8];
    s.read_exact(&mut hello).unwrap();
    let mut ours = b"DBSH".to_vec();
    ours.extend_from_slice(&dropbox_shell::proto::VERSION.to_be_bytes());
    assert_eq!(&hello[..], ours);
    // And a client meeting a server of another version says so.
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = fake.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut c, _) = fake.accept().unwrap();
        let _ = c.write_all(b"DBSH\0\0\0\x63");
        std::thread::sleep(Duration::from_millis(500));
    });
    let me = tempfile::tempdir().unwrap();
    let (code, docs, _) = run_json(me.path(), &addr, &["index longlist"]);
    assert_eq!(code, 1);
    assert!(
        docs[0]["error"]
            .as_str()
            .unwrap()
            .contains("protocol version 99"),
        "{}",
        docs[0]
    );
}

#[test]
fn a_silent_client_does_not_block_others_and_is_dropped() {
    let server = Peer::start(&["--max-connections", "1", "--io-timeout", "1"]);
    server.write("a.txt", b"a");
    let silent = TcpStream::connect(&server.addr).unwrap();
    let me = tempfile::tempdir().unwrap();
    // While the silent client holds the only slot, others get a clear "busy".
    std::thread::sleep(Duration::from_millis(200));
    let (code, docs, _) = run_json(me.path(), &server.addr, &["index longlist"]);
    assert_eq!(code, 1);
    assert!(
        docs[0]["error"].as_str().unwrap().contains("busy"),
        "{}",
        docs[0]
    );
    // After the I/O timeout the silent client is dropped and others are served.
    let ok = wait_for(Duration::from_secs(10), || {
        run_json(me.path(), &server.addr, &["index longlist"]).0 == 0
    });
    assert!(ok, "the silent client was never dropped");
    drop(silent);
}

#[test]
fn a_silent_client_does_not_stop_a_roomy_server() {
    let server = Peer::start(&[]);
    server.write("a.txt", b"a");
    let _silent: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(&server.addr).unwrap())
        .collect();
    let me = tempfile::tempdir().unwrap();
    assert_eq!(run_json(me.path(), &server.addr, &["index longlist"]).0, 0);
}

#[test]
fn thirty_two_clients_at_once() {
    let server = Peer::start(&[]);
    let data = random_bytes(5, 200_000);
    server.write("f.bin", &data);
    let want = md5_hex(&data);
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let addr = server.addr.clone();
            std::thread::spawn(move || {
                let cancel = Arc::new(AtomicBool::new(false));
                let mut c = dropbox_shell::client::Client::connect(
                    &addr,
                    &new_credentials(),
                    cancel,
                    Duration::from_secs(20),
                )
                .unwrap();
                let files = c.hashes(Some("f.bin")).unwrap();
                let listing = c.index(dropbox_shell::proto::Filter::All).unwrap();
                (files[0].md5.clone().unwrap(), listing.len())
            })
        })
        .collect();
    for t in threads {
        let (md5, n) = t.join().unwrap();
        assert_eq!(md5, want);
        assert_eq!(n, 1);
    }
}

#[test]
fn an_unreachable_peer_is_not_fatal() {
    let me = tempfile::tempdir().unwrap();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let server = Peer::start(&[]);
    server.write("a.txt", b"a");
    let (code, docs, _) = run_json(
        me.path(),
        &dead,
        &[
            "index longlist",
            "peers",
            &format!("peer use {}", server.addr),
            "index longlist",
            "peers",
        ],
    );
    assert_eq!(code, 1, "the first command failed");
    assert!(
        docs[0]["error"].as_str().unwrap().contains("unreachable"),
        "{}",
        docs[0]
    );
    assert_eq!(docs[1]["peers"][0]["reachable"], false);
    assert_eq!(names(&docs[3]), vec!["a.txt"]);
    let peers = docs[4]["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2);
    assert_eq!(peers[1]["current"], true);
    assert_eq!(peers[1]["reachable"], true);
    assert_eq!(peers[1]["peer_id"].as_str().unwrap().len(), 39);
}

#[test]
fn commands_from_stdin_and_exit_codes() {
    let server = Peer::start(&[]);
    server.write("a.txt", b"a");
    let me = tempfile::tempdir().unwrap();
    let out = run_stdin(
        me.path(),
        &server.addr,
        "# a comment\n\nindex longlist\ndownload TCP a.txt\nexit\nindex longlist\n",
    );
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches("1 entry on").count(),
        1,
        "nothing runs after exit: {text}"
    );
    assert_eq!(fs::read(me.path().join("a.txt")).unwrap(), b"a");

    let bad = bin().args(["--no-such-flag"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let bad = bin()
        .args(["--dir", "/nonexistent/dir", "-c", "help"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent/dir"));
    let help = bin().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--peer",
        "--dir",
        "--headless",
        "--command",
        "--json",
        "--allow-upload",
        "Examples",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn history_logs_requests_made_and_served() {
    let server = Peer::start(&[]);
    server.write("a.txt", b"abc");
    let me = tempfile::tempdir().unwrap();
    let (code, docs, _) = run_json(
        me.path(),
        &server.addr,
        &["download TCP a.txt", "index regex (", "history 5"],
    );
    assert_eq!(code, 1);
    let hist = docs[2]["history"].as_array().unwrap();
    let last = hist.last().unwrap();
    assert_eq!(last["direction"], "made");
    assert_eq!(last["command"], "download TCP a.txt");
    assert_eq!(last["outcome"], "ok");
    assert_eq!(last["bytes"], 3);
    let served = fs::read_to_string(server.path(".dropbox-shell/history.log")).unwrap();
    let line: serde_json::Value = serde_json::from_str(served.lines().last().unwrap()).unwrap();
    assert_eq!(line["direction"], "served");
    assert_eq!(line["command"], "download TCP a.txt");
    assert_eq!(line["bytes"], 3);
    assert!(line["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn headless_shuts_down_cleanly_on_sigterm_and_sigint() {
    for sig in ["-TERM", "-INT"] {
        let mut server = Peer::start(&[]);
        server.signal(sig);
        let ok = wait_for(Duration::from_secs(5), || {
            matches!(server.child.try_wait(), Ok(Some(_)))
        });
        assert!(ok, "peer did not stop on {sig}");
        assert_eq!(server.child.wait().unwrap().code(), Some(0));
    }
}

#[test]
fn sigterm_during_a_download_cancels_it_and_the_peer_stops_cleanly() {
    let server = Peer::start(&[]);
    server.write("big.bin", &random_bytes(8, 200 << 20));
    let me = tempfile::tempdir().unwrap();
    fs::write(me.path().join("big.bin"), b"old").unwrap();
    let mut client = bin()
        .args(["--listen", "127.0.0.1:0", "--dir"])
        .arg(me.path())
        .args(["--peer", &server.addr, "-c", "download TCP big.bin"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = wait_for_part_file(me.path());
    server.signal("-STOP");
    Command::new("kill")
        .args(["-TERM", &client.id().to_string()])
        .status()
        .unwrap();
    let err = read_all(client.stderr.take().unwrap());
    let status = client.wait().unwrap();
    server.signal("-CONT");
    assert!(started, "the download was never seen under way");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("cancelled"), "{err}");
    assert_only_the_old_copy(me.path(), "big.bin", b"old");
}

#[test]
fn a_peer_that_stops_mid_transfer_leaves_the_old_file_intact() {
    let server = Peer::start(&[]);
    server.write("big.bin", &random_bytes(6, 64 << 20));
    let me = tempfile::tempdir().unwrap();
    fs::write(me.path().join("big.bin"), b"precious old copy").unwrap();
    let mut client = bin()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--io-timeout",
            "1",
            "--json",
            "--dir",
        ])
        .arg(me.path())
        .args(["--peer", &server.addr, "-c", "download TCP big.bin"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Freeze the server at once: the client sees silence, then the server dies.
    server.signal("-STOP");
    let out = read_all(client.stdout.take().unwrap());
    let status = client.wait().unwrap();
    server.signal("-KILL");
    if status.code() == Some(0) {
        // The whole file made it before the freeze: it must then be exact.
        assert_eq!(
            fs::read(me.path().join("big.bin")).unwrap(),
            random_bytes(6, 64 << 20)
        );
        return;
    }
    assert!(out.contains("error"), "{out}");
    assert_only_the_old_copy(me.path(), "big.bin", b"precious old copy");
}

#[test]
fn a_stale_md5_cache_makes_the_sender_rehash_and_the_download_succeeds() {
    // The sender's cache vouches for a wrong MD5 under each file's exact
    // version (as if it changed without its metadata changing): the
    // receiver's check refuses the bytes and asks again, the sender then
    // bypasses its cache, and the right file arrives, over TCP and UDP.
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(7, 100_000);
    let mut cache = serde_json::Map::new();
    for name in ["t.bin", "u.bin"] {
        fs::write(dir.path().join(name), &data).unwrap();
        let m = fs::metadata(dir.path().join(name)).unwrap();
        cache.insert(
            name.into(),
            serde_json::json!({
                "size": m.len(),
                "mtime_ns": m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                "ctime_ns": m.ctime() * 1_000_000_000 + m.ctime_nsec(),
                "ino": m.ino(),
                "md5": vec![0u8; 16],
            }),
        );
    }
    fs::create_dir_all(dir.path().join(".dropbox-shell")).unwrap();
    fs::write(
        dir.path().join(".dropbox-shell/md5-cache.json"),
        serde_json::Value::Object(cache).to_string(),
    )
    .unwrap();
    let server = Peer::start_in(dir, &[]);
    let me = tempfile::tempdir().unwrap();
    fs::write(me.path().join("t.bin"), b"old").unwrap();
    let (code, docs, err) = run_json(
        me.path(),
        &server.addr,
        &["download TCP t.bin", "download UDP u.bin"],
    );
    assert_eq!(code, 0, "{docs:?} {err}");
    for (doc, name) in docs.iter().zip(["t.bin", "u.bin"]) {
        assert_eq!(doc["md5"], md5_hex(&data), "{doc}");
        assert_eq!(doc["attempts"], 2, "{doc}");
        assert_eq!(fs::read(me.path().join(name)).unwrap(), data);
    }
    // The sender learned: the next download needs one try.
    let (code, docs, _) = run_json(me.path(), &server.addr, &["download TCP t.bin"]);
    assert_eq!((code, &docs[0]["attempts"]), (0, &serde_json::json!(1)));
}

#[test]
fn a_file_still_being_written_is_not_taken_half_way() {
    let server = Peer::start(&[]);
    server.write("growing.log", &random_bytes(8, 64 << 20));
    let me = tempfile::tempdir().unwrap();
    let client = bin()
        .args(["--listen", "127.0.0.1:0", "--json", "--dir"])
        .arg(me.path())
        .args(["--peer", &server.addr, "-c", "download TCP growing.log"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Mid-transfer (the temporary file exists), the writer appends more.
    let started = wait_for_part_file(me.path());
    server.signal("-STOP");
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(server.path("growing.log"))
        .unwrap();
    f.write_all(b"one more line\n").unwrap();
    server.signal("-CONT");
    let out = client.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(started, "the transfer was never seen under way");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("changed while it was being sent"), "{text}");
    assert!(visible_files(me.path()).is_empty(), "no half file");
}

#[test]
fn pipelined_downloads_fail_one_file_at_a_time() {
    let server = Peer::start(&[]);
    server.write("a.txt", b"a");
    server.write("c/blocked.txt", b"blocked");
    server.write("d.bin", &random_bytes(9, 3 << 20));
    let me = tempfile::tempdir().unwrap();
    // Locally, a folder stands where a file would land.
    fs::create_dir_all(me.path().join("c/blocked.txt")).unwrap();
    let folder = dropbox_shell::folder::Folder::open(me.path()).unwrap();
    let mut c = dropbox_shell::client::Client::connect(
        &server.addr,
        &new_credentials(),
        Arc::new(AtomicBool::new(false)),
        Duration::from_secs(20),
    )
    .unwrap();
    let names: Vec<String> = ["a.txt", "missing.txt", "c/blocked.txt", "d.bin"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut got = Vec::new();
    c.download_many(
        &mut names.into_iter(),
        &folder,
        3,
        &mut |_, _| Ok(dropbox_shell::client::LandOver::Anything),
        &mut |n, r| got.push((n.to_string(), r.map(|t| t.size).map_err(|e| e.to_string()))),
    )
    .unwrap();
    assert_eq!(got[0], ("a.txt".to_string(), Ok(1)));
    assert!(
        got[1].1.as_ref().unwrap_err().contains("no such file"),
        "{got:?}"
    );
    assert!(
        got[2].1.as_ref().unwrap_err().contains("directory"),
        "{got:?}"
    );
    assert_eq!(got[3], ("d.bin".to_string(), Ok(3 << 20)));
    assert!(fs::read(me.path().join("d.bin")).unwrap() == random_bytes(9, 3 << 20));
}

#[test]
fn a_disk_that_fills_up_mid_download_is_a_clear_error_and_loses_nothing() {
    // A file-size limit makes writes fail as a full disk does.
    let server = Peer::start(&[]);
    server.write("big.bin", &random_bytes(11, 4 << 20));
    let me = tempfile::tempdir().unwrap();
    fs::write(me.path().join("big.bin"), b"old copy").unwrap();
    for proto in ["TCP", "UDP"] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -f 2048; exec {BIN} --listen 127.0.0.1:0 --json --dir {} --peer {} -c 'download {proto} big.bin' -c 'help exit'",
                me.path().display(),
                server.addr
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{proto}: {text}");
        assert!(text.contains("File too large"), "{proto}: {text}");
        assert!(
            text.contains("usage: exit"),
            "{proto}: the peer went on to the next command: {text}"
        );
        assert_eq!(fs::read(me.path().join("big.bin")).unwrap(), b"old copy");
        assert_eq!(
            visible_files(me.path()),
            vec!["big.bin"],
            "no half file left"
        );
        let leftovers = fs::read_dir(me.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".dbsh-part"))
            .count();
        assert_eq!(leftovers, 0, "the temporary file is removed");
    }
}
