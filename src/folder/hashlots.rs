//! Hashing a whole folder in lots: the walk hands over its files as it
//! goes, a lot's uncached files are hashed on all cores, and each lot is
//! sent before the next is gathered, so answering `hash` for a folder of
//! a million files holds one lot, not the answer.

use super::Folder;
use crate::Result;
use crate::proto::{HashEntry, Kind, hex};

impl Folder {
    /// [`Folder::hash_all`], `n` files at a time to `send` as the walk goes:
    /// what it holds at once is one lot, however many files the folder
    /// has. Cache hits come from the walk's own metadata without opening
    /// the file; the rest of a lot are opened (safely) and hashed, on all
    /// cores. The first error of `send` ends it.
    pub fn hash_all_in(
        &self,
        n: usize,
        send: &mut dyn FnMut(Vec<HashEntry>) -> Result<()>,
    ) -> Result<()> {
        let mut lot = Lot::default();
        let mut sent = Ok(());
        self.walk_with_meta(|e, meta| {
            if sent.is_err() || e.kind != Kind::File {
                return;
            }
            match self.cached(&e.name, meta) {
                Some(md5) => lot.files.push(Some(HashEntry {
                    name: e.name,
                    md5: Some(hex(&md5)),
                    mtime_ns: e.mtime_ns,
                    error: None,
                })),
                None => {
                    lot.todo.push((lot.files.len(), e.name));
                    lot.files.push(None);
                }
            }
            if lot.files.len() >= n {
                sent = send(lot.hashed(self));
            }
        });
        if sent.is_ok() && !lot.files.is_empty() {
            sent = send(lot.hashed(self));
        }
        self.save_cache();
        sent
    }
}

/// Files of a walk on their way to [`Folder::hash_all_in`]'s `send`: those
/// with a cached MD5, and the rest (their place and name) to hash.
#[derive(Default)]
struct Lot {
    files: Vec<Option<HashEntry>>,
    todo: Vec<(usize, String)>,
}

impl Lot {
    /// Hash what is left of it, and hand it all over, in order.
    fn hashed(&mut self, folder: &Folder) -> Vec<HashEntry> {
        let names: Vec<String> = self.todo.iter().map(|(_, n)| n.clone()).collect();
        for ((i, _), h) in self.todo.drain(..).zip(folder.hash_unsaved(&names)) {
            self.files[i] = Some(h);
        }
        self.files.drain(..).flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn a_folder_is_hashed_lot_by_lot_in_the_walks_order() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..7 {
            fs::create_dir_all(d.path().join(format!("d{}", i % 2))).unwrap();
            fs::write(d.path().join(format!("d{}/f{i}", i % 2)), b"abc").unwrap();
        }
        let f = Folder::open(d.path()).unwrap();
        // Half of them cached already: the lots mix both kinds.
        f.hash_one("d0/f0").unwrap();
        f.hash_one("d1/f3").unwrap();
        let mut lots = Vec::new();
        f.hash_all_in(3, &mut |lot| {
            lots.push(lot);
            Ok(())
        })
        .unwrap();
        assert_eq!(lots.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
        let names: Vec<&str> = lots.iter().flatten().map(|h| h.name.as_str()).collect();
        let whole: Vec<String> = f.hash_all().into_iter().map(|h| h.name).collect();
        assert_eq!(names, whole, "the same files, in the same order");
        assert!(
            lots.iter()
                .flatten()
                .all(|h| h.md5.as_deref() == Some("900150983cd24fb0d6963f7d28e17f72"))
        );
        // The first failure to send ends it.
        let mut tries = 0;
        let e = f.hash_all_in(3, &mut |_| {
            tries += 1;
            Err(crate::Error::new("the client went away"))
        });
        assert!(e.is_err() && tries == 1);
    }
}
