//! The SWIM core in a simulated network: virtual clock, seeded randomness, packet loss,
//! partitions, crashes and restarts. Every packet a node sends is encoded with the real codec,
//! checked to fit the packet size, and decoded again before delivery, so the simulation also
//! proves the wire mapping of every message the core produces. The seed is printed on failure;
//! the same seed replays the same run.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use muster::gossip::swim::{Config, EventKind, Input, Msg, Output, Rng, State, Swim};
use muster::gossip::wire;

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Timer(usize),
    Deliver(usize, SocketAddr, Vec<u8>),
    Remote(usize, usize, bool),
}

struct Sim {
    seed: u64,
    start: Instant,
    now: Duration,
    config: Config,
    nodes: Vec<Option<Swim>>,
    addrs: Vec<SocketAddr>,
    names: Vec<String>,
    scheduled: Vec<Option<Duration>>,
    by_addr: HashMap<SocketAddr, usize>,
    queue: BinaryHeap<Reverse<(Duration, u64, Ev)>>,
    counter: u64,
    rng: Rng,
    loss: f64,
    /// Nodes on side A of a partition; traffic between A and the rest is dropped.
    partition: Option<HashSet<usize>>,
    latency: Duration,
    /// (time, observer, kind, subject)
    events: Vec<(Duration, usize, EventKind, String)>,
    packets: u64,
    bytes: u64,
}

impl Sim {
    fn new(seed: u64, n: usize, config: Config) -> Sim {
        let start = Instant::now();
        let mut sim = Sim {
            seed,
            start,
            now: Duration::ZERO,
            config,
            nodes: Vec::new(),
            addrs: Vec::new(),
            names: Vec::new(),
            scheduled: Vec::new(),
            by_addr: HashMap::new(),
            queue: BinaryHeap::new(),
            counter: 0,
            rng: Rng::new(seed ^ 0x5eed),
            loss: 0.0,
            partition: None,
            latency: Duration::from_micros(300),
            events: Vec::new(),
            packets: 0,
            bytes: 0,
        };
        for i in 0..n {
            sim.add_node(i, 1);
        }
        sim
    }

    fn addr(i: usize, generation: u32) -> SocketAddr {
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

    fn add_node(&mut self, i: usize, incarnation: u32) {
        let addr = Self::addr(i, incarnation);
        let name = format!("n{i}");
        let swim = Swim::new(
            self.config.clone(),
            &name,
            addr,
            vec![],
            incarnation,
            self.seed.wrapping_mul(1000).wrapping_add(i as u64),
            self.start + self.now,
        );
        self.by_addr.retain(|_, j| *j != i);
        self.by_addr.insert(addr, i);
        if i == self.nodes.len() {
            self.nodes.push(Some(swim));
            self.addrs.push(addr);
            self.names.push(name);
            self.scheduled.push(None);
        } else {
            self.nodes[i] = Some(swim);
            self.addrs[i] = addr;
            self.scheduled[i] = None;
        }
        self.reschedule(i);
    }

    fn push(&mut self, at: Duration, ev: Ev) {
        self.counter += 1;
        self.queue.push(Reverse((at, self.counter, ev)));
    }

    fn reschedule(&mut self, i: usize) {
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

    fn reachable(&self, a: usize, b: usize) -> bool {
        match &self.partition {
            Some(side) => side.contains(&a) == side.contains(&b),
            None => true,
        }
    }

    fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.by_addr.get(&addr).copied()
    }

    fn handle(&mut self, i: usize, input: Input) {
        let now = self.start + self.now;
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        node.handle(now, input);
        let mut outs = Vec::new();
        while let Some(o) = node.poll_output() {
            outs.push(o);
        }
        for o in outs {
            match o {
                Output::Send { to, msgs } => self.send(i, to, msgs),
                Output::PushPull { to, join } => {
                    if let Some(j) = self.index_of(to) {
                        let at = self.now + self.latency * 4;
                        self.push(at, Ev::Remote(i, j, join));
                    }
                }
                Output::Event(e) => {
                    self.events
                        .push((self.now, i, e.kind, e.member.name.clone()));
                }
                Output::Refused { name, why, .. } => {
                    panic!("seed {}: node {i} refused {name:?}: {why}", self.seed)
                }
            }
        }
        self.reschedule(i);
    }

    fn send(&mut self, from: usize, to: SocketAddr, msgs: Vec<Msg>) {
        let parts: Vec<Vec<u8>> = msgs.iter().map(Msg::to_wire).collect();
        let packet = if parts.len() == 1 {
            wire::with_crc(&parts[0])
        } else {
            wire::with_crc(&wire::compound(&parts))
        };
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

    fn run_until(&mut self, end: Duration) {
        while let Some(Reverse((t, _, _))) = self.queue.peek() {
            if *t > end {
                break;
            }
            let Reverse((t, _, ev)) = self.queue.pop().unwrap();
            self.now = t;
            match ev {
                Ev::Timer(i) => {
                    if self.scheduled[i] == Some(t) {
                        self.scheduled[i] = None;
                        self.handle(i, Input::Tick);
                    }
                }
                Ev::Deliver(j, from, packet) => {
                    let msgs: Vec<Msg> = wire::decode_packet(&packet)
                        .unwrap()
                        .iter()
                        .filter_map(|p| Msg::from_part(p).unwrap())
                        .collect();
                    let size = packet.len();
                    self.handle(j, Input::Packet { from, msgs, size });
                }
                Ev::Remote(i, j, _join) => {
                    if self.nodes[j].is_none() || !self.reachable(i, j) {
                        continue;
                    }
                    let theirs = self.nodes[j].as_ref().unwrap().local_state();
                    let Some(node) = self.nodes[i].as_ref() else {
                        continue;
                    };
                    let ours = node.local_state();
                    let (from_i, from_j) = (self.addrs[i], self.addrs[j]);
                    self.handle(
                        j,
                        Input::Remote {
                            from: Some(from_i),
                            nodes: ours,
                        },
                    );
                    self.handle(
                        i,
                        Input::Remote {
                            from: Some(from_j),
                            nodes: theirs,
                        },
                    );
                }
            }
        }
        self.now = end;
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i] = None;
        self.scheduled[i] = None;
    }

    fn join(&mut self, i: usize, seed: usize) {
        let to = self.addrs[seed];
        self.handle(i, Input::Join(vec![to]));
    }

    /// Names that node `i` sees in `state`.
    fn seen(&self, i: usize, state: State) -> HashSet<String> {
        self.nodes[i]
            .as_ref()
            .map(|n| {
                n.members()
                    .filter(|m| m.state == state)
                    .map(|m| m.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    fn all_see_alive(&self, names: &HashSet<String>) -> bool {
        // Counting is enough: names are unique and every alive member is a real node.
        self.live().iter().all(|&i| {
            let node = self.nodes[i].as_ref().unwrap();
            node.members().filter(|m| m.state == State::Alive).count() == names.len()
                && names
                    .iter()
                    .all(|n| node.member(n).is_some_and(|m| m.state == State::Alive))
        })
    }

    fn failures(&self) -> usize {
        self.events
            .iter()
            .filter(|e| e.2 == EventKind::Fail)
            .count()
    }
}

fn everyone(sim: &Sim) -> HashSet<String> {
    sim.live().iter().map(|&i| sim.names[i].clone()).collect()
}

/// Starts `n` nodes that all join node 0, and runs until they agree (or `limit`). Gossip
/// reaches almost everyone in well under a second; the few nodes that miss a rumour (SWIM's
/// retransmit limit leaves about 1/n² per node and rumour) learn it at the next push/pull, so
/// the bound is two push/pull periods.
fn converged(seed: u64, n: usize, config: Config, limit: Duration) -> (Sim, Duration) {
    let mut sim = Sim::new(seed, n, config);
    for i in 1..n {
        sim.join(i, 0);
    }
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
    (sim, took)
}

#[test]
fn nodes_converge_after_joins() {
    for (seed, n) in [(1, 3), (2, 20), (3, 100)] {
        let (sim, took) = converged(seed, n, Config::lan(), Duration::from_secs(70));
        eprintln!(
            "seed {seed}: {n} nodes converged in {took:?}, {} packets, {} bytes",
            sim.packets, sim.bytes
        );
        assert_eq!(sim.failures(), 0, "seed {seed}");
    }
}

#[test]
fn five_percent_loss_for_ten_minutes_gives_no_false_failure() {
    let seed = 11;
    let (mut sim, _) = converged(seed, 12, Config::lan(), Duration::from_secs(70));
    sim.loss = 0.05;
    let end = sim.now + Duration::from_secs(600);
    sim.run_until(end);
    let suspicions = sim
        .events
        .iter()
        .filter(|e| e.2 == EventKind::Suspect)
        .count();
    eprintln!(
        "seed {seed}: 10 min at 5 % loss: {suspicions} suspicions, {} failures",
        sim.failures()
    );
    assert_eq!(
        sim.failures(),
        0,
        "seed {seed}: false failures under 5 % loss"
    );
    assert!(sim.all_see_alive(&everyone(&sim)), "seed {seed}");
}

#[test]
fn crashed_nodes_are_detected_by_every_survivor() {
    for (seed, config, bound) in [
        (21, Config::lan(), Duration::from_secs(30)),
        (22, Config::local(), Duration::from_secs(8)),
    ] {
        let (mut sim, _) = converged(seed, 30, config, Duration::from_secs(70));
        let crashed: Vec<usize> = (20..30).collect();
        let at = sim.now;
        for &i in &crashed {
            sim.crash(i);
        }
        let names: HashSet<String> = crashed.iter().map(|&i| sim.names[i].clone()).collect();
        let step = Duration::from_millis(50);
        while !(0..20).all(|i| {
            let dead = sim.seen(i, State::Dead);
            names.iter().all(|n| dead.contains(n))
        }) {
            if sim.now - at >= bound {
                for i in 0..20 {
                    let m: Vec<String> = names
                        .iter()
                        .filter(|n| !sim.seen(i, State::Dead).contains(*n))
                        .map(|n| {
                            format!(
                                "{n}:{:?}",
                                sim.nodes[i].as_ref().unwrap().member(n).map(|m| m.state)
                            )
                        })
                        .collect();
                    if !m.is_empty() {
                        let node = sim.nodes[i].as_ref().unwrap();
                        let sus: Vec<_> = names
                            .iter()
                            .map(|n| {
                                (
                                    n.clone(),
                                    node.suspicion(n)
                                        .map(|(d, c)| (d.saturating_duration_since(sim.start), c)),
                                )
                            })
                            .collect();
                        eprintln!("survivor {i} at {:?} still has {m:?} {sus:?}", sim.now);
                    }
                }
                panic!("seed {seed}: not every crash detected within {bound:?}");
            }
            let next = sim.now + step;
            sim.run_until(next);
        }
        let mut latencies: Vec<Duration> = sim
            .events
            .iter()
            .filter(|e| e.2 == EventKind::Fail && e.0 >= at)
            .map(|e| e.0 - at)
            .collect();
        latencies.sort();
        eprintln!(
            "seed {seed}: 10 of 30 crashed; all survivors knew after {:?}; first-hand detection p50 {:?}",
            sim.now - at,
            latencies[latencies.len() / 2]
        );
    }
}

#[test]
fn partitions_heal_to_one_view() {
    // Shorter than the suspicion timeout: nobody is declared dead.
    // Longer: each side declares the other dead, and rejoining the seed heals it.
    for (seed, split) in [
        (31u64, Duration::from_secs(2)),
        (32, Duration::from_secs(60)),
    ] {
        let (mut sim, _) = converged(seed, 10, Config::lan(), Duration::from_secs(70));
        sim.partition = Some((0..5).collect());
        let end = sim.now + split;
        sim.run_until(end);
        let failed_during = sim.failures();
        sim.partition = None;
        let healed_at = sim.now;
        let all = everyone(&sim);
        while !sim.all_see_alive(&all) {
            assert!(
                sim.now - healed_at < Duration::from_secs(60),
                "seed {seed}: not healed 60 s after a {split:?} partition"
            );
            // What the driver does: re-join the seed every few seconds.
            if (sim.now - healed_at).as_millis() % 5000 == 0 {
                for i in 1..10 {
                    sim.join(i, 0);
                }
            }
            let next = sim.now + Duration::from_millis(100);
            sim.run_until(next);
        }
        eprintln!(
            "seed {seed}: {split:?} partition, {failed_during} failure verdicts during it, one view {:?} after healing",
            sim.now - healed_at
        );
        if split < Duration::from_secs(3) {
            assert_eq!(
                failed_during, 0,
                "seed {seed}: a short partition declared nodes dead"
            );
        } else {
            assert!(
                failed_during > 0,
                "seed {seed}: a long partition is noticed"
            );
        }
    }
}

#[test]
fn a_restarted_node_comes_back_at_once_even_on_a_new_address() {
    let seed = 41;
    let (mut sim, _) = converged(seed, 10, Config::lan(), Duration::from_secs(70));
    // Same name and a higher incarnation (muster uses its boot time): first on a new address,
    // then back on the first one (incarnation 251 maps to the address of incarnation 1).
    for (incarnation, what) in [(2, "a new address"), (251, "the first address again")] {
        sim.crash(7);
        let end = sim.now + Duration::from_millis(500);
        sim.run_until(end);
        sim.add_node(7, incarnation);
        let back = sim.now;
        sim.join(7, 0);
        let all = everyone(&sim);
        let want = Sim::addr(7, incarnation);
        while !(sim.all_see_alive(&all)
            && sim
                .live()
                .iter()
                .all(|&i| sim.nodes[i].as_ref().unwrap().member("n7").unwrap().addr == want))
        {
            assert!(
                sim.now - back < Duration::from_secs(3),
                "seed {seed}: restart on {what} not accepted within 3 s"
            );
            let next = sim.now + Duration::from_millis(10);
            sim.run_until(next);
        }
        eprintln!(
            "seed {seed}: restarted node on {what} seen everywhere after {:?}",
            sim.now - back
        );
    }
    assert_eq!(Sim::addr(7, 251), Sim::addr(7, 1));
}

#[test]
fn graceful_leave_is_seen_as_left_not_failed() {
    let seed = 51;
    let (mut sim, _) = converged(seed, 10, Config::lan(), Duration::from_secs(70));
    sim.handle(3, Input::Leave);
    let at = sim.now;
    while !(0..10)
        .filter(|&i| i != 3)
        .all(|i| sim.seen(i, State::Left).contains("n3"))
    {
        assert!(
            sim.now - at < Duration::from_secs(2),
            "seed {seed}: leave not seen in 2 s"
        );
        let next = sim.now + Duration::from_millis(10);
        sim.run_until(next);
    }
    eprintln!("seed {seed}: leave seen by all after {:?}", sim.now - at);
    assert_eq!(sim.failures(), 0);
}

#[test]
fn same_seed_same_trace() {
    let trace = |seed| {
        let (mut sim, _) = converged(seed, 15, Config::lan(), Duration::from_secs(70));
        sim.loss = 0.1;
        sim.crash(4);
        let end = sim.now + Duration::from_secs(20);
        sim.run_until(end);
        (sim.events.clone(), sim.packets, sim.bytes)
    };
    assert_eq!(trace(61), trace(61));
    assert_ne!(
        trace(61).1,
        trace(62).1,
        "a different seed gives a different run"
    );
}

#[test]
fn ping_names_must_match() {
    let mut sim = Sim::new(71, 2, Config::lan());
    let now = sim.start;
    let node = sim.nodes[0].as_mut().unwrap();
    node.handle(
        now,
        Input::Packet {
            from: Sim::addr(1, 1),
            msgs: vec![Msg::Ping {
                seq_no: 9,
                node: "someone-else".into(),
                source: None,
            }],
            size: 64,
        },
    );
    while let Some(o) = node.poll_output() {
        assert!(
            !matches!(o, Output::Send { ref msgs, .. } if msgs.iter().any(|m| matches!(m, Msg::Ack { .. })))
        );
    }
}

/// Every node joins one seed at the same instant: memberlist's worst case, since each joiner
/// re-broadcasts every member its push/pull taught it. 200 nodes by default (about 8 s in a
/// debug build); `SIM_N=1000 cargo nextest run --cargo-profile release --test gossip_sim many`
/// runs the 1,000-node case (35 s of simulated time, about 2 min to simulate here).
#[test]
fn many_nodes_converge_after_joins() {
    let seed = std::env::var("SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(81);
    let started = Instant::now();
    let n: usize = std::env::var("SIM_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (sim, took) = converged(seed, n, Config::lan(), Duration::from_secs(120));
    eprintln!(
        "seed {seed}: {n} nodes converged in {took:?} of simulated time ({:?} to simulate), {} packets, {:.0} bytes/node/s",
        started.elapsed(),
        sim.packets,
        sim.bytes as f64 / n as f64 / took.as_secs_f64()
    );
    assert_eq!(sim.failures(), 0, "seed {seed}");
}
