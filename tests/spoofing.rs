//! Spoofed membership in plaintext against a load-balancer muster driving Debian's real
//! haproxy (issue 13, "What must be shown"), with `[haproxy] trusted_networks` set to the
//! backends' network (127.0.0.1/32 here) and the attacker elsewhere (127.0.0.2, as a host on
//! another network). Every forgery is sent as any process that can reach the gossip port
//! could, without a key: a new name, a real member at a new address (last incarnation), a
//! real member declared dead, suspect and left (last incarnation, last Lamport time). The
//! assertions: no HAProxy server is added, moved or removed, no request fails, and the
//! attacker's app gets nothing. What each attack still does to the member list is printed.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::forge::{
    Attacker, HttpCounter, Udp, alive, backend_tags, dead, packet, serf_leave, suspect,
};
use common::http::Load;
use common::lb::{Lb, Server, observe, start_backends};

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
