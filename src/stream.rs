//! A file's bytes over a TCP connection, both ways. After the `File` (or
//! `Upload`) header, exactly `size` raw bytes follow, then a `Done{md5}`
//! message with the MD5 the sender computed as the bytes left.
//!
//! The sender hashes on a second core while it reads and sends; when its
//! MD5 cache already vouches for the unchanged file it sends with
//! `sendfile(2)`, without copying the bytes through user space (the
//! receiver's check still catches a file that changed anyway). The receiver
//! writes into an [`Incoming`], which hashes as the bytes land, and returns
//! the sender's MD5 for the final comparison. Memory stays at a few chunks.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::folder::{Incoming, Md5Pipe};
use crate::proto::{CHUNK, Response, hex, read_msg, write_msg};
use crate::{Context, Error, Result, bail};

/// Bytes handed to one `sendfile` call (between progress reports).
const SENDFILE_STEP: usize = 8 << 20;

/// Send `size` bytes of `file`, then `Done{md5}`. `known_md5` is the
/// cached MD5 of the unchanged file, if any. `unchanged` runs before `Done`:
/// if the file changed while it was read (still being written), an error
/// goes instead and the receiver throws the bytes away. Returns the MD5 sent.
pub fn send_file(
    w: &mut BufWriter<TcpStream>,
    mut file: File,
    size: u64,
    known_md5: Option<[u8; 16]>,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u64),
    unchanged: &dyn Fn() -> Result<()>,
) -> Result<[u8; 16]> {
    let digest = match known_md5 {
        Some(md5) => {
            w.flush().context("sending file data")?;
            send_with_sendfile(w.get_ref(), &file, size, cancel, progress)?;
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
                let n = loop {
                    match file.read(&mut buf[..want]) {
                        Ok(0) => bail!("the file shrank while it was being sent"),
                        Ok(n) => break n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => bail!("reading the file failed: {e}"),
                    }
                };
                w.write_all(&buf[..n]).context("sending file data")?;
                md5.consume(buf, n);
                sent += n as u64;
                progress(sent);
            }
            md5.finish()?
        }
    };
    if let Err(e) = unchanged() {
        write_msg(
            w,
            &Response::Error {
                message: e.to_string(),
            },
        )?;
        w.flush().context("sending file data")?;
        return Err(e);
    }
    write_msg(w, &Response::Done { md5: hex(&digest) })?;
    w.flush().context("sending file data")?;
    Ok(digest)
}

fn send_with_sendfile(
    sock: &TcpStream,
    file: &File,
    size: u64,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut offset: libc::off_t = 0;
    while (offset as u64) < size {
        if cancel.load(Ordering::SeqCst) {
            return Err(Error::cancelled());
        }
        let count = SENDFILE_STEP.min((size - offset as u64) as usize);
        // SAFETY: both fds are open for the duration of the call and `offset` is a valid pointer.
        let n = unsafe { libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &mut offset, count) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    bail!("the peer stopped taking data")
                }
                _ => return Err(e).context("sending file data"),
            }
        }
        if n == 0 {
            bail!("the file shrank while it was being sent");
        }
        progress(offset as u64);
    }
    Ok(())
}

/// Receive exactly the announced number of bytes into `incoming`, then the
/// `Done{md5}` message. The outer error means the stream can no longer be
/// trusted (I/O, a local write that failed mid-file); the inner one that
/// the sender refused at the end (the file changed while it was sent), with
/// the stream still in step for the next response.
pub fn receive_file<R: Read>(
    r: &mut BufReader<R>,
    buf: &mut Vec<u8>,
    incoming: &mut Incoming,
    progress: &mut dyn FnMut(u64),
) -> Result<Result<String>> {
    let size = incoming.meta().size;
    while incoming.written() < size {
        let want = CHUNK.min((size - incoming.written()) as usize);
        let mut chunk = incoming.buffer(want);
        // Whole chunks: fewer writes and hand-overs than socket-sized reads.
        if let Err(e) = read_chunk(r, &mut chunk[..want]) {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                bail!(
                    "the connection closed after about {} of {size} bytes of {}",
                    incoming.written(),
                    incoming.meta().name
                );
            }
            return Err(e.into());
        }
        incoming.write_owned(chunk, want)?;
        progress(incoming.written());
    }
    match read_msg::<Response>(r, buf)? {
        Response::Done { md5 } => Ok(Ok(md5)),
        Response::Error { message } => Ok(Err(Error::new(message))),
        other => bail!("unexpected message after a file's bytes: {other:?}"),
    }
}

/// Fill `chunk` from `r`: what the reader already buffered first, the rest
/// straight from the socket into `chunk`. File bytes are thus copied once
/// into a buffer small enough to stay in cache for the write and the hash,
/// not first through the reader's large buffer (which serves the many small
/// messages).
fn read_chunk<R: Read>(r: &mut BufReader<R>, chunk: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < chunk.len() {
        let rest = &mut chunk[filled..];
        // With bytes buffered, BufReader hands those out without a syscall.
        let n = if r.buffer().is_empty() {
            r.get_mut().read(rest)
        } else {
            r.read(rest)
        };
        match n {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
