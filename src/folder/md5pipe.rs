//! MD5 on other cores. The thread that moves a file's bytes (socket to
//! disk, or disk to socket) fills a buffer, writes it out, and hands it to
//! a long-lived hashing thread (no copy, no thread per file), so moving and
//! hashing overlap. Buffers come back through a small per-file pool, which
//! also bounds how far the mover runs ahead; spare buffers are kept between
//! files, since fresh large buffers cost a page fault per 4 KiB. Files
//! under 8 MiB are hashed inline, while their bytes are still in this
//! core's cache: for them the hand-over costs more than the overlap gains,
//! and many small files use all cores by moving on several connections
//! at once (sync pulls), each hashing its own.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::thread;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use md5::{Digest, Md5};

use crate::{Error, Result};

/// Files smaller than this are hashed on the calling thread.
const THREAD_THRESHOLD: u64 = 8 << 20;
/// Buffers one file may have in flight to its hashing thread.
const POOL: usize = 8;
const SPARE_MAX: usize = 32;

static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn spare_buffer() -> Option<Vec<u8>> {
    SPARE.lock().ok()?.pop()
}

fn keep_buffers(bufs: impl IntoIterator<Item = Vec<u8>>) {
    if let Ok(mut spare) = SPARE.lock() {
        for b in bufs {
            if spare.len() < SPARE_MAX {
                spare.push(b);
            }
        }
    }
}

enum Job {
    Start(u64),
    Data(u64, Vec<u8>, usize, Sender<Vec<u8>>),
    Finish(u64, Sender<[u8; 16]>),
}

/// The hashing threads (one per core), started on first use.
fn workers() -> Option<&'static [Sender<Job>]> {
    static WORKERS: OnceLock<Vec<Sender<Job>>> = OnceLock::new();
    let w = WORKERS.get_or_init(|| {
        let n = thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        (0..n)
            .filter_map(|i| {
                let (tx, rx) = unbounded::<Job>();
                thread::Builder::new()
                    .name(format!("md5-{i}"))
                    .spawn(move || {
                        let mut open: HashMap<u64, Md5> = HashMap::new();
                        for job in rx {
                            match job {
                                Job::Start(id) => {
                                    open.insert(id, Md5::new());
                                }
                                Job::Data(id, buf, used, back) => {
                                    if let Some(h) = open.get_mut(&id) {
                                        h.update(&buf[..used]);
                                    }
                                    let _ = back.try_send(buf);
                                }
                                Job::Finish(id, reply) => {
                                    if let Some(h) = open.remove(&id) {
                                        let _ = reply.send(h.finalize().into());
                                    }
                                }
                            }
                        }
                    })
                    .ok()
                    .map(|_| tx)
            })
            .collect()
    });
    (!w.is_empty()).then_some(w.as_slice())
}

pub struct Md5Pipe {
    inner: Inner,
}

enum Inner {
    Inline(Md5, Option<Vec<u8>>),
    Pooled {
        id: u64,
        worker: Sender<Job>,
        back_tx: Sender<Vec<u8>>,
        back: Receiver<Vec<u8>>,
        /// Buffers handed to the worker and not yet back: at most `POOL`,
        /// whoever allocated them, so memory stays bounded.
        in_flight: usize,
        local: Vec<Vec<u8>>,
    },
}

impl Md5Pipe {
    /// A hasher for about `size` bytes.
    pub fn new(size: u64) -> Md5Pipe {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let inline = Md5Pipe {
            inner: Inner::Inline(Md5::new(), None),
        };
        if size < THREAD_THRESHOLD {
            return inline;
        }
        let Some(ws) = workers() else { return inline };
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let worker = ws[(id % ws.len() as u64) as usize].clone();
        if worker.send(Job::Start(id)).is_err() {
            return inline;
        }
        let (back_tx, back) = bounded(POOL);
        Md5Pipe {
            inner: Inner::Pooled {
                id,
                worker,
                back_tx,
                back,
                in_flight: 0,
                local: Vec::new(),
            },
        }
    }

    /// A buffer of at least `len` bytes to fill, recycled when possible (not
    /// cleared); give it back with [`Md5Pipe::consume`].
    pub fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut buf = match &mut self.inner {
            Inner::Inline(_, spare) => spare.take().or_else(spare_buffer).unwrap_or_default(),
            Inner::Pooled {
                back,
                in_flight,
                local,
                ..
            } => match local.pop() {
                Some(b) => b,
                None => match back.try_recv() {
                    Ok(b) => {
                        *in_flight -= 1;
                        b
                    }
                    Err(_) => spare_buffer().unwrap_or_else(|| Vec::with_capacity(len)),
                },
            },
        };
        if buf.len() < len {
            buf.resize(len, 0);
        }
        buf
    }

    /// Hash the first `used` bytes of `buf`; the buffer goes to the hashing
    /// thread and comes back to the pool. Waits while `POOL` buffers of this
    /// file are still being hashed (the mover never runs far ahead).
    pub fn consume(&mut self, buf: Vec<u8>, used: usize) {
        match &mut self.inner {
            Inner::Inline(h, spare) => {
                h.update(&buf[..used]);
                *spare = Some(buf);
            }
            Inner::Pooled {
                id,
                worker,
                back_tx,
                back,
                in_flight,
                local,
            } => {
                while *in_flight >= POOL {
                    match back.recv() {
                        Ok(b) => {
                            *in_flight -= 1;
                            if local.len() < POOL {
                                local.push(b);
                            }
                        }
                        Err(_) => break,
                    }
                }
                if worker
                    .send(Job::Data(*id, buf, used, back_tx.clone()))
                    .is_ok()
                {
                    *in_flight += 1;
                }
            }
        }
    }

    /// Buffers handed to a hashing thread and not yet back.
    pub fn in_flight(&self) -> usize {
        match &self.inner {
            Inner::Inline(..) => 0,
            Inner::Pooled { in_flight, .. } => *in_flight,
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
    pub fn finish(mut self) -> Result<[u8; 16]> {
        let inner = std::mem::replace(&mut self.inner, Inner::Inline(Md5::new(), None));
        match inner {
            Inner::Inline(h, spare) => {
                keep_buffers(spare);
                Ok(h.finalize().into())
            }
            Inner::Pooled {
                id,
                ref worker,
                ref back,
                local,
                ..
            } => {
                let (tx, rx) = bounded(1);
                worker
                    .send(Job::Finish(id, tx))
                    .map_err(|_| Error::new("the hashing thread is gone"))?;
                let digest = rx
                    .recv()
                    .map_err(|_| Error::new("the hashing thread failed"))?;
                keep_buffers(local.into_iter().chain(back.try_iter()));
                Ok(digest)
            }
        }
    }
}

impl Drop for Md5Pipe {
    fn drop(&mut self) {
        // An abandoned transfer: let the worker forget its state.
        if let Inner::Pooled { id, worker, .. } = &self.inner {
            let (tx, _rx) = bounded(1);
            let _ = worker.send(Job::Finish(*id, tx));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_and_inline_agree() {
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

    #[test]
    fn memory_stays_bounded_whoever_allocates_the_buffers() {
        // The UDP receiver hands over buffers it allocated itself: the pipe
        // must still never hold more than POOL of them.
        let mut p = Md5Pipe::new(1 << 30);
        let mut h = Md5::new();
        for i in 0..2000u32 {
            let chunk = vec![(i % 251) as u8; 64 << 10];
            h.update(&chunk);
            p.consume(chunk, 64 << 10);
            assert!(p.in_flight() <= POOL, "{} buffers in flight", p.in_flight());
        }
        let want: [u8; 16] = h.finalize().into();
        assert_eq!(p.finish().unwrap(), want);
    }

    #[test]
    fn many_files_at_once_stay_apart() {
        let files: Vec<Vec<u8>> = (0..4u8)
            .map(|i| vec![i; THREAD_THRESHOLD as usize + 1000 * i as usize])
            .collect();
        let mut pipes: Vec<Md5Pipe> = files.iter().map(|f| Md5Pipe::new(f.len() as u64)).collect();
        for (p, f) in pipes.iter_mut().zip(&files) {
            for chunk in f.chunks(70_000) {
                p.update(chunk);
            }
        }
        for (p, f) in pipes.into_iter().zip(&files) {
            let want: [u8; 16] = Md5::digest(f).into();
            assert_eq!(p.finish().unwrap(), want);
        }
    }
}
