//! Unit tests of user events and queries in Serf's layer.

#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;

use super::*;
use crate::gossip::serf::Config;
use crate::gossip::swim::{self, EventKind as SwimKind, State};
use crate::gossip::wire;

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 7946))
}

fn serf(now: Instant, tags: &[(&str, &str)]) -> Serf {
    let tags = tags
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Serf::new(Config::default(), "me", addr(1), tags, 7, now)
}

fn drain(s: &mut Serf) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

/// `name` at 10.0.0.n joins the Serf view.
fn member(s: &mut Serf, name: &str, n: u8, now: Instant) {
    s.on_swim(
        now,
        &swim::Event {
            kind: SwimKind::Join,
            member: swim::Member {
                name: name.to_owned(),
                addr: addr(n),
                meta: wire::encode_tags(&BTreeMap::new()),
                incarnation: 1,
                state: State::Alive,
                since: now,
            },
        },
    );
}

fn query(source: &str, from: u8, id: u32, filters: Vec<QueryFilter>) -> Vec<u8> {
    Query {
        ltime: 5,
        id,
        addr: addr(from).ip(),
        port: 7946,
        source: source.into(),
        filters,
        flags: user::FLAG_ACK,
        relay_factor: 0,
        timeout: Duration::from_secs(2),
        name: "uptime".into(),
        payload: Vec::new(),
    }
    .encode()
}

#[test]
fn an_event_is_delivered_here_once_and_gossiped_and_an_oversized_one_refused() {
    let now = Instant::now();
    let mut s = serf(now, &[]);
    s.user_event("deploy", b"v2", false).unwrap();
    let out = drain(&mut s);
    let delivered: Vec<&UserEvent> = out
        .iter()
        .filter_map(|o| match o {
            Output::UserEvent(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        (delivered[0].ltime, delivered[0].name.as_str()),
        (1, "deploy")
    );
    let body = out
        .iter()
        .find_map(|o| match o {
            Output::Broadcast(b) => Some(b.clone()),
            _ => None,
        })
        .unwrap();
    // The same message back from gossip: not delivered again, not gossiped again.
    assert!(!s.on_user(now, &body));
    assert!(drain(&mut s).is_empty());
    let big = vec![b'x'; user::EVENT_SIZE_LIMIT];
    assert!(
        s.user_event("big", &big, false)
            .unwrap_err()
            .contains("limit")
    );
    assert!(s.user_event("a\nb", b"", false).is_err());
    // The next event takes the next Lamport time.
    s.user_event("deploy", b"v3", false).unwrap();
    assert!(
        drain(&mut s)
            .iter()
            .any(|o| matches!(o, Output::UserEvent(e) if e.ltime == 2))
    );
}

#[test]
fn a_query_from_a_member_is_acknowledged_to_its_address_and_one_from_elsewhere_is_not() {
    let now = Instant::now();
    let mut s = serf(now, &[("role", "backend")]);
    member(&mut s, "asker", 2, now);
    drain(&mut s);
    assert!(s.on_user(now, &query("asker", 2, 1, Vec::new())));
    let out = drain(&mut s);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::SendTo { to, .. } if *to == addr(2)))
    );
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Query(q) if q.name == "uptime"))
    );
    // Answers to an address that is not the asker's: nothing sent, nothing gossiped.
    assert!(!s.on_user(now, &query("asker", 9, 2, Vec::new())));
    assert!(!s.on_user(now, &query("stranger", 9, 3, Vec::new())));
    assert!(drain(&mut s).is_empty());
    // Filters: by node, by tag (unanchored, as Serf's).
    let nodes = vec![QueryFilter::Nodes(vec!["other".into()])];
    assert!(s.on_user(now, &query("asker", 2, 4, nodes)));
    let out = drain(&mut s);
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Query(_) | Output::SendTo { .. }))
    );
    assert!(out.iter().any(|o| matches!(o, Output::Broadcast(_))));
    let tag = vec![QueryFilter::Tag {
        tag: "role".into(),
        expr: "back".into(),
    }];
    assert!(s.on_user(now, &query("asker", 2, 5, tag)));
    assert!(drain(&mut s).iter().any(|o| matches!(o, Output::Query(_))));
}

#[test]
fn our_query_takes_each_answer_once_until_its_time_is_up() {
    let now = Instant::now();
    let mut s = serf(now, &[]);
    let ask = Ask {
        name: "uptime".into(),
        ack: true,
        timeout: Duration::from_secs(2),
        ..Ask::default()
    };
    let q = s.query(now, addr(1), ask, 99).unwrap();
    let out = drain(&mut s);
    // Processed here too: our own acknowledgement goes to our own address.
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::SendTo { to, .. } if *to == addr(1)))
    );
    let answer = |from: &str, flags: u64| {
        QueryResponse {
            ltime: q.ltime,
            id: q.id,
            from: from.into(),
            flags,
            payload: b"up".to_vec(),
        }
        .encode()
    };
    s.on_user(now, &answer("a", user::FLAG_ACK));
    s.on_user(now, &answer("a", user::FLAG_ACK));
    s.on_user(now, &answer("a", 0));
    let taken = drain(&mut s)
        .into_iter()
        .filter(|o| matches!(o, Output::QueryAnswer(_)))
        .count();
    assert_eq!(taken, 2, "one ack and one response from a");
    s.tick(now + Duration::from_secs(3));
    let out = drain(&mut s);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::QueryDone { id: 99, .. }))
    );
    s.on_user(now, &answer("b", 0));
    assert!(drain(&mut s).is_empty(), "closed: no more answers");
}

#[test]
fn answers_are_relayed_through_other_members_and_relays_go_only_to_members() {
    let now = Instant::now();
    let mut s = serf(now, &[]);
    for (name, n) in [("asker", 2), ("b", 3), ("c", 4), ("d", 5)] {
        member(&mut s, name, n, now);
    }
    drain(&mut s);
    let mut q = Query::decode(&query("asker", 2, 1, Vec::new())[1..]).unwrap();
    q.relay_factor = 2;
    assert!(s.on_user(now, &q.encode()));
    let sends: Vec<(SocketAddr, u8)> = drain(&mut s)
        .into_iter()
        .filter_map(|o| match o {
            Output::SendTo { to, body } => Some((to, body[0])),
            _ => None,
        })
        .collect();
    // The ack straight to the asker, and twice through others, never through the asker.
    assert_eq!(sends.iter().filter(|(to, _)| *to == addr(2)).count(), 1);
    let relayed: Vec<&(SocketAddr, u8)> = sends.iter().filter(|(_, k)| *k == 9).collect();
    assert_eq!(relayed.len(), 2, "{sends:?}");
    assert!(
        relayed
            .iter()
            .all(|(to, _)| *to != addr(2) && *to != addr(1))
    );
    // A relay reaching us: forwarded to a member's address, not to a stranger's.
    let answer = QueryResponse {
        ltime: 1,
        id: 1,
        from: "b".into(),
        flags: 0,
        payload: Vec::new(),
    }
    .encode();
    s.on_user(now, &user::relay(addr(2), &answer));
    assert!(
        drain(&mut s)
            .iter()
            .any(|o| matches!(o, Output::SendTo { to, .. } if *to == addr(2)))
    );
    s.on_user(now, &user::relay(addr(99), &answer));
    assert!(drain(&mut s).is_empty());
}
