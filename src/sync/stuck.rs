//! Actions that failed and are left alone until something changes. A
//! failure is remembered under (partner, path) with the local and remote
//! states it was planned from; while both are still the same, the action
//! is not tried again (so a conflict or a pull that cannot be applied is
//! reported once, not every round, and no bytes are pulled again for it).
//! It is tried again when either side changes, after [`RETRY_AFTER`]
//! (a failure may have been passing), or on the shell's `sync`. Pure: the
//! clock is an argument.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::plan::FileState;

/// How long a failed action is left alone when nothing changes.
pub const RETRY_AFTER: Duration = Duration::from_secs(15 * 60);
/// Most failures remembered; beyond, new ones are simply tried again.
pub const MAX_REMEMBERED: usize = 10_000;

type States = (Option<FileState>, Option<FileState>);

#[derive(Debug, Default)]
pub struct Stuck {
    failed: HashMap<(String, String), (States, Instant)>,
    /// While full: no failure remembered can expire before this (so a
    /// storm of failures does not sweep the whole map for each).
    full_until: Option<Instant>,
}

impl Stuck {
    /// True when this action failed before on exactly these states, less
    /// than [`RETRY_AFTER`] ago.
    pub fn left_alone(
        &self,
        partner: &str,
        path: &str,
        local: Option<&FileState>,
        remote: Option<&FileState>,
        now: Instant,
    ) -> bool {
        self.failed
            .get(&(partner.to_string(), path.to_string()))
            .is_some_and(|((l, r), at)| {
                l.as_ref() == local
                    && r.as_ref() == remote
                    && now.saturating_duration_since(*at) < RETRY_AFTER
            })
    }

    /// The action on `path` failed, planned from these states.
    pub fn failed(
        &mut self,
        partner: &str,
        path: &str,
        local: Option<&FileState>,
        remote: Option<&FileState>,
        now: Instant,
    ) {
        let key = (partner.to_string(), path.to_string());
        if self.failed.len() >= MAX_REMEMBERED && !self.failed.contains_key(&key) {
            if self.full_until.is_some_and(|until| now < until) {
                return;
            }
            self.failed
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < RETRY_AFTER);
            if self.failed.len() >= MAX_REMEMBERED {
                let oldest = self.failed.values().map(|(_, at)| *at).min();
                self.full_until = oldest.map(|at| at + RETRY_AFTER);
                return;
            }
        }
        self.failed
            .insert(key, ((local.cloned(), remote.cloned()), now));
    }

    /// Forget every failure: the next round tries everything.
    pub fn clear(&mut self) {
        self.failed.clear();
        self.full_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Kind;

    fn f(md5: &str) -> FileState {
        FileState {
            kind: Kind::File,
            size: 1,
            mtime_ns: 1,
            mode: 0o644,
            md5: Some(md5.into()),
        }
    }

    #[test]
    fn a_failure_is_left_alone_until_a_side_changes_or_time_passes() {
        let t0 = Instant::now();
        let mut s = Stuck::default();
        let (l, r) = (f("l"), f("r"));
        assert!(!s.left_alone("p", "x", Some(&l), Some(&r), t0));
        s.failed("p", "x", Some(&l), Some(&r), t0);
        assert!(s.left_alone("p", "x", Some(&l), Some(&r), t0 + Duration::from_secs(60)));
        // Another partner, another path, or either side changed: tried.
        assert!(!s.left_alone("q", "x", Some(&l), Some(&r), t0));
        assert!(!s.left_alone("p", "y", Some(&l), Some(&r), t0));
        assert!(!s.left_alone("p", "x", Some(&f("l2")), Some(&r), t0));
        assert!(!s.left_alone("p", "x", Some(&l), Some(&f("r2")), t0));
        assert!(!s.left_alone("p", "x", None, Some(&r), t0));
        // After a while, tried again.
        assert!(!s.left_alone("p", "x", Some(&l), Some(&r), t0 + RETRY_AFTER));
        s.clear();
        assert!(!s.left_alone("p", "x", Some(&l), Some(&r), t0));
    }

    #[test]
    fn it_remembers_a_bounded_number() {
        let t0 = Instant::now();
        let mut s = Stuck::default();
        for i in 0..MAX_REMEMBERED + 10 {
            s.failed("p", &format!("f{i}"), None, None, t0);
        }
        assert_eq!(s.failed.len(), MAX_REMEMBERED);
        // Full of fresh ones: a storm of failures is not remembered (and
        // does not sweep the map for each) until the oldest may go.
        let t1 = t0 + RETRY_AFTER / 2;
        s.failed("p", "f0", None, None, t1);
        for i in 0..1000 {
            s.failed("p", &format!("storm{i}"), None, None, t1);
        }
        assert_eq!(s.failed.len(), MAX_REMEMBERED);
        assert!(s.left_alone("p", "f0", None, None, t1));
        let later = t0 + RETRY_AFTER;
        s.failed("p", "new", None, None, later);
        assert_eq!(
            s.failed.len(),
            2,
            "old ones made room (f0 failed again later)"
        );
    }
}
