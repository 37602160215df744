//! Unit tests of the node: the leave's deadline, the join timer while leaving, and datagram
//! framing.

#![allow(clippy::disallowed_methods)]

use super::*;

fn settings(name: &str, ip: u8) -> Settings {
    Settings {
        name: name.to_owned(),
        advertise: SocketAddr::from(([10, 0, 0, ip], 7946)),
        tags: BTreeMap::new(),
        profile: swim::Config::lan(),
        serf: serf::Config::default(),
        rejoin_interval: Duration::from_secs(30),
        incarnation: 1,
        seed: u64::from(ip),
    }
}

fn drain(node: &mut Node) -> Vec<Output> {
    std::iter::from_fn(|| node.poll_output()).collect()
}

/// Node `a` that knows node `b` (from `b`'s push/pull), at `now`.
fn pair(now: Instant) -> Node {
    let mut a = Node::new(settings("a", 1), false, now);
    let b = Node::new(settings("b", 2), false, now);
    let from = b.swim().member("b").map(|m| m.addr).unwrap();
    a.handle(
        now,
        Input::Stream {
            from,
            bytes: &b.push_pull_answer(),
        },
    );
    assert!(a.swim().member("b").is_some(), "a learned b");
    drain(&mut a);
    a
}

/// Asks `node` to leave at `now` with deadline `by`, then ticks it whenever it says it is
/// due until it reports the leave done: returns when, and whether the leave's dead
/// message went to the peer before that.
fn check(now: Instant, by: Instant, expect: Instant) {
    let mut node = pair(now);
    node.handle(now, Input::Leave { by });
    let mut told = false;
    let mut t = now;
    loop {
        for out in drain(&mut node) {
            match out {
                Output::Transmit { .. } => told = true,
                Output::Left => {
                    assert_eq!(t, expect, "leave at {now:?} by {by:?}");
                    assert!(told, "the others were told before the leave was done");
                    return;
                }
                _ => {}
            }
        }
        assert!(t < now + Duration::from_secs(5), "no Left");
        t = node.poll_timeout().max(t);
        node.handle(t, Input::Tick);
    }
}

#[test]
fn a_leave_is_done_after_its_propagation_time_or_at_its_deadline() {
    let now = Instant::now();
    // A distant deadline: the leave has its full time to spread.
    check(now, now + Duration::from_secs(30), now + LEAVE_PROPAGATE);
    // A deadline sooner than that: done at the deadline.
    let by = now + Duration::from_millis(300);
    check(now, by, by);
    // A deadline already past: done at the first tick.
    check(
        now + Duration::from_secs(1),
        now,
        now + Duration::from_secs(1),
    );
}

#[test]
fn a_second_leave_with_an_earlier_deadline_brings_the_report_forward() {
    let now = Instant::now();
    let mut node = pair(now);
    node.handle(
        now,
        Input::Leave {
            by: now + Duration::from_secs(30),
        },
    );
    let soon = now + Duration::from_millis(100);
    node.handle(now, Input::Leave { by: soon });
    assert!(node.poll_timeout() <= soon);
    node.handle(soon, Input::Tick);
    assert_eq!(
        drain(&mut node)
            .iter()
            .filter(|o| **o == Output::Left)
            .count(),
        1
    );
    // Asked again once done: answered at once; reported once per request.
    node.handle(soon, Input::Leave { by: soon });
    assert!(drain(&mut node).contains(&Output::Left));
    node.handle(now + Duration::from_secs(10), Input::Tick);
    assert!(!drain(&mut node).contains(&Output::Left));
}

#[test]
fn frames_are_what_the_wire_functions_make() {
    let ping = |seq_no| Msg::Ping {
        seq_no,
        node: "b".into(),
        source: None,
    };
    let big = Msg::User(vec![7; 70_000]);
    for msgs in [
        vec![ping(1)],
        vec![ping(1), ping(2), Msg::User(vec![1, 0x80])],
        (0..300).map(ping).collect(),
        vec![ping(1), big.clone()],
        vec![big],
    ] {
        let parts: Vec<Vec<u8>> = msgs.iter().map(Msg::to_wire).collect();
        let want = if parts.len() == 1 {
            wire::with_crc(&parts[0])
        } else {
            wire::with_crc(&wire::compound(&parts))
        };
        assert_eq!(frame(&msgs), want, "{} messages", msgs.len());
    }
}

#[test]
fn a_leaving_node_stops_joining() {
    let now = Instant::now();
    let mut node = Node::new(settings("a", 1), true, now);
    node.handle(now, Input::Tick);
    assert!(drain(&mut node).contains(&Output::JoinDue));
    node.handle(now, Input::Leave { by: now });
    let later = now + Duration::from_secs(10);
    node.handle(later, Input::Tick);
    assert!(!drain(&mut node).contains(&Output::JoinDue));
}

fn keyed(name: &str, ip: u8, key: u8, now: Instant) -> Node {
    let ring = Keyring::new(&[[key; 32]]).expect("key");
    Node::new(settings(name, ip), false, now).with_keyring(ring, [ip; crypto::NONCE])
}

/// The first datagram `node` sends within `secs` seconds of ticks.
fn first_datagram(node: &mut Node, mut now: Instant, secs: u64) -> Vec<u8> {
    for _ in 0..secs * 10 {
        now += Duration::from_millis(100);
        node.handle(now, Input::Tick);
        for out in drain(node) {
            if let Output::Transmit { bytes, .. } = out {
                return bytes;
            }
        }
    }
    panic!("no datagram in {secs} s");
}

#[test]
fn keyed_nodes_read_each_other_and_refuse_plaintext_and_wrong_keys() {
    let now = Instant::now();
    let b = keyed("b", 2, 9, now);
    let from = b.swim().member("b").map(|m| m.addr).unwrap();
    let answer = b.push_pull_answer();
    assert_eq!(answer[0], wire::kind::ENCRYPT, "push/pull is sealed");
    assert_eq!(stream_complete_keyed(&answer, 100, true), Ok(true));
    assert_eq!(
        stream_complete_keyed(&answer[..answer.len() - 1], 100, true),
        Ok(false)
    );

    // Same key: b is learned through push/pull.
    let mut a = keyed("a", 1, 9, now);
    a.handle(
        now,
        Input::Stream {
            from,
            bytes: &answer,
        },
    );
    assert!(a.swim().member("b").is_some());
    assert_eq!(a.crypto_refused(), CryptoRefused::default());

    // Wrong key, and plaintext: nothing learned, both counted.
    let mut c = keyed("c", 3, 8, now);
    c.handle(
        now,
        Input::Stream {
            from,
            bytes: &answer,
        },
    );
    let plain = Node::new(settings("p", 4), false, now).push_pull_answer();
    assert_eq!(stream_complete_keyed(&plain[..1], 100, true), Ok(true));
    c.handle(
        now,
        Input::Stream {
            from: SocketAddr::from(([10, 0, 0, 4], 7946)),
            bytes: &plain,
        },
    );
    assert_eq!(c.swim().members().count(), 1, "c knows only itself");
    assert_eq!(c.crypto_refused().streams, 2);

    // Datagrams: a's probe of b is sealed; b opens it, c does not, and a plaintext one is
    // refused.
    let sealed = first_datagram(&mut a, now, 5);
    assert_eq!(sealed[0], crypto::SEND_VERSION);
    let ring = Keyring::new(&[[9u8; 32]]).expect("key");
    let inner = ring.open(&sealed, b"").expect("opens with the key");
    assert_eq!(inner[0], wire::kind::HAS_CRC);
    let a_addr = SocketAddr::from(([10, 0, 0, 1], 7946));
    let mut b = b;
    b.handle(
        now,
        Input::Datagram {
            from: a_addr,
            bytes: &sealed,
        },
    );
    assert_eq!(b.crypto_refused(), CryptoRefused::default());
    assert_eq!(b.undecodable(), 0);
    drain(&mut c);
    c.handle(
        now,
        Input::Datagram {
            from: a_addr,
            bytes: &sealed,
        },
    );
    c.handle(
        now,
        Input::Datagram {
            from: a_addr,
            bytes: &inner,
        },
    );
    assert_eq!(c.crypto_refused().packets, 2);
    assert!(
        drain(&mut c)
            .iter()
            .all(|o| !matches!(o, Output::Transmit { .. } | Output::ViewChanged)),
        "c answers nothing and changes nothing"
    );
}

/// The datagrams and stream directions of the captured serf session, as bytes.
fn golden() -> Vec<(bool, Vec<u8>)> {
    include_str!("../../../tests/golden/serf-0.9.4-join-tags-leave.txt")
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let udp = match f.next()? {
                "udp" => true,
                "tcp" => false,
                _ => return None,
            };
            let hex = f.nth(1)?;
            let bytes = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            Some((udp, bytes))
        })
        .collect()
}

#[test]
fn a_keyed_node_survives_damaged_sealed_and_unsealed_serf_traffic() {
    // serf's real traffic, damaged at random, fed to a keyed node both sealed with its key
    // (so the decoders under the encryption see it) and as is (refused): never a panic, never
    // more members than kept, and every unsealed input counted as refused.
    let now = Instant::now();
    let mut node = keyed("k", 1, 9, now);
    let ring = Keyring::new(&[[9u8; 32]]).expect("key");
    let mut nonces = Nonces::new([3; crypto::NONCE]);
    let from = SocketAddr::from(([10, 0, 0, 2], 7946));
    let golden = golden();
    assert!(golden.len() > 40, "{} captured inputs", golden.len());
    let mut x = 0x9e37_79b9_u32;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let mut unsealed = 0;
    for round in 0..3000 {
        let (udp, base) = &golden[round % golden.len()];
        let mut bytes = base.clone();
        for _ in 0..rand() % 4 {
            if bytes.is_empty() {
                break;
            }
            let i = rand() as usize % bytes.len();
            match rand() % 3 {
                0 => bytes[i] ^= 1 << (rand() % 8),
                1 => bytes.truncate(i),
                _ => bytes.insert(i, rand() as u8),
            }
        }
        let sealed = if *udp {
            ring.seal(rand() as u8 % 2, &nonces.next_nonce(), &bytes, b"")
        } else {
            ring.seal_stream(&nonces.next_nonce(), &bytes)
        };
        for b in [&sealed, &bytes] {
            let input = if *udp {
                Input::Datagram { from, bytes: b }
            } else {
                Input::Stream { from, bytes: b }
            };
            node.handle(now, input);
        }
        unsealed += 1;
        drain(&mut node);
        assert!(node.swim().members().count() <= swim::Config::lan().max_members);
    }
    let refused = node.crypto_refused();
    assert_eq!(refused.packets + refused.streams, unsealed);
    // A sealed push/pull was opened and decoded (only that sets `joined`).
    assert!(node.joined(), "the sealed serf streams were read");
}

const WALL: u64 = 1_800_000_000_000;

fn addr(ip: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, ip], 7946))
}

/// A node in secure mode whose wall clock reads `wall` at `now`.
fn secure(name: &str, ip: u8, now: Instant, wall: u64) -> Node {
    keyed(name, ip, 9, now).with_secure(wall, now, vec![addr(ip)])
}

/// `from`'s push/pull request to `to`, answered by `to` (fed the request, as the driver
/// does): the answer's bytes, or `None` when `to` gives none.
fn exchange(from: &mut Node, to: &mut Node, now: Instant, wall: u64) -> Option<Vec<u8>> {
    let peer = from.swim().member(from.swim().name()).unwrap().addr;
    let target = to.swim().member(to.swim().name()).unwrap().addr;
    from.handle(now, Input::Join(vec![target]));
    let request = drain(from)
        .into_iter()
        .find_map(|o| match o {
            Output::PushPull { to, bytes } if to == target => Some(bytes),
            _ => None,
        })
        .expect("a push/pull request");
    let answer = to
        .answerer([3; crypto::NONCE])?
        .answer(&request, &to.push_pull_plain(), wall);
    to.handle(
        now,
        Input::Stream {
            from: peer,
            bytes: &request,
        },
    );
    // The same request again (a replay): refused (as stale when the first one was).
    let count = |n: &Node| n.crypto_refused().replayed + n.crypto_refused().stale;
    let again = count(to);
    to.handle(
        now,
        Input::Stream {
            from: peer,
            bytes: &request,
        },
    );
    assert_eq!(count(to), again + 1, "a replayed request");
    answer
}

/// The next datagram `node` sends to `to`, ticking for up to 5 s.
fn datagram_to(node: &mut Node, to: SocketAddr, mut now: Instant) -> Vec<u8> {
    for _ in 0..50 {
        now += Duration::from_millis(100);
        node.handle(now, Input::Tick);
        for out in drain(node) {
            if let Output::Transmit { to: t, bytes } = out {
                if t == to {
                    return bytes;
                }
            }
        }
    }
    panic!("no datagram to {to}");
}

#[test]
fn secure_nodes_join_and_refuse_replayed_misdirected_and_stale_traffic() {
    let now = Instant::now();
    let (mut a, mut b, mut c) = (
        secure("a", 1, now, WALL),
        secure("b", 2, now, WALL),
        secure("c", 3, now, WALL),
    );
    let answer = exchange(&mut a, &mut b, now, WALL).expect("b answers");
    let b_addr = addr(2);
    a.handle(
        now,
        Input::Stream {
            from: b_addr,
            bytes: &answer,
        },
    );
    assert!(a.swim().member("b").is_some(), "a learned b");
    assert!(b.swim().member("a").is_some(), "b learned a");
    // The answer again: its request was answered already.
    a.handle(
        now,
        Input::Stream {
            from: b_addr,
            bytes: &answer,
        },
    );
    assert_eq!(a.crypto_refused().replayed, 1);
    assert_eq!(a.swim().members().count(), 2);

    let d = datagram_to(&mut a, b_addr, now);
    let t = now + Duration::from_secs(1);
    let opened = |n: &Node| n.crypto_refused();
    let seen = opened(&b);
    b.handle(
        t,
        Input::Datagram {
            from: addr(1),
            bytes: &d,
        },
    );
    assert_eq!(opened(&b), seen, "b takes it once");
    b.handle(
        t,
        Input::Datagram {
            from: addr(1),
            bytes: &d,
        },
    );
    assert_eq!(opened(&b).replayed, seen.replayed + 1, "and not twice");
    // Sent to b, it does not open at c.
    c.handle(
        t,
        Input::Datagram {
            from: addr(1),
            bytes: &d,
        },
    );
    assert_eq!(opened(&c).packets, 1);
    // Hours later, at b: stale (its sequence number alone would pass: b forgot a).
    let later = t + Duration::from_secs(3 * 3600);
    let mut fresh_b = secure("b", 2, later, WALL + 3 * 3600 * 1000);
    fresh_b.handle(
        later,
        Input::Datagram {
            from: addr(1),
            bytes: &d,
        },
    );
    assert_eq!(opened(&fresh_b).stale, 1);
    // A node whose clock is an hour ahead is refused too.
    let mut ahead = secure("z", 4, now, WALL + 3600 * 1000);
    let mut b2 = secure("b2", 2, now, WALL);
    assert!(
        exchange(&mut ahead, &mut b2, now, WALL).is_none(),
        "no answer to a stale request"
    );
    assert!(b2.swim().member("z").is_none());
    assert_eq!(opened(&b2).stale, 2);
}

#[test]
fn secure_and_keyed_nodes_do_not_mix_and_say_so() {
    let now = Instant::now();
    let mut s = secure("s", 1, now, WALL);
    let mut k = keyed("k", 2, 9, now);
    // k's push/pull reaches s: not opened, counted as another setting.
    let kb = k.push_pull_answer();
    s.handle(
        now,
        Input::Stream {
            from: addr(2),
            bytes: &kb,
        },
    );
    assert_eq!(s.crypto_refused().mode_mismatch, 1);
    assert!(s.swim().member("k").is_none());
    // s's request reaches k: the same.
    s.handle(now, Input::Join(vec![addr(2)]));
    let request = drain(&mut s)
        .into_iter()
        .find_map(|o| match o {
            Output::PushPull { bytes, .. } => Some(bytes),
            _ => None,
        })
        .unwrap();
    k.handle(
        now,
        Input::Stream {
            from: addr(1),
            bytes: &request,
        },
    );
    assert_eq!(k.crypto_refused().mode_mismatch, 1);
    assert!(k.swim().member("s").is_none());
    // A datagram of s to k's address (s learns of a secure node there first).
    let mut t = secure("t", 2, now, WALL);
    let answer = exchange(&mut s, &mut t, now, WALL).unwrap();
    s.handle(
        now,
        Input::Stream {
            from: addr(2),
            bytes: &answer,
        },
    );
    let d = datagram_to(&mut s, addr(2), now);
    k.handle(
        now,
        Input::Datagram {
            from: addr(1),
            bytes: &d,
        },
    );
    assert_eq!(k.crypto_refused().mode_mismatch, 2);
}
