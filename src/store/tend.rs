//! A store's timer (thread `store-tend`): at start and every
//! `--repair-interval`, it asks its `--peer`s, the stores found on the LAN
//! and the stores it knows who
//! they are, tells the stores among them that it is one too (so a store
//! started with `--peer` at one store is soon known to all of them and to
//! owners asking any of them), and forgets addresses that no longer answer
//! as stores. Then it tends its deposits with the stores that answered
//! ([`super::repair`]). Stopped through its channel; the tick has ±20%
//! jitter.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::Store;
use super::repair::Live;
use crate::client::Client;
use crate::limits::KNOWN_STORES;
use crate::placement::Candidate;
use crate::secure::Credentials;

/// What the timer works with.
pub struct TendConfig {
    pub creds: Credentials,
    /// This store's id (its own address is never noted).
    pub own_id: String,
    /// The port it listens on, told to the stores it asks.
    pub listen_port: u16,
    /// `--peer` addresses.
    pub seeds: Vec<String>,
    /// Addresses of stores found on the LAN now.
    pub lan: Box<dyn Fn() -> Vec<String> + Send + Sync>,
    pub interval: Duration,
    pub io_timeout: Duration,
}

/// The running timer.
pub struct Tend {
    stop: Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Tend {
    pub fn start(store: Arc<Store>, cfg: TendConfig) -> crate::Result<Tend> {
        let (stop, stopped) = bounded(1);
        let thread = std::thread::Builder::new()
            .name("store-tend".into())
            .spawn(move || run(&store, &cfg, &stopped))?;
        Ok(Tend {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop and wait for the thread.
    pub fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(store: &Store, cfg: &TendConfig, stopped: &Receiver<()>) {
    let (mut cursor, mut scrubbed) = (0, 0);
    loop {
        scrubbed = super::repair::scrub(store, scrubbed);
        let live = tick(store, cfg);
        let me = Candidate {
            id: cfg.own_id.clone(),
            zone: store.zone().to_string(),
            free: store.status().free,
        };
        let connect = |addr: &str| {
            Client::connect(
                addr,
                &cfg.creds,
                Arc::new(AtomicBool::new(false)),
                cfg.io_timeout,
            )
        };
        cursor = super::repair::tick(store, &me, &live, &connect, cursor);
        let jitter = 0.8 + fastrand::f64() * 0.4;
        match stopped.recv_timeout(cfg.interval.mul_f64(jitter)) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

/// One round of asking: seeds and known stores, eight at a time; the
/// stores that answered.
pub fn tick(store: &Store, cfg: &TendConfig) -> Vec<Live> {
    let mut live = Vec::new();
    let mut addrs: Vec<String> = Vec::new();
    for a in cfg
        .seeds
        .iter()
        .cloned()
        .chain((cfg.lan)())
        .chain(store.stores_to_ask())
    {
        if !addrs.contains(&a) && addrs.len() < KNOWN_STORES {
            addrs.push(a);
        }
    }
    let told = crate::client::fan_out(&addrs, &|a| ask(a, cfg));
    for (addr, answer) in addrs.iter().zip(told) {
        match answer.flatten() {
            Some((one, more)) => {
                store.confirm_store(addr);
                if !live.iter().any(|l: &Live| l.cand.id == one.cand.id) {
                    live.push(one);
                }
                for m in more {
                    if !addrs.contains(&m) {
                        store.note_store(&m);
                    }
                }
            }
            None => store.drop_store(addr),
        }
    }
    live
}

/// A store that answered, and the stores it knows.
type Answer = (Live, Vec<String>);

/// Who the store at `addr` is and the stores it knows, if it is a store
/// (not us) that answers.
fn ask(addr: &str, cfg: &TendConfig) -> Option<Answer> {
    let cancel = Arc::new(AtomicBool::new(false));
    let mut c = Client::connect(addr, &cfg.creds, cancel, cfg.io_timeout).ok()?;
    let info = c.info().ok()?;
    let room = info.store?;
    if info.peer_id == cfg.own_id {
        return None;
    }
    let live = Live {
        addr: addr.to_string(),
        cand: Candidate {
            id: info.peer_id,
            zone: info.zone.unwrap_or_else(|| addr.to_string()),
            free: room.free,
        },
    };
    Some((live, c.store_list(Some(cfg.listen_port)).ok()?))
}
