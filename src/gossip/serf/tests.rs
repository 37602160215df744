//! Unit tests of Serf's layer: status transitions, intents before and after the member, the
//! Lamport clock, push/pull state, reconnect and reap.

#![allow(clippy::disallowed_methods)]

use super::*;
use crate::gossip::swim::State;

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 7946))
}

fn config() -> Config {
    Config {
        reconnect_interval: Duration::from_secs(1),
        reap_failed: Duration::from_secs(60),
        reap_left: Duration::from_secs(30),
        reap_interval: Duration::from_secs(1),
        intent_timeout: Duration::from_secs(10),
    }
}

fn serf(now: Instant) -> Serf {
    Serf::new(config(), "me", addr(1), BTreeMap::new(), 7, now)
}

fn swim_event(kind: SwimKind, name: &str, n: u8, now: Instant) -> swim::Event {
    let mut tags = BTreeMap::new();
    tags.insert("role".to_owned(), "backend".to_owned());
    swim::Event {
        kind,
        member: swim::Member {
            name: name.to_owned(),
            addr: addr(n),
            meta: wire::encode_tags(&tags),
            incarnation: 1,
            state: State::Alive,
            since: now,
        },
    }
}

fn drain(s: &mut Serf) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

fn events(out: &[Output]) -> Vec<(EventKind, String, Status)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some((e.kind, e.member.name.clone(), e.member.status)),
            _ => None,
        })
        .collect()
}

fn status(s: &Serf, name: &str) -> Option<Status> {
    s.member(name).map(|m| m.status)
}

#[test]
fn join_then_fail_then_return() {
    let t0 = Instant::now();
    let mut s = serf(t0);
    s.on_swim(t0, &swim_event(SwimKind::Join, "a", 2, t0));
    let out = drain(&mut s);
    assert_eq!(events(&out), [(EventKind::Join, "a".into(), Status::Alive)]);
    assert!(out.contains(&Output::Changed));
    assert_eq!(s.member("a").unwrap().tags["role"], "backend");
    s.on_swim(t0, &swim_event(SwimKind::Fail, "a", 2, t0));
    assert_eq!(
        events(&drain(&mut s)),
        [(EventKind::Failed, "a".into(), Status::Failed)]
    );
    // Failing twice says nothing new.
    s.on_swim(t0, &swim_event(SwimKind::Fail, "a", 2, t0));
    assert!(events(&drain(&mut s)).is_empty());
    // Back on a new address.
    s.on_swim(t0, &swim_event(SwimKind::Join, "a", 3, t0));
    assert_eq!(
        events(&drain(&mut s)),
        [(EventKind::Join, "a".into(), Status::Alive)]
    );
    assert_eq!(s.member("a").unwrap().addr, addr(3));
}

#[test]
fn leave_intent_then_death_is_left_and_death_alone_is_failed() {
    let t0 = Instant::now();
    let mut s = serf(t0);
    for (n, name) in [(2, "a"), (3, "b")] {
        s.on_swim(t0, &swim_event(SwimKind::Join, name, n, t0));
    }
    drain(&mut s);
    assert!(s.on_user(t0, &intent(serf_kind::LEAVE, 5, "a")));
    assert_eq!(status(&s, "a"), Some(Status::Leaving));
    // The intent is passed on, once.
    let out = drain(&mut s);
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, Output::Broadcast(_)))
            .count(),
        1
    );
    assert!(!s.on_user(t0, &intent(serf_kind::LEAVE, 5, "a")));
    assert!(s.clock() > 5, "the clock moved past what it saw");
    s.on_swim(t0, &swim_event(SwimKind::Fail, "a", 2, t0));
    s.on_swim(t0, &swim_event(SwimKind::Fail, "b", 3, t0));
    assert_eq!(
        events(&drain(&mut s)),
        [
            (EventKind::Leave, "a".into(), Status::Left),
            (EventKind::Failed, "b".into(), Status::Failed)
        ]
    );
    // A leave intent that arrives after the failure turns failed into left.
    assert!(s.on_user(t0, &intent(serf_kind::LEAVE, 9, "b")));
    assert_eq!(status(&s, "b"), Some(Status::Left));
}

#[test]
fn memberlist_leave_without_intent_is_left() {
    let t0 = Instant::now();
    let mut s = serf(t0);
    s.on_swim(t0, &swim_event(SwimKind::Join, "a", 2, t0));
    s.on_swim(t0, &swim_event(SwimKind::Leave, "a", 2, t0));
    assert_eq!(status(&s, "a"), Some(Status::Left));
}

#[test]
fn an_intent_before_the_member_is_applied_when_it_appears() {
    let t0 = Instant::now();
    let mut s = serf(t0);
    assert!(s.on_user(t0, &intent(serf_kind::LEAVE, 4, "late")));
    // An older join intent does not override the newer leave.
    assert!(!s.on_user(t0, &intent(serf_kind::JOIN, 3, "late")));
    s.on_swim(t0, &swim_event(SwimKind::Join, "late", 2, t0));
    let m = s.member("late").unwrap();
    assert_eq!((m.status, m.status_ltime), (Status::Leaving, 4));
    // A newer join brings it back to alive.
    assert!(s.on_user(t0, &intent(serf_kind::JOIN, 6, "late")));
    assert_eq!(status(&s, "late"), Some(Status::Alive));
}

#[test]
fn stale_intents_about_unknown_members_expire() {
    let t0 = Instant::now();
    let mut s = serf(t0);
    s.on_user(t0, &intent(serf_kind::LEAVE, 4, "ghost"));
    s.tick(t0 + Duration::from_secs(11));
    s.on_swim(t0, &swim_event(SwimKind::Join, "ghost", 2, t0));
    assert_eq!(status(&s, "ghost"), Some(Status::Alive));
}

#[test]
fn a_stale_leave_about_ourselves_is_refuted_with_a_newer_join() {
    let t0 = Instant::now();
    let mut s = serf(t0);
    assert!(!s.on_user(t0, &intent(serf_kind::LEAVE, 10, "me")));
    assert_eq!(status(&s, "me"), Some(Status::Alive));
    let out = drain(&mut s);
    let join = out
        .iter()
        .find_map(|o| match o {
            Output::Broadcast(b) if b[0] == serf_kind::JOIN => Some(b.clone()),
            _ => None,
        })
        .expect("a join intent is broadcast");
    let (v, _) = msgpack::decode(&join[1..]).unwrap();
    assert!(v.get("LTime").and_then(Value::as_u64).unwrap() > 10);
}

#[test]
fn our_own_leave_broadcasts_an_intent_and_marks_us_leaving() {
    let t0 = Instant::now();
    let mut s = serf(t0);
    s.leave(t0);
    assert_eq!(status(&s, "me"), Some(Status::Leaving));
    let out = drain(&mut s);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Broadcast(b) if b[0] == serf_kind::LEAVE))
    );
    s.leave(t0);
    assert!(drain(&mut s).is_empty(), "a second leave does nothing");
}

#[test]
fn push_pull_state_round_trips_and_carries_left_members() {
    let t0 = Instant::now();
    let mut a = serf(t0);
    for (n, name) in [(2, "x"), (3, "y")] {
        a.on_swim(t0, &swim_event(SwimKind::Join, name, n, t0));
    }
    a.on_user(t0, &intent(serf_kind::LEAVE, 12, "x"));
    a.on_swim(t0, &swim_event(SwimKind::Fail, "x", 2, t0));
    let bytes = a.local_state();
    let pp = PushPullState::decode(&bytes).unwrap();
    assert_eq!(pp.left_members, ["x"]);
    assert_eq!(PushPullState::decode(&pp.encode()).unwrap(), pp);

    // Another node that only saw x fail learns from the push/pull that x left.
    let mut b = Serf::new(config(), "other", addr(9), BTreeMap::new(), 1, t0);
    b.on_swim(t0, &swim_event(SwimKind::Join, "x", 2, t0));
    b.on_swim(t0, &swim_event(SwimKind::Fail, "x", 2, t0));
    drain(&mut b);
    b.merge_remote_state(t0, &bytes).unwrap();
    assert_eq!(status(&b, "x"), Some(Status::Left));
    assert!(b.clock() >= a.clock());
    // No user state (plain memberlist) is fine; garbage is an error, not a panic.
    b.merge_remote_state(t0, &[]).unwrap();
    assert!(
        b.merge_remote_state(t0, &[serf_kind::PUSH_PULL, 0xc1])
            .is_err()
    );
    assert!(b.merge_remote_state(t0, &[serf_kind::JOIN, 0x80]).is_err());
}

#[test]
fn failed_members_are_retried_then_reaped_and_left_members_reaped_sooner() {
    let t0 = Instant::now();
    let mut s = serf(t0);
    for (n, name) in [(2, "dead"), (3, "gone"), (4, "fine")] {
        s.on_swim(t0, &swim_event(SwimKind::Join, name, n, t0));
    }
    s.on_swim(t0, &swim_event(SwimKind::Fail, "dead", 2, t0));
    s.on_swim(t0, &swim_event(SwimKind::Leave, "gone", 3, t0));
    drain(&mut s);
    // One failed against two alive (me counted): reconnects happen about half the time.
    let mut tries = 0;
    let mut t = t0;
    for _ in 0..20 {
        t += Duration::from_secs(1);
        s.tick(t);
        for o in drain(&mut s) {
            if let Output::Reconnect(a) = o {
                assert_eq!(a, addr(2), "only the failed member is retried");
                tries += 1;
            }
        }
    }
    assert!((3..=19).contains(&tries), "{tries} reconnects in 20 rounds");
    // 30 s: the left member is reaped; 60 s: the failed one.
    let mut reaped = Vec::new();
    while t < t0 + Duration::from_secs(61) {
        t += Duration::from_secs(1);
        s.tick(t);
        for o in drain(&mut s) {
            match o {
                Output::Event(e) if e.kind == EventKind::Reap => {
                    reaped.push((e.member.name, t.duration_since(t0).as_secs()));
                }
                Output::Forget(name) => assert!(s.member(&name).is_none()),
                _ => {}
            }
        }
    }
    assert_eq!(reaped, [("gone".to_owned(), 30), ("dead".to_owned(), 60)]);
    assert_eq!(s.members().count(), 2);
}

#[test]
fn tag_changes_are_updates() {
    let t0 = Instant::now();
    let mut s = serf(t0);
    s.on_swim(t0, &swim_event(SwimKind::Join, "a", 2, t0));
    drain(&mut s);
    let mut e = swim_event(SwimKind::Update, "a", 2, t0);
    e.member.meta = wire::encode_tags(&BTreeMap::from([("role".into(), "lb".into())]));
    s.on_swim(t0, &e);
    assert_eq!(
        events(&drain(&mut s)),
        [(EventKind::Update, "a".into(), Status::Alive)]
    );
    assert_eq!(s.member("a").unwrap().tags["role"], "lb");
    // The same meta again is no event.
    s.on_swim(t0, &e);
    assert!(events(&drain(&mut s)).is_empty());
}

#[test]
fn suspicion_is_published_without_an_event() {
    let t0 = Instant::now();
    let mut s = serf(t0);
    s.on_swim(t0, &swim_event(SwimKind::Join, "a", 2, t0));
    drain(&mut s);
    s.on_swim(t0, &swim_event(SwimKind::Suspect, "a", 2, t0));
    assert_eq!(drain(&mut s), [Output::Changed]);
    assert!(s.member("a").unwrap().suspect);
    s.on_swim(t0, &swim_event(SwimKind::Refuted, "a", 2, t0));
    assert_eq!(drain(&mut s), [Output::Changed]);
    assert!(!s.member("a").unwrap().suspect);
}

#[test]
fn lamport_extremes_cannot_pin_a_status() {
    let t0 = Instant::now();
    let mut s = serf(t0);
    s.on_swim(t0, &swim_event(SwimKind::Join, "a", 2, t0));
    drain(&mut s);
    // A forged leave at 2^64-1 (far ahead of our clock) is ignored, never witnessed.
    assert!(!s.on_user(t0, &intent(serf_kind::LEAVE, u64::MAX, "a")));
    assert_eq!(status(&s, "a"), Some(Status::Alive));
    assert!(s.clock() < 10);
    // One within the jump is applied, and the member's refutation (one later) wins.
    let t = MAX_LTIME_JUMP;
    assert!(s.on_user(t0, &intent(serf_kind::LEAVE, t, "a")));
    assert_eq!(status(&s, "a"), Some(Status::Leaving));
    assert!(s.on_user(t0, &intent(serf_kind::JOIN, t + 1, "a")));
    assert_eq!(status(&s, "a"), Some(Status::Alive));
    // Across the wrap of the clock too.
    let top = u64::MAX - 1;
    let mut x = serf(t0);
    x.on_swim(t0, &swim_event(SwimKind::Join, "a", 2, t0));
    x.clock = top - 5;
    x.members.get_mut("a").unwrap().status_ltime = top - 5;
    assert!(x.on_user(t0, &intent(serf_kind::JOIN, top - 4, "a")));
    assert!(x.on_user(t0, &intent(serf_kind::LEAVE, top, "a")));
    assert_eq!(status(&x, "a"), Some(Status::Leaving));
    assert!(x.on_user(t0, &intent(serf_kind::JOIN, top.wrapping_add(3), "a")));
    assert_eq!(status(&x, "a"), Some(Status::Alive));
    // We refute a leave about ourselves with a later join, even at the top.
    let mut me = serf(t0);
    me.clock = u64::MAX - 2;
    me.members.get_mut("me").unwrap().status_ltime = u64::MAX - 3;
    me.on_user(t0, &intent(serf_kind::LEAVE, u64::MAX, "me"));
    let refute = drain(&mut me)
        .into_iter()
        .find_map(|o| match o {
            Output::Broadcast(b) if b[0] == serf_kind::JOIN => Some(b),
            _ => None,
        })
        .expect("a join intent");
    let (v, _) = crate::gossip::msgpack::decode(&refute[1..]).unwrap();
    assert_eq!(
        v.get("LTime")
            .and_then(crate::gossip::msgpack::Value::as_u64),
        Some(0)
    );
}

#[test]
fn intents_with_invalid_names_or_beyond_the_cap_are_dropped() {
    let t0 = Instant::now();
    let mut s = serf(t0);
    assert!(!s.on_user(t0, &intent(serf_kind::JOIN, 1, "a b")));
    assert!(!s.on_user(t0, &intent(serf_kind::JOIN, 1, &"x".repeat(300))));
    for i in 0..2000 {
        s.on_user(t0, &intent(serf_kind::JOIN, 1, &format!("n{i}")));
    }
    assert_eq!(s.intents.len(), MAX_INTENTS);
}
