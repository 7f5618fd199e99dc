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
    pub errors: Vec<String>,
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
    match r.errors.as_slice() {
        [] => {}
        [one] => parts.push(format!("error: {one}")),
        many => parts.push(format!("{} errors: {}", many.len(), many.join("; "))),
    }
    if parts.is_empty() {
        "in sync".into()
    } else {
        parts.join(", ")
    }
}
