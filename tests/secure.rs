//! Identity, authentication and encryption with the real binary on
//! loopback: the group secret (a key or a passphrase) in both directions,
//! `--allow`, a changed key at a known address, and what crosses the wire
//! (recorded by a relay in the test: no marker, no name, no MD5, over TCP
//! and UDP).

mod util;

use std::fs;
use std::io::Write;
use std::net::{TcpListener, ToSocketAddrs};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use dropbox_shell::relay::{Impairment, Relay};
use util::*;

/// A new group secret made by `secret new`.
/// A passphrase file, private.
fn passphrase(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    writeln!(f, "{text}").unwrap();
    path
}

/// Run commands as a client with `--json` and more flags: the exit code,
/// the documents and stderr.
fn json_run(
    dir: &Path,
    peer: &str,
    cmds: &[&str],
    extra: &[&str],
) -> (i32, Vec<serde_json::Value>, String) {
    let mut flags = vec!["--json"];
    flags.extend_from_slice(extra);
    let out = run(dir, peer, cmds, &flags);
    let docs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        out.status.code().unwrap_or(-1),
        docs,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Only the authentication error: exit 1, one document, naming nothing of
/// the server's folder.
fn refused(got: (i32, Vec<serde_json::Value>, String), says: &str) {
    let (code, docs, _) = got;
    assert_eq!(code, 1, "{docs:?}");
    assert_eq!(docs.len(), 1, "{docs:?}");
    let e = docs[0]["error"].as_str().unwrap();
    assert!(e.contains("authentication failed: "), "{e}");
    assert!(e.contains(says), "{e}");
    assert!(!docs[0].to_string().contains("secret-name"));
}

#[test]
fn secret_new_writes_a_private_key_and_never_overwrites() {
    let keys = tempfile::tempdir().unwrap();
    let path = new_secret(keys.path(), "group");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = fs::read(&path).unwrap();
    let out = bin().args(["secret", "new"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never overwritten"));
    assert_eq!(fs::read(&path).unwrap(), before);
    // A secret others can read stops the start with the fix.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["--listen", "127.0.0.1:0", "--headless", "--secret-file"])
        .arg(&path)
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}

#[test]
fn without_or_with_a_wrong_secret_only_the_authentication_error() {
    let keys = tempfile::tempdir().unwrap();
    let (s1, s2) = (new_secret(keys.path(), "s1"), new_secret(keys.path(), "s2"));
    let server = Peer::start(&["--secret-file", s(&s1)]);
    server.write("secret-name.txt", b"x");
    let me = tempfile::tempdir().unwrap();
    // A member is served.
    let (code, docs, err) = json_run(
        me.path(),
        &server.addr,
        &["index longlist"],
        &["--secret-file", s(&s1)],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(docs[0]["files"][0]["name"], "secret-name.txt");
    // No secret, or another one: the error and nothing else.
    let none = json_run(me.path(), &server.addr, &["index longlist"], &[]);
    refused(none, "a group secret is required here");
    let wrong = json_run(
        me.path(),
        &server.addr,
        &["download TCP secret-name.txt"],
        &["--secret-file", s(&s2)],
    );
    refused(wrong, "the group secret does not match");
    assert!(!me.path().join("secret-name.txt").exists());
    // The server logged both.
    let log = fs::read_to_string(server.path(".dropbox-shell/history.log")).unwrap();
    assert_eq!(log.matches("authentication failed").count(), 2, "{log}");
    // As a client: a member never talks to a peer without the secret.
    let open = Peer::start(&[]);
    open.write("secret-name.txt", b"x");
    let got = json_run(
        me.path(),
        &open.addr,
        &["index longlist"],
        &["--secret-file", s(&s1)],
    );
    refused(got, "not of this group");
}

#[test]
fn a_passphrase_is_stretched_the_same_on_both_sides() {
    let keys = tempfile::tempdir().unwrap();
    let phrase = passphrase(keys.path(), "p1", "correct horse battery staple");
    let same = passphrase(keys.path(), "p2", "correct horse battery staple");
    let other = passphrase(keys.path(), "p3", "correct horse battery stapler");
    let short = passphrase(keys.path(), "p4", "too short");
    let server = Peer::start(&["--secret-file", s(&phrase)]);
    server.write("secret-name.txt", b"x");
    let me = tempfile::tempdir().unwrap();
    let (code, _, err) = json_run(
        me.path(),
        &server.addr,
        &["index longlist"],
        &["--secret-file", s(&same)],
    );
    assert_eq!(code, 0, "{err}");
    let got = json_run(
        me.path(),
        &server.addr,
        &["index longlist"],
        &["--secret-file", s(&other)],
    );
    refused(got, "does not match");
    let out = run(
        me.path(),
        &server.addr,
        &["index longlist"],
        &["--secret-file", s(&short)],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret new"));
}

#[test]
fn allow_refuses_an_unknown_id_even_with_the_secret() {
    let keys = tempfile::tempdir().unwrap();
    let secret = new_secret(keys.path(), "s");
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    // Their ids, made by a first start.
    for d in [&b, &c] {
        let _ = run(d.path(), "127.0.0.1:9", &["id"], &[]);
    }
    let (id_b, id_c) = (id_of(b.path()), id_of(c.path()));
    let server = Peer::start(&["--secret-file", s(&secret), "--allow", &id_b]);
    server.write("secret-name.txt", b"x");
    let (code, _, err) = json_run(
        b.path(),
        &server.addr,
        &["index longlist"],
        &["--secret-file", s(&secret)],
    );
    assert_eq!(code, 0, "{err}");
    let got = json_run(
        c.path(),
        &server.addr,
        &["index longlist"],
        &["--secret-file", s(&secret)],
    );
    refused(got, "not in the --allow list");
    // As a client: a server not on the list is not talked to.
    let got = json_run(
        b.path(),
        &server.addr,
        &["index longlist"],
        &["--secret-file", s(&secret), "--allow", &id_c],
    );
    refused(got, "not in the --allow list");
    // A malformed id stops the start.
    let out = run(b.path(), &server.addr, &["id"], &["--allow", "nonsense"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a peer id"));
}

/// A free loopback address (bound, then released).
fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn a_changed_id_at_a_known_address_is_refused_until_peer_forget() {
    let addr = free_addr();
    let a = Peer::start_at(tempfile::tempdir().unwrap(), &addr, &[]);
    a.write("a.txt", b"a");
    let me = tempfile::tempdir().unwrap();
    let (code, _, err) = json_run(me.path(), &addr, &["index longlist"], &[]);
    assert_eq!(code, 0, "{err}");
    let old = id_of(a.dir.path());
    // A syncing peer that knows A there too.
    let b = syncing(&["--peer", &addr]);
    assert!(wait_for(EVENTUALLY, || b.path("a.txt").exists()));
    drop(a);
    // Another peer (another key) at the same address.
    let a2 = Peer::start_at(tempfile::tempdir().unwrap(), &addr, &[]);
    a2.write("b.txt", b"b");
    let new = id_of(a2.dir.path());
    let (code, docs, _) = json_run(me.path(), &addr, &["index longlist"], &[]);
    assert_eq!(code, 1);
    let e = docs[0]["error"].as_str().unwrap();
    assert!(e.contains(&old) && e.contains(&new), "{e}");
    assert!(e.contains(&format!("peer forget {addr}")), "{e}");
    // Forgotten, the new id is taken (and remembered).
    let (code, docs, err) = json_run(
        me.path(),
        &addr,
        &[&format!("peer forget {addr}"), "index longlist"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        docs[0]["message"].as_str().unwrap().contains(&old),
        "{docs:?}"
    );
    assert_eq!(docs[1]["files"][0]["name"], "b.txt");
    let known = fs::read_to_string(me.path().join(".dropbox-shell/known_peers")).unwrap();
    assert!(known.contains(&format!("{addr} {new}")), "{known}");
    // The syncing peer never syncs with the changed id, and says so.
    let refused = wait_for(EVENTUALLY, || {
        sync_status(b.dir.path())["partners"][0]["last_result"]
            .as_str()
            .is_some_and(|r| r.contains("now has id"))
    });
    assert!(refused, "{}", sync_status(b.dir.path()));
    assert!(!b.path("b.txt").exists());
    // `peer forget` from a second process on its folder reaches it.
    let out = bin()
        .args(["--json", "-c", &format!("peer forget {addr}"), "--dir"])
        .arg(b.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&old));
    // A round by hand tries the partner now (its automatic retries back
    // off after the refusals).
    let _ = bin()
        .args(["-c", "sync", "--dir"])
        .arg(b.dir.path())
        .output()
        .unwrap();
    assert!(wait_for(EVENTUALLY, || b.path("b.txt").exists()));
}

#[test]
fn a_syncing_peer_without_the_secret_gets_nothing() {
    let keys = tempfile::tempdir().unwrap();
    let (s1, s2) = (new_secret(keys.path(), "s1"), new_secret(keys.path(), "s2"));
    let a = syncing(&["--secret-file", s(&s1)]);
    a.write("secret-name.txt", b"x");
    let b = syncing(&["--secret-file", s(&s2), "--peer", &a.addr]);
    let failed = wait_for(EVENTUALLY, || {
        sync_status(b.dir.path())["partners"][0]["last_result"]
            .as_str()
            .is_some_and(|r| r.contains("authentication failed"))
    });
    assert!(failed, "{}", sync_status(b.dir.path()));
    assert!(!b.path("secret-name.txt").exists());
    // A member syncs.
    let c = syncing(&["--secret-file", s(&s1), "--peer", &a.addr]);
    assert!(wait_for(EVENTUALLY, || c.path("secret-name.txt").exists()));
}

#[test]
fn no_marker_name_or_md5_crosses_the_wire() {
    let marker = format!("DBSH-MARKER-{}", std::process::id());
    let name = format!("marker-{}.txt", std::process::id());
    let data = marker.repeat(300 << 10 >> 5);
    let md5 = md5_hex(data.as_bytes());
    let a = syncing(&[]);
    a.write(&name, data.as_bytes());
    // A relay (TCP and UDP) that records every byte it forwards.
    let target = a.addr.to_socket_addrs().unwrap().next().unwrap();
    let relay =
        Relay::start_recording("127.0.0.1:0", target, Impairment::default(), 64 << 20).unwrap();
    let relay_addr = relay.local_addr().to_string();
    // The detector works: the same bytes in clear would be caught.
    assert!(data.contains(&marker));
    let me = tempfile::tempdir().unwrap();
    let (code, docs, err) = json_run(
        me.path(),
        &relay_addr,
        &[
            "index longlist",
            "hash checkall",
            &format!("download TCP {name}"),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(docs[1]["files"][0]["md5"], md5.as_str());
    assert_eq!(fs::read(me.path().join(&name)).unwrap(), data.as_bytes());
    let udp = tempfile::tempdir().unwrap();
    let (code, docs, err) = json_run(
        udp.path(),
        &relay_addr,
        &[&format!("download UDP {name}")],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(docs[0]["md5"], md5.as_str());
    assert_eq!(fs::read(udp.path().join(&name)).unwrap(), data.as_bytes());
    // A sync round through the relay.
    let b = syncing(&["--peer", &relay_addr]);
    assert!(wait_for(EVENTUALLY, || b.path(&name).exists()));
    let tape = relay.recorded();
    assert!(tape.len() > 3 * data.len(), "the traffic crossed the relay");
    for needle in [&marker, &name, &md5] {
        assert!(
            !tape.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} crossed the wire in clear"
        );
    }
}

#[test]
fn history_lines_name_the_proven_id_on_both_sides() {
    let server = Peer::start(&[]);
    server.write("a.txt", b"hello\n");
    let me = tempfile::tempdir().unwrap();
    let (code, docs, err) = json_run(
        me.path(),
        &server.addr,
        &[
            "id",
            "peers",
            "index longlist",
            "download UDP a.txt",
            "history 10",
        ],
        &[],
    );
    assert_eq!(code, 0, "{docs:?} {err}");
    let mine = docs[0]["id"].as_str().unwrap();
    let theirs = docs[1]["peers"][0]["peer_id"].as_str().unwrap();
    let made = docs[4]["history"].as_array().unwrap();
    for cmd in ["index longlist", "download UDP a.txt"] {
        let line = made.iter().find(|r| r["command"] == cmd).unwrap();
        assert_eq!(line["peer_id"], theirs, "{line}");
    }
    // The server names who it served, over TCP and over UDP (its line for
    // the UDP transfer is written when the transfer's end reaches it).
    let served = || fs::read_to_string(server.path(".dropbox-shell/history.log")).unwrap();
    let by_me = |cmd: &str| {
        served().lines().any(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            r["command"] == cmd && r["peer_id"] == mine
        })
    };
    assert!(by_me("index longlist"), "{}", served());
    assert!(
        wait_for(EVENTUALLY, || by_me("download UDP a.txt")),
        "{}",
        served()
    );
}
