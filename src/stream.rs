//! A file's bytes over a TCP connection, both ways. After the `File` (or
//! `Upload`) header, exactly `size` raw bytes follow, then a `Done{md5}`
//! message with the MD5 the sender computed as the bytes left.
//!
//! The sender hashes on a second core while it reads and sends; when its
//! MD5 cache already vouches for the unchanged file it only copies (the
//! receiver's check still catches a file that changed anyway). The receiver
//! writes into an [`Incoming`], which hashes as the bytes land, and returns
//! the sender's MD5 for the final comparison. Memory stays at a few chunks.
//!
//! Both ends work on any buffered reader or writer (byte slices in tests):
//! the fast path hides behind a small trait, [`BulkRead`] (file bytes read
//! past the reader's buffer, or opened straight into the caller's chunk,
//! where it can).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::folder::{Incoming, Md5Pipe};
use crate::proto::{CHUNK, Response, hex, read_msg, write_msg};
use crate::secure::SecureReader;
use crate::{Context, Error, Result, bail};

/// Copy `size` bytes of `file` into `w`, reporting progress.
fn copy_known(
    w: &mut (impl Write + ?Sized),
    mut file: &File,
    size: u64,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut buf = vec![0u8; CHUNK.min(size as usize)];
    let mut sent = 0u64;
    while sent < size {
        if cancel.load(Ordering::SeqCst) {
            return Err(Error::cancelled());
        }
        let want = CHUNK.min((size - sent) as usize);
        let n = read_some(&mut file, &mut buf[..want])?;
        w.write_all(&buf[..n]).context("sending file data")?;
        sent += n as u64;
        progress(sent);
    }
    Ok(())
}

/// Read what `file` gives next into `buf` (at least a byte): a file that
/// ends early shrank while it was sent.
fn read_some(file: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    loop {
        match file.read(buf) {
            Ok(0) => bail!("the file shrank while it was being sent"),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => bail!("reading the file failed: {e}"),
        }
    }
}

/// Send `size` bytes of `file`, then `Done{md5}`. `known_md5` is the
/// cached MD5 of the unchanged file, if any. `unchanged` runs before `Done`:
/// if the file changed while it was read (still being written), an error
/// goes instead and the receiver throws the bytes away. Returns the MD5 sent.
/// The caller flushes `w` (answers to pipelined requests go out together).
pub fn send_file<W: Write>(
    w: &mut W,
    mut file: File,
    size: u64,
    known_md5: Option<[u8; 16]>,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u64),
    unchanged: &dyn Fn(&File) -> Result<()>,
) -> Result<[u8; 16]> {
    let digest = match known_md5 {
        Some(md5) => {
            copy_known(w, &file, size, cancel, progress)?;
            md5
        }
        None => {
            let mut md5 = Md5Pipe::new(size);
            let mut sent = 0u64;
            while sent < size {
                if cancel.load(Ordering::SeqCst) {
                    return Err(Error::cancelled());
                }
                let want = CHUNK.min((size - sent) as usize);
                let mut buf = md5.buffer(want);
                let n = read_some(&mut file, &mut buf[..want])?;
                w.write_all(&buf[..n]).context("sending file data")?;
                md5.consume(buf, n);
                sent += n as u64;
                progress(sent);
            }
            md5.finish()?
        }
    };
    if let Err(e) = unchanged(&file) {
        write_msg(
            w,
            &Response::Error {
                message: e.to_string(),
            },
        )?;
        return Err(e);
    }
    write_msg(w, &Response::Done { md5: hex(&digest) })?;
    Ok(digest)
}

/// How the sender ended a file's bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// `Done`: the MD5 it computed as the bytes left.
    Md5(String),
    /// An error instead (the file changed while it was sent): this file
    /// is refused, and the stream is still in step for the next answer.
    Refused(Error),
}

impl Ending {
    /// The sender's MD5, or its refusal as the error.
    pub fn md5(self) -> Result<String> {
        match self {
            Ending::Md5(m) => Ok(m),
            Ending::Refused(e) => Err(e),
        }
    }
}

/// Where received file bytes go: a file being received into a folder
/// ([`Incoming`]) or a store's copy of a deposit. It hashes what it is
/// given; the receiver compares at its end.
pub trait Sink {
    /// Bytes announced.
    fn size(&self) -> u64;
    /// What the bytes are, for messages.
    fn label(&self) -> &str;
    fn written(&self) -> u64;
    /// A buffer of at least `len` bytes to fill and pass to `write_owned`.
    fn buffer(&mut self, len: usize) -> Vec<u8>;
    /// Append the first `used` bytes of `buf`.
    fn write_owned(&mut self, buf: Vec<u8>, used: usize) -> Result<()>;
}

impl Sink for Incoming {
    fn size(&self) -> u64 {
        self.meta().size
    }
    fn label(&self) -> &str {
        &self.meta().name
    }
    fn written(&self) -> u64 {
        Incoming::written(self)
    }
    fn buffer(&mut self, len: usize) -> Vec<u8> {
        Incoming::buffer(self, len)
    }
    fn write_owned(&mut self, buf: Vec<u8>, used: usize) -> Result<()> {
        Incoming::write_owned(self, buf, used)
    }
}

/// Receive exactly the announced number of bytes into `sink`, then the
/// sender's [`Ending`]. An error means the stream can no longer be trusted
/// (I/O, a local write that failed mid-file).
pub fn receive_file<R: BulkRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
    sink: &mut (impl Sink + ?Sized),
    progress: &mut dyn FnMut(u64),
) -> Result<Ending> {
    let size = sink.size();
    while sink.written() < size {
        let want = CHUNK.min((size - sink.written()) as usize);
        let mut chunk = sink.buffer(want);
        // Whole chunks: fewer writes and hand-overs than socket-sized reads.
        if let Err(e) = fill(r, &mut chunk[..want]) {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                bail!(
                    "the connection closed after about {} of {size} bytes of {}",
                    sink.written(),
                    sink.label()
                );
            }
            return Err(e.into());
        }
        sink.write_owned(chunk, want)?;
        progress(sink.written());
    }
    match read_msg::<Response>(r, buf)? {
        Response::Done { md5 } => Ok(Ending::Md5(md5)),
        Response::Error { message } => Ok(Ending::Refused(Error::new(message))),
        other => bail!("unexpected message after a file's bytes: {other:?}"),
    }
}

/// A buffered reader that file bytes can be read from in bulk. The
/// default takes them through the reader's buffer; a [`BufReader`] hands
/// out what it buffered and then reads the rest straight from its source
/// into the chunk. File bytes are thus copied once into a buffer small
/// enough to stay in cache for the write and the hash, not first through
/// the reader's large buffer (which serves the many small messages).
pub trait BulkRead: BufRead {
    /// Read some bytes into `chunk`; `Ok(0)` at the end of the stream.
    fn read_bulk(&mut self, chunk: &mut [u8]) -> std::io::Result<usize> {
        let got = self.fill_buf()?;
        let n = got.len().min(chunk.len());
        chunk[..n].copy_from_slice(&got[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BulkRead for BufReader<R> {
    fn read_bulk(&mut self, chunk: &mut [u8]) -> std::io::Result<usize> {
        // With bytes buffered, BufReader hands those out without a syscall.
        if self.buffer().is_empty() {
            self.get_mut().read(chunk)
        } else {
            self.read(chunk)
        }
    }
}

impl<R: Read> BulkRead for SecureReader<R> {
    fn read_bulk(&mut self, chunk: &mut [u8]) -> std::io::Result<usize> {
        self.read_direct(chunk)
    }
}

impl BulkRead for &[u8] {}

/// Fill `chunk` from `r`.
fn fill<R: BulkRead>(r: &mut R, chunk: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < chunk.len() {
        match r.read_bulk(&mut chunk[filled..]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::{Folder, md5_reader};
    use crate::proto::{FileMeta, read_frame};

    fn file_with(data: &[u8]) -> (tempfile::TempDir, File) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), data).unwrap();
        let f = File::open(d.path().join("f")).unwrap();
        (d, f)
    }

    /// Send `data` into a `Vec`; the raw bytes and the message after them.
    fn sent(data: &[u8], known: Option<[u8; 16]>, ok: bool) -> (Vec<u8>, Response) {
        let (_d, file) = file_with(data);
        let mut out = Vec::new();
        let unchanged = |_: &File| if ok { Ok(()) } else { bail!("it changed") };
        let mut reported = 0;
        let result = send_file(
            &mut out,
            file,
            data.len() as u64,
            known,
            &AtomicBool::new(false),
            &mut |n| reported = n,
            &unchanged,
        );
        assert_eq!(result.is_ok(), ok);
        assert_eq!(reported, data.len() as u64);
        let (bytes, mut rest) = out.split_at(data.len());
        let mut buf = Vec::new();
        let msg = read_frame(&mut rest, &mut buf).unwrap().unwrap();
        (bytes.to_vec(), serde_json::from_slice(msg).unwrap())
    }

    #[test]
    fn a_file_is_sent_hashed_or_with_its_known_md5_through_any_writer() {
        let data: Vec<u8> = (0..CHUNK * 2 + 5).map(|i| (i % 251) as u8).collect();
        let md5 = hex(&md5_reader(&data[..]).unwrap());
        assert_eq!(
            sent(&data, None, true),
            (data.clone(), Response::Done { md5 })
        );
        // A known MD5 is sent as it is: the copying path reads no hash.
        let known = sent(&data, Some([9; 16]), true);
        assert_eq!(known, (data, Response::Done { md5: hex(&[9; 16]) }));
    }

    #[test]
    fn a_file_that_changed_while_sent_ends_with_an_error() {
        let (_, msg) = sent(b"abc", None, false);
        assert_eq!(
            msg,
            Response::Error {
                message: "it changed".into()
            }
        );
    }

    #[test]
    fn a_file_is_received_from_a_slice_or_a_small_buffered_reader() {
        let data: Vec<u8> = (0..CHUNK + 77).map(|i| (i % 13) as u8).collect();
        let md5 = hex(&md5_reader(&data[..]).unwrap());
        let mut wire = data.clone();
        write_msg(&mut wire, &Response::Done { md5: md5.clone() }).unwrap();
        let d = tempfile::tempdir().unwrap();
        let folder = Folder::open(d.path()).unwrap();
        let meta = FileMeta {
            name: "x".into(),
            size: data.len() as u64,
            mtime_ns: 0,
            mode: 0o644,
        };
        let mut from_slice = Incoming::create(&folder, &meta).unwrap();
        let got = receive_file(
            &mut &wire[..],
            &mut Vec::new(),
            &mut from_slice,
            &mut |_| {},
        );
        assert_eq!(got.unwrap(), Ending::Md5(md5.clone()));
        let mut buffered = Incoming::create(&folder, &meta).unwrap();
        let mut r = BufReader::with_capacity(1000, &wire[..]);
        let got = receive_file(&mut r, &mut Vec::new(), &mut buffered, &mut |_| {});
        assert_eq!(got.unwrap(), Ending::Md5(md5.clone()));
        assert_eq!(buffered.written(), data.len() as u64);
        // Cut short: the outer error says how far it got.
        let mut cut = Incoming::create(&folder, &meta).unwrap();
        let e = receive_file(&mut &data[..10], &mut Vec::new(), &mut cut, &mut |_| {});
        assert!(e.unwrap_err().message().contains("closed after about 0"));
    }
}
