//! The UDP tickets a server hands out: a TCP connection asks for one
//! ([`TicketDesk::issue`], answered inside the encrypted channel), and the
//! UDP thread keeps it ([`Tickets`]) to open and seal that client's
//! datagrams, with the id the connection's key proved (for the log). Bounded: at most [`UDP_TICKETS`] are kept, one unused for
//! [`TICKET_IDLE`] is forgotten, and past the bound the longest idle one
//! without a transfer gives way (a flood of ticket requests can evict
//! idle tickets, never one whose transfer is running).

use std::collections::HashMap;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::limits::{TICKET_IDLE, UDP_TICKETS};
use crate::secure::udp::{Sealer, Side, Ticket};
use crate::{Result, bail};

/// Where TCP connections leave the tickets they issue for the UDP thread.
#[derive(Clone)]
pub struct TicketDesk {
    tx: Sender<Issued>,
    rx: Receiver<Issued>,
}

/// A ticket and the proven id of the peer it was issued to.
type Issued = (Ticket, Option<String>);

impl Default for TicketDesk {
    fn default() -> Self {
        let (tx, rx) = bounded(UDP_TICKETS);
        TicketDesk { tx, rx }
    }
}

impl TicketDesk {
    /// A new ticket for the peer proven to be `holder`, handed to the UDP
    /// thread before it is returned (so a datagram that uses it finds it
    /// there).
    pub fn issue(&self, holder: Option<&str>) -> Result<Ticket> {
        let t = Ticket::random()?;
        match self.tx.try_send((t.clone(), holder.map(str::to_string))) {
            Ok(()) => Ok(t),
            Err(TrySendError::Full(_)) => {
                bail!("the peer is busy (too many UDP tickets at once); try again shortly")
            }
            Err(TrySendError::Disconnected(_)) => bail!("the peer does not serve UDP now"),
        }
    }

    /// The UDP thread's end.
    pub fn tickets(&self) -> Tickets {
        Tickets {
            rx: self.rx.clone(),
            held: HashMap::new(),
        }
    }
}

struct Held {
    sealer: Sealer,
    used: Instant,
    holder: Option<String>,
}

/// The tickets the UDP thread holds, by number.
pub struct Tickets {
    rx: Receiver<Issued>,
    held: HashMap<u64, Held>,
}

impl Tickets {
    /// Take in the tickets issued since the last call; `busy` tells which
    /// held tickets have a transfer running (those are never evicted).
    pub fn collect(&mut self, now: Instant, busy: &dyn Fn(u64) -> bool) {
        while let Ok((t, holder)) = self.rx.try_recv() {
            if self.held.len() >= UDP_TICKETS && !self.evict_idlest(busy) {
                continue;
            }
            self.held.insert(
                t.id,
                Held {
                    sealer: Sealer::new(&t, Side::Server),
                    used: now,
                    holder,
                },
            );
        }
    }

    fn evict_idlest(&mut self, busy: &dyn Fn(u64) -> bool) -> bool {
        let idlest = self
            .held
            .iter()
            .filter(|(id, _)| !busy(**id))
            .min_by_key(|(_, h)| h.used)
            .map(|(id, _)| *id);
        idlest.is_some_and(|id| self.held.remove(&id).is_some())
    }

    /// Ticket `id`, marked used now; looked for among the new ones too.
    pub fn find(
        &mut self,
        id: u64,
        now: Instant,
        busy: &dyn Fn(u64) -> bool,
    ) -> Option<&mut Sealer> {
        if !self.held.contains_key(&id) {
            self.collect(now, busy);
        }
        let h = self.held.get_mut(&id)?;
        h.used = now;
        Some(&mut h.sealer)
    }

    /// Ticket `id`, not marked used (to send with).
    pub fn get(&mut self, id: u64) -> Option<&mut Sealer> {
        self.held.get_mut(&id).map(|h| &mut h.sealer)
    }

    /// Forget the tickets idle for [`TICKET_IDLE`] without a transfer.
    pub fn expire(&mut self, now: Instant, busy: &dyn Fn(u64) -> bool) {
        self.held
            .retain(|id, h| busy(*id) || now.duration_since(h.used) < TICKET_IDLE);
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

    #[test]
    fn a_ticket_issued_is_found_by_the_udp_side() {
        let desk = TicketDesk::default();
        let mut tickets = desk.tickets();
        let t = desk.issue(Some("AAAA-BBBB")).unwrap();
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
        let first = desk.issue(None).unwrap();
        tickets.collect(now, &|_| false);
        let busy = |id| id == first.id;
        for i in 0..3 * UDP_TICKETS {
            // The channel holds UDP_TICKETS: collect as the UDP loop does.
            desk.issue(None).unwrap();
            tickets.collect(now + Duration::from_millis(i as u64 + 1), &busy);
        }
        assert_eq!(tickets.held(), UDP_TICKETS);
        assert!(tickets.get(first.id).is_some(), "the busy ticket stayed");
        // Past the bound of the channel, issuing is refused, not queued.
        for _ in 0..UDP_TICKETS {
            desk.issue(None).unwrap();
        }
        let e = desk.issue(None).unwrap_err();
        assert!(e.to_string().contains("busy"), "{e}");
    }

    #[test]
    fn idle_tickets_are_forgotten() {
        let desk = TicketDesk::default();
        let mut tickets = desk.tickets();
        let (a, b) = (desk.issue(None).unwrap(), desk.issue(None).unwrap());
        let now = Instant::now();
        tickets.collect(now, &|_| false);
        let later = now + TICKET_IDLE + Duration::from_secs(1);
        tickets.expire(later, &|id| id == b.id);
        assert!(tickets.get(a.id).is_none());
        assert!(tickets.get(b.id).is_some());
    }
}
