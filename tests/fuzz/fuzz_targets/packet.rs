//! A UDP datagram as muster's gossip reads it: CRC, compression, compound, each message typed,
//! every name and tag it carries through `validate` (what decides membership), Serf's intents
//! given to a Serf layer. Must never panic, whatever arrives.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use muster::gossip::serf::{Config, Serf};
use muster::gossip::swim::Msg;
use muster::gossip::{validate, wire};

/// A name through validation; what passes must be printable as is.
fn name(s: &str) {
    if validate::name(s).is_ok() {
        assert_eq!(validate::printable(s, validate::MAX_NAME), s);
    }
    let _ = validate::printable(s, 64);
}

fn meta(bytes: &[u8]) {
    if let Ok(tags) = validate::meta(bytes) {
        // What passes as meta passes as tags, and fits.
        validate::tags(&tags).expect("meta accepted, tags refused");
        assert!(wire::encode_tags(&tags).len() <= validate::MAX_META);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(parts) = wire::decode_packet(data) else {
        return;
    };
    let now = Instant::now();
    let mut serf = Serf::new(
        Config::default(),
        "me",
        "127.0.0.1:7946".parse().unwrap(),
        Default::default(),
        1,
        now,
    );
    for p in &parts {
        if let Ok(Some(m)) = Msg::from_part(p) {
            // What decodes must encode again.
            let _ = m.to_wire();
            match &m {
                Msg::User(body) => {
                    serf.on_user(now, body);
                }
                Msg::Alive {
                    node, meta: bytes, ..
                } => {
                    name(node);
                    meta(bytes);
                }
                Msg::Dead { node, from, .. } | Msg::Suspect { node, from, .. } => {
                    name(node);
                    name(from);
                }
                Msg::Ping { node, source, .. } | Msg::IndirectPing { node, source, .. } => {
                    name(node);
                    if let Some((_, n)) = source {
                        name(n);
                    }
                }
                Msg::Ack { .. } | Msg::Nack { .. } => {}
            }
        }
    }
    // Serf's members come from the network too: every one but us must have passed.
    for m in serf.members() {
        let _ = validate::tags(&m.tags);
    }
});
