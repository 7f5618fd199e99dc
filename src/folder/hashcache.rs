//! The MD5 cache: a file whose [`Version`] (size, mtime, ctime, inode) is
//! unchanged since it was hashed is not read again. The ctime is what an
//! in-place rewrite that sets the mtime back cannot hide. Kept in `.dropbox-shell/md5-cache.json`,
//! written with a temporary file and a rename so a crash never corrupts it.

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Version;

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq)]
struct Key {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
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
    let v = Version::of(stat);
    Key {
        size: v.size,
        mtime_ns: v.mtime_ns,
        ctime_ns: v.ctime_ns,
        ino: v.ino,
    }
}

impl HashCache {
    /// Load the cache; a missing or unreadable file is an empty cache.
    /// Read as it is parsed: the file (about 170 bytes a file) is never
    /// held whole beside the map.
    pub fn load(path: PathBuf) -> HashCache {
        let map = fs::File::open(&path)
            .ok()
            .and_then(|f| serde_json::from_reader(BufReader::with_capacity(1 << 16, f)).ok())
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

    /// Drop what is known of `name` (its cached MD5 proved wrong).
    pub fn forget(&mut self, name: &str) {
        if self.map.remove(name).is_some() {
            self.dirty = true;
        }
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

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Write the cache if it changed; failures only cost a re-hash later.
    pub fn save(&mut self) {
        if !self.dirty {
            return;
        }
        // Written as it is made (no copy of it all in memory).
        let tmp = self.path.with_extension("json.tmp");
        let written = fs::File::create(&tmp).and_then(|f| {
            let mut w = BufWriter::with_capacity(1 << 16, f);
            serde_json::to_writer(&mut w, &self.map)?;
            w.flush()
        });
        if written.is_ok() && fs::rename(&tmp, &self.path).is_ok() {
            self.dirty = false;
        } else {
            // Most likely the disk is full: give the room back.
            let _ = fs::remove_file(&tmp);
        }
    }
}
