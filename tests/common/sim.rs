//! The seeded gossip simulator shared by `tests/gossip_sim.rs` (its tests) and
//! `tests/gossip_scale.rs` (the scale benchmark): gossip nodes (`gossip::node::Node`: SWIM,
//! Serf's layer, framing and codec, as the driver runs them) in a simulated network: virtual
//! clock, seeded randomness, packet loss, partitions, crashes and restarts. Every datagram a
//! node sends is checked to fit the packet size and is decoded by its receiver, which must read
//! every message in it. Push/pulls travel as the byte streams the driver would write; a node
//! that asks to join is answered with its seed's current address, as DNS would.

#![allow(dead_code, clippy::unwrap_used, clippy::disallowed_methods)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use muster::gossip::crypto::{self, Keyring};
use muster::gossip::node::{Input, Node, Output, Settings, View};
use muster::gossip::serf::{self, Status};
use muster::gossip::swim::{Config, EventKind, Rng, State};

/// The simulated wall clock at the start (secure mode's timestamps), in ms since the epoch.
pub const WALL0: u64 = 1_800_000_000_000;

/// How often a joined node joins its seed again (the configuration's default).
pub const REJOIN: Duration = Duration::from_secs(30);

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ev {
    Timer(usize),
    /// A datagram for node `.0` from address `.1`.
    Deliver(usize, SocketAddr, Vec<u8>),
    /// A push/pull reaches the node it was opened to.
    Open {
        from: usize,
        generation: u32,
        to: usize,
        bytes: Vec<u8>,
    },
    /// The answer of a push/pull reaches the node that opened it (if it still runs: the
    /// connection dies with the process).
    Answer {
        to: usize,
        generation: u32,
        from: usize,
        bytes: Vec<u8>,
    },
}

/// A Serf event as a node saw it: (time, observer, kind, subject, its status then).
pub type SerfEvent = (Duration, usize, serf::EventKind, String, Status);

pub struct Sim {
    pub seed: u64,
    pub start: Instant,
    pub now: Duration,
    pub config: Config,
    pub nodes: Vec<Option<Node>>,
    pub addrs: Vec<SocketAddr>,
    pub names: Vec<String>,
    /// The incarnation each node was (re)started with: a stream answer only reaches the
    /// process that opened it.
    pub generations: Vec<u32>,
    /// The node each node joins through (node 0 has none).
    pub seeds: Vec<Option<usize>>,
    pub scheduled: Vec<Option<Duration>>,
    pub by_addr: HashMap<SocketAddr, usize>,
    pub queue: BinaryHeap<Reverse<(Duration, u64, Ev)>>,
    pub counter: u64,
    pub rng: Rng,
    pub loss: f64,
    /// Nodes on side A of a partition; traffic between A and the rest is dropped.
    pub partition: Option<HashSet<usize>>,
    pub latency: Duration,
    /// What the failure detectors saw: (time, observer, kind, subject).
    pub events: Vec<(Duration, usize, EventKind, String)>,
    /// What Serf's layers reported.
    pub serf_events: Vec<SerfEvent>,
    /// User events delivered: (time, node, event name, Lamport time).
    pub user_events: Vec<(Duration, usize, String, u64)>,
    /// Queries delivered, and answers the askers took: (time, node, query name).
    pub queries: Vec<(Duration, usize, String)>,
    pub answers: Vec<(Duration, usize, String)>,
    /// When each graceful leave was reported done: (time, node).
    pub left: Vec<(Duration, usize)>,
    pub packets: u64,
    pub bytes: u64,
    pub push_pulls: u64,
    /// Bytes of push/pull streams, both ways.
    pub stream_bytes: u64,
    /// The live node the last view check stopped at: checks start there, so a check before
    /// convergence costs one node's view, not the cluster's.
    pub frontier: std::cell::Cell<usize>,
    /// Keeps no Serf events and no failure detector joins or updates (the scale benchmark:
    /// a join of N nodes reports N² of them); the verdicts are kept.
    pub lean: bool,
}

impl Sim {
    /// `n` nodes; every node but node 0 joins through node 0.
    pub fn new(seed: u64, n: usize, config: Config) -> Sim {
        Sim::build(seed, n, config, false)
    }

    /// `n` nodes as `new` makes them, keeping only the verdicts (see `lean`).
    pub fn lean(seed: u64, n: usize, config: Config) -> Sim {
        Sim::build(seed, n, config, true)
    }

    /// `n` nodes that joined long ago (`lean`): each starts from one shared converged view
    /// (`node::View`, its memory shared until a node changes a member) instead of N² joining
    /// messages. Each re-joins its seed, and pushes/pulls, at a random time within the period,
    /// as nodes that started at different times would.
    pub fn settled(seed: u64, n: usize, config: Config) -> Sim {
        let mut sim = Sim::build(seed, 0, config, true);
        let now = sim.start;
        let view = View::new(
            (0..n).map(|i| (format!("n{i}"), Self::addr(i, 1), 1, BTreeMap::new())),
            now,
            seed ^ 0x0bde,
        );
        for i in 0..n {
            sim.add_node(i, 1);
            let phase = sim.rng.next_u64() as f64 / u64::MAX as f64;
            if let Some(node) = sim.nodes[i].as_mut() {
                node.adopt(&view, now, phase);
            }
            sim.handle(i, None);
        }
        sim
    }

    fn build(seed: u64, n: usize, config: Config, lean: bool) -> Sim {
        let start = Instant::now();
        let mut sim = Sim {
            seed,
            start,
            now: Duration::ZERO,
            config,
            nodes: Vec::new(),
            addrs: Vec::new(),
            names: Vec::new(),
            generations: Vec::new(),
            seeds: Vec::new(),
            scheduled: Vec::new(),
            by_addr: HashMap::new(),
            queue: BinaryHeap::new(),
            counter: 0,
            rng: Rng::new(seed ^ 0x5eed),
            loss: 0.0,
            partition: None,
            latency: Duration::from_micros(300),
            events: Vec::new(),
            serf_events: Vec::new(),
            user_events: Vec::new(),
            queries: Vec::new(),
            answers: Vec::new(),
            left: Vec::new(),
            packets: 0,
            bytes: 0,
            push_pulls: 0,
            stream_bytes: 0,
            frontier: std::cell::Cell::new(0),
            lean,
        };
        for i in 0..n {
            sim.add_node(i, 1);
        }
        sim
    }

    pub fn addr(i: usize, generation: u32) -> SocketAddr {
        // A restarted node may come back on a new address (generation).
        SocketAddr::from((
            [
                10,
                (generation % 250) as u8,
                (i / 250) as u8,
                (i % 250) as u8,
            ],
            7946,
        ))
    }

    /// Starts node `i` (again) with this incarnation; it joins its seed at its first tick.
    pub fn add_node(&mut self, i: usize, incarnation: u32) {
        let addr = Self::addr(i, incarnation);
        let name = format!("n{i}");
        let seed = (i > 0).then_some(0);
        let mut profile = self.config.clone();
        if profile.secure {
            // As the driver leaves room for the encryption and the envelope.
            profile.packet_size -= crypto::OVERHEAD + 19 + name.len();
        }
        let settings = Settings {
            name: name.clone(),
            advertise: addr,
            tags: BTreeMap::new(),
            profile,
            serf: serf::Config::default(),
            rejoin_interval: REJOIN,
            incarnation,
            seed: self.seed.wrapping_mul(1000).wrapping_add(i as u64),
        };
        let now = self.start + self.now;
        let mut node = Node::new(settings, seed.is_some(), now);
        if self.config.secure {
            // Secure mode (every node in it): one key, nonces of the node's own.
            let ring = Keyring::new(&[[7u8; 32]]).unwrap();
            let nonce = [
                (i % 251) as u8,
                (incarnation % 251) as u8,
                1,
                2,
                3,
                4,
                5,
                6,
                7,
                8,
                9,
                0,
            ];
            node = node
                .with_keyring(ring, nonce)
                .with_secure(self.wall_ms(), now, vec![addr]);
        }
        self.by_addr.retain(|_, j| *j != i);
        self.by_addr.insert(addr, i);
        if i == self.nodes.len() {
            self.nodes.push(Some(node));
            self.addrs.push(addr);
            self.names.push(name);
            self.generations.push(incarnation);
            self.seeds.push(seed);
            self.scheduled.push(None);
        } else {
            self.nodes[i] = Some(node);
            self.addrs[i] = addr;
            self.generations[i] = incarnation;
            self.scheduled[i] = None;
        }
        self.handle(i, None);
    }

    pub fn wall_ms(&self) -> u64 {
        WALL0 + self.now.as_millis() as u64
    }

    /// Node `to`'s answer to the push/pull `request`, as the driver takes it when it accepts:
    /// in secure mode sealed for that request (none if it is not one).
    pub fn answer(&self, to: usize, request: &[u8]) -> Option<Vec<u8>> {
        let node = self.nodes[to].as_ref()?;
        if !node.secure() {
            return Some(node.push_pull_answer());
        }
        let seed = [
            to as u8,
            0xa5,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            self.counter as u8,
        ];
        node.answerer(seed)?
            .answer(request, &node.push_pull_plain(), self.wall_ms())
    }

    pub fn push(&mut self, at: Duration, ev: Ev) {
        self.counter += 1;
        self.queue.push(Reverse((at, self.counter, ev)));
    }

    pub fn reschedule(&mut self, i: usize) {
        let Some(node) = &self.nodes[i] else { return };
        // A deadline already past (a confirmation shortened a suspicion) is due now.
        let t = node
            .poll_timeout()
            .saturating_duration_since(self.start)
            .max(self.now);
        if self.scheduled[i] != Some(t) {
            self.scheduled[i] = Some(t);
            self.push(t, Ev::Timer(i));
        }
    }

    pub fn reachable(&self, a: usize, b: usize) -> bool {
        match &self.partition {
            Some(side) => side.contains(&a) == side.contains(&b),
            None => true,
        }
    }

    pub fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.by_addr.get(&addr).copied()
    }

    /// Feeds `input` (if any) to node `i`, then carries out everything it asks for.
    pub fn handle(&mut self, i: usize, input: Option<Input>) {
        let now = self.start + self.now;
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        if let Some(input) = input {
            node.handle(now, input);
        }
        while let Some(o) = self.nodes[i].as_mut().and_then(Node::poll_output) {
            self.carry_out(i, o);
        }
        self.reschedule(i);
    }

    pub fn carry_out(&mut self, i: usize, o: Output) {
        match o {
            Output::Transmit { to, bytes } => self.send(i, to, bytes),
            Output::PushPull { to, bytes } => {
                self.push_pulls += 1;
                self.stream_bytes += bytes.len() as u64;
                if let Some(j) = self.index_of(to) {
                    // Connect and write: two one-way trips; the answer takes two more.
                    let at = self.now + self.latency * 2;
                    let generation = self.generations[i];
                    self.push(
                        at,
                        Ev::Open {
                            from: i,
                            generation,
                            to: j,
                            bytes,
                        },
                    );
                }
            }
            Output::Event(_) if self.lean => {}
            Output::Detector(e)
                if self.lean && matches!(e.kind, EventKind::Join | EventKind::Update) => {}
            Output::Event(e) => {
                self.serf_events.push((
                    self.now,
                    i,
                    e.kind,
                    e.member.name.clone(),
                    e.member.status,
                ));
            }
            Output::Detector(e) => {
                self.events
                    .push((self.now, i, e.kind, e.member.name.clone()));
            }
            Output::ViewChanged
            | Output::QueryDone { .. }
            | Output::KeyringChanged(_)
            | Output::NameConflict { .. } => {}
            Output::UserEvent(e) => self.user_events.push((self.now, i, e.name, e.ltime)),
            Output::Query(q) => self.queries.push((self.now, i, q.name)),
            Output::QueryAnswer(r) => self.answers.push((self.now, i, r.from)),
            Output::Refused { name, why, .. } => {
                panic!("seed {}: node {i} refused {name:?}: {why}", self.seed)
            }
            Output::JoinDue => {
                // As the driver resolves its seeds: the seed's address now.
                let seeds: Vec<SocketAddr> =
                    self.seeds[i].map(|s| self.addrs[s]).into_iter().collect();
                let now = self.start + self.now;
                if let Some(node) = self.nodes[i].as_mut() {
                    node.handle(now, Input::Join(seeds));
                }
            }
            Output::Left => self.left.push((self.now, i)),
            Output::BadStream { from, why } => {
                panic!(
                    "seed {}: node {i} cannot read the push/pull of {from}: {why}",
                    self.seed
                )
            }
        }
    }

    pub fn send(&mut self, from: usize, to: SocketAddr, packet: Vec<u8>) {
        assert!(
            packet.len() <= self.config.packet_size,
            "seed {}: packet of {} bytes",
            self.seed,
            packet.len()
        );
        self.packets += 1;
        self.bytes += packet.len() as u64;
        let Some(j) = self.index_of(to) else { return };

        if !self.reachable(from, j) || (self.rng.next_u64() as f64 / u64::MAX as f64) < self.loss {
            return;
        }
        let at = self.now + self.latency;
        let src = self.addrs[from];
        self.push(at, Ev::Deliver(j, src, packet));
    }

    pub fn run_until(&mut self, end: Duration) {
        while let Some(Reverse((t, _, _))) = self.queue.peek() {
            if *t > end {
                break;
            }
            let Reverse((t, _, ev)) = self.queue.pop().unwrap();
            self.now = t;
            self.event(ev);
        }
        self.now = end;
    }

    pub fn event(&mut self, ev: Ev) {
        match ev {
            Ev::Timer(i) => {
                if self.scheduled[i] == Some(self.now) {
                    self.scheduled[i] = None;
                    self.handle(i, Some(Input::Tick));
                }
            }
            Ev::Deliver(j, from, packet) => {
                self.handle(
                    j,
                    Some(Input::Datagram {
                        from,
                        bytes: &packet,
                    }),
                );
                if let Some(node) = &self.nodes[j] {
                    assert_eq!(
                        node.undecodable(),
                        0,
                        "seed {}: node {j} could not decode a datagram",
                        self.seed
                    );
                }
            }
            Ev::Open {
                from,
                generation,
                to,
                bytes,
            } => {
                // The stream is lost only to a partition or a node that is not running (TCP
                // resends what packet loss drops).
                if !self.reachable(from, to) {
                    return;
                }
                // The driver takes its answer when it accepts, before reading the request.
                if self.nodes[to].is_none() {
                    return;
                }
                let answer = self.answer(to, &bytes);
                let peer = self.addrs[from];
                self.handle(
                    to,
                    Some(Input::Stream {
                        from: peer,
                        bytes: &bytes,
                    }),
                );
                let Some(answer) = answer else {
                    panic!("seed {}: node {to} does not answer node {from}", self.seed);
                };
                let at = self.now + self.latency * 2;
                self.stream_bytes += answer.len() as u64;
                self.push(
                    at,
                    Ev::Answer {
                        to: from,
                        generation,
                        from: to,
                        bytes: answer,
                    },
                );
            }
            Ev::Answer {
                to,
                generation,
                from,
                bytes,
            } => {
                if self.generations[to] != generation || !self.reachable(from, to) {
                    return;
                }
                let peer = self.addrs[from];
                self.handle(
                    to,
                    Some(Input::Stream {
                        from: peer,
                        bytes: &bytes,
                    }),
                );
            }
        }
    }

    pub fn crash(&mut self, i: usize) {
        self.nodes[i] = None;
        self.scheduled[i] = None;
    }

    /// Node `i` joins its seed now (as its join timer does now and then).
    pub fn join(&mut self, i: usize) {
        let seeds = self.seeds[i].map(|s| self.addrs[s]).into_iter().collect();
        self.handle(i, Some(Input::Join(seeds)));
    }

    /// Node `i` leaves gracefully, to be done by `by` from now at the latest.
    pub fn leave(&mut self, i: usize, by: Duration) {
        let by = self.start + self.now + by;
        self.handle(i, Some(Input::Leave { by }));
    }

    /// Names that node `i`'s failure detector sees in `state`.
    pub fn seen(&self, i: usize, state: State) -> HashSet<String> {
        self.nodes[i]
            .as_ref()
            .map(|n| {
                n.swim()
                    .members()
                    .filter(|m| m.state == state)
                    .map(|m| m.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The Serf status and status time of `name` in node `i`'s view.
    pub fn serf_status(&self, i: usize, name: &str) -> Option<(Status, u64)> {
        self.nodes[i]
            .as_ref()?
            .serf()
            .member(name)
            .map(|m| (m.status, m.status_ltime))
    }

    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    /// Whether node `i` lists exactly `names` alive (every other live node, and itself).
    pub fn sees_all(&self, i: usize, names: &HashSet<String>) -> bool {
        // Counting first: names are unique and every alive member is a real node.
        self.nodes[i].as_ref().is_some_and(|node| {
            let node = node.swim();
            node.members().filter(|m| m.state == State::Alive).count() == names.len()
                && names
                    .iter()
                    .all(|n| node.member(n).is_some_and(|m| m.state == State::Alive))
        })
    }

    /// Whether every live node lists exactly `names` alive. Starts at the node the last check
    /// stopped at (cheap while a view is incomplete), and says yes only after checking all.
    pub fn all_see_alive(&self, names: &HashSet<String>) -> bool {
        let live = self.live();
        let start = live
            .iter()
            .position(|&i| i >= self.frontier.get())
            .unwrap_or(0);
        for k in 0..live.len() {
            let i = live[(start + k) % live.len()];
            if !self.sees_all(i, names) {
                self.frontier.set(i);
                return false;
            }
        }
        true
    }

    /// The fraction of live nodes whose view lists exactly `names` alive.
    pub fn complete_fraction(&self, names: &HashSet<String>) -> f64 {
        let live = self.live();
        let complete = live.iter().filter(|&&i| self.sees_all(i, names)).count();
        complete as f64 / live.len().max(1) as f64
    }

    /// Whether every live node's Serf view has exactly `names` alive.
    pub fn serf_all_alive(&self, names: &HashSet<String>) -> bool {
        self.live().iter().all(|&i| {
            let serf = self.nodes[i].as_ref().unwrap().serf();
            serf.members().filter(|m| m.status == Status::Alive).count() == names.len()
                && names
                    .iter()
                    .all(|n| serf.member(n).is_some_and(|m| m.status == Status::Alive))
        })
    }

    pub fn failures(&self) -> usize {
        self.events
            .iter()
            .filter(|e| e.2 == EventKind::Fail)
            .count()
    }

    /// Serf events of `kind` about `name`, by observer.
    pub fn serf_seen(&self, kind: serf::EventKind, name: &str) -> HashSet<usize> {
        self.serf_events
            .iter()
            .filter(|e| e.2 == kind && e.3 == name)
            .map(|e| e.1)
            .collect()
    }
}

/// Starts a new node (the next index) that joins node 0, and runs until every live node lists
/// every other alive, in steps of 100 ms; the simulated time that took. Panics after `limit`.
pub fn newcomer_converges(sim: &mut Sim, limit: Duration) -> Duration {
    let n = sim.nodes.len();
    sim.add_node(n, 1);
    let all = everyone(sim);
    let joined = sim.now;
    while !sim.all_see_alive(&all) {
        assert!(
            sim.now - joined < limit,
            "seed {}: {n} nodes at {} % loss: the newcomer not in every view after {limit:?}",
            sim.seed,
            sim.loss * 100.0
        );
        let next = sim.now + Duration::from_millis(100);
        sim.run_until(next);
    }
    sim.now - joined
}

pub fn everyone(sim: &Sim) -> HashSet<String> {
    sim.live().iter().map(|&i| sim.names[i].clone()).collect()
}

/// Starts `n` nodes that all join node 0, and runs until they agree (or `limit`). Gossip
/// reaches almost everyone in well under a second; the few nodes that miss a rumour (SWIM's
/// retransmit limit leaves about 1/n² per node and rumour) learn it at the next push/pull, so
/// the bound is two push/pull periods. Serf's views agree then too.
pub fn converged(seed: u64, n: usize, config: Config, limit: Duration) -> (Sim, Duration) {
    let mut sim = Sim::new(seed, n, config);
    let all = everyone(&sim);
    let step = Duration::from_millis(100);
    while !sim.all_see_alive(&all) {
        assert!(
            sim.now < limit,
            "seed {seed}: {n} nodes not converged after {limit:?}"
        );
        let next = sim.now + step;
        sim.run_until(next);
    }
    let took = sim.now;
    assert!(
        sim.serf_all_alive(&all),
        "seed {seed}: the failure detectors agree, Serf's views do not"
    );
    (sim, took)
}
