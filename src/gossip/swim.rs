//! The failure detector and dissemination core, with memberlist's semantics: SWIM probing
//! (direct ping, indirect pings through `indirect_checks` peers, nacks), Lifeguard (awareness
//! score stretching the probe period, suspicion that starts long and shrinks with independent
//! confirmations, refutation by incarnation), piggybacked broadcasts with a retransmit limit,
//! periodic gossip and push/pull anti-entropy (the driver does the TCP part).
//!
//! Sans-IO: `handle(now, Input)`, then drain `poll_output()`; `poll_timeout()` says when the next
//! `Tick` is due. Time and randomness are inputs (the RNG is seeded at construction), so the
//! simulator in `tests/gossip_sim.rs` replays any run from its seed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use imbl::Vector;

use super::msgpack::{Value, write_bool, write_map_len, write_raw, write_uint};
use super::roll::Roll;
use super::secure;
use super::validate;
use super::wire::{self, NodeState, Part, WireError, kind};

/// Timings and limits; `lan()` is memberlist's (and Serf's) default, `local()` is tuned for one
/// Docker network.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Time between two probes (before awareness stretches it).
    pub probe_interval: Duration,
    /// How long a direct ping waits for its ack before indirect probes go out.
    pub probe_timeout: Duration,
    /// How many peers are asked to probe indirectly.
    pub indirect_checks: usize,
    /// Scales the suspicion timeout (and gives the confirmations expected: mult − 2).
    pub suspicion_mult: u32,
    /// The longest suspicion, as a multiple of the shortest.
    pub suspicion_max_timeout_mult: u32,
    /// Retransmits of a broadcast: this × ceil(log10(n + 1)).
    pub retransmit_mult: u32,
    /// Time between two gossip rounds.
    pub gossip_interval: Duration,
    /// Peers sent to per gossip round.
    pub gossip_nodes: usize,
    /// Dead nodes still receive gossip for this long (so they can refute).
    pub gossip_to_the_dead: Duration,
    /// Time between two push/pull exchanges.
    pub push_pull_interval: Duration,
    /// Ceiling of the awareness multiplier.
    pub awareness_max: u32,
    /// Largest UDP payload sent.
    pub packet_size: usize,
    /// Most members (self and candidates included) a node keeps: a new name beyond it is
    /// refused, so a flood of forged names cannot exhaust memory.
    pub max_members: usize,
    /// New names admitted as candidates per second (a burst of as many is allowed). Each
    /// candidate must answer one probe before it is a member.
    pub new_members_per_second: u32,
    /// Secure mode (`gossip::secure`): an address is bound to a name (a new member, or a
    /// member at a new address) only by an answer to our probe sealed as from that name and
    /// coming from that address's IP; a third party's move is probed, never held and applied.
    pub secure: bool,
    /// memberlist's own rule, for the simulator's model of Serf (`tests/common/sim.rs`): a
    /// name announced by gossip or a push/pull is a member at once (no probe first), there are
    /// no extra push/pulls after joining nor with strangers. Off in muster. (Both grow the
    /// push/pull interval with the cluster as memberlist's `pushPullScale` does.)
    pub memberlist_model: bool,
}

impl Config {
    /// memberlist's `DefaultLANConfig`, which `serf agent` uses.
    pub fn lan() -> Config {
        Config {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_checks: 3,
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            retransmit_mult: 4,
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            gossip_to_the_dead: Duration::from_secs(30),
            push_pull_interval: Duration::from_secs(30),
            awareness_max: 8,
            packet_size: 1400,
            max_members: 5000,
            new_members_per_second: 1000,
            secure: false,
            memberlist_model: false,
        }
    }

    /// Tuned for containers on one Docker network: round trips are well under a millisecond,
    /// so probes can be frequent and their timeouts short.
    pub fn local() -> Config {
        Config {
            probe_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(100),
            indirect_checks: 3,
            suspicion_mult: 3,
            gossip_interval: Duration::from_millis(50),
            gossip_to_the_dead: Duration::from_secs(15),
            push_pull_interval: Duration::from_secs(10),
            ..Config::lan()
        }
    }
}

/// What a node knows about a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Answering probes.
    Alive,
    /// Missed a probe round; dead unless it refutes in time.
    Suspect,
    /// Declared dead by the cluster.
    Dead,
    /// Left on purpose (announced its own death).
    Left,
}

impl State {
    /// memberlist's numbering in push/pull node states.
    pub fn wire(self) -> u8 {
        match self {
            State::Alive => 0,
            State::Suspect => 1,
            State::Dead => 2,
            State::Left => 3,
        }
    }
}

/// A member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Unique name.
    pub name: String,
    /// Gossip address.
    pub addr: SocketAddr,
    /// Serf's tags, encoded.
    pub meta: Vec<u8>,
    /// Incarnation: only the member itself raises it, to refute rumours.
    pub incarnation: u32,
    /// Current verdict.
    pub state: State,
    /// When the verdict last changed.
    pub since: Instant,
}

/// The protocol versions muster announces: memberlist 1–5 speaking 2, Serf 2–5 speaking 5,
/// as Debian's serf 0.9.4 does (read from the golden capture).
pub const VSN: [u8; 6] = [1, 5, 2, 2, 5, 5];

/// A memberlist message, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Direct probe of `node`; the ack goes to `source` when given.
    Ping {
        /// Sequence number echoed in the ack.
        seq_no: u32,
        /// Name of the node probed (a renamed process must not ack).
        node: String,
        /// Where to answer, and who asks.
        source: Option<(SocketAddr, String)>,
    },
    /// Asks a peer to probe `target` for us.
    IndirectPing {
        /// Sequence number echoed in the relayed ack or nack.
        seq_no: u32,
        /// Address of the node to probe.
        target: SocketAddr,
        /// Its name.
        node: String,
        /// Whether a nack is wanted when the target does not answer.
        nack: bool,
        /// Where to answer, and who asks.
        source: Option<(SocketAddr, String)>,
    },
    /// Answer to a ping.
    Ack {
        /// The ping's sequence number.
        seq_no: u32,
        /// Serf puts its network coordinate here; muster sends none.
        payload: Vec<u8>,
    },
    /// An indirect probe got no answer.
    Nack {
        /// The indirect ping's sequence number.
        seq_no: u32,
    },
    /// `node` is suspected by `from`.
    Suspect {
        /// Incarnation the suspicion is about.
        incarnation: u32,
        /// Suspected node.
        node: String,
        /// Who suspects it.
        from: String,
    },
    /// `node` is alive at this address with this meta.
    Alive {
        /// Its incarnation.
        incarnation: u32,
        /// Its name.
        node: String,
        /// Its address.
        addr: SocketAddr,
        /// Its meta (tags).
        meta: Vec<u8>,
        /// Its protocol versions.
        vsn: Vec<u8>,
    },
    /// `node` is dead (left, when `from == node`).
    Dead {
        /// Incarnation the verdict is about.
        incarnation: u32,
        /// The dead node.
        node: String,
        /// Who declares it.
        from: String,
    },
    /// A message of the layer above (Serf), opaque here.
    User(Vec<u8>),
}

/// An address's IP as memberlist writes it: 4 bytes for IPv4, 16 for IPv6.
pub fn ip_bytes(addr: &SocketAddr) -> Vec<u8> {
    match addr {
        SocketAddr::V4(a) => a.ip().octets().to_vec(),
        SocketAddr::V6(a) => a.ip().octets().to_vec(),
    }
}

/// The address memberlist's IP bytes (4 or 16) and port stand for.
pub fn socket(ip: &[u8], port: u64) -> Option<SocketAddr> {
    let port = u16::try_from(port).ok()?;
    match ip.len() {
        4 => Some(SocketAddr::from(([ip[0], ip[1], ip[2], ip[3]], port))),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(ip);
            Some(SocketAddr::from((a, port)))
        }
        _ => None,
    }
}

impl Msg {
    /// Encodes the message as `[type][msgpack body]`, keys in Go's (sorted) order.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.write_wire(&mut out);
        out
    }

    /// Appends what [`Msg::to_wire`] returns (written directly, no `Value` built: this is the
    /// codec's busiest path).
    pub fn write_wire(&self, out: &mut Vec<u8>) {
        let sourced = |source: &Option<_>| if source.is_some() { 3 } else { 0 };
        match self {
            Msg::Ping {
                seq_no,
                node,
                source,
            } => {
                out.push(kind::PING);
                write_map_len(2 + sourced(source), out);
                raw_field("Node", node.as_bytes(), out);
                uint_field("SeqNo", u64::from(*seq_no), out);
                source_fields(source, out);
            }
            Msg::IndirectPing {
                seq_no,
                target,
                node,
                nack,
                source,
            } => {
                out.push(kind::INDIRECT_PING);
                write_map_len(5 + sourced(source), out);
                write_raw(b"Nack", out);
                write_bool(*nack, out);
                raw_field("Node", node.as_bytes(), out);
                uint_field("Port", u64::from(target.port()), out);
                uint_field("SeqNo", u64::from(*seq_no), out);
                source_fields(source, out);
                raw_field("Target", &ip_bytes(target), out);
            }
            Msg::Ack { seq_no, payload } => {
                out.push(kind::ACK);
                write_map_len(2, out);
                raw_field("Payload", payload, out);
                uint_field("SeqNo", u64::from(*seq_no), out);
            }
            Msg::Nack { seq_no } => {
                out.push(kind::NACK);
                write_map_len(1, out);
                uint_field("SeqNo", u64::from(*seq_no), out);
            }
            Msg::Suspect {
                incarnation,
                node,
                from,
            } => {
                out.push(kind::SUSPECT);
                write_verdict(*incarnation, node, from, out);
            }
            Msg::Dead {
                incarnation,
                node,
                from,
            } => {
                out.push(kind::DEAD);
                write_verdict(*incarnation, node, from, out);
            }
            Msg::Alive {
                incarnation,
                node,
                addr,
                meta,
                vsn,
            } => {
                out.push(kind::ALIVE);
                write_map_len(6, out);
                raw_field("Addr", &ip_bytes(addr), out);
                uint_field("Incarnation", u64::from(*incarnation), out);
                raw_field("Meta", meta, out);
                raw_field("Node", node.as_bytes(), out);
                uint_field("Port", u64::from(addr.port()), out);
                raw_field("Vsn", vsn, out);
            }
            Msg::User(bytes) => {
                out.push(kind::USER);
                out.extend_from_slice(bytes);
            }
        }
    }

    /// Reads a message from a decoded packet part. Unknown types give `Ok(None)`.
    pub fn from_part(part: &Part) -> Result<Option<Msg>, WireError> {
        if part.kind == kind::USER {
            return Ok(Some(Msg::User(part.body.clone())));
        }
        let v = wire::body("message", &part.body)?;
        let field =
            |message: &'static str, field: &'static str| WireError::Field { message, field };
        let u32_of = |name: &'static str, key: &'static str| {
            v.get(key)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or(field(name, key))
        };
        let text = |name: &'static str, key: &'static str| {
            v.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(field(name, key))
        };
        let source = || {
            let addr = v.get("SourceAddr").and_then(Value::as_bytes)?;
            let port = v.get("SourcePort").and_then(Value::as_u64)?;
            let node = v
                .get("SourceNode")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Some((socket(addr, port)?, node.to_owned()))
        };
        Ok(Some(match part.kind {
            kind::PING => Msg::Ping {
                seq_no: u32_of("ping", "SeqNo")?,
                node: v
                    .get("Node")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                source: source(),
            },
            kind::INDIRECT_PING => {
                let ip = v
                    .get("Target")
                    .and_then(Value::as_bytes)
                    .ok_or(field("indirect ping", "Target"))?;
                let port = v
                    .get("Port")
                    .and_then(Value::as_u64)
                    .ok_or(field("indirect ping", "Port"))?;
                Msg::IndirectPing {
                    seq_no: u32_of("indirect ping", "SeqNo")?,
                    target: socket(ip, port).ok_or(field("indirect ping", "Target"))?,
                    node: v
                        .get("Node")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    nack: v.get("Nack") == Some(&Value::Bool(true)),
                    source: source(),
                }
            }
            kind::ACK => Msg::Ack {
                seq_no: u32_of("ack", "SeqNo")?,
                payload: v
                    .get("Payload")
                    .and_then(Value::as_bytes)
                    .unwrap_or_default()
                    .to_vec(),
            },
            kind::NACK => Msg::Nack {
                seq_no: u32_of("nack", "SeqNo")?,
            },
            kind::SUSPECT => Msg::Suspect {
                incarnation: u32_of("suspect", "Incarnation")?,
                node: text("suspect", "Node")?,
                from: text("suspect", "From")?,
            },
            kind::DEAD => Msg::Dead {
                incarnation: u32_of("dead", "Incarnation")?,
                node: text("dead", "Node")?,
                from: text("dead", "From")?,
            },
            kind::ALIVE => {
                let n = NodeState::from_value("alive", &v)?;
                Msg::Alive {
                    incarnation: n.incarnation,
                    addr: socket(&n.addr, u64::from(n.port)).ok_or(field("alive", "Addr"))?,
                    node: n.name,
                    meta: n.meta,
                    vsn: n.vsn,
                }
            }
            _ => return Ok(None),
        }))
    }

    /// The node a broadcast is about (a newer broadcast about it replaces an older one).
    fn subject(&self) -> Option<&str> {
        match self {
            Msg::Suspect { node, .. } | Msg::Dead { node, .. } | Msg::Alive { node, .. } => {
                Some(node)
            }
            _ => None,
        }
    }
}

/// A suspect or dead body: `{From, Incarnation, Node}`.
fn write_verdict(incarnation: u32, node: &str, from: &str, out: &mut Vec<u8>) {
    write_map_len(3, out);
    raw_field("From", from.as_bytes(), out);
    uint_field("Incarnation", u64::from(incarnation), out);
    raw_field("Node", node.as_bytes(), out);
}

/// A map entry with a string key and a raw value.
fn raw_field(key: &str, value: &[u8], out: &mut Vec<u8>) {
    write_raw(key.as_bytes(), out);
    write_raw(value, out);
}

/// A map entry with a string key and an unsigned value.
fn uint_field(key: &str, value: u64, out: &mut Vec<u8>) {
    write_raw(key.as_bytes(), out);
    write_uint(value, out);
}

/// The `SourceAddr`, `SourceNode` and `SourcePort` entries of a probe, when it names its
/// source (they sort between `SeqNo` and `Target`).
fn source_fields(source: &Option<(SocketAddr, String)>, out: &mut Vec<u8>) {
    if let Some((addr, name)) = source {
        raw_field("SourceAddr", &ip_bytes(addr), out);
        raw_field("SourceNode", name.as_bytes(), out);
        uint_field("SourcePort", u64::from(addr.port()), out);
    }
}

/// What happened, as told by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A UDP packet's messages.
    Packet {
        /// Sender's address.
        from: SocketAddr,
        /// Its messages, decoded.
        msgs: Vec<Msg>,
        /// Its size on the wire: the most bytes its answers may send toward an address that
        /// is not a member (so a forged source cannot turn muster into an amplifier).
        size: usize,
        /// The sender's name as the packet's secure envelope gives it (secure mode only).
        sender: Option<String>,
    },
    /// The remote side of a push/pull: its view of every member.
    Remote {
        /// Who sent it (the TCP peer), for messages about what it sent.
        from: Option<SocketAddr>,
        /// Its node states.
        nodes: Vec<RemoteNode>,
        /// The peer's name as the stream's secure envelope gives it (secure mode only).
        sender: Option<String>,
    },
    /// Join the cluster through these seeds.
    Join(Vec<SocketAddr>),
    /// Leave the cluster gracefully.
    Leave,
    /// Time passed.
    Tick,
}

/// A member as a push/pull reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteNode {
    /// Name.
    pub name: String,
    /// Address.
    pub addr: SocketAddr,
    /// Meta (tags).
    pub meta: Vec<u8>,
    /// Incarnation.
    pub incarnation: u32,
    /// The sender's verdict.
    pub state: State,
}

/// What the driver must do, or report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send these messages in one UDP packet (compound when more than one).
    Send {
        /// Destination.
        to: SocketAddr,
        /// Messages, already fitted to the packet size.
        msgs: Vec<Msg>,
    },
    /// Exchange full state with this node over TCP, then feed its answer as `Input::Remote`.
    PushPull {
        /// The peer.
        to: SocketAddr,
        /// Whether this is a join.
        join: bool,
    },
    /// A member changed.
    Event(Event),
    /// Another node announces our own name at another address (two nodes with one name):
    /// Serf's name-conflict resolution asks the cluster which one holds it. At most once per
    /// [`CONFLICT_EVERY`].
    NameConflict {
        /// The other node's address.
        other: SocketAddr,
    },
    /// A peer announced a name or tags that are not allowed: it is not a member.
    Refused {
        /// The packet's sender or the push/pull's peer.
        from: Option<SocketAddr>,
        /// The name, cut and escaped (safe to log).
        name: String,
        /// Why.
        why: String,
    },
}

/// How often a name conflict may start a resolution.
pub const CONFLICT_EVERY: Duration = Duration::from_secs(30);

/// What a node refused or held back since it started (for logs and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Announcements with a name or tags that are not allowed.
    pub invalid: u64,
    /// New names refused because `max_members` was reached.
    pub full: u64,
    /// New names refused because more than `new_members_per_second` came.
    pub rate_limited: u64,
    /// Candidates that never answered their probe.
    pub unconfirmed: u64,
    /// Claims of a third party about a live member held while the member could refute.
    pub held: u64,
    /// Held claims that the member refuted (they were never applied).
    pub refuted: u64,
    /// Claims whose incarnation jumped implausibly far ahead (ignored).
    pub absurd: u64,
    /// Answers not sent because they would have sent more bytes toward a non-member than
    /// the packet carried.
    pub budget: u64,
    /// Indirect probes refused because the requester is not a member.
    pub stranger_relays: u64,
    /// Secure mode: answers to a candidate's probe not sealed as from the candidate itself
    /// (or not from its IP), which therefore bound nothing.
    pub not_itself: u64,
}

/// The largest step ahead an incarnation may take in one claim. A member's own steps are
/// +1 (a refutation, new tags) or its boot time in seconds (a restart): 2^30 s is 34 years.
/// With it, a refutation of any accepted claim stays within half the number space of what
/// every peer holds, so serial comparison (RFC 1982) always counts it as newer.
pub const MAX_JUMP: u32 = 1 << 30;

/// How an incarnation in a claim compares with the one known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Older: stale news.
    Older,
    /// The same.
    Same,
    /// Newer, by at most [`MAX_JUMP`].
    Newer,
    /// Newer by more than [`MAX_JUMP`]: forged, ignored.
    Absurd,
}

/// Whether a claim at `claim` about a member known at `known` is to be ignored: older, or
/// absurdly far ahead (counted in `stats`).
fn stale(stats: &mut Stats, claim: u32, known: u32) -> bool {
    match order(claim, known) {
        Order::Older => true,
        Order::Absurd => {
            stats.absurd += 1;
            true
        }
        Order::Same | Order::Newer => false,
    }
}

/// Compares incarnation `claim` with `known` as serial numbers (RFC 1982): they may wrap, so
/// a member at 2^32−1 refutes with 0.
pub fn order(claim: u32, known: u32) -> Order {
    let d = claim.wrapping_sub(known);
    if d == 0 {
        Order::Same
    } else if d <= MAX_JUMP {
        Order::Newer
    } else if (d as i32) > 0 {
        Order::Absurd
    } else {
        Order::Older
    }
}

/// A change of membership, as the layer above sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The member, after the change.
    pub member: Member,
}

/// Kinds of membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A member appeared (or came back after being dead or left).
    Join,
    /// Its meta or address changed.
    Update,
    /// It is suspected: an early warning, not a verdict.
    Suspect,
    /// A suspicion was refuted.
    Refuted,
    /// It was declared dead.
    Fail,
    /// It left on purpose.
    Leave,
}

/// A deterministic random generator (SplitMix64), seeded by the driver.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for this seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

struct Suspicion {
    started: Instant,
    min: Duration,
    max: Duration,
    /// Confirmations expected for the shortest timeout.
    k: u32,
    /// Who suspected it (the first, then each independent confirmation).
    from: Vec<String>,
}

impl Suspicion {
    fn deadline(&self) -> Instant {
        let n = self.from.len().saturating_sub(1) as f64;
        let timeout = if self.k == 0 || n >= f64::from(self.k) {
            self.min
        } else {
            let frac = (n + 1.0).ln() / (f64::from(self.k) + 1.0).ln();
            let span = self.max.saturating_sub(self.min).as_secs_f64();
            Duration::from_secs_f64(
                (self.max.as_secs_f64() - frac * span).max(self.min.as_secs_f64()),
            )
        };
        self.started + timeout
    }
}

struct Probe {
    seq_no: u32,
    target: String,
    indirect_at: Instant,
    round_end: Instant,
    acked: bool,
    indirect_sent: bool,
    nacks_expected: u32,
    nacks: u32,
}

struct Relay {
    requester: SocketAddr,
    seq_no: u32,
    nack: bool,
    deadline: Instant,
}

/// A name announced to us that has not answered our probe yet: not a member, not gossiped.
struct Candidate {
    addr: SocketAddr,
    meta: Vec<u8>,
    incarnation: u32,
    /// The probe's sequence number (random, so an ack cannot be guessed).
    seq_no: u32,
    /// Forgotten at this time unless it answered.
    deadline: Instant,
    /// Its `alive` was passed on already (it came from a member).
    relayed: bool,
    /// Probes left after this one: a name a member or a push/pull told us about is probed
    /// up to [`VOUCHED_PROBES`] times, one apart (a busy node may answer late, and on a lossy
    /// network three lost probes in a row leave the name to the next push/pull, minutes away
    /// in a large cluster); one from a stranger's datagram once.
    retries: u8,
    /// A member or a push/pull told us about it (it has, or got, the retries of such news).
    vouched: bool,
}

/// How many times a name that a member or a push/pull told us about is probed before it is
/// given up (at 10 % loss a probe and its answer are both lost 19 % of the time: one node in
/// 20,000 misses a newcomer after six, one in 140 after three).
const VOUCHED_PROBES: u8 = 6;

/// What a third party claims about a live member, held while the member can refute it.
#[derive(Debug, Clone)]
enum Claim {
    /// It is dead (or left, when `from` is the member).
    Dead { incarnation: u32, from: String },
    /// It moved, or its tags changed.
    Alive {
        incarnation: u32,
        addr: SocketAddr,
        meta: Vec<u8>,
    },
}

impl Claim {
    fn incarnation(&self) -> u32 {
        match self {
            Claim::Dead { incarnation, .. } | Claim::Alive { incarnation, .. } => *incarnation,
        }
    }

    fn to_msg(&self, node: &str) -> Msg {
        match self {
            Claim::Dead { incarnation, from } => Msg::Dead {
                incarnation: *incarnation,
                node: node.to_owned(),
                from: from.clone(),
            },
            Claim::Alive {
                incarnation,
                addr,
                meta,
            } => Msg::Alive {
                incarnation: *incarnation,
                node: node.to_owned(),
                addr: *addr,
                meta: meta.clone(),
                vsn: VSN.to_vec(),
            },
        }
    }
}

struct Held {
    claim: Claim,
    until: Instant,
}

struct Broadcast {
    msg: Msg,
    /// Encoded size, measured once when queued.
    len: usize,
}

/// The first extra push/pull after joining (then twice and four times as long).
const EARLY_SYNC: Duration = Duration::from_secs(1);

/// Most strangers remembered to exchange state with.
const MAX_STRANGERS: usize = 64;

/// About how many members, in all, exchange state with a stranger that probes them.
const STRANGER_SYNCS: usize = 32;

/// Most indirect probes relayed for others at once.
const MAX_RELAYS: usize = 256;

/// Order of the broadcast queue: fewest transmits first, then oldest first. (memberlist sends
/// the newest first; in the simulator that order let a leave miss one node of ten for good
/// while newer news kept the front of the queue, so muster keeps first-come order.)
type QueueKey = (u32, std::cmp::Reverse<u64>);

/// A random time within `d`.
fn jitter(rng: &mut Rng, d: Duration) -> Duration {
    Duration::from_nanos(rng.next_u64() % d.as_nanos().max(1) as u64)
}

/// A cluster that converged long ago, as every member's failure detector sees it. The
/// simulator starts its large clusters from one ([`Swim::adopt`]): joining N nodes costs N²
/// messages and a node every member, which a run of 10,000 nodes cannot afford. Clones, and the
/// nodes made from one view, share its memory until they change a member.
#[derive(Debug, Clone)]
pub struct View {
    members: Roll<Member>,
    /// Every member, in one random order: nodes probe in it, each from a place of its own.
    order: Vector<String>,
    addrs: imbl::HashMap<SocketAddr, usize>,
    live: usize,
}

impl View {
    /// The view that lists exactly `members`, in a probe order shuffled with `seed`.
    pub fn new(members: impl IntoIterator<Item = Member>, seed: u64) -> View {
        let mut view = View {
            members: Roll::new(),
            order: Vector::new(),
            addrs: imbl::HashMap::new(),
            live: 0,
        };
        let mut names = Vec::new();
        for m in members {
            *view.addrs.entry(m.addr).or_insert(0) += 1;
            if matches!(m.state, State::Alive | State::Suspect) {
                view.live += 1;
            }
            names.push(m.name.clone());
            view.members.insert(m.name.clone(), m);
        }
        let mut rng = Rng::new(seed);
        for i in (1..names.len()).rev() {
            names.swap(i, rng.below(i + 1));
        }
        view.order = names.into_iter().collect();
        view
    }
}

/// One node's view of the cluster and its protocol duties.
pub struct Swim {
    config: Config,
    me: String,
    rng: Rng,
    members: Roll<Member>,
    suspicions: HashMap<String, Suspicion>,
    probe_order: Vector<String>,
    probe_index: usize,
    /// Every member but this node, in any state, in no order: peers are drawn from it at
    /// random (a gossip round would otherwise scan the whole map).
    roster: Vector<String>,
    probe: Option<Probe>,
    relays: HashMap<u32, Relay>,
    next_seq: u32,
    awareness: u32,
    broadcasts: BTreeMap<QueueKey, Broadcast>,
    outputs: VecDeque<Output>,
    next_probe: Instant,
    next_gossip: Instant,
    next_push_pull: Instant,
    leaving: bool,
    /// Members alive or suspect (self included), kept as states change.
    live: usize,
    /// Where the queued broadcast about each node is: a newer one replaces it at once.
    latest: HashMap<String, QueueKey>,
    /// Id of the next broadcast.
    next_broadcast: u64,
    /// Names announced to us that must answer a probe before they are members.
    candidates: BTreeMap<String, Candidate>,
    /// Candidates by the sequence number of their probe.
    candidate_seqs: HashMap<u32, String>,
    /// The candidates' deadlines, with how many candidates have each: `poll_timeout` runs
    /// after every input, and a join storm leaves hundreds of candidates to scan otherwise.
    candidate_deadlines: BTreeMap<Instant, usize>,
    /// Claims about live members held while the member can refute them.
    held: BTreeMap<String, Held>,
    /// Admission tokens left (refilled at `new_members_per_second`), and when last refilled.
    tokens: (f64, Instant),
    /// While a packet is handled: its size, and the bytes its answers sent so far toward
    /// each address that is not a member (never more than the size toward any one).
    budget: Option<(usize, HashMap<SocketAddr, usize>)>,
    /// Members (alive, suspect or dead, not forgotten) by address, with their count there.
    addrs: imbl::HashMap<SocketAddr, usize>,
    /// When a refutation last raised the awareness score (at most once per probe interval,
    /// so forged claims about us cannot slow our own failure detection).
    last_refute_penalty: Option<Instant>,
    /// When a name conflict last started a resolution.
    last_conflict: Option<Instant>,
    /// No push/pull with a stranger that probed us before this time.
    next_stranger_sync: Instant,
    /// Nodes that probed us while we did not know them (bounded), to exchange state with.
    strangers: VecDeque<(String, SocketAddr)>,
    /// While a push/pull is merged: the name of the peer's own entry, admitted unprobed.
    vouched: Option<String>,
    /// While a packet from a member is handled: news of new names in it is passed on at
    /// once, as memberlist does (the names still count only once they answer our probe).
    relaying: bool,
    /// Whether a push/pull is being merged.
    streaming: bool,
    /// While a packet is handled in secure mode: its authenticated sender.
    sender: Option<String>,
    /// After the first push/pull: extra exchanges with random members at growing intervals
    /// (1, 2, 4 s), so that news gossip missed in a busy start is caught up at once rather
    /// than at the next `push_pull_interval`. (when, how many left)
    early_syncs: (Option<Instant>, u8),

    stats: Stats,
}

impl Swim {
    /// A node named `name` at `addr` with `meta`; `incarnation` should grow across restarts
    /// (the driver passes its boot time) so a restarted node supersedes its predecessor.
    pub fn new(
        config: Config,
        name: &str,
        addr: SocketAddr,
        meta: Vec<u8>,
        incarnation: u32,
        seed: u64,
        now: Instant,
    ) -> Swim {
        let mut members = Roll::new();
        members.insert(
            name.to_owned(),
            Member {
                name: name.to_owned(),
                addr,
                meta,
                incarnation,
                state: State::Alive,
                since: now,
            },
        );
        let mut rng = Rng::new(seed);
        // Spread the first probe and gossip over one period so nodes do not tick in step.
        let next_probe = now + jitter(&mut rng, config.probe_interval);
        let next_gossip = now + jitter(&mut rng, config.gossip_interval);
        let next_push_pull =
            now + config.push_pull_interval + jitter(&mut rng, config.push_pull_interval);
        let mut swim = Swim {
            config,
            me: name.to_owned(),
            rng,
            members,
            suspicions: HashMap::new(),
            probe_order: Vector::new(),
            probe_index: 0,
            roster: Vector::new(),
            probe: None,
            relays: HashMap::new(),
            next_seq: 0,
            awareness: 0,
            broadcasts: BTreeMap::new(),
            outputs: VecDeque::new(),
            next_probe,
            next_gossip,
            next_push_pull,
            leaving: false,
            live: 1,
            latest: HashMap::new(),
            next_broadcast: 0,
            candidates: BTreeMap::new(),
            candidate_seqs: HashMap::new(),
            candidate_deadlines: BTreeMap::new(),
            held: BTreeMap::new(),
            tokens: (0.0, now),
            budget: None,
            addrs: imbl::HashMap::new(),
            last_refute_penalty: None,
            last_conflict: None,
            next_stranger_sync: now,
            strangers: VecDeque::new(),
            vouched: None,
            relaying: false,
            sender: None,
            streaming: false,
            early_syncs: (None, 3),

            stats: Stats::default(),
        };
        swim.tokens.0 = f64::from(swim.config.new_members_per_second);
        swim.index(addr);
        swim.announce();
        swim
    }

    /// Takes `view` as this node's own, as if the cluster had converged long before `now`:
    /// the view must list this node; its own entry is kept as it is here. The announcement of
    /// the start and the extra push/pulls after a join are dropped (there is no news), the
    /// probe round starts at a random place in the view's order, and the next push/pull at a
    /// random time within its period.
    pub fn adopt(&mut self, view: &View, now: Instant) {
        let own = self.self_member().clone();
        assert!(
            view.members.contains_key(&self.me),
            "the view must list the node that adopts it"
        );
        self.members = view.members.clone();
        if self.members.get(&self.me) != Some(&own) {
            self.members.insert(self.me.clone(), own);
        }
        self.addrs = view.addrs.clone();
        self.live = view.live;
        self.roster = view.order.clone();
        let me = self.me.clone();
        self.drop_from_roster(&me);
        self.probe_order = self.roster.clone();
        self.probe_index = self.rng.below(self.probe_order.len().max(1));
        self.broadcasts.clear();
        self.latest.clear();
        self.early_syncs = (None, 0);
        // Somewhere in the period, as in a cluster that has run for a while.
        let period = self.push_pull_period();
        self.next_push_pull = now + jitter(&mut self.rng, period);
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.me
    }

    /// Every member known, self included, by name.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Forgets a dead or departed member (the layer above reaped it), so push/pulls stop
    /// carrying it. Members alive or suspect, and this node, are kept; returns whether it went.
    pub fn forget(&mut self, name: &str) -> bool {
        if name == self.me
            || !self
                .members
                .get(name)
                .is_some_and(|m| matches!(m.state, State::Dead | State::Left))
        {
            return false;
        }
        if let Some(m) = self.members.remove(name) {
            self.unindex(m.addr);
            self.drop_from_roster(name);
        }
        self.suspicions.remove(name);
        self.held.remove(name);
        if let Some(key) = self.latest.remove(name) {
            self.broadcasts.remove(&key);
        }
        true
    }

    /// Takes `name` out of the roster (its order does not matter: the last one takes its place).
    fn drop_from_roster(&mut self, name: &str) {
        if let Some(at) = self.roster.iter().position(|n| n == name) {
            let last = self.roster.len() - 1;
            self.roster.swap(at, last);
            self.roster.pop_back();
        }
    }

    /// What this node refused or held back so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// How many broadcasts wait to be passed on (at most one per member they are about).
    pub fn queued_broadcasts(&self) -> usize {
        self.broadcasts.len()
    }

    /// How many names wait to answer their first probe.
    pub fn candidates(&self) -> usize {
        self.candidates.len()
    }

    fn index(&mut self, addr: SocketAddr) {
        *self.addrs.entry(addr).or_insert(0) += 1;
    }

    fn unindex(&mut self, addr: SocketAddr) {
        if let Some(n) = self.addrs.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                self.addrs.remove(&addr);
            }
        }
    }

    fn deadline_added(&mut self, at: Instant) {
        *self.candidate_deadlines.entry(at).or_insert(0) += 1;
    }

    fn deadline_dropped(&mut self, at: Instant) {
        if let Some(n) = self.candidate_deadlines.get_mut(&at) {
            *n -= 1;
            if *n == 0 {
                self.candidate_deadlines.remove(&at);
            }
        }
    }

    /// Whether a member (not a mere candidate) is known at this address.
    fn is_member_addr(&self, addr: SocketAddr) -> bool {
        self.addrs.contains_key(&addr)
    }

    /// Takes one admission token, if the rate allows.
    fn take_token(&mut self, now: Instant) -> bool {
        let rate = f64::from(self.config.new_members_per_second);
        let (tokens, at) = self.tokens;
        let refill = now.saturating_duration_since(at).as_secs_f64() * rate;
        let tokens = (tokens + refill).min(rate);
        if tokens >= 1.0 {
            self.tokens = (tokens - 1.0, now);
            true
        } else {
            self.tokens = (tokens, now);
            false
        }
    }

    /// A member by name.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.get(name)
    }

    /// When the suspicion of `name` runs out, if it is suspected, and by how many nodes.
    pub fn suspicion(&self, name: &str) -> Option<(Instant, usize)> {
        self.suspicions
            .get(name)
            .map(|s| (s.deadline(), s.from.len()))
    }

    /// The awareness score (0 = healthy).
    pub fn awareness(&self) -> u32 {
        self.awareness
    }

    /// The node states to send in a push/pull.
    pub fn local_state(&self) -> Vec<RemoteNode> {
        self.members
            .values()
            .map(|m| RemoteNode {
                name: m.name.clone(),
                addr: m.addr,
                meta: m.meta.clone(),
                incarnation: m.incarnation,
                state: m.state,
            })
            .chain(
                // Candidates are passed on in push/pulls, as alive: the peer probes them itself
                // before it counts them. (Without them, a storm of joins leaves nodes that
                // never hear of each other until the next push/pull: seen in the simulator.)
                self.candidates
                    .iter()
                    .filter(|(n, _)| !self.members.contains_key(n))
                    .map(|(n, c)| RemoteNode {
                        name: n.clone(),
                        addr: c.addr,
                        meta: c.meta.clone(),
                        incarnation: c.incarnation,
                        state: State::Alive,
                    }),
            )
            .collect()
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the next `Tick` is due.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self
            .next_probe
            .min(self.next_gossip)
            .min(self.next_push_pull);
        if let Some(p) = &self.probe {
            if !p.indirect_sent && !p.acked {
                t = t.min(p.indirect_at);
            }
            t = t.min(p.round_end);
        }
        for s in self.suspicions.values() {
            t = t.min(s.deadline());
        }
        for r in self.relays.values() {
            t = t.min(r.deadline);
        }
        if let Some((&at, _)) = self.candidate_deadlines.first_key_value() {
            t = t.min(at);
        }
        debug_assert_eq!(
            self.candidate_deadlines.values().sum::<usize>(),
            self.candidates.len()
        );
        debug_assert_eq!(
            self.candidate_deadlines
                .first_key_value()
                .map(|(&at, _)| at),
            self.candidates.values().map(|c| c.deadline).min()
        );
        for h in self.held.values() {
            t = t.min(h.until);
        }
        if !self.strangers.is_empty() {
            t = t.min(self.next_stranger_sync);
        }
        if let (Some(at), 1..) = self.early_syncs {
            t = t.min(at);
        }
        t
    }

    /// Feeds what happened at `now`.
    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Packet {
                from,
                msgs,
                size,
                sender,
            } => {
                self.relaying = self.is_member_addr(from);
                self.sender = sender;
                self.budget = Some((size, HashMap::new()));
                for m in msgs {
                    self.message(now, from, m);
                }
                self.budget = None;
                self.relaying = false;
                self.sender = None;
            }
            Input::Remote {
                from,
                mut nodes,
                sender,
            } => {
                // In an order of our own: a push/pull lists members by name, and nodes that
                // all pass on the same news first (they confirm it in the same order) leave
                // other news unsent to some of them (seen in the simulator's join storm).
                for i in (1..nodes.len()).rev() {
                    let j = self.rng.below(i + 1);
                    nodes.swap(i, j);
                }
                // The peer's own entry (the first alive one at the peer's IP) needs no probe:
                // the stream itself came from there. Its port is still unproven; a wrong one
                // fails its probes like any dead member.
                // In secure mode only the entry named as the stream's sender.
                let secure = self.config.secure;
                self.vouched = from.and_then(|f| {
                    nodes
                        .iter()
                        .find(|n| {
                            n.state == State::Alive
                                && wire::canonical(n.addr).ip() == wire::canonical(f).ip()
                                && (!secure || sender.as_deref() == Some(n.name.as_str()))
                        })
                        .map(|n| n.name.clone())
                });
                if self.early_syncs.0.is_none()
                    && self.early_syncs.1 > 0
                    && !self.config.memberlist_model
                {
                    self.early_syncs.0 = Some(now + EARLY_SYNC);
                }
                self.streaming = true;
                for n in nodes {
                    self.merge(now, from, n);
                }
                self.streaming = false;
                self.vouched = None;
            }
            Input::Join(seeds) => {
                for to in seeds {
                    self.outputs.push_back(Output::PushPull { to, join: true });
                }
            }
            Input::Leave => self.leave(now),
            Input::Tick => self.tick(now),
        }
    }

    fn self_member(&self) -> &Member {
        &self.members[&self.me]
    }

    fn live_count(&self) -> usize {
        self.live
    }

    fn alive_msg(&self, m: &Member) -> Msg {
        Msg::Alive {
            incarnation: m.incarnation,
            node: m.name.clone(),
            addr: m.addr,
            meta: m.meta.clone(),
            vsn: VSN.to_vec(),
        }
    }

    fn message(&mut self, now: Instant, from: SocketAddr, msg: Msg) {
        match msg {
            Msg::Ping {
                seq_no,
                node,
                source,
            } => self.on_ping(now, from, seq_no, &node, source),
            Msg::IndirectPing {
                seq_no,
                target,
                node,
                nack,
                source,
            } => {
                let requester = source.map_or(from, |(a, _)| a);
                self.on_indirect_ping(now, requester, seq_no, target, node, nack);
            }
            Msg::Ack { seq_no, .. } => self.on_ack(now, from, seq_no),
            Msg::Nack { seq_no } => {
                if let Some(p) = &mut self.probe {
                    if p.seq_no == seq_no {
                        p.nacks += 1;
                    }
                }
            }
            Msg::Suspect {
                incarnation,
                node,
                from: by,
            } => self.suspect(now, &node, incarnation, &by, true),
            Msg::Dead {
                incarnation,
                node,
                from: by,
            } => self.dead(now, &node, incarnation, &by, Some(from)),
            Msg::Alive {
                incarnation,
                node,
                addr,
                meta,
                ..
            } => {
                if self.valid(Some(from), &node, &meta) {
                    self.alive(now, &node, addr, meta, incarnation, Some(from));
                }
            }
            Msg::User(_) => {}
        }
    }

    /// A probe of `node` from `from`: acked (to `source` when given) unless it names another
    /// node; a prober we do not know is remembered as a stranger to sync with.
    fn on_ping(
        &mut self,
        now: Instant,
        from: SocketAddr,
        seq_no: u32,
        node: &str,
        source: Option<(SocketAddr, String)>,
    ) {
        if !node.is_empty() && node != self.me {
            return; // a probe for another process that once had our address
        }
        let to = source.as_ref().map_or(from, |(a, _)| *a);
        self.send(
            now,
            to,
            vec![Msg::Ack {
                seq_no,
                payload: Vec::new(),
            }],
        );
        if let Some((addr, name)) = source {
            self.stranger(from, addr, &name);
        }
    }

    /// A member asks us to probe `target` for it: we ping it with a sequence number of ours
    /// and remember whom to answer.
    fn on_indirect_ping(
        &mut self,
        now: Instant,
        requester: SocketAddr,
        seq_no: u32,
        target: SocketAddr,
        node: String,
        nack: bool,
    ) {
        // Only on behalf of a member: a stranger could otherwise aim our pings (and their
        // nacks) at any address.
        if !self.is_member_addr(requester) || requester == self.self_member().addr {
            self.stats.stranger_relays += 1;
            return;
        }
        if self.relays.len() >= MAX_RELAYS {
            return;
        }
        let ours = self.seq();
        self.relays.insert(
            ours,
            Relay {
                requester,
                seq_no,
                nack,
                deadline: now + self.config.probe_timeout,
            },
        );
        let me = self.self_member().addr;
        self.send(
            now,
            target,
            vec![Msg::Ping {
                seq_no: ours,
                node,
                source: Some((me, self.me.clone())),
            }],
        );
    }

    /// An ack: relayed to whoever asked us to probe, or the answer of a candidate's probe,
    /// or of our own probe.
    fn on_ack(&mut self, now: Instant, from: SocketAddr, seq_no: u32) {
        if let Some(r) = self.relays.remove(&seq_no) {
            self.send(
                now,
                r.requester,
                vec![Msg::Ack {
                    seq_no: r.seq_no,
                    payload: Vec::new(),
                }],
            );
        } else if let Some(name) = self.candidate_seqs.get(&seq_no).cloned() {
            let addr = self.candidates.get(&name).map(|c| c.addr);
            let secure = self.config.secure;
            if addr
                .is_some_and(|a| secure::speaks_for(secure, self.sender.as_deref(), from, &name, a))
            {
                self.candidate_seqs.remove(&seq_no);
                self.confirm(now, &name);
            } else if addr.is_some() {
                self.stats.not_itself += 1;
            } else {
                self.candidate_seqs.remove(&seq_no);
            }
        } else if let Some(p) = &mut self.probe {
            if p.seq_no == seq_no {
                p.acked = true;
            }
        }
    }

    /// A probe from a node we do not know: it knows us, so we missed its news (gossip reaches
    /// everyone only with high probability, and not in a storm of joins). It is remembered,
    /// and the tick exchanges state with one such stranger per probe interval. Only when it
    /// probes from the address it names: a stream to a forged address would not connect.
    fn stranger(&mut self, from: SocketAddr, addr: SocketAddr, name: &str) {
        if addr != from
            || self.config.memberlist_model
            || name.is_empty()
            || name == self.me
            || self.leaving
            || self.members.contains_key(name)
            || self.candidates.contains_key(name)
            || self.strangers.len() >= MAX_STRANGERS
            || self.strangers.iter().any(|(n, _)| n == name)
            || validate::name(name).is_err()
        {
            return;
        }
        // A node that joins a large cluster probes every member within a second or so: if
        // each exchanged its whole state with it, it would receive N full states (10,000 ×
        // 600 KB). Above `STRANGER_SYNCS` live members a member does so with the probability
        // that leaves about that many exchanges in all; a node that knows few (a restarted
        // load balancer) still syncs with every stranger.
        let live = self.live_count();
        if live > STRANGER_SYNCS && self.rng.below(live) >= STRANGER_SYNCS {
            return;
        }
        self.strangers.push_back((name.to_owned(), addr));
    }

    /// One push/pull with a stranger that probed us, at most once per probe interval.
    fn sync_with_a_stranger(&mut self, now: Instant) {
        if now < self.next_stranger_sync {
            return;
        }
        while let Some((name, addr)) = self.strangers.pop_front() {
            if self.members.contains_key(&name) || self.candidates.contains_key(&name) {
                continue;
            }
            self.next_stranger_sync = now + self.config.probe_interval;
            self.outputs.push_back(Output::PushPull {
                to: addr,
                join: false,
            });
            return;
        }
    }

    /// Whether an announced name and meta are allowed; a refusal is counted and reported.
    fn valid(&mut self, from: Option<SocketAddr>, name: &str, meta: &[u8]) -> bool {
        let why = match validate::name(name) {
            Err(e) => e,
            Ok(()) => match validate::meta(meta) {
                Err(e) => e,
                Ok(_) => return true,
            },
        };
        self.stats.invalid += 1;
        self.outputs.push_back(Output::Refused {
            from,
            name: validate::printable(name, 64),
            why: why.to_string(),
        });
        false
    }

    /// A sequence number: random, so an answer cannot be forged by counting.
    fn seq(&mut self) -> u32 {
        self.next_seq = self.rng.next_u64() as u32;
        self.next_seq
    }

    /// Queues a broadcast; a newer one about the same node replaces the older.
    /// Gossips that `name` is alive at `addr` with this incarnation and meta.
    fn broadcast_alive(&mut self, name: &str, incarnation: u32, addr: SocketAddr, meta: Vec<u8>) {
        self.broadcast(Msg::Alive {
            incarnation,
            node: name.to_owned(),
            addr,
            meta,
            vsn: VSN.to_vec(),
        });
    }

    fn broadcast(&mut self, msg: Msg) {
        let id = self.next_broadcast;
        self.next_broadcast += 1;
        let key = (0, std::cmp::Reverse(id));
        if let Some(subject) = msg.subject() {
            // Only the newest news about a node is worth passing on.
            if let Some(old) = self.latest.insert(subject.to_owned(), key) {
                self.broadcasts.remove(&old);
            }
        }
        let len = msg.to_wire().len();
        self.broadcasts.insert(key, Broadcast { msg, len });
    }

    fn retransmit_limit(&self) -> u32 {
        let n = self.live_count() as f64;
        self.config.retransmit_mult * ((n + 1.0).log10().ceil().max(1.0) as u32)
    }

    /// Sends `msgs` alone, no broadcast added. Toward an address that is not a member, only
    /// while the packet being handled has budget left (and never more than it carried).
    fn send_bare(&mut self, to: SocketAddr, msgs: Vec<Msg>) {
        let size = 7 + msgs.iter().map(|m| m.to_wire().len() + 2).sum::<usize>();
        if !self.spend(to, size) {
            self.stats.budget += 1;
            return;
        }
        if !msgs.is_empty() {
            self.outputs.push_back(Output::Send { to, msgs });
        }
    }

    /// Whether `size` more bytes may go to `to` in answer to the packet being handled (always,
    /// toward a member or outside a packet); counts them when so.
    fn spend(&mut self, to: SocketAddr, size: usize) -> bool {
        if self.is_member_addr(to) {
            return true;
        }
        let Some((limit, spent)) = self.budget.as_mut() else {
            return true;
        };
        let used = spent.entry(to).or_insert(0);
        if *used + size > *limit {
            return false;
        }
        *used += size;
        true
    }

    /// How many bytes a packet toward `to` may have in answer to the packet being handled:
    /// the packet size toward a member; toward anyone else, what is left of the handled
    /// packet's size for that address, or no more than `bare` outside a packet (a push/pull
    /// names addresses too, and is not answered with gossip).
    fn room(&self, to: SocketAddr, bare: usize) -> usize {
        if self.is_member_addr(to) {
            return self.config.packet_size;
        }
        match &self.budget {
            Some((limit, spent)) => limit
                .saturating_sub(spent.get(&to).copied().unwrap_or(0))
                .min(self.config.packet_size),
            None => bare,
        }
    }

    /// Sends `msgs` to `to`, topped up with pending broadcasts up to the packet size toward a
    /// member, and up to the handled packet's size toward anyone else (so a forged source
    /// gets at most as many bytes as it sent). Returns whether it was sent.
    fn send(&mut self, _now: Instant, to: SocketAddr, mut msgs: Vec<Msg>) -> bool {
        let overhead = 2 + 5; // compound header + CRC
        let mut size: usize = overhead + msgs.iter().map(|m| m.to_wire().len() + 2).sum::<usize>();
        let room = self.room(to, size);
        if size > room {
            self.stats.budget += 1;
            return false;
        }
        let limit = self.retransmit_limit();
        // Walk the queue from the least sent; stop once the packet is full or a run of
        // messages did not fit, so a send costs what it carries, not the queue's length.
        let mut taken = Vec::new();
        let mut misses = 0;
        for (key, b) in &self.broadcasts {
            if msgs.len() >= 255 || room.saturating_sub(size) < 16 || misses > 32 {
                break;
            }
            let len = b.len + 2;
            if size + len > room {
                misses += 1;
                continue;
            }
            size += len;
            msgs.push(b.msg.clone());
            taken.push(*key);
        }
        for key in taken {
            let Some(b) = self.broadcasts.remove(&key) else {
                continue;
            };
            let next = (key.0 + 1, key.1);
            let subject = b.msg.subject().map(str::to_owned);
            if next.0 < limit {
                self.broadcasts.insert(next, b);
                if let Some(s) = subject {
                    self.latest.insert(s, next);
                }
            } else if let Some(s) = subject {
                self.latest.remove(&s);
            }
        }
        self.spend(to, size);
        if !msgs.is_empty() {
            self.outputs.push_back(Output::Send { to, msgs });
        }
        true
    }

    fn event(&mut self, kind: EventKind, name: &str) {
        if let Some(m) = self.members.get(name) {
            self.outputs.push_back(Output::Event(Event {
                kind,
                member: m.clone(),
            }));
        }
    }

    /// Raises our incarnation above `seen` and tells everyone we are alive.
    fn refute(&mut self, now: Instant, seen: u32) {
        let me = self.me.clone();
        let Some(m) = self.members.get_mut(&me) else {
            return;
        };
        let base = if order(seen, m.incarnation) == Order::Newer {
            seen
        } else {
            m.incarnation
        };
        m.incarnation = base.wrapping_add(1);
        let msg = self.alive_msg(&self.members[&me]);
        self.broadcast(msg);
        // Lifeguard: being suspected hints that we are slow. Once per probe interval at most,
        // so a stream of forged claims cannot stretch our own probing.
        let due = self
            .last_refute_penalty
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.probe_interval);
        if due {
            self.last_refute_penalty = Some(now);
            self.awareness = (self.awareness + 1).min(self.config.awareness_max - 1);
        }
    }

    /// An `alive` claim. `from` is the packet's sender (`None` for a push/pull): a claim that
    /// moves a live member or changes its tags is applied at once only when the member says
    /// so itself, from its known address.
    fn alive(
        &mut self,
        now: Instant,
        name: &str,
        addr: SocketAddr,
        meta: Vec<u8>,
        incarnation: u32,
        from: Option<SocketAddr>,
    ) {
        if name == self.me {
            let (my_addr, my_incarnation, same_meta) = {
                let m = self.self_member();
                (m.addr, m.incarnation, meta == m.meta)
            };
            let ord = order(incarnation, my_incarnation);
            let refute = match ord {
                Order::Newer => true,
                Order::Same => addr != my_addr || !same_meta,
                Order::Older => false,
                Order::Absurd => {
                    self.stats.absurd += 1;
                    false
                }
            };
            let other = addr != my_addr && ord != Order::Absurd;
            if refute && !self.leaving {
                self.refute(now, incarnation);
            }
            if other && self.last_conflict.is_none_or(|t| now >= t + CONFLICT_EVERY) {
                self.last_conflict = Some(now);
                self.outputs.push_back(Output::NameConflict { other: addr });
            }
            return;
        }
        let Some(m) = self.members.get(name) else {
            return self.admit(now, name, addr, meta, incarnation);
        };
        let ord = order(incarnation, m.incarnation);
        if ord == Order::Absurd {
            self.stats.absurd += 1;
            return;
        }
        if matches!(m.state, State::Dead | State::Left) {
            // A comeback, possibly at another address: it must answer a probe there first.
            if ord == Order::Newer || (ord == Order::Same && addr != m.addr) {
                self.admit(now, name, addr, meta, incarnation);
            }
            return;
        }
        if ord != Order::Newer {
            return;
        }
        if self.config.secure && m.addr != addr {
            // Only the member itself, answering our probe there, moves it.
            return self.admit(now, name, addr, meta, incarnation);
        }
        let changed = m.addr != addr || m.meta != meta;
        if changed && from != Some(m.addr) {
            return self.hold(
                now,
                name,
                Claim::Alive {
                    incarnation,
                    addr,
                    meta,
                },
                now,
            );
        }
        self.apply_alive(now, name, addr, meta, incarnation);
    }

    /// A new name (or a departed member coming back): probed before it counts.
    fn admit(
        &mut self,
        now: Instant,
        name: &str,
        addr: SocketAddr,
        meta: Vec<u8>,
        incarnation: u32,
    ) {
        if let Some(c) = self.candidates.get_mut(name) {
            // Already probed: keep the newest claim; the probe already sent decides.
            if order(incarnation, c.incarnation) == Order::Newer && c.addr == addr {
                c.incarnation = incarnation;
                c.meta = meta;
            }
            // A member vouches for it too (a newcomer's own probes usually come first): it
            // gets the retries of a member's news, or one lost answer would leave it to the
            // next push/pull.
            if (self.relaying || self.streaming) && c.addr == addr && !c.vouched {
                c.vouched = true;
                c.retries = VOUCHED_PROBES - 1;
            }
            return;
        }
        let comeback = self.members.contains_key(name);
        if !comeback && self.members.len() + self.candidates.len() >= self.config.max_members {
            self.stats.full += 1;
            return;
        }
        if self.config.memberlist_model {
            return self.admit_unprobed(now, name, addr, meta, incarnation);
        }
        let seq_no = self.seq();
        let me = (self.self_member().addr, self.me.clone());
        let ping = Msg::Ping {
            seq_no,
            node: name.to_owned(),
            source: Some(me),
        };
        // The probe must fit the packet's budget (it goes to an address named in the packet).
        let cost = 7 + ping.to_wire().len() + 2;
        if self.room(addr, cost) < cost {
            self.stats.budget += 1;
            return;
        }
        if !self.take_token(now) {
            self.stats.rate_limited += 1;
            return;
        }
        let deadline = now + self.config.probe_interval.max(self.config.probe_timeout);
        self.deadline_added(deadline);
        self.candidates.insert(
            name.to_owned(),
            Candidate {
                addr,
                meta,
                incarnation,
                seq_no,
                deadline,
                relayed: self.relaying && !comeback,
                retries: if self.relaying || self.streaming {
                    VOUCHED_PROBES - 1
                } else {
                    0
                },
                vouched: self.relaying || self.streaming,
            },
        );
        self.candidate_seqs.insert(seq_no, name.to_owned());
        if self.relaying && !comeback {
            let meta = self.candidates[name].meta.clone();
            self.broadcast_alive(name, incarnation, addr, meta);
        }
        if self.vouched.as_deref() == Some(name) {
            self.candidate_seqs.remove(&seq_no);
            return self.confirm(now, name);
        }
        // Bare: broadcasts piggybacked on a burst of probes to names from one packet would
        // spend their retransmits on a few nodes (seen in the simulator as lost news).
        self.send_bare(addr, vec![ping]);
    }

    /// memberlist's rule (the simulator's model of Serf): a member at once, its news passed on.
    fn admit_unprobed(
        &mut self,
        now: Instant,
        name: &str,
        addr: SocketAddr,
        meta: Vec<u8>,
        incarnation: u32,
    ) {
        self.deadline_added(now);
        let candidate = Candidate {
            addr,
            meta,
            incarnation,
            seq_no: 0,
            deadline: now,
            relayed: false,
            retries: 0,
            vouched: false,
        };
        self.candidates.insert(name.to_owned(), candidate);
        self.confirm(now, name);
    }

    /// A candidate answered its probe: it is a member now (or again).
    fn confirm(&mut self, now: Instant, name: &str) {
        let Some(c) = self.candidates.remove(name) else {
            return;
        };
        self.deadline_dropped(c.deadline);
        let msg = Msg::Alive {
            incarnation: c.incarnation,
            node: name.to_owned(),
            addr: c.addr,
            meta: c.meta.clone(),
            vsn: VSN.to_vec(),
        };
        match self.members.get_mut(name) {
            None => {
                self.members.insert(
                    name.to_owned(),
                    Member {
                        name: name.to_owned(),
                        addr: c.addr,
                        meta: c.meta,
                        incarnation: c.incarnation,
                        state: State::Alive,
                        since: now,
                    },
                );
                self.index(c.addr);
                self.live += 1;
                self.roster.push_back(name.to_owned());
                self.insert_probe_target(name);
                if !c.relayed {
                    self.broadcast(msg);
                }
                self.event(EventKind::Join, name);
                // It may not know us (we learned of it from others), and a Serf agent does not
                // ask strangers that probe it: tell it who we are.
                if !self.config.memberlist_model {
                    let me = self.alive_msg(self.self_member());
                    self.send(now, c.addr, vec![me]);
                }
            }
            Some(m) => {
                let old = m.addr;
                let was = m.state;
                if matches!(was, State::Alive | State::Suspect)
                    && order(c.incarnation, m.incarnation) != Order::Newer
                {
                    return; // it came back by other news meanwhile
                }
                m.addr = c.addr;
                m.meta = c.meta;
                m.incarnation = c.incarnation;
                m.state = State::Alive;
                m.since = now;
                self.unindex(old);
                self.index(c.addr);
                if matches!(was, State::Dead | State::Left) {
                    self.live += 1;
                    if !self.probe_order.iter().any(|n| n == name) {
                        self.insert_probe_target(name);
                    }
                }
                self.suspicions.remove(name);
                self.held.remove(name);
                self.broadcast(msg);
                self.event(EventKind::Join, name);
            }
        }
    }

    /// Applies a newer `alive` about a live member.
    fn apply_alive(
        &mut self,
        now: Instant,
        name: &str,
        addr: SocketAddr,
        meta: Vec<u8>,
        incarnation: u32,
    ) {
        let Some(m) = self.members.get_mut(name) else {
            return;
        };
        let was = m.state;
        let old = m.addr;
        let changed = m.addr != addr || m.meta != meta;
        m.addr = addr;
        m.meta = meta.clone();
        m.incarnation = incarnation;
        if was != State::Alive {
            m.state = State::Alive;
            m.since = now;
        }
        if old != addr {
            self.unindex(old);
            self.index(addr);
        }
        self.suspicions.remove(name);
        // A held claim no newer than this news is refuted by it.
        if self
            .held
            .get(name)
            .is_some_and(|h| order(h.claim.incarnation(), incarnation) != Order::Newer)
        {
            self.held.remove(name);
            self.stats.refuted += 1;
        }
        self.broadcast_alive(name, incarnation, addr, meta);
        match was {
            State::Suspect => self.event(EventKind::Refuted, name),
            State::Alive if changed => self.event(EventKind::Update, name),
            _ => {}
        }
    }

    /// Holds a third party's claim about a live member until `since` + one probe timeout,
    /// and tells the member, so that it can refute a false one first.
    fn hold(&mut self, now: Instant, name: &str, claim: Claim, since: Instant) {
        let Some(m) = self.members.get(name) else {
            return;
        };
        let to = m.addr;
        if let Some(h) = self.held.get(name) {
            if order(claim.incarnation(), h.claim.incarnation()) != Order::Newer {
                return;
            }
        }
        let msg = claim.to_msg(name);
        self.held.insert(
            name.to_owned(),
            Held {
                claim,
                until: since.max(now) + self.config.probe_timeout,
            },
        );
        self.stats.held += 1;
        self.send_bare(to, vec![msg]);
    }

    /// A held claim's time is up and nothing refuted it: apply it.
    fn release(&mut self, now: Instant, name: &str) {
        let Some(h) = self.held.remove(name) else {
            return;
        };
        let Some(m) = self.members.get(name) else {
            return;
        };
        if !matches!(m.state, State::Alive | State::Suspect)
            || matches!(
                order(h.claim.incarnation(), m.incarnation),
                Order::Older | Order::Absurd
            )
        {
            return;
        }
        match h.claim {
            Claim::Dead { incarnation, from } => self.apply_dead(now, name, incarnation, &from),
            Claim::Alive {
                incarnation,
                addr,
                meta,
            } => {
                if order(incarnation, m.incarnation) == Order::Newer {
                    self.apply_alive(now, name, addr, meta, incarnation);
                }
            }
        }
    }

    /// A suspect or dead claim about us: refuted unless we are leaving (or it is absurd).
    fn claim_about_me(&mut self, now: Instant, incarnation: u32) {
        match order(incarnation, self.self_member().incarnation) {
            Order::Same | Order::Newer if !self.leaving => self.refute(now, incarnation),
            Order::Absurd => self.stats.absurd += 1,
            _ => {}
        }
    }

    /// A `suspect` claim; `told`: it came from the network (the member is told directly, so
    /// it can refute within a round trip).
    fn suspect(&mut self, now: Instant, name: &str, incarnation: u32, by: &str, told: bool) {
        if name == self.me {
            return self.claim_about_me(now, incarnation);
        }
        // Looked at before it is changed: a member map shared with other nodes (the
        // simulator's large clusters) is copied only where something changes.
        let Some(m) = self.members.get(name) else {
            return;
        };
        if stale(&mut self.stats, incarnation, m.incarnation) {
            return;
        }
        if matches!(m.state, State::Dead | State::Left) {
            return;
        }
        match m.state {
            State::Suspect => {
                if let Some(s) = self.suspicions.get_mut(name) {
                    if !s.from.iter().any(|f| f == by) {
                        s.from.push(by.to_owned());
                        self.broadcast(Msg::Suspect {
                            incarnation,
                            node: name.to_owned(),
                            from: by.to_owned(),
                        });
                    }
                }
            }
            State::Alive => {
                let Some(m) = self.members.get_mut(name) else {
                    return;
                };
                m.state = State::Suspect;
                m.incarnation = incarnation;
                m.since = now;
                let to = m.addr;
                let n = self.live_count();
                let interval = self.config.probe_interval.as_secs_f64();
                let scale = (n.max(1) as f64).log10().max(1.0);
                let min = Duration::from_secs_f64(
                    f64::from(self.config.suspicion_mult) * scale * interval,
                );
                let max = min * self.config.suspicion_max_timeout_mult;
                let k = self.config.suspicion_mult.saturating_sub(2);
                let k = if n.saturating_sub(2) < k as usize {
                    0
                } else {
                    k
                };
                self.suspicions.insert(
                    name.to_owned(),
                    Suspicion {
                        started: now,
                        min,
                        max,
                        k,
                        from: vec![by.to_owned()],
                    },
                );
                let msg = Msg::Suspect {
                    incarnation,
                    node: name.to_owned(),
                    from: by.to_owned(),
                };
                if told {
                    self.send_bare(to, vec![msg.clone()]);
                }
                self.broadcast(msg);
                self.event(EventKind::Suspect, name);
            }
            State::Dead | State::Left => {}
        }
    }

    /// A `dead` claim from the network (`from`: the packet's sender, `None` for a push/pull).
    /// It is applied at once when the member says so itself from its known address (a
    /// leave), or when we have suspected it for a probe timeout already (it was told and did
    /// not refute); otherwise it is held while the member is told.
    fn dead(
        &mut self,
        now: Instant,
        name: &str,
        incarnation: u32,
        by: &str,
        from: Option<SocketAddr>,
    ) {
        if name == self.me {
            return self.claim_about_me(now, incarnation);
        }
        let Some(m) = self.members.get(name) else {
            return;
        };
        if matches!(m.state, State::Dead | State::Left) {
            return;
        }
        if stale(&mut self.stats, incarnation, m.incarnation) {
            return;
        }
        let itself = by == name && from.map(wire::canonical) == Some(wire::canonical(m.addr));
        let suspected_since = match m.state {
            State::Suspect => self.suspicions.get(name).map(|s| s.started),
            _ => None,
        };
        let told_long_ago = suspected_since.is_some_and(|t| t + self.config.probe_timeout <= now);
        if itself || told_long_ago {
            return self.apply_dead(now, name, incarnation, by);
        }
        let claim = Claim::Dead {
            incarnation,
            from: by.to_owned(),
        };
        self.hold(now, name, claim, suspected_since.unwrap_or(now));
    }

    /// Marks a live member dead (or left, when `by` is the member itself).
    fn apply_dead(&mut self, now: Instant, name: &str, incarnation: u32, by: &str) {
        if !self
            .members
            .get(name)
            .is_some_and(|m| matches!(m.state, State::Alive | State::Suspect))
        {
            return;
        }
        let Some(m) = self.members.get_mut(name) else {
            return;
        };
        let left = by == name;
        m.state = if left { State::Left } else { State::Dead };
        self.live -= 1;
        m.incarnation = incarnation;
        m.since = now;
        self.suspicions.remove(name);
        self.held.remove(name);
        self.broadcast(Msg::Dead {
            incarnation,
            node: name.to_owned(),
            from: by.to_owned(),
        });
        self.event(
            if left {
                EventKind::Leave
            } else {
                EventKind::Fail
            },
            name,
        );
    }

    /// Applies one node state from a push/pull, as memberlist's mergeState does: a remote
    /// "dead" only makes us suspect, so the node can still refute.
    fn merge(&mut self, now: Instant, from: Option<SocketAddr>, n: RemoteNode) {
        if !self.valid(from, &n.name, &n.meta) {
            return;
        }
        match n.state {
            State::Alive => self.alive(now, &n.name, n.addr, n.meta, n.incarnation, None),
            State::Left => self.dead(now, &n.name, n.incarnation, &n.name, None),
            State::Dead | State::Suspect => {
                if !self.members.contains_key(&n.name) {
                    return;
                }
                let me = self.me.clone();
                self.suspect(now, &n.name, n.incarnation, &me, true);
            }
        }
    }

    fn leave(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        let me = self.self_member().clone();
        if let Some(m) = self.members.get_mut(&self.me) {
            m.state = State::Left;
            m.since = now;
            self.live -= 1;
        }
        let dead = Msg::Dead {
            incarnation: me.incarnation,
            node: me.name.clone(),
            from: me.name,
        };
        self.broadcast(dead.clone());
        // Tell up to 64 members directly as well: gossip alone reaches everyone only with
        // high probability (each node passes news on a few times), and a load balancer that
        // misses a leave keeps sending to a node that is about to stop.
        for to in self.peers(now, 64, false) {
            self.outputs.push_back(Output::Send {
                to,
                msgs: vec![dead.clone()],
            });
        }
        self.gossip(now);
    }

    fn insert_probe_target(&mut self, name: &str) {
        // At a random place, so a new node is probed within one round on average: swapped
        // with the member there, as memberlist does (an insert would move the whole list,
        // and a join storm adds a whole cluster's names one by one).
        let at = self.rng.below(self.probe_order.len() + 1);
        self.probe_order.push_back(name.to_owned());
        let last = self.probe_order.len() - 1;
        self.probe_order.swap(at, last);
    }

    fn tick(&mut self, now: Instant) {
        self.expire_relays(now);
        self.expire_suspicions(now);
        self.expire_candidates(now);
        self.release_held(now);
        self.sync_with_a_stranger(now);
        self.early_sync(now);
        self.probe_tick(now);
        if now >= self.next_gossip {
            self.next_gossip = now + self.config.gossip_interval;
            self.gossip(now);
        }
        if now >= self.next_push_pull {
            self.next_push_pull = now + self.push_pull_period();
            if !self.leaving {
                let peers = self.peers(now, 1, false);
                if let Some(to) = peers.first() {
                    self.outputs.push_back(Output::PushPull {
                        to: *to,
                        join: false,
                    });
                }
            }
        }
    }

    /// The time to the next push/pull: above 32 members it grows as memberlist's
    /// `pushPullScale`, ceil(log2(n) - log2(32)) + 1 (a push/pull carries every member, so an
    /// unscaled one costs each node O(n) bytes per period: 40 KB/s at 10,000 nodes).
    fn push_pull_period(&self) -> Duration {
        self.config
            .push_pull_interval
            .mul_f64(self.push_pull_scale())
    }

    /// How much longer than configured the periods of whole-state exchanges are in a cluster
    /// this size: 1 up to 32 live members, then memberlist's `pushPullScale` (2 at 33–64,
    /// 6 at 1,000, 10 at 10,000). The driver stretches its periodic re-join by it too.
    pub fn push_pull_scale(&self) -> f64 {
        let n = self.live_count();
        if n <= 32 {
            return 1.0;
        }
        ((n as f64).log2() - 5.0).ceil() + 1.0
    }

    /// Relayed probes that got no answer: the requester gets a nack if it asked for one.
    fn expire_relays(&mut self, now: Instant) {
        let expired: Vec<u32> = self
            .relays
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(s, _)| *s)
            .collect();
        for s in expired {
            if let Some(r) = self.relays.remove(&s) {
                if r.nack {
                    self.send(now, r.requester, vec![Msg::Nack { seq_no: r.seq_no }]);
                }
            }
        }
    }

    /// Suspicions that ran out: the member is dead.
    fn expire_suspicions(&mut self, now: Instant) {
        let due: Vec<String> = self
            .suspicions
            .iter()
            .filter(|(_, s)| s.deadline() <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.suspicions.remove(&name);
            let inc = self.members.get(&name).map_or(0, |m| m.incarnation);
            let me = self.me.clone();
            // Our own verdict: the member was told (buddy system) and did not refute.
            self.apply_dead(now, &name, inc, &me);
        }
    }

    /// Candidates whose probe went unanswered: probed again while retries are left, then
    /// forgotten.
    fn expire_candidates(&mut self, now: Instant) {
        if self
            .candidate_deadlines
            .first_key_value()
            .is_none_or(|(&at, _)| at > now)
        {
            return;
        }
        let silent: Vec<String> = self
            .candidates
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in silent {
            if self.reprobe_candidate(now, &name) {
                continue;
            }
            if let Some(c) = self.candidates.remove(&name) {
                self.deadline_dropped(c.deadline);
                self.candidate_seqs.remove(&c.seq_no);
                self.stats.unconfirmed += 1;
                // Its news stops here: nobody answered for it.
                if c.relayed && !self.members.contains_key(&name) {
                    if let Some(key) = self.latest.remove(&name) {
                        self.broadcasts.remove(&key);
                    }
                }
            }
        }
    }

    /// Probes a silent candidate again under a new sequence number, if it has retries left;
    /// returns whether it did.
    fn reprobe_candidate(&mut self, now: Instant, name: &str) -> bool {
        let Some(c) = self.candidates.get_mut(name) else {
            return false;
        };
        if c.retries == 0 {
            return false;
        }
        c.retries -= 1;
        let was = std::mem::replace(
            &mut c.deadline,
            now + self.config.probe_interval.max(self.config.probe_timeout),
        );
        let deadline = c.deadline;
        let old = c.seq_no;
        let (addr, seq_no) = (c.addr, self.rng.next_u64() as u32);
        if let Some(c) = self.candidates.get_mut(name) {
            c.seq_no = seq_no;
        }
        self.candidate_seqs.remove(&old);
        self.candidate_seqs.insert(seq_no, name.to_owned());
        self.deadline_dropped(was);
        self.deadline_added(deadline);
        let me = (self.self_member().addr, self.me.clone());
        self.send_bare(
            addr,
            vec![Msg::Ping {
                seq_no,
                node: name.to_owned(),
                source: Some(me),
            }],
        );
        true
    }

    /// Held claims that nothing refuted in time: applied.
    fn release_held(&mut self, now: Instant) {
        let released: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.until <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in released {
            self.release(now, &name);
        }
    }

    /// The extra push/pulls of the first seconds after joining, when due.
    fn early_sync(&mut self, now: Instant) {
        let (Some(at), left) = self.early_syncs else {
            return;
        };
        if self.leaving {
            // No more of them; nor a deadline left in the past that makes every tick due.
            self.early_syncs = (None, 0);
            return;
        }
        if now >= at && left > 0 {
            let left = left - 1;
            let next = EARLY_SYNC * (1 << (3 - left));
            self.early_syncs = (if left > 0 { Some(now + next) } else { None }, left);
            if let Some(to) = self.peers(now, 1, false).first() {
                self.outputs.push_back(Output::PushPull {
                    to: *to,
                    join: false,
                });
            }
        }
    }

    fn probe_tick(&mut self, now: Instant) {
        if let Some(p) = &self.probe {
            if !p.acked && !p.indirect_sent && now >= p.indirect_at {
                let target = p.target.clone();
                let seq_no = p.seq_no;
                self.indirect(now, &target, seq_no);
            }
        }
        let round_over = self
            .probe
            .as_ref()
            .is_some_and(|p| now >= p.round_end || p.acked);
        if round_over {
            if let Some(p) = self.probe.take() {
                if p.acked {
                    self.awareness = self.awareness.saturating_sub(1);
                } else {
                    // Lifeguard: missing nacks mean *we* may be the slow one.
                    let missed = p.nacks_expected.saturating_sub(p.nacks);
                    let penalty = if p.nacks_expected == 0 {
                        1
                    } else {
                        missed.min(1)
                    };
                    self.awareness = (self.awareness + penalty).min(self.config.awareness_max - 1);
                    // Suspect it, or, when it is suspected already, confirm the suspicion:
                    // independent confirmations are what shorten Lifeguard's timeout.
                    let inc = self.members.get(&p.target).map_or(0, |m| m.incarnation);
                    let me = self.me.clone();
                    self.suspect(now, &p.target, inc, &me, false);
                }
            }
        }
        if self.probe.is_none() && now >= self.next_probe {
            let period = self.config.probe_interval * (self.awareness + 1);
            self.next_probe = now + period;
            // A leaving node stops probing, but its probe clock still moves on (otherwise
            // its deadline stays in the past and every tick is due at once).
            if self.leaving {
                return;
            }
            if let Some(target) = self.next_target() {
                let seq_no = self.seq();
                let m = &self.members[&target];
                let (addr, state, inc) = (m.addr, m.state, m.incarnation);
                let me = (self.self_member().addr, self.me.clone());
                let mut msgs = vec![Msg::Ping {
                    seq_no,
                    node: target.clone(),
                    source: Some(me),
                }];
                if state == State::Suspect {
                    // Lifeguard's buddy system: tell a suspect directly so it can refute.
                    msgs.push(Msg::Suspect {
                        incarnation: inc,
                        node: target.clone(),
                        from: self.me.clone(),
                    });
                }
                self.probe = Some(Probe {
                    seq_no,
                    target,
                    indirect_at: now + self.config.probe_timeout,
                    round_end: now + period,
                    acked: false,
                    indirect_sent: false,
                    nacks_expected: 0,
                    nacks: 0,
                });
                self.send(now, addr, msgs);
            }
        }
    }

    fn next_target(&mut self) -> Option<String> {
        for _ in 0..=self.probe_order.len() {
            if self.probe_index >= self.probe_order.len() {
                self.probe_index = 0;
                // A new round: drop the gone, shuffle (Fisher-Yates).
                let members = &self.members;
                self.probe_order.retain(|n| {
                    members
                        .get(n)
                        .is_some_and(|m| matches!(m.state, State::Alive | State::Suspect))
                });
                for i in (1..self.probe_order.len()).rev() {
                    let j = self.rng.below(i + 1);
                    self.probe_order.swap(i, j);
                }
                if self.probe_order.is_empty() {
                    return None;
                }
            }
            let name = self.probe_order[self.probe_index].clone();
            self.probe_index += 1;
            if self
                .members
                .get(&name)
                .is_some_and(|m| matches!(m.state, State::Alive | State::Suspect))
            {
                return Some(name);
            }
        }
        None
    }

    fn indirect(&mut self, now: Instant, target: &str, seq_no: u32) {
        let Some(t) = self.members.get(target) else {
            return;
        };
        let (taddr, tname) = (t.addr, t.name.clone());
        let helpers = self.draw(self.config.indirect_checks, |m| {
            m.name != target && m.state == State::Alive
        });
        let me = (self.self_member().addr, self.me.clone());
        for h in &helpers {
            self.send(
                now,
                *h,
                vec![Msg::IndirectPing {
                    seq_no,
                    target: taddr,
                    node: tname.clone(),
                    nack: true,
                    source: Some(me.clone()),
                }],
            );
        }
        if let Some(p) = &mut self.probe {
            p.indirect_sent = true;
            p.nacks_expected = helpers.len() as u32;
        }
    }

    /// Up to `n` random peers: alive or suspect, or recently dead when `dead_too`.
    fn peers(&mut self, now: Instant, n: usize, dead_too: bool) -> Vec<SocketAddr> {
        let grace = self.config.gossip_to_the_dead;
        self.draw(n, |m| match m.state {
            State::Alive | State::Suspect => true,
            State::Dead => dead_too && now.saturating_duration_since(m.since) < grace,
            State::Left => false,
        })
    }

    /// The addresses of up to `n` distinct members (not this node) that pass `eligible`, drawn
    /// uniformly at random: by random picks in the roster while they mostly hit (a draw costs
    /// what it returns, not the cluster's size), then, if too many missed, among all that are
    /// left, as a scan would.
    fn draw(&mut self, n: usize, eligible: impl Fn(&Member) -> bool) -> Vec<SocketAddr> {
        let mut chosen: Vec<usize> = Vec::new();
        let mut misses = 0;
        while chosen.len() < n && misses < 4 * n + 16 && !self.roster.is_empty() {
            let i = self.rng.below(self.roster.len());
            let hit =
                !chosen.contains(&i) && self.members.get(&self.roster[i]).is_some_and(&eligible);
            if hit {
                chosen.push(i);
            } else {
                misses += 1;
            }
        }
        if chosen.len() < n && misses >= 4 * n + 16 {
            // Few eligible: take the rest among all of them.
            let mut rest: Vec<usize> = (0..self.roster.len())
                .filter(|i| !chosen.contains(i))
                .filter(|&i| self.members.get(&self.roster[i]).is_some_and(&eligible))
                .collect();
            while chosen.len() < n && !rest.is_empty() {
                let k = self.rng.below(rest.len());
                chosen.push(rest.swap_remove(k));
            }
        }
        chosen
            .into_iter()
            .filter_map(|i| self.members.get(&self.roster[i]).map(|m| m.addr))
            .collect()
    }

    fn gossip(&mut self, now: Instant) {
        if self.broadcasts.is_empty() {
            return;
        }
        for to in self.peers(now, self.config.gossip_nodes, true) {
            self.send(now, to, Vec::new());
        }
    }

    /// Queues a message of the layer above (Serf) for dissemination with the others.
    pub fn broadcast_user(&mut self, body: Vec<u8>) {
        self.broadcast(Msg::User(body));
    }

    /// Turns secure mode's rule on (see [`Config::secure`]).
    pub fn set_secure(&mut self, on: bool) {
        self.config.secure = on;
    }

    /// Tags changed: announce the new meta with a higher incarnation.
    pub fn set_meta(&mut self, meta: Vec<u8>) {
        let me = self.me.clone();
        if let Some(m) = self.members.get_mut(&me) {
            m.meta = meta;
            m.incarnation = m.incarnation.wrapping_add(1);
        }
        let msg = self.alive_msg(&self.members[&me]);
        self.broadcast(msg);
    }

    /// Announces ourselves (after a join's push/pull, or at start).
    pub fn announce(&mut self) {
        let msg = self.alive_msg(self.self_member());
        self.broadcast(msg);
    }
}

#[cfg(test)]
mod tests;
