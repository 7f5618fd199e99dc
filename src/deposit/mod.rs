//! The owner's side of deposits: `deposit`, `retrieve`, `replicas` and
//! `forget`. A deposit is a file of ours kept as N verified copies on N
//! stores in N distinct zones, placed by rendezvous hashing
//! ([`crate::placement`]). What the stores hold is the truth: every command
//! asks them (by the id our key proves, so an owner sees only its own);
//! the local catalogue ([`catalogue`]) only remembers where stores and
//! copies were seen, so that an unreachable holder can be named.
//!
//! The rooms: [`find`] (which stores answer), [`put`] (deposit, copies in
//! parallel), [`get`] (retrieve with fallback, replicas, forget), [`act`]
//! (copies and repair).

pub mod act;
pub mod catalogue;
pub mod find;
pub mod get;
pub mod put;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::Serialize;

use crate::Result;
use crate::client::Client;
use crate::folder::Folder;
use crate::secure::Credentials;

pub use find::StoreRef;

/// What deposit commands work with, from the session.
pub struct Ctx<'a> {
    pub creds: Credentials,
    /// Our id: the owner of our deposits.
    pub owner: String,
    pub folder: &'a Folder,
    /// Where stores may be: the session's peers, stores found on the LAN.
    pub seeds: Vec<String>,
    /// Where the catalogue is kept.
    pub private_dir: &'a std::path::Path,
    pub cancel: Arc<AtomicBool>,
    /// How long a store may stay silent.
    pub silence: Duration,
    /// Signs our deposit records.
    pub signer: crate::secure::sign::Signer,
}

impl Ctx<'_> {
    fn connect(&self, addr: &str) -> Result<Client> {
        Client::connect(addr, &self.creds, self.cancel.clone(), self.silence)
    }

    /// `record` as ours: our id as its owner, signed.
    fn sign(&self, mut record: crate::proto::Record) -> crate::proto::Record {
        record.owner = self.owner.clone();
        record.signer = self.signer.public_hex();
        record.sig = self.signer.sign(&record.signed_bytes());
        record
    }

    /// `held` is a record of ours: our id, our key, our signature. What a
    /// store says about a deposit counts only then (a store may lie, or
    /// hold junk under our id from someone else).
    fn ours(&self, held: &crate::proto::Held) -> bool {
        let r = &held.record;
        r.owner == self.owner
            && r.signer == self.signer.public_hex()
            && crate::secure::sign::verify(&r.signer, &r.signed_bytes(), &r.sig).is_ok()
    }

    /// A connection to `store`, which must prove the id it proved before.
    fn connect_to(&self, store: &StoreRef) -> Result<Client> {
        let c = self.connect(&store.addr)?;
        let proven = c.remote_id().to_string();
        if proven != store.id {
            crate::bail!(kind: Integrity, "{} now proves id {proven}, not {}", store.addr, store.id);
        }
        Ok(c)
    }
}

/// The current record among copies: the highest (version, time made,
/// MD5), the same on every machine.
fn newest<S>(held: &[(S, crate::proto::Held)]) -> Option<&crate::proto::Record> {
    held.iter()
        .map(|(_, h)| &h.record)
        .max_by(|a, b| a.order().cmp(&b.order()))
}

/// One copy of a deposit, as a table row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyRow {
    pub store_id: String,
    pub address: String,
    pub zone: String,
    /// `ok`, `missing`, `corrupt` or `unreachable`.
    pub state: String,
    /// The version this copy holds, when it was reached.
    pub version: Option<u64>,
}

impl CopyRow {
    fn of(store: &StoreRef, state: &str, version: Option<u64>) -> CopyRow {
        CopyRow {
            store_id: store.id.clone(),
            address: store.addr.clone(),
            zone: store.zone.clone(),
            state: state.to_string(),
            version,
        }
    }
}
