//! Reading a table's rows for the paths of one part of a plan, the
//! cheaper of two ways: when the paths lie close together in the table
//! (an initial sync, a folder added whole), one scan of the key range from
//! the least path to the greatest; else, or when that range turns out to
//! hold many rows the part does not ask for (a few changes scattered over
//! a large index), one lookup per path. The scan reads at most
//! [`RANGE_READS`] rows per path asked for before it gives up, so the
//! worst case costs a bounded scan on top of the lookups, and the best
//! one no lookup at all.

use rusqlite::{Connection, Row, params};

use super::db::db_err;
use crate::Result;

/// Rows a range scan may read per path asked for before the lookups take over.
const RANGE_READS: usize = 4;
/// Fewer paths than this are looked up one by one (no scan is tried).
const RANGE_MIN: usize = 32;

/// How one table is read for a set of paths. Both statements select the
/// same columns after `path`:
/// - `one`: those columns of the path `?1` (for the partner `?2`);
/// - `range`: `path` and those columns of the paths from `?1` to `?2`
///   (for the partner `?4`), ordered by path, at most `?3` rows.
pub(super) struct Reads {
    pub one: &'static str,
    pub range: &'static str,
}

/// The rows `reads` finds for `paths` (any order), each mapped by `map`
/// (given the row and the column its fields start at); rows it maps to
/// `None` are left out. In path order when the scan served them.
pub(super) fn rows_for<T>(
    conn: &Connection,
    reads: &Reads,
    peer: Option<&str>,
    paths: &[String],
    map: impl Fn(&Row, usize) -> rusqlite::Result<Option<T>>,
) -> Result<Vec<(String, T)>> {
    if paths.len() >= RANGE_MIN
        && let Some(found) = scan(conn, reads, peer, paths, &map)?
    {
        return Ok(found);
    }
    let mut one = conn.prepare_cached(reads.one).map_err(db_err)?;
    let mut out = Vec::new();
    for p in paths {
        let mut rows = match peer {
            Some(peer) => one.query(params![p, peer]),
            None => one.query(params![p]),
        }
        .map_err(db_err)?;
        if let Some(r) = rows.next().map_err(db_err)?
            && let Some(t) = map(r, 0).map_err(db_err)?
        {
            out.push((p.clone(), t));
        }
    }
    Ok(out)
}

/// The range scan of [`rows_for`]; `None` when the range held more rows
/// than it may read.
fn scan<T>(
    conn: &Connection,
    reads: &Reads,
    peer: Option<&str>,
    paths: &[String],
    map: &impl Fn(&Row, usize) -> rusqlite::Result<Option<T>>,
) -> Result<Option<Vec<(String, T)>>> {
    let mut wanted: Vec<&str> = paths.iter().map(String::as_str).collect();
    // SQLite's BINARY collation orders text as bytes, as `str` does.
    wanted.sort_unstable();
    wanted.dedup();
    let (first, last) = (wanted[0], wanted[wanted.len() - 1]);
    let limit = (wanted.len() * RANGE_READS) as i64;
    let mut stmt = conn.prepare_cached(reads.range).map_err(db_err)?;
    let mut rows = match peer {
        Some(peer) => stmt.query(params![first, last, limit, peer]),
        None => stmt.query(params![first, last, limit]),
    }
    .map_err(db_err)?;
    let (mut out, mut read, mut next) = (Vec::new(), 0i64, 0usize);
    while let Some(r) = rows.next().map_err(db_err)? {
        read += 1;
        let path = r.get_ref(0).and_then(|v| Ok(v.as_str()?)).map_err(db_err)?;
        while next < wanted.len() && wanted[next] < path {
            next += 1;
        }
        if next < wanted.len()
            && wanted[next] == path
            && let Some(t) = map(r, 1).map_err(db_err)?
        {
            out.push((path.to_string(), t));
        }
    }
    Ok((read < limit).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const READS: Reads = Reads {
        one: "SELECT v FROM t WHERE path = ?1",
        range: "SELECT path, v FROM t WHERE path >= ?1 AND path <= ?2 ORDER BY path LIMIT ?3",
    };

    fn table(paths: impl IntoIterator<Item = String>) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (path TEXT PRIMARY KEY, v INTEGER) WITHOUT ROWID")
            .unwrap();
        for (i, p) in paths.into_iter().enumerate() {
            conn.execute("INSERT INTO t VALUES (?1, ?2)", params![p, i as i64])
                .unwrap();
        }
        conn
    }

    fn read(conn: &Connection, paths: &[String]) -> Vec<(String, i64)> {
        let mut got = rows_for(conn, &READS, None, paths, |r, at| {
            let v: i64 = r.get(at)?;
            // Odd values stand for rows the caller leaves out.
            Ok((v % 2 == 0).then_some(v))
        })
        .unwrap();
        got.sort();
        got
    }

    /// The same rows whichever way they are read: dense, sparse, missing,
    /// repeated, unordered, and paths whose byte order is not char order.
    #[test]
    fn a_scan_and_lookups_find_the_same_rows() {
        let all: Vec<String> = (0..2000).map(|i| format!("d{}/f{i:05}", i % 7)).collect();
        let mut with_odd = all.clone();
        with_odd.extend(["é".to_string(), "z".into(), "Z".into(), "a b".into()]);
        let conn = table(with_odd.clone());
        let expect = |paths: &[String]| -> Vec<(String, i64)> {
            let mut e: Vec<(String, i64)> = with_odd
                .iter()
                .enumerate()
                .filter(|(i, p)| i % 2 == 0 && paths.contains(p))
                .map(|(i, p)| (p.clone(), i as i64))
                .collect();
            e.sort();
            e.dedup();
            e
        };
        let dense: Vec<String> = with_odd.iter().rev().cloned().collect();
        let sparse: Vec<String> = with_odd.iter().step_by(50).cloned().collect();
        // Each way is taken where it should be.
        let found =
            |paths: &[String]| scan(&conn, &READS, None, paths, &|_, _| Ok(Some(()))).unwrap();
        assert!(found(&dense).is_some());
        assert!(found(&sparse).is_none());
        let mut mixed: Vec<String> = all[100..400].to_vec();
        mixed.extend([
            "nothere".to_string(),
            "é".into(),
            all[5].clone(),
            all[5].clone(),
        ]);
        for paths in [dense, sparse, mixed, all[..10].to_vec(), Vec::new()] {
            assert_eq!(read(&conn, &paths), expect(&paths), "{} paths", paths.len());
        }
    }
}
