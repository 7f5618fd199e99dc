//! Running commands: a [`Command`] goes to the current peer (or stays
//! local: history, help, peers) and comes back as an [`Output`] value that
//! [`crate::render`] turns into a table or JSON. Every request made is
//! logged to the history. No terminal I/O happens here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::cli::{Command, DepositCmd, Protocol, SyncVerb, help_text};
use crate::client::Client;
use crate::history::{Direction, Record};
use crate::peer::KNOWN_PEERS_FILE;
use crate::peer::Shared;
use crate::proto::{Entry, Filter, HashEntry};
use crate::secure::{Credentials, KnownPeers};
use crate::timestamp::to_nanos;
use crate::transfer::TransferReport;
use crate::transfer::driver::{self, UdpOptions};
use crate::{Error, Result, bail};

/// A command's result, ready to be rendered.
#[derive(Debug, Clone)]
pub enum Output {
    Nothing,
    Exit,
    Text(String),
    Listing {
        peer: String,
        entries: Vec<Entry>,
    },
    Hashes {
        peer: String,
        files: Vec<HashEntry>,
    },
    Transfer {
        report: TransferReport,
        protocol: Protocol,
        upload: bool,
    },
    History(Vec<crate::history::Record>),
    Peers(Vec<PeerStatus>),
    /// This peer's id, full and short, and where its key is kept.
    Id {
        id: String,
        short: String,
        file: String,
    },
    Sync(crate::sync::SyncReport),
    SyncStatus(crate::sync::SyncStatus),
    Deposited(crate::deposit::put::DepositReport),
    Retrieved(crate::deposit::get::Retrieved),
    Replicas(Vec<crate::deposit::get::Replica>),
    Forgotten(crate::deposit::get::Forgotten),
    /// What `copies` and `repair` changed.
    Changed(Vec<crate::deposit::act::Change>),
    /// A result that is also a failure (fewer copies than wanted): shown,
    /// then the error; the command fails.
    Partial {
        out: Box<Output>,
        error: Error,
    },
    /// A result with warnings from the peer (names it cannot serve).
    Noted {
        out: Box<Output>,
        warnings: Vec<String>,
    },
}

impl Output {
    /// `out`, with the peer's warnings attached if there are any.
    fn noted(out: Output, warnings: Vec<String>) -> Output {
        if warnings.is_empty() {
            out
        } else {
            Output::Noted {
                out: Box::new(out),
                warnings,
            }
        }
    }
}

/// One row of `peers`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerStatus {
    pub address: String,
    /// How it was found: `flag` (`--peer`, `peer use`) or `lan`.
    pub found: &'static str,
    pub current: bool,
    pub reachable: bool,
    pub peer_id: Option<String>,
    pub accepts_uploads: Option<bool>,
    /// What a LAN announcement says: its zone, whether it is a store.
    pub zone: Option<String>,
    pub store: Option<bool>,
    /// A store's free room, as it says.
    pub free: Option<u64>,
    pub error: Option<String>,
}

/// Peers found on the LAN that `peers` lists (and asks) at most.
const LAN_LISTED: usize = 16;

/// Commands from one user against a list of peers.
pub struct Session {
    shared: Arc<Shared>,
    /// The peers' addresses (`HOST:PORT`), as given or added by `peer use`.
    addresses: Vec<String>,
    current: usize,
    cancel: Arc<AtomicBool>,
    /// The address and proven id of the peer the running command reached
    /// (for its history line).
    reached: std::cell::RefCell<Option<(String, String)>>,
}

/// Progress of a transfer: (bytes done, bytes in all).
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

impl Session {
    pub fn new(shared: Arc<Shared>, addresses: Vec<String>, cancel: Arc<AtomicBool>) -> Session {
        Session {
            shared,
            addresses,
            current: 0,
            cancel,
            reached: Default::default(),
        }
    }

    /// The address of the current peer, if any.
    pub fn current_address(&self) -> Option<&str> {
        self.addresses.get(self.current).map(String::as_str)
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The address of the peer commands go to, or why there is none.
    fn address(&self) -> Result<String> {
        match self.current_address() {
            Some(p) => Ok(p.to_string()),
            None => {
                bail!("no peer to ask; start with --peer HOST:PORT or type `peer use HOST:PORT`")
            }
        }
    }

    fn connect(&self, addr: &str) -> Result<Client> {
        let client = Client::connect(
            addr,
            &self.shared.identity.credentials(),
            self.cancel.clone(),
            self.shared.config.io_timeout,
        )?;
        let id = client.remote_id().to_string();
        self.reached.replace(Some((addr.to_string(), id)));
        Ok(client)
    }

    /// `peer forget ADDR`: in this process's `known_peers`, and in the
    /// folder's own when that is another file and exists (a client run on
    /// the folder of a running `--sync` peer reaches that peer's file,
    /// which it reads at every check).
    fn forget_peer(&self, addr: &str) -> Result<Output> {
        let ours = self.shared.private_dir().join(KNOWN_PEERS_FILE);
        let folders = self.shared.folder.state_path().join(KNOWN_PEERS_FILE);
        let mut files = vec![ours.clone()];
        if folders != ours && folders.exists() {
            files.push(folders);
        }
        let mut said = Vec::new();
        for file in files {
            if let Some(id) = KnownPeers::at(&file).forget(addr)? {
                said.push(format!(
                    "forgot id {id} at {addr} (in {}); the next connection there remembers the id it proves",
                    file.display()
                ));
            }
        }
        if said.is_empty() {
            said.push(format!("no id was remembered at {addr}"));
        }
        Ok(Output::Text(said.join("\n")))
    }

    /// Run one command. `line` is what the user typed (for the history).
    pub fn run(&mut self, cmd: Command, line: &str, progress: Progress) -> Result<Output> {
        self.cancel.store(false, Ordering::SeqCst);
        let remote = matches!(
            cmd,
            Command::IndexLonglist
                | Command::IndexShortlist { .. }
                | Command::IndexRegex(_)
                | Command::HashVerify(_)
                | Command::HashCheckall
                | Command::Download { .. }
                | Command::Upload { .. }
                | Command::Sync(SyncVerb::Now | SyncVerb::Confirm)
                | Command::Deposit(_)
        );
        self.reached.replace(None);
        let result = self.execute(cmd, progress);
        // The one place a command's MD5s (a file received) reach the disk.
        self.shared.folder.save_cache();
        if remote {
            let peer = self.current_address().unwrap_or("-").to_string();
            let (outcome, bytes) = match &result {
                Ok(Output::Transfer { report, .. }) => ("ok".to_string(), report.size),
                Ok(_) => ("ok".to_string(), 0),
                Err(e) => (format!("error: {e}"), 0),
            };
            let reached = self.reached.take();
            let id = reached.filter(|(a, _)| *a == peer).map(|(_, id)| id);
            let record = Record::now(Direction::Made, &peer, line.trim(), &outcome, bytes);
            self.shared.history.log(&record.by(id.as_deref()));
        }
        result
    }

    fn execute(&mut self, cmd: Command, progress: Progress) -> Result<Output> {
        match cmd {
            Command::Nothing => Ok(Output::Nothing),
            Command::Exit => Ok(Output::Exit),
            Command::Help(topic) => Ok(Output::Text(help_text(topic.as_deref())?)),
            Command::IndexLonglist => self.listing(Filter::All),
            Command::IndexShortlist { start, end } => self.listing(Filter::Between {
                start_ns: to_nanos(start),
                end_ns: to_nanos(end),
            }),
            Command::IndexRegex(expr) => self.listing(Filter::Regex { expr }),
            Command::HashVerify(name) => self.hashes(Some(&name)),
            Command::HashCheckall => self.hashes(None),
            Command::Download {
                protocol: Protocol::Tcp,
                name,
            } => {
                let peer = self.address()?;
                let report = self
                    .connect(&peer)?
                    .download(&name, &self.shared.folder, progress)?;
                Ok(Output::Transfer {
                    report,
                    protocol: Protocol::Tcp,
                    upload: false,
                })
            }
            Command::Download {
                protocol: Protocol::Udp,
                name,
            } => {
                let peer = self.address()?;
                let cfg = &self.shared.config;
                let opts = UdpOptions {
                    payload: cfg.udp_payload.map(|p| p as u32),
                    attempts: cfg.udp_attempts,
                    silence: cfg.udp_silence,
                };
                // The keys come over the encrypted TCP channel.
                let ticket = self.connect(&peer)?.udp_ticket()?;
                let report = driver::download(
                    &peer,
                    ticket,
                    &name,
                    &self.shared.folder,
                    &opts,
                    &self.cancel,
                    progress,
                )?;
                Ok(Output::Transfer {
                    report,
                    protocol: Protocol::Udp,
                    upload: false,
                })
            }
            Command::Upload { name, force } => {
                let peer = self.address()?;
                let report =
                    self.connect(&peer)?
                        .upload(&name, &self.shared.folder, force, progress)?;
                Ok(Output::Transfer {
                    report,
                    protocol: Protocol::Tcp,
                    upload: true,
                })
            }
            Command::History(n) => Ok(Output::History(self.shared.history.last(n.unwrap_or(20))?)),
            Command::Sync(verb) => self.sync(verb),
            Command::Peers => Ok(Output::Peers(self.peer_statuses())),
            Command::Id => {
                let identity = &self.shared.identity;
                let loaded = identity.load()?;
                Ok(Output::Id {
                    id: loaded.full.clone(),
                    short: loaded.id.short(),
                    file: identity.path().display().to_string(),
                })
            }
            Command::PeerForget(addr) => self.forget_peer(&addr),
            Command::Deposit(cmd) => self.deposit(cmd, progress),
            Command::PeerUse(what) => {
                let addr = self.resolve_peer(&what)?;
                match self.addresses.iter().position(|p| *p == addr) {
                    Some(i) => self.current = i,
                    None => {
                        self.addresses.push(addr.clone());
                        self.current = self.addresses.len() - 1;
                    }
                }
                Ok(Output::Text(format!("current peer: {addr}")))
            }
        }
    }

    /// `deposit`, `retrieve`, `replicas`, `forget`: with the stores among
    /// our peers and those found on the LAN.
    fn deposit(&self, cmd: DepositCmd, progress: Progress) -> Result<Output> {
        use crate::deposit::{act, get, put};
        let ctx = self
            .shared
            .deposit_ctx(&self.addresses, self.cancel.clone())?;
        let partial = |out: Output, error: Option<Error>| match error {
            Some(error) => Output::Partial {
                out: Box::new(out),
                error,
            },
            None => out,
        };
        Ok(match cmd {
            DepositCmd::Put { name, copies } => {
                let (report, short) = put::deposit(&ctx, &name, copies, progress)?;
                partial(Output::Deposited(report), short)
            }
            DepositCmd::Retrieve { name, local } => {
                Output::Retrieved(get::retrieve(&ctx, &name, local.as_deref(), progress)?)
            }
            DepositCmd::Replicas(name) => Output::Replicas(get::replicas(&ctx, name.as_deref())?),
            DepositCmd::Forget { name, yes: false } => bail!(
                kind: BadInput,
                "forget removes every copy of {name} on every store; to go ahead: forget {name} --yes"
            ),
            DepositCmd::Copies { name, copies } => {
                let (change, short) = act::copies(&ctx, &name, copies)?;
                partial(Output::Changed(vec![change]), short)
            }
            DepositCmd::Repair => {
                let (changes, short) = act::repair(&ctx)?;
                partial(Output::Changed(changes), short)
            }
            DepositCmd::Forget { name, yes: true } => {
                let (done, left) = get::forget(&ctx, &name)?;
                partial(Output::Forgotten(done), left)
            }
        })
    }

    /// `sync`, `sync status`, `sync confirm`: answered by our own engine,
    /// or, when we do not sync the folder ourselves and another process
    /// does, by that process through its control socket.
    fn sync(&self, verb: SyncVerb) -> Result<Output> {
        use crate::sync::SyncCmd;
        use crate::sync::control::{self, Answer, Request};
        if !self.shared.config.sync {
            let req = match verb {
                SyncVerb::Status => Request::Status,
                SyncVerb::Now | SyncVerb::Confirm => Request::Sync {
                    confirm: verb == SyncVerb::Confirm,
                },
            };
            match control::ask(self.shared.folder.state_path(), &req, &self.cancel)? {
                Some(Answer::Status(s)) => return Ok(Output::SyncStatus(s)),
                Some(Answer::Report(r)) => return sync_report(r, true),
                Some(Answer::Error(e)) => bail!("the process that syncs this folder says: {e}"),
                None => {}
            }
        }
        let engine = self
            .shared
            .sync_engine()
            .ok_or_else(|| Error::new("the sync engine is not running"))?;
        let gone = || Error::new("the sync engine stopped");
        match verb {
            SyncVerb::Status => {
                let (tx, rx) = crossbeam_channel::bounded(1);
                engine.send(SyncCmd::Status(tx)).map_err(|_| gone())?;
                Ok(Output::SyncStatus(rx.recv().map_err(|_| gone())?))
            }
            SyncVerb::Now | SyncVerb::Confirm => {
                let (tx, rx) = crossbeam_channel::bounded(1);
                engine
                    .send(SyncCmd::RunNow(verb == SyncVerb::Confirm, tx))
                    .map_err(|_| gone())?;
                sync_report(rx.recv().map_err(|_| gone())?, false)
            }
        }
    }

    fn listing(&self, filter: Filter) -> Result<Output> {
        let peer = self.address()?;
        let mut client = self.connect(&peer)?;
        let entries = client.index(filter)?;
        let out = Output::Listing { peer, entries };
        Ok(Output::noted(out, client.take_notes()))
    }

    fn hashes(&self, name: Option<&str>) -> Result<Output> {
        let peer = self.address()?;
        let mut client = self.connect(&peer)?;
        let files = client.hashes(name)?;
        let out = Output::Hashes { peer, files };
        Ok(Output::noted(out, client.take_notes()))
    }

    fn peer_statuses(&self) -> Vec<PeerStatus> {
        let mut all: Vec<PeerStatus> = self
            .addresses
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let mut p = self.probe(addr);
                p.current = i == self.current;
                p
            })
            .collect();
        // The peers found on the LAN that no flag names, each asked too
        // (the announcement only suggests the address): our group's and
        // then the longest known, 16 at most, so a crowded network does
        // not make `peers` slow.
        for f in self.shared.discovered().into_iter().take(LAN_LISTED) {
            let addr = f.addr.to_string();
            if all.iter().any(|p| p.address == addr) {
                continue;
            }
            let mut p = self.probe(&addr);
            p.found = "lan";
            // What it proved over the handshake wins over what it announced.
            p.zone = p.zone.or(Some(f.zone));
            p.store = p.store.or(Some(f.store));
            if p.peer_id.is_none() {
                // Not proven: what it announced, for the table.
                p.peer_id = Some(f.id.to_string());
            }
            all.push(p);
        }
        all
    }

    /// Whether the peer at `addr` answers, and who it proves to be.
    fn probe(&self, addr: &str) -> PeerStatus {
        let creds = self.shared.identity.credentials();
        let probe = Client::connect(addr, &creds, self.cancel.clone(), Duration::from_secs(2))
            .and_then(|mut c| c.info());
        let (info, error) = match probe {
            Ok(i) => (Some(i), None),
            Err(e) => (None, Some(e.to_string())),
        };
        PeerStatus {
            address: addr.to_string(),
            found: "flag",
            current: false,
            reachable: info.is_some(),
            peer_id: info.as_ref().map(|i| i.peer_id.clone()),
            accepts_uploads: info.as_ref().map(|i| i.allow_upload),
            zone: info.as_ref().and_then(|i| i.zone.clone()),
            store: info.as_ref().map(|i| i.store.is_some()),
            free: info.as_ref().and_then(|i| i.store).map(|s| s.free),
            error,
        }
    }

    /// What `peer use` names: a `HOST:PORT`, or the id (or a unique prefix
    /// of one, dashes optional) of a peer found on the LAN.
    fn resolve_peer(&self, what: &str) -> Result<String> {
        use std::net::ToSocketAddrs;
        let plain = |s: &str| s.replace('-', "").to_ascii_uppercase();
        let wanted = plain(what);
        if !what.contains(':') && wanted.len() >= 4 {
            let found = self.shared.discovered();
            let hits: Vec<_> = found
                .iter()
                .filter(|f| plain(&f.id.to_string()).starts_with(&wanted))
                .collect();
            match hits.as_slice() {
                [one] => return Ok(one.addr.to_string()),
                [] => {}
                _ => bail!(
                    "{what} names {} peers found on the LAN; give more of the id",
                    hits.len()
                ),
            }
        }
        what.to_socket_addrs().map_err(|e| {
            let lan = if self.shared.discovering() {
                " (nor the id of a peer found on the LAN)"
            } else {
                ""
            };
            Error::new(format!("cannot use {what} as a peer{lan}: {e}"))
        })?;
        Ok(what.to_string())
    }
}

/// A round's report, or an error when there was nobody to sync with or
/// nothing went through. `elsewhere`: the round ran in the process that
/// syncs this folder, with its partners.
fn sync_report(report: crate::sync::SyncReport, elsewhere: bool) -> Result<Output> {
    if report.partners.is_empty() {
        if elsewhere {
            bail!(
                "the process that syncs this folder has no peer to sync with (it syncs with its own --peer partners)"
            );
        }
        bail!(
            "no peer to sync with; start with --peer HOST:PORT (or let peers connect to this one)"
        );
    }
    if let Some(p) = report.partners.iter().find(|p| !p.errors.is_empty())
        && report
            .partners
            .iter()
            .all(|p| p.pulled + p.renamed + p.deleted == 0)
    {
        bail!("sync with {} failed: {}", p.peer, p.errors.join("; "));
    }
    Ok(Output::Sync(report))
}

/// Files in a peer's folder (for completion); a peer that does not answer
/// within two seconds gives none.
pub fn remote_files(addr: &str, creds: &Credentials) -> Vec<String> {
    Client::connect(
        addr,
        creds,
        Arc::new(AtomicBool::new(false)),
        Duration::from_secs(2),
    )
    .and_then(|mut c| c.index(Filter::All))
    .map(|es| {
        es.into_iter()
            .filter(|e| e.kind == crate::proto::Kind::File)
            .map(|e| e.name)
            .collect()
    })
    .unwrap_or_default()
}
