//! One gossip node, sans-IO: the SWIM core and Serf's layer composed, fed bytes and time.
//!
//! `handle(now, Input)` takes what arrived (a datagram, a push/pull stream read whole, a join,
//! a leave, the clock); `poll_output()` gives what to do (datagrams to send, push/pull
//! exchanges to open, membership events, "the view changed"); `poll_timeout()` says when the
//! next `Tick` is due. Packet framing (CRC, compound), the codec, the conversion between wire
//! node states and the cores' types, the Serf state of a push/pull, the join retry timer and
//! the time a leave is given to spread all live here, so the driver is a short `select!` loop
//! and the simulator (`tests/gossip_sim.rs`) runs exactly what the driver runs.
//!
//! With a keyring it seals and opens everything (`crypto`); in secure mode (`with_secure`)
//! it also writes and checks `secure`'s envelope: destination, time window, replay cache,
//! answers taken once; the driver's stream tasks seal answers through an [`Answerer`].

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::crypto::{self, Keyring, Nonces};
use super::secure::{self, Kind, Outstanding, Replay};
use super::serf::{self, Serf};
use super::swim::{self, Msg, RemoteNode, State, Swim};
use super::validate;
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
    /// How often the seeds are joined again once joined (at most once a second; above 32
    /// members stretched as push/pulls are, `Swim::push_pull_scale`).
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
    /// Another node announces our name at another address: the driver asks the cluster
    /// (`_serf_conflict`) which one holds it.
    NameConflict {
        /// The other node's address.
        other: SocketAddr,
    },
    /// A key query changed the keyring (`serf keys`): this is the keyring from now on.
    KeyringChanged(Keyring),
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

/// What a keyring-holding node refused: plaintext, wrong-key or damaged traffic, and in
/// secure mode stale and replayed traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CryptoRefused {
    /// Datagrams that no installed key opens (in secure mode: for this node's addresses).
    pub packets: u64,
    /// Streams that are plaintext or that no installed key opens.
    pub streams: u64,
    /// Traffic sealed with our key by a peer whose `secure` setting differs from ours.
    pub mode_mismatch: u64,
    /// Secure mode: traffic outside the time window.
    pub stale: u64,
    /// Secure mode: traffic already seen (a `(sender, seq)` again), answers to no request
    /// of ours, or senders beyond the replay cache's bound.
    pub replayed: u64,
}

/// Secure mode's state: the clock, our sequence numbers, what we saw.
struct SecureState {
    /// The wall clock (milliseconds since the UNIX epoch) at `base`.
    wall_ms: u64,
    base: Instant,
    /// The addresses that are ours: what a datagram or request must have been sent to.
    own: Vec<SocketAddr>,
    /// Our next sequence number.
    next_seq: u64,
    replay: Replay,
    outstanding: Outstanding,
}

impl SecureState {
    fn now_ms(&self, now: Instant) -> u64 {
        self.wall_ms
            .saturating_add(now.saturating_duration_since(self.base).as_millis() as u64)
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }
}

/// What seals a push/pull answer in secure mode, bound to the request it answers. The
/// driver's stream tasks hold it (it has nonces of its own, from another random seed).
pub struct Answerer {
    keyring: Keyring,
    me: String,
    own: Vec<SocketAddr>,
    max_members: usize,
    nonces: std::sync::Mutex<Nonces>,
}

impl Answerer {
    /// `plain` (our side, unsealed) sealed as the answer to `request`, when `request` is a
    /// secure push/pull request sent to one of our addresses that a key opens; `now_ms` is
    /// the wall clock. `None`: the peer gets no answer.
    pub fn answer(&self, request: &[u8], plain: &[u8], now_ms: u64) -> Option<Vec<u8>> {
        let opened = self.own.iter().find_map(|d| {
            self.keyring
                .open_stream_with(request, &secure::aad_to(Kind::Request, *d))
                .ok()
        })?;
        let env = secure::unwrap(&opened).ok()?;
        // A stale request gets nothing (one replayed within the window gets an answer bound
        // to it, which its requester no longer takes; the node refuses the request itself).
        if env.kind != Kind::Request
            || !secure::in_window(now_ms, env.time_ms)
            || stream_complete(env.body, self.max_members) != Ok(true)
        {
            return None;
        }
        let nonce = {
            let mut n = self.nonces.lock().ok()?;
            n.next_nonce()
        };
        let msg = secure::wrap(Kind::Answer, &self.me, now_ms, env.seq, plain);
        Some(
            self.keyring
                .seal_stream_with(&nonce, &msg, &secure::aad_answer(env.sender)),
        )
    }
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

/// A cluster that converged long ago, as each of its members sees it: both layers' views,
/// shared by the nodes started from it ([`Node::adopt`]; see [`swim::View`]).
#[derive(Debug, Clone)]
pub struct View {
    swim: swim::View,
    serf: serf::View,
}

impl View {
    /// Every node alive: (name, address, incarnation, tags) each, seen since `now`; `seed`
    /// shuffles the probe order.
    pub fn new(
        nodes: impl IntoIterator<Item = (String, SocketAddr, u32, BTreeMap<String, String>)>,
        now: Instant,
        seed: u64,
    ) -> View {
        let (mut gossip, mut serfs) = (Vec::new(), Vec::new());
        for (name, addr, incarnation, tags) in nodes {
            gossip.push(swim::Member {
                name: name.clone(),
                addr,
                meta: wire::encode_tags(&tags),
                incarnation,
                state: State::Alive,
                since: now,
            });
            serfs.push(serf::Member {
                name,
                addr,
                tags: std::sync::Arc::new(tags),
                status: serf::Status::Alive,
                suspect: false,
                // Every member's join intent, at the clock's first tick.
                status_ltime: 1,
                since: now,
            });
        }
        View {
            swim: swim::View::new(gossip, seed),
            serf: serf::View::new(serfs, 1),
        }
    }
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
    /// Join attempts so far (each after the first tries the next key until one works).
    join_attempts: u32,
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
    /// Secure mode, when on.
    secure: Option<SecureState>,
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
            join_attempts: 0,
            rejoin_interval: settings.rejoin_interval,
            leave: None,
            max_members,
            undecodable: 0,
            crypt: None,
            refused: CryptoRefused::default(),
            secure: None,
        };
        node.outputs.push_back(Output::ViewChanged);
        node
    }

    /// The time between two periodic re-joins. A re-join is a push/pull too: it grows with
    /// the cluster as they do (a seed of 10,000 nodes would otherwise answer 333 full-state
    /// exchanges a second).
    fn rejoin_period(&self) -> Duration {
        self.rejoin_interval
            .max(JOIN_RETRY)
            .mul_f64(self.swim.push_pull_scale())
    }

    /// Takes `view` as this node's own at `now`, joined long ago (it must list this node).
    /// `phase` (0 to 1) places its next periodic re-join within the period, as nodes started
    /// at different times have theirs.
    pub fn adopt(&mut self, view: &View, now: Instant, phase: f64) {
        self.swim.adopt(&view.swim, now);
        self.serf.adopt(&view.serf);
        self.joined = true;
        self.join_attempts = 1;
        self.next_join = now + self.rejoin_period().mul_f64(phase.clamp(0.0, 1.0));
        self.outputs.push_back(Output::ViewChanged);
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

    /// The same keyed node in secure mode (see `gossip::secure`): `wall_ms` is the wall
    /// clock at `now` (milliseconds since the UNIX epoch; the nodes' clocks must agree within
    /// `secure::WINDOW`), `own` the addresses peers may send to (the advertised one first).
    /// Without a keyring it stays as it is (the configuration requires a key).
    pub fn with_secure(mut self, wall_ms: u64, now: Instant, own: Vec<SocketAddr>) -> Node {
        self.enable_secure(wall_ms, now, own);
        self
    }

    /// [`Node::with_secure`] in place.
    pub fn enable_secure(&mut self, wall_ms: u64, now: Instant, own: Vec<SocketAddr>) {
        if self.crypt.is_none() {
            return;
        }
        self.swim.set_secure(true);
        self.secure = Some(SecureState {
            wall_ms,
            base: now,
            own,
            // From the boot time in microseconds: a restarted node counts on above its
            // predecessor.
            next_seq: wall_ms.saturating_mul(1000),
            replay: Replay::new(self.max_members),
            outstanding: Outstanding::default(),
        });
    }

    /// Whether the node is in secure mode.
    pub fn secure(&self) -> bool {
        self.secure.is_some()
    }

    /// What seals push/pull answers in secure mode, with nonces from `nonce_seed` (random,
    /// and not the node's own seed).
    pub fn answerer(&self, nonce_seed: [u8; crypto::NONCE]) -> Option<Answerer> {
        let (c, s) = (self.crypt.as_ref()?, self.secure.as_ref()?);
        Some(Answerer {
            keyring: c.keyring.clone(),
            me: self.swim.name().to_owned(),
            own: s.own.clone(),
            max_members: self.max_members,
            nonces: std::sync::Mutex::new(Nonces::new(nonce_seed)),
        })
    }

    /// Our side of a push/pull, unsealed (what an [`Answerer`] seals).
    pub fn push_pull_plain(&self) -> Vec<u8> {
        wire::encode_push_pull(
            false,
            &to_wire_state(self.swim.local_state()),
            &self.serf.local_state(),
        )
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

    /// The keyring in use (`None`: plaintext); `serf keys` and a learnt primary change it.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.crypt.as_ref().map(|c| &c.keyring)
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
            &to_wire_state(self.swim.local_state()),
            &self.serf.local_state(),
        );
        match &self.crypt {
            Some(c) => c.keyring.seal_stream(&c.nonce(), &plain),
            None => plain,
        }
    }

    /// A framed datagram to `to`, sealed when the cluster is encrypted (in secure mode with
    /// its envelope, bound to `to`).
    fn seal_datagram(&mut self, now: Instant, to: SocketAddr, framed: Vec<u8>) -> Vec<u8> {
        let Some(c) = &self.crypt else {
            return framed;
        };
        let (msg, aad) = match &mut self.secure {
            None => (framed, Vec::new()),
            Some(s) => {
                let (now_ms, seq) = (s.now_ms(now), s.seq());
                let msg = secure::wrap(Kind::Datagram, self.swim.name(), now_ms, seq, &framed);
                (msg, secure::aad_to(Kind::Datagram, to))
            }
        };
        c.keyring.seal(crypto::SEND_VERSION, &c.nonce(), &msg, &aad)
    }

    /// Our push/pull request to `to` in secure mode, remembered until its answer comes.
    fn secure_request(&mut self, now: Instant, to: SocketAddr, join: bool) -> Vec<u8> {
        let plain = wire::encode_push_pull(
            join,
            &to_wire_state(self.swim.local_state()),
            &self.serf.local_state(),
        );
        let (Some(c), Some(s)) = (&self.crypt, &mut self.secure) else {
            return plain;
        };
        let (now_ms, seq) = (s.now_ms(now), s.seq());
        // The driver gives an exchange 10 s; a little more here for a late answer.
        s.outstanding
            .sent(seq, to, now + std::time::Duration::from_secs(15));
        let msg = secure::wrap(Kind::Request, self.swim.name(), now_ms, seq, &plain);
        c.keyring
            .seal_stream_with(&c.nonce(), &msg, &secure::aad_to(Kind::Request, to))
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
                    self.rejoin_period()
                } else {
                    JOIN_RETRY
                };
            if !self.joined && self.join_attempts > 0 {
                self.try_next_key();
            }
            self.join_attempts += 1;
            self.outputs.push_back(Output::JoinDue);
        }
        self.swim.handle(now, swim::Input::Tick);
        self.serf.tick(now);
    }

    /// A datagram's plaintext (and in secure mode its sender), or `None` when it is refused
    /// (counted).
    fn open_datagram(&mut self, now: Instant, bytes: &[u8]) -> Option<(Vec<u8>, Option<String>)> {
        let c = self.crypt.as_ref()?;
        let Some(s) = &mut self.secure else {
            if let Ok((which, plain)) = c.keyring.open_which(bytes, b"") {
                self.adopt_key(which);
                return Some((plain, None));
            }
            let me = self.swim.member(self.swim.name()).map(|m| m.addr);
            if me.is_some_and(|d| {
                c.keyring
                    .open(bytes, &secure::aad_to(Kind::Datagram, d))
                    .is_ok()
            }) {
                self.refused.mode_mismatch += 1;
            } else {
                self.refused.packets += 1;
            }
            return None;
        };
        let Some(plain) = s.own.iter().find_map(|d| {
            c.keyring
                .open(bytes, &secure::aad_to(Kind::Datagram, *d))
                .ok()
        }) else {
            if c.keyring.open(bytes, b"").is_ok() {
                self.refused.mode_mismatch += 1;
            } else {
                self.refused.packets += 1;
            }
            return None;
        };
        let now_ms = s.now_ms(now);
        let checked = secure::unwrap(&plain).and_then(|e| {
            if e.kind != Kind::Datagram {
                return Err(secure::Refused::Kind);
            }
            s.replay.check(now_ms, e.sender, e.time_ms, e.seq)?;
            Ok((e.body.to_vec(), e.sender.to_owned()))
        });
        match checked {
            Ok((body, sender)) => Some((body, Some(sender))),
            Err(e) => {
                self.count_secure(e);
                None
            }
        }
    }

    fn count_secure(&mut self, e: secure::Refused) {
        match e {
            secure::Refused::Stale => self.refused.stale += 1,
            secure::Refused::Malformed | secure::Refused::Kind => self.refused.packets += 1,
            secure::Refused::Replayed | secure::Refused::Full | secure::Refused::Unsolicited => {
                self.refused.replayed += 1;
            }
        }
    }

    fn datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let opened;
        let mut sender = None;
        let bytes = if self.crypt.is_none() {
            bytes
        } else {
            let Some((plain, who)) = self.open_datagram(now, bytes) else {
                return;
            };
            opened = plain;
            sender = who;
            &opened[..]
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
                sender,
            },
        );
    }

    /// A secure stream's body and sender: our request's answer, or a peer's request.
    fn open_secure_stream(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(Vec<u8>, String), String> {
        let (Some(c), Some(s)) = (self.crypt.as_ref(), self.secure.as_mut()) else {
            return Err("not in secure mode".to_owned());
        };
        let answer = secure::aad_answer(self.swim.name());
        let plain = match c.keyring.open_stream_with(bytes, &answer) {
            Ok(p) => p,
            Err(_) => s
                .own
                .iter()
                .find_map(|d| {
                    let aad = secure::aad_to(Kind::Request, *d);
                    c.keyring.open_stream_with(bytes, &aad).ok()
                })
                .ok_or_else(|| {
                    if c.keyring.open_stream(bytes).is_ok() {
                        self.refused.mode_mismatch += 1;
                    } else {
                        self.refused.streams += 1;
                    }
                    "no installed key opens it for this node in secure mode".to_owned()
                })?,
        };
        let now_ms = s.now_ms(now);
        let checked = secure::unwrap(&plain).and_then(|e| {
            if !secure::in_window(now_ms, e.time_ms) {
                return Err(secure::Refused::Stale);
            }
            match e.kind {
                Kind::Answer => s.outstanding.answered(now, e.seq, from)?,
                Kind::Request => s.replay.check(now_ms, e.sender, e.time_ms, e.seq)?,
                Kind::Datagram => return Err(secure::Refused::Kind),
            }
            Ok((e.body.to_vec(), e.sender.to_owned()))
        });
        checked.map_err(|e| {
            self.count_secure(e);
            format!("secure stream refused: {e}")
        })
    }

    fn stream(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let opened;
        let mut sender = None;
        let bytes = match &self.crypt {
            None => bytes,
            Some(_) if self.secure.is_some() => match self.open_secure_stream(now, from, bytes) {
                Ok((plain, who)) => {
                    opened = plain;
                    sender = Some(who);
                    &opened[..]
                }
                Err(why) => {
                    self.outputs.push_back(Output::BadStream { from, why });
                    return;
                }
            },
            Some(c) => match c.keyring.open_stream_which(bytes, b"") {
                Ok((which, plain)) => {
                    opened = plain;
                    self.adopt_key(which);
                    &opened[..]
                }
                Err(e) => {
                    if self.swim.member(self.swim.name()).is_some_and(|m| {
                        let aad = secure::aad_to(Kind::Request, m.addr);
                        c.keyring.open_stream_with(bytes, &aad).is_ok()
                    }) {
                        self.refused.mode_mismatch += 1;
                    } else {
                        self.refused.streams += 1;
                    }
                    self.outputs.push_back(Output::BadStream {
                        from,
                        why: e.to_string(),
                    });
                    return;
                }
            },
        };
        let mut pp = match wire::decode_stream_bounded(bytes, self.max_members) {
            Ok(pp) => pp,
            Err(e) => {
                self.outputs.push_back(Output::BadStream {
                    from,
                    why: e.to_string(),
                });
                return;
            }
        };
        let nodes: Vec<RemoteNode> = std::mem::take(&mut pp.nodes)
            .into_iter()
            .filter_map(into_remote)
            .collect();
        let first = !self.joined;
        self.joined = true;
        // As memberlist does: the nodes first, then the layer above's state.
        self.swim.handle(
            now,
            swim::Input::Remote {
                from: Some(from),
                nodes,
                sender,
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
                    serf::Output::InternalQuery(q) => self.internal_query(&q),
                    serf::Output::QueryAnswer(r) => {
                        self.outputs.push_back(Output::QueryAnswer(r));
                    }
                    serf::Output::QueryDone { ltime, id } => {
                        self.outputs.push_back(Output::QueryDone { ltime, id });
                    }
                    serf::Output::SendTo { to, body } => {
                        let bytes = self.seal_datagram(now, to, frame(&[Msg::User(body)]));
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
                    let bytes = self.seal_datagram(now, to, frame(&msgs));
                    self.outputs.push_back(Output::Transmit { to, bytes });
                }
                swim::Output::PushPull { to, join } => {
                    let bytes = match self.secure.is_some() {
                        true => self.secure_request(now, to, join),
                        false => self.push_pull_bytes(join),
                    };
                    self.outputs.push_back(Output::PushPull { to, bytes });
                }
                swim::Output::Event(e) => {
                    self.serf.on_swim(now, &e);
                    self.outputs.push_back(Output::Detector(e));
                }
                swim::Output::NameConflict { other } => {
                    self.outputs.push_back(Output::NameConflict { other });
                }
                swim::Output::Refused { from, name, why } => {
                    self.outputs.push_back(Output::Refused { from, name, why });
                }
            }
        }
    }
}

impl Node {
    /// A peer's traffic opened with our key `which`, not the primary: the cluster has moved on
    /// to that key (a `serf keys -use` this node missed, or never heard because it was down),
    /// so it becomes our primary too, and this node is heard again.
    fn adopt_key(&mut self, which: usize) {
        let Some(c) = &mut self.crypt else { return };
        if which == 0 {
            return;
        }
        let Some(key) = c.keyring.keys().nth(which).map(<[u8]>::to_vec) else {
            return;
        };
        if c.keyring.use_key(&key).is_ok() {
            self.outputs
                .push_back(Output::KeyringChanged(c.keyring.clone()));
        }
    }

    /// A join asked by command reached no one: before any join has worked, the next one
    /// seals with the next key (the cluster may have moved to a key this node holds).
    pub fn join_failed(&mut self) {
        if !self.joined {
            self.try_next_key();
        }
    }

    /// No join has worked yet: with several keys, the next attempt seals with the next one
    /// (the cluster may have moved to a key this node holds but does not use: serf#579).
    fn try_next_key(&mut self) {
        if let Some(c) = &mut self.crypt {
            if c.keyring.len() > 1 {
                c.keyring.rotate();
                self.outputs
                    .push_back(Output::KeyringChanged(c.keyring.clone()));
            }
        }
    }

    /// Answers one of Serf's internal queries (a key query changes our keyring).
    fn internal_query(&mut self, q: &serf::user::Query) {
        if q.name == "_serf_conflict" {
            // Who we believe holds a name (Serf's name-conflict resolution); not about us.
            let name = String::from_utf8_lossy(&q.payload).into_owned();
            if name != self.swim.name() {
                let payload = internal::conflict_answer(self.serf.member(&name));
                let _ = self.serf.respond(q, &payload);
            }
            return;
        }
        let ring = self.crypt.as_mut().map(|c| &mut c.keyring);
        let (answer, changed) = internal::answer(q, ring);
        if let Some(payload) = answer {
            let _ = self.serf.respond(q, &payload);
        }
        if changed {
            if let Some(c) = &self.crypt {
                self.outputs
                    .push_back(Output::KeyringChanged(c.keyring.clone()));
            }
        }
    }

    /// `serf force-leave`; see [`Serf::force_leave`].
    pub fn force_leave(&mut self, now: Instant, node: &str, prune: bool) -> Result<(), String> {
        let r = self.serf.force_leave(now, node, prune);
        self.pump(now);
        r
    }

    /// `serf tags`: sets and deletes this node's tags, announced with a new incarnation. Tags
    /// muster's peers would refuse are refused here too.
    pub fn set_tags(
        &mut self,
        now: Instant,
        set: &BTreeMap<String, String>,
        delete: &[String],
    ) -> Result<BTreeMap<String, String>, String> {
        let mut tags = self
            .serf
            .member(self.swim.name())
            .map(|m| (*m.tags).clone())
            .unwrap_or_default();
        for k in delete {
            tags.remove(k);
        }
        tags.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
        validate::tags(&tags).map_err(|e| e.to_string())?;
        let meta = wire::encode_tags(&tags);
        if meta.len() > validate::MAX_META {
            return Err(format!(
                "the tags take {} bytes, more than {}",
                meta.len(),
                validate::MAX_META
            ));
        }
        self.swim.set_meta(meta);
        self.serf.set_own_tags(tags.clone());
        self.pump(now);
        Ok(tags)
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
    into_remote(n.clone())
}

/// `to_remote`, taking the node state (its name and meta move, not copied).
fn into_remote(n: NodeState) -> Option<RemoteNode> {
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
        name: n.name,
        addr,
        meta: n.meta,
        incarnation: n.incarnation,
        state,
    })
}

fn to_wire_state(nodes: Vec<RemoteNode>) -> Vec<NodeState> {
    nodes
        .into_iter()
        .map(|n| NodeState {
            addr: match n.addr {
                SocketAddr::V4(a) => a.ip().octets().to_vec(),
                SocketAddr::V6(a) => a.ip().octets().to_vec(),
            },
            port: n.addr.port(),
            name: n.name,
            meta: n.meta,
            incarnation: n.incarnation,
            state: Some(n.state.wire()),
            vsn: swim::VSN.to_vec(),
        })
        .collect()
}

pub mod internal;

#[cfg(test)]
mod tests;
