//! One round with one partner: exchange indexes, plan, then apply the
//! plan in order: folders and renames first, the pulls in one pipelined
//! batch over up to one connection per core, then modes and deletions.
//! Actions that failed before on the same states are left alone
//! ([`super::super::stuck`]); deletions pass the guard
//! ([`super::super::guard`]) and go to the trash.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use std::collections::{BTreeSet, HashSet};

use super::apply::as_planned;
use super::spread::Spread;
use super::stages::{PLAN_PART, Work, need_in};
use super::{Actor, PartnerRound};
use crate::client::{Client, LandOver};
use crate::folder::IGNORE_FILE;
use crate::folder::OnDisk;
use crate::limits::LOGGED_EACH;
use crate::secure::Credentials;
use crate::sync::local::{LocalChange, Seen};
use crate::sync::plan::{Action, FileState, Index};
use crate::sync::remote::PartCursor;
use crate::{Error, ErrorKind, Result};

/// Requests a pulling connection keeps in flight.
const IN_FLIGHT: usize = 64;

/// Longest a pulled file waits to be recorded in the sync database.
const RECORD_EVERY: Duration = Duration::from_millis(50);

/// A pulled file to record: its path, what the partner has there (when
/// the pulled bytes are that), and the file as it landed here.
struct Landed {
    path: String,
    agreed: Option<FileState>,
    here: Option<Seen>,
}

/// What our index holds for a file that landed as `on_disk` with `md5`.
fn seen_landed(on_disk: OnDisk, md5: &str) -> Seen {
    let v = on_disk.version;
    Seen {
        state: FileState {
            kind: crate::proto::Kind::File,
            size: v.size,
            mtime_ns: v.mtime_ns,
            mode: on_disk.mode,
            md5: Some(md5.to_string()),
        },
        ctime_ns: v.ctime_ns,
        ino: v.ino,
    }
}

impl Actor {
    /// One round with partner `i`.
    pub(super) fn round(&mut self, i: usize, confirm: bool, rep: &mut PartnerRound) -> Result<()> {
        self.scan_dirty()?;
        let unservable = self.shared.folder.unservable_names();
        if let Some(u) = unservable
            .clone()
            .filter(|_| unservable != self.unservable_told)
        {
            rep.error(u);
        }
        self.unservable_told = unservable;
        let addr = self.partners[i].addr.clone();
        let creds = self.shared.identity.credentials();
        let mut client = connect_partner(&addr, &creds, &self.stopping)?;
        // A partner learned from its offer is synced with as the id it
        // proved then (one given with --peer is held to the id first seen
        // at its address, by known_peers).
        if let Some(id) = &self.partners[i].id
            && !self.partners[i].configured
            && *id != client.remote_id().to_string()
        {
            return Err(Error::of(
                ErrorKind::Refused,
                format!(
                    "authentication failed: peer {addr} now proves id {}, not the id {id} it synced as; this peer does not sync with it",
                    client.remote_id()
                ),
            ));
        }
        let has_ours_upto = self.partners[i].has_ours_upto.take();
        let remote_id = match (&self.partners[i].id, has_ours_upto) {
            // It exchanged with us since our index last changed: it has
            // all of ours, and what it has new it brings with its own
            // rounds. Its entries are stored already.
            (Some(id), Some(upto)) if upto == self.shared.sync_db()?.local_seq()? => id.clone(),
            _ => crate::sync::exchange::exchange(
                &mut client,
                self.shared.sync_db()?,
                self.shared.peer_id(),
                self.cfg.listen_port,
                self.partners[i].id.as_deref(),
            )?,
        };
        // Remember who answered; merge with a learned entry of the same id.
        if let Some(j) = self
            .partners
            .iter()
            .position(|p| p.id.as_deref() == Some(remote_id.as_str()))
            && j != i
            && !self.partners[j].configured
        {
            self.partners.remove(j);
            let i = if j < i { i - 1 } else { i };
            self.partners[i].id = Some(remote_id.clone());
            return self.round(i, confirm, rep);
        }
        self.partners[i].id = Some(remote_id.clone());
        let scope = self.scope(&remote_id)?;
        let mut pending = BTreeSet::new();
        // One part at a time, read from the database as it goes; the next
        // part is planned while this one runs (parts hold other paths).
        let shared = self.shared.clone();
        let plan_next = |cursor: &mut PartCursor| -> Result<Option<Work>> {
            let db = shared.sync_db()?;
            let part = db.scope_part(&remote_id, &scope, cursor, PLAN_PART)?;
            match part.is_empty() {
                true => Ok(None),
                false => need_in(&shared, &remote_id, part).map(Some),
            }
        };
        let mut cursor = PartCursor::default();
        let mut next = plan_next(&mut cursor)?;
        while let Some(work) = next.take() {
            let (ran, planned) = thread::scope(|s| {
                let planning = s.spawn(|| plan_next(&mut cursor));
                let ran = self.run_plan(&mut client, &remote_id, &work, confirm, rep);
                let planned = planning
                    .join()
                    .unwrap_or_else(|_| Err(Error::new("planning the next part failed")));
                (ran, planned)
            });
            let (touched, left) = ran?;
            next = planned?;
            pending.extend(left);
            // What this round changed here goes into our index now (the
            // watcher would tell too, a moment later).
            self.scan_paths(&touched)?;
        }
        self.shared
            .sync_db()?
            .plan_done(&remote_id, &scope, &pending)
    }

    /// Apply a plan in order (see the module doc) and record what both
    /// sides now agree on; returns the paths it changed here, and those to
    /// plan again next round.
    fn run_plan(
        &mut self,
        client: &mut Client,
        remote_id: &str,
        work: &Work,
        confirm: bool,
        rep: &mut PartnerRound,
    ) -> Result<(BTreeSet<String>, BTreeSet<String>)> {
        let (plan, local, remote) = (&work.plan, &work.local, &work.remote);
        let addr = client.addr().to_string();
        let hold_deletions = !confirm
            && self
                .guard
                .hold(Instant::now(), plan.local_files, plan.deletions());
        if hold_deletions {
            rep.paused_deletions = plan.deletions();
        }
        let mut changes: Vec<(String, Option<FileState>)> = Vec::new();
        // Pulls go in one pipelined batch; everything else runs in plan
        // order around it (folders and renames before, modes and deletions
        // after). A failure is this path's alone, and is not tried again
        // while neither side changes.
        let mut pulls: Vec<(String, Option<FileState>)> = Vec::new();
        // Failed here: left alone while neither side changes. To retry:
        // pending too, but not held against the path (left alone already,
        // or its connection broke: the partner went away, not the action).
        let mut failed: Vec<String> = Vec::new();
        let mut retry: Vec<String> = Vec::new();
        let mut touched = BTreeSet::new();
        let mut folders = HashSet::new();
        let now = Instant::now();
        // Our disk is full: the rest of the plan waits (see the end).
        let mut disk_full = None;
        // The end of the plan (None) flushes the pulls like any non-pull.
        for step in plan.actions.iter().map(Some).chain(std::iter::once(None)) {
            let is_pull = matches!(step, Some((_, Action::Pull | Action::ConflictPull)));
            if !is_pull && !pulls.is_empty() && disk_full.is_none() {
                // What changed here so far (folders just made, still empty)
                // is scanned now, and the pulled files go into the index as
                // they land: no scan walks them again.
                // (A failure asks for a whole scan; the pulls go on.)
                let _ = self.scan_paths(&std::mem::take(&mut touched));
                let batch = std::mem::take(&mut pulls);
                let mut indexed = Vec::new();
                disk_full = disk_full.or(self.pull_batch(
                    client,
                    remote_id,
                    &batch,
                    remote,
                    rep,
                    &mut changes,
                    &mut failed,
                    &mut retry,
                    &mut indexed,
                ));
                let indexed: HashSet<String> = indexed.into_iter().collect();
                touched.extend(
                    batch
                        .into_iter()
                        .map(|(p, _)| p)
                        .filter(|p| !indexed.contains(p)),
                );
            }
            let Some((path, action)) = step.filter(|_| disk_full.is_none()) else {
                break;
            };
            let (l, r) = (planned_local(action, path, local), remote.get(path));
            if !action.is_bookkeeping() && self.stuck.left_alone(remote_id, path, l, r, now) {
                rep.left_alone += 1;
                retry.push(path.clone());
                continue;
            }
            if !action.is_bookkeeping() {
                touched.insert(path.clone());
            }
            if let Action::Rename { from } = action {
                touched.insert(from.clone());
            }
            let outcome = match action {
                Action::Pull | Action::ConflictPull => self
                    .prepare_pull(path, action, l, rep, &mut folders)
                    .map(|expect| pulls.push((path.clone(), expect))),
                _ => self.apply(path, action, l, r, hold_deletions, rep, &mut changes),
            };
            match outcome {
                Err(e) if e.kind() == ErrorKind::NoSpace => {
                    retry.push(path.clone());
                    disk_full = Some(no_room(format!("{path}: {e}")));
                }
                Err(e) => {
                    rep.error(format!("{path}: {e}"));
                    self.log(&addr, &format!("sync {path}"), &format!("error: {e}"), 0);
                    failed.push(path.clone());
                }
                Ok(()) => {}
            }
        }
        let failed_here: HashSet<&str> = failed.iter().map(String::as_str).collect();
        for (path, action) in &plan.actions {
            if failed_here.contains(path.as_str()) {
                let l = planned_local(action, path, local);
                self.stuck.failed(remote_id, path, l, remote.get(path), now);
            }
        }
        failed.extend(retry);
        let pending = self.still_pending(work, &changes, &failed, hold_deletions);
        if !confirm {
            self.guard.applied(Instant::now(), rep.deleted);
        }
        let recorded = self
            .shared
            .sync_db()
            .and_then(|db| db.apply(remote_id, &changes));
        // The round fails (the partner is tried again later and later):
        // with no room, every part would fail the same way.
        if let Some(e) = disk_full {
            return Err(e);
        }
        recorded?;
        Ok((touched, pending))
    }

    /// The paths of a plan that are to be planned again next round: every
    /// action that did not get done (it failed, was left alone or never
    /// tried, was held back, or found a folder not yet empty).
    fn still_pending(
        &self,
        work: &Work,
        changes: &[(String, Option<FileState>)],
        failed: &[String],
        hold_deletions: bool,
    ) -> BTreeSet<String> {
        let done: HashSet<&str> = changes.iter().map(|(p, _)| p.as_str()).collect();
        let mut pending: BTreeSet<String> = failed.iter().cloned().collect();
        for (path, action) in &work.plan.actions {
            let undone = match action {
                Action::Delete if hold_deletions => true,
                Action::RemoveDir => hold_deletions || !done.contains(path.as_str()),
                _ => false,
            };
            if undone {
                pending.insert(path.clone());
            }
            // A rename not done leaves the old name to delete as well.
            if let Action::Rename { from } = action
                && failed.contains(path)
            {
                pending.insert(from.clone());
            }
        }
        pending
    }

    /// [`Actor::pull_all`], its failure noted for the round: when its
    /// connection broke, what it did not pull is tried again next round,
    /// not left alone. Returns the error when our disk is full.
    #[allow(clippy::too_many_arguments)]
    fn pull_batch(
        &self,
        client: &mut Client,
        remote_id: &str,
        pulls: &[(String, Option<FileState>)],
        remote: &Index,
        rep: &mut PartnerRound,
        changes: &mut Vec<(String, Option<FileState>)>,
        failed: &mut Vec<String>,
        retry: &mut Vec<String>,
        indexed: &mut Vec<String>,
    ) -> Option<Error> {
        let before = failed.len();
        let pulled = self.pull_all(
            client, remote_id, pulls, remote, rep, changes, failed, indexed,
        );
        let e = pulled.err()?;
        retry.extend(failed.drain(before..));
        if e.kind() == ErrorKind::NoSpace {
            return Some(no_room(e.to_string()));
        }
        rep.error(format!(
            "pulling from {}: {e}; the rest next round",
            client.addr()
        ));
        None
    }

    /// Record pulled files in the sync database as they land, not only at
    /// the end of the round: a peer killed in between still knows them
    /// after a restart (else a deletion made meanwhile on the other side
    /// would be undone). Batched: what `landed` gathered every
    /// [`RECORD_EVERY`], so many small files cost a few commits; ends when
    /// `done` closes. Returns what it could not record, for the round's
    /// final write.
    /// The files go into our index too, as they landed (no scan has to
    /// look at them again): their paths are returned with the rest.
    fn record_as_they_land(
        &self,
        remote_id: &str,
        landed: &Mutex<Vec<Landed>>,
        done: Receiver<()>,
    ) -> (Vec<(String, Option<FileState>)>, Vec<String>) {
        let (mut unrecorded, mut indexed) = (Vec::new(), Vec::new());
        loop {
            let last = done
                .recv_timeout(RECORD_EVERY)
                .is_err_and(|e| e.is_disconnected());
            let batch = landed.lock().map(|mut l| std::mem::take(&mut *l));
            let batch = batch.unwrap_or_default();
            if batch.is_empty() {
                if last {
                    break;
                }
                continue;
            }
            let (paths, here): (Vec<String>, Vec<LocalChange>) = batch
                .iter()
                .filter_map(|l| {
                    let seen = l.here.clone()?;
                    Some((l.path.clone(), LocalChange::Present(l.path.clone(), seen)))
                })
                .unzip();
            let db = self.shared.sync_db();
            if db.as_ref().is_ok_and(|db| db.local_apply(&here).is_ok()) {
                indexed.extend(paths);
            }
            let agreed: Vec<_> = batch.into_iter().map(|l| (l.path, l.agreed)).collect();
            if db.and_then(|db| db.apply(remote_id, &agreed)).is_err() {
                unrecorded.extend(agreed);
            }
        }
        (unrecorded, indexed)
    }

    /// Pull every file of `pulls`, pipelined, over `client` and up to
    /// [`MAX_LANES`]` - 1` more connections to the same partner, one per
    /// core: each lane receives, writes and hashes its files on its own
    /// thread, taking the next name from a shared queue.
    #[allow(clippy::too_many_arguments)]
    fn pull_all(
        &self,
        client: &mut Client,
        remote_id: &str,
        pulls: &[(String, Option<FileState>)],
        remote: &Index,
        rep: &mut PartnerRound,
        changes: &mut Vec<(String, Option<FileState>)>,
        failed: &mut Vec<String>,
        indexed: &mut Vec<String>,
    ) -> Result<()> {
        let folder = &self.shared.folder;
        let expected: std::collections::HashMap<&str, Option<&FileState>> = pulls
            .iter()
            .map(|(p, e)| (p.as_str(), e.as_ref()))
            .collect();
        let mut extra = extra_lanes(
            client.addr(),
            &self.shared.identity.credentials(),
            lanes_for(pulls.len()) - 1,
            &self.stopping,
        );
        let queue = Mutex::new(Spread::new(
            pulls.iter().map(|(p, _)| p.clone()).collect(),
            extra.len() + 1,
            IN_FLIGHT,
        ));
        let results = Mutex::new(Vec::new());
        // Landed files wait here for the recorder, which takes them all
        // every RECORD_EVERY (a message each would wake it for each).
        let landed: Mutex<Vec<Landed>> = Mutex::new(Vec::new());
        // Our disk is full (its first error): no lane asks for more, and
        // what fails for it is not held against its path (all go again).
        let full: Mutex<Option<Error>> = Mutex::new(None);
        let lane = |c: &mut Client, k: usize| {
            c.download_many(
                &mut std::iter::from_fn(|| match full.lock().ok()?.is_some() {
                    true => None,
                    false => queue.lock().ok()?.next(k),
                }),
                folder,
                IN_FLIGHT,
                &mut |name, now| {
                    let over = match expected.get(name).copied().flatten() {
                        // Nothing was there: landing refuses a name taken
                        // meanwhile by itself (no look first).
                        None => LandOver::Nothing,
                        e => as_planned(now(), e).map(|()| LandOver::Anything)?,
                    };
                    // Its landing is recorded below: the watcher need not
                    // tell of it (but of the patterns file it must: a scan
                    // of everything follows it).
                    if name != IGNORE_FILE
                        && let Ok(mut d) = self.dirty.lock()
                    {
                        d.expect_ours(name, Instant::now());
                    }
                    Ok(over)
                },
                &mut |name, result| {
                    if result.is_err()
                        && let Ok(mut d) = self.dirty.lock()
                    {
                        d.not_ours(name);
                    }
                    if let Err(e) = &result
                        && e.kind() == ErrorKind::NoSpace
                    {
                        if let Ok(mut first) = full.lock() {
                            first.get_or_insert_with(|| e.clone());
                        }
                        return;
                    }
                    // If it changed there since the index was sent, nothing
                    // is recorded yet.
                    if let Ok(report) = &result {
                        let r = remote.get(name);
                        let same = r.and_then(|r| r.md5.as_deref()) == Some(report.md5.as_str());
                        let file = Landed {
                            path: name.to_string(),
                            agreed: if same { r.cloned() } else { None },
                            here: report.landed.map(|d| seen_landed(d, &report.md5)),
                        };
                        if let Ok(mut l) = landed.lock() {
                            l.push(file);
                        }
                    }
                    if let Ok(mut r) = results.lock() {
                        r.push((name.to_string(), result));
                    }
                },
            )
        };
        let lane = &lane;
        let batch = thread::scope(|s| {
            // The recorder ends when `lanes_done` goes, after the lanes.
            let (lanes_done, done) = crossbeam_channel::bounded::<()>(0);
            let recorder = s.spawn(|| self.record_as_they_land(remote_id, &landed, done));
            let others: Vec<_> = (extra.iter_mut().enumerate())
                .map(|(k, c)| s.spawn(move || lane(c, k + 1)))
                .collect();
            let mut batch = lane(client, 0);
            for o in others {
                let r = o
                    .join()
                    .unwrap_or_else(|_| Err(Error::new("a pulling thread failed")));
                batch = batch.and(r);
            }
            drop(lanes_done);
            // What the recorder could not write goes with the round's other changes.
            let (unrecorded, now_indexed) = recorder.join().unwrap_or_default();
            changes.extend(unrecorded);
            indexed.extend(now_indexed);
            batch
        });
        let results = results.into_inner().unwrap_or_default();
        // A pull the batch never got to (its connection failed) is tried next round.
        let tried: HashSet<&str> = results.iter().map(|(p, _)| p.as_str()).collect();
        let untried: Vec<String> = pulls
            .iter()
            .filter(|(p, _)| !tried.contains(p.as_str()))
            .map(|(p, _)| p.clone())
            .collect();
        failed.extend(untried);
        self.note_pulls(results, rep, failed);
        match full.into_inner().ok().flatten() {
            Some(e) => Err(e),
            None => batch,
        }
    }

    /// Count and log what a batch pulled; a failed pull's path goes to
    /// `failed`. Many files make one line of the log (errors one each).
    fn note_pulls(
        &self,
        results: Vec<(String, Result<crate::transfer::TransferReport>)>,
        rep: &mut PartnerRound,
        failed: &mut Vec<String>,
    ) {
        let peer = rep.peer.clone();
        let each = results.len() <= LOGGED_EACH;
        let (pulled, bytes) = (rep.pulled, rep.bytes);
        let (mut errors, mut last_error) = (0, None);
        for (path, result) in results {
            match result {
                Ok(report) => {
                    rep.pulled += 1;
                    rep.bytes += report.size;
                    if each {
                        self.log(&peer, &format!("sync pull {path}"), "ok", report.size);
                    }
                }
                Err(e) => {
                    rep.error(format!("{path}: {e}"));
                    errors += 1;
                    if errors <= LOGGED_EACH {
                        let outcome = format!("error: {e}");
                        self.log(&peer, &format!("sync pull {path}"), &outcome, 0);
                    }
                    last_error = Some(e);
                    failed.push(path);
                }
            }
        }
        if !each {
            let n = rep.pulled - pulled;
            let what = format!("sync pull {n} files");
            self.log(&peer, &what, "ok", rep.bytes - bytes);
        }
        if let (Some(e), true) = (last_error, errors > LOGGED_EACH) {
            let what = format!("sync pull: {} more files", errors - LOGGED_EACH);
            self.log(&peer, &what, &format!("error (the last: {e})"), 0);
        }
    }
}

/// The error that stops a round for want of room here, `what` met it.
fn no_room(what: String) -> Error {
    let what = format!("no space left on the disk here ({what}); the rest is tried again later");
    Error::of(ErrorKind::NoSpace, what)
}

/// The local state an action was planned from: a rename acts on our copy
/// under its old name; everything else on the path itself.
fn planned_local<'a>(action: &Action, path: &str, local: &'a Index) -> Option<&'a FileState> {
    match action {
        Action::Rename { from } => local.get(from),
        _ => local.get(path),
    }
}

/// Connections one round pulls over at most.
const MAX_LANES: usize = 4;
/// Fewer files than this per extra connection are not worth its set-up.
const FILES_PER_LANE: usize = 8;

/// How many connections to pull `files` files over: one per core.
fn lanes_for(files: usize) -> usize {
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    cores
        .min(MAX_LANES)
        .min(files.div_ceil(FILES_PER_LANE))
        .max(1)
}

/// A connection for a sync round: never cancelled, patient for 30 s.
fn connect_partner(addr: &str, creds: &Credentials, stopping: &Arc<AtomicBool>) -> Result<Client> {
    Client::connect(addr, creds, stopping.clone(), Duration::from_secs(30))
}

/// Up to `n` more connections to `addr` that answered a first request (a
/// partner at its connection cap answers "busy"; then fewer lanes it is).
fn extra_lanes(
    addr: &str,
    creds: &Credentials,
    n: usize,
    stopping: &Arc<AtomicBool>,
) -> Vec<Client> {
    (0..n)
        .map_while(|_| {
            let mut c = connect_partner(addr, creds, stopping).ok()?;
            c.info().ok()?;
            Some(c)
        })
        .collect()
}
