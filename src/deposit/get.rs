//! `retrieve`, `replicas` and `forget`: each asks every store that
//! answers what it holds of ours (so a catalogue lost with a machine is
//! rebuilt from them), then acts. `retrieve` takes the current version
//! from the holders in placement order, verified against the record's
//! MD5, and falls back to the next holder when one is down or its copy is
//! corrupt; a file of ours is only replaced once a copy checked out.

use std::collections::BTreeMap;

use serde::Serialize;

use super::catalogue::{Catalogue, Seen};
use super::find::{self, StoreRef};
use super::put::down_note;
use super::{CopyRow, Ctx};
use crate::names::clean_name;
use crate::placement;
use crate::proto::{CopyState, Held};
use crate::transfer::TransferReport;
use crate::{Error, ErrorKind, Result, bail};

/// What `retrieve` did.
#[derive(Debug, Clone)]
pub struct Retrieved {
    pub report: TransferReport,
    pub version: u64,
    pub from: CopyRow,
    /// Holders tried first that failed, and why.
    pub passed_over: Vec<(CopyRow, String)>,
}

/// One deposit in `replicas`.
#[derive(Debug, Clone, Serialize)]
pub struct Replica {
    pub name: String,
    pub size: u64,
    pub md5: String,
    pub version: u64,
    pub copies_wanted: u8,
    pub copies_found: u8,
    /// `ok`, or `degraded k/N`.
    pub status: String,
    pub copies: Vec<CopyRow>,
}

/// What `forget` did.
#[derive(Debug, Clone, Serialize)]
pub struct Forgotten {
    pub name: String,
    pub removed: Vec<CopyRow>,
    pub unreachable: Vec<CopyRow>,
}

/// Copies, with the stores that hold them.
pub(super) type Holdings = Vec<(StoreRef, Held)>;

/// The stores that answer, and what each holds of `name` (stat) or of
/// everything of ours (list).
pub(super) fn holdings(
    ctx: &Ctx,
    name: Option<&str>,
) -> Result<(Catalogue, find::Found, Holdings)> {
    let cat = Catalogue::load(ctx.private_dir);
    let found = find::stores(ctx, &cat.stores);
    if found.stores.is_empty() {
        bail!(kind: NotFound, "no store answers{}", down_note(&found.down));
    }
    let answers = find::on_each(ctx, &found.stores, &|c| match name {
        Some(n) => Ok(c.deposit_stat(n)?.into_iter().collect()),
        None => c.deposit_list(),
    });
    // Only records signed by our own key are ours (a store may hold junk
    // under our id from a member that pinned another key there first).
    let mut all = Vec::new();
    for (store, held) in found.stores.iter().zip(answers) {
        for h in held.unwrap_or_default() {
            if ctx.ours(&h) {
                all.push((store.clone(), h));
            }
        }
    }
    Ok((cat, found, all))
}

/// Copies grouped by deposit name.
pub(super) fn by_name(held: Holdings) -> BTreeMap<String, Holdings> {
    let mut by: BTreeMap<String, Holdings> = BTreeMap::new();
    for (s, h) in held {
        by.entry(h.record.name.clone()).or_default().push((s, h));
    }
    by
}

/// Retrieve our deposit `name` into the folder as `local` (default: the
/// same name).
pub fn retrieve(
    ctx: &Ctx,
    name: &str,
    local: Option<&str>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Retrieved> {
    let name = clean_name(name)?;
    let local = clean_name(local.unwrap_or(&name))?;
    let (_, found, held) = holdings(ctx, Some(&name))?;
    let Some(current) = super::newest(&held).filter(|r| !r.deleted) else {
        bail!(kind: NotFound, "no deposit {name} on the {} stores that answer", found.stores.len());
    };
    let mut good: Vec<&(StoreRef, Held)> = held
        .iter()
        .filter(|(_, h)| h.record.same_version(current) && h.state == CopyState::Ok)
        .collect();
    let score = |s: &StoreRef| placement::score(&ctx.owner, &name, &s.id);
    good.sort_by_key(|(s, _)| std::cmp::Reverse(score(s)));
    let mut passed_over = Vec::new();
    for (store, h) in good {
        let row = CopyRow::of(store, "ok", Some(h.record.version));
        let got = ctx
            .connect_to(store)
            .and_then(|mut c| c.deposit_get(&h.record, ctx.folder, &local, progress));
        match got {
            Ok((h, report)) => {
                return Ok(Retrieved {
                    report,
                    version: h.record.version,
                    from: row,
                    passed_over,
                });
            }
            Err(e) if e.is_cancelled() => return Err(e),
            Err(e) => passed_over.push((row, e.to_string())),
        }
    }
    let why: Vec<String> = passed_over
        .iter()
        .map(|(r, e)| format!("{}: {e}", r.address))
        .collect();
    Err(Error::of(
        ErrorKind::NotFound,
        format!(
            "no good copy of {name} could be read ({})",
            if why.is_empty() {
                "every copy is missing or corrupt".into()
            } else {
                why.join("; ")
            }
        ),
    ))
}

/// Our deposits (or the one named) as the stores hold them now.
pub fn replicas(ctx: &Ctx, name: Option<&str>) -> Result<Vec<Replica>> {
    let name = name.map(clean_name).transpose()?;
    let (mut cat, found, held) = holdings(ctx, name.as_deref())?;
    let mut out = Vec::new();
    for (n, copies) in by_name(held) {
        let current = super::newest(&copies).expect("one copy at least");
        if current.deleted {
            // Forgotten: stores keep only its tombstone.
            cat.held(&n, Vec::new());
            continue;
        }
        let mut rows: Vec<CopyRow> = copies
            .iter()
            .map(|(s, h)| {
                let state = if h.record.same_version(current) {
                    h.state.word()
                } else {
                    "missing"
                };
                CopyRow::of(s, state, Some(h.record.version))
            })
            .collect();
        rows.extend(unreachable(&cat, &n, &found.stores));
        let ok = rows.iter().filter(|r| r.state == "ok").count() as u8;
        cat.held(&n, rows.iter().map(seen_of).collect());
        out.push(Replica {
            name: n,
            size: current.size,
            md5: current.md5.clone(),
            version: current.version,
            copies_wanted: current.copies,
            copies_found: ok,
            status: if ok >= current.copies {
                "ok".into()
            } else {
                format!("degraded {ok}/{}", current.copies)
            },
            copies: rows,
        });
    }
    cat.saw(&found.stores);
    cat.save();
    Ok(out)
}

/// Remove every copy of our deposit `name`; an error too when some
/// holder did not answer (its copy stays until it is asked again).
pub fn forget(ctx: &Ctx, name: &str) -> Result<(Forgotten, Option<Error>)> {
    let name = clean_name(name)?;
    let (mut cat, found, held) = holdings(ctx, Some(&name))?;
    let current = super::newest(&held).filter(|r| !r.deleted);
    let mut removed = Vec::new();
    let mut failed = Vec::new();
    if let Some(current) = current {
        // A signed tombstone above every version held: a store that was
        // away and comes back with a copy drops it instead of spreading it.
        let tomb = ctx.sign(crate::proto::Record {
            size: 0,
            md5: String::new(),
            version: current.version.saturating_add(1),
            made_ns: crate::timestamp::to_nanos(chrono::Utc::now()),
            deleted: true,
            ..current.clone()
        });
        let holders: Vec<StoreRef> = held.iter().map(|(s, _)| s.clone()).collect();
        let answers = find::on_each(ctx, &holders, &|c| {
            c.deposit_put(&tomb, None, None, &mut |_| {})
        });
        for ((s, h), a) in held.iter().zip(answers) {
            match a {
                Ok(_) if !h.record.deleted => {
                    removed.push(CopyRow::of(s, "removed", Some(h.record.version)))
                }
                Ok(_) => {}
                Err(e) => failed.push(format!("{}: {e}", s.addr)),
            }
        }
    }
    let unreachable = unreachable(&cat, &name, &found.stores);
    if removed.is_empty() && unreachable.is_empty() && failed.is_empty() {
        bail!(kind: NotFound, "no deposit {name} on the {} stores that answer", found.stores.len());
    }
    cat.held(&name, unreachable.iter().map(seen_of).collect());
    cat.save();
    let mut left: Vec<String> = unreachable
        .iter()
        .map(|r| format!("{} ({}) did not answer", r.address, r.zone))
        .collect();
    left.extend(failed);
    let error = (!left.is_empty()).then(|| {
        Error::of(
            ErrorKind::PeerGone,
            format!("copies of {name} may remain: {}", left.join("; ")),
        )
    });
    Ok((
        Forgotten {
            name,
            removed,
            unreachable,
        },
        error,
    ))
}

/// The catalogue's holders of `name` that are not among the stores that
/// answered.
fn unreachable(cat: &Catalogue, name: &str, answered: &[StoreRef]) -> Vec<CopyRow> {
    cat.holders
        .get(name)
        .into_iter()
        .flatten()
        .filter(|s| !answered.iter().any(|a| a.id == s.id))
        .map(|s| CopyRow {
            store_id: s.id.clone(),
            address: s.addr.clone(),
            zone: s.zone.clone(),
            state: "unreachable".into(),
            version: None,
        })
        .collect()
}

fn seen_of(r: &CopyRow) -> Seen {
    Seen {
        id: r.store_id.clone(),
        addr: r.address.clone(),
        zone: r.zone.clone(),
    }
}
