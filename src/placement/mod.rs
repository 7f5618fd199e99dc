//! Where the copies of a deposit go: rendezvous (highest-random-weight)
//! hashing. Every store gets a score from a hash of (owner, deposit name,
//! store id); the stores ranked by score are the deposit's order of
//! preference. Copies go to the first store of each zone in that order,
//! one per zone, until there are enough. The same inputs give the same
//! places on every machine; a store that leaves moves only its own copies,
//! and one that joins takes a copy only where it ranks first in its zone.
//! Pure: no I/O, tested step by step.

use ring::digest::{SHA256, digest};

/// Longest zone name.
pub const ZONE_LEN: usize = 64;

/// A zone name as `--zone` takes it: 1 to 64 characters, none of them
/// blank or a control character.
pub fn parse_zone(text: &str) -> crate::Result<String> {
    let ok = !text.is_empty()
        && text.len() <= ZONE_LEN
        && !text.chars().any(|c| c.is_control() || c.is_whitespace());
    if !ok {
        return Err(crate::Error::of(
            crate::ErrorKind::BadInput,
            format!("{text:?} cannot be a zone: 1 to {ZONE_LEN} characters, no blanks"),
        ));
    }
    Ok(text.to_string())
}

/// A store that may take a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub zone: String,
    /// Bytes it says it can still take.
    pub free: u64,
}

/// The score of `store` for the deposit `name` of `owner`.
pub fn score(owner: &str, name: &str, store: &str) -> u64 {
    let mut input = Vec::with_capacity(owner.len() + name.len() + store.len() + 12);
    for part in [b"dbsh-hrw".as_slice(), owner.as_bytes(), name.as_bytes()] {
        input.extend_from_slice(part);
        input.push(0);
    }
    input.extend_from_slice(store.as_bytes());
    let d = digest(&SHA256, &input);
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// The candidates' indexes in the deposit's order of preference (the
/// highest score first; the id breaks a tie).
pub fn rank(owner: &str, name: &str, stores: &[Candidate]) -> Vec<usize> {
    let mut order: Vec<(u64, usize)> = stores
        .iter()
        .enumerate()
        .map(|(i, s)| (score(owner, name, &s.id), i))
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(stores[a.1].id.cmp(&stores[b.1].id)));
    order.into_iter().map(|(_, i)| i).collect()
}

/// Up to `copies` stores for a deposit of `size` bytes that nobody holds
/// yet: in rank order, the first of each zone with room for it. Fewer when
/// fewer zones have room.
pub fn place(
    owner: &str,
    name: &str,
    size: u64,
    copies: usize,
    stores: &[Candidate],
) -> Vec<usize> {
    places(owner, name, size, copies, stores, &|_| false)
}

/// Where the copies of a deposit go when some stores already hold good
/// copies (`good`): those first, in rank order, one per zone; then the
/// next stores in rank order with room, in zones not covered yet. Up to
/// `copies` stores.
pub fn places(
    owner: &str,
    name: &str,
    size: u64,
    copies: usize,
    stores: &[Candidate],
    good: &dyn Fn(&Candidate) -> bool,
) -> Vec<usize> {
    let order = rank(owner, name, stores);
    let mut chosen: Vec<usize> = Vec::new();
    for holders_first in [true, false] {
        for &i in &order {
            if chosen.len() == copies {
                return chosen;
            }
            let s = &stores[i];
            let taken = chosen.iter().any(|&c| c == i || stores[c].zone == s.zone);
            let fits = if holders_first {
                good(s)
            } else {
                s.free >= size
            };
            if !taken && fits {
                chosen.push(i);
            }
        }
    }
    chosen
}

/// How many distinct zones the candidates stand in.
pub fn zones(stores: &[Candidate]) -> usize {
    let mut z: Vec<&str> = stores.iter().map(|s| s.zone.as_str()).collect();
    z.sort_unstable();
    z.dedup();
    z.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stores(zones: &[&str]) -> Vec<Candidate> {
        zones
            .iter()
            .enumerate()
            .map(|(i, z)| Candidate {
                id: format!("STORE-{i}"),
                zone: z.to_string(),
                free: 1 << 30,
            })
            .collect()
    }

    fn ids(s: &[Candidate], chosen: &[usize]) -> Vec<String> {
        chosen.iter().map(|&i| s[i].id.clone()).collect()
    }

    #[test]
    fn scores_depend_on_every_input() {
        let a = score("O", "n", "S");
        assert_eq!(a, score("O", "n", "S"));
        assert_ne!(a, score("P", "n", "S"));
        assert_ne!(a, score("O", "m", "S"));
        assert_ne!(a, score("O", "n", "T"));
        // The separator keeps ("ab", "c") apart from ("a", "bc").
        assert_ne!(score("ab", "c", "S"), score("a", "bc", "S"));
    }

    #[test]
    fn one_copy_per_zone_and_never_more_than_asked() {
        let s = stores(&["a", "a", "b", "c"]);
        for n in 0..50 {
            let name = format!("file{n}");
            let three = place("O", &name, 1, 3, &s);
            assert_eq!(three.len(), 3);
            let mut z: Vec<&str> = three.iter().map(|&i| s[i].zone.as_str()).collect();
            z.sort_unstable();
            assert_eq!(z, ["a", "b", "c"], "{name}");
            // Four wanted, three zones: three.
            assert_eq!(place("O", &name, 1, 4, &s).len(), 3);
            assert_eq!(place("O", &name, 1, 1, &s).len(), 1);
        }
        assert_eq!(zones(&s), 3);
    }

    #[test]
    fn placement_is_stable_and_a_leaving_store_moves_only_its_copies() {
        let all = stores(&["z0", "z1", "z2", "z3", "z4", "z5"]);
        let mut moved = 0;
        for n in 0..200 {
            let name = format!("f{n}");
            let before = ids(&all, &place("O", &name, 1, 2, &all));
            assert_eq!(before, ids(&all, &place("O", &name, 1, 2, &all)));
            // Store 3 leaves: a deposit it did not hold keeps its places.
            let rest: Vec<Candidate> = all.iter().filter(|s| s.id != "STORE-3").cloned().collect();
            let after = ids(&rest, &place("O", &name, 1, 2, &rest));
            if before.contains(&"STORE-3".to_string()) {
                moved += 1;
                let kept: Vec<&String> = before.iter().filter(|i| *i != "STORE-3").collect();
                assert!(
                    kept.iter().all(|k| after.contains(k)),
                    "{before:?} {after:?}"
                );
            } else {
                assert_eq!(before, after);
            }
        }
        // About a third of the deposits had a copy there (2 of 6).
        assert!((30..110).contains(&moved), "{moved}");
    }

    #[test]
    fn a_store_without_room_is_passed_over() {
        let mut s = stores(&["a", "b", "c"]);
        let first = rank("O", "big", &s)[0];
        s[first].free = 10;
        let chosen = place("O", "big", 11, 3, &s);
        assert_eq!(chosen.len(), 2);
        assert!(!chosen.contains(&first));
        assert!(place("O", "big", 10, 3, &s).contains(&first));
    }

    #[test]
    fn good_holders_keep_their_places_before_anyone_new() {
        let s = stores(&["a", "b", "c", "d"]);
        let fresh = place("O", "x", 1, 2, &s);
        // A holder outside the fresh places keeps its copy...
        let outsider = (0..4).find(|i| !fresh.contains(i)).unwrap();
        let good = |c: &Candidate| c.id == s[outsider].id;
        let kept = places("O", "x", 1, 2, &s, &good);
        assert_eq!(kept[0], outsider);
        assert_eq!(kept.len(), 2);
        // ... but two good holders in one zone count once.
        let twin = stores(&["a", "a", "b"]);
        let both = |c: &Candidate| c.zone == "a";
        let p = places("O", "x", 1, 3, &twin, &both);
        assert_eq!(p.len(), 2);
        assert_eq!(p.iter().filter(|&&i| twin[i].zone == "a").count(), 1);
        // Nobody good: the same as a fresh placement.
        assert_eq!(places("O", "x", 1, 2, &s, &|_| false), fresh);
    }

    #[test]
    fn owners_spread_their_deposits_differently() {
        let s = stores(&["a", "b", "c", "d"]);
        let firsts: std::collections::BTreeSet<usize> = (0..40)
            .map(|n| rank(&format!("OWNER{n}"), "same", &s)[0])
            .collect();
        assert!(firsts.len() > 1, "{firsts:?}");
    }
}
