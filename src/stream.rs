//! A file's bytes over a framed TCP stream, both ways: the sender reads,
//! hashes and sends in one pass and ends with the MD5 it computed; the
//! receiver writes into an [`Incoming`] (which hashes as the bytes land) and
//! returns the sender's MD5 for the final check. Memory stays at one chunk.

use std::fs::File;
use std::io::{Read, Write};

use md5::{Digest, Md5};

use crate::folder::Incoming;
use crate::proto::{
    CHUNK, DATA_HEADROOM, Frame, Response, decode, hex, read_frame, write_data_in_place, write_msg,
};
use crate::{Context, Result, bail};

/// Send `size` bytes of `file` as data frames followed by `Done{md5}`.
/// Returns the MD5 of what was sent.
pub fn send_file(
    w: &mut impl Write,
    mut file: File,
    size: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<[u8; 16]> {
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; DATA_HEADROOM + CHUNK];
    let mut sent = 0u64;
    while sent < size {
        let want = CHUNK.min((size - sent) as usize);
        let n = match file.read(&mut buf[DATA_HEADROOM..DATA_HEADROOM + want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let message = format!("reading the file failed: {e}");
                write_msg(
                    w,
                    &Response::Error {
                        message: message.clone(),
                    },
                )?;
                bail!("{message}");
            }
        };
        md5.update(&buf[DATA_HEADROOM..DATA_HEADROOM + n]);
        write_data_in_place(w, &mut buf[..DATA_HEADROOM + n]).context("sending file data")?;
        sent += n as u64;
        progress(sent);
    }
    let digest: [u8; 16] = md5.finalize().into();
    write_msg(w, &Response::Done { md5: hex(&digest) })?;
    w.flush().context("sending file data")?;
    Ok(digest)
}

/// Receive data frames into `incoming` until `Done{md5}`; returns that MD5.
pub fn receive_file(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
    incoming: &mut Incoming,
    progress: &mut dyn FnMut(u64),
) -> Result<String> {
    loop {
        match read_frame(r, buf)? {
            Some(Frame::Data(d)) => {
                incoming.write(d)?;
                progress(incoming.written());
            }
            Some(Frame::Msg(m)) => match decode::<Response>(m)? {
                Response::Done { md5 } => return Ok(md5),
                Response::Error { message } => bail!("{message}"),
                other => bail!("unexpected message during a transfer: {other:?}"),
            },
            None => bail!(
                "the connection closed after {} of {} bytes of {}",
                incoming.written(),
                incoming.meta().size,
                incoming.meta().name
            ),
        }
    }
}
