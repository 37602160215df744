//! Serf's agent RPC over TCP (`[gossip] rpc_addr`, default `127.0.0.1:7373` as Serf's): the
//! shell around [`rpc::Session`], so Debian's `serf` CLI works against muster unchanged: every
//! command of Serf's RPC, streams (`stream`, `monitor`, `query`) included. Requests go to the
//! gossip driver as [`Command`]s.
//!
//! At most [`MAX_CLIENTS`] connections are open at once (a new one closes the oldest); a
//! connection has [`HANDSHAKE_TIME`] to shake hands, and one request may take
//! [`REQUEST_TIME`].

// A shell: it reads the clock for the accept back-off.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use base64::Engine;

use super::driver::{Answer, Command, Heard};
use super::limits::{AcceptBackoff, Slots};
use super::node::internal;
use super::rpc::KeyOp;
use super::rpc::{self, MemberInfo, Request, Session, Step};
use super::serf::EventKind;
use super::serf::user::QueryFilter;

pub mod client;

/// Most RPC connections open at once.
pub const MAX_CLIENTS: usize = 64;
/// How long a new connection has to shake hands.
pub const HANDSHAKE_TIME: Duration = Duration::from_secs(5);
/// How long one request may take (a join waits for its push/pulls, a key change for every
/// member's answer).
pub const REQUEST_TIME: Duration = Duration::from_secs(30);

/// What the RPC server knows of its node.
#[derive(Clone)]
pub struct Agent {
    /// The node's name.
    pub name: String,
    /// The key `auth` must give; `None`: no auth.
    pub auth: Option<String>,
    /// Whether gossip is encrypted (for `serf info`).
    pub encrypted: bool,
    /// The gossip driver.
    pub commands: mpsc::UnboundedSender<Command>,
    /// Gives muster's log lines from now on (`serf monitor`).
    pub monitor: Option<Monitor>,
    /// Stops muster (`serf leave`: it leaves the cluster, then stops its services).
    pub stop: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
}

/// A source of muster's log lines, one receiver per monitor.
pub type Monitor = std::sync::Arc<dyn Fn() -> mpsc::Receiver<String> + Send + Sync>;

/// Listens on `addr` and serves RPC clients in a task (within a tokio runtime).
pub fn serve(addr: SocketAddr, agent: Agent) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let local = listener.local_addr()?;
    tokio::spawn(accept_loop(listener, agent));
    Ok(local)
}

async fn accept_loop(listener: TcpListener, agent: Agent) {
    let mut slots = Slots::new(MAX_CLIENTS, MAX_CLIENTS);
    let mut open = std::collections::HashMap::new();
    let mut backoff = AcceptBackoff::default();
    let (done_tx, mut done) = mpsc::unbounded_channel::<u64>();
    let mut next = 0u64;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            Some(id) = done.recv() => {
                slots.release(id);
                open.remove(&id);
                continue;
            }
        };
        let (stream, peer) = match accepted {
            Ok(s) => {
                backoff.succeeded();
                s
            }
            Err(error) => {
                let pause = backoff.failed();
                if let Some(errors) = backoff.log_due(std::time::Instant::now()) {
                    tracing::warn!(%error, errors, "rpc: cannot accept, pausing (logged at most once a minute)");
                }
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let id = next;
        next += 1;
        if let Some(old) = slots.admit(id, peer.ip()) {
            if let Some(task) = open.remove(&old) {
                tokio::task::AbortHandle::abort(&task);
            }
        }
        let agent = agent.clone();
        let done_tx = done_tx.clone();
        let task = tokio::spawn(async move {
            client(stream, peer, &agent).await;
            let _ = done_tx.send(id);
        });
        open.insert(id, task.abort_handle());
    }
}

/// Answers a slow client may leave unread before stream records are dropped for it.
const CLIENT_BACKLOG: usize = 1024;
/// Most streams and queries one connection runs at once.
const MAX_STREAMS: usize = 16;
/// Longest query a client may ask for.
const MAX_QUERY_TIME: Duration = Duration::from_secs(300);

/// One client: requests in, answers out (through a writer task, so streams and queries can
/// send records while requests are read), until it closes or breaks the protocol.
async fn client(stream: TcpStream, peer: SocketAddr, agent: &Agent) {
    let (mut read, mut write) = stream.into_split();
    let (out, mut outgoing) = mpsc::channel::<Vec<u8>>(CLIENT_BACKLOG);
    let writer = tokio::spawn(async move {
        while let Some(bytes) = outgoing.recv().await {
            if write.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let mut streams: BTreeMap<u64, tokio::task::AbortHandle> = BTreeMap::new();
    let mut session = Session::new(agent.auth.clone());
    let mut buf = vec![0u8; 16 * 1024];
    let shaken_by = tokio::time::Instant::now() + HANDSHAKE_TIME;
    'conn: loop {
        let n = match tokio::time::timeout_at(shaken_by, read.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            Err(_) if session.shaken() => match read.read(&mut buf).await {
                Ok(n) if n > 0 => n,
                _ => break,
            },
            Err(_) => {
                tracing::debug!(%peer, "rpc: no handshake in time, closed");
                break;
            }
            _ => break,
        };
        session.feed(&buf[..n]);
        while let Some(step) = session.step() {
            let bytes = match step {
                Step::Reply(bytes) => bytes,
                Step::Close { reply, why } => {
                    tracing::debug!(%peer, %why, "rpc: connection closed");
                    if let Some(r) = reply {
                        let _ = out.send(r).await;
                    }
                    break 'conn;
                }
                Step::Call { seq, request } => {
                    streams.retain(|_, t| !t.is_finished());
                    match call(agent, seq, request, &out, &mut streams).await {
                        Some(bytes) => bytes,
                        None => continue,
                    }
                }
            };
            if out.send(bytes).await.is_err() {
                break 'conn;
            }
        }
    }
    for t in streams.values() {
        t.abort();
    }
    drop(out);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
}

/// Carries out one request: the answer to send, or `None` when a stream or query task
/// sends its own.
async fn call(
    agent: &Agent,
    seq: u64,
    request: Request,
    out: &mpsc::Sender<Vec<u8>>,
    streams: &mut BTreeMap<u64, tokio::task::AbortHandle>,
) -> Option<Vec<u8>> {
    let long = matches!(request, Request::Stream { .. } | Request::Query(_));
    if long && streams.len() >= MAX_STREAMS {
        return Some(rpc::header(
            seq,
            "too many streams and queries on this connection",
        ));
    }
    match request {
        Request::Stream { kind } => {
            let Some(filter) = rpc::StreamFilter::parse(&kind) else {
                return Some(rpc::header(seq, "Invalid event filter"));
            };
            if streams.contains_key(&seq) {
                return Some(rpc::header(seq, "Stream with given sequence exists"));
            }
            let task = stream_events(agent.clone(), seq, filter, out.clone()).await;
            match task {
                Ok(t) => {
                    streams.insert(seq, t);
                    None
                }
                Err(e) => Some(rpc::header(seq, &e)),
            }
        }
        Request::Query(q) => match start_query(agent, seq, q, out.clone()).await {
            Ok(t) => {
                streams.insert(seq, t);
                None
            }
            Err(e) => Some(rpc::header(seq, &e)),
        },
        Request::Monitor { level } => {
            let Some(min) = log_rank(&level) else {
                return Some(rpc::header(
                    seq,
                    &format!("Unknown log level: {}", level.to_uppercase()),
                ));
            };
            let Some(source) = &agent.monitor else {
                return Some(rpc::header(seq, "muster's log is not available here"));
            };
            if streams.contains_key(&u64::MAX) {
                return Some(rpc::header(seq, "Monitor already exists"));
            }
            let mut lines = source();
            let _ = out.send(rpc::header(seq, "")).await;
            let out = out.clone();
            let task = tokio::spawn(async move {
                while let Some(line) = lines.recv().await {
                    if line_rank(&line) < min {
                        continue;
                    }
                    let record = [rpc::header(seq, ""), rpc::log_record(&line)].concat();
                    if out.try_send(record).is_err() && out.is_closed() {
                        return;
                    }
                }
            });
            // One monitor per connection, as Serf; `stop` names it by its own seq.
            streams.insert(u64::MAX, task.abort_handle());
            streams.insert(seq, task.abort_handle());
            None
        }
        Request::Stop { seq: which } => {
            if let Some(t) = streams.remove(&which) {
                t.abort();
            }
            Some(rpc::header(seq, ""))
        }
        other => Some(
            match tokio::time::timeout(REQUEST_TIME, answer(agent, seq, other)).await {
                Ok(bytes) => bytes,
                Err(_) => rpc::header(seq, "muster: the request timed out"),
            },
        ),
    }
}

/// Subscribes to the driver and sends the events `filter` wants as records under `seq`
/// (after the answer to the `stream` request itself).
async fn stream_events(
    agent: Agent,
    seq: u64,
    filter: rpc::StreamFilter,
    out: mpsc::Sender<Vec<u8>>,
) -> Result<tokio::task::AbortHandle, String> {
    let (tx, mut heard) = mpsc::channel(super::driver::hub::SUBSCRIBER_BACKLOG);
    let (done, taken) = oneshot::channel();
    agent
        .commands
        .send(Command::Subscribe { to: tx, done })
        .map_err(|_| "gossip has stopped".to_owned())?;
    if !taken.await.unwrap_or(false) {
        return Err("too many event streams".into());
    }
    let _ = out.send(rpc::header(seq, "")).await;
    let task = tokio::spawn(async move {
        while let Some(h) = heard.recv().await {
            let Some(record) = record_for(&filter, h) else {
                continue;
            };
            // A client that does not read loses records; it never holds gossip back.
            if out
                .try_send([rpc::header(seq, ""), record].concat())
                .is_err()
                && out.is_closed()
            {
                return;
            }
        }
    });
    Ok(task.abort_handle())
}

/// The record a stream sends for what it heard, if its filter wants it.
fn record_for(filter: &rpc::StreamFilter, h: Heard) -> Option<Vec<u8>> {
    match h {
        Heard::Member(e) => {
            let kind = match e.kind {
                EventKind::Join => "member-join",
                EventKind::Leave => "member-leave",
                EventKind::Failed => "member-failed",
                EventKind::Update => "member-update",
                EventKind::Reap => "member-reap",
            };
            filter.wants(kind, None).then(|| {
                let m = MemberInfo {
                    name: e.member.name,
                    addr: e.member.addr,
                    tags: std::sync::Arc::unwrap_or_clone(e.member.tags),
                    status: e.member.status.as_str(),
                };
                rpc::member_event_record(kind, &[m])
            })
        }
        Heard::User(e) => filter
            .wants("user", Some(&e.name))
            .then(|| rpc::user_event_record(e.ltime, &e.name, &e.payload, e.coalesce)),
        Heard::Query { handle, query } => filter
            .wants("query", Some(&query.name))
            .then(|| rpc::query_event_record(handle, query.ltime, &query.name, &query.payload)),
    }
}

/// Asks a query and sends its acknowledgements, answers and end as records under `seq`.
async fn start_query(
    agent: &Agent,
    seq: u64,
    q: rpc::Query,
    out: mpsc::Sender<Vec<u8>>,
) -> Result<tokio::task::AbortHandle, String> {
    // As Serf's agent: the internal prefix is refused, but for `_serf_ping` without a payload
    // (`serf reachability`).
    if q.name.starts_with("_serf_") && (q.name != "_serf_ping" || !q.payload.is_empty()) {
        return Err("Queries cannot contain the '_serf_' prefix".into());
    }
    let mut filters = Vec::new();
    if !q.filter_nodes.is_empty() {
        filters.push(QueryFilter::Nodes(q.filter_nodes));
    }
    for (tag, expr) in q.filter_tags {
        filters.push(QueryFilter::Tag { tag, expr });
    }
    let timeout = match q.timeout_ns {
        0 => default_query_timeout(members(agent).await.map_or(1, |m| m.len())),
        ns => Duration::from_nanos(ns).min(MAX_QUERY_TIME),
    };
    let ask = crate::gossip::serf::Ask {
        name: q.name,
        payload: q.payload,
        filters,
        ack: q.request_ack,
        timeout,
        relay_factor: u8::try_from(q.relay_factor).unwrap_or(u8::MAX),
    };
    let (answers, mut heard) = mpsc::unbounded_channel();
    let (done, sent) = oneshot::channel();
    agent
        .commands
        .send(Command::Query { ask, answers, done })
        .map_err(|_| "gossip has stopped".to_owned())?;
    sent.await.map_err(|_| "gossip has stopped".to_owned())??;
    let _ = out.send(rpc::header(seq, "")).await;
    let task = tokio::spawn(async move {
        while let Some(a) = heard.recv().await {
            let record = match &a {
                Answer::Ack(from) => rpc::query_record("ack", from, None),
                Answer::Response(from, p) => rpc::query_record("response", from, Some(p)),
                Answer::Done => rpc::query_record("done", "", None),
            };
            if out
                .send([rpc::header(seq, ""), record].concat())
                .await
                .is_err()
                || a == Answer::Done
            {
                return;
            }
        }
    });
    Ok(task.abort_handle())
}

/// Serf's log levels, lowest first (`ERR` is Serf's name for error).
fn log_rank(level: &str) -> Option<u8> {
    match level.to_ascii_uppercase().as_str() {
        "TRACE" => Some(0),
        "DEBUG" => Some(1),
        "INFO" | "" => Some(2),
        "WARN" => Some(3),
        "ERR" | "ERROR" => Some(4),
        _ => None,
    }
}

/// The level of one of muster's lines (`muster: LEVEL …`, or JSON with `"level"`).
fn line_rank(line: &str) -> u8 {
    let word = line
        .strip_prefix("muster: ")
        .and_then(|l| l.split_whitespace().next())
        .or_else(|| {
            line.split("\"level\":\"")
                .nth(1)
                .and_then(|l| l.split('"').next())
        })
        .unwrap_or("info");
    log_rank(word).unwrap_or(2)
}

/// Serf's default query timeout: gossip interval × 16 × ⌈log10(n + 1)⌉ (3.2 s below 10
/// members with the LAN interval of 200 ms).
fn default_query_timeout(n: usize) -> Duration {
    let scale = ((n as f64 + 1.0).log10().ceil() as u32).max(1);
    Duration::from_millis(200) * 16 * scale
}

/// The answer to one request: header and body.
async fn answer(agent: &Agent, seq: u64, request: Request) -> Vec<u8> {
    let with_body = |body: Vec<u8>| [rpc::header(seq, ""), body].concat();
    match request {
        Request::Members => match members(agent).await {
            Some(list) => with_body(rpc::members_body(&list)),
            None => rpc::header(seq, "gossip has stopped"),
        },
        Request::MembersFiltered(filter) => match members(agent).await {
            Some(list) => match rpc::filter(list, &filter) {
                Ok(list) => with_body(rpc::members_body(&list)),
                Err(e) => rpc::header(seq, &e.to_string()),
            },
            None => rpc::header(seq, "gossip has stopped"),
        },
        Request::Join { existing, .. } => {
            let (done, reply) = oneshot::channel();
            let asked = agent.commands.send(Command::Join {
                seeds: existing,
                done,
            });
            match (asked, reply.await) {
                (Ok(()), Ok(Ok(n))) => with_body(rpc::join_body(n)),
                (Ok(()), Ok(Err(e))) => [rpc::header(seq, &e), rpc::join_body(0)].concat(),
                _ => rpc::header(seq, "gossip has stopped"),
            }
        }
        Request::Stats => match members(agent).await {
            Some(list) => with_body(rpc::stats_body(&stats(agent, &list))),
            None => rpc::header(seq, "gossip has stopped"),
        },
        Request::GetCoordinate { .. } => with_body(rpc::no_coordinate_body()),
        Request::Event {
            name,
            payload,
            coalesce,
        } => {
            let (done, reply) = oneshot::channel();
            let asked = agent.commands.send(Command::UserEvent {
                name,
                payload,
                coalesce,
                done,
            });
            match (asked, reply.await) {
                (Ok(()), Ok(Ok(()))) => rpc::header(seq, ""),
                (Ok(()), Ok(Err(e))) => rpc::header(seq, &e),
                _ => rpc::header(seq, "gossip has stopped"),
            }
        }
        Request::Respond { id, payload } => {
            let (done, reply) = oneshot::channel();
            let asked = agent.commands.send(Command::Respond {
                handle: id,
                payload,
                done,
            });
            match (asked, reply.await) {
                (Ok(()), Ok(Ok(()))) => rpc::header(seq, ""),
                (Ok(()), Ok(Err(e))) => rpc::header(seq, &e),
                _ => rpc::header(seq, "gossip has stopped"),
            }
        }
        Request::Key { op, key } => {
            let name = match op {
                KeyOp::Install => "_serf_install-key",
                KeyOp::Use => "_serf_use-key",
                KeyOp::Remove => "_serf_remove-key",
            };
            match base64::engine::general_purpose::STANDARD.decode(key.trim()) {
                Ok(raw) => key_query(agent, seq, name, &raw).await,
                Err(e) => rpc::header(seq, &format!("the key is not base64: {e}")),
            }
        }
        Request::ListKeys => key_query(agent, seq, "_serf_list-keys", &[]).await,
        Request::ForceLeave { node, prune } => {
            let (done, reply) = oneshot::channel();
            let asked = agent
                .commands
                .send(Command::ForceLeave { node, prune, done });
            done_or_error(seq, asked.is_ok(), reply.await)
        }
        Request::Tags { set, delete } => {
            let (done, reply) = oneshot::channel();
            let asked = agent.commands.send(Command::SetTags { set, delete, done });
            done_or_error(seq, asked.is_ok(), reply.await.map(|r| r.map(|_| ())))
        }
        Request::Leave => match &agent.stop {
            Some(stop) => {
                tracing::info!("serf leave: leaving the cluster and stopping, as for docker stop");
                stop();
                rpc::header(seq, "")
            }
            None => rpc::header(seq, "this muster cannot be stopped through the RPC"),
        },
        // `auth` is the session's; streams, queries, monitors and `stop` are `call`'s.
        _ => rpc::header(seq, "Unsupported command"),
    }
}

/// The answer to a command that answers done or an error.
fn done_or_error(
    seq: u64,
    asked: bool,
    reply: Result<Result<(), String>, oneshot::error::RecvError>,
) -> Vec<u8> {
    match (asked, reply) {
        (true, Ok(Ok(()))) => rpc::header(seq, ""),
        (true, Ok(Err(e))) => rpc::header(seq, &e),
        _ => rpc::header(seq, "gossip has stopped"),
    }
}

/// A key query (`serf keys`) to every member, and Serf's summary of the answers: per key how
/// many members hold it, per member its error.
async fn key_query(agent: &Agent, seq: u64, name: &str, key: &[u8]) -> Vec<u8> {
    let Some(list) = members(agent).await else {
        return rpc::header(seq, "gossip has stopped");
    };
    let nodes = list.iter().filter(|m| m.status == "alive").count();
    let ask = crate::gossip::serf::Ask {
        name: name.to_owned(),
        payload: internal::key_request(key),
        filters: Vec::new(),
        ack: false,
        // Twice Serf's default, and each answer relayed once more: a key change that reports
        // a member missing when its answer was only late or lost would be retried for nothing.
        timeout: (default_query_timeout(list.len()) * 2).min(Duration::from_secs(25)),
        relay_factor: 1,
    };
    let (answers, mut heard) = mpsc::unbounded_channel();
    let (done, sent) = oneshot::channel();
    if agent
        .commands
        .send(Command::Query { ask, answers, done })
        .is_err()
    {
        return rpc::header(seq, "gossip has stopped");
    }
    match sent.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return rpc::header(seq, &e),
        Err(_) => return rpc::header(seq, "gossip has stopped"),
    }
    let mut summary = rpc::KeySummary {
        nodes,
        ..rpc::KeySummary::default()
    };
    while let Some(a) = heard.recv().await {
        let Answer::Response(from, payload) = a else {
            if a == Answer::Done {
                break;
            }
            continue;
        };
        summary.responses += 1;
        match internal::KeyAnswer::decode(&payload) {
            Some(k) if k.result => {
                for key in k.keys {
                    *summary.keys.entry(key).or_default() += 1;
                }
            }
            Some(k) => {
                summary.errors += 1;
                summary.messages.insert(from, k.message);
            }
            None => {
                summary.errors += 1;
                summary
                    .messages
                    .insert(from, "invalid key query response".into());
            }
        }
        if summary.responses >= nodes {
            break;
        }
    }
    let error = if summary.errors > 0 {
        format!("{}/{} nodes reported failure", summary.errors, nodes)
    } else if summary.responses != nodes {
        format!("{}/{} nodes reported success", summary.responses, nodes)
    } else {
        String::new()
    };
    [rpc::header(seq, &error), rpc::key_body(&summary)].concat()
}

/// The members as the RPC shows them.
async fn members(agent: &Agent) -> Option<Vec<MemberInfo>> {
    let (tx, rx) = oneshot::channel();
    agent.commands.send(Command::Members(tx)).ok()?;
    let members = rx.await.ok()?;
    Some(
        members
            .into_iter()
            .map(|m| MemberInfo {
                name: m.name,
                addr: m.addr,
                tags: std::sync::Arc::unwrap_or_clone(m.tags),
                status: m.status.as_str(),
            })
            .collect(),
    )
}

/// `serf info`'s sections, from what muster knows.
fn stats(agent: &Agent, members: &[MemberInfo]) -> Vec<(&'static str, Vec<(String, String)>)> {
    let count = |status: &str| members.iter().filter(|m| m.status == status).count();
    let pair = |k: &str, v: String| (k.to_owned(), v);
    vec![
        ("agent", vec![pair("name", agent.name.clone())]),
        (
            "runtime",
            vec![
                pair("os", std::env::consts::OS.to_owned()),
                pair("arch", std::env::consts::ARCH.to_owned()),
                pair("version", format!("muster {}", env!("CARGO_PKG_VERSION"))),
            ],
        ),
        (
            "serf",
            vec![
                pair("members", members.len().to_string()),
                pair("failed", count("failed").to_string()),
                pair("left", count("left").to_string()),
                pair("encrypted", agent.encrypted.to_string()),
            ],
        ),
        (
            "tags",
            // This node's tags as gossip announces them now (`serf tags` changes them).
            members
                .iter()
                .find(|m| m.name == agent.name)
                .map(|m| m.tags.clone().into_iter().collect())
                .unwrap_or_default(),
        ),
    ]
}
