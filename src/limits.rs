//! What a peer can make us spend, in one place: the numbers that bound
//! memory, disk, threads and work per connection and in total. The
//! README's "Limits and defaults" section lists the same numbers.

use crate::{Result, bail};

/// Files of a batch (a sync pull) the log gets a line each for, on both
/// sides; the rest of the batch is counted into one line.
pub const LOGGED_EACH: usize = 100;
/// Bytes of one answer a client collects (a listing, hashes).
pub const ANSWER_BYTES: usize = 256 << 20;
/// Longest `index regex` expression a server compiles.
pub const REGEX_LEN: usize = 4096;
/// Memory a compiled `index regex` may take (program and lazy DFA each).
pub const REGEX_MEMORY: usize = 1 << 20;
/// Partners a syncing peer learns from their offers (beyond those given
/// with `--peer`); offers from further new ids are answered but neither
/// recorded nor synced with.
pub const LEARNED_PARTNERS: usize = 64;
/// Partners whose sync index a peer keeps (their entries, in its sync
/// database); an exchange with a further new id is refused.
pub const SYNC_PARTNERS: usize = 256;
/// Entries of a partner's index one exchange takes.
pub const EXCHANGE_ENTRIES: usize = 2_000_000;
/// Bytes of names of a partner's index one exchange takes; a sender stops
/// at half of it and sends the rest in the next exchange.
pub const EXCHANGE_BYTES: usize = 128 << 20;
/// Bytes of names of one partner's index a peer keeps.
pub const PARTNER_BYTES: usize = 256 << 20;
/// Bytes of names of all partners' indexes together a peer keeps.
pub const ALL_PARTNERS_BYTES: usize = 1 << 30;

/// Connections beyond `--max-connections` that get a "busy" answer at
/// once; more are closed without one.
pub const BUSY_ANSWERS: usize = 16;

/// UDP tickets (keys of sealed downloads) a server keeps at once; past
/// it the longest idle one without a transfer gives way.
pub const UDP_TICKETS: usize = 256;
/// Live UDP tickets one address (an IPv6 host by its /64) may hold.
pub const TICKETS_PER_ADDRESS: usize = 32;
/// UDP transfers one ticket may run at once.
pub const SESSIONS_PER_TICKET: usize = 2;
/// UDP tickets one TCP connection may ask for.
pub const TICKETS_PER_CONNECTION: usize = 8;
/// A UDP ticket without a transfer for this long is forgotten.
pub const TICKET_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Copies a deposit may ask for.
pub const MAX_COPIES: u8 = 16;
/// Longest deposit name a store takes, in bytes.
pub const DEPOSIT_NAME_LEN: usize = 1024;
/// Other stores a store remembers, and addresses a deposit command asks.
pub const KNOWN_STORES: usize = 64;
/// Deposits one store keeps at most (of all owners together).
pub const STORE_DEPOSITS: usize = 1_000_000;

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
