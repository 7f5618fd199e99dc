//! The two ends of a simulated transfer. [`SenderEnd`] plays the server:
//! a file in memory and one [`FileSender`] per transfer id, opened by a
//! request (so a receiver that restarts under a new id meets a new sender
//! while the old one still sends). Unlike the server it keeps a sender that
//! is over, for tests to inspect. [`ReceiverEnd`] plays the client: one
//! [`FileReceiver`] per attempt, the bytes it hands out and their MD5, and how
//! the attempt ended. Both speak only through the machines' own datagram
//! conversion, as the server and the driver do.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

use crate::transfer::failure::Failure;
use crate::transfer::receiver::{FileReceiver, ReceiverConfig, RecvEvent};
use crate::transfer::sender::{ChunkSource, FileInfo, FileSender, SenderConfig};
use crate::transfer::wire::{Packet, decode};

/// The shared file, which the first `rewrites` attempts see rewritten
/// (every byte xor 0x5a) once half of it was read.
pub(super) struct MemFile {
    pub(super) bytes: Vec<u8>,
    version: u32,
    rewrites: u32,
}

impl MemFile {
    pub(super) fn new(bytes: Vec<u8>, rewrites: u32) -> MemFile {
        MemFile {
            bytes,
            version: 0,
            rewrites,
        }
    }
}

/// The file as one sender session reads it.
struct SessionSource<'a> {
    file: &'a mut MemFile,
    attempt: u32,
    opened: u32,
}

impl ChunkSource for SessionSource<'_> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let f = &mut *self.file;
        let half = f.bytes.len() as u64 / 2;
        if self.attempt <= f.rewrites && offset >= half && f.version == self.opened {
            f.bytes.iter_mut().for_each(|b| *b ^= 0x5a);
            f.version += 1;
        }
        let at = offset as usize;
        let src = f
            .bytes
            .get(at..at + buf.len())
            .ok_or_else(|| format!("reading past the end at {offset}"))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn unchanged(&mut self) -> bool {
        self.file.version == self.opened
    }
}

struct Session {
    sender: FileSender,
    attempt: u32,
    opened: u32,
}

/// The serving side: senders by transfer id over one file.
pub struct SenderEnd {
    pub(super) file: MemFile,
    sessions: BTreeMap<u64, Session>,
    silence: Duration,
    /// It stops (sends, hears and times out nothing) after sending this many.
    dies_after: Option<u64>,
    sent: u64,
}

impl SenderEnd {
    pub(super) fn new(file: MemFile, silence: Duration, dies_after: Option<u64>) -> SenderEnd {
        SenderEnd {
            file,
            sessions: BTreeMap::new(),
            silence,
            dies_after,
            sent: 0,
        }
    }

    /// The sender of transfer `id`, once a request opened it.
    pub fn sender(&self, id: u64) -> Option<&FileSender> {
        self.sessions.get(&id).map(|s| &s.sender)
    }

    /// Every transfer id a request opened, in order.
    pub fn ids(&self) -> Vec<u64> {
        self.sessions.keys().copied().collect()
    }

    /// Datagrams sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    pub(super) fn alive(&self) -> bool {
        self.dies_after.is_none_or(|n| self.sent < n)
    }

    /// A datagram from the receiver: to its transfer's sender, or a request
    /// that opens one.
    pub(super) fn receive(&mut self, now: Instant, bytes: &[u8]) {
        if !self.alive() {
            return;
        }
        let Some((id, packet)) = decode(bytes) else {
            return;
        };
        if let Some(s) = self.sessions.get_mut(&id) {
            s.sender.handle_packet(now, &packet, bytes.len());
            return;
        }
        if let Packet::Request {
            attempt,
            payload,
            window,
            ..
        } = packet
        {
            let info = FileInfo {
                size: self.file.bytes.len() as u64,
                mtime_ns: 7,
                mode: 0o644,
                md5: None,
            };
            let cfg = SenderConfig {
                silence: self.silence,
                token: Some(id ^ 0x5eed),
                ..Default::default()
            };
            let mut sender = FileSender::new(now, id, info, payload, window, cfg);
            sender.handle_packet(now, &packet, bytes.len());
            let opened = self.file.version;
            let s = Session {
                sender,
                attempt,
                opened,
            };
            self.sessions.insert(id, s);
        }
    }

    /// Every datagram the senders have to send now, through `emit`.
    pub(super) fn transmit(
        &mut self,
        now: Instant,
        out: &mut Vec<u8>,
        emit: &mut dyn FnMut(&[u8]),
    ) {
        for s in self.sessions.values_mut() {
            let mut source = SessionSource {
                file: &mut self.file,
                attempt: s.attempt,
                opened: s.opened,
            };
            while self.dies_after.is_none_or(|n| self.sent < n)
                && let Some(op) = s.sender.poll_transmit(now, &mut source, out)
            {
                emit(out);
                s.sender.on_sent(op, now, out);
                self.sent += 1;
            }
        }
    }

    pub(super) fn handle_timeout(&mut self, now: Instant) {
        if self.alive() {
            self.sessions
                .values_mut()
                .for_each(|s| s.sender.handle_timeout(now));
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        if !self.alive() {
            return None;
        }
        self.sessions
            .values()
            .filter_map(|s| s.sender.poll_timeout())
            .min()
    }
}

/// How an attempt of the receiving side ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Every byte arrived and matched the sender's MD5.
    Verified,
    Mismatch,
    /// The sender said the file changed while it was sent.
    Changed,
    Failed(Failure),
}

/// The receiving side: this attempt's receiver and what it delivered.
pub struct ReceiverEnd {
    pub(super) receiver: FileReceiver,
    pub(super) attempt: u32,
    got: Vec<u8>,
    hasher: Md5,
    ending: Option<Ending>,
    retransmissions: u64,
    late_events: u32,
}

impl ReceiverEnd {
    pub(super) fn new(now: Instant, id: u64, cfg: ReceiverConfig) -> ReceiverEnd {
        ReceiverEnd {
            receiver: FileReceiver::new(now, id, 1, "f", cfg),
            attempt: 1,
            got: Vec::new(),
            hasher: Md5::new(),
            ending: None,
            retransmissions: 0,
            late_events: 0,
        }
    }

    /// A new attempt under transfer `id`: what came so far is dropped.
    pub(super) fn restart(&mut self, now: Instant, id: u64, cfg: ReceiverConfig) {
        self.attempt += 1;
        self.receiver = FileReceiver::new(now, id, self.attempt, "f", cfg);
        self.got.clear();
        self.hasher = Md5::new();
        self.ending = None;
        self.late_events = 0;
    }

    pub fn receiver(&self) -> &FileReceiver {
        &self.receiver
    }

    /// This attempt's number (1 first).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The bytes handed out in order in this attempt.
    pub fn got(&self) -> &[u8] {
        &self.got
    }

    pub fn ending(&self) -> Option<&Ending> {
        self.ending.as_ref()
    }

    /// Retransmissions the senders reported, over every attempt.
    pub fn retransmissions(&self) -> u64 {
        self.retransmissions
    }

    /// Milestones that came after the attempt had ended (a second
    /// `Finished`, say): none, if the receiver is right.
    pub fn late_events(&self) -> u32 {
        self.late_events
    }

    /// Take the bytes and milestones; `true` when the attempt just ended
    /// in a way the sender must hear of (`Done`).
    pub(super) fn settle(&mut self) -> bool {
        while let Some(chunk) = self.receiver.poll_deliver() {
            self.hasher.update(&chunk);
            self.got.extend_from_slice(&chunk);
        }
        let mut ended = false;
        while let Some(ev) = self.receiver.poll_event() {
            if self.ending.is_some() {
                self.late_events += 1;
                continue;
            }
            let ending = match ev {
                RecvEvent::Meta(_) => continue,
                RecvEvent::Finished {
                    md5,
                    retransmissions,
                } => {
                    self.retransmissions += retransmissions;
                    let ours: [u8; 16] = self.hasher.clone().finalize().into();
                    if ours == md5 {
                        Ending::Verified
                    } else {
                        Ending::Mismatch
                    }
                }
                RecvEvent::Changed => Ending::Changed,
                RecvEvent::Failed(f) => Ending::Failed(f),
            };
            ended = !matches!(ending, Ending::Failed(_));
            self.ending = Some(ending);
        }
        ended
    }
}
