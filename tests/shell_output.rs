//! What the shell prints in text mode: through the real binary, hostile
//! names escaped (and exact in JSON), comments after `index regex`, the
//! time forms of `index shortlist`, and the messages for wrong lines; and
//! tables from `render::text` at a given width and time zone.

mod util;

use chrono::{DateTime, Local};
use dropbox_shell::proto::HashEntry;
use dropbox_shell::render::{json, text as render};
use dropbox_shell::session::Output;
use util::*;

/// An RFC 3339 time as the tables show it: local, to the second.
fn local(rfc3339: &str) -> String {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .with_timezone(&Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn names_from_the_disk_are_listed_escaped_and_exact_in_json() {
    let server = Peer::start(&[]);
    let hostile = "two\nrows \u{1b}[2J\u{1b}]2;PWNED\u{7}.txt";
    server.write(hostile, b"x");
    server.write("plain.txt", b"y");
    let me = tempfile::tempdir().unwrap();

    let out = run(
        me.path(),
        &server.addr,
        &["index longlist", "hash checkall"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\u{7}'),
        "{shown:?}"
    );
    assert_eq!(
        shown.matches(r"two\nrows \e[2J\e]2;PWNED\x07.txt").count(),
        2,
        "{shown}"
    );
    // Two files: the header, two rows in each table, no more.
    let rows = shown.lines().filter(|l| l.starts_with("| ")).count();
    assert_eq!(rows, 6, "{shown}");

    let (code, docs, _) = run_json(me.path(), &server.addr, &["index longlist"]);
    assert_eq!(code, 0);
    let names: Vec<&str> = docs[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&hostile), "{names:?}");
}

#[test]
fn a_comment_after_a_regex_from_standard_input_is_not_part_of_it() {
    let server = Peer::start(&[]);
    server.write("notes.txt", b"n");
    server.write("photo.jpg", b"p");
    let me = tempfile::tempdir().unwrap();
    let out = run_stdin(
        me.path(),
        &server.addr,
        "# the text files\nindex regex \\.txt$   # only these\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("notes.txt") && shown.contains("1 entry"),
        "{shown}"
    );
    assert!(!shown.contains("photo.jpg"), "{shown}");
}

#[test]
fn shortlist_reads_words_and_refuses_a_date_without_dashes() {
    let server = Peer::start(&[]);
    server.write("new.txt", b"n");
    let me = tempfile::tempdir().unwrap();
    let (code, docs, err) = run_json(
        me.path(),
        &server.addr,
        &[
            "index shortlist yesterday today",
            "index shortlist -1h now",
            "index shortlist 2024-05-01T10:00Z now",
        ],
    );
    assert_eq!(code, 0, "{err}");
    for d in &docs {
        assert_eq!(d["files"][0]["name"], "new.txt", "{d}");
    }
    let out = run(
        me.path(),
        &server.addr,
        &["index shortlist 20240501 now"],
        &[],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("write 2024-05-01") && err.contains("@20240501"),
        "{err}"
    );
}

#[test]
fn wrong_lines_get_their_own_command_s_message() {
    let server = Peer::start(&[]);
    let me = tempfile::tempdir().unwrap();
    for (line, expected) in [
        ("peers x", "error: peers takes no arguments; usage: peers"),
        ("exit now", "error: exit takes no arguments"),
        ("upload --force", "error: usage: upload [--force] <file>"),
        (
            r"index regex \.txt(",
            r"error: bad regular expression '\.txt(': ",
        ),
    ] {
        let out = run(me.path(), &server.addr, &[line], &[]);
        assert!(!out.status.success(), "{line}");
        let err = text(&out.stderr);
        assert!(
            err.lines().any(|l| l.starts_with(expected)),
            "{line}: {err}"
        );
    }
}

fn hashes(names: &[&str]) -> Output {
    Output::Hashes {
        peer: "127.0.0.1:9000".into(),
        files: names
            .iter()
            .enumerate()
            .map(|(i, n)| HashEntry {
                name: n.to_string(),
                md5: Some(format!("{i:x}").repeat(32)),
                mtime_ns: 1_714_557_600_000_000_000,
                error: None,
            })
            .collect(),
    }
}

#[test]
fn md5s_stay_whole_at_60_columns_and_names_wrap() {
    let out = hashes(&[
        "docs/notes/a rather long name with spaces.md",
        "short.txt",
        "photos/holiday 2024/IMG 0001 (copy).jpeg",
    ]);
    let t = render(&out, Some(60));
    assert!(t.lines().all(|l| l.chars().count() <= 60), "{t}");
    for i in 0..3 {
        let md5 = format!("{i:x}").repeat(32);
        assert!(
            t.lines().any(|l| l.contains(&md5)),
            "{md5} not whole in\n{t}"
        );
    }
}

#[test]
fn an_unreadable_file_has_no_time() {
    let out = Output::Hashes {
        peer: "p:1".into(),
        files: vec![HashEntry {
            name: "locked.bin".into(),
            md5: None,
            mtime_ns: 0,
            error: Some("permission denied".into()),
        }],
    };
    let t = render(&out, Some(120));
    assert!(!t.contains("1970"), "{t}");
    assert!(t.contains("| -"), "{t}");
    assert_eq!(json(&out)["files"][0]["error"], "permission denied");
}

#[test]
fn sync_status_shows_local_time_like_history() {
    use dropbox_shell::sync::{SyncStatus, engine::PartnerStatus};
    let utc = "2024-05-01T10:00:00.000Z";
    let local = local(utc);
    let out = Output::SyncStatus(SyncStatus {
        enabled: true,
        interval_seconds: 10,
        rescan_seconds: 3600,
        watching: true,
        walks: 1,
        last_round: Some(utc.into()),
        pending: false,
        partners: vec![PartnerStatus {
            peer: "p:1".into(),
            peer_id: None,
            last_round: Some(utc.into()),
            last_result: Some("ok".into()),
            paused_deletions: 0,
            failures: 2,
            next_try: Some(utc.into()),
        }],
    });
    let t = render(&out, Some(200));
    assert!(!t.contains(utc), "{t}");
    assert_eq!(t.matches(&local).count(), 3, "{t}");
    assert!(t.contains("last round: 2024-"), "{t}");
    // JSON keeps UTC.
    assert_eq!(json(&out)["last_round"], utc);
}
