//! A UDP relay that drops, duplicates, reorders and corrupts datagrams at
//! given rates, for demonstrations and tests of the UDP transfer over a bad
//! network (on loopback). Each client address gets its own upstream socket,
//! so replies go back to the client that asked.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::transfer::sockopt::{size_buffers, wait};
use crate::{Context, Result};

/// What the relay does to each datagram, in both directions.
#[derive(Debug, Clone, Default)]
pub struct Impairment {
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub corrupt: f64,
    pub seed: u64,
}

pub struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listen on `listen` and forward to `target`.
    pub fn start(listen: &str, target: SocketAddr, imp: Impairment) -> Result<Relay> {
        let front = UdpSocket::bind(listen).context(format!("relay cannot listen on {listen}"))?;
        size_buffers(&front);
        front.set_nonblocking(true)?;
        let addr = front.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = thread::Builder::new()
            .name("relay".into())
            .spawn(move || run(front, target, imp, s))?;
        Ok(Relay {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop and join the relay thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.halt();
    }
}

struct Held {
    at: Instant,
    upstream: Option<SocketAddr>,
    to: SocketAddr,
    bytes: Vec<u8>,
}

fn run(front: UdpSocket, target: SocketAddr, imp: Impairment, stop: Arc<AtomicBool>) {
    let mut rng = fastrand::Rng::with_seed(imp.seed);
    let mut ups: HashMap<SocketAddr, UdpSocket> = HashMap::new();
    let mut held: Vec<Held> = Vec::new();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        let mut moved = false;
        // Client -> server.
        while let Ok((n, client)) = front.recv_from(&mut buf) {
            moved = true;
            if let std::collections::hash_map::Entry::Vacant(slot) = ups.entry(client) {
                let Some(up) = upstream(target) else { continue };
                slot.insert(up);
            }
            impair(&imp, &mut rng, &buf[..n], Some(client), client, &mut held);
        }
        // Server -> client.
        for (client, up) in &ups {
            while let Ok(n) = up.recv(&mut buf) {
                moved = true;
                impair(&imp, &mut rng, &buf[..n], None, *client, &mut held);
            }
        }
        let now = Instant::now();
        held.sort_by_key(|h| h.at);
        while held.first().is_some_and(|h| h.at <= now) {
            let h = held.remove(0);
            match h.upstream {
                Some(client) => {
                    if let Some(up) = ups.get(&client) {
                        let _ = up.send(&h.bytes);
                    }
                }
                None => {
                    let _ = front.send_to(&h.bytes, h.to);
                }
            }
        }
        if !moved {
            let next = held
                .first()
                .map(|h| h.at.saturating_duration_since(now))
                .unwrap_or(Duration::from_millis(20));
            wait(&front, false, next.min(Duration::from_millis(1)));
        }
    }
}

/// A socket toward the target for one client.
fn upstream(target: SocketAddr) -> Option<UdpSocket> {
    let local = if target.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let up = UdpSocket::bind(local).ok()?;
    size_buffers(&up);
    up.connect(target).ok()?;
    up.set_nonblocking(true).ok()?;
    Some(up)
}

/// Decide the fate of one datagram: dropped, corrupted, duplicated, delayed.
fn impair(
    imp: &Impairment,
    rng: &mut fastrand::Rng,
    bytes: &[u8],
    upstream: Option<SocketAddr>,
    to: SocketAddr,
    held: &mut Vec<Held>,
) {
    if rng.f64() < imp.loss {
        return;
    }
    let copies = if rng.f64() < imp.duplicate { 2 } else { 1 };
    for _ in 0..copies {
        let mut b = bytes.to_vec();
        if !b.is_empty() && rng.f64() < imp.corrupt {
            let i = rng.usize(..b.len());
            b[i] ^= 1 << rng.u8(0..8);
        }
        let delay = if rng.f64() < imp.reorder {
            Duration::from_micros(rng.u64(200..3000))
        } else {
            Duration::ZERO
        };
        held.push(Held {
            at: Instant::now() + delay,
            upstream,
            to,
            bytes: b,
        });
    }
}
