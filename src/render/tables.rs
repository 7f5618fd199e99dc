//! The tables a person reads, one function per kind of result: rows from
//! peers and the disk are escaped, tables fit the given width, and values
//! that must stay whole (an MD5, a size) never wrap.

use super::{
    add_row, count, escape, human_size, keep_whole, local_event_time, local_time, mime_of, table,
};
use crate::cli::Protocol;
use crate::history::Record;
use crate::proto::{Entry, HashEntry, Kind};
use crate::secure::keys::short_of;
use crate::session::PeerStatus;
use crate::sync::{SyncReport, SyncStatus};
use crate::transfer::TransferReport;
use comfy_table::Cell;

/// `index`: a row per entry, then how many and whose.
pub fn listing(peer: &str, entries: &[Entry], width: Option<u16>) -> String {
    let mut t = table(&["Name", "Size", "Modified", "Type", "Mode"], width);
    for e in entries {
        let size = if e.kind == Kind::Dir {
            "-".into()
        } else {
            human_size(e.size)
        };
        add_row(
            &mut t,
            [
                e.name.clone(),
                size,
                local_time(e.mtime_ns),
                mime_of(e).to_string(),
                format!("{:04o}", e.mode),
            ],
        );
    }
    keep_whole(&mut t, &[(1, 9), (4, 4)]);
    format!(
        "{t}\n{} on {}",
        count(entries.len(), "entry", "entries"),
        escape(peer)
    )
}

/// `hash`: a row per file with its MD5 (whole, never wrapped).
pub fn hashes(peer: &str, files: &[HashEntry], width: Option<u16>) -> String {
    let mut t = table(&["Name", "MD5", "Modified"], width);
    for f in files {
        let md5 = match (&f.md5, &f.error) {
            (Some(m), _) => m.clone(),
            (None, Some(e)) => format!("error: {e}"),
            (None, None) => "-".into(),
        };
        // An unreadable file has no time (its mtime_ns is 0).
        let time = if f.error.is_some() || f.mtime_ns == 0 {
            "-".to_string()
        } else {
            local_time(f.mtime_ns)
        };
        add_row(&mut t, [f.name.clone(), md5, time]);
    }
    // An MD5 is 32 hex digits; a date "YYYY-MM-DD" may wrap before
    // its time.
    keep_whole(&mut t, &[(1, 32), (2, 10)]);
    format!(
        "{t}\n{} on {}",
        count(files.len(), "file", "files"),
        escape(peer)
    )
}

/// A download or upload: what arrived, with its MD5 and speed.
pub fn transfer(
    r: &TransferReport,
    protocol: &Protocol,
    upload: &bool,
    width: Option<u16>,
) -> String {
    let verb = if *upload { "uploaded" } else { "downloaded" };
    let proto = match protocol {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    };
    let mut t = table(&["Field", "Value"], width);
    add_row(&mut t, ["name", &r.name]);
    add_row(
        &mut t,
        [
            "size",
            &format!("{} ({} bytes)", human_size(r.size), r.size),
        ],
    );
    add_row(&mut t, ["mtime", &local_time(r.mtime_ns)]);
    add_row(&mut t, ["md5", &r.md5]);
    add_row(&mut t, ["protocol", proto]);
    if *protocol == Protocol::Udp {
        add_row(&mut t, ["attempts", &r.attempts.to_string()]);
        add_row(&mut t, ["retransmissions", &r.retransmissions.to_string()]);
        if r.forged + r.replayed > 0 {
            let dropped = format!("{} failed authentication, {} replays", r.forged, r.replayed);
            add_row(&mut t, ["dropped datagrams", &dropped]);
        }
    }
    let rate = r.size as f64 / r.seconds.max(1e-9) / (1 << 20) as f64;
    add_row(
        &mut t,
        ["seconds", &format!("{:.3} ({rate:.1} MiB/s)", r.seconds)],
    );
    keep_whole(&mut t, &[(1, 32)]);
    format!("{verb} {}\n{t}", escape(&r.name))
}

/// `history`: the requests made and served, in local time.
pub fn history(recs: &[Record], width: Option<u16>) -> String {
    let mut t = table(
        &["Time", "Direction", "Peer", "Command", "Outcome", "Bytes"],
        width,
    );
    for r in recs {
        // The address, and below it the short id its key proved (each
        // escaped, the line break our own).
        let peer = match r.peer_id.as_deref() {
            Some(id) => format!("{}\n{}", escape(&r.peer), escape(&short_of(id))),
            None => escape(&r.peer).into_owned(),
        };
        let time = local_event_time(&r.time);
        let dir = serde_json::to_value(r.direction)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        t.add_row(vec![
            Cell::new(escape(&time)),
            Cell::new(escape(&dir)),
            Cell::new(peer),
            Cell::new(escape(&r.command)),
            Cell::new(escape(&r.outcome)),
            Cell::new(r.bytes),
        ]);
    }
    t.to_string()
}

/// `sync`: what one round did with each partner.
pub fn sync_report(r: &SyncReport, width: Option<u16>) -> String {
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
        add_row(
            &mut t,
            [
                p.peer.clone(),
                p.pulled.to_string(),
                p.renamed.to_string(),
                p.deleted.to_string(),
                p.conflicts.to_string(),
                p.folders.to_string(),
                p.modes.to_string(),
                human_size(p.bytes),
                notes,
            ],
        );
    }
    t.to_string()
}

/// `sync status`: whether sync runs, and each partner's state.
pub fn sync_status(s: &SyncStatus, width: Option<u16>) -> String {
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
            Some(t) => format!("{} ({} failed rounds)", local_event_time(t), p.failures),
            None => "next round".into(),
        };
        add_row(
            &mut t,
            [
                p.peer.clone(),
                p.peer_id.as_deref().map_or_else(|| "-".into(), short_of),
                p.last_round
                    .as_deref()
                    .map_or_else(|| "never".into(), local_event_time),
                p.last_result.clone().unwrap_or_default(),
                p.paused_deletions.to_string(),
                next,
            ],
        );
    }
    let mode = if s.enabled {
        let changes = match s.watching {
            true => "on file changes",
            false => "without a watcher",
        };
        format!(
            "sync on: partners every {} s, {changes}, the whole folder rescanned every {} s ({} walks so far)",
            s.interval_seconds, s.rescan_seconds, s.walks
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
        s.last_round
            .as_deref()
            .map_or_else(|| "never".into(), local_event_time)
    )
}

/// `peers`: each peer, whether it answers, and its id.
pub fn peers(ps: &[PeerStatus], width: Option<u16>) -> String {
    let mut t = table(
        &["", "Peer", "Found", "Status", "Peer id", "Zone", "Uploads"],
        width,
    );
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
        add_row(
            &mut t,
            [
                if p.current { "*".into() } else { String::new() },
                p.address.clone(),
                p.found.into(),
                status,
                p.peer_id.as_deref().map_or_else(|| "-".into(), short_of),
                match (&p.zone, p.store) {
                    (Some(z), Some(true)) => match p.free {
                        Some(f) if f < u64::MAX / 2 => {
                            format!("{z} (store, {} free)", human_size(f))
                        }
                        _ => format!("{z} (store)"),
                    },
                    (Some(z), _) => z.clone(),
                    _ => "-".into(),
                },
                uploads.into(),
            ],
        );
    }
    t.to_string()
}
