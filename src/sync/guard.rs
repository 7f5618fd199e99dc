//! The mass-deletion guard: deletions a partner asks of us are counted over
//! a window of time, not per round, so a folder emptied one file at a time
//! (each round seeing only a few deletions) trips it as surely as an
//! `rm -rf`. Pure: the clock is an argument.
//!
//! The rule: the deletions applied in the last [`WINDOW`] plus those planned
//! now, against the files there were at the window's start (the files here
//! now plus the deletions applied since), must not exceed half of them (and
//! a single deletion never trips it). Once it trips, every further deletion
//! waits for `sync confirm`, which applies them and starts a fresh window.
//! A tripped guard with nothing waiting clears by itself once the window
//! holds no more deletions (the cause went away).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back applied deletions count.
pub const WINDOW: Duration = Duration::from_secs(10 * 60);
/// Fewer deletions than this never trip the guard.
pub const MIN_DELETIONS: usize = 2;

#[derive(Debug, Default)]
pub struct DeletionGuard {
    /// Deletions applied: when, and how many.
    applied: VecDeque<(Instant, usize)>,
    tripped: bool,
}

impl DeletionGuard {
    /// Deletions applied within the window before `now`.
    fn recent(&mut self, now: Instant) -> usize {
        while let Some(&(at, _)) = self.applied.front() {
            if now.saturating_duration_since(at) > WINDOW {
                self.applied.pop_front();
            } else {
                break;
            }
        }
        self.applied.iter().map(|&(_, n)| n).sum()
    }

    /// Whether the `planned` deletions of a round must wait for `sync
    /// confirm`, with `local_files` files here now.
    pub fn hold(&mut self, now: Instant, local_files: usize, planned: usize) -> bool {
        let recent = self.recent(now);
        if self.tripped {
            if planned == 0 && recent == 0 {
                self.tripped = false;
            }
            return self.tripped;
        }
        let total = recent + planned;
        let at_start = local_files + recent;
        if planned > 0 && total >= MIN_DELETIONS && total * 2 > at_start {
            self.tripped = true;
        }
        self.tripped
    }

    /// `n` deletions were applied at `now`.
    pub fn applied(&mut self, now: Instant, n: usize) {
        if n > 0 {
            self.applied.push_back((now, n));
        }
    }

    /// `sync confirm` applied what waited: a fresh window.
    pub fn confirmed(&mut self) {
        self.applied.clear();
        self.tripped = false;
    }

    pub fn is_tripped(&self) -> bool {
        self.tripped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_emptied_a_few_files_a_round_trips_it_at_half() {
        let t0 = Instant::now();
        let mut g = DeletionGuard::default();
        let mut local = 3000;
        let mut deleted = 0;
        let mut round = 0;
        // 40 deletions a round, a second apart.
        while local > 0 && round < 100 {
            let now = t0 + Duration::from_secs(round);
            let planned = 40.min(local);
            if g.hold(now, local, planned) {
                break;
            }
            g.applied(now, planned);
            local -= planned;
            deleted += planned;
            round += 1;
        }
        assert!(g.is_tripped());
        assert!(deleted <= 1500, "{deleted} of 3000 deleted");
        assert!(deleted >= 1400, "{deleted}: tripped too early");
        // Once tripped, even one more deletion waits.
        assert!(g.hold(t0 + Duration::from_secs(200), local, 1));
        // Confirmed: a fresh window.
        g.confirmed();
        assert!(!g.hold(t0 + Duration::from_secs(201), local, 1));
    }

    #[test]
    fn deletions_spread_wider_than_the_window_do_not_add_up() {
        let t0 = Instant::now();
        let mut g = DeletionGuard::default();
        for i in 0..10u32 {
            // 30 of 100 files every 11 minutes: never half within a window.
            let now = t0 + (WINDOW + Duration::from_secs(60)) * i;
            assert!(!g.hold(now, 100, 30), "round {i}");
            g.applied(now, 30);
        }
        // But 30, then 30 a minute later, of 100: more than half of them.
        let now = t0 + WINDOW * 20;
        let mut g = DeletionGuard::default();
        assert!(!g.hold(now, 100, 30));
        g.applied(now, 30);
        assert!(g.hold(now + Duration::from_secs(60), 70, 30));
    }

    #[test]
    fn a_single_deletion_never_trips_and_a_trip_with_nothing_waiting_clears() {
        let t0 = Instant::now();
        let mut g = DeletionGuard::default();
        assert!(!g.hold(t0, 1, 1), "the only file");
        assert!(!g.hold(t0, 5, 0));
        assert!(g.hold(t0, 2, 2));
        // Nothing waits any more (the files came back) and none were
        // applied: cleared.
        assert!(!g.hold(t0, 2, 0));
        // But with deletions applied within the window it stays tripped.
        let mut g = DeletionGuard::default();
        g.applied(t0, 1);
        assert!(g.hold(t0, 2, 2));
        assert!(
            g.hold(t0 + Duration::from_secs(1), 2, 0),
            "within the window"
        );
        let later = t0 + WINDOW + Duration::from_secs(1);
        assert!(!g.hold(later, 2, 0), "window passed, nothing waits");
        assert!(!g.hold(later, 10, 1));
    }
}
