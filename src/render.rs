//! Turning an [`Output`] into what a person reads (comfy-table tables sized
//! to the terminal) or what a script reads (one JSON document, snake_case
//! keys, RFC 3339 times in UTC).

use chrono::{DateTime, Local};
use comfy_table::{ContentArrangement, Table};
use serde_json::{Value, json};

use crate::cli::Protocol;
use crate::proto::{Entry, Kind};
use crate::session::Output;
use crate::timestamp::rfc3339;

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

/// 1536 -> "1.5 KiB".
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

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
        Output::Text(s) => s.trim_end().to_string(),
        Output::Listing { peer, entries } => {
            let mut t = table(&["Name", "Size", "Modified", "Type", "Mode"], width);
            for e in entries {
                let size = if e.kind == Kind::Dir {
                    "-".into()
                } else {
                    human_size(e.size)
                };
                t.add_row(vec![
                    e.name.clone(),
                    size,
                    local_time(e.mtime_ns),
                    mime_of(e).to_string(),
                    format!("{:04o}", e.mode),
                ]);
            }
            format!(
                "{t}\n{} on {peer}",
                count(entries.len(), "entry", "entries")
            )
        }
        Output::Hashes { peer, files } => {
            let mut t = table(&["Name", "MD5", "Modified"], width);
            for f in files {
                let md5 = match (&f.md5, &f.error) {
                    (Some(m), _) => m.clone(),
                    (None, Some(e)) => format!("error: {e}"),
                    (None, None) => "-".into(),
                };
                t.add_row(vec![f.name.clone(), md5, local_time(f.mtime_ns)]);
            }
            format!("{t}\n{} on {peer}", count(files.len(), "file", "files"))
        }
        Output::Transfer {
            report: r,
            protocol,
            upload,
        } => {
            let verb = if *upload { "uploaded" } else { "downloaded" };
            let proto = match protocol {
                Protocol::Tcp => "TCP",
                Protocol::Udp => "UDP",
            };
            let mut t = table(&["Field", "Value"], width);
            t.add_row(vec!["name".into(), r.name.clone()]);
            t.add_row(vec![
                "size".into(),
                format!("{} ({} bytes)", human_size(r.size), r.size),
            ]);
            t.add_row(vec!["mtime".into(), local_time(r.mtime_ns)]);
            t.add_row(vec!["md5".into(), r.md5.clone()]);
            t.add_row(vec!["protocol".to_string(), proto.to_string()]);
            if *protocol == Protocol::Udp {
                t.add_row(vec!["attempts".into(), r.attempts.to_string()]);
                t.add_row(vec![
                    "retransmissions".into(),
                    r.retransmissions.to_string(),
                ]);
            }
            let rate = r.size as f64 / r.seconds.max(1e-9) / (1 << 20) as f64;
            t.add_row(vec![
                "seconds".into(),
                format!("{:.3} ({rate:.1} MiB/s)", r.seconds),
            ]);
            format!("{verb} {}\n{t}", r.name)
        }
        Output::History(recs) => {
            let mut t = table(
                &["Time", "Direction", "Peer", "Command", "Outcome", "Bytes"],
                width,
            );
            for r in recs {
                let time = DateTime::parse_from_rfc3339(&r.time)
                    .map(|d| {
                        d.with_timezone(&Local)
                            .format("%Y-%m-%d %H:%M:%S")
                            .to_string()
                    })
                    .unwrap_or_else(|_| r.time.clone());
                let dir = serde_json::to_value(r.direction)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                t.add_row(vec![
                    time,
                    dir,
                    r.peer.clone(),
                    r.command.clone(),
                    r.outcome.clone(),
                    r.bytes.to_string(),
                ]);
            }
            t.to_string()
        }
        Output::Sync(r) => {
            let mut t = table(
                &[
                    "Peer",
                    "Pulled",
                    "Renamed",
                    "Deleted",
                    "Conflicts",
                    "Folders",
                    "Modes",
                    "Bytes",
                    "Notes",
                ],
                width,
            );
            for p in &r.partners {
                let mut notes = p.errors.join("; ");
                if p.paused_deletions > 0 {
                    notes = format!(
                        "{} deletions paused: `sync confirm` to apply. {notes}",
                        p.paused_deletions
                    );
                }
                t.add_row(vec![
                    p.peer.clone(),
                    p.pulled.to_string(),
                    p.renamed.to_string(),
                    p.deleted.to_string(),
                    p.conflicts.to_string(),
                    p.folders.to_string(),
                    p.modes.to_string(),
                    human_size(p.bytes),
                    notes,
                ]);
            }
            t.to_string()
        }
        Output::SyncStatus(s) => {
            let mut t = table(
                &[
                    "Peer",
                    "Peer id",
                    "Last round",
                    "Result",
                    "Paused deletions",
                    "Next try",
                ],
                width,
            );
            for p in &s.partners {
                let next = match &p.next_try {
                    Some(t) => format!("{t} ({} failed rounds)", p.failures),
                    None => "next round".into(),
                };
                t.add_row(vec![
                    p.peer.clone(),
                    p.peer_id.clone().unwrap_or_else(|| "-".into()),
                    p.last_round.clone().unwrap_or_else(|| "never".into()),
                    p.last_result.clone().unwrap_or_default(),
                    p.paused_deletions.to_string(),
                    next,
                ]);
            }
            let mode = if s.enabled {
                format!(
                    "sync on: every {} s and on file changes",
                    s.interval_seconds
                )
            } else {
                "sync off (start with --sync); `sync` runs a round by hand".to_string()
            };
            let pending = if s.pending {
                "; a round is pending"
            } else {
                ""
            };
            format!(
                "{mode}{pending}; last round: {}\n{t}",
                s.last_round.clone().unwrap_or_else(|| "never".into())
            )
        }
        Output::Peers(ps) => {
            let mut t = table(&["", "Peer", "Status", "Peer id", "Uploads"], width);
            for p in ps {
                let status = if p.reachable {
                    "reachable".to_string()
                } else {
                    format!("unreachable: {}", p.error.clone().unwrap_or_default())
                };
                let uploads = match p.accepts_uploads {
                    Some(true) => "accepted",
                    Some(false) => "refused",
                    None => "-",
                };
                t.add_row(vec![
                    if p.current { "*".into() } else { String::new() },
                    p.address.clone(),
                    status,
                    p.peer_id.clone().unwrap_or_else(|| "-".into()),
                    uploads.into(),
                ]);
            }
            t.to_string()
        }
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
            "seconds": r.seconds,
            "direction": if *upload { "upload" } else { "download" },
        }),
        Output::History(recs) => json!({ "history": recs }),
        Output::Sync(r) => json!(r),
        Output::SyncStatus(s) => json!(s),
        Output::Peers(ps) => json!({ "peers": ps }),
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
}
