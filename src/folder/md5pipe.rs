//! MD5 on a second core. The thread that moves a file's bytes (socket to
//! disk, or disk to socket) hands a copy of each chunk to a hashing thread
//! through a small pool of recycled buffers, so moving and hashing overlap
//! and memory stays at a few chunks. Small files are hashed inline.

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
    Inline(Md5),
    Thread {
        tx: Sender<Vec<u8>>,
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
                inner: Inner::Inline(Md5::new()),
            };
        }
        let (tx, rx) = bounded::<Vec<u8>>(POOL);
        let (back_tx, back) = bounded::<Vec<u8>>(POOL);
        let spawned = thread::Builder::new().name("md5".into()).spawn(move || {
            let mut h = Md5::new();
            for buf in rx {
                h.update(&buf);
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
                inner: Inner::Inline(Md5::new()),
            },
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match &mut self.inner {
            Inner::Inline(h) => h.update(data),
            Inner::Thread {
                tx,
                back,
                allocated,
                ..
            } => {
                let mut buf = match back.try_recv() {
                    Ok(b) => b,
                    Err(_) if *allocated < POOL => {
                        *allocated += 1;
                        Vec::with_capacity(data.len())
                    }
                    Err(_) => back.recv().unwrap_or_default(),
                };
                buf.clear();
                buf.extend_from_slice(data);
                let _ = tx.send(buf);
            }
        }
    }

    /// The digest of everything fed in.
    pub fn finish(self) -> Result<[u8; 16]> {
        match self.inner {
            Inner::Inline(h) => Ok(h.finalize().into()),
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
        }
    }
}
