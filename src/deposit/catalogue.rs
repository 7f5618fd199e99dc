//! The owner's local catalogue of deposits (`deposits.json` beside the
//! shell's history): the stores seen, and which stores held each deposit
//! when last asked. Only a cache: the stores' answers win, and a lost
//! catalogue is rebuilt from them (`replicas` with the same identity). It
//! lets `replicas` name a holder that does not answer now, and gives the
//! next command the stores to ask.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StoreRef;
use super::find::SEEDS;

/// Holders remembered per deposit.
const HOLDERS: usize = 16;

/// A store as remembered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub id: String,
    pub addr: String,
    pub zone: String,
}

impl From<&StoreRef> for Seen {
    fn from(s: &StoreRef) -> Seen {
        Seen {
            id: s.id.clone(),
            addr: s.addr.clone(),
            zone: s.zone.clone(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Catalogue {
    #[serde(skip)]
    path: PathBuf,
    /// Addresses of stores seen, newest last.
    pub stores: Vec<String>,
    /// Per deposit name: the stores that held a copy.
    pub holders: BTreeMap<String, Vec<Seen>>,
}

impl Catalogue {
    pub const FILE: &str = "deposits.json";

    /// The catalogue in `dir` (empty when there is none or it cannot be read).
    pub fn load(dir: &Path) -> Catalogue {
        let path = dir.join(Self::FILE);
        let mut c: Catalogue = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        c.path = path;
        c
    }

    /// Remember the stores that answered.
    pub fn saw(&mut self, stores: &[StoreRef]) {
        for s in stores {
            self.stores.retain(|a| *a != s.addr);
            self.stores.push(s.addr.clone());
        }
        let over = self.stores.len().saturating_sub(SEEDS);
        self.stores.drain(..over);
    }

    /// Remember who holds `name` now (none: forgotten).
    pub fn held(&mut self, name: &str, holders: Vec<Seen>) {
        if holders.is_empty() {
            self.holders.remove(name);
        } else {
            let mut h = holders;
            h.truncate(HOLDERS);
            self.holders.insert(name.to_string(), h);
        }
    }

    /// Write it (a failure only costs the cache).
    pub fn save(&self) {
        if let Ok(text) = serde_json::to_string_pretty(self) {
            let _ = crate::secure::replace_private_file(&self.path, &text, "deposit catalogue");
        }
    }
}
