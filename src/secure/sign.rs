//! Signatures on deposit records: an Ed25519 key derived from a peer's
//! X25519 private key (HKDF-SHA256, its own label), so the same
//! `--identity FILE` signs the same way anywhere and no second key file is
//! needed. A store that met the owner keeps the owner's signing key; a
//! record signed by it lets another store put a copy while the owner is
//! away, and orders versions nobody can forge.

use ring::hkdf;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

use super::keys::Keypair;
use crate::{Error, ErrorKind, Result};

/// Signs deposit records for one identity.
pub struct Signer {
    pair: Ed25519KeyPair,
}

struct Seed;

impl hkdf::KeyType for Seed {
    fn len(&self) -> usize {
        32
    }
}

impl Signer {
    /// The signer of the identity `keys`.
    pub fn of(keys: &Keypair) -> Result<Signer> {
        let mut seed = [0u8; 32];
        hkdf::Salt::new(hkdf::HKDF_SHA256, b"dropbox-shell")
            .extract(keys.private())
            .expand(&[b"deposit signing v1"], Seed)
            .and_then(|okm| okm.fill(&mut seed))
            .map_err(|_| Error::new("deriving the deposit signing key failed"))?;
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|_| Error::new("deriving the deposit signing key failed"))?;
        Ok(Signer { pair })
    }

    /// The public key, in hex.
    pub fn public_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(self.pair.public_key().as_ref())
    }

    /// The signature of `message`, in hex.
    pub fn sign(&self, message: &[u8]) -> String {
        data_encoding::HEXLOWER.encode(self.pair.sign(message).as_ref())
    }
}

/// Check that `sig` (hex) is `public`'s (hex) signature of `message`.
pub fn verify(public: &str, message: &[u8], sig: &str) -> Result<()> {
    let bad = || {
        Error::of(
            ErrorKind::Integrity,
            "the deposit record's signature does not check out",
        )
    };
    let key = data_encoding::HEXLOWER
        .decode(public.as_bytes())
        .map_err(|_| bad())?;
    let sig = data_encoding::HEXLOWER
        .decode(sig.as_bytes())
        .map_err(|_| bad())?;
    UnparsedPublicKey::new(&ED25519, key)
        .verify(message, &sig)
        .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_identity_signs_alike_and_forgeries_fail() {
        let keys = Keypair::generate().unwrap();
        let a = Signer::of(&keys).unwrap();
        let b = Signer::of(&Keypair::from_private(*keys.private()).unwrap()).unwrap();
        assert_eq!(a.public_hex(), b.public_hex());
        let sig = a.sign(b"record");
        verify(&b.public_hex(), b"record", &sig).unwrap();
        assert!(verify(&a.public_hex(), b"recorD", &sig).is_err());
        let other = Signer::of(&Keypair::generate().unwrap()).unwrap();
        assert!(verify(&other.public_hex(), b"record", &sig).is_err());
        assert!(verify("zz", b"record", &sig).is_err());
        assert!(verify(&a.public_hex(), b"record", "00").is_err());
    }
}
