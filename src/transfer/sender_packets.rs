//! The datagram face of a [`FileSender`]: a decoded [`Packet`] in, an encoded
//! datagram out (data read by a [`ChunkSource`] straight after the header,
//! no copy). The one conversion between the machine and the wire, shared by
//! the server, the simulation and the tests.

use std::time::Instant;

use super::{Failure, FileSender, SendOp, State};
use crate::transfer::wire::{self, MetaInfo, Packet};

/// Where the sender reads the file it sends: the open file in the server,
/// a buffer in the simulation.
pub trait ChunkSource {
    /// Fill `buf` with the file's bytes from `offset`; an error is the
    /// sentence the receiver is sent.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String>;
    /// Whether the file is still the version that was opened (asked before
    /// `Fin`, and when a read fails).
    fn unchanged(&mut self) -> bool;
}

/// The file a sender sends, as its meta describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    /// The file's MD5 when a cache vouches for it; otherwise the chunks are
    /// hashed as they are first sent.
    pub md5: Option<[u8; 16]>,
}

impl FileSender {
    /// A datagram of `len` bytes from the receiver's address, of this
    /// transfer (the requests count too: they are the budget of an
    /// unproven address).
    pub fn handle_packet(&mut self, now: Instant, packet: &Packet, len: usize) {
        self.handle_datagram(len);
        match packet {
            Packet::Request { window, .. } => self.handle_request(now, *window),
            Packet::Ack {
                token,
                cum,
                window,
                ranges,
            } => self.handle_ack(now, *token, *cum, *window, ranges),
            Packet::Done { token } => self.handle_done(now, *token),
            _ => {}
        }
    }

    /// Write the next datagram to send now into `out`, if there is one,
    /// and say which it is; nothing changes until [`FileSender::on_sent`]
    /// confirms it, except that a changed file (as `source` tells) turns
    /// the transfer to `Changed` and an unreadable one ends it with `Error`.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        source: &mut impl ChunkSource,
        out: &mut Vec<u8>,
    ) -> Option<SendOp> {
        loop {
            let op = self.next_transmit(now)?;
            let packet = match op {
                SendOp::Meta => Packet::Meta(MetaInfo {
                    size: self.file.size,
                    mtime_ns: self.file.mtime_ns,
                    mode: self.file.mode,
                    payload: self.payload,
                    token: self.token(),
                }),
                SendOp::Fin if !source.unchanged() => {
                    self.file_changed();
                    continue;
                }
                SendOp::Fin => Packet::Fin {
                    md5: self.md5.unwrap_or_default(),
                    retransmissions: self.retransmissions,
                },
                SendOp::Changed => Packet::Changed,
                SendOp::Data(seq) => match self.read_chunk(seq, source, out) {
                    Ok(()) => return Some(op),
                    Err(_) if !source.unchanged() => {
                        self.file_changed();
                        continue;
                    }
                    Err(message) => {
                        wire::encode(self.id, &Packet::Error { message: &message }, out, 0);
                        self.state = State::Failed(Failure::Unreadable(message));
                        return Some(SendOp::Error);
                    }
                },
                SendOp::Error => return None,
            };
            wire::encode(self.id, &packet, out, 0);
            return Some(op);
        }
    }

    /// A data datagram for chunk `seq` in `out`, read straight after its
    /// header.
    fn read_chunk(
        &self,
        seq: u64,
        source: &mut impl ChunkSource,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        wire::begin_data(self.id, seq, out);
        let start = out.len();
        let len = crate::transfer::chunk_len(self.file.size, self.payload, seq);
        out.resize(start + len, 0);
        source.read_at(seq * self.payload as u64, &mut out[start..])?;
        wire::seal_data(out);
        Ok(())
    }

    /// Confirm that `datagram`, written by [`FileSender::poll_transmit`] as
    /// `op`, went out.
    pub fn on_sent(&mut self, op: SendOp, now: Instant, datagram: &[u8]) {
        let payload = match op {
            SendOp::Data(_) => wire::data_payload(datagram),
            _ => &[],
        };
        self.record_sent(op, now, payload);
    }
}
