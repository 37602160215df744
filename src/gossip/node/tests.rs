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
