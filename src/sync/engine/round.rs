//! One round with one partner: exchange indexes, plan, then apply the
//! plan in order: folders and renames first, the pulls in one pipelined
//! batch (see [`super::pull`]), then modes and deletions.
//! Actions that failed before on the same states are left alone
//! ([`super::super::stuck`]); deletions pass the guard
//! ([`super::super::guard`]) and go to the trash.

use std::collections::{BTreeSet, HashSet};
use std::thread;
use std::time::Instant;

use super::pull::{Tally, connect_partner, no_room};
use super::stages::{PLAN_PART, Work, need_in};
use super::{Actor, PartnerRound};
use crate::client::Client;
use crate::sync::plan::{Action, FileState, Index};
use crate::sync::remote::PartCursor;
use crate::{Error, ErrorKind, Result};

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
        // Pulls go in one pipelined batch; everything else runs in plan
        // order around it (folders and renames before, modes and deletions
        // after). A failure is this path's alone, and is not tried again
        // while neither side changes.
        let mut pulls: Vec<(String, Option<FileState>)> = Vec::new();
        // Failed here: left alone while neither side changes. To retry:
        // pending too, but not held against the path (left alone already,
        // or its connection broke: the partner went away, not the action).
        let mut tally = Tally::default();
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
                let full = self.pull_batch(client, remote_id, &batch, remote, rep, &mut tally);
                disk_full = disk_full.or(full);
                let indexed: HashSet<String> =
                    std::mem::take(&mut tally.indexed).into_iter().collect();
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
                tally.retry.push(path.clone());
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
                _ => self.apply(path, action, l, r, hold_deletions, rep, &mut tally.changes),
            };
            match outcome {
                Err(e) if e.kind() == ErrorKind::NoSpace => {
                    tally.retry.push(path.clone());
                    disk_full = Some(no_room(format!("{path}: {e}")));
                }
                Err(e) => {
                    rep.error(format!("{path}: {e}"));
                    self.log(&addr, &format!("sync {path}"), &format!("error: {e}"), 0);
                    tally.failed.push(path.clone());
                }
                Ok(()) => {}
            }
        }
        let Tally {
            changes,
            mut failed,
            retry,
            ..
        } = tally;
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
}

/// The local state an action was planned from: a rename acts on our copy
/// under its old name; everything else on the path itself.
fn planned_local<'a>(action: &Action, path: &str, local: &'a Index) -> Option<&'a FileState> {
    match action {
        Action::Rename { from } => local.get(from),
        _ => local.get(path),
    }
}
