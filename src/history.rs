//! The request log: one JSON line per request made or served, appended to
//! `.dropbox-shell/history.log` (time, direction, peer, command, outcome,
//! bytes), and read back for `history [N]`. At 16 MiB the log becomes
//! `history.log.1` (replacing the one before) and a new one starts, so a
//! busy peer's log stays under 32 MiB and `history` still sees the
//! previous generation.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::{Context, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Made,
    Served,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub time: String,
    pub direction: Direction,
    pub peer: String,
    pub command: String,
    pub outcome: String,
    pub bytes: u64,
}

impl Record {
    pub fn now(
        direction: Direction,
        peer: &str,
        command: &str,
        outcome: &str,
        bytes: u64,
    ) -> Record {
        Record {
            time: crate::timestamp::event_time(chrono::Utc::now()),
            direction,
            peer: peer.to_string(),
            command: command.to_string(),
            outcome: outcome.to_string(),
            bytes,
        }
    }
}

/// Size at which the log starts a new generation.
const ROTATE_AT: u64 = 16 << 20;

pub struct History {
    path: PathBuf,
    /// The open log and its size.
    file: Mutex<(File, u64)>,
    rotate_at: u64,
}

impl History {
    pub fn open(state_dir: &Path) -> Result<History> {
        History::open_rotating_at(state_dir, ROTATE_AT)
    }

    fn open_rotating_at(state_dir: &Path, rotate_at: u64) -> Result<History> {
        let path = state_dir.join("history.log");
        let file = open_append(&path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(History {
            path,
            file: Mutex::new((file, size)),
            rotate_at,
        })
    }

    fn previous(&self) -> PathBuf {
        self.path.with_extension("log.1")
    }

    /// Append a record; a failure to log never fails the request itself.
    pub fn log(&self, rec: &Record) {
        let (Ok(mut line), Ok(mut log)) = (serde_json::to_vec(rec), self.file.lock()) else {
            return;
        };
        line.push(b'\n');
        let (file, size) = &mut *log;
        if *size > 0 && *size + line.len() as u64 > self.rotate_at {
            let renamed = std::fs::rename(&self.path, self.previous());
            if let (Ok(()), Ok(new)) = (renamed, open_append(&self.path)) {
                *file = new;
                *size = 0;
            }
        }
        if file.write_all(&line).is_ok() {
            *size += line.len() as u64;
        }
    }

    /// The last `n` records, oldest first; lines that do not parse are skipped.
    pub fn last(&self, n: usize) -> Result<Vec<Record>> {
        let mut keep = VecDeque::with_capacity(n.min(10_000));
        // The previous generation first; it may not exist yet.
        if let Ok(f) = File::open(self.previous()) {
            keep_last(f, n, &mut keep);
        }
        let f = File::open(&self.path).context(format!("reading {}", self.path.display()))?;
        keep_last(f, n, &mut keep);
        Ok(keep.into())
    }
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .context(format!("opening {}", path.display()))
}

/// Push the records of a log onto `keep`, keeping only the last `n`.
fn keep_last(f: File, n: usize, keep: &mut VecDeque<Record>) {
    for line in BufReader::new(f).lines() {
        let Ok(line) = line else { break };
        if let Ok(rec) = serde_json::from_str::<Record>(&line) {
            if keep.len() == n {
                keep.pop_front();
            }
            if n > 0 {
                keep.push_back(rec);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_n_and_skips_garbage() {
        let d = tempfile::tempdir().unwrap();
        let h = History::open(d.path()).unwrap();
        for i in 0..5 {
            h.log(&Record::now(
                Direction::Made,
                "p",
                &format!("c{i}"),
                "ok",
                i,
            ));
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(d.path().join("history.log"))
            .unwrap()
            .write_all(b"not json\n")
            .unwrap();
        h.log(&Record::now(Direction::Served, "p", "c5", "ok", 5));
        let last: Vec<String> = h.last(3).unwrap().into_iter().map(|r| r.command).collect();
        assert_eq!(last, vec!["c3", "c4", "c5"]);
        assert!(h.last(0).unwrap().is_empty());
    }

    #[test]
    fn a_full_log_starts_a_new_generation_and_history_reads_both() {
        let d = tempfile::tempdir().unwrap();
        let rec = |i: u64| Record::now(Direction::Made, "p", &format!("c{i:02}"), "ok", 7);
        let line = serde_json::to_vec(&rec(0)).unwrap().len() as u64 + 1;
        let h = History::open_rotating_at(d.path(), 10 * line).unwrap();
        let commands = |h: &History, n| -> Vec<String> {
            h.last(n).unwrap().into_iter().map(|r| r.command).collect()
        };
        for i in 0..15 {
            h.log(&rec(i));
        }
        let all: Vec<String> = (0..15).map(|i| format!("c{i:02}")).collect();
        assert_eq!(commands(&h, 100), all);
        let size = |name: &str| std::fs::metadata(d.path().join(name)).unwrap().len();
        assert_eq!(size("history.log.1"), 10 * line);
        assert_eq!(size("history.log"), 5 * line);
        for i in 15..25 {
            h.log(&rec(i));
        }
        // Only the newest generation before the current one is kept.
        let kept: Vec<String> = (10..25).map(|i| format!("c{i:02}")).collect();
        assert_eq!(commands(&h, 100), kept);
        assert_eq!(commands(&h, 2), vec!["c23", "c24"]);
        // A reopened log knows its size and rotates at the same point.
        drop(h);
        let h = History::open_rotating_at(d.path(), 10 * line).unwrap();
        for i in 25..31 {
            h.log(&rec(i));
        }
        let kept: Vec<String> = (20..31).map(|i| format!("c{i:02}")).collect();
        assert_eq!(commands(&h, 100), kept);
    }
}
