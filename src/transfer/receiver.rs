//! The receiving side of a UDP transfer, as a state machine without I/O.
//!
//! It asks for the file (repeating the request, and stepping down through
//! smaller datagram sizes when a large one gets no answer: a path probe),
//! takes `Data` in any order, hands out bytes strictly in order through
//! [`FileReceiver::poll_deliver`] (out-of-order chunks wait in a bounded buffer
//! that the advertised window protects), acknowledges with a cumulative
//! number plus the ranges it holds, and reports the sender's MD5 once every
//! byte is delivered. Every acknowledgement echoes the token the meta
//! carried (the sender's proof that we receive at our address). A sender
//! that says the file changed under it ends the attempt with
//! [`RecvEvent::Changed`]: the driver starts a new one. Datagrams of other
//! transfers are dropped ([`FileReceiver::handle_datagram`] matches transfer
//! ids), and so are duplicates and out-of-range chunks. A silent sender ends the transfer
//! with a clear [`Failure`].
//!
//! It speaks in datagrams: [`FileReceiver::handle_datagram`] takes one as it
//! came off the socket (checked, decoded, matched to this transfer's id) and
//! [`FileReceiver::poll_transmit`] encodes the next one to send into the
//! caller's buffer, confirmed with [`FileReceiver::on_sent`]; the driver and the
//! simulation share this one conversion.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::failure::Failure;
pub use super::wire::MetaInfo;
use super::wire::{self, MAX_RANGES, Packet};

/// What the receiver wants to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvOp {
    Request {
        payload: u32,
        window: u32,
    },
    Ack {
        token: u64,
        cum: u64,
        window: u32,
        ranges: Vec<(u64, u64)>,
    },
    Done,
}

/// Milestones for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvEvent {
    Meta(MetaInfo),
    /// Every byte was delivered; the sender's MD5 to compare with.
    Finished {
        md5: [u8; 16],
        retransmissions: u64,
    },
    /// The sender saw the file change while it was sent; what was received
    /// is not one version of it.
    Changed,
    Failed(Failure),
}

#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Datagram payload sizes to try, largest first.
    pub payloads: Vec<u32>,
    /// Requests sent at one size before stepping down.
    pub tries_per_size: u32,
    pub request_interval: Duration,
    pub ack_delay: Duration,
    pub keepalive: Duration,
    pub silence: Duration,
    /// Most chunks buffered ahead of the next expected one.
    pub window: u32,
    /// Bytes the receiving socket can queue (0: no limit); the window is
    /// kept within it so a burst never overflows the socket.
    pub socket_buffer: u64,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            payloads: vec![super::MTU_PAYLOAD],
            tries_per_size: 2,
            request_interval: Duration::from_millis(250),
            ack_delay: Duration::from_millis(1),
            keepalive: Duration::from_millis(100),
            silence: Duration::from_secs(5),
            window: 1024,
            socket_buffer: 0,
        }
    }
}

#[derive(Debug, PartialEq)]
enum State {
    AwaitMeta,
    Receiving,
    Complete,
    Failed,
}

pub struct FileReceiver {
    cfg: ReceiverConfig,
    /// This attempt's transfer id, its number and the file asked for.
    id: u64,
    attempt: u32,
    name: String,
    state: State,
    meta: Option<MetaInfo>,
    chunks: u64,
    cum: u64,
    buffered: BTreeMap<u64, Vec<u8>>,
    ready: VecDeque<Vec<u8>>,
    events: VecDeque<RecvEvent>,
    size_index: usize,
    requests_sent: u32,
    next_request: Instant,
    ack_now: bool,
    in_order_unacked: u32,
    ack_deadline: Option<Instant>,
    last_ack: Instant,
    last_heard: Instant,
    sender_md5: Option<([u8; 16], u64)>,
    finished_reported: bool,
    done_pending: bool,
    window: u32,
}

impl FileReceiver {
    /// A receiver that asks for `name` under transfer `id`, as attempt
    /// number `attempt`.
    pub fn new(
        now: Instant,
        id: u64,
        attempt: u32,
        name: &str,
        cfg: ReceiverConfig,
    ) -> FileReceiver {
        let window = cfg.window.max(1);
        FileReceiver {
            id,
            attempt,
            name: name.to_string(),
            state: State::AwaitMeta,
            meta: None,
            chunks: 0,
            cum: 0,
            buffered: BTreeMap::new(),
            ready: VecDeque::new(),
            events: VecDeque::new(),
            size_index: 0,
            requests_sent: 0,
            next_request: now,
            ack_now: false,
            in_order_unacked: 0,
            ack_deadline: None,
            last_ack: now,
            last_heard: now,
            sender_md5: None,
            finished_reported: false,
            done_pending: false,
            window,
            cfg,
        }
    }

    pub fn meta(&self) -> Option<MetaInfo> {
        self.meta
    }

    /// The sender's token to echo (0 before the meta came).
    pub fn token(&self) -> u64 {
        self.meta.map_or(0, |m| m.token)
    }

    /// Bytes handed out in order so far, plus those waiting to be taken.
    pub fn received(&self) -> u64 {
        match self.meta {
            Some(m) => (self.cum * m.payload as u64).min(m.size),
            None => 0,
        }
    }

    /// This attempt's transfer id.
    pub fn id(&self) -> u64 {
        self.id
    }

    fn fail(&mut self, failure: Failure) {
        if self.state != State::Failed {
            self.state = State::Failed;
            self.events.push_back(RecvEvent::Failed(failure));
        }
    }

    /// A datagram as it came in: dropped if it is damaged, foreign or of
    /// another transfer (then `false`), handled otherwise.
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) -> bool {
        match wire::decode(bytes) {
            Some((id, packet)) if id == self.id => {
                self.handle_packet(now, &packet);
                true
            }
            _ => false,
        }
    }

    /// A datagram of this transfer from the sender.
    pub fn handle_packet(&mut self, now: Instant, packet: &Packet) {
        match *packet {
            Packet::Meta(meta) => self.handle_meta(now, meta),
            Packet::Data { seq, bytes } => self.handle_data(now, seq, bytes),
            Packet::Fin {
                md5,
                retransmissions,
            } => self.handle_fin(now, md5, retransmissions),
            Packet::Error { message } => self.handle_error(message),
            Packet::Changed => self.handle_changed(),
            _ => {}
        }
    }

    fn handle_meta(&mut self, now: Instant, meta: MetaInfo) {
        self.last_heard = now;
        if self.state != State::AwaitMeta {
            return;
        }
        // Any size offered so far will do: a late answer to a larger probe
        // proves the path carries it.
        let largest = self.cfg.payloads[..=self
            .size_index
            .min(self.cfg.payloads.len().saturating_sub(1))]
            .iter()
            .copied()
            .max()
            .unwrap_or(super::MTU_PAYLOAD);
        if meta.payload == 0 || meta.payload > largest.max(super::MTU_PAYLOAD) {
            self.fail(Failure::UnofferedSize(meta.payload));
            return;
        }
        self.meta = Some(meta);
        self.chunks = super::chunk_count(meta.size, meta.payload);
        self.state = State::Receiving;
        let per_chunk = meta.payload as u64 + 512;
        let mut fit = super::REORDER_BYTES / meta.payload as u64;
        if self.cfg.socket_buffer > 0 {
            fit = fit.min(self.cfg.socket_buffer / per_chunk);
        }
        self.window = self.window.min(fit.max(4) as u32);
        self.events.push_back(RecvEvent::Meta(meta));
        self.ack_now = true;
        self.check_complete();
    }

    fn handle_data(&mut self, now: Instant, seq: u64, bytes: &[u8]) {
        match self.state {
            State::AwaitMeta => {
                // Our request was answered but the meta got lost: ask again now.
                self.next_request = now;
                return;
            }
            State::Receiving | State::Complete => {}
            State::Failed => return,
        }
        let Some(meta) = self.meta else { return };
        if seq >= self.chunks || bytes.len() != super::chunk_len(meta.size, meta.payload, seq) {
            return;
        }
        self.last_heard = now;
        if seq < self.cum
            || self.buffered.contains_key(&seq)
            || seq >= self.cum + self.window as u64
        {
            self.ack_now = true;
            return;
        }
        if seq == self.cum {
            self.ready.push_back(bytes.to_vec());
            self.cum += 1;
            while let Some(b) = self.buffered.remove(&self.cum) {
                self.ready.push_back(b);
                self.cum += 1;
            }
            self.in_order_unacked += 1;
            if !self.buffered.is_empty() || self.in_order_unacked >= 2 || self.cum == self.chunks {
                self.ack_now = true;
            } else if self.ack_deadline.is_none() {
                self.ack_deadline = Some(now + self.cfg.ack_delay);
            }
        } else {
            self.buffered.insert(seq, bytes.to_vec());
            self.ack_now = true;
        }
        self.check_complete();
    }

    fn handle_fin(&mut self, now: Instant, md5: [u8; 16], retransmissions: u64) {
        if self.state == State::Failed || self.state == State::AwaitMeta {
            return;
        }
        self.last_heard = now;
        self.sender_md5 = Some((md5, retransmissions));
        self.ack_now = true;
        if self.state == State::Complete {
            self.done_pending = true;
        }
        self.check_complete();
    }

    /// The last request was too large to leave this host: try the next size.
    pub fn handle_too_big(&mut self, now: Instant) {
        if self.state == State::AwaitMeta && self.size_index + 1 < self.cfg.payloads.len() {
            self.size_index += 1;
            self.requests_sent = 0;
            self.next_request = now;
        }
    }

    fn handle_error(&mut self, message: &str) {
        self.fail(Failure::Refused(message.to_string()));
    }

    /// The sender says the file changed while it was sent.
    fn handle_changed(&mut self) {
        if self.state == State::Receiving
            || (self.state == State::Complete && !self.finished_reported)
        {
            self.state = State::Failed;
            self.ready.clear();
            self.events.push_back(RecvEvent::Changed);
        }
    }

    fn check_complete(&mut self) {
        if self.state == State::Receiving && self.cum == self.chunks && self.sender_md5.is_some() {
            self.state = State::Complete;
            self.done_pending = true;
        }
    }

    /// Time-driven work: a silent sender fails the transfer.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, State::Failed) {
            return;
        }
        if now.saturating_duration_since(self.last_heard) >= self.cfg.silence {
            self.fail(if self.state == State::AwaitMeta {
                Failure::NoAnswer(self.cfg.silence)
            } else {
                Failure::Silent(self.cfg.silence)
            });
        }
    }

    fn current_payload(&self) -> u32 {
        let i = self
            .size_index
            .min(self.cfg.payloads.len().saturating_sub(1));
        self.cfg
            .payloads
            .get(i)
            .copied()
            .unwrap_or(super::MTU_PAYLOAD)
    }

    fn ranges(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &seq in self.buffered.keys() {
            match out.last_mut() {
                Some((_, end)) if *end == seq => *end += 1,
                _ => {
                    if out.len() == MAX_RANGES {
                        break;
                    }
                    out.push((seq, seq + 1));
                }
            }
        }
        out
    }

    /// Encode the next datagram to send now into `out` and say which it
    /// is; confirm with [`FileReceiver::on_sent`]. A request is padded to the
    /// datagram size it asks for (the path probe).
    pub fn poll_transmit(&self, now: Instant, out: &mut Vec<u8>) -> Option<RecvOp> {
        let op = self.next_op(now)?;
        let (packet, pad) = match &op {
            RecvOp::Request { payload, window } => (
                Packet::Request {
                    attempt: self.attempt,
                    payload: *payload,
                    window: *window,
                    name: &self.name,
                },
                *payload as usize + wire::DATA_OVERHEAD,
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
            RecvOp::Done => (
                Packet::Done {
                    token: self.token(),
                },
                0,
            ),
        };
        wire::encode(self.id, &packet, out, pad);
        Some(op)
    }

    /// The `Done` that ends this attempt, to send (twice, in case one is
    /// lost) when the driver gives up on it.
    pub fn encode_done(&self, out: &mut Vec<u8>) {
        wire::encode(
            self.id,
            &Packet::Done {
                token: self.token(),
            },
            out,
            0,
        );
    }

    /// The next datagram due now.
    fn next_op(&self, now: Instant) -> Option<RecvOp> {
        match self.state {
            State::Failed => None,
            State::AwaitMeta => (now >= self.next_request).then(|| RecvOp::Request {
                payload: self.current_payload(),
                window: self.window,
            }),
            State::Complete if self.done_pending => Some(RecvOp::Done),
            State::Receiving | State::Complete => {
                let due = self.ack_now
                    || self.ack_deadline.is_some_and(|d| now >= d)
                    || now.saturating_duration_since(self.last_ack) >= self.cfg.keepalive;
                due.then(|| RecvOp::Ack {
                    token: self.token(),
                    cum: self.cum,
                    window: self.window,
                    ranges: self.ranges(),
                })
            }
        }
    }

    pub fn on_sent(&mut self, op: &RecvOp, now: Instant) {
        match op {
            RecvOp::Request { .. } => {
                self.requests_sent += 1;
                if self
                    .requests_sent
                    .is_multiple_of(self.cfg.tries_per_size.max(1))
                    && self.size_index + 1 < self.cfg.payloads.len()
                {
                    self.size_index += 1;
                }
                self.next_request = now + self.cfg.request_interval;
            }
            RecvOp::Ack { .. } => {
                self.ack_now = false;
                self.in_order_unacked = 0;
                self.ack_deadline = None;
                self.last_ack = now;
            }
            RecvOp::Done => self.done_pending = false,
        }
    }

    /// The next in-order chunk of the file, if any.
    pub fn poll_deliver(&mut self) -> Option<Vec<u8>> {
        self.ready.pop_front()
    }

    /// The next milestone, if any. `Finished` comes only after every chunk
    /// was taken with [`FileReceiver::poll_deliver`].
    pub fn poll_event(&mut self) -> Option<RecvEvent> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        if self.state == State::Complete && !self.finished_reported && self.ready.is_empty() {
            self.finished_reported = true;
            let (md5, retransmissions) = self.sender_md5?;
            return Some(RecvEvent::Finished {
                md5,
                retransmissions,
            });
        }
        None
    }

    /// When [`FileReceiver::handle_timeout`] or a delayed datagram is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Failed {
            return None;
        }
        let mut t = self.last_heard + self.cfg.silence;
        match self.state {
            State::AwaitMeta => t = t.min(self.next_request),
            _ => {
                t = t.min(self.last_ack + self.cfg.keepalive);
                if let Some(d) = self.ack_deadline {
                    t = t.min(d);
                }
            }
        }
        Some(t)
    }
}

#[cfg(test)]
#[path = "receiver_tests.rs"]
mod tests;
