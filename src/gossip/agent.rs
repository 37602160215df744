//! Serf's agent RPC over TCP (`[gossip] rpc_addr`, default `127.0.0.1:7373` as Serf's): the
//! shell around [`rpc::Session`], so Debian's `serf` CLI works against muster unchanged
//! (`serf members`, `-format=json`, `-status`, `-tag`, `-name`, `serf join`, `serf info`,
//! `serf rtt`). Requests go to the gossip driver as [`Command`]s.
//!
//! At most [`MAX_CLIENTS`] connections are open at once (a new one closes the oldest); a
//! connection has [`HANDSHAKE_TIME`] to shake hands, and one request may take
//! [`REQUEST_TIME`]. Commands muster does not serve yet are answered with an error that says
//! so, and the connection stays open.

// A shell: it reads the clock for the accept back-off.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::driver::Command;
use super::limits::{AcceptBackoff, Slots};
use super::rpc::{self, MemberInfo, Request, Session, Step};

/// Most RPC connections open at once.
pub const MAX_CLIENTS: usize = 64;
/// How long a new connection has to shake hands.
pub const HANDSHAKE_TIME: Duration = Duration::from_secs(5);
/// How long one request may take (a join waits for its push/pulls).
pub const REQUEST_TIME: Duration = Duration::from_secs(10);

/// What the RPC server knows of its node.
#[derive(Clone)]
pub struct Agent {
    /// The node's name.
    pub name: String,
    /// The key `auth` must give; `None`: no auth.
    pub auth: Option<String>,
    /// Whether gossip is encrypted (for `serf info`).
    pub encrypted: bool,
    /// The node's tags (for `serf info`).
    pub tags: BTreeMap<String, String>,
    /// The gossip driver.
    pub commands: mpsc::UnboundedSender<Command>,
}

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

/// One client: requests in, answers out, until it closes or breaks the protocol.
async fn client(mut stream: TcpStream, peer: SocketAddr, agent: &Agent) {
    let mut session = Session::new(agent.auth.clone());
    let mut buf = vec![0u8; 16 * 1024];
    let shaken_by = tokio::time::Instant::now() + HANDSHAKE_TIME;
    let mut shaken = false;
    loop {
        let read = if shaken {
            stream.read(&mut buf).await
        } else {
            match tokio::time::timeout_at(shaken_by, stream.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::debug!(%peer, "rpc: no handshake in time, closed");
                    return;
                }
            }
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        session.feed(&buf[..n]);
        while let Some(step) = session.step() {
            let out = match step {
                Step::Reply(bytes) => {
                    shaken = true;
                    bytes
                }
                Step::Close { reply, why } => {
                    tracing::debug!(%peer, %why, "rpc: connection closed");
                    if let Some(r) = reply {
                        let _ = stream.write_all(&r).await;
                    }
                    return;
                }
                Step::Call { seq, request } => {
                    match tokio::time::timeout(REQUEST_TIME, answer(agent, seq, request)).await {
                        Ok(bytes) => bytes,
                        Err(_) => rpc::header(seq, "muster: the request timed out"),
                    }
                }
            };
            if stream.write_all(&out).await.is_err() {
                return;
            }
        }
    }
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
        Request::Stop { .. } => rpc::header(seq, ""),
        other => rpc::header(seq, &format!("muster does not serve {} yet", name(&other))),
    }
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
                tags: m.tags,
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
            agent
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
    ]
}

/// A request's command name, for the "not served yet" answer.
fn name(r: &Request) -> &'static str {
    match r {
        Request::Auth { .. } => "auth",
        Request::Event { .. } => "event",
        Request::ForceLeave { .. } => "force-leave",
        Request::Join { .. } => "join",
        Request::Members => "members",
        Request::MembersFiltered(_) => "members-filtered",
        Request::Tags { .. } => "tags",
        Request::Stream { .. } => "stream",
        Request::Monitor { .. } => "monitor",
        Request::Stop { .. } => "stop",
        Request::Leave => "leave",
        Request::Query(_) => "query",
        Request::Respond { .. } => "respond",
        Request::Key { .. } => "keys",
        Request::ListKeys => "list-keys",
        Request::Stats => "stats",
        Request::GetCoordinate { .. } => "get-coordinate",
    }
}
