//! What discovery found, with no I/O: the peers announced on the LAN,
//! checked and bounded. An announcement is only a suggestion of an
//! address (the handshake decides who answers there), so what it may cost
//! is bounded: at most [`MAX_FOUND`] entries, each field cut short, and a
//! flood of strangers' announcements cannot push out a peer of our own
//! group (the oldest stranger gives way first; with no stranger to give
//! way, a newcomer that is not of our group is not taken).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use crate::secure::PeerId;

/// Peers discovery keeps at most.
pub const MAX_FOUND: usize = 256;
/// New announcements taken per second, after a burst of [`NEW_BURST`]
/// (refreshes of what is known always are).
pub const NEW_PER_SECOND: f64 = 20.0;
pub const NEW_BURST: f64 = 100.0;
/// Longest zone name kept from an announcement.
pub const ZONE_LEN: usize = 64;

/// One peer announced on the LAN, as its announcement describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its announced id (only a claim until a handshake proves it).
    pub id: PeerId,
    /// Where it says it listens.
    pub addr: SocketAddr,
    pub zone: String,
    pub store: bool,
    pub uploads: bool,
    /// Whether its group tag is ours (both with the same group secret).
    pub same_group: bool,
    /// When it was first announced (kept through its refreshes).
    pub seen: Instant,
}

/// The fields of an announcement's TXT record, as received.
#[derive(Debug, Default, Clone)]
pub struct Txt<'a> {
    pub id: Option<&'a str>,
    pub version: Option<&'a str>,
    pub zone: Option<&'a str>,
    pub store: Option<&'a str>,
    pub uploads: Option<&'a str>,
    pub group: Option<&'a str>,
}

impl<'a> Txt<'a> {
    /// The fields, each looked up by its key with `get`.
    pub fn by(get: impl Fn(&str) -> Option<&'a str>) -> Txt<'a> {
        Txt {
            id: get("id"),
            version: get("v"),
            zone: get("zone"),
            store: get("store"),
            uploads: get("up"),
            group: get("group"),
        }
    }
}

/// The TXT record we announce: `id`, `v` (protocol version), `zone`,
/// `store` and `up` (0 or 1), `group` (the tag of our group secret, empty
/// without one).
pub fn txt_of(
    id: &PeerId,
    zone: &str,
    store: bool,
    uploads: bool,
    group: &str,
) -> Vec<(&'static str, String)> {
    let flag = |b: bool| if b { "1" } else { "0" }.to_string();
    vec![
        ("id", id.to_string()),
        ("v", crate::proto::VERSION.to_string()),
        ("zone", zone.chars().take(ZONE_LEN).collect()),
        ("store", flag(store)),
        ("up", flag(uploads)),
        ("group", group.to_string()),
    ]
}

/// An announcement that holds a peer of our protocol version: the peer it
/// describes. `ours` is our own group tag (empty without a secret).
pub fn parse(txt: &Txt, addr: SocketAddr, ours: &str, now: Instant) -> Option<Found> {
    let id = PeerId::parse(txt.id?).ok()?;
    if txt.version? != crate::proto::VERSION.to_string() || addr.port() == 0 {
        return None;
    }
    let group = txt.group.unwrap_or("");
    Some(Found {
        id,
        addr,
        zone: txt.zone.unwrap_or("").chars().take(ZONE_LEN).collect(),
        store: txt.store == Some("1"),
        uploads: txt.uploads == Some("1"),
        same_group: !ours.is_empty() && group == ours,
        seen: now,
    })
}

/// The peers found, by announcement name.
pub struct Table {
    found: HashMap<String, Found>,
    /// Announcements not taken (the table full, too many at once, or
    /// malformed).
    pub refused: u64,
    /// The rate limit of new announcements: tokens, and when last filled.
    tokens: f64,
    filled: Option<Instant>,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            found: HashMap::new(),
            refused: 0,
            tokens: NEW_BURST,
            filled: None,
        }
    }
}

impl Table {
    /// Take (or refresh) the announcement `name`.
    pub fn insert(&mut self, name: &str, mut peer: Found) -> bool {
        let name: String = name.chars().take(256).collect();
        if let Some(old) = self.found.get(&name) {
            peer.seen = old.seen;
            self.found.insert(name, peer);
            return true;
        }
        if !self.take_token(peer.seen) {
            self.refused += 1;
            return false;
        }
        if self.found.len() >= MAX_FOUND {
            let stranger = self
                .found
                .iter()
                .filter(|(_, f)| !f.same_group)
                .max_by_key(|(_, f)| f.seen)
                .map(|(n, _)| n.clone());
            match stranger {
                Some(n) if peer.same_group => {
                    self.found.remove(&n);
                }
                _ => {
                    self.refused += 1;
                    return false;
                }
            }
        }
        self.found.insert(name, peer);
        true
    }

    /// Whether a new announcement may be taken at `now`.
    fn take_token(&mut self, now: Instant) -> bool {
        if let Some(then) = self.filled {
            let secs = now.saturating_duration_since(then).as_secs_f64();
            self.tokens = (self.tokens + secs * NEW_PER_SECOND).min(NEW_BURST);
        }
        self.filled = Some(now);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }

    /// The peer announced as `name`, if taken.
    pub fn get(&self, name: &str) -> Option<&Found> {
        self.found.get(name)
    }

    /// The announcement `name` was withdrawn or expired.
    pub fn remove(&mut self, name: &str) {
        self.found.remove(name);
    }

    /// Every peer found (one per id), our group first, then the oldest
    /// first.
    pub fn peers(&self) -> Vec<Found> {
        let mut all: Vec<Found> = self.found.values().cloned().collect();
        all.sort_by_key(|f| (!f.same_group, f.seen));
        let mut seen_ids = std::collections::HashSet::new();
        all.retain(|f| seen_ids.insert(f.id));
        all
    }

    pub fn len(&self) -> usize {
        self.found.len()
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::Keypair;

    fn id() -> PeerId {
        Keypair::generate().unwrap().id()
    }

    fn found(same_group: bool, at: Instant) -> Found {
        Found {
            id: id(),
            addr: "127.0.0.1:9001".parse().unwrap(),
            zone: String::new(),
            store: false,
            uploads: false,
            same_group,
            seen: at,
        }
    }

    #[test]
    fn an_announcement_round_trips_and_bad_ones_are_refused() {
        let me = id();
        let txt = txt_of(&me, "rack-1", true, false, "abcd");
        let t = Txt::by(|k| txt.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str()));
        let addr = "127.0.0.1:9001".parse().unwrap();
        let now = Instant::now();
        let f = parse(&t, addr, "abcd", now).unwrap();
        assert_eq!(
            (f.id, f.zone.as_str(), f.store, f.uploads),
            (me, "rack-1", true, false)
        );
        assert!(f.same_group);
        assert!(!parse(&t, addr, "other", now).unwrap().same_group);
        // No secret on our side: nobody is of our group.
        assert!(!parse(&t, addr, "", now).unwrap().same_group);
        // Another version, a bad id, no port: not a peer.
        let old = Txt {
            version: Some("2"),
            ..t.clone()
        };
        assert!(parse(&old, addr, "", now).is_none());
        let bad = Txt {
            id: Some("nonsense"),
            ..t.clone()
        };
        assert!(parse(&bad, addr, "", now).is_none());
        assert!(parse(&t, "127.0.0.1:0".parse().unwrap(), "", now).is_none());
    }

    #[test]
    fn a_flood_stays_bounded_and_pushes_out_nothing_found_before() {
        let mut table = Table::default();
        let t0 = Instant::now();
        assert!(table.insert("ours", found(true, t0)));
        assert!(table.insert("known", found(false, t0)));
        for i in 0..10_000u64 {
            let at = t0 + std::time::Duration::from_millis(i + 1);
            table.insert(&format!("stranger-{i}"), found(false, at));
        }
        assert_eq!(table.len(), MAX_FOUND);
        // What was found before the flood is kept, and listed first.
        let listed = table.peers();
        assert!(listed[0].same_group);
        assert!(table.found.contains_key("known"));
        assert!(!table.found.contains_key("stranger-9999"));
        assert_eq!(table.refused, 10_000 - (MAX_FOUND as u64 - 2));
        // (A flood spread over 10 s: the rate allowed about 300 in.)
        // A peer of our group still gets in, in place of the newest stranger.
        let t1 = t0 + std::time::Duration::from_secs(20);
        assert!(table.insert("ours-2", found(true, t1)));
        assert!(table.found.contains_key("known"));
        // A refresh keeps its first sighting.
        let later = t0 + std::time::Duration::from_secs(60);
        table.insert("known", found(false, later));
        assert_eq!(table.found["known"].seen, t0);
        // Full of our group: a stranger is not taken.
        let mut full = Table::default();
        for i in 0..MAX_FOUND {
            let at = t0 + std::time::Duration::from_secs(i as u64);
            full.insert(&format!("g{i}"), found(true, at));
        }
        let later = t0 + std::time::Duration::from_secs(1000);
        assert!(!full.insert("stranger", found(false, later)));
        assert_eq!(full.refused, 1);
        full.remove("g0");
        assert!(full.insert("stranger", found(false, later)));
    }

    #[test]
    fn new_announcements_are_rate_limited_and_refreshes_are_not() {
        let mut table = Table::default();
        let t0 = Instant::now();
        let taken = (0..1000)
            .filter(|i| table.insert(&format!("n{i}"), found(false, t0)))
            .count();
        assert_eq!(taken, NEW_BURST as usize, "a burst at one instant");
        // Refreshing one already taken always works.
        assert!(table.insert("n0", found(false, t0)));
        // A second later, about NEW_PER_SECOND more.
        let t1 = t0 + std::time::Duration::from_secs(1);
        let more = (1000..2000)
            .filter(|i| table.insert(&format!("n{i}"), found(false, t1)))
            .count();
        assert_eq!(more, NEW_PER_SECOND as usize);
    }
}
