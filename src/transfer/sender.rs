//! The sending side of a UDP transfer, as a state machine without I/O.
//!
//! Inputs: [`Sender::handle_request`], [`Sender::handle_ack`],
//! [`Sender::handle_done`], [`Sender::handle_timeout`],
//! [`Sender::handle_datagram`] (bytes received from the receiver's address)
//! and [`Sender::file_changed`]. Output:
//! [`Sender::poll_transmit`] names the next datagram to send (it changes no
//! state); the driver sends it and confirms with [`Sender::on_sent`], handing
//! over the bytes of a first-time data chunk so the MD5 is computed as the
//! file is read, in one pass. [`Sender::poll_timeout`] is the next deadline.
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
//! wrong token are ignored. A file that changed while it was sent ends the
//! transfer with `Changed` instead of `Fin`: the receiver then starts anew.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

/// What to send next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOp {
    Meta,
    Data(u64),
    Fin,
    /// The file changed while it was sent (see [`Sender::file_changed`]).
    Changed,
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
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Flight {
    tx: u64,
    sent_at: Instant,
    retransmitted: bool,
}

const MIN_WINDOW: f64 = 4.0;
const REORDER_THRESHOLD: u64 = 3;

pub struct Sender {
    cfg: SenderConfig,
    size: u64,
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
    meta_pending: bool,
    fin_sent_at: Option<Instant>,
    last_heard: Instant,
    done: bool,
    failed: Option<String>,
    retransmissions: u64,
    slow_start: bool,
    epoch_end_tx: u64,
    epoch_sent: u64,
    epoch_lost: u64,
    loss_ewma: f64,
    validated: bool,
    received_bytes: u64,
    sent_bytes: u64,
    changed: bool,
    changed_sent_at: Option<Instant>,
}

/// What the transfer was told when the file changed under it.
pub const CHANGED: &str = "the file changed while it was sent";

impl Sender {
    /// A sender for a file of `size` bytes in chunks of `payload`, for a
    /// receiver that buffers `window` chunks ahead. `known_md5` is the
    /// file's MD5 when a cache vouches for it; otherwise the chunks are
    /// hashed as they are first sent.
    pub fn new(
        now: Instant,
        size: u64,
        payload: u32,
        window: u32,
        known_md5: Option<[u8; 16]>,
        cfg: SenderConfig,
    ) -> Sender {
        let chunks = super::chunk_count(size, payload.max(1));
        let (md5, hasher) = match known_md5 {
            Some(m) => (Some(m), None),
            None if chunks == 0 => (Some(Md5::new().finalize().into()), None),
            None => (None, Some(Md5::new())),
        };
        Sender {
            size,
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
            meta_pending: true,
            fin_sent_at: None,
            last_heard: now,
            done: false,
            failed: None,
            retransmissions: 0,
            slow_start: true,
            epoch_end_tx: 0,
            epoch_sent: 0,
            epoch_lost: 0,
            loss_ewma: 0.0,
            validated: cfg.token.is_none(),
            received_bytes: 0,
            sent_bytes: 0,
            changed: false,
            changed_sent_at: None,
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

    /// `bytes` arrived from the receiver's address (any datagram of this
    /// transfer, the requests included): the budget of an unproven address.
    pub fn handle_datagram(&mut self, bytes: usize) {
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
    pub fn file_changed(&mut self, _now: Instant) {
        if self.done || self.failed.is_some() {
            return;
        }
        self.changed = true;
        self.by_seq.clear();
        self.by_tx.clear();
        self.lost.clear();
    }

    /// Whether the transfer ended (well or not); then [`Sender::failure`]
    /// says why, if it failed.
    pub fn is_over(&self) -> bool {
        self.done || self.failed.is_some()
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
        match op {
            SendOp::Data(seq) => {
                (super::chunk_len(self.size, self.payload, seq) + super::wire::DATA_OVERHEAD) as u64
            }
            _ => super::wire::CONTROL_MAX as u64,
        }
    }

    pub fn payload(&self) -> u32 {
        self.payload
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Why the transfer failed: set once it is over (or given up).
    pub fn failure(&self) -> Option<&str> {
        if self.changed && self.done {
            return Some(CHANGED);
        }
        self.failed.as_deref()
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
    pub fn handle_request(&mut self, now: Instant, window: u32) {
        self.last_heard = now;
        self.rwnd = window.max(1) as u64;
        // Only a receiver still waiting for the meta asks again.
        self.meta_pending = true;
    }

    /// The receiver finished (verified or not): the transfer is over.
    pub fn handle_done(&mut self, now: Instant, token: u64) {
        if !self.check_token(token) {
            return;
        }
        self.last_heard = now;
        self.done = true;
    }

    /// An acknowledgement echoing `token`: everything below `cum` and the
    /// `[a, b)` ranges.
    pub fn handle_ack(
        &mut self,
        now: Instant,
        token: u64,
        cum: u64,
        window: u32,
        ranges: &[(u64, u64)],
    ) {
        if self.done || self.failed.is_some() || !self.check_token(token) {
            return;
        }
        if self.changed {
            self.last_heard = now;
            return;
        }
        self.last_heard = now;
        self.meta_pending = false;
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
            // Anything sent REORDER_THRESHOLD transmissions before an acknowledged one is lost.
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
        if self.done || self.failed.is_some() {
            return;
        }
        if now.saturating_duration_since(self.last_heard) >= self.cfg.silence {
            self.failed = Some(if self.changed {
                CHANGED.to_string()
            } else {
                format!(
                    "the receiver sent nothing for {:.1} s",
                    self.cfg.silence.as_secs_f64()
                )
            });
            return;
        }
        let mut timed_out = false;
        while let Some((&tx, &seq)) = self.by_tx.first_key_value() {
            let f = self.by_seq[&seq];
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

    /// The next datagram to send now, if any. Changes nothing until
    /// [`Sender::on_sent`] confirms it.
    pub fn poll_transmit(&self, now: Instant) -> Option<SendOp> {
        let op = self.next_op(now)?;
        (self.cost(op) <= self.budget()).then_some(op)
    }

    fn next_op(&self, now: Instant) -> Option<SendOp> {
        if self.done || self.failed.is_some() {
            return None;
        }
        if self.changed {
            return self
                .changed_sent_at
                .is_none_or(|t| now.saturating_duration_since(t) >= self.rto)
                .then_some(SendOp::Changed);
        }
        if self.meta_pending {
            return Some(SendOp::Meta);
        }
        if (self.by_seq.len() as f64) < self.cwnd.floor() {
            if let Some(&seq) = self.lost.first() {
                return Some(SendOp::Data(seq));
            }
            if self.next_new < self.chunks && self.next_new < self.cum + self.rwnd {
                return Some(SendOp::Data(self.next_new));
            }
        }
        if self.fin_ready()
            && self
                .fin_sent_at
                .is_none_or(|t| now.saturating_duration_since(t) >= self.rto)
        {
            return Some(SendOp::Fin);
        }
        None
    }

    /// Confirm that `op` went out. For a data chunk, `bytes` is its content
    /// (hashed when it is sent for the first time).
    pub fn on_sent(&mut self, op: SendOp, now: Instant, bytes: &[u8]) {
        self.sent_bytes = self.sent_bytes.saturating_add(self.cost(op));
        match op {
            SendOp::Meta => self.meta_pending = false,
            SendOp::Fin => self.fin_sent_at = Some(now),
            SendOp::Changed => self.changed_sent_at = Some(now),
            SendOp::Data(seq) => {
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
        }
    }

    /// When [`Sender::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.done || self.failed.is_some() {
            return None;
        }
        let mut t = self.last_heard + self.cfg.silence;
        if let Some((_, seq)) = self.by_tx.first_key_value() {
            t = t.min(self.by_seq[seq].sent_at + self.rto);
        }
        if self.fin_ready()
            && let Some(f) = self.fin_sent_at
        {
            t = t.min(f + self.rto);
        }
        if let Some(c) = self.changed_sent_at.filter(|_| self.changed) {
            t = t.min(c + self.rto);
        }
        Some(t)
    }
}

#[cfg(test)]
#[path = "sender_tests.rs"]
mod tests;
