//! The gossip driver: binds UDP and TCP on one port (7946 by default), feeds the `swim` core
//! what arrives and when, carries out what it asks (packets, push/pull exchanges), joins the
//! seeds (by name or address, retried until one answers, and re-joined periodically so a split
//! or a restarted seed heals), runs Serf's layer (`serf`: intents, status, reconnect, reap)
//! above the failure detector, and publishes membership at once, without Serf's coalescing
//! delay: every event on a channel, and the whole view on a `watch` (what a consumer such as
//! the HAProxy sync reconciles against).

// The driver is where gossip reads the clock.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};

use super::serf::{self, Serf};
use super::swim::{self, Input, Msg, Output, RemoteNode, State, Swim};
use super::wire::{self, NodeState};

/// How long a push/pull exchange may take.
const STREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful leave keeps gossiping before it reports done.
const LEAVE_PROPAGATE: Duration = Duration::from_millis(1000);

/// What the driver needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Node name (unique in the cluster).
    pub name: String,
    /// Address to bind UDP and TCP to.
    pub bind: SocketAddr,
    /// Address announced to others (the bind address unless it is unspecified).
    pub advertise: SocketAddr,
    /// Seeds to join: `host:port` or `host` (port 7946), resolved again at every attempt.
    pub seeds: Vec<String>,
    /// Serf tags announced in node meta.
    pub tags: BTreeMap<String, String>,
    /// Protocol timings.
    pub profile: swim::Config,
    /// How often the seeds are joined again while running.
    pub rejoin_interval: Duration,
    /// Serf's reconnect and reap timings.
    pub serf: serf::Config,
}

/// Where the driver publishes membership.
#[derive(Debug, Clone)]
pub struct Publish {
    /// Every Serf event, in order.
    pub events: mpsc::UnboundedSender<serf::Event>,
    /// The whole view (self included, sorted by name), replaced on every change.
    pub view: watch::Sender<Vec<serf::Member>>,
}

/// Requests to a running driver.
#[derive(Debug)]
pub enum Command {
    /// Leave gracefully; the reply comes once the news had time to spread.
    Leave(oneshot::Sender<()>),
    /// The current view of every member.
    Members(oneshot::Sender<Vec<serf::Member>>),
}

enum Internal {
    /// A push/pull answer or request arrived from this peer with these nodes and this Serf
    /// state.
    Remote(SocketAddr, Vec<RemoteNode>, Vec<u8>),
}

/// Most senders remembered for "logged once per sender".
const MAX_LOGGED_SENDERS: usize = 4096;
/// How often a summary of what was refused is logged, when something was.
const REFUSED_SUMMARY: Duration = Duration::from_secs(60);

/// Peers that announced names or tags muster refuses: each sender is logged once, and a
/// summary of the counts now and then.
struct Refusals {
    logged: std::collections::HashSet<std::net::IpAddr>,
    last: swim::Stats,
    next_summary: Instant,
}

impl Refusals {
    fn note(&mut self, from: Option<SocketAddr>, name: &str, why: &str) {
        let ip = from.map(|a| a.ip());
        let first = match ip {
            Some(ip) if self.logged.len() < MAX_LOGGED_SENDERS => self.logged.insert(ip),
            _ => false,
        };
        if first {
            tracing::warn!(from = ?from, name, why, "peer refused: its name or tags are not allowed (logged once per sender)");
        }
    }

    fn summary(&mut self, now: Instant, stats: swim::Stats) {
        if now < self.next_summary || stats == self.last {
            return;
        }
        self.next_summary = now + REFUSED_SUMMARY;
        let was = std::mem::replace(&mut self.last, stats);
        tracing::warn!(
            invalid = stats.invalid - was.invalid,
            full = stats.full - was.full,
            rate_limited = stats.rate_limited - was.rate_limited,
            unconfirmed = stats.unconfirmed - was.unconfirmed,
            held = stats.held - was.held,
            refuted = stats.refuted - was.refuted,
            absurd = stats.absurd - was.absurd,
            budget = stats.budget - was.budget,
            stranger_relays = stats.stranger_relays - was.stranger_relays,
            "gossip refused or held back since the last summary"
        );
    }
}

fn to_remote(n: &NodeState) -> Option<RemoteNode> {
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

/// Reads one push/pull from a stream, as bytes arrive, bounded in size.
async fn read_push_pull(stream: &mut TcpStream) -> io::Result<(Vec<RemoteNode>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream closed early",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > wire::MAX_STREAM_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "push/pull too large",
            ));
        }
        match wire::decode_stream(&buf) {
            Ok(pp) => {
                return Ok((
                    pp.nodes.iter().filter_map(to_remote).collect(),
                    pp.user_state,
                ));
            }
            Err(e) if wire::incomplete(&e) => continue,
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
    }
}

/// Resolves seeds to socket addresses (Docker's DNS for names such as `ha`).
async fn resolve(seeds: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for s in seeds {
        let target = if s
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            s.clone()
        } else {
            format!("{s}:7946")
        };
        match tokio::net::lookup_host(target.as_str()).await {
            Ok(addrs) => out.extend(addrs.filter(SocketAddr::is_ipv4)),
            Err(error) => tracing::debug!(seed = %s, %error, "seed does not resolve yet"),
        }
    }
    out
}

/// Runs the node until the command channel closes; membership goes to `publish`.
pub async fn run(
    settings: Settings,
    publish: Publish,
    mut commands: mpsc::UnboundedReceiver<Command>,
) -> io::Result<()> {
    let udp = UdpSocket::bind(settings.bind).await?;
    let tcp = TcpListener::bind(settings.bind).await?;
    let started = Instant::now();
    // The boot time as incarnation: a restarted node supersedes its predecessor at once.
    let incarnation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32);
    let seed = u64::from(incarnation) ^ u64::from(std::process::id()) << 32;
    let mut swim = Swim::new(
        settings.profile.clone(),
        &settings.name,
        settings.advertise,
        wire::encode_tags(&settings.tags),
        incarnation,
        seed,
        started,
    );
    let mut serf = Serf::new(
        settings.serf.clone(),
        &settings.name,
        settings.advertise,
        settings.tags.clone(),
        seed.rotate_left(17),
        started,
    );
    publish.view.send_replace(serf.members().cloned().collect());
    let (internal_tx, mut internal) = mpsc::unbounded_channel::<Internal>();
    let mut next_join = Instant::now();
    let mut joined = false;
    let mut leaving: Option<(Instant, oneshot::Sender<()>)> = None;
    let mut buf = vec![0u8; 65_536];
    let mut refusals = Refusals {
        logged: std::collections::HashSet::new(),
        last: swim::Stats::default(),
        next_summary: Instant::now() + REFUSED_SUMMARY,
    };
    loop {
        // Carry out what the cores asked, until neither has more (each feeds the other).
        loop {
            let mut changed = false;
            while let Some(out) = serf.poll_output() {
                match out {
                    serf::Output::Event(e) => {
                        tracing::info!(member = %e.member.name, addr = %e.member.addr, status = e.member.status.as_str(), event = ?e.kind, "membership");
                        let _ = publish.events.send(e);
                    }
                    serf::Output::Broadcast(body) => swim.broadcast_user(body),
                    serf::Output::Reconnect(to) => {
                        tracing::debug!(%to, "trying a failed member again");
                        swim.handle(Instant::now(), Input::Join(vec![to]));
                    }
                    serf::Output::Forget(name) => {
                        swim.forget(&name);
                    }
                    serf::Output::Changed => changed = true,
                }
            }
            if changed {
                publish.view.send_replace(serf.members().cloned().collect());
            }
            let Some(out) = swim.poll_output() else { break };
            match out {
                Output::Send { to, msgs } => {
                    let parts: Vec<Vec<u8>> = msgs.iter().map(Msg::to_wire).collect();
                    let packet = if parts.len() == 1 {
                        wire::with_crc(&parts[0])
                    } else {
                        wire::with_crc(&wire::compound(&parts))
                    };
                    if let Err(error) = udp.send_to(&packet, to).await {
                        tracing::debug!(%to, %error, "cannot send");
                    }
                }
                Output::PushPull { to, join } => {
                    let local = wire::encode_push_pull(
                        join,
                        &to_wire_state(&swim.local_state()),
                        &serf.local_state(),
                    );
                    let tx = internal_tx.clone();
                    tokio::spawn(async move {
                        let exchange = async {
                            let mut s = TcpStream::connect(to).await?;
                            s.write_all(&local).await?;
                            read_push_pull(&mut s).await
                        };
                        match tokio::time::timeout(STREAM_TIMEOUT, exchange).await {
                            Ok(Ok((nodes, state))) => {
                                let _ = tx.send(Internal::Remote(to, nodes, state));
                            }
                            Ok(Err(error)) => tracing::debug!(%to, %error, "push/pull failed"),
                            Err(_) => tracing::debug!(%to, "push/pull timed out"),
                        }
                    });
                }
                Output::Event(e) => {
                    tracing::debug!(member = %e.member.name, addr = %e.member.addr, event = ?e.kind, "failure detector");
                    serf.on_swim(Instant::now(), &e);
                }
                Output::Refused { from, name, why } => refusals.note(from, &name, &why),
            }
        }
        if let Some((until, _)) = &leaving {
            if Instant::now() >= *until {
                if let Some((_, done)) = leaving.take() {
                    let _ = done.send(());
                }
            }
        }
        let mut deadline = swim.poll_timeout().min(serf.poll_timeout());
        if !settings.seeds.is_empty() && leaving.is_none() {
            deadline = deadline.min(next_join);
        }
        if let Some((until, _)) = &leaving {
            deadline = deadline.min(*until);
        }
        tokio::select! {
            r = udp.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                match wire::decode_packet(&buf[..n]) {
                    Ok(parts) => {
                        let msgs: Vec<Msg> = parts
                            .iter()
                            .filter_map(|p| Msg::from_part(p).ok().flatten())
                            .collect();
                        let now = Instant::now();
                        for m in &msgs {
                            if let Msg::User(body) = m {
                                serf.on_user(now, body);
                            }
                        }
                        swim.handle(now, Input::Packet { from, msgs, size: n });
                    }
                    Err(error) => tracing::debug!(%from, %error, "bad packet ignored"),
                }
            }
            r = tcp.accept() => {
                let Ok((mut stream, peer)) = r else { continue };
                let local = wire::encode_push_pull(
                    false,
                    &to_wire_state(&swim.local_state()),
                    &serf.local_state(),
                );
                let tx = internal_tx.clone();
                tokio::spawn(async move {
                    let exchange = async {
                        let nodes = read_push_pull(&mut stream).await?;
                        stream.write_all(&local).await?;
                        io::Result::Ok(nodes)
                    };
                    match tokio::time::timeout(STREAM_TIMEOUT, exchange).await {
                        Ok(Ok((nodes, state))) => {
                            let _ = tx.send(Internal::Remote(peer, nodes, state));
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "incoming push/pull failed"),
                        Err(_) => tracing::debug!(%peer, "incoming push/pull timed out"),
                    }
                });
            }
            Some(Internal::Remote(peer, nodes, state)) = internal.recv() => {
                let now = Instant::now();
                let first = !joined;
                if first {
                    joined = true;
                    tracing::info!(members = nodes.len(), "joined the cluster");
                }
                // As memberlist does: the nodes first, then the layer above's state.
                swim.handle(now, Input::Remote { from: Some(peer), nodes });
                if let Err(error) = serf.merge_remote_state(now, &state) {
                    tracing::debug!(%error, "serf state in a push/pull ignored");
                }
                if first {
                    serf.announce_join(now);
                }
            }
            c = commands.recv() => match c {
                None => return Ok(()),
                Some(Command::Leave(done)) => {
                    // Serf 0.9.4 counts a member as left (not failed) only when its leave
                    // intent arrives before memberlist's own dead message: queue it first.
                    let now = Instant::now();
                    serf.leave(now);
                    while let Some(out) = serf.poll_output() {
                        match out {
                            serf::Output::Broadcast(body) => swim.broadcast_user(body),
                            serf::Output::Changed => {
                                publish.view.send_replace(serf.members().cloned().collect());
                            }
                            _ => {}
                        }
                    }
                    swim.handle(now, Input::Leave);
                    leaving = Some((Instant::now() + LEAVE_PROPAGATE, done));
                }
                Some(Command::Members(reply)) => {
                    let _ = reply.send(serf.members().cloned().collect());
                }
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                if !settings.seeds.is_empty() && now >= next_join && leaving.is_none() {
                    // Until the first join succeeds, retry fast; then re-join now and then.
                    next_join = now + if joined { settings.rejoin_interval } else { Duration::from_secs(1) };
                    let seeds = resolve(&settings.seeds).await;
                    let me = settings.advertise;
                    let seeds: Vec<SocketAddr> = seeds.into_iter().filter(|s| *s != me).collect();
                    if !seeds.is_empty() {
                        swim.handle(now, Input::Join(seeds));
                    }
                }
                swim.handle(now, Input::Tick);
                serf.tick(now);
                refusals.summary(now, swim.stats());
            }
        }
    }
}
