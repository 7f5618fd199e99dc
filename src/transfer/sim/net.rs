//! The fake network between the two ends of a [`super::Pair`]: one queue
//! of datagrams in flight per direction, ordered by arrival time, and what
//! happens to each datagram on the way: a test's hook decides for chosen
//! datagrams ([`Fate`]); the rest meet the seeded random impairments of a
//! [`Network`] (loss, duplication, reordering, corruption caught by the
//! CRC, forgery caught only by the MD5).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::transfer::wire::{Packet, decode, encode};

/// What the network does to each datagram, at random.
#[derive(Debug, Clone, Default)]
pub struct Network {
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub corrupt: f64,
    /// Wrong data with a valid CRC, in the first `forge_attempts` attempts.
    pub forge: f64,
    pub forge_attempts: u32,
    pub delay: Duration,
}

/// Which way a datagram travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    ToSender,
    ToReceiver,
}

/// A datagram on its way, as a test's hook sees it.
#[derive(Debug)]
pub struct Sent<'a> {
    pub dir: Dir,
    /// Its transfer id.
    pub id: u64,
    pub packet: &'a Packet<'a>,
}

/// What a hook decides for one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// As the random impairments of the [`Network`] decide.
    Deliver,
    Drop,
    /// Two copies arrive.
    Duplicate,
    /// One bit flips on the way (the CRC catches it).
    Corrupt,
    /// It arrives this much later than it would.
    Delay(Duration),
}

/// A test's say over chosen datagrams.
pub type Hook = Box<dyn FnMut(&Sent) -> Fate>;

/// Datagrams in flight one way, by arrival time (then sending order).
#[derive(Default)]
pub(super) struct Link {
    queue: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
}

impl Link {
    /// The next datagram that has arrived by `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        match self.queue.peek() {
            Some(Reverse((t, _, _))) if *t <= now => self.queue.pop().map(|Reverse((_, _, b))| b),
            _ => None,
        }
    }

    /// When the next datagram arrives.
    pub(super) fn next_arrival(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((t, _, _))| *t)
    }

    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }
}

pub(super) struct Net {
    pub(super) cfg: Network,
    rng: fastrand::Rng,
    order: u64,
    /// Datagrams handed to the network so far.
    pub(super) sent: u64,
    pub(super) hook: Option<Hook>,
}

impl Net {
    pub(super) fn new(cfg: Network, seed: u64) -> Net {
        Net {
            cfg,
            rng: fastrand::Rng::with_seed(seed),
            order: 0,
            sent: 0,
            hook: None,
        }
    }

    fn push(&mut self, link: &mut Link, at: Instant, bytes: Vec<u8>) {
        self.order += 1;
        link.queue.push(Reverse((at, self.order, bytes)));
    }

    /// Put `bytes` on `link` at `now`; `forge_now` allows forgery.
    pub(super) fn send(
        &mut self,
        link: &mut Link,
        now: Instant,
        bytes: &[u8],
        dir: Dir,
        forge_now: bool,
    ) {
        self.sent += 1;
        let at = now + self.cfg.delay;
        match self.judge(bytes, dir) {
            Fate::Deliver => {}
            Fate::Drop => return,
            Fate::Duplicate => {
                self.push(link, at, bytes.to_vec());
                self.push(link, at, bytes.to_vec());
                return;
            }
            Fate::Corrupt => {
                let mut b = bytes.to_vec();
                let i = b.len() / 2;
                b[i] ^= 1;
                self.push(link, at, b);
                return;
            }
            Fate::Delay(d) => {
                self.push(link, at + d, bytes.to_vec());
                return;
            }
        }
        self.impair(link, now, bytes, forge_now);
    }

    /// What the hook, if any, says about `bytes`.
    fn judge(&mut self, bytes: &[u8], dir: Dir) -> Fate {
        let Some(hook) = self.hook.as_mut() else {
            return Fate::Deliver;
        };
        match decode(bytes) {
            Some((id, packet)) => hook(&Sent {
                dir,
                id,
                packet: &packet,
            }),
            None => Fate::Deliver,
        }
    }

    /// The random impairments of the network.
    fn impair(&mut self, link: &mut Link, now: Instant, bytes: &[u8], forge_now: bool) {
        if self.rng.f64() < self.cfg.loss {
            return;
        }
        let copies = if self.rng.f64() < self.cfg.duplicate {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut b = bytes.to_vec();
            if self.rng.f64() < self.cfg.corrupt {
                let i = self.rng.usize(..b.len());
                b[i] ^= 1 << self.rng.u8(0..8);
            }
            if forge_now && self.rng.f64() < self.cfg.forge {
                forge(&mut b, &mut self.rng);
            }
            let mut at = now + self.cfg.delay;
            if self.rng.f64() < self.cfg.reorder {
                at += self.cfg.delay * self.rng.u32(1..6)
                    + Duration::from_micros(self.rng.u64(1..500));
            }
            self.push(link, at, b);
        }
    }
}

/// Change one payload byte of a data datagram and fix up its CRC.
fn forge(b: &mut Vec<u8>, rng: &mut fastrand::Rng) {
    if let Some((id, Packet::Data { seq, bytes })) = decode(b)
        && !bytes.is_empty()
    {
        let mut bytes = bytes.to_vec();
        let i = rng.usize(..bytes.len());
        bytes[i] ^= 0x5a;
        encode(id, &Packet::Data { seq, bytes: &bytes }, b, 0);
    }
}
