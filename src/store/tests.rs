use super::*;
use crate::proto::hex;
use crate::stream::Sink;
use md5::{Digest, Md5};

use crate::secure::keys::Keypair;
use crate::secure::sign::Signer;

/// A fixed identity: (its id, its signer).
fn identity(seed: u8) -> (String, Signer) {
    let keys = Keypair::from_private([seed; 32]).unwrap();
    (keys.id().to_string(), Signer::of(&keys).unwrap())
}

fn owner_id() -> String {
    identity(7).0
}

fn other_id() -> String {
    identity(9).0
}

fn record(name: &str, bytes: &[u8], version: u64) -> Record {
    signed_by(7, name, bytes, version)
}

fn signed_by(seed: u8, name: &str, bytes: &[u8], version: u64) -> Record {
    let (id, signer) = identity(seed);
    let mut r = Record {
        name: name.into(),
        size: bytes.len() as u64,
        md5: hex(&Md5::digest(bytes)),
        mtime_ns: 1,
        mode: 0o644,
        copies: 2,
        version,
        made_ns: version as i64,
        deleted: false,
        owner: id,
        signer: signer.public_hex(),
        sig: String::new(),
    };
    r.sig = signer.sign(&r.signed_bytes());
    r
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
    assert!(put(&store, &owner_id(), &v1, b"one").unwrap());
    assert!(
        !put(&store, &owner_id(), &v1, b"one").unwrap(),
        "held: no bytes again"
    );
    assert_eq!(store.status().used, 3);
    let v2 = record("a/b.txt", b"two!", 2);
    assert!(put(&store, &owner_id(), &v2, b"two!").unwrap());
    assert_eq!(
        store.stat(&owner_id(), "a/b.txt").unwrap().unwrap().record,
        v2
    );
    assert_eq!(store.status().used, 4);
    // Older than held: refused.
    let e = store.begin_put(&owner_id(), &v1).err().unwrap();
    assert!(e.to_string().contains("newer"), "{e}");
    // One blob on disk: the old version went.
    let dir = store.deposit_dir(&owner_id(), "a/b.txt").unwrap();
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
    let e = put(&store, &owner_id(), &r, b"wrong").unwrap_err();
    assert!(e.to_string().contains("not kept"), "{e}");
    assert!(store.stat(&owner_id(), "x").unwrap().is_none());
    assert_eq!(tmp_files(&store), 0);
    assert_eq!(store.status().used, 0);
    // A put cut short (dropped) leaves nothing and frees its room.
    let Put::Receive(w) = store.begin_put(&owner_id(), &r).unwrap() else {
        panic!()
    };
    assert_eq!(tmp_files(&store), 1);
    assert!(
        store.begin_put(&owner_id(), &r).is_err(),
        "busy while being written"
    );
    drop(w);
    assert_eq!(tmp_files(&store), 0);
    assert!(put(&store, &owner_id(), &r, b"right").unwrap());
}

#[test]
fn each_owner_sees_only_its_own() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path(), None, "z").unwrap();
    for n in ["b", "a", "c"] {
        put(
            &store,
            &owner_id(),
            &record(n, n.as_bytes(), 1),
            n.as_bytes(),
        )
        .unwrap();
    }
    let list = |owner: &str| {
        let mut names = Vec::new();
        store
            .each_held(owner, &mut |h| {
                names.push(h.record.name);
                Ok(())
            })
            .unwrap();
        names.sort();
        names
    };
    assert_eq!(list(&owner_id()), vec!["a", "b", "c"]);
    assert_eq!(store.all_held(1, 1).unwrap().len(), 1);
    assert_eq!(store.all_held(0, 10).unwrap().len(), 3);
    assert!(list(&other_id()).is_empty());
    assert!(store.stat(&other_id(), "a").unwrap().is_none());
    assert!(store.open_copy(&other_id(), "a").is_err());
    assert!(
        store.stat("../etc", "a").is_err(),
        "an owner is an id, never a path"
    );
}

#[test]
fn the_quota_refuses_clearly_and_forget_gives_room_back() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path(), Some(10), "z9").unwrap();
    put(&store, &owner_id(), &record("a", b"123456", 1), b"123456").unwrap();
    let e = store
        .begin_put(&owner_id(), &record("b", b"12345", 1))
        .err()
        .unwrap();
    assert_eq!(e.kind(), crate::ErrorKind::NoSpace);
    assert!(
        e.to_string().contains("quota is 10 B") && e.to_string().contains("z9"),
        "{e}"
    );
    assert!(
        !store.forget(&owner_id(), "a", 0).unwrap(),
        "newer than upto: kept"
    );
    assert!(store.forget(&owner_id(), "a", 1).unwrap());
    assert_eq!(store.status().used, 0);
    put(&store, &owner_id(), &record("b", b"12345", 1), b"12345").unwrap();
}

#[test]
fn opening_repairs_what_a_crash_left() {
    let d = tempfile::tempdir().unwrap();
    let (dir_a, dir_b);
    {
        let store = Store::open(d.path(), None, "z").unwrap();
        put(&store, &owner_id(), &record("a", b"aaa", 1), b"aaa").unwrap();
        put(&store, &owner_id(), &record("b", b"bbbb", 1), b"bbbb").unwrap();
        dir_a = store.deposit_dir(&owner_id(), "a").unwrap();
        dir_b = store.deposit_dir(&owner_id(), "b").unwrap();
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
        store.stat(&owner_id(), "b").unwrap().unwrap().state,
        CopyState::Missing
    );
    assert_eq!(tmp_files(&store), 0);
    assert!(!orphan.exists());
    assert_eq!(store.status().used, 3);
    // A missing copy is filled again by the same version.
    assert!(put(&store, &owner_id(), &record("b", b"bbbb", 1), b"bbbb").unwrap());
    assert_eq!(store.status().used, 7);
}

#[test]
fn records_must_be_signed_by_the_key_the_store_knows() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path(), None, "z").unwrap();
    let mut r = record("s", b"sss", 1);
    // Tampered: refused.
    r.size = 4;
    assert!(store.begin_put(&owner_id(), &r).is_err());
    // Passed on by a store before the owner came: taken, the key noted.
    let r = record("s", b"sss", 1);
    assert!(put(&store, &other_id(), &r, b"sss").unwrap());
    // The owner's own key wins; another key for that owner from a store
    // is refused.
    let mut forged = signed_by(9, "t", b"ttt", 1);
    forged.owner = owner_id();
    forged.sig = identity(9).1.sign(&forged.signed_bytes());
    assert!(store.begin_put(&other_id(), &forged).is_err());
    assert!(store.stat_with_proof("t", &forged).unwrap().is_none());
    // A store showing the owner's record sees what is held; without it, nothing.
    assert_eq!(store.stat_with_proof("s", &r).unwrap().unwrap().record, r);
    assert!(store.stat(&other_id(), "s").unwrap().is_none());
    let mut wrong_name = r.clone();
    wrong_name.name = "u".into();
    assert!(store.stat_with_proof("s", &wrong_name).unwrap().is_none());
}

#[test]
fn the_owners_own_key_clears_what_a_wrong_key_planted() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path(), None, "z").unwrap();
    // Someone else signs a record in the owner's name, at a high version,
    // before the owner ever came: kept, under a secondhand key.
    let mut junk = signed_by(9, "n", b"junk", 99);
    junk.owner = owner_id();
    junk.sig = identity(9).1.sign(&junk.signed_bytes());
    assert!(put(&store, &other_id(), &junk, b"junk").unwrap());
    // The owner comes itself: its key wins, the junk goes, its version 1 lands.
    let real = record("n", b"real", 1);
    assert!(put(&store, &owner_id(), &real, b"real").unwrap());
    assert_eq!(store.stat(&owner_id(), "n").unwrap().unwrap().record, real);
    assert_eq!(store.status().used, 4);
    // Owner ids are peer ids, never names of the store's own layout.
    for bad in ["tmp", "lock", "..", ""] {
        assert!(store.stat(bad, "n").is_err(), "{bad}");
    }
}

#[test]
fn a_tombstone_replaces_the_copy_and_keeps_older_versions_out() {
    let d = tempfile::tempdir().unwrap();
    {
        let store = Store::open(d.path(), None, "z").unwrap();
        put(&store, &owner_id(), &record("t", b"bytes", 1), b"bytes").unwrap();
        let mut tomb = record("t", b"", 2);
        tomb.deleted = true;
        tomb.sig = identity(7).1.sign(&tomb.signed_bytes());
        assert!(
            !put(&store, &owner_id(), &tomb, b"").unwrap(),
            "no bytes travel"
        );
        assert_eq!(store.status().used, 0);
        assert!(store.open_copy(&owner_id(), "t").is_err());
        let e = store
            .begin_put(&other_id(), &record("t", b"bytes", 1))
            .err()
            .unwrap();
        assert!(e.to_string().contains("newer"), "{e}");
    }
    // After a restart it is still a tombstone, not a missing copy.
    let store = Store::open(d.path(), None, "z").unwrap();
    let held = store.stat(&owner_id(), "t").unwrap().unwrap();
    assert!(held.record.deleted);
    assert_eq!(held.state, CopyState::Ok);
    // A new version above it lands.
    assert!(put(&store, &owner_id(), &record("t", b"again", 3), b"again").unwrap());
    assert_eq!(store.status().used, 5);
}

#[test]
fn told_addresses_never_push_out_stores_that_answered() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(d.path(), None, "z").unwrap();
    store.note_store("10.0.0.1:1");
    store.confirm_store("10.0.0.1:1");
    for i in 0..1000 {
        store.note_store(&format!("192.0.2.1:{i}"));
    }
    assert_eq!(store.known_stores(), vec!["10.0.0.1:1".to_string()]);
    let ask = store.stores_to_ask();
    assert_eq!(ask.len(), 1 + crate::limits::KNOWN_STORES);
    assert_eq!(ask[0], "10.0.0.1:1");
    store.drop_store("10.0.0.1:1");
    assert!(store.known_stores().is_empty());
}
