//! The encrypted byte stream a connection runs on once its handshake is
//! done: every record is `u16 length | AES-256-GCM ciphertext` (16 to
//! 65,535 bytes, tag included), sealed with the session's key for that
//! direction and a nonce that counts records from where the handshake left
//! off, so a record dropped, repeated, reordered or altered on the way fails
//! authentication and ends the connection. The protocol's frames and a
//! file's bytes run inside unchanged.
//!
//! [`SecureWriter`] seals full records as they fill, gathers sealed records
//! into one `write` (a file's bytes cost a syscall per 256 KiB, not per
//! record) and seals a partial record on `flush`. [`SecureReader`] reads
//! the socket in large slices and opens one record at a time; a bulk read
//! (a file's bytes) opens records straight into the caller's chunk.

use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;

use snow::StatelessTransportState;

/// The AES-GCM tag that ends each record.
pub const TAG: usize = 16;
/// The most ciphertext one record holds (Noise's message limit).
pub const RECORD: usize = 65_535;
/// The most plaintext one record carries.
pub const RECORD_PLAIN: usize = RECORD - TAG;
/// Sealed bytes gathered before they are written out.
const BATCH: usize = 256 << 10;

/// The session's keys, shared by a connection's two halves (each keeps
/// its own nonce counter, so the halves need no lock).
pub type SessionKeys = Arc<StatelessTransportState>;

fn broken(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Seal `plain` as the record numbered `*nonce` and append it to `out`.
pub(super) fn seal_record(
    keys: &StatelessTransportState,
    nonce: &mut u64,
    plain: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<()> {
    debug_assert!(plain.len() <= RECORD_PLAIN);
    // Never reached (2^64 records), but a nonce must never repeat.
    if *nonce == u64::MAX {
        return Err(broken("the connection's record counter is exhausted"));
    }
    let at = out.len();
    let sealed = plain.len() + TAG;
    out.resize(at + 2 + sealed, 0);
    out[at..at + 2].copy_from_slice(&(sealed as u16).to_be_bytes());
    keys.write_message(*nonce, plain, &mut out[at + 2..])
        .map_err(|_| broken("a record could not be sealed"))?;
    *nonce += 1;
    Ok(())
}

/// Open the record numbered `*nonce` (`sealed`: ciphertext and tag) into
/// the start of `out` (at least `sealed.len()` long); its plaintext length.
pub(super) fn open_record(
    keys: &StatelessTransportState,
    nonce: &mut u64,
    sealed: &[u8],
    out: &mut [u8],
) -> io::Result<usize> {
    let n = keys
        .read_message(*nonce, sealed, out)
        .map_err(|_| broken("a record from the peer failed authentication"))?;
    *nonce += 1;
    Ok(n)
}

/// The writing half: plaintext in, sealed records out.
pub struct SecureWriter<W: Write> {
    inner: W,
    keys: SessionKeys,
    nonce: u64,
    /// Plaintext of the record being filled.
    plain: Vec<u8>,
    /// Sealed records not yet written.
    out: Vec<u8>,
}

impl<W: Write> SecureWriter<W> {
    /// A writer whose first record is numbered `nonce`.
    pub fn new(inner: W, keys: SessionKeys, nonce: u64) -> Self {
        SecureWriter {
            inner,
            keys,
            nonce,
            plain: Vec::new(),
            out: Vec::new(),
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    fn seal(&mut self, plain: &[u8]) -> io::Result<()> {
        seal_record(&self.keys, &mut self.nonce, plain, &mut self.out)?;
        if self.out.len() >= BATCH {
            self.write_out()?;
        }
        Ok(())
    }

    fn seal_pending(&mut self) -> io::Result<()> {
        if self.plain.is_empty() {
            return Ok(());
        }
        let plain = std::mem::take(&mut self.plain);
        let sealed = self.seal(&plain);
        self.plain = plain;
        self.plain.clear();
        sealed
    }

    fn write_out(&mut self) -> io::Result<()> {
        let out = std::mem::take(&mut self.out);
        let written = self.inner.write_all(&out);
        self.out = out;
        self.out.clear();
        written
    }
}

impl<W: Write> Write for SecureWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.plain.is_empty() && buf.len() >= RECORD_PLAIN {
            // A whole record straight from the caller's bytes.
            self.seal(&buf[..RECORD_PLAIN])?;
            return Ok(RECORD_PLAIN);
        }
        let n = buf.len().min(RECORD_PLAIN - self.plain.len());
        self.plain.extend_from_slice(&buf[..n]);
        if self.plain.len() == RECORD_PLAIN {
            self.seal_pending()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.seal_pending()?;
        if !self.out.is_empty() {
            self.write_out()?;
        }
        self.inner.flush()
    }
}

impl<W: Write> Drop for SecureWriter<W> {
    fn drop(&mut self) {
        // As a BufWriter does: what was written goes out, if it can.
        if !std::thread::panicking() {
            let _ = self.flush();
        }
    }
}

/// The reading half: sealed records in, plaintext out, as a [`BufRead`].
pub struct SecureReader<R: Read> {
    inner: R,
    keys: SessionKeys,
    nonce: u64,
    /// Bytes read from `inner`: `raw[start..end]` is not yet opened.
    raw: Vec<u8>,
    start: usize,
    end: usize,
    /// The last record's plaintext: `plain[pos..len]` is not yet read.
    plain: Vec<u8>,
    pos: usize,
    len: usize,
}

impl<R: Read> SecureReader<R> {
    /// A reader whose first record is numbered `nonce`, reading `inner`
    /// in slices of up to `capacity` bytes (at least one whole record).
    pub fn new(inner: R, keys: SessionKeys, nonce: u64, capacity: usize) -> Self {
        SecureReader {
            inner,
            keys,
            nonce,
            raw: vec![0; capacity.max(2 + RECORD)],
            start: 0,
            end: 0,
            plain: vec![0; RECORD],
            pos: 0,
            len: 0,
        }
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Whether plaintext is waiting, or a whole record is already read in.
    pub fn has_buffered(&self) -> bool {
        self.pos < self.len || self.whole_record().is_some()
    }

    /// The sealed length of the record at the start of `raw`, if all of it
    /// is read in.
    fn whole_record(&self) -> Option<usize> {
        let have = self.end - self.start;
        if have < 2 {
            return None;
        }
        let len = u16::from_be_bytes([self.raw[self.start], self.raw[self.start + 1]]) as usize;
        (have >= 2 + len).then_some(len)
    }

    /// Read until a whole record is in `raw`: its sealed length, or None
    /// at a clean end of the stream (between records).
    fn next_record(&mut self) -> io::Result<Option<usize>> {
        loop {
            if let Some(len) = self.whole_record() {
                if len < TAG {
                    return Err(broken("the peer sent a record too short to be sealed"));
                }
                return Ok(Some(len));
            }
            if self.raw.len() - self.start < 2 + RECORD {
                // Room for the largest record: move the partial one down.
                self.raw.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = self.inner.read(&mut self.raw[self.end..])?;
            if n == 0 {
                if self.start == self.end {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed in the middle of a record",
                ));
            }
            self.end += n;
        }
    }

    /// Open the record at the start of `raw` (sealed length `len`) into
    /// `out`; its plaintext length.
    fn open_into(&mut self, len: usize, out: &mut [u8]) -> io::Result<usize> {
        let sealed = &self.raw[self.start + 2..self.start + 2 + len];
        let n = open_record(&self.keys, &mut self.nonce, sealed, out)?;
        self.start += 2 + len;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        Ok(n)
    }

    /// Read some plaintext straight into `chunk` when nothing is waiting
    /// and a whole record fits (a file's bytes: one copy less); otherwise
    /// through the reader's own buffer. `Ok(0)` at the end of the stream.
    pub fn read_direct(&mut self, chunk: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.len || chunk.is_empty() {
            return self.read(chunk);
        }
        loop {
            let Some(len) = self.next_record()? else {
                return Ok(0);
            };
            if chunk.len() < len {
                return self.read(chunk);
            }
            let n = self.open_into(len, chunk)?;
            if n > 0 {
                return Ok(n);
            }
        }
    }
}

impl<R: Read> BufRead for SecureReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.len {
            let Some(len) = self.next_record()? else {
                break;
            };
            let mut plain = std::mem::take(&mut self.plain);
            let opened = self.open_into(len, &mut plain);
            self.plain = plain;
            self.len = opened?;
            self.pos = 0;
        }
        Ok(&self.plain[self.pos..self.len])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.len);
    }
}

impl<R: Read> Read for SecureReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let got = self.fill_buf()?;
        let n = got.len().min(buf.len());
        buf[..n].copy_from_slice(&got[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::handshake::tests::session_pair;

    /// A writer and a reader of one direction of a fresh session.
    fn pair() -> (SecureWriter<Vec<u8>>, SessionKeys) {
        let (a, b) = session_pair();
        (SecureWriter::new(Vec::new(), a, 0), b)
    }

    fn reader(wire: Vec<u8>, keys: SessionKeys) -> SecureReader<io::Cursor<Vec<u8>>> {
        SecureReader::new(io::Cursor::new(wire), keys, 0, 0)
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn bytes_cross_at_every_record_boundary() {
        for n in [
            0,
            1,
            RECORD_PLAIN - 1,
            RECORD_PLAIN,
            RECORD_PLAIN + 1,
            4 << 20,
        ] {
            let (mut w, keys) = pair();
            let sent = data(n);
            // Written in odd pieces, then flushed once.
            for piece in sent.chunks(40_000) {
                w.write_all(piece).unwrap();
            }
            w.flush().unwrap();
            let wire = std::mem::take(&mut w.inner);
            let records = n.div_ceil(RECORD_PLAIN);
            assert_eq!(wire.len(), n + records * (2 + TAG), "{n} bytes");
            let mut r = reader(wire.clone(), keys.clone());
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            assert_eq!(got, sent, "{n} bytes");
            // Bulk reads into chunks large and small see the same bytes.
            for chunk in [10, RECORD, 1 << 20] {
                let mut r = reader(wire.clone(), keys.clone());
                let (mut got, mut buf) = (Vec::new(), vec![0; chunk]);
                loop {
                    let k = r.read_direct(&mut buf).unwrap();
                    if k == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..k]);
                }
                assert_eq!(got, sent, "{n} bytes in chunks of {chunk}");
            }
            // Nothing readable went out in clear.
            if n >= 64 {
                assert!(!wire.windows(32).any(|w| w == &sent[..32]));
            }
        }
    }

    #[test]
    fn a_tampered_truncated_or_reordered_stream_fails() {
        let (mut w, keys) = pair();
        w.write_all(b"first").unwrap();
        w.flush().unwrap();
        w.write_all(b"second").unwrap();
        w.flush().unwrap();
        let wire = std::mem::take(&mut w.inner);
        let first = 2 + 5 + TAG;
        // One bit flipped anywhere in a record.
        for at in [0, 1, 2, first - 1] {
            let mut bad = wire.clone();
            bad[at] ^= 1;
            let mut got = Vec::new();
            assert!(reader(bad, keys.clone()).read_to_end(&mut got).is_err());
        }
        // Cut inside a record.
        let mut got = Vec::new();
        let e = reader(wire[..first + 3].to_vec(), keys.clone())
            .read_to_end(&mut got)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(got, b"first");
        // The second record alone (the first dropped): wrong nonce.
        let mut got = Vec::new();
        assert!(
            reader(wire[first..].to_vec(), keys.clone())
                .read_to_end(&mut got)
                .is_err()
        );
        // A record shorter than a tag.
        let mut got = Vec::new();
        assert!(
            reader(vec![0, 3, 1, 2, 3], keys)
                .read_to_end(&mut got)
                .is_err()
        );
    }

    #[test]
    fn has_buffered_means_a_whole_record_or_plaintext_waits() {
        let (mut w, keys) = pair();
        w.write_all(b"one").unwrap();
        w.flush().unwrap();
        w.write_all(b"two").unwrap();
        w.flush().unwrap();
        let wire = std::mem::take(&mut w.inner);
        let first = 2 + 3 + TAG;
        let mut r = reader(wire[..first + 4].to_vec(), keys);
        assert!(!r.has_buffered());
        let mut b = [0u8; 1];
        r.read_exact(&mut b).unwrap();
        assert!(r.has_buffered(), "two bytes of the first record wait");
        r.read_exact(&mut [0u8; 2]).unwrap();
        // Only part of the second record is read in: nothing to answer yet.
        assert!(!r.has_buffered());
    }
}
