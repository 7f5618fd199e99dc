//! Careful defaults: a client serves nothing and leaves nothing behind,
//! the home folder is shared only when named, flags stay in range, and a
//! copied folder does not pose as its original.

mod util;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use util::*;

/// The TCP and UDP sockets a process holds open (signal handling's own
/// Unix socket pair does not count).
fn sockets_of(pid: u32) -> usize {
    let inodes: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let l = fs::read_link(e.path()).ok()?;
            let l = l.to_string_lossy();
            Some(
                l.strip_prefix("socket:[")?
                    .trim_end_matches(']')
                    .to_string(),
            )
        })
        .collect();
    let mut inet = 0;
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        let text = fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let inode = line.split_whitespace().nth(9).unwrap_or("");
            if inodes.iter().any(|i| i == inode) {
                inet += 1;
            }
        }
    }
    inet
}

fn client(dir: &Path, state: &Path) -> Command {
    let mut c = bin();
    c.arg("--dir").arg(dir).env("XDG_STATE_HOME", state);
    c
}

#[test]
fn a_client_only_run_opens_no_server_socket_and_leaves_no_state_folder() {
    let server = Peer::start(&[]);
    server.write("a.txt", b"hello");
    let (me, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Commands from a pipe kept open: the idle client holds no socket.
    let mut child = client(me.path(), state.path())
        .args(["--peer", &server.addr, "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    stdin.write_all(b"index longlist\n").unwrap();
    // Once its answer is printed the command is over: the client is idle.
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert!(line.contains("a.txt"), "{line}");
    assert_eq!(sockets_of(child.id()), 0, "an idle client holds sockets");
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    // No start line: nothing is shared.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("sharing"));
    assert_eq!(
        fs::read_dir(me.path()).unwrap().count(),
        0,
        "left something behind"
    );
    // Its history went to the user's state directory.
    let log = state.path().join("dropbox-shell/history.log");
    assert!(fs::read_to_string(log).unwrap().contains("index longlist"));
    let out = client(me.path(), state.path())
        .args(["--json", "-c", "history 5"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("index longlist"));
    assert_eq!(fs::read_dir(me.path()).unwrap().count(), 0);
    // Asking about sync (no peer syncs this folder) writes nothing either.
    let out = client(me.path(), state.path())
        .args(["--json", "-c", "sync status", "-c", "sync"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("no peer to sync with"));
    assert_eq!(fs::read_dir(me.path()).unwrap().count(), 0);
    // A download writes a file: then the state folder may hold its MD5.
    run_client_only(me.path(), &server.addr, "download TCP a.txt");
    assert_eq!(fs::read(me.path().join("a.txt")).unwrap(), b"hello");
}

#[test]
fn serving_needs_listen_and_the_home_folder_needs_naming() {
    let home = tempfile::tempdir().unwrap();
    for flag in ["--headless", "--sync"] {
        let out = bin()
            .arg(flag)
            .current_dir(home.path())
            .env("HOME", home.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--listen"), "{err}");
    }
    for cwd in [home.path(), Path::new("/")] {
        let out = bin()
            .args(["--listen", "127.0.0.1:0", "-c", "help"])
            .current_dir(cwd)
            .env("HOME", home.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{cwd:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("refusing to share") && err.contains("--dir"),
            "{err}"
        );
    }
    // Named, it is shared.
    let out = bin()
        .args(["--listen", "127.0.0.1:0", "-c", "help", "--dir"])
        .arg(home.path())
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    // A client only may start anywhere: it shares nothing.
    let out = bin()
        .args(["-c", "help"])
        .current_dir(home.path())
        .env("HOME", home.path())
        .env("XDG_STATE_HOME", home.path().join("state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn numeric_flags_out_of_range_are_refused_not_panics_later() {
    let d = tempfile::tempdir().unwrap();
    for (flag, value) in [
        ("--interval", "18446744073709551615"),
        ("--interval", "100000000"),
        ("--io-timeout", "18446744073709551615"),
        ("--udp-timeout", "99999999999"),
        ("--interval", "0"),
        ("--rescan", "0"),
        ("--rescan", "86401"),
    ] {
        let out = bin()
            .args([
                "--listen",
                "127.0.0.1:0",
                "--sync",
                "-c",
                "sync status",
                flag,
                value,
            ])
            .arg("--dir")
            .arg(d.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag) && !err.contains("panicked"), "{err}");
    }
}

#[test]
fn a_copied_folder_takes_its_own_id_and_nothing_is_trashed() {
    let a = Peer::start(&["--sync", "--interval", "1"]);
    let b = Peer::start(&["--sync", "--interval", "1", "--peer", &a.addr]);
    b.write("from-b.txt", b"b");
    assert!(wait_for(EVENTUALLY, || a.path("from-b.txt").exists()));
    let b_id = id_of(b.dir.path());
    // cp -a of B, state folder included, while B still runs.
    let c_dir = tempfile::tempdir().unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", b.dir.path().display()))
        .arg(c_dir.path())
        .status()
        .unwrap();
    assert!(copied.success());
    let _ = fs::remove_file(c_dir.path().join(".dropbox-shell/sync.lock"));
    let c = Peer::start_in(c_dir, &["--sync", "--interval", "1", "--peer", &a.addr]);
    let notice = c.notices.join("");
    assert!(notice.contains("copied"), "no notice: {notice:?}");
    let c_id = id_of(c.dir.path());
    assert_ne!(c_id, b_id);
    assert!(notice.contains(&b_id) && notice.contains(&c_id), "{notice}");
    c.write("from-c.txt", b"new in the copy");
    let everywhere = |p: &Peer| p.path("from-c.txt").exists();
    assert!(wait_for(EVENTUALLY, || everywhere(&a) && everywhere(&b)));
    // Some more rounds: it stays, and nobody trashed it.
    std::thread::sleep(Duration::from_secs(3));
    for p in [&a, &b, &c] {
        assert_eq!(fs::read(p.path("from-c.txt")).unwrap(), b"new in the copy");
        assert!(
            !p.path(".dropbox-shell/trash").exists(),
            "something was trashed"
        );
    }
}
