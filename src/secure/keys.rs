//! A peer's key pair (X25519, the static key of the Noise handshake) and
//! the id it is known by: the SHA-256 of its public key, cut to 160 bits
//! and written in base32 in groups of four (`ABCD-EFGH-...`), as
//! Syncthing's device id is the SHA-256 of its certificate. Anyone can
//! compute the id from the key; nobody can make a key for a given id.
//! The first seven characters are a short form for tables and conflict
//! names only, never for access.

use std::fmt;

use data_encoding::BASE32_NOPAD;
use snow::params::DHChoice;
use snow::resolvers::{CryptoResolver, DefaultResolver};

use crate::{Error, Result};

/// Bytes of an X25519 key, private or public.
pub const KEY_LEN: usize = 32;
/// Bytes of the key's hash kept in an id (160 bits).
const ID_BYTES: usize = 20;
/// Characters of an id's short form.
pub const SHORT_LEN: usize = 7;

/// A static X25519 key pair.
#[derive(Clone)]
pub struct Keypair {
    private: [u8; KEY_LEN],
    public: [u8; KEY_LEN],
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private half, not even in a debug print.
        write!(f, "Keypair {{ id: {} }}", self.id())
    }
}

impl Keypair {
    /// A new key pair from the system's random source.
    pub fn generate() -> Result<Keypair> {
        let params = crate::secure::noise_params();
        let kp = snow::Builder::new(params)
            .generate_keypair()
            .map_err(|e| Error::new(format!("cannot make a key pair: {e}")))?;
        let private = kp
            .private
            .as_slice()
            .try_into()
            .map_err(|_| Error::new("cannot make a key pair: wrong key length"))?;
        Keypair::from_private(private)
    }

    /// The pair of a private key (its public half is computed).
    pub fn from_private(private: [u8; KEY_LEN]) -> Result<Keypair> {
        let mut dh = DefaultResolver
            .resolve_dh(&DHChoice::Curve25519)
            .ok_or_else(|| Error::new("no X25519 in this build"))?;
        dh.set(&private);
        let public = dh
            .pubkey()
            .try_into()
            .map_err(|_| Error::new("X25519 gave a public key of the wrong length"))?;
        Ok(Keypair { private, public })
    }

    pub fn private(&self) -> &[u8; KEY_LEN] {
        &self.private
    }

    pub fn public(&self) -> &[u8; KEY_LEN] {
        &self.public
    }

    pub fn id(&self) -> PeerId {
        PeerId::of_key(&self.public)
    }
}

/// The id of a peer: the first 160 bits of the SHA-256 of its public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId([u8; ID_BYTES]);

impl PeerId {
    pub fn of_key(public: &[u8]) -> PeerId {
        let digest = ring::digest::digest(&ring::digest::SHA256, public);
        let mut id = [0u8; ID_BYTES];
        id.copy_from_slice(&digest.as_ref()[..ID_BYTES]);
        PeerId(id)
    }

    /// The 32 base32 characters, without the dashes.
    fn plain(&self) -> String {
        BASE32_NOPAD.encode(&self.0)
    }

    /// The short form (7 characters): for tables and names, not for access.
    pub fn short(&self) -> String {
        self.plain()[..SHORT_LEN].to_string()
    }

    /// An id as written (any case, with or without its dashes).
    pub fn parse(text: &str) -> Result<PeerId> {
        let plain: String = text
            .trim()
            .chars()
            .filter(|&c| c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let bad = || {
            Error::new(format!(
                "not a peer id: {} (an id is 32 letters and digits 2-7, in groups of 4, as `id` prints it)",
                crate::display::escape(text)
            ))
        };
        if plain.len() != 32 {
            return Err(bad());
        }
        let bytes = BASE32_NOPAD.decode(plain.as_bytes()).map_err(|_| bad())?;
        bytes.try_into().map(PeerId).map_err(|_| bad())
    }
}

/// The short form of an id as written, for a table; what is not an id
/// (a peer of an older version) is shown as it came.
pub fn short_of(text: &str) -> String {
    PeerId::parse(text).map_or_else(|_| text.to_string(), |id| id.short())
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = self.plain();
        for (i, group) in plain.as_bytes().chunks(4).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            // Base32 is ASCII.
            f.write_str(std::str::from_utf8(group).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_key_follows_from_the_private_one() {
        let a = Keypair::generate().unwrap();
        let again = Keypair::from_private(*a.private()).unwrap();
        assert_eq!(again.public(), a.public());
        let b = Keypair::generate().unwrap();
        assert_ne!(a.public(), b.public());
        assert_ne!(a.id(), b.id());
        // RFC 7748's test vector: Alice's private and public key.
        let hex = |s: &str| -> [u8; 32] {
            let v: Vec<u8> = (0..64)
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect();
            v.try_into().unwrap()
        };
        let alice = Keypair::from_private(hex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ))
        .unwrap();
        assert_eq!(
            alice.public(),
            &hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
    }

    #[test]
    fn an_id_is_the_key_hash_in_groups_and_parses_back_in_any_form() {
        // SHA-256 of 32 zero bytes starts 66687aadf862bd776c8fc18b8e9f8e20089714856ee2...
        let id = PeerId::of_key(&[0u8; 32]);
        let full = id.to_string();
        assert_eq!(full.len(), 39);
        assert_eq!(full.split('-').count(), 8);
        assert!(full.split('-').all(|g| g.len() == 4));
        assert_eq!(&full[..9], "MZUH-VLPY");
        assert_eq!(id.short(), "MZUHVLP");
        assert_eq!(PeerId::parse(&full).unwrap(), id);
        assert_eq!(PeerId::parse(&full.to_lowercase()).unwrap(), id);
        assert_eq!(PeerId::parse(&full.replace('-', "")).unwrap(), id);
        assert_eq!(short_of(&full), "MZUHVLP");
        assert_eq!(short_of("0123456789abcdef"), "0123456789abcdef");
        for bad in [
            "",
            "MZUH",
            &full[..38],
            &format!("{full}A"),
            &full.replace('M', "1"),
        ] {
            assert!(PeerId::parse(bad).is_err(), "{bad}");
        }
    }
}
