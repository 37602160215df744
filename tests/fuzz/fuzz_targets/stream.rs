//! A push/pull stream as muster's gossip reads it over TCP, including Serf's state inside it.
//! Must never panic, and must not allocate beyond what the input justifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use muster::gossip::{serf, wire};

fuzz_target!(|data: &[u8]| {
    match wire::decode_stream(data) {
        Ok(pp) => {
            for n in &pp.nodes {
                let _ = wire::decode_tags(&n.meta);
            }
            let _ = serf::PushPullState::decode(&pp.user_state);
        }
        Err(e) => {
            let _ = wire::incomplete(&e);
        }
    }
    let _ = serf::PushPullState::decode(data);
});
