//! Forged gossip, built with muster's own codec: the messages any process that can reach a
//! gossip port may send (alive, dead, pings, indirect pings, Serf intents, push/pulls), and
//! the attacker's own sockets: a sender, a responder that acks pings at a forged address, a
//! victim that counts what reaches it, an HTTP app that counts the requests it gets.

#![allow(dead_code, clippy::disallowed_methods, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use muster::gossip::serf::{PushPullState, intent};
use muster::gossip::swim::{Msg, VSN};
use muster::gossip::wire::{
    self, NodeState, PushPull, compound, compress, encode_push_pull, encode_tags, serf_kind,
    with_crc,
};

/// Serf tags as node meta.
pub fn tags(pairs: &[(&str, &str)]) -> Vec<u8> {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    encode_tags(&map)
}

/// The tags of a backend whose app listens on `port`.
pub fn backend_tags(port: u16) -> Vec<u8> {
    tags(&[("role", "backend"), ("port", &port.to_string())])
}

/// `alive`: `name` lives at `addr` with `meta`, at `incarnation`.
pub fn alive(name: &str, addr: SocketAddr, meta: Vec<u8>, incarnation: u32) -> Vec<u8> {
    Msg::Alive {
        incarnation,
        node: name.to_owned(),
        addr,
        meta,
        vsn: VSN.to_vec(),
    }
    .to_wire()
}

/// `dead`: `from` declares `name` dead at `incarnation` (a leave when `from == name`).
pub fn dead(name: &str, from: &str, incarnation: u32) -> Vec<u8> {
    Msg::Dead {
        incarnation,
        node: name.to_owned(),
        from: from.to_owned(),
    }
    .to_wire()
}

/// `suspect`: `from` suspects `name` at `incarnation`.
pub fn suspect(name: &str, from: &str, incarnation: u32) -> Vec<u8> {
    Msg::Suspect {
        incarnation,
        node: name.to_owned(),
        from: from.to_owned(),
    }
    .to_wire()
}

/// A ping of `node`; the ack is asked for at `source` (SourceAddr/SourcePort) when given.
pub fn ping(seq_no: u32, node: &str, source: Option<SocketAddr>) -> Vec<u8> {
    Msg::Ping {
        seq_no,
        node: node.to_owned(),
        source: source.map(|a| (a, "attacker".to_owned())),
    }
    .to_wire()
}

/// Asks the receiver to probe `target` (named `node`) for us, answering at `source`.
pub fn indirect_ping(
    seq_no: u32,
    target: SocketAddr,
    node: &str,
    source: Option<SocketAddr>,
) -> Vec<u8> {
    Msg::IndirectPing {
        seq_no,
        target,
        node: node.to_owned(),
        nack: true,
        source: source.map(|a| (a, "attacker".to_owned())),
    }
    .to_wire()
}

/// A Serf leave intent for `node` at Lamport time `ltime`, as a memberlist user message.
pub fn serf_leave(node: &str, ltime: u64) -> Vec<u8> {
    Msg::User(intent(serf_kind::LEAVE, ltime, node)).to_wire()
}

/// A Serf join intent for `node` at Lamport time `ltime`, as a memberlist user message.
pub fn serf_join(node: &str, ltime: u64) -> Vec<u8> {
    Msg::User(intent(serf_kind::JOIN, ltime, node)).to_wire()
}

/// One datagram as memberlist sends it: CRC, then one message or a compound of them.
pub fn packet(msgs: &[Vec<u8>]) -> Vec<u8> {
    if msgs.len() == 1 {
        with_crc(&msgs[0])
    } else {
        with_crc(&compound(msgs))
    }
}

/// One datagram: CRC, LZW compression, a compound of `msgs` (at most 255).
pub fn compressed_packet(msgs: &[Vec<u8>]) -> Vec<u8> {
    assert!(msgs.len() <= 255, "a compound holds at most 255 messages");
    with_crc(&compress(&compound(msgs)))
}

/// A node state for a push/pull.
pub fn node_state(name: &str, addr: SocketAddr, meta: Vec<u8>, incarnation: u32) -> NodeState {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only")
    };
    NodeState {
        name: name.to_owned(),
        addr: v4.ip().octets().to_vec(),
        port: addr.port(),
        meta,
        incarnation,
        state: Some(0),
        vsn: VSN.to_vec(),
    }
}

/// A push/pull over TCP to `to` carrying `nodes` (and an empty Serf state); returns the
/// receiver's answer: its view of every member, with their incarnations.
pub fn push_pull(to: SocketAddr, nodes: &[NodeState]) -> std::io::Result<PushPull> {
    push_pull_within(to, nodes, Duration::from_secs(5))
}

/// [`push_pull`], waiting up to `limit` between reads of the answer.
pub fn push_pull_within(
    to: SocketAddr,
    nodes: &[NodeState],
    limit: Duration,
) -> std::io::Result<PushPull> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
    s.set_read_timeout(Some(limit))?;
    s.set_write_timeout(Some(limit))?;
    s.write_all(&push_pull_stream(nodes))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = s.read(&mut chunk)?;
        buf.extend_from_slice(&chunk[..n]);
        match wire::decode_stream(&buf) {
            Ok(pp) => return Ok(pp),
            Err(e) if wire::incomplete(&e) && n > 0 => continue,
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
    }
}

/// The bytes of a push/pull stream carrying `nodes` and an empty Serf state, as [`push_pull`]
/// sends them (plaintext).
pub fn push_pull_stream(nodes: &[NodeState]) -> Vec<u8> {
    let state = PushPullState {
        ltime: 1,
        status_ltimes: Vec::new(),
        left_members: Vec::new(),
        event_ltime: 1,
        events: Vec::new(),
        query_ltime: 1,
    };
    encode_push_pull(false, nodes, &state.encode())
}

/// Sends `bytes` on a new TCP stream to `to`, then reads until the peer closes or `limit`
/// passes without a byte: everything it answered (a refused stream gets nothing).
pub fn stream_answer(to: SocketAddr, bytes: &[u8], limit: Duration) -> Vec<u8> {
    let mut answer = Vec::new();
    let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(5)) else {
        return answer;
    };
    let _ = s.set_read_timeout(Some(limit));
    // The peer may close before it has read everything: a failed write is an answer too.
    let _ = s.write_all(bytes);
    let _ = s.read_to_end(&mut answer);
    answer
}

/// `name`'s incarnation as `lb` sees it (asked by push/pull).
pub fn incarnation_of(lb: SocketAddr, name: &str) -> u32 {
    let pp = push_pull(lb, &[]).expect("push/pull with the load balancer");
    pp.nodes
        .iter()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("{name} is not in the load balancer's push/pull"))
        .incarnation
}

/// The attacker's sending socket, on 127.0.0.1 and a port of its own.
pub struct Attacker {
    pub sock: UdpSocket,
    /// Bytes sent so far.
    pub sent: u64,
    /// Datagrams sent so far.
    pub datagrams: u64,
}

impl Attacker {
    pub fn new() -> Attacker {
        Attacker {
            sock: UdpSocket::bind("127.0.0.1:0").unwrap(),
            sent: 0,
            datagrams: 0,
        }
    }

    pub fn send(&mut self, to: SocketAddr, datagram: &[u8]) {
        assert!(datagram.len() <= 65_507, "{} bytes", datagram.len());
        let n = self.sock.send_to(datagram, to).unwrap();
        self.sent += n as u64;
        self.datagrams += 1;
    }
}

/// A UDP socket that counts what reaches it and, as a forged member's address, acks every
/// ping (so "answers probes" is not what stops a forgery).
pub struct Udp {
    pub addr: SocketAddr,
    /// Bytes received.
    pub bytes: Arc<AtomicU64>,
    /// Datagrams received.
    pub datagrams: Arc<AtomicU64>,
    /// Pings received (direct, from anyone).
    pub pings: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Udp {
    /// A socket that acks pings.
    pub fn responder() -> Udp {
        Self::start(true)
    }

    /// A socket that only counts (a reflection victim).
    pub fn victim() -> Udp {
        Self::start(false)
    }

    /// A socket that acks pings, at `ip` (another loopback address, as a host elsewhere).
    pub fn responder_at(ip: [u8; 4]) -> Udp {
        Self::start_at(true, ip)
    }

    fn start(answer: bool) -> Udp {
        Self::start_at(answer, [127, 0, 0, 1])
    }

    fn start_at(answer: bool, ip: [u8; 4]) -> Udp {
        let sock = UdpSocket::bind(SocketAddr::from((ip, 0))).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let bytes = Arc::new(AtomicU64::new(0));
        let datagrams = Arc::new(AtomicU64::new(0));
        let pings = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (bytes, datagrams, pings, stop) = (
                bytes.clone(),
                datagrams.clone(),
                pings.clone(),
                stop.clone(),
            );
            move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    bytes.fetch_add(n as u64, Ordering::Relaxed);
                    datagrams.fetch_add(1, Ordering::Relaxed);
                    let Ok(parts) = wire::decode_packet(&buf[..n]) else {
                        continue;
                    };
                    for p in &parts {
                        if let Ok(Some(Msg::Ping { seq_no, source, .. })) = Msg::from_part(p) {
                            pings.fetch_add(1, Ordering::Relaxed);
                            if answer {
                                let to = source.map_or(from, |(a, _)| a);
                                let ack = Msg::Ack {
                                    seq_no,
                                    payload: Vec::new(),
                                }
                                .to_wire();
                                let _ = sock.send_to(&with_crc(&ack), to);
                            }
                        }
                    }
                }
            }
        });
        Udp {
            addr,
            bytes,
            datagrams,
            pings,
            stop,
            thread: Some(thread),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn datagrams(&self) -> u64 {
        self.datagrams.load(Ordering::Relaxed)
    }

    pub fn pings(&self) -> u64 {
        self.pings.load(Ordering::Relaxed)
    }
}

impl Drop for Udp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The attacker's HTTP app: answers every request 200 with `attacker`, counting requests
/// (health checks included) and connections.
pub struct HttpCounter {
    pub port: u16,
    pub requests: Arc<AtomicU64>,
    pub connections: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl HttpCounter {
    pub fn start() -> HttpCounter {
        Self::start_at([127, 0, 0, 1])
    }

    /// The app at `ip`.
    pub fn start_at(ip: [u8; 4]) -> HttpCounter {
        let listener = TcpListener::bind(SocketAddr::from((ip, 0))).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        std::thread::spawn({
            let (requests, connections, stop) =
                (requests.clone(), connections.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((s, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    connections.fetch_add(1, Ordering::Relaxed);
                    let requests = requests.clone();
                    std::thread::spawn(move || serve(s, &requests));
                }
            }
        });
        HttpCounter {
            port,
            requests,
            connections,
            stop,
        }
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for HttpCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(mut s: TcpStream, requests: &AtomicU64) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let Ok(n) = s.read(&mut chunk) else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = buf[..end].starts_with(b"HEAD");
            buf.drain(..end + 4);
            requests.fetch_add(1, Ordering::Relaxed);
            let body = if head { "" } else { "attacker" };
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nContent-Type: text/plain\r\n\r\n{body}"
            );
            if s.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    }
}

/// Pings a node every `every` from a socket of its own and records how long the node went
/// without acking: whether it stays responsive (its peers would mark it failed otherwise).
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, u64, Duration)>>,
}

impl Heartbeat {
    pub fn start(to: SocketAddr, node: &str, every: Duration) -> Heartbeat {
        let stop = Arc::new(AtomicBool::new(false));
        let node = node.to_owned();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                sock.set_read_timeout(Some(Duration::from_millis(10)))
                    .unwrap();
                let (mut sent, mut acked) = (0u64, 0u64);
                let mut last_ack = Instant::now();
                let mut longest = Duration::ZERO;
                let mut next = Instant::now();
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    if Instant::now() >= next {
                        sent += 1;
                        // With its source, as memberlist's pings are: a bare ping is
                        // smaller than its ack, which a node need not send to a stranger.
                        let me = sock.local_addr().ok();
                        let p = with_crc(&ping(sent as u32, &node, me));
                        let _ = sock.send_to(&p, to);
                        next += every;
                    }
                    if let Ok((n, _)) = sock.recv_from(&mut buf) {
                        let acks = wire::decode_packet(&buf[..n])
                            .map(|parts| {
                                parts
                                    .iter()
                                    .filter(|p| {
                                        matches!(Msg::from_part(p), Ok(Some(Msg::Ack { .. })))
                                    })
                                    .count()
                            })
                            .unwrap_or(0);
                        if acks > 0 {
                            acked += acks as u64;
                            longest = longest.max(last_ack.elapsed());
                            last_ack = Instant::now();
                        }
                    }
                }
                longest = longest.max(last_ack.elapsed());
                (sent, acked, longest)
            }
        });
        Heartbeat {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops; returns pings sent, acks received and the longest time without an ack.
    pub fn finish(mut self) -> (u64, u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
