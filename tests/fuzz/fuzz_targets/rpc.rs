//! Serf's agent RPC session (what whoever reaches `[gossip] rpc_addr` sends): the input cut
//! into chunks fed one after another, as reads from a connection, with and without an auth key.
//! Never a panic; after a close nothing more comes out; every call is typed; the session never
//! holds more than its bound (the 64 MiB allocation cap of `run` catches an unbounded one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use muster::gossip::rpc::{self, Request, Session, Step};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let auth = (mode & 1 == 1).then(|| "sesame".to_owned());
    let chunk = usize::from(mode >> 1).max(1);
    let mut s = Session::new(auth);
    let mut closed = false;
    for piece in rest.chunks(chunk) {
        s.feed(piece);
        while let Some(step) = s.step() {
            assert!(!closed, "a step after the session closed");
            match step {
                Step::Close { .. } => closed = true,
                Step::Reply(bytes) => assert!(!bytes.is_empty()),
                Step::Call { request, .. } => {
                    if let Request::MembersFiltered(f) = request {
                        // The anchored patterns compile or are refused; never a panic.
                        let _ = rpc::filter(Vec::new(), &f);
                    }
                }
            }
        }
    }
});
