//! Tests of the sender state machine.

use super::*;
use crate::transfer::wire::Packet;

fn info(size: u64) -> FileInfo {
    FileInfo {
        size,
        mtime_ns: 0,
        mode: 0o644,
        md5: None,
    }
}

#[test]
fn sends_meta_then_data_within_the_window_then_fin() {
    let t0 = Instant::now();
    let mut s = FileSender::new(t0, 0, info(10), 4, 100, SenderConfig::default());
    assert_eq!(s.next_transmit(t0), Some(SendOp::Meta));
    s.record_sent(SendOp::Meta, t0, &[]);
    let data = b"0123456789";
    for seq in 0..3u64 {
        assert_eq!(s.next_transmit(t0), Some(SendOp::Data(seq)));
        let a = (seq * 4) as usize;
        s.record_sent(SendOp::Data(seq), t0, &data[a..(a + 4).min(10)]);
    }
    assert_eq!(s.next_transmit(t0), None);
    s.handle_ack(t0 + Duration::from_millis(1), 0, 3, 100, &[]);
    assert_eq!(s.next_transmit(t0), Some(SendOp::Fin));
    let md5: [u8; 16] = Md5::digest(data).into();
    assert_eq!(s.md5(), Some(md5));
}

#[test]
fn selective_ack_retransmits_only_the_gap() {
    let t0 = Instant::now();
    let mut s = FileSender::new(t0, 0, info(100), 10, 100, SenderConfig::default());
    s.record_sent(SendOp::Meta, t0, &[]);
    for seq in 0..8 {
        s.record_sent(SendOp::Data(seq), t0, &[0; 10]);
    }
    // Chunk 2 is missing; 3..8 arrived.
    s.handle_ack(t0 + Duration::from_millis(1), 0, 2, 100, &[(3, 8)]);
    assert_eq!(s.next_transmit(t0), Some(SendOp::Data(2)));
    s.record_sent(SendOp::Data(2), t0, &[0; 10]);
    assert_eq!(s.retransmissions(), 1);
    assert_eq!(s.next_transmit(t0), Some(SendOp::Data(8)));
}

#[test]
fn respects_the_receiver_window() {
    let t0 = Instant::now();
    let mut s = FileSender::new(t0, 0, info(1000), 10, 2, SenderConfig::default());
    s.record_sent(SendOp::Meta, t0, &[]);
    s.record_sent(SendOp::Data(0), t0, &[0; 10]);
    s.record_sent(SendOp::Data(1), t0, &[0; 10]);
    assert_eq!(s.next_transmit(t0), None);
    s.handle_ack(t0, 0, 1, 2, &[]);
    assert_eq!(s.next_transmit(t0), Some(SendOp::Data(2)));
}

#[test]
fn a_silent_receiver_fails_the_transfer() {
    let t0 = Instant::now();
    let mut s = FileSender::new(t0, 0, info(100), 10, 10, SenderConfig::default());
    s.record_sent(SendOp::Meta, t0, &[]);
    // Nothing in flight: the next deadline is the silence limit itself.
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    s.handle_timeout(t0 + Duration::from_secs(6));
    assert!(s.failure().unwrap().to_string().contains("nothing"));
    assert_eq!(s.next_transmit(t0), None);
}

#[test]
fn an_empty_file_goes_straight_to_fin() {
    let t0 = Instant::now();
    let mut s = FileSender::new(t0, 0, info(0), 10, 10, SenderConfig::default());
    s.record_sent(SendOp::Meta, t0, &[]);
    assert_eq!(s.next_transmit(t0), Some(SendOp::Fin));
}

fn guarded(size: u64, payload: u32) -> (FileSender, Instant) {
    let t0 = Instant::now();
    let cfg = SenderConfig {
        token: Some(77),
        initial_window: 64.0,
        ..Default::default()
    };
    (FileSender::new(t0, 0, info(size), payload, 1000, cfg), t0)
}

/// Send whatever the sender offers now; the bytes it put on the wire.
fn drain(s: &mut FileSender, now: Instant) -> u64 {
    let mut sent = 0;
    while let Some(op) = s.next_transmit(now) {
        sent += s.cost(op);
        s.record_sent(op, now, &[0; 1000]);
    }
    sent
}

#[test]
fn an_unproven_address_gets_at_most_three_times_what_it_sent() {
    let (mut s, t0) = guarded(1 << 20, 1000);
    assert_eq!(s.next_transmit(t0), None, "nothing before a request counts");
    s.handle_datagram(1024);
    let sent = drain(&mut s, t0);
    assert!(sent > 0 && sent <= 3 * 1024, "{sent}");
    // Timeouts and retransmissions stay within the same budget.
    for i in 1..20 {
        let now = t0 + Duration::from_secs(i) / 10;
        s.handle_timeout(now);
        drain(&mut s, now);
    }
    assert!(s.sent_bytes <= 3 * 1024, "{}", s.sent_bytes);
    // A repeated (padded) request earns a little more.
    s.handle_datagram(1024);
    s.handle_request(t0, 1000);
    let more = drain(&mut s, t0);
    assert!(more > 0 && s.sent_bytes <= 6 * 1024, "{more}");
}

#[test]
fn only_an_echo_of_the_token_proves_the_address() {
    let (mut s, t0) = guarded(1 << 20, 1000);
    s.handle_datagram(1024);
    drain(&mut s, t0);
    // A forged acknowledgement (wrong token) neither counts nor validates.
    s.handle_datagram(40);
    s.handle_ack(t0, 78, 2, 1000, &[]);
    assert!(!s.is_validated());
    assert_eq!(s.cum, 0);
    s.handle_done(t0, 78);
    assert!(!s.is_over());
    // The right token lifts the limit: a whole window goes out.
    s.handle_ack(t0, 77, 2, 1000, &[]);
    assert!(s.is_validated());
    assert_eq!(s.cum, 2);
    assert!(drain(&mut s, t0) > 20 * 1000);
}

#[test]
fn a_changed_file_ends_with_changed_not_fin() {
    let t0 = Instant::now();
    let mut s = FileSender::new(t0, 0, info(10), 4, 100, SenderConfig::default());
    s.record_sent(SendOp::Meta, t0, &[]);
    for seq in 0..3 {
        s.record_sent(SendOp::Data(seq), t0, b"abcd");
    }
    s.file_changed();
    assert_eq!(s.next_transmit(t0), Some(SendOp::Changed));
    s.record_sent(SendOp::Changed, t0, &[]);
    // Acks do not bring data or Fin back; Changed repeats until Done.
    s.handle_ack(t0, 0, 3, 100, &[]);
    assert_eq!(s.next_transmit(t0), None);
    let later = s.poll_timeout().unwrap();
    assert_eq!(s.next_transmit(later), Some(SendOp::Changed));
    assert!(!s.is_over());
    s.handle_done(later, 0);
    assert!(s.is_over());
    assert_eq!(s.failure(), Some(&Failure::Changed));
    assert_eq!(
        s.failure().unwrap().to_string(),
        super::super::failure::CHANGED
    );
}

/// A file in memory that may change or fail to read.
struct Mem {
    bytes: Vec<u8>,
    changed: bool,
    broken: bool,
}

impl ChunkSource for Mem {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        if self.broken {
            return Err("reading f failed: disk on fire".into());
        }
        let at = offset as usize;
        buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
        Ok(())
    }

    fn unchanged(&mut self) -> bool {
        !self.changed
    }
}

/// An acknowledgement of everything below `cum`.
fn ack(cum: u64) -> Packet<'static> {
    Packet::Ack {
        token: 0,
        cum,
        window: 100,
        ranges: vec![],
    }
}

fn mem(bytes: &[u8]) -> Mem {
    Mem {
        bytes: bytes.to_vec(),
        changed: false,
        broken: false,
    }
}

/// Send through the datagram face what the sender offers now; the packets.
fn datagrams(s: &mut FileSender, src: &mut Mem, now: Instant) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    while let Some(op) = s.poll_transmit(now, src, &mut out) {
        let (id, p) = wire::decode(&out).expect("a well-formed datagram");
        assert_eq!(id, 5);
        seen.push(format!("{p:?}"));
        s.on_sent(op, now, &out);
    }
    seen
}

#[test]
fn the_datagram_face_reads_chunks_into_the_datagram_and_hashes_them() {
    let t0 = Instant::now();
    let data = b"0123456789";
    let file = FileInfo {
        mtime_ns: 42,
        ..info(10)
    };
    let mut s = FileSender::new(t0, 5, file, 4, 100, SenderConfig::default());
    let mut src = mem(data);
    let sent = datagrams(&mut s, &mut src, t0);
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert!(
        sent[0].starts_with("Meta(MetaInfo { size: 10, mtime_ns: 42, mode: 420, payload: 4"),
        "{sent:?}"
    );
    assert_eq!(
        sent[1],
        format!(
            "{:?}",
            Packet::Data {
                seq: 0,
                bytes: b"0123"
            }
        )
    );
    assert_eq!(
        sent[3],
        format!(
            "{:?}",
            Packet::Data {
                seq: 2,
                bytes: b"89"
            }
        )
    );
    s.handle_packet(t0, &ack(3), 40);
    let fin = datagrams(&mut s, &mut src, t0);
    let md5: [u8; 16] = Md5::digest(data).into();
    let want = Packet::Fin {
        md5,
        retransmissions: 0,
    };
    assert_eq!(fin, vec![format!("{want:?}")]);
    s.handle_packet(t0, &Packet::Done { token: 0 }, 20);
    assert_eq!(s.state(), &State::Done);
}

#[test]
fn a_source_that_changed_turns_fin_into_changed() {
    let t0 = Instant::now();
    let mut s = FileSender::new(t0, 5, info(8), 4, 100, SenderConfig::default());
    let mut src = mem(b"abcdefgh");
    datagrams(&mut s, &mut src, t0);
    s.handle_packet(t0, &ack(2), 40);
    src.changed = true;
    assert_eq!(datagrams(&mut s, &mut src, t0), vec!["Changed".to_string()]);
    assert_eq!(s.state(), &State::Changed { sent_at: Some(t0) });
    s.handle_packet(t0, &Packet::Done { token: 0 }, 20);
    assert_eq!(s.failure(), Some(&Failure::Changed));
}

#[test]
fn an_unreadable_file_sends_its_error_and_ends_the_transfer() {
    let t0 = Instant::now();
    let mut s = FileSender::new(t0, 5, info(8), 4, 100, SenderConfig::default());
    let mut src = mem(b"abcdefgh");
    src.broken = true;
    let sent = datagrams(&mut s, &mut src, t0);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[1].contains("disk on fire"), "{sent:?}");
    assert!(s.is_over());
    assert!(matches!(s.failure(), Some(Failure::Unreadable(m)) if m.contains("disk on fire")));
}
