//! `deposit <file> [--copies N]`: N verified copies on N stores in N
//! distinct zones, sent in parallel (each its own connection and file
//! handle, a few chunks of memory each). The version is one above the
//! highest any store holds, unless the stores' current version has these
//! very bytes (then it is kept and stores that have it send nothing).
//! Once a new version landed somewhere, holders of older ones that are
//! not among the new places drop theirs: no store serves an old version as
//! current.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::catalogue::{Catalogue, Seen};
use super::find::{self, StoreRef};
use super::{CopyRow, Ctx};
use crate::client::Sent;
use crate::placement::{self, Candidate};
use crate::proto::{Held, Record};
use crate::{Error, ErrorKind, Result, bail};

/// What `deposit` did.
#[derive(Debug, Clone, Serialize)]
pub struct DepositReport {
    pub name: String,
    pub size: u64,
    pub md5: String,
    pub version: u64,
    pub copies_wanted: u8,
    pub copies_made: u8,
    pub copies: Vec<CopyRow>,
    pub seconds: f64,
}

/// Deposit our file `name` as `copies` copies. The report, and an error
/// when fewer copies than wanted were made.
pub fn deposit(
    ctx: &Ctx,
    name: &str,
    copies: u8,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(DepositReport, Option<Error>)> {
    let start = Instant::now();
    let (_, meta) = ctx.folder.open_file(name)?;
    let hashed = ctx.folder.hash_one(&meta.name)?;
    let md5 = match (hashed.md5, hashed.error) {
        (Some(m), _) => m,
        (None, e) => bail!("cannot read {}: {}", meta.name, e.unwrap_or_default()),
    };
    let mut cat = Catalogue::load(ctx.private_dir);
    let found = find::stores(ctx, &cat.stores);
    if found.stores.is_empty() {
        bail!(kind: NotFound, "no store answers{}; start stores with --store and name one with --peer", down_note(&found.down));
    }
    let stats = find::on_each(ctx, &found.stores, &|c| c.deposit_stat(&meta.name));
    let held: Vec<(&StoreRef, Held)> = found
        .stores
        .iter()
        .zip(stats)
        .filter_map(|(s, h)| Some((s, h.ok()??)))
        .filter(|(_, h)| ctx.ours(h))
        .collect();
    let current = super::newest(&held);
    let record = ctx.sign(match current {
        Some(r) if r.md5 == md5 && r.size == meta.size => Record {
            copies,
            ..r.clone()
        },
        _ => Record {
            name: meta.name.clone(),
            size: meta.size,
            md5: md5.clone(),
            mtime_ns: meta.mtime_ns,
            mode: meta.mode,
            copies,
            version: match current {
                None => 1,
                Some(r) => r.version.checked_add(1).ok_or_else(|| {
                    Error::new(format!("{} has no version number left", meta.name))
                })?,
            },
            made_ns: crate::timestamp::to_nanos(chrono::Utc::now()),
            deleted: false,
            owner: String::new(),
            signer: String::new(),
            sig: String::new(),
        },
    });
    let cands: Vec<Candidate> = found.stores.iter().map(StoreRef::candidate).collect();
    // Stores holding these very bytes keep their places (the same plan as
    // `copies` and `repair`); nobody else sends them again.
    let good = |c: &Candidate| {
        held.iter().any(|(s, h)| {
            s.id == c.id && h.record.same_version(&record) && h.state == crate::proto::CopyState::Ok
        })
    };
    let targets: Vec<&StoreRef> = placement::places(
        &ctx.owner,
        &record.name,
        record.size,
        copies.into(),
        &cands,
        &good,
    )
    .into_iter()
    .map(|i| &found.stores[i])
    .collect();
    let results = put_all(
        ctx,
        &record,
        Some((ctx.folder, &record.name)),
        &targets,
        progress,
    );
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut holders = Vec::new();
    for (store, r) in targets.iter().zip(results) {
        match r {
            Ok(_) => {
                rows.push(CopyRow::of(store, "ok", Some(record.version)));
                holders.push(Seen::from(*store));
            }
            Err(e) => {
                rows.push(CopyRow::of(store, "failed", None));
                failures.push(format!("store {} ({}) failed: {e}", store.addr, store.zone));
            }
        }
    }
    // Older versions elsewhere go once the new one is kept somewhere.
    if !holders.is_empty() {
        let stale: Vec<StoreRef> = held
            .iter()
            .filter(|(s, h)| {
                h.record.version < record.version && !targets.iter().any(|t| t.id == s.id)
            })
            .map(|(s, _)| (*s).clone())
            .collect();
        let upto = record.version - 1;
        let _ = find::on_each(ctx, &stale, &|c| c.deposit_forget(&record.name, upto));
    }
    cat.saw(&found.stores);
    cat.held(&record.name, holders);
    cat.save();
    let made = rows.iter().filter(|r| r.state == "ok").count() as u8;
    let report = DepositReport {
        name: record.name.clone(),
        size: record.size,
        md5: record.md5.clone(),
        version: record.version,
        copies_wanted: copies,
        copies_made: made,
        copies: rows,
        seconds: start.elapsed().as_secs_f64(),
    };
    let short = (made < copies).then(|| {
        let why = if targets.len() < copies.into() {
            format!("only {} zones reachable", placement::zones(&cands))
        } else {
            failures.join("; ")
        };
        Error::of(
            ErrorKind::Other,
            format!("{made} of {copies} copies: {why}"),
        )
    });
    Ok((report, short))
}

/// Where the bytes of a put come from: a file in a folder, by name; none
/// when every target holds them already.
pub type Source<'a> = Option<(&'a crate::folder::Folder, &'a str)>;

/// Put `record` on every target at once, reading the bytes from `source`;
/// progress is the sum of bytes sent.
pub(super) fn put_all(
    ctx: &Ctx,
    record: &Record,
    source: Source,
    targets: &[&StoreRef],
    progress: &mut dyn FnMut(u64, u64),
) -> Vec<Result<Sent>> {
    let sent: Vec<AtomicU64> = targets.iter().map(|_| AtomicU64::new(0)).collect();
    let total = record.size * targets.len() as u64;
    std::thread::scope(|s| {
        let workers: Vec<_> = targets
            .iter()
            .zip(&sent)
            .map(|(store, counter)| {
                s.spawn(move || -> Result<Sent> {
                    let (file, known) = match source {
                        Some((folder, name)) => {
                            let (file, _) = folder.open_file(name)?;
                            let known =
                                file.metadata().ok().and_then(|st| folder.cached(name, &st));
                            (Some(file), known)
                        }
                        None => (None, None),
                    };
                    let mut client = ctx.connect_to(store)?;
                    client.deposit_put(record, file, known, &mut |n| {
                        counter.store(n, Ordering::Relaxed)
                    })
                })
            })
            .collect();
        while !workers.iter().all(|w| w.is_finished()) {
            progress(sent.iter().map(|c| c.load(Ordering::Relaxed)).sum(), total);
            std::thread::sleep(Duration::from_millis(50));
        }
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(Error::new("a copy's thread failed")))
            })
            .collect()
    })
}

/// ` (tried a:1: why, ...)` for the addresses that did not answer.
pub fn down_note(down: &[(String, String)]) -> String {
    if down.is_empty() {
        return String::new();
    }
    let list: Vec<String> = down
        .iter()
        .take(4)
        .map(|(a, e)| format!("{a}: {e}"))
        .collect();
    format!(" (tried {})", list.join("; "))
}
