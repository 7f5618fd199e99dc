//! Signals: Ctrl-C while a command runs cancels that command (the cancel
//! flag that transfers check), Ctrl-C while idle or SIGTERM asks the process
//! to shut down cleanly (a message on the returned channel). SIGXFSZ is
//! ignored, so a write past a file-size limit fails with an error that the
//! transfer reports (like a full disk) instead of killing the process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use crossbeam_channel::Receiver;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use crate::Result;

pub struct SignalWatch {
    /// Set while a command runs: Ctrl-C then cancels it instead of quitting.
    pub busy: Arc<AtomicBool>,
    /// Set by Ctrl-C during a command.
    pub cancel: Arc<AtomicBool>,
    /// Receives once when the process should shut down.
    pub shutdown: Receiver<i32>,
    handle: Handle,
    thread: Option<thread::JoinHandle<()>>,
}

impl SignalWatch {
    pub fn install() -> Result<SignalWatch> {
        // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        }
        let busy = Arc::new(AtomicBool::new(false));
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let handle = signals.handle();
        let (b, c) = (busy.clone(), cancel.clone());
        let thread = thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if sig == SIGINT && b.load(Ordering::SeqCst) {
                        c.store(true, Ordering::SeqCst);
                    } else {
                        let _ = tx.try_send(if sig == SIGINT { 130 } else { 0 });
                    }
                }
            })?;
        Ok(SignalWatch {
            busy,
            cancel,
            shutdown: rx,
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for SignalWatch {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
