//! One running peer: its folder, history, identity and server threads.
//! [`Peer::start`] binds TCP and UDP on the same port and starts serving;
//! [`Peer::shutdown`] stops every thread and waits for them.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::folder::Folder;
use crate::history::History;
use crate::server::Server;
use crate::sync::{SyncCmd, SyncConfig, SyncEngine};
use crate::{Context, Result};

/// What a peer is started with (the flags, minus the shell's).
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub listen: String,
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
    /// Period of the full re-check while syncing.
    pub interval: Duration,
    /// The peers given on the command line (sync partners).
    pub peers: Vec<String>,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            listen: "127.0.0.1:0".into(),
            dir: PathBuf::from("."),
            allow_upload: false,
            max_connections: 64,
            io_timeout: Duration::from_secs(30),
            udp_payload: None,
            udp_attempts: 3,
            udp_silence: Duration::from_secs(5),
            sync: false,
            interval: Duration::from_secs(10),
            peers: Vec::new(),
        }
    }
}

/// Where a note for the shell comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSource {
    /// A request another peer made of our server.
    Server,
    /// A sync round our own engine ran.
    Sync,
}

/// A one-line note from a background thread for the shell to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub source: EventSource,
    /// As the thread wrote it: names in it come from peers and the disk,
    /// so whoever prints it escapes it.
    pub text: String,
}

impl Event {
    /// The label the shell prints before the text.
    pub fn label(&self) -> &'static str {
        match self.source {
            EventSource::Server => "[server]",
            EventSource::Sync => "[sync]",
        }
    }
}

/// State shared by the server threads and the shell.
pub struct Shared {
    pub folder: Folder,
    pub history: History,
    /// The last-synced state, per partner.
    pub sync_db: crate::sync::db::SyncDb,
    pub peer_id: String,
    pub config: PeerConfig,
    events_tx: Sender<Event>,
    events_rx: Receiver<Event>,
    sync: std::sync::OnceLock<Sender<SyncCmd>>,
}

impl Shared {
    /// A one-line note from a server thread for the shell to print.
    pub fn event(&self, msg: String) {
        self.note(EventSource::Server, msg);
    }

    /// A one-line note from the sync engine for the shell to print.
    pub fn sync_event(&self, msg: String) {
        self.note(EventSource::Sync, msg);
    }

    fn note(&self, source: EventSource, text: String) {
        let _ = self.events_tx.try_send(Event { source, text });
    }

    /// A partner offered its sync index (`entries`), answered with ours
    /// (`local`): let the engine record what we agree on and decide on a round.
    pub fn sync_offered(
        &self,
        peer_id: String,
        addr: String,
        entries: Vec<crate::proto::SyncEntry>,
        local: Vec<crate::proto::SyncEntry>,
    ) {
        if let Some(tx) = self.sync.get() {
            let _ = tx.try_send(SyncCmd::Offered {
                peer_id,
                addr,
                entries,
                local,
            });
        }
    }

    /// The sync engine's inbox.
    pub fn sync_engine(&self) -> Option<&Sender<SyncCmd>> {
        self.sync.get()
    }

    /// Notes from the server threads, for the shell's printer.
    pub fn events(&self) -> Receiver<Event> {
        self.events_rx.clone()
    }
}

pub struct Peer {
    pub shared: Arc<Shared>,
    server: Server,
    sync: SyncEngine,
}

impl Peer {
    pub fn start(config: PeerConfig) -> Result<Peer> {
        let folder = Folder::open(&config.dir)?;
        let history = History::open(folder.state_dir())?;
        let peer_id = load_or_create_id(folder.state_dir())?;
        let sync_db = crate::sync::db::SyncDb::open(folder.state_dir())?;
        let (events_tx, events_rx) = crossbeam_channel::bounded(256);
        let shared = Arc::new(Shared {
            folder,
            history,
            sync_db,
            peer_id,
            config,
            events_tx,
            events_rx,
            sync: std::sync::OnceLock::new(),
        });
        let server = Server::start(shared.clone())?;
        let sync_cfg = SyncConfig {
            enabled: shared.config.sync,
            interval: shared.config.interval,
            peers: shared.config.peers.clone(),
            listen_port: server.local_addr().port(),
        };
        let sync = match SyncEngine::start(shared.clone(), sync_cfg) {
            Ok(s) => s,
            Err(e) => {
                server.stop();
                return Err(e);
            }
        };
        let _ = shared.sync.set(sync.sender());
        Ok(Peer {
            shared,
            server,
            sync,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Stop serving and wait for every server thread.
    pub fn shutdown(self) {
        self.sync.stop();
        self.server.stop();
        self.shared.folder.save_cache();
    }
}

fn load_or_create_id(state: &std::path::Path) -> Result<String> {
    let path = state.join("peer-id");
    if let Ok(id) = fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Ok(id.to_string());
        }
    }
    let id = format!("{:016x}", fastrand::u64(..));
    fs::write(&path, format!("{id}\n")).context(format!("writing {}", path.display()))?;
    Ok(id)
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
