use super::*;
use crate::sync::local::{LocalChange, Seen};
use crate::sync::plan::FileState;

fn seen() -> Seen {
    Seen {
        state: FileState {
            kind: Kind::File,
            size: 1,
            mtime_ns: 1,
            mode: 0o644,
            md5: Some("m".into()),
        },
        ctime_ns: 1,
        ino: 1,
    }
}

fn entry(name: &str, seq: u64) -> SyncEntry {
    SyncEntry::test_file(name, seq, Some("m"))
}

/// Every path of `scope`, read in parts of `n`.
fn all_parts(db: &SyncDb, scope: &Scope, n: usize) -> Vec<Vec<String>> {
    let mut parts = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let part = db.scope_part("p", scope, after.as_deref(), n).unwrap();
        let Some(last) = part.last() else { break };
        after = Some(last.clone());
        parts.push(part);
    }
    parts
}

#[test]
fn a_scope_is_the_changes_on_both_sides_and_the_pending_paths_read_in_parts() {
    let d = tempfile::tempdir().unwrap();
    let db = SyncDb::open(d.path()).unwrap();
    let local: Vec<LocalChange> = (0..25)
        .map(|i| LocalChange::Present(format!("l{i:02}"), seen()))
        .collect();
    db.local_apply(&local).unwrap();
    db.remote_begin("p", "their-index").unwrap();
    let remote: Vec<SyncEntry> = (0..10).map(|i| entry(&format!("r{i:02}"), i + 1)).collect();
    db.remote_store("p", &remote).unwrap();
    // A path changed on both sides is planned once.
    db.remote_store("p", &[entry("l00", 11)]).unwrap();
    let scope = db.plan_scope("p").unwrap();
    assert_eq!((scope.local_to, scope.remote_to, scope.size), (25, 11, 36));
    let parts = all_parts(&db, &scope, 10);
    assert_eq!(
        parts.iter().map(Vec::len).collect::<Vec<_>>(),
        [10, 10, 10, 5]
    );
    let flat: Vec<String> = parts.concat();
    let mut sorted = flat.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(flat, sorted, "in order, each path once");
    assert_eq!(flat.len(), 35);
    // Small enough for one part: read by sequence number, the same paths.
    assert_eq!(all_parts(&db, &scope, 100), [flat]);
    // Planned, with one path left pending: only that one comes next time.
    db.plan_done("p", &scope, &["r03".to_string()].into())
        .unwrap();
    let next = db.plan_scope("p").unwrap();
    assert_eq!(all_parts(&db, &next, 10), [["r03".to_string()]]);
    // A new change on either side joins it.
    db.local_apply(&[LocalChange::Gone("l05".into())]).unwrap();
    let next = db.plan_scope("p").unwrap();
    assert_eq!(
        all_parts(&db, &next, 10),
        [["l05".to_string(), "r03".to_string()]]
    );
}

#[test]
fn a_partner_that_started_over_is_planned_whole_again() {
    let d = tempfile::tempdir().unwrap();
    let db = SyncDb::open(d.path()).unwrap();
    db.remote_begin("p", "first").unwrap();
    db.remote_store("p", &[entry("a", 1), entry("b", 2)])
        .unwrap();
    let scope = db.plan_scope("p").unwrap();
    db.plan_done("p", &scope, &Default::default()).unwrap();
    assert_eq!(db.plan_scope("p").unwrap().size, 0);
    // Its new index: what we held is dropped and its entries count from 0.
    db.remote_begin("p", "second").unwrap();
    assert_eq!(db.seen_of("p").unwrap().map(|m| m.seq), Some(0));
    db.remote_store("p", &[entry("a", 1)]).unwrap();
    let scope = db.plan_scope("p").unwrap();
    assert_eq!(all_parts(&db, &scope, 10), [["a".to_string()]]);
    // Unclean names from a partner are not kept.
    db.remote_store("p", &[entry("../x", 2), entry("/etc/passwd", 3)])
        .unwrap();
    let (_, view, _) = db
        .plan_view("p", &["../x".to_string(), "a".to_string()])
        .unwrap();
    assert_eq!(view.present.keys().collect::<Vec<_>>(), ["a"]);
}

#[test]
fn an_entry_read_before_the_one_stored_does_not_put_back_an_older_state() {
    let d = tempfile::tempdir().unwrap();
    let db = SyncDb::open(d.path()).unwrap();
    db.remote_begin("p", "i").unwrap();
    // The partner's round brought "a" as it is now (seq 7); our own
    // exchange, read from it a moment earlier, brings "a" half written.
    db.remote_store("p", &[SyncEntry::test_file("a", 7, Some("whole"))])
        .unwrap();
    let scope = db.plan_scope("p").unwrap();
    db.plan_done("p", &scope, &Default::default()).unwrap();
    db.remote_store("p", &[SyncEntry::test_file("a", 3, Some("half"))])
        .unwrap();
    let (_, view, _) = db.plan_view("p", &["a".to_string()]).unwrap();
    assert_eq!(view.present["a"].md5.as_deref(), Some("whole"));
    assert_eq!(db.seen_of("p").unwrap().map(|m| m.seq), Some(7));
    // A newer state of the path replaces it as before.
    db.remote_store("p", &[SyncEntry::test_file("a", 9, Some("again"))])
        .unwrap();
    let (_, view, _) = db.plan_view("p", &["a".to_string()]).unwrap();
    assert_eq!(view.present["a"].md5.as_deref(), Some("again"));
}
