//! An encrypted TCP push/pull as muster's gossip reads it with a keyring: the driver's reader
//! decides when the stream is whole (`stream_complete_keyed`: the `[10][length u32]` header,
//! bounded), the keyring opens it (versions 0 and 1, three keys, the header as additional
//! data), then the push/pull and Serf's state inside it go into a node. Must never panic;
//! what no key opens changes nothing (counted once); the answer is sealed; every member kept
//! has a valid name and tags.
//!
//! Input: `[mode][bytes]` (see `keyed.rs`): the stream as received, or a push/pull the target
//! seals itself (as a version 0 or 1 stream) before the reader and the node see it.
#![no_main]

mod keyed;

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use muster::gossip::crypto::{self, Keyring, NONCE, STREAM_HEADER};
use muster::gossip::node::{self, Input};
use muster::gossip::wire;

/// `msg` as an encrypted stream of `version` (memberlist writes version 0 at protocol 1).
fn seal_stream(k: &Keyring, version: u8, nonce: &[u8; NONCE], msg: &[u8]) -> Vec<u8> {
    if version == 1 {
        return k.seal_stream(nonce, msg);
    }
    let body = 1 + NONCE + (msg.len() / 16 + 1) * 16 + 16;
    let mut out = vec![wire::kind::ENCRYPT];
    out.extend_from_slice(&(body as u32).to_be_bytes());
    let sealed = k.seal(0, nonce, msg, &out);
    assert_eq!(sealed.len(), body);
    out.extend(sealed);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let sealed;
    let (stream, plain, known) = if mode & 0x80 == 0 {
        (bytes, None, None)
    } else {
        let (k, held) = keyed::sealer(mode);
        let (version, nonce) = keyed::version_nonce(mode);
        sealed = seal_stream(&k, version, &nonce, bytes);
        // The reader takes a sealed stream whole only at its announced length.
        assert_eq!(keyed::complete(&sealed), Ok(true));
        assert_eq!(keyed::complete(&sealed[..sealed.len() - 1]), Ok(false));
        (&sealed[..], Some(bytes), Some(held))
    };
    // The reader: what it stops at, and how long a stream it lets a peer announce.
    match crypto::stream_length(stream) {
        Ok(Some(total)) => {
            assert!(total >= STREAM_HEADER && total - STREAM_HEADER <= crypto::MAX_STREAM);
            assert_eq!(keyed::complete(stream), Ok(stream.len() >= total));
        }
        Ok(None) => assert_eq!(keyed::complete(stream), Ok(false)),
        Err(crypto::CryptoError::Plaintext) => assert_eq!(keyed::complete(stream), Ok(true)),
        Err(_) => assert!(keyed::complete(stream).is_err()),
    }
    if keyed::complete(stream) != Ok(true) {
        return;
    }
    let ring = keyed::ring();
    let opened = ring.open_stream(stream);
    match (plain, known, &opened) {
        (Some(p), Some(true), r) => assert_eq!(r.as_deref(), Ok(p), "sealed with a held key"),
        (Some(_), Some(false), r) => assert!(r.is_err(), "a key the ring lacks opened it"),
        _ => {}
    }
    if let Ok(p) = &opened {
        // What the driver checks before answering a peer, and what the node decodes.
        let _ = node::stream_complete(p, keyed::MAX_MEMBERS);
        if let Ok(pp) = wire::decode_stream_bounded(p, keyed::MAX_MEMBERS) {
            assert!(pp.nodes.len() <= keyed::MAX_MEMBERS);
            let _ = muster::gossip::serf::PushPullState::decode(&pp.user_state);
        }
    }
    let now = Instant::now();
    let mut n = keyed::node(now);
    let before = keyed::snapshot(&n);
    n.handle(
        now,
        Input::Stream {
            from: keyed::PEER,
            bytes: stream,
        },
    );
    if opened.is_err() {
        keyed::unchanged(before, &mut n, false);
        return;
    }
    assert_eq!(
        n.crypto_refused().streams,
        0,
        "an opened stream counted refused"
    );
    keyed::drain(&mut n);
    keyed::check(&n);
});
