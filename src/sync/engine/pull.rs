//! The pull stage of a round: the files of a plan pulled in one pipelined
//! batch over up to one connection per core, each lane receiving,
//! writing and hashing its files on its own thread, while a recorder
//! writes what landed to the sync database every few milliseconds.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::apply::as_planned;
use super::spread::Spread;
use super::{Actor, PartnerRound};
use crate::client::{Client, LandOver};
use crate::folder::{IGNORE_FILE, OnDisk};
use crate::limits::LOGGED_EACH;
use crate::secure::Credentials;
use crate::sync::local::{LocalChange, Seen};
use crate::sync::plan::{FileState, Index};
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

/// What the actions of a plan part came to, gathered as they run: the
/// states both sides now agree on (`None`: the path is gone on both), the
/// paths whose action failed here, those to try again next round without
/// holding the failure against them, and the pulled files that went into
/// our index as they landed (no scan need look at them).
#[derive(Default)]
pub(super) struct Tally {
    pub changes: Vec<(String, Option<FileState>)>,
    pub failed: Vec<String>,
    pub retry: Vec<String>,
    pub indexed: Vec<String>,
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
    /// [`Actor::pull_all`], its failure noted for the round: when its
    /// connection broke, what it did not pull is tried again next round,
    /// not left alone. Returns the error when our disk is full.
    pub(super) fn pull_batch(
        &self,
        client: &mut Client,
        remote_id: &str,
        pulls: &[(String, Option<FileState>)],
        remote: &Index,
        rep: &mut PartnerRound,
        tally: &mut Tally,
    ) -> Option<Error> {
        let before = tally.failed.len();
        let e = self
            .pull_all(client, remote_id, pulls, remote, rep, tally)
            .err()?;
        let broke: Vec<String> = tally.failed.drain(before..).collect();
        tally.retry.extend(broke);
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
    fn pull_all(
        &self,
        client: &mut Client,
        remote_id: &str,
        pulls: &[(String, Option<FileState>)],
        remote: &Index,
        rep: &mut PartnerRound,
        tally: &mut Tally,
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
            tally.changes.extend(unrecorded);
            tally.indexed.extend(now_indexed);
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
        tally.failed.extend(untried);
        self.note_pulls(results, rep, &mut tally.failed);
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

/// The error that stops a round for want of room here, `what` met it.
pub(super) fn no_room(what: String) -> Error {
    let what = format!("no space left on the disk here ({what}); the rest is tried again later");
    Error::of(ErrorKind::NoSpace, what)
}

/// A connection for a sync round: never cancelled, patient for 30 s.
pub(super) fn connect_partner(
    addr: &str,
    creds: &Credentials,
    stopping: &Arc<AtomicBool>,
) -> Result<Client> {
    Client::connect(addr, creds, stopping.clone(), Duration::from_secs(30))
}
