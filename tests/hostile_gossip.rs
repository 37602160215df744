//! What a gossip peer says reaches HAProxy only as data (issue 16), shown from outside: each
//! test starts a load-balancer muster (gossip profile `local`, `[haproxy]` with the shipped
//! template on loopback) driving Debian's real haproxy on 127.0.0.1, with real backend
//! musters, and attacks it as any process that can reach its gossip port could: forged
//! `alive`, `dead` and Serf leave messages, floods of fake members, reflection. The attacker is
//! this process, sending from 127.0.0.1 and ports of its own, with muster's own codec
//! (`tests/common/forge.rs`). Every measured figure is printed (`eprintln!`).

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::forge::{
    self, Attacker, HttpCounter, Udp, alive, backend_tags, compressed_packet, dead, indirect_ping,
    node_state, packet, ping, serf_leave, tags,
};
use common::free_port;
use common::http::Load;
use common::lb::{Backend, LONG, Lb, observe, start_backends};

/// How long "nothing happens" is watched after an attack.
const WINDOW: Duration = Duration::from_secs(10);
const EVERY: Duration = Duration::from_millis(100);

/// A light load: two keep-alive clients, a request every 5 ms each.
fn load(lb: &Lb) -> Load {
    Load::start(
        lb.http,
        2,
        Duration::from_millis(5),
        Duration::from_secs(120),
        10_000_000,
    )
}

/// Sends `datagrams` to `to` every `period` from its own thread until the returned flag is
/// set: an attacker who keeps repeating itself, so the forged members are "around".
fn repeat(to: SocketAddr, datagrams: Vec<Vec<u8>>, period: Duration) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut atk = Attacker::new();
            while !stop.load(Ordering::Relaxed) {
                for d in &datagrams {
                    atk.send(to, d);
                }
                std::thread::sleep(period);
            }
        }
    });
    stop
}

// 1. Code execution and an admin socket, through a member's name.

#[test]
fn a_name_carrying_config_runs_no_command_and_opens_no_socket() {
    let dir = tempfile::tempdir().unwrap();
    let lb = Lb::start(dir.path());
    let _backends = start_backends(dir.path(), &lb, &["web-a", "web-b", "web-c"]);
    // The forged member's address acks pings and its app answers health checks: only the
    // name (or a tag) is wrong, so nothing but validation can keep it out.
    let responder = Udp::responder();
    let app = HttpCounter::start();
    let pwned = dir.path().join("pwned");
    let admin_port = free_port();
    let forged = [
        // A program section only HAProxy's master-worker mode reads; `haproxy -c` without
        // -W skips it.
        format!(
            "zz-pwn 127.0.0.1:{p}\n.if defined(HAPROXY_MWORKER)\nprogram pwn\n    command touch {f}\n\
             .endif\nbackend zz-pwn-b\n    server zz-pwn-c",
            p = app.port,
            f = pwned.display()
        ),
        // An admin socket on TCP.
        format!(
            "zz-sock 127.0.0.1:{p}\nglobal\n    stats socket ipv4@127.0.0.1:{admin_port} level admin\n\
             backend zz-sock-b\n    server zz-sock-c",
            p = app.port
        ),
        // Longer than 128 bytes.
        format!("zz-long-{}", "x".repeat(200)),
    ];
    let mut msgs: Vec<Vec<u8>> = forged
        .iter()
        .map(|name| alive(name, responder.addr, backend_tags(app.port), 1))
        .collect();
    // A valid name with a tag value that is configuration.
    let bad_tag = tags(&[
        ("role", "backend"),
        ("port", &app.port.to_string()),
        ("note", "x\n    stats socket ipv4@127.0.0.1:1 level admin"),
    ]);
    msgs.push(alive("zz-tag", responder.addr, bad_tag.clone(), 1));
    let datagrams: Vec<Vec<u8>> = msgs
        .iter()
        .map(|m| packet(std::slice::from_ref(m)))
        .collect();
    let stop = repeat(lb.gossip_addr(), datagrams, Duration::from_secs(2));
    // The same members through the other door: a push/pull over TCP.
    let mut nodes: Vec<_> = forged
        .iter()
        .map(|name| node_state(name, responder.addr, backend_tags(app.port), 2))
        .collect();
    nodes.push(node_state("zz-tag", responder.addr, bad_tag, 2));
    let pushed = forge::push_pull(lb.gossip_addr(), &nodes);
    eprintln!(
        "push/pull with the forged names: {:?}",
        pushed.map(|_| "answered")
    );

    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let mut listed = 0;
    let mut opened = 0;
    let mut rendered = 0;
    observe(WINDOW, Duration::from_millis(200), || {
        if lb.members().contains("zz-") {
            listed += 1;
        }
        if TcpStream::connect_timeout(&admin, Duration::from_millis(50)).is_ok() {
            opened += 1;
        }
        if std::fs::read_to_string(&lb.config).unwrap().contains("zz-") {
            rendered += 1;
        }
    });
    stop.store(true, Ordering::Relaxed);
    let logged = lb.run.count("zz-");
    eprintln!(
        "forged names: listed as members {listed}x, rendered {rendered}x, admin port open {opened}x, \
         pwned file {}, reloads {}, LB log lines naming them {logged}, pings to the forged \
         address {}, requests to the forged app {}",
        pwned.exists(),
        lb.reloads(),
        responder.pings(),
        app.requests()
    );
    assert!(!pwned.exists(), "the forged program ran");
    assert_eq!(opened, 0, "the forged admin socket opened");
    assert_eq!(listed, 0, "a forged name is a member:\n{}", lb.members());
    assert_eq!(rendered, 0, "a forged name reached haproxy.cfg");
    assert_eq!(lb.reloads(), 0, "{}", lb.run.text());
    assert_eq!(app.requests(), 0);
    // Counted and logged once per sender, not once per message (the attacker repeated
    // itself five times).
    assert!(
        logged <= forged.len() + 1,
        "{logged} log lines name the forged members"
    );
}

// 2. Hijack: a real member moved to the attacker's address.

#[test]
fn an_alive_at_the_last_incarnation_never_moves_a_live_member() {
    let dir = tempfile::tempdir().unwrap();
    let lb = Lb::start(dir.path());
    let backends = start_backends(dir.path(), &lb, &["web-a", "web-b", "web-c"]);
    let (a, b) = (&backends[0], &backends[1]);
    let real = lb.servers()["web-a"].clone();
    assert_eq!(real.port, a.port);
    let real_b = lb.servers()["web-b"].clone();
    let real_gossip = a.gossip_addr().to_string();
    // The attacker acks the LB's pings at its address and serves HTTP behind it.
    let responder = Udp::responder();
    let app = HttpCounter::start();
    let load = load(&lb);
    let mut atk = Attacker::new();
    // web-a moved to the attacker's address and app.
    atk.send(
        lb.gossip_addr(),
        &packet(&[alive(
            "web-a",
            responder.addr,
            backend_tags(app.port),
            u32::MAX,
        )]),
    );
    // web-b kept at its own address (so the real web-b answers the probes), its tags
    // changed to send its traffic to the attacker's app.
    atk.send(
        lb.gossip_addr(),
        &packet(&[alive(
            "web-b",
            b.gossip_addr(),
            backend_tags(app.port),
            u32::MAX,
        )]),
    );
    let sent = Instant::now();
    let mut moved = Vec::new();
    let mut member_moved = Vec::new();
    let mut pushed = false;
    observe(WINDOW, EVERY, || {
        // Halfway, the same claim through a push/pull.
        if !pushed && sent.elapsed() > WINDOW / 2 {
            pushed = true;
            let n = node_state("web-a", responder.addr, backend_tags(app.port), u32::MAX);
            let _ = forge::push_pull(lb.gossip_addr(), &[n]);
        }
        let servers = lb.servers();
        for real in [&real, &real_b] {
            match servers.get(&real.name) {
                Some(s) if s.addr == real.addr && s.port == real.port => {}
                other => moved.push((sent.elapsed(), other.cloned())),
            }
        }
        let members = lb.members();
        match common::lb::member_row(&members, "web-a") {
            Some((addr, _)) if addr == real_gossip => {}
            other => member_moved.push((sent.elapsed(), other)),
        }
        let b_port = format!("port={},", real_b.port);
        if !members
            .lines()
            .any(|l| l.starts_with("web-b ") && l.contains(&b_port))
        {
            member_moved.push((sent.elapsed(), Some(("web-b's tags".into(), members))));
        }
    });
    let stats = load.finish();
    let pp = forge::push_pull(lb.gossip_addr(), &[]).unwrap();
    let inc = |name: &str| {
        pp.nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.incarnation)
    };
    eprintln!(
        "hijack: incarnations on the LB afterwards: web-a {:?}, web-b {:?} (forged {})",
        inc("web-a"),
        inc("web-b"),
        u32::MAX
    );
    eprintln!(
        "hijack: servers moved or gone {}x (first {:?}), member moved {}x (first {:?}), attacker's \
         app got {} requests on {} connections, attacker's address got {} pings; load ok {} \
         failed {}",
        moved.len(),
        moved.first(),
        member_moved.len(),
        member_moved.first(),
        app.requests(),
        app.connections(),
        responder.pings(),
        stats.ok,
        stats.failed
    );
    assert!(moved.is_empty(), "a server moved: {moved:?}");
    assert!(
        member_moved.is_empty(),
        "web-a's member moved: {member_moved:?}"
    );
    assert_eq!(app.requests(), 0, "the attacker got requests");
    assert_eq!(stats.failed, 0, "failed requests: {:?}", stats.errors);
    assert!(lb.served_by("web-a") && lb.served_by("web-b"));
}

// 3. Removal: dead at the last incarnation, a Serf leave at the last Lamport time, and a
// refuted leave.

#[test]
fn a_forged_dead_or_leave_never_takes_a_live_member_out() {
    let dir = tempfile::tempdir().unwrap();
    let lb = Lb::start(dir.path());
    let _backends = start_backends(dir.path(), &lb, &["web-a", "web-b", "web-c", "web-d"]);
    let inc_c = forge::incarnation_of(lb.gossip_addr(), "web-c");
    let load = load(&lb);
    let mut atk = Attacker::new();
    // A third party declares web-a dead, at the last incarnation.
    atk.send(
        lb.gossip_addr(),
        &packet(&[dead("web-a", "web-x", u32::MAX)]),
    );
    // A Serf leave for web-b at the last Lamport time.
    atk.send(lb.gossip_addr(), &packet(&[serf_leave("web-b", u64::MAX)]));
    // A plain leave for web-c (From == Node) at its current incarnation: web-c refutes it.
    atk.send(lb.gossip_addr(), &packet(&[dead("web-c", "web-c", inc_c)]));
    let sent = Instant::now();
    let mut out = Vec::new();
    let mut c_drained = 0;
    let mut c_out = 0;
    observe(WINDOW, EVERY, || {
        let servers = lb.servers();
        for name in ["web-a", "web-b"] {
            if !servers.get(name).is_some_and(|s| s.in_service()) {
                out.push((sent.elapsed(), name, servers.get(name).cloned()));
            }
        }
        match servers.get("web-c") {
            Some(s) if s.draining() => c_drained += 1,
            Some(s) if s.in_service() => {}
            _ => c_out += 1,
        }
    });
    let stats = load.finish();
    let servers = lb.servers();
    let members = lb.members();
    eprintln!(
        "removal: web-a/web-b out {}x (first {:?}); web-c seen draining {c_drained}x, otherwise \
         out {c_out}x, at the end {:?}; reloads {}; load ok {} failed {}\n{members}",
        out.len(),
        out.first(),
        servers.get("web-c"),
        lb.reloads(),
        stats.ok,
        stats.failed
    );
    assert!(out.is_empty(), "a live member was taken out: {out:?}");
    let c = servers.get("web-c").expect("web-c's server is gone");
    assert!(
        c.in_service() && !c.draining(),
        "web-c's server is left {c:?}"
    );
    for name in ["web-a", "web-b", "web-c"] {
        let row = common::lb::member_row(&members, name);
        assert!(
            row.as_ref().is_some_and(|(_, s)| s == "alive"),
            "{name}: {row:?}"
        );
    }
    assert_eq!(stats.failed, 0, "failed requests: {:?}", stats.errors);
    assert_eq!(lb.reloads(), 0, "{}", lb.run.text());
}

// 4. A forged member never freezes the sync.

#[test]
fn members_still_join_and_leave_while_forged_members_are_around() {
    let dir = tempfile::tempdir().unwrap();
    let lb = Lb::start(dir.path());
    let mut backends = start_backends(dir.path(), &lb, &["web-a", "web-b", "web-c"]);
    let responder = Udp::responder();
    let app = HttpCounter::start();
    // Invalid: a name HAProxy would refuse (a space, a newline, an unknown keyword); it acks
    // pings. Valid but unreachable: nobody answers at its address.
    let nobody = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // And valid, answering probes, but its app never answers HAProxy's checks.
    let datagrams = vec![
        packet(&[alive(
            "bad name\n    frobnicate",
            responder.addr,
            backend_tags(app.port),
            1,
        )]),
        packet(&[alive("ghost-1", nobody, backend_tags(free_port()), 1)]),
        packet(&[alive(
            "ghost-2",
            responder.addr,
            backend_tags(free_port()),
            1,
        )]),
    ];
    let stop = repeat(lb.gossip_addr(), datagrams, Duration::from_millis(500));
    // Give the forgeries a head start (they are being repeated meanwhile).
    eventually_sent(&responder);

    let t = Instant::now();
    let d = Backend::start(dir.path(), "web-d", lb.gossip);
    lb.wait_in_service("web-d");
    let joined = t.elapsed();
    let t = Instant::now();
    backends[0].run.signal(libc::SIGTERM);
    common::eventually("web-a's server removed", LONG, || {
        !lb.servers().contains_key("web-a")
    });
    let left = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let members = lb.members();
    eprintln!(
        "frozen sync: web-d in service {:.2}s after its start, web-a's server removed {:.2}s \
         after SIGTERM; listed: ghost-1 {}, ghost-2 {}; ghost-2's server {:?}; reloads {}\n{members}",
        joined.as_secs_f64(),
        left.as_secs_f64(),
        members.contains("ghost-1"),
        members.contains("ghost-2"),
        lb.servers().get("ghost-2"),
        lb.reloads()
    );
    assert!(lb.served_by("web-d"));
    assert!(!members.contains("bad name"), "{members}");
    assert!(!lb.servers().contains_key("ghost-1"));
    backends.push(d);
}

/// Waits until the LB has probed the responder once (the forged member is known to it) or
/// a second has passed (a fixed LB may never probe a member it refuses).
fn eventually_sent(responder: &Udp) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while responder.pings() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

// 5. Forged deads cause no reload.

#[test]
fn twenty_forged_deads_cause_no_reload_and_no_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let lb = Lb::start(dir.path());
    let names = ["web-a", "web-b", "web-c"];
    let _backends = start_backends(dir.path(), &lb, &names);
    let pp = forge::push_pull(lb.gossip_addr(), &[]).unwrap();
    let inc = |name: &str| {
        pp.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap()
            .incarnation
    };
    let deads: Vec<Vec<u8>> = (0..20u32)
        .map(|i| {
            let name = names[i as usize % 3];
            // Ever higher incarnations, alternately a third party's dead and a leave.
            let from = if i % 2 == 0 { "web-x" } else { name };
            packet(&[dead(name, from, inc(name).wrapping_add(1 + i / 3))])
        })
        .collect();
    let load = load(&lb);
    let to = lb.gossip_addr();
    let sender = std::thread::spawn(move || {
        let mut atk = Attacker::new();
        for d in &deads {
            atk.send(to, d);
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    let started = Instant::now();
    let mut out = Vec::new();
    observe(WINDOW, EVERY, || {
        let servers = lb.servers();
        for name in names {
            if !servers.get(name).is_some_and(|s| s.in_service()) {
                out.push((started.elapsed(), name));
            }
        }
    });
    sender.join().unwrap();
    let stats = load.finish();
    eprintln!(
        "20 forged deads: reloads {}, servers seen out {}x (first {:?}), load ok {} failed {}",
        lb.reloads(),
        out.len(),
        out.first(),
        stats.ok,
        stats.failed
    );
    assert_eq!(lb.reloads(), 0, "{}", lb.run.text());
    assert_eq!(stats.failed, 0, "failed requests: {:?}", stats.errors);
    assert!(out.is_empty(), "live members taken out: {out:?}");
}

// 6. A flood of fake members.

/// How long after `killed` the LB logged `name` failed, and took its server out of rotation,
/// within `limit`.
fn detection(lb: &Lb, name: &str, killed: Instant, limit: Duration) -> (Option<f64>, Option<f64>) {
    let member = format!("member={name} ");
    let server = format!("nodes/{name}");
    let mut failed = None;
    let mut out = None;
    let deadline = killed + limit;
    while Instant::now() < deadline && (failed.is_none() || out.is_none()) {
        if failed.is_none() {
            failed = lb
                .logged_after(killed, &member, "failed")
                .map(|t| (t - killed).as_secs_f64());
        }
        if out.is_none() {
            out = lb
                .logged_after(killed, &server, "out of rotation")
                .map(|t| (t - killed).as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (failed, out)
}

/// 20,000 fake names: valid, each at an address on 127.0.0.x where nobody listens.
const FAKES: usize = 20_000;

fn fake_addr(i: usize, base: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 2 + (i % 250) as u8], base + (i / 250) as u16))
}

/// Which door the flood comes through.
#[derive(Debug, Clone, Copy)]
enum Door {
    /// 253 alives to a compressed datagram, as fast as a loop sends them.
    Datagrams,
    /// Every fake in one push/pull over TCP.
    PushPull,
}

/// A load balancer with four backends is flooded with fake members through `door`: its RSS
/// stays near idle, its control socket answers, it keeps acking pings (its peers never mark
/// it failed), no fake is listed, and a real `kill -9` is still detected.
fn flood(door: Door) {
    let dir = tempfile::tempdir().unwrap();
    let lb = Lb::start(dir.path());
    let backends = start_backends(dir.path(), &lb, &["web-a", "web-b", "web-c", "web-d"]);
    // Failure detection before the flood, for comparison.
    let killed = Instant::now();
    backends[3].kill9();
    let (before, before_out) = detection(&lb, "web-d", killed, Duration::from_secs(10));
    let mut idle = 0;
    observe(Duration::from_secs(1), EVERY, || {
        idle = idle.max(lb.rss_kib())
    });
    let cpu_idle = lb.cpu_seconds();
    let heartbeat = forge::Heartbeat::start(lb.gossip_addr(), "lb", Duration::from_millis(50));

    let meta = backend_tags(3000);
    let flood_started = Instant::now();
    let sent = match door {
        Door::Datagrams => {
            let mut atk = Attacker::new();
            let names: Vec<String> = (0..FAKES).map(|i| format!("flood-{i:05}")).collect();
            for (c, chunk) in names.chunks(253).enumerate() {
                let msgs: Vec<Vec<u8>> = chunk
                    .iter()
                    .enumerate()
                    .map(|(j, n)| alive(n, fake_addr(c * 253 + j, 20_000), meta.clone(), 1))
                    .collect();
                atk.send(lb.gossip_addr(), &compressed_packet(&msgs));
                std::thread::sleep(Duration::from_millis(1));
            }
            format!("{} datagrams ({} bytes)", atk.datagrams, atk.sent)
        }
        Door::PushPull => {
            let nodes: Vec<_> = (0..FAKES)
                .map(|i| {
                    node_state(
                        &format!("flood-{i:05}"),
                        fake_addr(i, 30_000),
                        meta.clone(),
                        1,
                    )
                })
                .collect();
            let bytes = muster::gossip::wire::encode_push_pull(false, &nodes, &[]).len();
            let answer = forge::push_pull_within(lb.gossip_addr(), &nodes, Duration::from_secs(30))
                .map(|pp| pp.nodes.len());
            format!(
                "one push/pull ({bytes} bytes), answered {answer:?} after {:.2}s",
                flood_started.elapsed().as_secs_f64()
            )
        }
    };
    let flood_sent = flood_started.elapsed();
    let mut peak = 0;
    let mut slowest_members = Duration::ZERO;
    let mut fakes_listed = 0;
    let mut unanswered = Vec::new();
    observe(Duration::from_secs(5), Duration::from_millis(250), || {
        peak = peak.max(lb.rss_kib());
        let t = Instant::now();
        match lb.try_members() {
            Ok(members) => fakes_listed = fakes_listed.max(members.matches("flood-").count()),
            Err(e) => unanswered.push(e),
        }
        slowest_members = slowest_members.max(t.elapsed());
    });
    let cpu_flood = lb.cpu_seconds() - cpu_idle;
    let (pings, acks, longest) = heartbeat.finish();
    // The LB as its peers saw it.
    let lb_failed: usize = backends[..3]
        .iter()
        .map(|b| {
            b.run
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter(|(t, l)| {
                    *t >= flood_started && l.contains("member=lb ") && l.contains("failed")
                })
                .count()
        })
        .sum();
    let killed = Instant::now();
    backends[0].kill9();
    let (after, after_out) = detection(&lb, "web-a", killed, Duration::from_secs(10));
    let peak = peak.max(lb.rss_kib());
    eprintln!(
        "flood ({door:?}): {FAKES} names in {sent}, sent in {:.2}s; LB RSS idle {idle} KiB, peak \
         {peak} KiB (+{} KiB); LB CPU from the flood to 5 s after it {cpu_flood:.2}s; LB acked \
         {acks} of {pings} pings, longest without an ack {:.0} ms; peers logged the LB failed \
         {lb_failed}x; slowest `muster members` {:.0} ms, unanswered {}; fakes listed \
         {fakes_listed}; kill -9 detected (failed / out of rotation) before the flood {before:?} \
         / {before_out:?} s, after {after:?} / {after_out:?} s",
        flood_sent.as_secs_f64(),
        peak.saturating_sub(idle),
        longest.as_secs_f64() * 1e3,
        slowest_members.as_secs_f64() * 1e3,
        unanswered.len()
    );
    assert!(
        peak < idle + 16 * 1024,
        "RSS grew from {idle} KiB to {peak} KiB"
    );
    assert!(
        unanswered.is_empty(),
        "the control socket did not answer: {unanswered:?}"
    );
    assert_eq!(
        fakes_listed, 0,
        "fake members nobody answers for are listed"
    );
    assert_eq!(lb_failed, 0, "the LB's peers marked it failed");
    assert!(
        after.is_some() || after_out.is_some(),
        "web-a's kill -9 went undetected for 10 s after the flood"
    );
}

#[test]
fn a_flood_of_fake_members_by_datagram_neither_grows_memory_nor_delays_failure_detection() {
    flood(Door::Datagrams);
}

#[test]
fn a_flood_of_fake_members_by_push_pull_neither_grows_memory_nor_delays_failure_detection() {
    flood(Door::PushPull);
}

// 7. Reflection: the LB as an amplifier toward an address named in a packet.

#[test]
fn one_datagram_never_makes_the_lb_send_more_toward_a_stranger_than_it_carried() {
    let dir = tempfile::tempdir().unwrap();
    let lb = Lb::start(dir.path());
    let _backends = start_backends(dir.path(), &lb, &["web-a", "web-b", "web-c"]);
    let mut atk = Attacker::new();

    // Pings whose SourceAddr/SourcePort name the victim: the acks go there.
    let victim = Udp::victim();
    let pings: Vec<Vec<u8>> = (0..255)
        .map(|i| ping(1000 + i, "lb", Some(victim.addr)))
        .collect();
    let datagram = compressed_packet(&pings);
    atk.send(lb.gossip_addr(), &datagram);
    let window = Duration::from_secs(2);
    observe(window, EVERY, || {});
    let (acks, acks_in) = (victim.bytes(), victim.datagrams());

    // Indirect pings from a non-member, asking the LB to probe the victim (answers and nacks
    // to the victim too).
    let victim2 = Udp::victim();
    let indirect: Vec<Vec<u8>> = (0..255)
        .map(|i| indirect_ping(2000 + i, victim2.addr, "web-z", Some(victim2.addr)))
        .collect();
    let datagram2 = compressed_packet(&indirect);
    atk.send(lb.gossip_addr(), &datagram2);
    observe(window, EVERY, || {});
    let (probes, probes_in) = (victim2.bytes(), victim2.datagrams());

    // Alives of 253 new names, all at the victim's address: a node that probes every new
    // name before it is a member must not probe them all there.
    let victim3 = Udp::victim();
    let alives: Vec<Vec<u8>> = (0..253)
        .map(|i| alive(&format!("new-{i:03}"), victim3.addr, backend_tags(3000), 1))
        .collect();
    let datagram3 = compressed_packet(&alives);
    atk.send(lb.gossip_addr(), &datagram3);
    observe(window, EVERY, || {});
    let (candidates, candidates_in) = (victim3.bytes(), victim3.datagrams());
    eprintln!(
        "reflection: 253 alives at the victim's address in one {}-byte datagram -> {candidates} \
         bytes in {candidates_in} datagrams ({:.2}x)",
        datagram3.len(),
        candidates as f64 / datagram3.len() as f64
    );
    eprintln!(
        "reflection: 255 pings in one {}-byte datagram -> {acks} bytes in {acks_in} datagrams at \
         the victim ({:.2}x); 255 indirect pings in one {}-byte datagram -> {probes} bytes in \
         {probes_in} datagrams ({:.2}x)",
        datagram.len(),
        acks as f64 / datagram.len() as f64,
        datagram2.len(),
        probes as f64 / datagram2.len() as f64
    );
    assert!(
        acks <= datagram.len() as u64,
        "{acks} bytes of acks for a {}-byte datagram",
        datagram.len()
    );
    assert!(
        candidates <= datagram3.len() as u64,
        "{candidates} bytes of probes for a {}-byte datagram of alives",
        datagram3.len()
    );
    assert!(
        probes <= datagram2.len() as u64,
        "{probes} bytes of probes for a {}-byte datagram",
        datagram2.len()
    );
}
