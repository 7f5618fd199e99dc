//! The request log: one JSON line per request made or served, appended to
//! `.dropbox-shell/history.log` (time, direction, peer address, the peer's
//! id when its key proved one, command, outcome, bytes), and read back for
//! `history [N]`. At 16 MiB the log becomes
//! `history.log.1` (replacing the one before) and a new one starts, so a
//! busy peer's log stays under 32 MiB and `history` still sees the
//! previous generation.
//!
//! Refusals served to others (direction `served`, outcome `error...`) are
//! rate-limited by a token bucket ([`REFUSAL_BURST`] at once, then
//! [`REFUSALS_PER_SECOND`]), so a flood of bad requests cannot rotate the
//! real history away; the ones left out are counted, and a summary line
//! says how many before the next line is written. Requests this peer made
//! and requests served well are always logged.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

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
    /// The peer's id, as its key proved it in the handshake (absent for
    /// local actions, unproven senders and lines of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
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
            peer: clip(peer, LINE_TEXT).into_owned(),
            peer_id: None,
            command: clip(command, LINE_TEXT).into_owned(),
            outcome: clip(outcome, LINE_TEXT).into_owned(),
            bytes,
        }
    }

    /// The same, naming the peer's proven id.
    pub fn by(mut self, id: Option<&str>) -> Record {
        self.peer_id = id.map(|i| clip(i, LINE_TEXT).into_owned());
        self
    }
}

use crate::limits::{LINE_TEXT, clip};

/// Size at which the log starts a new generation.
const ROTATE_AT: u64 = 16 << 20;
/// Refusals logged at once before the rate limit applies.
pub const REFUSAL_BURST: f64 = 20.0;
/// Refusals logged per second after the burst.
pub const REFUSALS_PER_SECOND: f64 = 1.0;

type Clock = Box<dyn Fn() -> Instant + Send + Sync>;

/// The open log and what the rate limit of refusals remembers.
struct Log {
    file: File,
    size: u64,
    tokens: f64,
    refilled: Instant,
    /// Refusals left out since the last line written.
    suppressed: u64,
}

pub struct History {
    path: PathBuf,
    log: Mutex<Log>,
    rotate_at: u64,
    clock: Clock,
}

impl History {
    pub fn open(state_dir: &Path) -> Result<History> {
        History::open_rotating_at(state_dir, ROTATE_AT)
    }

    fn open_rotating_at(state_dir: &Path, rotate_at: u64) -> Result<History> {
        History::open_with(state_dir, rotate_at, Box::new(Instant::now))
    }

    fn open_with(state_dir: &Path, rotate_at: u64, clock: Clock) -> Result<History> {
        let path = state_dir.join("history.log");
        let file = open_append(&path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let log = Log {
            file,
            size,
            tokens: REFUSAL_BURST,
            refilled: clock(),
            suppressed: 0,
        };
        Ok(History {
            path,
            log: Mutex::new(log),
            rotate_at,
            clock,
        })
    }

    fn previous(&self) -> PathBuf {
        self.path.with_extension("log.1")
    }

    /// Append a record; a failure to log never fails the request itself.
    /// Refusals beyond the rate limit are only counted.
    pub fn log(&self, rec: &Record) {
        let Ok(mut log) = self.log.lock() else {
            return;
        };
        let refusal = rec.direction == Direction::Served && rec.outcome.starts_with("error");
        if refusal {
            let now = (self.clock)();
            let secs = now.saturating_duration_since(log.refilled).as_secs_f64();
            log.tokens = (log.tokens + secs * REFUSALS_PER_SECOND).min(REFUSAL_BURST);
            log.refilled = now;
            if log.tokens < 1.0 {
                log.suppressed += 1;
                return;
            }
            log.tokens -= 1.0;
        }
        if log.suppressed > 0 {
            let n = log.suppressed;
            log.suppressed = 0;
            let summary = Record {
                command: "(refused requests not logged)".into(),
                outcome: format!("error: {n} refused requests were not logged (rate limit)"),
                peer: "-".into(),
                peer_id: None,
                bytes: 0,
                direction: Direction::Served,
                time: rec.time.clone(),
            };
            self.append(&mut log, &summary);
        }
        self.append(&mut log, rec);
    }

    fn append(&self, log: &mut Log, rec: &Record) {
        let Ok(mut line) = serde_json::to_vec(rec) else {
            return;
        };
        line.push(b'\n');
        if log.size > 0 && log.size + line.len() as u64 > self.rotate_at {
            let renamed = std::fs::rename(&self.path, self.previous());
            if let (Ok(()), Ok(new)) = (renamed, open_append(&self.path)) {
                log.file = new;
                log.size = 0;
            }
        }
        if log.file.write_all(&line).is_ok() {
            log.size += line.len() as u64;
        }
    }

    /// The last `n` records, oldest first; lines that do not parse are skipped.
    pub fn last(&self, n: usize) -> Result<Vec<Record>> {
        let mut keep = VecDeque::with_capacity(n.min(10_000));
        // The previous generation first; it may not exist yet.
        if let Ok(f) = File::open(self.previous()) {
            keep_last(f, n, &mut keep);
        }
        let f = File::open(&self.path).context(format_args!("reading {}", self.path.display()))?;
        keep_last(f, n, &mut keep);
        Ok(keep.into())
    }
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .context(format_args!("opening {}", path.display()))
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

    #[test]
    fn a_flood_of_refusals_is_rate_limited_and_counted() {
        use std::sync::Arc;
        use std::time::Duration;
        let d = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let now = Arc::new(Mutex::new(t0));
        let clock = now.clone();
        let h = History::open_with(
            d.path(),
            ROTATE_AT,
            Box::new(move || *clock.lock().unwrap()),
        )
        .unwrap();
        h.log(&Record::now(Direction::Made, "p", "before", "ok", 1));
        let refusal =
            |i: u64| Record::now(Direction::Served, "x", &format!("bad{i}"), "error: no", 0);
        for i in 0..1000 {
            h.log(&refusal(i));
        }
        // Served well and made by us: never dropped, even now.
        h.log(&Record::now(Direction::Served, "p", "good", "ok", 2));
        h.log(&Record::now(Direction::Made, "p", "mine", "error: x", 0));
        let all = h.last(10_000).unwrap();
        let commands: Vec<&str> = all.iter().map(|r| r.command.as_str()).collect();
        assert_eq!(all.len(), 1 + 20 + 1 + 1 + 1, "{commands:?}");
        assert_eq!(commands[0], "before");
        assert_eq!(commands[20], "bad19");
        assert!(
            all[21].outcome.contains("980 refused requests"),
            "{:?}",
            all[21]
        );
        assert_eq!(&commands[22..], ["good", "mine"]);
        // Three seconds later, three more refusals pass; the rest are counted.
        *now.lock().unwrap() = t0 + Duration::from_secs(3);
        for i in 0..10 {
            h.log(&refusal(2000 + i));
        }
        h.log(&Record::now(Direction::Made, "p", "later", "ok", 0));
        let all = h.last(10_000).unwrap();
        let commands: Vec<&str> = all.iter().map(|r| r.command.as_str()).collect();
        assert_eq!(
            &commands[24..],
            [
                "bad2000",
                "bad2001",
                "bad2002",
                "(refused requests not logged)",
                "later"
            ]
        );
        assert!(all[27].outcome.contains(" 7 refused"), "{:?}", all[27]);
    }
}
