//! This peer's identity: its key pair, kept in a file only its owner can
//! read (`.dropbox-shell/identity` by default, or `--identity FILE`, made
//! if missing), and its id, the key's fingerprint (see `secure::keys`).
//! The file at the default place also holds the inode of the shared
//! folder it was made for: a copied folder (`cp -a`, a restored backup)
//! brings the file along but sits on another inode, so it takes a key of
//! its own instead of posing as the original to their common partners
//! (which would make each undo the other's changes). The device number is
//! left out: on network, FUSE and btrfs mounts it can change from one boot
//! to the next, and an ordinary restart must keep the id. A file named
//! with `--identity` is carried on purpose and is never tied to a folder.
//! Like ssh with a private key, a file that others can read is refused.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use data_encoding::HEXLOWER_PERMISSIVE;

use crate::secure::keys::KEY_LEN;
use crate::secure::{Credentials, Keypair, KnownPeers, PeerId};
use crate::{Context, Error, Result};

/// The identity file's name in the state folder.
pub const IDENTITY_FILE: &str = "identity";
/// The id file of versions before keys, announced once when replaced.
const OLD_ID_FILE: &str = "peer-id";
/// The first line of an identity file.
const HEADER: &str = "dropbox-shell identity v1";

/// Where a peer's identity lives, loaded (or made) on first use, so a run
/// that never needs it writes nothing.
pub struct Identity {
    path: PathBuf,
    /// The shared folder the file at the default place is tied to.
    folder: Option<PathBuf>,
    loaded: OnceLock<Loaded>,
    /// The group this peer belongs to and whom it talks to.
    trust: Trust,
}

/// Whom a peer talks to, beside proving its own key.
#[derive(Debug, Default, Clone)]
pub struct Trust {
    /// The handshake key of the group secret (`--secret-file`).
    pub group: Option<[u8; 32]>,
    /// The only ids served and connected to (`--allow`).
    pub allow: Vec<PeerId>,
    /// The ids seen at each address (`known_peers`).
    pub known: Option<Arc<KnownPeers>>,
}

/// A loaded identity.
#[derive(Debug)]
pub struct Loaded {
    pub keys: Keypair,
    pub id: PeerId,
    /// `id` as written, kept to lend out.
    pub full: String,
    /// A sentence for the user when the id had to change.
    pub notice: Option<String>,
}

impl Loaded {
    fn of(keys: Keypair, notice: Option<String>) -> Loaded {
        let id = keys.id();
        Loaded {
            full: id.to_string(),
            id,
            keys,
            notice,
        }
    }
}

impl Identity {
    /// The identity in the state folder `state` of the shared folder `root`.
    pub fn of_folder(root: &Path, state: &Path) -> Identity {
        Identity {
            path: state.join(IDENTITY_FILE),
            folder: Some(root.to_path_buf()),
            loaded: OnceLock::new(),
            trust: Trust::default(),
        }
    }

    /// The identity kept in `path` (`--identity`), tied to no folder.
    pub fn in_file(path: &Path) -> Identity {
        Identity {
            path: path.to_path_buf(),
            folder: None,
            loaded: OnceLock::new(),
            trust: Trust::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Load (or make) it now; an error says what is wrong with the file.
    /// A new id's notice goes to stderr once.
    pub fn load(&self) -> Result<&Loaded> {
        if let Some(l) = self.loaded.get() {
            return Ok(l);
        }
        let loaded = load_or_create(&self.path, self.folder.as_deref())?;
        if let Some(n) = &loaded.notice {
            eprintln!("dropbox-shell: {}", crate::display::escape(n));
        }
        Ok(self.loaded.get_or_init(|| loaded))
    }

    /// The loaded identity; where it cannot be loaded or saved (an
    /// unwritable state folder), a key pair for this run only.
    pub fn loaded(&self) -> &Loaded {
        if let Ok(l) = self.load() {
            return l;
        }
        self.loaded.get_or_init(|| match Keypair::generate() {
            Ok(keys) => Loaded::of(keys, None),
            // The system's random source failed: nothing can be trusted.
            Err(e) => panic!("{e}"),
        })
    }

    /// Talking only as `trust` says.
    pub fn trusting(self, trust: Trust) -> Identity {
        Identity { trust, ..self }
    }

    /// Whether a group secret is set.
    pub fn has_secret(&self) -> bool {
        self.trust.group.is_some()
    }

    /// What this peer proves on every connection, and whom it talks to.
    pub fn credentials(&self) -> Credentials {
        let mut c = Credentials::open(self.loaded().keys.clone());
        if let Some(psk) = self.trust.group {
            c = c.with_secret(psk);
        }
        c.allow = self.trust.allow.clone();
        c.known = self.trust.known.clone();
        c
    }

    /// This peer's full id.
    pub fn id(&self) -> &str {
        &self.loaded().full
    }

    /// This peer's id in its short form.
    pub fn short_id(&self) -> String {
        self.loaded().id.short()
    }
}

fn folder_key(root: &Path) -> Result<String> {
    let m = fs::metadata(root).context(format_args!("shared folder {}", root.display()))?;
    Ok(m.ino().to_string())
}

/// What an identity file says.
struct Stored {
    keys: Keypair,
    folder: Option<String>,
}

/// Read the identity file at `path`: `None` when there is none.
fn read(path: &Path) -> Result<Option<Stored>> {
    let shown = path.display();
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context(format_args!("identity file {shown}")),
    };
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::new(format!(
            "identity file {shown} can be read by others; it holds this peer's private key (chmod 600 {shown})"
        )));
    }
    let text = fs::read_to_string(path).context(format_args!("identity file {shown}"))?;
    let bad = |what: &str| Error::new(format!("identity file {shown} is damaged: {what}"));
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(bad(&format!("it does not start with \"{HEADER}\"")));
    }
    let (mut private, mut public, mut folder) = (None, None, None);
    for line in lines {
        match line.split_once(' ') {
            Some(("private-key", v)) => {
                private = Some(key_of(v.trim()).ok_or_else(|| bad("private-key"))?)
            }
            Some(("public-key", v)) => {
                public = Some(key_of(v.trim()).ok_or_else(|| bad("public-key"))?)
            }
            Some(("folder", v)) => folder = Some(v.trim().to_string()),
            _ => {}
        }
    }
    let keys = Keypair::from_private(private.ok_or_else(|| bad("no private-key line"))?)?;
    if public.is_some_and(|p| &p != keys.public()) {
        return Err(bad("its public key is not that of its private key"));
    }
    Ok(Some(Stored { keys, folder }))
}

fn key_of(hex: &str) -> Option<[u8; KEY_LEN]> {
    HEXLOWER_PERMISSIVE
        .decode(hex.as_bytes())
        .ok()?
        .try_into()
        .ok()
}

/// Write the identity file atomically, readable by its owner only.
fn write(path: &Path, keys: &Keypair, folder: Option<&str>) -> Result<()> {
    let mut text = format!(
        "{HEADER}\nprivate-key {}\npublic-key {}\n",
        HEXLOWER_PERMISSIVE.encode(keys.private()),
        HEXLOWER_PERMISSIVE.encode(keys.public())
    );
    if let Some(f) = folder {
        text.push_str(&format!("folder {f}\n"));
    }
    crate::secure::replace_private_file(path, &text, "identity file")?;
    Ok(())
}

/// The identity at `path`, tied to the shared folder `root` when given:
/// the stored one while the folder is the one it was made for, else a new
/// one (saying why).
pub fn load_or_create(path: &Path, root: Option<&Path>) -> Result<Loaded> {
    let here = root.map(folder_key).transpose()?;
    let stored = read(path)?;
    let (keys, notice) = match (stored, &here) {
        (Some(s), Some(here)) if s.folder.as_ref() == Some(here) => {
            return Ok(Loaded::of(s.keys, None));
        }
        (Some(s), None) => return Ok(Loaded::of(s.keys, None)),
        // Made elsewhere (`--identity` carried in): tie it to this folder.
        (Some(s), Some(_)) if s.folder.is_none() => (s.keys, None),
        (Some(s), Some(_)) => {
            let new = Keypair::generate()?;
            let note = format!(
                "the state folder of {} was copied from another folder (peer id {}); this copy takes its own peer id {}",
                root.map(|r| r.display().to_string()).unwrap_or_default(),
                s.keys.id(),
                new.id()
            );
            (new, Some(note))
        }
        (None, _) => {
            let new = Keypair::generate()?;
            let old = path.parent().map(|d| d.join(OLD_ID_FILE));
            let old = old.and_then(|p| fs::read_to_string(p).ok());
            let note = old.and_then(|t| t.lines().next().map(str::trim).map(String::from));
            let note = note.filter(|o| !o.is_empty()).map(|o| {
                format!(
                    "this peer's id is now the fingerprint of its key, {} (it was {o}); partners see a new peer",
                    new.id()
                )
            });
            (new, note)
        }
    };
    write(path, &keys, here.as_deref())?;
    Ok(Loaded::of(keys, notice))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_of(d: &Path, name: &str) -> (PathBuf, PathBuf) {
        let root = d.join(name);
        let state = root.join(".dropbox-shell");
        fs::create_dir_all(&state).unwrap();
        (root, state)
    }

    #[test]
    fn an_identity_stays_with_its_folder_and_a_copy_takes_a_new_one() {
        let d = tempfile::tempdir().unwrap();
        let (a, state) = state_of(d.path(), "a");
        let file = state.join(IDENTITY_FILE);
        let first = load_or_create(&file, Some(&a)).unwrap();
        assert!(first.notice.is_none());
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = load_or_create(&file, Some(&a)).unwrap();
        assert_eq!((again.id, again.notice), (first.id, None));
        // A copy of the folder, state included.
        let (b, copied) = state_of(d.path(), "b");
        fs::copy(&file, copied.join(IDENTITY_FILE)).unwrap();
        let copy = load_or_create(&copied.join(IDENTITY_FILE), Some(&b)).unwrap();
        assert_ne!(copy.id, first.id);
        assert!(copy.notice.unwrap().contains(&first.full));
        // Said once: the copy keeps its new id from now on.
        let later = load_or_create(&copied.join(IDENTITY_FILE), Some(&b)).unwrap();
        assert_eq!((later.id, later.notice), (copy.id, None));
    }

    #[test]
    fn a_carried_identity_file_is_not_tied_and_keeps_its_id_anywhere() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("me.key");
        let made = load_or_create(&file, None).unwrap();
        let text = fs::read_to_string(&file).unwrap();
        assert!(!text.contains("folder"), "{text}");
        let moved = d.path().join("elsewhere.key");
        fs::copy(&file, &moved).unwrap();
        fs::set_permissions(&moved, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_or_create(&moved, None).unwrap().id, made.id);
        // Put at a folder's default place, it is that folder's from then on.
        let (root, state) = state_of(d.path(), "f");
        fs::copy(&moved, state.join(IDENTITY_FILE)).unwrap();
        let tied = load_or_create(&state.join(IDENTITY_FILE), Some(&root)).unwrap();
        assert_eq!((tied.id, tied.notice), (made.id, None));
        assert!(
            fs::read_to_string(state.join(IDENTITY_FILE))
                .unwrap()
                .contains("folder ")
        );
    }

    #[test]
    fn a_file_others_can_read_or_a_damaged_one_is_refused_and_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("id");
        load_or_create(&file, None).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(&file, None).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        let damaged = [
            "something else\n".to_string(),
            format!("{HEADER}\nprivate-key zz\n"),
            format!("{HEADER}\n"),
            format!(
                "{HEADER}\nprivate-key {}\npublic-key {}\n",
                "11".repeat(32),
                "22".repeat(32)
            ),
        ];
        for text in damaged {
            fs::write(&file, &text).unwrap();
            fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
            let e = load_or_create(&file, None).unwrap_err().to_string();
            assert!(e.contains("damaged"), "{e}");
            assert_eq!(fs::read_to_string(&file).unwrap(), text);
        }
    }

    #[test]
    fn the_old_random_id_is_named_once_when_the_key_replaces_it() {
        let d = tempfile::tempdir().unwrap();
        let (root, state) = state_of(d.path(), "a");
        fs::write(state.join(OLD_ID_FILE), "0123456789abcdef\nfolder 1\n").unwrap();
        let file = state.join(IDENTITY_FILE);
        let new = load_or_create(&file, Some(&root)).unwrap();
        let note = new.notice.unwrap();
        assert!(
            note.contains("0123456789abcdef") && note.contains(&new.full),
            "{note}"
        );
        assert!(load_or_create(&file, Some(&root)).unwrap().notice.is_none());
    }
}
