//! Discovery on the wire: multicast DNS service discovery (RFC 6762/6763)
//! through the `mdns-sd` crate, whose daemon is one thread talking over
//! channels. We announce `<short id>._dropbox-shell._tcp.local.` with our
//! port and a TXT record ([`super::table::txt_of`]), browse for the same
//! service type, and keep what is found in a bounded [`Table`] filled by
//! one thread of ours. A clean stop withdraws the announcement (a
//! goodbye), so the others drop us at once; a peer that vanishes is
//! dropped when its records expire.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mdns_sd::{IfKind, RecvTimeoutError, ServiceDaemon, ServiceEvent, ServiceInfo};

use super::table::{Found, Table, Txt, parse, txt_of};
use crate::secure::PeerId;
use crate::{Error, Result};

/// The DNS-SD service type of dropbox-shell peers.
pub const SERVICE: &str = "_dropbox-shell._tcp.local.";

/// What we announce.
#[derive(Debug, Clone)]
pub struct Announce {
    pub id: PeerId,
    /// The address we listen on (an unspecified address: every interface).
    pub listen: SocketAddr,
    pub zone: String,
    pub store: bool,
    pub uploads: bool,
    /// The tag of our group secret (empty without one).
    pub group: String,
}

/// Told of each peer of our own group found (or found at a new address).
pub type OnGroupPeer = Box<dyn Fn(&Found) + Send>;

/// Discovery running: our announcement, the browse, and what it found.
pub struct Lan {
    daemon: ServiceDaemon,
    fullname: String,
    table: Arc<Mutex<Table>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn mdns_error(e: mdns_sd::Error) -> Error {
    Error::new(format!("LAN discovery: {e}"))
}

impl Lan {
    /// Announce `me` and browse for the others; `on_group_peer` hears of
    /// each peer of our group found.
    pub fn start(me: &Announce, on_group_peer: Option<OnGroupPeer>) -> Result<Lan> {
        let daemon = ServiceDaemon::new().map_err(mdns_error)?;
        let ip = me.listen.ip();
        if ip.is_loopback() {
            // Only where we can be reached.
            daemon.disable_interface(IfKind::All).map_err(mdns_error)?;
            let lo = if ip.is_ipv4() {
                IfKind::LoopbackV4
            } else {
                IfKind::LoopbackV6
            };
            daemon.enable_interface(lo).map_err(mdns_error)?;
        } else if !ip.is_unspecified() {
            daemon.disable_interface(IfKind::All).map_err(mdns_error)?;
            daemon
                .enable_interface(IfKind::Addr(ip))
                .map_err(mdns_error)?;
        }
        let short = me.id.short();
        let txt = txt_of(&me.id, &me.zone, me.store, me.uploads, &me.group);
        let txt: Vec<(&str, &str)> = txt.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let host = format!("dbsh-{}.local.", short.to_ascii_lowercase());
        let addrs: Vec<IpAddr> = if ip.is_unspecified() {
            vec![]
        } else {
            vec![ip]
        };
        let mut info = ServiceInfo::new(
            SERVICE,
            &short,
            &host,
            &addrs[..],
            me.listen.port(),
            &txt[..],
        )
        .map_err(mdns_error)?;
        if ip.is_unspecified() {
            info = info.enable_addr_auto();
        }
        let fullname = info.get_fullname().to_string();
        daemon.register(info).map_err(mdns_error)?;
        let events = daemon.browse(SERVICE).map_err(mdns_error)?;
        let table = Arc::new(Mutex::new(Table::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s, ours, group) = (table.clone(), stop.clone(), me.id, me.group.clone());
        let thread = std::thread::Builder::new()
            .name("lan-browse".into())
            .spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    match events.recv_timeout(Duration::from_millis(200)) {
                        Ok(ev) => {
                            if let Some(f) = take(&t, ev, &ours, &group)
                                && let Some(tell) = &on_group_peer
                            {
                                tell(&f);
                            }
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                        Err(_) => {}
                    }
                }
            })?;
        Ok(Lan {
            daemon,
            fullname,
            table,
            stop,
            thread: Some(thread),
        })
    }

    /// The peers found now (ourselves left out), newest first.
    pub fn found(&self) -> Vec<Found> {
        self.table.lock().map(|t| t.peers()).unwrap_or_default()
    }

    /// Withdraw the announcement (goodbye), stop browsing and join.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            // The goodbye is sent before the daemon stops (bounded wait).
            let _ = done.recv_timeout(Duration::from_secs(1));
        }
        let _ = self.daemon.stop_browse(SERVICE);
        if let Ok(done) = self.daemon.shutdown() {
            let _ = done.recv_timeout(Duration::from_secs(1));
        }
        self.stop.store(true, Ordering::SeqCst);
        let _ = thread.join();
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One browse event into the table: a peer of our group that is new
/// there (or at a new address).
fn take(table: &Mutex<Table>, ev: ServiceEvent, ours: &PeerId, group: &str) -> Option<Found> {
    let mut table = table.lock().ok()?;
    match ev {
        ServiceEvent::ServiceResolved(r) => {
            let txt = Txt::by(|k| r.get_property_val_str(k));
            // One address to reach it by: IPv4 first.
            let mut ips: Vec<IpAddr> = r.get_addresses().iter().map(|a| a.to_ip_addr()).collect();
            ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
            let Some(ip) = ips.first() else {
                table.refused += 1;
                return None;
            };
            let addr = SocketAddr::new(*ip, r.get_port());
            match parse(&txt, addr, group, Instant::now()) {
                Some(f) if f.id != *ours => {
                    let known = table.get(r.get_fullname()).map(|k| (k.id, k.addr));
                    let news = known != Some((f.id, f.addr)) && f.same_group;
                    let taken = table.insert(r.get_fullname(), f.clone());
                    (taken && news).then_some(f)
                }
                Some(_) => None,
                None => {
                    table.refused += 1;
                    None
                }
            }
        }
        ServiceEvent::ServiceRemoved(_, name) => {
            table.remove(&name);
            None
        }
        _ => None,
    }
}
