use super::*;
use crate::gossip::wire::{self, kind};

const GOLDEN: &str = include_str!("../../../../tests/golden/serf-0.9.4-events-queries.txt");

/// Every Serf user message in the captured datagrams, type byte first.
fn captured() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for line in GOLDEN.lines().filter(|l| l.starts_with("udp ")) {
        let hex = line.split_whitespace().nth(2).unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        for part in wire::decode_packet(&bytes).unwrap() {
            if part.kind == kind::USER {
                out.push(part.body);
            }
        }
    }
    out
}

fn of_kind(k: u8) -> Vec<Vec<u8>> {
    captured().into_iter().filter(|m| m[0] == k).collect()
}

#[test]
fn serfs_user_events_read_and_write_back_byte_for_byte() {
    let events = of_kind(serf_kind::USER_EVENT);
    assert!(!events.is_empty());
    for raw in &events {
        let e = UserEvent::decode(&raw[1..]).unwrap();
        assert_eq!(
            e,
            UserEvent {
                ltime: 1,
                name: "deploy".into(),
                payload: b"hello".to_vec(),
                coalesce: true
            }
        );
        assert_eq!(&e.encode(), raw);
    }
}

#[test]
fn serfs_queries_and_answers_read_and_write_back_byte_for_byte() {
    let queries: Vec<Query> = of_kind(serf_kind::QUERY)
        .iter()
        .map(|raw| {
            let q = Query::decode(&raw[1..]).unwrap();
            assert_eq!(&q.encode(), raw, "{q:?}");
            q
        })
        .collect();
    let uptime = &queries[0];
    assert_eq!(
        (uptime.name.as_str(), uptime.source.as_str(), uptime.port),
        ("uptime", "alpha", 27946)
    );
    assert_eq!(uptime.payload, b"payload1");
    assert_eq!(uptime.timeout, Duration::from_secs(2));
    assert!(uptime.has(FLAG_ACK) && uptime.filters.is_empty());
    let filtered: Vec<&Query> = queries.iter().filter(|q| !q.filters.is_empty()).collect();
    assert!(
        filtered
            .iter()
            .any(|q| q.filters == [QueryFilter::Nodes(vec!["beta".into()])] && !q.has(FLAG_ACK))
    );
    assert!(filtered.iter().any(|q| q.filters
        == [QueryFilter::Tag {
            tag: "role".into(),
            expr: "x".into()
        }]));
    assert!(queries.iter().any(|q| q.name == "_serf_ping"));

    let answers: Vec<QueryResponse> = of_kind(serf_kind::QUERY_RESPONSE)
        .iter()
        .map(|raw| {
            let r = QueryResponse::decode(&raw[1..]).unwrap();
            assert_eq!(&r.encode(), raw, "{r:?}");
            r
        })
        .collect();
    assert!(
        answers
            .iter()
            .any(|r| r.from == "beta" && !r.is_ack() && r.payload == b"up query uptime\n")
    );
    assert!(answers.iter().any(|r| r.from == "alpha" && r.is_ack()));
}

#[test]
fn hostile_names_and_shapes_are_refused() {
    let event = |name: &[u8]| {
        let mut out = Vec::new();
        msgpack::encode(
            &Value::map([
                ("LTime", Value::Uint(1)),
                ("Name", Value::Raw(name.to_vec())),
            ]),
            &mut out,
        );
        UserEvent::decode(&out)
    };
    assert!(event(b"ok").is_some());
    assert!(event(b"").is_none());
    assert!(event(b"a\nSERF_X=1").is_none());
    assert!(event(&[b'a'; 129]).is_none());
    assert!(event(&[0xff, 0xfe]).is_none());
    assert!(UserEvent::decode(&[0xc1]).is_none());
    let q = Query {
        ltime: 1,
        id: 7,
        addr: IpAddr::from([10, 0, 0, 1]),
        port: 7946,
        source: "bad name".into(),
        filters: Vec::new(),
        flags: 0,
        relay_factor: 0,
        timeout: Duration::from_secs(1),
        name: "q".into(),
        payload: Vec::new(),
    };
    assert!(Query::decode(&q.encode()[1..]).is_none());
    let good = Query {
        source: "ok".into(),
        ..q
    };
    assert_eq!(Query::decode(&good.encode()[1..]), Some(good));
}

#[test]
fn each_message_is_seen_once_and_old_ones_not_at_all() {
    let mut seen: Seen<(String, Vec<u8>)> = Seen::default();
    let e = |n: &str| (n.to_owned(), Vec::new());
    assert!(seen.first(5, 5, e("a")));
    assert!(!seen.first(5, 5, e("a")));
    assert!(seen.first(5, 5, e("b")));
    // The same slot, a later time: a new event.
    assert!(seen.first(5 + BUFFER, 5 + BUFFER, e("a")));
    // Older than the ring.
    assert!(!seen.first(2000, 2000 - BUFFER - 1, e("z")));
    seen.min_time = 3000;
    assert!(!seen.first(3000, 2999, e("y")));
    assert!(seen.first(3000, 3000, e("y")));
    // A slot holds a bounded number of distinct events.
    for i in 0..100 {
        seen.first(3000, 3001, e(&i.to_string()));
    }
    assert_eq!(seen.recent().find(|(t, _)| *t == 3001).unwrap().1.len(), 64);
}
