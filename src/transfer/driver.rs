//! Binds the UDP state machines to sockets, files and the clock.
//!
//! [`download`] is the client: one socket, a [`Receiver`] per attempt, bytes
//! written to an [`Incoming`] (temporary file, MD5 as they land), repeated
//! under a new transfer id when the MD5 does not match or the sender says
//! the file changed while it was sent; each request carries its attempt
//! number. [`serve`] is the server thread (in [`super::server`]). Both wait
//! with `poll(2)` on the socket until a datagram arrives or the machines'
//! next deadline.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::TransferReport;
use super::receiver::{MetaInfo, Receiver, ReceiverConfig, RecvEvent, RecvOp};
use super::wire::{Packet, decode, encode};
use super::{MAX_PAYLOAD, MTU_PAYLOAD};
use crate::folder::{Finish, Folder, Incoming};
use crate::proto::{FileMeta, hex};
use crate::{Error, Result, bail};

/// Payload for a 9000-byte jumbo frame.
pub const JUMBO_PAYLOAD: u32 = 9000 - 20 - 8 - super::wire::DATA_OVERHEAD as u32;
pub use super::server::{MAX_SESSIONS, serve};
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
    let mut changed = false;
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
            Attempt::Mismatch { retransmissions: r } => {
                retransmissions += r;
                changed = false;
            }
            Attempt::Changed => changed = true,
        }
    }
    let n = opts.attempts.max(1);
    if changed {
        bail!(
            "{name} changed on the peer while it was sent, in each of {n} attempts over UDP; the local file is unchanged"
        )
    }
    bail!(
        "the MD5 of {name} did not match after {n} attempts over UDP; the local file is unchanged"
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
    /// The file changed on the sender while it was sent.
    Changed,
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
                            token,
                        } => rx.handle_meta(
                            now,
                            MetaInfo {
                                size,
                                mtime_ns,
                                mode,
                                payload,
                                token,
                            },
                        ),
                        Packet::Data { seq, bytes } => rx.handle_data(now, seq, bytes),
                        Packet::Fin {
                            md5,
                            retransmissions,
                        } => rx.handle_fin(now, md5, retransmissions),
                        Packet::Error { message } => rx.handle_error(message),
                        Packet::Changed => rx.handle_changed(),
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
                    RecvEvent::Changed => {
                        // The part file goes with `incoming`; a new attempt follows.
                        send_done(sock, id, rx.token(), &mut sbuf);
                        return Ok(Attempt::Changed);
                    }
                    RecvEvent::Finished {
                        md5,
                        retransmissions,
                    } => {
                        send_done(sock, id, rx.token(), &mut sbuf);
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
                    token,
                    cum,
                    window,
                    ranges,
                } => (
                    Packet::Ack {
                        token: *token,
                        cum: *cum,
                        window: *window,
                        ranges: ranges.clone(),
                    },
                    0,
                ),
                RecvOp::Done => (Packet::Done { token: rx.token() }, 0),
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

/// Tell the sender the attempt is over (twice, in case one is lost).
fn send_done(sock: &UdpSocket, id: u64, token: u64, sbuf: &mut Vec<u8>) {
    encode(id, &Packet::Done { token }, sbuf, 0);
    let _ = sock.send(sbuf);
    let _ = sock.send(sbuf);
}
