//! One error type for the whole peer: a clear sentence, with the context
//! (path, peer, command) wrapped around the cause as it travels up.
//!
//! Errors are shown to a person once, at the top (shell line, JSON `error`
//! key or stderr), so they carry text rather than a deep enum.

use std::fmt;

/// An error with a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
    cancelled: bool,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            cancelled: false,
        }
    }

    /// The user pressed Ctrl-C while the command ran.
    pub fn cancelled() -> Self {
        Error {
            message: "cancelled".into(),
            cancelled: true,
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled
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
        if e.get_ref().is_some_and(|inner| inner.is::<Cancelled>()) {
            return Error::cancelled();
        }
        Error::new(e.to_string())
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
            if e.cancelled {
                e
            } else {
                Error::new(format!("{what}: {}", e.message))
            }
        })
    }
}

/// Return early with a formatted [`Error`].
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::Error::new(format!($($arg)*)))
    };
}
