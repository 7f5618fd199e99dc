//! One served connection, on any buffered reader and writer (the
//! handshake is done): one request after another until the client hangs up,
//! sends something that is not a request, or the server stops. Each
//! request is answered by [`super::handlers`]; a failure is answered with
//! an `Error` and the connection goes on, and every request is logged and
//! told once ([`super::record_served`]), except files pulled in a batch
//! (sync): past the first 100 of a connection they are counted into one
//! line per 10,000. Answers go out when no further request is already read
//! in, so pipelined requests cost one send, not one each. Byte slices in,
//! a `Vec` out: the tests drive it without a socket.

use std::sync::atomic::{AtomicBool, Ordering};

use super::ServerContext;
use super::handlers::describe;
use crate::Result;
use crate::limits::LOGGED_EACH;
use crate::proto::{Request, Response, decode, read_frame, write_msg};
use crate::stream::BulkRead;

/// What a connection reads from: buffered, with bulk reads for file bytes,
/// and told when a new message starts (a socket's deadline starts over).
pub trait Input: BulkRead {
    /// The next message starts now.
    fn next_message(&mut self) {}
    /// Whether more of the client's bytes are already read in (another
    /// request to answer before the answers need to go out).
    fn has_buffered(&self) -> bool {
        false
    }
}

impl Input for &[u8] {
    fn has_buffered(&self) -> bool {
        !self.is_empty()
    }
}

/// Files served in a batch that make one line of the log, beyond the
/// first [`LOGGED_EACH`] of a connection.
const BATCH_LOG: usize = 10_000;

/// One client's connection and what serving it uses.
pub struct Connection<'a, R, W> {
    pub(super) ctx: &'a ServerContext,
    /// The client's address, for the log and sync exchanges.
    pub(super) peer: &'a str,
    /// The client's id as its key proved it (none in tests without a
    /// handshake): a sync offer that claims another is refused.
    pub(super) proven: Option<String>,
    pub(super) r: R,
    pub(super) w: W,
    /// The frame being read.
    pub(super) buf: Vec<u8>,
    /// Files served in batches (sync pulls) and not yet logged: how many,
    /// and their bytes.
    batched: (usize, u64),
    /// Files of batches served so far.
    batch_lines: usize,
    /// UDP tickets issued on this connection.
    pub(super) tickets: usize,
}

impl<'a, R: Input, W: std::io::Write> Connection<'a, R, W> {
    pub fn new(ctx: &'a ServerContext, peer: &'a str, r: R, w: W) -> Self {
        Connection {
            ctx,
            peer,
            proven: None,
            r,
            w,
            buf: Vec::new(),
            batched: (0, 0),
            batch_lines: 0,
            tickets: 0,
        }
    }

    /// The client proved it is `id` in the handshake.
    pub fn proven(mut self, id: String) -> Self {
        self.proven = Some(id);
        self
    }

    /// What was written to the client.
    pub fn into_output(self) -> W {
        self.w
    }

    /// Serve requests until the stream ends, breaks, or `stop` is set.
    pub fn serve_requests(&mut self, stop: &AtomicBool) {
        self.serve_until_done(stop);
        self.log_batched();
    }

    fn serve_until_done(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            self.r.next_message();
            let req = match read_frame(&mut self.r, &mut self.buf) {
                Ok(Some(m)) => decode::<Request>(m),
                // The end, a truncated or oversized frame: nothing to answer.
                _ => return,
            };
            let req = match req {
                Ok(req) => req,
                Err(e) => {
                    // Not a request we know: say why, then close.
                    let _ = self.send_error(&e);
                    let _ = self.w.flush();
                    return;
                }
            };
            if !self.answer(req) {
                return;
            }
        }
    }

    /// Answer one request, then log it; false when the client can no
    /// longer be written to.
    fn answer(&mut self, req: Request) -> bool {
        let what = describe(&req);
        // The first files of a connection's batch get a line each, so a
        // small sync reads like the downloads it is; the rest are counted.
        let in_batch = matches!(req, Request::Download { batch: true, .. });
        // A ticket is part of a UDP download, whose own line says how it went.
        let quiet = matches!(req, Request::UdpTicket);
        let counted = in_batch && self.batch_lines >= LOGGED_EACH;
        self.batch_lines += usize::from(in_batch);
        let (outcome, bytes) = match self.handle(req) {
            Ok(bytes) if counted => {
                self.batched.0 += 1;
                self.batched.1 += bytes;
                if self.batched.0 >= BATCH_LOG {
                    self.log_batched();
                }
                return self.flush_unless_more();
            }
            Ok(_) if quiet => return self.flush_unless_more(),
            Ok(bytes) => ("ok".to_string(), bytes),
            Err(e) => {
                let _ = self.send_error(&e);
                (format!("error: {e}"), 0)
            }
        };
        let flushed = self.flush_unless_more();
        self.ctx
            .served((self.peer, self.proven.as_deref()), &what, &outcome, bytes);
        flushed
    }

    /// Send what is written, unless another request is already read in
    /// (its answer goes out with this one); false when the client can no
    /// longer be written to.
    fn flush_unless_more(&mut self) -> bool {
        self.r.has_buffered() || self.w.flush().is_ok()
    }

    /// One line for the files served in a batch since the last one.
    fn log_batched(&mut self) {
        let (n, bytes) = std::mem::take(&mut self.batched);
        if n > 0 {
            let what = format!("download TCP, {n} files pulled in a batch");
            self.ctx
                .served((self.peer, self.proven.as_deref()), &what, "ok", bytes);
        }
    }

    fn send_error(&mut self, e: &crate::Error) -> Result<()> {
        write_msg(
            &mut self.w,
            &Response::Error {
                message: e.to_string(),
            },
        )
    }
}
