//! Membership by gossip, in HashiCorp Serf's wire format (memberlist 0.2.2 as in Debian's
//! serf 0.9.4):
//!
//! - the pure codec layers (`msgpack`, `lzw`, `wire`), byte-identical to packets captured from
//!   the real serf binary (`tests/serf_golden.rs`) and fuzzed (`tests/fuzz/`);
//! - `swim`, the sans-IO failure detector and dissemination core (SWIM + Lifeguard with
//!   memberlist's semantics), tested in a seeded network simulator (`tests/gossip_sim.rs`);
//! - `serf`, Serf's sans-IO layer above it: Lamport clock, join and leave intents, statuses
//!   alive / leaving / left / failed, Serf's push/pull state, reconnect and reap;
//! - `node`, SWIM and Serf composed into one sans-IO node: bytes and time in, datagrams,
//!   push/pull exchanges and events out (framing, push/pull state, join timer, a leave
//!   bounded by the stop deadline); the simulator drives it exactly as the driver does;
//! - `driver`, the tokio shell around `node`: UDP and TCP push/pull on one port, seeds by name
//!   resolved at every (re-)join; it logs every event and publishes the whole view on a `watch`
//!   at once (no coalescing delay). `tests/serf_interop.rs` runs Debian's serf against it.
//!
//! - `limits`, what the listener lets a peer hold (streams open at once, per address, the
//!   pause after an accept error);
//! - `validate`, what a name and tags may hold, checked where they enter;
//! - `roll`, members by name in a persistent map, shared by clones until changed (the
//!   simulator's 10,000 nodes start from one converged view).
//!
//! What a peer may do without a key is in the README's Security section.
//!
//! - `crypto`, memberlist's AES-GCM keyring: with a key, `node` seals everything it sends
//!   and reads only what a key opens (Serf's `-encrypt` and keyring files interoperate).
//! - `secure`, secure mode (`[gossip] secure = true`, muster-only): an envelope inside the
//!   seal (sender, time, sequence number) bound to the destination, so replayed, stale and
//!   misdirected traffic is refused, and only a member's own answer binds its address.
//!
//! - `rpc`, Serf's agent RPC (the pure session and answers), and `agent`, its TCP server on
//!   `[gossip] rpc_addr`, so the `serf` CLI works against muster (`tests/serf_cli.rs`).
//!
//! - `serf::user` and `serf/events.rs`: Serf's user events and queries (wire format,
//!   Lamport clocks, de-duplication, answers), and the driver's `hub` that hands them to RPC
//!   streams.
//!
//! - `node/internal.rs`: the internal queries a node answers (`_serf_ping`, `_serf_conflict`,
//!   the key queries of `serf keys`); event handler scripts run in `crate::handlers`.
//!
//! Not done: starting a name-conflict resolution of our own (muster answers Serf's), network
//! coordinates (`serf rtt` finds none), memberlist's TCP fallback ping.

pub mod agent;
pub mod crypto;
pub mod driver;
pub mod limits;
pub mod lzw;
pub mod msgpack;
pub mod node;
pub mod roll;
pub mod rpc;
pub mod secure;
pub mod serf;
pub mod swim;
pub mod validate;
pub mod wire;
