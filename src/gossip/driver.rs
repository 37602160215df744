//! The gossip driver: binds UDP and TCP on one port (7946 by default), feeds the `swim` core
//! what arrives and when, carries out what it asks (packets, push/pull exchanges), joins the
//! seeds (by name or address, retried until one answers, and re-joined periodically so a split
//! or a restarted seed heals), runs Serf's layer (`serf`: intents, status, reconnect, reap)
//! above the failure detector, logs every membership event, and publishes the whole view at
//! once, without Serf's coalescing delay, on a `watch` (what a consumer such as the HAProxy
//! sync reconciles against).
//!
//! `run` is a `select!` loop over the sockets, finished push/pull exchanges, commands and
//! the node's next deadline; `Shell` carries out what the node asks for.

// The driver is where gossip reads the clock.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};

use super::crypto::{self, Keyring};
use super::limits::{self, AcceptBackoff, Slots};
use super::node::{self, Input, Node, Output};
use super::serf;
use super::swim;
use super::wire;

/// How long a push/pull exchange may take (memberlist's `TCPTimeout` on a LAN): a stream that
/// stalls is closed then, if [`limits::Slots`] did not close it before.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from a stream at a time.
const READ_CHUNK: usize = 16 * 1024;
/// How long our push/pull answer is reused for streams that arrive meanwhile (unless the view
/// changed), so a flood of connections does not encode the whole view once each.
const ANSWER_REUSE: Duration = Duration::from_millis(100);

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
    /// The whole view (self included, sorted by name), replaced on every change.
    pub view: watch::Sender<Vec<serf::Member>>,
}

/// Requests to a running driver.
#[derive(Debug)]
pub enum Command {
    /// Leave gracefully; the reply comes once the news had time to spread
    /// ([`node::LEAVE_PROPAGATE`]), or at `by` if that comes first.
    Leave {
        /// The stop deadline: the reply comes by then at the latest.
        by: Instant,
        /// Where the reply goes.
        done: oneshot::Sender<()>,
    },
    /// The current view of every member.
    Members(oneshot::Sender<Vec<serf::Member>>),
    /// Join through these addresses (`host[:port]`, resolved now): the reply is how many
    /// answered a push/pull within [`JOIN_WAIT`], or why none could be tried.
    Join {
        /// The addresses.
        seeds: Vec<String>,
        /// Where the reply goes.
        done: oneshot::Sender<Result<usize, String>>,
    },
    /// Send a user event (`serf event`).
    UserEvent {
        /// Its name.
        name: String,
        /// Its payload.
        payload: Vec<u8>,
        /// Whether handlers may coalesce it.
        coalesce: bool,
        /// Refused (too large) or sent.
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Ask a query (`serf query`): its acknowledgements and answers go to `answers`, then
    /// [`Answer::Done`].
    Query {
        /// The query.
        ask: serf::Ask,
        /// Where its answers go.
        answers: mpsc::UnboundedSender<Answer>,
        /// Refused or sent.
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Answer a query a subscriber heard, by its handle.
    Respond {
        /// The handle [`Heard::Query`] gave.
        handle: u64,
        /// The answer.
        payload: Vec<u8>,
        /// Sent, or why not.
        done: oneshot::Sender<Result<(), String>>,
    },
    /// `serf force-leave`: a failed member becomes left (forgotten at once with `prune`).
    ForceLeave {
        /// The member.
        node: String,
        /// Whether to forget it at once.
        prune: bool,
        /// Done, or why not.
        done: oneshot::Sender<Result<(), String>>,
    },
    /// `serf tags`: set and delete this node's tags.
    SetTags {
        /// Tags to set.
        set: BTreeMap<String, String>,
        /// Tags to delete.
        delete: Vec<String>,
        /// The tags now, or why not.
        done: oneshot::Sender<Result<BTreeMap<String, String>, String>>,
    },
    /// Hear membership events, user events and queries from now on; `false` in `done` when
    /// there are too many subscribers.
    Subscribe {
        /// Where they go.
        to: mpsc::Sender<Heard>,
        /// Whether it was taken.
        done: oneshot::Sender<bool>,
    },
}

pub mod hub;

pub use hub::{Answer, Heard};

/// How long a [`Command::Join`] waits for its push/pulls.
pub const JOIN_WAIT: Duration = Duration::from_secs(5);

/// A [`Command::Join`] waiting for its push/pulls.
struct PendingJoin {
    waiting: std::collections::HashSet<SocketAddr>,
    answered: usize,
    by: Instant,
    done: oneshot::Sender<Result<usize, String>>,
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
            not_itself = stats.not_itself - was.not_itself,
            "gossip refused or held back since the last summary"
        );
    }
}

/// How often refused encrypted (or plaintext) traffic is logged, with the counts.
const CRYPTO_SUMMARY: Duration = Duration::from_secs(60);

/// Traffic the keyring refused, in three kinds (another `secure` setting; stale or replayed;
/// no key opens it): the first refusal of each kind is logged at once, then a count at most
/// once per [`CRYPTO_SUMMARY`] each, so a flood of one kind hides no other.
struct CryptoLog {
    logged: node::CryptoRefused,
    /// When each kind may be logged again.
    next: [Option<Instant>; 3],
}

impl CryptoLog {
    fn note(&mut self, now: Instant, seen: node::CryptoRefused) {
        let was = self.logged;
        let mut due = |i: usize, more: bool| {
            let ok = more && self.next[i].is_none_or(|t| now >= t);
            if ok {
                self.next[i] = Some(now + CRYPTO_SUMMARY);
            }
            ok
        };
        if due(0, seen.mode_mismatch > was.mode_mismatch) {
            self.logged.mode_mismatch = seen.mode_mismatch;
            tracing::warn!(
                refused = seen.mode_mismatch - was.mode_mismatch,
                total = seen.mode_mismatch,
                "gossip traffic refused: a peer with our key but another `secure` setting (secure mode and Serf's framing do not mix; set [gossip] secure alike on every node) (logged at most once a minute)"
            );
        }
        if due(1, seen.stale > was.stale || seen.replayed > was.replayed) {
            (self.logged.stale, self.logged.replayed) = (seen.stale, seen.replayed);
            tracing::warn!(
                stale = seen.stale - was.stale,
                replayed = seen.replayed - was.replayed,
                total_stale = seen.stale,
                total_replayed = seen.replayed,
                "gossip traffic refused: stale or replayed (secure mode) (logged at most once a minute)"
            );
        }
        if due(2, seen.packets > was.packets || seen.streams > was.streams) {
            (self.logged.packets, self.logged.streams) = (seen.packets, seen.streams);
            tracing::warn!(
                packets = seen.packets - was.packets,
                streams = seen.streams - was.streams,
                total_packets = seen.packets,
                total_streams = seen.streams,
                "gossip traffic refused: not encrypted, or with no installed key (logged at most once a minute)"
            );
        }
    }
}

/// 12 bytes from the operating system's randomness, the seed of the GCM nonces.
fn nonce_seed() -> io::Result<[u8; crypto::NONCE]> {
    let mut seed = [0u8; crypto::NONCE];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut seed))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read /dev/urandom: {e}")))?;
    Ok(seed)
}

/// Reads one push/pull from a stream, as bytes arrive, bounded in size: nothing is allocated
/// before the first bytes come, and a stream longer than [`wire::max_stream_bytes`] (or one
/// whose parts pass their own limits) is cut there.
async fn read_push_pull(
    stream: &mut TcpStream,
    max_members: usize,
    keyed: bool,
) -> io::Result<Vec<u8>> {
    // An encrypted stream carries its header, version, nonce and tag beside the push/pull.
    // In secure mode, also the envelope (at most 275 bytes).
    let limit = wire::max_stream_bytes(max_members) + if keyed { 512 } else { 0 };
    let mut buf = Vec::new();
    loop {
        stream.readable().await?;
        // Everything that came is read before decoding again, so a large stream is not
        // parsed once per chunk.
        loop {
            if buf.capacity() - buf.len() < READ_CHUNK {
                buf.reserve(READ_CHUNK.max(buf.len() / 2).min(limit + 1 - buf.len()));
            }
            let spare = buf.capacity() - buf.len();
            match stream.try_read_buf(&mut buf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "stream closed early",
                    ));
                }
                Ok(_) if buf.len() > limit => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("push/pull longer than {limit} bytes"),
                    ));
                }
                Ok(n) if n < spare => break,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        match node::stream_complete_keyed(&buf, max_members, keyed) {
            Ok(true) => return Ok(buf),
            Ok(false) => continue,
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
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

/// A finished exchange: the inbound stream's slot (none for ours), the peer, and its side of
/// the push/pull when it came whole.
type Finished = (Option<u64>, SocketAddr, Option<Vec<u8>>);

/// Whether an encrypted stream opens with one of the keys to a whole push/pull.
fn opens_to_push_pull(keyring: &Keyring, stream: &[u8], max_members: usize) -> bool {
    keyring
        .open_stream(stream)
        .is_ok_and(|plain| node::stream_complete(&plain, max_members) == Ok(true))
}

/// The wall clock in milliseconds since the UNIX epoch (secure mode's timestamps).
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How a stream task checks the peer's side and answers it.
#[derive(Clone)]
enum Check {
    /// Plaintext: answer whatever came.
    None,
    /// A keyring: answer only what one of its keys opens.
    Keyring(Arc<Keyring>),
    /// Secure mode: `answer` is unsealed; it is sealed for the request it answers.
    Secure(Arc<node::Answerer>),
}

impl Check {
    fn keyed(&self) -> bool {
        !matches!(self, Check::None)
    }

    /// What to write back after the peer's side `theirs` (`None`: nothing).
    fn answer(&self, answer: &[u8], theirs: &[u8], max_members: usize) -> Option<Vec<u8>> {
        match self {
            Check::None => Some(answer.to_vec()),
            Check::Keyring(k) => {
                opens_to_push_pull(k, theirs, max_members).then(|| answer.to_vec())
            }
            Check::Secure(a) => a.answer(theirs, answer, wall_ms()),
        }
    }
}

/// One push/pull on a stream, bounded in time: `first` is written before reading when we
/// opened it; `answer` after reading when the peer did. The peer's side goes to `done`.
fn exchange(
    stream: impl std::future::Future<Output = io::Result<TcpStream>> + Send + 'static,
    (slot, peer): (Option<u64>, SocketAddr),
    first: Option<Vec<u8>>,
    answer: Option<Arc<Vec<u8>>>,
    max_members: usize,
    check: Check,
    done: mpsc::UnboundedSender<Finished>,
) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let work = async {
            let mut s = stream.await?;
            if let Some(bytes) = &first {
                s.write_all(bytes).await?;
            }
            let theirs = read_push_pull(&mut s, max_members, check.keyed()).await?;
            // A keyed node answers only a push/pull one of its keys opens (the node refuses,
            // and counts, the others): a peer without the key gets nothing back.
            if let Some(bytes) = answer
                .as_ref()
                .and_then(|a| check.answer(a, &theirs, max_members))
            {
                s.write_all(&bytes).await?;
            }
            io::Result::Ok(theirs)
        };
        let theirs = match tokio::time::timeout(STREAM_TIMEOUT, work).await {
            Ok(Ok(theirs)) => Some(theirs),
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "push/pull failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "push/pull timed out");
                None
            }
        };
        let _ = done.send((slot, peer, theirs));
    })
    .abort_handle()
}

/// Runs the node until the command channel closes; membership goes to `publish`.
pub async fn run(
    settings: Settings,
    publish: Publish,
    commands: mpsc::UnboundedReceiver<Command>,
) -> io::Result<()> {
    run_keyed(settings, None, publish, commands).await
}

/// [`run`] in an encrypted cluster when `keyring` is given (Serf's `-encrypt` or keyring).
pub async fn run_keyed(
    settings: Settings,
    keyring: Option<Keyring>,
    publish: Publish,
    commands: mpsc::UnboundedReceiver<Command>,
) -> io::Result<()> {
    run_secure(settings, keyring, false, publish, commands).await
}

/// [`run_keyed`], in secure mode (`gossip::secure`) when `secure` is set and a keyring given.
pub async fn run_secure(
    settings: Settings,
    keyring: Option<Keyring>,
    secure: bool,
    publish: Publish,
    mut commands: mpsc::UnboundedReceiver<Command>,
) -> io::Result<()> {
    let mut settings = settings;
    let secure = secure && keyring.is_some();
    if secure {
        // Room for the envelope: kind, time, sequence number and our name.
        settings.profile.packet_size = settings
            .profile
            .packet_size
            .saturating_sub(19 + settings.name.len());
    }
    let own: Vec<SocketAddr> = std::iter::once(settings.advertise)
        .chain((!settings.bind.ip().is_unspecified()).then_some(settings.bind))
        .collect();
    let seed = match keyring {
        Some(_) => {
            // Room for the version, nonce and tag in every datagram, as memberlist leaves.
            settings.profile.packet_size = settings
                .profile
                .packet_size
                .saturating_sub(crypto::OVERHEAD);
            Some(nonce_seed()?)
        }
        None => None,
    };
    let udp = UdpSocket::bind(settings.bind).await?;
    let tcp = TcpListener::bind(settings.bind).await?;
    let (streams_tx, mut streams) = mpsc::unbounded_channel();
    let mut shell = Shell::new(settings, publish, udp, streams_tx);
    if let (Some(ring), Some(seed)) = (keyring, seed) {
        shell.check = Check::Keyring(Arc::new(ring.clone()));
        shell.node = shell.node.with_keyring(ring, seed);
        if secure {
            shell.node.enable_secure(wall_ms(), Instant::now(), own);
            let answerer = shell.node.answerer(nonce_seed()?).map(Arc::new);
            shell.check = answerer.map_or(Check::None, Check::Secure);
            tracing::info!(
                "gossip secure mode: replayed, stale and misdirected traffic is refused; an address is taken only from its member (muster-only cluster)"
            );
        }
    }
    let mut buf = vec![0u8; 65_536];
    let mut paused: Option<Instant> = None;
    loop {
        shell.carry_out().await;
        tokio::select! {
            r = shell.udp.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                shell.node.handle(Instant::now(), Input::Datagram { from, bytes: &buf[..n] });
            }
            r = tcp.accept(), if paused.is_none() => match r {
                Ok((stream, peer)) => shell.answer(stream, peer),
                Err(error) => paused = Some(shell.accept_failed(&error)),
            },
            _ = tokio::time::sleep_until(paused.unwrap_or_else(Instant::now).into()), if paused.is_some() => {
                paused = None;
            }
            Some((slot, peer, bytes)) = streams.recv() => shell.finished(slot, peer, bytes),
            c = commands.recv() => match c {
                None => return Ok(()),
                Some(c) => shell.command(c).await,
            },
            _ = tokio::time::sleep_until(shell.node.poll_timeout().into()) => shell.tick(),
            Some(vote) = shell.votes.recv() => {
                if let Some(e) = shell.vote_counted(vote) {
                    return Err(e);
                }
            }
        }
    }
}

/// The outcome of a name-conflict resolution: answers naming our address, and answers.
type Vote = (usize, usize);

/// Why [`run`] ends when another node holds this node's name (Serf's agent shuts down then).
#[derive(Debug, thiserror::Error)]
#[error("name conflict lost: the cluster knows another node under this node's name")]
pub struct NameConflictLost;

/// The node and what carrying out its outputs needs.
struct Shell {
    node: Node,
    udp: UdpSocket,
    /// Seeds as configured (names are resolved at every join).
    seeds: Vec<String>,
    publish: Publish,
    /// Where finished push/pull exchanges send the peer's side.
    streams: mpsc::UnboundedSender<Finished>,
    /// The inbound streams open now, and how to close each.
    slots: Slots,
    open: std::collections::HashMap<u64, tokio::task::AbortHandle>,
    next_slot: u64,
    /// Our push/pull answer and when it was encoded.
    answer: Option<(Instant, Arc<Vec<u8>>)>,
    /// Accept errors in a row, and the pause they give.
    backoff: AcceptBackoff,
    /// Inbound streams closed to make room, since the last summary.
    evicted: u64,
    /// When closing streams may be logged again.
    evicted_logged: Instant,
    /// The reply to the leave under way, sent when the node says it is done.
    leave_done: Option<oneshot::Sender<()>>,
    refusals: Refusals,
    crypto_log: CryptoLog,
    /// How the stream tasks check a peer's side before answering.
    check: Check,
    /// The most members a push/pull may announce.
    max_members: usize,
    /// Joins asked for by command, waiting for their push/pulls.
    joins: Vec<PendingJoin>,
    /// Subscribers and open queries.
    hub: hub::Hub,
    /// Name-conflict resolutions counted (one at a time).
    votes: mpsc::UnboundedReceiver<Vote>,
    votes_tx: mpsc::UnboundedSender<Vote>,
    voting: bool,
    /// State of the generator of query ids.
    query_ids: swim::Rng,
}

impl Shell {
    fn new(
        settings: Settings,
        publish: Publish,
        udp: UdpSocket,
        streams: mpsc::UnboundedSender<Finished>,
    ) -> Shell {
        // The boot time as incarnation: a restarted node supersedes its predecessor at once.
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() as u32);
        let seed = u64::from(incarnation) ^ u64::from(std::process::id()) << 32;
        let max_members = settings.profile.max_members;
        let has_seeds = !settings.seeds.is_empty();
        let node_settings = node::Settings {
            name: settings.name,
            advertise: settings.advertise,
            tags: settings.tags,
            profile: settings.profile,
            serf: settings.serf,
            rejoin_interval: settings.rejoin_interval,
            incarnation,
            seed,
        };
        let (votes_tx, votes_rx) = mpsc::unbounded_channel();
        Shell {
            node: Node::new(node_settings, has_seeds, Instant::now()),
            udp,
            seeds: settings.seeds,
            publish,
            streams,
            slots: Slots::new(limits::MAX_INBOUND_STREAMS, limits::MAX_STREAMS_PER_IP),
            open: std::collections::HashMap::new(),
            next_slot: 0,
            answer: None,
            backoff: AcceptBackoff::default(),
            evicted: 0,
            evicted_logged: Instant::now(),
            leave_done: None,
            refusals: Refusals {
                logged: std::collections::HashSet::new(),
                last: swim::Stats::default(),
                next_summary: Instant::now() + REFUSED_SUMMARY,
            },
            check: Check::None,
            crypto_log: CryptoLog {
                logged: node::CryptoRefused::default(),
                next: [None; 3],
            },
            max_members,
            joins: Vec::new(),
            hub: hub::Hub::default(),
            votes: votes_rx,
            votes_tx,
            voting: false,
            query_ids: swim::Rng::new(seed ^ 0x5175_6572_7920_6964),
        }
    }

    /// Carries out everything the node asked for, until it asks for nothing more.
    async fn carry_out(&mut self) {
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Transmit { to, bytes } => {
                    let to = wire::canonical(to);
                    if let Err(error) = self.udp.send_to(&bytes, to).await {
                        tracing::debug!(%to, %error, "cannot send");
                    }
                }
                Output::PushPull { to, bytes } => {
                    let to = wire::canonical(to);
                    let stream = TcpStream::connect(to);
                    exchange(
                        stream,
                        (None, to),
                        Some(bytes),
                        None,
                        self.max_members,
                        self.check.clone(),
                        self.streams.clone(),
                    );
                }
                Output::Event(e) => {
                    tracing::info!(member = %e.member.name, addr = %wire::canonical(e.member.addr), status = e.member.status.as_str(), event = ?e.kind, "membership");
                    self.hub.member(&e);
                }
                Output::UserEvent(e) => {
                    tracing::info!(name = %e.name, ltime = e.ltime, bytes = e.payload.len(), "user event");
                    self.hub.user(e);
                }
                Output::Query(q) => {
                    tracing::info!(name = %q.name, from = %q.source, ltime = q.ltime, "query");
                    self.hub.query(Instant::now(), q);
                }
                Output::QueryAnswer(r) => self.hub.answer(r),
                Output::NameConflict { other } => self.resolve_conflict(other),
                Output::KeyringChanged(ring) => {
                    tracing::info!(
                        keys = ring.len(),
                        "gossip keyring changed (serf keys, or the cluster's primary key learnt)"
                    );
                    // The stream tasks check and answer with the new keyring from now on.
                    self.check = match &self.check {
                        Check::Secure(_) => nonce_seed()
                            .ok()
                            .and_then(|seed| self.node.answerer(seed))
                            .map_or_else(|| self.check.clone(), |a| Check::Secure(Arc::new(a))),
                        _ => Check::Keyring(Arc::new(ring)),
                    };
                }
                Output::QueryDone { ltime, id } => self.hub.done(ltime, id),
                Output::Detector(e) => {
                    tracing::debug!(member = %e.member.name, addr = %e.member.addr, event = ?e.kind, "failure detector");
                }
                Output::ViewChanged => {
                    // A peer that opens a stream from now on gets the new view.
                    self.answer = None;
                    self.publish
                        .view
                        .send_replace(self.node.members().cloned().collect());
                }
                Output::Refused { from, name, why } => self.refusals.note(from, &name, &why),
                Output::JoinDue => {
                    let seeds = resolve(&self.seeds).await;
                    self.node.handle(Instant::now(), Input::Join(seeds));
                }
                Output::Left => {
                    if let Some(done) = self.leave_done.take() {
                        let _ = done.send(());
                    }
                }
                Output::BadStream { from, why } => {
                    tracing::debug!(%from, %why, "push/pull ignored");
                }
            }
        }
    }

    /// A peer opened a push/pull: it gets our side once its own is read. It takes a slot,
    /// which may close the oldest stream of whoever holds the most.
    fn answer(&mut self, stream: TcpStream, peer: SocketAddr) {
        self.backoff.succeeded();
        let now = Instant::now();
        let answer = match &self.answer {
            Some((at, bytes)) if now.duration_since(*at) < ANSWER_REUSE => bytes.clone(),
            _ => {
                let bytes = Arc::new(match &self.check {
                    Check::Secure(_) => self.node.push_pull_plain(),
                    _ => self.node.push_pull_answer(),
                });
                self.answer = Some((now, bytes.clone()));
                bytes
            }
        };
        let slot = self.next_slot;
        self.next_slot += 1;
        if let Some(old) = self.slots.admit(slot, peer.ip()) {
            if let Some(task) = self.open.remove(&old) {
                task.abort();
            }
            if self.evicted == 0 && now >= self.evicted_logged {
                tracing::warn!(%peer, open = self.slots.len(), "gossip tcp: too many streams open, closing the oldest of the address holding most (logged once a minute)");
                self.evicted_logged = now + REFUSED_SUMMARY;
            }
            self.evicted += 1;
        }
        let stream = std::future::ready(Ok(stream));
        let task = exchange(
            stream,
            (Some(slot), peer),
            None,
            Some(answer),
            self.max_members,
            self.check.clone(),
            self.streams.clone(),
        );
        self.open.insert(slot, task);
    }

    /// Accepting failed (at the descriptor limit, EMFILE): when to try again; logged at most
    /// once a minute with the count.
    fn accept_failed(&mut self, error: &io::Error) -> Instant {
        let pause = self.backoff.failed();
        let now = Instant::now();
        if let Some(errors) = self.backoff.log_due(now) {
            tracing::warn!(%error, errors, open = self.slots.len(), "gossip tcp: cannot accept, pausing (logged at most once a minute)");
        }
        // Out of descriptors: the oldest stream of whoever holds most makes room for the next.
        if matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
            if let Some(task) = self.slots.evict().and_then(|old| self.open.remove(&old)) {
                task.abort();
                self.evicted += 1;
            }
        }
        now + pause
    }

    /// An exchange ended: its slot is free, and the peer's side, if whole, goes to the node.
    fn finished(&mut self, slot: Option<u64>, peer: SocketAddr, bytes: Option<Vec<u8>>) {
        if let Some(slot) = slot {
            self.slots.release(slot);
            self.open.remove(&slot);
        } else {
            for j in &mut self.joins {
                if j.waiting.remove(&peer) && bytes.is_some() {
                    j.answered += 1;
                }
            }
            self.joins_done(Instant::now());
        }
        if let Some(bytes) = bytes {
            self.stream(peer, &bytes);
        }
    }

    /// The peer's side of a finished push/pull.
    fn stream(&mut self, peer: SocketAddr, bytes: &[u8]) {
        let was = self.node.joined();
        self.node
            .handle(Instant::now(), Input::Stream { from: peer, bytes });
        if !was && self.node.joined() {
            tracing::info!(
                members = self.node.swim().members().count(),
                "joined the cluster"
            );
        }
    }

    /// Replies to the joins whose push/pulls all ended, or whose time is up.
    fn joins_done(&mut self, now: Instant) {
        let (done, waiting) = std::mem::take(&mut self.joins)
            .into_iter()
            .partition(|j| j.waiting.is_empty() || now >= j.by);
        self.joins = waiting;
        for j in done {
            if j.answered == 0 {
                // As Serf: a join that reached no one is an error. The next one tries the
                // next key, should the cluster have moved to another.
                self.node.join_failed();
                let _ = j.done.send(Err("no address answered a push/pull".into()));
            } else {
                let _ = j.done.send(Ok(j.answered));
            }
        }
    }

    /// Another node announces our name at `other`: as Serf, ask everyone (`_serf_conflict`)
    /// which address they know for it; [`Shell::vote_counted`] reads the answers.
    fn resolve_conflict(&mut self, other: SocketAddr) {
        if self.voting {
            return;
        }
        let me = self.node.swim().name().to_owned();
        let at = self
            .node
            .swim()
            .member(&me)
            .map(|m| wire::canonical(m.addr));
        tracing::warn!(name = %me, %other, "another node announces our name: asking the cluster which one holds it (_serf_conflict)");
        let ask = serf::Ask {
            name: "_serf_conflict".into(),
            payload: me.into_bytes(),
            timeout: Duration::from_millis(3200),
            ..serf::Ask::default()
        };
        let id = self.query_id();
        let (answers, mut heard) = mpsc::unbounded_channel();
        let Ok(q) = self.node.query(Instant::now(), ask, id) else {
            return;
        };
        self.hub.asked(&q, answers);
        self.voting = true;
        let votes = self.votes_tx.clone();
        tokio::spawn(async move {
            let (mut ours, mut all) = (0, 0);
            while let Some(a) = heard.recv().await {
                match a {
                    Answer::Response(_, payload) => {
                        if let Some(addr) = node::internal::conflict_addr(&payload) {
                            all += 1;
                            ours += usize::from(Some(addr) == at);
                        }
                    }
                    Answer::Done => break,
                    Answer::Ack(_) => {}
                }
            }
            let _ = votes.send((ours, all));
        });
    }

    /// The answers to our name-conflict query: with a majority we stay; without one, in an
    /// encrypted cluster (where answers are authenticated) this node stops, as Serf's agent
    /// does; in a plaintext one it only says so, since anyone could have forged the answers.
    fn vote_counted(&mut self, (ours, all): Vote) -> Option<io::Error> {
        self.voting = false;
        let majority = all / 2 + 1;
        if all == 0 || ours >= majority {
            tracing::info!(
                ours,
                answers = all,
                "name conflict: the cluster knows this node under its name; staying"
            );
            return None;
        }
        if matches!(self.check, Check::None) {
            tracing::error!(
                ours,
                answers = all,
                "name conflict: the cluster knows another node under this node's name; give each node its own [gossip] name (not stopping: in a plaintext cluster the answers could be forged)"
            );
            return None;
        }
        tracing::error!(
            ours,
            answers = all,
            "name conflict: the cluster knows another node under this node's name; leaving, as Serf does (give each node its own [gossip] name)"
        );
        Some(io::Error::other(NameConflictLost))
    }

    /// A random query id (the gossip core's seeded generator; Serf draws them at random too).
    fn query_id(&mut self) -> u32 {
        (self.query_ids.next_u64() >> 32) as u32
    }

    /// The commands of the agent RPC and the event handlers.
    fn agent_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::UserEvent {
                name,
                payload,
                coalesce,
                done,
            } => {
                let _ = done.send(self.node.user_event(now, &name, &payload, coalesce));
            }
            Command::Query { ask, answers, done } => {
                let id = self.query_id();
                let r = self
                    .node
                    .query(now, ask, id)
                    .map(|q| self.hub.asked(&q, answers));
                let _ = done.send(r);
            }
            Command::Respond {
                handle,
                payload,
                done,
            } => {
                let r = match self.hub.delivered(now, handle) {
                    Some(q) => self.node.respond(now, &q, &payload),
                    None => Err("no open query with that id".into()),
                };
                let _ = done.send(r);
            }
            Command::Subscribe { to, done } => {
                let _ = done.send(self.hub.subscribe(to));
            }
            Command::ForceLeave { node, prune, done } => {
                let _ = done.send(self.node.force_leave(now, &node, prune));
            }
            Command::SetTags { set, delete, done } => {
                let r = self.node.set_tags(now, &set, &delete);
                if let Ok(tags) = &r {
                    tracing::info!(?tags, "tags changed (serf tags)");
                }
                let _ = done.send(r);
            }
            _ => {}
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            c @ (Command::UserEvent { .. }
            | Command::Query { .. }
            | Command::Respond { .. }
            | Command::ForceLeave { .. }
            | Command::SetTags { .. }
            | Command::Subscribe { .. }) => self.agent_command(c),
            Command::Join { seeds, done } => {
                let addrs = resolve(&seeds).await;
                if addrs.is_empty() {
                    let _ = done.send(Err(format!("no address of {seeds:?} resolves")));
                    return;
                }
                let now = Instant::now();
                self.joins.push(PendingJoin {
                    waiting: addrs.iter().copied().collect(),
                    answered: 0,
                    by: now + JOIN_WAIT,
                    done,
                });
                self.node.handle(now, Input::Join(addrs));
            }
            Command::Leave { by, done } => {
                self.leave_done = Some(done);
                self.node.handle(Instant::now(), Input::Leave { by });
            }
            Command::Members(reply) => {
                let _ = reply.send(self.node.members().cloned().collect());
            }
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        self.node.handle(now, Input::Tick);
        self.refusals.summary(now, self.node.swim().stats());
        if self.evicted > 0 && now >= self.evicted_logged {
            self.evicted_logged = now + REFUSED_SUMMARY;
            tracing::warn!(
                evicted = std::mem::take(&mut self.evicted),
                "gossip tcp: streams closed to make room for new ones (too many open)"
            );
        }
        self.crypto_log.note(now, self.node.crypto_refused());
        self.joins_done(now);
    }
}
