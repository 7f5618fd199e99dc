//! Which file each pulling connection takes next. Pulls come sorted by
//! path, so neighbours share a folder, and two connections taking turns
//! at neighbours would queue for that folder's lock in the kernel (each
//! new name is made under it). So each connection starts on a stretch of
//! the list of its own, and one whose stretch ran out takes from the end
//! of the longest stretch left, as long as that keeps more than its
//! owner asks for at once (a connection asks for many names ahead: one
//! that started first must not take them all): all finish together. Pure.

use std::collections::VecDeque;

pub(super) struct Spread {
    stretches: Vec<VecDeque<String>>,
    /// What a stretch keeps for its owner: no help below this.
    keep: usize,
}

impl Spread {
    /// `paths` cut into `lanes` stretches as long as each other; a lane
    /// takes from another's stretch only while it holds more than `keep`.
    pub(super) fn new(paths: Vec<String>, lanes: usize, keep: usize) -> Spread {
        let lanes = lanes.max(1);
        let each = paths.len().div_ceil(lanes).max(1);
        let mut stretches: Vec<VecDeque<String>> = Vec::with_capacity(lanes);
        let mut rest = paths.into_iter().peekable();
        while stretches.len() < lanes {
            stretches.push(rest.by_ref().take(each).collect());
        }
        Spread { stretches, keep }
    }

    /// The next path for connection `lane`.
    pub(super) fn next(&mut self, lane: usize) -> Option<String> {
        if let Some(p) = self.stretches.get_mut(lane).and_then(VecDeque::pop_front) {
            return Some(p);
        }
        self.stretches
            .iter_mut()
            .max_by_key(|s| s.len())
            .filter(|s| s.len() > self.keep)
            .and_then(VecDeque::pop_back)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("p{i:02}")).collect()
    }

    #[test]
    fn each_lane_starts_on_its_own_stretch_and_helps_the_longest_when_done() {
        let mut s = Spread::new(paths(10), 2, 1);
        assert_eq!(s.next(0).as_deref(), Some("p00"));
        assert_eq!(s.next(1).as_deref(), Some("p05"));
        assert_eq!(s.next(1).as_deref(), Some("p06"));
        // Lane 1 is quick: its stretch runs out, then it takes lane 0's
        // from the far end, leaving it one.
        for want in ["p07", "p08", "p09", "p04", "p03", "p02"] {
            assert_eq!(s.next(1).as_deref(), Some(want));
        }
        assert_eq!(s.next(1), None);
        assert_eq!(s.next(0).as_deref(), Some("p01"));
        assert_eq!(s.next(0), None);
    }

    #[test]
    fn a_lane_that_starts_first_does_not_take_what_the_others_ask_for_at_once() {
        // Two lanes asking for 64 names ahead, 40 paths: 20 each.
        let mut s = Spread::new(paths(40), 2, 64);
        let first: Vec<String> = std::iter::from_fn(|| s.next(0)).collect();
        assert_eq!(first, paths(20));
        let second: Vec<String> = std::iter::from_fn(|| s.next(1)).collect();
        assert_eq!(second.len(), 20);
    }

    #[test]
    fn every_path_is_given_once_whatever_the_lanes() {
        for n in [0, 1, 3, 7, 100] {
            for lanes in 1..5 {
                let mut s = Spread::new(paths(n), lanes, 2);
                // Each lane takes until it is told there is nothing for it.
                let mut got = Vec::new();
                for lane in 0..lanes {
                    got.extend(std::iter::from_fn(|| s.next(lane)));
                }
                got.sort();
                assert_eq!(got, paths(n), "{n} paths over {lanes} lanes");
            }
        }
    }
}
