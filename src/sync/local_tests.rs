use super::*;
use crate::sync::plan::FileState;

fn file(md5: &str, mtime_ns: i64) -> Seen {
    Seen {
        state: FileState {
            kind: Kind::File,
            size: 1,
            mtime_ns,
            mode: 0o644,
            md5: Some(md5.into()),
        },
        ctime_ns: 1,
        ino: 1,
    }
}

fn present(path: &str, seen: Seen) -> LocalChange {
    LocalChange::Present(path.into(), seen)
}

/// (name, seq, deleted) of what a partner is sent after `since`.
fn sent(db: &SyncDb, since: u64) -> Vec<(String, u64, bool)> {
    db.local_since("p", since, 100)
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.seq, e.deleted))
        .collect()
}

#[test]
fn every_change_gets_the_next_sequence_number_and_a_partner_gets_what_came_after() {
    let d = tempfile::tempdir().unwrap();
    let db = SyncDb::open(d.path()).unwrap();
    assert_eq!(db.local_seq().unwrap(), 0);
    let n = db
        .local_apply(&[present("a", file("1", 1)), present("b", file("2", 1))])
        .unwrap();
    assert_eq!(n, 2);
    // A new stamp alone (same state) is no change; an edit and a deletion are.
    let mut restamped = file("1", 1);
    restamped.ctime_ns = 9;
    assert_eq!(
        db.local_apply(&[present("a", restamped.clone())]).unwrap(),
        0
    );
    assert_eq!(db.local_seen("a").unwrap(), Some(restamped));
    db.local_apply(&[present("b", file("3", 2)), LocalChange::Gone("a".into())])
        .unwrap();
    assert_eq!(
        sent(&db, 2),
        [("b".to_string(), 3, false), ("a".to_string(), 4, true)]
    );
    assert_eq!(sent(&db, 4), []);
    // Gone twice is one tombstone.
    assert_eq!(db.local_apply(&[LocalChange::Gone("a".into())]).unwrap(), 0);
    assert_eq!(db.local_files().unwrap(), 1);
}

#[test]
fn sequence_numbers_and_the_index_id_survive_reopening() {
    let d = tempfile::tempdir().unwrap();
    let id = {
        let db = SyncDb::open(d.path()).unwrap();
        db.local_apply(&[present("a", file("1", 1)), present("b", file("2", 1))])
            .unwrap();
        db.set_local_scanned().unwrap();
        db.index_id().unwrap()
    };
    let db = SyncDb::open(d.path()).unwrap();
    assert_eq!(db.index_id().unwrap(), id);
    assert!(db.local_scanned().unwrap());
    assert_eq!(db.local_seq().unwrap(), 2);
    db.local_apply(&[present("c", file("3", 1))]).unwrap();
    assert_eq!(sent(&db, 2), [("c".to_string(), 3, false)]);
    // A database made afresh is another index, and not yet scanned.
    let e = tempfile::tempdir().unwrap();
    let fresh = SyncDb::open(e.path()).unwrap();
    assert_ne!(fresh.index_id().unwrap(), id);
    assert!(!fresh.local_scanned().unwrap());
}

#[test]
fn an_entry_is_offered_as_agreed_only_in_the_state_last_synced_with_that_partner() {
    let d = tempfile::tempdir().unwrap();
    let db = SyncDb::open(d.path()).unwrap();
    db.local_apply(&[
        present("same", file("1", 1)),
        present("edited", file("2", 5)),
        present("gone", file("3", 1)),
        present("never", file("4", 1)),
    ])
    .unwrap();
    let agreed = |s: &Seen| Some(s.state.clone());
    db.apply(
        "p",
        &[
            ("same".into(), agreed(&file("1", 1))),
            ("edited".into(), agreed(&file("old", 1))),
            ("gone".into(), agreed(&file("3-agreed", 1))),
        ],
    )
    .unwrap();
    db.local_apply(&[
        LocalChange::Gone("gone".into()),
        LocalChange::Gone("never".into()),
    ])
    .unwrap();
    let flags: Vec<(String, bool, bool, Option<String>)> = db
        .local_since("p", 0, 100)
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.agreed, e.deleted, e.md5))
        .collect();
    let row = |n: &str, a, d, m: &str| (n.to_string(), a, d, Some(m.to_string()));
    assert_eq!(
        flags,
        [
            row("same", true, false, "1"),
            row("edited", false, false, "2"),
            // A tombstone of an agreed path carries the agreed state.
            row("gone", true, true, "3-agreed"),
            row("never", false, true, "4"),
        ]
    );
    // Another partner agreed on nothing.
    assert!(
        db.local_since("q", 0, 100)
            .unwrap()
            .iter()
            .all(|e| !e.agreed)
    );
}

#[test]
fn the_paths_under_a_folder_are_found_by_prefix_and_nothing_beside_it() {
    let d = tempfile::tempdir().unwrap();
    let db = SyncDb::open(d.path()).unwrap();
    let names = ["a", "a/x", "a/y/z", "a.b", "a0", "ab/c"];
    let changes: Vec<LocalChange> = names.iter().map(|n| present(n, file("1", 1))).collect();
    db.local_apply(&changes).unwrap();
    let mut under = db.local_under("a").unwrap();
    under.sort();
    assert_eq!(under, ["a/x", "a/y/z"]);
}
