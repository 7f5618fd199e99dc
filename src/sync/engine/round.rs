//! One round with one partner: exchange indexes, plan, then apply the
//! plan in order: folders and renames first, the pulls in one pipelined
//! batch over up to one connection per core, then modes and deletions.
//! Actions that failed before on the same states are left alone
//! ([`super::super::stuck`]); deletions pass the guard
//! ([`super::super::guard`]) and go to the trash.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::{Actor, PartnerRound, to_index};
use crate::client::Client;
use crate::sync::plan::{Action, FileState, Index, PERM_BITS, Plan, conflict_name, plan};
use crate::{Context, Error, Result, bail};

/// Longest a pulled file waits to be recorded in the sync database.
const RECORD_EVERY: Duration = Duration::from_millis(50);

impl Actor {
    /// One round with partner `i`.
    pub(super) fn round(&mut self, i: usize, confirm: bool, rep: &mut PartnerRound) -> Result<()> {
        let folder = &self.shared.folder;
        // The patterns this round goes by, read once (before the walk).
        let rules = folder.ignore_rules();
        let local_entries = folder.sync_index()?;
        let unservable = folder.unservable_names();
        if unservable.is_some() && unservable != self.unservable_told {
            rep.errors.extend(unservable.clone());
        }
        self.unservable_told = unservable;
        let addr = self.partners[i].addr.clone();
        let mut client = connect_partner(&addr, &self.stopping)?;
        let known = match &self.partners[i].id {
            Some(id) => self.shared.sync_db()?.load(id)?,
            None => Index::new(),
        };
        let offered = crate::sync::offer(local_entries.clone(), &known, &rules);
        let (remote_id, remote_entries) =
            client.sync_exchange(self.shared.peer_id(), self.cfg.listen_port, &offered)?;
        if remote_id == self.shared.peer_id() {
            bail!("{addr} is this very peer (same peer id); not syncing with itself");
        }
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
        let (local, _) = to_index(&local_entries, &rules);
        let (remote, their_base) = to_index(&remote_entries, &rules);
        let base = self.shared.sync_db()?.load(&remote_id)?;
        let base = crate::sync::without_ignored(base, &rules);
        let plan = plan(&local, &remote, &base, &their_base);
        self.run_plan(
            &mut client,
            &remote_id,
            &local,
            &remote,
            &plan,
            confirm,
            rep,
        )?;
        self.shared.folder.save_cache();
        Ok(())
    }

    /// Apply a round's plan in order (see the module doc) and record what
    /// both sides now agree on.
    #[allow(clippy::too_many_arguments)]
    fn run_plan(
        &mut self,
        client: &mut Client,
        remote_id: &str,
        local: &Index,
        remote: &Index,
        plan: &Plan,
        confirm: bool,
        rep: &mut PartnerRound,
    ) -> Result<()> {
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
        let mut failed: Vec<String> = Vec::new();
        let now = Instant::now();
        // The end of the plan (None) flushes the pulls like any non-pull.
        for step in plan.actions.iter().map(Some).chain(std::iter::once(None)) {
            let is_pull = matches!(step, Some((_, Action::Pull | Action::ConflictPull)));
            if !is_pull && !pulls.is_empty() {
                let batch = std::mem::take(&mut pulls);
                self.pull_batch(
                    client,
                    remote_id,
                    &batch,
                    remote,
                    rep,
                    &mut changes,
                    &mut failed,
                );
            }
            let Some((path, action)) = step else { break };
            let r = remote.get(path);
            let l = local.get(path);
            let bookkeeping = matches!(action, Action::Nothing | Action::Record | Action::Forget);
            if !bookkeeping && self.stuck.left_alone(remote_id, path, l, r, now) {
                rep.left_alone += 1;
                continue;
            }
            let outcome = match action {
                Action::Pull | Action::ConflictPull => self
                    .prepare_pull(path, action, l, rep)
                    .map(|expect| pulls.push((path.clone(), expect))),
                _ => self.apply(path, action, l, r, hold_deletions, rep, &mut changes),
            };
            if let Err(e) = outcome {
                rep.errors.push(format!("{path}: {e}"));
                self.log(&addr, &format!("sync {path}"), &format!("error: {e}"), 0);
                failed.push(path.clone());
            }
        }
        for path in failed {
            self.stuck
                .failed(remote_id, &path, local.get(&path), remote.get(&path), now);
        }
        if !confirm {
            self.guard.applied(Instant::now(), rep.deleted);
        }
        self.shared.sync_db()?.apply(remote_id, &changes)
    }

    /// [`Actor::pull_all`], its failure noted for the round.
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
    ) {
        if let Err(e) = self.pull_all(client, remote_id, pulls, remote, rep, changes, failed) {
            rep.errors.push(format!(
                "pulling from {}: {e}; the rest next round",
                client.addr()
            ));
        }
    }

    /// Move our version of `path` aside to a conflict copy (a name not
    /// taken yet); returns that name.
    fn move_aside(&self, path: &str, local: &FileState, rep: &mut PartnerRound) -> Result<String> {
        let folder = &self.shared.folder;
        still_as_planned(folder.root(), path, Some(local))?;
        let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
        let aside = (0..100)
            .map(|n| match n {
                0 => conflict_name(path, &stamp, self.shared.peer_id()),
                n => conflict_name(path, &format!("{stamp}-{n}"), self.shared.peer_id()),
            })
            .find(|a| fs::symlink_metadata(folder.root().join(a)).is_err())
            .ok_or_else(|| Error::new(format!("no free conflict name for {path}")))?;
        fs::rename(folder.target_path(path)?, folder.target_path(&aside)?)
            .context(format!("moving {path} aside to {aside}"))?;
        rep.conflicts += 1;
        self.log(
            &rep.peer,
            &format!("sync conflict {path}"),
            &format!("ours kept as {aside}"),
            0,
        );
        Ok(aside)
    }

    /// Before pulling: refuse a file that could not land here (a file
    /// where one of its folders should be), and on a conflict move our
    /// version aside. Returns the local state the pull expects to replace
    /// (checked again before the rename).
    fn prepare_pull(
        &self,
        path: &str,
        action: &Action,
        local: Option<&FileState>,
        rep: &mut PartnerRound,
    ) -> Result<Option<FileState>> {
        can_land(self.shared.folder.root(), path)?;
        if *action != Action::ConflictPull {
            return Ok(local.cloned());
        }
        let l = local.ok_or_else(|| Error::new("no local state"))?;
        self.move_aside(path, l, rep)?;
        Ok(None)
    }

    /// Record pulled files in the sync database as they land, not only at
    /// the end of the round: a peer killed in between still knows them
    /// after a restart (else a deletion made meanwhile on the other side
    /// would be undone). Batched, up to [`RECORD_EVERY`] behind, so that
    /// many small files cost a few commits; ends when `landed` closes.
    /// Returns what it could not record, for the round's final write.
    fn record_as_they_land(
        &self,
        remote_id: &str,
        landed: Receiver<(String, Option<FileState>)>,
    ) -> Vec<(String, Option<FileState>)> {
        let mut unrecorded = Vec::new();
        let mut record = |batch: &mut Vec<(String, Option<FileState>)>| {
            let recorded = self
                .shared
                .sync_db()
                .and_then(|db| db.apply(remote_id, batch));
            if recorded.is_err() {
                unrecorded.append(batch);
            }
            batch.clear();
        };
        let mut batch = Vec::new();
        let mut due = Instant::now();
        loop {
            let next = if batch.is_empty() {
                due = Instant::now() + RECORD_EVERY;
                landed.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                landed.recv_deadline(due)
            };
            match next {
                Ok(change) => batch.push(change),
                Err(RecvTimeoutError::Timeout) => record(&mut batch),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        record(&mut batch);
        unrecorded
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
    ) -> Result<()> {
        let folder = &self.shared.folder;
        let root = folder.root().to_path_buf();
        let expected: std::collections::HashMap<&str, Option<&FileState>> = pulls
            .iter()
            .map(|(p, e)| (p.as_str(), e.as_ref()))
            .collect();
        let peer = rep.peer.clone();
        let mut extra = extra_lanes(client.addr(), lanes_for(pulls.len()) - 1, &self.stopping);
        let queue = Mutex::new(pulls.iter().map(|(p, _)| p.clone()));
        let results = Mutex::new(Vec::new());
        let lane = |c: &mut Client, landed: &Sender<(String, Option<FileState>)>| {
            c.download_many(
                &mut std::iter::from_fn(|| queue.lock().ok()?.next()),
                folder,
                32,
                &mut |name| still_as_planned(&root, name, expected.get(name).copied().flatten()),
                &mut |name, result| {
                    // If it changed there since the index was sent, nothing
                    // is recorded yet.
                    if let Ok(report) = &result {
                        let r = remote.get(name);
                        let same = r.and_then(|r| r.md5.as_deref()) == Some(report.md5.as_str());
                        let _ =
                            landed.send((name.to_string(), if same { r.cloned() } else { None }));
                    }
                    if let Ok(mut r) = results.lock() {
                        r.push((name.to_string(), result));
                    }
                },
            )
        };
        let lane = &lane;
        let batch = thread::scope(|s| {
            // The recorder ends when the last lane drops its sender.
            let (landed, to_record) = crossbeam_channel::unbounded();
            let recorder = s.spawn(|| self.record_as_they_land(remote_id, to_record));
            let others: Vec<_> = extra
                .iter_mut()
                .map(|c| {
                    let landed = landed.clone();
                    s.spawn(move || lane(c, &landed))
                })
                .collect();
            let mut batch = lane(client, &landed);
            drop(landed);
            for o in others {
                let r = o
                    .join()
                    .unwrap_or_else(|_| Err(Error::new("a pulling thread failed")));
                batch = batch.and(r);
            }
            // What the recorder could not write goes with the round's other changes.
            changes.extend(recorder.join().unwrap_or_default());
            batch
        });
        let results = results.into_inner().unwrap_or_default();
        for (path, result) in results {
            match result {
                Ok(report) => {
                    rep.pulled += 1;
                    rep.bytes += report.size;
                    self.log(&peer, &format!("sync pull {path}"), "ok", report.size);
                }
                Err(e) => {
                    rep.errors.push(format!("{path}: {e}"));
                    self.log(
                        &peer,
                        &format!("sync pull {path}"),
                        &format!("error: {e}"),
                        0,
                    );
                    failed.push(path);
                }
            }
        }
        batch
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        path: &str,
        action: &Action,
        local: Option<&FileState>,
        remote: Option<&FileState>,
        hold_deletions: bool,
        rep: &mut PartnerRound,
        changes: &mut Vec<(String, Option<FileState>)>,
    ) -> Result<()> {
        let folder = &self.shared.folder;
        let peer = rep.peer.clone();
        match action {
            Action::Nothing => {}
            Action::FolderWins => {
                let l = local.ok_or_else(|| Error::new("no local state"))?;
                self.move_aside(path, l, rep)?;
                self.make_dir(path, remote, rep, changes, "ok (a folder there)")?;
            }
            Action::Record => changes.push((path.to_string(), local.cloned())),
            Action::Forget => changes.push((path.to_string(), None)),
            Action::Pull | Action::ConflictPull => bail!("pulls run in a batch"),
            Action::MakeDir => self.make_dir(path, remote, rep, changes, "ok")?,
            Action::SetMode(mode) => {
                let p = folder.local_path(path)?;
                let mode = mode & PERM_BITS;
                fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                    .context(format!("chmod {path}"))?;
                changes.push((path.to_string(), remote.cloned()));
                rep.modes += 1;
                self.log(&peer, &format!("sync chmod {mode:04o} {path}"), "ok", 0);
            }
            Action::Delete => {
                if hold_deletions {
                    return Ok(());
                }
                still_as_planned(folder.root(), path, local)?;
                crate::sync::trash::move_to_trash(
                    &folder.state_dir().join("trash"),
                    &folder.target_path(path)?,
                    path,
                    chrono::Local::now(),
                )?;
                changes.push((path.to_string(), None));
                rep.deleted += 1;
                self.log(
                    &peer,
                    &format!("sync delete {path}"),
                    "moved to .dropbox-shell/trash",
                    0,
                );
            }
            Action::RemoveDir => {
                if hold_deletions {
                    return Ok(());
                }
                let p = folder.local_path(path)?;
                if fs::read_dir(&p)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false)
                {
                    fs::remove_dir(&p).context(format!("removing folder {path}"))?;
                    changes.push((path.to_string(), None));
                    rep.folders += 1;
                    self.log(&peer, &format!("sync rmdir {path}"), "ok", 0);
                }
            }
            Action::Rename { from } => self.rename(from, path, remote, rep, changes)?,
        }
        Ok(())
    }

    /// Make the remote folder `path` here, with its permission bits.
    fn make_dir(
        &self,
        path: &str,
        remote: Option<&FileState>,
        rep: &mut PartnerRound,
        changes: &mut Vec<(String, Option<FileState>)>,
        outcome: &str,
    ) -> Result<()> {
        let r = remote.ok_or_else(|| Error::new("no remote state"))?;
        let p = self.shared.folder.local_path(path)?;
        fs::create_dir_all(&p).context(format!("creating folder {path}"))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(r.perm())).ok();
        changes.push((path.to_string(), Some(r.clone())));
        rep.folders += 1;
        self.log(&rep.peer, &format!("sync mkdir {path}"), outcome, 0);
        Ok(())
    }

    /// The bytes of `path` are here under `from`, which went there: move
    /// them (no bytes travel) and give them the remote's mtime and mode.
    fn rename(
        &self,
        from: &str,
        path: &str,
        remote: Option<&FileState>,
        rep: &mut PartnerRound,
        changes: &mut Vec<(String, Option<FileState>)>,
    ) -> Result<()> {
        let folder = &self.shared.folder;
        let r = remote.ok_or_else(|| Error::new("no remote state"))?;
        let old = folder.target_path(from)?;
        let new = folder.target_path(path)?;
        if let Some(parent) = new.parent() {
            fs::create_dir_all(parent).context(format!("creating the folder of {path}"))?;
        }
        fs::rename(&old, &new).context(format!("renaming {from} to {path}"))?;
        let mtime = crate::folder::file_time(r.mtime_ns);
        filetime::set_file_mtime(&new, mtime).ok();
        fs::set_permissions(&new, fs::Permissions::from_mode(r.perm())).ok();
        changes.push((path.to_string(), Some(r.clone())));
        changes.push((from.to_string(), None));
        rep.renamed += 1;
        self.log(
            &rep.peer,
            &format!("sync rename {from} -> {path}"),
            "ok (no bytes sent)",
            0,
        );
        Ok(())
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
fn connect_partner(addr: &str, stopping: &Arc<AtomicBool>) -> Result<Client> {
    Client::connect(addr, stopping.clone(), Duration::from_secs(30))
}

/// Up to `n` more connections to `addr` that answered a first request (a
/// partner at its connection cap answers "busy"; then fewer lanes it is).
fn extra_lanes(addr: &str, n: usize, stopping: &Arc<AtomicBool>) -> Vec<Client> {
    (0..n)
        .map_while(|_| {
            let mut c = connect_partner(addr, stopping).ok()?;
            c.info().ok()?;
            Some(c)
        })
        .collect()
}

/// Refuse to touch a local path that changed since the round's plan was
/// made (a file still being written, or edited meanwhile).
fn still_as_planned(root: &Path, path: &str, expected: Option<&FileState>) -> Result<()> {
    let now = fs::symlink_metadata(root.join(path)).ok();
    let same = match (now, expected) {
        (None, None) => true,
        (Some(m), Some(e)) => {
            m.is_dir() || (m.len() == e.size && crate::folder::mtime_ns(&m) == e.mtime_ns)
        }
        _ => false,
    };
    if !same {
        bail!("changed here while syncing; left for the next round");
    }
    Ok(())
}

/// Refuse a pull whose bytes could not land: one of the folders of `path`
/// is a file (or anything else but a folder) here.
fn can_land(root: &Path, path: &str) -> Result<()> {
    let mut at = root.to_path_buf();
    let mut parts: Vec<&str> = path.split('/').collect();
    parts.pop();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        match fs::metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!(
                "{} is a file here, not a folder; not pulled",
                parts[..=i].join("/")
            ),
            Err(_) => break,
        }
    }
    Ok(())
}
