//! What the watcher saw change, gathered until the next scan: the paths
//! it named, or "everything" when it named too many, lost events (its
//! queue overflowed) or a rescan is due. Pure: the watcher thread adds,
//! the engine takes.

use std::collections::BTreeSet;

/// Most paths gathered for one scan; beyond, a whole scan is cheaper.
pub const MAX_PATHS: usize = 10_000;

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
}
