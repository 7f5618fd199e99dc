//! Who a peer is, from standard parts: a static X25519 key pair per peer
//! and the id that is its fingerprint ([`keys`]). The handshake that will
//! prove a key on every connection is the Noise protocol
//! `Noise_XXpsk0_25519_AESGCM_SHA256` through the `snow` crate with its
//! `ring` backend: one handshake authenticates both sides by their keys
//! and yields the AES-GCM keys of the session, with no certificates to
//! make or pin. This module imports nothing of the client, the server or
//! the folder, so they can all build on it.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;

pub mod channel;
pub mod handshake;
pub mod keys;
pub mod known_peers;
pub mod secret;
pub mod sign;
pub mod udp;

pub use channel::{SecureReader, SecureWriter, SessionKeys};
pub use handshake::{Credentials, Session};
pub use keys::{Keypair, PeerId};
pub use known_peers::KnownPeers;

/// The halves of a hand-made connection, past the handshake: the other
/// side's proven id, the reader and the writer.
pub type RawConnection = (PeerId, SecureReader<TcpStream>, SecureWriter<TcpStream>);

/// Run the client's handshake on a connected socket. For tools and tests
/// that speak the protocol by hand (a fake peer, a hostile client).
pub fn connect_raw(stream: TcpStream, creds: &Credentials) -> crate::Result<RawConnection> {
    raw(stream, |r, mut w| {
        handshake::initiate(r, &mut w, creds, &|_| Ok(()))
    })
}

/// [`connect_raw`] as the server.
pub fn accept_raw(stream: TcpStream, creds: &Credentials) -> crate::Result<RawConnection> {
    raw(stream, |r, mut w| {
        handshake::respond(r, &mut w, creds, &|_| Ok(()))
    })
}

/// The halves of `stream` after the handshake `open` runs on it.
fn raw(
    stream: TcpStream,
    open: impl FnOnce(&mut TcpStream, &TcpStream) -> crate::Result<Session>,
) -> crate::Result<RawConnection> {
    let mut r = stream.try_clone()?;
    let s = open(&mut r, &stream)?;
    Ok((
        s.peer,
        SecureReader::new(r, s.keys.clone(), s.next_nonce, 64 << 10),
        SecureWriter::new(stream, s.keys, s.next_nonce),
    ))
}

/// Both ends of one session made in this process (a whole handshake
/// between two new identities over a socket pair): the client's keys, the
/// server's, and the record number both start at. For benchmarks of the
/// channel (`examples/seal_cost.rs`) and for tests.
pub fn session_in_memory() -> crate::Result<(SessionKeys, SessionKeys, u64)> {
    let (a, b) = std::os::unix::net::UnixStream::pair()?;
    let client = Credentials::open(Keypair::generate()?);
    let server = Credentials::open(Keypair::generate()?);
    let responder =
        std::thread::spawn(move || handshake::respond(&mut &b, &mut &b, &server, &|_| Ok(())));
    let c = handshake::initiate(&mut &a, &mut &a, &client, &|_| Ok(()))?;
    let s = responder
        .join()
        .map_err(|_| crate::Error::new("the handshake's server side panicked"))??;
    Ok((c.keys, s.keys, c.next_nonce))
}

/// Replace `path` with `text` at once (a temporary file beside it, mode
/// 0600, flushed to the disk, renamed over it); `what` names the file in
/// errors.
pub fn replace_private_file(path: &Path, text: &str, what: &str) -> crate::Result<()> {
    use crate::Context;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let context = || format!("writing {what} {}", path.display());
    std::fs::create_dir_all(dir).context(context())?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".dbsh-new.")
        .tempfile_in(dir)
        .context(context())?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .context(context())?;
    tmp.persist(path).map_err(|e| e.error).context(context())?;
    Ok(())
}

/// The Noise protocol every connection speaks.
pub const NOISE: &str = "Noise_XXpsk0_25519_AESGCM_SHA256";

/// [`NOISE`], parsed.
pub fn noise_params() -> snow::params::NoiseParams {
    // A constant known to parse (a unit test says so).
    NOISE
        .parse()
        .unwrap_or_else(|_| unreachable!("{NOISE} parses"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_parses_and_this_build_has_every_primitive_it_names() {
        let p: snow::params::NoiseParams = NOISE.parse().unwrap();
        let a = Keypair::generate().unwrap();
        let b = Keypair::generate().unwrap();
        // A whole handshake in memory: fails if a resolver is missing.
        let psk = [0u8; 32];
        let mut i = snow::Builder::new(p.clone())
            .local_private_key(a.private())
            .unwrap()
            .psk(0, &psk)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut r = snow::Builder::new(p)
            .local_private_key(b.private())
            .unwrap()
            .psk(0, &psk)
            .unwrap()
            .build_responder()
            .unwrap();
        let (mut m, mut out) = (vec![0u8; 1024], vec![0u8; 1024]);
        let n = i.write_message(&[], &mut m).unwrap();
        r.read_message(&m[..n], &mut out).unwrap();
        let n = r.write_message(&[], &mut m).unwrap();
        i.read_message(&m[..n], &mut out).unwrap();
        let n = i.write_message(&[], &mut m).unwrap();
        r.read_message(&m[..n], &mut out).unwrap();
        assert_eq!(r.get_remote_static().unwrap(), a.public());
        assert_eq!(i.get_remote_static().unwrap(), b.public());
    }
}
