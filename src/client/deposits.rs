//! Asking a store about our deposits: put a copy, get one back (checked
//! against the record's MD5, not the store's word), stat, list, forget.

use std::fs::File;
use std::io::Write;
use std::time::Instant;

use super::{Client, LandOver, Landed, Received};
use crate::folder::{Folder, Incoming};
use crate::proto::{FileMeta, Held, Record, Request, Response};
use crate::stream::{Ending, receive_file, send_file};
use crate::transfer::TransferReport;
use crate::{Context, Error, Result, bail};

/// How a put ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The bytes went and the store kept them.
    Bytes,
    /// The store held this version already.
    Had,
}

impl Client {
    /// Put a copy of `record` (the bytes of `file`) on this store; without
    /// a file, only if the store holds it already.
    pub fn deposit_put(
        &mut self,
        record: &Record,
        file: Option<File>,
        known_md5: Option<[u8; 16]>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Sent> {
        self.send(&Request::DepositPut {
            record: record.clone(),
        })?;
        match self.recv()? {
            Response::Ready => {}
            Response::Have => return Ok(Sent::Had),
            other => bail!(kind: Integrity, "unexpected answer to a deposit: {other:?}"),
        }
        let Some(file) = file else {
            bail!("this store has no copy of {} to keep", record.name);
        };
        let size = record.size;
        send_file(
            &mut self.w,
            file,
            size,
            known_md5,
            &self.cancel,
            progress,
            &|_| Ok(()),
        )
        .context(format_args!("depositing {}", record.name))?;
        self.w
            .flush()
            .context(format_args!("sending to {}", self.addr))?;
        match self.recv()? {
            Response::Ok { .. } => Ok(Sent::Bytes),
            other => bail!(kind: Integrity, "unexpected answer to a deposit: {other:?}"),
        }
    }

    /// Get our deposit `expected` (a record we checked) into `folder` as
    /// `local`, verified against that record's size and MD5, not against
    /// what the store sends with the bytes.
    pub fn deposit_get(
        &mut self,
        expected: &Record,
        folder: &Folder,
        local: &str,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(Held, TransferReport)> {
        let start = Instant::now();
        let name = expected.name.as_str();
        self.send(&Request::DepositGet {
            name: name.to_string(),
        })?;
        let held = match self.recv()? {
            Response::Held { held: Some(h) } if h.record.name == name => h,
            other => bail!(kind: Integrity, "unexpected answer to retrieve: {other:?}"),
        };
        if !held.record.same_version(expected) || held.record.size != expected.size {
            bail!(kind: Integrity, "the store sent another version of {name} than the one it listed");
        }
        let r = expected;
        let meta = FileMeta {
            name: local.to_string(),
            size: r.size,
            mtime_ns: r.mtime_ns,
            mode: r.mode,
        };
        let mut incoming = Incoming::create(folder, &meta)?;
        let ending = receive_file(&mut self.r, &mut self.buf, &mut incoming, &mut |n| {
            progress(n, r.size)
        })?;
        if let Ending::Refused(e) = ending {
            return Err(e);
        }
        let received = Received {
            incoming,
            sender_md5: r.md5.clone(),
            start,
        };
        match received.commit(folder, &mut |_| Ok(LandOver::Anything))? {
            Landed::Done(report) => Ok((held, report)),
            Landed::Mismatch(_) => Err(Error::of(
                crate::ErrorKind::Integrity,
                format!("its copy of {name} does not match the deposit's MD5 (corrupt)"),
            )),
        }
    }

    /// What this store holds of our deposit `name`.
    pub fn deposit_stat(&mut self, name: &str) -> Result<Option<Held>> {
        self.send(&Request::DepositStat {
            name: name.to_string(),
            proof: None,
        })?;
        match self.recv()? {
            Response::Held { held } => Ok(held.filter(|h| h.record.name == name)),
            other => bail!(kind: Integrity, "unexpected answer to a deposit stat: {other:?}"),
        }
    }

    /// What this store holds of `proof`'s deposit (we are a store asking
    /// for its owner).
    pub fn deposit_stat_for(&mut self, proof: &Record) -> Result<Option<Held>> {
        self.send(&Request::DepositStat {
            name: proof.name.clone(),
            proof: Some(proof.clone()),
        })?;
        match self.recv()? {
            Response::Held { held } => Ok(held.filter(|h| h.record.name == proof.name)),
            other => bail!(kind: Integrity, "unexpected answer to a deposit stat: {other:?}"),
        }
    }

    /// This store reads its copy of our `name` whole and says what it found.
    pub fn deposit_verify(&mut self, name: &str) -> Result<Option<Held>> {
        self.send(&Request::DepositVerify {
            name: name.to_string(),
        })?;
        match self.recv()? {
            Response::Held { held } => Ok(held.filter(|h| h.record.name == name)),
            other => bail!(kind: Integrity, "unexpected answer to a deposit check: {other:?}"),
        }
    }

    /// The stores this store knows; with our port, we are a store too.
    pub fn store_list(&mut self, listen_port: Option<u16>) -> Result<Vec<String>> {
        self.send(&Request::StoreList { listen_port })?;
        match self.recv()? {
            Response::Stores { mut addrs } => {
                addrs.truncate(crate::limits::KNOWN_STORES);
                Ok(addrs)
            }
            other => bail!(kind: Integrity, "unexpected answer to a store list: {other:?}"),
        }
    }

    /// Every deposit of ours this store holds.
    pub fn deposit_list(&mut self) -> Result<Vec<Held>> {
        self.send(&Request::DepositList { after: None })?;
        let mut all = Vec::new();
        let mut taken = 0;
        loop {
            match self.recv_part(&mut taken)? {
                Response::Deposits { held, more } => {
                    all.extend(held);
                    if !more {
                        return Ok(all);
                    }
                }
                other => bail!(kind: Integrity, "unexpected answer to a deposit list: {other:?}"),
            }
        }
    }

    /// Remove this store's copy of `name` if its version is at most `upto`.
    pub fn deposit_forget(&mut self, name: &str, upto: u64) -> Result<String> {
        self.send(&Request::DepositForget {
            name: name.to_string(),
            upto,
        })?;
        match self.recv()? {
            Response::Ok { message } => Ok(message),
            other => bail!(kind: Integrity, "unexpected answer to forget: {other:?}"),
        }
    }
}
