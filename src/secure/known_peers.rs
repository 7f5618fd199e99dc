//! The ids seen at each address, as ssh's `known_hosts`: the first id a
//! peer proves at `HOST:PORT` is remembered in `known_peers` (one
//! `HOST:PORT ID` per line, `#` starts a comment); a later connection to
//! that address that proves another id fails with a warning naming both,
//! until `peer forget HOST:PORT`. The file holds at most [`KNOWN_PEERS`]
//! addresses (the oldest give way) and is rewritten atomically.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::PeerId;
use super::handshake::auth_failed;
use crate::{Context, Result};

/// Addresses the file remembers at most.
pub const KNOWN_PEERS: usize = 4096;

/// The `known_peers` file of a peer (or of a client-only user).
#[derive(Debug)]
pub struct KnownPeers {
    path: PathBuf,
    /// Addresses kept at most.
    cap: usize,
    /// One check or change at a time within this process.
    lock: Mutex<()>,
}

/// The form an address is remembered in.
fn key_of(addr: &str) -> String {
    addr.trim().to_ascii_lowercase()
}

impl KnownPeers {
    pub fn at(path: &Path) -> KnownPeers {
        KnownPeers {
            path: path.to_path_buf(),
            cap: KNOWN_PEERS,
            lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Check the id a peer proved at `addr`: remembered if it is the
    /// first; an error naming both ids and the way out if another was seen
    /// there before.
    pub fn check(&self, addr: &str, id: &PeerId) -> Result<()> {
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let key = key_of(addr);
        let mut entries = self.read()?;
        match entries.iter().find(|(a, _)| *a == key) {
            Some((_, seen)) if seen == id => Ok(()),
            Some((_, seen)) => Err(auth_failed(format!(
                "peer {addr} now has id {id}, but id {seen} was seen there before (in {}); if that is expected, run `peer forget {addr}`",
                self.path.display()
            ))),
            None => {
                if entries.len() >= self.cap {
                    entries.remove(0);
                }
                entries.push((key, *id));
                // Not remembered (a read-only state folder): the check
                // still held for this connection.
                let _ = self.write(&entries);
                Ok(())
            }
        }
    }

    /// Forget the id seen at `addr`: whether one was remembered.
    pub fn forget(&self, addr: &str) -> Result<Option<PeerId>> {
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let key = key_of(addr);
        let mut entries = self.read()?;
        let Some(i) = entries.iter().position(|(a, _)| *a == key) else {
            return Ok(None);
        };
        let (_, id) = entries.remove(i);
        self.write(&entries)?;
        Ok(Some(id))
    }

    /// The remembered addresses and ids, oldest first; lines that do not
    /// parse are skipped.
    fn read(&self) -> Result<Vec<(String, PeerId)>> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(e).context(format_args!("known peers file {}", self.path.display()));
            }
        };
        Ok(text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| {
                let (addr, id) = l.trim().split_once(' ')?;
                Some((key_of(addr), PeerId::parse(id.trim()).ok()?))
            })
            .take(self.cap)
            .collect())
    }

    fn write(&self, entries: &[(String, PeerId)]) -> Result<()> {
        let mut text = String::from(
            "# HOST:PORT PEER-ID: the id each address proved first (see `peer forget`)\n",
        );
        for (addr, id) in entries {
            text.push_str(&format!("{addr} {id}\n"));
        }
        super::replace_private_file(&self.path, &text, "known peers file")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::Keypair;

    fn id() -> PeerId {
        Keypair::generate().unwrap().id()
    }

    #[test]
    fn the_first_id_is_remembered_and_another_refused_until_forgotten() {
        let d = tempfile::tempdir().unwrap();
        let known = KnownPeers::at(&d.path().join("known_peers"));
        let (a, b) = (id(), id());
        known.check("Host:9", &a).unwrap();
        known.check("host:9", &a).unwrap();
        known.check("other:9", &b).unwrap();
        let e = known.check("host:9", &b).unwrap_err();
        let m = e.message();
        assert!(
            m.starts_with("authentication failed: peer host:9 now has id"),
            "{m}"
        );
        assert!(
            m.contains(&a.to_string()) && m.contains(&b.to_string()),
            "{m}"
        );
        assert!(m.contains("peer forget host:9"), "{m}");
        // Another process sees the same file.
        let again = KnownPeers::at(known.path());
        assert!(again.check("host:9", &b).is_err());
        assert_eq!(again.forget("HOST:9").unwrap(), Some(a));
        assert_eq!(again.forget("host:9").unwrap(), None);
        known.check("host:9", &b).unwrap();
        assert!(known.check("host:9", &a).is_err());
        known.check("other:9", &b).unwrap();
    }

    #[test]
    fn the_file_stays_bounded_and_skips_what_does_not_parse() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("known_peers");
        let first = id();
        fs::write(
            &path,
            format!("# comment\ngarbage\nh:1 {first}\nh:2 not-an-id\n"),
        )
        .unwrap();
        let known = KnownPeers {
            cap: 8,
            ..KnownPeers::at(&path)
        };
        assert!(known.check("h:1", &id()).is_err());
        known.check("h:2", &id()).unwrap();
        for i in 0..20 {
            known.check(&format!("n:{i}"), &first).unwrap();
        }
        assert_eq!(known.read().unwrap().len(), 8);
        // The oldest gave way.
        known.check("h:1", &id()).unwrap();
    }
}
