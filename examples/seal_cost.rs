//! What encryption costs per GiB on this machine, on one core: sealing
//! and opening the TCP channel's records ([`SecureWriter`] /
//! [`SecureReader`], AES-256-GCM, 64 KiB records) and the UDP transfer's
//! datagrams ([`Sealer`], 64,512-byte payloads). `scripts/bench.sh` prints
//! it beside the downloads.
//!
//! ```text
//! cargo run --release --example seal_cost
//! ```

use std::io::Write;
use std::time::Instant;

use dropbox_shell::secure::udp::{Sealer, Side, Ticket};
use dropbox_shell::secure::{SecureReader, SecureWriter, session_in_memory};

const GIB: usize = 1 << 30;
/// Sealed bytes kept in memory and opened again until a GiB is read.
const SLICE: usize = 64 << 20;

fn main() -> dropbox_shell::Result<()> {
    let (client, server, nonce) = session_in_memory()?;
    let block = vec![0x5au8; 1 << 20];

    // TCP: seal a GiB into a sink, then open the same 64 MiB 16 times.
    let t = Instant::now();
    let mut w = SecureWriter::new(std::io::sink(), server.clone(), nonce);
    for _ in 0..GIB / block.len() {
        w.write_all(&block)?;
    }
    w.flush()?;
    let seal_tcp = t.elapsed().as_secs_f64();
    let mut sealed = SecureWriter::new(Vec::with_capacity(SLICE + SLICE / 64), server, nonce);
    for _ in 0..SLICE / block.len() {
        sealed.write_all(&block)?;
    }
    sealed.flush()?;
    let sealed = sealed.get_ref().clone();
    let mut chunk = vec![0u8; 1 << 20];
    let t = Instant::now();
    for _ in 0..GIB / SLICE {
        let mut r = SecureReader::new(&sealed[..], client.clone(), nonce, 256 << 10);
        while r.read_direct(&mut chunk)? > 0 {}
    }
    let open_tcp = t.elapsed().as_secs_f64();

    // UDP: seal and open a GiB of full datagrams.
    let ticket = Ticket::random()?;
    let (mut tx, mut rx) = (
        Sealer::new(&ticket, Side::Server),
        Sealer::new(&ticket, Side::Client),
    );
    let payload = vec![0x5au8; 64_512];
    let mut out = Vec::with_capacity(65_536);
    let (mut seal_udp, mut open_udp) = (0.0, 0.0);
    for _ in 0..GIB / payload.len() {
        let t = Instant::now();
        tx.seal(&payload, &mut out);
        let t2 = Instant::now();
        rx.open(&mut out)
            .map_err(|e| dropbox_shell::Error::new(format!("{e:?}")))?;
        open_udp += t2.elapsed().as_secs_f64();
        seal_udp += (t2 - t).as_secs_f64();
    }
    println!("seal TCP records\t{seal_tcp:.3}\ts per GiB");
    println!("open TCP records\t{open_tcp:.3}\ts per GiB");
    println!("seal UDP datagrams\t{seal_udp:.3}\ts per GiB");
    println!("open UDP datagrams\t{open_udp:.3}\ts per GiB");
    Ok(())
}
