//! The TCP wire: a versioned handshake, then length-prefixed frames.
//!
//! ```text
//! handshake   "DBSH" + u32 version (big endian), each side sends its own
//! frame       u32 length (big endian, counts kind + payload) + u8 kind + payload
//! kind 0      a JSON message (Request or Response)
//! ```
//! A message is `{"req": <kind>, "body": {...}}` (`"resp"` for answers;
//! no body when there is nothing in it): the kind comes first, so a
//! reader decodes the body straight into its type. (An internally tagged
//! message, the kind among the fields, must be buffered whole first: that
//! took twice as long, and a batch of index entries three times.)
//! A file travels as a `File` (or `Upload`) message, then exactly `size`
//! raw bytes outside any frame, then a `Done{md5}` message.
//! A frame longer than [`MAX_FRAME`] is refused. Reading works on any
//! [`Read`] and returns `Ok(None)` on a clean end of stream, so it is tested
//! on byte slices.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::{Error, Result, bail};

pub mod deposit;
pub use deposit::{CopyState, Held, Record, StoreStatus};

pub const MAGIC: &[u8; 4] = b"DBSH";
pub const VERSION: u32 = 4;
/// Largest frame accepted from a peer.
pub const MAX_FRAME: usize = 4 << 20;
/// Size of the chunks a TCP transfer reads and writes.
pub const CHUNK: usize = 256 << 10;
/// Entries per listing frame.
pub const BATCH: usize = 2000;

const KIND_MSG: u8 = 0;

/// What an index request selects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Filter {
    All,
    Between { start_ns: i64, end_ns: i64 },
    Regex { expr: String },
}

/// A request from a client to a peer's server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "req", content = "body", rename_all = "snake_case")]
pub enum Request {
    Info,
    Index {
        filter: Filter,
    },
    Hash {
        name: Option<String>,
    },
    Download {
        name: String,
        /// Do not trust the MD5 cache: hash the bytes as they are read (the
        /// receiver found the cached MD5 wrong on the first try).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        fresh: bool,
        /// One of many files pulled in a row (sync): the server logs them
        /// as one line per batch, not a line per file (errors still each).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        batch: bool,
    },
    Upload {
        meta: FileMeta,
        force: bool,
    },
    /// Start a sync exchange: who we are, the id of our index, and how
    /// far we hold the peer's (`None`: not at all). The answer is a
    /// [`Response::SyncHello`]; then we send our entries after the mark
    /// it gives ([`Request::SyncDelta`]) and it sends its own after ours.
    SyncHello {
        peer_id: String,
        listen_port: u16,
        index_id: String,
        seen: Option<Mark>,
    },
    /// Entries of our sync index in the order of their sequence numbers,
    /// in batches (`more` until the last).
    SyncDelta {
        entries: Vec<SyncEntry>,
        more: bool,
    },
    /// Keys for sealed UDP downloads: answered with a
    /// [`Response::UdpTicket`], inside this encrypted connection.
    UdpTicket,
    /// Keep a copy of this deposit of ours (a store only): answered with
    /// `ready` (then the bytes and `done`, answered with `ok`), `have`
    /// (this version is held already) or an error.
    DepositPut {
        record: Record,
    },
    /// Our deposit's bytes: `held`, then the bytes and `done`.
    DepositGet {
        name: String,
    },
    /// What the store holds of our deposit: `held`. A store asking for an
    /// owner shows a record of that deposit the owner signed as `proof`.
    DepositStat {
        name: String,
        #[serde(default)]
        proof: Option<Record>,
    },
    /// Our deposits on this store: `deposits`, in batches (`after` is
    /// kept for later paging; stores send everything).
    DepositList {
        after: Option<String>,
    },
    /// Read our copy of `name` whole and check its MD5: `held`, its state
    /// as found.
    DepositVerify {
        name: String,
    },
    /// The stores this store knows (`stores`); with a port, the caller is
    /// a store itself, listening there.
    StoreList {
        listen_port: Option<u16>,
    },
    /// Remove our copy of `name` if its version is at most `upto`: `ok`.
    DepositForget {
        name: String,
        upto: u64,
    },
}

/// How far one side holds the other's sync index: its id and the highest
/// sequence number received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub index_id: String,
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    File,
    Dir,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub kind: Kind,
    pub mode: u32,
}

/// One path of a sync index: a listing entry plus a file's MD5.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncEntry {
    pub name: String,
    pub kind: Kind,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    pub md5: Option<String>,
    /// A tombstone: the sender no longer has this path; the state is the
    /// one it last agreed on with the receiver.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// The sender has this path in the very state it last agreed on with
    /// the receiver. A receiver without a record of its own (it never
    /// learned of the agreement) takes that as the last-synced state, so a
    /// path it deleted meanwhile is not pulled back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub agreed: bool,
    /// The sender's `.dropboxignore` keeps this path out of sync: the
    /// receiver leaves it alone (neither pulls it nor deletes its own).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignored: bool,
    /// The change number of this entry in the sender's index.
    #[serde(default)]
    pub seq: u64,
}

#[cfg(test)]
impl SyncEntry {
    /// A file of one byte, sequence number `seq`, as tests send and store it.
    pub fn test_file(name: &str, seq: u64, md5: Option<&str>) -> SyncEntry {
        SyncEntry {
            name: name.into(),
            kind: Kind::File,
            size: 1,
            mtime_ns: 1,
            mode: 0o644,
            md5: md5.map(str::to_string),
            deleted: false,
            agreed: false,
            ignored: false,
            seq,
        }
    }
}

/// MD5 of one file, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashEntry {
    pub name: String,
    pub md5: Option<String>,
    pub mtime_ns: i64,
    pub error: Option<String>,
}

/// What travels ahead of a file's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    pub name: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
}

/// A peer's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "resp", content = "body", rename_all = "snake_case")]
pub enum Response {
    Info {
        peer_id: String,
        allow_upload: bool,
        /// The failure domain the peer stands in.
        #[serde(default)]
        zone: Option<String>,
        /// Set when the peer keeps deposits (`--store`).
        #[serde(default)]
        store: Option<StoreStatus>,
    },
    Entries {
        entries: Vec<Entry>,
    },
    Hashes {
        files: Vec<HashEntry>,
    },
    /// End of a listing or hash batch stream.
    End,
    /// A warning within a listing or hash stream (names the peer cannot
    /// serve); the stream goes on.
    Note {
        message: String,
    },
    /// A file follows: `size` raw bytes, then `Done`.
    File {
        meta: FileMeta,
    },
    /// End of a file's bytes, with the MD5 the sender computed as they flowed.
    Done {
        md5: String,
    },
    /// An upload is accepted: send the bytes.
    Ready,
    Ok {
        message: String,
    },
    Error {
        message: String,
    },
    /// The answer to [`Request::SyncHello`]: the same, from this side.
    SyncHello {
        peer_id: String,
        index_id: String,
        seen: Option<Mark>,
    },
    /// Entries of the answering peer's sync index, in batches.
    SyncDelta {
        entries: Vec<SyncEntry>,
        more: bool,
    },
    /// A UDP ticket: its number and its 32-byte secret in hex (see
    /// [`crate::secure::udp`]).
    UdpTicket {
        ticket: u64,
        secret: String,
    },
    /// A store's copy of one deposit (none: it holds nothing by that name
    /// of the caller's).
    Held {
        held: Option<Held>,
    },
    /// Deposits of the caller a store holds, in batches by name.
    Deposits {
        held: Vec<Held>,
        more: bool,
    },
    /// The store holds this version already: no bytes need to travel.
    Have,
    /// Addresses of stores a store knows (64 at most).
    Stores {
        addrs: Vec<String>,
    },
}

/// Write our handshake.
pub fn write_hello(w: &mut impl Write) -> io::Result<()> {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(MAGIC);
    b[4..].copy_from_slice(&VERSION.to_be_bytes());
    w.write_all(&b)?;
    w.flush()
}

/// Read the other side's handshake: its protocol version, or a clear error
/// when it does not speak ours at all.
pub fn read_hello(r: &mut impl Read) -> Result<u32> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::new("the peer closed the connection during the handshake")
        } else {
            Error::from(e)
        }
    })?;
    if &b[..4] != MAGIC {
        bail!("the other side does not speak the dropbox-shell protocol");
    }
    Ok(u32::from_be_bytes([b[4], b[5], b[6], b[7]]))
}

/// Check a peer's version against ours.
pub fn check_version(theirs: u32) -> Result<()> {
    if theirs != VERSION {
        bail!(
            "the peer speaks protocol version {theirs}, this program speaks version {VERSION}; run the same version on both sides"
        );
    }
    Ok(())
}

pub fn write_msg(w: &mut impl Write, msg: &impl Serialize) -> Result<()> {
    let body = serde_json::to_vec(msg).map_err(|e| Error::new(e.to_string()))?;
    write_frame(w, KIND_MSG, &body)?;
    Ok(())
}

fn write_frame(w: &mut impl Write, kind: u8, body: &[u8]) -> io::Result<()> {
    let len = (body.len() + 1) as u32;
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&len.to_be_bytes());
    head[4] = kind;
    w.write_all(&head)?;
    w.write_all(body)
}

/// Read one message frame into `buf`. `Ok(None)` on a clean end of stream
/// before a frame starts; an error on a truncated or oversized frame.
pub fn read_frame<'a>(r: &mut impl Read, buf: &'a mut Vec<u8>) -> Result<Option<&'a [u8]>> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => bail!("the connection closed in the middle of a message"),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len == 0 || len > MAX_FRAME + 1 {
        bail!("a frame of {len} bytes is outside the protocol's limits");
    }
    buf.resize(len - 1, 0);
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::new("the connection closed in the middle of a message")
        } else {
            Error::from(e)
        }
    })?;
    match head[4] {
        KIND_MSG => Ok(Some(buf)),
        k => bail!("unknown frame kind {k}"),
    }
}

/// Decode a JSON message frame.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::new(format!("malformed message from the peer: {e}")))
}

/// Read the next message; the end of the stream is an error here.
pub fn read_msg<T: for<'de> Deserialize<'de>>(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<T> {
    match read_frame(r, buf)? {
        Some(m) => decode(m),
        None => bail!("the peer closed the connection"),
    }
}

/// `items` as the batches of a `more`-flagged stream: `(batch, more)`,
/// at least one batch (empty when there are no items).
#[cfg(test)]
pub fn batches<T>(items: &[T]) -> impl Iterator<Item = (&[T], bool)> {
    let n = items.len().div_ceil(BATCH).max(1);
    (0..n).map(move |i| {
        let end = ((i + 1) * BATCH).min(items.len());
        (&items[(i * BATCH).min(end)..end], i + 1 < n)
    })
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut wire = Vec::new();
        write_msg(
            &mut wire,
            &Request::Download {
                batch: false,
                name: "a b.txt".into(),
                fresh: false,
            },
        )
        .unwrap();
        write_msg(&mut wire, &Response::End).unwrap();
        let mut r = &wire[..];
        let mut buf = Vec::new();
        let req: Request = read_msg(&mut r, &mut buf).unwrap();
        assert_eq!(
            req,
            Request::Download {
                name: "a b.txt".into(),
                fresh: false,
                batch: false,
            }
        );
        assert_eq!(
            read_msg::<Response>(&mut r, &mut buf).unwrap(),
            Response::End
        );
        assert_eq!(read_frame(&mut r, &mut buf).unwrap(), None);
    }

    #[test]
    fn a_message_leads_with_its_kind_and_decodes_in_either_order() {
        let done = Response::Done { md5: "ab".into() };
        let wire = serde_json::to_string(&done).unwrap();
        assert_eq!(wire, r#"{"resp":"done","body":{"md5":"ab"}}"#);
        assert_eq!(
            serde_json::to_string(&Response::End).unwrap(),
            r#"{"resp":"end"}"#
        );
        // Another writer may order the keys otherwise: still understood.
        let swapped = br#"{"body":{"md5":"ab"},"resp":"done"}"#;
        assert_eq!(decode::<Response>(swapped).unwrap(), done);
        // A kind without the body it needs, or a body of another kind, is refused.
        for bad in [
            &br#"{"resp":"done"}"#[..],
            br#"{"resp":"done","body":{"meta":1}}"#,
        ] {
            let e = decode::<Response>(bad).unwrap_err();
            assert!(e.message().contains("malformed"), "{e}");
        }
    }

    #[test]
    fn batches_cover_everything_once_and_flag_the_last() {
        let none: Vec<u8> = Vec::new();
        assert_eq!(
            batches(&none)
                .map(|(b, m)| (b.len(), m))
                .collect::<Vec<_>>(),
            vec![(0, false)]
        );
        let items: Vec<usize> = (0..BATCH * 2 + 1).collect();
        let got: Vec<(usize, bool)> = batches(&items).map(|(b, m)| (b.len(), m)).collect();
        assert_eq!(got, vec![(BATCH, true), (BATCH, true), (1, false)]);
        let exact: Vec<usize> = (0..BATCH).collect();
        assert_eq!(
            batches(&exact)
                .map(|(b, m)| (b.len(), m))
                .collect::<Vec<_>>(),
            vec![(BATCH, false)]
        );
    }

    #[test]
    fn truncated_and_oversized_frames_are_errors() {
        let mut wire = Vec::new();
        write_msg(&mut wire, &Response::End).unwrap();
        let cut = &wire[..wire.len() - 1];
        let mut buf = Vec::new();
        assert!(read_frame(&mut &cut[..], &mut buf).is_err());
        let huge = [0xff, 0xff, 0xff, 0xff, 0];
        let e = read_frame(&mut &huge[..], &mut buf).unwrap_err();
        assert!(e.message().contains("limits"));
        let zero = [0, 0, 0, 0, 0];
        assert!(read_frame(&mut &zero[..], &mut buf).is_err());
        let bad_kind = [0, 0, 0, 1, 9];
        assert!(read_frame(&mut &bad_kind[..], &mut buf).is_err());
    }

    #[test]
    fn handshake_detects_strangers_and_versions() {
        let mut wire = Vec::new();
        write_hello(&mut wire).unwrap();
        assert_eq!(read_hello(&mut &wire[..]).unwrap(), VERSION);
        assert!(
            read_hello(&mut &b"HTTP/1.1"[..])
                .unwrap_err()
                .message()
                .contains("does not speak")
        );
        assert!(read_hello(&mut &b"DB"[..]).is_err());
        let e = check_version(VERSION + 1).unwrap_err();
        assert!(e.message().contains("version"), "{e}");
    }

    #[test]
    fn garbage_json_is_a_clear_error() {
        let mut wire = Vec::new();
        write_frame(&mut wire, KIND_MSG, b"{not json").unwrap();
        let e = read_msg::<Request>(&mut &wire[..], &mut Vec::new()).unwrap_err();
        assert!(e.message().contains("malformed"));
    }
}
