//! The opening of every TCP connection: a preamble each way, then the
//! Noise `XXpsk0` handshake in three messages, then the server's verdict
//! as the first encrypted record.
//!
//! ```text
//! preamble (server first):  "DBSH" u32 version | u8 flags (bit 0: a group secret is set)
//! before the keys:          u8 type | u16 length | body   1 = a Noise message (<= 1 KiB)
//!                                                         2 = a refusal, 3 = busy (text <= 256 B)
//! client -> server:         preamble, message 1 (e, psk)
//! server -> client:         message 2 (e, ee, s, es)
//! client -> server:         message 3 (s, se): only once the client has
//!                           checked the server's id, so a refused server never
//!                           learns who asked
//! server -> client:         the verdict, sealed: "ok" or the refusal's reason
//! ```
//!
//! Both preambles are the Noise prologue, so neither side can be talked
//! into another version or out of the group secret. Each side learns the
//! other's id from the static key the handshake proved, never from a claim.
//! The first 8 bytes are the old hello: a peer of another version reads
//! the version and says so. A connection costs the server at most four
//! X25519 operations and a few KiB.

use std::io::{self, Read, Write};
use std::sync::Arc;

use super::channel::{self, SessionKeys};
use super::{Keypair, KnownPeers, PeerId, noise_params};
use crate::proto::{MAGIC, check_version};
use crate::{Error, ErrorKind, Result, bail};

/// The largest handshake record (Noise messages here are under 200 bytes).
pub const HANDSHAKE_RECORD: usize = 1024;
/// The longest refusal text a peer shows (it is the other side's word,
/// shown escaped, and only ever taken as a failure).
pub const REFUSAL_TEXT: usize = 256;

const NOISE_MESSAGE: u8 = 1;
const REFUSAL: u8 = 2;
const BUSY: u8 = 3;
const VERDICT_OK: &[u8] = b"ok";

/// What this peer proves, with which secret, and whom it talks to.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub keys: Keypair,
    /// The key the group secret gives the handshake; zero without one.
    pub psk: [u8; 32],
    pub has_secret: bool,
    /// The only ids served and connected to (`--allow`); empty: any.
    pub allow: Vec<PeerId>,
    /// The ids seen at each address, checked when this side connects.
    pub known: Option<Arc<KnownPeers>>,
}

impl Credentials {
    /// A peer with no group secret: it proves its key and encrypts.
    pub fn open(keys: Keypair) -> Credentials {
        Credentials {
            keys,
            psk: [0; 32],
            has_secret: false,
            allow: Vec::new(),
            known: None,
        }
    }

    /// With the group secret whose handshake key is `psk`.
    pub fn with_secret(self, psk: [u8; 32]) -> Credentials {
        Credentials {
            psk,
            has_secret: true,
            ..self
        }
    }

    /// As a client at `addr`: whether `id` may be talked to there (the
    /// `--allow` list and the id seen there before).
    pub fn vet_server(&self, addr: &str, id: &PeerId) -> Result<()> {
        match &self.known {
            Some(k) => k.check(addr, id),
            None => Ok(()),
        }
    }

    /// Whether `id` may be talked to (`--allow`).
    pub fn admits(&self, id: &PeerId) -> Result<()> {
        if self.allow.is_empty() || self.allow.contains(id) {
            return Ok(());
        }
        Err(auth_failed(format!("peer {id} is not in the --allow list")))
    }

    fn preamble(&self) -> [u8; 9] {
        preamble(self.has_secret)
    }
}

/// This side's preamble.
fn preamble(has_secret: bool) -> [u8; 9] {
    let mut b = [0u8; 9];
    b[..4].copy_from_slice(MAGIC);
    b[4..8].copy_from_slice(&crate::proto::VERSION.to_be_bytes());
    b[8] = u8::from(has_secret);
    b
}

/// A connection whose handshake is done.
pub struct Session {
    /// The other side's id, from the key it proved.
    pub peer: PeerId,
    /// The keys of both directions.
    pub keys: SessionKeys,
    /// The number of the first record after the verdict, both ways.
    pub next_nonce: u64,
}

pub(super) fn auth_failed(why: impl std::fmt::Display) -> Error {
    Error::of(ErrorKind::Refused, format!("authentication failed: {why}"))
}

fn io_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::of(
            ErrorKind::PeerGone,
            "the peer closed the connection during the handshake",
        ),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::of(
            ErrorKind::Timeout,
            "the peer stopped answering during the handshake",
        ),
        _ => Error::from(e),
    }
}

fn noise_failed(_: snow::Error) -> Error {
    Error::of(
        ErrorKind::Integrity,
        "the handshake failed (a message did not verify)",
    )
}

/// Read the other side's preamble: its flags, or a clear error when it
/// does not speak this protocol or this version.
fn read_preamble(r: &mut impl Read) -> Result<[u8; 9]> {
    let mut b = [0u8; 9];
    r.read_exact(&mut b[..8]).map_err(io_error)?;
    if &b[..4] != MAGIC {
        bail!(kind: Integrity, "the other side does not speak the dropbox-shell protocol");
    }
    check_version(u32::from_be_bytes([b[4], b[5], b[6], b[7]]))?;
    r.read_exact(&mut b[8..]).map_err(io_error)?;
    Ok(b)
}

fn record(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + body.len());
    out.push(kind);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A refusal or busy record with `text` cut to [`REFUSAL_TEXT`] bytes.
fn refusal(kind: u8, text: &str) -> Vec<u8> {
    let mut end = text.len().min(REFUSAL_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    record(kind, &text.as_bytes()[..end])
}

/// Read one handshake record: a Noise message, or the other side's
/// refusal as the error.
fn read_record(r: &mut impl Read) -> Result<Vec<u8>> {
    let mut head = [0u8; 3];
    r.read_exact(&mut head).map_err(io_error)?;
    let len = u16::from_be_bytes([head[1], head[2]]) as usize;
    if len > HANDSHAKE_RECORD {
        bail!(kind: Integrity, "the peer sent an oversized handshake message ({len} bytes)");
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).map_err(io_error)?;
    let text = || {
        let t = String::from_utf8_lossy(&body[..len.min(REFUSAL_TEXT)]);
        t.escape_debug().to_string()
    };
    match head[0] {
        NOISE_MESSAGE => Ok(body),
        REFUSAL => Err(auth_failed(text())),
        BUSY => Err(Error::of(ErrorKind::Busy, text())),
        other => bail!(kind: Integrity, "the peer sent a handshake record of unknown type {other}"),
    }
}

fn prologue(client: &[u8; 9], server: &[u8; 9]) -> Vec<u8> {
    let mut p = b"dropbox-shell v3".to_vec();
    p.extend_from_slice(client);
    p.extend_from_slice(server);
    p
}

fn builder<'a>(creds: &'a Credentials, prologue: &'a [u8]) -> Result<snow::Builder<'a>> {
    snow::Builder::new(noise_params())
        .local_private_key(creds.keys.private())
        .and_then(|b| b.psk(0, &creds.psk))
        .and_then(|b| b.prologue(prologue))
        .map_err(|e| Error::new(format!("cannot set up the handshake: {e}")))
}

/// The client's rule: with a group secret, never talk to a peer without
/// one (it is not of the group); nothing is sent to it.
fn client_rule(ours: bool, theirs: u8) -> Result<()> {
    if ours && theirs & 1 == 0 {
        return Err(auth_failed(
            "the peer serves without a group secret, so it is not of this group",
        ));
    }
    Ok(())
}

/// The server's rule: with a group secret, a client must say it has one
/// (and prove it in message 1).
const SECRET_REQUIRED: &str = "a group secret is required here (--secret-file)";

fn remote_id(hs: &snow::HandshakeState) -> Result<PeerId> {
    match hs.get_remote_static() {
        Some(k) => Ok(PeerId::of_key(k)),
        None => bail!(kind: Integrity, "the handshake ended without the peer's key"),
    }
}

fn transport(hs: snow::HandshakeState) -> Result<SessionKeys> {
    hs.into_stateless_transport_mode()
        .map(Arc::new)
        .map_err(noise_failed)
}

/// Open a connection as the client. `vet` sees the server's id before
/// this side proves its own and may refuse it (a changed or unlisted id).
pub fn initiate(
    r: &mut impl Read,
    w: &mut impl Write,
    creds: &Credentials,
    vet: &dyn Fn(&PeerId) -> Result<()>,
) -> Result<Session> {
    let theirs = read_preamble(r)?;
    client_rule(creds.has_secret, theirs[8])?;
    let ours = creds.preamble();
    let prologue = prologue(&ours, &theirs);
    let mut hs = builder(creds, &prologue)?
        .build_initiator()
        .map_err(noise_failed)?;
    let mut buf = vec![0u8; HANDSHAKE_RECORD];
    let n = hs.write_message(&[], &mut buf).map_err(noise_failed)?;
    let mut first = ours.to_vec();
    first.extend(record(NOISE_MESSAGE, &buf[..n]));
    w.write_all(&first)
        .and_then(|_| w.flush())
        .map_err(io_error)?;
    let reply = read_record(r)?;
    hs.read_message(&reply, &mut buf).map_err(noise_failed)?;
    let peer = remote_id(&hs)?;
    creds.admits(&peer)?;
    vet(&peer)?;
    let n = hs.write_message(&[], &mut buf).map_err(noise_failed)?;
    w.write_all(&record(NOISE_MESSAGE, &buf[..n]))
        .and_then(|_| w.flush())
        .map_err(io_error)?;
    let keys = transport(hs)?;
    let verdict = read_verdict(r, &keys)?;
    if verdict != VERDICT_OK {
        return Err(auth_failed(
            String::from_utf8_lossy(&verdict).escape_debug(),
        ));
    }
    Ok(Session {
        peer,
        keys,
        next_nonce: 1,
    })
}

/// The server's verdict: the first sealed record (number 0).
fn read_verdict(r: &mut impl Read, keys: &SessionKeys) -> Result<Vec<u8>> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).map_err(io_error)?;
    let len = u16::from_be_bytes(head) as usize;
    if !(channel::TAG..=channel::TAG + REFUSAL_TEXT).contains(&len) {
        bail!(kind: Integrity, "the peer's verdict is {len} bytes long");
    }
    let mut sealed = vec![0u8; len];
    r.read_exact(&mut sealed).map_err(io_error)?;
    let mut plain = vec![0u8; len];
    let n = channel::open_record(keys, &mut 0, &sealed, &mut plain).map_err(Error::from)?;
    plain.truncate(n);
    Ok(plain)
}

/// Accept a connection as the server. `vet` sees the client's proven id
/// and may refuse it (not allowed); the client is told why, sealed.
pub fn respond(
    r: &mut impl Read,
    w: &mut impl Write,
    creds: &Credentials,
    vet: &dyn Fn(&PeerId) -> Result<()>,
) -> Result<Session> {
    let ours = creds.preamble();
    w.write_all(&ours)
        .and_then(|_| w.flush())
        .map_err(io_error)?;
    let theirs = read_preamble(r)?;
    if creds.has_secret && theirs[8] & 1 == 0 {
        let _ = w
            .write_all(&refusal(REFUSAL, SECRET_REQUIRED))
            .and_then(|_| w.flush());
        return Err(auth_failed(SECRET_REQUIRED));
    }
    let prologue = prologue(&theirs, &ours);
    let mut hs = builder(creds, &prologue)?
        .build_responder()
        .map_err(noise_failed)?;
    let mut buf = vec![0u8; HANDSHAKE_RECORD];
    let first = read_record(r)?;
    if hs.read_message(&first, &mut buf).is_err() {
        // With psk0 a wrong secret shows here, before any DH work.
        let why = "the group secret does not match";
        let _ = w.write_all(&refusal(REFUSAL, why)).and_then(|_| w.flush());
        return Err(auth_failed(why));
    }
    let n = hs.write_message(&[], &mut buf).map_err(noise_failed)?;
    w.write_all(&record(NOISE_MESSAGE, &buf[..n]))
        .and_then(|_| w.flush())
        .map_err(io_error)?;
    let last = read_record(r)?;
    hs.read_message(&last, &mut buf).map_err(noise_failed)?;
    let peer = remote_id(&hs)?;
    let keys = transport(hs)?;
    let vetted = creds.admits(&peer).and_then(|()| vet(&peer));
    let verdict = match &vetted {
        Ok(()) => VERDICT_OK.to_vec(),
        Err(e) => refusal_text(e.message()),
    };
    let mut out = Vec::new();
    channel::seal_record(&keys, &mut 0, &verdict, &mut out).map_err(Error::from)?;
    w.write_all(&out)
        .and_then(|_| w.flush())
        .map_err(io_error)?;
    vetted?;
    Ok(Session {
        peer,
        keys,
        next_nonce: 1,
    })
}

/// A refusal's reason as the verdict: the text after "authentication
/// failed: ", never "ok", at most [`REFUSAL_TEXT`] bytes.
fn refusal_text(message: &str) -> Vec<u8> {
    let why = message
        .strip_prefix("authentication failed: ")
        .unwrap_or(message);
    let mut v = refusal(REFUSAL, why).split_off(3);
    if v == VERDICT_OK || v.is_empty() {
        v = b"refused".to_vec();
    }
    v
}

/// Tell a connection beyond the cap that the peer is busy: the preamble
/// and one plain record, no cryptography (a flood costs nothing).
pub fn busy_answer(has_secret: bool, text: &str) -> Vec<u8> {
    let mut out = preamble(has_secret).to_vec();
    out.extend(refusal(BUSY, text));
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::mpsc;

    /// An in-memory pipe: what the writer writes, the reader reads.
    pub(crate) struct PipeIn {
        rx: mpsc::Receiver<Vec<u8>>,
        pending: Vec<u8>,
    }

    pub(crate) struct PipeOut {
        tx: Option<mpsc::Sender<Vec<u8>>>,
        /// Everything written.
        pub sent: Vec<u8>,
    }

    pub(crate) fn pipe() -> (PipeOut, PipeIn) {
        let (tx, rx) = mpsc::channel();
        (
            PipeOut {
                tx: Some(tx),
                sent: Vec::new(),
            },
            PipeIn {
                rx,
                pending: Vec::new(),
            },
        )
    }

    impl Read for PipeIn {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pending.is_empty() {
                match self.rx.recv() {
                    Ok(v) => self.pending = v,
                    Err(_) => return Ok(0),
                }
            }
            let n = buf.len().min(self.pending.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            Ok(n)
        }
    }

    impl Write for PipeOut {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.sent.extend_from_slice(buf);
            if let Some(tx) = &self.tx {
                let _ = tx.send(buf.to_vec());
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A side's result and everything it sent.
    type Outcome = (Result<Session>, Vec<u8>);

    /// Run a client and a server handshake against each other.
    pub(crate) fn run(
        client: Credentials,
        server: Credentials,
        client_vet: impl Fn(&PeerId) -> Result<()>,
        server_vet: impl Fn(&PeerId) -> Result<()> + Send + 'static,
    ) -> (Outcome, Outcome) {
        let (mut c_out, mut s_in) = pipe();
        let (mut s_out, mut c_in) = pipe();
        let server = std::thread::spawn(move || {
            let got = respond(&mut s_in, &mut s_out, &server, &server_vet);
            (got, s_out.sent)
        });
        let got = initiate(&mut c_in, &mut c_out, &client, &client_vet);
        // The client hangs up: a server still waiting reads the end.
        c_out.tx = None;
        ((got, c_out.sent), server.join().unwrap())
    }

    fn creds() -> Credentials {
        Credentials::open(Keypair::generate().unwrap())
    }

    /// The two directions' keys of one fresh session, client side first.
    pub(crate) fn session_pair() -> (SessionKeys, SessionKeys) {
        let (c, s, _) = crate::secure::session_in_memory().unwrap();
        (c, s)
    }

    #[test]
    fn each_side_learns_the_others_id_from_its_key() {
        let (a, b) = (creds(), creds());
        let (ida, idb) = (a.keys.id(), b.keys.id());
        let ((c, _), (s, _)) = run(a, b, |_| Ok(()), |_| Ok(()));
        let (c, s) = (c.unwrap(), s.unwrap());
        assert_eq!(c.peer, idb);
        assert_eq!(s.peer, ida);
        // The session works both ways from the first record after the verdict.
        let mut out = Vec::new();
        let mut n = c.next_nonce;
        channel::seal_record(&c.keys, &mut n, b"hi", &mut out).unwrap();
        let mut plain = vec![0u8; out.len()];
        let k = channel::open_record(&s.keys, &mut 1, &out[2..], &mut plain).unwrap();
        assert_eq!(&plain[..k], b"hi");
    }

    #[test]
    fn a_client_that_refuses_the_server_never_sends_its_key() {
        let a = creds();
        let a_pub = *a.keys.public();
        let ((c, client_sent), (s, _)) = run(
            a,
            creds(),
            |id| Err(auth_failed(format!("{} is not allowed", id.short()))),
            |_| Ok(()),
        );
        assert!(c.err().unwrap().message().contains("is not allowed"));
        assert!(s.is_err());
        // Only the preamble and message 1 went out: no message 3 (which
        // carries the client's static key, encrypted).
        assert_eq!(client_sent.len(), 9 + 3 + 48);
        assert!(!client_sent.windows(32).any(|w| w == a_pub));
    }

    #[test]
    fn a_server_that_refuses_the_client_says_why_sealed() {
        let ((c, _), (s, server_sent)) = run(
            creds(),
            creds(),
            |_| Ok(()),
            |_| Err(auth_failed("peer ABCDEFG is not in --allow")),
        );
        let e = c.err().unwrap();
        assert_eq!(
            e.message(),
            "authentication failed: peer ABCDEFG is not in --allow"
        );
        assert!(s.is_err());
        assert!(!server_sent.windows(7).any(|w| w == b"ABCDEFG"));
    }

    fn member(secret: u8) -> Credentials {
        creds().with_secret([secret; 32])
    }

    #[test]
    fn only_the_same_group_secret_opens_a_connection_both_ways() {
        let ok = |_: &PeerId| Ok(());
        let ((c, _), (s, _)) = run(member(1), member(1), ok, ok);
        assert!(c.is_ok() && s.is_ok());
        // A wrong secret: refused at message 1, before the server shows
        // its key (message 2 never went out).
        let ((c, _), (s, server_sent)) = run(member(2), member(1), ok, ok);
        let (c, s) = (c.err().unwrap(), s.err().unwrap());
        assert_eq!(
            c.message(),
            "authentication failed: the group secret does not match"
        );
        assert_eq!(s.message(), c.message());
        assert_eq!(
            server_sent.len(),
            9 + 3 + "the group secret does not match".len()
        );
        // No secret against a server with one.
        let ((c, _), (s, _)) = run(creds(), member(1), ok, ok);
        assert!(
            c.err()
                .unwrap()
                .message()
                .contains("a group secret is required here")
        );
        assert!(s.is_err());
        // A secret against a server without one: the client sends nothing.
        let ((c, client_sent), (s, _)) = run(member(1), creds(), ok, ok);
        assert!(c.err().unwrap().message().contains("not of this group"));
        assert!(client_sent.is_empty());
        assert!(s.is_err());
    }

    #[test]
    fn allow_narrows_whom_each_side_talks_to() {
        let ok = |_: &PeerId| Ok(());
        let (a, b) = (creds(), creds());
        let mut server = b.clone();
        server.allow = vec![creds().keys.id()];
        let ((c, _), (s, _)) = run(a.clone(), server.clone(), ok, ok);
        assert!(
            c.err()
                .unwrap()
                .message()
                .contains("not in the --allow list")
        );
        assert!(s.is_err());
        server.allow.push(a.keys.id());
        let ((c, _), _) = run(a.clone(), server, ok, ok);
        assert!(c.is_ok());
        // As a client: refused before message 3.
        let mut client = a;
        client.allow = vec![creds().keys.id()];
        let ((c, client_sent), _) = run(client, b, ok, ok);
        assert!(
            c.err()
                .unwrap()
                .message()
                .contains("not in the --allow list")
        );
        assert_eq!(client_sent.len(), 9 + 3 + 48);
    }

    #[test]
    fn another_version_or_protocol_is_a_clear_error() {
        let mut old = MAGIC.to_vec();
        old.extend(2u32.to_be_bytes());
        let e = read_preamble(&mut &old[..]).err().unwrap();
        assert!(e.message().contains("protocol version 2"), "{e}");
        let e = read_preamble(&mut &b"HTTP/1.1 200"[..]).err().unwrap();
        assert!(e.message().contains("does not speak"), "{e}");
    }

    #[test]
    fn records_are_bounded_and_refusals_are_failures() {
        let mut huge = vec![NOISE_MESSAGE];
        huge.extend(65535u16.to_be_bytes());
        let e = read_record(&mut &huge[..]).err().unwrap();
        assert!(e.message().contains("oversized"), "{e}");
        let r = refusal(REFUSAL, &"é".repeat(300));
        assert!(r.len() <= 3 + REFUSAL_TEXT);
        let e = read_record(&mut &r[..]).err().unwrap();
        assert!(e.message().starts_with("authentication failed: é"));
        let b = busy_answer(false, "the peer is busy");
        let mut r = &b[..];
        read_preamble(&mut r).unwrap();
        assert_eq!(read_record(&mut r).err().unwrap().kind(), ErrorKind::Busy);
        let e = read_record(&mut &[9u8, 0, 0][..]).err().unwrap();
        assert!(e.message().contains("unknown type 9"));
        // A verdict can never read as "ok" unless it is.
        assert_eq!(refusal_text("authentication failed: ok"), b"refused");
    }
}
