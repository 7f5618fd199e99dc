//! `dropbox-shell`: flags become a running peer; the exit status says how
//! the commands went (0 all succeeded, 1 one failed, 2 bad flags).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use dropbox_shell::display::escape;
use dropbox_shell::peer::{Peer, PeerConfig};
use dropbox_shell::session::Session;
use dropbox_shell::shell;
use dropbox_shell::signals::{SignalWatch, TerminalMode};

const EXAMPLES: &str = "\
Examples:
  dropbox-shell --peer host:9001                               a shell on host:9001 (client only: serves nothing)
  dropbox-shell --listen 9000 --peer host:9001                 shell + server, shares the current directory
  dropbox-shell --listen 9001 --dir ~/share --headless         server only, until SIGINT/SIGTERM
  dropbox-shell --listen 9002 --dir ~/share --peer host:9001 --sync --headless   keep ~/share in two-way sync
  dropbox-shell --peer 127.0.0.1:9001 -c 'index longlist' --json
  echo 'hash checkall' | dropbox-shell --peer 127.0.0.1:9001   commands from standard input
  dropbox-shell --listen 9003 --dir ~/vault --store --zone rack1 --headless   keep others' deposits
  dropbox-shell --peer host:9003 -c 'deposit photos.tar --copies 3'   three copies in three zones
  dropbox-shell secret new group.key                           a group secret; copy it to every peer and start each with --secret-file group.key

Shell commands: index longlist | index shortlist <start> <end> | index regex <expr> |
  hash verify <file> | hash checkall | download TCP|UDP <file> | upload [--force] <file> |
  sync | sync status | sync confirm | history [N] | peers | peer use HOST:PORT|ID |
  peer forget HOST:PORT | id | deposit <file> [--copies N] | retrieve <name> [<local>] |
  replicas [<name>] | copies <name> <N> | repair | forget <name> [--yes] | help [command] | exit

A .dropboxignore file at the folder's root (gitignore syntax, e.g. `*.log` or `build/`)
keeps paths out of index, hash and sync. Beside a running --sync peer,
`dropbox-shell --dir DIR -c 'sync status'` (or 'sync confirm') talks to it.";

/// Longest `--interval` and `--rescan`: a day. Longer periods overflowed clocks later.
const MAX_PERIOD: u64 = 86_400;
/// Longest `--io-timeout` and `--udp-timeout`: an hour.
const MAX_WAIT: u64 = 3_600;

/// Share a folder with other peers and work on theirs: every process is a
/// peer with a server (TCP and UDP on one port) and a shell.
#[derive(Parser, Debug)]
#[command(name = "dropbox-shell", version, after_help = EXAMPLES)]
struct Args {
    /// Serve the folder on this TCP and UDP port (0 picks a free one), e.g. `--listen 9000` or `--listen 127.0.0.1:0`. Without it this run is a client only: no server socket.
    #[arg(long, value_name = "[ADDR:]PORT")]
    listen: Option<String>,
    /// The peer that commands go to, e.g. `--peer 192.168.1.5:9001`; repeatable, the first is current.
    #[arg(long = "peer", value_name = "HOST:PORT")]
    peers: Vec<String>,
    /// The shared folder, e.g. `--dir ~/share` (default: the current directory; your home folder or / only when named here).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// No shell: serve until SIGINT or SIGTERM, then shut down cleanly.
    #[arg(long)]
    headless: bool,
    /// Run this command (repeatable, in order), print, exit; e.g. `-c 'hash checkall'`.
    #[arg(short = 'c', long = "command", value_name = "CMD")]
    commands: Vec<String>,
    /// Print each command's result as one JSON document on stdout.
    #[arg(long)]
    json: bool,
    /// Keep the shared folder in two-way sync with the peers (periodic check plus file-system events); one process per folder.
    #[arg(long)]
    sync: bool,
    /// Period in seconds of the check with every sync partner (an exchange of what changed), e.g. `--interval 30`.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_PERIOD))]
    interval: u64,
    /// Period in seconds of the whole rescan of the folder while syncing, which finds what the watcher missed.
    #[arg(long, value_name = "SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=MAX_PERIOD))]
    rescan: u64,
    /// Do not watch the folder for changes while syncing (a network filesystem): rescans alone find them, every --interval.
    #[arg(long)]
    no_watch: bool,
    /// This peer's key pair, made if missing (default: .dropbox-shell/identity in the folder); the same file on another machine is the same peer.
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// The group secret (a key made by `dropbox-shell secret new FILE`, or a passphrase of 16+ characters): only peers that prove it are served or connected to.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// Serve and connect to this peer id only (repeatable), as `id` prints it.
    #[arg(long = "allow", value_name = "ID")]
    allow: Vec<String>,
    /// Announce this peer on the LAN and find others there (mDNS/DNS-SD); on by default when listening beyond loopback.
    #[arg(long, conflicts_with = "no_discover")]
    discover: bool,
    /// Neither announce this peer on the LAN nor look for others there.
    #[arg(long)]
    no_discover: bool,
    /// Keep other peers' deposits (in .dropbox-shell/store/, never in the shared folder), verified by MD5.
    #[arg(long)]
    store: bool,
    /// Most bytes of deposits this store keeps, e.g. `--store-quota 50G` (K, M, G, T: binary); beyond it deposits are refused. Default: the disk's free space.
    #[arg(long, value_name = "SIZE", requires = "store", value_parser = dropbox_shell::store::quota::parse_size)]
    store_quota: Option<u64>,
    /// The failure domain this peer stands in (a machine, rack or site): at most one copy of a deposit per zone. Default: this machine's id.
    #[arg(long, value_name = "NAME", value_parser = dropbox_shell::placement::parse_zone)]
    zone: Option<String>,
    /// Period in seconds of deposit repair: a store finds other stores and tends its deposits; an owner that stays up checks and repairs its deposits.
    #[arg(long, value_name = "SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=MAX_PERIOD))]
    repair_interval: u64,
    /// Accept uploads from peers (default: the folder is read-only to peers).
    #[arg(long)]
    allow_upload: bool,
    /// Most connections served at once; more get a clear "busy" answer.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    max_connections: u32,
    /// Seconds a connection may stay silent before it is closed (server) or given up (client).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=MAX_WAIT))]
    io_timeout: u64,
    /// UDP datagram payload in bytes (default: probe 64512, then jumbo 8948, then Ethernet 1448).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(16..=64512))]
    udp_payload: Option<u32>,
    /// Attempts of a UDP download before giving up when the MD5 does not match.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    udp_attempts: u32,
    /// Seconds a UDP transfer waits on a silent peer before it fails.
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=MAX_WAIT))]
    udp_timeout: u64,
    #[command(subcommand)]
    action: Option<Action>,
}

/// Things to do instead of running a peer.
#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Group secrets: `secret new FILE`.
    #[command(subcommand)]
    Secret(SecretAction),
}

#[derive(clap::Subcommand, Debug)]
enum SecretAction {
    /// Write a new random group secret to FILE (mode 0600, never over an existing file); give every peer of the group a copy and --secret-file FILE.
    New { file: PathBuf },
}

/// `secret new FILE`.
fn new_secret(file: &std::path::Path) -> i32 {
    match dropbox_shell::secure::secret::create(file) {
        Ok(()) => {
            let name = file.to_string_lossy();
            let shown = escape(&name);
            println!(
                "wrote a new group secret to {shown}; copy it privately (scp, a USB stick) to every peer of the group and start each with --secret-file {shown}"
            );
            0
        }
        Err(e) => {
            eprintln!("dropbox-shell: {e}");
            1
        }
    }
}

fn main() {
    let code = real_main();
    std::process::exit(code);
}

fn real_main() -> i32 {
    let args = Args::parse();
    if let Some(Action::Secret(SecretAction::New { file })) = &args.action {
        return new_secret(file);
    }
    let dir = match shared_folder(&args) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("dropbox-shell: {e}");
            return 2;
        }
    };
    let signals = match SignalWatch::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dropbox-shell: cannot watch signals: {e}");
            return 1;
        }
    };
    let config = PeerConfig {
        listen: args.listen.clone(),
        dir,
        allow_upload: args.allow_upload,
        max_connections: args.max_connections as usize,
        io_timeout: Duration::from_secs(args.io_timeout),
        udp_payload: args.udp_payload.map(|p| p as usize),
        udp_attempts: args.udp_attempts,
        udp_silence: Duration::from_secs(args.udp_timeout),
        sync: args.sync,
        interval: Duration::from_secs(args.interval),
        rescan: Duration::from_secs(args.rescan),
        watch: !args.no_watch,
        peers: args.peers.clone(),
        identity: args.identity.clone(),
        secret_file: args.secret_file.clone(),
        allow: args.allow.clone(),
        discover: match (args.discover, args.no_discover) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        store: args.store,
        store_quota: args.store_quota,
        zone: args.zone.clone(),
        repair_interval: Duration::from_secs(args.repair_interval),
    };
    let peer = match Peer::start(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("dropbox-shell: {e}");
            return 2;
        }
    };
    if let Some(addr) = peer.local_addr() {
        eprintln!(
            "dropbox-shell: sharing {} on {addr} (TCP+UDP), peer id {}",
            escape(&peer.shared.folder.root().to_string_lossy()),
            peer.shared.peer_id()
        );
        if !addr.ip().is_loopback() && !peer.shared.identity.has_secret() {
            eprintln!(
                "dropbox-shell: no group secret: anyone who can reach port {} can read this folder (set one with --secret-file)",
                addr.port()
            );
        }
    }
    if args.headless {
        let code = signals.shutdown.recv().unwrap_or(0);
        peer.shutdown();
        return if code == 130 { 0 } else { code };
    }
    let shared = peer.shared.clone();
    let peer = Arc::new(Mutex::new(Some(peer)));
    watch_for_shutdown(&signals, peer.clone());
    let mut session = Session::new(shared, args.peers.clone(), signals.cancel.clone());
    let code = if !args.commands.is_empty() {
        shell::run_lines(
            &mut session,
            args.commands.clone().into_iter(),
            args.json,
            &signals,
        )
    } else if std::io::stdin().is_terminal() && !args.json {
        shell::run_interactive(&mut session, &signals)
    } else {
        let lines = std::io::stdin().lock().lines().map_while(Result::ok);
        shell::run_lines(&mut session, lines, args.json, &signals)
    };
    drop(session);
    stop_peer(&peer);
    code
}

/// The folder to share, after the checks a careless start would skip:
/// serving needs `--listen`, and the home folder or `/` is shared only
/// when `--dir` names it.
fn shared_folder(args: &Args) -> Result<PathBuf, String> {
    if args.listen.is_none() {
        for (set, flag) in [
            (args.headless, "--headless"),
            (args.sync, "--sync"),
            (args.store, "--store"),
        ] {
            if set {
                return Err(format!(
                    "{flag} serves other peers: give --listen [ADDR:]PORT (e.g. --listen 9001)"
                ));
            }
        }
    }
    if let Some(dir) = &args.dir {
        return Ok(dir.clone());
    }
    let here = std::env::current_dir().map_err(|e| format!("the current directory: {e}"))?;
    if args.listen.is_some() {
        let home = std::env::var_os("HOME").and_then(|h| std::fs::canonicalize(h).ok());
        let real = std::fs::canonicalize(&here).unwrap_or_else(|_| here.clone());
        if real == std::path::Path::new("/") || Some(&real) == home.as_ref() {
            return Err(format!(
                "refusing to share {} (your home folder or /) because no --dir was given; name it with --dir {} if you mean it, or share a subfolder",
                real.display(),
                real.display()
            ));
        }
    }
    Ok(here)
}

/// Stop the peer once, from whichever thread gets there first; the other
/// waits until it is done.
fn stop_peer(peer: &Mutex<Option<Peer>>) {
    if let Ok(mut p) = peer.lock()
        && let Some(p) = p.take()
    {
        p.shutdown();
    }
}

/// SIGTERM (or Ctrl-C outside a command) while the shell runs: cancel the
/// running command, which then ends the shell by the usual way out (its
/// temporary file removed, the peer stopped, the MD5 cache saved). A shell
/// idle at its prompt, or a command that does not end within 10 s, is left
/// from here: the peer is stopped the same way and the terminal gets back
/// the mode it had at start.
fn watch_for_shutdown(signals: &SignalWatch, peer: Arc<Mutex<Option<Peer>>>) {
    let terminal = TerminalMode::save();
    let shutdown = signals.shutdown.clone();
    let (quitting, cancel, busy) = (
        signals.quitting.clone(),
        signals.cancel.clone(),
        signals.busy.clone(),
    );
    let _ = std::thread::Builder::new()
        .name("shutdown".into())
        .spawn(move || {
            let Ok(code) = shutdown.recv() else { return };
            quitting.store(true, Ordering::SeqCst);
            cancel.store(true, Ordering::SeqCst);
            if busy.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_secs(10));
            }
            stop_peer(&peer);
            terminal.restore();
            std::process::exit(code);
        });
}
