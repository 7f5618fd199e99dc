//! The server without a socket: request frames written into a `Vec`,
//! served by a [`Connection`] over `&[u8]`, the answer frames read back (as
//! lsp-server tests its framing). Here the fixture, framing
//! and logging; each request type, good and malformed, in [`requests`].

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::conn::Connection;
use super::{ServerContext, ServerSettings, SyncAnswer};
use crate::Result;
use crate::events::{Event, Events};
use crate::folder::{Folder, md5_reader};
use crate::history::{Direction, History};
use crate::proto::{
    BATCH, FileMeta, Filter, HashEntry, Kind, MAX_FRAME, Mark, Request, Response, SyncEntry,
    batches, hex, read_frame, write_msg,
};
use crate::secure::{Credentials, Keypair};

const CLIENT: &str = "127.0.0.1:5555";

/// The sync side, played: answers with `ours` and notes every call.
#[derive(Default)]
struct Partner {
    ours: Vec<SyncEntry>,
    /// "hello <peer> <index>", "store <n>", "since <mark>", "exchanged <peer> <addr>".
    calls: Mutex<Vec<String>>,
    stored: Mutex<Vec<SyncEntry>>,
}

impl SyncAnswer for Partner {
    fn hello(&self, peer_id: &str, index_id: &str) -> Result<(String, Option<Mark>)> {
        self.note(format!("hello {peer_id} {index_id}"));
        let seen = Mark {
            index_id: "their-index".into(),
            seq: 7,
        };
        Ok(("our-index".into(), Some(seen)))
    }

    fn store(&self, _peer_id: &str, _index_id: &str, entries: &[SyncEntry]) -> Result<()> {
        self.note(format!("store {}", entries.len()));
        self.stored.lock().unwrap().extend_from_slice(entries);
        Ok(())
    }

    fn send_since(
        &self,
        _peer_id: &str,
        seen: Option<&Mark>,
        send: &mut dyn FnMut(&[SyncEntry], bool) -> Result<()>,
    ) -> Result<Option<u64>> {
        self.note(format!("since {seen:?}"));
        for (b, more) in batches(&self.ours) {
            send(b, more)?;
        }
        Ok(self.ours.last().map(|e| e.seq))
    }

    fn exchanged(&self, peer_id: &str, addr: &str, _sent_upto: Option<u64>) {
        self.note(format!("exchanged {peer_id} {addr}"));
    }
}

impl Partner {
    fn note(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

/// A served folder with its history, events and played sync side.
struct Fixture {
    dir: tempfile::TempDir,
    ctx: ServerContext,
    events: Events,
    partner: Arc<Partner>,
}

fn fixture_with(allow_upload: bool, ours: Vec<SyncEntry>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let folder = Folder::open(dir.path()).unwrap();
    let history = History::open(folder.state_dir()).unwrap();
    let events = Events::default();
    let partner = Arc::new(Partner {
        ours,
        ..Partner::default()
    });
    let ctx = ServerContext {
        folder: Arc::new(folder),
        history: Arc::new(history),
        events: events.sender(),
        settings: ServerSettings {
            listen: "127.0.0.1:0".into(),
            allow_upload,
            max_connections: 4,
            io_timeout: Duration::from_secs(5),
            udp_silence: Duration::from_secs(5),
        },
        peer_id: "our-id".into(),
        credentials: Credentials::open(Keypair::generate().unwrap()),
        sync: partner.clone(),
        tickets: Default::default(),
        store: None,
        zone: "test-zone".into(),
    };
    Fixture {
        dir,
        ctx,
        events,
        partner,
    }
}

fn fixture() -> Fixture {
    fixture_with(false, Vec::new())
}

impl Fixture {
    fn put(&self, name: &str, data: &[u8]) {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    /// Serve `input` (no handshake); the raw output.
    fn serve_raw(&self, input: &[u8]) -> Vec<u8> {
        let mut conn = Connection::new(&self.ctx, CLIENT, input, Vec::new());
        conn.serve_requests(&AtomicBool::new(false));
        conn.into_output()
    }

    /// Serve `input` (no handshake); the answers, and file bytes sent.
    fn serve(&self, input: &[u8]) -> (Vec<Response>, Vec<u8>) {
        answers(&self.serve_raw(input))
    }

    /// Serve one request; its answers.
    fn ask(&self, req: Request) -> Vec<Response> {
        self.serve(&frames(&[req])).0
    }

    /// The one error `req` is answered with.
    fn refusal(&self, req: Request) -> String {
        match &self.ask(req)[..] {
            [Response::Error { message }] => message.clone(),
            other => panic!("expected one error, got {other:?}"),
        }
    }

    fn events(&self) -> Vec<Event> {
        self.events.receiver().try_iter().collect()
    }
}

fn frames(reqs: &[Request]) -> Vec<u8> {
    let mut wire = Vec::new();
    for r in reqs {
        write_msg(&mut wire, r).unwrap();
    }
    wire
}

/// Decode a server's output: its messages, and the raw bytes that follow
/// each `File`, concatenated.
fn answers(mut out: &[u8]) -> (Vec<Response>, Vec<u8>) {
    let (mut msgs, mut bytes, mut buf) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(m) = read_frame(&mut out, &mut buf).unwrap() {
        let resp: Response = serde_json::from_slice(m).unwrap();
        if let Response::File { meta } = &resp {
            let (data, rest) = out.split_at(meta.size as usize);
            bytes.extend_from_slice(data);
            out = rest;
        }
        msgs.push(resp);
    }
    (msgs, bytes)
}

fn md5_of(data: &[u8]) -> String {
    hex(&md5_reader(data).unwrap())
}

fn names(resps: &[Response]) -> Vec<String> {
    let mut out = Vec::new();
    for r in resps {
        match r {
            Response::Entries { entries } => out.extend(entries.iter().map(|e| e.name.clone())),
            Response::Hashes { files } => out.extend(files.iter().map(|h| h.name.clone())),
            _ => {}
        }
    }
    out
}

fn assert_error(resps: &[Response], part: &str) {
    match resps {
        [Response::Error { message }] => assert!(message.contains(part), "{message}"),
        other => panic!("expected an error with {part:?}, got {other:?}"),
    }
}

mod requests;

#[test]
fn info_names_the_peer_and_is_logged_and_told_once() {
    let f = fixture();
    let got = f.ask(Request::Info);
    assert_eq!(
        got,
        vec![Response::Info {
            peer_id: "our-id".into(),
            allow_upload: false,
            zone: Some("test-zone".into()),
            store: None,
        }]
    );
    let log = f.ctx.history.last(10).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (
            log[0].direction,
            log[0].peer.as_str(),
            log[0].command.as_str()
        ),
        (Direction::Served, CLIENT, "info")
    );
    assert_eq!(log[0].outcome, "ok");
    let events = f.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].text, format!("served info to {CLIENT}: ok"));
}

#[test]
fn a_refused_request_is_answered_logged_and_the_connection_goes_on() {
    let f = fixture();
    let (got, _) = f.serve(&frames(&[
        Request::Hash {
            name: Some("missing".into()),
        },
        Request::Info,
    ]));
    assert!(matches!(&got[0], Response::Error { message } if message.contains("no such file")));
    assert!(matches!(got[1], Response::Info { .. }), "{got:?}");
    let log = f.ctx.history.last(10).unwrap();
    assert_eq!(log.len(), 2);
    assert!(log[0].outcome.starts_with("error: no such file"), "{log:?}");
    let events = f.events();
    assert_eq!(events.len(), 2);
    assert!(events[0].text.contains(": error: no such file"));
}

/// The answers to `input`, raw bytes included (the handshake is done).
fn after_handshake(f: &Fixture, input: &[u8]) -> (Vec<Response>, Vec<u8>) {
    let mut conn = Connection::new(&f.ctx, CLIENT, input, Vec::new());
    conn.serve_requests(&AtomicBool::new(false));
    answers(&conn.into_output())
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut wire = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    wire.push(0);
    wire.extend_from_slice(body);
    wire
}

#[test]
fn garbage_or_an_unknown_request_is_answered_once_then_the_connection_closes() {
    for bad in [
        &b"{not json"[..],
        br#"{"req":"delete","body":{"name":"a"}}"#,
    ] {
        let f = fixture();
        let mut input = frame(bad);
        input.extend(frames(&[Request::Info]));
        let (got, _) = after_handshake(&f, &input);
        assert_error(&got, "malformed message");
        // Nothing was served: nothing logged.
        assert!(f.ctx.history.last(10).unwrap().is_empty());
    }
}

#[test]
fn a_truncated_or_oversized_frame_closes_the_connection_without_an_answer() {
    let f = fixture();
    let whole = frames(&[Request::Info]);
    let (got, _) = after_handshake(&f, &whole[..whole.len() - 1]);
    assert!(got.is_empty(), "{got:?}");
    let mut huge = ((MAX_FRAME + 2) as u32).to_be_bytes().to_vec();
    huge.push(0);
    huge.extend(frames(&[Request::Info]));
    let (got, _) = after_handshake(&f, &huge);
    assert!(got.is_empty(), "{got:?}");
    assert!(f.ctx.history.last(10).unwrap().is_empty());
}

#[test]
fn a_stopping_server_serves_no_more_requests() {
    let f = fixture();
    let input = frames(&[Request::Info]);
    let mut conn = Connection::new(&f.ctx, CLIENT, &input[..], Vec::new());
    conn.serve_requests(&AtomicBool::new(true));
    assert!(conn.into_output().is_empty());
}
