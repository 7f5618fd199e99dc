//! LAN discovery: peers on one network find each other with no setup,
//! through multicast DNS service discovery, so they also show in the tools
//! people already have (avahi-browse, Bonjour browsers, python-zeroconf).
//! [`lan`] binds it to the wire (announce, browse, goodbye); [`table`]
//! keeps what was found, checked and bounded, with no I/O. Discovery only
//! suggests addresses: the handshake decides who a peer is, so a spoofed
//! announcement can waste a connection attempt, never gain access.

pub mod lan;
pub mod table;

pub use lan::{Announce, Lan, SERVICE};
pub use table::Found;

/// The group tag a peer announces: derived from the group secret's key
/// (HKDF-SHA256, its own label), so peers of one group recognise each
/// other and nobody learns the secret from it. Empty without a secret.
pub fn group_tag(psk: Option<&[u8; 32]>) -> String {
    use ring::hkdf;
    let Some(psk) = psk else {
        return String::new();
    };
    struct Len16;
    impl hkdf::KeyType for Len16 {
        fn len(&self) -> usize {
            16
        }
    }
    let mut tag = [0u8; 16];
    let okm = hkdf::Salt::new(hkdf::HKDF_SHA256, b"dropbox-shell")
        .extract(psk)
        .expand(&[b"lan group tag v1"], Len16)
        .and_then(|okm| okm.fill(&mut tag));
    match okm {
        Ok(()) => data_encoding::HEXLOWER.encode(&tag),
        Err(_) => String::new(),
    }
}

/// The failure domain this machine stands in, by default: its machine id
/// (`/etc/machine-id`), else its host name.
pub fn default_zone() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    read("/etc/machine-id")
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(12).collect())
        .or_else(|| read("/etc/hostname").filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_tag_follows_the_secret_and_hides_it() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(group_tag(Some(&a)), group_tag(Some(&a)));
        assert_ne!(group_tag(Some(&a)), group_tag(Some(&b)));
        assert_eq!(group_tag(Some(&a)).len(), 32);
        assert!(!group_tag(Some(&a)).contains(&data_encoding::HEXLOWER.encode(&a[..4])));
        assert_eq!(group_tag(None), "");
        assert!(!default_zone().is_empty());
    }
}
