//! What a peer can make us spend, in one place: the numbers that bound
//! memory, threads and work per connection and in total, and a [`Budget`]
//! that many connections draw on at once. The README's "Limits and
//! defaults" section lists the same numbers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{Result, bail};

/// Bytes of sync offers (the partner's index, as received) held in memory
/// at once, over all connections together; one offer may use all of it.
pub const OFFER_BYTES: usize = 256 << 20;
/// Bytes of one answer a client collects (a listing, hashes, a sync index).
pub const ANSWER_BYTES: usize = 256 << 20;
/// Longest `index regex` expression a server compiles.
pub const REGEX_LEN: usize = 4096;
/// Memory a compiled `index regex` may take (program and lazy DFA each).
pub const REGEX_MEMORY: usize = 1 << 20;
/// Partners a syncing peer learns from their offers (beyond those given
/// with `--peer`); offers from further new ids are answered but neither
/// recorded nor synced with.
pub const LEARNED_PARTNERS: usize = 64;
/// Connections beyond `--max-connections` that get a "busy" answer at
/// once; more are closed without one.
pub const BUSY_ANSWERS: usize = 16;

/// Longest text (a command, an outcome, a note) kept in one history line or
/// event: a peer's 4 MiB name must not become a 4 MiB log line.
pub const LINE_TEXT: usize = 512;

/// `s` cut to at most `max` bytes (at a character boundary), marked with
/// an ellipsis when cut.
pub fn clip(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end]).into()
}

/// A number of bytes shared by many holders; each takes what it needs and
/// gives it back when its [`Held`] drops.
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub const fn new(limit: usize) -> Budget {
        Budget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// An empty claim on this budget; it may travel with what it pays for.
    pub fn hold(self: &Arc<Self>) -> Held {
        Held {
            budget: self.clone(),
            bytes: 0,
        }
    }

    /// Bytes held now, by everyone.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }
}

/// Bytes taken from a [`Budget`], given back on drop.
pub struct Held {
    budget: Arc<Budget>,
    bytes: usize,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Held({} bytes)", self.bytes)
    }
}

impl Held {
    /// Take `n` more bytes, or say what was refused (`what` names it).
    pub fn grow(&mut self, n: usize, what: &str) -> Result<()> {
        let b = &self.budget;
        let mut used = b.used.load(Ordering::SeqCst);
        loop {
            if used.saturating_add(n) > b.limit {
                bail!(
                    "{what} needs more than the {} MiB this peer holds for it at once; refused",
                    b.limit >> 20
                );
            }
            match b
                .used
                .compare_exchange(used, used + n, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(now) => used = now,
            }
        }
        self.bytes += n;
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// Compile an `index regex` expression within [`REGEX_LEN`] and
/// [`REGEX_MEMORY`]: a peer's expression never costs more than that.
pub fn bounded_regex(expr: &str) -> Result<regex::Regex> {
    if expr.len() > REGEX_LEN {
        bail!(
            "the regular expression is {} bytes long; at most {REGEX_LEN} are accepted",
            expr.len()
        );
    }
    regex::RegexBuilder::new(expr)
        .size_limit(REGEX_MEMORY)
        .dfa_size_limit(REGEX_MEMORY)
        .build()
        .map_err(|e| crate::Error::new(format!("bad regular expression: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_shared_and_given_back() {
        let b = Arc::new(Budget::new(100));
        let mut one = b.hold();
        one.grow(60, "x").unwrap();
        let mut two = b.hold();
        let e = two.grow(50, "a sync offer").unwrap_err();
        assert!(e.message().contains("a sync offer"), "{e}");
        two.grow(40, "x").unwrap();
        assert_eq!(b.used(), 100);
        drop(one);
        assert_eq!(b.used(), 40);
        two.grow(60, "x").unwrap();
        drop(two);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn long_text_is_clipped_at_a_character_boundary() {
        assert_eq!(clip("short", 10), "short");
        let long = "é".repeat(600);
        let c = clip(&long, LINE_TEXT);
        assert!(c.len() <= LINE_TEXT && c.ends_with("..."));
    }

    #[test]
    fn huge_or_costly_regexes_are_refused() {
        assert!(bounded_regex(r"\.txt$").is_ok());
        let long = "a".repeat(REGEX_LEN + 1);
        assert!(
            bounded_regex(&long)
                .unwrap_err()
                .message()
                .contains("at most")
        );
        // Small to write, large to compile.
        let e = bounded_regex(r"\w{1000}{1000}").unwrap_err();
        assert!(e.message().contains("bad regular expression"), "{e}");
    }
}
