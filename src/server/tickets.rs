//! The UDP tickets a server hands out: a TCP connection asks for one
//! ([`TicketDesk::issue`], answered inside the encrypted channel), and the
//! UDP thread keeps it ([`Tickets`]) to open and seal that client's
//! datagrams, with the id the connection's key proved (for the log). Bounded: at most [`UDP_TICKETS`] are kept, one unused for
//! [`TICKET_IDLE`] is forgotten, and past the bound the longest idle one
//! without a transfer gives way (a flood of ticket requests can evict
//! idle tickets, never one whose transfer is running).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use super::admission::address_key;
use crate::limits::{TICKET_IDLE, TICKETS_PER_ADDRESS, UDP_TICKETS};
use crate::secure::udp::{Sealer, Side, Ticket};
use crate::{Result, bail};

/// Where TCP connections leave the tickets they issue for the UDP thread.
#[derive(Clone)]
pub struct TicketDesk {
    tx: Sender<Issued>,
    rx: Receiver<Issued>,
    /// Live tickets per address (issued and not yet dropped).
    live: Live,
}

/// Live tickets per address, shared by the desk and the UDP thread.
type Live = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// A ticket, the proven id of the peer it was issued to, and its address.
type Issued = (Ticket, Option<String>, IpAddr);

impl Default for TicketDesk {
    fn default() -> Self {
        let (tx, rx) = bounded(UDP_TICKETS);
        TicketDesk {
            tx,
            rx,
            live: Live::default(),
        }
    }
}

/// One ticket of `ip` is gone.
fn release(live: &Live, ip: IpAddr) {
    if let Ok(mut live) = live.lock()
        && let Some(n) = live.get_mut(&ip)
    {
        *n -= 1;
        if *n == 0 {
            live.remove(&ip);
        }
    }
}

impl TicketDesk {
    /// A new ticket for the peer at `from` proven to be `holder`, handed
    /// to the UDP thread before it is returned (so a datagram that uses it
    /// finds it there).
    pub fn issue(&self, holder: Option<&str>, from: IpAddr) -> Result<Ticket> {
        let ip = address_key(from);
        {
            let mut live = self
                .live
                .lock()
                .map_err(|_| crate::Error::new("ticket table"))?;
            let n = live.entry(ip).or_default();
            if *n >= TICKETS_PER_ADDRESS {
                bail!(
                    "the peer is busy (your address holds {TICKETS_PER_ADDRESS} UDP tickets); try again shortly"
                );
            }
            *n += 1;
        }
        let t = Ticket::random()?;
        // The copy that goes back to the client; the UDP thread seals with
        // the other.
        let theirs = Ticket {
            id: t.id,
            secret: t.secret,
        };
        match self.tx.try_send((t, holder.map(str::to_string), ip)) {
            Ok(()) => Ok(theirs),
            Err(e) => {
                release(&self.live, ip);
                match e {
                    TrySendError::Full(_) => {
                        bail!("the peer is busy (too many UDP tickets at once); try again shortly")
                    }
                    TrySendError::Disconnected(_) => bail!("the peer does not serve UDP now"),
                }
            }
        }
    }

    /// The UDP thread's end.
    pub fn tickets(&self) -> Tickets {
        Tickets {
            rx: self.rx.clone(),
            held: HashMap::new(),
            live: self.live.clone(),
        }
    }
}

struct Held {
    sealer: Sealer,
    used: Instant,
    holder: Option<String>,
    from: IpAddr,
}

/// The tickets the UDP thread holds, by number.
pub struct Tickets {
    rx: Receiver<Issued>,
    held: HashMap<u64, Held>,
    live: Live,
}

impl Tickets {
    /// Take in the tickets issued since the last call; `busy` tells which
    /// held tickets have a transfer running (those are never evicted).
    pub fn collect(&mut self, now: Instant, busy: &dyn Fn(u64) -> bool) {
        while let Ok((t, holder, from)) = self.rx.try_recv() {
            let room = self.held.len() < UDP_TICKETS || self.evict_idlest(busy);
            // (A number already held, a 2^-64 chance, keeps the one held.)
            if !room || self.held.contains_key(&t.id) {
                release(&self.live, from);
                continue;
            }
            let held = Held {
                sealer: Sealer::new(&t, Side::Server),
                used: now,
                holder,
                from,
            };
            self.held.insert(t.id, held);
        }
    }

    /// Drop ticket `id` (its download ended well, or it expired).
    pub fn drop_ticket(&mut self, id: u64) {
        if let Some(h) = self.held.remove(&id) {
            release(&self.live, h.from);
        }
    }

    fn evict_idlest(&mut self, busy: &dyn Fn(u64) -> bool) -> bool {
        let idlest = self
            .held
            .iter()
            .filter(|(id, _)| !busy(**id))
            .min_by_key(|(_, h)| h.used)
            .map(|(id, _)| *id);
        idlest.inspect(|id| self.drop_ticket(*id)).is_some()
    }

    /// Ticket `id`, looked for among the new ones too (not marked used:
    /// nothing is authenticated yet).
    pub fn find(
        &mut self,
        id: u64,
        now: Instant,
        busy: &dyn Fn(u64) -> bool,
    ) -> Option<&mut Sealer> {
        if !self.held.contains_key(&id) {
            self.collect(now, busy);
        }
        self.get(id)
    }

    /// A datagram under ticket `id` opened: it is in use.
    pub fn touch(&mut self, id: u64, now: Instant) {
        if let Some(h) = self.held.get_mut(&id) {
            h.used = now;
        }
    }

    /// Ticket `id`, not marked used (to send with).
    pub fn get(&mut self, id: u64) -> Option<&mut Sealer> {
        self.held.get_mut(&id).map(|h| &mut h.sealer)
    }

    /// Forget the tickets idle for [`TICKET_IDLE`] without a transfer.
    pub fn expire(&mut self, now: Instant, busy: &dyn Fn(u64) -> bool) {
        let old: Vec<u64> = self
            .held
            .iter()
            .filter(|(id, h)| !busy(**id) && now.duration_since(h.used) >= TICKET_IDLE)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            self.drop_ticket(id);
        }
    }

    /// The proven id of the peer ticket `id` was issued to.
    pub fn holder(&self, id: u64) -> Option<&str> {
        self.held.get(&id)?.holder.as_deref()
    }

    /// Whether ticket `id` is held.
    pub fn holds(&self, id: u64) -> bool {
        self.held.contains_key(&id)
    }

    /// Ticket `id`'s counts of forged and replayed datagrams.
    pub fn counts(&self, id: u64) -> (u64, u64) {
        self.held
            .get(&id)
            .map_or((0, 0), |h| (h.sealer.forged, h.sealer.replayed))
    }

    /// How many tickets are held.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    /// A ticket from a new address each time (the per-address quota is
    /// its own test).
    fn issue(desk: &TicketDesk) -> Result<Ticket> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        desk.issue(None, IpAddr::from(n.to_be_bytes()))
    }

    #[test]
    fn a_ticket_issued_is_found_by_the_udp_side() {
        let desk = TicketDesk::default();
        let mut tickets = desk.tickets();
        let t = desk.issue(Some("AAAA-BBBB"), ip(1)).unwrap();
        let now = Instant::now();
        assert!(tickets.find(t.id, now, &|_| false).is_some());
        assert_eq!(tickets.holder(t.id), Some("AAAA-BBBB"));
        assert!(tickets.find(t.id ^ 1, now, &|_| false).is_none());
    }

    #[test]
    fn tickets_stay_bounded_and_busy_ones_are_never_evicted() {
        let desk = TicketDesk::default();
        let mut tickets = desk.tickets();
        let now = Instant::now();
        let first = issue(&desk).unwrap();
        tickets.collect(now, &|_| false);
        let busy = |id| id == first.id;
        for i in 0..3 * UDP_TICKETS {
            // The channel holds UDP_TICKETS: collect as the UDP loop does.
            issue(&desk).unwrap();
            tickets.collect(now + Duration::from_millis(i as u64 + 1), &busy);
        }
        assert_eq!(tickets.held(), UDP_TICKETS);
        assert!(tickets.get(first.id).is_some(), "the busy ticket stayed");
        // Past the bound of the channel, issuing is refused, not queued.
        for _ in 0..UDP_TICKETS {
            issue(&desk).unwrap();
        }
        let e = issue(&desk).unwrap_err();
        assert!(e.to_string().contains("busy"), "{e}");
    }

    #[test]
    fn one_address_holds_a_few_tickets_until_they_are_dropped() {
        let desk = TicketDesk::default();
        let mut tickets = desk.tickets();
        let mine: Vec<Ticket> = (0..TICKETS_PER_ADDRESS)
            .map(|_| desk.issue(None, ip(7)).unwrap())
            .collect();
        let e = desk.issue(None, ip(7)).unwrap_err();
        assert!(e.to_string().contains("your address"), "{e}");
        assert!(desk.issue(None, ip(8)).is_ok(), "another address");
        // Once the UDP side drops one, the address may have another.
        tickets.collect(Instant::now(), &|_| false);
        tickets.drop_ticket(mine[0].id);
        assert!(desk.issue(None, ip(7)).is_ok());
    }

    #[test]
    fn idle_tickets_are_forgotten() {
        let desk = TicketDesk::default();
        let mut tickets = desk.tickets();
        let (a, b) = (issue(&desk).unwrap(), issue(&desk).unwrap());
        let now = Instant::now();
        tickets.collect(now, &|_| false);
        let later = now + TICKET_IDLE + Duration::from_secs(1);
        tickets.expire(later, &|id| id == b.id);
        assert!(tickets.get(a.id).is_none());
        assert!(tickets.get(b.id).is_some());
    }
}
