//! Random traffic into a SWIM core and the Serf layer above it, as the driver feeds them:
//! datagrams from a few senders, push/pulls, acks for the probes it sent, time passing. Must
//! never panic, and must keep what issue 16 promises: every member but itself has a valid
//! name and tags, members and candidates stay under `max_members`, and what one datagram makes
//! it send toward any one address that is not a member is never more than the datagram
//! carried.
//!
//! The input is a list of steps `[op][len u16 LE][bytes]`: op 0 a datagram, 1 a push/pull
//! stream, 2 acks for the pings it sent, 3 time passing (`bytes[0]` × 5 ms).
#![no_main]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use muster::gossip::serf::{self, Serf};
use muster::gossip::swim::{self, Input, Msg, Output, RemoteNode, Swim};
use muster::gossip::{validate, wire};

const MAX_MEMBERS: usize = 32;

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 2 + i % 6], 7946))
}

fn remote(n: &wire::NodeState) -> Option<RemoteNode> {
    muster::gossip::node::to_remote(n)
}

/// Bytes of one `Send` on the wire, framed as the driver frames it.
fn wire_len(msgs: &[Msg]) -> usize {
    let body: usize = msgs.iter().map(|m| m.to_wire().len()).sum();
    if msgs.len() == 1 {
        5 + body
    } else {
        5 + 2 + 2 * msgs.len() + body
    }
}

struct Node {
    swim: Swim,
    serf: Serf,
    now: Instant,
    /// Pings it sent: (to, seq).
    pings: Vec<(SocketAddr, u32)>,
}

impl Node {
    fn member_addrs(&self) -> BTreeSet<SocketAddr> {
        self.swim.members().map(|m| m.addr).collect()
    }

    /// Carries out what the cores asked; returns the sends.
    fn drain(&mut self) -> Vec<(SocketAddr, Vec<Msg>)> {
        let mut sends = Vec::new();
        for _ in 0..100_000 {
            while let Some(out) = self.serf.poll_output() {
                match out {
                    serf::Output::Broadcast(body) => self.swim.broadcast_user(body),
                    serf::Output::Reconnect(to) => {
                        self.swim.handle(self.now, Input::Join(vec![to]))
                    }
                    serf::Output::Forget(name) => {
                        self.swim.forget(&name);
                    }
                    serf::Output::Event(_) | serf::Output::Changed => {}
                    // User events, queries and their answers: checked by the node targets.
                    _ => {}
                }
            }
            let Some(out) = self.swim.poll_output() else {
                return sends;
            };
            match out {
                Output::Send { to, msgs } => {
                    for m in &msgs {
                        if let Msg::Ping { seq_no, .. } = m {
                            self.pings.push((to, *seq_no));
                        }
                    }
                    sends.push((to, msgs));
                }
                Output::Event(e) => self.serf.on_swim(self.now, &e),
                Output::PushPull { .. } | Output::Refused { .. } | Output::NameConflict { .. } => {}
            }
        }
        panic!("the cores never stop asking");
    }

    fn check(&self) {
        let members = self.swim.members().count();
        assert!(
            members + self.swim.candidates() <= MAX_MEMBERS,
            "{members} members and {} candidates",
            self.swim.candidates()
        );
        for m in self.swim.members().filter(|m| m.name != "me") {
            validate::name(&m.name).expect("a member with an invalid name");
            validate::meta(&m.meta).expect("a member with invalid tags");
        }
        for m in self.serf.members().filter(|m| m.name != "me") {
            validate::name(&m.name).expect("a Serf member with an invalid name");
            validate::tags(&m.tags).expect("a Serf member with invalid tags");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let me = SocketAddr::from(([10, 0, 0, 1], 7946));
    let config = swim::Config {
        max_members: MAX_MEMBERS,
        new_members_per_second: 8,
        ..swim::Config::local()
    };
    let mut node = Node {
        swim: Swim::new(config, "me", me, Vec::new(), 100, 7, start),
        serf: Serf::new(
            serf::Config::default(),
            "me",
            me,
            Default::default(),
            7,
            start,
        ),
        now: start,
        pings: Vec::new(),
    };
    node.drain();
    let mut rest = data;
    while rest.len() >= 3 {
        let op = rest[0];
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let bytes = &rest[3..3 + len];
        rest = &rest[3 + len..];
        let from = addr(op >> 2);
        match op & 3 {
            0 => {
                let Ok(parts) = wire::decode_packet(bytes) else {
                    continue;
                };
                let msgs: Vec<Msg> = parts
                    .iter()
                    .filter_map(|p| Msg::from_part(p).ok().flatten())
                    .collect();
                for m in &msgs {
                    if let Msg::User(body) = m {
                        node.serf.on_user(node.now, body);
                    }
                }
                let before = node.member_addrs();
                node.swim.handle(
                    node.now,
                    Input::Packet {
                        from,
                        msgs,
                        size: bytes.len(),
                        sender: None,
                    },
                );
                let sends = node.drain();
                let after = node.member_addrs();
                // Per address that is not a member (before or after): at most what the
                // datagram carried.
                let mut toward: std::collections::BTreeMap<SocketAddr, usize> = Default::default();
                for (to, msgs) in &sends {
                    if !before.contains(to) && !after.contains(to) {
                        *toward.entry(*to).or_default() += wire_len(msgs);
                    }
                }
                for (to, sent) in &toward {
                    assert!(
                        *sent <= bytes.len(),
                        "a {}-byte datagram made it send {sent} bytes to the stranger {to}: \
                         {sends:?}",
                        bytes.len()
                    );
                }
            }
            1 => {
                let Ok(pp) = wire::decode_stream(bytes) else {
                    continue;
                };
                let nodes = pp.nodes.iter().filter_map(remote).collect();
                node.swim.handle(
                    node.now,
                    Input::Remote {
                        from: Some(from),
                        nodes,
                        sender: None,
                    },
                );
                let _ = node.serf.merge_remote_state(node.now, &pp.user_state);
                node.drain();
            }
            2 => {
                // Acks, from the addresses pinged, for up to `len` of the pings sent.
                let acks: Vec<(SocketAddr, u32)> = node.pings.drain(..).take(len.max(1)).collect();
                for (to, seq_no) in acks {
                    let msgs = vec![Msg::Ack {
                        seq_no,
                        payload: Vec::new(),
                    }];
                    node.swim.handle(
                        node.now,
                        Input::Packet {
                            from: to,
                            msgs,
                            size: 64,
                            sender: None,
                        },
                    );
                }
                node.drain();
            }
            _ => {
                let step = bytes.first().copied().unwrap_or(1);
                node.now += Duration::from_millis(5 * u64::from(step));
                node.swim.handle(node.now, Input::Tick);
                node.serf.tick(node.now);
                node.drain();
            }
        }
        node.check();
    }
});
