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
    packet_from(s, now, addr(9), msgs)
}

fn packet_from(s: &mut Swim, now: Instant, from: SocketAddr, msgs: Vec<Msg>) -> Vec<Output> {
    s.handle(
        now,
        Input::Packet {
            from,
            msgs,
            size: 1400,
            sender: None,
        },
    );
    let mut out = outputs(s);
    // A probe of a candidate is answered at once, as a live node would.
    let acks: Vec<(SocketAddr, Msg)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send { to, msgs } => msgs.iter().find_map(|m| match m {
                Msg::Ping { seq_no, node, .. }
                    if node != "me"
                        && s.member(node).is_none_or(|m| {
                            m.addr != *to || matches!(m.state, State::Dead | State::Left)
                        }) =>
                {
                    Some((
                        *to,
                        Msg::Ack {
                            seq_no: *seq_no,
                            payload: Vec::new(),
                        },
                    ))
                }
                _ => None,
            }),
            _ => None,
        })
        .collect();
    for (to, ack) in acks {
        s.handle(
            now,
            Input::Packet {
                from: to,
                msgs: vec![ack],
                size: 64,
                sender: None,
            },
        );
        out.extend(outputs(s));
    }
    out
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
fn dead_about_itself_means_left_and_a_third_partys_dead_is_held() {
    let now = Instant::now();
    let mut s = node(now);
    packet(&mut s, now, vec![alive("a", 2, 1), alive("b", 3, 1)]);
    // "a" says so itself, from its own address: applied at once.
    let out = packet_from(
        &mut s,
        now,
        addr(2),
        vec![Msg::Dead {
            incarnation: 1,
            node: "a".into(),
            from: "a".into(),
        }],
    );
    assert_eq!(events(&out), vec![(EventKind::Leave, "a".into())]);
    // A third party's verdict (even one that claims to be ours) is held for a probe timeout
    // while "b" is told, then applied since "b" did not refute.
    let out = packet(
        &mut s,
        now,
        vec![Msg::Dead {
            incarnation: 1,
            node: "b".into(),
            from: "me".into(),
        }],
    );
    assert!(events(&out).is_empty(), "{out:?}");
    assert!(
        out.iter().any(|o| matches!(o, Output::Send { to, msgs } if *to == addr(3) && matches!(msgs[0], Msg::Dead { .. }))),
        "b is told: {out:?}"
    );
    let later = now + Config::lan().probe_timeout;
    s.handle(later, Input::Tick);
    assert_eq!(
        events(&outputs(&mut s)),
        vec![(EventKind::Fail, "b".into())]
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
fn a_restarted_member_moves_once_its_old_address_stays_silent() {
    let now = Instant::now();
    let mut s = node(now);
    packet(&mut s, now, vec![alive("a", 2, 100)]);
    // Same incarnation, other address, while alive: refused (two claimants).
    packet(&mut s, now, vec![alive("a", 3, 100)]);
    assert_eq!(s.member("a").unwrap().addr, addr(2));
    // Restarted: muster's incarnation is its boot time, so it is higher. The claim is held
    // while the old address is told; nothing refutes it there, so it moves.
    let out = packet_from(&mut s, now, addr(3), vec![alive("a", 3, 200)]);
    assert!(events(&out).is_empty());
    assert_eq!(s.member("a").unwrap().addr, addr(2));
    s.handle(now + Config::lan().probe_timeout, Input::Tick);
    assert_eq!(s.member("a").unwrap().addr, addr(3));
    assert_eq!(
        events(&outputs(&mut s)),
        vec![(EventKind::Update, "a".into())]
    );
}

#[test]
fn a_live_member_refutes_a_forged_move_or_removal_before_it_applies() {
    let now = Instant::now();
    let mut s = node(now);
    packet(&mut s, now, vec![alive("a", 2, u32::MAX - 10)]);
    // At 2^32-1 while "a" is at 100, a claim is simply older (serial order).
    packet(&mut s, now, vec![alive("b", 3, 100)]);
    packet(&mut s, now, vec![alive("b", 66, u32::MAX)]);
    s.handle(now + Config::lan().probe_timeout, Input::Tick);
    assert_eq!(s.member("b").unwrap().addr, addr(3));
    // "a" is near the top of the number space: a hijack, then a forged death.
    packet(&mut s, now, vec![alive("a", 66, u32::MAX)]);
    packet(
        &mut s,
        now,
        vec![Msg::Dead {
            incarnation: u32::MAX,
            node: "a".into(),
            from: "x".into(),
        }],
    );
    // The real member hears it and refutes across the wrap: u32::MAX + 1 = 0 is newer.
    let out = packet_from(&mut s, now, addr(2), vec![alive("a", 2, 0)]);
    assert!(events(&out).is_empty(), "{out:?}");
    s.handle(now + Config::lan().probe_timeout * 2, Input::Tick);
    let m = s.member("a").unwrap();
    assert_eq!((m.addr, m.state, m.incarnation), (addr(2), State::Alive, 0));
    assert!(events(&outputs(&mut s)).is_empty());
    assert!(s.stats().refuted >= 1);
}

#[test]
fn serial_order_and_absurd_jumps() {
    assert_eq!(order(5, 5), Order::Same);
    assert_eq!(order(6, 5), Order::Newer);
    assert_eq!(order(4, 5), Order::Older);
    assert_eq!(order(0, u32::MAX), Order::Newer);
    assert_eq!(order(u32::MAX, 0), Order::Older);
    assert_eq!(order(5 + MAX_JUMP, 5), Order::Newer);
    assert_eq!(order(6 + MAX_JUMP, 5), Order::Absurd);
    // A forged claim far ahead is ignored by everyone, the member itself included.
    let now = Instant::now();
    let mut s = node(now);
    packet(&mut s, now, vec![alive("a", 2, 100)]);
    packet(
        &mut s,
        now,
        vec![Msg::Dead {
            incarnation: 100 + MAX_JUMP + 1,
            node: "a".into(),
            from: "x".into(),
        }],
    );
    packet(
        &mut s,
        now,
        vec![Msg::Suspect {
            incarnation: 5 + MAX_JUMP + 1,
            node: "me".into(),
            from: "x".into(),
        }],
    );
    assert_eq!(s.member("me").unwrap().incarnation, 5);
    s.handle(now + Duration::from_secs(5), Input::Tick);
    assert_ne!(s.member("a").unwrap().state, State::Dead);
    assert_eq!(s.stats().absurd, 2);
    // At the top of the space, we refute with 0.
    let mut t = Swim::new(Config::lan(), "me", addr(1), vec![], u32::MAX - 1, 1, now);
    packet(
        &mut t,
        now,
        vec![Msg::Suspect {
            incarnation: u32::MAX,
            node: "me".into(),
            from: "x".into(),
        }],
    );
    assert_eq!(t.member("me").unwrap().incarnation, 0);
}

#[test]
fn a_name_that_never_answers_is_never_a_member() {
    let now = Instant::now();
    let mut s = node(now);
    outputs(&mut s);
    s.handle(
        now,
        Input::Packet {
            from: addr(9),
            msgs: vec![alive("ghost", 50, 1)],
            size: 200,
            sender: None,
        },
    );
    let out = outputs(&mut s);
    assert!(events(&out).is_empty());
    let probed: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send { to, msgs } => Some((*to, msgs.len())),
            _ => None,
        })
        .collect();
    assert_eq!(probed, vec![(addr(50), 1)], "one bare ping, no gossip");
    assert!(s.member("ghost").is_none());
    assert_eq!(s.candidates(), 1);
    s.handle(now + Config::lan().probe_interval, Input::Tick);
    assert_eq!(s.candidates(), 0);
    assert!(s.member("ghost").is_none());
    assert_eq!(s.stats().unconfirmed, 1);
}

#[test]
fn invalid_names_and_tags_are_refused() {
    let now = Instant::now();
    let mut s = node(now);
    outputs(&mut s);
    let mut bad_meta = alive("x", 4, 1);
    if let Msg::Alive { meta, .. } = &mut bad_meta {
        *meta = wire::encode_tags(&[("role".to_owned(), "a b".to_owned())].into());
    }
    let out = packet(
        &mut s,
        now,
        vec![
            alive("evil\nprogram", 2, 1),
            alive(&"n".repeat(200), 3, 1),
            bad_meta,
        ],
    );
    let refused = out
        .iter()
        .filter(|o| matches!(o, Output::Refused { .. }))
        .count();
    assert_eq!(refused, 3, "{out:?}");
    assert_eq!(s.members().count(), 1);
    assert_eq!(s.candidates(), 0);
    assert_eq!(s.stats().invalid, 3);
}

#[test]
fn floods_are_capped_and_strangers_get_no_more_bytes_than_they_sent() {
    let now = Instant::now();
    let config = Config {
        max_members: 50,
        new_members_per_second: 20,
        ..Config::lan()
    };
    let mut s = Swim::new(config, "me", addr(1), vec![], 5, 1, now);
    outputs(&mut s);
    let flood: Vec<Msg> = (0..100).map(|i| alive(&format!("f{i}"), 100, 1)).collect();
    s.handle(
        now,
        Input::Packet {
            from: addr(9),
            msgs: flood,
            size: 100_000,
            sender: None,
        },
    );
    outputs(&mut s);
    assert_eq!(s.candidates(), 20, "the rate allows 20 at once");
    assert_eq!(s.stats().rate_limited, 80);
    // Pings reflected toward a victim: at most the packet's size in answers, no gossip.
    let victim = SocketAddr::from(([10, 9, 9, 9], 4000));
    let pings: Vec<Msg> = (0..100)
        .map(|i| Msg::Ping {
            seq_no: i,
            node: "me".into(),
            source: Some((victim, "v".into())),
        })
        .collect();
    let size = 300;
    s.handle(
        now,
        Input::Packet {
            from: addr(9),
            msgs: pings,
            size,
            sender: None,
        },
    );
    let sent: usize = outputs(&mut s)
        .iter()
        .filter_map(|o| match o {
            Output::Send { to, msgs } if *to == victim => {
                Some(7 + msgs.iter().map(|m| m.to_wire().len() + 2).sum::<usize>())
            }
            _ => None,
        })
        .sum();
    assert!(sent > 0 && sent <= size, "{sent} bytes toward the victim");
    // An indirect probe asked by a stranger is not carried out.
    let out = packet(
        &mut s,
        now,
        vec![Msg::IndirectPing {
            seq_no: 1,
            target: victim,
            node: "v".into(),
            nack: true,
            source: Some((addr(77), "stranger".into())),
        }],
    );
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(s.stats().stranger_relays, 1);
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

#[test]
fn a_node_leaving_soon_after_joining_has_no_deadline_stuck_in_the_past() {
    let t0 = Instant::now();
    let mut s = node(t0);
    // A push/pull schedules the early exchanges (1, 2, 4 s later); the leave comes first.
    s.handle(
        t0,
        Input::Remote {
            from: Some(addr(2)),
            sender: None,
            nodes: vec![RemoteNode {
                name: "b".into(),
                addr: addr(2),
                meta: vec![],
                incarnation: 1,
                state: State::Alive,
            }],
        },
    );
    s.handle(t0, Input::Leave);
    let mut t = t0;
    for _ in 0..100 {
        t = s.poll_timeout().max(t);
        s.handle(t, Input::Tick);
        outputs(&mut s);
    }
    assert!(
        t > t0 + Duration::from_secs(10),
        "time stuck at {:?}",
        t - t0
    );
}

/// The encoding `Msg::to_wire` had when it built a `Value` tree first (what the direct
/// writer must match byte for byte).
fn reference(m: &Msg) -> Vec<u8> {
    let with_source = |mut fields: Vec<(&'static str, Value)>,
                       source: &Option<(SocketAddr, String)>| {
        if let Some((addr, name)) = source {
            fields.push(("SourceAddr", Value::Raw(ip_bytes(addr))));
            fields.push(("SourceNode", raw(name)));
            fields.push(("SourcePort", Value::Uint(u64::from(addr.port()))));
        }
        fields.sort_by_key(|(k, _)| *k);
        Value::map(fields)
    };
    match m {
        Msg::Ping {
            seq_no,
            node,
            source,
        } => wire::message(
            kind::PING,
            &with_source(
                vec![
                    ("Node", raw(node)),
                    ("SeqNo", Value::Uint(u64::from(*seq_no))),
                ],
                source,
            ),
        ),
        Msg::IndirectPing {
            seq_no,
            target,
            node,
            nack,
            source,
        } => wire::message(
            kind::INDIRECT_PING,
            &with_source(
                vec![
                    ("Nack", Value::Bool(*nack)),
                    ("Node", raw(node)),
                    ("Port", Value::Uint(u64::from(target.port()))),
                    ("SeqNo", Value::Uint(u64::from(*seq_no))),
                    ("Target", Value::Raw(ip_bytes(target))),
                ],
                source,
            ),
        ),
        Msg::Ack { seq_no, payload } => wire::message(
            kind::ACK,
            &Value::map([
                ("Payload", Value::Raw(payload.clone())),
                ("SeqNo", Value::Uint(u64::from(*seq_no))),
            ]),
        ),
        Msg::Nack { seq_no } => wire::message(
            kind::NACK,
            &Value::map([("SeqNo", Value::Uint(u64::from(*seq_no)))]),
        ),
        Msg::Suspect {
            incarnation,
            node,
            from,
        } => wire::message(kind::SUSPECT, &verdict(*incarnation, node, from)),
        Msg::Dead {
            incarnation,
            node,
            from,
        } => wire::message(kind::DEAD, &verdict(*incarnation, node, from)),
        Msg::Alive {
            incarnation,
            node,
            addr,
            meta,
            vsn,
        } => wire::message(
            kind::ALIVE,
            &NodeState {
                name: node.clone(),
                addr: ip_bytes(addr),
                port: addr.port(),
                meta: meta.clone(),
                incarnation: *incarnation,
                state: None,
                vsn: vsn.clone(),
            }
            .alive_body(),
        ),
        Msg::User(bytes) => {
            let mut out = vec![kind::USER];
            out.extend_from_slice(bytes);
            out
        }
    }
}

fn raw(s: &str) -> Value {
    Value::Raw(s.as_bytes().to_vec())
}

fn verdict(incarnation: u32, node: &str, from: &str) -> Value {
    Value::map([
        ("From", raw(from)),
        ("Incarnation", Value::Uint(u64::from(incarnation))),
        ("Node", raw(node)),
    ])
}

#[test]
fn messages_are_written_as_the_value_tree_encoded_them() {
    let v6 = SocketAddr::from(([0xfe80, 0, 0, 0, 0, 0, 0, 1], 7946));
    let long = "n".repeat(40);
    let mut msgs = Vec::new();
    for (to, name) in [(addr(2), "b"), (v6, long.as_str())] {
        for source in [None, Some((addr(1), "me".to_owned()))] {
            msgs.push(Msg::Ping {
                seq_no: 0x1_0000,
                node: name.into(),
                source: source.clone(),
            });
            for nack in [false, true] {
                msgs.push(Msg::IndirectPing {
                    seq_no: 200,
                    target: to,
                    node: name.into(),
                    nack,
                    source: source.clone(),
                });
            }
        }
        msgs.push(Msg::Ack {
            seq_no: u32::MAX,
            payload: vec![1; 300],
        });
        msgs.push(Msg::Nack { seq_no: 7 });
        msgs.push(Msg::Suspect {
            incarnation: 128,
            node: name.into(),
            from: "me".into(),
        });
        msgs.push(Msg::Dead {
            incarnation: 1 << 20,
            node: name.into(),
            from: name.into(),
        });
        msgs.push(Msg::Alive {
            incarnation: 3,
            node: name.into(),
            addr: to,
            meta: vec![0xff, 0x80],
            vsn: VSN.to_vec(),
        });
        msgs.push(Msg::User(vec![1, 0x80]));
    }
    for m in &msgs {
        assert_eq!(m.to_wire(), reference(m), "{m:?}");
    }
}

/// The probes `out` sends to `to`: their sequence numbers.
fn pings_to(out: &[Output], to: SocketAddr) -> Vec<u32> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { to: t, msgs } if *t == to => Some(msgs),
            _ => None,
        })
        .flatten()
        .filter_map(|m| match m {
            Msg::Ping { seq_no, .. } => Some(*seq_no),
            _ => None,
        })
        .collect()
}

fn ack_from(s: &mut Swim, now: Instant, from: SocketAddr, sender: &str, seq_no: u32) {
    s.handle(
        now,
        Input::Packet {
            from,
            msgs: vec![Msg::Ack {
                seq_no,
                payload: Vec::new(),
            }],
            size: 64,
            sender: Some(sender.to_owned()),
        },
    );
}

#[test]
fn in_secure_mode_only_the_member_itself_binds_a_name_to_an_address() {
    let now = Instant::now();
    let config = Config {
        secure: true,
        ..Config::lan()
    };
    let mut s = Swim::new(config, "me", addr(1), b"meta".to_vec(), 5, 1, now);
    let said = |s: &mut Swim, sender: &str, msg: Msg| {
        s.handle(
            now,
            Input::Packet {
                from: addr(9),
                msgs: vec![msg],
                size: 1400,
                sender: Some(sender.to_owned()),
            },
        );
        outputs(s)
    };
    // A relayed introduction of b is probed; an ack sealed by another name, or from another
    // IP, binds nothing; b's own ack from its IP does.
    let out = said(&mut s, "relay", alive("b", 2, 1));
    let seq = pings_to(&out, addr(2))[0];
    ack_from(&mut s, now, addr(2), "relay", seq);
    ack_from(&mut s, now, addr(3), "b", seq);
    assert!(s.member("b").is_none());
    assert_eq!(s.stats().not_itself, 2);
    ack_from(
        &mut s,
        now,
        SocketAddr::from(([10, 0, 0, 2], 40000)),
        "b",
        seq,
    );
    assert_eq!(s.member("b").map(|m| m.addr), Some(addr(2)));
    outputs(&mut s);

    // A move of b to addr(4), newer, from a third party: b stays, the new address is probed,
    // and only b answering from there moves it (a held claim would be applied otherwise).
    let out = said(&mut s, "evil", alive("b", 4, 9));
    let seq = pings_to(&out, addr(4))[0];
    ack_from(&mut s, now, addr(4), "evil", seq);
    let later = now + Duration::from_secs(5);
    s.handle(later, Input::Tick);
    outputs(&mut s);
    assert_eq!(s.member("b").map(|m| m.addr), Some(addr(2)));
    assert_eq!(s.stats().held, 0);
    let out = said(&mut s, "evil", alive("b", 4, 10));
    let seq = pings_to(&out, addr(4))[0];
    ack_from(&mut s, now, addr(4), "b", seq);
    assert_eq!(s.member("b").map(|m| m.addr), Some(addr(4)));
    // News at the known address is taken from anyone (tags, refutations).
    let newer = Msg::Alive {
        incarnation: 11,
        node: "b".into(),
        addr: addr(4),
        meta: vec![],
        vsn: VSN.to_vec(),
    };
    said(&mut s, "relay", newer);
    assert_eq!(s.member("b").map(|m| m.incarnation), Some(11));
}

#[test]
fn an_ipv4_address_in_go_s_16_byte_form_is_kept_and_reached_as_ipv4() {
    let mapped = std::net::Ipv4Addr::new(172, 20, 0, 3).to_ipv6_mapped();
    let got = super::socket(&mapped.octets(), 7946).unwrap();
    assert_eq!(got, SocketAddr::from((mapped, 7946)), "kept as announced");
    assert_eq!(
        wire::canonical(got),
        SocketAddr::from(([172, 20, 0, 3], 7946))
    );
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 7946));
    assert_eq!(wire::canonical(v6), v6);
}

/// A view of `n` members, "me" (at `addr(1)`, as `node` makes it) among them.
fn view_of(n: u8, now: Instant) -> View {
    let members = (1..=n).map(|i| Member {
        name: if i == 1 {
            "me".to_owned()
        } else {
            format!("m{i}")
        },
        addr: addr(i),
        meta: if i == 1 { b"meta".to_vec() } else { Vec::new() },
        incarnation: if i == 1 { 5 } else { 1 },
        state: State::Alive,
        since: now,
    });
    View::new(members, 7)
}

#[test]
fn a_node_that_adopts_a_view_knows_everyone_once_and_keeps_its_own_entry() {
    let now = Instant::now();
    let mut s = node(now);
    outputs(&mut s);
    s.adopt(&view_of(40, now), now);
    assert_eq!(s.members().count(), 40);
    assert!(s.members().all(|m| m.state == State::Alive));
    let me = s.member("me").unwrap();
    assert_eq!((me.incarnation, me.meta.as_slice()), (5, &b"meta"[..]));
    // Probed and gossiped to: every other member, never itself.
    assert_eq!(s.roster.len(), 39);
    assert!(s.roster.iter().all(|n| n != "me"));
    assert_eq!(s.probe_order.len(), 39);
    // Nothing to tell: the announcement of its start is dropped.
    let later = now + Duration::from_millis(250);
    s.handle(later, Input::Tick);
    let gossip: Vec<Output> = outputs(&mut s)
        .into_iter()
        .filter(|o| matches!(o, Output::Send { msgs, .. } if msgs.iter().any(|m| matches!(m, Msg::Alive { .. }))))
        .collect();
    assert!(gossip.is_empty(), "{gossip:?}");
}

#[test]
fn push_pulls_stretch_above_32_members_as_memberlists() {
    let now = Instant::now();
    for (n, scale) in [
        (1u8, 1.0),
        (32, 1.0),
        (33, 2.0),
        (64, 2.0),
        (65, 3.0),
        (200, 4.0),
    ] {
        let mut s = node(now);
        s.adopt(&view_of(n, now), now);
        assert_eq!(s.push_pull_scale(), scale, "{n} members");
        assert!(s.next_push_pull < now + s.config.push_pull_interval.mul_f64(scale));
    }
}
