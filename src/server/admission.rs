//! Who may take a connection slot: from one source address, at most half
//! of the slots may be in the handshake at once and at most three quarters
//! held in all, so a flood from one address (silent handshakes held until
//! the handshake deadline, garbage, or handshakes completed and then kept
//! idle) cannot take every slot from the others, as sshd's `MaxStartups`
//! keeps unauthenticated connections from crowding out the rest. A
//! [`Handshaking`] turns into a [`Connected`] when its handshake is over;
//! each gives its counts back when dropped. The table has an entry only
//! per address holding a slot, so it is bounded by the connection cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Per source address: handshakes running, and connections in all.
#[derive(Default)]
pub struct Handshakes {
    running: Mutex<HashMap<IpAddr, (usize, usize)>>,
}

/// What a per-address bound counts as one address: an IPv4 address as it
/// is (a v4-mapped IPv6 one as IPv4), an IPv6 one by its /64 (one host
/// usually holds a whole /64, and could otherwise be 2^64 "addresses").
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            seg[4..].fill(0);
            IpAddr::V6(seg.into())
        }
        v4 => v4,
    }
}

/// Most handshakes one address may have running, with `cap` slots.
pub fn per_address(cap: usize) -> usize {
    (cap / 2).max(1)
}

/// Most connections one address may hold, with `cap` slots.
pub fn held_per_address(cap: usize) -> usize {
    cap - cap / 4
}

impl Handshakes {
    /// A handshake from `ip` may start, or `None` when `ip` has its share
    /// running already.
    pub fn start(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<Handshaking> {
        let ip = address_key(ip);
        let mut running = self.running.lock().ok()?;
        let (shaking, held) = running.entry(ip).or_default();
        if *shaking >= per_address(cap) || *held >= held_per_address(cap) {
            if *held == 0 {
                running.remove(&ip);
            }
            return None;
        }
        *shaking += 1;
        *held += 1;
        Some(Handshaking(Connected {
            table: self.clone(),
            ip,
            shaking: true,
        }))
    }

    /// What `ip` holds: (handshakes running, connections in all).
    pub fn of(&self, ip: IpAddr) -> (usize, usize) {
        self.running
            .lock()
            .ok()
            .and_then(|r| r.get(&address_key(ip)).copied())
            .unwrap_or_default()
    }

    /// Addresses with a handshake running.
    pub fn addresses(&self) -> usize {
        self.running.lock().map(|r| r.len()).unwrap_or(0)
    }
}

/// A connection whose handshake is running, counted until dropped or
/// [`Handshaking::done`].
pub struct Handshaking(Connected);

impl Handshaking {
    /// The handshake is over: the connection keeps its slot only.
    pub fn done(mut self) -> Connected {
        self.0.end_handshake();
        self.0
    }
}

/// A connection's slot, given back when dropped.
pub struct Connected {
    table: Arc<Handshakes>,
    ip: IpAddr,
    shaking: bool,
}

impl Connected {
    fn end_handshake(&mut self) {
        if std::mem::take(&mut self.shaking)
            && let Ok(mut running) = self.table.running.lock()
            && let Some((shaking, _)) = running.get_mut(&self.ip)
        {
            *shaking -= 1;
        }
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.end_handshake();
        if let Ok(mut running) = self.table.running.lock()
            && let Some((_, held)) = running.get_mut(&self.ip)
        {
            *held -= 1;
            if *held == 0 {
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
        // Finished handshakes keep their slots: four more may start, then
        // the address holds three quarters of them.
        let done: Vec<Connected> = running.drain(..).map(Handshaking::done).collect();
        assert_eq!(t.of(a), (0, 8));
        running.extend((0..4).map(|_| t.start(a, 16).unwrap()));
        assert_eq!(t.of(a), (4, 12));
        assert!(t.start(a, 16).is_none(), "three quarters held");
        // Everything given back; the entries go with the last ones.
        drop(running);
        drop(done);
        drop(other);
        assert_eq!(t.addresses(), 0);
    }

    #[test]
    fn an_ipv6_host_counts_by_its_64_and_mapped_v4_as_v4() {
        let t = Arc::new(Handshakes::default());
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let _a = t.start(one, 2).unwrap();
        assert!(t.start(same_64, 2).is_none(), "the same /64");
        assert!(t.start("2001:db8:1:3::1".parse().unwrap(), 2).is_some());
        let _b = t.start("127.0.0.9".parse().unwrap(), 2).unwrap();
        assert!(t.start("::ffff:127.0.0.9".parse().unwrap(), 2).is_none());
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
