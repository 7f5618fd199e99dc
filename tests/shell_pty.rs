//! The interactive shell through a real pseudo-terminal: prompt, tables,
//! tab completion of the peer's names, Ctrl-C during a download, server
//! messages above the prompt, history across sessions, Ctrl-D to leave.

mod util;

use std::process::Command;
use std::time::Duration;

use rexpect::session::PtySession;
use util::*;

/// A shell script in a pseudo-terminal of 100 x 40 (a fresh pty has no size).
fn sh_in_pty(script: &str) -> PtySession {
    let mut c = Command::new("sh");
    c.args(["-c", &format!("stty cols 100 rows 40; {script}")]);
    c.env("TERM", "xterm");
    rexpect::session::spawn_command(c, Some(20_000)).unwrap()
}

/// The binary in a pseudo-terminal.
fn in_pty(args: &str) -> PtySession {
    sh_in_pty(&format!("exec {BIN} {args}"))
}

/// The pid of the running dropbox-shell whose command line names `dir`.
fn pid_with_dir(dir: &std::path::Path) -> String {
    let dir = dir.to_string_lossy().into_owned();
    let mut found = None;
    wait_for(EVENTUALLY, || {
        found = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.starts_with(BIN) && cmdline.contains(&dir))
                .then(|| e.file_name().to_string_lossy().into_owned())
        });
        found.is_some()
    });
    found.expect("the shell's process")
}

/// Run the shell from `sh` in a pty, which prints the terminal's mode
/// (`stty -g`) before it, and its exit status and the mode again after it.
fn shell_between_stty(args: &str) -> (PtySession, String) {
    let mut s = sh_in_pty(&format!(
        "echo \"mode=$(stty -g)\"; {BIN} {args}; echo \"exit=$?\"; echo \"mode=$(stty -g)\""
    ));
    let (_, before) = s.exp_regex(r"mode=[0-9a-f:]+").unwrap();
    s.exp_string("> ").unwrap();
    (s, before)
}

/// The terminal is back in the mode it had before the shell started.
fn expect_mode_restored(s: &mut PtySession, before: &str) {
    let (_, after) = s.exp_regex(r"mode=[0-9a-f:]+").unwrap();
    assert_eq!(after, before, "terminal mode after the shell");
    s.exp_eof().unwrap();
}

fn shell(dir: &std::path::Path, peer: &str) -> PtySession {
    let mut s = in_pty(&format!(
        "--listen 127.0.0.1:0 --io-timeout 30 --dir {} --peer {peer}",
        dir.display()
    ));
    s.exp_string("type `help`").unwrap();
    s.exp_string("> ").unwrap();
    s
}

#[test]
fn prompt_table_completion_and_history() {
    let server = Peer::start(&[]);
    server.write("my file.txt", b"remote bytes");
    server.write("other.bin", b"x");
    let me = tempfile::tempdir().unwrap();
    let mut s = shell(me.path(), &server.addr);

    s.send_line("index longlist").unwrap();
    s.exp_string("my file.txt").unwrap();
    s.exp_string("2 entries").unwrap();

    // Tab completes the remote name, quoted because of its space.
    s.send("download TCP my").unwrap();
    s.send("\t").unwrap();
    s.flush().unwrap();
    s.exp_string("'my file.txt'").unwrap();
    s.send_line("").unwrap();
    s.exp_string("downloaded my file.txt").unwrap();
    s.exp_string("md5").unwrap();

    // Command words complete too.
    s.send("hash chec").unwrap();
    s.send("\t").unwrap();
    s.flush().unwrap();
    s.exp_string("checkall").unwrap();
    s.send_line("").unwrap();
    s.exp_string("2 files").unwrap();

    // A bad command is one clear line and the shell goes on.
    s.send_line("index regex (").unwrap();
    s.exp_string("bad regular expression").unwrap();

    // Ctrl-C at the prompt does not leave; Ctrl-D does.
    s.exp_string("> ").unwrap();
    s.send_control('c').unwrap();
    s.exp_string("> ").unwrap();
    s.send_line("help download").unwrap();
    s.exp_string("usage: download").unwrap();
    s.send_control('d').unwrap();
    s.exp_eof().unwrap();
    assert_eq!(
        std::fs::read(me.path().join("my file.txt")).unwrap(),
        b"remote bytes"
    );

    // History survives into the next session: Up brings back the last line.
    let mut s = shell(me.path(), &server.addr);
    s.send("\x1b[A").unwrap();
    s.flush().unwrap();
    s.exp_string("help download").unwrap();
    s.send_line("").unwrap();
    s.exp_string("usage: download").unwrap();
    s.send_line("exit").unwrap();
    s.exp_eof().unwrap();
}

#[test]
fn ctrl_c_cancels_a_download_not_the_shell() {
    let server = Peer::start(&[]);
    server.write("big.bin", &random_bytes(1, 32 << 20));
    let me = tempfile::tempdir().unwrap();
    std::fs::write(me.path().join("big.bin"), b"old").unwrap();
    let mut s = shell(me.path(), &server.addr);
    // A frozen server: the download waits until Ctrl-C.
    server.signal("-STOP");
    s.send_line("download TCP big.bin").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    s.send_control('c').unwrap();
    s.exp_string("cancelled").unwrap();
    server.signal("-CONT");
    s.send_line("index longlist").unwrap();
    s.exp_string("1 entry on").unwrap();
    s.send_line("quit").unwrap();
    s.exp_eof().unwrap();
    assert_eq!(std::fs::read(me.path().join("big.bin")).unwrap(), b"old");
    assert_eq!(visible_files(me.path()), vec!["big.bin"]);
}

#[test]
fn server_messages_appear_above_the_prompt() {
    let other = Peer::start(&[]);
    let me = tempfile::tempdir().unwrap();
    std::fs::write(me.path().join("mine.txt"), b"m").unwrap();
    let mut s = in_pty(&format!(
        "--listen 127.0.0.1:0 --dir {} --peer {}",
        me.path().display(),
        other.addr
    ));
    let (_, addr) = s.exp_regex(r"127\.0\.0\.1:\d+").unwrap();
    s.exp_string("> ").unwrap();
    // Another peer asks this one for its listing.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = run(elsewhere.path(), &addr, &["index longlist"], &[]);
    assert!(out.status.success());
    s.exp_string("[server] served index longlist").unwrap();
    s.send_line("exit").unwrap();
    s.exp_eof().unwrap();
}

#[test]
fn sigterm_ends_the_shell_cleanly_at_the_prompt_and_during_a_download() {
    let server = Peer::start(&[]);
    server.write("big.bin", &random_bytes(3, 200 << 20));
    let me = tempfile::tempdir().unwrap();
    std::fs::write(me.path().join("big.bin"), b"old").unwrap();
    let args = format!(
        "--listen 127.0.0.1:0 --dir {} --peer {}",
        me.path().display(),
        server.addr
    );

    // At the prompt, where the line editor holds the terminal in raw mode.
    let (mut s, before) = shell_between_stty(&args);
    kill("-TERM", &pid_with_dir(me.path()));
    s.exp_string("exit=0").unwrap();
    expect_mode_restored(&mut s, &before);

    // During a download: cancelled, its temporary file removed, the old
    // file kept, and the shell gone with the download's failure as status.
    let (mut s, before) = shell_between_stty(&args);
    s.send_line("download TCP big.bin").unwrap();
    let started = wait_for_part_file(me.path());
    server.signal("-STOP");
    kill("-TERM", &pid_with_dir(me.path()));
    s.exp_string("cancelled").unwrap();
    s.exp_string("exit=1").unwrap();
    expect_mode_restored(&mut s, &before);
    server.signal("-CONT");
    assert!(started, "the download was never seen under way");
    assert_only_the_old_copy(me.path(), "big.bin", b"old");
}

fn kill(sig: &str, pid: &str) {
    assert!(
        Command::new("kill")
            .args([sig, pid])
            .status()
            .unwrap()
            .success()
    );
}

/// What a hostile client asks for: a name that, printed raw, retitles the
/// terminal, clears the screen and draws a fake prompt.
const HOSTILE: &str = "x\u{1b}]2;PWNED\u{7}\u{1b}[2J\u{1b}[H\u{1b}[31mfake prompt> ";
/// The same name as the shell must show it.
const HOSTILE_SHOWN: &str = r"x\e]2;PWNED\x07\e[2J\e[H\e[31mfake prompt> ";

/// True if `out` holds a piece of the hostile name's escape sequences raw.
fn holds_raw_escapes(out: &str) -> bool {
    ["\u{1b}]2;", "PWNED\u{7}", "\u{1b}[2J", "\u{1b}[31m"]
        .iter()
        .any(|s| out.contains(s))
}

#[test]
fn a_hostile_name_reaches_the_operator_escaped() {
    let other = Peer::start(&[]);
    let me = tempfile::tempdir().unwrap();
    let mut s = in_pty(&format!(
        "--listen 127.0.0.1:0 --dir {} --peer {}",
        me.path().display(),
        other.addr
    ));
    let (_, addr) = s.exp_regex(r"127\.0\.0\.1:\d+").unwrap();
    s.exp_string("> ").unwrap();
    // A client with no rights asks this shell's server for the name.
    let elsewhere = tempfile::tempdir().unwrap();
    let line = format!("download TCP \"{HOSTILE}\"");
    let out = run(elsewhere.path(), &addr, &[&line], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(HOSTILE_SHOWN), "{err}");
    assert!(!holds_raw_escapes(&err), "{err:?}");

    let before = s.exp_string("[server] served download").unwrap();
    let event = s.exp_string("\n").unwrap();
    assert!(event.contains(HOSTILE_SHOWN), "{event:?}");
    assert!(
        !holds_raw_escapes(&before) && !holds_raw_escapes(&event),
        "{event:?}"
    );

    // The history table shows the request escaped as well.
    s.send_line("history").unwrap();
    let head = s.exp_string("Outcome").unwrap();
    let table = s
        .exp_string(&format!("dropbox-shell {}> ", other.addr))
        .unwrap();
    let table = head + &table;
    assert!(table.contains(r"x\e]2;PWNED\x07"), "{table:?}");
    assert!(!holds_raw_escapes(&table), "{table:?}");
    s.send_line("exit").unwrap();
    s.exp_eof().unwrap();
}

/// Kills a process (by pid) when dropped.
struct KillOnDrop(String);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-KILL", &self.0]).status();
    }
}

/// A process that still runs (not gone, not a zombie).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z') && !r.starts_with('X'))
}

#[test]
fn ctrl_c_in_the_shell_spares_a_peer_started_in_the_background() {
    let theirs = tempfile::tempdir().unwrap();
    // Sparse and large: the download runs for seconds, long enough to be
    // seen under way on a loaded machine, and costs no disk to make.
    std::fs::File::create(theirs.path().join("big.bin"))
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    let mine = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (log, pidfile) = (tmp.path().join("log"), tmp.path().join("pid"));
    // As scripts did before demo.sh put its helper in its own process
    // group: `&` from a non-interactive bash, in the terminal's group, with
    // SIGINT ignored as bash leaves it for such a job.
    let script = format!(
        "stty cols 100 rows 40; \
         {BIN} --listen 127.0.0.1:0 --dir {theirs} --headless >/dev/null 2>{log} & \
         echo $! > {pidfile}; \
         for i in $(seq 400); do \
           addr=$(grep -o '127\\.0\\.0\\.1:[0-9]*' {log} | head -1); \
           [ -n \"$addr\" ] && break; sleep 0.05; \
         done; \
         exec {BIN} --listen 127.0.0.1:0 --io-timeout 30 --dir {mine} --peer $addr",
        theirs = theirs.path().display(),
        mine = mine.path().display(),
        log = log.display(),
        pidfile = pidfile.display(),
    );
    let mut c = Command::new("bash");
    c.args(["-c", &script]);
    c.env("TERM", "xterm");
    let mut s = rexpect::session::spawn_command(c, Some(20_000)).unwrap();
    s.exp_string("type `help`").unwrap();
    s.exp_string("> ").unwrap();
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();
    let _guard = KillOnDrop(pid.clone());

    s.send_line("download TCP big.bin").unwrap();
    assert!(
        wait_for_part_file(mine.path()),
        "the download never started"
    );
    // Frozen, the helper keeps the download going until Ctrl-C.
    kill("-STOP", &pid);
    s.send("\x03").unwrap();
    s.flush().unwrap();
    s.exp_string("cancelled").unwrap();
    kill("-CONT", &pid);
    // A helper that took the Ctrl-C shuts down now; give it the chance.
    wait_for(Duration::from_secs(3), || !alive(&pid));
    assert!(
        alive(&pid),
        "the background peer died of the shell's Ctrl-C"
    );
    s.exp_string("> ").unwrap();
    s.send_line("peers").unwrap();
    s.exp_string("| reachable").unwrap();
    s.send_line("exit").unwrap();
    s.exp_eof().unwrap();
}

#[test]
fn tab_completes_the_id_of_a_peer_found_on_the_lan() {
    let other = Peer::start(&["--discover"]);
    let other_id = id_of(other.dir.path());
    let me = tempfile::tempdir().unwrap();
    let mut s = in_pty(&format!(
        "--listen 127.0.0.1:0 --discover --dir {}",
        me.path().display()
    ));
    s.exp_string("> ").unwrap();
    // Wait until discovery has found it (`peers` lists it), then complete
    // its id from the first four characters.
    let short = other_id.replace('-', "")[..7].to_string();
    let found = wait_for(EVENTUALLY, || {
        s.send_line("peers").unwrap();
        s.exp_string("> ")
            .map(|t| t.contains(&short))
            .unwrap_or(false)
    });
    assert!(found, "the peer was never found");
    s.send(&format!("peer use {}", &other_id[..4])).unwrap();
    s.send("\t").unwrap();
    s.flush().unwrap();
    s.exp_string(&other_id).unwrap();
    s.send_line("").unwrap();
    s.exp_string(&format!("current peer: {}", other.addr))
        .unwrap();
    s.send_line("exit").unwrap();
    s.exp_eof().unwrap();
}

#[test]
fn forget_asks_before_it_removes_every_copy() {
    let store = Peer::start(&["--store", "--zone", "z1"]);
    let me = tempfile::tempdir().unwrap();
    std::fs::write(me.path().join("keep.txt"), b"precious").unwrap();
    let mut s = shell(me.path(), &store.addr);
    s.send_line("deposit keep.txt --copies 1").unwrap();
    s.exp_string("1 of 1 copies").unwrap();
    s.exp_string("> ").unwrap();
    // No: nothing goes.
    s.send_line("forget keep.txt").unwrap();
    s.exp_string("remove every copy of keep.txt on every store? [y/N]")
        .unwrap();
    s.send_line("n").unwrap();
    s.exp_string("nothing removed").unwrap();
    s.exp_string("> ").unwrap();
    assert!(stores::held(&store, "keep.txt").is_some());
    // Yes: every copy goes.
    s.send_line("forget keep.txt").unwrap();
    s.exp_string("[y/N]").unwrap();
    s.send_line("y").unwrap();
    s.exp_string("1 copy removed").unwrap();
    s.exp_string("> ").unwrap();
    assert!(stores::held(&store, "keep.txt").is_none());
    s.send_line("exit").unwrap();
    s.exp_eof().unwrap();
}
