//! The sync actor: one thread owns the partners, the last-synced database
//! and the file-system watcher's wake-ups, and runs one round at a time.
//! Many wake-ups become one round: watcher events only mark the folder
//! dirty and set a short deadline (a debounce); a periodic full re-check
//! catches whatever the watcher missed. It also owns the mass-deletion
//! guard ([`super::guard`]), the memory of failed actions
//! ([`super::stuck`]) and, while syncing, the control socket through which
//! another process in the folder reaches it ([`super::control`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, select};
use serde::{Deserialize, Serialize};

use super::db::{LazyDb, SyncDb};
use super::guard::DeletionGuard;
use super::lock::SyncLock;
use super::plan::{Index, plan};
use super::schedule::{Due, Schedule, backoff};
use super::stuck::Stuck;
use crate::events::EventSender;
use crate::folder::Folder;
use crate::folder::IgnoreRules;
use crate::history::History;
use crate::history::{Direction, Record};
use crate::identity::Identity;
use crate::names::clean_name;
use crate::proto::SyncEntry;
use crate::{Error, Result};

mod round;

#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Run rounds on a timer and on file-system events.
    pub enabled: bool,
    pub interval: Duration,
    /// Partners given with `--peer`.
    pub peers: Vec<String>,
    /// Our listening port, told to partners so they can sync back.
    pub listen_port: u16,
}

/// What the engine works with: the folder, the logs, this peer's id and
/// the last-synced database; not the whole peer.
#[derive(Clone)]
pub struct SyncContext {
    pub folder: Arc<Folder>,
    pub history: Arc<History>,
    pub events: EventSender,
    pub identity: Arc<Identity>,
    pub db: Arc<LazyDb>,
}

impl SyncContext {
    pub fn peer_id(&self) -> &str {
        self.identity.id()
    }

    pub fn sync_db(&self) -> Result<&SyncDb> {
        self.db.get()
    }
}

/// Messages to the engine.
pub enum SyncCmd {
    /// One round with every partner now (`sync`); `true` also confirms a
    /// paused mass deletion (`sync confirm`).
    RunNow(bool, Sender<SyncReport>),
    Status(Sender<SyncStatus>),
    /// A partner sent us its index.
    Offered {
        peer_id: String,
        addr: String,
        entries: Vec<SyncEntry>,
        /// Our index as the server just computed it for the answer.
        local: Vec<SyncEntry>,
        /// The memory these take, held against the server's offer budget
        /// until the engine is done with them.
        _held: crate::limits::Held,
    },
    Stop,
}

/// What one round did with one partner.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PartnerRound {
    pub peer: String,
    pub peer_id: Option<String>,
    pub pulled: usize,
    pub renamed: usize,
    pub deleted: usize,
    pub conflicts: usize,
    pub folders: usize,
    pub modes: usize,
    pub bytes: u64,
    /// Deletions held back until `sync confirm`.
    pub paused_deletions: usize,
    /// Actions not tried again: they failed before on the same states.
    #[serde(default)]
    pub left_alone: usize,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncReport {
    pub partners: Vec<PartnerRound>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartnerStatus {
    pub peer: String,
    pub peer_id: Option<String>,
    pub last_round: Option<String>,
    pub last_result: Option<String>,
    pub paused_deletions: usize,
    /// Failed rounds in a row.
    pub failures: u32,
    /// While a failing partner is left alone: when the timer tries it next.
    pub next_try: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncStatus {
    pub enabled: bool,
    pub interval_seconds: u64,
    pub last_round: Option<String>,
    pub pending: bool,
    pub partners: Vec<PartnerStatus>,
}

struct Partner {
    addr: String,
    id: Option<String>,
    configured: bool,
    last_round: Option<String>,
    last_result: Option<String>,
    paused: usize,
    /// Failed rounds in a row, and when the timer may try again.
    failures: u32,
    retry_at: Option<Instant>,
}

/// A running engine; dropping it without `stop` leaves the thread to end
/// when the channel closes.
pub struct SyncEngine {
    tx: Sender<SyncCmd>,
    /// Set by `stop`: cancels the transfers of a round in progress.
    stopping: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    _watcher: Option<notify::RecommendedWatcher>,
    /// While `--sync` runs: the socket another process of the folder asks.
    control: Mutex<Option<super::control::ControlServer>>,
    /// Held while `--sync` runs.
    _lock: Option<SyncLock>,
}

impl SyncEngine {
    pub fn start(shared: SyncContext, cfg: SyncConfig) -> Result<SyncEngine> {
        let (tx, rx) = bounded::<SyncCmd>(64);
        // Many events, one wake-up: a channel of one and a send that never blocks.
        let (wake_tx, wake_rx) = bounded::<()>(1);
        let lock = if cfg.enabled {
            shared.folder.keep_durable();
            Some(SyncLock::take(&shared.folder)?)
        } else {
            None
        };
        let watcher = if cfg.enabled {
            Some(watch(shared.folder.root(), wake_tx)?)
        } else {
            None
        };
        let partners = cfg
            .peers
            .iter()
            .map(|a| Partner {
                addr: a.clone(),
                id: None,
                configured: true,
                last_round: None,
                last_result: None,
                paused: 0,
                failures: 0,
                retry_at: None,
            })
            .collect();
        let control = if cfg.enabled {
            start_control(&shared, tx.clone())
        } else {
            None
        };
        let stopping = Arc::new(AtomicBool::new(false));
        let mut actor = Actor {
            shared,
            cfg,
            partners,
            last_round: None,
            pending: false,
            stopping: stopping.clone(),
            guard: DeletionGuard::default(),
            stuck: Stuck::default(),
            unservable_told: None,
        };
        let thread = thread::Builder::new().name("sync".into()).spawn(move || {
            // Without a watcher its sender is gone: a closed channel is
            // always ready, so wait on one that never is.
            let wake = if actor.cfg.enabled {
                wake_rx
            } else {
                crossbeam_channel::never()
            };
            actor.run(rx, wake)
        })?;
        Ok(SyncEngine {
            tx,
            stopping,
            thread: Mutex::new(Some(thread)),
            _watcher: watcher,
            control: Mutex::new(control),
            _lock: lock,
        })
    }

    pub fn sender(&self) -> Sender<SyncCmd> {
        self.tx.clone()
    }

    /// Stop: cancel the round in progress, if any (its transfers stop at
    /// their next chunk and remove their temporary files), and wait for
    /// the thread.
    pub fn stop(&self) {
        if let Some(c) = self.control.lock().ok().and_then(|mut c| c.take()) {
            c.stop();
        }
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.tx.send(SyncCmd::Stop);
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

/// The control socket of a syncing peer; a folder where it cannot be made
/// still syncs, and says why `sync` from another process will not reach it.
fn start_control(
    shared: &SyncContext,
    tx: Sender<SyncCmd>,
) -> Option<super::control::ControlServer> {
    match super::control::ControlServer::start(shared.folder.state_dir(), tx) {
        Ok(c) => Some(c),
        Err(e) => {
            let msg = format!("no control socket ({e}); other processes cannot reach this one");
            shared
                .history
                .log(&Record::now(Direction::Made, "-", "sync control", &msg, 0));
            shared.events.sync(msg);
            None
        }
    }
}

/// Watch the folder; events inside the state folder and on temporary
/// transfer files (our own writes) are ignored.
fn watch(root: &Path, wake: Sender<()>) -> Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let base = root.to_path_buf();
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        let relevant = ev.paths.iter().any(|p| {
            p.strip_prefix(&base)
                .ok()
                .and_then(|r| r.to_str())
                .is_some_and(|r| !r.is_empty() && !crate::names::is_private(r))
        });
        if relevant {
            let _ = wake.try_send(());
        }
    })
    .map_err(|e| Error::new(format!("cannot watch the folder: {e}")))?;
    w.watch(root, notify::RecursiveMode::Recursive)
        .map_err(|e| Error::new(format!("cannot watch {}: {e}", root.display())))?;
    Ok(w)
}

struct Actor {
    shared: SyncContext,
    cfg: SyncConfig,
    partners: Vec<Partner>,
    last_round: Option<String>,
    pending: bool,
    /// The cancel flag of every connection a round opens.
    stopping: Arc<AtomicBool>,
    guard: DeletionGuard,
    stuck: Stuck,
    /// The last word given on names that cannot be synced (not UTF-8), so
    /// it is said once, not every round.
    unservable_told: Option<String>,
}

fn now_text() -> String {
    crate::timestamp::event_time(chrono::Utc::now())
}

/// An offered index as (present paths, the sender's last-agreed states:
/// its tombstones and the paths it holds as agreed); names that are not
/// clean relative paths, and paths our `.dropboxignore` excludes, are
/// dropped.
fn to_index(entries: &[SyncEntry], rules: &IgnoreRules) -> (Index, Index) {
    let mut present = Index::new();
    let mut agreed = Index::new();
    for e in entries {
        if clean_name(&e.name).as_deref() != Ok(e.name.as_str())
            || rules.ignores(&e.name, e.kind == crate::proto::Kind::Dir)
        {
            continue;
        }
        let state = super::state_of(e);
        if e.deleted || e.agreed {
            agreed.insert(e.name.clone(), state.clone());
        }
        if !e.deleted {
            present.insert(e.name.clone(), state);
        }
    }
    (present, agreed)
}

impl Actor {
    fn run(&mut self, rx: Receiver<SyncCmd>, wake: Receiver<()>) {
        let mut schedule = Schedule::new(Instant::now(), self.cfg.enabled, self.cfg.interval);
        loop {
            let now = Instant::now();
            let until = schedule.next_wake();
            select! {
                recv(rx) -> cmd => match cmd {
                    Err(_) | Ok(SyncCmd::Stop) => break,
                    Ok(SyncCmd::RunNow(confirm, reply)) => {
                        // Asked by hand: what failed before is tried again.
                        self.stuck.clear();
                        let report = self.round_all(confirm, false, true);
                        if confirm {
                            self.guard.confirmed();
                        }
                        let _ = reply.send(report);
                    }
                    Ok(SyncCmd::Status(reply)) => {
                        let _ = reply.send(self.status());
                    }
                    Ok(SyncCmd::Offered { peer_id, addr, entries, local, .. }) => {
                        // A stranger beyond the learned partners' room is
                        // answered (by the server) but not remembered.
                        let Some(i) = self.partner_for(&peer_id, &addr) else { continue };
                        // It is back: no more waiting on it.
                        self.partners[i].failures = 0;
                        self.partners[i].retry_at = None;
                        if self.absorb_offer(&peer_id, &entries, &local) && self.cfg.enabled {
                            schedule.partner_has_work(now, i);
                        }
                    }
                },
                recv(wake) -> msg => {
                    if msg.is_err() {
                        break;
                    }
                    schedule.local_change(now);
                },
                recv(crossbeam_channel::at(until)) -> _ => {},
            }
            self.pending = schedule.pending();
            match schedule.take_due(Instant::now()) {
                Some(Due::All) => {
                    self.round_all(false, true, false);
                }
                Some(Due::Some(partners)) => {
                    for i in partners {
                        self.round_logged(i, false, false);
                    }
                }
                None => {}
            }
            self.pending = schedule.pending();
        }
    }

    fn status(&self) -> SyncStatus {
        SyncStatus {
            enabled: self.cfg.enabled,
            interval_seconds: self.cfg.interval.as_secs(),
            last_round: self.last_round.clone(),
            pending: self.pending,
            partners: self
                .partners
                .iter()
                .map(|p| PartnerStatus {
                    peer: p.addr.clone(),
                    peer_id: p.id.clone(),
                    last_round: p.last_round.clone(),
                    last_result: p.last_result.clone(),
                    paused_deletions: p.paused,
                    failures: p.failures,
                    next_try: p.retry_at.and_then(|t| {
                        let wait = t.checked_duration_since(Instant::now())?;
                        let when = chrono::Utc::now() + chrono::Duration::from_std(wait).ok()?;
                        Some(crate::timestamp::event_time(when))
                    }),
                })
                .collect(),
        }
    }

    /// The partner with this id (updating its address), or a new one.
    fn partner_for(&mut self, id: &str, addr: &str) -> Option<usize> {
        if let Some(i) = self
            .partners
            .iter()
            .position(|p| p.id.as_deref() == Some(id))
        {
            if !self.partners[i].configured {
                self.partners[i].addr = addr.to_string();
            }
            return Some(i);
        }
        if let Some(i) = self
            .partners
            .iter()
            .position(|p| p.id.is_none() && p.addr == addr)
        {
            self.partners[i].id = Some(id.to_string());
            return Some(i);
        }
        let learned = self.partners.iter().filter(|p| !p.configured).count();
        if learned >= crate::limits::LEARNED_PARTNERS {
            return None;
        }
        self.partners.push(Partner {
            addr: addr.to_string(),
            id: Some(id.to_string()),
            configured: false,
            last_round: None,
            last_result: None,
            paused: 0,
            failures: 0,
            retry_at: None,
        });
        Some(self.partners.len() - 1)
    }

    /// A partner showed us its index: record what we agree on (so both
    /// sides hold the same last-synced state, which later deletions rely
    /// on), and say whether a round with it would do anything.
    fn absorb_offer(&self, peer_id: &str, entries: &[SyncEntry], local: &[SyncEntry]) -> bool {
        let Ok(db) = self.shared.sync_db() else {
            return true;
        };
        let Ok(base) = db.load(peer_id) else {
            return true;
        };
        let rules = self.shared.folder.ignore_rules();
        let base = super::without_ignored(base, &rules);
        let (local, _) = to_index(local, &rules);
        let (remote, their_base) = to_index(entries, &rules);
        let plan = plan(&local, &remote, &base, &their_base);
        let _ = db.apply(peer_id, &plan.bookkeeping(&local));
        !plan.is_idle()
    }

    /// A round with every partner; with `due_only`, not with those still
    /// waiting out their backoff. Half an interval of slack: a timer tick
    /// that comes a moment before a partner's time still takes it.
    /// `by_hand`: asked for by `sync`, which shows the report itself.
    fn round_all(&mut self, confirm: bool, due_only: bool, by_hand: bool) -> SyncReport {
        let soon = Instant::now() + self.cfg.interval / 2;
        let due: Vec<usize> = (0..self.partners.len())
            .filter(|&i| !due_only || self.partners[i].retry_at.is_none_or(|t| t <= soon))
            .collect();
        let partners = due
            .into_iter()
            .map(|i| self.round_logged(i, confirm, by_hand))
            .collect();
        SyncReport { partners }
    }

    /// A round with partner `i`, logged; one the engine started by itself
    /// is also told to the shell (a round asked for by hand is shown by
    /// the command that asked).
    fn round_logged(&mut self, i: usize, confirm: bool, by_hand: bool) -> PartnerRound {
        let started = Instant::now();
        let mut report = PartnerRound {
            peer: self.partners[i].addr.clone(),
            ..Default::default()
        };
        // Without `--sync` the lock is taken for this round only.
        let result = if self.cfg.enabled {
            self.round(i, confirm, &mut report)
        } else {
            SyncLock::take(&self.shared.folder).and_then(|_lock| {
                self.shared.folder.keep_durable();
                self.round(i, confirm, &mut report)
            })
        };
        let failed = result.is_err();
        if let Err(e) = result {
            report.errors.push(e.to_string());
        }
        let summary = summary(&report);
        let when = now_text();
        let p = &mut self.partners[i];
        p.failures = if failed { p.failures + 1 } else { 0 };
        // The regular next try is one interval on; the backoff comes on top.
        p.retry_at = (p.failures > 0)
            .then(|| started + self.cfg.interval + backoff(self.cfg.interval, p.failures));
        p.last_round = Some(when.clone());
        p.last_result = Some(summary.clone());
        p.paused = report.paused_deletions;
        report.peer_id = p.id.clone();
        self.last_round = Some(when);
        let busy = report.pulled
            + report.renamed
            + report.deleted
            + report.conflicts
            + report.folders
            + report.modes;
        if busy > 0 || !report.errors.is_empty() || report.paused_deletions > 0 {
            self.shared.history.log(&Record::now(
                Direction::Made,
                &report.peer,
                "sync round",
                &summary,
                report.bytes,
            ));
            if !by_hand {
                self.shared
                    .events
                    .sync(format!("sync with {}: {summary}", report.peer));
            }
        }
        report
    }

    fn log(&self, peer: &str, what: &str, outcome: &str, bytes: u64) {
        self.shared
            .history
            .log(&Record::now(Direction::Made, peer, what, outcome, bytes));
    }
}

fn summary(r: &PartnerRound) -> String {
    let mut parts = Vec::new();
    for (n, what) in [
        (r.pulled, "pulled"),
        (r.renamed, "renamed"),
        (r.deleted, "deleted"),
        (r.conflicts, "conflicts"),
        (r.folders, "folders"),
        (r.modes, "modes"),
    ] {
        if n > 0 {
            parts.push(format!("{what} {n}"));
        }
    }
    if r.paused_deletions > 0 {
        parts.push(format!(
            "{} deletions paused (more than half the files within {} minutes): `sync confirm` to apply",
            r.paused_deletions,
            super::guard::WINDOW.as_secs() / 60
        ));
    }
    if r.left_alone > 0 {
        parts.push(format!(
            "{} left alone (failed before; `sync` tries again)",
            r.left_alone
        ));
    }
    match r.errors.as_slice() {
        [] => {}
        [one] => parts.push(format!("error: {one}")),
        many => parts.push(format!("{} errors: {}", many.len(), many.join("; "))),
    }
    if parts.is_empty() {
        "in sync".into()
    } else {
        parts.join(", ")
    }
}
