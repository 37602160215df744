//! Membership by gossip, in HashiCorp Serf's wire format (memberlist 0.2.2 as in Debian's
//! serf 0.9.4). So far:
//!
//! - the pure codec layers (`msgpack`, `lzw`, `wire`), byte-identical to packets captured from
//!   the real serf binary (`tests/serf_golden.rs`);
//! - `swim`, the sans-IO failure detector and dissemination core (SWIM + Lifeguard with
//!   memberlist's semantics), tested in a seeded network simulator (`tests/gossip_sim.rs`).
//!
//! Still to come (issue "Membership"): Serf's layer (Lamport clock, intents, tags, reap), the
//! tokio driver (UDP + TCP push/pull, seeds by DNS, re-join), the control socket and
//! `muster members`, and interop tests with real serf agents.

pub mod lzw;
pub mod msgpack;
pub mod swim;
pub mod wire;
