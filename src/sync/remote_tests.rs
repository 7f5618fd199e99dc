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
    let mut cursor = PartCursor::default();
    loop {
        let part = db.scope_part("p", scope, &mut cursor, n).unwrap();
        if part.is_empty() {
            break;
        }
        parts.push(part);
        assert!(parts.len() <= 10_000, "the parts never end");
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
    db.remote_store("p", "their-index", &remote).unwrap();
    // A path changed on both sides is planned once.
    db.remote_store("p", "their-index", &[entry("l00", 11)])
        .unwrap();
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
    db.remote_store("p", "first", &[entry("a", 1), entry("b", 2)])
        .unwrap();
    let scope = db.plan_scope("p").unwrap();
    db.plan_done("p", &scope, &Default::default()).unwrap();
    assert_eq!(db.plan_scope("p").unwrap().size, 0);
    // Its new index: what we held is dropped and its entries count from 0.
    db.remote_begin("p", "second").unwrap();
    assert_eq!(db.seen_of("p").unwrap().map(|m| m.seq), Some(0));
    db.remote_store("p", "second", &[entry("a", 1)]).unwrap();
    // A late batch of the index it left (another exchange still under
    // way) is dropped: its numbers count in another index.
    db.remote_store("p", "first", &[entry("a", 99), entry("old", 98)])
        .unwrap();
    assert_eq!(db.seen_of("p").unwrap().map(|m| m.seq), Some(1));
    let scope = db.plan_scope("p").unwrap();
    assert_eq!(all_parts(&db, &scope, 10), [["a".to_string()]]);
    // Unclean names from a partner are not kept.
    db.remote_store("p", "second", &[entry("../x", 2), entry("/etc/passwd", 3)])
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
    db.remote_store("p", "i", &[SyncEntry::test_file("a", 7, Some("whole"))])
        .unwrap();
    let scope = db.plan_scope("p").unwrap();
    db.plan_done("p", &scope, &Default::default()).unwrap();
    db.remote_store("p", "i", &[SyncEntry::test_file("a", 3, Some("half"))])
        .unwrap();
    let (_, view, _) = db.plan_view("p", &["a".to_string()]).unwrap();
    assert_eq!(view.present["a"].md5.as_deref(), Some("whole"));
    assert_eq!(db.seen_of("p").unwrap().map(|m| m.seq), Some(7));
    // A newer state of the path replaces it as before.
    db.remote_store("p", "i", &[SyncEntry::test_file("a", 9, Some("again"))])
        .unwrap();
    let (_, view, _) = db.plan_view("p", &["a".to_string()]).unwrap();
    assert_eq!(view.present["a"].md5.as_deref(), Some("again"));
}

#[test]
fn parts_hold_every_path_of_the_scope_once_in_order_whichever_side_is_sparse() {
    let names: Vec<String> = (0..400).map(|i| format!("p{i:04}")).collect();
    let pick = |rng: &mut fastrand::Rng, share: f64| -> BTreeSet<String> {
        (names.iter())
            .filter(|_| rng.f64() < share)
            .cloned()
            .collect()
    };
    for (seed, (l_share, r_share, p_share)) in [
        (0.9, 0.01, 0.0),
        (0.01, 0.9, 0.0),
        (0.02, 0.03, 0.02),
        (0.8, 0.7, 0.05),
        (0.0, 0.0, 0.3),
    ]
    .into_iter()
    .enumerate()
    {
        let mut rng = fastrand::Rng::with_seed(seed as u64);
        let d = tempfile::tempdir().unwrap();
        let db = SyncDb::open(d.path()).unwrap();
        let present = |names: &BTreeSet<String>, size: u64| -> Vec<LocalChange> {
            let mut s = seen();
            s.state.size = size;
            (names.iter())
                .map(|n| LocalChange::Present(n.clone(), s.clone()))
                .collect()
        };
        let all: BTreeSet<String> = names.iter().cloned().collect();
        db.local_apply(&present(&all, 1)).unwrap();
        db.remote_begin("p", "i").unwrap();
        let stored: Vec<SyncEntry> = (names.iter().enumerate())
            .map(|(i, n)| entry(n, i as u64 + 1))
            .collect();
        db.remote_store("p", "i", &stored).unwrap();
        let pending = pick(&mut rng, p_share);
        db.plan_done("p", &db.plan_scope("p").unwrap(), &pending)
            .unwrap();
        // Changed since: on our side, on the partner's.
        let (local, remote) = (pick(&mut rng, l_share), pick(&mut rng, r_share));
        db.local_apply(&present(&local, 2)).unwrap();
        let newer: Vec<SyncEntry> = (remote.iter().enumerate())
            .map(|(i, n)| entry(n, 1000 + i as u64))
            .collect();
        db.remote_store("p", "i", &newer).unwrap();
        let scope = db.plan_scope("p").unwrap();
        let expected: Vec<String> = (local.iter())
            .chain(&remote)
            .chain(&pending)
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for n in [1, 3, 7, 50, 1000] {
            let parts = all_parts(&db, &scope, n);
            assert!(parts.iter().all(|p| p.len() <= n), "seed {seed}, n {n}");
            assert_eq!(parts.concat(), expected, "seed {seed}, n {n}");
        }
    }
}
