//! The server side of a peer: a TCP accept loop with a thread per
//! connection (capped; extra connections get a clear "busy" answer), I/O
//! timeouts so a silent client cannot hold a thread, and a UDP thread on the
//! same port number. A bad connection (garbage, oversized frames, another
//! version, a hang-up) ends that connection only.
//!
//! It works from a narrow [`ServerContext`] (the folder, the history, an
//! event sender, its settings, the peer id and a [`SyncAnswer`] for sync
//! exchanges), not from the whole peer. The rooms:
//! - `mod.rs`: the context, starting and stopping the threads, and
//!   [`record_served`], the one place a served request is logged and told;
//! - [`tcp`]: the accept loop, the "busy" answer, a socket's per-message
//!   deadline; [`admission`]: the share of handshakes one address may run;
//! - [`conn`]: one connection on any buffered reader and writer: the
//!   handshake, then one request after another (tested on byte slices);
//! - [`handlers`]: one function per request type, [`deposits`] those of a
//!   store;
//! - [`tickets`]: the keys of UDP downloads, from a TCP connection to the
//!   UDP thread;
//! - [`udp`]: the UDP loop on the same port number, serving downloads with
//!   the transfer machines of [`crate::transfer`].

pub mod admission;
pub mod conn;
mod deposits;
pub mod handlers;
pub mod tcp;
#[cfg(test)]
mod tests;
pub mod tickets;
pub mod udp;

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::events::EventSender;
use crate::folder::Folder;
use crate::history::{Direction, History, Record};
use crate::proto::{Mark, SyncEntry};
use crate::secure::Credentials;
use crate::{Context, Error, Result};

/// What a server is started with, from the peer's flags.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `[ADDR:]PORT` to serve on, TCP and UDP.
    pub listen: String,
    pub allow_upload: bool,
    pub max_connections: usize,
    /// How long a connection may stay silent (or take for one message).
    pub io_timeout: Duration,
    /// How long a UDP transfer waits on a silent peer.
    pub udp_silence: Duration,
}

/// Everything the server's threads use, and nothing more.
pub struct ServerContext {
    pub folder: Arc<Folder>,
    pub history: Arc<History>,
    pub events: EventSender,
    pub settings: ServerSettings,
    /// This peer's id, as `info` and sync answers give it.
    pub peer_id: String,
    /// What this peer proves in every handshake.
    pub credentials: Credentials,
    /// What answers a partner's sync offer.
    pub sync: Arc<dyn SyncAnswer>,
    /// Where the keys of UDP downloads go to the UDP thread.
    pub tickets: tickets::TicketDesk,
    /// The deposits this peer keeps (`--store`).
    pub store: Option<Arc<crate::store::Store>>,
    /// The failure domain this peer stands in (`--zone`).
    pub zone: String,
}

impl ServerContext {
    /// Log a request served on TCP to `peer` (proven to be `id`) and tell
    /// the shell about it.
    fn served(&self, (peer, id): Who, what: &str, outcome: &str, bytes: u64) {
        record_served(
            &self.history,
            Some(&self.events),
            (peer, id),
            what,
            outcome,
            bytes,
        );
    }
}

/// Who a request was served to: its address, and its id when its key
/// proved one.
pub type Who<'a> = (&'a str, Option<&'a str>);

/// Log a request served to `peer` and, given `events`, tell the shell
/// (`served <what> to <peer>: <outcome>`).
pub fn record_served(
    history: &History,
    events: Option<&EventSender>,
    (peer, id): Who,
    what: &str,
    outcome: &str,
    bytes: u64,
) {
    history.log(&Record::now(Direction::Served, peer, what, outcome, bytes).by(id));
    if let Some(events) = events {
        events.server(format!("served {what} to {peer}: {outcome}"));
    }
}

/// The sync side, as the server sees it: the peer implements it. A
/// partner's exchange (see [`crate::sync::exchange`]) goes: `hello`, then
/// its entries to `store` batch by batch, then ours from `send_since`,
/// then `exchanged`.
pub trait SyncAnswer: Send + Sync {
    /// The partner `peer_id` starts an exchange from its index `index_id`:
    /// our index id and how far we hold the partner's.
    fn hello(&self, peer_id: &str, index_id: &str) -> Result<(String, Option<Mark>)>;
    /// Keep one batch of the partner's entries of its index `index_id`.
    fn store(&self, peer_id: &str, index_id: &str, entries: &[SyncEntry]) -> Result<()>;
    /// Our entries after `seen` (the partner's mark of our index), in
    /// batches, to `send` (with whether more follow).
    fn send_since(
        &self,
        peer_id: &str,
        seen: Option<&Mark>,
        send: &mut dyn FnMut(&[SyncEntry], bool) -> Result<()>,
    ) -> Result<Option<u64>>;
    /// The exchange with the partner that serves at `addr` is done; it got
    /// our entries up to `sent_upto` (`None`: not all of them yet).
    fn exchanged(&self, peer_id: &str, addr: &str, sent_upto: Option<u64>);
}

pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<HashMap<u64, TcpStream>>>,
    threads: Vec<JoinHandle<()>>,
}

/// Bind TCP and UDP on the same port; with port 0, retry until a port is
/// free for both (a peer, and the test relay, listen this way).
pub fn bind_pair(listen: &str) -> Result<(TcpListener, UdpSocket)> {
    let spec = if listen.contains(':') {
        listen.to_string()
    } else {
        format!("0.0.0.0:{listen}")
    };
    let mut last = None;
    for _ in 0..20 {
        let tcp = TcpListener::bind(&spec).context(format_args!("cannot listen on {spec}"))?;
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
    /// Bind and start the TCP and UDP threads.
    pub fn start(ctx: ServerContext) -> Result<Server> {
        let (listener, udp) = bind_pair(&ctx.settings.listen)?;
        let addr = listener.local_addr()?;
        let ctx = Arc::new(ctx);
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(HashMap::new()));
        let mut threads = Vec::new();
        {
            let (ctx, stop, conns) = (ctx.clone(), stop.clone(), conns.clone());
            threads.push(
                thread::Builder::new()
                    .name("tcp-accept".into())
                    .spawn(move || tcp::accept_loop(listener, ctx, stop, conns))?,
            );
        }
        {
            let udp_ctx = udp::ServeContext {
                folder: ctx.folder.clone(),
                history: ctx.history.clone(),
                events: ctx.events.clone(),
                silence: ctx.settings.udp_silence,
                tickets: ctx.tickets.tickets(),
            };
            let stop = stop.clone();
            threads.push(
                thread::Builder::new()
                    .name("udp-serve".into())
                    .spawn(move || udp::serve(udp, udp_ctx, stop))?,
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
