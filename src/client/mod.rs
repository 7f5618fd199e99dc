//! Talking to a peer over TCP: connect and handshake, then one method per
//! request. Reads wait in short slices so that Ctrl-C (the cancel flag) ends
//! a command at once and a peer that goes silent ends it in bounded time.

mod deposits;
mod fan_out;
pub use deposits::Sent;
pub use fan_out::fan_out;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::folder::{DirCache, Finish, Folder, Glance, Incoming, mismatch};
use crate::limits::ANSWER_BYTES;
use crate::proto::{
    Entry, FileMeta, Filter, HashEntry, Mark, Request, Response, SyncEntry, read_msg, write_msg,
};
use crate::secure::{Credentials, PeerId, SecureReader, SecureWriter, handshake};
use crate::stream::{Ending, receive_file, send_file};
use crate::transfer::TransferReport;
use crate::{Context, Error, Result, bail};

/// What a peer says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Proven by its key.
    pub peer_id: String,
    pub allow_upload: bool,
    pub zone: Option<String>,
    /// Set for a store.
    pub store: Option<crate::proto::StoreStatus>,
}

/// How long to wait for a peer to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A file's bytes received into a temporary file, with the sender's MD5.
struct Received {
    incoming: Incoming,
    sender_md5: String,
    start: Instant,
}

/// A peer's answer to one download request: the bytes, received and not
/// yet verified, or its refusal of this file (the stream is still in step).
enum Answer {
    Bytes(Box<Received>),
    Refused(Error),
}

impl Answer {
    fn bytes(self) -> Result<Received> {
        match self {
            Answer::Bytes(r) => Ok(*r),
            Answer::Refused(e) => Err(e),
        }
    }
}

/// How the bytes of one download ended.
enum Landed {
    /// Verified and renamed into place.
    Done(TransferReport),
    /// The bytes did not match the sender's MD5; nothing changed here.
    Mismatch(Error),
}

/// What a received file may land over, as its receiver decided just
/// before it lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LandOver {
    /// Whatever the name holds then.
    Anything,
    /// Nothing: a name taken meanwhile is left alone (see
    /// [`Incoming::only_where_nothing_is`]).
    Nothing,
}

/// A look at what a received file's target holds now.
pub type TargetNow<'a> = &'a dyn Fn() -> Option<Glance>;

impl Received {
    /// Ask `before_commit` (given a look at the target), verify the MD5
    /// and land the file.
    fn commit(
        self,
        folder: &Folder,
        before_commit: &mut dyn FnMut(TargetNow) -> Result<LandOver>,
    ) -> Result<Landed> {
        let mut incoming = self.incoming;
        if before_commit(&|| incoming.target_now())? == LandOver::Nothing {
            incoming.only_where_nothing_is();
        }
        let meta = incoming.meta().clone();
        Ok(match incoming.finish(folder, &self.sender_md5)? {
            Finish::Done(md5, on_disk) => Landed::Done(TransferReport {
                landed: Some(on_disk),
                ..TransferReport::verified(&meta.name, meta.size, meta.mtime_ns, md5, self.start)
            }),
            Finish::Mismatch { ours } => {
                Landed::Mismatch(mismatch(&meta.name, &ours, &self.sender_md5))
            }
        })
    }
}

/// A read half that waits in slices, checking for cancellation and silence.
struct Patient {
    stream: TcpStream,
    cancel: Arc<AtomicBool>,
    silence: Duration,
}

impl Read for Patient {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let start = Instant::now();
        loop {
            if self.cancel.load(Ordering::SeqCst) {
                return Err(crate::error::cancelled_io());
            }
            match self.stream.read(buf) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if start.elapsed() > self.silence {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("the peer sent nothing for {} s", self.silence.as_secs()),
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

/// A TCP connection to the first of `addr`'s addresses that answers.
fn dial(addr: &str) -> Result<TcpStream> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| Error::new(format!("cannot resolve peer {addr}: {e}")))?
        .collect();
    let mut last = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    bail!(
        kind: PeerGone,
        "peer {addr} is unreachable: {}",
        last.map(|e| e.to_string())
            .unwrap_or_else(|| "no address".into())
    );
}

/// One connection to a peer.
pub struct Client {
    addr: String,
    /// The peer's id, as its key proved it in the handshake.
    remote: PeerId,
    cancel: Arc<AtomicBool>,
    r: SecureReader<Patient>,
    w: SecureWriter<TcpStream>,
    buf: Vec<u8>,
    /// Warnings the peer sent with its answers, until taken.
    notes: Vec<String>,
}

impl Client {
    /// Connect to `addr` and run the handshake: this side proves
    /// `creds`, the peer proves its key, and everything after is
    /// encrypted.
    pub fn connect(
        addr: &str,
        creds: &Credentials,
        cancel: Arc<AtomicBool>,
        silence: Duration,
    ) -> Result<Client> {
        let stream = dial(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_millis(100)))?;
        stream.set_write_timeout(Some(silence))?;
        let mut patient = Patient {
            stream: stream.try_clone()?,
            cancel: cancel.clone(),
            silence,
        };
        let vet = |id: &PeerId| creds.vet_server(addr, id);
        let session = handshake::initiate(&mut patient, &mut &stream, creds, &vet)
            .context(format_args!("peer {addr}"))?;
        let (keys, nonce) = (session.keys, session.next_nonce);
        Ok(Client {
            addr: addr.to_string(),
            remote: session.peer,
            cancel,
            r: SecureReader::new(patient, keys.clone(), nonce, 1 << 20),
            w: SecureWriter::new(stream, keys, nonce),
            buf: Vec::new(),
            notes: Vec::new(),
        })
    }

    /// The id the peer claims, if it is the one its key proved.
    fn proven(&self, claimed: String) -> Result<String> {
        let proven = self.remote.to_string();
        if claimed != proven {
            bail!(kind: Integrity, "peer {} claims id {claimed:?}, but its key proves id {proven}", self.addr);
        }
        Ok(proven)
    }

    /// The peer's id, proven by its key.
    pub fn remote_id(&self) -> &PeerId {
        &self.remote
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The warnings the peer sent with its answers so far (a few at most).
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    fn send(&mut self, req: &Request) -> Result<()> {
        write_msg(&mut self.w, req)?;
        self.w
            .flush()
            .context(format_args!("sending to {}", self.addr))
    }

    fn recv(&mut self) -> Result<Response> {
        match read_msg(&mut self.r, &mut self.buf) {
            Ok(Response::Error { message }) => Err(Error::new(message)),
            Ok(r) => Ok(r),
            Err(e) if e.is_cancelled() => Err(e),
            Err(e) => Err(e).context(format_args!("peer {}", self.addr)),
        }
    }

    /// The peer's id (as its key proved it), whether it takes uploads,
    /// its zone and, for a store, its room.
    pub fn info(&mut self) -> Result<PeerInfo> {
        self.send(&Request::Info)?;
        match self.recv()? {
            Response::Info {
                peer_id,
                allow_upload,
                zone,
                store,
            } => Ok(PeerInfo {
                peer_id: self.proven(peer_id)?,
                allow_upload,
                zone,
                store,
            }),
            other => bail!(kind: Integrity, "unexpected answer to info: {other:?}"),
        }
    }

    /// Keys for sealed UDP downloads from this peer.
    pub fn udp_ticket(&mut self) -> Result<crate::secure::udp::Ticket> {
        self.send(&Request::UdpTicket)?;
        match self.recv()? {
            Response::UdpTicket { ticket, secret } => {
                crate::secure::udp::Ticket::from_parts(ticket, &secret)
            }
            other => bail!(kind: Integrity, "unexpected answer to a UDP ticket request: {other:?}"),
        }
    }

    fn note(&mut self, message: String) {
        // A peer cannot make us keep an endless list of them.
        if self.notes.len() < 16 {
            self.notes.push(message);
        }
    }

    /// The next message of a long answer, counting its bytes against
    /// [`ANSWER_BYTES`]: a peer that streams without end is cut off.
    fn recv_part(&mut self, taken: &mut usize) -> Result<Response> {
        let msg = self.recv()?;
        *taken += self.buf.len();
        if *taken > ANSWER_BYTES {
            bail!(
                "peer {} sent an answer of more than {} MiB; refused",
                self.addr,
                ANSWER_BYTES >> 20
            );
        }
        Ok(msg)
    }

    /// The peer's listing, filtered.
    pub fn index(&mut self, filter: Filter) -> Result<Vec<Entry>> {
        self.send(&Request::Index { filter })?;
        let mut all = Vec::new();
        let mut taken = 0;
        loop {
            match self.recv_part(&mut taken)? {
                Response::Entries { entries } => all.extend(entries),
                Response::Note { message } => self.note(message),
                Response::End => return Ok(all),
                other => bail!(kind: Integrity, "unexpected answer to index: {other:?}"),
            }
        }
    }

    /// MD5s of one file or of all of them.
    pub fn hashes(&mut self, name: Option<&str>) -> Result<Vec<HashEntry>> {
        self.send(&Request::Hash {
            name: name.map(str::to_string),
        })?;
        let mut all = Vec::new();
        let mut taken = 0;
        loop {
            match self.recv_part(&mut taken)? {
                Response::Hashes { files } => all.extend(files),
                Response::Note { message } => self.note(message),
                Response::End => return Ok(all),
                other => bail!(kind: Integrity, "unexpected answer to hash: {other:?}"),
            }
        }
    }

    /// Download `name` into `folder` at the same relative path. When the
    /// bytes do not match the sender's MD5 (its cache may be stale), the
    /// file is asked for once more with the cache bypassed.
    pub fn download(
        &mut self,
        name: &str,
        folder: &Folder,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<TransferReport> {
        let mut fresh = false;
        loop {
            self.send(&Request::Download {
                batch: false,
                name: name.to_string(),
                fresh,
            })?;
            let received = self
                .receive_bytes(name, folder, false, progress, &mut DirCache::default())?
                .bytes()?;
            match received.commit(folder, &mut |_| Ok(LandOver::Anything))? {
                Landed::Done(mut report) => {
                    report.attempts = if fresh { 2 } else { 1 };
                    return Ok(report);
                }
                Landed::Mismatch(e) if fresh => return Err(e),
                Landed::Mismatch(_) => fresh = true,
            }
        }
    }

    /// Download the files `names` yields over this one connection with up
    /// to `window` requests in flight, so the peer never waits for the next
    /// request. A name is taken from `names` only when its request goes out,
    /// so several connections can share one queue. `done` hears of each file
    /// in order; a file that fails does not stop the others; one whose bytes
    /// do not match the sender's MD5 is asked for once more with the
    /// sender's cache bypassed. Files keep the sender's permission bits
    /// exactly (this is sync's pull). An error is returned only when the
    /// connection fails (names taken and not yet reported to `done` are
    /// then left for a later try).
    pub fn download_many(
        &mut self,
        names: &mut dyn Iterator<Item = String>,
        folder: &Folder,
        window: usize,
        before_commit: &mut dyn FnMut(&str, TargetNow) -> Result<LandOver>,
        done: &mut dyn FnMut(&str, Result<TransferReport>),
    ) -> Result<()> {
        // Verification runs a few files behind reception, so the next file's
        // bytes arrive while the last one's MD5 completes on another core.
        const BEHIND: usize = 2;
        let mut requested: VecDeque<(String, bool)> = VecDeque::new();
        let mut pending: VecDeque<(String, bool, Result<Received>)> = VecDeque::new();
        let mut retry: VecDeque<String> = VecDeque::new();
        // The folder the last file went to, for the next (see DirCache).
        let mut dirs = DirCache::default();
        let mut settle = |(name, fresh, r): (String, bool, Result<Received>),
                          retry: &mut VecDeque<String>| {
            match r.and_then(|r| r.commit(folder, &mut |now| before_commit(&name, now))) {
                Ok(Landed::Done(report)) => done(&name, Ok(report)),
                Ok(Landed::Mismatch(_)) if !fresh => retry.push_back(name),
                Ok(Landed::Mismatch(e)) => done(&name, Err(e)),
                Err(e) => done(&name, Err(e)),
            }
        };
        // Requests written but not yet flushed: they go out a few at a
        // time, not one send per file (each wakes the sender), while
        // enough are in flight.
        const FLUSH_EVERY: usize = 16;
        let mut unsent = 0;
        loop {
            while requested.len() < window.max(1) {
                let (name, fresh) = match retry.pop_front() {
                    Some(n) => (n, true),
                    None => match names.next() {
                        Some(n) => (n, false),
                        None => break,
                    },
                };
                let req = Request::Download {
                    name: name.clone(),
                    fresh,
                    batch: true,
                };
                write_msg(&mut self.w, &req)?;
                requested.push_back((name, fresh));
                unsent += 1;
            }
            if unsent > 0 && (unsent >= FLUSH_EVERY || requested.len() - unsent < FLUSH_EVERY) {
                self.w
                    .flush()
                    .context(format_args!("sending to {}", self.addr))?;
                unsent = 0;
            }
            let Some((name, fresh)) = requested.pop_front() else {
                // Nothing in flight: settle what waits (it may ask again).
                if pending.is_empty() {
                    break;
                }
                while let Some(p) = pending.pop_front() {
                    settle(p, &mut retry);
                }
                continue;
            };
            let received = self
                .receive_bytes(&name, folder, true, &mut |_, _| {}, &mut dirs)?
                .bytes();
            pending.push_back((name, fresh, received));
            while pending.len() > BEHIND {
                if let Some(p) = pending.pop_front() {
                    settle(p, &mut retry);
                }
            }
        }
        Ok(())
    }

    /// Read one download's [`Answer`]: its bytes into a temporary file and
    /// the sender's MD5, not yet verified, or this file's refusal. An error
    /// ends the connection.
    fn receive_bytes(
        &mut self,
        name: &str,
        folder: &Folder,
        exact_mode: bool,
        progress: &mut dyn FnMut(u64, u64),
        dirs: &mut DirCache,
    ) -> Result<Answer> {
        let start = Instant::now();
        let meta = match read_msg::<Response>(&mut self.r, &mut self.buf) {
            Ok(Response::File { meta }) => meta,
            Ok(Response::Error { message }) => return Ok(Answer::Refused(Error::new(message))),
            Ok(other) => bail!(kind: Integrity, "unexpected answer to download: {other:?}"),
            Err(e) if e.is_cancelled() => return Err(e),
            Err(e) => return Err(e).context(format_args!("peer {}", self.addr)),
        };
        if crate::names::clean_name(&meta.name).ok().as_deref() != Some(name) {
            bail!(
                "the peer answered with another file ({}) than the one asked for",
                meta.name
            );
        }
        let mut incoming = match Incoming::create_with(folder, &meta, dirs) {
            Ok(i) => i,
            Err(e) => {
                // Refused here (say, a folder is in the way): skip its bytes.
                let skipped =
                    std::io::copy(&mut (&mut self.r).take(meta.size), &mut std::io::sink())?;
                if skipped != meta.size {
                    bail!(kind: PeerGone, "the connection closed in the middle of {}", meta.name);
                }
                let _: Response = read_msg(&mut self.r, &mut self.buf)?;
                return Ok(Answer::Refused(e));
            }
        };
        if exact_mode {
            incoming.keep_exact_mode();
        }
        let size = meta.size;
        let ending = receive_file(&mut self.r, &mut self.buf, &mut incoming, &mut |n| {
            progress(n, size)
        })?;
        Ok(match ending {
            Ending::Md5(sender_md5) => Answer::Bytes(Box::new(Received {
                incoming,
                sender_md5,
                start,
            })),
            Ending::Refused(e) => Answer::Refused(e),
        })
    }

    /// Start a sync exchange (see [`Request::SyncHello`]): the peer's id,
    /// the id of its index and how far it holds ours.
    pub fn sync_hello(
        &mut self,
        peer_id: &str,
        listen_port: u16,
        index_id: &str,
        seen: Option<Mark>,
    ) -> Result<(String, String, Option<Mark>)> {
        self.send(&Request::SyncHello {
            peer_id: peer_id.into(),
            listen_port,
            index_id: index_id.into(),
            seen,
        })?;
        match self.recv()? {
            Response::SyncHello {
                peer_id,
                index_id,
                seen,
            } => Ok((self.proven(peer_id)?, index_id, seen)),
            other => bail!(kind: Integrity, "unexpected answer to a sync hello: {other:?}"),
        }
    }

    /// Send one batch of our sync entries; the last (`more` false) is
    /// flushed.
    pub fn send_delta(&mut self, entries: &[SyncEntry], more: bool) -> Result<()> {
        write_msg(
            &mut self.w,
            &Request::SyncDelta {
                entries: entries.to_vec(),
                more,
            },
        )?;
        if !more {
            self.w
                .flush()
                .context(format_args!("sending to {}", self.addr))?;
        }
        Ok(())
    }

    /// One batch of the peer's sync entries, and whether more follow.
    pub fn recv_delta(&mut self) -> Result<(Vec<SyncEntry>, bool)> {
        match self.recv()? {
            Response::SyncDelta { entries, more } => Ok((entries, more)),
            other => bail!(kind: Integrity, "unexpected answer in a sync exchange: {other:?}"),
        }
    }

    /// Upload the own file `name` to the peer.
    pub fn upload(
        &mut self,
        name: &str,
        folder: &Folder,
        force: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<TransferReport> {
        let start = Instant::now();
        let (file, meta): (_, FileMeta) = folder.open_file(name)?;
        let known = file
            .metadata()
            .ok()
            .and_then(|st| folder.cached(&meta.name, &st));
        self.send(&Request::Upload {
            meta: meta.clone(),
            force,
        })?;
        match self.recv()? {
            Response::Ready => {}
            other => bail!(kind: Integrity, "unexpected answer to upload: {other:?}"),
        }
        let size = meta.size;
        let md5 = send_file(
            &mut self.w,
            file,
            size,
            known,
            &self.cancel,
            &mut |n| progress(n, size),
            &|_| Ok(()),
        )
        .context(format_args!("uploading {name}"))?;
        self.w
            .flush()
            .context(format_args!("sending to {}", self.addr))?;
        match self.recv()? {
            Response::Ok { .. } => {}
            other => bail!(kind: Integrity, "unexpected answer to upload: {other:?}"),
        }
        let md5 = crate::proto::hex(&md5);
        Ok(TransferReport::verified(
            &meta.name,
            size,
            meta.mtime_ns,
            md5,
            start,
        ))
    }
}
