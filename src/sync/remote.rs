//! What partners told us of their indexes, kept in the sync database: per
//! partner, every entry it sent (present or a tombstone, with its sequence
//! number), the id of its index and the highest sequence we hold of it.
//! A partner's index id that changed means it started over: what we held
//! of it is dropped and it sends its index whole.
//!
//! Also how far each partner was planned: a round plans only the paths
//! that changed since (on either side) and the ones left pending (an
//! action that failed, a deletion held back), so its cost follows the
//! change, not the folder.

use std::collections::BTreeSet;

use rusqlite::{OptionalExtension, params};

use super::db::{BASE_READS, SyncDb, db_err, state_from_row};
use super::local::{LOCAL_READS, present_state};
use super::plan::Index;
use super::reads::{Reads, rows_for};
use crate::Result;
use crate::names::clean_name;
use crate::proto::{Kind, Mark, SyncEntry};

/// A partner's view of some paths, as its index told us.
#[derive(Debug, Default)]
pub struct RemoteView {
    pub present: Index,
    /// The states it last agreed on with us.
    pub agreed: Index,
    /// Paths its `.dropboxignore` keeps out: left alone on both sides.
    pub ignored: BTreeSet<String>,
}

/// The partner's view of `paths`: what it has, the states it last agreed
/// on with us (its tombstones of agreed paths and the paths it holds as
/// agreed), and the paths its `.dropboxignore` keeps out.
fn remote_view_in(conn: &rusqlite::Connection, peer: &str, paths: &[String]) -> Result<RemoteView> {
    const REMOTE_READS: Reads = Reads {
        one: "SELECT dir, size, mtime_ns, mode, md5, deleted, agreed, ignored
              FROM remote WHERE path = ?1 AND peer = ?2",
        range: "SELECT path, dir, size, mtime_ns, mode, md5, deleted, agreed, ignored
                FROM remote WHERE peer = ?4 AND path >= ?1 AND path <= ?2 ORDER BY path LIMIT ?3",
    };
    let rows = rows_for(conn, &REMOTE_READS, Some(peer), paths, |r, at| {
        let flags = (r.get::<_, bool>(at + 5)?, r.get(at + 6)?, r.get(at + 7)?);
        Ok(Some((state_from_row(r, at)?, flags)))
    })?;
    let mut view = RemoteView::default();
    for (p, (state, (deleted, is_agreed, ignored))) in rows {
        if ignored {
            view.ignored.insert(p);
            continue;
        }
        if is_agreed {
            view.agreed.insert(p.clone(), state.clone());
        }
        if !deleted {
            view.present.insert(p, state);
        }
    }
    Ok(view)
}

/// The id of the partner's index we hold entries of.
fn kept_index(conn: &rusqlite::Connection, peer: &str) -> Result<Option<String>> {
    conn.query_row(
        "SELECT index_id FROM partners WHERE peer = ?1",
        params![peer],
        |r| r.get(0),
    )
    .optional()
    .map_err(db_err)
}

/// Where the reading of a scope's parts stands (see [`SyncDb::scope_part`]).
#[derive(Debug, Default)]
pub struct PartCursor {
    /// The last path of the last part.
    after: Option<String>,
    /// A side read to its end: its paths not yet in a part.
    local_rest: Option<Vec<String>>,
    remote_rest: Option<Vec<String>>,
    done: bool,
}

impl PartCursor {
    /// A side read to its end now keeps what the part did not take.
    fn keep_rests(&mut self, local: Side, remote: Side, last: Option<&String>) {
        let left = |s: Side| {
            s.to_end
                .then(|| s.paths.into_iter().filter(|p| Some(p) > last).collect())
        };
        self.local_rest = left(local);
        self.remote_rest = left(remote);
    }
}

/// One side's next paths of a part, in order.
struct Side {
    paths: Vec<String>,
    /// Holds every path of the side after the cursor.
    to_end: bool,
    /// Holds `n`: paths past the last may not have been read.
    full: bool,
}

impl Side {
    /// Paths read with a limit of `n`; `to_end` if the read had no upper
    /// bound but the limit (then fewer than `n` is all there is).
    fn read(paths: Vec<String>, n: usize, unbounded: bool) -> Side {
        let full = paths.len() >= n;
        Side {
            to_end: unbounded && !full,
            full,
            paths,
        }
    }

    fn rest(rest: &[String]) -> Side {
        Side {
            paths: rest.to_vec(),
            to_end: true,
            full: false,
        }
    }

    /// The last path this side is known up to, when it may have more.
    fn reaches(&self) -> Option<String> {
        match self.full {
            true => self.paths.last().cloned(),
            false => None,
        }
    }
}

/// What a round plans: the changes on our side and the partner's between
/// these sequence numbers (after `from`, up to `to`), and the paths left
/// pending. Its paths are read a part at a time ([`SyncDb::scope_part`]),
/// so a round over a million changes never holds them all.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scope {
    pub local_from: u64,
    pub local_to: u64,
    pub remote_from: u64,
    pub remote_to: u64,
    /// The partner's index the remote sequence numbers count in.
    pub index_id: String,
    /// How many paths it covers at most (a path changed on both sides, or
    /// pending too, counts more than once).
    pub size: usize,
}

impl SyncDb {
    /// The partner's index as we hold it: its id and the highest sequence.
    pub fn seen_of(&self, peer: &str) -> Result<Option<Mark>> {
        let conn = self.conn()?;
        conn.query_row(
            "SELECT index_id, seq FROM partners WHERE peer = ?1",
            params![peer],
            |r| {
                Ok(Mark {
                    index_id: r.get(0)?,
                    seq: r.get::<_, i64>(1)? as u64,
                })
            },
        )
        .optional()
        .map_err(db_err)
    }

    /// The partner's entries are about to come from its index `index_id`:
    /// if that is not the one we hold, forget what we held of it (it
    /// sends its index whole) and plan it all again.
    pub fn remote_begin(&self, peer: &str, index_id: &str) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db_err)?;
        if kept_index(&tx, peer)?.as_deref() != Some(index_id) {
            tx.execute("DELETE FROM remote WHERE peer = ?1", params![peer])
                .map_err(db_err)?;
            tx.execute(
                "INSERT INTO partners (peer, index_id, seq, planned_remote, planned_local)
                 VALUES (?1, ?2, 0, 0, 0)
                 ON CONFLICT (peer) DO UPDATE SET index_id = ?2, seq = 0, planned_remote = 0,
                     bytes = 0",
                params![peer, index_id],
            )
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    /// Store a batch of the partner's entries (in the order of its
    /// sequence numbers) and move its mark on; entries whose name is not a
    /// clean relative path are dropped, and so is an entry older than the
    /// one stored for its path (see the statement), and all of a batch of
    /// index `index_id` when the partner's kept index is another.
    pub fn remote_store(&self, peer: &str, index_id: &str, entries: &[SyncEntry]) -> Result<()> {
        let Some(top) = entries.iter().map(|e| e.seq).max() else {
            return Ok(());
        };
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db_err)?;
        // Sequence numbers compare within one index only: entries of an
        // index the partner has replaced meanwhile are dropped.
        if kept_index(&tx, peer)?.as_deref() != Some(index_id) {
            return Ok(());
        }
        {
            let mut put = tx
                .prepare_cached(
                    // Two exchanges may bring the partner's entries at
                    // once (its round and ours): one read earlier must not
                    // put back an older state of a path (its sequence
                    // number is lower), or the path would sit below the
                    // mark with a state the partner no longer has.
                    "INSERT INTO remote
                     (peer, path, dir, size, mtime_ns, mode, md5, deleted, agreed, seq, ignored)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (peer, path) DO UPDATE SET dir = excluded.dir,
                         size = excluded.size, mtime_ns = excluded.mtime_ns,
                         mode = excluded.mode, md5 = excluded.md5, deleted = excluded.deleted,
                         agreed = excluded.agreed, seq = excluded.seq, ignored = excluded.ignored
                     WHERE excluded.seq > remote.seq
                        OR (excluded.seq = remote.seq AND excluded.agreed >= remote.agreed)",
                )
                .map_err(db_err)?;
            for e in entries {
                if clean_name(&e.name).as_deref() != Ok(e.name.as_str()) {
                    continue;
                }
                put.execute(params![
                    peer,
                    e.name,
                    e.kind == Kind::Dir,
                    e.size as i64,
                    e.mtime_ns,
                    e.mode as i64,
                    e.md5,
                    e.deleted,
                    e.agreed,
                    e.seq as i64,
                    e.ignored
                ])
                .map_err(db_err)?;
            }
            // The bytes kept are counted as they come (an entry sent again
            // counts again: [`SyncDb::recount_remote`] tells the truth when it matters).
            let bytes: usize = entries.iter().map(|e| e.name.len()).sum();
            tx.execute(
                "UPDATE partners SET seq = MAX(seq, ?2), bytes = bytes + ?3 WHERE peer = ?1",
                params![peer, top as i64, bytes as i64],
            )
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    /// What a plan of `paths` with `peer` is made from, read in one
    /// transaction (a statement each would be a transaction each): our
    /// state, the partner's view, the last-synced state.
    pub fn plan_view(&self, peer: &str, paths: &[String]) -> Result<(Index, RemoteView, Index)> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db_err)?;
        let local = rows_for(&tx, &LOCAL_READS, None, paths, present_state)?;
        let view = remote_view_in(&tx, peer, paths)?;
        let base = rows_for(&tx, &BASE_READS, Some(peer), paths, |r, at| {
            state_from_row(r, at).map(Some)
        })?;
        tx.commit().map_err(db_err)?;
        Ok((
            local.into_iter().collect(),
            view,
            base.into_iter().collect(),
        ))
    }

    /// What a round with `peer` has to plan: the changes on either side
    /// since its last plan, and the paths it left pending.
    pub fn plan_scope(&self, peer: &str) -> Result<Scope> {
        let conn = self.conn()?;
        let (remote_from, local_from, index_id): (i64, i64, String) = conn
            .query_row(
                "SELECT planned_remote, planned_local, index_id FROM partners WHERE peer = ?1",
                params![peer],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(db_err)?
            .unwrap_or_default();
        let count = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> Result<(u64, usize)> {
            conn.query_row(sql, args, |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as usize))
            })
            .map_err(db_err)
        };
        let (local_to, local_n) = count(
            "SELECT COALESCE(MAX(seq), ?1), COUNT(*) FROM local WHERE seq > ?1",
            &[&local_from],
        )?;
        let (remote_to, remote_n) = count(
            "SELECT COALESCE(MAX(seq), ?2), COUNT(*) FROM remote WHERE peer = ?1 AND seq > ?2",
            &[&peer, &remote_from],
        )?;
        let (_, pending_n) = count("SELECT 0, COUNT(*) FROM pending WHERE peer = ?1", &[&peer])?;
        Ok(Scope {
            local_from: local_from as u64,
            local_to,
            remote_from: remote_from as u64,
            remote_to,
            index_id,
            size: local_n + remote_n + pending_n,
        })
    }

    /// The next part of `scope`'s paths, in order: up to `n` paths after
    /// where `cursor` stands (then it moves past them). A scope that fits
    /// in one part is read by sequence number (a few changes in a large
    /// index cost a few rows); a larger one by path, a part at a time, so
    /// that no side is read further than the part reaches: a side with
    /// few changes is read to its end once and kept (its rest is less
    /// than a part), and the other stops at the first side's `n`-th path.
    pub fn scope_part(
        &self,
        peer: &str,
        scope: &Scope,
        cursor: &mut PartCursor,
        n: usize,
    ) -> Result<Vec<String>> {
        if cursor.done {
            return Ok(Vec::new());
        }
        let conn = self.conn()?;
        let (lf, lt) = (scope.local_from as i64, scope.local_to as i64);
        let (rf, rt) = (scope.remote_from as i64, scope.remote_to as i64);
        let read = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> Result<Vec<String>> {
            let mut stmt = conn.prepare_cached(sql).map_err(db_err)?;
            let rows = stmt
                .query_map(args, |r| r.get::<_, String>(0))
                .map_err(db_err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(db_err)
        };
        if scope.size <= n {
            cursor.done = true;
            let mut paths: BTreeSet<String> = BTreeSet::new();
            paths.extend(read(
                "SELECT path FROM local WHERE seq > ?1 AND seq <= ?2",
                &[&lf, &lt],
            )?);
            paths.extend(read(
                "SELECT path FROM remote WHERE peer = ?1 AND seq > ?2 AND seq <= ?3",
                &[&peer, &rf, &rt],
            )?);
            paths.extend(read("SELECT path FROM pending WHERE peer = ?1", &[&peer])?);
            return Ok(paths.into_iter().collect());
        }
        let after = cursor.after.clone().unwrap_or_default();
        let limit = n as i64;
        // `+seq`: walk the paths in order, do not sort the changes.
        let local = match &cursor.local_rest {
            Some(rest) => Side::rest(rest),
            None => Side::read(
                read(
                    "SELECT path FROM local WHERE path > ?1 AND +seq > ?2 AND +seq <= ?3
                     ORDER BY path LIMIT ?4",
                    &[&after, &lf, &lt, &limit],
                )?,
                n,
                true,
            ),
        };
        let remote = match (&cursor.remote_rest, local.reaches()) {
            (Some(rest), _) => Side::rest(rest),
            (None, None) => Side::read(
                read(
                    "SELECT path FROM remote WHERE peer = ?1 AND path > ?2
                     AND +seq > ?3 AND +seq <= ?4 ORDER BY path LIMIT ?5",
                    &[&peer, &after, &rf, &rt, &limit],
                )?,
                n,
                true,
            ),
            (None, Some(upto)) => Side::read(
                read(
                    "SELECT path FROM remote WHERE peer = ?1 AND path > ?2 AND path <= ?3
                     AND +seq > ?4 AND +seq <= ?5 ORDER BY path LIMIT ?6",
                    &[&peer, &after, &upto, &rf, &rt, &limit],
                )?,
                n,
                false,
            ),
        };
        let pending = Side::read(
            read(
                "SELECT path FROM pending WHERE peer = ?1 AND path > ?2 ORDER BY path LIMIT ?3",
                &[&peer, &after, &limit],
            )?,
            n,
            false,
        );
        drop(conn);
        // The first `n` of them all: a side holding `n` paths holds the
        // first `n` after the cursor, so no path a side has not read yet
        // comes before the last of these.
        let all: BTreeSet<&String> = (local.paths.iter())
            .chain(&remote.paths)
            .chain(&pending.paths)
            .collect();
        let part: Vec<String> = all.into_iter().take(n).cloned().collect();
        cursor.keep_rests(local, remote, part.last());
        cursor.after = part.last().cloned();
        cursor.done = part.is_empty();
        Ok(part)
    }

    /// A round planned all of `scope` with `peer` (every pending path is
    /// in every scope); `pending` are its paths to plan again (failed,
    /// held back or not finished).
    pub fn plan_done(&self, peer: &str, scope: &Scope, pending: &BTreeSet<String>) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db_err)?;
        {
            tx.execute("DELETE FROM pending WHERE peer = ?1", params![peer])
                .map_err(db_err)?;
            let mut keep = tx
                .prepare_cached("INSERT OR IGNORE INTO pending (peer, path) VALUES (?1, ?2)")
                .map_err(db_err)?;
            for p in pending {
                keep.execute(params![peer, p]).map_err(db_err)?;
            }
            // The partner's mark moves on only within the index it was
            // planned in: one that started over meanwhile is planned whole.
            tx.execute(
                "INSERT INTO partners (peer, index_id, seq, planned_remote, planned_local)
                 VALUES (?1, ?4, 0, ?2, ?3)
                 ON CONFLICT (peer) DO UPDATE SET planned_local = ?3,
                     planned_remote = CASE WHEN index_id = ?4 THEN ?2 ELSE planned_remote END",
                params![
                    peer,
                    scope.remote_to as i64,
                    scope.local_to as i64,
                    scope.index_id
                ],
            )
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }
}

impl SyncDb {
    /// Plan every path with every partner again (the patterns that keep
    /// paths out of plans changed).
    pub fn plan_all_again(&self) -> Result<()> {
        self.conn()?
            .execute(
                "UPDATE partners SET planned_remote = 0, planned_local = 0",
                [],
            )
            .map(|_| ())
            .map_err(db_err)
    }

    /// How many partners' indexes we keep.
    pub fn partner_count(&self) -> Result<usize> {
        self.conn()?
            .query_row("SELECT COUNT(*) FROM partners", [], |r| r.get::<_, i64>(0))
            .map(|n| n as usize)
            .map_err(db_err)
    }

    /// The bytes of names we keep of `peer`'s index and of all partners',
    /// as counted while they came (an upper bound).
    pub fn remote_bytes(&self, peer: &str) -> Result<(usize, usize)> {
        self.conn()?
            .query_row(
                "SELECT COALESCE(SUM(CASE WHEN peer = ?1 THEN bytes ELSE 0 END), 0),
                        COALESCE(SUM(bytes), 0)
                 FROM partners",
                params![peer],
                |r| Ok((r.get::<_, i64>(0)? as usize, r.get::<_, i64>(1)? as usize)),
            )
            .map_err(db_err)
    }

    /// Count the bytes of names we keep of `peer`'s index exactly (read
    /// from the primary key's index alone), and note the count.
    pub fn recount_remote(&self, peer: &str) -> Result<()> {
        self.conn()?
            .execute(
                "UPDATE partners SET bytes = (SELECT COALESCE(SUM(LENGTH(path)), 0)
                     FROM remote WHERE peer = ?1) WHERE peer = ?1",
                params![peer],
            )
            .map(|_| ())
            .map_err(db_err)
    }
}

#[cfg(test)]
#[path = "remote_tests.rs"]
mod tests;
