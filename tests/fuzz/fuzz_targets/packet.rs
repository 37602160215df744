//! A UDP datagram as muster's gossip reads it: CRC, compression, compound, each message typed,
//! Serf's intents given to a Serf layer. Must never panic, whatever arrives.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use muster::gossip::serf::{Config, Serf};
use muster::gossip::swim::Msg;
use muster::gossip::wire;

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
            if let Msg::User(body) = &m {
                serf.on_user(now, body);
            }
        }
    }
});
