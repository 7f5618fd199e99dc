//! The sync decision's tests: the decision table, both sides' mirror
//! image, renames, ordering, conflict names and permission bits.

use super::*;
use Action::*;

fn f(md5: &str, mtime: i64) -> FileState {
    FileState {
        kind: Kind::File,
        size: 1,
        mtime_ns: mtime,
        mode: 0o644,
        md5: Some(md5.into()),
    }
}
fn m(s: &FileState, mode: u32) -> FileState {
    FileState { mode, ..s.clone() }
}
fn d() -> FileState {
    FileState {
        kind: Kind::Dir,
        size: 0,
        mtime_ns: 0,
        mode: 0o755,
        md5: None,
    }
}

type Case<'a> = (
    Option<&'a FileState>,
    Option<&'a FileState>,
    Option<&'a FileState>,
    Action,
);

/// Every combination of absent / as synced / changed on each side, with
/// and without a last-synced state, for files.
#[test]
fn every_combination_for_files() {
    let base = f("base", 10);
    let a = f("a", 20); // a change
    let b = f("b", 30); // another, newer change
    let cases: Vec<Case> = vec![
        // No history.
        (None, None, None, Nothing),
        (Some(&a), None, None, Nothing),
        (None, Some(&a), None, Pull),
        (Some(&a), Some(&a), None, Record),
        (Some(&a), Some(&b), None, ConflictPull),
        (Some(&b), Some(&a), None, Nothing),
        // With history.
        (None, None, Some(&base), Forget),
        (Some(&base), None, Some(&base), Delete),
        (Some(&a), None, Some(&base), Nothing),
        (None, Some(&base), Some(&base), Nothing),
        (None, Some(&a), Some(&base), Pull),
        (Some(&base), Some(&base), Some(&base), Nothing),
        (Some(&base), Some(&a), Some(&base), Pull),
        (Some(&a), Some(&base), Some(&base), Nothing),
        (Some(&a), Some(&a), Some(&base), Record),
        (Some(&a), Some(&b), Some(&base), ConflictPull),
        (Some(&b), Some(&a), Some(&base), Nothing),
    ];
    for (i, (l, r, bs, want)) in cases.into_iter().enumerate() {
        assert_eq!(
            decide(l, r, bs),
            want,
            "case {i}: local {l:?} remote {r:?} base {bs:?}"
        );
    }
}

#[test]
fn the_two_sides_reach_mirror_decisions() {
    // Whatever the states, at most one side pulls or deletes a path, and a
    // conflict is resolved by exactly one side.
    let states = [
        None,
        Some(f("base", 10)),
        Some(f("a", 20)),
        Some(f("b", 30)),
        Some(d()),
    ];
    for l in &states {
        for r in &states {
            for bs in &states {
                let here = decide(l.as_ref(), r.as_ref(), bs.as_ref());
                let there = decide(r.as_ref(), l.as_ref(), bs.as_ref());
                let acts = |a: &Action| !matches!(a, Nothing | Record | Forget);
                assert!(
                    !(acts(&here) && acts(&there)),
                    "{l:?} {r:?} {bs:?}: {here:?} / {there:?}"
                );
                if l != r
                    && (l.is_some() || r.is_some())
                    && !(l.is_none() && r == bs)
                    && !(r.is_none() && l == bs)
                {
                    assert!(
                        acts(&here) || acts(&there),
                        "nobody acts: {l:?} {r:?} {bs:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn folders_and_modes() {
    let dir = d();
    assert_eq!(decide(None, Some(&dir), None), MakeDir);
    assert_eq!(decide(Some(&dir), None, Some(&dir)), RemoveDir);
    assert_eq!(decide(Some(&dir), Some(&dir), None), Record);
    // A file against a folder: the folder wins, the file holder acts.
    assert_eq!(decide(Some(&dir), Some(&f("x", 1)), None), Nothing);
    assert_eq!(decide(Some(&f("x", 1)), Some(&dir), None), FolderWins);
    assert_eq!(decide(Some(&f("x", 1)), Some(&dir), Some(&dir)), FolderWins);
    assert_eq!(decide(Some(&dir), Some(&f("x", 1)), Some(&dir)), Nothing);
    let x = f("x", 1);
    assert_eq!(
        decide(Some(&x), Some(&m(&x, 0o600)), Some(&x)),
        SetMode(0o600)
    );
    assert_eq!(decide(Some(&m(&x, 0o600)), Some(&x), Some(&x)), Nothing);
    // Both changed the mode: the larger wins on both sides.
    let (a, b) = (m(&x, 0o600), m(&x, 0o700));
    assert_eq!(decide(Some(&a), Some(&b), Some(&x)), SetMode(0o700));
    assert_eq!(decide(Some(&b), Some(&a), Some(&x)), Nothing);
    assert_eq!(
        decide(Some(&m(&dir, 0o700)), Some(&dir), Some(&dir)),
        Nothing
    );
}

#[test]
fn a_pull_of_bytes_being_deleted_is_a_rename() {
    let x = f("x", 1);
    let local: Index = [("old.txt".to_string(), x.clone())].into();
    let remote: Index = [("new.txt".to_string(), x.clone())].into();
    let base: Index = [("old.txt".to_string(), x.clone())].into();
    let p = plan(&local, &remote, &base, &Index::new());
    assert_eq!(
        p.actions[0],
        (
            "new.txt".to_string(),
            Rename {
                from: "old.txt".into()
            }
        )
    );
    assert_eq!(p.deletions(), 0);
}

#[test]
fn order_and_mass_deletion() {
    let x = f("x", 1);
    let dir = d();
    let mut local = Index::new();
    let mut base = Index::new();
    for i in 0..4 {
        local.insert(format!("f{i}"), f(&format!("m{i}"), 1));
        base.insert(format!("f{i}"), f(&format!("m{i}"), 1));
    }
    local.insert("a".into(), dir.clone());
    local.insert("a/b".into(), dir.clone());
    base.insert("a".into(), dir.clone());
    base.insert("a/b".into(), dir.clone());
    let remote: Index = [
        ("f0".to_string(), f("m0", 1)),
        ("n/new".to_string(), x),
        ("n".to_string(), dir),
    ]
    .into();
    let p = plan(&local, &remote, &base, &Index::new());
    let order: Vec<&str> = p
        .actions
        .iter()
        .filter(|(_, a)| !matches!(a, Record | Nothing))
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(order, vec!["n", "n/new", "f1", "f2", "f3", "a/b", "a"]);
    assert_eq!(p.deletions(), 3);
    assert_eq!(p.local_files, 4);
}

#[test]
fn a_file_against_a_folder_moves_aside_before_the_folders_contents_come() {
    let x = f("x", 1);
    let local: Index = [("z".to_string(), x.clone())].into();
    let remote: Index = [
        ("z".to_string(), d()),
        ("z/inner.bin".to_string(), f("i", 1)),
    ]
    .into();
    let none = Index::new();
    let p = plan(&local, &remote, &none, &none);
    assert_eq!(
        p.actions,
        vec![
            ("z".to_string(), FolderWins),
            ("z/inner.bin".to_string(), Pull)
        ]
    );
    // The side with the folder leaves it all alone.
    let p = plan(&remote, &local, &none, &none);
    assert!(p.is_idle(), "{p:?}");
}

#[test]
fn only_the_permission_bits_count() {
    let x = f("x", 1);
    let (plain, setuid) = (m(&x, 0o755), m(&x, 0o4755));
    assert!(plain.same(&setuid));
    for base in [None, Some(&plain), Some(&setuid)] {
        let want = if base.is_none() { Record } else { Nothing };
        assert_eq!(decide(Some(&plain), Some(&setuid), base), want);
        assert_eq!(decide(Some(&setuid), Some(&plain), base), want);
    }
    // A mode change carries its permission bits only.
    assert_eq!(
        decide(
            Some(&m(&x, 0o644)),
            Some(&m(&x, 0o6755)),
            Some(&m(&x, 0o644))
        ),
        SetMode(0o755)
    );
}

#[test]
fn a_tombstone_stands_in_for_a_missing_last_synced_state() {
    let x = f("x", 1);
    let local: Index = [("gone.txt".to_string(), x.clone())].into();
    let none = Index::new();
    // Without any record, a file only we have is new here: kept.
    assert_eq!(plan(&local, &none, &none, &none).actions[0].1, Nothing);
    // Their tombstone says they had exactly this version and deleted it.
    let tomb: Index = [("gone.txt".to_string(), x.clone())].into();
    assert_eq!(plan(&local, &none, &none, &tomb).actions[0].1, Delete);
    // But a version they never saw is not deleted.
    let changed: Index = [("gone.txt".to_string(), f("y", 2))].into();
    assert_eq!(plan(&changed, &none, &none, &tomb).actions[0].1, Nothing);
}

#[test]
fn a_path_they_hold_as_agreed_is_not_pulled_back_after_we_deleted_it() {
    let x = f("x", 1);
    let theirs: Index = [("gone.txt".to_string(), x.clone())].into();
    let none = Index::new();
    // Without any record, a file only they have is new there: pulled.
    assert_eq!(plan(&none, &theirs, &none, &none).actions[0].1, Pull);
    // They say we agreed on exactly this version: we deleted it since.
    assert_eq!(plan(&none, &theirs, &none, &theirs).actions[0].1, Nothing);
    // Our own edit beats the version we agreed on: they pull ours.
    let ours: Index = [("gone.txt".to_string(), f("y", 2))].into();
    assert_eq!(plan(&ours, &theirs, &none, &theirs).actions[0].1, Nothing);
}

#[test]
fn conflict_names_keep_the_extension() {
    assert_eq!(
        conflict_name("d/report.txt", "20240501-120000", "MZUH-VLPY-MK6X-O3EP"),
        "d/report.sync-conflict-20240501-120000-MZUHVLP.txt"
    );
    assert_eq!(
        conflict_name("Makefile", "1", "p"),
        "Makefile.sync-conflict-1-p"
    );
    assert_eq!(
        conflict_name(".bashrc", "1", "p"),
        ".bashrc.sync-conflict-1-p"
    );
}

#[test]
fn a_conflict_copy_of_a_conflict_copy_gets_a_fresh_marker() {
    assert_eq!(
        conflict_name(
            "d/report.sync-conflict-20240501-120000-MZUHVLP.txt",
            "20250101-000000",
            "ABCD-EFGH-IJKL"
        ),
        "d/report.sync-conflict-20250101-000000-ABCDEFG.txt"
    );
    assert_eq!(
        conflict_name("Makefile.sync-conflict-1-p", "2", "q"),
        "Makefile.sync-conflict-2-q"
    );
    assert_eq!(
        conflict_name("a.tar.sync-conflict-1-p.gz", "2", "q"),
        "a.tar.sync-conflict-2-q.gz"
    );
}
