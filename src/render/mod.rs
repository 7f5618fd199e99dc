//! Turning an [`Output`] into what a person reads (comfy-table tables sized
//! to the terminal, times in local time) or what a script reads (one JSON
//! document, snake_case keys, RFC 3339 times in UTC).
//!
//! Text output shows every string through [`crate::display::escape`]: names,
//! peers and messages may come from another peer or the disk, and their
//! control characters must not reach the terminal. JSON carries them exactly.
//! `tables.rs` holds one table per kind of result; this file the dispatch,
//! the shared table helpers and JSON.

pub use crate::display::human_size;
use chrono::{DateTime, Local};
use comfy_table::{Cell, ColumnConstraint, ContentArrangement, Table, Width};
use serde_json::{Value, json};

use crate::display::escape;
use crate::proto::{Entry, Kind};
use crate::session::Output;
use crate::timestamp::rfc3339;

mod deposits;
mod tables;

/// MIME type guessed from a name; directories say so.
pub fn mime_of(e: &Entry) -> &'static str {
    match e.kind {
        Kind::Dir => "directory",
        Kind::File => mime_guess::from_path(&e.name)
            .first_raw()
            .unwrap_or("application/octet-stream"),
    }
}

/// "1 file", "2 files".
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn local_time(nanos: i64) -> String {
    DateTime::from_timestamp_nanos(nanos)
        .with_timezone(&Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// One of this peer's own moments (RFC 3339 in UTC, as the history log and
/// the sync engine keep them) in local time, like every time in a table.
fn local_event_time(rfc3339: &str) -> String {
    DateTime::parse_from_rfc3339(rfc3339)
        .map(|d| {
            d.with_timezone(&Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| escape(rfc3339).into_owned())
}

/// A row whose every cell is escaped for the terminal.
fn add_row<S: AsRef<str>>(t: &mut Table, cells: impl IntoIterator<Item = S>) {
    t.add_row(
        cells
            .into_iter()
            .map(|c| Cell::new(escape(c.as_ref())))
            .collect::<Vec<_>>(),
    );
}

/// Columns that never wrap mid-value on a narrow terminal: room for at
/// least `width` characters (the other columns, names above all, wrap
/// instead).
fn keep_whole(t: &mut Table, columns: &[(usize, u16)]) {
    for &(i, width) in columns {
        if let Some(c) = t.column_mut(i) {
            // comfy-table's fixed widths include the cell's padding.
            let padded = width + c.padding_width();
            c.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(padded)));
        }
    }
}

/// 1536 -> "1.5 KiB".
fn table(header: &[&str], width: Option<u16>) -> Table {
    let mut t = Table::new();
    t.set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    if let Some(w) = width {
        t.set_width(w);
    }
    t
}

/// Text for a person; `width` is the terminal's, if known.
pub fn text(out: &Output, width: Option<u16>) -> String {
    match out {
        Output::Nothing | Output::Exit => String::new(),
        Output::Noted { out, warnings } => {
            let mut text = text(out, width);
            for w in warnings {
                text.push_str(&format!("\nwarning: {}", escape(w)));
            }
            text
        }
        Output::Text(s) => s
            .trim_end()
            .lines()
            .map(escape)
            .collect::<Vec<_>>()
            .join("\n"),
        Output::Listing { peer, entries } => tables::listing(peer, entries, width),
        Output::Hashes { peer, files } => tables::hashes(peer, files, width),
        Output::Transfer {
            report,
            protocol,
            upload,
        } => tables::transfer(report, protocol, upload, width),
        Output::History(recs) => tables::history(recs, width),
        Output::Sync(r) => tables::sync_report(r, width),
        Output::SyncStatus(s) => tables::sync_status(s, width),
        Output::Peers(ps) => tables::peers(ps, width),
        Output::Id { id, short, file } => {
            format!("{id}\n(short form {short}; key in {})", escape(file))
        }
        Output::Deposited(r) => deposits::deposited(r, width),
        Output::Retrieved(r) => deposits::retrieved(r, width),
        Output::Replicas(all) => deposits::replicas(all, width),
        Output::Forgotten(f) => deposits::forgotten(f, width),
        Output::Changed(all) => deposits::changed(all, width),
        Output::Partial { out, .. } => text(out, width),
    }
}

/// One JSON document for a script.
pub fn json(out: &Output) -> Value {
    match out {
        Output::Nothing | Output::Exit => json!({}),
        Output::Text(s) => json!({ "message": s.trim_end() }),
        Output::Listing { peer, entries } => json!(JsonListing {
            peer,
            files: json_rows(entries)
        }),
        Output::Hashes { peer, files } => json!({
            "peer": peer,
            "files": files.iter().map(|f| {
                let mut v = json!({ "name": f.name, "md5": f.md5, "mtime": rfc3339(f.mtime_ns) });
                if let Some(e) = &f.error {
                    v["error"] = json!(e);
                }
                v
            }).collect::<Vec<_>>(),
        }),
        Output::Transfer {
            report: r,
            protocol,
            upload,
        } => json!({
            "name": r.name,
            "size": r.size,
            "mtime": rfc3339(r.mtime_ns),
            "md5": r.md5,
            "protocol": protocol,
            "attempts": r.attempts,
            "retransmissions": r.retransmissions,
            "dropped_datagrams": r.forged,
            "replayed_datagrams": r.replayed,
            "seconds": r.seconds,
            "direction": if *upload { "upload" } else { "download" },
        }),
        Output::History(recs) => json!({ "history": recs }),
        Output::Sync(r) => json!(r),
        Output::SyncStatus(s) => json!(s),
        Output::Peers(ps) => json!({ "peers": ps }),
        Output::Id { id, short, file } => {
            json!({ "id": id, "short": short, "identity_file": file })
        }
        Output::Noted { out, warnings } => {
            let mut v = json(out);
            v["warnings"] = json!(warnings);
            v
        }
        Output::Deposited(r) => json!(r),
        Output::Retrieved(r) => deposits::retrieved_json(
            r,
            json(&Output::Transfer {
                report: r.report.clone(),
                protocol: crate::cli::Protocol::Tcp,
                upload: false,
            }),
        ),
        Output::Replicas(all) => json!({ "deposits": all }),
        Output::Forgotten(f) => json!(f),
        Output::Changed(all) => json!({ "deposits": all }),
        Output::Partial { out, error } => {
            let mut v = json(out);
            v["error"] = json_error(error)["error"].clone();
            v
        }
    }
}

/// One listing row as the JSON contract has it.
#[derive(serde::Serialize)]
struct JsonEntry<'a> {
    name: &'a str,
    size: u64,
    mtime: String,
    #[serde(rename = "type")]
    mime: &'a str,
    kind: crate::proto::Kind,
    mode: String,
}

#[derive(serde::Serialize)]
struct JsonListing<'a, I: serde::Serialize> {
    peer: &'a str,
    files: I,
}

/// Listing rows as the JSON contract has them.
fn json_rows(entries: &[Entry]) -> Vec<JsonEntry<'_>> {
    entries
        .iter()
        .map(|e| JsonEntry {
            name: &e.name,
            size: e.size,
            mtime: rfc3339(e.mtime_ns),
            mime: mime_of(e),
            kind: e.kind,
            mode: format!("{:04o}", e.mode),
        })
        .collect()
}

/// The JSON document as bytes; big listings are serialized row by row
/// without building a document tree first.
pub fn json_bytes(out: &Output) -> Vec<u8> {
    match out {
        Output::Listing { peer, entries } => serde_json::to_vec(&JsonListing {
            peer,
            files: json_rows(entries),
        })
        .unwrap_or_default(),
        Output::Noted { out, warnings } => {
            let mut doc = json_bytes(out);
            // Add the key before the document's closing brace.
            if doc.last() == Some(&b'}') {
                doc.pop();
                let sep = if doc.last() == Some(&b'{') { "" } else { "," };
                let list = serde_json::to_string(warnings).unwrap_or_default();
                doc.extend_from_slice(format!("{sep}\"warnings\":{list}}}").as_bytes());
            }
            doc
        }
        other => json(other).to_string().into_bytes(),
    }
}

/// The JSON for an error.
pub fn json_error(e: &crate::Error) -> Value {
    json!({ "error": e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::HashEntry;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(100 << 20), "100.0 MiB");
    }

    #[test]
    fn listing_json_follows_the_contract() {
        let out = Output::Listing {
            peer: "p:1".into(),
            entries: vec![
                Entry {
                    name: "a.txt".into(),
                    size: 3,
                    mtime_ns: 0,
                    kind: Kind::File,
                    mode: 0o644,
                },
                Entry {
                    name: "d".into(),
                    size: 0,
                    mtime_ns: 0,
                    kind: Kind::Dir,
                    mode: 0o755,
                },
            ],
        };
        let v = json(&out);
        assert_eq!(v["peer"], "p:1");
        assert_eq!(v["files"][0]["type"], "text/plain");
        assert_eq!(v["files"][0]["kind"], "file");
        assert_eq!(v["files"][0]["mode"], "0644");
        assert_eq!(v["files"][0]["mtime"], "1970-01-01T00:00:00Z");
        assert_eq!(v["files"][1]["type"], "directory");
        let t = text(&out, Some(80));
        assert!(t.contains("a.txt") && t.contains("2 entries"));
        assert!(t.lines().all(|l| l.chars().count() <= 80), "{t}");
    }

    fn file(name: &str) -> Entry {
        Entry {
            name: name.into(),
            size: 3,
            mtime_ns: 1_714_557_600_000_000_000,
            kind: Kind::File,
            mode: 0o644,
        }
    }

    /// Lines of a table that hold a row's text (not borders).
    fn text_lines(t: &str) -> Vec<&str> {
        t.lines().filter(|l| l.starts_with("| ")).collect()
    }

    const HOSTILE: &str = "x\u{1b}]2;PWNED\u{7}\u{1b}[2J\u{1b}[H\u{1b}[31mfake prompt> ";

    #[test]
    fn hostile_names_stay_one_row_and_send_no_control_character() {
        let out = Output::Listing {
            peer: "p:1\u{1b}[2J".into(),
            entries: vec![
                file("two\nrows.txt"),
                file(HOSTILE),
                file("tab\there\u{9b}"),
            ],
        };
        let t = text(&out, Some(200));
        assert!(
            !t.contains('\u{1b}') && !t.contains('\u{9b}') && !t.contains('\u{7}'),
            "{t:?}"
        );
        // The header and one line per entry, no more.
        assert_eq!(text_lines(&t).len(), 4, "{t}");
        assert!(t.contains(r"two\nrows.txt"), "{t}");
        assert!(
            t.contains(r"x\e]2;PWNED\x07\e[2J\e[H\e[31mfake prompt> "),
            "{t}"
        );
        assert!(t.contains(r"tab\there\u{9b}"), "{t}");
        assert!(t.ends_with(r"3 entries on p:1\e[2J"), "{t}");
        // JSON keeps the names exact.
        let v = json(&out);
        assert_eq!(v["files"][0]["name"], "two\nrows.txt");
        assert_eq!(v["files"][1]["name"], HOSTILE);
    }

    #[test]
    fn every_table_escapes_what_peers_and_the_disk_wrote() {
        use crate::history::{Direction, Record};
        use crate::session::PeerStatus;
        let bad = "e\u{1b}[31m\nx";
        let outs = [
            Output::Hashes {
                peer: bad.into(),
                files: vec![HashEntry {
                    name: bad.into(),
                    md5: None,
                    mtime_ns: 0,
                    error: Some(bad.into()),
                }],
            },
            Output::History(vec![Record {
                time: bad.into(),
                direction: Direction::Served,
                peer: bad.into(),
                peer_id: Some(bad.into()),
                command: bad.into(),
                outcome: bad.into(),
                bytes: 0,
            }]),
            Output::Peers(vec![PeerStatus {
                address: bad.into(),
                found: "lan",
                current: true,
                reachable: false,
                peer_id: Some(bad.into()),
                accepts_uploads: None,
                zone: Some(bad.into()),
                store: Some(true),
                free: Some(1 << 30),
                error: Some(bad.into()),
            }]),
            Output::Sync(crate::sync::SyncReport {
                partners: vec![crate::sync::engine::PartnerRound {
                    peer: bad.into(),
                    errors: vec![bad.into()],
                    ..Default::default()
                }],
            }),
        ];
        // What stores say (zones, addresses) and deposit names.
        let row = crate::deposit::CopyRow {
            store_id: bad.into(),
            address: bad.into(),
            zone: bad.into(),
            state: "ok".into(),
            version: Some(1),
        };
        let replica = crate::deposit::get::Replica {
            name: bad.into(),
            size: 1,
            md5: "0".repeat(32),
            version: 1,
            copies_wanted: 2,
            copies_found: 1,
            status: "degraded 1/2".into(),
            copies: vec![row.clone()],
        };
        let change = crate::deposit::act::Change {
            name: bad.into(),
            version: 1,
            copies_wanted: 1,
            copies_found: 1,
            corrupt: 0,
            added: vec![],
            removed: vec![row.clone()],
            copies: vec![row.clone()],
        };
        let deposited = crate::deposit::put::DepositReport {
            name: bad.into(),
            size: 1,
            md5: "0".repeat(32),
            version: 1,
            copies_wanted: 1,
            copies_made: 1,
            copies: vec![row.clone()],
            seconds: 0.1,
        };
        let outs: Vec<Output> = outs
            .into_iter()
            .chain([
                Output::Replicas(vec![replica]),
                Output::Changed(vec![change]),
                Output::Deposited(deposited),
                Output::Forgotten(crate::deposit::get::Forgotten {
                    name: bad.into(),
                    removed: vec![row.clone()],
                    unreachable: vec![row],
                }),
            ])
            .collect();
        for out in &outs {
            let t = text(out, Some(300));
            assert!(!t.contains('\u{1b}'), "{t:?}");
            assert!(t.contains(r"e\e[31m\nx"), "{t}");
        }
        // Messages keep their own lines, each escaped.
        let t = text(&Output::Text(format!("line one\n{bad}")), None);
        assert_eq!(t, "line one\ne\\e[31m\nx");
    }
}
