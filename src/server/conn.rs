//! One served connection, on any buffered reader and writer: the
//! handshake, then one request after another until the client hangs up,
//! sends something that is not a request, or the server stops. Each
//! request is answered by [`super::handlers`]; a failure is answered with
//! an `Error` and the connection goes on, and every request is logged and
//! told once ([`super::record_served`]). Byte slices in, a `Vec` out: the
//! tests drive it without a socket.

use std::sync::atomic::{AtomicBool, Ordering};

use super::ServerContext;
use super::handlers::describe;
use crate::Result;
use crate::proto::{
    Request, Response, VERSION, decode, read_frame, read_hello, write_hello, write_msg,
};
use crate::stream::{BulkRead, FileOut};

/// What a connection reads from: buffered, with bulk reads for file bytes,
/// and told when a new message starts (a socket's deadline starts over).
pub trait Input: BulkRead {
    /// The next message starts now.
    fn next_message(&mut self) {}
}

impl Input for &[u8] {}

/// One client's connection and what serving it uses.
pub struct Connection<'a, R, W> {
    pub(super) ctx: &'a ServerContext,
    /// The client's address, for the log and sync exchanges.
    pub(super) peer: &'a str,
    pub(super) r: R,
    pub(super) w: W,
    /// The frame being read.
    pub(super) buf: Vec<u8>,
}

impl<'a, R: Input, W: FileOut> Connection<'a, R, W> {
    pub fn new(ctx: &'a ServerContext, peer: &'a str, r: R, w: W) -> Self {
        Connection {
            ctx,
            peer,
            r,
            w,
            buf: Vec::new(),
        }
    }

    /// What was written to the client.
    pub fn into_output(self) -> W {
        self.w
    }

    /// Exchange handshakes, then serve requests (a client speaking another
    /// version is closed at once: it reads ours and says so itself).
    pub fn serve(&mut self, stop: &AtomicBool) {
        if write_hello(&mut self.w).is_err() {
            return;
        }
        if let Ok(VERSION) = read_hello(&mut self.r) {
            self.serve_requests(stop);
        }
    }

    /// Serve requests until the stream ends, breaks, or `stop` is set.
    pub fn serve_requests(&mut self, stop: &AtomicBool) {
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
        let (outcome, bytes) = match self.handle(req) {
            Ok(bytes) => ("ok".to_string(), bytes),
            Err(e) => {
                let _ = self.send_error(&e);
                (format!("error: {e}"), 0)
            }
        };
        let flushed = self.w.flush().is_ok();
        self.ctx.served(self.peer, &what, &outcome, bytes);
        flushed
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
