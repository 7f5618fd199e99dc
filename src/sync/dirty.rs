//! What the watcher saw change, gathered until the next scan: the paths
//! it named, or "everything" when it named too many, lost events (its
//! queue overflowed) or a rescan is due. Pure: the watcher thread adds,
//! the engine takes.
//!
//! A file a pull lands is ours, and already recorded as it is: the pull
//! says so just before it lands it ([`Dirty::expect_ours`]), and the one
//! event its link or rename makes is then not counted. Any other event on
//! the path first (a write, a delete) ends the expectation and counts, and
//! an expectation the watcher never met ends after [`OURS_FOR`]. A pull of
//! 100,000 files so costs no scan of them afterwards (and no whole scan,
//! which 10,000 named paths would ask for).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Most paths gathered for one scan; beyond, a whole scan is cheaper.
pub const MAX_PATHS: usize = 10_000;

/// How long a landing of ours waits for its event: the watcher reads
/// events within milliseconds.
pub const OURS_FOR: Duration = Duration::from_secs(2);

/// Landings awaited at most; beyond, those past [`OURS_FOR`] are dropped
/// (a pull has a few dozen files in flight).
const MAX_OURS: usize = 4096;

/// What the next scan has to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToScan {
    Nothing,
    Paths(BTreeSet<String>),
    Everything,
}

#[derive(Debug, Default)]
pub struct Dirty {
    paths: BTreeSet<String>,
    everything: bool,
    /// Paths a pull is landing a file at, since when.
    ours: HashMap<String, Instant>,
}

impl Dirty {
    /// The path `rel` (relative to the folder) changed.
    pub fn add(&mut self, rel: &str) {
        if self.everything {
            return;
        }
        if self.paths.len() >= MAX_PATHS {
            self.everything();
        } else {
            self.paths.insert(rel.to_string());
        }
    }

    /// The watcher saw an event on `rel`: `lands_file` when it is what
    /// a link or rename of a file into place makes (made or moved in, not
    /// a folder). True when it counts, false when it was a pull's landing.
    pub fn saw(&mut self, rel: &str, lands_file: bool, now: Instant) -> bool {
        let ours = self.ours.remove(rel);
        if lands_file && ours.is_some_and(|since| now.duration_since(since) < OURS_FOR) {
            return false;
        }
        self.add(rel);
        true
    }

    /// A pull is about to land a file at `rel` (and records it itself).
    pub fn expect_ours(&mut self, rel: &str, now: Instant) {
        if self.ours.len() >= MAX_OURS {
            self.ours
                .retain(|_, since| now.duration_since(*since) < OURS_FOR);
        }
        if self.ours.len() < MAX_OURS {
            self.ours.insert(rel.to_string(), now);
        }
    }

    /// The landing at `rel` did not happen (or is not to be trusted).
    pub fn not_ours(&mut self, rel: &str) {
        self.ours.remove(rel);
    }

    /// Anything may have changed: the next scan walks the folder.
    pub fn everything(&mut self) {
        self.everything = true;
        self.paths.clear();
    }

    /// What to scan now; afterwards nothing is dirty.
    pub fn take(&mut self) -> ToScan {
        if std::mem::take(&mut self.everything) {
            return ToScan::Everything;
        }
        let paths = std::mem::take(&mut self.paths);
        if paths.is_empty() {
            ToScan::Nothing
        } else {
            ToScan::Paths(paths)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_gather_until_taken() {
        let mut d = Dirty::default();
        assert_eq!(d.take(), ToScan::Nothing);
        d.add("b");
        d.add("a/x");
        d.add("b");
        assert_eq!(
            d.take(),
            ToScan::Paths(["a/x".to_string(), "b".to_string()].into())
        );
        assert_eq!(d.take(), ToScan::Nothing);
    }

    #[test]
    fn too_many_paths_or_a_lost_event_mean_a_whole_scan() {
        let mut d = Dirty::default();
        for i in 0..=MAX_PATHS {
            d.add(&format!("f{i}"));
        }
        assert_eq!(d.take(), ToScan::Everything);
        d.add("a");
        d.everything();
        d.add("b");
        assert_eq!(d.take(), ToScan::Everything);
        assert_eq!(d.take(), ToScan::Nothing);
    }

    #[test]
    fn the_one_landing_event_of_a_pull_does_not_count_and_anything_else_does() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut d = Dirty::default();
        d.expect_ours("a", t0);
        assert!(!d.saw("a", true, at(5)));
        assert_eq!(d.take(), ToScan::Nothing);
        // Only once: a second landing event is someone else's.
        assert!(d.saw("a", true, at(6)));
        assert_eq!(d.take(), ToScan::Paths(["a".to_string()].into()));
        // Another event first (a write after the link) counts and ends it.
        d.expect_ours("b", t0);
        assert!(d.saw("b", false, at(5)));
        assert!(d.saw("b", true, at(6)));
        // A landing that failed, or another path, is not ours.
        d.expect_ours("c", t0);
        d.not_ours("c");
        assert!(d.saw("c", true, at(5)));
        d.expect_ours("e", t0);
        assert!(d.saw("e/x", true, at(5)));
        // An expectation the watcher never met ends.
        assert!(d.saw("e", true, t0 + OURS_FOR));
        assert_eq!(
            d.take(),
            ToScan::Paths(["b", "c", "e", "e/x"].map(String::from).into())
        );
    }

    #[test]
    fn awaited_landings_are_bounded_and_stale_ones_go_first() {
        let t0 = Instant::now();
        let mut d = Dirty::default();
        for i in 0..MAX_OURS + 10 {
            d.expect_ours(&format!("old{i}"), t0);
        }
        assert_eq!(d.ours.len(), MAX_OURS);
        let later = t0 + OURS_FOR;
        d.expect_ours("new", later);
        assert_eq!(d.ours.len(), 1);
        assert!(!d.saw("new", true, later));
    }
}
