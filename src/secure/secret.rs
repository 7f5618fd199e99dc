//! The group secret (`--secret-file`): the key that every member's
//! handshake mixes in, so a peer without it learns nothing, not even our
//! id. The file holds either a random key made by `secret new`
//! (`dropbox-shell-group-secret v1 <64 hex>`) or a passphrase of at least
//! 16 characters, stretched with Argon2id (19 MiB, t=2, p=1: OWASP's
//! parameters, about 0.1 s once at start) under a fixed salt, since every
//! member must derive the same key from the passphrase alone. Either way the
//! Noise PSK is `HKDF-SHA256(salt "dropbox-shell", key, "noise psk v1")`.
//! The file must be readable by its owner only, as ssh wants of its keys.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use data_encoding::HEXLOWER_PERMISSIVE;
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

use crate::{Context, Error, Result, bail};

/// The first words of a key file made by `secret new`.
pub const KEY_HEADER: &str = "dropbox-shell-group-secret v1";
/// The shortest passphrase taken, in characters.
pub const MIN_PASSPHRASE: usize = 16;
/// The longest passphrase taken, in characters.
pub const MAX_PASSPHRASE: usize = 1024;
/// The salt of the passphrase stretch: fixed, so the passphrase alone
/// gives every member the same key.
const PASSPHRASE_SALT: &[u8] = b"dropbox-shell group secret v1";

/// Make a new random group secret in `path` (never over an existing file),
/// readable by its owner only.
pub fn create(path: &Path) -> Result<()> {
    let mut key = [0u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| Error::new("the system's random source failed"))?;
    let shown = path.display();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::new(format!(
                "{shown} exists; a group secret is never overwritten"
            )),
            _ => Error::new(format!("cannot create {shown}: {e}")),
        })?;
    let text = format!("{KEY_HEADER} {}\n", HEXLOWER_PERMISSIVE.encode(&key));
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .context(format_args!("writing {shown}"))?;
    Ok(())
}

/// The handshake key of the group secret in `path`.
pub fn load(path: &Path) -> Result<[u8; 32]> {
    let shown = path.display();
    let meta = fs::metadata(path).context(format_args!("secret file {shown}"))?;
    if !meta.is_file() {
        bail!("secret file {shown} is not a regular file");
    }
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "secret file {shown} can be read by others; it holds the group's secret (chmod 600 {shown})"
        );
    }
    let mut text = String::new();
    fs::File::open(path)
        .and_then(|f| {
            f.take((MAX_PASSPHRASE * 4 + 2) as u64)
                .read_to_string(&mut text)
        })
        .context(format_args!("secret file {shown}"))?;
    let key = key_of(&text).map_err(|why| Error::new(format!("secret file {shown}: {why}")))?;
    Ok(psk(&key))
}

/// The secret a file's text gives: the key it holds, or its passphrase
/// stretched.
fn key_of(text: &str) -> std::result::Result<Vec<u8>, String> {
    if let Some(hex) = text.strip_prefix(KEY_HEADER) {
        let key = HEXLOWER_PERMISSIVE
            .decode(hex.trim().as_bytes())
            .ok()
            .filter(|k| k.len() == 32);
        return key.ok_or_else(|| "the key after the header is damaged".to_string());
    }
    let phrase = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    let n = phrase.chars().count();
    if !(MIN_PASSPHRASE..=MAX_PASSPHRASE).contains(&n) {
        return Err(format!(
            "a passphrase must have {MIN_PASSPHRASE} to {MAX_PASSPHRASE} characters (this one has {n}); or make a random key with `dropbox-shell secret new FILE`"
        ));
    }
    stretch(phrase.as_bytes()).map(|k| k.to_vec())
}

/// A passphrase stretched with Argon2id into a 32-byte key.
fn stretch(phrase: &[u8]) -> std::result::Result<[u8; 32], String> {
    use argon2::{Algorithm, Argon2, Params, Version};
    let params = Params::new(19 * 1024, 2, 1, Some(32)).map_err(|e| e.to_string())?;
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(phrase, PASSPHRASE_SALT, &mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// The Noise PSK of a group key.
fn psk(key: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    hkdf::Salt::new(hkdf::HKDF_SHA256, b"dropbox-shell")
        .extract(key)
        .expand(&[b"noise psk v1"], hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(&mut out))
        .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 length"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        HEXLOWER_PERMISSIVE.encode(b)
    }

    #[test]
    fn a_new_secret_is_private_random_and_never_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        create(&a).unwrap();
        create(&b).unwrap();
        assert_eq!(
            fs::metadata(&a).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(fs::read_to_string(&a).unwrap().starts_with(KEY_HEADER));
        assert_ne!(load(&a).unwrap(), load(&b).unwrap());
        let before = fs::read(&a).unwrap();
        assert!(
            create(&a)
                .unwrap_err()
                .message()
                .contains("never overwritten")
        );
        assert_eq!(fs::read(&a).unwrap(), before);
        // Readable by others: refused.
        fs::set_permissions(&a, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load(&a).unwrap_err().message().contains("chmod 600"));
    }

    #[test]
    fn the_derivation_is_the_same_on_every_machine() {
        // Fixed vectors: a change here splits every existing group.
        let key = [7u8; 32];
        assert_eq!(
            hex(&psk(&key)),
            hex(&psk(
                &key_of(&format!("{KEY_HEADER} {}\n", hex(&key))).unwrap()
            ))
        );
        let phrase = key_of("sixteen chars ok!\n").unwrap();
        assert_eq!(phrase, key_of("sixteen chars ok!").unwrap());
        assert_ne!(phrase, key_of("sixteen chars ok?").unwrap());
        assert_eq!(hex(&psk(&phrase)), PHRASE_PSK);
    }

    const PHRASE_PSK: &str = "5186e53343079cb3849d13eac26e3c0db8576d521a145ac913cdb81bc955e70a";

    #[test]
    fn short_long_or_damaged_secrets_are_refused_with_the_way_out() {
        assert!(key_of("too short\n").unwrap_err().contains("secret new"));
        assert!(key_of(&"x".repeat(MAX_PASSPHRASE + 1)).is_err());
        assert!(
            key_of(&format!("{KEY_HEADER} abcd\n"))
                .unwrap_err()
                .contains("damaged")
        );
        // Sixteen characters, not bytes.
        assert!(key_of(&"é".repeat(16)).is_ok());
    }
}
