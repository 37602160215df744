//! Unit tests of the SWIM core: transition rules, refutation, suspicion arithmetic, and the
//! wire mapping of every message.

#![allow(clippy::disallowed_methods)]

use super::*;

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 7946))
}

fn node(now: Instant) -> Swim {
    Swim::new(Config::lan(), "me", addr(1), b"meta".to_vec(), 5, 1, now)
}

fn outputs(s: &mut Swim) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

fn packet(s: &mut Swim, now: Instant, msgs: Vec<Msg>) -> Vec<Output> {
    s.handle(
        now,
        Input::Packet {
            from: addr(9),
            msgs,
        },
    );
    outputs(s)
}

fn alive(name: &str, n: u8, incarnation: u32) -> Msg {
    Msg::Alive {
        incarnation,
        node: name.into(),
        addr: addr(n),
        meta: vec![],
        vsn: VSN.to_vec(),
    }
}

fn events(out: &[Output]) -> Vec<(EventKind, String)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some((e.kind, e.member.name.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn every_message_round_trips_through_the_wire() {
    let src = Some((addr(2), "b".to_owned()));
    let all = vec![
        Msg::Ping {
            seq_no: 1,
            node: "a".into(),
            source: src.clone(),
        },
        Msg::Ping {
            seq_no: 2,
            node: "a".into(),
            source: None,
        },
        Msg::IndirectPing {
            seq_no: 3,
            target: addr(3),
            node: "c".into(),
            nack: true,
            source: src,
        },
        Msg::Ack {
            seq_no: 4,
            payload: vec![1, 2],
        },
        Msg::Nack { seq_no: 5 },
        Msg::Suspect {
            incarnation: 6,
            node: "a".into(),
            from: "b".into(),
        },
        Msg::Dead {
            incarnation: 7,
            node: "a".into(),
            from: "a".into(),
        },
        alive("a", 4, 8),
        Msg::User(vec![1, 0x80]),
    ];
    for m in all {
        let parts = wire::decode_packet(&m.to_wire()).unwrap();
        assert_eq!(Msg::from_part(&parts[0]), Ok(Some(m.clone())), "{m:?}");
    }
}

#[test]
fn new_members_join_and_stale_news_is_ignored() {
    let now = Instant::now();
    let mut s = node(now);
    outputs(&mut s);
    let out = packet(&mut s, now, vec![alive("a", 2, 3)]);
    assert_eq!(events(&out), vec![(EventKind::Join, "a".into())]);
    assert!(
        events(&packet(&mut s, now, vec![alive("a", 2, 3)])).is_empty(),
        "same news"
    );
    let stale = Msg::Suspect {
        incarnation: 2,
        node: "a".into(),
        from: "x".into(),
    };
    assert!(
        events(&packet(&mut s, now, vec![stale])).is_empty(),
        "older incarnation"
    );
    assert_eq!(s.member("a").unwrap().state, State::Alive);
}

#[test]
fn suspicion_is_refuted_by_a_newer_alive() {
    let now = Instant::now();
    let mut s = node(now);
    packet(&mut s, now, vec![alive("a", 2, 3)]);
    let sus = Msg::Suspect {
        incarnation: 3,
        node: "a".into(),
        from: "x".into(),
    };
    assert_eq!(
        events(&packet(&mut s, now, vec![sus])),
        vec![(EventKind::Suspect, "a".into())]
    );
    assert_eq!(
        events(&packet(&mut s, now, vec![alive("a", 2, 4)])),
        vec![(EventKind::Refuted, "a".into())]
    );
    assert!(s.suspicion("a").is_none());
}

#[test]
fn a_node_refutes_rumours_about_itself() {
    let now = Instant::now();
    let mut s = node(now);
    outputs(&mut s);
    packet(&mut s, now, vec![alive("a", 2, 1)]);
    packet(
        &mut s,
        now,
        vec![Msg::Suspect {
            incarnation: 5,
            node: "me".into(),
            from: "a".into(),
        }],
    );
    assert_eq!(
        s.member("me").unwrap().incarnation,
        6,
        "one above the rumour"
    );
    assert_eq!(s.member("me").unwrap().state, State::Alive);
    assert_eq!(
        s.awareness(),
        1,
        "being suspected hints that we are the slow one"
    );
    packet(
        &mut s,
        now,
        vec![Msg::Dead {
            incarnation: 6,
            node: "me".into(),
            from: "a".into(),
        }],
    );
    assert_eq!(s.member("me").unwrap().incarnation, 7);
}

#[test]
fn dead_about_itself_means_left() {
    let now = Instant::now();
    let mut s = node(now);
    packet(&mut s, now, vec![alive("a", 2, 1), alive("b", 3, 1)]);
    let out = packet(
        &mut s,
        now,
        vec![
            Msg::Dead {
                incarnation: 1,
                node: "a".into(),
                from: "a".into(),
            },
            Msg::Dead {
                incarnation: 1,
                node: "b".into(),
                from: "me".into(),
            },
        ],
    );
    assert_eq!(
        events(&out),
        vec![
            (EventKind::Leave, "a".into()),
            (EventKind::Fail, "b".into())
        ]
    );
}

#[test]
fn suspicion_shrinks_with_independent_confirmations() {
    let now = Instant::now();
    let mut s = node(now);
    for (i, n) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        packet(&mut s, now, vec![alive(n, 2 + i as u8, 1)]);
    }
    // N = 6: min = 4 × max(1, log10 6) × 1 s = 4 s, max = 24 s, k = 2.
    packet(
        &mut s,
        now,
        vec![Msg::Suspect {
            incarnation: 1,
            node: "a".into(),
            from: "b".into(),
        }],
    );
    assert_eq!(s.suspicion("a"), Some((now + Duration::from_secs(24), 1)));
    packet(
        &mut s,
        now,
        vec![Msg::Suspect {
            incarnation: 1,
            node: "a".into(),
            from: "b".into(),
        }],
    );
    assert_eq!(
        s.suspicion("a").unwrap().1,
        1,
        "the same suspecter twice is one"
    );
    packet(
        &mut s,
        now,
        vec![Msg::Suspect {
            incarnation: 1,
            node: "a".into(),
            from: "c".into(),
        }],
    );
    let (one, _) = s.suspicion("a").unwrap();
    assert!(one < now + Duration::from_secs(24) && one > now + Duration::from_secs(4));
    packet(
        &mut s,
        now,
        vec![Msg::Suspect {
            incarnation: 1,
            node: "a".into(),
            from: "d".into(),
        }],
    );
    assert_eq!(s.suspicion("a"), Some((now + Duration::from_secs(4), 3)));
    s.handle(now + Duration::from_secs(4), Input::Tick);
    assert_eq!(s.member("a").unwrap().state, State::Dead);
}

#[test]
fn pings_are_answered_to_their_source() {
    let now = Instant::now();
    let mut s = node(now);
    outputs(&mut s);
    let out = packet(
        &mut s,
        now,
        vec![Msg::Ping {
            seq_no: 42,
            node: "me".into(),
            source: Some((addr(7), "x".into())),
        }],
    );
    assert!(matches!(
        &out[0],
        Output::Send { to, msgs } if *to == addr(7) && msgs[0] == Msg::Ack { seq_no: 42, payload: vec![] }
    ));
}

#[test]
fn a_restarted_member_with_a_higher_incarnation_moves_at_once() {
    let now = Instant::now();
    let mut s = node(now);
    packet(&mut s, now, vec![alive("a", 2, 100)]);
    // Same incarnation, other address, while alive: refused (two claimants).
    packet(&mut s, now, vec![alive("a", 3, 100)]);
    assert_eq!(s.member("a").unwrap().addr, addr(2));
    // Restarted: muster's incarnation is its boot time, so it is higher.
    let out = packet(&mut s, now, vec![alive("a", 3, 200)]);
    assert_eq!(s.member("a").unwrap().addr, addr(3));
    assert_eq!(events(&out), vec![(EventKind::Update, "a".into())]);
}

#[test]
fn a_leaving_node_keeps_its_deadlines_in_the_future() {
    // Found when the broadcast queue changed: a leaving node stopped moving its probe clock,
    // so poll_timeout stayed in the past and every tick was due at once (a busy loop).
    let t0 = Instant::now();
    let mut s = node(t0);
    packet(&mut s, t0, vec![alive("a", 2, 1)]);
    s.handle(t0, Input::Leave);
    let mut now = t0;
    for _ in 0..100 {
        now = s.poll_timeout().max(now);
        s.handle(now, Input::Tick);
        outputs(&mut s);
        assert!(s.poll_timeout() > now, "deadline not moved at {now:?}");
    }
    assert!(
        now > t0 + Duration::from_secs(5),
        "100 ticks covered {:?}",
        now - t0
    );
}
