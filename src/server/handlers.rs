//! One function per request type, answering on a [`Connection`]: `info`,
//! `index` (all, a time range, a regular expression), `hash` (one file or
//! all), `download` (a file's bytes, from the MD5 cache or hashed on the
//! way out), `upload` (when allowed) and a sync offer (read whole against
//! the offer budget, answered by the [`super::SyncAnswer`]); deposit
//! requests are in [`super::deposits`]. Also what a
//! request is called in the log ([`describe`]) and what an index filter
//! selects ([`matcher`]).

use std::sync::atomic::AtomicBool;

use super::conn::{Connection, Input};
use crate::folder::{Incoming, Version};
use crate::limits::{TICKETS_PER_CONNECTION, bounded_regex};
use crate::names::clean_name;
use crate::proto::{BATCH, Entry, Filter, Mark, Request, Response, decode, read_frame, write_msg};
use crate::stream::{receive_file, send_file};
use crate::sync::exchange::Intake;
use crate::{Error, Result, bail};

impl<R: Input, W: std::io::Write> Connection<'_, R, W> {
    /// Serve one request; returns the number of file bytes moved.
    pub fn handle(&mut self, req: Request) -> Result<u64> {
        match req {
            Request::Info => self.info(),
            Request::Index { filter } => self.index(&filter),
            Request::Hash { name } => self.hash(name.as_deref()),
            Request::Download { name, fresh, .. } => self.download(&name, fresh),
            Request::SyncHello {
                peer_id,
                listen_port,
                index_id,
                seen,
            } => self.sync_hello(peer_id, listen_port, &index_id, seen),
            Request::SyncDelta { .. } => bail!("sync entries without a sync hello"),
            Request::Upload { meta, force } => self.upload(meta, force),
            Request::UdpTicket => self.udp_ticket(),
            Request::DepositPut { record } => self.deposit_put(record),
            Request::DepositGet { name } => self.deposit_get(&name),
            Request::DepositStat { name, proof } => self.deposit_stat(&name, proof.as_ref()),
            Request::DepositVerify { name } => self.deposit_verify(&name),
            Request::StoreList { listen_port } => self.store_list(listen_port),
            Request::DepositList { .. } => self.deposit_list(),
            Request::DepositForget { name, upto } => self.deposit_forget(&name, upto),
        }
    }

    /// Keys for this client's UDP downloads, a few per connection.
    fn udp_ticket(&mut self) -> Result<u64> {
        if self.tickets >= TICKETS_PER_CONNECTION {
            bail!("this connection has asked for {TICKETS_PER_CONNECTION} UDP tickets already");
        }
        // The address the tickets count against (none in tests without a
        // socket).
        let from = self
            .peer
            .parse::<std::net::SocketAddr>()
            .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |a| a.ip());
        let t = self.ctx.tickets.issue(self.proven.as_deref(), from)?;
        self.tickets += 1;
        write_msg(
            &mut self.w,
            &Response::UdpTicket {
                ticket: t.id,
                secret: t.secret_hex(),
            },
        )?;
        Ok(0)
    }

    fn info(&mut self) -> Result<u64> {
        write_msg(
            &mut self.w,
            &Response::Info {
                peer_id: self.ctx.peer_id.clone(),
                allow_upload: self.ctx.settings.allow_upload,
                zone: Some(self.ctx.zone.clone()),
                store: self.ctx.store.as_ref().map(|s| s.status()),
            },
        )?;
        Ok(0)
    }

    fn index(&mut self, filter: &Filter) -> Result<u64> {
        let keep = matcher(filter)?;
        let folder = &self.ctx.folder;
        let w = &mut self.w;
        let mut batch = Vec::with_capacity(BATCH);
        let mut failure: Option<Error> = None;
        folder.walk(|e| {
            if failure.is_some() || !keep(&e) {
                return;
            }
            batch.push(e);
            if batch.len() == BATCH {
                let entries = std::mem::take(&mut batch);
                if let Err(e) = write_msg(w, &Response::Entries { entries }) {
                    failure = Some(e);
                }
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        if !batch.is_empty() {
            write_msg(w, &Response::Entries { entries: batch })?;
        }
        self.end_of_stream()
    }

    fn hash(&mut self, name: Option<&str>) -> Result<u64> {
        let folder = &self.ctx.folder;
        let w = &mut self.w;
        let mut send = |files| write_msg(w, &Response::Hashes { files });
        match name {
            Some(n) => send(vec![folder.hash_one(n)?])?,
            // Sent as it is hashed: the answer is never held whole.
            None => folder.hash_all_in(BATCH, &mut send)?,
        }
        self.end_of_stream()
    }

    /// The end of a listing or hash stream, after a note on the names the
    /// last walk could not serve.
    fn end_of_stream(&mut self) -> Result<u64> {
        if let Some(message) = self.ctx.folder.unservable_names() {
            write_msg(&mut self.w, &Response::Note { message })?;
        }
        write_msg(&mut self.w, &Response::End)?;
        Ok(0)
    }

    fn download(&mut self, name: &str, fresh: bool) -> Result<u64> {
        let folder = &self.ctx.folder;
        let (file, meta, stat) = folder.open_file_stat(name)?;
        let opened = Version::of(&stat);
        if fresh {
            folder.forget_md5(&meta.name);
        }
        let known = folder.cached(&meta.name, &stat);
        write_msg(&mut self.w, &Response::File { meta: meta.clone() })?;
        // The bytes read are what the file held throughout (a new file
        // renamed over the name meanwhile is another version, not this
        // one's bytes mixed).
        let unchanged = |file: &std::fs::File| -> Result<()> {
            if file.metadata().ok().map(|m| Version::of(&m)) != Some(opened) {
                bail!("{} changed while it was being sent; try again", meta.name);
            }
            Ok(())
        };
        let md5 = send_file(
            &mut self.w,
            file,
            meta.size,
            known,
            &AtomicBool::new(false),
            &mut |_| {},
            &unchanged,
        )?;
        // The bytes were hashed on the way out (`unchanged` held): remember it.
        if known.is_none() {
            folder.remember(&meta.name, &stat, md5);
        }
        Ok(meta.size)
    }

    /// A sync exchange (see [`crate::sync::exchange`]): say where we
    /// stand, store the partner's entries batch by batch as they come
    /// (nothing of its index is held in memory beyond one batch), send
    /// ours after its mark, and tell the sync side.
    fn sync_hello(
        &mut self,
        peer_id: String,
        listen_port: u16,
        index_id: &str,
        seen: Option<Mark>,
    ) -> Result<u64> {
        if let Some(proven) = &self.proven
            && *proven != peer_id
        {
            bail!(kind: Refused, "the offer claims id {peer_id}, but the connection proved id {proven}");
        }
        let sync = &self.ctx.sync;
        let (ours, their_mark) = sync.hello(&peer_id, index_id)?;
        write_msg(
            &mut self.w,
            &Response::SyncHello {
                peer_id: self.ctx.peer_id.clone(),
                index_id: ours,
                seen: their_mark,
            },
        )?;
        self.w.flush()?;
        let mut intake = Intake::default();
        loop {
            match read_frame(&mut self.r, &mut self.buf)?.map(decode::<Request>) {
                Some(Ok(Request::SyncDelta { entries, more })) => {
                    intake.take(&entries)?;
                    sync.store(&peer_id, index_id, &entries)?;
                    if !more {
                        break;
                    }
                }
                _ => bail!("a sync exchange was cut short"),
            }
        }
        let w = &mut self.w;
        let sent_upto = sync.send_since(&peer_id, seen.as_ref(), &mut |entries, more| {
            write_msg(
                w,
                &Response::SyncDelta {
                    entries: entries.to_vec(),
                    more,
                },
            )
        })?;
        let ip = self
            .peer
            .rsplit_once(':')
            .map(|(ip, _)| ip)
            .unwrap_or(self.peer);
        sync.exchanged(&peer_id, &format!("{ip}:{listen_port}"), sent_upto);
        Ok(0)
    }

    fn upload(&mut self, meta: crate::proto::FileMeta, force: bool) -> Result<u64> {
        let folder = &self.ctx.folder;
        if !self.ctx.settings.allow_upload {
            bail!("this peer does not accept uploads (start it with --allow-upload)");
        }
        let name = clean_name(&meta.name)?;
        if !force && std::fs::symlink_metadata(folder.root().join(&name)).is_ok() {
            bail!("{name} already exists on the peer; use `upload --force {name}` to replace it");
        }
        let mut incoming = Incoming::create(folder, &meta)?;
        write_msg(&mut self.w, &Response::Ready)?;
        self.w.flush()?;
        let md5 = receive_file(&mut self.r, &mut self.buf, &mut incoming, &mut |_| {})?.md5()?;
        let size = incoming.written();
        incoming.finish_verified(folder, &md5)?;
        folder.save_cache();
        write_msg(
            &mut self.w,
            &Response::Ok {
                message: format!("stored {name} ({size} bytes, MD5 {md5})"),
            },
        )?;
        Ok(size)
    }
}

/// A short description of a request for the history log.
pub fn describe(req: &Request) -> String {
    match req {
        Request::Info => "info".into(),
        Request::Index {
            filter: Filter::All,
        } => "index longlist".into(),
        Request::Index {
            filter: Filter::Between { start_ns, end_ns },
        } => format!(
            "index shortlist {} {}",
            crate::timestamp::rfc3339(*start_ns),
            crate::timestamp::rfc3339(*end_ns)
        ),
        Request::Index {
            filter: Filter::Regex { expr },
        } => format!("index regex {expr}"),
        Request::Hash { name: Some(n) } => format!("hash verify {n}"),
        Request::Hash { name: None } => "hash checkall".into(),
        Request::Download { name, fresh, .. } => {
            format!(
                "download TCP {name}{}",
                if *fresh { " (rehashed)" } else { "" }
            )
        }
        Request::SyncHello { .. } => "sync exchange".into(),
        Request::UdpTicket => "udp ticket".into(),
        Request::SyncDelta { entries, .. } => format!("sync entries ({})", entries.len()),
        Request::Upload { meta, force } => {
            format!(
                "upload{} {}",
                if *force { " --force" } else { "" },
                meta.name
            )
        }
        Request::DepositPut { record } => {
            format!("deposit {} version {}", record.name, record.version)
        }
        Request::DepositGet { name } => format!("retrieve {name}"),
        Request::DepositStat { name, .. } => format!("deposit stat {name}"),
        Request::DepositVerify { name } => format!("deposit verify {name}"),
        Request::StoreList { .. } => "store list".into(),
        Request::DepositList { .. } => "deposit list".into(),
        Request::DepositForget { name, upto } => format!("forget {name} up to version {upto}"),
    }
}

/// A test on a listing entry.
pub type EntryTest = Box<dyn Fn(&Entry) -> bool>;

/// The predicate an index filter stands for.
pub fn matcher(filter: &Filter) -> Result<EntryTest> {
    Ok(match filter {
        Filter::All => Box::new(|_| true),
        Filter::Between { start_ns, end_ns } => {
            let (a, b) = (*start_ns, *end_ns);
            if a > b {
                bail!("the start of the range is after its end");
            }
            Box::new(move |e| a <= e.mtime_ns && e.mtime_ns <= b)
        }
        Filter::Regex { expr } => {
            let re = bounded_regex(expr)?;
            Box::new(move |e| re.is_match(&e.name))
        }
    })
}
