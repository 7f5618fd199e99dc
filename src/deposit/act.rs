//! `copies <name> <N>` and `repair`: bring a deposit to the copies it
//! wants. The places are the good holders first (in placement order, one
//! per zone), then the next stores in placement order in zones not yet
//! covered. New copies are read once from a good holder (verified) into a
//! temporary file and put on the new places in parallel; only when every
//! place holds a verified copy are the copies elsewhere removed (surplus,
//! an older version, a corrupt copy), so a change never holds fewer than
//! min(old, new) verified copies. `repair` first has every holder read its
//! copy whole and check its MD5.

use serde::Serialize;

use super::find::{self, Found, StoreRef};
use super::get::{Holdings, by_name, holdings};
use super::put::put_all;
use super::{CopyRow, Ctx};
use crate::folder::Folder;
use crate::names::clean_name;
use crate::placement;
use crate::proto::{CopyState, Record};
use crate::{Error, ErrorKind, Result, bail};

/// What `copies` or `repair` did to one deposit.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub name: String,
    pub version: u64,
    pub copies_wanted: u8,
    pub copies_found: u8,
    /// Copies found corrupt (repair reads every copy first).
    pub corrupt: usize,
    pub added: Vec<CopyRow>,
    pub removed: Vec<CopyRow>,
    pub copies: Vec<CopyRow>,
}

/// `copies <name> <N>`.
pub fn copies(ctx: &Ctx, name: &str, wanted: u8) -> Result<(Change, Option<Error>)> {
    let name = clean_name(name)?;
    let (_, found, held) = holdings(ctx, Some(&name))?;
    let newest = super::newest(&held);
    if held.is_empty() || newest.is_some_and(|r| r.deleted) {
        bail!(kind: NotFound, "no deposit {name} on the {} stores that answer", found.stores.len());
    }
    let (change, short) = reconcile(ctx, &found, &held, Some(wanted));
    Ok((change?, short.map(|s| Error::of(ErrorKind::Other, s))))
}

/// `repair`: every copy read and checked, then every deposit brought to
/// the copies it wants.
pub fn repair(ctx: &Ctx) -> Result<(Vec<Change>, Option<Error>)> {
    let (_, found, held) = holdings(ctx, None)?;
    let mut changes = Vec::new();
    let mut problems = Vec::new();
    for (name, copies) in by_name(held) {
        let stores: Vec<StoreRef> = copies.iter().map(|(s, _)| s.clone()).collect();
        let checked = find::on_each(ctx, &stores, &|c| c.deposit_verify(&name));
        let held: Holdings = copies
            .into_iter()
            .zip(checked)
            .filter_map(|((s, h), c)| match c {
                Ok(now) => now.filter(|h| ctx.ours(h)).map(|h| (s, h)),
                // Not checked now: as it was listed.
                Err(_) => Some((s, h)),
            })
            .collect();
        let newest = super::newest(&held);
        if newest.is_none_or(|r| r.deleted) {
            continue;
        }
        let (change, short) = reconcile(ctx, &found, &held, None);
        match change {
            Ok(c) => changes.push(c),
            Err(e) => problems.push(format!("{name}: {e}")),
        }
        problems.extend(short.map(|s| format!("{name}: {s}")));
    }
    let error = (!problems.is_empty()).then(|| Error::of(ErrorKind::Other, problems.join("; ")));
    Ok((changes, error))
}

/// Bring one deposit to `wanted` copies (its own count by default); the
/// change, and why it is short of the copies wanted, if it is.
fn reconcile(
    ctx: &Ctx,
    found: &Found,
    held: &Holdings,
    wanted: Option<u8>,
) -> (Result<Change>, Option<String>) {
    let current = super::newest(held).expect("one copy at least").clone();
    let n = wanted.unwrap_or(current.copies);
    let record = ctx.sign(Record {
        copies: n,
        ..current.clone()
    });
    let good = |id: &str| {
        held.iter()
            .any(|(s, h)| s.id == id && h.record.same_version(&current) && h.state == CopyState::Ok)
    };
    let targets = places(ctx, found, &record, &good);
    let need: Vec<&StoreRef> = targets.iter().copied().filter(|t| !good(&t.id)).collect();
    let kept: Vec<&StoreRef> = targets.iter().copied().filter(|t| good(&t.id)).collect();
    let mut failures = Vec::new();
    let mut added = Vec::new();
    if !need.is_empty() {
        let mut sources: Vec<&StoreRef> = held
            .iter()
            .filter(|(s, _)| good(&s.id))
            .map(|(s, _)| s)
            .collect();
        sources
            .sort_by_key(|s| std::cmp::Reverse(placement::score(&ctx.owner, &record.name, &s.id)));
        match fetch(ctx, &record, &sources) {
            Ok(copy) => {
                let results = put_all(
                    ctx,
                    &record,
                    Some((&copy.folder, COPY)),
                    &need,
                    &mut |_, _| {},
                );
                for (t, r) in need.iter().zip(results) {
                    match r {
                        Ok(_) => added.push(CopyRow::of(t, "ok", Some(record.version))),
                        Err(e) => {
                            failures.push(format!("store {} ({}) failed: {e}", t.addr, t.zone))
                        }
                    }
                }
            }
            Err(e) => return (Err(e), None),
        }
    }
    // The stores that keep theirs hear the new count.
    let _ = put_all(ctx, &record, None, &kept, &mut |_, _| {});
    let mut copies: Vec<CopyRow> = kept
        .iter()
        .map(|t| CopyRow::of(t, "ok", Some(record.version)))
        .collect();
    copies.extend(added.iter().cloned());
    let mut removed = Vec::new();
    // Copies beyond the places go only once every wanted place holds a
    // verified copy: a deposit short of zones keeps what it has.
    if failures.is_empty() && targets.len() >= usize::from(n) {
        let extra: Vec<StoreRef> = held
            .iter()
            .filter(|(s, _)| !targets.iter().any(|t| t.id == s.id))
            .map(|(s, _)| s.clone())
            .collect();
        let answers = find::on_each(ctx, &extra, &|c| {
            c.deposit_forget(&record.name, record.version)
        });
        for (s, a) in extra.iter().zip(answers) {
            match a {
                Ok(_) => removed.push(CopyRow::of(s, "removed", None)),
                Err(e) => failures.push(format!("removing the copy on {}: {e}", s.addr)),
            }
        }
    }
    let corrupt = held
        .iter()
        .filter(|(_, h)| h.state == CopyState::Corrupt)
        .count();
    let made = copies.len() as u8;
    let short = if (targets.len() as u8) < n {
        Some(format!(
            "{made} of {n} copies: only {} zones reachable",
            placement::zones(&candidates(found))
        ))
    } else if !failures.is_empty() {
        Some(format!("{made} of {n} copies: {}", failures.join("; ")))
    } else {
        None
    };
    let change = Change {
        name: record.name.clone(),
        version: record.version,
        copies_wanted: n,
        copies_found: made,
        corrupt,
        added,
        removed,
        copies,
    };
    (Ok(change), short)
}

fn candidates(found: &Found) -> Vec<placement::Candidate> {
    found.stores.iter().map(StoreRef::candidate).collect()
}

/// Where the copies go: good holders first, in placement order, one per
/// zone; then the next stores with room in zones not covered yet.
fn places<'a>(
    ctx: &Ctx,
    found: &'a Found,
    record: &Record,
    good: &dyn Fn(&str) -> bool,
) -> Vec<&'a StoreRef> {
    let cands = candidates(found);
    placement::places(
        &ctx.owner,
        &record.name,
        record.size,
        record.copies.into(),
        &cands,
        &|c| good(&c.id),
    )
    .into_iter()
    .map(|i| &found.stores[i])
    .collect()
}

/// The name of the fetched copy in its temporary folder.
const COPY: &str = "copy";

/// A verified copy of a deposit in a temporary folder (gone when dropped).
struct Fetched {
    folder: Folder,
    _dir: tempfile::TempDir,
}

/// Read `name` from the first good holder that gives a verified copy.
fn fetch(ctx: &Ctx, record: &Record, holders: &[&StoreRef]) -> Result<Fetched> {
    let name = record.name.as_str();
    let dir = tempfile::Builder::new()
        .prefix(".deposit-")
        .tempdir_in(ctx.private_dir)
        .map_err(|e| Error::new(format!("a temporary folder for a copy of {name}: {e}")))?;
    let folder = Folder::open_unshared(dir.path())?;
    let mut why = Vec::new();
    for h in holders {
        let got = ctx
            .connect_to(h)
            .and_then(|mut c| c.deposit_get(record, &folder, COPY, &mut |_, _| {}));
        match got {
            Ok(_) => return Ok(Fetched { folder, _dir: dir }),
            Err(e) if e.is_cancelled() => return Err(e),
            Err(e) => why.push(format!("{}: {e}", h.addr)),
        }
    }
    if why.is_empty() {
        bail!(kind: NotFound, "no good copy of {name} is left to copy from");
    }
    bail!(kind: NotFound, "no good copy of {name} could be read ({})", why.join("; "))
}
