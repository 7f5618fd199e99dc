//! One running peer: its folder, history, identity and server threads.
//! [`Peer::start`] binds TCP and UDP on the same port and starts serving
//! when `--listen` was given (a client only opens no server socket and
//! makes no state folder until it writes a file); [`Peer::shutdown`] stops
//! every thread and waits for them.
//!
//! It assembles the parts: the server gets a narrow [`ServerContext`] made
//! from the peer's state, and [`Shared`] answers the sync offers the server
//! reads ([`SyncAnswer`]: the partner's index into the sync database, ours
//! back from it, and a word to the sync engine).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::discovery::{Announce, Found, Lan};
use crate::events::Events;

use crate::folder::Folder;
use crate::history::History;
use crate::identity::{IDENTITY_FILE, Identity, Trust};
use crate::proto::{Mark, SyncEntry};
use crate::secure::{KnownPeers, PeerId};
use crate::server::{Server, ServerContext, ServerSettings, SyncAnswer};
use crate::sync::SyncContext;
use crate::sync::db::LazyDb;
use crate::sync::{SyncCmd, SyncConfig, SyncEngine};
use crate::{Error, Result};

/// What a peer is started with (the flags, minus the shell's).
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Serve on this `[ADDR:]PORT`; `None`: a client only, no server socket.
    pub listen: Option<String>,
    pub dir: PathBuf,
    pub allow_upload: bool,
    pub max_connections: usize,
    /// How long a connection may stay silent before the server drops it.
    pub io_timeout: Duration,
    /// UDP payload size to ask for (`None`: probe).
    pub udp_payload: Option<usize>,
    /// How many times a UDP download is tried before giving up.
    pub udp_attempts: u32,
    /// How long a UDP transfer waits on a silent peer.
    pub udp_silence: Duration,
    /// Keep the folder in two-way sync with the peers (`--sync`).
    pub sync: bool,
    /// Period of the check with every partner while syncing.
    pub interval: Duration,
    /// Period of the whole rescan of the folder while syncing.
    pub rescan: Duration,
    /// Watch the folder for changes while syncing.
    pub watch: bool,
    /// The peers given on the command line (sync partners).
    pub peers: Vec<String>,
    /// The identity file (`--identity`; default: in the state folder, or
    /// for a client only in the user's state directory).
    pub identity: Option<PathBuf>,
    /// The group secret's file (`--secret-file`).
    pub secret_file: Option<PathBuf>,
    /// The only peer ids served and connected to (`--allow`).
    pub allow: Vec<String>,
    /// Announce and browse on the LAN (`--discover` / `--no-discover`;
    /// `None`: when listening beyond loopback).
    pub discover: Option<bool>,
    /// Keep other peers' deposits (`--store`).
    pub store: bool,
    /// Bytes of deposits kept at most (`--store-quota`).
    pub store_quota: Option<u64>,
    /// The failure domain this peer stands in (`--zone`; `None`: this
    /// machine's id).
    pub zone: Option<String>,
    /// Period of a store's timer (`--repair-interval`).
    pub repair_interval: Duration,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            listen: Some("127.0.0.1:0".into()),
            dir: PathBuf::from("."),
            allow_upload: false,
            max_connections: 64,
            io_timeout: Duration::from_secs(30),
            udp_payload: None,
            udp_attempts: 3,
            udp_silence: Duration::from_secs(5),
            sync: false,
            interval: Duration::from_secs(10),
            rescan: Duration::from_secs(3600),
            watch: true,
            peers: Vec::new(),
            identity: None,
            secret_file: None,
            allow: Vec::new(),
            discover: None,
            store: false,
            store_quota: None,
            zone: None,
            repair_interval: Duration::from_secs(600),
        }
    }
}

/// State shared by the server threads and the shell.
pub struct Shared {
    pub folder: Arc<Folder>,
    pub history: Arc<History>,
    /// The last-synced state, per partner; opened on first use.
    pub sync_db: Arc<LazyDb>,
    /// This peer's id; loaded (or made) on first use.
    pub identity: Arc<Identity>,
    pub config: PeerConfig,
    /// Where the shell keeps its line history: the state folder of a
    /// serving peer, the user's state directory for a client only.
    private_dir: PathBuf,
    pub events: Events,
    sync: OnceLock<Sender<SyncCmd>>,
    /// LAN discovery, when it runs.
    lan: Mutex<Option<Lan>>,
    /// The deposits this peer keeps for others (`--store`).
    pub store: Option<Arc<crate::store::Store>>,
    /// The failure domain this peer stands in.
    pub zone: String,
}

impl Shared {
    /// This peer's id (made, and tied to its folder, on first use).
    pub fn peer_id(&self) -> &str {
        self.identity.id()
    }

    /// The last-synced state database (opened on first use).
    pub fn sync_db(&self) -> Result<&crate::sync::db::SyncDb> {
        self.sync_db.get()
    }

    /// What the sync engine works with.
    pub fn sync_context(&self) -> SyncContext {
        SyncContext {
            folder: self.folder.clone(),
            history: self.history.clone(),
            events: self.events.sender(),
            identity: self.identity.clone(),
            db: self.sync_db.clone(),
        }
    }

    /// Where the shell keeps its line history.
    pub fn private_dir(&self) -> &Path {
        &self.private_dir
    }

    /// What deposit commands work with: our identity, and as places to
    /// look for stores `addresses` and the stores found on the LAN.
    pub fn deposit_ctx(
        &self,
        addresses: &[String],
        cancel: Arc<AtomicBool>,
    ) -> Result<crate::deposit::Ctx<'_>> {
        let mut seeds = addresses.to_vec();
        seeds.extend(
            self.discovered()
                .into_iter()
                .filter(|f| f.store)
                .map(|f| f.addr.to_string()),
        );
        Ok(crate::deposit::Ctx {
            creds: self.identity.credentials(),
            owner: self.peer_id().to_string(),
            folder: &self.folder,
            seeds,
            private_dir: self.private_dir(),
            cancel,
            silence: self.config.io_timeout,
            signer: crate::secure::sign::Signer::of(&self.identity.load()?.keys)?,
        })
    }

    /// The peers LAN discovery found (none when it does not run).
    pub fn discovered(&self) -> Vec<Found> {
        self.lan
            .lock()
            .ok()
            .and_then(|l| l.as_ref().map(Lan::found))
            .unwrap_or_default()
    }

    /// Whether LAN discovery runs.
    pub fn discovering(&self) -> bool {
        self.lan.lock().is_ok_and(|l| l.is_some())
    }

    /// The sync engine's inbox.
    pub fn sync_engine(&self) -> Option<&Sender<SyncCmd>> {
        self.sync.get()
    }
}

impl SyncAnswer for Shared {
    /// Without a running engine (no `--sync`) nothing keeps our index
    /// current: it is scanned whole first. A syncing peer's watcher keeps
    /// it current, but until a first scan filled it, it is not offered.
    fn hello(&self, peer_id: &str, index_id: &str) -> Result<(String, Option<Mark>)> {
        // A folder that vanished (an unmounted disk) offers nothing.
        self.folder.check_present()?;
        let db = self.sync_db()?;
        if !self.config.sync || !db.local_scanned()? {
            crate::sync::scan::full(&self.folder, db)?;
        }
        crate::sync::exchange::answer_hello(db, peer_id, index_id)
    }

    fn store(&self, peer_id: &str, index_id: &str, entries: &[SyncEntry]) -> Result<()> {
        self.sync_db()?.remote_store(peer_id, index_id, entries)
    }

    fn send_since(
        &self,
        peer_id: &str,
        seen: Option<&Mark>,
        send: &mut dyn FnMut(&[SyncEntry], bool) -> Result<()>,
    ) -> Result<Option<u64>> {
        crate::sync::exchange::send_since(self.sync_db()?, peer_id, seen, send)
    }

    /// Tell our sync engine: the partner may have something for us.
    fn exchanged(&self, peer_id: &str, addr: &str, sent_upto: Option<u64>) {
        if let Some(tx) = self.sync.get() {
            let _ = tx.try_send(SyncCmd::Offered {
                peer_id: peer_id.to_string(),
                addr: addr.to_string(),
                sent_upto,
            });
        }
    }
}

/// What the server of `shared` needs, and no more.
fn server_context(shared: &Arc<Shared>) -> ServerContext {
    let config = &shared.config;
    ServerContext {
        folder: shared.folder.clone(),
        history: shared.history.clone(),
        events: shared.events.sender(),
        settings: ServerSettings {
            listen: config
                .listen
                .clone()
                .unwrap_or_else(|| "127.0.0.1:0".into()),
            allow_upload: config.allow_upload,
            max_connections: config.max_connections,
            io_timeout: config.io_timeout,
            udp_silence: config.udp_silence,
        },
        peer_id: shared.peer_id().to_string(),
        credentials: shared.identity.credentials(),
        sync: shared.clone(),
        tickets: Default::default(),
        store: shared.store.clone(),
        zone: shared.zone.clone(),
    }
}

/// Announce this peer on the LAN and browse for others, when the flags
/// (or, by default, a listening address beyond loopback) say so. A failure
/// is told once and the peer goes on without it.
fn start_discovery(shared: &Shared, listen: SocketAddr, group: String) {
    let on = shared.config.discover.unwrap_or(!listen.ip().is_loopback());
    if !on {
        return;
    }
    let me = Announce {
        id: match shared.identity.load() {
            Ok(l) => l.id,
            Err(_) => return,
        },
        listen,
        zone: shared.zone.clone(),
        store: shared.store.is_some(),
        uploads: shared.config.allow_upload,
        group,
    };
    // With --sync (and a group secret), a peer of our group found on the
    // LAN becomes a partner, held to the id it announced.
    let engine = shared.sync.get().filter(|_| shared.config.sync).cloned();
    let tell = engine.map(|engine| -> crate::discovery::lan::OnGroupPeer {
        Box::new(move |f: &Found| {
            let _ = engine.try_send(SyncCmd::Discovered {
                peer_id: f.id.to_string(),
                addr: f.addr.to_string(),
            });
        })
    });
    match Lan::start(&me, tell) {
        Ok(lan) => {
            if let Ok(mut l) = shared.lan.lock() {
                *l = Some(lan);
            }
        }
        Err(e) => shared.events.sender().server(format!(
            "{e}; peers on the LAN are not found (--peer always works)"
        )),
    }
}

pub struct Peer {
    pub shared: Arc<Shared>,
    server: Option<Server>,
    sync: SyncEngine,
    /// The start-up sweep of abandoned part files, and its stop flag.
    sweep: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
    /// A store's timer.
    tend: Option<crate::store::tend::Tend>,
    /// The owner's repair timer.
    owner_repair: OwnerRepair,
}

/// The owner's side of repair, on the `--repair-interval` timer (thread
/// `deposit-repair`): while this process runs and the catalogue lists
/// deposits of ours, every tick runs what `repair` does (every copy
/// checked, missing and bad ones made again, surplus ones removed) and
/// tells the shell when it changed something or failed. The first tick
/// comes after one interval, so a `-c` run never starts one.
struct OwnerRepair {
    stop: Sender<()>,
    cancel: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OwnerRepair {
    fn start(shared: Arc<Shared>) -> OwnerRepair {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("deposit-repair".into())
            .spawn(move || {
                loop {
                    let wait = shared
                        .config
                        .repair_interval
                        .mul_f64(0.8 + fastrand::f64() * 0.4);
                    match stopped.recv_timeout(wait) {
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    owner_repair_tick(&shared, &flag);
                }
            })
            .ok();
        OwnerRepair {
            stop,
            cancel,
            thread,
        }
    }

    fn stop(mut self) {
        self.cancel.store(true, Ordering::SeqCst);
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One owner repair, when the catalogue lists deposits of ours.
fn owner_repair_tick(shared: &Shared, cancel: &Arc<AtomicBool>) {
    let catalogue = crate::deposit::catalogue::Catalogue::load(shared.private_dir());
    if catalogue.holders.is_empty() {
        return;
    }
    let mut seeds = shared.config.peers.clone();
    seeds.extend(catalogue.stores.iter().cloned());
    let said = shared
        .deposit_ctx(&seeds, cancel.clone())
        .and_then(|ctx| crate::deposit::act::repair(&ctx));
    let note = match said {
        Ok((changes, problem)) => {
            let made: usize = changes.iter().map(|c| c.added.len()).sum();
            let removed: usize = changes.iter().map(|c| c.removed.len()).sum();
            match (made + removed, problem) {
                (_, Some(e)) => Some(format!("deposit repair: {e}")),
                (0, None) => None,
                _ => Some(format!(
                    "deposit repair: {made} copies made, {removed} removed"
                )),
            }
        }
        Err(e) => Some(format!("deposit repair: {e}")),
    };
    if let Some(n) = note {
        shared.events.sender().server(n);
    }
}

/// The user's own state directory (`$XDG_STATE_HOME/dropbox-shell`, by
/// default `~/.local/state/dropbox-shell`): a client-only run keeps its
/// history there instead of in the folder it was started in.
pub fn user_state_dir() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".local/state"),
    };
    Some(base.join("dropbox-shell"))
}

/// The group secret, the allowed ids and the known peers the flags name.
fn trust_of(config: &PeerConfig, private_dir: &Path) -> Result<Trust> {
    let group = config
        .secret_file
        .as_deref()
        .map(crate::secure::secret::load)
        .transpose()?;
    let allow = config
        .allow
        .iter()
        .map(|a| PeerId::parse(a).map_err(|e| Error::new(format!("--allow: {e}"))))
        .collect::<Result<Vec<_>>>()?;
    Ok(Trust {
        group,
        allow,
        known: Some(Arc::new(KnownPeers::at(
            &private_dir.join(KNOWN_PEERS_FILE),
        ))),
    })
}

/// The file of ids seen at each address, in the private state folder.
pub const KNOWN_PEERS_FILE: &str = "known_peers";

impl Peer {
    pub fn start(config: PeerConfig) -> Result<Peer> {
        let serving = config.listen.is_some();
        let folder = if serving {
            Folder::open(&config.dir)?
        } else {
            Folder::open_unshared(&config.dir)?
        };
        // A client only keeps its own records in the user's state directory.
        let user_dir = user_state_dir()
            .filter(|_| !serving)
            .filter(|d| fs::create_dir_all(d).is_ok());
        let private_dir = match user_dir {
            Some(d) => d,
            None => folder.state_dir().to_path_buf(),
        };
        let history = History::open(&private_dir)?;
        let identity = match (&config.identity, serving) {
            (Some(file), _) => Identity::in_file(file),
            (None, true) => Identity::of_folder(folder.root(), folder.state_dir()),
            (None, false) => Identity::in_file(&private_dir.join(IDENTITY_FILE)),
        };
        // A serving peer, or one told where its identity is, shows it at
        // once; a file that cannot be read or is not private stops the start.
        if serving || config.identity.is_some() {
            identity.load()?;
        }
        let trust = trust_of(&config, &private_dir)?;
        let group = crate::discovery::group_tag(trust.group.as_ref());
        let identity = identity.trusting(trust);
        let zone = config
            .zone
            .clone()
            .unwrap_or_else(crate::discovery::default_zone);
        let store = match (config.store, serving) {
            (true, true) => Some(Arc::new(crate::store::Store::open(
                folder.state_dir(),
                config.store_quota,
                &zone,
            )?)),
            (true, false) => crate::bail!(kind: BadInput, "--store needs a server (--listen)"),
            (false, _) => None,
        };
        let folder = Arc::new(folder);
        let shared = Arc::new(Shared {
            store,
            zone,
            sync_db: Arc::new(LazyDb::new(folder.clone())),
            identity: Arc::new(identity),
            folder,
            history: Arc::new(history),
            config,
            private_dir,
            events: Events::default(),
            sync: OnceLock::new(),
            lan: Mutex::new(None),
        });
        let server = match serving {
            true => {
                // A serving peer shows its id at once (and says so if it changed).
                Some(Server::start(server_context(&shared))?)
            }
            false => None,
        };
        let sync_cfg = SyncConfig {
            enabled: shared.config.sync,
            interval: shared.config.interval,
            rescan: shared.config.rescan,
            watch: shared.config.watch,
            peers: shared.config.peers.clone(),
            listen_port: server.as_ref().map_or(0, |s| s.local_addr().port()),
        };
        let sync = match SyncEngine::start(shared.sync_context(), sync_cfg) {
            Ok(s) => s,
            Err(e) => {
                if let Some(server) = server {
                    server.stop();
                }
                return Err(e);
            }
        };
        let _ = shared.sync.set(sync.sender());
        let tend = match (&shared.store, &server) {
            (Some(store), Some(server)) => Some(crate::store::tend::Tend::start(
                store.clone(),
                crate::store::tend::TendConfig {
                    creds: shared.identity.credentials(),
                    own_id: shared.peer_id().to_string(),
                    listen_port: server.local_addr().port(),
                    seeds: shared.config.peers.clone(),
                    lan: {
                        let shared = shared.clone();
                        Box::new(move || {
                            let found = shared.discovered().into_iter();
                            found
                                .filter(|f| f.store)
                                .map(|f| f.addr.to_string())
                                .collect()
                        })
                    },
                    interval: shared.config.repair_interval,
                    io_timeout: shared.config.io_timeout,
                },
            )?),
            _ => None,
        };
        if let Some(addr) = server.as_ref().map(Server::local_addr) {
            start_discovery(&shared, addr, group);
        }
        // What killed transfers left behind, cleared off the main path.
        let sweep = server.as_ref().and_then(|_| {
            let stop = Arc::new(AtomicBool::new(false));
            let (s, flag) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("part-sweep".into())
                .spawn(move || {
                    s.folder.remove_abandoned_parts(&flag);
                })
                .ok()
                .map(|t| (stop, t))
        });
        let shared_for_repair = shared.clone();
        Ok(Peer {
            shared,
            server,
            sync,
            sweep,
            tend,
            owner_repair: OwnerRepair::start(shared_for_repair),
        })
    }

    /// Where the server listens; `None` for a client only.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(Server::local_addr)
    }

    /// Stop serving and wait for every server thread.
    pub fn shutdown(self) {
        // The goodbye first: others drop us at once.
        if let Some(lan) = self.shared.lan.lock().ok().and_then(|mut l| l.take()) {
            lan.stop();
        }
        if let Some((stop, t)) = self.sweep {
            stop.store(true, Ordering::Relaxed);
            let _ = t.join();
        }
        self.sync.stop();
        if let Some(tend) = self.tend {
            tend.stop();
        }
        self.owner_repair.stop();
        if let Some(server) = self.server {
            server.stop();
        }
        self.shared.folder.save_cache();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_syncing_peer_flushes_received_files_to_the_disk() {
        for sync in [false, true] {
            let d = tempfile::tempdir().unwrap();
            let peer = Peer::start(PeerConfig {
                dir: d.path().to_path_buf(),
                sync,
                ..PeerConfig::default()
            })
            .unwrap();
            assert_eq!(peer.shared.folder.durable(), sync);
            peer.shutdown();
        }
    }
}
