//! Why a UDP transfer ended badly, as a type: the machines report a
//! [`Failure`], the driver branches on it (a second attempt, a clearer
//! sentence for an unreachable port) and turns it into a [`crate::Error`]
//! of the matching [`ErrorKind`] only at its edge.

use std::fmt;
use std::time::Duration;

use crate::{Error, ErrorKind};

/// How a transfer (one attempt, or one sender session) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The receiver's requests got no answer for this long.
    NoAnswer(Duration),
    /// The sender went silent in the middle of the transfer.
    Silent(Duration),
    /// The receiver stopped acknowledging (seen by the sender).
    ReceiverSilent(Duration),
    /// The peer answered with an error: its message.
    Refused(String),
    /// The sender chose a datagram size the receiver never offered.
    UnofferedSize(u32),
    /// The file changed while it was sent.
    Changed,
    /// The sender could not read its file: the sentence it sent.
    Unreadable(String),
    /// Every attempt saw the file change.
    TooManyChanges { attempts: u32 },
    /// Every attempt ended with bytes whose MD5 did not match.
    Mismatch { attempts: u32 },
}

/// What a sender says when the file changed under it.
pub const CHANGED: &str = "the file changed while it was sent";

impl Failure {
    /// The kind of error this failure is for callers that branch.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Failure::NoAnswer(_) | Failure::Silent(_) | Failure::ReceiverSilent(_) => {
                ErrorKind::Timeout
            }
            Failure::Refused(_) => ErrorKind::Refused,
            Failure::UnofferedSize(_) | Failure::Mismatch { .. } => ErrorKind::Integrity,
            Failure::Changed | Failure::TooManyChanges { .. } => ErrorKind::Changed,
            Failure::Unreadable(_) => ErrorKind::Other,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |d: &Duration| d.as_secs_f64();
        match self {
            Failure::NoAnswer(d) => {
                write!(f, "the peer did not answer over UDP for {:.1} s", secs(d))
            }
            Failure::Silent(d) => write!(f, "the peer went silent over UDP for {:.1} s", secs(d)),
            Failure::ReceiverSilent(d) => {
                write!(f, "the receiver sent nothing for {:.1} s", secs(d))
            }
            Failure::Refused(m) => write!(f, "the peer refused: {m}"),
            Failure::UnofferedSize(p) => write!(
                f,
                "the sender chose a datagram size ({p}) that was not offered"
            ),
            Failure::Changed => f.write_str(CHANGED),
            Failure::Unreadable(m) => f.write_str(m),
            Failure::TooManyChanges { attempts } => {
                write!(f, "{CHANGED}, in each of {attempts} attempts")
            }
            Failure::Mismatch { attempts } => {
                write!(f, "the MD5 did not match after {attempts} attempts")
            }
        }
    }
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        Error::of(f.kind(), f.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_kind_and_its_sentence() {
        let s = Duration::from_secs(2);
        let cases = [
            (Failure::NoAnswer(s), ErrorKind::Timeout, "did not answer"),
            (Failure::Silent(s), ErrorKind::Timeout, "went silent"),
            (
                Failure::ReceiverSilent(s),
                ErrorKind::Timeout,
                "sent nothing for 2.0 s",
            ),
            (
                Failure::Refused("no such file".into()),
                ErrorKind::Refused,
                "the peer refused: no such file",
            ),
            (Failure::UnofferedSize(9), ErrorKind::Integrity, "(9)"),
            (Failure::Changed, ErrorKind::Changed, CHANGED),
            (
                Failure::TooManyChanges { attempts: 3 },
                ErrorKind::Changed,
                "in each of 3 attempts",
            ),
            (
                Failure::Mismatch { attempts: 3 },
                ErrorKind::Integrity,
                "did not match after 3 attempts",
            ),
        ];
        for (f, kind, text) in cases {
            let e = Error::from(f.clone());
            assert_eq!(e.kind(), kind, "{f:?}");
            assert!(e.message().contains(text), "{e}");
        }
    }
}
