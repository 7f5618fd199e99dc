//! Fetch a file from a peer with the library, no shell involved:
//!
//! ```text
//! cargo run --example fetch -- 127.0.0.1:9001 notes.txt ./downloads
//! ```
//! It lists the peer, checks the file is there, downloads it over TCP into
//! the given folder (verified by MD5) and prints what arrived.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use dropbox_shell::client::Client;
use dropbox_shell::folder::Folder;
use dropbox_shell::proto::Filter;
use dropbox_shell::secure::{Credentials, Keypair};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [peer, name, dir] = args.as_slice() else {
        eprintln!("usage: fetch PEER FILE DIR");
        std::process::exit(2);
    };
    if let Err(e) = fetch(peer, name, dir) {
        eprintln!("fetch: {e}");
        std::process::exit(1);
    }
}

fn fetch(peer: &str, name: &str, dir: &str) -> dropbox_shell::Result<()> {
    std::fs::create_dir_all(dir)?;
    let folder = Folder::open(std::path::Path::new(dir))?;
    let cancel = Arc::new(AtomicBool::new(false));
    // A throwaway identity for this run (a peer keeps its own in its folder).
    let creds = Credentials::open(Keypair::generate()?);
    let mut client = Client::connect(peer, &creds, cancel.clone(), Duration::from_secs(10))?;
    let listing = client.index(Filter::All)?;
    println!("{peer} shares {} entries", listing.len());
    let mut client = Client::connect(peer, &creds, cancel, Duration::from_secs(10))?;
    let report = client.download(name, &folder, &mut |done, total| {
        eprint!("\r{done}/{total} bytes");
    })?;
    eprintln!();
    println!(
        "{} {} bytes md5 {} in {:.3} s",
        report.name, report.size, report.md5, report.seconds
    );
    Ok(())
}
