//! Our own index, kept in the sync database: every path of the folder with
//! its state and the host-local stamp (ctime, inode) that tells a scan
//! whether it changed without reading it. Every change gets the next
//! sequence number, and a path that went stays as a tombstone with its
//! last state, so a partner that saw our index up to sequence `n` is sent
//! only what came after (as Syncthing's index updates). [`super::scan`]
//! fills it; the exchange with a partner reads it.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};

use super::db::{SyncDb, db_err, state_from_row};
use super::plan::FileState;
use crate::Result;
use crate::proto::{Kind, SyncEntry};

/// What a scan saw of one path: its state, and the stamp that changes
/// whenever its bytes may have (a rewrite that sets the mtime back still
/// moves the ctime).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub state: FileState,
    pub ctime_ns: i64,
    pub ino: u64,
}

impl Seen {
    /// True when `now`, the metadata of the same path, shows no change
    /// worth reading the file again for. A folder changes only by kind or
    /// mode: its mtime moves with every file made in it, which is no news.
    pub fn unchanged(&self, now: &Seen) -> bool {
        let (a, b) = (&self.state, &now.state);
        if a.kind != b.kind || a.mode != b.mode {
            return false;
        }
        a.kind == Kind::Dir
            || (a.size == b.size
                && a.mtime_ns == b.mtime_ns
                && self.ctime_ns == now.ctime_ns
                && self.ino == now.ino)
    }
}

/// One change a scan found.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalChange {
    Present(String, Seen),
    Gone(String),
    /// `.dropboxignore` now keeps it out: partners leave it alone.
    Ignored(String),
}

/// Our index (see [`super::reads`]); `deleted` and `ignored` follow the
/// state, for [`present_state`].
pub(super) const LOCAL_READS: super::reads::Reads = super::reads::Reads {
    one: "SELECT dir, size, mtime_ns, mode, md5, deleted, ignored FROM local WHERE path = ?1",
    range: "SELECT path, dir, size, mtime_ns, mode, md5, deleted, ignored FROM local
            WHERE path >= ?1 AND path <= ?2 ORDER BY path LIMIT ?3",
};

/// The state of a row of [`LOCAL_READS`] if the file is here and not ignored.
pub(super) fn present_state(r: &rusqlite::Row, at: usize) -> rusqlite::Result<Option<FileState>> {
    let (deleted, ignored): (bool, bool) = (r.get(at + 5)?, r.get(at + 6)?);
    match deleted || ignored {
        true => Ok(None),
        false => state_from_row(r, at).map(Some),
    }
}

fn same_state(a: &FileState, b: &FileState) -> bool {
    a.kind == b.kind
        && a.mode == b.mode
        && a.md5 == b.md5
        && (a.kind == Kind::Dir || (a.size == b.size && a.mtime_ns == b.mtime_ns))
}

impl SyncDb {
    /// What the last scan saw of each path directly inside folder `dir`
    /// (`""`: the top), without MD5s: what a walk compares one folder
    /// with, so it never holds the whole index.
    pub fn local_children(&self, dir: &str) -> Result<HashMap<String, Seen>> {
        let conn = self.conn()?;
        let (sql, args): (&str, Vec<String>) = if dir.is_empty() {
            (
                "SELECT path, dir, size, mtime_ns, mode, NULL, ctime_ns, ino FROM local
                 WHERE deleted = 0 AND ignored = 0 AND instr(path, '/') = 0",
                Vec::new(),
            )
        } else {
            (
                "SELECT path, dir, size, mtime_ns, mode, NULL, ctime_ns, ino FROM local
                 WHERE path > ?1 AND path < ?2 AND deleted = 0 AND ignored = 0
                   AND instr(substr(path, length(?1) + 1), '/') = 0",
                vec![format!("{dir}/"), format!("{dir}0")],
            )
        };
        let mut stmt = conn.prepare_cached(sql).map_err(db_err)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Seen {
                        state: state_from_row(r, 1)?,
                        ctime_ns: r.get(6)?,
                        ino: r.get::<_, i64>(7)? as u64,
                    },
                ))
            })
            .map_err(db_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db_err)
    }

    /// The paths our index marks as ignored.
    pub fn local_ignored(&self) -> Result<std::collections::HashSet<String>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare_cached("SELECT path FROM local WHERE ignored = 1 AND deleted = 0")
            .map_err(db_err)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(db_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db_err)
    }

    /// What the last scan saw of `path`, if we have it (and do not ignore it).
    pub fn local_seen(&self, path: &str) -> Result<Option<Seen>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT dir, size, mtime_ns, mode, md5, ctime_ns, ino
                 FROM local WHERE path = ?1 AND deleted = 0 AND ignored = 0",
            )
            .map_err(db_err)?;
        stmt.query_row(params![path], |r| {
            Ok(Seen {
                state: state_from_row(r, 0)?,
                ctime_ns: r.get(5)?,
                ino: r.get::<_, i64>(6)? as u64,
            })
        })
        .optional()
        .map_err(db_err)
    }

    /// The paths we have inside folder `dir`, at any depth.
    pub fn local_under(&self, dir: &str) -> Result<Vec<String>> {
        let conn = self.conn()?;
        // Every path inside `dir/` sorts between `dir/` and `dir0` ('0' follows '/').
        let mut stmt = conn
            .prepare_cached("SELECT path FROM local WHERE path > ?1 AND path < ?2 AND deleted = 0")
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![format!("{dir}/"), format!("{dir}0")], |r| r.get(0))
            .map_err(db_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db_err)
    }

    /// Apply what a scan found, in one transaction; every change of state
    /// gets the next sequence number (a new stamp alone does not). Returns
    /// how many did.
    pub fn local_apply(&self, changes: &[LocalChange]) -> Result<usize> {
        if changes.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db_err)?;
        let mut next: i64 = tx
            .query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM local", [], |r| {
                r.get(0)
            })
            .map_err(db_err)?;
        let first = next;
        {
            let mut get = tx
                .prepare_cached(
                    "SELECT dir, size, mtime_ns, mode, md5 FROM local
                     WHERE path = ?1 AND deleted = 0 AND ignored = 0",
                )
                .map_err(db_err)?;
            let mut put = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO local
                     (path, dir, size, mtime_ns, mode, md5, ctime_ns, ino, deleted, ignored, seq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, 0, ?9)",
                )
                .map_err(db_err)?;
            let mut stamp = tx
                .prepare_cached("UPDATE local SET ctime_ns = ?2, ino = ?3 WHERE path = ?1")
                .map_err(db_err)?;
            let mut gone = tx
                .prepare_cached(
                    "UPDATE local SET deleted = 1, seq = ?2 WHERE path = ?1 AND deleted = 0",
                )
                .map_err(db_err)?;
            let mut ignored = tx
                .prepare_cached(
                    "UPDATE local SET ignored = 1, seq = ?2
                     WHERE path = ?1 AND deleted = 0 AND ignored = 0",
                )
                .map_err(db_err)?;
            for change in changes {
                match change {
                    LocalChange::Present(path, seen) => {
                        let was = get
                            .query_row(params![path], |r| state_from_row(r, 0))
                            .optional()
                            .map_err(db_err)?;
                        if was.is_some_and(|w| same_state(&w, &seen.state)) {
                            stamp
                                .execute(params![path, seen.ctime_ns, seen.ino as i64])
                                .map_err(db_err)?;
                            continue;
                        }
                        let s = &seen.state;
                        put.execute(params![
                            path,
                            s.kind == Kind::Dir,
                            s.size as i64,
                            s.mtime_ns,
                            s.mode as i64,
                            s.md5,
                            seen.ctime_ns,
                            seen.ino as i64,
                            next
                        ])
                        .map_err(db_err)?;
                        next += 1;
                    }
                    LocalChange::Gone(path) => {
                        if gone.execute(params![path, next]).map_err(db_err)? > 0 {
                            next += 1;
                        }
                    }
                    LocalChange::Ignored(path) => {
                        if ignored.execute(params![path, next]).map_err(db_err)? > 0 {
                            next += 1;
                        }
                    }
                }
            }
        }
        tx.commit().map_err(db_err)?;
        Ok((next - first) as usize)
    }

    /// The highest sequence number of our index (0: empty).
    pub fn local_seq(&self) -> Result<u64> {
        self.conn()?
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM local", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(db_err)
    }

    /// Up to `limit` entries of our index changed after sequence `since`,
    /// in order, as offered to `peer`: each marked `agreed` when it is in
    /// the state last synced with that peer; a tombstone of a path we
    /// agreed on carries the agreed state (a deletion propagates only
    /// onto the very version we had in common).
    pub fn local_since(&self, peer: &str, since: u64, limit: usize) -> Result<Vec<SyncEntry>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT l.path, l.dir, l.size, l.mtime_ns, l.mode, l.md5, l.deleted, l.seq,
                        s.dir, s.size, s.mtime_ns, s.mode, s.md5, l.ignored
                 FROM local l LEFT JOIN synced s ON s.peer = ?1 AND s.path = l.path
                 WHERE l.seq > ?2 ORDER BY l.seq LIMIT ?3",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![peer, since as i64, limit as i64], |r| {
                let state = state_from_row(r, 1)?;
                let deleted: bool = r.get(6)?;
                let seq = r.get::<_, i64>(7)? as u64;
                let base = match r.get::<_, Option<bool>>(8)? {
                    Some(_) => Some(state_from_row(r, 8)?),
                    None => None,
                };
                let mut e = offered(r.get(0)?, state, deleted, seq, base);
                e.ignored = r.get(13)?;
                Ok(e)
            })
            .map_err(db_err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db_err)
    }

    /// How many files we have (what the mass-deletion guard weighs against).
    pub fn local_files(&self) -> Result<usize> {
        self.conn()?
            .query_row(
                "SELECT COUNT(*) FROM local WHERE deleted = 0 AND ignored = 0 AND dir = 0",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(db_err)
    }

    /// Whether a whole scan of the folder has filled our index yet (until
    /// then it must not be offered: an empty index reads as "deleted").
    pub fn local_scanned(&self) -> Result<bool> {
        let conn = self.conn()?;
        conn.query_row("SELECT 1 FROM meta WHERE key = 'scanned'", [], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
            .map_err(db_err)
    }

    pub fn set_local_scanned(&self) -> Result<()> {
        self.conn()?
            .execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('scanned', '1')",
                [],
            )
            .map(|_| ())
            .map_err(db_err)
    }
}

/// One entry of our index as offered to a partner whose last-synced state
/// of it is `base`.
fn offered(
    name: String,
    state: FileState,
    deleted: bool,
    seq: u64,
    base: Option<FileState>,
) -> SyncEntry {
    let (state, agreed) = match (deleted, base) {
        (true, Some(b)) => (b, true),
        (true, None) => (state, false),
        (false, b) => {
            let agreed = b.is_some_and(|b| b.same(&state));
            (state, agreed)
        }
    };
    SyncEntry {
        name,
        kind: state.kind,
        size: state.size,
        mtime_ns: state.mtime_ns,
        mode: state.mode,
        md5: state.md5,
        deleted,
        agreed,
        ignored: false,
        seq,
    }
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
