//! What travels on the wire for deposits: a deposit's record (what the
//! owner put: name, size, MD5, how many copies it wants, which version),
//! a store's copy of it (the record and the state of the bytes), and what a
//! store says about its room. The owner of a deposit is never on the wire:
//! it is the id the connection's handshake proved.

use serde::{Deserialize, Serialize};

/// One version of a deposit, as its owner made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The name the owner deposited it under (a clean relative name).
    pub name: String,
    pub size: u64,
    /// MD5 of the bytes, lowercase hex.
    pub md5: String,
    pub mtime_ns: i64,
    pub mode: u32,
    /// How many copies, in distinct zones, the owner wants.
    pub copies: u8,
    /// Counts up with every new content under the name.
    pub version: u64,
    /// When the owner made this version (breaks a tie between two versions
    /// made with one number at once).
    pub made_ns: i64,
    /// A tombstone: the owner forgot the deposit at this version (no
    /// bytes). Stores keep it so an older copy is never made again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// The owner's peer id.
    #[serde(default)]
    pub owner: String,
    /// The owner's deposit signing key (Ed25519, hex).
    #[serde(default)]
    pub signer: String,
    /// The signer's signature of the rest (hex; see [`Record::signed_bytes`]).
    #[serde(default)]
    pub sig: String,
}

impl Record {
    /// The order of versions: higher version, then later made, then MD5.
    /// Total, so every side agrees which of two records is current.
    pub fn order(&self) -> (u64, i64, &str) {
        (self.version, self.made_ns, &self.md5)
    }

    /// What the owner signs: a label and the record without its signature.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.sig.clear();
        let mut m = b"dropbox-shell deposit v1\n".to_vec();
        m.extend(serde_json::to_vec(&unsigned).unwrap_or_default());
        m
    }

    /// This record is the same version and bytes as `other`.
    pub fn same_version(&self, other: &Record) -> bool {
        self.order() == other.order()
    }
}

/// What a store knows of the bytes it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyState {
    /// The bytes matched the record's MD5 when last read.
    Ok,
    /// The bytes no longer match the record's MD5.
    Corrupt,
    /// The record is kept, its bytes are not there.
    Missing,
}

impl CopyState {
    pub fn word(self) -> &'static str {
        match self {
            CopyState::Ok => "ok",
            CopyState::Corrupt => "corrupt",
            CopyState::Missing => "missing",
        }
    }
}

/// A deposit as one store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub record: Record,
    pub state: CopyState,
}

/// A store's room, in `info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// Bytes a deposit may still take (quota and disk).
    pub free: u64,
    /// Bytes its deposits hold.
    pub used: u64,
    pub quota: Option<u64>,
}
