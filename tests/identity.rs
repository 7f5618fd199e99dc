//! A peer's identity: a key pair in a private file, and the id that is its
//! fingerprint, shown at start, by `id`, and kept across restarts and
//! moves (`--identity`).

mod util;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use util::*;

/// The id in a start line ("... peer id ABCD-...").
fn id_in_start_line(line: &str) -> String {
    line.split("peer id ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no id in {line:?}"))
        .to_string()
}

/// Start a headless peer on `dir`; its whole start line.
fn start_line(dir: &std::path::Path, extra: &[&str]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = bin()
        .args(["--listen", "127.0.0.1:0", "--headless", "--dir"])
        .arg(dir)
        .args(extra)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("peer id") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "no start line");
    }
    (child, line)
}

#[test]
fn the_identity_survives_a_restart_and_moves_with_identity() {
    let a = tempfile::tempdir().unwrap();
    let (mut p, line) = start_line(a.path(), &[]);
    let shown = id_in_start_line(&line);
    let _ = p.kill();
    let _ = p.wait();
    // The full id: 32 base32 characters in groups of four.
    assert_eq!(shown.len(), 39, "{shown}");
    assert!(shown.split('-').all(|g| g.len() == 4), "{shown}");
    let file = a.path().join(".dropbox-shell/identity");
    let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(id_of(a.path()), shown);
    // A restart keeps it.
    let (mut p, line) = start_line(a.path(), &[]);
    assert_eq!(id_in_start_line(&line), shown);
    let _ = p.kill();
    let _ = p.wait();
    // Carried to another folder (another machine), it is the same peer.
    let carried = tempfile::tempdir().unwrap();
    let key = carried.path().join("me.key");
    fs::copy(&file, &key).unwrap();
    let b = tempfile::tempdir().unwrap();
    let (mut p, line) = start_line(b.path(), &["--identity", key.to_str().unwrap()]);
    assert_eq!(id_in_start_line(&line), shown);
    let _ = p.kill();
    let _ = p.wait();
    // Another folder without it is another peer.
    let (mut p, line) = start_line(b.path(), &[]);
    assert_ne!(id_in_start_line(&line), shown);
    let _ = p.kill();
    let _ = p.wait();
}

#[test]
fn an_identity_file_others_can_read_stops_the_start_with_one_clear_line() {
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("me.key");
    // Made when missing.
    let out = bin()
        .args(["--json", "-c", "id", "--identity"])
        .arg(&key)
        .arg("--dir")
        .arg(d.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = doc["id"].as_str().unwrap();
    assert_eq!(doc["short"], format!("{}{}", &id[..4], &id[5..8]));
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let before = fs::read(&key).unwrap();
    let out = bin()
        .args(["--listen", "127.0.0.1:0", "--headless", "--identity"])
        .arg(&key)
        .arg("--dir")
        .arg(d.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    assert_eq!(fs::read(&key).unwrap(), before, "the file was changed");
}
