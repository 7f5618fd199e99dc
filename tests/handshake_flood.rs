//! Many handshakes at once against the real binary on loopback: 200
//! clients at the same moment each get an answer or a clear "busy" and
//! none hangs, with the server's threads and memory bounded; and a flood
//! of handshakes from one address (127.0.0.2: whole ones, and ones that
//! go silent after the preamble) leaves a client from another address
//! served, because one address may run at most half of the slots in the
//! handshake.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dropbox_shell::client::Client;
use util::*;

#[test]
fn two_hundred_connections_at_once_each_get_an_answer_or_busy() {
    let server = Peer::start(&[]);
    server.write("a.txt", b"a");
    let pid = server.child.id();
    let idle_threads = proc_status(pid, "Threads").unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let watch = {
        let done = done.clone();
        std::thread::spawn(move || {
            let (mut threads, mut rss) = (0, 0);
            while !done.load(Ordering::SeqCst) {
                threads = threads.max(proc_status(pid, "Threads").unwrap_or(0));
                rss = rss.max(proc_status(pid, "VmRSS").unwrap_or(0));
                std::thread::sleep(Duration::from_millis(5));
            }
            (threads, rss >> 10)
        })
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let start = Arc::new(std::sync::Barrier::new(200));
    for _ in 0..200 {
        let (addr, tx, start) = (server.addr.clone(), tx.clone(), start.clone());
        std::thread::spawn(move || {
            start.wait();
            let cancel = Arc::new(AtomicBool::new(false));
            let answer =
                Client::connect(&addr, &new_credentials(), cancel, Duration::from_secs(30))
                    .and_then(|mut c| c.info());
            let _ = tx.send(answer.map(|i| i.peer_id).map_err(|e| e.to_string()));
        });
    }
    drop(tx);
    let (mut served, mut busy) = (0, 0);
    for _ in 0..200 {
        // A hang guard, not a speed check.
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(_)) => served += 1,
            // Past the 16 busy answers at once, a flood is just closed.
            Ok(Err(e)) if e.contains("busy") || e.contains("closed the connection") => busy += 1,
            Ok(Err(e)) => panic!("neither an answer nor busy: {e}"),
            Err(_) => panic!("a client hung ({served} served, {busy} busy)"),
        }
    }
    done.store(true, Ordering::SeqCst);
    let (threads, rss_mib) = watch.join().unwrap();
    eprintln!("200 at once: {served} served, {busy} busy; peak {threads} threads, {rss_mib} MiB");
    assert!(served > 0, "nobody was served");
    // A thread per connection (64), per busy answer (16), and the rest
    // (with room for a thread that ended but is still listed).
    assert!(
        threads <= idle_threads + 64 + 16 + 8,
        "{threads} threads (idle: {idle_threads})"
    );
    assert!(rss_mib < 200, "{rss_mib} MiB");
    // And it still serves.
    let me = tempfile::tempdir().unwrap();
    assert_eq!(run_json(me.path(), &server.addr, &["index longlist"]).0, 0);
}

/// A connection to `to` from the loopback address `from`.
fn connect_from(from: &str, to: &str) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let to: SocketAddr = to.parse().unwrap();
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    s.bind(&local.into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(5))?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// One handshake of the flood: whole (then hang up), or only the
/// preamble and then silence (held in `silent`).
fn flood_once(addr: &str, whole: bool, silent: &mut Vec<TcpStream>) -> bool {
    let Ok(s) = connect_from("127.0.0.2", addr) else {
        return false;
    };
    if whole {
        return dropbox_shell::secure::connect_raw(s, &new_credentials()).is_ok();
    }
    let mut s = s;
    let mut theirs = [0u8; 9];
    if s.read_exact(&mut theirs).is_ok() && s.write_all(&theirs[..8]).is_ok() {
        let _ = s.write_all(&[0]);
        silent.push(s);
    }
    false
}

#[test]
fn a_flood_of_handshakes_from_one_address_leaves_others_served() {
    let server = Peer::start(&["--max-connections", "16", "--io-timeout", "5"]);
    server.write("a.txt", b"a");
    if connect_from("127.0.0.2", &server.addr).is_err() {
        eprintln!("skipped: cannot connect from 127.0.0.2 on this machine");
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let whole = Arc::new(AtomicU64::new(0));
    let flooders: Vec<_> = (0..4)
        .map(|i| {
            let (addr, stop, whole) = (server.addr.clone(), stop.clone(), whole.clone());
            std::thread::spawn(move || {
                let mut silent = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    // Half whole handshakes, half abandoned ones.
                    if flood_once(&addr, (n + i).is_multiple_of(2), &mut silent) {
                        whole.fetch_add(1, Ordering::SeqCst);
                    }
                    n += 1;
                    // Keep the newest silent ones: a real flood's sockets.
                    if silent.len() > 64 {
                        silent.remove(0);
                    }
                }
                n
            })
        })
        .collect();
    // The flood is under way: whole handshakes went through.
    assert!(wait_for(EVENTUALLY, || whole.load(Ordering::SeqCst) > 20));
    let me = tempfile::tempdir().unwrap();
    for _ in 0..5 {
        let (code, docs, err) = run_json(me.path(), &server.addr, &["index longlist"]);
        assert_eq!(
            code, 0,
            "a client from another address was not served: {docs:?} {err}"
        );
    }
    stop.store(true, Ordering::SeqCst);
    let tried: u64 = flooders.into_iter().map(|f| f.join().unwrap()).sum();
    eprintln!(
        "flood: {tried} handshakes tried from 127.0.0.2, {} whole",
        whole.load(Ordering::SeqCst)
    );
    let log = std::fs::read_to_string(server.path(".dropbox-shell/history.log")).unwrap();
    assert!(log.lines().count() < 1000, "the log grew with the flood");
}
