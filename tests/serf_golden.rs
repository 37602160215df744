//! The gossip codec against traffic captured from Debian's real serf 0.9.4 on loopback
//! (`tests/golden/serf-0.9.4-join-tags-leave.txt`, made with tcpdump and
//! `tests/golden/pcap2golden.py`): every packet and stream decodes, the members, tags, intents
//! and leaves are what the agents did, and what muster encodes is byte for byte what Go wrote.

#![allow(clippy::unwrap_used)]

use muster::gossip::msgpack::{self, Value};
use muster::gossip::wire::{self, NodeState, kind, serf_kind};

struct Capture {
    udp: Vec<(String, Vec<u8>)>,
    tcp: Vec<(String, Vec<u8>)>,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn capture() -> Capture {
    let text = include_str!("golden/serf-0.9.4-join-tags-leave.txt");
    let mut c = Capture {
        udp: Vec::new(),
        tcp: Vec::new(),
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let entry = (f[1].to_owned(), unhex(f[2]));
        match f[0] {
            "udp" => c.udp.push(entry),
            "tcp" => c.tcp.push(entry),
            other => panic!("unknown line kind {other}"),
        }
    }
    c
}

/// Every message of every UDP packet, with the direction it travelled.
fn all_parts(c: &Capture) -> Vec<(String, wire::Part)> {
    let mut out = Vec::new();
    for (dir, packet) in &c.udp {
        let parts =
            wire::decode_packet(packet).unwrap_or_else(|e| panic!("{dir} {}: {e}", packet.len()));
        out.extend(parts.into_iter().map(|p| (dir.clone(), p)));
    }
    out
}

#[test]
fn every_packet_and_stream_decodes() {
    let c = capture();
    assert!(c.udp.len() > 30, "the capture has the whole exchange");
    let parts = all_parts(&c);
    for (dir, p) in &parts {
        if p.kind == kind::USER {
            let (_, rest) = p.body.split_first().unwrap();
            msgpack::decode(rest).unwrap_or_else(|e| panic!("{dir} user: {e}"));
        } else {
            wire::body("part", &p.body).unwrap_or_else(|e| panic!("{dir} kind {}: {e}", p.kind));
        }
    }
    let kinds: std::collections::BTreeSet<u8> = parts.iter().map(|(_, p)| p.kind).collect();
    for k in [kind::PING, kind::ACK, kind::ALIVE, kind::DEAD, kind::USER] {
        assert!(kinds.contains(&k), "kind {k} seen: {kinds:?}");
    }
    assert!(
        c.udp.iter().any(|(_, p)| p[5] == kind::COMPRESS),
        "Go compressed some packets (CRC first, then compression)"
    );
    for (dir, stream) in &c.tcp {
        let pp = wire::decode_stream(stream).unwrap_or_else(|e| panic!("tcp {dir}: {e}"));
        assert!(!pp.nodes.is_empty(), "{dir}");
        assert_eq!(pp.user_state.first(), Some(&serf_kind::PUSH_PULL), "{dir}");
        // Serf's own part: read, and written back byte for byte.
        let state = muster::gossip::serf::PushPullState::decode(&pp.user_state)
            .unwrap_or_else(|e| panic!("tcp {dir} serf state: {e}"));
        assert!(!state.status_ltimes.is_empty(), "{dir}");
        assert!(
            state.encode() == pp.user_state,
            "{dir}: re-encoding differs"
        );
    }
}

#[test]
fn members_tags_intents_and_leaves_are_read() {
    let c = capture();
    let parts = all_parts(&c);
    let alives: Vec<NodeState> = parts
        .iter()
        .filter(|(_, p)| p.kind == kind::ALIVE)
        .map(|(_, p)| {
            NodeState::from_value("alive", &wire::body("alive", &p.body).unwrap()).unwrap()
        })
        .collect();
    let beta: Vec<&NodeState> = alives.iter().filter(|n| n.name == "beta").collect();
    assert!(!beta.is_empty());
    assert_eq!(beta[0].addr_text(), "127.0.0.1");
    assert_eq!(beta[0].port, 17947);
    assert_eq!(
        beta[0].vsn,
        vec![1, 5, 2, 2, 5, 5],
        "memberlist 1-5 speaking 2, serf 2-5 speaking 5"
    );
    let first_tags = wire::decode_tags(&beta[0].meta).unwrap();
    assert_eq!(first_tags.get("role").map(String::as_str), Some("backend"));
    assert_eq!(first_tags.get("port").map(String::as_str), Some("3000"));
    let updated = beta
        .iter()
        .find(|n| wire::decode_tags(&n.meta).unwrap().contains_key("color"))
        .expect("the tag change was gossiped as a new alive");
    assert!(
        updated.incarnation > beta[0].incarnation,
        "a tag change bumps the incarnation"
    );

    // beta's graceful leave: a Serf leave intent, then memberlist's dead about itself.
    let leave = parts
        .iter()
        .filter(|(_, p)| p.kind == kind::USER && p.body.first() == Some(&serf_kind::LEAVE))
        .map(|(_, p)| msgpack::decode(&p.body[1..]).unwrap().0)
        .find(|v| v.get("Node").and_then(Value::as_str) == Some("beta"))
        .expect("a leave intent for beta");
    assert!(leave.get("LTime").and_then(Value::as_u64).is_some());
    let dead = parts
        .iter()
        .filter(|(_, p)| p.kind == kind::DEAD)
        .map(|(_, p)| wire::body("dead", &p.body).unwrap())
        .find(|v| v.get("Node").and_then(Value::as_str) == Some("beta"))
        .expect("memberlist's dead for beta");
    assert_eq!(
        dead.get("From").and_then(Value::as_str),
        Some("beta"),
        "dead about itself = left"
    );

    // The join: beta pushes its state to alpha with Join set.
    let joins: Vec<wire::PushPull> = c
        .tcp
        .iter()
        .map(|(_, s)| wire::decode_stream(s).unwrap())
        .collect();
    assert!(
        joins
            .iter()
            .any(|pp| pp.join && pp.nodes.iter().any(|n| n.name == "beta"))
    );
    assert!(joins.iter().any(|pp| {
        pp.nodes
            .iter()
            .any(|n| n.name == "alpha" && n.state == Some(0))
    }));
}

#[test]
fn what_muster_encodes_is_what_go_wrote() {
    let c = capture();
    let mut checked = 0;
    for (dir, p) in all_parts(&c) {
        let bytes = if p.kind == kind::USER {
            &p.body[1..]
        } else {
            &p.body[..]
        };
        let (v, used) = msgpack::decode(bytes).unwrap();
        assert_eq!(
            msgpack::to_vec(&v),
            bytes[..used],
            "{dir} kind {} re-encodes identically",
            p.kind
        );
        if p.kind == kind::ALIVE {
            let node = NodeState::from_value("alive", &v).unwrap();
            assert_eq!(
                msgpack::to_vec(&node.alive_body()),
                bytes[..used],
                "alive from typed fields"
            );
        }
        checked += 1;
    }
    assert!(checked > 40, "{checked} messages checked");
}

#[test]
fn go_lzw_output_decodes_and_ours_matches_it() {
    let c = capture();
    let mut compressed = 0;
    for (dir, packet) in &c.udp {
        // [12][crc][9][msgpack {Algo, Buf}]
        if packet.get(5) != Some(&kind::COMPRESS) {
            continue;
        }
        let (wrapper, _) = msgpack::decode(&packet[6..]).unwrap();
        let go_buf = wrapper.get("Buf").and_then(Value::as_bytes).unwrap();
        let plain = muster::gossip::lzw::decode(go_buf, 1 << 20).unwrap();
        assert_eq!(
            muster::gossip::lzw::encode(&plain),
            go_buf,
            "{dir}: same LZW bytes as Go"
        );
        compressed += 1;
    }
    assert!(compressed > 0);
}
