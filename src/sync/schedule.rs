//! When the engine runs a round, as a small pure schedule (time is an
//! argument): file-system events and partners with work are gathered for
//! a short debounce, so many wake-ups make one round; a periodic tick runs
//! a round with everyone; and a partner whose rounds keep failing is left
//! alone longer and longer ([`backoff`]). A second, rarer timer says when
//! the whole folder is scanned again ([`Schedule::take_rescan`]), to catch
//! what the watcher missed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How long file-system events are gathered before a round starts.
pub const DEBOUNCE: Duration = Duration::from_millis(40);
/// Longest the timer and local changes leave a failing partner alone.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// "Never", for a schedule without a timer.
const FAR: Duration = Duration::from_secs(3600 * 24 * 365);

/// How long the timer and local changes leave a partner alone, beyond its
/// regular next try one interval on, after `failures` failed rounds in a
/// row: nothing after one (a blip), then one interval, three, seven, ...
/// up to [`MAX_BACKOFF`]; the tries come 1, 2, 4, 8, ... intervals apart.
/// A partner that went away for good then costs a connection attempt every
/// five minutes, not one (of up to the connect timeout) every round; when
/// it comes back and offers its index, or on the shell's `sync`, it is
/// tried at once.
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    interval
        .saturating_mul((1u32 << doublings) - 1)
        .min(MAX_BACKOFF)
}

/// The round that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// With every partner (a local change, or the timer).
    All,
    /// With these partners only (they offered work).
    Some(BTreeSet<usize>),
}

/// What is waiting to run, and when.
#[derive(Debug)]
pub struct Schedule {
    interval: Duration,
    next_tick: Instant,
    rescan: Duration,
    next_rescan: Instant,
    due: Option<Instant>,
    all: bool,
    some: BTreeSet<usize>,
}

impl Schedule {
    /// A schedule whose first tick is now (`timer`), or that only runs on
    /// what it is told.
    pub fn new(now: Instant, timer: bool, interval: Duration) -> Schedule {
        Schedule {
            interval,
            next_tick: now + if timer { Duration::ZERO } else { FAR },
            rescan: FAR,
            next_rescan: now + FAR,
            due: None,
            all: false,
            some: BTreeSet::new(),
        }
    }

    /// A whole scan every `rescan`, the first one `rescan` from `now`.
    pub fn with_rescan(mut self, now: Instant, rescan: Duration) -> Schedule {
        self.rescan = rescan;
        self.next_rescan = now + rescan;
        self
    }

    /// Whether a whole scan is due at `now` (the next one is then one
    /// period on).
    pub fn take_rescan(&mut self, now: Instant) -> bool {
        if now < self.next_rescan {
            return false;
        }
        self.next_rescan = now + self.rescan;
        true
    }

    fn soon(&mut self, now: Instant) {
        let at = now + DEBOUNCE;
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
    }

    /// Something changed in the folder: a round with everyone, soon.
    pub fn local_change(&mut self, now: Instant) {
        self.all = true;
        self.soon(now);
    }

    /// Partner `i` showed work for us: a round with it, soon.
    pub fn partner_has_work(&mut self, now: Instant, i: usize) {
        self.some.insert(i);
        self.soon(now);
    }

    /// Whether a round is waiting.
    pub fn pending(&self) -> bool {
        self.due.is_some()
    }

    /// When to look again at the latest.
    pub fn next_wake(&self) -> Instant {
        let timers = self.next_tick.min(self.next_rescan);
        self.due.map_or(timers, |d| d.min(timers))
    }

    /// The round due at `now`, if any (the timer's tick makes it one with
    /// everyone and sets the next tick one interval on).
    pub fn take_due(&mut self, now: Instant) -> Option<Due> {
        if now >= self.next_tick {
            self.all = true;
            self.due = Some(now);
            self.next_tick = now + self.interval;
        }
        if self.due.is_none_or(|d| now < d) {
            return None;
        }
        self.due = None;
        let some = std::mem::take(&mut self.some);
        Some(if std::mem::take(&mut self.all) {
            Due::All
        } else {
            Due::Some(some)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_failing_partner_is_left_alone_longer_and_longer() {
        let s = Duration::from_secs;
        let waits: Vec<Duration> = (0..6).map(|f| backoff(s(10), f)).collect();
        assert_eq!(waits, vec![s(0), s(0), s(10), s(30), s(70), s(150)]);
        assert_eq!(backoff(s(10), 7), MAX_BACKOFF);
        assert_eq!(backoff(s(10), u32::MAX), MAX_BACKOFF);
        assert_eq!(backoff(s(3600), 2), MAX_BACKOFF);
    }

    #[test]
    fn many_events_make_one_round_after_the_debounce() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, false, Duration::from_secs(10));
        assert_eq!(s.take_due(t0), None);
        s.local_change(t0);
        s.local_change(t0 + ms(10));
        s.local_change(t0 + ms(30));
        assert!(s.pending());
        // The first event set the deadline; later ones do not push it on.
        assert_eq!(s.next_wake(), t0 + DEBOUNCE);
        assert_eq!(s.take_due(t0 + ms(39)), None);
        assert_eq!(s.take_due(t0 + DEBOUNCE), Some(Due::All));
        assert_eq!(s.take_due(t0 + ms(100)), None);
        assert!(!s.pending());
    }

    #[test]
    fn partners_with_work_get_a_round_of_their_own_unless_everyone_is_due() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, false, Duration::from_secs(10));
        s.partner_has_work(t0, 2);
        s.partner_has_work(t0, 0);
        let due = s.take_due(t0 + DEBOUNCE);
        assert_eq!(due, Some(Due::Some([0, 2].into_iter().collect())));
        s.partner_has_work(t0 + ms(100), 1);
        s.local_change(t0 + ms(110));
        assert_eq!(s.take_due(t0 + ms(100) + DEBOUNCE), Some(Due::All));
        // What was folded into "everyone" is not run again.
        assert_eq!(s.take_due(t0 + ms(500)), None);
    }

    #[test]
    fn the_timer_ticks_at_once_then_every_interval() {
        let t0 = Instant::now();
        let i = Duration::from_secs(10);
        let mut s = Schedule::new(t0, true, i);
        assert_eq!(s.take_due(t0), Some(Due::All));
        assert_eq!(s.next_wake(), t0 + i);
        assert_eq!(s.take_due(t0 + i - ms(1)), None);
        assert_eq!(s.take_due(t0 + i), Some(Due::All));
        // Without a timer it never ticks.
        let quiet = Schedule::new(t0, false, i);
        assert!(quiet.next_wake() > t0 + Duration::from_secs(3600 * 24 * 300));
    }

    #[test]
    fn rescans_come_on_their_own_rarer_timer() {
        let t0 = Instant::now();
        let (i, r) = (Duration::from_secs(10), Duration::from_secs(3600));
        let mut s = Schedule::new(t0, true, i).with_rescan(t0, r);
        assert_eq!(s.take_due(t0), Some(Due::All));
        assert!(!s.take_rescan(t0));
        // The partner check wakes first; the rescan one period from the start.
        assert_eq!(s.next_wake(), t0 + i);
        assert!(!s.take_rescan(t0 + r - ms(1)));
        assert!(s.take_rescan(t0 + r));
        assert!(!s.take_rescan(t0 + r + ms(1)));
        assert!(s.take_rescan(t0 + r + r));
    }
}
