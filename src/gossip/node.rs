//! One gossip node, sans-IO: the SWIM core and Serf's layer composed, fed bytes and time.
//!
//! `handle(now, Input)` takes what arrived (a datagram, a push/pull stream read whole, a join,
//! a leave, the clock); `poll_output()` gives what to do (datagrams to send, push/pull
//! exchanges to open, membership events, "the view changed"); `poll_timeout()` says when the
//! next `Tick` is due. Packet framing (CRC, compound), the codec, the conversion between wire
//! node states and the cores' types, the Serf state of a push/pull, the join retry timer and
//! the time a leave is given to spread all live here, so the driver is a short `select!` loop
//! and the simulator (`tests/gossip_sim.rs`) runs exactly what the driver runs.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::crypto::{self, Keyring, Nonces};
use super::serf::{self, Serf};
use super::swim::{self, Msg, RemoteNode, State, Swim};
use super::wire::{self, NodeState};

/// How long a graceful leave keeps gossiping before it is reported done (unless its deadline
/// comes first).
pub const LEAVE_PROPAGATE: Duration = Duration::from_millis(1000);
/// How often the seeds are tried until the first join succeeds.
const JOIN_RETRY: Duration = Duration::from_secs(1);

/// Who the node is and how it runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Node name (unique in the cluster).
    pub name: String,
    /// Address announced to others.
    pub advertise: SocketAddr,
    /// Serf tags announced in node meta.
    pub tags: BTreeMap<String, String>,
    /// Protocol timings and limits.
    pub profile: swim::Config,
    /// Serf's reconnect and reap timings.
    pub serf: serf::Config,
    /// How often the seeds are joined again once joined (at most once a second).
    pub rejoin_interval: Duration,
    /// Incarnation to start with: it should grow across restarts (the boot time).
    pub incarnation: u32,
    /// Seed of the node's randomness.
    pub seed: u64,
}

/// What happened, as the driver tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<'a> {
    /// A UDP datagram.
    Datagram {
        /// Its sender.
        from: SocketAddr,
        /// Its bytes.
        bytes: &'a [u8],
    },
    /// The other side of a push/pull, read whole (see [`stream_complete`]): an answer to ours,
    /// or a peer's request (answered with [`Node::push_pull_answer`]).
    Stream {
        /// The peer.
        from: SocketAddr,
        /// The stream's bytes.
        bytes: &'a [u8],
    },
    /// Join the cluster through these seeds (resolved by the driver).
    Join(Vec<SocketAddr>),
    /// Leave gracefully: [`Output::Left`] follows once the news had [`LEAVE_PROPAGATE`] to
    /// spread, or at `by` if that comes first (the stop deadline).
    Leave {
        /// When the leave must be reported done at the latest.
        by: Instant,
    },
    /// Time passed.
    Tick,
}

/// What the driver must do, or report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this datagram.
    Transmit {
        /// Destination.
        to: SocketAddr,
        /// The framed packet.
        bytes: Vec<u8>,
    },
    /// Open a stream to `to`, write `bytes`, read the answer whole and feed it back as
    /// [`Input::Stream`].
    PushPull {
        /// The peer.
        to: SocketAddr,
        /// Our side of the exchange.
        bytes: Vec<u8>,
    },
    /// A Serf membership event.
    Event(serf::Event),
    /// What the failure detector saw (for logs and the simulator; Serf's view follows it).
    Detector(swim::Event),
    /// Something in the view changed: publish [`Node::members`].
    ViewChanged,
    /// A peer announced a name or tags that are not allowed.
    Refused {
        /// The sender.
        from: Option<SocketAddr>,
        /// The name, cut and escaped.
        name: String,
        /// Why.
        why: String,
    },
    /// The seeds are due to be resolved and joined (`Input::Join` with the addresses).
    JoinDue,
    /// The graceful leave has had its time (or reached its deadline): the driver may report
    /// it done. Every [`Input::Leave`] gets one.
    Left,
    /// A user event to deliver (handlers, RPC streams).
    UserEvent(serf::user::UserEvent),
    /// A query for this node to answer ([`Node::respond`]).
    Query(serf::user::Query),
    /// An answer to a query this node asked.
    QueryAnswer(serf::user::QueryResponse),
    /// A query this node asked is closed.
    QueryDone {
        /// Its Lamport time.
        ltime: u64,
        /// Its id.
        id: u32,
    },
    /// A push/pull or stream could not be read (the driver logs it at debug level).
    BadStream {
        /// The peer.
        from: SocketAddr,
        /// Why.
        why: String,
    },
}

/// Whether `buf` holds a whole push/pull yet: `Ok(true)` when it does, `Ok(false)` when more
/// bytes are needed, an error when it can never become one (or announces more than
/// `max_members` members).
pub fn stream_complete(buf: &[u8], max_members: usize) -> Result<bool, wire::WireError> {
    match wire::decode_stream_bounded(buf, max_members) {
        Ok(_) => Ok(true),
        Err(e) if wire::incomplete(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// [`stream_complete`] for a node with a keyring (`keyed`): an encrypted stream is whole once
/// its announced length is read (it is opened by [`Node::handle`]); a plaintext one is
/// "whole" at its first byte, since the node refuses it (and counts it) without reading more.
pub fn stream_complete_keyed(buf: &[u8], max_members: usize, keyed: bool) -> Result<bool, String> {
    if !keyed {
        return stream_complete(buf, max_members).map_err(|e| e.to_string());
    }
    match crypto::stream_length(buf) {
        Ok(None) => Ok(false),
        Ok(Some(n)) => Ok(buf.len() >= n),
        Err(crypto::CryptoError::Plaintext) => Ok(true),
        Err(e) => Err(e.to_string()),
    }
}

/// What a keyring-holding node refused: plaintext, wrong-key or damaged traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CryptoRefused {
    /// Datagrams that no installed key opens.
    pub packets: u64,
    /// Streams that are plaintext or that no installed key opens.
    pub streams: u64,
}

/// The keyring and the nonces it seals with.
struct Crypt {
    keyring: Keyring,
    /// In a `Cell` so that [`Node::push_pull_answer`] can seal through `&self`.
    nonces: std::cell::Cell<Nonces>,
}

impl Crypt {
    fn nonce(&self) -> [u8; crypto::NONCE] {
        let mut n = self.nonces.get();
        let out = n.next_nonce();
        self.nonces.set(n);
        out
    }
}

/// A graceful leave under way.
struct Leave {
    /// When it is reported done: [`LEAVE_PROPAGATE`] after it began, or its deadline if
    /// that is earlier.
    until: Instant,
    /// Whether [`Output::Left`] was given (the node keeps answering until it is dropped).
    reported: bool,
}

/// One node: SWIM and Serf, composed.
pub struct Node {
    swim: Swim,
    serf: Serf,
    outputs: VecDeque<Output>,
    /// Whether a push/pull with a seed (or anyone) has succeeded.
    joined: bool,
    /// Whether the node has seeds (the driver's `Join` inputs); the join timer runs if so.
    has_seeds: bool,
    next_join: Instant,
    rejoin_interval: Duration,
    /// The graceful leave, once asked for.
    leave: Option<Leave>,
    /// The most members a push/pull may announce.
    max_members: usize,
    /// Datagrams, and messages in them, that could not be decoded.
    undecodable: u64,
    /// The keyring, when the cluster is encrypted.
    crypt: Option<Crypt>,
    /// What the keyring refused.
    refused: CryptoRefused,
}

impl Node {
    /// A node with these settings, started at `now`. `has_seeds`: whether the driver has
    /// seeds to resolve when [`Output::JoinDue`] comes.
    pub fn new(settings: Settings, has_seeds: bool, now: Instant) -> Node {
        let max_members = settings.profile.max_members;
        let swim = Swim::new(
            settings.profile,
            &settings.name,
            settings.advertise,
            wire::encode_tags(&settings.tags),
            settings.incarnation,
            settings.seed,
            now,
        );
        let serf = Serf::new(
            settings.serf,
            &settings.name,
            settings.advertise,
            settings.tags,
            settings.seed.rotate_left(17),
            now,
        );
        let mut node = Node {
            swim,
            serf,
            outputs: VecDeque::new(),
            joined: false,
            has_seeds,
            next_join: now,
            rejoin_interval: settings.rejoin_interval,
            leave: None,
            max_members,
            undecodable: 0,
            crypt: None,
            refused: CryptoRefused::default(),
        };
        node.outputs.push_back(Output::ViewChanged);
        node
    }

    /// The same node in an encrypted cluster: everything it sends is sealed with the keyring's
    /// primary key, and only what one of its keys opens is read. `nonce_seed` must be random
    /// (the operating system's), so that no nonce is used twice with a key.
    pub fn with_keyring(mut self, keyring: Keyring, nonce_seed: [u8; crypto::NONCE]) -> Node {
        self.crypt = Some(Crypt {
            keyring,
            nonces: std::cell::Cell::new(Nonces::new(nonce_seed)),
        });
        self
    }

    /// Whether the node holds a keyring.
    pub fn keyed(&self) -> bool {
        self.crypt.is_some()
    }

    /// What the keyring refused so far.
    pub fn crypto_refused(&self) -> CryptoRefused {
        self.refused
    }

    /// Serf's view: every member, self included, by name.
    pub fn members(&self) -> impl Iterator<Item = &serf::Member> {
        self.serf.members()
    }

    /// The failure detector underneath (its own view, counters).
    pub fn swim(&self) -> &Swim {
        &self.swim
    }

    /// Serf's layer underneath.
    pub fn serf(&self) -> &Serf {
        &self.serf
    }

    /// How many datagrams, and messages in them, could not be decoded (they are ignored).
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// Whether a push/pull has succeeded.
    pub fn joined(&self) -> bool {
        self.joined
    }

    /// Our side of a push/pull: what a peer that opened a stream to us gets back.
    pub fn push_pull_answer(&self) -> Vec<u8> {
        self.push_pull_bytes(false)
    }

    fn push_pull_bytes(&self, join: bool) -> Vec<u8> {
        let plain = wire::encode_push_pull(
            join,
            &to_wire_state(&self.swim.local_state()),
            &self.serf.local_state(),
        );
        match &self.crypt {
            Some(c) => c.keyring.seal_stream(&c.nonce(), &plain),
            None => plain,
        }
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the next `Tick` is due.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.swim.poll_timeout().min(self.serf.poll_timeout());
        match &self.leave {
            None if self.has_seeds => t = t.min(self.next_join),
            Some(l) if !l.reported => t = t.min(l.until),
            _ => {}
        }
        t
    }

    /// Feeds what happened at `now`.
    pub fn handle(&mut self, now: Instant, input: Input<'_>) {
        match input {
            Input::Datagram { from, bytes } => self.datagram(now, from, bytes),
            Input::Stream { from, bytes } => self.stream(now, from, bytes),
            Input::Join(seeds) => {
                let me = self.swim.member(self.swim.name()).map(|m| m.addr);
                let seeds: Vec<SocketAddr> = seeds.into_iter().filter(|s| Some(*s) != me).collect();
                if !seeds.is_empty() {
                    self.swim.handle(now, swim::Input::Join(seeds));
                }
            }
            Input::Leave { by } => self.leave(now, by),
            Input::Tick => self.tick(now),
        }
        self.pump(now);
    }

    /// Starts the graceful leave, or moves its report earlier when asked again with an
    /// earlier deadline (at once when it was reported already).
    fn leave(&mut self, now: Instant, by: Instant) {
        let until = (now + LEAVE_PROPAGATE).min(by);
        match &mut self.leave {
            None => {
                // Serf 0.9.4 counts a member as left (not failed) only when its leave intent
                // arrives before memberlist's own dead message: queue it first.
                self.serf.leave(now);
                self.pump(now);
                self.swim.handle(now, swim::Input::Leave);
                self.leave = Some(Leave {
                    until,
                    reported: false,
                });
            }
            Some(l) if l.reported => self.outputs.push_back(Output::Left),
            Some(l) => l.until = l.until.min(until),
        }
    }

    fn tick(&mut self, now: Instant) {
        if let Some(l) = &mut self.leave {
            if !l.reported && now >= l.until {
                l.reported = true;
                self.outputs.push_back(Output::Left);
            }
        }
        if self.has_seeds && self.leave.is_none() && now >= self.next_join {
            // Until the first join succeeds, retry fast; then re-join now and then.
            self.next_join = now
                + if self.joined {
                    self.rejoin_interval.max(JOIN_RETRY)
                } else {
                    JOIN_RETRY
                };
            self.outputs.push_back(Output::JoinDue);
        }
        self.swim.handle(now, swim::Input::Tick);
        self.serf.tick(now);
    }

    fn datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let opened;
        let bytes = match &self.crypt {
            None => bytes,
            Some(c) => match c.keyring.open(bytes, b"") {
                Ok(plain) => {
                    opened = plain;
                    &opened[..]
                }
                Err(_) => {
                    self.refused.packets += 1;
                    return;
                }
            },
        };
        let Ok(parts) = wire::decode_packet(bytes) else {
            self.undecodable += 1;
            return;
        };
        let mut msgs = Vec::with_capacity(parts.len());
        for p in &parts {
            match Msg::from_part(p) {
                Ok(Some(m)) => msgs.push(m),
                Ok(None) => {}
                Err(_) => self.undecodable += 1,
            }
        }
        for m in &msgs {
            if let Msg::User(body) = m {
                self.serf.on_user(now, body);
            }
        }
        self.swim.handle(
            now,
            swim::Input::Packet {
                from,
                msgs,
                size: bytes.len(),
            },
        );
    }

    fn stream(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let opened;
        let bytes = match &self.crypt {
            None => bytes,
            Some(c) => match c.keyring.open_stream(bytes) {
                Ok(plain) => {
                    opened = plain;
                    &opened[..]
                }
                Err(e) => {
                    self.refused.streams += 1;
                    self.outputs.push_back(Output::BadStream {
                        from,
                        why: e.to_string(),
                    });
                    return;
                }
            },
        };
        let pp = match wire::decode_stream_bounded(bytes, self.max_members) {
            Ok(pp) => pp,
            Err(e) => {
                self.outputs.push_back(Output::BadStream {
                    from,
                    why: e.to_string(),
                });
                return;
            }
        };
        let nodes: Vec<RemoteNode> = pp.nodes.iter().filter_map(to_remote).collect();
        let first = !self.joined;
        self.joined = true;
        // As memberlist does: the nodes first, then the layer above's state.
        self.swim.handle(
            now,
            swim::Input::Remote {
                from: Some(from),
                nodes,
            },
        );
        if let Err(e) = self.serf.merge_remote_state(now, &pp.user_state) {
            self.outputs.push_back(Output::BadStream {
                from,
                why: format!("serf state: {e}"),
            });
        }
        if first {
            self.serf.announce_join(now);
        }
    }

    /// Carries out what the cores asked, until neither has more (each feeds the other).
    fn pump(&mut self, now: Instant) {
        loop {
            let mut changed = false;
            while let Some(out) = self.serf.poll_output() {
                match out {
                    serf::Output::Event(e) => self.outputs.push_back(Output::Event(e)),
                    serf::Output::Broadcast(body) => self.swim.broadcast_user(body),
                    serf::Output::Reconnect(to) => {
                        self.swim.handle(now, swim::Input::Join(vec![to]));
                    }
                    serf::Output::Forget(name) => {
                        self.swim.forget(&name);
                    }
                    serf::Output::Changed => changed = true,
                    serf::Output::UserEvent(e) => self.outputs.push_back(Output::UserEvent(e)),
                    serf::Output::Query(q) => self.outputs.push_back(Output::Query(q)),
                    serf::Output::QueryAnswer(r) => {
                        self.outputs.push_back(Output::QueryAnswer(r));
                    }
                    serf::Output::QueryDone { ltime, id } => {
                        self.outputs.push_back(Output::QueryDone { ltime, id });
                    }
                    serf::Output::SendTo { to, body } => {
                        let bytes = self.seal(frame(&[Msg::User(body)]));
                        self.outputs.push_back(Output::Transmit { to, bytes });
                    }
                }
            }
            if changed {
                self.outputs.push_back(Output::ViewChanged);
            }
            let Some(out) = self.swim.poll_output() else {
                break;
            };
            match out {
                swim::Output::Send { to, msgs } => {
                    let bytes = self.seal(frame(&msgs));
                    self.outputs.push_back(Output::Transmit { to, bytes });
                }
                swim::Output::PushPull { to, join } => {
                    let bytes = self.push_pull_bytes(join);
                    self.outputs.push_back(Output::PushPull { to, bytes });
                }
                swim::Output::Event(e) => {
                    self.serf.on_swim(now, &e);
                    self.outputs.push_back(Output::Detector(e));
                }
                swim::Output::Refused { from, name, why } => {
                    self.outputs.push_back(Output::Refused { from, name, why });
                }
            }
        }
    }
}

impl Node {
    /// A datagram as it goes out: sealed with the primary key in an encrypted cluster.
    fn seal(&self, bytes: Vec<u8>) -> Vec<u8> {
        match &self.crypt {
            Some(c) => c
                .keyring
                .seal(crypto::SEND_VERSION, &c.nonce(), &bytes, b""),
            None => bytes,
        }
    }

    /// Sends a user event (`serf event`); see [`Serf::user_event`].
    pub fn user_event(
        &mut self,
        now: Instant,
        name: &str,
        payload: &[u8],
        coalesce: bool,
    ) -> Result<(), String> {
        let r = self.serf.user_event(name, payload, coalesce);
        self.pump(now);
        r
    }

    /// Asks a query (`serf query`) with this id; see [`Serf::query`].
    pub fn query(
        &mut self,
        now: Instant,
        ask: serf::Ask,
        id: u32,
    ) -> Result<serf::user::Query, String> {
        let addr = self.swim.member(self.swim.name()).map(|m| m.addr);
        let Some(addr) = addr else {
            return Err("this node has no address yet".into());
        };
        let r = self.serf.query(now, addr, ask, id);
        self.pump(now);
        r
    }

    /// Answers a query delivered by [`Output::Query`].
    pub fn respond(
        &mut self,
        now: Instant,
        q: &serf::user::Query,
        payload: &[u8],
    ) -> Result<(), String> {
        let r = self.serf.respond(q, payload);
        self.pump(now);
        r
    }
}

/// The datagram for `msgs`: CRC, then one message or a compound of them; the bytes of
/// `wire::with_crc(&wire::compound(..))` (or of the one message), written into one buffer.
fn frame(msgs: &[Msg]) -> Vec<u8> {
    const CRC: usize = 5;
    let mut out = Vec::with_capacity(512);
    out.resize(CRC, 0);
    if let [m] = msgs {
        m.write_wire(&mut out);
    } else {
        let msgs = &msgs[..msgs.len().min(255)];
        out.push(wire::kind::COMPOUND);
        out.push(msgs.len() as u8);
        let lens = out.len();
        out.resize(lens + 2 * msgs.len(), 0);
        for (i, m) in msgs.iter().enumerate() {
            let start = out.len();
            m.write_wire(&mut out);
            let Ok(len) = u16::try_from(out.len() - start) else {
                // A part too long for a compound is cut there, as `wire::compound` cuts it.
                let parts: Vec<Vec<u8>> = msgs.iter().map(Msg::to_wire).collect();
                return wire::with_crc(&wire::compound(&parts));
            };
            out[lens + 2 * i..lens + 2 * i + 2].copy_from_slice(&len.to_be_bytes());
        }
    }
    let crc = wire::crc32(&out[CRC..]);
    out[0] = wire::kind::HAS_CRC;
    out[1..CRC].copy_from_slice(&crc.to_be_bytes());
    out
}

/// A push/pull node state as the SWIM core takes it (`None` for an address that is not IPv4
/// or IPv6).
pub fn to_remote(n: &NodeState) -> Option<RemoteNode> {
    let addr = match n.addr.len() {
        4 => SocketAddr::from(([n.addr[0], n.addr[1], n.addr[2], n.addr[3]], n.port)),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&n.addr);
            SocketAddr::from((a, n.port))
        }
        _ => return None,
    };
    let state = match n.state.unwrap_or(0) {
        0 => State::Alive,
        1 => State::Suspect,
        2 => State::Dead,
        _ => State::Left,
    };
    Some(RemoteNode {
        name: n.name.clone(),
        addr,
        meta: n.meta.clone(),
        incarnation: n.incarnation,
        state,
    })
}

fn to_wire_state(nodes: &[RemoteNode]) -> Vec<NodeState> {
    nodes
        .iter()
        .map(|n| NodeState {
            name: n.name.clone(),
            addr: match n.addr {
                SocketAddr::V4(a) => a.ip().octets().to_vec(),
                SocketAddr::V6(a) => a.ip().octets().to_vec(),
            },
            port: n.addr.port(),
            meta: n.meta.clone(),
            incarnation: n.incarnation,
            state: Some(n.state.wire()),
            vsn: swim::VSN.to_vec(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
