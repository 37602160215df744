//! Secure mode (`[gossip] secure = true`, issue 13 item 2) with real processes: a load-balancer
//! muster driving Debian's haproxy and backend musters, all in secure mode with one key.
//! Between the backends and the load balancer sits a UDP and TCP forwarder of the test's (the
//! LB advertises the forwarder's port, so everything sent to the LB passes it): it records
//! every datagram and stream, which the test replays 2 s later, after a backend was killed
//! and after another left, to the LB and to another backend. Then a key holder announces a real member's
//! `alive` at its own address, and a keyed node without secure mode tries to join.
//! Assertions: the cluster forms, serves and detects the kill; no replay and no forgery
//! changes an HAProxy server or fails a request; the mixed node forms no cluster, and says
//! why. Figures are printed (`--no-capture`) for report/security.md.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::forge::{HttpCounter, alive, backend_tags, packet};
use common::http::Load;
use common::lb::{Backend, Lb, Server, observe};
use common::{Run, code, config, eventually, free_port, muster};
use muster::gossip::crypto::{self, Keyring};
use muster::gossip::secure::{self, Kind};
use muster::gossip::swim::Msg;
use muster::gossip::wire;

const KEY: &str = "5K9OtfjNP9lbeR7vqmUYtA==";
const WINDOW: Duration = Duration::from_secs(5);
const EVERY: Duration = Duration::from_millis(100);

fn secure_lines() -> String {
    format!("encrypt = \"{KEY}\"\nsecure = true\n")
}

/// A datagram or a stream's client bytes, as the forwarder saw them.
type Record = Arc<Mutex<Vec<(SocketAddr, Vec<u8>)>>>;

/// UDP and TCP on one port, forwarded to `target`, everything recorded with its source.
struct Forwarder {
    port: u16,
    datagrams: Record,
    streams: Record,
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    fn start(target: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let udp = UdpSocket::bind(("127.0.0.1", port)).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let out = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (datagrams, streams): (Record, Record) = Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s1) = (datagrams.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !s1.load(Ordering::Relaxed) {
                if let Ok((n, from)) = udp.recv_from(&mut buf) {
                    d.lock().unwrap().push((from, buf[..n].to_vec()));
                    let _ = out.send_to(&buf[..n], target);
                }
            }
        });
        listener.set_nonblocking(true).unwrap();
        let (st, s2) = (streams.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, from)) => {
                        let st = st.clone();
                        std::thread::spawn(move || forward_stream(c, from, target, st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Forwarder {
            port,
            datagrams,
            streams,
            stop,
        }
    }

    fn datagrams_from(&self, from: SocketAddr) -> Vec<Vec<u8>> {
        let d = self.datagrams.lock().unwrap();
        d.iter()
            .filter(|(f, _)| *f == from)
            .map(|(_, b)| b.clone())
            .collect()
    }

    fn streams(&self) -> Vec<Vec<u8>> {
        let s = self.streams.lock().unwrap();
        s.iter().map(|(_, b)| b.clone()).collect()
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One TCP connection through the forwarder: the client's bytes are recorded.
fn forward_stream(mut c: TcpStream, from: SocketAddr, target: SocketAddr, record: Record) {
    let Ok(mut s) = TcpStream::connect(target) else {
        return;
    };
    let (mut c2, mut s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut s2, &mut c2);
        let _ = c2.shutdown(std::net::Shutdown::Write);
    });
    c.set_read_timeout(Some(Duration::from_secs(12))).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 16_384];
    while let Ok(n) = c.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n]).is_err() {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    let _ = back.join();
    record.lock().unwrap().push((from, seen));
}

/// Sends every datagram to `to` from a socket of the test.
fn replay(datagrams: &[Vec<u8>], to: SocketAddr) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in datagrams {
        sock.send_to(d, to).unwrap();
    }
}

/// Replays a stream's client bytes to `to`; returns how many bytes came back.
fn replay_stream(bytes: &[u8], to: SocketAddr) -> usize {
    let Ok(mut s) = TcpStream::connect(to) else {
        return 0;
    };
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got.len()
}

/// Watches the servers for `WINDOW`: every change from `before` is returned.
fn changes(lb: &Lb, before: &BTreeMap<String, Server>) -> Vec<String> {
    let started = Instant::now();
    let mut seen = Vec::new();
    observe(WINDOW, EVERY, || {
        for (name, s) in &lb.servers() {
            let b = before.get(name);
            let was_in = b.is_some_and(Server::in_service);
            if b.is_none_or(|b| b.addr != s.addr || b.port != s.port || was_in != s.in_service()) {
                seen.push(format!("{:?} {name} {s:?}", started.elapsed()));
            }
        }
    });
    seen
}

fn load(lb: &Lb) -> Load {
    Load::start(
        lb.http,
        2,
        Duration::from_millis(5),
        Duration::from_secs(120),
        10_000_000,
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_secure_cluster_serves_detects_a_kill_and_ignores_every_replay() {
    let dir = tempfile::tempdir().unwrap();
    let lb_port = free_port();
    let lb_addr = SocketAddr::from(([127, 0, 0, 1], lb_port));
    let fwd = Forwarder::start(lb_addr);
    let extra = format!("{}advertise = \"127.0.0.1:{}\"\n", secure_lines(), fwd.port);
    let lb = Lb::start_full(dir.path(), lb_port, &extra, "");
    let names = ["web-a", "web-b", "web-c"];
    let started = Instant::now();
    let backends: Vec<Backend> = names
        .iter()
        .map(|n| Backend::start_full(dir.path(), n, fwd.port, &secure_lines()))
        .collect();
    for n in names {
        lb.wait_in_service(n);
    }
    eprintln!(
        "secure: 3 backends in service {:?} after they started",
        started.elapsed()
    );
    assert!(lb.logged("gossip secure mode", ""));
    for n in names {
        assert!(lb.served_by(n), "{n} serves");
    }
    let load = load(&lb);
    let victim = &backends[2];
    // Two seconds of traffic recorded, then replayed two seconds later.
    std::thread::sleep(Duration::from_secs(2));
    let captured = fwd.datagrams_from(victim.gossip_addr());
    let streams = fwd.streams();
    assert!(
        !captured.is_empty() && !streams.is_empty(),
        "the forwarder saw traffic"
    );
    let before = lb.servers();

    // 2 s later: every datagram web-c sent the LB, to the LB (directly and through the
    // forwarder) and to web-a; every recorded push/pull to the LB.
    std::thread::sleep(Duration::from_secs(2));
    let at = Instant::now();
    replay(&captured, lb_addr);
    replay(&captured, SocketAddr::from(([127, 0, 0, 1], fwd.port)));
    replay(&captured, backends[0].gossip_addr());
    let answered: usize = streams.iter().map(|s| replay_stream(s, lb_addr)).sum();
    let seen = changes(&lb, &before);
    let stats = load.snapshot();
    eprintln!(
        "secure: replayed {} datagrams x3 and {} streams after 2 s: {} server changes, {} answer bytes, requests {} ok {} failed",
        captured.len(),
        streams.len(),
        seen.len(),
        answered,
        stats.ok,
        stats.failed
    );
    assert!(seen.is_empty(), "a replay changed HAProxy: {seen:?}");
    assert_eq!(stats.failed, 0, "{:?}", stats.errors);
    assert!(
        lb.logged_after(at, "stale or replayed", "").is_some(),
        "the LB logs the replays"
    );
    assert!(
        backends[0].run.text().contains("no installed key"),
        "web-a refuses datagrams sealed for the LB"
    );

    // Kill web-c: detected, out of HAProxy.
    let killed = Instant::now();
    victim.kill9();
    eventually("web-c out of service", Duration::from_secs(20), || {
        !lb.servers().get("web-c").is_some_and(Server::in_service)
    });
    let out = killed.elapsed();
    eventually(
        "web-c failed in the LB's view",
        Duration::from_secs(20),
        || lb.member("web-c").is_some_and(|(_, s)| s != "alive"),
    );
    eprintln!(
        "secure: kill -9 of web-c out of HAProxy after {out:?}, not alive after {:?}",
        killed.elapsed()
    );

    // Its datagrams again, now that it is gone: it stays gone, nothing else moves.
    let failed_before = load.snapshot().failed;
    let before = lb.servers();
    replay(&captured, lb_addr);
    replay(&captured, backends[1].gossip_addr());
    let answered: usize = streams.iter().map(|s| replay_stream(s, lb_addr)).sum();
    let seen = changes(&lb, &before);
    let status = lb.member("web-c");
    let stats = load.snapshot();
    eprintln!(
        "secure: replayed after the kill: {} server changes, web-c {status:?}, {answered} answer bytes, requests {} ok {} failed in all ({} before this replay)",
        seen.len(),
        stats.ok,
        stats.failed,
        failed_before
    );
    assert!(seen.is_empty(), "a replay changed HAProxy: {seen:?}");
    assert!(status.is_some_and(|(_, s)| s != "alive"), "web-c came back");
    assert_eq!(stats.failed, failed_before, "{:?}", stats.errors);
    replay_after_a_leave(&lb, &fwd, &backends[1], backends[0].gossip_addr(), load);
}

/// `leaver` leaves gracefully; then everything it sent the LB (its leave included) is
/// replayed to the LB and to `other`: it stays gone, nothing else moves, no request fails.
fn replay_after_a_leave(lb: &Lb, fwd: &Forwarder, leaver: &Backend, other: SocketAddr, load: Load) {
    let captured = fwd.datagrams_from(leaver.gossip_addr());
    let left = Instant::now();
    leaver.run.signal(libc::SIGTERM);
    eventually("web-b left", Duration::from_secs(20), || {
        lb.member("web-b").is_some_and(|(_, s)| s == "left")
    });
    eventually("web-b out of HAProxy", Duration::from_secs(20), || {
        !lb.servers().get("web-b").is_some_and(Server::in_service)
    });
    let out = left.elapsed();
    // Its leave included: what it sent while leaving.
    let captured: Vec<Vec<u8>> = captured
        .into_iter()
        .chain(fwd.datagrams_from(leaver.gossip_addr()))
        .collect();
    let failed_before = load.snapshot().failed;
    let before = lb.servers();
    replay(&captured, lb.gossip_addr());
    replay(&captured, other);
    let seen = changes(lb, &before);
    let status = lb.member("web-b");
    let stats = load.finish();
    eprintln!(
        "secure: web-b left, out of HAProxy after {out:?}; its {} datagrams replayed to the LB and web-a: {} server changes, web-b {status:?}, requests {} ok {} failed in all ({} before this replay)",
        captured.len(),
        seen.len(),
        stats.ok,
        stats.failed,
        failed_before
    );
    assert!(seen.is_empty(), "a replay changed HAProxy: {seen:?}");
    assert!(status.is_some_and(|(_, s)| s == "left"), "web-b came back");
    assert_eq!(stats.failed, failed_before, "{:?}", stats.errors);
}

/// The key holder's sequence numbers (one counter for every socket it seals from).
static SEQ: AtomicU64 = AtomicU64::new(0);

fn next_seq() -> u64 {
    let _ = SEQ.compare_exchange(0, now_ms() * 1000, Ordering::Relaxed, Ordering::Relaxed);
    SEQ.fetch_add(1, Ordering::Relaxed) + 1
}

fn keyring() -> Keyring {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .unwrap();
    Keyring::new(&[key]).unwrap()
}

/// A datagram as a key holder in secure mode would seal it for `to`, from `sender`.
fn sealed(sender: &str, seq: u64, to: SocketAddr, body: &[u8]) -> Vec<u8> {
    sealed_at(now_ms(), sender, seq, to, body)
}

/// [`sealed`] with the sender's clock at `time_ms`.
fn sealed_at(time_ms: u64, sender: &str, seq: u64, to: SocketAddr, body: &[u8]) -> Vec<u8> {
    let msg = secure::wrap(Kind::Datagram, sender, time_ms, seq, body);
    let nonce = [
        seq as u8,
        (seq >> 8) as u8,
        (seq >> 16) as u8,
        9,
        9,
        9,
        9,
        9,
        9,
        9,
        9,
        9,
    ];
    let aad = secure::aad_to(Kind::Datagram, to);
    keyring().seal(crypto::SEND_VERSION, &nonce, &msg, &aad)
}

/// A key holder's UDP socket in secure mode: it opens the pings sealed for it and acks each,
/// sealed as from `sender` (its own name, or, forging, the member it claims to be).
struct SecureResponder {
    addr: SocketAddr,
    pings: Arc<AtomicU64>,
    sender: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
}

impl SecureResponder {
    fn start(sender: &str) -> SecureResponder {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let pings = Arc::new(AtomicU64::new(0));
        let sender = Arc::new(Mutex::new(sender.to_owned()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, who, st) = (pings.clone(), sender.clone(), stop.clone());
        std::thread::spawn(move || {
            let ring = keyring();
            let mut buf = vec![0u8; 65_536];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let aad = secure::aad_to(Kind::Datagram, addr);
                let Ok(plain) = ring.open(&buf[..n], &aad) else {
                    continue;
                };
                let Ok(parts) = secure::unwrap(&plain).map(|e| wire::decode_packet(e.body)) else {
                    continue;
                };
                for part in parts.iter().flatten() {
                    if let Ok(Some(Msg::Ping { seq_no, source, .. })) = Msg::from_part(part) {
                        p.fetch_add(1, Ordering::Relaxed);
                        let to = source.map_or(from, |(a, _)| a);
                        let ack = Msg::Ack {
                            seq_no,
                            payload: Vec::new(),
                        };
                        let name = who.lock().unwrap().clone();
                        let reply = sealed(&name, next_seq(), to, &packet(&[ack.to_wire()]));
                        let _ = sock.send_to(&reply, to);
                    }
                }
            }
        });
        SecureResponder {
            addr,
            pings,
            sender,
            stop,
        }
    }

    fn pings(&self) -> u64 {
        self.pings.load(Ordering::Relaxed)
    }
}

impl Drop for SecureResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sends `body` sealed as from `sender` to the LB every 200 ms for [`WINDOW`]; returns every
/// change of the servers from `before` seen meanwhile.
fn announce(lb: &Lb, sender: &str, body: &[u8], before: &BTreeMap<String, Server>) -> Vec<String> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = Instant::now();
    let mut seen = Vec::new();
    while at.elapsed() < WINDOW {
        let d = sealed(sender, next_seq(), lb.gossip_addr(), body);
        sock.send_to(&d, lb.gossip_addr()).unwrap();
        for (name, s) in &lb.servers() {
            let Some(b) = before.get(name) else { continue };
            if b.addr != s.addr || b.port != s.port || !s.in_service() {
                seen.push(format!("{:?} {name} {s:?}", at.elapsed()));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    seen
}

#[test]
fn a_key_holder_cannot_move_a_member_and_modes_do_not_mix() {
    let dir = tempfile::tempdir().unwrap();
    let lb = Lb::start_full(dir.path(), free_port(), &secure_lines(), "");
    let backends: Vec<Backend> = ["web-a", "web-b"]
        .iter()
        .map(|n| Backend::start_full(dir.path(), n, lb.gossip, &secure_lines()))
        .collect();
    lb.wait_in_service("web-a");
    lb.wait_in_service("web-b");
    let load = load(&lb);
    let before = lb.servers();
    let web_a = lb.member("web-a").unwrap();
    // The key holder "evil" announces web-a at an address of its own, at a far higher
    // incarnation, sealed honestly as from itself; that address answers the LB's probes,
    // sealed as from "evil" too, and serves HTTP.
    let responder = SecureResponder::start("evil");
    let app = HttpCounter::start();
    // muster starts at its boot time in seconds: 1000 above is newer than web-a's.
    let inc = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
        + 1000;
    let body = packet(&[alive("web-a", responder.addr, backend_tags(app.port), inc)]);
    let seen = announce(&lb, "evil", &body, &before);
    let stats = load.snapshot();
    eprintln!(
        "secure: 25 alives of web-a at another address from key holder 'evil': {} server changes, web-a {:?} (was {web_a:?}), {} probes reached the claimed address (acked as 'evil'), {} requests reached it, requests {} ok {} failed",
        seen.len(),
        lb.member("web-a"),
        responder.pings(),
        app.requests(),
        stats.ok,
        stats.failed
    );
    assert!(responder.pings() > 0, "the LB probes the claimed address");
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(lb.member("web-a"), Some(web_a));
    assert_eq!(app.requests(), 0);
    // Refused by the sender check, not as replays.
    assert!(!lb.logged("stale or replayed", ""), "{}", lb.run.text());

    // A new member "ghost" announcing itself, as captured an hour ago (its clock then): stale.
    // The same, fresh, is taken (the control).
    *responder.sender.lock().unwrap() = "ghost".to_owned();
    let ghost = packet(&[alive("ghost", responder.addr, backend_tags(app.port), inc)]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let hour_ago = now_ms() - 3_600_000;
    for _ in 0..10 {
        let d = sealed_at(hour_ago, "ghost", next_seq(), lb.gossip_addr(), &ghost);
        sock.send_to(&d, lb.gossip_addr()).unwrap();
    }
    lb.run
        .wait_line("stale or replayed", Duration::from_secs(10));
    let line = lb.run.text();
    let line = line
        .lines()
        .find(|l| l.contains("stale or replayed"))
        .unwrap();
    assert!(
        line.contains(" stale=") && !line.contains(" stale=0 "),
        "{line}"
    );
    observe(Duration::from_secs(2), EVERY, || {
        assert!(lb.member("ghost").is_none(), "a stale alive was taken");
    });
    let d = sealed("ghost", next_seq(), lb.gossip_addr(), &ghost);
    sock.send_to(&d, lb.gossip_addr()).unwrap();
    eventually("a fresh ghost is a member", Duration::from_secs(10), || {
        lb.member("ghost").is_some()
    });
    eprintln!(
        "secure: 10 alives sealed an hour ago refused as stale (2 s observed); the same alive, fresh, taken"
    );
    assert_eq!(stats.failed, 0, "{:?}", stats.errors);

    // A node with the key but without secure mode: no cluster, and the LB says why.
    let plain = Backend::start_full(
        dir.path(),
        "keyed-plain",
        lb.gossip,
        &format!("encrypt = \"{KEY}\"\n"),
    );
    lb.run
        .wait_line("another `secure` setting", Duration::from_secs(20));
    // And a secure node joining the keyed one: refused there, with the same line.
    let joiner = Backend::start_full(dir.path(), "web-x", plain.gossip, &secure_lines());
    plain
        .run
        .wait_line("another `secure` setting", Duration::from_secs(20));
    assert!(lb.member("keyed-plain").is_none(), "{}", lb.members());
    assert!(lb.member("web-x").is_none(), "{}", lb.members());
    assert!(!lb.servers().contains_key("keyed-plain"));

    // What the key still allows: the same claim, with acks sealed as from web-a itself (any
    // key holder can write any sender name), moves web-a. Shown so that the refusal above
    // is known to come from the sender check, not from a responder that does not work.
    *responder.sender.lock().unwrap() = "web-a".to_owned();
    let at = Instant::now();
    let body = packet(&[alive(
        "web-a",
        responder.addr,
        backend_tags(app.port),
        inc + 1,
    )]);
    let seen = announce(&lb, "web-a", &body, &before);
    let moved = lb.member("web-a");
    eprintln!(
        "secure: the same claim with acks forged as from web-a: {} server changes (first: {:?}), web-a {moved:?}, {} requests reached the attacker within {:?}",
        seen.len(),
        seen.first(),
        app.requests(),
        at.elapsed()
    );
    assert_eq!(moved.map(|m| m.0), Some(responder.addr.to_string()));
    drop((backends, load, joiner));
}

#[test]
fn secure_mode_without_a_key_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[gossip]\nname = \"a\"\nsecure = true\n[services.a]\nmain = true\ncommand = [\"true\"]\n",
    );
    let mut check = Run::start(muster(), &["check-config", cfg.to_str().unwrap()]);
    assert_eq!(code(check.wait(Duration::from_secs(10))), 64);
    assert!(check.text().contains("gossip.secure"), "{}", check.text());
    let mut run = Run::start(muster(), &["--config", cfg.to_str().unwrap()]);
    assert_eq!(code(run.wait(Duration::from_secs(10))), 64);
    assert!(run.text().contains("gossip.secure"), "{}", run.text());
}
