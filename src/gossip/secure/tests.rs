#![allow(clippy::disallowed_methods)]

use super::*;

const NOW: u64 = 1_800_000_000_000;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

#[test]
fn envelopes_round_trip_and_garbage_is_refused() {
    let plain = wrap(Kind::Request, "web-1", NOW, 42, b"\x06body");
    let e = unwrap(&plain).unwrap();
    assert_eq!(
        e,
        Envelope {
            kind: Kind::Request,
            sender: "web-1",
            time_ms: NOW,
            seq: 42,
            body: b"\x06body",
        }
    );
    for cut in 0..FIXED + 5 {
        assert_eq!(unwrap(&plain[..cut]), Err(Refused::Malformed), "cut {cut}");
    }
    let mut bad = plain.clone();
    bad[0] = 0;
    assert_eq!(unwrap(&bad), Err(Refused::Malformed));
    bad = plain.clone();
    bad[1] = 9;
    assert_eq!(unwrap(&bad), Err(Refused::Malformed));
    // A memberlist packet (CRC or compound first) is no envelope.
    assert_eq!(unwrap(&[12, 0, 0, 0, 0, 7, 0]), Err(Refused::Malformed));
    assert_eq!(
        unwrap(&wrap(Kind::Datagram, "", NOW, 1, b"")),
        Err(Refused::Malformed)
    );
}

#[test]
fn the_additional_data_names_the_destination() {
    assert_ne!(
        aad_to(Kind::Datagram, addr(1)),
        aad_to(Kind::Datagram, addr(2))
    );
    assert_ne!(
        aad_to(Kind::Datagram, addr(1)),
        aad_to(Kind::Datagram, SocketAddr::from(([10, 0, 0, 2], 1)))
    );
    assert_ne!(
        aad_to(Kind::Datagram, addr(1)),
        aad_to(Kind::Request, addr(1))
    );
    assert_ne!(aad_answer("a"), aad_answer("b"));
}

#[test]
fn a_sequence_number_is_accepted_once_within_the_window() {
    let mut r = Replay::new(10);
    assert_eq!(r.check(NOW, "a", NOW, 100), Ok(()));
    assert_eq!(r.check(NOW, "a", NOW, 100), Err(Refused::Replayed));
    // Out of order, but each once.
    assert_eq!(r.check(NOW, "a", NOW, 103), Ok(()));
    assert_eq!(r.check(NOW, "a", NOW, 101), Ok(()));
    assert_eq!(r.check(NOW, "a", NOW, 101), Err(Refused::Replayed));
    assert_eq!(r.check(NOW, "a", NOW, 102), Ok(()));
    assert_eq!(r.check(NOW, "a", NOW, 103), Err(Refused::Replayed));
    // Another sender has its own numbers.
    assert_eq!(r.check(NOW, "b", NOW, 100), Ok(()));
    // Far below the top: refused even if never seen.
    assert_eq!(r.check(NOW, "a", NOW, 103 + SEQ_WINDOW), Ok(()));
    assert_eq!(r.check(NOW, "a", NOW, 103), Err(Refused::Replayed));
    assert_eq!(r.check(NOW, "a", NOW, 104), Ok(()));
    assert_eq!(r.check(NOW, "a", NOW, 104), Err(Refused::Replayed));
}

#[test]
fn the_bitmap_shifts_across_words() {
    let mut r = Replay::new(1);
    let mut accepted = Vec::new();
    let mut s = 1_000u64;
    for step in [1u64, 63, 64, 65, 1, 127, 500, 2] {
        s += step;
        assert_eq!(r.check(NOW, "a", NOW, s), Ok(()));
        accepted.push(s);
    }
    let top = s;
    for &a in &accepted {
        let expect = Err(Refused::Replayed);
        assert_eq!(r.check(NOW, "a", NOW, a), expect, "seq {a} (top {top})");
    }
    // Every number in the window that was never sent is still accepted once.
    for seq in (top - SEQ_WINDOW + 1)..top {
        if !accepted.contains(&seq) {
            assert_eq!(r.check(NOW, "a", NOW, seq), Ok(()), "seq {seq}");
        }
    }
}

#[test]
fn stale_and_future_packets_are_refused() {
    let mut r = Replay::new(10);
    let w = WINDOW.as_millis() as u64;
    assert_eq!(r.check(NOW, "a", NOW - w, 1), Ok(()));
    assert_eq!(r.check(NOW, "a", NOW - w - 1, 2), Err(Refused::Stale));
    assert_eq!(r.check(NOW, "a", NOW + w, 3), Ok(()));
    assert_eq!(r.check(NOW, "a", NOW + w + 1, 4), Err(Refused::Stale));
    // Hours later, a captured packet is refused whatever its number.
    let later = NOW + 3 * 3600 * 1000;
    assert_eq!(r.check(later, "a", NOW, 99), Err(Refused::Stale));
}

#[test]
fn a_sender_unheard_for_a_window_starts_afresh() {
    // A node restarted after its clock stepped back counts from a lower number.
    let mut r = Replay::new(10);
    assert_eq!(r.check(NOW, "a", NOW, 5_000), Ok(()));
    let w = WINDOW.as_millis() as u64;
    let later = NOW + w + 1;
    assert_eq!(r.check(later, "a", later, 10), Ok(()));
    assert_eq!(r.check(later, "a", later, 10), Err(Refused::Replayed));
    // Its old packets are stale by then.
    assert_eq!(r.check(later, "a", NOW, 5_000), Err(Refused::Stale));
}

#[test]
fn senders_are_bounded_and_only_forgotten_once_out_of_the_window() {
    let mut r = Replay::new(3);
    for (i, s) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(r.check(NOW, s, NOW, i as u64), Ok(()));
    }
    assert_eq!(r.check(NOW, "d", NOW, 1), Err(Refused::Full));
    assert_eq!(r.len(), 3);
    // Still full of senders heard within the window: "a" cannot be replayed meanwhile.
    assert_eq!(r.check(NOW + 1000, "a", NOW, 0), Err(Refused::Replayed));
    let later = NOW + WINDOW.as_millis() as u64 + 1;
    assert_eq!(r.check(later, "d", later, 1), Ok(()));
    assert_eq!(r.len(), 1);
}

#[test]
fn an_answer_is_taken_once_from_the_peer_asked_before_its_deadline() {
    let t0 = Instant::now();
    let mut o = Outstanding::default();
    o.sent(7, addr(1), t0 + Duration::from_secs(10));
    o.sent(8, addr(2), t0 + Duration::from_secs(1));
    assert_eq!(o.answered(t0, 7, addr(2)), Err(Refused::Unsolicited));
    assert_eq!(o.answered(t0, 7, addr(1)), Ok(()));
    assert_eq!(o.answered(t0, 7, addr(1)), Err(Refused::Unsolicited));
    assert_eq!(
        o.answered(t0 + Duration::from_secs(2), 8, addr(2)),
        Err(Refused::Unsolicited)
    );
    assert!(o.is_empty());
    for i in 0..(MAX_OUTSTANDING as u64 + 10) {
        o.sent(i, addr(1), t0 + Duration::from_secs(10));
    }
    assert_eq!(o.len(), MAX_OUTSTANDING);
    assert_eq!(o.answered(t0, 0, addr(1)), Err(Refused::Unsolicited));
    assert_eq!(o.answered(t0, MAX_OUTSTANDING as u64 + 9, addr(1)), Ok(()));
}

#[test]
fn only_the_member_itself_at_its_ip_binds_an_address() {
    let at = SocketAddr::from(([10, 0, 0, 5], 7946));
    let behind_a_forwarder = SocketAddr::from(([10, 0, 0, 5], 40000));
    let elsewhere = SocketAddr::from(([10, 0, 0, 6], 7946));
    assert!(speaks_for(true, Some("b"), at, "b", at));
    assert!(speaks_for(true, Some("b"), behind_a_forwarder, "b", at));
    assert!(!speaks_for(true, Some("evil"), at, "b", at));
    assert!(!speaks_for(true, Some("b"), elsewhere, "b", at));
    assert!(!speaks_for(true, None, at, "b", at));
    // Without secure mode the random sequence number is the only proof.
    assert!(speaks_for(false, None, elsewhere, "b", at));
}
