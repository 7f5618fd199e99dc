//! The request log: one JSON line per request made or served, appended to
//! `.dropbox-shell/history.log` (time, direction, peer, command, outcome,
//! bytes), and read back for `history [N]`.

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
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            direction,
            peer: peer.to_string(),
            command: command.to_string(),
            outcome: outcome.to_string(),
            bytes,
        }
    }
}

pub struct History {
    path: PathBuf,
    file: Mutex<File>,
}

impl History {
    pub fn open(state_dir: &Path) -> Result<History> {
        let path = state_dir.join("history.log");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .context(format!("opening {}", path.display()))?;
        Ok(History {
            path,
            file: Mutex::new(file),
        })
    }

    /// Append a record; a failure to log never fails the request itself.
    pub fn log(&self, rec: &Record) {
        if let (Ok(mut line), Ok(mut f)) = (serde_json::to_vec(rec), self.file.lock()) {
            line.push(b'\n');
            let _ = f.write_all(&line);
        }
    }

    /// The last `n` records, oldest first; lines that do not parse are skipped.
    pub fn last(&self, n: usize) -> Result<Vec<Record>> {
        let f = File::open(&self.path).context(format!("reading {}", self.path.display()))?;
        let mut keep = VecDeque::with_capacity(n.min(10_000));
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
        Ok(keep.into())
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
}
