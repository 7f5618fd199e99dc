//! A relay for demonstrations and tests of transfers over a bad network
//! (on loopback). It listens on one port for TCP and UDP, as a peer does:
//! TCP connections are piped to the target as they are (a `download UDP`
//! gets its keys over TCP first), and UDP datagrams are dropped,
//! duplicated, reordered, corrupted and replayed (an old datagram sent
//! again) at given rates, in both directions. Each UDP client address gets
//! its own upstream socket, so replies go back to the client that asked.
//! A relay can record what it forwards ([`Relay::start_recording`]), so a
//! test can look at what crossed the wire.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::Result;
use crate::transfer::sockopt::{size_buffers, wait};

/// What the relay does to each datagram, in both directions.
#[derive(Debug, Clone, Default)]
pub struct Impairment {
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub corrupt: f64,
    /// Send one of the last [`REPLAYABLE`] datagrams again.
    pub replay: f64,
    pub seed: u64,
}

/// How many recent datagrams a replay picks from, and their bytes at most.
pub const REPLAYABLE: usize = 2000;
const REPLAYABLE_BYTES: usize = 8 << 20;

/// What crossed the relay both ways (TCP bytes and UDP datagrams, one
/// after the other), up to a cap.
#[derive(Clone, Default)]
struct Tape {
    bytes: Arc<Mutex<Vec<u8>>>,
    cap: usize,
}

impl Tape {
    fn record(&self, b: &[u8]) {
        if let Ok(mut t) = self.bytes.lock() {
            let room = self.cap.saturating_sub(t.len());
            t.extend_from_slice(&b[..b.len().min(room)]);
        }
    }
}

pub struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// TCP connections being piped, to end at stop.
    streams: Arc<Mutex<Vec<TcpStream>>>,
    tape: Tape,
}

impl Relay {
    /// Listen on `listen` (TCP and UDP) and forward to `target`.
    pub fn start(listen: &str, target: SocketAddr, imp: Impairment) -> Result<Relay> {
        Self::start_recording(listen, target, imp, 0)
    }

    /// [`Relay::start`], recording the first `cap` bytes that cross it.
    pub fn start_recording(
        listen: &str,
        target: SocketAddr,
        imp: Impairment,
        cap: usize,
    ) -> Result<Relay> {
        let (tcp, front) = crate::server::bind_pair(listen)?;
        size_buffers(&front);
        front.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        let addr = front.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let tape = Tape {
            bytes: Arc::default(),
            cap,
        };
        let (s, t) = (stop.clone(), tape.clone());
        let udp = thread::Builder::new()
            .name("relay-udp".into())
            .spawn(move || run(front, target, imp, s, t))?;
        let pipes = Pipes {
            target,
            stop: stop.clone(),
            streams: streams.clone(),
            tape: tape.clone(),
        };
        let tcp = thread::Builder::new()
            .name("relay-tcp".into())
            .spawn(move || pipes.accept(tcp))?;
        Ok(Relay {
            addr,
            stop,
            threads: vec![udp, tcp],
            streams,
            tape,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// What crossed the relay so far (if it records).
    pub fn recorded(&self) -> Vec<u8> {
        self.tape
            .bytes
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    /// Stop and join the relay's threads.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(streams) = self.streams.lock() {
            for s in streams.iter() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The TCP side: every connection piped to the target both ways.
struct Pipes {
    target: SocketAddr,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    tape: Tape,
}

impl Pipes {
    fn accept(self, listener: TcpListener) {
        let mut pipes = Vec::new();
        while !self.stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((client, _)) => {
                    pipes.retain(|p: &JoinHandle<()>| !p.is_finished());
                    pipes.extend(self.pipe(client));
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
        for p in pipes {
            let _ = p.join();
        }
    }

    /// Two threads copying between `client` and a new connection upstream.
    fn pipe(&self, client: TcpStream) -> Vec<JoinHandle<()>> {
        let _ = client.set_nonblocking(false);
        let Ok(up) = TcpStream::connect_timeout(&self.target, Duration::from_secs(3)) else {
            return Vec::new();
        };
        let (Ok(c2), Ok(u2)) = (client.try_clone(), up.try_clone()) else {
            return Vec::new();
        };
        if let Ok(mut streams) = self.streams.lock() {
            streams.extend(client.try_clone().ok());
            streams.extend(up.try_clone().ok());
        }
        if self.stop.load(Ordering::SeqCst) {
            return Vec::new();
        }
        [(client, u2), (up, c2)]
            .into_iter()
            .filter_map(|(from, into)| {
                let tape = self.tape.clone();
                thread::Builder::new()
                    .name("relay-pipe".into())
                    .spawn(move || copy(from, into, &tape))
                    .ok()
            })
            .collect()
    }
}

/// Copy `from` into `into` until either ends, then pass the end on.
fn copy(mut from: TcpStream, mut into: TcpStream, tape: &Tape) {
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || into.write_all(&buf[..n]).is_err() {
            break;
        }
        tape.record(&buf[..n]);
    }
    let _ = into.shutdown(Shutdown::Write);
}

struct Held {
    at: Instant,
    upstream: Option<SocketAddr>,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// The UDP side's state: where datagrams wait to go out, and what was
/// sent recently (for replays).
struct Datagrams {
    imp: Impairment,
    rng: fastrand::Rng,
    held: Vec<Held>,
    recent: VecDeque<(Option<SocketAddr>, SocketAddr, Vec<u8>)>,
    recent_bytes: usize,
    tape: Tape,
}

fn run(front: UdpSocket, target: SocketAddr, imp: Impairment, stop: Arc<AtomicBool>, tape: Tape) {
    let mut d = Datagrams {
        rng: fastrand::Rng::with_seed(imp.seed),
        imp,
        held: Vec::new(),
        recent: VecDeque::new(),
        recent_bytes: 0,
        tape,
    };
    let mut ups: HashMap<SocketAddr, UdpSocket> = HashMap::new();
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
            d.impair(&buf[..n], Some(client), client);
        }
        // Server -> client.
        for (client, up) in &ups {
            while let Ok(n) = up.recv(&mut buf) {
                moved = true;
                d.impair(&buf[..n], None, *client);
            }
        }
        let now = Instant::now();
        d.held.sort_by_key(|h| h.at);
        while d.held.first().is_some_and(|h| h.at <= now) {
            let h = d.held.remove(0);
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
            let next = d
                .held
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

impl Datagrams {
    /// Decide the fate of one datagram: dropped, corrupted, duplicated,
    /// delayed; and perhaps send an old one again.
    fn impair(&mut self, bytes: &[u8], upstream: Option<SocketAddr>, to: SocketAddr) {
        self.tape.record(bytes);
        let (imp, rng) = (&self.imp, &mut self.rng);
        if imp.replay > 0.0 && !self.recent.is_empty() && rng.f64() < imp.replay {
            let (up, to, old) = self.recent[rng.usize(..self.recent.len())].clone();
            self.held.push(Held {
                at: Instant::now(),
                upstream: up,
                to,
                bytes: old,
            });
        }
        if imp.replay > 0.0 {
            while self.recent.len() >= REPLAYABLE
                || self.recent_bytes + bytes.len() > REPLAYABLE_BYTES
            {
                let Some((_, _, old)) = self.recent.pop_front() else {
                    break;
                };
                self.recent_bytes -= old.len();
            }
            self.recent_bytes += bytes.len();
            self.recent.push_back((upstream, to, bytes.to_vec()));
        }
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
            self.held.push(Held {
                at: Instant::now() + delay,
                upstream,
                to,
                bytes: b,
            });
        }
    }
}
