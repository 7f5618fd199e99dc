//! Sealed UDP datagrams for `download UDP`, keyed from the TCP session
//! that set the transfer up, as QUIC and WireGuard protect theirs.
//!
//! Over the encrypted TCP channel the server hands the client a
//! [`Ticket`]: a random 64-bit number and a random 32-byte secret. Both
//! sides derive one AES-256-GCM key per direction from it
//! (`HKDF-SHA256(salt "dropbox-shell udp v1", secret, "c2s"|"s2c" || ticket)`),
//! so the two directions never share a (key, nonce) pair. Every datagram
//! is then
//!
//! ```text
//! u16 0xDB5A | u8 version 3 | u8 direction | u64 ticket | u64 packet number | AES-256-GCM(inner datagram) | tag 16
//! ```
//!
//! with the 20 header bytes as associated data and the nonce
//! `0u32 || packet number`. The packet number is the [`Sealer`]'s counter,
//! one per direction and ticket: a retransmission is sealed again and gets
//! a new number, never the nonce of the old one. The receiving side
//! checks, in this order: that it is our envelope on our ticket, that the
//! number is not in the [`ReplayWindow`] (a replay), that the AEAD opens
//! (otherwise forged or corrupted); only then is the number marked seen.
//! Rejected datagrams are counted, never answered. The inner datagram is
//! the transfer protocol's own ([`crate::transfer::wire`]), unchanged.

use data_encoding::HEXLOWER_PERMISSIVE;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

use crate::{Error, Result};

/// The envelope's magic number (the transfer protocol's).
pub const MAGIC: u16 = 0xDB5A;
/// The UDP protocol version: 3 is the sealed envelope.
pub const VERSION: u8 = 3;
/// Bytes of the envelope's header.
pub const HEADER: usize = 20;
const TAG: usize = 16;
/// Bytes the envelope adds to an inner datagram.
pub const OVERHEAD: usize = HEADER + TAG;
/// Packet numbers the replay window holds: the highest one seen and the
/// 8191 below it.
pub const REPLAY_WINDOW: u64 = 8192;

/// Which end of a transfer this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Asks for the file (and sends datagrams marked client to server).
    Client,
    /// Sends the file.
    Server,
}

impl Side {
    /// The direction byte of what this side sends.
    fn sends(self) -> u8 {
        match self {
            Side::Client => 0,
            Side::Server => 1,
        }
    }
}

/// What sets up the sealed datagrams of one UDP download: given by the
/// server over the encrypted TCP channel, never in clear. One download
/// side holds one [`Sealer`] for it: a second sealer of the same ticket and
/// side would count its packet numbers from 0 again (nonce reuse), so code
/// that seals takes the ticket by value.
#[derive(PartialEq, Eq)]
pub struct Ticket {
    pub id: u64,
    pub secret: [u8; 32],
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ticket({:016x}, secret hidden)", self.id)
    }
}

impl Ticket {
    /// A new ticket from the system's random source.
    pub fn random() -> Result<Ticket> {
        let mut secret = [0u8; 32];
        fill_random(&mut secret)?;
        Ok(Ticket {
            id: random_u64()?,
            secret,
        })
    }

    /// The secret in hex, as the TCP answer carries it.
    pub fn secret_hex(&self) -> String {
        HEXLOWER_PERMISSIVE.encode(&self.secret)
    }

    /// A ticket from its parts as the TCP answer carries them.
    pub fn from_parts(id: u64, secret_hex: &str) -> Result<Ticket> {
        let bytes = HEXLOWER_PERMISSIVE
            .decode(secret_hex.as_bytes())
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| Error::new("the peer sent a malformed UDP ticket"))?;
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&bytes);
        Ok(Ticket { id, secret })
    }

    /// The key of direction `dir` (0: client to server, 1: back).
    fn key(&self, dir: u8) -> LessSafeKey {
        let info_dir: &[u8] = if dir == 0 { b"c2s" } else { b"s2c" };
        let id = self.id.to_be_bytes();
        let info = [info_dir, &id[..]];
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"dropbox-shell udp v1").extract(&self.secret);
        let okm = prk
            .expand(&info, &AES_256_GCM)
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 length"));
        LessSafeKey::new(UnboundKey::from(okm))
    }
}

fn fill_random(buf: &mut [u8]) -> Result<()> {
    SystemRandom::new()
        .fill(buf)
        .map_err(|_| Error::new("the system's random source failed"))
}

/// A number from the system's random source (for what a peer must not
/// guess: tickets, address tokens, transfer ids).
pub fn random_u64() -> Result<u64> {
    let mut b = [0u8; 8];
    fill_random(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

/// The ticket a sealed datagram names, if it is one (for the server to find
/// the keys; nothing is checked yet).
pub fn ticket_of(datagram: &[u8]) -> Option<u64> {
    let h = datagram.get(..HEADER)?;
    (u16::from_be_bytes([h[0], h[1]]) == MAGIC && h[2] == VERSION && datagram.len() >= OVERHEAD)
        .then(|| u64::from_be_bytes(h[4..12].try_into().unwrap_or_default()))
}

/// Why a datagram was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Not our envelope, another ticket or the wrong direction, or the
    /// AEAD did not open: forged or corrupted.
    Forged,
    /// Its packet number was seen already, or is too old to tell.
    Replayed,
}

/// Both directions of one ticket, from one side: seals what it sends
/// (numbering each datagram), opens what it receives (once each), and
/// counts what it turned away.
pub struct Sealer {
    ticket: u64,
    side: Side,
    send: LessSafeKey,
    recv: LessSafeKey,
    next_pn: u64,
    window: ReplayWindow,
    /// Datagrams that failed authentication.
    pub forged: u64,
    /// Datagrams received before (or too old to tell).
    pub replayed: u64,
}

fn nonce(pn: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&pn.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

impl Sealer {
    pub fn new(ticket: &Ticket, side: Side) -> Sealer {
        let mine = side.sends();
        Sealer {
            ticket: ticket.id,
            side,
            send: ticket.key(mine),
            recv: ticket.key(1 - mine),
            next_pn: 0,
            window: ReplayWindow::default(),
            forged: 0,
            replayed: 0,
        }
    }

    pub fn ticket(&self) -> u64 {
        self.ticket
    }

    /// `inner`, sealed under the next packet number, into `out`. False
    /// (and nothing in `out`) once the numbers are used up, after 2^64
    /// datagrams: the ticket cannot send any more.
    pub fn seal(&mut self, inner: &[u8], out: &mut Vec<u8>) -> bool {
        let pn = self.next_pn;
        out.clear();
        if pn == u64::MAX {
            return false;
        }
        self.next_pn += 1;
        let header = self.header(self.side.sends(), pn);
        out.extend_from_slice(&header);
        out.extend_from_slice(inner);
        let sealed =
            self.send
                .seal_in_place_separate_tag(nonce(pn), Aad::from(header), &mut out[HEADER..]);
        match sealed {
            Ok(tag) => {
                out.extend_from_slice(tag.as_ref());
                true
            }
            Err(_) => {
                out.clear();
                false
            }
        }
    }

    fn header(&self, dir: u8, pn: u64) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[..2].copy_from_slice(&MAGIC.to_be_bytes());
        h[2] = VERSION;
        h[3] = dir;
        h[4..12].copy_from_slice(&self.ticket.to_be_bytes());
        h[12..].copy_from_slice(&pn.to_be_bytes());
        h
    }

    /// The inner datagram of `datagram`, opened in place, if it is ours,
    /// authentic and new; otherwise why not (and it is counted).
    pub fn open<'b>(&mut self, datagram: &'b mut [u8]) -> std::result::Result<&'b [u8], Rejected> {
        let verdict = self.check(datagram);
        match verdict {
            Err(Rejected::Forged) => self.forged += 1,
            Err(Rejected::Replayed) => self.replayed += 1,
            Ok(_) => {}
        }
        let (pn, len) = verdict?;
        self.window.mark(pn);
        Ok(&datagram[HEADER..HEADER + len])
    }

    /// The packet number and inner length of an authentic, new datagram,
    /// opened in place.
    fn check(&self, datagram: &mut [u8]) -> std::result::Result<(u64, usize), Rejected> {
        if ticket_of(datagram) != Some(self.ticket) || datagram[3] != 1 - self.side.sends() {
            return Err(Rejected::Forged);
        }
        let mut header = [0u8; HEADER];
        header.copy_from_slice(&datagram[..HEADER]);
        let pn = u64::from_be_bytes(header[12..].try_into().unwrap_or_default());
        if pn == u64::MAX {
            return Err(Rejected::Forged);
        }
        if !self.window.is_new(pn) {
            return Err(Rejected::Replayed);
        }
        let opened = self
            .recv
            .open_in_place(nonce(pn), Aad::from(header), &mut datagram[HEADER..])
            .map_err(|_| Rejected::Forged)?;
        Ok((pn, opened.len()))
    }
}

/// Which packet numbers were seen, as WireGuard and RFC 6479 keep it: the
/// highest one, and a bitmap of the [`REPLAY_WINDOW`] below it. Anything
/// older is refused, since it cannot be told apart from a replay.
pub struct ReplayWindow {
    /// One past the highest number seen (0: none yet).
    top: u64,
    bits: Box<[u64; (REPLAY_WINDOW / 64) as usize]>,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            top: 0,
            bits: Box::new([0; (REPLAY_WINDOW / 64) as usize]),
        }
    }
}

impl ReplayWindow {
    fn slot(pn: u64) -> (usize, u64) {
        let i = pn % REPLAY_WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    /// Whether `pn` was never seen and is not too old to tell.
    pub fn is_new(&self, pn: u64) -> bool {
        if pn >= self.top {
            return true;
        }
        if self.top - pn > REPLAY_WINDOW {
            return false;
        }
        let (word, bit) = Self::slot(pn);
        self.bits[word] & bit == 0
    }

    /// Remember `pn` (which [`Self::is_new`] said was new).
    pub fn mark(&mut self, pn: u64) {
        if pn >= self.top {
            // Clear the slots the window moves past, then take the new top.
            if self.top == 0 || pn - self.top >= REPLAY_WINDOW - 1 {
                self.bits.fill(0);
            } else {
                for n in self.top..=pn {
                    let (word, bit) = Self::slot(n);
                    self.bits[word] &= !bit;
                }
            }
            self.top = pn.saturating_add(1);
        }
        let (word, bit) = Self::slot(pn);
        self.bits[word] |= bit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Sealer, Sealer) {
        let t = Ticket::random().unwrap();
        (Sealer::new(&t, Side::Client), Sealer::new(&t, Side::Server))
    }

    #[test]
    fn a_sealed_datagram_opens_once_on_the_other_side_only() {
        let (mut c, mut s) = pair();
        let mut out = Vec::new();
        assert!(c.seal(b"hello server", &mut out));
        assert_eq!(out.len(), 12 + OVERHEAD);
        assert_eq!(ticket_of(&out), Some(c.ticket()));
        assert!(!out.windows(5).any(|w| w == b"hello"), "sealed, not clear");
        let mut again = out.clone();
        let mut mine = out.clone();
        assert_eq!(s.open(&mut out).unwrap(), b"hello server");
        // The same datagram again is a replay; our own is not for us.
        assert_eq!(s.open(&mut again), Err(Rejected::Replayed));
        assert_eq!(c.open(&mut mine), Err(Rejected::Forged));
        assert_eq!((s.forged, s.replayed, c.forged), (0, 1, 1));
        // And back.
        assert!(s.seal(b"hello client", &mut out));
        assert_eq!(c.open(&mut out).unwrap(), b"hello client");
    }

    #[test]
    fn a_flipped_bit_anywhere_fails_and_leaves_the_window_alone() {
        let (mut c, mut s) = pair();
        let mut good = Vec::new();
        c.seal(&[7u8; 300], &mut good);
        for i in 0..good.len() {
            for bit in [0, 3, 7] {
                let mut bad = good.clone();
                bad[i] ^= 1 << bit;
                assert_eq!(
                    s.open(&mut bad),
                    Err(Rejected::Forged),
                    "byte {i} bit {bit}"
                );
            }
        }
        // Flips of the packet number were checked as other numbers and
        // failed; none was marked, so the real one still opens.
        assert_eq!(s.open(&mut good).unwrap(), &[7u8; 300][..]);
        // Truncated or short datagrams are forged too.
        let mut short = good[..OVERHEAD - 1].to_vec();
        assert_eq!(s.open(&mut short), Err(Rejected::Forged));
    }

    #[test]
    fn another_ticket_or_secret_does_not_open() {
        let (mut c, _) = pair();
        let (_, mut other) = pair();
        let mut out = Vec::new();
        c.seal(b"x", &mut out);
        assert_eq!(other.open(&mut out.clone()), Err(Rejected::Forged));
        // Same ticket number, another secret.
        let t = Ticket {
            id: c.ticket(),
            secret: [9; 32],
        };
        let mut s = Sealer::new(&t, Side::Server);
        assert_eq!(s.open(&mut out), Err(Rejected::Forged));
    }

    #[test]
    fn the_directions_use_different_keys() {
        let t = Ticket::random().unwrap();
        let (mut c, mut s) = (Sealer::new(&t, Side::Client), Sealer::new(&t, Side::Server));
        // Both seal packet number 0 of the same bytes: the ciphertexts differ.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        c.seal(&[0u8; 64], &mut a);
        s.seal(&[0u8; 64], &mut b);
        assert_ne!(a[HEADER..], b[HEADER..]);
    }

    #[test]
    fn every_datagram_gets_the_next_number_even_the_same_bytes() {
        let (mut c, mut s) = pair();
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for _ in 0..100 {
            c.seal(b"retransmitted", &mut out);
            assert!(
                seen.insert(out[12..20].to_vec()),
                "a packet number came twice"
            );
            assert!(s.open(&mut out).is_ok());
        }
    }

    #[test]
    fn ticket_parts_round_trip_and_bad_ones_are_refused() {
        let t = Ticket::random().unwrap();
        assert_eq!(Ticket::from_parts(t.id, &t.secret_hex()).unwrap(), t);
        assert_ne!(random_u64().unwrap(), random_u64().unwrap());
        assert!(Ticket::from_parts(1, "abcd").is_err());
        assert!(Ticket::from_parts(1, &"zz".repeat(32)).is_err());
        assert!(!format!("{t:?}").contains(&t.secret_hex()));
    }

    #[test]
    fn the_window_takes_each_number_once_and_refuses_the_too_old() {
        let mut w = ReplayWindow::default();
        assert!(w.is_new(0));
        w.mark(0);
        assert!(!w.is_new(0));
        // Out of order within the window.
        w.mark(5);
        assert!(w.is_new(3) && !w.is_new(5));
        w.mark(3);
        assert!(!w.is_new(3) && w.is_new(4));
        // A jump: numbers just inside the window stay new, older are refused.
        w.mark(5 + REPLAY_WINDOW);
        assert!(w.is_new(6) && w.is_new(4 + REPLAY_WINDOW));
        assert!(!w.is_new(5) && !w.is_new(4) && !w.is_new(0));
        // A jump past the whole window forgets every bit (none stays set).
        w.mark(10 * REPLAY_WINDOW);
        for pn in 9 * REPLAY_WINDOW + 1..10 * REPLAY_WINDOW {
            assert!(w.is_new(pn), "{pn}");
        }
        assert!(!w.is_new(10 * REPLAY_WINDOW) && !w.is_new(9 * REPLAY_WINDOW));
        // The top of the number space, from an empty window too.
        // (`Sealer` never takes u64::MAX; the window must not overflow on it.)
        let mut fresh = ReplayWindow::default();
        fresh.mark(u64::MAX);
        assert!(fresh.is_new(u64::MAX - 1) && !fresh.is_new(u64::MAX - 2 - REPLAY_WINDOW));
        w.mark(u64::MAX - 1);
        assert!(!w.is_new(u64::MAX - 1) && w.is_new(u64::MAX - 2));
    }

    #[test]
    fn the_window_slides_bit_by_bit() {
        // Against a set of every number seen: the window agrees on each
        // number within reach, for an order with gaps and reordering.
        let mut w = ReplayWindow::default();
        let mut seen = std::collections::HashSet::new();
        let mut rng = fastrand::Rng::with_seed(4);
        let mut top = 0u64;
        for i in 0..50_000 {
            // Now and then a jump of about a whole window (or more) ahead.
            let jump = match i % 1000 {
                0 => REPLAY_WINDOW - 1,
                250 => REPLAY_WINDOW,
                500 => REPLAY_WINDOW + 1,
                750 => 3 * REPLAY_WINDOW,
                _ => rng.u64(0..40),
            };
            let pn = (top + jump).saturating_sub(rng.u64(0..9000));
            let expect = pn >= top || (top - pn <= REPLAY_WINDOW && !seen.contains(&pn));
            assert_eq!(w.is_new(pn), expect, "pn {pn} top {top}");
            if expect {
                w.mark(pn);
                seen.insert(pn);
                top = top.max(pn + 1);
            }
        }
    }
}
