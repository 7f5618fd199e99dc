//! Which stores answer now: every seed address (the session's peers, LAN
//! stores, the catalogue's) is asked `info` over a full handshake, eight at
//! a time. A store is one that proves an id and says it keeps deposits;
//! its zone and free room come from that answer. Seeds are bounded.

use super::Ctx;
use crate::client::fan_out;
use crate::placement::Candidate;

/// Addresses asked at most.
pub const SEEDS: usize = crate::limits::KNOWN_STORES;

/// A store that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRef {
    pub id: String,
    pub addr: String,
    pub zone: String,
    pub free: u64,
}

impl StoreRef {
    pub fn candidate(&self) -> Candidate {
        Candidate {
            id: self.id.clone(),
            zone: self.zone.clone(),
            free: self.free,
        }
    }
}

/// What asking the seeds found: the stores, and the addresses that did
/// not answer (with why).
#[derive(Debug, Default)]
pub struct Found {
    pub stores: Vec<StoreRef>,
    pub down: Vec<(String, String)>,
}

/// Ask every seed (and the catalogue's stores) who it is, then the
/// stores those stores know (one hop).
pub fn stores(ctx: &Ctx, extra: &[String]) -> Found {
    let mut seeds: Vec<String> = Vec::new();
    for s in ctx.seeds.iter().chain(extra) {
        if !seeds.contains(s) && seeds.len() < SEEDS {
            seeds.push(s.clone());
        }
    }
    let mut found = probe(ctx, &seeds);
    let told = on_each(ctx, &found.stores, &|c| c.store_list(None));
    let mut more: Vec<String> = Vec::new();
    for addr in told.into_iter().flatten().flatten() {
        let known = seeds.contains(&addr) || more.contains(&addr);
        if !known && seeds.len() + more.len() < SEEDS {
            more.push(addr);
        }
    }
    let next = probe(ctx, &more);
    for s in next.stores {
        if !found.stores.iter().any(|f| f.id == s.id) {
            found.stores.push(s);
        }
    }
    found.down.extend(next.down);
    found
}

/// Ask each address who it is, eight at a time.
fn probe(ctx: &Ctx, seeds: &[String]) -> Found {
    let answers = fan_out(seeds, &|addr| ctx.connect(addr).and_then(|mut c| c.info()));
    let mut found = Found::default();
    for (addr, answer) in seeds.iter().zip(answers) {
        match answer.unwrap_or_else(|| Err(crate::Error::new("the probe failed"))) {
            Ok(info) => {
                let Some(room) = info.store else { continue };
                if found.stores.iter().any(|s| s.id == info.peer_id) {
                    continue;
                }
                found.stores.push(StoreRef {
                    id: info.peer_id,
                    addr: addr.clone(),
                    zone: info.zone.unwrap_or_else(|| addr.clone()),
                    free: room.free,
                });
            }
            Err(e) => found.down.push((addr.clone(), e.to_string())),
        }
    }
    found
}

/// Run `ask` on every store at once (a thread each, eight at a time), in
/// the stores' order.
pub fn on_each<T: Send>(
    ctx: &Ctx,
    stores: &[StoreRef],
    ask: &(dyn Fn(&mut crate::client::Client) -> crate::Result<T> + Sync),
) -> Vec<crate::Result<T>> {
    fan_out(stores, &|st| ask(&mut ctx.connect_to(st)?))
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(crate::Error::new("the request failed"))))
        .collect()
}
