//! Helpers for integration tests: start the real binary as peers on
//! loopback (port 0, temporary folders) and run commands against them.
#![allow(dead_code)]

pub mod stores;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_dropbox-shell");

/// The binary, with a user state directory of its own (a client-only run
/// keeps its history, identity and known peers there): runs must not share
/// `~/.local/state`, where ports reused across tests would look like peers
/// whose key changed.
pub fn bin() -> Command {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let root = std::env::temp_dir().join(format!("dropbox-shell-tests-{}", std::process::id()));
    let mut c = Command::new(BIN);
    c.env(
        "XDG_STATE_HOME",
        root.join(NEXT.fetch_add(1, Ordering::Relaxed).to_string()),
    );
    c
}

/// Start a peer and read the address it announces on stderr (the rest of
/// stderr is drained in the background). Lines before the address line
/// (notices) are returned too.
fn spawn_peer(mut cmd: Command) -> (Child, String, Vec<String>) {
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut before = Vec::new();
    let addr = loop {
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        if let Some(a) = line
            .split_whitespace()
            .find(|w| w.starts_with("127.0.0.1:"))
        {
            break a.to_string();
        }
        assert!(
            !line.is_empty() && before.len() < 10,
            "no address in {before:?}"
        );
        before.push(line);
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut err, &mut std::io::sink());
    });
    (child, addr, before)
}

/// Wait until a transfer into `dir` is under way (its temporary file exists).
pub fn wait_for_part_file(dir: &Path) -> bool {
    wait_for(Duration::from_secs(20), || has_part_file(dir))
}

/// Wait until the syncing `peer` is seen receiving a file: a part file
/// under its folder, or a file it holds open in its staging folder (made
/// without a name, it shows only there).
pub fn wait_for_pull(peer: &Peer) -> bool {
    let fds = format!("/proc/{}/fd", peer.child.id());
    let staging = peer.dir.path().join(".dropbox-shell/incoming");
    let receiving = || {
        std::fs::read_dir(&fds)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|to| to.starts_with(&staging) && to != staging)
    };
    wait_for(Duration::from_secs(20), || {
        receiving() || has_part_file(peer.dir.path())
    })
}

fn has_part_file(dir: &Path) -> bool {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".dbsh-part"))
}

/// A headless peer serving a temporary folder.
pub struct Peer {
    pub child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
    /// What the peer said on stderr before its address line.
    pub notices: Vec<String>,
}

impl Peer {
    pub fn start(extra: &[&str]) -> Peer {
        let dir = tempfile::tempdir().unwrap();
        Peer::start_in(dir, extra)
    }

    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Peer {
        Peer::start_at(dir, "127.0.0.1:0", extra)
    }

    /// A peer listening on `listen` (a restart on the address it had, so
    /// partners that were given it find it again).
    pub fn start_at(dir: tempfile::TempDir, listen: &str, extra: &[&str]) -> Peer {
        let mut cmd = bin();
        cmd.args(["--listen", listen, "--headless", "--dir"])
            .arg(dir.path())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let (child, addr, notices) = spawn_peer(cmd);
        Peer {
            child,
            addr,
            dir,
            notices,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, data: &[u8]) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    /// Remove these files of its folder at once, as far as its watcher
    /// can tell (it is stopped meanwhile): a busy machine could otherwise
    /// have it see them in two scans, and the mass-deletion guard then lets
    /// the first half go.
    pub fn remove_at_once(&self, names: &[String]) {
        self.signal("-STOP");
        for name in names {
            std::fs::remove_file(self.path(name)).unwrap();
        }
        self.signal("-CONT");
    }
}

/// A headless peer that syncs a new temporary folder, checking every second.
pub fn syncing(extra: &[&str]) -> Peer {
    let mut args = vec!["--sync", "--interval", "1"];
    args.extend_from_slice(extra);
    Peer::start(&args)
}

/// A headless peer that syncs `dir`, checking every second.
pub fn syncing_in(dir: tempfile::TempDir, extra: &[&str]) -> Peer {
    let mut args = vec!["--sync", "--interval", "1"];
    args.extend_from_slice(extra);
    Peer::start_in(dir, &args)
}

/// A headless peer that syncs `dir`, checking every second, listening on `listen`.
pub fn syncing_at(dir: tempfile::TempDir, listen: &str, extra: &[&str]) -> Peer {
    let mut args = vec!["--sync", "--interval", "1"];
    args.extend_from_slice(extra);
    Peer::start_at(dir, listen, &args)
}

/// The `sync status` of the syncing peer running in `dir`, asked through
/// the folder's control socket as a second process would.
pub fn sync_status(dir: &Path) -> serde_json::Value {
    let out = bin()
        .args(["--json", "-c", "sync status", "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"))
}

impl Peer {
    /// Stop the peer with a signal (`-KILL`, `-TERM`) and keep its folder.
    pub fn stop(mut self, sig: &str) -> tempfile::TempDir {
        self.signal(sig);
        let _ = self.child.wait();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run commands with `-c` from a client peer in `dir` against `peer`.
pub fn run(dir: &Path, peer: &str, cmds: &[&str], extra: &[&str]) -> Output {
    let mut c = bin();
    c.args(["--listen", "127.0.0.1:0", "--dir"])
        .arg(dir)
        .args(["--peer", peer])
        .args(extra);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    c.stdin(Stdio::null()).output().unwrap()
}

/// Feed `input` to the standard input of a client in `dir` against `peer`.
pub fn run_stdin(dir: &Path, peer: &str, input: &str) -> Output {
    let mut child = bin()
        .args(["--listen", "127.0.0.1:0", "--dir"])
        .arg(dir)
        .args(["--peer", peer])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Run commands with `-c` from a client only (no `--listen`) in `dir`
/// against `peer`, and check that it succeeded.
pub fn run_client_only(dir: &Path, peer: &str, cmd: &str) -> Output {
    let out = bin()
        .args(["--peer", peer, "-c", cmd, "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run commands with `--json` and parse one JSON document per stdout line.
pub fn run_json(dir: &Path, peer: &str, cmds: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    json_lines(&run(dir, peer, cmds, &["--json"]))
}

/// A `--json` run's exit code, one document per stdout line, and stderr.
pub fn json_lines(out: &Output) -> (i32, Vec<serde_json::Value>, String) {
    let docs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        docs,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The id of the peer whose folder is `dir`, as `id` prints it: asked by
/// a client-only run of its identity file, which leaves the file as it is.
pub fn id_of(dir: &Path) -> String {
    let scratch = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["--json", "-c", "id", "--identity"])
        .arg(dir.join(".dropbox-shell/identity"))
        .arg("--dir")
        .arg(scratch.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["id"].as_str().unwrap().to_string()
}

/// Random bytes from a seed.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// After a failed transfer: `name` still holds `old`, and no half file
/// lies under a visible name.
pub fn assert_only_the_old_copy(dir: &Path, name: &str, old: &[u8]) {
    assert_eq!(std::fs::read(dir.join(name)).unwrap(), old);
    assert_eq!(
        visible_files(dir),
        vec![name],
        "no half file under a visible name"
    );
}

/// Files in a folder other than the state folder, recursively, sorted.
pub fn visible_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".dropbox-shell")
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".dbsh-part"))
        .map(|e| {
            e.path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// How long a test waits for something that must happen by itself (a
/// background sweep, a sync round, an engine absorbing offers): a bound on
/// "it never happens", generous for a loaded machine, never a speed claim
/// (speed is measured by scripts/bench.sh).
pub const EVENTUALLY: Duration = Duration::from_secs(60);

/// Wait until `f` is true or `limit` passes.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub fn read_all(mut r: impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

/// Visible files and folders of a tree with their contents and modes.
pub fn tree(dir: &Path) -> Vec<(String, Option<Vec<u8>>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    // Files may come and go while syncing: what vanished meanwhile is left out.
    visible_files(dir)
        .into_iter()
        .filter_map(|name| {
            let p = dir.join(&name);
            let m = std::fs::metadata(&p).ok()?;
            let data = if m.is_dir() {
                None
            } else {
                Some(std::fs::read(&p).ok()?)
            };
            Some((name, data, m.permissions().mode() & 0o7777))
        })
        .collect()
}

/// A running (not headless) peer whose shell reads commands from a pipe and
/// answers each with one JSON line: the way to ask a running peer.
pub struct ShellPeer {
    pub child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl ShellPeer {
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> ShellPeer {
        let mut cmd = bin();
        cmd.args(["--listen", "127.0.0.1:0", "--json", "--dir"])
            .arg(dir.path())
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let (mut child, addr, _) = spawn_peer(cmd);
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take().unwrap();
        ShellPeer {
            child,
            addr,
            dir,
            stdin,
            lines,
        }
    }

    /// Run one command in the peer's shell; its JSON answer.
    pub fn cmd(&mut self, line: &str) -> serde_json::Value {
        use std::io::Write;
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        let answer = self
            .lines
            .recv_timeout(Duration::from_secs(60))
            .expect("no answer from the shell");
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("bad JSON {answer:?}: {e}"))
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl ShellPeer {
    /// Kill the peer and keep its folder.
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }
}

impl Drop for ShellPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A writer that sends each write at once (a hand-made client's or fake
/// peer's messages go out as they are written).
pub struct Eager<W: std::io::Write>(pub W);

impl<W: std::io::Write> std::io::Write for Eager<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(b)?;
        self.0.flush()?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// The writing half of a hand-made connection, past the handshake.
pub type RawOut = Eager<dropbox_shell::secure::SecureWriter<std::net::TcpStream>>;
/// The reading half of a hand-made connection, past the handshake.
pub type RawIn = dropbox_shell::secure::SecureReader<std::net::TcpStream>;

/// Credentials of a new throwaway identity.
pub fn new_credentials() -> dropbox_shell::secure::Credentials {
    dropbox_shell::secure::Credentials::open(dropbox_shell::secure::Keypair::generate().unwrap())
}

/// A hand-made connection to a peer, past the handshake (with a new
/// identity): the two halves and the id this side proved.
pub fn raw_client(addr: &str) -> (RawOut, RawIn, String) {
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let creds = new_credentials();
    let (_, r, w) = dropbox_shell::secure::connect_raw(s, &creds).unwrap();
    (Eager(w), r, creds.keys.id().to_string())
}

/// A fake peer on loopback: it speaks the handshake, then hands every
/// request to `answer` with the connection. Returns its address.
pub fn fake_peer(answer: fn(dropbox_shell::proto::Request, &mut RawOut)) -> String {
    fake_peer_with(new_credentials(), answer)
}

/// [`fake_peer`] with the identity `creds` (so its answers can name its
/// id) and any answer that can be shared by its connections' threads.
pub fn fake_peer_with(
    creds: dropbox_shell::secure::Credentials,
    answer: impl Fn(dropbox_shell::proto::Request, &mut RawOut) + Send + Sync + 'static,
) -> String {
    use dropbox_shell::proto::{Request, read_msg};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let (creds, answer) = (creds.clone(), answer.clone());
            std::thread::spawn(move || {
                let Ok((_, mut r, w)) = dropbox_shell::secure::accept_raw(s, &creds) else {
                    return;
                };
                let mut s = Eager(w);
                let mut buf = Vec::new();
                while let Ok(req) = read_msg::<Request>(&mut r, &mut buf) {
                    answer(req, &mut s);
                }
            });
        }
    });
    addr
}

/// A UDP ticket from the peer at `addr`, asked for over a hand-made
/// connection, and a sealer of the client's side for it.
pub fn udp_ticket(addr: &str) -> dropbox_shell::secure::udp::Sealer {
    use dropbox_shell::proto::{Request, Response, read_msg, write_msg};
    use dropbox_shell::secure::udp::{Sealer, Side, Ticket};
    let (mut w, mut r, _) = raw_client(addr);
    write_msg(&mut w, &Request::UdpTicket).unwrap();
    let mut buf = Vec::new();
    match read_msg::<Response>(&mut r, &mut buf).unwrap() {
        Response::UdpTicket { ticket, secret } => {
            Sealer::new(&Ticket::from_parts(ticket, &secret).unwrap(), Side::Client)
        }
        other => panic!("unexpected answer to a ticket request: {other:?}"),
    }
}

/// A number of `/proc/PID/status` (`VmRSS` in KiB, `Threads`), if the
/// process is still there.
pub fn proc_status(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// A new group secret in `dir`, made by `secret new`.
pub fn new_secret(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let out = bin().args(["secret", "new"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    path
}

/// The peers found on the LAN, as `peers` in the shell of `shell` lists
/// them.
pub fn lan_peers(shell: &mut ShellPeer) -> Vec<serde_json::Value> {
    let answer = shell.cmd("peers");
    answer["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["found"] == "lan")
        .cloned()
        .collect()
}
