//! The control socket: how another process in the same folder reaches the
//! one that syncs it. A `--sync` peer holds the folder's sync lock, so a
//! second process cannot run rounds itself; instead its `sync`, `sync
//! status` and `sync confirm` are sent here and answered by the running
//! engine, and it renders the answer as its own.
//!
//! The server listens on `.dropbox-shell/control.sock` (mode 0600) and
//! answers only processes of its own user (checked with `SO_PEERCRED`). It
//! is bounded: one request line of at most [`MAX_REQUEST`] bytes, at most
//! [`MAX_CLIENTS`] connections at once (more are told "busy"), reads and
//! writes time out after [`IO_TIMEOUT`]. Its thread ends when the engine
//! stops, and removes the socket. The protocol is one JSON line each way.

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};

use super::engine::{SyncCmd, SyncReport, SyncStatus};
use crate::{Context, Error, Result, bail};

/// The socket's name in the state folder.
pub const SOCKET: &str = "control.sock";
/// Longest request line, in bytes.
pub const MAX_REQUEST: usize = 4096;
/// Most connections served at once.
pub const MAX_CLIENTS: usize = 4;
/// How long a request may take to arrive, or an answer to be taken.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest answer a client reads.
const MAX_ANSWER: u64 = 16 << 20;
/// How often the accept loop looks whether it should stop.
const POLL_MS: i32 = 200;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "snake_case")]
pub enum Request {
    Status,
    Sync { confirm: bool },
}

/// What the syncing process answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Status(SyncStatus),
    Report(SyncReport),
    Error(String),
}

/// Longest socket path the kernel takes (`sun_path` holds 108 bytes).
const MAX_SOCKET_PATH: usize = 100;

/// A path to the socket `path` short enough for the kernel: itself, or
/// (for a deep folder) the same file through an open descriptor of its
/// folder, `/proc/self/fd/N/control.sock`, valid while the returned file
/// is open.
fn reachable(path: &Path) -> (PathBuf, Option<fs::File>) {
    if path.as_os_str().len() <= MAX_SOCKET_PATH {
        return (path.to_path_buf(), None);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return (path.to_path_buf(), None);
    };
    match fs::File::open(dir) {
        Ok(d) => (
            Path::new(&format!("/proc/self/fd/{}", d.as_raw_fd())).join(name),
            Some(d),
        ),
        Err(_) => (path.to_path_buf(), None),
    }
}

/// The uid of the process at the other end of a Unix socket.
fn peer_uid(s: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

fn my_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Wait up to [`POLL_MS`] for a connection on `l`.
fn wait_readable(l: &UnixListener) {
    let mut fd = libc::pollfd {
        fd: l.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1.
    unsafe {
        libc::poll(&mut fd, 1, POLL_MS);
    }
}

/// The listening side, run by a syncing engine.
pub struct ControlServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl ControlServer {
    /// Listen in `state_dir`. The caller holds the folder's sync lock, so a
    /// socket found there was left by a process that is gone.
    pub fn start(state_dir: &Path, engine: Sender<SyncCmd>) -> Result<ControlServer> {
        let path = state_dir.join(SOCKET);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_socket() => {
                fs::remove_file(&path).context(format_args!("removing {}", path.display()))?
            }
            Ok(_) => bail!("{} exists and is not a socket", path.display()),
            Err(_) => {}
        }
        let listener = {
            let (addr, _dir) = reachable(&path);
            UnixListener::bind(&addr).context(format_args!("listening on {}", path.display()))?
        };
        let ready = fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .and_then(|_| listener.set_nonblocking(true));
        if let Err(e) = ready {
            let _ = fs::remove_file(&path);
            return Err(e).context(format_args!("setting up {}", path.display()));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::Builder::new()
            .name("sync-control".into())
            .spawn(move || accept_loop(listener, engine, flag))
            .map_err(|e| {
                let _ = fs::remove_file(&path);
                Error::new(format!("cannot start the control thread: {e}"))
            })?;
        Ok(ControlServer {
            stop,
            thread: Some(thread),
            path,
        })
    }

    /// Stop listening, wait for the thread and remove the socket.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.shut();
    }
}

fn accept_loop(listener: UnixListener, engine: Sender<SyncCmd>, stop: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => admit(stream, &engine, &active),
            Err(e) if e.kind() == ErrorKind::WouldBlock => wait_readable(&listener),
            Err(_) => thread::sleep(Duration::from_millis(POLL_MS as u64)),
        }
    }
}

/// One connection: only from our own user, and only while fewer than
/// [`MAX_CLIENTS`] are served.
fn admit(stream: UnixStream, engine: &Sender<SyncCmd>, active: &Arc<AtomicUsize>) {
    if peer_uid(&stream) != Some(my_uid()) {
        return;
    }
    let ok = stream.set_nonblocking(false).is_ok()
        && stream.set_read_timeout(Some(IO_TIMEOUT)).is_ok()
        && stream.set_write_timeout(Some(IO_TIMEOUT)).is_ok();
    if !ok {
        return;
    }
    if active.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
        active.fetch_sub(1, Ordering::SeqCst);
        let busy =
            Answer::Error("the syncing process is busy with other requests; try again".into());
        let _ = send_line(&stream, &busy);
        return;
    }
    let (engine, active) = (engine.clone(), active.clone());
    let spawned = thread::Builder::new()
        .name("sync-control-conn".into())
        .spawn({
            let active = active.clone();
            move || {
                serve(&stream, &engine);
                active.fetch_sub(1, Ordering::SeqCst);
            }
        });
    if spawned.is_err() {
        active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn send_line<T: Serialize>(mut w: &UnixStream, value: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}

/// Read one request line of at most `MAX_REQUEST` bytes.
fn read_request(r: impl Read) -> Result<Request> {
    let mut line = Vec::new();
    BufReader::new(r.take(MAX_REQUEST as u64 + 1))
        .read_until(b'\n', &mut line)
        .context("reading the request")?;
    if line.last() != Some(&b'\n') {
        if line.len() > MAX_REQUEST {
            bail!("request longer than {MAX_REQUEST} bytes");
        }
        bail!("incomplete request");
    }
    serde_json::from_slice(&line).map_err(|e| Error::new(format!("bad request: {e}")))
}

fn serve(stream: &UnixStream, engine: &Sender<SyncCmd>) {
    let answer = match read_request(stream) {
        Ok(req) => ask_engine(engine, req),
        Err(e) => Answer::Error(e.to_string()),
    };
    let _ = send_line(stream, &answer);
}

fn ask_engine(engine: &Sender<SyncCmd>, req: Request) -> Answer {
    let gone = || Answer::Error("the sync engine stopped".into());
    match req {
        Request::Status => {
            let (tx, rx) = crossbeam_channel::bounded(1);
            if engine
                .send_timeout(SyncCmd::Status(tx), IO_TIMEOUT)
                .is_err()
            {
                return gone();
            }
            rx.recv().map_or_else(|_| gone(), Answer::Status)
        }
        Request::Sync { confirm } => {
            let (tx, rx) = crossbeam_channel::bounded(1);
            if engine
                .send_timeout(SyncCmd::RunNow(confirm, tx), IO_TIMEOUT)
                .is_err()
            {
                return gone();
            }
            rx.recv().map_or_else(|_| gone(), Answer::Report)
        }
    }
}

/// Ask the process that syncs the folder of `state_dir`, if one listens
/// there (`None`: nobody does). A round may take long: the answer is
/// awaited until it comes or `cancel` is set.
pub fn ask(state_dir: &Path, req: &Request, cancel: &AtomicBool) -> Result<Option<Answer>> {
    let path = state_dir.join(SOCKET);
    let (addr, _dir) = reachable(&path);
    let stream = match UnixStream::connect(&addr) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            return Ok(None);
        }
        Err(e) => return Err(e).context(format_args!("connecting to {}", path.display())),
    };
    if peer_uid(&stream) != Some(my_uid()) {
        bail!("{} belongs to another user; not asking it", path.display());
    }
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .context("control socket")?;
    send_line(&stream, req).context("asking the syncing process")?;
    stream
        .set_read_timeout(Some(Duration::from_millis(POLL_MS as u64)))
        .context("control socket")?;
    let mut r = BufReader::new((&stream).take(MAX_ANSWER));
    let mut line = Vec::new();
    loop {
        match r.read_until(b'\n', &mut line) {
            Ok(0) => bail!("the syncing process closed the connection without an answer"),
            Ok(_) if line.last() == Some(&b'\n') => break,
            Ok(_) => bail!("the syncing process sent an answer longer than {MAX_ANSWER} bytes"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if cancel.load(Ordering::SeqCst) {
                    return Err(Error::cancelled());
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading the answer of the syncing process"),
        }
    }
    let answer = serde_json::from_slice(&line)
        .map_err(|e| Error::new(format!("the syncing process answered badly: {e}")))?;
    Ok(Some(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_bounded_line() {
        let ok = read_request(&b"{\"ask\":\"sync\",\"confirm\":true}\n"[..]).unwrap();
        assert_eq!(ok, Request::Sync { confirm: true });
        assert_eq!(
            read_request(&b"{\"ask\":\"status\"}\n"[..]).unwrap(),
            Request::Status
        );
        let long = vec![b'x'; MAX_REQUEST + 100];
        let e = read_request(&long[..]).unwrap_err();
        assert!(e.to_string().contains("longer than 4096"), "{e}");
        assert!(read_request(&b"{\"ask\":\"status\"}"[..]).is_err());
        assert!(read_request(&b"{\"ask\":\"rm -rf\"}\n"[..]).is_err());
    }

    #[test]
    fn a_server_answers_its_own_user_and_goes_with_its_socket() {
        let d = tempfile::tempdir().unwrap();
        let (tx, rx) = crossbeam_channel::bounded::<SyncCmd>(4);
        // A fake engine: answers a status, and a round with an empty report.
        let engine = thread::spawn(move || {
            for cmd in rx {
                match cmd {
                    SyncCmd::Status(reply) => {
                        let _ = reply.send(SyncStatus {
                            enabled: true,
                            interval_seconds: 7,
                            rescan_seconds: 3600,
                            watching: true,
                            walks: 1,
                            last_round: None,
                            pending: false,
                            partners: Vec::new(),
                        });
                    }
                    SyncCmd::RunNow(_, reply) => {
                        let _ = reply.send(SyncReport::default());
                    }
                    _ => {}
                }
            }
        });
        let server = ControlServer::start(d.path(), tx).unwrap();
        let sock = d.path().join(SOCKET);
        let mode = fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let cancel = AtomicBool::new(false);
        match ask(d.path(), &Request::Status, &cancel).unwrap() {
            Some(Answer::Status(s)) => assert_eq!(s.interval_seconds, 7),
            other => panic!("{other:?}"),
        }
        match ask(d.path(), &Request::Sync { confirm: true }, &cancel).unwrap() {
            Some(Answer::Report(r)) => assert!(r.partners.is_empty()),
            other => panic!("{other:?}"),
        }
        // A request too long is refused, the server goes on.
        let mut s = UnixStream::connect(&sock).unwrap();
        s.write_all(&vec![b'x'; MAX_REQUEST * 2]).unwrap();
        let answer = read_all_from(&mut s);
        assert!(answer.contains("longer than"), "{answer}");
        server.stop();
        assert!(!sock.exists(), "the socket is removed");
        assert!(ask(d.path(), &Request::Status, &cancel).unwrap().is_none());
        engine.join().unwrap();
    }

    #[test]
    fn a_deep_folder_still_gets_its_socket() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("a-rather-long-folder-name".repeat(6));
        fs::create_dir_all(&deep).unwrap();
        assert!(deep.join(SOCKET).as_os_str().len() > 108);
        let (tx, rx) = crossbeam_channel::bounded::<SyncCmd>(4);
        let engine = thread::spawn(move || {
            for cmd in rx {
                if let SyncCmd::RunNow(_, reply) = cmd {
                    let _ = reply.send(SyncReport::default());
                }
            }
        });
        let server = ControlServer::start(&deep, tx).unwrap();
        assert!(deep.join(SOCKET).exists());
        let cancel = AtomicBool::new(false);
        let answer = ask(&deep, &Request::Sync { confirm: false }, &cancel).unwrap();
        assert!(matches!(answer, Some(Answer::Report(_))), "{answer:?}");
        server.stop();
        assert!(!deep.join(SOCKET).exists());
        engine.join().unwrap();
    }

    fn read_all_from(s: &mut UnixStream) -> String {
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }
}
