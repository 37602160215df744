//! Membership by gossip, in HashiCorp Serf's wire format (memberlist 0.2.2 as in Debian's
//! serf 0.9.4). So far:
//!
//! - the pure codec layers (`msgpack`, `lzw`, `wire`), byte-identical to packets captured from
//!   the real serf binary (`tests/serf_golden.rs`);
//! - `swim`, the sans-IO failure detector and dissemination core (SWIM + Lifeguard with
//!   memberlist's semantics), tested in a seeded network simulator (`tests/gossip_sim.rs`).
//!
//! - `driver`, the tokio shell: UDP and TCP push/pull on one port, seeds by name with retry and
//!   periodic re-join, membership events on a channel, and Serf's leave intent so a real serf
//!   sees a graceful leave as `left` (`tests/serf_interop.rs` runs Debian's serf against it).
//!
//! Still to come (issue "Membership"): the rest of Serf's layer (join intents, Serf's push/pull
//! state, reconnect and reap of failed members), the `[gossip]` config and wiring into muster,
//! the control socket and `muster members`, fuzzing, and the benchmark beside real serf.

pub mod driver;
pub mod lzw;
pub mod msgpack;
pub mod serf;
pub mod swim;
pub mod wire;
