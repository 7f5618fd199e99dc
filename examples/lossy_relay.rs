//! A relay that drops, duplicates, reorders, corrupts and replays datagrams
//! (and pipes TCP through as it is, for the keys of `download UDP`), for
//! trying `download UDP` over a bad network on one machine:
//!
//! ```text
//! cargo run --release --example lossy_relay -- 127.0.0.1:7000 127.0.0.1:9001 --loss 0.1
//! dropbox-shell --peer 127.0.0.1:7000 -c 'download UDP big.bin'
//! ```

use std::net::ToSocketAddrs;

use dropbox_shell::relay::{Impairment, Relay};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!(
            "usage: lossy_relay LISTEN TARGET [--loss P] [--duplicate P] [--reorder P] [--corrupt P] [--replay P] [--seed N]"
        );
        std::process::exit(2);
    }
    let mut imp = Impairment {
        seed: 1,
        ..Default::default()
    };
    let mut rest = args[2..].iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().and_then(|v| v.parse::<f64>().ok());
        let Some(v) = value else {
            eprintln!("lossy_relay: {flag} needs a number");
            std::process::exit(2);
        };
        match flag.as_str() {
            "--loss" => imp.loss = v,
            "--duplicate" => imp.duplicate = v,
            "--reorder" => imp.reorder = v,
            "--corrupt" => imp.corrupt = v,
            "--replay" => imp.replay = v,
            "--seed" => imp.seed = v as u64,
            other => {
                eprintln!("lossy_relay: unknown flag {other}");
                std::process::exit(2);
            }
        }
    }
    let Some(target) = args[1].to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        eprintln!("lossy_relay: cannot resolve {}", args[1]);
        std::process::exit(2);
    };
    match Relay::start(&args[0], target, imp.clone()) {
        Ok(relay) => {
            eprintln!(
                "lossy_relay: {} -> {target} with {imp:?}",
                relay.local_addr()
            );
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            eprintln!("lossy_relay: {e}");
            std::process::exit(1);
        }
    }
}
