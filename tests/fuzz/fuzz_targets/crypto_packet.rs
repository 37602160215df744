//! An encrypted UDP datagram as muster's gossip reads it with a keyring: the keyring tries its
//! three keys (versions 0 and 1), then the plaintext goes through CRC, LZW, compound and every
//! message type into a node (SWIM and Serf), exactly as `driver::run_keyed` feeds it. Must
//! never panic; what no key opens changes nothing (counted once, no output); what the node
//! sends in answer is sealed; every member it keeps has a valid name and tags.
//!
//! Input: `[mode][bytes]` (see `keyed.rs`): the datagram as received, or bytes the target seals
//! itself with one of the keys (or a key it does not hold) before the node opens them.
#![no_main]

mod keyed;

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use muster::gossip::node::Input;
use muster::gossip::swim::Msg;
use muster::gossip::wire;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let sealed;
    let (datagram, plain, known) = if mode & 0x80 == 0 {
        (bytes, None, None)
    } else {
        let (k, held) = keyed::sealer(mode);
        let (version, nonce) = keyed::version_nonce(mode);
        sealed = k.seal(version, &nonce, bytes, b"");
        (&sealed[..], Some(bytes), Some(held))
    };
    let opened = keyed::ring().open(datagram, b"");
    match (plain, known, &opened) {
        // What we sealed with a key of the ring opens to what we sealed.
        (Some(p), Some(true), r) => assert_eq!(r.as_deref(), Ok(p), "sealed with a held key"),
        (Some(_), Some(false), r) => assert!(r.is_err(), "a key the ring lacks opened it"),
        _ => {}
    }
    // The decoders behind the keyring, as the node runs them.
    if let Ok(p) = &opened {
        if let Ok(parts) = wire::decode_packet(p) {
            for part in &parts {
                if let Ok(Some(m)) = Msg::from_part(part) {
                    let _ = m.to_wire();
                }
            }
        }
    }
    let now = Instant::now();
    let mut n = keyed::node(now);
    let before = keyed::snapshot(&n);
    n.handle(
        now,
        Input::Datagram {
            from: keyed::PEER,
            bytes: datagram,
        },
    );
    if opened.is_err() {
        keyed::unchanged(before, &mut n, true);
        return;
    }
    assert_eq!(
        n.crypto_refused().packets,
        0,
        "an opened datagram counted refused"
    );
    keyed::drain(&mut n);
    // Time passing after it: probes, suspicions and gossip, all sealed.
    for step in 1..=3 {
        n.handle(now + Duration::from_millis(700 * step), Input::Tick);
        keyed::drain(&mut n);
    }
    keyed::check(&n);
});
