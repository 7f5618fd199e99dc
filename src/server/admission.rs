//! Who may start a handshake: at most half of the connection slots may be
//! in the handshake from one source address at once, so a flood of
//! handshakes from one address (silent ones held until the handshake
//! deadline, or garbage) cannot take every slot from the others, as sshd's
//! `MaxStartups` keeps unauthenticated connections from crowding out the
//! rest. A connection that finished its handshake is a proven peer and
//! counts only against the overall cap. A [`Handshaking`] gives its count
//! back when dropped; the table has an entry only per address with a
//! handshake running, so it is bounded by the connection cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Handshakes running, per source address.
#[derive(Default)]
pub struct Handshakes {
    running: Mutex<HashMap<IpAddr, usize>>,
}

/// Most handshakes one address may have running, with `cap` slots.
pub fn per_address(cap: usize) -> usize {
    (cap / 2).max(1)
}

impl Handshakes {
    /// A handshake from `ip` may start, or `None` when `ip` has its share
    /// running already.
    pub fn start(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<Handshaking> {
        let mut running = self.running.lock().ok()?;
        let n = running.entry(ip).or_default();
        if *n >= per_address(cap) {
            return None;
        }
        *n += 1;
        Some(Handshaking {
            table: self.clone(),
            ip,
        })
    }

    /// Handshakes `ip` has running.
    pub fn of(&self, ip: IpAddr) -> usize {
        self.running
            .lock()
            .ok()
            .and_then(|r| r.get(&ip).copied())
            .unwrap_or(0)
    }

    /// Addresses with a handshake running.
    pub fn addresses(&self) -> usize {
        self.running.lock().map(|r| r.len()).unwrap_or(0)
    }
}

/// One running handshake, counted until dropped.
pub struct Handshaking {
    table: Arc<Handshakes>,
    ip: IpAddr,
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        if let Ok(mut running) = self.table.running.lock()
            && let Some(n) = running.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_gets_half_the_slots_and_the_others_keep_theirs() {
        let t = Arc::new(Handshakes::default());
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "::1".parse().unwrap());
        let mut running: Vec<Handshaking> = (0..8).map(|_| t.start(a, 16).unwrap()).collect();
        assert!(
            t.start(a, 16).is_none(),
            "a ninth handshake from one address"
        );
        let other = t.start(b, 16);
        assert!(other.is_some(), "another address starts its own");
        // A finished handshake gives its share back; the entry goes with
        // the last one.
        running.pop();
        assert_eq!(t.of(a), 7);
        assert!(t.start(a, 16).is_some());
        drop(running);
        drop(other);
        assert_eq!(t.addresses(), 0);
    }

    #[test]
    fn a_single_slot_still_admits_one() {
        let t = Arc::new(Handshakes::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let one = t.start(ip, 1).unwrap();
        assert!(t.start(ip, 1).is_none());
        drop(one);
        assert!(t.start(ip, 1).is_some());
    }
}
