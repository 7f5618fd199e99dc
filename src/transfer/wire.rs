//! UDP datagrams: encoding, decoding and a CRC-32 over each one, so a
//! corrupted, truncated or foreign datagram is dropped rather than trusted.
//!
//! ```text
//! u16 magic 0xDB5A | u8 version | u8 kind | u64 transfer id | body | u32 crc32
//! ```
//!
//! Version 2 added the address token (in `Meta`, echoed in `Ack` and
//! `Done`) and the `Changed` datagram. Version 3 seals every version-2
//! datagram in an envelope ([`crate::secure::udp`]); a request in clear
//! is answered with an `Error` in its own version's framing
//! ([`plaintext_request`], [`encode_error_as`]), so an old peer reads a
//! clear message instead of waiting for an answer.

pub const MAGIC: u16 = 0xDB5A;
pub const VERSION: u8 = 2;
const HEADER: usize = 12;
const TRAILER: usize = 4;
/// Bytes every datagram takes around its body.
pub const FRAME_OVERHEAD: usize = HEADER + TRAILER;
/// Bytes a data datagram adds around its payload.
pub const DATA_OVERHEAD: usize = HEADER + 8 + TRAILER;
/// Most ranges an acknowledgement carries.
pub const MAX_RANGES: usize = 64;

const K_REQUEST: u8 = 1;
const K_META: u8 = 2;
const K_DATA: u8 = 3;
const K_ACK: u8 = 4;
const K_FIN: u8 = 5;
const K_DONE: u8 = 6;
const K_ERROR: u8 = 7;
const K_CHANGED: u8 = 8;
/// Most bytes a datagram other than `Data`, `Request` or `Error` takes.
pub const CONTROL_MAX: usize = 64;

/// The file being sent, as the sender's `Meta` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaInfo {
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    pub payload: u32,
    /// Random: a receiver that echoes it (in every `Ack` and in `Done`)
    /// proves it gets our datagrams at the address it claims.
    pub token: u64,
}

/// One datagram's meaning.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet<'a> {
    /// FileReceiver asks for a file; `payload` is the data size it wants (the
    /// datagram is padded to about that size, probing the path).
    Request {
        attempt: u32,
        payload: u32,
        window: u32,
        name: &'a str,
    },
    Meta(MetaInfo),
    Data {
        seq: u64,
        bytes: &'a [u8],
    },
    /// Everything below `cum` is held, and so are the `[start, end)` ranges.
    Ack {
        token: u64,
        cum: u64,
        window: u32,
        ranges: Vec<(u64, u64)>,
    },
    Fin {
        md5: [u8; 16],
        retransmissions: u64,
    },
    Done {
        token: u64,
    },
    Error {
        message: &'a str,
    },
    /// The file changed while it was sent: this attempt cannot give one
    /// whole version of it, a new one will.
    Changed,
}

fn header(out: &mut Vec<u8>, kind: u8, id: u64) {
    header_as(out, VERSION, kind, id)
}

fn header_as(out: &mut Vec<u8>, version: u8, kind: u8, id: u64) {
    out.clear();
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.push(version);
    out.push(kind);
    out.extend_from_slice(&id.to_be_bytes());
}

fn seal(out: &mut Vec<u8>) {
    let crc = crc32fast::hash(out);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Encode `packet` of transfer `id` into `out`; a request is padded to
/// `pad_to` bytes.
pub fn encode(id: u64, packet: &Packet, out: &mut Vec<u8>, pad_to: usize) {
    match packet {
        Packet::Request {
            attempt,
            payload,
            window,
            name,
        } => {
            header(out, K_REQUEST, id);
            out.extend_from_slice(&attempt.to_be_bytes());
            out.extend_from_slice(&payload.to_be_bytes());
            out.extend_from_slice(&window.to_be_bytes());
            let name = &name.as_bytes()[..name.len().min(4096)];
            out.extend_from_slice(&(name.len() as u16).to_be_bytes());
            out.extend_from_slice(name);
            if out.len() + TRAILER < pad_to {
                out.resize(pad_to - TRAILER, 0);
            }
        }
        Packet::Meta(MetaInfo {
            size,
            mtime_ns,
            mode,
            payload,
            token,
        }) => {
            header(out, K_META, id);
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&mtime_ns.to_be_bytes());
            out.extend_from_slice(&mode.to_be_bytes());
            out.extend_from_slice(&payload.to_be_bytes());
            out.extend_from_slice(&token.to_be_bytes());
        }
        Packet::Data { seq, bytes } => {
            header(out, K_DATA, id);
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(bytes);
        }
        Packet::Ack {
            token,
            cum,
            window,
            ranges,
        } => {
            header(out, K_ACK, id);
            out.extend_from_slice(&token.to_be_bytes());
            out.extend_from_slice(&cum.to_be_bytes());
            out.extend_from_slice(&window.to_be_bytes());
            let n = ranges.len().min(MAX_RANGES);
            out.push(n as u8);
            for (a, b) in &ranges[..n] {
                out.extend_from_slice(&a.to_be_bytes());
                out.extend_from_slice(&b.to_be_bytes());
            }
        }
        Packet::Fin {
            md5,
            retransmissions,
        } => {
            header(out, K_FIN, id);
            out.extend_from_slice(md5);
            out.extend_from_slice(&retransmissions.to_be_bytes());
        }
        Packet::Done { token } => {
            header(out, K_DONE, id);
            out.extend_from_slice(&token.to_be_bytes());
        }
        Packet::Error { message } => {
            header(out, K_ERROR, id);
            out.extend_from_slice(&message.as_bytes()[..message.len().min(1024)]);
        }
        Packet::Changed => header(out, K_CHANGED, id),
    }
    seal(out);
}

/// A datagram without its CRC trailer, if it is long enough and the CRC
/// matches.
fn checked_body(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.len() < HEADER + TRAILER {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - TRAILER);
    (crc32fast::hash(body) == u32::from_be_bytes(crc.try_into().ok()?)).then_some(body)
}

/// A well-formed request in clear, of any version (this framing's or an
/// older one's): its version and transfer id, to answer with
/// [`encode_error_as`]. On the wire only sealed datagrams
/// ([`crate::secure::udp`]) are ours, so a request in clear comes from a
/// peer of an older protocol.
pub fn plaintext_request(bytes: &[u8]) -> Option<(u8, u64)> {
    let mut c = Cursor(checked_body(bytes)?);
    let (magic, version, kind, id) = (c.u16()?, c.u8()?, c.u8()?, c.u64()?);
    (magic == MAGIC && kind == K_REQUEST).then_some((version, id))
}

/// An `Error` framed as protocol `version` frames it (the same in every
/// version so far: header, message, CRC).
pub fn encode_error_as(version: u8, id: u64, message: &str, out: &mut Vec<u8>) {
    header_as(out, version, K_ERROR, id);
    out.extend_from_slice(&message.as_bytes()[..message.len().min(1024)]);
    seal(out);
}

/// Start a data datagram in `out` whose payload the caller appends (for
/// instance by reading a file straight into it), then [`seal_data`].
pub fn begin_data(id: u64, seq: u64, out: &mut Vec<u8>) {
    header(out, K_DATA, id);
    out.extend_from_slice(&seq.to_be_bytes());
}

/// Finish a datagram started with [`begin_data`].
pub fn seal_data(out: &mut Vec<u8>) {
    seal(out)
}

/// The payload of a data datagram made by [`begin_data`] and
/// [`seal_data`] (or [`encode`]), without decoding or checking it.
pub fn data_payload(datagram: &[u8]) -> &[u8] {
    datagram
        .get(HEADER + 8..datagram.len().saturating_sub(TRAILER))
        .unwrap_or(&[])
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Decode a datagram: `None` if it is corrupted, truncated or not ours.
pub fn decode(bytes: &[u8]) -> Option<(u64, Packet<'_>)> {
    let mut c = Cursor(checked_body(bytes)?);
    if c.u16()? != MAGIC || c.u8()? != VERSION {
        return None;
    }
    let kind = c.u8()?;
    let id = c.u64()?;
    let packet = match kind {
        K_REQUEST => {
            let attempt = c.u32()?;
            let payload = c.u32()?;
            let window = c.u32()?;
            let len = c.u16()? as usize;
            let name = std::str::from_utf8(c.take(len)?).ok()?;
            Packet::Request {
                attempt,
                payload,
                window,
                name,
            }
        }
        K_META => Packet::Meta(MetaInfo {
            size: c.u64()?,
            mtime_ns: c.u64()? as i64,
            mode: c.u32()?,
            payload: c.u32()?,
            token: c.u64()?,
        }),
        K_DATA => {
            let seq = c.u64()?;
            Packet::Data { seq, bytes: c.0 }
        }
        K_ACK => {
            let token = c.u64()?;
            let cum = c.u64()?;
            let window = c.u32()?;
            let n = c.u8()? as usize;
            let mut ranges = Vec::with_capacity(n);
            for _ in 0..n {
                let (a, b) = (c.u64()?, c.u64()?);
                if a >= b || a < cum {
                    return None;
                }
                ranges.push((a, b));
            }
            Packet::Ack {
                token,
                cum,
                window,
                ranges,
            }
        }
        K_FIN => Packet::Fin {
            md5: c.take(16)?.try_into().ok()?,
            retransmissions: c.u64()?,
        },
        K_DONE => Packet::Done { token: c.u64()? },
        K_ERROR => Packet::Error {
            message: std::str::from_utf8(c.0).ok()?,
        },
        K_CHANGED => Packet::Changed,
        _ => return None,
    };
    Some((id, packet))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(p: Packet) {
        let mut out = Vec::new();
        encode(42, &p, &mut out, 0);
        assert_eq!(decode(&out), Some((42, p)));
    }

    #[test]
    fn every_packet_round_trips() {
        round(Packet::Request {
            attempt: 2,
            payload: 1448,
            window: 64,
            name: "dir/ä b",
        });
        round(Packet::Meta(MetaInfo {
            size: 5,
            mtime_ns: -3,
            mode: 0o644,
            payload: 1448,
            token: u64::MAX - 1,
        }));
        round(Packet::Data {
            seq: 9,
            bytes: b"hello",
        });
        round(Packet::Ack {
            token: 11,
            cum: 3,
            window: 10,
            ranges: vec![(5, 7), (9, 10)],
        });
        round(Packet::Fin {
            md5: [7; 16],
            retransmissions: 3,
        });
        round(Packet::Done { token: 12 });
        round(Packet::Error {
            message: "no such file",
        });
        round(Packet::Changed);
    }

    #[test]
    fn a_request_in_clear_is_answered_in_its_own_framing() {
        let mut req = Vec::new();
        encode(
            5,
            &Packet::Request {
                attempt: 1,
                payload: 100,
                window: 1,
                name: "x",
            },
            &mut req,
            0,
        );
        assert_eq!(plaintext_request(&req), Some((VERSION, 5)));
        req[3] = K_META;
        assert_eq!(plaintext_request(&req), None, "only requests");
        req[3] = K_REQUEST;
        req[2] = 1;
        let n = req.len() - TRAILER;
        let crc = crc32fast::hash(&req[..n]);
        req[n..].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(decode(&req), None);
        assert_eq!(plaintext_request(&req), Some((1, 5)));
        let mut answer = Vec::new();
        encode_error_as(1, 5, "upgrade", &mut answer);
        assert_eq!(answer[2], 1);
        assert_eq!(&answer[HEADER..answer.len() - TRAILER], b"upgrade");
    }

    #[test]
    fn control_datagrams_fit_the_control_bound() {
        let mut out = Vec::new();
        for p in [
            Packet::Meta(MetaInfo {
                size: 1,
                mtime_ns: 1,
                mode: 1,
                payload: 1,
                token: 1,
            }),
            Packet::Fin {
                md5: [0; 16],
                retransmissions: 1,
            },
            Packet::Done { token: 1 },
            Packet::Changed,
        ] {
            encode(1, &p, &mut out, 0);
            assert!(out.len() <= CONTROL_MAX, "{p:?}");
        }
    }

    #[test]
    fn requests_are_padded_to_probe_the_path() {
        let mut out = Vec::new();
        encode(
            1,
            &Packet::Request {
                attempt: 1,
                payload: 9000,
                window: 1,
                name: "x",
            },
            &mut out,
            9000,
        );
        assert_eq!(out.len(), 9000);
        assert!(matches!(
            decode(&out),
            Some((1, Packet::Request { name: "x", .. }))
        ));
    }

    #[test]
    fn any_flipped_bit_or_cut_is_dropped() {
        let mut out = Vec::new();
        encode(
            7,
            &Packet::Data {
                seq: 1,
                bytes: b"payload bytes",
            },
            &mut out,
            0,
        );
        for i in 0..out.len() {
            for bit in 0..8 {
                let mut bad = out.clone();
                bad[i] ^= 1 << bit;
                assert_eq!(decode(&bad), None, "byte {i} bit {bit}");
            }
        }
        for cut in 0..out.len() {
            assert_eq!(decode(&out[..cut]), None);
        }
        assert_eq!(decode(b"garbage that is long enough"), None);
    }

    #[test]
    fn begin_and_seal_equal_encode() {
        let mut a = Vec::new();
        encode(
            3,
            &Packet::Data {
                seq: 4,
                bytes: b"abc",
            },
            &mut a,
            0,
        );
        let mut b = Vec::new();
        begin_data(3, 4, &mut b);
        b.extend_from_slice(b"abc");
        seal_data(&mut b);
        assert_eq!(a, b);
        assert_eq!(data_payload(&b), b"abc");
        assert_eq!(data_payload(b"short"), b"");
    }
}
