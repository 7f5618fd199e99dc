//! A store's answers to deposit requests: put (a copy arrives, checked
//! against the record's MD5), get (its bytes, hashed on the way out: a
//! copy found corrupt is marked so), stat, list and forget. The owner is
//! the id the connection's handshake proved; a deposit of anyone else is
//! answered exactly like a name that was never deposited.

use std::sync::atomic::AtomicBool;

use super::conn::{Connection, Input};
use crate::proto::{CopyState, Record, Response, hex, write_msg};
use crate::store::{Put, Store, not_here};
use crate::stream::{receive_file, send_file};
use crate::{Result, bail};

/// Deposits per `deposits` frame: 256 records of names of up to 1 KiB
/// (6 KiB when every byte needs a JSON escape) stay under a frame's 4 MiB.
const LIST_BATCH: usize = 256;

impl<'a, R: Input, W: std::io::Write> Connection<'a, R, W> {
    /// The store, and the proven id whose deposits this connection sees.
    fn store_and_owner(&self) -> Result<(&'a Store, String)> {
        let ctx: &'a super::ServerContext = self.ctx;
        let Some(store) = ctx.store.as_deref() else {
            bail!(kind: Refused, "this peer is not a store (start it with --store)");
        };
        let Some(owner) = self.proven.clone() else {
            bail!(kind: Refused, "deposits need a proven peer id");
        };
        Ok((store, owner))
    }

    pub(super) fn deposit_put(&mut self, record: Record) -> Result<u64> {
        let (store, owner) = self.store_and_owner()?;
        let mut writer = match store.begin_put(&owner, &record)? {
            Put::Have => {
                write_msg(&mut self.w, &Response::Have)?;
                return Ok(0);
            }
            Put::Receive(w) => w,
        };
        write_msg(&mut self.w, &Response::Ready)?;
        self.w.flush()?;
        let md5 = receive_file(&mut self.r, &mut self.buf, &mut *writer, &mut |_| {})?.md5()?;
        writer.commit(&md5)?;
        write_msg(
            &mut self.w,
            &Response::Ok {
                message: format!(
                    "kept {} version {} ({} bytes, MD5 {md5})",
                    record.name, record.version, record.size
                ),
            },
        )?;
        Ok(record.size)
    }

    pub(super) fn deposit_get(&mut self, name: &str) -> Result<u64> {
        let (store, owner) = self.store_and_owner()?;
        let (file, held) = store.open_copy(&owner, name)?;
        let size = held.record.size;
        if file.metadata().map(|m| m.len()).ok() != Some(size) {
            store.mark(&owner, name, CopyState::Corrupt)?;
            bail!(kind: Integrity, "this store's copy of {name} is corrupt (its size changed)");
        }
        let expected = held.record.md5.clone();
        write_msg(&mut self.w, &Response::Held { held: Some(held) })?;
        // Hashed on the way out: the receiver checks against the record,
        // and a copy that no longer matches is marked here.
        let md5 = send_file(
            &mut self.w,
            file,
            size,
            None,
            &AtomicBool::new(false),
            &mut |_| {},
            &|_| Ok(()),
        )?;
        if hex(&md5) != expected {
            store.mark(&owner, name, CopyState::Corrupt)?;
        }
        Ok(size)
    }

    pub(super) fn deposit_stat(&mut self, name: &str, proof: Option<&Record>) -> Result<u64> {
        let (store, owner) = self.store_and_owner()?;
        let held = match proof {
            Some(p) if p.owner != owner => store.stat_with_proof(name, p)?,
            _ => store.stat(&owner, name)?,
        };
        write_msg(&mut self.w, &Response::Held { held })?;
        Ok(0)
    }

    pub(super) fn deposit_verify(&mut self, name: &str) -> Result<u64> {
        let (store, owner) = self.store_and_owner()?;
        let held = store.verify(&owner, name)?;
        write_msg(&mut self.w, &Response::Held { held })?;
        Ok(0)
    }

    /// The stores we know; a store that says where it listens is noted.
    pub(super) fn store_list(&mut self, listen_port: Option<u16>) -> Result<u64> {
        let (store, _) = self.store_and_owner()?;
        let ip = self.peer.rsplit_once(':').map_or(self.peer, |(ip, _)| ip);
        let caller = listen_port.map(|p| format!("{ip}:{p}"));
        if let Some(addr) = &caller {
            store.note_store(addr);
        }
        let addrs = store
            .known_stores()
            .into_iter()
            .filter(|a| Some(a) != caller.as_ref())
            .collect();
        write_msg(&mut self.w, &Response::Stores { addrs })?;
        Ok(0)
    }

    /// Every deposit of the caller here, in frames of [`LIST_BATCH`], read
    /// as they go.
    pub(super) fn deposit_list(&mut self) -> Result<u64> {
        let (store, owner) = self.store_and_owner()?;
        let mut batch = Vec::with_capacity(LIST_BATCH);
        let w = &mut self.w;
        store.each_held(&owner, &mut |h| {
            batch.push(h);
            if batch.len() == LIST_BATCH {
                let held = std::mem::take(&mut batch);
                write_msg(w, &Response::Deposits { held, more: true })?;
            }
            Ok(())
        })?;
        write_msg(
            &mut self.w,
            &Response::Deposits {
                held: batch,
                more: false,
            },
        )?;
        Ok(0)
    }

    pub(super) fn deposit_forget(&mut self, name: &str, upto: u64) -> Result<u64> {
        let (store, owner) = self.store_and_owner()?;
        if store.stat(&owner, name)?.is_none() {
            return Err(not_here(name));
        }
        let message = match store.forget(&owner, name, upto)? {
            true => format!("removed the copy of {name}"),
            false => format!("kept the copy of {name}: its version is newer than {upto}"),
        };
        write_msg(&mut self.w, &Response::Ok { message })?;
        Ok(0)
    }
}
