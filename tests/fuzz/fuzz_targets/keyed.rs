//! What the encrypted targets share: the fixed test keyring (the same keys as
//! `tests/fuzz/seeds.py`), a keyed node as the driver runs it, and the checks that hold after
//! any input.
//!
//! An input is `[mode][bytes]`. With the mode's top bit clear, `bytes` is what arrived on the
//! wire (the seeds are golden traffic sealed with the test keys, so most of them get past the
//! tag check). With it set, the target seals `bytes` itself first, so the decoders behind the
//! keyring are fuzzed, not only the tag check: bits 0–1 pick the key (0–2 the keyring's three,
//! 3 a key it does not hold), bit 2 the version (0 padded, 1 not), bits 3–6 the nonce.

#![allow(dead_code)] // each target uses part of it

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use muster::gossip::crypto::{self, Keyring, NONCE};
use muster::gossip::node::{self, Node, Output, Settings};
use muster::gossip::{serf, swim, validate, wire};

/// The keyring's keys, primary first: AES-256, AES-128, AES-192.
pub const KEYS: [&[u8]; 3] = [
    b"muster-fuzz-key-primary-32-bytes",
    b"muster-fuzz-k16.",
    b"muster-fuzz-key-24-bytes",
];
/// A key the keyring does not hold.
pub const WRONG: &[u8] = b"muster-fuzz-bad!";
/// Members a fuzzed node keeps at most (small, so that a push/pull of many is cheap).
pub const MAX_MEMBERS: usize = 32;

/// The node's keyring.
pub fn ring() -> Keyring {
    Keyring::new(&KEYS).expect("the test keys are valid")
}

/// A keyring of the one key `mode` picks (bits 0–1).
pub fn sealer(mode: u8) -> (Keyring, bool) {
    match mode & 3 {
        3 => (Keyring::new(&[WRONG]).expect("valid key"), false),
        k => (
            Keyring::new(&[KEYS[usize::from(k)]]).expect("valid key"),
            true,
        ),
    }
}

/// The version (bit 2) and nonce (bits 3–6) `mode` picks.
pub fn version_nonce(mode: u8) -> (u8, [u8; NONCE]) {
    ((mode >> 2) & 1, [(mode >> 3) & 15; NONCE])
}

/// The sender of everything fed to the node.
pub const PEER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::new(10, 0, 0, 2),
    7946,
));

/// A node holding [`ring`], as `driver::run_keyed` makes it, with nothing pending.
pub fn node(now: Instant) -> Node {
    let settings = Settings {
        name: "me".to_owned(),
        advertise: SocketAddr::from(([10, 0, 0, 1], 7946)),
        tags: BTreeMap::from([("role".to_owned(), "lb".to_owned())]),
        profile: swim::Config {
            max_members: MAX_MEMBERS,
            ..swim::Config::lan()
        },
        serf: serf::Config::default(),
        rejoin_interval: Duration::from_secs(30),
        incarnation: 1,
        seed: 7,
    };
    let mut n = Node::new(settings, false, now).with_keyring(ring(), [9; NONCE]);
    drain(&mut n);
    n
}

/// Everything the node asks for, each checked: with a keyring, nothing leaves unsealed.
pub fn drain(n: &mut Node) -> Vec<Output> {
    let mut ring = ring();
    let outs: Vec<Output> = std::iter::from_fn(|| n.poll_output())
        .take(100_000)
        .collect();
    for o in &outs {
        match o {
            // A key query (from a member holding a key) changed the node's keyring.
            Output::KeyringChanged(r) => ring = r.clone(),
            Output::Transmit { bytes, .. } => {
                let plain = ring.open(bytes, b"").expect("a datagram sent unsealed");
                wire::decode_packet(&plain).expect("a sealed datagram that does not decode");
            }
            Output::PushPull { bytes, .. } => {
                let plain = ring.open_stream(bytes).expect("a push/pull sent unsealed");
                wire::decode_stream(&plain).expect("a sealed push/pull that does not decode");
            }
            _ => {}
        }
    }
    outs
}

/// What holds after any input: every member but the node itself has a valid name and tags,
/// there are no more than [`MAX_MEMBERS`], and the node's answer to a push/pull is sealed.
pub fn check(n: &Node) {
    let swim = n.swim();
    assert!(swim.members().count() <= MAX_MEMBERS);
    for m in swim.members().filter(|m| m.name != "me") {
        validate::name(&m.name).expect("a member with an invalid name");
    }
    for m in n.members().filter(|m| m.name != "me") {
        validate::name(&m.name).expect("a Serf member with an invalid name");
        validate::tags(&m.tags).expect("a Serf member with invalid tags");
    }
    let answer = n.push_pull_answer();
    assert_eq!(crypto::stream_length(&answer), Ok(Some(answer.len())));
    n.keyring()
        .expect("a keyed node")
        .open_stream(&answer)
        .expect("the answer is sealed");
}

/// A refused input changes nothing: counted once, no output, no member.
pub fn unchanged(before: (u64, u64, usize), n: &mut Node, packet: bool) {
    let after = n.crypto_refused();
    let want = if packet {
        (before.0 + 1, before.1)
    } else {
        (before.0, before.1 + 1)
    };
    assert_eq!(
        (after.packets, after.streams),
        want,
        "refused input not counted once"
    );
    assert_eq!(
        n.swim().members().count(),
        before.2,
        "refused input changed members"
    );
    for o in drain(n) {
        assert!(
            matches!(o, Output::BadStream { .. }),
            "refused input made the node act: {o:?}"
        );
    }
}

/// The node's refusal counts and members, to compare with [`unchanged`].
pub fn snapshot(n: &Node) -> (u64, u64, usize) {
    let r = n.crypto_refused();
    (r.packets, r.streams, n.swim().members().count())
}

/// `node::stream_complete_keyed` as the driver's reader uses it.
pub fn complete(buf: &[u8]) -> Result<bool, String> {
    node::stream_complete_keyed(buf, MAX_MEMBERS, true)
}
