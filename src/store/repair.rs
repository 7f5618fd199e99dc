//! What a store does for the deposits it keeps, on its timer, while their
//! owners may be away: for each (a bounded batch per tick, round robin),
//! it asks the live stores what they hold of it, showing the owner's signed
//! record. If a newer version is held there, its own copy is superseded
//! and goes (so a store that was down never keeps the old version). If it
//! is the deposit's leader (the first good holder in placement order), it
//! puts copies on the places that lack one: the same plan the owner's
//! `repair` follows ([`crate::placement::places`]), so two actors pick the
//! same places. Stores only add copies and drop their own; removing a
//! surplus copy is the owner's. [`scrub`] has the store read its own
//! copies again, a bounded amount per tick, so rot is found with the owner
//! away.

use super::Store;
use crate::client::Client;
use crate::placement::{self, Candidate};
use crate::proto::{CopyState, Held};

/// Deposits looked at per tick.
pub const DEPOSITS_PER_TICK: usize = 256;
/// Copies put per tick.
pub const COPIES_PER_TICK: usize = 4;
/// Bytes of its own copies a store reads again per tick.
pub const SCRUB_BYTES_PER_TICK: u64 = 1 << 30;

/// Read the next of this store's copies whole and check them against their
/// records (up to [`SCRUB_BYTES_PER_TICK`]): a copy that rotted is marked
/// corrupt, so the deposit's leader puts a good one in its place. Returns
/// the cursor for the next tick.
pub fn scrub(store: &Store, cursor: usize) -> usize {
    let Ok(batch) = store.all_held(cursor, DEPOSITS_PER_TICK) else {
        return 0;
    };
    let mut spent = 0u64;
    let mut done = 0;
    for h in &batch {
        if spent >= SCRUB_BYTES_PER_TICK {
            return cursor + done;
        }
        done += 1;
        if h.state == CopyState::Ok && !h.record.deleted {
            spent += h.record.size;
            let _ = store.verify(&h.record.owner, &h.record.name);
        }
    }
    if batch.len() < DEPOSITS_PER_TICK {
        0
    } else {
        cursor + done
    }
}

/// A store that answered this tick.
#[derive(Debug, Clone)]
pub struct Live {
    pub addr: String,
    pub cand: Candidate,
}

/// One batch; returns the cursor for the next.
pub fn tick(
    store: &Store,
    me: &Candidate,
    live: &[Live],
    connect: &(dyn Fn(&str) -> crate::Result<Client> + Sync),
    cursor: usize,
) -> usize {
    let Ok(batch) = store.all_held(cursor, DEPOSITS_PER_TICK) else {
        return 0;
    };
    let next = if batch.len() < DEPOSITS_PER_TICK {
        0
    } else {
        cursor + batch.len()
    };
    let mut all: Vec<Candidate> = live.iter().map(|l| l.cand.clone()).collect();
    all.push(me.clone());
    let mut budget = COPIES_PER_TICK;
    for held in batch
        .into_iter()
        .filter(|h| h.state == CopyState::Ok && !h.record.deleted)
    {
        if budget == 0 {
            break;
        }
        let r = &held.record;
        // Only answers the owner signed (with the key we keep) count.
        let views: Vec<Option<Held>> = ask_all(live, connect, &|c| c.deposit_stat_for(r))
            .into_iter()
            .map(|v| v.filter(|h| signed_alike(&h.record, r)))
            .collect();
        if views
            .iter()
            .flatten()
            .any(|h| h.state == CopyState::Ok && h.record.order() > r.order())
        {
            let _ = store.forget(&r.owner, &r.name, r.version);
            continue;
        }
        let good = |c: &Candidate| {
            c.id == me.id
                || live.iter().zip(&views).any(|(l, v)| {
                    l.cand.id == c.id
                        && v.as_ref()
                            .is_some_and(|h| h.state == CopyState::Ok && h.record.same_version(r))
                })
        };
        let order = placement::rank(&r.owner, &r.name, &all);
        let leader = order.iter().copied().find(|&i| good(&all[i]));
        if leader.map(|i| &all[i].id) != Some(&me.id) {
            continue;
        }
        let places = placement::places(&r.owner, &r.name, r.size, r.copies.into(), &all, &good);
        for i in places.into_iter().filter(|&i| !good(&all[i])) {
            if budget == 0 {
                break;
            }
            budget -= 1;
            let Some(to) = live.iter().find(|l| l.cand.id == all[i].id) else {
                continue;
            };
            let _ = push(store, &held, &to.addr, connect);
        }
    }
    next
}

/// `other` is a record of the same deposit, signed by the same owner key.
fn signed_alike(other: &crate::proto::Record, ours: &crate::proto::Record) -> bool {
    other.owner == ours.owner
        && other.name == ours.name
        && other.signer == ours.signer
        && crate::secure::sign::verify(&other.signer, &other.signed_bytes(), &other.sig).is_ok()
}

/// Put our copy of `held` on the store at `addr`.
fn push(
    store: &Store,
    held: &Held,
    addr: &str,
    connect: &(dyn Fn(&str) -> crate::Result<Client> + Sync),
) -> crate::Result<()> {
    let r = &held.record;
    let (file, _) = store.open_copy(&r.owner, &r.name)?;
    // Hashed on the way out: the receiver checks against the record.
    connect(addr)?.deposit_put(r, Some(file), None, &mut |_| {})?;
    Ok(())
}

/// `ask` on every live store, eight at a time; `None` where it failed.
fn ask_all<T: Send>(
    live: &[Live],
    connect: &(dyn Fn(&str) -> crate::Result<Client> + Sync),
    ask: &(dyn Fn(&mut Client) -> crate::Result<Option<T>> + Sync),
) -> Vec<Option<T>> {
    crate::client::fan_out(live, &|l| {
        connect(&l.addr)
            .and_then(|mut c| ask(&mut c))
            .ok()
            .flatten()
    })
    .into_iter()
    .map(Option::flatten)
    .collect()
}
