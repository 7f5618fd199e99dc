//! The sync database (`.dropbox-shell/sync.db`, SQLite with a write-ahead
//! log, so a crash in the middle of a write leaves the previous state
//! intact). This file owns the connection, the schema and the last-synced
//! state: for each partner (by peer id) and path, the state both sides
//! agreed on at the end of the last round that touched it. Our own index
//! with its sequence numbers is in [`super::local`]; what partners told us
//! of theirs, and how far each was planned, in [`super::remote`].

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, params};

use super::plan::FileState;
use crate::proto::Kind;
use crate::{Error, Result};

/// The database of a folder, opened on first use (a run that never syncs
/// makes none).
pub struct LazyDb {
    folder: std::sync::Arc<crate::folder::Folder>,
    db: std::sync::OnceLock<SyncDb>,
}

impl LazyDb {
    pub fn new(folder: std::sync::Arc<crate::folder::Folder>) -> LazyDb {
        LazyDb {
            folder,
            db: std::sync::OnceLock::new(),
        }
    }

    /// The database if it is open already (asking makes none).
    pub fn if_open(&self) -> Option<&SyncDb> {
        self.db.get()
    }

    /// The database, opened now if it was not yet.
    pub fn get(&self) -> Result<&SyncDb> {
        if let Some(db) = self.db.get() {
            return Ok(db);
        }
        let db = SyncDb::open(self.folder.state_dir())?;
        Ok(self.db.get_or_init(|| db))
    }
}

pub struct SyncDb {
    conn: Mutex<Connection>,
    /// Held by a scan of the folder: one at a time updates our index.
    pub(super) scanning: Mutex<()>,
    /// Whole walks of the folder so far (a change the watcher names costs none).
    pub walks: std::sync::atomic::AtomicU64,
}

pub(super) fn db_err(e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => Error::of(
            crate::ErrorKind::NoSpace,
            format!("no space left on the disk here (sync database: {e})"),
        ),
        _ => Error::new(format!("sync database: {e}")),
    }
}

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    CREATE TABLE IF NOT EXISTS synced (
        peer TEXT NOT NULL,
        path TEXT NOT NULL,
        dir INTEGER NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        mode INTEGER NOT NULL,
        md5 TEXT,
        PRIMARY KEY (peer, path)
    );
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS local (
        path TEXT PRIMARY KEY,
        dir INTEGER NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        mode INTEGER NOT NULL,
        md5 TEXT,
        ctime_ns INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        deleted INTEGER NOT NULL,
        ignored INTEGER NOT NULL DEFAULT 0,
        seq INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS local_by_seq ON local (seq);
    CREATE TABLE IF NOT EXISTS remote (
        peer TEXT NOT NULL,
        path TEXT NOT NULL,
        dir INTEGER NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        mode INTEGER NOT NULL,
        md5 TEXT,
        deleted INTEGER NOT NULL,
        agreed INTEGER NOT NULL,
        ignored INTEGER NOT NULL DEFAULT 0,
        seq INTEGER NOT NULL,
        PRIMARY KEY (peer, path)
    );
    CREATE INDEX IF NOT EXISTS remote_by_seq ON remote (peer, seq);
    CREATE TABLE IF NOT EXISTS partners (
        peer TEXT PRIMARY KEY,
        index_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        planned_remote INTEGER NOT NULL,
        planned_local INTEGER NOT NULL,
        bytes INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE IF NOT EXISTS pending (
        peer TEXT NOT NULL,
        path TEXT NOT NULL,
        PRIMARY KEY (peer, path)
    );
";

/// The last-synced states with a partner (see [`super::reads`]).
pub(super) const BASE_READS: super::reads::Reads = super::reads::Reads {
    one: "SELECT dir, size, mtime_ns, mode, md5 FROM synced WHERE path = ?1 AND peer = ?2",
    range: "SELECT path, dir, size, mtime_ns, mode, md5 FROM synced
            WHERE peer = ?4 AND path >= ?1 AND path <= ?2 ORDER BY path LIMIT ?3",
};

/// A state as stored: `dir` says the kind; sizes and modes as integers.
pub(super) fn state_from_row(r: &rusqlite::Row, at: usize) -> rusqlite::Result<FileState> {
    Ok(FileState {
        kind: if r.get::<_, bool>(at)? {
            Kind::Dir
        } else {
            Kind::File
        },
        size: r.get::<_, i64>(at + 1)? as u64,
        mtime_ns: r.get(at + 2)?,
        mode: r.get::<_, i64>(at + 3)? as u32,
        md5: r.get(at + 4)?,
    })
}

impl SyncDb {
    pub fn open(state_dir: &Path) -> Result<SyncDb> {
        let conn = Connection::open(state_dir.join("sync.db")).map_err(db_err)?;
        conn.execute_batch(SCHEMA).map_err(db_err)?;
        // A new database is a new index: partners that knew an older one
        // of ours learn from the changed id to take our index whole.
        let id = format!("{:016x}", fastrand::u64(..));
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('index_id', ?1)",
            params![id],
        )
        .map_err(db_err)?;
        Ok(SyncDb {
            conn: Mutex::new(conn),
            scanning: Mutex::new(()),
            walks: Default::default(),
        })
    }

    /// The connection, for one statement or transaction.
    pub(super) fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| Error::new("sync database lock poisoned"))
    }

    /// The id of our index: made with the database, so a partner that
    /// remembers another one knows we started over.
    pub fn index_id(&self) -> Result<String> {
        self.conn()?
            .query_row("SELECT value FROM meta WHERE key = 'index_id'", [], |r| {
                r.get(0)
            })
            .map_err(db_err)
    }

    /// Record (`Some`) or forget (`None`) paths for `peer`, in one transaction.
    pub fn apply(&self, peer: &str, changes: &[(String, Option<FileState>)]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db_err)?;
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO synced (peer, path, dir, size, mtime_ns, mode, md5)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(db_err)?;
            let mut del = tx
                .prepare_cached("DELETE FROM synced WHERE peer = ?1 AND path = ?2")
                .map_err(db_err)?;
            for (path, state) in changes {
                match state {
                    Some(s) => put
                        .execute(params![
                            peer,
                            path,
                            s.kind == Kind::Dir,
                            s.size as i64,
                            s.mtime_ns,
                            s.mode as i64,
                            s.md5
                        ])
                        .map_err(db_err)?,
                    None => del.execute(params![peer, path]).map_err(db_err)?,
                };
            }
        }
        tx.commit().map_err(db_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening() {
        let d = tempfile::tempdir().unwrap();
        let s = FileState {
            kind: Kind::File,
            size: 3,
            mtime_ns: -5,
            mode: 0o640,
            md5: Some("abc".into()),
        };
        {
            let db = SyncDb::open(d.path()).unwrap();
            db.apply(
                "p1",
                &[("a".into(), Some(s.clone())), ("b".into(), Some(s.clone()))],
            )
            .unwrap();
            db.apply("p1", &[("b".into(), None)]).unwrap();
            db.apply("p2", &[("c".into(), Some(s.clone()))]).unwrap();
        }
        let db = SyncDb::open(d.path()).unwrap();
        let all = ["a".to_string(), "b".to_string(), "c".to_string()];
        let base = |peer: &str| db.plan_view(peer, &all).unwrap().2;
        let p1 = base("p1");
        assert_eq!(p1.len(), 1);
        assert_eq!(p1["a"], s);
        assert_eq!(base("p2").len(), 1);
        assert!(base("nobody").is_empty());
    }
}
