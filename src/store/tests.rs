use super::*;
use crate::proto::hex;
use crate::stream::Sink;
use md5::{Digest, Md5};

const OWNER: &str = "AAAA-BBBB-CCCC";
const OTHER: &str = "DDDD-EEEE-FFFF";

fn record(name: &str, bytes: &[u8], version: u64) -> Record {
    Record {
        name: name.into(),
        size: bytes.len() as u64,
        md5: hex(&Md5::digest(bytes)),
        mtime_ns: 1,
        mode: 0o644,
        copies: 2,
        version,
        made_ns: version as i64,
    }
}

/// Put `bytes` as `r` the way a connection does; the sender's MD5 is the
/// one of what it sends.
fn put(store: &Store, owner: &str, r: &Record, bytes: &[u8]) -> Result<bool> {
    match store.begin_put(owner, r)? {
        Put::Have => Ok(false),
        Put::Receive(mut w) => {
            let mut buf = w.buffer(bytes.len());
            buf[..bytes.len()].copy_from_slice(bytes);
            w.write_owned(buf, bytes.len())?;
            w.commit(&hex(&Md5::digest(bytes)))?;
            Ok(true)
        }
    }
}

fn tmp_files(store: &Store) -> usize {
    fs::read_dir(store.tmp_dir()).unwrap().count()
}

#[test]
fn a_copy_is_kept_once_and_a_newer_version_replaces_it() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path(), None, "z").unwrap();
    let v1 = record("a/b.txt", b"one", 1);
    assert!(put(&store, OWNER, &v1, b"one").unwrap());
    assert!(
        !put(&store, OWNER, &v1, b"one").unwrap(),
        "held: no bytes again"
    );
    assert_eq!(store.status().used, 3);
    let v2 = record("a/b.txt", b"two!", 2);
    assert!(put(&store, OWNER, &v2, b"two!").unwrap());
    assert_eq!(store.stat(OWNER, "a/b.txt").unwrap().unwrap().record, v2);
    assert_eq!(store.status().used, 4);
    // Older than held: refused.
    let e = store.begin_put(OWNER, &v1).err().unwrap();
    assert!(e.to_string().contains("newer"), "{e}");
    // One blob on disk: the old version went.
    let dir = store.deposit_dir(OWNER, "a/b.txt").unwrap();
    let blobs: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("blob-"))
        .collect();
    assert_eq!(blobs.len(), 1);
    assert_eq!(tmp_files(&store), 0);
}

#[test]
fn bytes_that_do_not_match_the_record_are_not_kept() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path(), None, "z").unwrap();
    let r = record("x", b"right", 1);
    let e = put(&store, OWNER, &r, b"wrong").unwrap_err();
    assert!(e.to_string().contains("not kept"), "{e}");
    assert!(store.stat(OWNER, "x").unwrap().is_none());
    assert_eq!(tmp_files(&store), 0);
    assert_eq!(store.status().used, 0);
    // A put cut short (dropped) leaves nothing and frees its room.
    let Put::Receive(w) = store.begin_put(OWNER, &r).unwrap() else {
        panic!()
    };
    assert_eq!(tmp_files(&store), 1);
    assert!(
        store.begin_put(OWNER, &r).is_err(),
        "busy while being written"
    );
    drop(w);
    assert_eq!(tmp_files(&store), 0);
    assert!(put(&store, OWNER, &r, b"right").unwrap());
}

#[test]
fn each_owner_sees_only_its_own() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path(), None, "z").unwrap();
    for n in ["b", "a", "c"] {
        put(&store, OWNER, &record(n, n.as_bytes(), 1), n.as_bytes()).unwrap();
    }
    let (all, more) = store.list(OWNER, None, 10).unwrap();
    let names: Vec<_> = all.iter().map(|h| h.record.name.as_str()).collect();
    assert_eq!((names, more), (vec!["a", "b", "c"], false));
    let (two, more) = store.list(OWNER, Some("a"), 1).unwrap();
    assert_eq!((two[0].record.name.as_str(), more), ("b", true));
    assert!(store.list(OTHER, None, 10).unwrap().0.is_empty());
    assert!(store.stat(OTHER, "a").unwrap().is_none());
    assert!(store.open_copy(OTHER, "a").is_err());
    assert!(
        store.stat("../etc", "a").is_err(),
        "an owner is an id, never a path"
    );
}

#[test]
fn the_quota_refuses_clearly_and_forget_gives_room_back() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path(), Some(10), "z9").unwrap();
    put(&store, OWNER, &record("a", b"123456", 1), b"123456").unwrap();
    let e = store
        .begin_put(OWNER, &record("b", b"12345", 1))
        .err()
        .unwrap();
    assert_eq!(e.kind(), crate::ErrorKind::NoSpace);
    assert!(
        e.to_string().contains("quota is 10 B") && e.to_string().contains("z9"),
        "{e}"
    );
    assert!(
        !store.forget(OWNER, "a", 0).unwrap(),
        "newer than upto: kept"
    );
    assert!(store.forget(OWNER, "a", 1).unwrap());
    assert_eq!(store.status().used, 0);
    put(&store, OWNER, &record("b", b"12345", 1), b"12345").unwrap();
}

#[test]
fn opening_repairs_what_a_crash_left() {
    let d = tempfile::tempdir().unwrap();
    let (dir_a, dir_b);
    {
        let store = Store::open(d.path(), None, "z").unwrap();
        put(&store, OWNER, &record("a", b"aaa", 1), b"aaa").unwrap();
        put(&store, OWNER, &record("b", b"bbbb", 1), b"bbbb").unwrap();
        dir_a = store.deposit_dir(OWNER, "a").unwrap();
        dir_b = store.deposit_dir(OWNER, "b").unwrap();
        assert!(
            Store::open(d.path(), None, "z").is_err(),
            "one store per folder"
        );
    }
    // A crash between the rename of version 2 and its meta, a lost blob,
    // half a transfer, a folder without meta.
    fs::write(dir_a.join("blob-2"), b"new").unwrap();
    fs::remove_file(dir_b.join("blob-1")).unwrap();
    fs::write(d.path().join("store/tmp/.x.dbsh-part"), b"half").unwrap();
    let orphan = dir_a.parent().unwrap().join("0000");
    fs::create_dir(&orphan).unwrap();
    fs::write(orphan.join("blob-1"), b"?").unwrap();
    let store = Store::open(d.path(), None, "z").unwrap();
    assert!(!dir_a.join("blob-2").exists());
    assert!(dir_a.join("blob-1").exists());
    assert_eq!(
        store.stat(OWNER, "b").unwrap().unwrap().state,
        CopyState::Missing
    );
    assert_eq!(tmp_files(&store), 0);
    assert!(!orphan.exists());
    assert_eq!(store.status().used, 3);
    // A missing copy is filled again by the same version.
    assert!(put(&store, OWNER, &record("b", b"bbbb", 1), b"bbbb").unwrap());
    assert_eq!(store.status().used, 7);
}
