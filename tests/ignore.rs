//! `.dropboxignore`: gitignore patterns at the folder's root keep paths out
//! of listings, hashes and sync, on both sides; edits take effect at the
//! next scan, and the file itself syncs like any other.

mod util;

use std::fs;
use std::path::Path;
use std::time::Duration;

use util::*;

fn listed(me: &Path, peer: &str, cmd: &str) -> Vec<String> {
    let (code, docs, err) = run_json(me, peer, &[cmd]);
    assert_eq!(code, 0, "{err}");
    let mut v: Vec<String> = docs[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// Rewrite the patterns file with a new version (mtime and size may not
/// be enough on a coarse clock: the ctime changes too).
fn patterns(p: &Peer, text: &str) {
    std::thread::sleep(Duration::from_millis(20));
    p.write(".dropboxignore", text.as_bytes());
}

#[test]
fn listings_and_hashes_leave_out_what_the_patterns_name() {
    let server = Peer::start(&[]);
    server.write("keep.txt", b"k");
    server.write("a.log", b"l");
    server.write("deep/b.log", b"l");
    server.write("build/out/x.bin", b"b");
    let me = tempfile::tempdir().unwrap();
    let all = listed(me.path(), &server.addr, "index longlist");
    assert!(all.contains(&"a.log".to_string()) && all.contains(&"build".to_string()));
    // Added: a file pattern and a folder pattern.
    patterns(&server, "*.log\nbuild/\n");
    let want = vec![".dropboxignore", "deep", "keep.txt"];
    assert_eq!(listed(me.path(), &server.addr, "index longlist"), want);
    assert_eq!(
        listed(me.path(), &server.addr, "hash checkall"),
        vec![".dropboxignore", "keep.txt"]
    );
    // An ignored file is not served by name either.
    let (code, docs, _) = run_json(me.path(), &server.addr, &["download TCP a.log"]);
    assert_eq!(code, 1);
    assert!(
        docs[0]["error"]
            .as_str()
            .unwrap()
            .contains(".dropboxignore")
    );
    // Changed: the next request goes by the new patterns.
    patterns(&server, "build/\n");
    let now = listed(me.path(), &server.addr, "index longlist");
    assert!(now.contains(&"a.log".to_string()) && now.contains(&"deep/b.log".to_string()));
    assert!(!now.iter().any(|n| n.starts_with("build")));
    // Removed: everything is back.
    fs::remove_file(server.path(".dropboxignore")).unwrap();
    let back = listed(me.path(), &server.addr, "index longlist");
    assert!(back.contains(&"build/out/x.bin".to_string()));
}

#[test]
fn ignored_paths_are_neither_sent_nor_taken_and_never_deleted() {
    let a = syncing(&[]);
    a.write(".dropboxignore", b"*.log\nbuild/\n");
    a.write("keep.txt", b"shared");
    a.write("a.log", b"a's log");
    a.write("build/out.bin", b"a's build");
    let b = syncing(&["--peer", &a.addr]);
    b.write("b.log", b"b's log");
    // The patterns file syncs like any other; then both sides ignore alike.
    assert!(wait_for(EVENTUALLY, || {
        b.path("keep.txt").exists() && b.path(".dropboxignore").exists()
    }));
    std::thread::sleep(Duration::from_secs(3));
    assert!(!b.path("a.log").exists() && !b.path("build").exists());
    assert!(!a.path("b.log").exists());
    assert_eq!(fs::read(a.path("a.log")).unwrap(), b"a's log");
    assert_eq!(fs::read(b.path("b.log")).unwrap(), b"b's log");
    // A pattern removed: what it held syncs at the next scan.
    std::thread::sleep(Duration::from_millis(20));
    a.write(".dropboxignore", b"build/\n");
    assert!(wait_for(EVENTUALLY, || {
        b.path("a.log").exists() && a.path("b.log").exists()
    }));
    assert!(!b.path("build").exists());
}
