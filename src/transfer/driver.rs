//! The client side of a UDP transfer: binds a [`FileReceiver`] to a
//! `UdpSocket`, a file and the clock.
//!
//! [`download`] opens one socket, runs a [`FileReceiver`] per attempt (a new
//! transfer id each time, the attempt number in its request), writes the
//! bytes to an [`Incoming`] (temporary file, MD5 as they land) and repeats
//! when the MD5 does not match or the sender says the file changed while it
//! was sent. Datagrams go in and out through the receiver's own
//! conversion ([`FileReceiver::handle_datagram`], [`FileReceiver::poll_transmit`]),
//! the same the simulation runs. It waits with [`sockopt::wait`] until a
//! datagram arrives or the receiver's next deadline; a [`Failure`] becomes
//! an [`Error`] of its kind here, at the edge. Every datagram is sealed
//! and opened with the keys of the [`Ticket`] the server gave over TCP
//! ([`crate::secure::udp`]); one that does not open, or opens twice, is
//! dropped and counted in the report.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::failure::Failure;
use super::receiver::{FileReceiver, MetaInfo, ReceiverConfig, RecvEvent};
use super::sockopt::{self, forbid_fragments, size_buffers};
use super::{MAX_PAYLOAD, MTU_PAYLOAD, TransferReport};
use crate::folder::{Finish, Folder, Incoming};
use crate::proto::{FileMeta, hex};
use crate::secure::udp::{OVERHEAD, Sealer, Side, Ticket};
use crate::{Error, Result, bail};

/// Payload for a 9000-byte jumbo frame.
pub const JUMBO_PAYLOAD: u32 = 9000 - 20 - 8 - (super::wire::DATA_OVERHEAD + OVERHEAD) as u32;

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

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// A socket connected to the peer at `addr`, with big buffers and no
/// fragmentation; and the receive buffer size it got.
fn open_socket(addr: &str) -> Result<(UdpSocket, u64)> {
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
    Ok((sock, buffer))
}

/// Download `name` from the peer at `addr` over UDP into `folder`, with
/// the `ticket` that peer gave.
pub fn download(
    addr: &str,
    ticket: Ticket,
    name: &str,
    folder: &Folder,
    opts: &UdpOptions,
    cancel: &Arc<AtomicBool>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<TransferReport> {
    let start = Instant::now();
    let (sock, buffer) = open_socket(addr)?;
    // The one sealer of this ticket on this side (the ticket is moved in,
    // so no caller makes a second, which would count its packet numbers
    // from 0 again).
    let mut sealer = Sealer::new(&ticket, Side::Client);
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
        let transfer = crate::secure::udp::random_u64()?;
        let rx = FileReceiver::new(Instant::now(), transfer, attempt, name, cfg);
        let mut one = Attempt {
            sock: &sock,
            sealer: &mut sealer,
            folder,
            name,
            rx,
            incoming: None,
            sbuf: Vec::with_capacity(65536),
            cbuf: Vec::with_capacity(65536),
            refused: false,
        };
        match one.run(cancel, progress)? {
            Ending::Verified {
                meta,
                md5,
                retransmissions: r,
            } => {
                retransmissions += r;
                return Ok(TransferReport {
                    attempts: attempt,
                    retransmissions,
                    forged: sealer.forged,
                    replayed: sealer.replayed,
                    ..TransferReport::verified(name, meta.size, meta.mtime_ns, md5, start)
                });
            }
            Ending::Mismatch { retransmissions: r } => {
                retransmissions += r;
                changed = false;
            }
            Ending::Changed => changed = true,
        }
    }
    let n = opts.attempts.max(1);
    if changed {
        bail!(kind: Changed,
            "{name} changed on the peer while it was sent, in each of {n} attempts over UDP; the local file is unchanged"
        )
    }
    bail!(kind: Integrity,
        "the MD5 of {name} did not match after {n} attempts over UDP; the local file is unchanged"
    )
}

/// How one attempt ended, when it did not fail.
enum Ending {
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

/// One attempt: a receiver under its own transfer id, bound to the socket
/// and the file it writes.
struct Attempt<'a> {
    sock: &'a UdpSocket,
    /// Seals what goes out, opens what comes in (once each).
    sealer: &'a mut Sealer,
    folder: &'a Folder,
    name: &'a str,
    rx: FileReceiver,
    incoming: Option<Incoming>,
    /// A datagram to send, and the same sealed.
    sbuf: Vec<u8>,
    cbuf: Vec<u8>,
    /// The socket said "port unreachable" at least once.
    refused: bool,
}

impl Attempt<'_> {
    fn run(
        &mut self,
        cancel: &Arc<AtomicBool>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Ending> {
        let mut rbuf = vec![0u8; 65536];
        loop {
            if cancel.load(Ordering::SeqCst) {
                return Err(Error::cancelled());
            }
            let now = Instant::now();
            self.receive(now, &mut rbuf);
            self.rx.handle_timeout(now);
            if let Some(end) = self.settle(progress)? {
                return Ok(end);
            }
            self.transmit(now);
            let deadline = self
                .rx
                .poll_timeout()
                .unwrap_or(now + Duration::from_millis(100));
            let timeout = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            sockopt::wait(self.sock, false, timeout);
        }
    }

    /// Hand every datagram waiting on the socket that opens to the
    /// receiver.
    fn receive(&mut self, now: Instant, rbuf: &mut [u8]) {
        loop {
            match self.sock.recv(rbuf) {
                Ok(n) => {
                    if let Ok(inner) = self.sealer.open(&mut rbuf[..n]) {
                        self.rx.handle_datagram(now, inner);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => self.refused = true,
                Err(_) => break,
            }
        }
    }

    /// Events first (the meta creates the file), then the bytes, until
    /// neither moves: `Finished` only comes once every byte was taken.
    fn settle(&mut self, progress: &mut dyn FnMut(u64, u64)) -> Result<Option<Ending>> {
        loop {
            let mut moved = false;
            while let Some(ev) = self.rx.poll_event() {
                moved = true;
                if let Some(end) = self.on_event(ev)? {
                    return Ok(Some(end));
                }
            }
            if let Some(inc) = self.incoming.as_mut() {
                while let Some(chunk) = self.rx.poll_deliver() {
                    moved = true;
                    let used = chunk.len();
                    inc.write_owned(chunk, used)?;
                    progress(inc.written(), inc.meta().size);
                }
            }
            if !moved {
                return Ok(None);
            }
        }
    }

    fn on_event(&mut self, ev: RecvEvent) -> Result<Option<Ending>> {
        match ev {
            RecvEvent::Meta(m) => {
                let meta = FileMeta {
                    name: self.name.to_string(),
                    size: m.size,
                    mtime_ns: m.mtime_ns,
                    mode: m.mode,
                };
                self.incoming = Some(Incoming::create(self.folder, &meta)?);
                Ok(None)
            }
            RecvEvent::Changed => {
                // The part file goes with `incoming`; a new attempt follows.
                self.send_done();
                Ok(Some(Ending::Changed))
            }
            RecvEvent::Finished {
                md5,
                retransmissions,
            } => {
                self.send_done();
                let Some(inc) = self.incoming.take() else {
                    bail!("the transfer ended before it began")
                };
                let meta = self
                    .rx
                    .meta()
                    .ok_or_else(|| Error::new("the transfer has no metadata"))?;
                Ok(Some(match inc.finish(self.folder, &hex(&md5))? {
                    // The session saves the MD5 cache once the command is over.
                    Finish::Done(md5, _) => Ending::Verified {
                        meta,
                        md5,
                        retransmissions,
                    },
                    Finish::Mismatch { .. } => Ending::Mismatch { retransmissions },
                }))
            }
            RecvEvent::Failed(Failure::NoAnswer(_)) if self.refused => {
                bail!(kind: PeerGone, "the peer is not listening for UDP (port unreachable)")
            }
            RecvEvent::Failed(f) => Err(f.into()),
        }
    }

    /// Send what the receiver has to send now.
    fn transmit(&mut self, now: Instant) {
        while let Some(op) = self.rx.poll_transmit(now, &mut self.sbuf) {
            // Sealed now, under a new packet number (a resend too).
            if !self.sealer.seal(&self.sbuf, &mut self.cbuf) {
                break;
            }
            match self.sock.send(&self.cbuf) {
                Ok(_) => self.rx.on_sent(&op, now),
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => self.rx.handle_too_big(now),
                Err(e) if would_block(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    self.refused = true;
                    self.rx.on_sent(&op, now);
                }
                Err(_) => self.rx.on_sent(&op, now),
            }
        }
    }

    /// Tell the sender the attempt is over (twice, in case one is lost).
    fn send_done(&mut self) {
        self.rx.encode_done(&mut self.sbuf);
        for _ in 0..2 {
            if self.sealer.seal(&self.sbuf, &mut self.cbuf) {
                let _ = self.sock.send(&self.cbuf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn fetch(addr: &str) -> Error {
        let d = tempfile::tempdir().unwrap();
        let folder = Folder::open(d.path()).unwrap();
        let opts = UdpOptions {
            payload: Some(1000),
            attempts: 1,
            silence: Duration::from_secs(1),
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let ticket = Ticket::random().unwrap();
        download(addr, ticket, "x", &folder, &opts, &cancel, &mut |_, _| {}).unwrap_err()
    }

    #[test]
    fn failures_reach_the_caller_as_error_kinds() {
        // Someone holds the port but never answers: a timeout.
        let mute = UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = fetch(&mute.local_addr().unwrap().to_string());
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        assert!(e.message().contains("did not answer"), "{e}");
        // Nobody holds it: the socket hears "port unreachable".
        let addr = mute.local_addr().unwrap().to_string();
        drop(mute);
        let e = fetch(&addr);
        assert_eq!(e.kind(), ErrorKind::PeerGone, "{e}");
        assert!(e.message().contains("not listening"), "{e}");
    }
}
