//! The sending side of a UDP transfer, as a state machine without I/O.
//!
//! It speaks in datagrams: [`FileSender::handle_packet`] takes one the
//! receiver sent (decoded by the caller, who routes it by address and
//! transfer id), [`FileSender::poll_transmit`] writes the next one to send into
//! the caller's buffer (a data chunk is read there straight from the file
//! through [`ChunkSource`], after the header, and hashed for the MD5 when
//! it is first sent), and the caller confirms it went out with
//! [`FileSender::on_sent`] (a socket that would block just asks again later).
//! [`FileSender::handle_timeout`] and [`FileSender::poll_timeout`] drive time; the
//! clock is always an argument. The lifecycle is a [`State`]; a failed
//! transfer says why with a [`Failure`].
//!
//! Reliability: every chunk in flight is remembered with its transmission
//! number; a chunk is lost when one sent three transmissions later is
//! acknowledged, or when it is older than the retransmission timeout.
//! Flow control: never a chunk beyond the receiver's window. Congestion
//! control: once per round trip the loss fraction of that round is compared
//! with the long-run loss rate; a jump (a burst that overflowed a buffer)
//! shrinks the window, steady random loss does not.
//!
//! Address validation (as QUIC does it): the sender's random token goes out
//! in the meta; until an `Ack` or `Done` echoes it, the receiver's address
//! is unproven and the sender sends at most [`AMPLIFICATION`] times the
//! bytes it received from there, so a forged source address cannot turn a
//! small request into a flood toward someone else. Datagrams that carry a
//! wrong token are ignored. A file that changed while it was sent (the
//! source says so before `Fin`, or when a read fails) ends the transfer
//! with `Changed` instead of `Fin`: the receiver then starts anew.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

use super::failure::Failure;
use super::wire;

/// Which datagram [`FileSender::poll_transmit`] wrote; hand it back to
/// [`FileSender::on_sent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOp {
    Meta,
    Data(u64),
    Fin,
    /// The file changed while it was sent (see [`FileSender::file_changed`]).
    Changed,
    /// Reading the file failed: the transfer is over.
    Error,
}

/// An unproven address gets at most this many times the bytes it sent.
pub const AMPLIFICATION: u64 = 3;

/// Tuning of a sender.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    pub initial_window: f64,
    pub max_window: f64,
    pub min_rto: Duration,
    pub max_rto: Duration,
    /// Give up when the receiver says nothing for this long.
    pub silence: Duration,
    /// The address token sent in the meta; `None` trusts the address from
    /// the start (simulations and tests of other concerns).
    pub token: Option<u64>,
    /// Bytes each datagram takes on the wire beyond what the sender
    /// encodes (the sealed envelope), counted against an unproven
    /// address's budget.
    pub envelope: usize,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            initial_window: 8.0,
            max_window: 4096.0,
            min_rto: Duration::from_millis(10),
            max_rto: Duration::from_secs(1),
            silence: Duration::from_secs(5),
            token: None,
            envelope: 0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Flight {
    tx: u64,
    sent_at: Instant,
    retransmitted: bool,
}

/// Where a sender is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// The meta is due: first, or again because the receiver asked again.
    Meta,
    /// Data flows; `Fin` goes out (and is repeated) once every chunk is
    /// acknowledged and hashed.
    Sending {
        fin_sent_at: Option<Instant>,
    },
    /// The file changed: `Changed` is repeated until the receiver answers.
    Changed {
        sent_at: Option<Instant>,
    },
    /// The receiver answered `Done`.
    Done,
    Failed(Failure),
}

const MIN_WINDOW: f64 = 4.0;
const REORDER_THRESHOLD: u64 = 3;

pub struct FileSender {
    cfg: SenderConfig,
    id: u64,
    file: FileInfo,
    state: State,
    payload: u32,
    chunks: u64,
    cum: u64,
    next_new: u64,
    by_seq: BTreeMap<u64, Flight>,
    by_tx: BTreeMap<u64, u64>,
    lost: BTreeSet<u64>,
    tx_counter: u64,
    cwnd: f64,
    rwnd: u64,
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    md5: Option<[u8; 16]>,
    hasher: Option<Md5>,
    last_heard: Instant,
    retransmissions: u64,
    slow_start: bool,
    epoch_end_tx: u64,
    epoch_sent: u64,
    epoch_lost: u64,
    loss_ewma: f64,
    validated: bool,
    received_bytes: u64,
    sent_bytes: u64,
}

impl FileSender {
    /// A sender of transfer `id` for `file` in chunks of `payload`, for a
    /// receiver that buffers `window` chunks ahead.
    pub fn new(
        now: Instant,
        id: u64,
        file: FileInfo,
        payload: u32,
        window: u32,
        cfg: SenderConfig,
    ) -> FileSender {
        let chunks = super::chunk_count(file.size, payload.max(1));
        let (md5, hasher) = match file.md5 {
            Some(m) => (Some(m), None),
            None if chunks == 0 => (Some(Md5::new().finalize().into()), None),
            None => (None, Some(Md5::new())),
        };
        FileSender {
            id,
            file,
            state: State::Meta,
            payload: payload.max(1),
            chunks,
            cum: 0,
            next_new: 0,
            by_seq: BTreeMap::new(),
            by_tx: BTreeMap::new(),
            lost: BTreeSet::new(),
            tx_counter: 0,
            cwnd: cfg.initial_window,
            rwnd: window.max(1) as u64,
            srtt: None,
            rttvar: Duration::ZERO,
            rto: Duration::from_millis(200),
            md5,
            hasher,
            last_heard: now,
            retransmissions: 0,
            slow_start: true,
            epoch_end_tx: 0,
            epoch_sent: 0,
            epoch_lost: 0,
            loss_ewma: 0.0,
            validated: cfg.token.is_none(),
            received_bytes: 0,
            sent_bytes: 0,
            cfg,
        }
    }

    /// The token the meta carries (0 when the address is trusted anyway).
    pub fn token(&self) -> u64 {
        self.cfg.token.unwrap_or(0)
    }

    /// Whether the receiver has echoed the token (or none was needed).
    pub fn is_validated(&self) -> bool {
        self.validated
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    fn handle_datagram(&mut self, bytes: usize) {
        self.received_bytes = self.received_bytes.saturating_add(bytes as u64);
    }

    /// Whether a datagram carrying `token` may be trusted; the first one
    /// that echoes ours proves the address.
    fn check_token(&mut self, token: u64) -> bool {
        match self.cfg.token {
            None => true,
            Some(t) if t == token => {
                self.validated = true;
                true
            }
            Some(_) => false,
        }
    }

    /// The file no longer is what was opened: stop sending data and tell
    /// the receiver with `Changed` until it answers `Done`.
    pub fn file_changed(&mut self) {
        if self.is_over() {
            return;
        }
        self.state = State::Changed { sent_at: None };
        self.by_seq.clear();
        self.by_tx.clear();
        self.lost.clear();
    }

    /// Whether the transfer ended (well or not); then [`FileSender::failure`]
    /// says why, if it failed.
    pub fn is_over(&self) -> bool {
        matches!(self.state, State::Done | State::Failed(_))
    }

    /// What an unproven address may still be sent.
    fn budget(&self) -> u64 {
        if self.validated {
            return u64::MAX;
        }
        (AMPLIFICATION * self.received_bytes).saturating_sub(self.sent_bytes)
    }

    /// Bytes `op` puts on the wire.
    fn cost(&self, op: SendOp) -> u64 {
        let encoded = match op {
            SendOp::Data(seq) => {
                super::chunk_len(self.file.size, self.payload, seq) + wire::DATA_OVERHEAD
            }
            _ => wire::CONTROL_MAX,
        };
        (encoded + self.cfg.envelope) as u64
    }

    pub fn payload(&self) -> u32 {
        self.payload
    }

    pub fn size(&self) -> u64 {
        self.file.size
    }

    /// Why the transfer failed, once it did.
    pub fn failure(&self) -> Option<&Failure> {
        match &self.state {
            State::Failed(f) => Some(f),
            _ => None,
        }
    }

    pub fn retransmissions(&self) -> u64 {
        self.retransmissions
    }

    pub fn md5(&self) -> Option<[u8; 16]> {
        self.md5
    }

    pub fn window(&self) -> f64 {
        self.cwnd
    }

    /// The receiver asked again (its request or our meta was lost).
    fn handle_request(&mut self, now: Instant, window: u32) {
        self.last_heard = now;
        self.rwnd = window.max(1) as u64;
        // Only a receiver still waiting for the meta asks again.
        if matches!(self.state, State::Sending { .. }) {
            self.state = State::Meta;
        }
    }

    /// The receiver finished (verified or not): the transfer is over.
    fn handle_done(&mut self, now: Instant, token: u64) {
        if !self.check_token(token) {
            return;
        }
        self.last_heard = now;
        self.state = match self.state {
            State::Failed(_) => return,
            State::Changed { .. } => State::Failed(Failure::Changed),
            _ => State::Done,
        };
    }

    /// An acknowledgement echoing `token`: everything below `cum` and the
    /// `[a, b)` ranges.
    fn handle_ack(
        &mut self,
        now: Instant,
        token: u64,
        cum: u64,
        window: u32,
        ranges: &[(u64, u64)],
    ) {
        if self.is_over() || !self.check_token(token) {
            return;
        }
        self.last_heard = now;
        match self.state {
            State::Changed { .. } => return,
            State::Meta => self.state = State::Sending { fin_sent_at: None },
            _ => {}
        }
        self.rwnd = window.max(1) as u64;
        let cum = cum.min(self.chunks);
        let mut largest_tx: Option<u64> = None;
        let mut rtt_sample: Option<(u64, Duration)> = None;
        let mut acked = |this: &mut Self, seq: u64| {
            if let Some(f) = this.by_seq.remove(&seq) {
                this.by_tx.remove(&f.tx);
                largest_tx = Some(largest_tx.map_or(f.tx, |t: u64| t.max(f.tx)));
                if !f.retransmitted && rtt_sample.is_none_or(|(t, _)| f.tx > t) {
                    rtt_sample = Some((f.tx, now.saturating_duration_since(f.sent_at)));
                }
            }
            this.lost.remove(&seq);
        };
        if cum > self.cum {
            let below: Vec<u64> = self.by_seq.range(..cum).map(|(s, _)| *s).collect();
            for seq in below {
                acked(self, seq);
            }
            self.lost = self.lost.split_off(&cum);
            self.cum = cum;
        }
        for &(a, b) in ranges {
            let (a, b) = (a.max(self.cum), b.min(self.chunks));
            if a >= b {
                continue;
            }
            let inside: Vec<u64> = self.by_seq.range(a..b).map(|(s, _)| *s).collect();
            for seq in inside {
                acked(self, seq);
            }
            let lost_inside: Vec<u64> = self.lost.range(a..b).copied().collect();
            for seq in lost_inside {
                self.lost.remove(&seq);
            }
        }
        if let Some((_, rtt)) = rtt_sample {
            self.update_rtt(rtt);
        }
        if let Some(largest) = largest_tx {
            self.detect_losses(largest);
        }
    }

    /// Anything sent [`REORDER_THRESHOLD`] transmissions before the
    /// largest acknowledged one is lost; a round trip may have ended.
    fn detect_losses(&mut self, largest: u64) {
        while let Some((&tx, &seq)) = self.by_tx.first_key_value() {
            if tx + REORDER_THRESHOLD > largest {
                break;
            }
            self.by_tx.remove(&tx);
            self.by_seq.remove(&seq);
            self.lost.insert(seq);
            self.epoch_lost += 1;
        }
        if largest >= self.epoch_end_tx {
            self.end_epoch();
        }
    }

    fn update_rtt(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(rtt);
        self.rto = (srtt + self.rttvar * 4).clamp(self.cfg.min_rto, self.cfg.max_rto);
    }

    fn end_epoch(&mut self) {
        let frac = self.epoch_lost as f64 / self.epoch_sent.max(1) as f64;
        if frac > 2.0 * self.loss_ewma + 0.02 {
            self.slow_start = false;
            self.cwnd = (self.cwnd * 0.7).max(MIN_WINDOW);
        } else if self.slow_start {
            self.cwnd = (self.cwnd * 2.0).min(self.cfg.max_window);
        } else {
            self.cwnd = (self.cwnd + (self.cwnd / 8.0).max(1.0)).min(self.cfg.max_window);
        }
        self.loss_ewma = 0.75 * self.loss_ewma + 0.25 * frac;
        self.epoch_end_tx = self.tx_counter;
        self.epoch_sent = 0;
        self.epoch_lost = 0;
    }

    /// Time-driven work: chunks older than the retransmission timeout are
    /// lost; a silent receiver fails the transfer.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_over() {
            return;
        }
        if now.saturating_duration_since(self.last_heard) >= self.cfg.silence {
            self.state = State::Failed(match self.state {
                State::Changed { .. } => Failure::Changed,
                _ => Failure::ReceiverSilent(self.cfg.silence),
            });
            return;
        }
        let mut timed_out = false;
        while let Some((&tx, &seq)) = self.by_tx.first_key_value() {
            let Some(f) = self.by_seq.get(&seq) else {
                break;
            };
            if now.saturating_duration_since(f.sent_at) < self.rto {
                break;
            }
            self.by_tx.remove(&tx);
            self.by_seq.remove(&seq);
            self.lost.insert(seq);
            self.epoch_lost += 1;
            timed_out = true;
        }
        if timed_out {
            self.cwnd = (self.cwnd / 2.0).max(MIN_WINDOW);
            self.slow_start = false;
            self.rto = (self.rto * 2).min(self.cfg.max_rto);
        }
    }

    fn fin_ready(&self) -> bool {
        self.next_new == self.chunks
            && self.by_seq.is_empty()
            && self.lost.is_empty()
            && self.md5.is_some()
    }

    /// The next datagram due now, within the budget of the address.
    fn next_transmit(&self, now: Instant) -> Option<SendOp> {
        let op = self.next_op(now)?;
        (self.cost(op) <= self.budget()).then_some(op)
    }

    fn next_op(&self, now: Instant) -> Option<SendOp> {
        let due =
            |at: Option<Instant>| at.is_none_or(|t| now.saturating_duration_since(t) >= self.rto);
        match self.state {
            State::Done | State::Failed(_) => None,
            State::Changed { sent_at } => due(sent_at).then_some(SendOp::Changed),
            State::Meta => Some(SendOp::Meta),
            State::Sending { fin_sent_at } => {
                if (self.by_seq.len() as f64) < self.cwnd.floor() {
                    if let Some(&seq) = self.lost.first() {
                        return Some(SendOp::Data(seq));
                    }
                    if self.next_new < self.chunks && self.next_new < self.cum + self.rwnd {
                        return Some(SendOp::Data(self.next_new));
                    }
                }
                (self.fin_ready() && due(fin_sent_at)).then_some(SendOp::Fin)
            }
        }
    }

    /// Book `op` as sent. For a data chunk, `bytes` is its content (hashed
    /// when it is sent for the first time).
    fn record_sent(&mut self, op: SendOp, now: Instant, bytes: &[u8]) {
        self.sent_bytes = self.sent_bytes.saturating_add(self.cost(op));
        match op {
            SendOp::Meta => {
                if self.state == State::Meta {
                    self.state = State::Sending { fin_sent_at: None };
                }
            }
            SendOp::Fin => {
                if let State::Sending { fin_sent_at } = &mut self.state {
                    *fin_sent_at = Some(now);
                }
            }
            SendOp::Changed => {
                if let State::Changed { sent_at } = &mut self.state {
                    *sent_at = Some(now);
                }
            }
            SendOp::Error => {}
            SendOp::Data(seq) => self.record_data(seq, now, bytes),
        }
    }

    fn record_data(&mut self, seq: u64, now: Instant, bytes: &[u8]) {
        let retransmitted = if self.lost.remove(&seq) {
            self.retransmissions += 1;
            true
        } else if seq == self.next_new {
            self.next_new += 1;
            if let Some(h) = self.hasher.as_mut() {
                h.update(bytes);
            }
            if self.next_new == self.chunks
                && let Some(h) = self.hasher.take()
            {
                self.md5 = Some(h.finalize().into());
            }
            false
        } else {
            return;
        };
        self.tx_counter += 1;
        let tx = self.tx_counter;
        self.by_seq.insert(
            seq,
            Flight {
                tx,
                sent_at: now,
                retransmitted,
            },
        );
        self.by_tx.insert(tx, seq);
        self.epoch_sent += 1;
    }

    /// When [`FileSender::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_over() {
            return None;
        }
        let mut t = self.last_heard + self.cfg.silence;
        if let Some(f) = self
            .by_tx
            .first_key_value()
            .and_then(|(_, seq)| self.by_seq.get(seq))
        {
            t = t.min(f.sent_at + self.rto);
        }
        match self.state {
            State::Sending {
                fin_sent_at: Some(f),
            } if self.fin_ready() => t = t.min(f + self.rto),
            State::Changed { sent_at: Some(c) } => t = t.min(c + self.rto),
            _ => {}
        }
        Some(t)
    }
}

#[path = "sender_packets.rs"]
mod packets;
pub use packets::{ChunkSource, FileInfo};

#[cfg(test)]
#[path = "sender_tests.rs"]
mod tests;
