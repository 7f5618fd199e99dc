//! The server's UDP thread: one socket on the peer's port, [`FileSender`]
//! sessions keyed by (address, transfer id), each answering the address its
//! request came from (so a relay in between works).
//!
//! What unauthenticated datagrams can make it do is bounded. A session whose
//! address has not echoed its token yet is "unproven": its sender sends at
//! most three times the bytes that address sent it; there are at most
//! [`MAX_UNPROVEN`] such sessions ([`MAX_UNPROVEN_PER_IP`] per source IP),
//! and a new request evicts the oldest rather than being refused, so a
//! trickle of requests that never acknowledge cannot take the slots of
//! proven downloads ([`MAX_SESSIONS`] in all, [`MAX_PER_IP`] per IP). A
//! refusal (`Error`) is cut to three times the request's size too.
//!
//! A session remembers the identity of the file it opened ([`Version`]: size,
//! mtime, ctime, inode of the descriptor) and checks it, and the path's, before
//! it sends `Fin` and when a read fails: a file rewritten, appended to or
//! replaced meanwhile ends the attempt with `Changed`, never with a `Fin`
//! for bytes that are no version of the file. A retried request (attempt >
//! 1) is never answered from the MD5 cache: the sender hashes what it reads.
//!
//! Every datagram is sealed ([`crate::secure::udp`]) under a ticket that a
//! TCP connection asked for ([`super::tickets`]): one that names no ticket
//! we hold, or fails to open, or was seen before, is dropped unanswered and
//! counted; a session answers only datagrams of its own ticket, and its
//! log line says how many of its ticket's datagrams failed or were replays.
//! A plaintext request (an older peer) gets a clear error in its framing.
//!
//! It gets the narrow [`ServeContext`] it needs (the folder, the history,
//! an event sender, the silence timeout, the tickets), not the whole peer.

use std::collections::HashMap;
use std::fs::File;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::tickets::Tickets;
use crate::events::EventSender;
use crate::folder::Folder;
use crate::folder::Version;
use crate::history::History;
use crate::limits::SESSIONS_PER_TICKET;
use crate::secure::udp::{self as sealed, Sealer};
use crate::transfer::MAX_PAYLOAD;
use crate::transfer::sender::{AMPLIFICATION, ChunkSource, FileInfo, FileSender, SenderConfig};
use crate::transfer::sockopt::{size_buffers, wait};
use crate::transfer::wire::{Packet, decode, encode, encode_error_as, plaintext_request};
use crate::{Context, Result, bail};

/// What the UDP server needs from the peer around it.
pub struct ServeContext {
    pub folder: Arc<Folder>,
    pub history: Arc<History>,
    pub events: EventSender,
    /// A receiver silent this long loses its transfer.
    pub silence: Duration,
    /// The tickets TCP connections issued.
    pub tickets: Tickets,
}

/// Most UDP transfers a server runs at once.
pub const MAX_SESSIONS: usize = 64;
/// Most proven transfers to one IP address at once.
pub const MAX_PER_IP: usize = 16;
/// Most sessions whose address has not echoed its token yet; the oldest is
/// dropped for a new one.
pub const MAX_UNPROVEN: usize = 16;
/// Most unproven sessions from one IP address; the oldest is dropped.
pub const MAX_UNPROVEN_PER_IP: usize = 4;

/// The open file a session reads its chunks from.
struct FileSource {
    file: File,
    name: String,
    /// The file as it was opened, and where it lives.
    opened: Version,
    path: PathBuf,
}

impl ChunkSource for FileSource {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| format!("reading {} failed: {e}", self.name))
    }

    /// Whether the open file, and the file at its path, are still the one
    /// that was opened.
    fn unchanged(&mut self) -> bool {
        let fd = self.file.metadata().map(|m| Version::of(&m));
        let path = std::fs::metadata(&self.path).map(|m| Version::of(&m));
        matches!((fd, path), (Ok(a), Ok(b)) if a == self.opened && b == self.opened)
    }
}

struct Outgoing {
    sender: FileSender,
    source: FileSource,
    peer: SocketAddr,
    since: Instant,
    /// The ticket its datagrams are sealed under, and that ticket's
    /// counts of forged and replayed datagrams when the session began.
    ticket: u64,
    counted: (u64, u64),
}

type Key = (SocketAddr, u64);

struct Server {
    sock: UdpSocket,
    ctx: ServeContext,
    sessions: HashMap<Key, Outgoing>,
    /// An inner datagram, and the same sealed.
    sbuf: Vec<u8>,
    cbuf: Vec<u8>,
    /// When idle tickets were last looked for.
    expired: Instant,
}

/// The server's UDP thread: serve transfers until `stop` is set.
pub fn serve(sock: UdpSocket, ctx: ServeContext, stop: Arc<AtomicBool>) {
    size_buffers(&sock);
    if sock.set_nonblocking(true).is_err() {
        return;
    }
    let mut srv = Server {
        sock,
        ctx,
        sessions: HashMap::new(),
        sbuf: Vec::with_capacity(65536),
        cbuf: Vec::with_capacity(65536),
        expired: Instant::now(),
    };
    let mut rbuf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        while let Ok((n, from)) = srv.sock.recv_from(&mut rbuf) {
            srv.receive(now, &mut rbuf[..n], from);
        }
        let mut blocked = false;
        let mut busy = false;
        let mut out = Out {
            sock: &srv.sock,
            sbuf: &mut srv.sbuf,
            cbuf: &mut srv.cbuf,
        };
        for s in srv.sessions.values_mut() {
            let Some(sealer) = srv.ctx.tickets.get(s.ticket) else {
                continue;
            };
            match pump(&mut out, sealer, s, now) {
                Pump::Idle => {}
                Pump::Busy => busy = true,
                Pump::Blocked => {
                    blocked = true;
                    break;
                }
            }
        }
        srv.reap();
        if busy && !blocked {
            continue;
        }
        let now = Instant::now();
        let deadline = srv
            .sessions
            .values()
            .filter_map(|s| s.sender.poll_timeout())
            .min()
            .unwrap_or(now + Duration::from_millis(200));
        let timeout = deadline
            .saturating_duration_since(now)
            .min(Duration::from_millis(200));
        wait(&srv.sock, blocked, timeout);
    }
}

/// Where a session's datagrams go: the socket, and room to encode and
/// seal them.
struct Out<'a> {
    sock: &'a UdpSocket,
    sbuf: &'a mut Vec<u8>,
    cbuf: &'a mut Vec<u8>,
}

impl Out<'_> {
    /// Seal what is in `sbuf` and send it to `to`.
    fn send(&mut self, sealer: &mut Sealer, to: SocketAddr) -> std::io::Result<usize> {
        if !sealer.seal(self.sbuf, self.cbuf) {
            return Ok(0);
        }
        self.sock.send_to(self.cbuf, to)
    }
}

impl Server {
    /// Whether ticket `id` has a session running.
    fn ticket_busy(sessions: &HashMap<Key, Outgoing>) -> impl Fn(u64) -> bool + '_ {
        move |id| sessions.values().any(|s| s.ticket == id)
    }

    /// One datagram of `n` bytes from `from`.
    fn receive(&mut self, now: Instant, bytes: &mut [u8], from: SocketAddr) {
        let n = bytes.len();
        let Some(ticket) = sealed::ticket_of(bytes) else {
            self.answer_plaintext(bytes, from);
            return;
        };
        let opened = {
            let busy = Self::ticket_busy(&self.sessions);
            let sealer = self.ctx.tickets.find(ticket, now, &busy);
            sealer.and_then(|s| s.open(bytes).ok())
        };
        let Some(inner) = opened else {
            return;
        };
        self.ctx.tickets.touch(ticket, now);
        let Some((id, p)) = decode(inner) else {
            return;
        };
        if let Some(s) = self.sessions.get_mut(&(from, id)) {
            if s.ticket == ticket {
                s.sender.handle_packet(now, &p, n);
            }
            return;
        }
        if let Packet::Request {
            attempt,
            payload,
            window,
            name,
        } = p
        {
            // The file first: a request that opens nothing evicts nobody.
            let opened = open_session(&self.ctx, now, (from, id), name, attempt, payload, window)
                .and_then(|s| self.admit(from, ticket).map(|()| s));
            match opened {
                Ok(mut s) => {
                    s.ticket = ticket;
                    if let Some(sealer) = self.ctx.tickets.get(ticket) {
                        s.counted = (sealer.forged, sealer.replayed);
                    }
                    s.sender.handle_packet(now, &p, n);
                    self.sessions.insert((from, id), s);
                }
                Err(e) => self.refuse(from, (ticket, id), name, &e.to_string(), n),
            }
        }
    }

    /// A datagram that is not sealed: an older peer's request gets an
    /// error in its own framing, no bigger than the request (it proves
    /// nothing, so it must not be worth reflecting); anything else is
    /// dropped.
    fn answer_plaintext(&mut self, bytes: &[u8], from: SocketAddr) {
        let Some((version, id)) = plaintext_request(bytes) else {
            return;
        };
        let msg = format!(
            "the peer speaks UDP protocol version {}, not {version}; use the same dropbox-shell version on both sides",
            sealed::VERSION
        );
        let room = bytes
            .len()
            .saturating_sub(crate::transfer::wire::FRAME_OVERHEAD);
        let mut end = msg.len().min(room);
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        if end >= 16 {
            encode_error_as(version, id, &msg[..end], &mut self.sbuf);
            let _ = self.sock.send_to(&self.sbuf, from);
        }
    }

    /// Make room for a new session from `from`: the oldest unproven ones
    /// give way; proven ones never do (the request is refused instead).
    /// Proven sessions take at most `MAX_SESSIONS - MAX_UNPROVEN` slots
    /// when a request comes, so the unproven ones always have theirs.
    fn admit(&mut self, from: SocketAddr, ticket: u64) -> Result<()> {
        let ip = from.ip();
        let proven = |s: &Outgoing| s.sender.is_validated();
        if self.count(|s| proven(s) && s.peer.ip() == ip) >= MAX_PER_IP
            || self.count(proven) >= MAX_SESSIONS - MAX_UNPROVEN
            || self.count(|s| s.ticket == ticket) >= SESSIONS_PER_TICKET
        {
            bail!("the peer is busy (too many UDP transfers); try again shortly");
        }
        while self.count(|s| !proven(s) && s.peer.ip() == ip) >= MAX_UNPROVEN_PER_IP {
            self.evict_oldest_unproven(Some(ip));
        }
        while self.count(|s| !proven(s)) >= MAX_UNPROVEN {
            self.evict_oldest_unproven(None);
        }
        Ok(())
    }

    fn count(&self, f: impl Fn(&Outgoing) -> bool) -> usize {
        self.sessions.values().filter(|s| f(s)).count()
    }

    fn evict_oldest_unproven(&mut self, ip: Option<IpAddr>) {
        let oldest = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.sender.is_validated() && ip.is_none_or(|ip| s.peer.ip() == ip))
            .min_by_key(|(_, s)| s.since)
            .map(|(k, _)| *k);
        if let Some(s) = oldest.and_then(|k| self.sessions.remove(&k)) {
            self.log_end(
                &s,
                "error: dropped: the address never confirmed the transfer",
            );
        }
    }

    /// Answer a request of transfer `id` under `ticket` that opens no
    /// session, in at most three times the `n` bytes it took.
    fn refuse(
        &mut self,
        from: SocketAddr,
        (ticket, id): (u64, u64),
        name: &str,
        message: &str,
        n: usize,
    ) {
        let room = (AMPLIFICATION as usize * n)
            .saturating_sub(crate::transfer::wire::FRAME_OVERHEAD + sealed::OVERHEAD);
        let mut end = message.len().min(room);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        encode(
            id,
            &Packet::Error {
                message: &message[..end],
            },
            &mut self.sbuf,
            0,
        );
        if let Some(sealer) = self.ctx.tickets.get(ticket) {
            let mut out = Out {
                sock: &self.sock,
                sbuf: &mut self.sbuf,
                cbuf: &mut self.cbuf,
            };
            let _ = out.send(sealer, from);
        }
        // A refusal to an address that proved nothing is not told to the shell.
        let what = format!("download UDP {name}");
        let holder = self.ctx.tickets.holder(ticket);
        super::record_served(
            &self.ctx.history,
            None,
            (&from.to_string(), holder),
            &what,
            &format!("error: {message}"),
            0,
        );
    }

    /// Log and drop the sessions that are over.
    fn reap(&mut self) {
        let over: Vec<Key> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.sender.is_over() || !self.ctx.tickets.holds(s.ticket))
            .map(|(k, _)| *k)
            .collect();
        for k in over {
            if let Some(s) = self.sessions.remove(&k) {
                let outcome = match s.sender.failure() {
                    Some(f) => format!("error: {f}"),
                    None if !s.sender.is_over() => "error: its UDP ticket was dropped".into(),
                    None => "ok".into(),
                };
                self.log_end(&s, &outcome);
            }
        }
        let now = Instant::now();
        if now.duration_since(self.expired) >= Duration::from_secs(1) {
            self.expired = now;
            let busy = Self::ticket_busy(&self.sessions);
            self.ctx.tickets.collect(now, &busy);
            self.ctx.tickets.expire(now, &busy);
        }
    }

    fn log_end(&self, s: &Outgoing, outcome: &str) {
        let what = format!("download UDP {}", s.source.name);
        // What its ticket turned away while it ran.
        let (forged, replayed) = self.ctx.tickets.counts(s.ticket);
        let (forged, replayed) = (
            forged.saturating_sub(s.counted.0),
            replayed.saturating_sub(s.counted.1),
        );
        // Only a proven address's transfer is told to the shell: a flood of
        // forged requests stays in the (rate-limited) log.
        let told = outcome == "ok" || s.sender.is_validated();
        let events = told.then_some(&self.ctx.events);
        let outcome = if forged + replayed > 0 {
            format!("{outcome} ({forged} datagrams failed authentication, {replayed} replays)")
        } else {
            outcome.to_string()
        };
        let holder = self.ctx.tickets.holder(s.ticket);
        super::record_served(
            &self.ctx.history,
            events,
            (&s.peer.to_string(), holder),
            &what,
            &outcome,
            s.sender.size(),
        );
    }
}

enum Pump {
    Idle,
    Busy,
    Blocked,
}

/// Send what one session has to send now (at most 64 datagrams), sealed
/// under its ticket.
fn pump(out: &mut Out, sealer: &mut Sealer, s: &mut Outgoing, now: Instant) -> Pump {
    s.sender.handle_timeout(now);
    for _ in 0..64 {
        let Some(op) = s.sender.poll_transmit(now, &mut s.source, out.sbuf) else {
            return Pump::Idle;
        };
        match out.send(sealer, s.peer) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Pump::Blocked,
            _ => s.sender.on_sent(op, now, out.sbuf),
        }
    }
    Pump::Busy
}

/// A session for the request `name` of transfer `key`.
fn open_session(
    ctx: &ServeContext,
    now: Instant,
    (peer, id): Key,
    name: &str,
    attempt: u32,
    payload: u32,
    window: u32,
) -> Result<Outgoing> {
    let (file, meta) = ctx.folder.open_file(name)?;
    let st = file.metadata().context(&meta.name)?;
    // A second attempt follows a mismatch: the cache may be what was wrong.
    let known = if attempt > 1 {
        None
    } else {
        ctx.folder.cached(&meta.name, &st)
    };
    // The identity of what the meta describes: a change between the open
    // and this fstat shows at the check before `Fin`.
    let opened = Version {
        size: meta.size,
        mtime_ns: meta.mtime_ns,
        ..Version::of(&st)
    };
    let path = ctx.folder.root().join(&meta.name);
    let payload = payload.clamp(16, MAX_PAYLOAD);
    let cfg = SenderConfig {
        silence: ctx.silence,
        // Unguessable: echoing it proves the address.
        token: Some(sealed::random_u64()?),
        envelope: sealed::OVERHEAD,
        ..Default::default()
    };
    let info = FileInfo {
        size: meta.size,
        mtime_ns: meta.mtime_ns,
        mode: meta.mode,
        md5: known,
    };
    Ok(Outgoing {
        sender: FileSender::new(now, id, info, payload, window, cfg),
        source: FileSource {
            file,
            name: meta.name,
            opened,
            path,
        },
        peer,
        since: now,
        ticket: 0,
        counted: (0, 0),
    })
}
