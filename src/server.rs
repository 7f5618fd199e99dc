//! The server side of a peer: a TCP accept loop with a thread per
//! connection (capped; extra connections get a clear "busy" answer), I/O
//! timeouts so a silent client cannot hold a thread, and a UDP thread on the
//! same port number. A bad connection (garbage, oversized frames, another
//! version, a hang-up) ends that connection only.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::folder::{Incoming, Version};
use crate::history::{Direction, Record};
use crate::limits::{BUSY_ANSWERS, Budget, OFFER_BYTES, bounded_regex};
use crate::names::clean_name;
use crate::peer::Shared;
use crate::proto::{
    BATCH, CHUNK, Filter, Request, Response, SyncEntry, VERSION, decode, read_frame, read_hello,
    write_hello, write_msg,
};
use crate::stream::{receive_file, send_file};
use crate::{Context, Error, Result, bail};

pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<HashMap<u64, TcpStream>>>,
    threads: Vec<JoinHandle<()>>,
}

/// Bind TCP and UDP on the same port; with port 0, retry until a port is
/// free for both.
fn bind_pair(listen: &str) -> Result<(TcpListener, UdpSocket)> {
    let spec = if listen.contains(':') {
        listen.to_string()
    } else {
        format!("0.0.0.0:{listen}")
    };
    let mut last = None;
    for _ in 0..20 {
        let tcp = TcpListener::bind(&spec).context(format!("cannot listen on {spec}"))?;
        let addr = tcp.local_addr()?;
        match UdpSocket::bind(addr) {
            Ok(udp) => return Ok((tcp, udp)),
            Err(e) => last = Some(e),
        }
        if !spec.ends_with(":0") {
            break;
        }
    }
    Err(Error::new(format!(
        "cannot listen for UDP on {spec}: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

impl Server {
    pub fn start(shared: Arc<Shared>) -> Result<Server> {
        let listen = shared.config.listen.as_deref().unwrap_or("127.0.0.1:0");
        let (listener, udp) = bind_pair(listen)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(HashMap::new()));
        let mut threads = Vec::new();
        {
            let (shared, stop, conns) = (shared.clone(), stop.clone(), conns.clone());
            threads.push(
                thread::Builder::new()
                    .name("tcp-accept".into())
                    .spawn(move || accept_loop(listener, shared, stop, conns))?,
            );
        }
        {
            let ctx = crate::transfer::server::ServeContext {
                folder: shared.folder.clone(),
                history: shared.history.clone(),
                events: shared.events.sender(),
                silence: shared.config.udp_silence,
            };
            let stop = stop.clone();
            threads.push(
                thread::Builder::new()
                    .name("udp-serve".into())
                    .spawn(move || crate::transfer::server::serve(udp, ctx, stop))?,
            );
        }
        Ok(Server {
            addr,
            stop,
            conns,
            threads,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, close open connections and join every thread.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let wake = match self.addr {
            SocketAddr::V4(a) if a.ip().is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], a.port()))
            }
            SocketAddr::V6(a) if a.ip().is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
            }
            a => a,
        };
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        // Wake the UDP thread from its wait with an empty datagram.
        let local: SocketAddr = if wake.is_ipv6() {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0))
        } else {
            SocketAddr::from(([127, 0, 0, 1], 0))
        };
        if let Ok(s) = UdpSocket::bind(local) {
            let _ = s.send_to(&[], wake);
        }
        if let Ok(conns) = self.conns.lock() {
            for s in conns.values() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<HashMap<u64, TcpStream>>>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    let busy_answers = Arc::new(AtomicUsize::new(0));
    let offers = Arc::new(Budget::new(OFFER_BYTES));
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
        let timeout = shared.config.io_timeout;
        let _ = stream.set_read_timeout(Some(timeout));
        let _ = stream.set_write_timeout(Some(timeout));
        let _ = stream.set_nodelay(true);
        if active.load(Ordering::SeqCst) >= shared.config.max_connections {
            // A few get a clear answer; beyond that a flood is just closed.
            if busy_answers.fetch_add(1, Ordering::SeqCst) < BUSY_ANSWERS {
                let answering = busy_answers.clone();
                let spawned = thread::Builder::new()
                    .name("tcp-busy".into())
                    .spawn(move || {
                        refuse_busy(stream);
                        answering.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_ok() {
                    continue;
                }
            }
            busy_answers.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        if let (Ok(mut map), Ok(clone)) = (conns.lock(), stream.try_clone()) {
            map.insert(id, clone);
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (shared, stop, conns, counter, offers) = (
            shared.clone(),
            stop.clone(),
            conns.clone(),
            active.clone(),
            offers.clone(),
        );
        let spawned = thread::Builder::new()
            .name(format!("tcp-conn-{id}"))
            .spawn(move || {
                serve_connection(stream, &shared, &stop, &offers);
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

fn refuse_busy(stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut w = BufWriter::new(&stream);
    let _ = write_hello(&mut w);
    let _ = read_hello(&mut &stream);
    let _ = write_msg(
        &mut w,
        &Response::Error {
            message: "the peer is busy (too many connections); try again shortly".into(),
        },
    );
    let _ = w.flush();
    let _ = stream.shutdown(Shutdown::Write);
    // Drain what the client still sends so closing does not reset the connection.
    let _ = std::io::copy(
        &mut std::io::Read::take(&stream, 1 << 16),
        &mut std::io::sink(),
    );
}

fn serve_connection(stream: TcpStream, shared: &Shared, stop: &AtomicBool, offers: &Arc<Budget>) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    // A small read buffer: bulk reads of file bytes bypass it.
    let mut r = BufReader::with_capacity(64 << 10, Timed::new(read_half, shared.config.io_timeout));
    let mut w = BufWriter::with_capacity(64 << 10, stream);
    if write_hello(&mut w).is_err() {
        return;
    }
    match read_hello(&mut r) {
        Ok(VERSION) => {}
        _ => return,
    }
    let mut buf = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        r.get_mut().restart();
        let req = match read_frame(&mut r, &mut buf) {
            Ok(Some(m)) => match decode::<Request>(m) {
                Ok(req) => req,
                Err(e) => {
                    let _ = write_msg(
                        &mut w,
                        &Response::Error {
                            message: e.to_string(),
                        },
                    );
                    let _ = w.flush();
                    return;
                }
            },
            _ => return,
        };
        let what = describe(&req);
        let (outcome, bytes) = match handle(req, &mut r, &mut w, &mut buf, shared, &peer, offers) {
            Ok(bytes) => ("ok".to_string(), bytes),
            Err(e) => {
                let _ = write_msg(
                    &mut w,
                    &Response::Error {
                        message: e.to_string(),
                    },
                );
                (format!("error: {e}"), 0)
            }
        };
        let flushed = w.flush().is_ok();
        shared.history.log(&Record::now(
            Direction::Served,
            &peer,
            &what,
            &outcome,
            bytes,
        ));
        shared
            .events
            .sender()
            .server(format!("served {what} to {peer}: {outcome}"));
        if !flushed {
            return;
        }
    }
}

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

/// A short description of a request for the history log.
pub fn describe(req: &Request) -> String {
    match req {
        Request::Info => "info".into(),
        Request::Index {
            filter: Filter::All,
        } => "index longlist".into(),
        Request::Index {
            filter: Filter::Between { start_ns, end_ns },
        } => format!(
            "index shortlist {} {}",
            crate::timestamp::rfc3339(*start_ns),
            crate::timestamp::rfc3339(*end_ns)
        ),
        Request::Index {
            filter: Filter::Regex { expr },
        } => format!("index regex {expr}"),
        Request::Hash { name: Some(n) } => format!("hash verify {n}"),
        Request::Hash { name: None } => "hash checkall".into(),
        Request::Download { name, fresh } => {
            format!(
                "download TCP {name}{}",
                if *fresh { " (rehashed)" } else { "" }
            )
        }
        Request::SyncOffer { entries, .. } => format!("sync offer ({} entries)", entries.len()),
        Request::Upload { meta, force } => {
            format!(
                "upload{} {}",
                if *force { " --force" } else { "" },
                meta.name
            )
        }
    }
}

/// Serve one request; returns the number of file bytes moved.
fn handle(
    req: Request,
    r: &mut BufReader<Timed>,
    w: &mut BufWriter<TcpStream>,
    buf: &mut Vec<u8>,
    shared: &Shared,
    peer: &str,
    offers: &Arc<Budget>,
) -> Result<u64> {
    let folder = &shared.folder;
    match req {
        Request::Info => {
            write_msg(
                w,
                &Response::Info {
                    peer_id: shared.peer_id().to_string(),
                    allow_upload: shared.config.allow_upload,
                },
            )?;
            Ok(0)
        }
        Request::Index { filter } => {
            let keep = matcher(&filter)?;
            let mut batch = Vec::with_capacity(BATCH);
            let mut failure: Option<Error> = None;
            folder.walk(|e| {
                if failure.is_some() || !keep(&e) {
                    return;
                }
                batch.push(e);
                if batch.len() == BATCH {
                    let entries = std::mem::take(&mut batch);
                    if let Err(e) = write_msg(w, &Response::Entries { entries }) {
                        failure = Some(e);
                    }
                }
            });
            if let Some(e) = failure {
                return Err(e);
            }
            if !batch.is_empty() {
                write_msg(w, &Response::Entries { entries: batch })?;
            }
            if let Some(message) = folder.unservable_names() {
                write_msg(w, &Response::Note { message })?;
            }
            write_msg(w, &Response::End)?;
            Ok(0)
        }
        Request::Hash { name } => {
            let files = match name {
                Some(n) => vec![folder.hash_one(&n)?],
                None => folder.hash_all(),
            };
            for chunk in files.chunks(BATCH) {
                write_msg(
                    w,
                    &Response::Hashes {
                        files: chunk.to_vec(),
                    },
                )?;
            }
            if let Some(message) = folder.unservable_names() {
                write_msg(w, &Response::Note { message })?;
            }
            write_msg(w, &Response::End)?;
            Ok(0)
        }
        Request::Download { name, fresh } => {
            let (file, meta) = folder.open_file(&name)?;
            let stat = file.metadata().context(&meta.name)?;
            let opened = Version::of(&stat);
            if fresh {
                folder.forget_md5(&meta.name);
            }
            let known = folder.cached(&meta.name, &stat);
            write_msg(w, &Response::File { meta: meta.clone() })?;
            let path = folder.root().join(&meta.name);
            let unchanged = || -> Result<()> {
                if Version::at(&path) != Some(opened) {
                    bail!("{} changed while it was being sent; try again", meta.name);
                }
                Ok(())
            };
            let md5 = send_file(
                w,
                file,
                meta.size,
                known,
                &AtomicBool::new(false),
                &mut |_| {},
                &unchanged,
            )?;
            // The bytes were hashed on the way out (`unchanged` held): remember it.
            if known.is_none() {
                folder.remember(&meta.name, &stat, md5);
            }
            Ok(meta.size)
        }
        Request::SyncOffer {
            peer_id,
            listen_port,
            mut entries,
            mut more,
        } => {
            // The partner's index stays in memory until answered: it is
            // held against a budget shared by every connection.
            // The claim travels with the entries to the sync engine and
            // is given back only when the engine has absorbed them.
            let mut held = offers.hold();
            let what = "a sync offer";
            held.grow(in_memory(&entries, &[]), what)?;
            while more {
                match read_frame(r, buf)?.map(decode::<Request>) {
                    Some(Ok(Request::SyncOffer {
                        entries: e,
                        more: m,
                        ..
                    })) => {
                        held.grow(in_memory(&entries, &e), what)?;
                        entries.extend(e);
                        more = m;
                    }
                    _ => bail!("a sync offer was cut short"),
                }
            }
            let known = shared.sync_db()?.load(&peer_id)?;
            let local = folder.sync_index()?;
            held.grow(in_memory(&[], &local), what)?;
            let ours = crate::sync::offer(local.clone(), &known);
            for (b, more) in crate::proto::batches(&ours) {
                write_msg(
                    w,
                    &Response::SyncIndex {
                        peer_id: shared.peer_id().to_string(),
                        entries: b.to_vec(),
                        more,
                    },
                )?;
            }
            // Tell our sync engine: the partner may have something for us.
            let ip = peer.rsplit_once(':').map(|(ip, _)| ip).unwrap_or(peer);
            shared.sync_offered(peer_id, format!("{ip}:{listen_port}"), entries, local, held);
            Ok(0)
        }
        Request::Upload { meta, force } => {
            if !shared.config.allow_upload {
                bail!("this peer does not accept uploads (start it with --allow-upload)");
            }
            let name = clean_name(&meta.name)?;
            if !force && std::fs::symlink_metadata(folder.root().join(&name)).is_ok() {
                bail!(
                    "{name} already exists on the peer; use `upload --force {name}` to replace it"
                );
            }
            let mut incoming = Incoming::create(folder, &meta)?;
            write_msg(w, &Response::Ready)?;
            w.flush()?;
            let md5 = receive_file(r, buf, &mut incoming, &mut |_| {})??;
            let size = incoming.written();
            incoming.finish_verified(folder, &md5)?;
            folder.save_cache();
            write_msg(
                w,
                &Response::Ok {
                    message: format!("stored {name} ({size} bytes, MD5 {md5})"),
                },
            )?;
            Ok(size)
        }
    }
}

/// Memory that `more` entries take once added to `held` (the vector's
/// growth included): what a sync offer is charged against the budget.
fn in_memory(held: &[SyncEntry], more: &[SyncEntry]) -> usize {
    let slot = std::mem::size_of::<SyncEntry>();
    // Appending may double the vector's room.
    let growth = if held.len() + more.len() > held.len().next_power_of_two() {
        (held.len() + more.len()).next_power_of_two() * slot
    } else {
        0
    };
    let text: usize = more
        .iter()
        .map(|e| e.name.len() + e.md5.as_ref().map_or(0, String::len))
        .sum();
    growth.max(std::mem::size_of_val(more)) + text
}

/// A test on a listing entry.
pub type EntryTest = Box<dyn Fn(&crate::proto::Entry) -> bool>;

/// The predicate an index filter stands for.
pub fn matcher(filter: &Filter) -> Result<EntryTest> {
    Ok(match filter {
        Filter::All => Box::new(|_| true),
        Filter::Between { start_ns, end_ns } => {
            let (a, b) = (*start_ns, *end_ns);
            if a > b {
                bail!("the start of the range is after its end");
            }
            Box::new(move |e| a <= e.mtime_ns && e.mtime_ns <= b)
        }
        Filter::Regex { expr } => {
            let re = bounded_regex(expr)?;
            Box::new(move |e| re.is_match(&e.name))
        }
    })
}
