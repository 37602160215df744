//! A push/pull stream as muster's gossip reads it over TCP, including Serf's state inside it,
//! every node's name and tags through `validate`. Must never panic, and must not allocate
//! beyond what the input justifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use muster::gossip::{serf, validate, wire};

fuzz_target!(|data: &[u8]| {
    match wire::decode_stream(data) {
        Ok(pp) => {
            for n in &pp.nodes {
                let _ = wire::decode_tags(&n.meta);
                if validate::name(&n.name).is_ok() {
                    assert!(!n.name.is_empty() && n.name.len() <= validate::MAX_NAME);
                    assert!(!n.name.bytes().any(|b| b.is_ascii_whitespace()));
                }
                let _ = validate::printable(&n.name, 64);
                if let Ok(tags) = validate::meta(&n.meta) {
                    validate::tags(&tags).expect("meta accepted, tags refused");
                    for (k, v) in &tags {
                        assert!(validate::tag_key(k).is_ok() && validate::tag_value(v).is_ok());
                        assert!(!v.contains(['\n', ' ', '"', '#', '%', '{']));
                    }
                }
            }
            if let Ok(state) = serf::PushPullState::decode(&pp.user_state) {
                for (name, _) in &state.status_ltimes {
                    let _ = validate::name(name);
                }
                for name in &state.left_members {
                    let _ = validate::name(name);
                }
            }
        }
        Err(e) => {
            let _ = wire::incomplete(&e);
        }
    }
    let _ = serf::PushPullState::decode(data);
});
