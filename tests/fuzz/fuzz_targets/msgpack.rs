//! The MessagePack decoder alone, and the round trip of what it accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use muster::gossip::msgpack;

fuzz_target!(|data: &[u8]| {
    if let Ok((v, used)) = msgpack::decode(data) {
        assert!(used <= data.len());
        let again = msgpack::to_vec(&v);
        let (w, _) = msgpack::decode(&again).expect("what we write, we read");
        assert_eq!(format!("{v:?}"), format!("{w:?}"));
    }
});
