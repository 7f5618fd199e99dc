//! The MD5 cache: a file whose size, mtime and inode are unchanged since it
//! was hashed is not read again. Kept in `.dropbox-shell/md5-cache.json`,
//! written with a temporary file and a rename so a crash never corrupts it.

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq)]
struct Key {
    size: u64,
    mtime_ns: i64,
    ino: u64,
}

#[derive(Serialize, Deserialize)]
struct Slot {
    #[serde(flatten)]
    key: Key,
    md5: [u8; 16],
}

/// Path -> (metadata, MD5).
pub struct HashCache {
    path: PathBuf,
    map: HashMap<String, Slot>,
    dirty: bool,
}

fn key(stat: &Metadata) -> Key {
    Key {
        size: stat.len(),
        mtime_ns: super::mtime_ns(stat),
        ino: stat.ino(),
    }
}

impl HashCache {
    /// Load the cache; a missing or unreadable file is an empty cache.
    pub fn load(path: PathBuf) -> HashCache {
        let map = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        HashCache {
            path,
            map,
            dirty: false,
        }
    }

    pub fn get(&self, name: &str, stat: &Metadata) -> Option<[u8; 16]> {
        let slot = self.map.get(name)?;
        (slot.key == key(stat)).then_some(slot.md5)
    }

    pub fn put(&mut self, name: &str, stat: &Metadata, md5: [u8; 16]) {
        self.map.insert(
            name.to_string(),
            Slot {
                key: key(stat),
                md5,
            },
        );
        self.dirty = true;
    }

    /// Write the cache if it changed; failures only cost a re-hash later.
    pub fn save(&mut self) {
        if !self.dirty {
            return;
        }
        let Ok(bytes) = serde_json::to_vec(&self.map) else {
            return;
        };
        let tmp = self.path.with_extension("json.tmp");
        if fs::write(&tmp, bytes).is_ok() && fs::rename(&tmp, &self.path).is_ok() {
            self.dirty = false;
        }
    }
}
