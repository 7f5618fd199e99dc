//! What the engine tells: a round's report per partner, the status of
//! the engine and its partners (`sync status`), and the one-line summary
//! of a round that the log and the shell show.

use serde::{Deserialize, Serialize};

/// What one round did with one partner.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PartnerRound {
    pub peer: String,
    pub peer_id: Option<String>,
    pub pulled: usize,
    pub renamed: usize,
    pub deleted: usize,
    pub conflicts: usize,
    pub folders: usize,
    pub modes: usize,
    pub bytes: u64,
    /// Deletions held back until `sync confirm`.
    pub paused_deletions: usize,
    /// Actions not tried again: they failed before on the same states.
    #[serde(default)]
    pub left_alone: usize,
    /// The first [`ERRORS_KEPT`] errors; the rest are counted.
    pub errors: Vec<String>,
    #[serde(default)]
    pub more_errors: usize,
}

/// Errors a round's report keeps word for word (a full disk or a folder
/// of refused files must not make a line of a million errors).
pub const ERRORS_KEPT: usize = 20;

impl PartnerRound {
    /// The error that ended this round: first, whatever came before.
    pub fn fatal(&mut self, e: String) {
        self.errors.insert(0, e);
        if self.errors.len() > ERRORS_KEPT {
            self.errors.pop();
            self.more_errors += 1;
        }
    }

    /// Note an error of this round.
    pub fn error(&mut self, e: String) {
        match self.errors.len() < ERRORS_KEPT {
            true => self.errors.push(e),
            false => self.more_errors += 1,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncReport {
    pub partners: Vec<PartnerRound>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartnerStatus {
    pub peer: String,
    pub peer_id: Option<String>,
    pub last_round: Option<String>,
    pub last_result: Option<String>,
    pub paused_deletions: usize,
    /// Failed rounds in a row.
    pub failures: u32,
    /// While a failing partner is left alone: when the timer tries it next.
    pub next_try: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncStatus {
    pub enabled: bool,
    pub interval_seconds: u64,
    /// Period of the whole rescan of the folder.
    #[serde(default)]
    pub rescan_seconds: u64,
    /// Whether a watcher tells of changes (else only rescans find them).
    #[serde(default)]
    pub watching: bool,
    /// Whole walks of the folder since the start.
    #[serde(default)]
    pub walks: u64,
    pub last_round: Option<String>,
    pub pending: bool,
    pub partners: Vec<PartnerStatus>,
}

pub fn summary(r: &PartnerRound) -> String {
    let mut parts = Vec::new();
    for (n, what) in [
        (r.pulled, "pulled"),
        (r.renamed, "renamed"),
        (r.deleted, "deleted"),
        (r.conflicts, "conflicts"),
        (r.folders, "folders"),
        (r.modes, "modes"),
    ] {
        if n > 0 {
            parts.push(format!("{what} {n}"));
        }
    }
    if r.paused_deletions > 0 {
        parts.push(format!(
            "{} deletions paused (more than half the files within {} minutes): `sync confirm` to apply",
            r.paused_deletions,
            crate::sync::guard::WINDOW.as_secs() / 60
        ));
    }
    if r.left_alone > 0 {
        parts.push(format!(
            "{} left alone (failed before; `sync` tries again)",
            r.left_alone
        ));
    }
    let more = match r.more_errors {
        0 => String::new(),
        n => format!("; and {n} more"),
    };
    match r.errors.as_slice() {
        [] => {}
        [one] if more.is_empty() => parts.push(format!("error: {one}")),
        some => parts.push(format!(
            "{} errors: {}{more}",
            some.len() + r.more_errors,
            some.join("; ")
        )),
    }
    if parts.is_empty() {
        "in sync".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_keeps_a_few_errors_word_for_word_and_counts_the_rest() {
        let mut r = PartnerRound::default();
        r.error("a: refused".into());
        assert_eq!(summary(&r), "error: a: refused");
        for i in 0..1000 {
            r.error(format!("f{i}: no space"));
        }
        assert_eq!(r.errors.len(), ERRORS_KEPT);
        let line = summary(&r);
        assert!(
            line.starts_with("1001 errors: a: refused; f0: no space;"),
            "{line}"
        );
        assert!(line.ends_with("; and 981 more"), "{line}");
        assert!(line.len() < 1000);
        // What ended the round is kept, and first.
        r.fatal("no space left on the disk here".into());
        assert!(
            summary(&r).starts_with("1002 errors: no space left on the disk here; a: refused;")
        );
        assert_eq!((r.errors.len(), r.more_errors), (ERRORS_KEPT, 982));
    }
}
