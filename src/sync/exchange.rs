//! The exchange of indexes with a partner, on one connection: each side
//! says who it is, the id of its index and how far it holds the other's
//! ([`Mark`]); then each sends its entries after the other's mark (all of
//! them when the mark is of another index: a first contact, or a
//! database started over), in the order of their sequence numbers, and
//! the receiver stores them as they come. A change on one side costs one
//! small message each way; the whole index travels only when it must.
//! The client's half is [`exchange`] (it reads the next batch while the
//! last is stored); the server's is [`answer_hello`] and [`send_since`],
//! called from its connection.

use super::db::SyncDb;
use crate::client::Client;
use crate::limits::{
    ALL_PARTNERS_BYTES, EXCHANGE_BYTES, EXCHANGE_ENTRIES, PARTNER_BYTES, SYNC_PARTNERS,
};
use crate::proto::{BATCH, Mark, SyncEntry};
use crate::{Result, bail};

/// Send our entries after `seen` (the partner's mark of our index) to
/// `send`, in batches of [`BATCH`], each with whether more follow. Past
/// half of [`EXCHANGE_BYTES`] the rest waits for the next exchange (the
/// partner's mark then tells where to go on). Returns the sequence number
/// everything up to which was sent, or `None` when the rest waits.
pub fn send_since(
    db: &SyncDb,
    peer: &str,
    seen: Option<&Mark>,
    send: &mut dyn FnMut(&[SyncEntry], bool) -> Result<()>,
) -> Result<Option<u64>> {
    let ours = db.index_id()?;
    let mut since = seen.filter(|m| m.index_id == ours).map_or(0, |m| m.seq);
    let mut bytes = 0;
    loop {
        let batch = db.local_since(peer, since, BATCH)?;
        bytes += names_of(&batch);
        let more = batch.len() == BATCH && bytes < EXCHANGE_BYTES / 2;
        send(&batch, more)?;
        let top = batch.last().map_or(since, |last| last.seq);
        if !more {
            return Ok((batch.len() < BATCH).then_some(top));
        }
        since = top;
    }
}

/// A partner opened an exchange from its index `index_id`: make room for
/// its entries (a partner we never saw beyond [`SYNC_PARTNERS`], or one
/// that sent [`PARTNER_ENTRIES`] already, is refused) and say where we
/// stand: the id of our index and how far we hold the partner's.
pub fn answer_hello(db: &SyncDb, peer: &str, index_id: &str) -> Result<(String, Option<Mark>)> {
    if db.seen_of(peer)?.is_none() && db.partner_count()? >= SYNC_PARTNERS {
        bail!("this peer keeps the indexes of {SYNC_PARTNERS} partners already; refused");
    }
    let (mut mine, mut all) = db.remote_bytes(peer)?;
    if mine + EXCHANGE_BYTES > PARTNER_BYTES || all + EXCHANGE_BYTES > ALL_PARTNERS_BYTES {
        // The running count only grows: count again before refusing.
        db.recount_remote(peer)?;
        (mine, all) = db.remote_bytes(peer)?;
    }
    if mine + EXCHANGE_BYTES > PARTNER_BYTES || all + EXCHANGE_BYTES > ALL_PARTNERS_BYTES {
        bail!(
            "this peer keeps no more than {} MiB of names of a partner's index ({} MiB of all partners'); refused",
            PARTNER_BYTES >> 20,
            ALL_PARTNERS_BYTES >> 20
        );
    }
    db.remote_begin(peer, index_id)?;
    Ok((db.index_id()?, db.seen_of(peer)?))
}

/// The bytes of the names of `entries`: what keeping them costs, roughly.
fn names_of(entries: &[SyncEntry]) -> usize {
    entries.iter().map(|e| e.name.len()).sum()
}

/// Counts a partner's entries as they come: more than [`EXCHANGE_ENTRIES`]
/// or [`EXCHANGE_BYTES`] in one exchange is refused.
#[derive(Default)]
pub struct Intake {
    entries: usize,
    bytes: usize,
}

impl Intake {
    pub fn take(&mut self, batch: &[SyncEntry]) -> Result<()> {
        self.entries += batch.len();
        self.bytes += names_of(batch);
        if self.entries > EXCHANGE_ENTRIES || self.bytes > EXCHANGE_BYTES {
            bail!(
                "sync entries of more than {EXCHANGE_ENTRIES} paths or {} MiB of names in one exchange; refused",
                EXCHANGE_BYTES >> 20
            );
        }
        Ok(())
    }
}

/// Our half of an exchange over `client`, as `peer_id` serving on
/// `listen_port`; `known` is the id we believe the partner has. Returns
/// the id of the partner that answered.
pub fn exchange(
    client: &mut Client,
    db: &SyncDb,
    peer_id: &str,
    listen_port: u16,
    known: Option<&str>,
) -> Result<String> {
    let seen = match known {
        Some(id) => db.seen_of(id)?,
        None => None,
    };
    let (their_id, their_index, their_seen) =
        client.sync_hello(peer_id, listen_port, &db.index_id()?, seen)?;
    if their_id == peer_id {
        bail!(
            "{} is this very peer (same peer id); not syncing with itself",
            client.addr()
        );
    }
    // When another id answered than we thought, our mark was of another
    // index: it sends its own whole, and remote_begin starts it afresh.
    db.remote_begin(&their_id, &their_index)?;
    send_since(db, &their_id, their_seen.as_ref(), &mut |b, more| {
        client.send_delta(b, more)
    })?;
    // Batches are read and decoded here while the one before is stored
    // on a thread of its own: storing is the slow half, and the first
    // contact with a large index (all of it) waits for both.
    let mut intake = Intake::default();
    let (batches, stored) = crossbeam_channel::bounded::<Vec<SyncEntry>>(STORE_AHEAD);
    std::thread::scope(|s| {
        let storer = s.spawn(|| -> Result<()> {
            for entries in stored {
                db.remote_store(&their_id, &their_index, &entries)?;
            }
            Ok(())
        });
        let received = loop {
            let (entries, more) = match client.recv_delta() {
                Ok(got) => got,
                Err(e) => break Err(e),
            };
            if let Err(e) = intake.take(&entries) {
                break Err(e);
            }
            // A closed channel: the storer failed, and says why below.
            if batches.send(entries).is_err() || !more {
                break Ok(());
            }
        };
        drop(batches);
        let stored = storer
            .join()
            .unwrap_or_else(|_| Err(crate::Error::new("storing the partner's entries failed")));
        received.and(stored)
    })?;
    Ok(their_id)
}

/// Batches of a partner's entries read ahead of the one being stored.
const STORE_AHEAD: usize = 2;

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, seq: u64) -> SyncEntry {
        SyncEntry::test_file(name, seq, None)
    }

    #[test]
    fn ever_new_partner_ids_are_refused_past_the_cap_known_ones_are_not() {
        let d = tempfile::tempdir().unwrap();
        let db = SyncDb::open(d.path()).unwrap();
        for i in 0..SYNC_PARTNERS {
            answer_hello(&db, &format!("p{i}"), "idx").unwrap();
        }
        let e = answer_hello(&db, "one-more", "idx").unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
        assert_eq!(db.partner_count().unwrap(), SYNC_PARTNERS);
        // One we keep already still exchanges.
        assert!(answer_hello(&db, "p0", "idx").is_ok());
    }

    #[test]
    fn the_bytes_kept_of_a_partner_are_counted_again_exactly_when_needed() {
        let d = tempfile::tempdir().unwrap();
        let db = SyncDb::open(d.path()).unwrap();
        db.remote_begin("p", "idx").unwrap();
        // The same path sent three times counts three times as it comes...
        for seq in 1..=3 {
            db.remote_store("p", "idx", &[entry("abcd", seq)]).unwrap();
        }
        assert_eq!(db.remote_bytes("p").unwrap(), (12, 12));
        // ...and once when counted again.
        db.recount_remote("p").unwrap();
        assert_eq!(db.remote_bytes("p").unwrap(), (4, 4));
    }

    #[test]
    fn one_exchange_takes_no_more_than_its_bound_of_names() {
        let mut intake = Intake::default();
        let big = entry(&"x".repeat(EXCHANGE_BYTES / 2), 1);
        intake.take(std::slice::from_ref(&big)).unwrap();
        intake.take(std::slice::from_ref(&big)).unwrap();
        let e = intake.take(&[entry("y", 2)]).unwrap_err();
        assert!(e.to_string().contains("MiB"), "{e}");
    }
}
