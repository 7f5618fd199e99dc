//! Binds the UDP state machines to sockets, files and the clock.
//!
//! [`download`] is the client: one socket, a [`Receiver`] per attempt, bytes
//! written to an [`Incoming`] (temporary file, MD5 as they land), repeated
//! under a new transfer id when the MD5 does not match. [`serve`] is the
//! server thread: one socket on the peer's port, any number of [`Sender`]
//! sessions keyed by (address, transfer id), answering the address each
//! request came from (so a relay in between works). Both wait with `poll(2)`
//! on the socket until a datagram arrives or the machines' next deadline.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::receiver::{MetaInfo, Receiver, ReceiverConfig, RecvEvent, RecvOp};
use super::sender::{SendOp, Sender, SenderConfig};
use super::wire::{Packet, begin_data, decode, encode, seal_data};
use super::{MAX_PAYLOAD, MTU_PAYLOAD, chunk_len};
use crate::client::TransferReport;
use crate::folder::{Finish, Folder, Incoming};
use crate::history::{Direction, Record};
use crate::peer::Shared;
use crate::proto::{FileMeta, hex};
use crate::{Error, Result, bail};

/// Payload for a 9000-byte jumbo frame.
pub const JUMBO_PAYLOAD: u32 = 9000 - 20 - 8 - super::wire::DATA_OVERHEAD as u32;
/// Most UDP transfers a server runs at once.
pub const MAX_SESSIONS: usize = 64;
const SOCKET_BUFFER: usize = 8 << 20;

/// How a UDP download runs.
#[derive(Debug, Clone)]
pub struct UdpOptions {
    /// Fixed datagram payload; `None` probes 64 KiB, jumbo, then Ethernet sizes.
    pub payload: Option<u32>,
    pub attempts: u32,
    pub silence: Duration,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            payload: None,
            attempts: 3,
            silence: Duration::from_secs(5),
        }
    }
}

/// Ask for big socket buffers (beyond the sysctl limit when privileged);
/// returns the receive buffer size obtained.
pub(crate) fn size_buffers(sock: &UdpSocket) -> u64 {
    let fd = sock.as_raw_fd();
    let want = SOCKET_BUFFER as libc::c_int;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        // SAFETY: setsockopt on a valid fd with a pointer to a c_int that lives for the call.
        let ok = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                force,
                (&want as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        } == 0;
        if !ok {
            // SAFETY: as above.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    plain,
                    (&want as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
    socket2::SockRef::from(sock)
        .recv_buffer_size()
        .map(|n| n as u64 / 2)
        .unwrap_or(0)
}

/// Set "don't fragment" so that an oversized probe fails instead of being
/// split: the datagram size the path carries is then found by probing.
fn forbid_fragments(sock: &UdpSocket, v6: bool) {
    let fd = sock.as_raw_fd();
    let (level, opt, val) = if v6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    };
    // SAFETY: setsockopt on a valid fd with a pointer to a c_int that lives for the call.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&val as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Wait until the socket is readable (or writable, if asked) or `timeout` passes.
pub(crate) fn wait(sock: &UdpSocket, writable: bool, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN | if writable { libc::POLLOUT } else { 0 },
        revents: 0,
    };
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: poll on one valid pollfd that lives for the call.
    unsafe {
        libc::poll(&mut pfd, 1, ms);
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Download `name` from the peer at `addr` over UDP into `folder`.
pub fn download(
    addr: &str,
    name: &str,
    folder: &Folder,
    opts: &UdpOptions,
    cancel: &Arc<AtomicBool>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<TransferReport> {
    let start = Instant::now();
    let target: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| Error::new(format!("cannot resolve peer {addr}: {e}")))?
        .next()
        .ok_or_else(|| Error::new(format!("cannot resolve peer {addr}")))?;
    let local: SocketAddr = if target.is_ipv6() {
        "[::]:0".parse()
    } else {
        "0.0.0.0:0".parse()
    }
    .map_err(|_| Error::new("bad local address"))?;
    let sock =
        UdpSocket::bind(local).map_err(|e| Error::new(format!("cannot open a UDP socket: {e}")))?;
    let buffer = size_buffers(&sock);
    forbid_fragments(&sock, target.is_ipv6());
    sock.connect(target)
        .map_err(|e| Error::new(format!("peer {addr}: {e}")))?;
    sock.set_nonblocking(true)?;
    let payloads = match opts.payload {
        Some(p) => vec![p.clamp(16, MAX_PAYLOAD)],
        None => vec![MAX_PAYLOAD, JUMBO_PAYLOAD, MTU_PAYLOAD],
    };
    let mut retransmissions = 0;
    for attempt in 1..=opts.attempts.max(1) {
        let cfg = ReceiverConfig {
            payloads: payloads.clone(),
            silence: opts.silence,
            socket_buffer: buffer,
            ..Default::default()
        };
        match attempt_once(&sock, attempt, name, folder, cfg, cancel, progress)? {
            Attempt::Verified {
                meta,
                md5,
                retransmissions: r,
            } => {
                retransmissions += r;
                return Ok(TransferReport {
                    name: name.to_string(),
                    size: meta.size,
                    mtime_ns: meta.mtime_ns,
                    md5,
                    seconds: start.elapsed().as_secs_f64(),
                    attempts: attempt,
                    retransmissions,
                });
            }
            Attempt::Mismatch { retransmissions: r } => retransmissions += r,
        }
    }
    bail!(
        "the MD5 of {name} did not match after {} attempts over UDP; the local file is unchanged",
        opts.attempts.max(1)
    )
}

enum Attempt {
    Verified {
        meta: MetaInfo,
        md5: String,
        retransmissions: u64,
    },
    Mismatch {
        retransmissions: u64,
    },
}

fn attempt_once(
    sock: &UdpSocket,
    attempt: u32,
    name: &str,
    folder: &Folder,
    cfg: ReceiverConfig,
    cancel: &Arc<AtomicBool>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Attempt> {
    let id = fastrand::u64(..);
    let mut rx = Receiver::new(Instant::now(), cfg);
    let mut incoming: Option<Incoming> = None;
    let mut rbuf = vec![0u8; 65536];
    let mut sbuf = Vec::with_capacity(65536);
    let mut refused = false;
    loop {
        if cancel.load(Ordering::SeqCst) {
            return Err(Error::cancelled());
        }
        let now = Instant::now();
        loop {
            match sock.recv(&mut rbuf) {
                Ok(n) => {
                    let Some((pid, p)) = decode(&rbuf[..n]) else {
                        continue;
                    };
                    if pid != id {
                        continue;
                    }
                    match p {
                        Packet::Meta {
                            size,
                            mtime_ns,
                            mode,
                            payload,
                        } => rx.handle_meta(
                            now,
                            MetaInfo {
                                size,
                                mtime_ns,
                                mode,
                                payload,
                            },
                        ),
                        Packet::Data { seq, bytes } => rx.handle_data(now, seq, bytes),
                        Packet::Fin {
                            md5,
                            retransmissions,
                        } => rx.handle_fin(now, md5, retransmissions),
                        Packet::Error { message } => rx.handle_error(message),
                        _ => {}
                    }
                }
                Err(e) if would_block(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => refused = true,
                Err(_) => break,
            }
        }
        rx.handle_timeout(now);
        // Events first (the meta creates the file), then the bytes, until
        // neither moves: `Finished` only comes once every byte was taken.
        loop {
            let mut moved = false;
            while let Some(ev) = rx.poll_event() {
                moved = true;
                match ev {
                    RecvEvent::Meta(m) => {
                        let meta = FileMeta {
                            name: name.to_string(),
                            size: m.size,
                            mtime_ns: m.mtime_ns,
                            mode: m.mode,
                        };
                        incoming = Some(Incoming::create(folder, &meta)?);
                    }
                    RecvEvent::Finished {
                        md5,
                        retransmissions,
                    } => {
                        // Tell the sender we are done (twice, in case one is lost).
                        encode(id, &Packet::Done, &mut sbuf, 0);
                        let _ = sock.send(&sbuf);
                        let _ = sock.send(&sbuf);
                        let Some(inc) = incoming.take() else {
                            bail!("the transfer ended before it began")
                        };
                        let meta = rx
                            .meta()
                            .ok_or_else(|| Error::new("the transfer has no metadata"))?;
                        return Ok(match inc.finish(folder, &hex(&md5))? {
                            Finish::Done(md5) => {
                                folder.save_cache();
                                Attempt::Verified {
                                    meta,
                                    md5,
                                    retransmissions,
                                }
                            }
                            Finish::Mismatch { .. } => Attempt::Mismatch { retransmissions },
                        });
                    }
                    RecvEvent::Failed(msg) => {
                        if refused && msg.contains("did not answer") {
                            bail!("the peer is not listening for UDP (port unreachable)");
                        }
                        bail!("{msg}");
                    }
                }
            }
            if let Some(inc) = incoming.as_mut() {
                while let Some(chunk) = rx.poll_deliver() {
                    moved = true;
                    let used = chunk.len();
                    inc.write_owned(chunk, used)?;
                    progress(inc.written(), inc.meta().size);
                }
            }
            if !moved {
                break;
            }
        }
        while let Some(op) = rx.poll_transmit(now) {
            let (p, pad) = match &op {
                RecvOp::Request { payload, window } => (
                    Packet::Request {
                        attempt,
                        payload: *payload,
                        window: *window,
                        name,
                    },
                    *payload as usize + super::wire::DATA_OVERHEAD,
                ),
                RecvOp::Ack {
                    cum,
                    window,
                    ranges,
                } => (
                    Packet::Ack {
                        cum: *cum,
                        window: *window,
                        ranges: ranges.clone(),
                    },
                    0,
                ),
                RecvOp::Done => (Packet::Done, 0),
            };
            encode(id, &p, &mut sbuf, pad);
            match sock.send(&sbuf) {
                Ok(_) => rx.on_sent(&op, now),
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => rx.handle_too_big(now),
                Err(e) if would_block(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    refused = true;
                    rx.on_sent(&op, now);
                }
                Err(_) => rx.on_sent(&op, now),
            }
        }
        let deadline = rx
            .poll_timeout()
            .unwrap_or(now + Duration::from_millis(100));
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        wait(sock, false, timeout);
    }
}

struct Session {
    sender: Sender,
    file: File,
    meta: FileMeta,
    peer: SocketAddr,
    id: u64,
}

/// The server's UDP thread: serve transfers until `stop` is set.
pub fn serve(sock: UdpSocket, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    size_buffers(&sock);
    if sock.set_nonblocking(true).is_err() {
        return;
    }
    let silence = shared.config.udp_silence;
    let mut sessions: HashMap<(SocketAddr, u64), Session> = HashMap::new();
    let mut rbuf = vec![0u8; 65536];
    let mut sbuf: Vec<u8> = Vec::with_capacity(65536);
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        loop {
            match sock.recv_from(&mut rbuf) {
                Ok((n, from)) => {
                    let Some((id, p)) = decode(&rbuf[..n]) else {
                        continue;
                    };
                    match p {
                        Packet::Request {
                            payload,
                            window,
                            name,
                            ..
                        } => match sessions.get_mut(&(from, id)) {
                            Some(s) => s.sender.handle_request(now, window),
                            None => match open_session(
                                &shared, &sessions, now, from, id, name, payload, window, silence,
                            ) {
                                Ok(s) => {
                                    sessions.insert((from, id), s);
                                }
                                Err(e) => {
                                    let message = e.to_string();
                                    encode(id, &Packet::Error { message: &message }, &mut sbuf, 0);
                                    let _ = sock.send_to(&sbuf, from);
                                    shared.history.log(&Record::now(
                                        Direction::Served,
                                        &from.to_string(),
                                        &format!("download UDP {name}"),
                                        &format!("error: {message}"),
                                        0,
                                    ));
                                }
                            },
                        },
                        Packet::Ack {
                            cum,
                            window,
                            ranges,
                        } => {
                            if let Some(s) = sessions.get_mut(&(from, id)) {
                                s.sender.handle_ack(now, cum, window, &ranges);
                            }
                        }
                        Packet::Done => {
                            if let Some(s) = sessions.get_mut(&(from, id)) {
                                s.sender.handle_done(now);
                            }
                        }
                        _ => {}
                    }
                }
                Err(e) if would_block(&e) => break,
                Err(_) => break,
            }
        }
        let mut blocked = false;
        let mut busy = false;
        'sessions: for s in sessions.values_mut() {
            s.sender.handle_timeout(now);
            for _ in 0..64 {
                let Some(op) = s.sender.poll_transmit(now) else {
                    continue 'sessions;
                };
                let payload_range = match op {
                    SendOp::Meta => {
                        let m = &s.meta;
                        let p = Packet::Meta {
                            size: m.size,
                            mtime_ns: m.mtime_ns,
                            mode: m.mode,
                            payload: s.sender.payload(),
                        };
                        encode(s.id, &p, &mut sbuf, 0);
                        0..0
                    }
                    SendOp::Fin => {
                        let p = Packet::Fin {
                            md5: s.sender.md5().unwrap_or_default(),
                            retransmissions: s.sender.retransmissions(),
                        };
                        encode(s.id, &p, &mut sbuf, 0);
                        0..0
                    }
                    SendOp::Data(seq) => {
                        begin_data(s.id, seq, &mut sbuf);
                        let start = sbuf.len();
                        let len = chunk_len(s.sender.size(), s.sender.payload(), seq);
                        sbuf.resize(start + len, 0);
                        if let Err(e) = s
                            .file
                            .read_exact_at(&mut sbuf[start..], seq * s.sender.payload() as u64)
                        {
                            let message = format!("reading {} failed: {e}", s.meta.name);
                            encode(s.id, &Packet::Error { message: &message }, &mut sbuf, 0);
                            let _ = sock.send_to(&sbuf, s.peer);
                            s.sender.handle_done(now);
                            continue 'sessions;
                        }
                        seal_data(&mut sbuf);
                        start..start + len
                    }
                };
                match sock.send_to(&sbuf, s.peer) {
                    Ok(_) => s.sender.on_sent(op, now, &sbuf[payload_range]),
                    Err(e) if would_block(&e) => {
                        blocked = true;
                        break 'sessions;
                    }
                    Err(_) => s.sender.on_sent(op, now, &sbuf[payload_range]),
                }
            }
            busy = true;
        }
        sessions.retain(|_, s| {
            let over = s.sender.is_done() || s.sender.failure().is_some();
            if over {
                let outcome = match s.sender.failure() {
                    Some(f) => format!("error: {f}"),
                    None => "ok".into(),
                };
                let what = format!("download UDP {}", s.meta.name);
                shared.history.log(&Record::now(
                    Direction::Served,
                    &s.peer.to_string(),
                    &what,
                    &outcome,
                    s.sender.size(),
                ));
                shared.event(format!("served {what} to {}: {outcome}", s.peer));
            }
            !over
        });
        if busy && !blocked {
            continue;
        }
        let now = Instant::now();
        let deadline = sessions
            .values()
            .filter_map(|s| s.sender.poll_timeout())
            .min()
            .unwrap_or(now + Duration::from_millis(200));
        let timeout = deadline
            .saturating_duration_since(now)
            .min(Duration::from_millis(200));
        wait(&sock, blocked, timeout);
    }
}

#[allow(clippy::too_many_arguments)]
fn open_session(
    shared: &Shared,
    sessions: &HashMap<(SocketAddr, u64), Session>,
    now: Instant,
    peer: SocketAddr,
    id: u64,
    name: &str,
    payload: u32,
    window: u32,
    silence: Duration,
) -> Result<Session> {
    if sessions.len() >= MAX_SESSIONS {
        bail!("the peer is busy (too many UDP transfers); try again shortly");
    }
    let (file, meta) = shared.folder.open_file(name)?;
    let known = file
        .metadata()
        .ok()
        .and_then(|st| shared.folder.cached(&meta.name, &st));
    let payload = payload.clamp(16, MAX_PAYLOAD);
    let cfg = SenderConfig {
        silence,
        ..Default::default()
    };
    Ok(Session {
        sender: Sender::new(now, meta.size, payload, window, known, cfg),
        file,
        meta,
        peer,
        id,
    })
}
