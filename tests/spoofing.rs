//! Spoofed membership in plaintext against a load-balancer muster driving Debian's real
//! haproxy (issue 13, "What must be shown"), with `[haproxy] trusted_networks` set to the
//! backends' network (127.0.0.1/32 here) and the attacker elsewhere (127.0.0.2, as a host on
//! another network). Every forgery is sent as any process that can reach the gossip port
//! could, without a key: a new name, a real member at a new address (last incarnation), a
//! real member declared dead, suspect and left (last incarnation, last Lamport time). The
//! assertions: no HAProxy server is added, moved or removed, no request fails, and the
//! attacker's app gets nothing. What each attack still does to the member list is printed.
//!
//! The same forgeries against a keyed cluster (`[gossip] encrypt_file` on the load balancer
//! and every backend), with the attacker *inside* the trusted networks (127.0.0.0/8, where a
//! plaintext forgery of a new name would become a server), so that only the key keeps it
//! out: each forgery is sent once in plaintext and once sealed with memberlist's AES-GCM
//! framing under another key. Nothing reaches the member list, no server changes, no request
//! fails, and the refusal is logged once (at most once a minute, with the counts).

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use common::forge::{
    Attacker, HttpCounter, Udp, alive, backend_tags, dead, node_state, packet, push_pull_stream,
    serf_leave, stream_answer, suspect,
};
use common::http::Load;
use common::lb::{LONG, Lb, Server, observe, start_backends, start_backends_with};
use muster::gossip::crypto::{Keyring, Nonces, SEND_VERSION};

const WINDOW: Duration = Duration::from_secs(6);
const EVERY: Duration = Duration::from_millis(100);
/// Where the attacker is: outside the trusted network.
const ELSEWHERE: [u8; 4] = [127, 0, 0, 2];

fn lb(dir: &std::path::Path) -> Lb {
    Lb::start_with(dir, "trusted_networks = [\"127.0.0.1/32\"]")
}

fn load(lb: &Lb) -> Load {
    Load::start(
        lb.http,
        2,
        Duration::from_millis(5),
        Duration::from_secs(60),
        10_000_000,
    )
}

/// Watches the servers for `WINDOW`: every change from `before` is returned.
fn changes(lb: &Lb, before: &BTreeMap<String, Server>, mut each: impl FnMut()) -> Vec<String> {
    let started = Instant::now();
    let mut seen = Vec::new();
    observe(WINDOW, EVERY, || {
        each();
        let now = lb.servers();
        for (name, s) in &now {
            match before.get(name) {
                None if s.in_service() || s.draining() => {
                    seen.push(format!("{:?} added {name} {s:?}", started.elapsed()));
                }
                Some(b) if b.addr != s.addr || b.port != s.port => {
                    seen.push(format!("{:?} moved {name} {s:?}", started.elapsed()));
                }
                Some(b) if b.in_service() && !s.in_service() => {
                    seen.push(format!("{:?} took out {name} {s:?}", started.elapsed()));
                }
                _ => {}
            }
        }
    });
    seen
}

#[test]
fn a_forged_new_member_outside_the_trusted_networks_gets_no_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let lb = lb(dir.path());
    let _backends = start_backends(dir.path(), &lb, &["web-a", "web-b"]);
    let before = lb.servers();
    // The forged member answers the LB's probes and serves HTTP: only its address is wrong.
    let responder = Udp::responder_at(ELSEWHERE);
    let app = HttpCounter::start_at(ELSEWHERE);
    let load = load(&lb);
    let mut atk = Attacker::new();
    let forged = packet(&[alive("evil", responder.addr, backend_tags(app.port), 1)]);
    let mut last = Instant::now() - Duration::from_secs(1);
    let seen = changes(&lb, &before, || {
        if last.elapsed() > Duration::from_millis(500) {
            atk.send(lb.gossip_addr(), &forged);
            last = Instant::now();
        }
    });
    let stats = load.finish();
    let members = lb.members();
    let in_members = common::lb::member_row(&members, "evil");
    let logged = lb.run.count("outside the trusted networks");
    eprintln!(
        "new name: server changes {seen:?}; `evil` in muster members: {in_members:?}; \
         attacker's app got {} requests; refusal logged {logged}x; load ok {} failed {}",
        app.requests(),
        stats.ok,
        stats.failed
    );
    assert!(seen.is_empty(), "{seen:?}");
    assert!(!lb.servers().contains_key("evil"));
    assert_eq!(app.requests(), 0, "the attacker's app got requests");
    assert_eq!(stats.failed, 0, "{:?}", stats.errors);
    // Logged once, not once per render.
    if in_members.is_some() {
        assert_eq!(logged, 1, "{}", lb.run.text());
    }
}

#[test]
fn forged_alive_dead_suspect_and_leave_for_real_members_change_no_server() {
    let dir = tempfile::tempdir().unwrap();
    let lb = lb(dir.path());
    let _backends = start_backends(dir.path(), &lb, &["web-a", "web-b", "web-c", "web-d"]);
    let before = lb.servers();
    let responder = Udp::responder_at(ELSEWHERE);
    let app = HttpCounter::start_at(ELSEWHERE);
    let load = load(&lb);
    let mut atk = Attacker::new();
    let at: SocketAddr = responder.addr;
    let forged = [
        // web-a moved to the attacker, at the last incarnation.
        packet(&[alive("web-a", at, backend_tags(app.port), u32::MAX)]),
        // web-b declared dead by a third party, at the last incarnation.
        packet(&[dead("web-b", "web-x", u32::MAX)]),
        // web-c suspected, at the last incarnation.
        packet(&[suspect("web-c", "web-x", u32::MAX)]),
        // web-d leaves (Serf intent at the last Lamport time).
        packet(&[serf_leave("web-d", u64::MAX)]),
    ];
    let mut last = Instant::now() - Duration::from_secs(1);
    let seen = changes(&lb, &before, || {
        if last.elapsed() > Duration::from_millis(500) {
            for f in &forged {
                atk.send(lb.gossip_addr(), f);
            }
            last = Instant::now();
        }
    });
    let stats = load.finish();
    let members = lb.members();
    eprintln!(
        "real members: server changes {seen:?}; attacker's app {} requests; reloads {}; \
         load ok {} failed {}\n{members}",
        app.requests(),
        lb.reloads(),
        stats.ok,
        stats.failed
    );
    assert!(seen.is_empty(), "{seen:?}");
    for name in ["web-a", "web-b", "web-c", "web-d"] {
        assert!(lb.servers()[name].in_service(), "{name}");
    }
    assert_eq!(app.requests(), 0);
    assert_eq!(stats.failed, 0, "{:?}", stats.errors);
    assert_eq!(lb.reloads(), 0);
}

/// A load balancer of a keyed cluster that trusts all of loopback, the attacker's address
/// included: it, the `[gossip]` line of the cluster's key (in a 0600 file in `dir`), and the
/// key in base64.
fn keyed_lb(dir: &std::path::Path) -> (Lb, String, String) {
    let key = common::random_key();
    let file = common::key_file(dir, "gossip.key", &key);
    let line = format!("encrypt_file = \"{}\"", file.display());
    let lb = Lb::start_full(
        dir,
        common::free_port(),
        &line,
        "trusted_networks = [\"127.0.0.0/8\"]",
    );
    (lb, line, key)
}

/// How the attacker sends its forgeries to a keyed cluster.
#[derive(Debug, Clone, Copy)]
enum Forger {
    /// As is, unencrypted.
    Plaintext,
    /// Sealed as memberlist seals a datagram (version 1, no additional data), with a key that
    /// is not the cluster's.
    WrongKey,
}

/// Seals datagrams and streams with a random key of the attacker's.
struct Sealer {
    ring: Keyring,
    nonces: Nonces,
}

impl Sealer {
    fn new() -> Sealer {
        Sealer::with_key(&common::random_key())
    }

    /// Sealing with this base64 key.
    fn with_key(key: &str) -> Sealer {
        let key = base64::engine::general_purpose::STANDARD
            .decode(key)
            .unwrap();
        let mut seed = [0u8; 12];
        seed.copy_from_slice(&key[..12]);
        Sealer {
            ring: Keyring::new(&[key]).unwrap(),
            nonces: Nonces::new(seed),
        }
    }

    /// A push/pull stream's bytes: as is, or sealed as memberlist seals a stream.
    fn stream(&mut self, how: Forger, plain: &[u8]) -> Vec<u8> {
        match how {
            Forger::Plaintext => plain.to_vec(),
            Forger::WrongKey => self.ring.seal_stream(&self.nonces.next_nonce(), plain),
        }
    }

    fn datagram(&mut self, how: Forger, plain: &[u8]) -> Vec<u8> {
        match how {
            Forger::Plaintext => plain.to_vec(),
            Forger::WrongKey => self
                .ring
                .seal(SEND_VERSION, &self.nonces.next_nonce(), plain, b""),
        }
    }
}

/// Sends every forgery of `forged` every 500 ms for [`WINDOW`], the way `how` says: the server
/// changes seen and how many datagrams were sent.
fn send_for_a_window(
    lb: &Lb,
    before: &BTreeMap<String, Server>,
    how: Forger,
    forged: &[Vec<u8>],
) -> (Vec<String>, u64) {
    let mut atk = Attacker::new();
    let mut sealer = Sealer::new();
    let mut sent = 0u64;
    let mut last = Instant::now() - Duration::from_secs(1);
    let seen = changes(lb, before, || {
        if last.elapsed() > Duration::from_millis(500) {
            for f in forged {
                atk.send(lb.gossip_addr(), &sealer.datagram(how, f));
                sent += 1;
            }
            last = Instant::now();
        }
    });
    (seen, sent)
}

const REFUSED: &str = "gossip traffic refused";

#[test]
fn keyed_a_forged_new_member_in_plaintext_or_with_a_wrong_key_is_never_a_member() {
    let dir = tempfile::tempdir().unwrap();
    let (lb, key, cluster_key) = keyed_lb(dir.path());
    let _backends = start_backends_with(dir.path(), &lb, &["web-a", "web-b"], &key);
    let before = lb.servers();
    assert_eq!(lb.run.count(REFUSED), 0, "{}", lb.run.text());
    // Inside the trusted networks: without the key, this would be a server.
    let responder = Udp::responder();
    let app = HttpCounter::start();
    let load = load(&lb);
    let forged = [packet(&[alive(
        "evil",
        responder.addr,
        backend_tags(app.port),
        1,
    )])];
    // The same member in a push/pull, which a peer with the key would answer with the view.
    let pushed = push_pull_stream(&[node_state(
        "evil",
        responder.addr,
        backend_tags(app.port),
        1,
    )]);
    for how in [Forger::Plaintext, Forger::WrongKey] {
        let stream = Sealer::new().stream(how, &pushed);
        let answer = stream_answer(lb.gossip_addr(), &stream, Duration::from_secs(3));
        assert!(answer.is_empty(), "{how:?}: the LB answered a push/pull");
        let (seen, sent) = send_for_a_window(&lb, &before, how, &forged);
        let members = lb.members();
        eprintln!(
            "keyed, new name, {how:?}: a push/pull of {} bytes answered with {} bytes, then {sent} \
             datagrams; server changes {seen:?}; `evil` in muster members: {:?}; attacker's \
             app got {} requests; refusals logged {}x",
            stream.len(),
            answer.len(),
            common::lb::member_row(&members, "evil"),
            app.requests(),
            lb.run.count(REFUSED)
        );
        assert!(seen.is_empty(), "{how:?}: {seen:?}");
        assert_eq!(common::lb::member_row(&members, "evil"), None, "{members}");
        assert!(!lb.servers().contains_key("evil"));
        assert_eq!(
            app.requests(),
            0,
            "{how:?}: the attacker's app got requests"
        );
        assert_eq!(
            responder.datagrams(),
            0,
            "{how:?}: the LB probed the forged member"
        );
    }
    let stats = load.finish();
    eprintln!("load ok {} failed {}", stats.ok, stats.failed);
    assert_eq!(stats.failed, 0, "{:?}", stats.errors);
    // Refused, counted and logged at once, then not again within the minute.
    assert_eq!(lb.run.count(REFUSED), 1, "{}", lb.run.text());
    assert!(lb.logged(REFUSED, "total_packets="), "{}", lb.run.text());
    eprintln!("{}", refused_line(&lb));
    // The control: the same datagram sealed with the cluster's key is taken, and the LB probes
    // the claimed address (the forgeries were well-formed; only the key kept them out). The
    // responder acks in plaintext, which the LB refuses, so `evil` is still not confirmed.
    let mut atk = Attacker::new();
    let sealed = Sealer::with_key(&cluster_key).datagram(Forger::WrongKey, &forged[0]);
    let sent = Instant::now();
    common::eventually(
        "the LB probing `evil` once sealed with the key",
        LONG,
        || {
            atk.send(lb.gossip_addr(), &sealed);
            std::thread::sleep(Duration::from_millis(100));
            responder.datagrams() > 0
        },
    );
    eprintln!(
        "sealed with the cluster's key: the LB probed `evil`'s address after {:?} ({} datagrams)",
        sent.elapsed(),
        responder.datagrams()
    );
}

#[test]
fn keyed_forged_alive_dead_suspect_and_leave_in_plaintext_or_with_a_wrong_key_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (lb, key, _) = keyed_lb(dir.path());
    let names = ["web-a", "web-b", "web-c", "web-d"];
    let _backends = start_backends_with(dir.path(), &lb, &names, &key);
    let before = lb.servers();
    let members_before = lb.members();
    let responder = Udp::responder();
    let app = HttpCounter::start();
    let load = load(&lb);
    let at: SocketAddr = responder.addr;
    let forged = [
        packet(&[alive("web-a", at, backend_tags(app.port), u32::MAX)]),
        packet(&[dead("web-b", "web-x", u32::MAX)]),
        packet(&[suspect("web-c", "web-x", u32::MAX)]),
        packet(&[serf_leave("web-d", u64::MAX)]),
    ];
    for how in [Forger::Plaintext, Forger::WrongKey] {
        let (seen, sent) = send_for_a_window(&lb, &before, how, &forged);
        let members = lb.members();
        eprintln!(
            "keyed, real members, {how:?}: {sent} datagrams; server changes {seen:?}; \
             attacker's app {} requests; reloads {}; refusals logged {}x\n{members}",
            app.requests(),
            lb.reloads(),
            lb.run.count(REFUSED)
        );
        assert!(seen.is_empty(), "{how:?}: {seen:?}");
        for name in names {
            assert!(lb.servers()[name].in_service(), "{how:?}: {name}");
            let (addr, status) = common::lb::member_row(&members, name).unwrap();
            assert_eq!(
                (addr, status.as_str()),
                (
                    common::lb::member_row(&members_before, name).unwrap().0,
                    "alive"
                ),
                "{how:?}: {name} moved or changed status\n{members}"
            );
        }
        assert_eq!(app.requests(), 0, "{how:?}");
        assert_eq!(
            responder.datagrams(),
            0,
            "{how:?}: the LB probed the forged address"
        );
    }
    let stats = load.finish();
    eprintln!("load ok {} failed {}", stats.ok, stats.failed);
    assert_eq!(stats.failed, 0, "{:?}", stats.errors);
    assert_eq!(lb.reloads(), 0);
    assert_eq!(lb.run.count(REFUSED), 1, "{}", lb.run.text());
    eprintln!("{}", refused_line(&lb));
}

/// The LB's log line about refused traffic.
fn refused_line(lb: &Lb) -> String {
    lb.run
        .text()
        .lines()
        .find(|l| l.contains(REFUSED))
        .unwrap_or_default()
        .to_owned()
}
