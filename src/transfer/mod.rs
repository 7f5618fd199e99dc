//! Reliable file transfer over UDP.
//!
//! [`sender`] and [`receiver`] are state machines that never touch a socket
//! or the clock: time is an argument, datagrams go in through
//! `handle_packet` / `handle_datagram` and come out of `poll_transmit`
//! encoded, ready to send (after quinn-proto); a failure is a typed
//! [`Failure`]. [`wire`] encodes and checks datagrams. [`driver`] binds the
//! receiver to a `UdpSocket`, a file and the clock (the client);
//! [`crate::server::udp`] binds senders to the peer's socket and its files
//! (the server's UDP thread); [`sockopt`] holds the socket
//! options and the wait, the only `unsafe` here; [`sim`] runs the same
//! machines, through the same conversion, as a pair of endpoints over a
//! fake network with a virtual clock that a test steps, impairs datagram by
//! datagram and inspects, and runs seeded random impairments on top.
//!
//! Layering: the machines, the wire and the simulation are pure; only
//! [`driver`] (and [`sockopt`]) do I/O, with the folder they are handed.
//! Nothing here imports the peer, the client, the server or the session.
//!
//! The protocol in brief: the receiver asks for a file with a `Request`
//! (padded to the datagram size it wants, which probes the path); the sender
//! answers `Meta` and streams `Data` datagrams, each with a sequence number;
//! the receiver acknowledges with a cumulative sequence number plus ranges it
//! holds beyond it (selective acknowledgement) and a window (how far ahead
//! it can buffer). The sender retransmits only what is reported missing or
//! times out, adapts its congestion window to the loss it sees, and ends
//! with `Fin` carrying the MD5 it computed while reading the file. The
//! receiver hashes the bytes as they land in order; a mismatch starts a new
//! attempt under a new transfer id, whose request carries the attempt
//! number (a server never answers a retry from its MD5 cache).
//!
//! Address validation, as QUIC does it: `Meta` carries a random token and
//! every `Ack` and `Done` echoes it; until the sender has seen it echoed it
//! sends at most 3x the bytes it received from that address (requests are
//! padded), and datagrams with a wrong token are ignored. So a request with
//! a forged source address cannot make a peer flood someone else, and
//! requests that never acknowledge hold only a few, evictable, slots.
//!
//! Change check: the server records the identity of the file it opened
//! (size, mtime, ctime, inode; the open descriptor's and the path's) and
//! the sender asks it (through its [`sender::ChunkSource`]) before `Fin`. If the file was rewritten, appended to or
//! replaced meanwhile, it sends `Changed` instead: the receiver drops what
//! it got and starts a new attempt, which sends the new version whole.
//! Wire version 2 (see [`wire`]) added the token and `Changed`.

pub mod driver;
pub mod failure;
pub mod receiver;
pub mod sender;
pub mod sim;

pub mod sockopt;
pub mod wire;

pub use failure::Failure;

/// What a finished transfer reports.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferReport {
    pub name: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub md5: String,
    pub seconds: f64,
    pub attempts: u32,
    pub retransmissions: u64,
    /// UDP datagrams that failed authentication (forged or corrupted),
    /// and replays of datagrams already taken: dropped, counted.
    pub forged: u64,
    pub replayed: u64,
    /// The received file as it landed here, when known (a sync pull
    /// records it in the index without looking again).
    pub landed: Option<crate::folder::OnDisk>,
}

impl TransferReport {
    /// A transfer of `name` that began at `start` and ended verified with
    /// `md5`, in one attempt and without retransmissions (say otherwise
    /// after).
    pub fn verified(
        name: &str,
        size: u64,
        mtime_ns: i64,
        md5: String,
        start: std::time::Instant,
    ) -> TransferReport {
        TransferReport {
            name: name.to_string(),
            size,
            mtime_ns,
            md5,
            seconds: start.elapsed().as_secs_f64(),
            attempts: 1,
            retransmissions: 0,
            forged: 0,
            replayed: 0,
            landed: None,
        }
    }
}

/// Largest data payload: fits a 64 KiB datagram (sealed) on loopback or
/// jumbo paths.
pub const MAX_PAYLOAD: u32 = 64512;
// The largest sealed data datagram fits an IPv4 UDP datagram.
const _: () =
    assert!(MAX_PAYLOAD as usize + wire::DATA_OVERHEAD + crate::secure::udp::OVERHEAD <= 65507);
/// Data payload that fits a 1500-byte Ethernet MTU (IPv4 + UDP + our
/// header + the sealed envelope).
pub const MTU_PAYLOAD: u32 =
    1500 - 20 - 8 - (wire::DATA_OVERHEAD + crate::secure::udp::OVERHEAD) as u32;
/// Memory the receiver may use for out-of-order data.
pub const REORDER_BYTES: u64 = 8 << 20;

/// Number of chunks a file of `size` bytes splits into.
pub fn chunk_count(size: u64, payload: u32) -> u64 {
    size.div_ceil(payload as u64)
}

/// Length of chunk `seq` of a file of `size` bytes.
pub fn chunk_len(size: u64, payload: u32, seq: u64) -> usize {
    let start = seq * payload as u64;
    (size.saturating_sub(start)).min(payload as u64) as usize
}
