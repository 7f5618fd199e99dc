//! Tests of the receiver state machine.

use super::*;

fn meta(size: u64) -> MetaInfo {
    MetaInfo {
        size,
        mtime_ns: 0,
        mode: 0o644,
        payload: 4,
        token: 9,
    }
}

fn started(size: u64) -> (FileReceiver, Instant) {
    let t0 = Instant::now();
    let cfg = ReceiverConfig {
        payloads: vec![4],
        ..Default::default()
    };
    let mut r = FileReceiver::new(t0, 1, 1, "f", cfg);
    assert!(matches!(
        r.next_op(t0),
        Some(RecvOp::Request { payload: 4, .. })
    ));
    r.handle_meta(t0, meta(size));
    assert_eq!(r.poll_event(), Some(RecvEvent::Meta(meta(size))));
    (r, t0)
}

#[test]
fn delivers_in_order_whatever_the_arrival_order() {
    let (mut r, t0) = started(10);
    r.handle_data(t0, 2, b"89");
    r.handle_data(t0, 0, b"0123");
    r.handle_data(t0, 0, b"0123");
    match r.next_op(t0) {
        Some(RecvOp::Ack { cum: 1, ranges, .. }) => assert_eq!(ranges, vec![(2, 3)]),
        other => panic!("{other:?}"),
    }
    r.handle_data(t0, 1, b"4567");
    let mut got = Vec::new();
    while let Some(c) = r.poll_deliver() {
        got.extend(c);
    }
    assert_eq!(got, b"0123456789");
    assert_eq!(r.poll_event(), None);
    r.handle_fin(t0, [1; 16], 0);
    assert_eq!(
        r.poll_event(),
        Some(RecvEvent::Finished {
            md5: [1; 16],
            retransmissions: 0
        })
    );
    assert_eq!(r.next_op(t0), Some(RecvOp::Done));
}

#[test]
fn wrong_sized_or_out_of_range_chunks_are_dropped() {
    let (mut r, t0) = started(10);
    r.handle_data(t0, 0, b"012");
    r.handle_data(t0, 5, b"0123");
    assert_eq!(r.poll_deliver(), None);
}

#[test]
fn steps_down_the_datagram_size_when_unanswered() {
    let t0 = Instant::now();
    let cfg = ReceiverConfig {
        payloads: vec![64000, 1400],
        tries_per_size: 2,
        ..Default::default()
    };
    let mut r = FileReceiver::new(t0, 1, 1, "f", cfg);
    let mut sizes = Vec::new();
    let mut now = t0;
    for _ in 0..4 {
        let op = r.next_op(now).unwrap();
        if let RecvOp::Request { payload, .. } = op {
            sizes.push(payload);
        }
        r.on_sent(&op, now);
        now = r.poll_timeout().unwrap();
    }
    assert_eq!(sizes, vec![64000, 64000, 1400, 1400]);
}

#[test]
fn a_late_answer_to_a_larger_probe_is_accepted() {
    let t0 = Instant::now();
    let cfg = ReceiverConfig {
        payloads: vec![64000, 1400],
        tries_per_size: 1,
        ..Default::default()
    };
    let mut r = FileReceiver::new(t0, 1, 1, "f", cfg);
    let op = r.next_op(t0).unwrap();
    r.on_sent(&op, t0);
    assert!(matches!(
        r.next_op(t0 + Duration::from_secs(1)),
        Some(RecvOp::Request { payload: 1400, .. })
    ));
    r.handle_meta(
        t0,
        MetaInfo {
            size: 10,
            mtime_ns: 0,
            mode: 0,
            payload: 64000,
            token: 0,
        },
    );
    assert!(matches!(r.poll_event(), Some(RecvEvent::Meta(_))));
    // But never a size nobody offered.
    let mut r = FileReceiver::new(
        t0,
        1,
        1,
        "f",
        ReceiverConfig {
            payloads: vec![1400],
            ..Default::default()
        },
    );
    r.handle_meta(
        t0,
        MetaInfo {
            size: 10,
            mtime_ns: 0,
            mode: 0,
            payload: 64000,
            token: 0,
        },
    );
    assert!(matches!(
        r.poll_event(),
        Some(RecvEvent::Failed(Failure::UnofferedSize(64000)))
    ));
}

#[test]
fn silence_is_a_clear_failure() {
    let (mut r, t0) = started(10);
    r.handle_timeout(t0 + Duration::from_secs(6));
    match r.poll_event() {
        Some(RecvEvent::Failed(m)) => {
            assert_eq!(m, Failure::Silent(Duration::from_secs(5)));
            assert!(m.to_string().contains("silent"), "{m}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn acks_echo_the_token_and_a_changed_file_ends_the_attempt() {
    let (mut r, t0) = started(10);
    r.handle_data(t0, 0, b"0123");
    match r.next_op(t0) {
        Some(RecvOp::Ack { token, .. }) => assert_eq!(token, 9),
        other => panic!("{other:?}"),
    }
    r.handle_changed();
    assert_eq!(r.poll_event(), Some(RecvEvent::Changed));
    assert_eq!(
        r.poll_deliver(),
        None,
        "no byte of a torn copy is handed out"
    );
    // Nothing follows: not a Fin, not a second event.
    r.handle_fin(t0, [1; 16], 0);
    assert_eq!(r.poll_event(), None);
    assert_eq!(r.next_op(t0), None);
}
