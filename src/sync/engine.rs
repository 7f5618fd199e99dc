//! The sync actor: one thread owns the partners, the sync database and
//! the watcher's wake-ups, and runs one round at a time, as a pipeline:
//! watch ([`watch`]: the paths that changed) -> scan ([`crate::sync::scan`]:
//! those paths into our index) -> index ([`crate::sync::exchange`]: the
//! changes both ways) -> need ([`crate::sync::plan`], over the paths that
//! changed on either side) -> pull and apply ([`round`], [`apply`]) ->
//! record (what both sides agree on, how far each partner is planned).
//! Many wake-ups become one round (a short debounce); the partner check
//! runs every `--interval`, a whole rescan every `--rescan`. It also owns
//! the mass-deletion guard ([`super::guard`]), the memory of failed
//! actions ([`super::stuck`]) and, while syncing, the control socket
//! through which another process in the folder reaches it
//! ([`super::control`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, select};

use super::db::{LazyDb, SyncDb};
use super::dirty::Dirty;
use super::guard::DeletionGuard;
use super::lock::SyncLock;
use super::schedule::{Due, Schedule, backoff};
use super::stuck::Stuck;
use crate::events::EventSender;
use crate::folder::{Folder, IgnoreRules};
use crate::history::History;
use crate::history::{Direction, Record};
use crate::identity::Identity;
use crate::{ErrorKind, Result};

mod apply;
mod pull;
mod report;
mod round;
mod spread;
mod stages;
mod watch;

use report::summary;
pub use report::{PartnerRound, PartnerStatus, SyncReport, SyncStatus};
use stages::PLAN_PART;

#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Run rounds on a timer and on file-system events.
    pub enabled: bool,
    /// Period of the partner check: an exchange with every partner.
    pub interval: Duration,
    /// Period of the whole rescan of the folder.
    pub rescan: Duration,
    /// Watch the folder for changes (else rescans alone find them).
    pub watch: bool,
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
    /// A partner exchanged indexes with us (its entries are stored), and
    /// got ours up to `sent_upto` (`None`: not all of them yet).
    Offered {
        peer_id: String,
        addr: String,
        sent_upto: Option<u64>,
    },
    /// LAN discovery found a peer of our group (same group secret) at
    /// `addr`: a partner, held to the id it announced.
    Discovered {
        peer_id: String,
        addr: String,
    },
    Stop,
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
    /// The last round failed for want of room here: the partner's offer
    /// does not cut the wait short.
    failed_here: bool,
    /// It exchanged with us and has our entries up to this sequence
    /// number: while ours stay there, our next round need not exchange.
    has_ours_upto: Option<u64>,
}

impl Partner {
    fn new(addr: &str, id: Option<String>, configured: bool) -> Partner {
        Partner {
            addr: addr.to_string(),
            id,
            configured,
            last_round: None,
            last_result: None,
            paused: 0,
            failures: 0,
            retry_at: None,
            failed_here: false,
            has_ours_upto: None,
        }
    }
}

/// A running engine; dropping it without `stop` leaves the thread to end
/// when the channel closes.
pub struct SyncEngine {
    tx: Sender<SyncCmd>,
    /// Set by `stop`: cancels the transfers of a round in progress.
    stopping: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    _watcher: Option<watch::Watcher>,
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
            let lock = SyncLock::take(&shared.folder)?;
            shared.folder.stage_incoming()?;
            Some(lock)
        } else {
            None
        };
        let dirty = Arc::new(Mutex::new(Dirty::default()));
        // Walks of the folder before the watcher started do not count for
        // the first scan (see `scan_dirty`).
        let walks = shared
            .db
            .if_open()
            .map_or(0, |db| db.walks.load(Ordering::Relaxed));
        let watcher = if cfg.enabled && cfg.watch {
            start_watch(&shared, dirty.clone(), wake_tx, &cfg)
        } else {
            None
        };
        let partners = cfg
            .peers
            .iter()
            .map(|a| Partner::new(a, None, true))
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
            watching: watcher.is_some(),
            dirty,
            rules: None,
            walks_at_start: Some(walks),
        };
        let thread = thread::Builder::new().name("sync".into()).spawn(move || {
            // Without a watcher its sender is gone: a closed channel is
            // always ready, so wait on one that never is.
            let wake = if actor.watching {
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

/// The watcher of the folder; one that cannot start (the inotify limit
/// reached) is said once in the log, and rescans every `--interval` find
/// the changes instead.
fn start_watch(
    shared: &SyncContext,
    dirty: Arc<Mutex<Dirty>>,
    wake: Sender<()>,
    cfg: &SyncConfig,
) -> Option<watch::Watcher> {
    match watch::watch(shared.folder.root(), dirty, wake) {
        Ok(w) => Some(w),
        Err(e) => {
            let msg = format!(
                "{e}; changes are found by a whole rescan every {} s instead",
                cfg.interval.min(cfg.rescan).as_secs()
            );
            shared
                .history
                .log(&Record::now(Direction::Made, "-", "sync watch", &msg, 0));
            shared.events.sync(msg);
            None
        }
    }
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
    /// Whether a watcher names the changes (else rescans find them).
    watching: bool,
    /// What changed since the last scan.
    dirty: Arc<Mutex<Dirty>>,
    /// The `.dropboxignore` patterns the last plan went by.
    rules: Option<IgnoreRules>,
    /// Until the first scan: the walks made before the watcher started.
    /// The first scan walks the folder whole (it changed while we were
    /// down), unless a walk began since (a partner's first exchange makes
    /// one), which the watcher's paths then complete.
    walks_at_start: Option<u64>,
}

fn now_text() -> String {
    crate::timestamp::event_time(chrono::Utc::now())
}

impl Actor {
    fn run(&mut self, rx: Receiver<SyncCmd>, wake: Receiver<()>) {
        let start = Instant::now();
        // Without a watcher, rescans are all there is: one every interval.
        let rescan = match self.watching {
            true => self.cfg.rescan,
            false => self.cfg.rescan.min(self.cfg.interval),
        };
        let mut schedule =
            Schedule::new(start, self.cfg.enabled, self.cfg.interval).with_rescan(start, rescan);
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
                    Ok(SyncCmd::Offered { peer_id, addr, sent_upto }) => {
                        // A stranger beyond the learned partners' room is
                        // answered (by the server) but not remembered.
                        let Some(i) = self.partner_for(&peer_id, &addr) else { continue };
                        self.partners[i].has_ours_upto = sent_upto;
                        // It is back: no more waiting on it (unless the
                        // failure was ours).
                        if !self.partners[i].failed_here {
                            self.partners[i].failures = 0;
                            self.partners[i].retry_at = None;
                        }
                        if self.cfg.enabled && self.absorb_offer(&peer_id) {
                            schedule.partner_has_work(now, i);
                        }
                    }
                    Ok(SyncCmd::Discovered { peer_id, addr }) => {
                        if let Some(i) = self.partner_for(&peer_id, &addr)
                            && self.cfg.enabled
                        {
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
            if schedule.take_rescan(Instant::now()) {
                self.mark_everything();
                schedule.local_change(Instant::now());
            }
            self.pending = schedule.pending();
            let due = schedule.take_due(Instant::now());
            // Our index is brought up to date whether or not a partner is
            // due (one left alone after failures still asks for it).
            if due.is_some() && self.cfg.enabled {
                let _ = self.scan_dirty();
            }
            match due {
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
            rescan_seconds: self.cfg.rescan.as_secs(),
            watching: self.watching,
            walks: self
                .shared
                .db
                .if_open()
                .map_or(0, |db| db.walks.load(Ordering::Relaxed)),
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
        self.partners
            .push(Partner::new(addr, Some(id.to_string()), false));
        Some(self.partners.len() - 1)
    }

    /// A partner exchanged indexes with us: if the changes need nothing
    /// but bookkeeping here, record what we agree on (so both sides hold
    /// the same last-synced state, which later deletions rely on) and say
    /// there is no work; else a round with it is due.
    fn absorb_offer(&mut self, peer_id: &str) -> bool {
        if self.scan_dirty().is_err() {
            return true;
        }
        let Ok(scope) = self.scope(peer_id) else {
            return true;
        };
        // Much changed: a round does it, in parts.
        if scope.size > PLAN_PART {
            return true;
        }
        let Ok(paths) = self
            .shared
            .sync_db()
            .and_then(|db| db.scope_part(peer_id, &scope, &mut Default::default(), PLAN_PART))
        else {
            return true;
        };
        let Ok(work) = self.need(peer_id, paths) else {
            return true;
        };
        if !work.plan.is_idle() {
            return true;
        }
        let Ok(db) = self.shared.sync_db() else {
            return true;
        };
        let recorded = db
            .apply(peer_id, &work.plan.bookkeeping(&work.local))
            .and_then(|_| db.plan_done(peer_id, &scope, &Default::default()));
        recorded.is_err()
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
                self.shared.folder.stage_incoming()?;
                self.round(i, confirm, &mut report)
            })
        };
        let failed = result.is_err();
        let failed_here = result
            .as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::NoSpace);
        if let Err(e) = result {
            report.fatal(e.to_string());
        }
        let summary = summary(&report);
        let when = now_text();
        let p = &mut self.partners[i];
        p.failures = if failed { p.failures + 1 } else { 0 };
        p.failed_here = failed_here;
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
            self.log(&report.peer, "sync round", &summary, report.bytes);
            if !by_hand {
                self.shared
                    .events
                    .sync(format!("sync with {}: {summary}", report.peer));
            }
        }
        report
    }

    /// Log a sync action with the partner at `peer` (and its id, once
    /// proven).
    fn log(&self, peer: &str, what: &str, outcome: &str, bytes: u64) {
        let id = self.partners.iter().find(|p| p.addr == peer);
        let id = id.and_then(|p| p.id.as_deref());
        self.shared
            .history
            .log(&Record::now(Direction::Made, peer, what, outcome, bytes).by(id));
    }
}
