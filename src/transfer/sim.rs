//! A simulated network for the UDP state machines: two queues of datagrams
//! in flight, a virtual clock, and a seeded random source that drops,
//! duplicates, reorders, corrupts (caught by the CRC) or forges (a wrong
//! payload with a valid CRC, caught only by the MD5) datagrams. The file
//! may also be rewritten in the middle of an attempt (the sender then reads
//! the new bytes and is told the file changed, as the driver's check does).
//! The sender requires its address token echoed, as a server's does. The
//! same seed gives the same run on every machine; no socket, no real time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

use super::receiver::{MetaInfo, Receiver, ReceiverConfig, RecvEvent, RecvOp};
use super::sender::{SendOp, Sender, SenderConfig};
use super::wire::{Packet, decode, encode};

/// What the network does to each datagram.
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

struct Wire {
    queue: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
}

struct Net<'a> {
    cfg: &'a Network,
    rng: fastrand::Rng,
    order: u64,
    sent: u64,
}

impl Net<'_> {
    fn send(&mut self, wire: &mut Wire, now: Instant, bytes: &[u8], forge_now: bool) {
        self.sent += 1;
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
            self.order += 1;
            wire.queue.push(Reverse((at, self.order, b)));
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

fn pop_due(wire: &mut Wire, now: Instant) -> Option<Vec<u8>> {
    match wire.queue.peek() {
        Some(Reverse((t, _, _))) if *t <= now => wire.queue.pop().map(|Reverse((_, _, b))| b),
        _ => None,
    }
}

/// Transfer `data` over the simulated network with seed `seed`.
pub fn run(seed: u64, data: &[u8], net: &Network, opts: &SimOptions) -> SimOutcome {
    let base = Instant::now();
    let mut now = base;
    let mut net_state = Net {
        cfg: net,
        rng: fastrand::Rng::with_seed(seed),
        order: 0,
        sent: 0,
    };
    let mut ids = fastrand::Rng::with_seed(seed ^ 0x9e37_79b9_7f4a_7c15);
    let limit = Duration::from_secs(3600);
    let mut retransmissions = 0;
    let mut buf = Vec::new();
    let end = |result, attempts, retransmissions, now: Instant, sent| SimOutcome {
        result,
        attempts,
        retransmissions,
        elapsed: now - base,
        datagrams: sent,
    };
    let new_version: Vec<u8> = data.iter().map(|b| b ^ 0x5a).collect();
    let mut file: &[u8] = data;
    let mut last_changed = false;
    for attempt in 1..=opts.max_attempts {
        let id = ids.u64(..);
        let rewrite_at = (attempt <= opts.rewrites).then_some(data.len() as u64 / 2);
        let forging = attempt <= net.forge_attempts;
        let rcfg = ReceiverConfig {
            payloads: vec![opts.payload],
            silence: opts.silence,
            ..Default::default()
        };
        let mut receiver = Receiver::new(now, rcfg);
        let mut sender: Option<Sender> = None;
        let mut sender_sent = 0u64;
        let (mut to_sender, mut to_receiver) = (
            Wire {
                queue: BinaryHeap::new(),
            },
            Wire {
                queue: BinaryHeap::new(),
            },
        );
        let mut got = Vec::new();
        let mut hasher = Md5::new();
        loop {
            if now - base > limit {
                return end(
                    Err("the simulation ran past its time limit".into()),
                    attempt,
                    retransmissions,
                    now,
                    net_state.sent,
                );
            }
            while let Some(op) = receiver.poll_transmit(now) {
                let p = match &op {
                    RecvOp::Request { payload, window } => Packet::Request {
                        attempt,
                        payload: *payload,
                        window: *window,
                        name: "f",
                    },
                    RecvOp::Ack {
                        token,
                        cum,
                        window,
                        ranges,
                    } => Packet::Ack {
                        token: *token,
                        cum: *cum,
                        window: *window,
                        ranges: ranges.clone(),
                    },
                    RecvOp::Done => Packet::Done {
                        token: receiver.token(),
                    },
                };
                encode(id, &p, &mut buf, 0);
                net_state.send(&mut to_sender, now, &buf, false);
                receiver.on_sent(&op, now);
            }
            let alive = opts.sender_dies_after.is_none_or(|n| sender_sent < n);
            if let Some(s) = sender.as_mut().filter(|_| alive) {
                while let Some(op) = s.poll_transmit(now) {
                    let mut chunk: &[u8] = &[];
                    let p = match op {
                        SendOp::Meta => Packet::Meta {
                            size: data.len() as u64,
                            mtime_ns: 7,
                            mode: 0o644,
                            payload: s.payload(),
                            token: s.token(),
                        },
                        SendOp::Data(seq) => {
                            let a = (seq * s.payload() as u64) as usize;
                            if rewrite_at.is_some_and(|at| a as u64 >= at) {
                                file = &new_version;
                            }
                            chunk =
                                &file[a..a + super::chunk_len(data.len() as u64, s.payload(), seq)];
                            Packet::Data { seq, bytes: chunk }
                        }
                        SendOp::Fin if rewrite_at.is_some() => {
                            // The driver's check before Fin: the file changed.
                            s.file_changed(now);
                            continue;
                        }
                        SendOp::Fin => Packet::Fin {
                            md5: s.md5().unwrap_or_default(),
                            retransmissions: s.retransmissions(),
                        },
                        SendOp::Changed => Packet::Changed,
                    };
                    encode(id, &p, &mut buf, 0);
                    net_state.send(&mut to_receiver, now, &buf, forging);
                    s.on_sent(op, now, chunk);
                    sender_sent += 1;
                    if opts.sender_dies_after.is_some_and(|n| sender_sent >= n) {
                        break;
                    }
                }
            }
            while let Some(b) = pop_due(&mut to_sender, now) {
                let Some((pid, p)) = decode(&b) else { continue };
                if pid != id || !alive {
                    continue;
                }
                if let Some(s) = sender.as_mut() {
                    s.handle_datagram(b.len());
                }
                match p {
                    Packet::Request {
                        payload, window, ..
                    } => match sender.as_mut() {
                        Some(s) => s.handle_request(now, window),
                        None => {
                            let cfg = SenderConfig {
                                silence: opts.silence,
                                token: Some(id ^ 0x5eed),
                                ..Default::default()
                            };
                            let mut s =
                                Sender::new(now, data.len() as u64, payload, window, None, cfg);
                            s.handle_datagram(b.len());
                            sender = Some(s);
                        }
                    },
                    Packet::Ack {
                        token,
                        cum,
                        window,
                        ranges,
                    } => {
                        if let Some(s) = sender.as_mut() {
                            s.handle_ack(now, token, cum, window, &ranges)
                        }
                    }
                    Packet::Done { token } => {
                        if let Some(s) = sender.as_mut() {
                            s.handle_done(now, token)
                        }
                    }
                    _ => {}
                }
            }
            while let Some(b) = pop_due(&mut to_receiver, now) {
                let Some((pid, p)) = decode(&b) else { continue };
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
                    } => receiver.handle_meta(
                        now,
                        MetaInfo {
                            size,
                            mtime_ns,
                            mode,
                            payload,
                            token,
                        },
                    ),
                    Packet::Data { seq, bytes } => receiver.handle_data(now, seq, bytes),
                    Packet::Fin {
                        md5,
                        retransmissions,
                    } => receiver.handle_fin(now, md5, retransmissions),
                    Packet::Error { message } => receiver.handle_error(message),
                    Packet::Changed => receiver.handle_changed(),
                    _ => {}
                }
            }
            receiver.handle_timeout(now);
            if let Some(s) = sender.as_mut() {
                s.handle_timeout(now);
            }
            while let Some(chunk) = receiver.poll_deliver() {
                hasher.update(&chunk);
                got.extend_from_slice(&chunk);
            }
            let mut next_attempt = false;
            while let Some(ev) = receiver.poll_event() {
                match ev {
                    RecvEvent::Meta(_) => {}
                    RecvEvent::Finished {
                        md5,
                        retransmissions: r,
                    } => {
                        retransmissions += r;
                        let ours: [u8; 16] = hasher.clone().finalize().into();
                        if ours == md5 {
                            return end(Ok(got), attempt, retransmissions, now, net_state.sent);
                        }
                        last_changed = false;
                        next_attempt = true;
                    }
                    RecvEvent::Changed => {
                        last_changed = true;
                        next_attempt = true;
                    }
                    RecvEvent::Failed(msg) => {
                        return end(Err(msg), attempt, retransmissions, now, net_state.sent);
                    }
                }
            }
            if next_attempt {
                break;
            }
            // Advance the virtual clock to the next thing that happens.
            let mut next = now + Duration::from_secs(1);
            for t in [
                to_sender.queue.peek().map(|Reverse((t, _, _))| *t),
                to_receiver.queue.peek().map(|Reverse((t, _, _))| *t),
                receiver.poll_timeout(),
                sender
                    .as_ref()
                    .filter(|_| alive)
                    .and_then(|s| s.poll_timeout()),
            ]
            .into_iter()
            .flatten()
            {
                next = next.min(t);
            }
            now = next.max(now + Duration::from_micros(1));
        }
    }
    let why = if last_changed {
        "the file changed while it was sent, in each of"
    } else {
        "the MD5 did not match after"
    };
    end(
        Err(format!("{why} {} attempts", opts.max_attempts)),
        opts.max_attempts,
        retransmissions,
        now,
        net_state.sent,
    )
}
