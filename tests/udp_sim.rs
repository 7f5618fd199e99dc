//! The UDP sender and receiver over a simulated network: no sockets, a
//! virtual clock, loss, duplication, reordering and corruption by seed.
//! Every run must end with the exact bytes or a clear error, never a wrong file.

use std::time::Duration;

use dropbox_shell::transfer::sim::{Network, SimOptions, run};

fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

fn net(loss: f64) -> Network {
    Network {
        loss,
        delay: Duration::from_millis(1),
        ..Default::default()
    }
}

fn exact_over_seeds(network: &Network, seeds: std::ops::Range<u64>, len: usize) -> (u64, u32) {
    let mut retrans = 0;
    let mut max_attempts = 0;
    for seed in seeds {
        let d = data(seed, len);
        let out = run(seed, &d, network, &SimOptions::default());
        match out.result {
            Ok(got) => assert!(got == d, "seed {seed}: wrong bytes delivered"),
            Err(e) => panic!("seed {seed} with {network:?}: {e}"),
        }
        retrans += out.retransmissions;
        max_attempts = max_attempts.max(out.attempts);
    }
    (retrans, max_attempts)
}

#[test]
fn lossless_needs_no_retransmission() {
    let (retrans, attempts) = exact_over_seeds(&net(0.0), 0..20, 150_000);
    assert_eq!(retrans, 0);
    assert_eq!(attempts, 1);
}

#[test]
fn one_percent_loss() {
    let (retrans, _) = exact_over_seeds(&net(0.01), 0..30, 150_000);
    assert!(
        retrans > 0,
        "losses must have been repaired by retransmission"
    );
}

#[test]
fn ten_percent_loss() {
    exact_over_seeds(&net(0.10), 100..130, 150_000);
}

#[test]
fn thirty_percent_loss() {
    exact_over_seeds(&net(0.30), 200..230, 100_000);
}

#[test]
fn duplication_and_reordering() {
    let n = Network {
        duplicate: 0.2,
        reorder: 0.3,
        delay: Duration::from_millis(1),
        ..Default::default()
    };
    exact_over_seeds(&n, 300..330, 150_000);
}

#[test]
fn corrupted_datagrams_are_dropped_and_repaired() {
    let n = Network {
        corrupt: 0.1,
        loss: 0.05,
        delay: Duration::from_millis(1),
        ..Default::default()
    };
    let (retrans, attempts) = exact_over_seeds(&n, 400..430, 150_000);
    assert!(retrans > 0);
    assert_eq!(
        attempts, 1,
        "the CRC catches corruption before the MD5 has to"
    );
}

#[test]
fn everything_at_once() {
    let n = Network {
        loss: 0.1,
        duplicate: 0.1,
        reorder: 0.2,
        corrupt: 0.05,
        delay: Duration::from_millis(2),
        ..Default::default()
    };
    exact_over_seeds(&n, 500..530, 120_000);
}

#[test]
fn edge_sizes() {
    for len in [0, 1, 999, 1000, 1001, 3000] {
        exact_over_seeds(&net(0.2), 600..610, len);
    }
}

#[test]
fn forged_payload_is_caught_by_md5_and_the_transfer_repeats() {
    // Every data datagram of the first attempt is altered with a valid CRC.
    let n = Network {
        forge: 1.0,
        forge_attempts: 1,
        delay: Duration::from_millis(1),
        ..Default::default()
    };
    for seed in 700..705 {
        let d = data(seed, 50_000);
        let out = run(seed, &d, &n, &SimOptions::default());
        assert_eq!(out.result.expect("second attempt succeeds"), d);
        assert_eq!(out.attempts, 2);
    }
}

#[test]
fn forged_payload_on_every_attempt_is_a_clear_error() {
    let n = Network {
        forge: 1.0,
        forge_attempts: 99,
        delay: Duration::from_millis(1),
        ..Default::default()
    };
    let out = run(7, &data(7, 20_000), &n, &SimOptions::default());
    let e = out.result.unwrap_err();
    assert!(e.contains("did not match after 3 attempts"), "{e}");
}

#[test]
fn a_silent_sender_ends_in_bounded_time_with_a_clear_error() {
    for dies_after in [0, 1, 5, 50] {
        let opts = SimOptions {
            sender_dies_after: Some(dies_after),
            silence: Duration::from_secs(2),
            ..Default::default()
        };
        let out = run(dies_after, &data(1, 200_000), &net(0.0), &opts);
        let e = out.result.unwrap_err();
        assert!(
            e.contains("did not answer") || e.contains("went silent"),
            "{e}"
        );
        assert!(
            out.elapsed <= Duration::from_secs(3),
            "virtual time {:?}",
            out.elapsed
        );
    }
}

#[test]
fn same_seed_same_run() {
    let n = Network {
        loss: 0.2,
        reorder: 0.2,
        duplicate: 0.1,
        delay: Duration::from_millis(1),
        ..Default::default()
    };
    let d = data(9, 80_000);
    let a = run(9, &d, &n, &SimOptions::default());
    let b = run(9, &d, &n, &SimOptions::default());
    assert_eq!(
        (a.retransmissions, a.datagrams, a.elapsed),
        (b.retransmissions, b.datagrams, b.elapsed)
    );
}

#[test]
fn retransmits_only_what_is_missing() {
    // At 10% loss, retransmissions stay near the number of lost chunks rather
    // than resending whole windows.
    let d = data(3, 500_000);
    let out = run(3, &d, &net(0.10), &SimOptions::default());
    assert_eq!(out.result.unwrap(), d);
    let chunks = 500;
    assert!(
        out.retransmissions < chunks / 4,
        "{} retransmissions for {chunks} chunks",
        out.retransmissions
    );
}

#[test]
fn a_file_rewritten_mid_transfer_arrives_whole_in_its_new_version() {
    // Half the first attempt reads the old bytes, half the new: the sender
    // says `Changed` instead of `Fin`, and the next attempt sends the new
    // version whole. Never a torn file.
    let opts = SimOptions {
        rewrites: 1,
        ..Default::default()
    };
    for seed in 800..810 {
        let d = data(seed, 60_000);
        let new: Vec<u8> = d.iter().map(|b| b ^ 0x5a).collect();
        let out = run(seed, &d, &net(0.05), &opts);
        assert!(
            out.result.expect("the retry succeeds") == new,
            "seed {seed}"
        );
        assert_eq!(out.attempts, 2);
    }
}

#[test]
fn a_file_that_keeps_changing_is_a_clear_error() {
    let opts = SimOptions {
        rewrites: 99,
        ..Default::default()
    };
    let out = run(8, &data(8, 30_000), &net(0.0), &opts);
    let e = out.result.unwrap_err();
    assert!(e.contains("changed while it was sent"), "{e}");
}

// Step-by-step runs of a `Pair`: one chosen datagram (or kind of datagram)
// meets its fate; the clock moves only when the test steps it.

use std::cell::Cell;
use std::rc::Rc;

use dropbox_shell::transfer::Failure;
use dropbox_shell::transfer::sim::{Dir, Ending, Fate, Pair, Sent};
use dropbox_shell::transfer::wire::Packet;

/// A pair over a clean network with 1 ms of delay, for `len` bytes.
fn clean_pair(seed: u64, len: usize) -> (Pair, Vec<u8>) {
    let d = data(seed, len);
    let pair = Pair::new(seed, &d, net(0.0), &SimOptions::default());
    (pair, d)
}

/// Step until the current attempt ends; its ending.
fn finish(pair: &mut Pair) -> Ending {
    assert!(
        pair.drive_until(Duration::from_secs(60), |p| p.receiver().ending().is_some()),
        "the attempt never ended"
    );
    pair.receiver().ending().cloned().unwrap()
}

#[test]
fn dropping_exactly_the_last_data_datagram_costs_one_retransmission() {
    // 10 chunks of 1000 bytes: nothing follows the last one, so only the
    // retransmission timeout can find it lost.
    let (mut pair, d) = clean_pair(1, 10_000);
    let dropped = Rc::new(Cell::new(0));
    let seen = dropped.clone();
    pair.set_hook(move |s: &Sent| match s.packet {
        Packet::Data { seq: 9, .. } if seen.get() == 0 => {
            seen.set(1);
            Fate::Drop
        }
        _ => Fate::Deliver,
    });
    // Every chunk but the last arrives; the receiver waits for it.
    assert!(
        pair.drive_until(Duration::from_secs(10), |p| p
            .sender()
            .is_some_and(
                |s| s.retransmissions() == 0 && p.receiver().receiver().received() == 9_000
            ))
    );
    assert_eq!(dropped.get(), 1);
    assert_eq!(finish(&mut pair), Ending::Verified);
    assert!(pair.receiver().got() == d);
    assert_eq!(pair.sender().unwrap().retransmissions(), 1);
    assert_eq!(pair.receiver().attempt(), 1);
}

#[test]
fn acknowledgements_lost_for_a_while_do_not_end_the_transfer() {
    let (mut pair, d) = clean_pair(2, 300_000);
    // Under way: the sender knows the receiver's address.
    assert!(pair.drive_until(
        Duration::from_secs(10),
        |p| p.receiver().receiver().received() >= 50_000
    ));
    let lost = Rc::new(Cell::new(0u32));
    let count = lost.clone();
    pair.set_hook(move |s: &Sent| match s.packet {
        Packet::Ack { .. } => {
            count.set(count.get() + 1);
            Fate::Drop
        }
        _ => Fate::Deliver,
    });
    // A second without a single acknowledgement (the silence limit is 5 s).
    pair.run_for(Duration::from_secs(1));
    assert!(lost.get() > 5, "{} acknowledgements dropped", lost.get());
    let sender = pair.sender().unwrap();
    assert!(!sender.is_over(), "{:?}", sender.state());
    assert!(
        sender.retransmissions() > 0,
        "the sender timed its chunks out"
    );
    pair.clear_hook();
    assert_eq!(finish(&mut pair), Ending::Verified);
    assert!(pair.receiver().got() == d);
    assert_eq!(pair.receiver().attempt(), 1);
}

#[test]
fn a_duplicated_fin_finishes_once() {
    let (mut pair, d) = clean_pair(3, 20_000);
    let fins = Rc::new(Cell::new(0u32));
    let count = fins.clone();
    pair.set_hook(move |s: &Sent| match s.packet {
        Packet::Fin { .. } => {
            count.set(count.get() + 1);
            Fate::Duplicate
        }
        _ => Fate::Deliver,
    });
    assert_eq!(finish(&mut pair), Ending::Verified);
    // Both copies arrive and are answered; nothing else happens.
    pair.run_for(Duration::from_secs(1));
    assert!(fins.get() >= 1);
    assert_eq!(pair.receiver().late_events(), 0, "a second Finished");
    assert!(pair.receiver().got() == d, "bytes were delivered twice");
    assert!(pair.sender().unwrap().is_over());
    assert_eq!(pair.sender().unwrap().failure(), None);
}

#[test]
fn a_receiver_restarted_mid_transfer_gets_exactly_the_file() {
    let (mut pair, d) = clean_pair(4, 400_000);
    assert!(pair.drive_until(
        Duration::from_secs(10),
        |p| p.receiver().receiver().received() >= 100_000
    ));
    let old = pair.receiver().receiver().id();
    pair.restart_receiver();
    let new = pair.receiver().receiver().id();
    assert_ne!(old, new);
    // Count what the old sender still sends toward the new receiver.
    let stale = Rc::new(Cell::new(0u32));
    let count = stale.clone();
    pair.set_hook(move |s: &Sent| {
        if s.dir == Dir::ToReceiver && s.id == old {
            count.set(count.get() + 1);
        }
        Fate::Deliver
    });
    assert_eq!(finish(&mut pair), Ending::Verified);
    assert!(pair.receiver().got() == d, "not exactly the file");
    assert!(stale.get() > 0, "the old sender had stopped before");
    assert_eq!(pair.sender_end().ids().len(), 2);
    // The old sender gives up on its silent receiver, by itself.
    pair.run_for(Duration::from_secs(6));
    let s = pair.sender_end().sender(old).unwrap();
    assert!(
        matches!(s.failure(), Some(Failure::ReceiverSilent(_))),
        "{:?}",
        s.state()
    );
}

#[test]
fn a_corrupted_meta_is_asked_for_again() {
    let (mut pair, d) = clean_pair(5, 5_000);
    let metas = Rc::new(Cell::new(0u32));
    let count = metas.clone();
    pair.set_hook(move |s: &Sent| match s.packet {
        Packet::Meta(_) => {
            count.set(count.get() + 1);
            if count.get() == 1 {
                Fate::Corrupt
            } else {
                Fate::Deliver
            }
        }
        _ => Fate::Deliver,
    });
    assert_eq!(finish(&mut pair), Ending::Verified);
    assert!(pair.receiver().got() == d);
    assert_eq!(metas.get(), 2, "the meta was sent again on a new request");
}
