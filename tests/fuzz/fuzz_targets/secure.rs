//! Secure mode's input behind the key: the fuzz input sealed with the node's key for the
//! node's own address (so the fuzzer reaches what only a key holder can send), fed to a node
//! in secure mode as a datagram and as a push/pull stream (request and answer), plus the
//! envelope decoder and the replay cache on the raw bytes. Must never panic, and the replay
//! cache stays within its bound.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use muster::gossip::crypto::Keyring;
use muster::gossip::node::{Input, Node, Settings};
use muster::gossip::secure::{self, Kind, Replay};
use muster::gossip::{serf, swim};

const WALL: u64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    // The envelope decoder and the replay cache on raw bytes.
    let mut replay = Replay::new(4);
    if let Ok(e) = secure::unwrap(data) {
        let _ = replay.check(WALL, e.sender, e.time_ms, e.seq);
        let _ = replay.check(e.time_ms, e.sender, e.time_ms, e.seq.wrapping_add(1));
    }
    for (i, w) in data.chunks(9).enumerate() {
        let mut n = [0u8; 8];
        n[..w.len().min(8)].copy_from_slice(&w[..w.len().min(8)]);
        let v = u64::from_be_bytes(n);
        let _ = replay.check(WALL + (i as u64) * 1000, &format!("s{}", v % 7), WALL + v % 60_000, v);
    }
    assert!(replay.len() <= 4);

    let now = Instant::now();
    let me: SocketAddr = "10.0.0.1:7946".parse().unwrap();
    let settings = Settings {
        name: "me".to_owned(),
        advertise: me,
        tags: Default::default(),
        profile: swim::Config::lan(),
        serf: serf::Config::default(),
        rejoin_interval: Duration::from_secs(30),
        incarnation: 1,
        seed: 1,
    };
    let key = [7u8; 16];
    let ring = Keyring::new(&[key]).unwrap();
    let mut node = Node::new(settings, false, now)
        .with_keyring(ring.clone(), [1; 12])
        .with_secure(WALL, now, vec![me]);
    let peer: SocketAddr = "10.0.0.2:7946".parse().unwrap();
    let nonce = [9u8; 12];
    // As sent: the bytes are the envelope and what follows (the fuzzer writes both).
    let d = ring.seal(1, &nonce, data, &secure::aad_to(Kind::Datagram, me));
    node.handle(now, Input::Datagram { from: peer, bytes: &d });
    // The same bytes wrapped in a valid envelope, so the memberlist decoders behind it run.
    let wrapped = secure::wrap(Kind::Datagram, "peer", WALL, 1, data);
    let d = ring.seal(1, &nonce, &wrapped, &secure::aad_to(Kind::Datagram, me));
    node.handle(now, Input::Datagram { from: peer, bytes: &d });
    let wrapped = secure::wrap(Kind::Request, "peer", WALL, 2, data);
    let s = ring.seal_stream_with(&nonce, &wrapped, &secure::aad_to(Kind::Request, me));
    node.handle(now, Input::Stream { from: peer, bytes: &s });
    if let Some(a) = node.answerer([2; 12]) {
        let _ = a.answer(&s, b"", WALL);
    }
    let s = ring.seal_stream_with(&nonce, data, &secure::aad_answer("me"));
    node.handle(now, Input::Stream { from: peer, bytes: &s });
    node.handle(now + Duration::from_secs(1), Input::Tick);
    while node.poll_output().is_some() {}
});
