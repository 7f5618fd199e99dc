//! This peer's id, and the folder it belongs to. The id lives in
//! `.dropbox-shell/peer-id` beside the inode of the shared folder it was
//! made for: a copied folder (`cp -a`, a restored backup) brings the file
//! along but sits on another inode, so it takes an id of its own instead
//! of posing as the original to their common partners (which would make
//! each undo the other's changes). The device number is left out: on
//! network, FUSE and btrfs mounts it can change from one boot to the next,
//! and an ordinary restart must keep the id.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use crate::folder::Folder;
use crate::{Context, Result};

/// The id of the peer sharing a folder, loaded (or made, and tied to the
/// folder) on first use, so a run that never needs it writes nothing.
pub struct Identity {
    folder: Arc<Folder>,
    id: OnceLock<String>,
}

impl Identity {
    pub fn new(folder: Arc<Folder>) -> Identity {
        Identity {
            folder,
            id: OnceLock::new(),
        }
    }

    /// This peer's id; a copied folder's new id is announced on stderr once.
    pub fn id(&self) -> &str {
        self.id.get_or_init(|| {
            match load_or_create(self.folder.root(), self.folder.state_dir()) {
                Ok(loaded) => {
                    if let Some(n) = loaded.notice {
                        eprintln!("dropbox-shell: {}", crate::display::escape(&n));
                    }
                    loaded.id
                }
                // Unwritable state: an id for this run only.
                Err(_) => new_id(),
            }
        })
    }
}

/// The id file's name in the state folder.
const ID_FILE: &str = "peer-id";

/// A loaded or new id, and a sentence for the user when it had to change.
pub struct LoadedId {
    pub id: String,
    pub notice: Option<String>,
}

fn folder_key(root: &Path) -> Result<String> {
    let m = fs::metadata(root).context(format!("shared folder {}", root.display()))?;
    Ok(m.ino().to_string())
}

fn valid(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The id of the peer sharing `root`, whose state folder is `state`:
/// the recorded one while the folder is the one it was made for, else a
/// new one (saying why).
pub fn load_or_create(root: &Path, state: &Path) -> Result<LoadedId> {
    let path = state.join(ID_FILE);
    let here = folder_key(root)?;
    let text = fs::read_to_string(&path).unwrap_or_default();
    let mut lines = text.lines();
    let id = lines.next().map(str::trim).filter(|id| valid(id));
    let made_for = lines.find_map(|l| l.strip_prefix("folder ")).map(str::trim);
    let (id, notice) = match (id, made_for) {
        (Some(id), Some(f)) if f == here => {
            return Ok(LoadedId {
                id: id.into(),
                notice: None,
            });
        }
        // Written before ids were tied to folders: tie it to this one.
        (Some(id), None) => (id.to_string(), None),
        (Some(old), Some(_)) => {
            let new = new_id();
            let note = format!(
                "the state folder of {} was copied from another folder (peer id {old}); this copy takes its own peer id {new}",
                root.display()
            );
            (new, Some(note))
        }
        (None, _) => (new_id(), None),
    };
    fs::write(&path, format!("{id}\nfolder {here}\n"))
        .context(format!("writing {}", path.display()))?;
    Ok(LoadedId { id, notice })
}

fn new_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_stays_with_its_folder_and_a_copy_takes_a_new_one() {
        let d = tempfile::tempdir().unwrap();
        let (a, state) = (d.path().join("a"), d.path().join("a/.dropbox-shell"));
        fs::create_dir_all(&state).unwrap();
        let first = load_or_create(&a, &state).unwrap();
        assert!(first.notice.is_none());
        let again = load_or_create(&a, &state).unwrap();
        assert_eq!((again.id.as_str(), again.notice), (first.id.as_str(), None));
        // A copy of the folder, state included.
        let (b, copied) = (d.path().join("b"), d.path().join("b/.dropbox-shell"));
        fs::create_dir_all(&copied).unwrap();
        fs::copy(state.join(ID_FILE), copied.join(ID_FILE)).unwrap();
        let copy = load_or_create(&b, &copied).unwrap();
        assert_ne!(copy.id, first.id);
        assert!(copy.notice.unwrap().contains(&first.id));
        // Said once: the copy keeps its new id from now on.
        let later = load_or_create(&b, &copied).unwrap();
        assert_eq!((later.id, later.notice), (copy.id, None));
    }

    #[test]
    fn an_id_from_before_is_kept_and_tied_to_its_folder() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join(".dropbox-shell");
        fs::create_dir_all(&state).unwrap();
        fs::write(state.join(ID_FILE), "0123456789abcdef\n").unwrap();
        let got = load_or_create(d.path(), &state).unwrap();
        assert_eq!((got.id.as_str(), got.notice), ("0123456789abcdef", None));
        let text = fs::read_to_string(state.join(ID_FILE)).unwrap();
        assert!(text.contains("\nfolder "), "{text}");
    }
}
