//! MD5 on a second core. The thread that moves a file's bytes (socket to
//! disk, or disk to socket) fills a buffer from a small recycled pool,
//! writes it out, and hands it over to a hashing thread (no copy), so moving
//! and hashing overlap and memory stays at a few chunks. Small files are
//! hashed inline.

use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender, bounded};
use md5::{Digest, Md5};

use crate::{Error, Result};

/// Files smaller than this are hashed on the calling thread.
const THREAD_THRESHOLD: u64 = 4 << 20;
const POOL: usize = 8;

pub struct Md5Pipe {
    inner: Inner,
}

enum Inner {
    Inline(Md5, Option<Vec<u8>>),
    Thread {
        tx: Sender<(Vec<u8>, usize)>,
        back: Receiver<Vec<u8>>,
        allocated: usize,
        handle: JoinHandle<Md5>,
    },
}

impl Md5Pipe {
    /// A hasher for about `size` bytes.
    pub fn new(size: u64) -> Md5Pipe {
        if size < THREAD_THRESHOLD {
            return Md5Pipe {
                inner: Inner::Inline(Md5::new(), None),
            };
        }
        let (tx, rx) = bounded::<(Vec<u8>, usize)>(POOL);
        let (back_tx, back) = bounded::<Vec<u8>>(POOL);
        let spawned = thread::Builder::new().name("md5".into()).spawn(move || {
            let mut h = Md5::new();
            for (buf, used) in rx {
                h.update(&buf[..used]);
                let _ = back_tx.try_send(buf);
            }
            h
        });
        match spawned {
            Ok(handle) => Md5Pipe {
                inner: Inner::Thread {
                    tx,
                    back,
                    allocated: 0,
                    handle,
                },
            },
            Err(_) => Md5Pipe {
                inner: Inner::Inline(Md5::new(), None),
            },
        }
    }

    /// A buffer of at least `len` bytes to fill, recycled when possible (not
    /// cleared); give it back with [`Md5Pipe::consume`].
    pub fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut buf = match &mut self.inner {
            Inner::Inline(_, spare) => spare.take().unwrap_or_default(),
            Inner::Thread {
                back, allocated, ..
            } => match back.try_recv() {
                Ok(b) => b,
                Err(_) if *allocated < POOL => {
                    *allocated += 1;
                    Vec::with_capacity(len)
                }
                Err(_) => back.recv().unwrap_or_default(),
            },
        };
        if buf.len() < len {
            buf.resize(len, 0);
        }
        buf
    }

    /// Hash the first `used` bytes of `buf`; the buffer goes to the hashing
    /// thread and comes back to the pool.
    pub fn consume(&mut self, buf: Vec<u8>, used: usize) {
        match &mut self.inner {
            Inner::Inline(h, spare) => {
                h.update(&buf[..used]);
                *spare = Some(buf);
            }
            Inner::Thread { tx, .. } => {
                let _ = tx.send((buf, used));
            }
        }
    }

    /// Hash a copy of `data`.
    pub fn update(&mut self, data: &[u8]) {
        if let Inner::Inline(h, _) = &mut self.inner {
            h.update(data);
            return;
        }
        let mut buf = self.buffer(data.len());
        buf[..data.len()].copy_from_slice(data);
        self.consume(buf, data.len());
    }

    /// The digest of everything fed in.
    pub fn finish(self) -> Result<[u8; 16]> {
        match self.inner {
            Inner::Inline(h, _) => Ok(h.finalize().into()),
            Inner::Thread { tx, handle, .. } => {
                drop(tx);
                let h = handle
                    .join()
                    .map_err(|_| Error::new("the hashing thread failed"))?;
                Ok(h.finalize().into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threaded_and_inline_agree() {
        let data: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 251) as u8).collect();
        let want: [u8; 16] = Md5::digest(&data).into();
        for size in [0, data.len() as u64] {
            let mut p = Md5Pipe::new(size);
            for chunk in data.chunks(100_003) {
                p.update(chunk);
            }
            assert_eq!(p.finish().unwrap(), want);
            let mut p = Md5Pipe::new(size);
            for chunk in data.chunks(65_536) {
                let mut buf = p.buffer(chunk.len());
                buf[..chunk.len()].copy_from_slice(chunk);
                p.consume(buf, chunk.len());
            }
            assert_eq!(p.finish().unwrap(), want);
        }
    }
}
