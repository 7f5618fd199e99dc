//! The UDP machines over a fake network, with a virtual clock: no socket,
//! no real time, the same run for the same seed on every machine.
//!
//! A [`Pair`] is a sending end and a receiving end ([`ends`]) joined by a
//! network ([`net`]), after quinn-proto's test pair. The ends speak only
//! through the machines' own datagram conversion (`poll_transmit`,
//! `handle_packet`), exactly what the server and the driver run. A test
//! drives it step by step ([`Pair::step`], [`Pair::drive_until`],
//! [`Pair::run_for`]), decides the fate of chosen datagrams with a hook
//! ([`Pair::set_hook`]: drop, duplicate, delay or corrupt "the last data
//! datagram" or "every acknowledgement"), restarts the receiver under a new
//! transfer id, and inspects either side. [`run`] is the seeded random
//! transfer on top of it: attempts repeated as the driver repeats them,
//! over a network that loses, duplicates, reorders, corrupts (caught by the
//! CRC) or forges (a wrong payload with a valid CRC, caught only by the
//! MD5) datagrams, with a file that may be rewritten in the middle of an
//! attempt (the sender then reads the new bytes and is told it changed).

pub mod ends;
pub mod net;

use std::time::{Duration, Instant};

use crate::transfer::failure::Failure;
use crate::transfer::receiver::ReceiverConfig;
use crate::transfer::sender::FileSender;
use ends::MemFile;
pub use ends::{Ending, ReceiverEnd, SenderEnd};
pub use net::{Dir, Fate, Network, Sent};
use net::{Link, Net};

/// How a simulated transfer runs.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub payload: u32,
    pub max_attempts: u32,
    /// The sender stops answering after sending this many datagrams.
    pub sender_dies_after: Option<u64>,
    pub silence: Duration,
    /// In the first this many attempts, the file is rewritten (every byte
    /// xor 0x5a) once half of it was sent; later attempts send the new one.
    pub rewrites: u32,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            payload: 1000,
            max_attempts: 3,
            sender_dies_after: None,
            silence: Duration::from_secs(5),
            rewrites: 0,
        }
    }
}

/// How a simulated transfer ended.
#[derive(Debug)]
pub struct SimOutcome {
    pub result: Result<Vec<u8>, String>,
    pub attempts: u32,
    pub retransmissions: u64,
    pub elapsed: Duration,
    pub datagrams: u64,
}

/// Two ends over a fake network, on a virtual clock a test drives.
pub struct Pair {
    now: Instant,
    start: Instant,
    sender: SenderEnd,
    receiver: ReceiverEnd,
    to_sender: Link,
    to_receiver: Link,
    net: Net,
    ids: fastrand::Rng,
    rcfg: ReceiverConfig,
    buf: Vec<u8>,
}

impl Pair {
    /// A receiver about to ask for `data`, a sender that has it, and the
    /// network `net` with seed `seed` between them.
    pub fn new(seed: u64, data: &[u8], net: Network, opts: &SimOptions) -> Pair {
        let start = Instant::now();
        let mut ids = fastrand::Rng::with_seed(seed ^ 0x9e37_79b9_7f4a_7c15);
        let rcfg = ReceiverConfig {
            payloads: vec![opts.payload],
            silence: opts.silence,
            ..Default::default()
        };
        let file = MemFile::new(data.to_vec(), opts.rewrites);
        Pair {
            now: start,
            start,
            sender: SenderEnd::new(file, opts.silence, opts.sender_dies_after),
            receiver: ReceiverEnd::new(start, ids.u64(..), rcfg.clone()),
            to_sender: Link::default(),
            to_receiver: Link::default(),
            net: Net::new(net, seed),
            ids,
            rcfg,
            buf: Vec::new(),
        }
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the pair was made.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    pub fn receiver(&self) -> &ReceiverEnd {
        &self.receiver
    }

    pub fn sender_end(&self) -> &SenderEnd {
        &self.sender
    }

    /// The sender of the receiver's current attempt, once it exists.
    pub fn sender(&self) -> Option<&FileSender> {
        self.sender.sender(self.receiver.receiver.id())
    }

    /// Datagrams handed to the network so far.
    pub fn datagrams(&self) -> u64 {
        self.net.sent
    }

    /// Datagrams in flight toward the sender and toward the receiver.
    pub fn in_flight(&self) -> (usize, usize) {
        (self.to_sender.len(), self.to_receiver.len())
    }

    /// Let `hook` decide the fate of every datagram from now on (the
    /// random impairments apply to those it delivers).
    pub fn set_hook(&mut self, hook: impl FnMut(&Sent) -> Fate + 'static) {
        self.net.hook = Some(Box::new(hook));
    }

    pub fn clear_hook(&mut self) {
        self.net.hook = None;
    }

    /// A new attempt under a new transfer id, as the driver starts one
    /// after a mismatch; the senders of earlier ids carry on until they
    /// give up.
    pub fn restart_receiver(&mut self) {
        let id = self.ids.u64(..);
        self.receiver.restart(self.now, id, self.rcfg.clone());
    }

    /// One round at the current time, in the order the server and the
    /// driver run theirs: due datagrams arrive, timers run, the receiving
    /// end takes its bytes, each end sends what it has; then the clock
    /// moves to the next thing that happens (not past an attempt's end).
    pub fn step(&mut self) {
        let now = self.now;
        while let Some(b) = self.to_sender.pop_due(now) {
            self.sender.receive(now, &b);
        }
        while let Some(b) = self.to_receiver.pop_due(now) {
            self.receiver.receiver.handle_datagram(now, &b);
        }
        self.receiver.receiver.handle_timeout(now);
        self.sender.handle_timeout(now);
        let was_over = self.receiver.ending().is_some();
        if self.receiver.settle() {
            // As the driver does: tell the sender, twice.
            self.receiver.receiver.encode_done(&mut self.buf);
            for _ in 0..2 {
                self.net
                    .send(&mut self.to_sender, now, &self.buf, Dir::ToSender, false);
            }
        }
        if !was_over && self.receiver.ending().is_some() {
            return;
        }
        self.transmit(now);
        let mut next = now + Duration::from_secs(1);
        for t in [
            self.to_sender.next_arrival(),
            self.to_receiver.next_arrival(),
            self.receiver.receiver.poll_timeout(),
            self.sender.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        {
            next = next.min(t);
        }
        self.now = next.max(now + Duration::from_micros(1));
    }

    /// Each end sends what it has to send now.
    fn transmit(&mut self, now: Instant) {
        let forging = self.receiver.attempt <= self.net.cfg.forge_attempts;
        while let Some(op) = self.receiver.receiver.poll_transmit(now, &mut self.buf) {
            self.net
                .send(&mut self.to_sender, now, &self.buf, Dir::ToSender, false);
            self.receiver.receiver.on_sent(&op, now);
        }
        let (net, link) = (&mut self.net, &mut self.to_receiver);
        self.sender.transmit(now, &mut self.buf, &mut |b| {
            net.send(link, now, b, Dir::ToReceiver, forging)
        });
    }

    /// Step until `done` holds (then `true`) or `limit` of virtual time
    /// passed (then `false`).
    pub fn drive_until(&mut self, limit: Duration, mut done: impl FnMut(&Pair) -> bool) -> bool {
        let end = self.now + limit;
        while !done(self) {
            if self.now > end {
                return false;
            }
            self.step();
        }
        true
    }

    /// Step until at least `d` of virtual time passed.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }
}

/// Transfer `data` over the simulated network with seed `seed`, attempt
/// after attempt as the driver does.
pub fn run(seed: u64, data: &[u8], net: &Network, opts: &SimOptions) -> SimOutcome {
    let mut pair = Pair::new(seed, data, net.clone(), opts);
    let limit = Duration::from_secs(3600);
    let result = loop {
        let left = limit.saturating_sub(pair.elapsed());
        if !pair.drive_until(left, |p| p.receiver().ending().is_some()) {
            break Err("the simulation ran past its time limit".to_string());
        }
        let last = pair.receiver().attempt() >= opts.max_attempts;
        match pair.receiver().ending() {
            Some(Ending::Verified) => break Ok(pair.receiver().got().to_vec()),
            Some(Ending::Failed(f)) => break Err(f.to_string()),
            Some(Ending::Mismatch) if last => {
                let attempts = opts.max_attempts;
                break Err(Failure::Mismatch { attempts }.to_string());
            }
            Some(Ending::Changed) if last => {
                let attempts = opts.max_attempts;
                break Err(Failure::TooManyChanges { attempts }.to_string());
            }
            _ => pair.restart_receiver(),
        }
    };
    SimOutcome {
        result,
        attempts: pair.receiver().attempt(),
        retransmissions: pair.receiver().retransmissions(),
        elapsed: pair.elapsed(),
        datagrams: pair.datagrams(),
    }
}
