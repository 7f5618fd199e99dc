//! The last-synced state: for each partner (by peer id) and path, the state
//! both sides agreed on at the end of the last round that touched it. Kept
//! in SQLite (`.dropbox-shell/sync.db`, write-ahead log) so a crash in the
//! middle of a write leaves the previous state intact.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, params};

use super::plan::{FileState, Index};
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
}

fn db_err(e: rusqlite::Error) -> Error {
    Error::new(format!("sync database: {e}"))
}

impl SyncDb {
    pub fn open(state_dir: &Path) -> Result<SyncDb> {
        let conn = Connection::open(state_dir.join("sync.db")).map_err(db_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
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
             );",
        )
        .map_err(db_err)?;
        Ok(SyncDb {
            conn: Mutex::new(conn),
        })
    }

    /// Everything last synced with `peer`.
    pub fn load(&self, peer: &str) -> Result<Index> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| Error::new("sync database lock poisoned"))?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT path, dir, size, mtime_ns, mode, md5 FROM synced WHERE peer = ?1",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![peer], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    FileState {
                        kind: if r.get::<_, bool>(1)? {
                            Kind::Dir
                        } else {
                            Kind::File
                        },
                        size: r.get::<_, i64>(2)? as u64,
                        mtime_ns: r.get(3)?,
                        mode: r.get::<_, i64>(4)? as u32,
                        md5: r.get(5)?,
                    },
                ))
            })
            .map_err(db_err)?;
        rows.collect::<rusqlite::Result<Index>>().map_err(db_err)
    }

    /// Record (`Some`) or forget (`None`) paths for `peer`, in one transaction.
    pub fn apply(&self, peer: &str, changes: &[(String, Option<FileState>)]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| Error::new("sync database lock poisoned"))?;
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
        let p1 = db.load("p1").unwrap();
        assert_eq!(p1.len(), 1);
        assert_eq!(p1["a"], s);
        assert_eq!(db.load("p2").unwrap().len(), 1);
        assert!(db.load("nobody").unwrap().is_empty());
    }
}
