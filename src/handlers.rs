//! Event handlers with Serf's contract (`[gossip] event_handlers`, the syntax of `serf agent
//! -event-handler`): each handler is a script run through `/bin/sh -c` with Serf's
//! environment (`SERF_EVENT`, `SERF_SELF_NAME`, `SERF_SELF_ROLE`, `SERF_TAG_*`,
//! `SERF_USER_EVENT`/`SERF_USER_LTIME`, `SERF_QUERY_NAME`/`SERF_QUERY_LTIME`) and Serf's
//! stdin (one `name\taddr\trole\ttags` line per member, or the payload with a newline added);
//! a query handler's stdout is its answer (at most 1024 bytes, Serf's response limit).
//!
//! How they run, decided here:
//! - **Never in gossip's way.** A dispatcher task subscribes to the gossip driver with a
//!   bounded channel (the driver's hub drops and counts what it cannot take) and hands each
//!   event to the queue of every handler it matches; a full queue ([`QUEUE`] events) drops
//!   the event, counted and logged.
//! - **One at a time per entry, in event order.** Each entry of `event_handlers` (with all
//!   its types: `member-join,member-leave=…` is one entry) has its own worker, so a join and
//!   the leave after it reach the script in that order; entries run independently of each
//!   other (Serf runs every handler of every event one after another in one loop, so one
//!   slow script delays all).
//! - **The node's own join first**, as Serf's handlers hear it at start.
//! - **Every event on its own.** muster does not coalesce: a member failing and rejoining a
//!   moment later gives `member-failed` then `member-join`, where Serf's agent coalescing
//!   (3 s, quiet 1 s) keeps only the last; a script therefore gets one member line per run.
//! - **Bounded.** `handler_timeout` (30 s by default), then SIGKILL to the handler's process
//!   group (logged); stdout and stderr go to muster's log line by line with the handler's
//!   entry as field; the script is a helper of [`Children`], reaped by the supervisor.
//! - **What peers say is data.** Names, tags, event names and payloads reach the script only
//!   through its environment and stdin (tabs and newlines escaped as Serf does, NUL bytes
//!   written `\0`), never in its command line, which is the configured text alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::config::handlers::{EventFilter, EventHandler};
use crate::gossip::driver::{Command, Heard};
use crate::gossip::serf::{EventKind, Member};
use crate::supervisor::children::Children;

/// Events one handler may have waiting before new ones are dropped (Serf's agent buffers 64).
pub const QUEUE: usize = 64;
/// Largest answer a query handler gives (Serf's default response size limit).
pub const RESPONSE_LIMIT: usize = 1024;

/// The node itself, as its handlers see it.
#[derive(Debug, Clone)]
pub struct SelfNode {
    /// Its node name.
    pub name: String,
    /// Its tags (the configured ones).
    pub tags: BTreeMap<String, String>,
}

/// One run of a handler: what it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Variables added to muster's environment.
    pub env: BTreeMap<String, String>,
    /// Its standard input.
    pub stdin: Vec<u8>,
    /// The query to answer with its stdout, by hub handle.
    pub respond: Option<u64>,
}

/// Serf's name of the event (`SERF_EVENT`).
pub fn event_name(h: &Heard) -> &'static str {
    match h {
        Heard::Member(e) => match e.kind {
            EventKind::Join => "member-join",
            EventKind::Leave => "member-leave",
            EventKind::Failed => "member-failed",
            EventKind::Update => "member-update",
            EventKind::Reap => "member-reap",
        },
        Heard::User(_) => "user",
        Heard::Query { .. } => "query",
    }
}

/// Whether a handler with these filters runs for `h`.
pub fn matches(filters: &[EventFilter], h: &Heard) -> bool {
    filters.iter().any(|f| match (f, h) {
        (EventFilter::Any, _) => true,
        (EventFilter::Member(kind), Heard::Member(_)) => *kind == event_name(h),
        (EventFilter::User(name), Heard::User(e)) => name.as_ref().is_none_or(|n| *n == e.name),
        (EventFilter::Query(name), Heard::Query { query, .. }) => {
            name.as_ref().is_none_or(|n| *n == query.name)
        }
        _ => false,
    })
}

/// A field of a member line, as Serf cleans it: tab and newline written `\t` and `\n`.
pub fn clean(text: &str) -> String {
    text.replace('\t', "\\t").replace('\n', "\\n")
}

/// An environment value: the text, with NUL (which no environment can hold) written `\0`.
fn env_value(text: &str) -> String {
    text.replace('\0', "\\0")
}

/// `SERF_TAG_<KEY>`: the key upper-cased, every character but `A-Z`, `0-9` and `_` made `_`.
pub fn tag_variable(key: &str) -> String {
    let mut out = String::from("SERF_TAG_");
    for c in key.chars().flat_map(char::to_uppercase) {
        out.push(
            if c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            },
        );
    }
    out
}

/// One stdin line for a member: `name\taddr\trole\ttag=v,tag=v\n` (an IPv4 address written as
/// such, as Go prints one that came in 16 bytes).
pub fn member_line(m: &Member) -> String {
    let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let role = m.tags.get("role").map(String::as_str).unwrap_or("");
    format!(
        "{}\t{}\t{}\t{}\n",
        clean(&m.name),
        crate::gossip::wire::canonical(m.addr).ip(),
        clean(role),
        clean(&tags.join(","))
    )
}

/// A payload as a script reads it: a newline added unless it ends with one (empty stays empty).
fn payload(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.last().is_some_and(|b| *b != b'\n') {
        out.push(b'\n');
    }
    out
}

/// What a handler is given for `h` on node `me`.
pub fn invocation(me: &SelfNode, h: &Heard) -> Invocation {
    let mut env = BTreeMap::new();
    env.insert("SERF_EVENT".to_owned(), event_name(h).to_owned());
    env.insert("SERF_SELF_NAME".to_owned(), env_value(&me.name));
    let role = me.tags.get("role").map(String::as_str).unwrap_or("");
    env.insert("SERF_SELF_ROLE".to_owned(), env_value(role));
    for (k, v) in &me.tags {
        env.insert(tag_variable(k), env_value(v));
    }
    let (stdin, respond) = match h {
        Heard::Member(e) => (member_line(&e.member).into_bytes(), None),
        Heard::User(e) => {
            env.insert("SERF_USER_EVENT".to_owned(), env_value(&e.name));
            env.insert("SERF_USER_LTIME".to_owned(), e.ltime.to_string());
            (payload(&e.payload), None)
        }
        Heard::Query { handle, query } => {
            env.insert("SERF_QUERY_NAME".to_owned(), env_value(&query.name));
            env.insert("SERF_QUERY_LTIME".to_owned(), query.ltime.to_string());
            (payload(&query.payload), Some(*handle))
        }
    };
    Invocation {
        env,
        stdin,
        respond,
    }
}

/// Starts the handlers: subscribes to gossip and runs each entry's worker.
pub async fn start(
    handlers: Vec<EventHandler>,
    timeout: Duration,
    me: SelfNode,
    commands: mpsc::UnboundedSender<Command>,
    children: Children,
) -> anyhow::Result<()> {
    if handlers.is_empty() {
        return Ok(());
    }
    let (tx, mut heard) = mpsc::channel(crate::gossip::driver::hub::SUBSCRIBER_BACKLOG);
    let (done, taken) = oneshot::channel();
    commands
        .send(Command::Subscribe { to: tx, done })
        .map_err(|_| anyhow::anyhow!("gossip has stopped"))?;
    if !taken.await.unwrap_or(false) {
        anyhow::bail!("gossip takes no more subscribers");
    }
    let mut queues = Vec::new();
    for h in handlers {
        let (q, rx) = mpsc::channel(QUEUE);
        let spec: Arc<str> = h.spec.clone().into();
        let worker = Worker {
            spec: spec.clone(),
            script: h.script,
            timeout,
            commands: commands.clone(),
            children: children.clone(),
        };
        tokio::spawn(worker.run(rx));
        tracing::info!(handler = %spec, "event handler ready");
        queues.push(Queue {
            filters: h.filters,
            spec,
            tx: q,
            dropped: 0,
        });
    }
    // Serf's handlers hear the node's own join first: so do these.
    let (tx, rx) = oneshot::channel();
    let own = match commands.send(Command::Members(tx)) {
        Ok(()) => rx.await.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let first = own.into_iter().find(|m| m.name == me.name).map(|member| {
        Heard::Member(crate::gossip::serf::Event {
            kind: EventKind::Join,
            member,
        })
    });
    tokio::spawn(async move {
        let mut first = first;
        while let Some(h) = match first.take() {
            Some(h) => Some(h),
            None => heard.recv().await,
        } {
            dispatch(&mut queues, &me, &h);
        }
    });
    Ok(())
}

/// One entry's queue, as the dispatcher holds it.
struct Queue {
    filters: Vec<EventFilter>,
    spec: Arc<str>,
    tx: mpsc::Sender<Invocation>,
    /// Events this entry lost because its queue was full.
    dropped: u64,
}

/// Hands `h` to every entry it matches, never waiting: a full queue loses it (counted, logged
/// at the first loss and each power of two).
fn dispatch(queues: &mut [Queue], me: &SelfNode, h: &Heard) {
    let mut inv = None;
    for q in queues.iter_mut().filter(|q| matches(&q.filters, h)) {
        let i = inv.get_or_insert_with(|| invocation(me, h)).clone();
        if q.tx.try_send(i).is_err() {
            q.dropped += 1;
            if q.dropped.is_power_of_two() {
                tracing::warn!(handler = %q.spec, dropped = q.dropped, event = event_name(h), "event handler behind: events dropped");
            }
        }
    }
}

/// Runs one entry's script for each event in turn.
struct Worker {
    spec: Arc<str>,
    script: String,
    timeout: Duration,
    commands: mpsc::UnboundedSender<Command>,
    children: Children,
}

impl Worker {
    async fn run(self, mut queue: mpsc::Receiver<Invocation>) {
        while let Some(inv) = queue.recv().await {
            self.once(inv).await;
        }
    }

    async fn once(&self, inv: Invocation) {
        let mut service = crate::config::Service::defaults(
            "event-handler",
            vec!["/bin/sh".into(), "-c".into(), self.script.clone()],
        );
        let event = inv.env.get("SERF_EVENT").cloned().unwrap_or_default();
        service.environment = inv.env;
        let spec = self.spec.clone();
        let sink: crate::supervisor::children::LineSink = Arc::new(move |stderr, line| {
            let stream = if stderr { "stderr" } else { "stdout" };
            tracing::info!(handler = %spec, stream, "{line}");
        });
        let ran = self
            .children
            .run_piped(&service, inv.stdin, self.timeout, sink)
            .await;
        let piped = match ran {
            Ok(p) => p,
            Err(error) => {
                tracing::warn!(handler = %self.spec, %event, %error, "event handler did not run");
                return;
            }
        };
        match piped.status {
            None => {
                tracing::warn!(handler = %self.spec, %event, timeout = ?self.timeout, "event handler ran past gossip.handler_timeout: its process group was killed");
            }
            Some(s) if !s.success() => {
                tracing::warn!(handler = %self.spec, %event, status = %s, "event handler failed");
            }
            Some(_) => {
                if let Some(handle) = inv.respond.filter(|_| !piped.stdout.is_empty()) {
                    self.respond(handle, piped.stdout).await;
                }
            }
        }
    }

    async fn respond(&self, handle: u64, mut answer: Vec<u8>) {
        if answer.len() > RESPONSE_LIMIT {
            tracing::warn!(handler = %self.spec, bytes = answer.len(), limit = RESPONSE_LIMIT, "query answer truncated");
            answer.truncate(RESPONSE_LIMIT);
        }
        let (done, reply) = oneshot::channel();
        let sent = self.commands.send(Command::Respond {
            handle,
            payload: answer,
            done,
        });
        let error = match (sent, reply.await) {
            (Ok(()), Ok(Ok(()))) => return,
            (Ok(()), Ok(Err(e))) => e,
            _ => "gossip has stopped".to_owned(),
        };
        tracing::warn!(handler = %self.spec, %error, "query answer not sent");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]

    use std::net::SocketAddr;
    use std::time::Instant;

    use super::*;
    use crate::config::handlers::parse;
    use crate::gossip::serf::{self, Status};

    fn me() -> SelfNode {
        SelfNode {
            name: "ha".into(),
            tags: [("role", "balancer"), ("dc-name", "eu 1")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into(),
        }
    }

    fn member(kind: EventKind, name: &str, tags: &[(&str, &str)]) -> Heard {
        Heard::Member(serf::Event {
            kind,
            member: Member {
                name: name.into(),
                addr: SocketAddr::from((
                    std::net::Ipv4Addr::new(192, 168, 42, 3).to_ipv6_mapped(),
                    7946,
                )),
                tags: std::sync::Arc::new(
                    tags.iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                status: Status::Alive,
                suspect: false,
                status_ltime: 1,
                since: Instant::now(),
            },
        })
    }

    fn user(name: &str, payload: &[u8]) -> Heard {
        Heard::User(crate::gossip::serf::user::UserEvent {
            ltime: 7,
            name: name.into(),
            payload: payload.to_vec(),
            coalesce: true,
        })
    }

    fn check(spec: &str, h: &Heard, runs: bool) {
        let handler = parse(spec).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(matches(&handler.filters, h), runs, "{spec} for {h:?}");
    }

    #[test]
    fn handlers_run_for_the_events_they_name() {
        let join = member(EventKind::Join, "s1", &[]);
        let failed = member(EventKind::Failed, "s1", &[]);
        check("member-join,member-leave=/x", &join, true);
        check("member-leave,member-failed=/x", &join, false);
        check("member-leave,member-failed=/x", &failed, true);
        check("/x", &failed, true);
        check("user:deploy=/x", &user("deploy", b""), true);
        check("user:deploy=/x", &user("deployed", b""), false);
        check("user=/x", &user("anything", b""), true);
        check("member-join=/x", &user("member-join", b""), false);
        check("query=/x", &user("deploy", b""), false);
    }

    #[test]
    fn a_member_event_gives_serf_s_environment_and_line() {
        let h = member(
            EventKind::Failed,
            "s\t1\nx",
            &[("role", "backend"), ("port", "3000")],
        );
        let inv = invocation(&me(), &h);
        let env: Vec<(&str, &str)> = inv
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            env,
            [
                ("SERF_EVENT", "member-failed"),
                ("SERF_SELF_NAME", "ha"),
                ("SERF_SELF_ROLE", "balancer"),
                ("SERF_TAG_DC_NAME", "eu 1"),
                ("SERF_TAG_ROLE", "balancer"),
            ]
        );
        assert_eq!(
            String::from_utf8_lossy(&inv.stdin),
            "s\\t1\\nx\t192.168.42.3\tbackend\tport=3000,role=backend\n"
        );
        assert_eq!(inv.respond, None);
    }

    #[test]
    fn user_events_and_queries_give_their_payload_with_a_newline() {
        let inv = invocation(&me(), &user("deploy;rm -rf /", b"v1.2"));
        assert_eq!(inv.env["SERF_USER_EVENT"], "deploy;rm -rf /");
        assert_eq!(inv.env["SERF_USER_LTIME"], "7");
        assert_eq!(inv.stdin, b"v1.2\n");
        assert_eq!(invocation(&me(), &user("e", b"a\n")).stdin, b"a\n");
        assert_eq!(invocation(&me(), &user("e", b"")).stdin, b"");
        assert_eq!(
            invocation(&me(), &user("e\0x", b"")).env["SERF_USER_EVENT"],
            "e\\0x"
        );
        let q = Heard::Query {
            handle: 42,
            query: crate::gossip::serf::user::Query {
                ltime: 9,
                id: 1,
                addr: [127, 0, 0, 1].into(),
                port: 7946,
                source: "n1".into(),
                filters: Vec::new(),
                flags: 0,
                relay_factor: 0,
                timeout: Duration::from_secs(1),
                name: "uptime".into(),
                payload: b"x".to_vec(),
            },
        };
        let inv = invocation(&me(), &q);
        assert_eq!(inv.env["SERF_EVENT"], "query");
        assert_eq!(inv.env["SERF_QUERY_NAME"], "uptime");
        assert_eq!(inv.env["SERF_QUERY_LTIME"], "9");
        assert_eq!(inv.stdin, b"x\n");
        assert_eq!(inv.respond, Some(42));
        check("query:uptime=/x", &q, true);
        check("query:load=/x", &q, false);
    }

    #[test]
    fn a_full_queue_loses_events_and_counts_them_without_waiting() {
        let entry = |spec: &str, n| {
            let (tx, rx) = mpsc::channel(n);
            let h = parse(spec).unwrap();
            let q = Queue {
                filters: h.filters,
                spec: h.spec.into(),
                tx,
                dropped: 0,
            };
            (q, rx)
        };
        let (joins, mut joins_rx) = entry("member-join=/j", 2);
        let (all, mut all_rx) = entry("/all", 8);
        let mut queues = [joins, all];
        for n in ["a", "b", "c"] {
            dispatch(&mut queues, &me(), &member(EventKind::Join, n, &[]));
        }
        dispatch(&mut queues, &me(), &user("deploy", b""));
        assert_eq!((queues[0].dropped, queues[1].dropped), (1, 0));
        let first = joins_rx.try_recv().unwrap();
        assert!(String::from_utf8_lossy(&first.stdin).starts_with("a\t"));
        assert!(String::from_utf8_lossy(&joins_rx.try_recv().unwrap().stdin).starts_with("b\t"));
        assert!(
            joins_rx.try_recv().is_err(),
            "c was dropped, the user event not matched"
        );
        let events: Vec<String> = std::iter::from_fn(|| all_rx.try_recv().ok())
            .map(|i| i.env["SERF_EVENT"].clone())
            .collect();
        assert_eq!(
            events,
            ["member-join", "member-join", "member-join", "user"]
        );
    }

    #[test]
    fn tag_variables_are_upper_case_and_plain() {
        assert_eq!(tag_variable("role"), "SERF_TAG_ROLE");
        assert_eq!(tag_variable("a.b-c d"), "SERF_TAG_A_B_C_D");
        assert_eq!(tag_variable("é$"), "SERF_TAG___");
    }
}
