//! Each request type, good and malformed, on byte slices.

use super::*;

#[test]
fn index_lists_everything_in_batches_then_ends() {
    let f = fixture();
    f.put("a.txt", b"a");
    f.put("d/b.txt", b"bb");
    let got = f.ask(Request::Index {
        filter: Filter::All,
    });
    assert_eq!(names(&got), ["a.txt", "d", "d/b.txt"]);
    assert_eq!(got.last(), Some(&Response::End));
    let Response::Entries { entries } = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!((entries[0].size, entries[0].kind), (1, Kind::File));
    assert_eq!(entries[1].kind, Kind::Dir);
}

#[test]
fn index_between_keeps_the_range_and_refuses_a_reversed_one() {
    let f = fixture();
    f.put("old", b"1");
    f.put("new", b"2");
    let at = |name: &str, secs: i64| {
        let t = filetime::FileTime::from_unix_time(secs, 0);
        filetime::set_file_mtime(f.dir.path().join(name), t).unwrap();
    };
    at("old", 1_000);
    at("new", 2_000);
    let between = |start_s: i64, end_s: i64| Request::Index {
        filter: Filter::Between {
            start_ns: start_s * 1_000_000_000,
            end_ns: end_s * 1_000_000_000,
        },
    };
    assert_eq!(names(&f.ask(between(500, 1_500))), ["old"]);
    assert_eq!(names(&f.ask(between(1_000, 2_000))), ["new", "old"]);
    assert_error(
        &f.ask(between(2_000, 1_000)),
        "start of the range is after its end",
    );
}

#[test]
fn index_regex_filters_and_refuses_bad_or_long_expressions() {
    let f = fixture();
    f.put("a.txt", b"a");
    f.put("b.md", b"b");
    let regex = |expr: &str| Request::Index {
        filter: Filter::Regex { expr: expr.into() },
    };
    assert_eq!(names(&f.ask(regex(r"\.txt$"))), ["a.txt"]);
    assert_error(&f.ask(regex("(unclosed")), "bad regular expression");
    let long = "a".repeat(crate::limits::REGEX_LEN + 1);
    assert_error(&f.ask(regex(&long)), "at most");
}

#[test]
fn hash_one_answers_a_file_and_refuses_the_missing_the_fifo_and_the_outside() {
    let f = fixture();
    f.put("a.txt", b"hello");
    let got = f.ask(Request::Hash {
        name: Some("a.txt".into()),
    });
    let [Response::Hashes { files }, Response::End] = &got[..] else {
        panic!("{got:?}")
    };
    let HashEntry { name, md5, .. } = &files[0];
    assert_eq!(
        (name.as_str(), md5.as_deref()),
        ("a.txt", Some(&*md5_of(b"hello")))
    );

    let hash = |name: &str| Request::Hash {
        name: Some(name.into()),
    };
    assert!(f.refusal(hash("missing")).contains("no such file"));
    let fifo = std::ffi::CString::new(f.dir.path().join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    assert!(f.refusal(hash("fifo")).contains("FIFO"));
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"s").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), f.dir.path().join("link")).unwrap();
    assert!(
        f.refusal(hash("link"))
            .contains("outside the shared folder")
    );
    assert!(f.refusal(hash("../x")).contains("leaves the shared folder"));
}

#[test]
fn hash_all_answers_every_file() {
    let f = fixture();
    f.put("a", b"1");
    f.put("d/b", b"2");
    let got = f.ask(Request::Hash { name: None });
    assert_eq!(names(&got), ["a", "d/b"]);
    assert_eq!(got.last(), Some(&Response::End));
}

#[test]
fn download_sends_the_bytes_then_their_md5() {
    let f = fixture();
    let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    f.put("big", &data);
    let (got, bytes) = f.serve(&frames(&[Request::Download {
        name: "big".into(),
        fresh: false,
        batch: false,
    }]));
    let [Response::File { meta }, Response::Done { md5 }] = &got[..] else {
        panic!("{got:?}")
    };
    assert_eq!((meta.name.as_str(), meta.size), ("big", data.len() as u64));
    assert_eq!(bytes, data);
    assert_eq!(md5, &md5_of(&data));
    assert_eq!(f.ctx.history.last(1).unwrap()[0].bytes, data.len() as u64);
}

#[test]
fn download_refuses_the_missing_and_a_directory() {
    let f = fixture();
    std::fs::create_dir(f.dir.path().join("d")).unwrap();
    let download = |name: &str| Request::Download {
        name: name.into(),
        fresh: false,
        batch: false,
    };
    assert!(f.refusal(download("missing")).contains("no such file"));
    assert!(f.refusal(download("d")).contains("a directory"));
}

#[test]
fn a_fresh_download_ignores_a_wrong_cached_md5() {
    let f = fixture();
    f.put("a", b"real bytes");
    let stat = std::fs::metadata(f.dir.path().join("a")).unwrap();
    let download = |fresh| Request::Download {
        name: "a".into(),
        fresh,
        batch: false,
    };
    let done = |got: Vec<Response>| match &got[..] {
        [Response::File { .. }, Response::Done { md5 }] => md5.clone(),
        other => panic!("{other:?}"),
    };
    f.ctx.folder.remember("a", &stat, [7; 16]);
    // The cache is trusted without `fresh` (that is what it is for)...
    assert_eq!(done(f.ask(download(false))), hex(&[7; 16]));
    // ... and bypassed, and corrected, with it.
    assert_eq!(done(f.ask(download(true))), md5_of(b"real bytes"));
    assert_eq!(
        f.ctx.folder.cached("a", &stat),
        md5_reader(&b"real bytes"[..]).ok()
    );
}

/// An upload request announcing `size` bytes.
fn upload_header(name: &str, size: usize, force: bool) -> Vec<u8> {
    frames(&[Request::Upload {
        meta: FileMeta {
            name: name.into(),
            size: size as u64,
            mtime_ns: 0,
            mode: 0o644,
        },
        force,
    }])
}

/// A whole upload of `data`.
fn upload(name: &str, data: &[u8], force: bool) -> Vec<u8> {
    let mut wire = upload_header(name, data.len(), force);
    wire.extend_from_slice(data);
    write_msg(&mut wire, &Response::Done { md5: md5_of(data) }).unwrap();
    wire
}

#[test]
fn upload_is_refused_unless_allowed_and_never_overwrites_without_force() {
    let f = fixture();
    let (got, _) = f.serve(&upload("a", b"x", false));
    assert!(matches!(&got[0], Response::Error { message } if message.contains("--allow-upload")));
    assert!(!f.dir.path().join("a").exists());

    let f = fixture_with(true, Vec::new());
    f.put("a", b"old");
    let (got, _) = f.serve(&upload("a", b"new", false));
    assert!(matches!(&got[0], Response::Error { message } if message.contains("already exists")));
    assert_eq!(std::fs::read(f.dir.path().join("a")).unwrap(), b"old");
}

#[test]
fn upload_stores_the_file_and_replaces_one_with_force() {
    let f = fixture_with(true, Vec::new());
    let (got, _) = f.serve(&upload("d/new", b"payload", false));
    assert_eq!(got[0], Response::Ready);
    assert!(matches!(&got[1], Response::Ok { message } if message.contains("stored d/new")));
    assert_eq!(
        std::fs::read(f.dir.path().join("d/new")).unwrap(),
        b"payload"
    );
    assert_eq!(f.ctx.history.last(1).unwrap()[0].bytes, 7);

    f.put("a", b"old");
    let (got, _) = f.serve(&upload("a", b"newer", true));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(matches!(&got[1], Response::Ok { .. }));
    assert_eq!(std::fs::read(f.dir.path().join("a")).unwrap(), b"newer");
}

#[test]
fn an_upload_cut_short_stores_nothing() {
    let f = fixture_with(true, Vec::new());
    // 4 of the 10 bytes announced, then the end.
    let mut wire = upload_header("a", 10, false);
    wire.extend_from_slice(b"0123");
    let (got, _) = f.serve(&wire);
    assert_eq!(got[0], Response::Ready);
    assert!(
        matches!(&got[1], Response::Error { message } if message.contains("the connection closed after about")),
        "{got:?}"
    );
    assert!(!f.dir.path().join("a").exists());
    let log = f.ctx.history.last(1).unwrap();
    assert!(log[0].outcome.starts_with("error"), "{log:?}");
}

fn sync_entry(name: &str) -> SyncEntry {
    SyncEntry::test_file(name, 1, Some(&"0".repeat(32)))
}

fn hello() -> Request {
    Request::SyncHello {
        peer_id: "their-id".into(),
        listen_port: 7000,
        index_id: "their-index".into(),
        seen: Some(Mark {
            index_id: "our-index".into(),
            seq: 3,
        }),
    }
}

fn delta(range: std::ops::Range<usize>, more: bool) -> Request {
    Request::SyncDelta {
        entries: range.map(|i| sync_entry(&format!("f{i}"))).collect(),
        more,
    }
}

#[test]
fn a_sync_exchange_says_where_we_stand_stores_theirs_and_sends_ours_after_their_mark() {
    let f = fixture_with(false, vec![sync_entry("mine")]);
    let (got, _) = f.serve(&frames(&[hello(), delta(0..3, false)]));
    assert_eq!(
        got,
        vec![
            Response::SyncHello {
                peer_id: "our-id".into(),
                index_id: "our-index".into(),
                seen: Some(Mark {
                    index_id: "their-index".into(),
                    seq: 7
                }),
            },
            Response::SyncDelta {
                entries: vec![sync_entry("mine")],
                more: false,
            }
        ]
    );
    let calls = f.partner.calls.lock().unwrap();
    assert_eq!(
        *calls,
        [
            "hello their-id their-index",
            "store 3",
            "since Some(Mark { index_id: \"our-index\", seq: 3 })",
            "exchanged their-id 127.0.0.1:7000"
        ]
    );
}

#[test]
fn sync_entries_in_several_batches_are_stored_batch_by_batch_and_ours_go_in_batches() {
    let ours: Vec<SyncEntry> = (0..BATCH + 1)
        .map(|i| sync_entry(&format!("m{i}")))
        .collect();
    let f = fixture_with(false, ours);
    let input = frames(&[
        hello(),
        delta(0..2, true),
        delta(2..4, true),
        delta(4..5, false),
    ]);
    let (got, _) = f.serve(&input);
    let batches: Vec<(usize, bool)> = got[1..]
        .iter()
        .map(|r| match r {
            Response::SyncDelta { entries, more } => (entries.len(), *more),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(batches, [(BATCH, true), (1, false)]);
    let stored = f.partner.stored.lock().unwrap();
    let names: Vec<&str> = stored.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["f0", "f1", "f2", "f3", "f4"]);
    assert_eq!(
        f.partner.calls.lock().unwrap()[1..4],
        ["store 2", "store 2", "store 1"]
    );
}

#[test]
fn a_sync_exchange_cut_short_or_entries_without_a_hello_are_refused() {
    let f = fixture();
    let (got, _) = f.serve(&frames(&[hello(), delta(0..2, true), Request::Info]));
    assert!(matches!(&got[1], Response::Error { message } if message.contains("cut short")));
    assert!(
        !f.partner
            .calls
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.starts_with("exchanged")),
        "an exchange cut short is not handed on"
    );
    assert_error(&f.ask(delta(0..2, false)), "without a sync hello");
}

#[test]
fn files_pulled_in_a_batch_are_logged_each_at_first_then_counted_in_one_line() {
    let f = fixture();
    f.put("a", b"12345");
    let pull = |n: usize| -> Vec<Request> {
        (0..n)
            .map(|_| Request::Download {
                name: "a".into(),
                fresh: false,
                batch: true,
            })
            .collect()
    };
    let (got, _) = f.serve(&frames(&pull(250)));
    assert_eq!(got.len(), 500, "every file answered");
    let log = f.ctx.history.last(1000).unwrap();
    let each = log.iter().filter(|r| r.command == "download TCP a").count();
    assert_eq!(each, 100);
    let summary: Vec<_> = log
        .iter()
        .filter(|r| r.command.contains("files pulled in a batch"))
        .collect();
    assert_eq!(summary.len(), 1, "{log:?}");
    assert!(summary[0].command.contains("150 files"), "{:?}", summary[0]);
    assert_eq!(summary[0].bytes, 150 * 5);
}

#[test]
fn a_connection_gets_a_few_udp_tickets_each_new_and_handed_to_the_udp_side() {
    let f = fixture();
    let mut udp_side = f.ctx.tickets.tickets();
    let asked = vec![Request::UdpTicket; crate::limits::TICKETS_PER_CONNECTION + 1];
    let (got, _) = f.serve(&frames(&asked));
    let mut seen = std::collections::HashSet::new();
    let now = std::time::Instant::now();
    for answer in &got[..crate::limits::TICKETS_PER_CONNECTION] {
        let Response::UdpTicket { ticket, secret } = answer else {
            panic!("{got:?}")
        };
        let t = crate::secure::udp::Ticket::from_parts(*ticket, secret).unwrap();
        assert!(seen.insert(t.secret), "a secret came twice");
        assert!(udp_side.find(t.id, now, &|_| false).is_some());
    }
    assert_error(
        &got[crate::limits::TICKETS_PER_CONNECTION..],
        "UDP tickets already",
    );
}
