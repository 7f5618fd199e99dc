//! The TCP side of the server on real sockets: the accept loop (a thread
//! per connection, capped at `max_connections`; from one address at half
//! of them in the handshake and three quarters in all
//! ([`super::admission`])); a few beyond that
//! get a clear "busy" answer, a flood is just closed) and [`Timed`], the
//! read half's one deadline per message. What a connection says is served
//! by [`super::conn`].

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::ServerContext;
use super::admission::{Handshakes, Handshaking};
use super::conn::{Connection, Input};
use crate::limits::BUSY_ANSWERS;
use crate::proto::CHUNK;
use crate::secure::{SecureReader, SecureWriter, handshake};

/// Accept connections until `stop` is set, then wait for their threads.
pub fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ServerContext>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<HashMap<u64, TcpStream>>>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    let busy_answers = Arc::new(AtomicUsize::new(0));
    let handshakes = Arc::new(Handshakes::default());
    let next_id = AtomicU64::new(0);
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        workers.retain(|w| !w.is_finished());
        let timeout = ctx.settings.io_timeout;
        let _ = stream.set_read_timeout(Some(timeout));
        let _ = stream.set_write_timeout(Some(timeout));
        let _ = stream.set_nodelay(true);
        let cap = ctx.settings.max_connections;
        let handshaking = match stream.peer_addr() {
            Ok(a) if active.load(Ordering::SeqCst) < cap => handshakes.start(a.ip(), cap),
            _ => None,
        };
        let Some(handshaking) = handshaking else {
            answer_busy(stream, ctx.credentials.has_secret, &busy_answers);
            continue;
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        if let (Ok(mut map), Ok(clone)) = (conns.lock(), stream.try_clone()) {
            map.insert(id, clone);
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (ctx, stop, conns, counter) =
            (ctx.clone(), stop.clone(), conns.clone(), active.clone());
        let spawned = thread::Builder::new()
            .name(format!("tcp-conn-{id}"))
            .spawn(move || {
                serve_socket(stream, handshaking, &ctx, &stop);
                if let Ok(mut map) = conns.lock() {
                    map.remove(&id);
                }
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        match spawned {
            Ok(h) => workers.push(h),
            Err(_) => {
                // Could not spawn: the closure (and its stream) is gone; undo the count.
                active.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
    for w in workers {
        let _ = w.join();
    }
}

/// A connection beyond the cap: a few get a clear answer on a thread of
/// their own (`answering` counts them); beyond that a flood is just closed.
fn answer_busy(stream: TcpStream, has_secret: bool, answering: &Arc<AtomicUsize>) {
    if answering.fetch_add(1, Ordering::SeqCst) < BUSY_ANSWERS {
        let counter = answering.clone();
        let spawned = thread::Builder::new()
            .name("tcp-busy".into())
            .spawn(move || {
                refuse_busy(stream, has_secret);
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_ok() {
            return;
        }
    }
    answering.fetch_sub(1, Ordering::SeqCst);
}

/// The preamble and a plain "busy" record: no cryptography, so answering
/// a flood costs nothing.
fn refuse_busy(stream: TcpStream, has_secret: bool) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let answer = handshake::busy_answer(
        has_secret,
        "the peer is busy (too many connections); try again shortly",
    );
    let _ = (&stream).write_all(&answer);
    let _ = stream.shutdown(Shutdown::Write);
    // Drain what the client still sends so closing does not reset the connection.
    let _ = std::io::copy(
        &mut std::io::Read::take(&stream, 1 << 16),
        &mut std::io::sink(),
    );
}

/// Run the handshake on one accepted socket (counted in `handshaking`
/// until it is over), then serve it until it ends or `stop` is set. A
/// client refused in the handshake is logged (rate-limited, and not told
/// to the shell: a flood of them must not flood the terminal).
fn serve_socket(
    stream: TcpStream,
    handshaking: Handshaking,
    ctx: &ServerContext,
    stop: &AtomicBool,
) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let limit = ctx.settings.io_timeout;
    // The whole handshake has one deadline.
    let mut timed = Timed::new(read_half, limit.min(HANDSHAKE_TIMEOUT));
    let answer = handshake::respond(&mut timed, &mut &stream, &ctx.credentials, &|_| Ok(()));
    // Held until the connection ends.
    let _slot = handshaking.done();
    let session = match answer {
        Ok(s) => s,
        Err(e) => {
            if e.kind() == crate::ErrorKind::Refused {
                let outcome = format!("error: {e}");
                super::record_served(&ctx.history, None, (&peer, None), "connection", &outcome, 0);
            }
            return;
        }
    };
    timed.limit = limit;
    timed.restart();
    let (keys, nonce) = (session.keys, session.next_nonce);
    // A small read buffer: bulk reads of file bytes bypass it.
    let r = SecureReader::new(timed, keys.clone(), nonce, 128 << 10);
    let w = SecureWriter::new(stream, keys, nonce);
    Connection::new(ctx, &peer, r, w)
        .proven(session.peer.to_string())
        .serve_requests(stop);
}

/// The longest a client may take for its whole handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The read half of a served connection, with one deadline for a whole
/// message (and for every [`CHUNK`] of a file's bytes), not for each read:
/// a client that sends a byte now and then cannot hold its connection
/// slot beyond the I/O timeout.
pub struct Timed {
    stream: TcpStream,
    limit: Duration,
    deadline: Instant,
    /// Bytes read since the deadline was last set.
    taken: usize,
}

impl Timed {
    fn new(stream: TcpStream, limit: Duration) -> Timed {
        Timed {
            stream,
            limit,
            deadline: Instant::now() + limit,
            taken: 0,
        }
    }

    /// A new message starts: it has the whole timeout.
    fn restart(&mut self) {
        self.deadline = Instant::now() + self.limit;
        self.taken = 0;
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.taken >= CHUNK {
            self.restart();
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the client took more than {} s for one message",
                    self.limit.as_secs()
                ),
            ));
        }
        self.stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        let n = self.stream.read(buf)?;
        self.taken += n;
        Ok(n)
    }
}

impl Input for SecureReader<Timed> {
    fn next_message(&mut self) {
        self.get_mut().restart();
    }

    fn has_buffered(&self) -> bool {
        SecureReader::has_buffered(self)
    }
}
