//! One error type for the whole peer: a clear sentence, with the context
//! (path, peer, command) wrapped around the cause as it travels up.
//!
//! Errors are shown to a person once, at the top (shell line, JSON `error`
//! key or stderr), so they carry text; an [`ErrorKind`] beside the text
//! says what kind of failure it is, for the code that must branch on it
//! (retry, give up, say "busy"), so nobody reads the text to decide.

use std::fmt;

/// The kinds of failure that callers tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such file (or peer, or deposit).
    NotFound,
    /// Not allowed: outside the folder, uploads off, a special file.
    Refused,
    /// The peer has no room now; later may work.
    Busy,
    /// Nothing came in time.
    Timeout,
    /// The peer is unreachable, hung up or closed the connection.
    PeerGone,
    /// Bytes did not match their MD5, or a message broke the protocol.
    Integrity,
    /// The file changed while it was read; another try may work.
    Changed,
    /// A command, name or argument that cannot be used.
    BadInput,
    /// The user pressed Ctrl-C (or the process is stopping).
    Cancelled,
    /// No room left on our disk (or over a quota): nothing more can be
    /// written until some is freed.
    NoSpace,
    /// Anything else (a local I/O failure, a full disk...).
    Other,
}

/// An error with a human-readable message and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
    kind: ErrorKind,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Error::of(ErrorKind::Other, message)
    }

    /// An error of a kind callers may branch on.
    pub fn of(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            kind,
        }
    }

    /// The user pressed Ctrl-C while the command ran.
    pub fn cancelled() -> Self {
        Error::of(ErrorKind::Cancelled, "cancelled")
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn is_cancelled(&self) -> bool {
        self.kind == ErrorKind::Cancelled
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The marker inside an `io::Error` that a read was cancelled by Ctrl-C.
/// (Not `ErrorKind::Interrupted`: `read_exact` and friends retry those.)
#[derive(Debug)]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cancelled")
    }
}

impl std::error::Error for Cancelled {}

/// An `io::Error` that says the operation was cancelled.
pub fn cancelled_io() -> std::io::Error {
    std::io::Error::other(Cancelled)
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        if e.get_ref().is_some_and(|inner| inner.is::<Cancelled>()) {
            return Error::cancelled();
        }
        let kind = match e.kind() {
            Io::NotFound => ErrorKind::NotFound,
            Io::PermissionDenied => ErrorKind::Refused,
            Io::TimedOut | Io::WouldBlock => ErrorKind::Timeout,
            Io::ConnectionRefused
            | Io::ConnectionReset
            | Io::ConnectionAborted
            | Io::BrokenPipe
            | Io::UnexpectedEof
            | Io::NotConnected => ErrorKind::PeerGone,
            Io::InvalidData => ErrorKind::Integrity,
            Io::StorageFull | Io::QuotaExceeded => ErrorKind::NoSpace,
            _ => ErrorKind::Other,
        };
        Error::of(kind, e.to_string())
    }
}

/// Wrap an error with what was being done: `reading a.txt: permission denied`.
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| {
            let e: Error = e.into();
            if e.is_cancelled() {
                e
            } else {
                Error::of(e.kind, format!("{what}: {}", e.message))
            }
        })
    }
}

/// Return early with a formatted [`Error`]; `bail!(kind: Busy, "...")`
/// gives it a kind.
#[macro_export]
macro_rules! bail {
    (kind: $kind:ident, $($arg:tt)*) => {
        return Err($crate::Error::of($crate::ErrorKind::$kind, format!($($arg)*)))
    };
    ($($arg:tt)*) => {
        return Err($crate::Error::new(format!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_survive_context_and_come_from_io_errors() {
        let gone: Result<()> =
            Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into());
        let e = gone.context("peer 1.2.3.4:9").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PeerGone);
        assert!(e.message().starts_with("peer 1.2.3.4:9: "));
        let busy = || -> Result<()> { crate::bail!(kind: Busy, "the peer is busy ({} slots)", 4) };
        assert_eq!(busy().unwrap_err().kind(), ErrorKind::Busy);
        assert_eq!(busy().unwrap_err().message(), "the peer is busy (4 slots)");
        assert!(Error::cancelled().is_cancelled());
        let stopped: Result<()> = Err(cancelled_io().into());
        assert!(stopped.context("x").unwrap_err().is_cancelled());
        let full: Result<()> = Err(std::io::Error::from_raw_os_error(libc::ENOSPC).into());
        assert_eq!(
            full.context("writing x").unwrap_err().kind(),
            ErrorKind::NoSpace
        );
    }
}
