//! Asking many peers at once: one scoped thread per peer, a few at a time,
//! so a command or a timer that asks every store waits for the slowest of
//! a group, not for the sum, and never starts more than [`AT_ONCE`]
//! connections together.

/// Peers asked at once.
pub const AT_ONCE: usize = 8;

/// `ask` on each item, [`AT_ONCE`] at a time; the answers in the items'
/// order (`None` where an ask panicked).
pub fn fan_out<T: Sync, R: Send>(items: &[T], ask: &(dyn Fn(&T) -> R + Sync)) -> Vec<Option<R>> {
    let mut all = Vec::with_capacity(items.len());
    for group in items.chunks(AT_ONCE) {
        std::thread::scope(|s| {
            let asks: Vec<_> = group
                .iter()
                .map(|item| s.spawn(move || ask(item)))
                .collect();
            all.extend(asks.into_iter().map(|a| a.join().ok()));
        });
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_come_in_order_and_a_panic_is_none() {
        let items: Vec<u32> = (0..20).collect();
        let got = fan_out(&items, &|n| {
            assert!(*n != 13, "unlucky");
            n * 2
        });
        assert_eq!(got.len(), 20);
        assert_eq!(got[3], Some(6));
        assert_eq!(got[13], None);
        assert_eq!(got[19], Some(38));
    }
}
