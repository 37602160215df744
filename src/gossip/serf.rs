//! Serf's layer above the failure detector, sans-IO like `swim`: the Lamport clock, join and
//! leave intents, member status (alive, leaving, left, failed), Serf's part of a push/pull,
//! reconnect attempts towards failed members and the reaping of failed and left members after
//! configurable times.
//!
//! The rules follow Serf 0.9's (`handleNodeJoin`, `handleNodeLeave`, `handleNodeJoinIntent`,
//! `handleNodeLeaveIntent`, `MergeRemoteState`, `reconnect`, `reap`), with one difference in
//! our own view: a member that memberlist reports as having left on its own (a dead message
//! sent by itself) is `left` even when its leave intent was lost, where Serf 0.9.4 would say
//! `failed`. The node is gone on purpose either way.
//!
//! Feed it what `swim` reports (`on_swim`), Serf's user messages (`on_user`), the Serf state
//! of a push/pull (`merge_remote_state`) and ticks; drain `poll_output()`.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::msgpack::{self, Value};
use super::roll::Roll;
use super::swim::{self, EventKind as SwimKind, Rng};
use super::wire::{self, WireError, serf_kind};

mod events;
pub mod user;

pub use events::Ask;

/// Reconnect and reap timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How often one failed member may be tried again.
    pub reconnect_interval: Duration,
    /// A failed member is forgotten after this long (Serf's `reconnect_timeout`, 24 h there).
    pub reap_failed: Duration,
    /// A member that left is forgotten after this long (Serf's `tombstone_timeout`, 24 h).
    pub reap_left: Duration,
    /// How often reaping runs.
    pub reap_interval: Duration,
    /// How long an intent about a member we do not know yet is kept (Serf: 5 min).
    pub intent_timeout: Duration,
}

impl Default for Config {
    /// Container clusters want minutes, not Serf's day: names and addresses are reused.
    fn default() -> Config {
        Config {
            reconnect_interval: Duration::from_secs(30),
            reap_failed: Duration::from_secs(600),
            reap_left: Duration::from_secs(300),
            reap_interval: Duration::from_secs(15),
            intent_timeout: Duration::from_secs(300),
        }
    }
}

/// A member's status as Serf reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// In the cluster.
    Alive,
    /// Announced that it is leaving; still answering.
    Leaving,
    /// Left on purpose.
    Left,
    /// Stopped answering without leaving.
    Failed,
}

impl Status {
    /// The word `serf members` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Leaving => "leaving",
            Status::Left => "left",
            Status::Failed => "failed",
        }
    }
}

/// A member as the layer above (the control socket, the HAProxy sync) sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Unique name.
    pub name: String,
    /// Gossip address.
    pub addr: SocketAddr,
    /// Serf tags (empty when the meta cannot be read), shared between copies of the record:
    /// a changed verdict copies the record, not its tags.
    pub tags: Arc<BTreeMap<String, String>>,
    /// Serf status.
    pub status: Status,
    /// Whether the failure detector currently suspects it (an early warning).
    pub suspect: bool,
    /// Lamport time of the intent that set the status.
    pub status_ltime: u64,
    /// When the status last changed.
    pub since: Instant,
}

/// Kinds of Serf membership event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A member joined or came back.
    Join,
    /// A member left on purpose.
    Leave,
    /// A member stopped answering.
    Failed,
    /// A member's tags or address changed.
    Update,
    /// A failed or left member was forgotten.
    Reap,
}

/// A change of membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The member, after the change.
    pub member: Member,
}

/// What the driver must do, or report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A membership event.
    Event(Event),
    /// Gossip this Serf message (a user message for memberlist).
    Broadcast(Vec<u8>),
    /// Try to join this failed member again.
    Reconnect(SocketAddr),
    /// The member was reaped: the failure detector may forget it too.
    Forget(String),
    /// Something in the view changed (status or suspicion): publish it.
    Changed,
    /// A user event to deliver (handlers, RPC streams): new, and not from before our join.
    UserEvent(user::UserEvent),
    /// A query this node is to answer (its filters select us; not an internal one): deliver
    /// it, and give answers through [`Serf::respond`].
    Query(user::Query),
    /// One of Serf's internal queries (`_serf_…`) for the node to answer.
    InternalQuery(user::Query),
    /// An answer to a query this node asked, still open.
    QueryAnswer(user::QueryResponse),
    /// A query this node asked is closed: no more answers.
    QueryDone {
        /// Its Lamport time.
        ltime: u64,
        /// Its id.
        id: u32,
    },
    /// Send this Serf message straight to this address (a query's answers).
    SendTo {
        /// The asker's gossip address.
        to: SocketAddr,
        /// The message, type byte first.
        body: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    Join,
    Leave,
}

/// Serf's state in a push/pull (`messagePushPull`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PushPullState {
    /// The sender's Lamport time.
    pub ltime: u64,
    /// Each member's status time, in the sender's order.
    pub status_ltimes: Vec<(String, u64)>,
    /// Members that left.
    pub left_members: Vec<String>,
    /// The user-event clock (muster has no user events; kept for the round trip).
    pub event_ltime: u64,
    /// Recent user events, as the sender wrote them (kept opaque).
    pub events: Vec<Value>,
    /// The query clock.
    pub query_ltime: u64,
}

impl PushPullState {
    /// Encodes as `[serf push/pull type][msgpack map]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![serf_kind::PUSH_PULL];
        // Go's codec writes the fields sorted by name (seen in the golden capture).
        let body = Value::map([
            ("EventLTime", Value::Uint(self.event_ltime)),
            ("Events", Value::Array(self.events.clone())),
            ("LTime", Value::Uint(self.ltime)),
            (
                "LeftMembers",
                Value::Array(
                    self.left_members
                        .iter()
                        .map(|n| Value::Raw(n.as_bytes().to_vec()))
                        .collect(),
                ),
            ),
            ("QueryLTime", Value::Uint(self.query_ltime)),
            (
                "StatusLTimes",
                Value::Map(
                    self.status_ltimes
                        .iter()
                        .map(|(n, t)| (Value::Raw(n.as_bytes().to_vec()), Value::Uint(*t)))
                        .collect(),
                ),
            ),
        ]);
        msgpack::encode(&body, &mut out);
        out
    }

    /// Decodes what `encode` (or Serf) wrote; missing fields read as empty.
    pub fn decode(bytes: &[u8]) -> Result<PushPullState, WireError> {
        let Some((&kind, rest)) = bytes.split_first() else {
            return Err(WireError::Truncated("serf push/pull"));
        };
        if kind != serf_kind::PUSH_PULL {
            return Err(WireError::Field {
                message: "serf push/pull",
                field: "type",
            });
        }
        let v = wire::body("serf push/pull", rest)?;
        let uint = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        let name = |x: &Value| {
            x.as_bytes()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .ok_or(WireError::Field {
                    message: "serf push/pull",
                    field: "member name",
                })
        };
        let mut status_ltimes = Vec::new();
        match v.get("StatusLTimes") {
            Some(Value::Map(entries)) => {
                for (k, t) in entries {
                    let t = t.as_u64().ok_or(WireError::Field {
                        message: "serf push/pull",
                        field: "StatusLTimes",
                    })?;
                    status_ltimes.push((name(k)?, t));
                }
            }
            None | Some(Value::Nil) => {}
            Some(_) => {
                return Err(WireError::Field {
                    message: "serf push/pull",
                    field: "StatusLTimes",
                });
            }
        }
        let mut left_members = Vec::new();
        match v.get("LeftMembers") {
            Some(Value::Array(names)) => {
                for n in names {
                    left_members.push(name(n)?);
                }
            }
            None | Some(Value::Nil) => {}
            Some(_) => {
                return Err(WireError::Field {
                    message: "serf push/pull",
                    field: "LeftMembers",
                });
            }
        }
        let events = match v.get("Events") {
            Some(Value::Array(e)) => e.clone(),
            _ => Vec::new(),
        };
        Ok(PushPullState {
            ltime: uint("LTime"),
            status_ltimes,
            left_members,
            event_ltime: uint("EventLTime"),
            events,
            query_ltime: uint("QueryLTime"),
        })
    }
}

/// Encodes a join or leave intent: `[type][msgpack {LTime, Node(, Prune)}]`.
pub fn intent(kind: u8, ltime: u64, node: &str) -> Vec<u8> {
    let mut out = vec![kind];
    let mut fields = vec![
        ("LTime", Value::Uint(ltime)),
        ("Node", Value::Raw(node.as_bytes().to_vec())),
    ];
    if kind == serf_kind::LEAVE {
        fields.push(("Prune", Value::Bool(false)));
    }
    msgpack::encode(&Value::map(fields), &mut out);
    out
}

/// The furthest ahead of our clock a Lamport time from the network may be. Real clocks move
/// by one per intent or event; a forged time far ahead would otherwise pin a member's status
/// for good (a leave at 2^64−1 could never be refuted). Within it, the member's refutation
/// (one more) is always newer, compared serially as the clock may wrap.
pub const MAX_LTIME_JUMP: u64 = 1 << 40;

/// Most intents kept about members not known yet (a flood of forged names stops here).
const MAX_INTENTS: usize = 1024;

/// Go's `LamportClock.Witness`: move past what we saw (serially: the clock may wrap). The
/// membership, user-event and query clocks all move so.
fn witness(clock: &mut u64, t: u64) {
    if !later(*clock, t) {
        *clock = t.wrapping_add(1);
    }
}

/// Whether a Lamport time from the network is plausible for `clock`: not further ahead of it
/// than [`MAX_LTIME_JUMP`]. An absurd one is ignored, never witnessed.
fn plausible(clock: u64, t: u64) -> bool {
    (t.wrapping_sub(clock) as i64) <= MAX_LTIME_JUMP as i64
}

/// Whether Lamport time `a` is later than `b`, serially (RFC 1982 over 64 bits).
pub fn later(a: u64, b: u64) -> bool {
    (a.wrapping_sub(b) as i64) > 0
}

/// A converged cluster's Serf view, shared by the nodes started from it (see
/// [`swim::View`]).
#[derive(Debug, Clone)]
pub struct View {
    members: Roll<Member>,
    clock: u64,
}

impl View {
    /// The view that lists exactly `members`, with the Lamport clock at `clock`.
    pub fn new(members: impl IntoIterator<Item = Member>, clock: u64) -> View {
        View {
            members: members.into_iter().map(|m| (m.name.clone(), m)).collect(),
            clock,
        }
    }
}

/// One node's Serf view.
pub struct Serf {
    config: Config,
    me: String,
    clock: u64,
    members: Roll<Member>,
    /// Intents about members not known yet: name → (ltime, kind, when received).
    intents: BTreeMap<String, (u64, Intent, Instant)>,
    outputs: VecDeque<Output>,
    next_reconnect: Instant,
    next_reap: Instant,
    rng: Rng,
    leaving: bool,
    /// The user-event clock and what it has seen (names and payloads per Lamport time).
    event_clock: u64,
    events: user::Seen<(String, Vec<u8>)>,
    /// The query clock and the query ids it has seen.
    query_clock: u64,
    queries: user::Seen<u32>,
    /// Queries this node asked, by (Lamport time, id): when answers stop being taken, and who
    /// has acknowledged and answered (each once).
    asked: BTreeMap<(u64, u32), Asked>,
    /// Whether a push/pull has been merged (the first one sets where events start).
    merged: bool,
}

/// A query this node asked, open until `until`.
#[derive(Debug)]
struct Asked {
    until: Instant,
    acks: std::collections::BTreeSet<String>,
    answers: std::collections::BTreeSet<String>,
}

/// Most queries of this node open at once.
const MAX_ASKED: usize = 64;

impl Serf {
    /// The layer for the node `me` at `addr` with `tags`.
    pub fn new(
        config: Config,
        me: &str,
        addr: SocketAddr,
        tags: BTreeMap<String, String>,
        seed: u64,
        now: Instant,
    ) -> Serf {
        let mut members = Roll::new();
        members.insert(
            me.to_owned(),
            Member {
                name: me.to_owned(),
                addr,
                tags: Arc::new(tags),
                status: Status::Alive,
                suspect: false,
                status_ltime: 0,
                since: now,
            },
        );
        Serf {
            next_reconnect: now + config.reconnect_interval,
            next_reap: now + config.reap_interval,
            config,
            me: me.to_owned(),
            clock: 0,
            members,
            intents: BTreeMap::new(),
            outputs: VecDeque::new(),
            rng: Rng::new(seed),
            leaving: false,
            // Serf starts both clocks at 1.
            event_clock: 1,
            events: user::Seen::default(),
            query_clock: 1,
            queries: user::Seen::default(),
            asked: BTreeMap::new(),
            merged: false,
        }
    }

    /// Takes `view` as this node's own (see [`swim::Swim::adopt`]): it must list this node,
    /// whose own entry is kept as it is here; the clock moves up to the view's.
    pub fn adopt(&mut self, view: &View) {
        let own = self.members.get(&self.me).cloned();
        assert!(
            view.members.contains_key(&self.me),
            "the view must list the node that adopts it"
        );
        self.members = view.members.clone();
        if let Some(own) = own {
            if self.members.get(&self.me) != Some(&own) {
                self.members.insert(self.me.clone(), own);
            }
        }
        self.witness(view.clock);
        self.merged = true;
    }

    /// The Lamport clock.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// Every member known, self included, by name.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// A member by name.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.get(name)
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When `tick` is next due.
    pub fn poll_timeout(&self) -> Instant {
        let asked = self.asked.values().map(|a| a.until).min();
        let t = self.next_reconnect.min(self.next_reap);
        asked.map_or(t, |a| a.min(t))
    }

    fn witness(&mut self, t: u64) {
        witness(&mut self.clock, t);
    }

    fn plausible(&self, t: u64) -> bool {
        plausible(self.clock, t)
    }

    fn emit(&mut self, kind: EventKind, name: &str) {
        if let Some(m) = self.members.get(name) {
            self.outputs.push_back(Output::Event(Event {
                kind,
                member: m.clone(),
            }));
        }
        self.outputs.push_back(Output::Changed);
    }

    /// Announces this node's join (after a successful join, as Serf does).
    pub fn announce_join(&mut self, now: Instant) {
        let t = self.clock;
        self.witness(t);
        let me = self.me.clone();
        self.join_intent(now, t, &me);
        self.outputs
            .push_back(Output::Broadcast(intent(serf_kind::JOIN, t, &me)));
    }

    /// Starts a graceful leave: returns nothing, queues the leave intent to broadcast. The
    /// failure detector's own leave follows in the driver.
    pub fn leave(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        self.clock = self.clock.wrapping_add(1);
        let t = self.clock;
        let me = self.me.clone();
        self.leave_intent(now, t, &me);
        self.outputs
            .push_back(Output::Broadcast(intent(serf_kind::LEAVE, t, &me)));
    }

    /// `serf force-leave`: a leave intent on a member's behalf, as Serf's `RemoveFailedNode`: a
    /// failed member becomes left (an alive one refutes it); with `prune` it is forgotten at
    /// once. An unknown name is an error (Serf says nothing).
    pub fn force_leave(&mut self, now: Instant, node: &str, prune: bool) -> Result<(), String> {
        if node == self.me {
            return Err("this node cannot force itself out; stop it instead".into());
        }
        if !self.members.contains_key(node) {
            return Err(format!("no member named {node:?}"));
        }
        let t = self.clock;
        self.clock = self.clock.wrapping_add(1);
        self.leave_intent(now, t, node);
        self.outputs
            .push_back(Output::Broadcast(intent(serf_kind::LEAVE, t, node)));
        let gone = self
            .members
            .get(node)
            .is_some_and(|m| matches!(m.status, Status::Left | Status::Failed));
        if prune && gone {
            if let Some(m) = self.members.remove(node) {
                self.outputs.push_back(Output::Event(Event {
                    kind: EventKind::Reap,
                    member: m,
                }));
                self.outputs.push_back(Output::Forget(node.to_owned()));
                self.outputs.push_back(Output::Changed);
            }
        }
        Ok(())
    }

    /// This node's tags changed (`serf tags`).
    pub fn set_own_tags(&mut self, tags: BTreeMap<String, String>) {
        if let Some(m) = self.members.get_mut(&self.me) {
            m.tags = Arc::new(tags);
            self.outputs.push_back(Output::Changed);
        }
    }

    /// What the failure detector reported.
    pub fn on_swim(&mut self, now: Instant, e: &swim::Event) {
        let m = &e.member;
        match e.kind {
            SwimKind::Join => self.node_join(now, m),
            SwimKind::Update => {
                let tags = wire::decode_tags(&m.meta).unwrap_or_default();
                if let Some(s) = self.members.get(&m.name) {
                    if *s.tags != tags || s.addr != m.addr {
                        if let Some(s) = self.members.get_mut(&m.name) {
                            s.tags = Arc::new(tags);
                            s.addr = m.addr;
                        }
                        self.emit(EventKind::Update, &m.name);
                    }
                } else {
                    self.node_join(now, m);
                }
            }
            SwimKind::Suspect | SwimKind::Refuted => {
                let suspect = e.kind == SwimKind::Suspect;
                if self
                    .members
                    .get(&m.name)
                    .is_some_and(|s| s.suspect != suspect)
                {
                    if let Some(s) = self.members.get_mut(&m.name) {
                        s.suspect = suspect;
                    }
                    self.outputs.push_back(Output::Changed);
                }
            }
            SwimKind::Fail => self.node_gone(now, &m.name, false),
            SwimKind::Leave => self.node_gone(now, &m.name, true),
        }
    }

    fn node_join(&mut self, now: Instant, n: &swim::Member) {
        let tags = wire::decode_tags(&n.meta).unwrap_or_default();
        match self.members.get_mut(&n.name) {
            Some(m) => {
                m.status = Status::Alive;
                m.suspect = false;
                m.addr = n.addr;
                if *m.tags != tags {
                    m.tags = Arc::new(tags);
                }
                m.since = now;
            }
            None => {
                let mut m = Member {
                    name: n.name.clone(),
                    addr: n.addr,
                    tags: Arc::new(tags),
                    status: Status::Alive,
                    suspect: false,
                    status_ltime: 0,
                    since: now,
                };
                // An intent that came before the member: the newest one counts.
                if let Some((t, kind, _)) = self.intents.remove(&n.name) {
                    m.status_ltime = t;
                    if kind == Intent::Leave {
                        m.status = Status::Leaving;
                    }
                }
                self.members.insert(n.name.clone(), m);
            }
        }
        self.emit(EventKind::Join, &n.name);
    }

    fn node_gone(&mut self, now: Instant, name: &str, by_itself: bool) {
        let Some(m) = self.members.get_mut(name) else {
            return;
        };
        let status = match m.status {
            Status::Leaving => Status::Left,
            Status::Alive if by_itself => Status::Left,
            Status::Alive => Status::Failed,
            Status::Left | Status::Failed => return,
        };
        m.status = status;
        m.suspect = false;
        m.since = now;
        let kind = if status == Status::Left {
            EventKind::Leave
        } else {
            EventKind::Failed
        };
        self.emit(kind, name);
    }

    /// A Serf user message from gossip: an intent, a user event, a query or an answer (other
    /// kinds are ignored). Returns whether it was new, in which case it was queued for
    /// rebroadcast (answers are not rebroadcast).
    pub fn on_user(&mut self, now: Instant, body: &[u8]) -> bool {
        let Some((&kind, rest)) = body.split_first() else {
            return false;
        };
        match kind {
            serf_kind::USER_EVENT => return self.on_event(rest),
            serf_kind::QUERY => return self.on_query(now, body, rest),
            serf_kind::QUERY_RESPONSE => {
                self.on_answer(rest);
                return false;
            }
            serf_kind::RELAY => {
                self.on_relay(rest);
                return false;
            }
            serf_kind::JOIN | serf_kind::LEAVE => {}
            _ => return false,
        }
        let Ok((v, _)) = msgpack::decode(rest) else {
            return false;
        };
        let (Some(t), Some(node)) = (
            v.get("LTime").and_then(Value::as_u64),
            v.get("Node").and_then(Value::as_bytes),
        ) else {
            return false;
        };
        let Ok(node) = std::str::from_utf8(node) else {
            return false;
        };
        if super::validate::name(node).is_err() || !self.plausible(t) {
            return false;
        }
        let node = node.to_owned();
        let fresh = if kind == serf_kind::JOIN {
            self.join_intent(now, t, &node)
        } else {
            self.leave_intent(now, t, &node)
        };
        if fresh {
            self.outputs.push_back(Output::Broadcast(body.to_vec()));
        }
        fresh
    }

    fn remember_intent(&mut self, now: Instant, name: &str, t: u64, kind: Intent) -> bool {
        match self.intents.get(name) {
            Some((old, _, _)) if !later(t, *old) => false,
            None if self.intents.len() >= MAX_INTENTS => false,
            _ => {
                self.intents.insert(name.to_owned(), (t, kind, now));
                true
            }
        }
    }

    fn join_intent(&mut self, now: Instant, t: u64, node: &str) -> bool {
        self.witness(t);
        // Looked at before it is changed: a member map shared with other nodes (the
        // simulator's large clusters) is copied only where something changes, and every
        // push/pull brings an intent for every member.
        let Some(m) = self.members.get(node) else {
            return self.remember_intent(now, node, t, Intent::Join);
        };
        if !later(t, m.status_ltime) {
            return false;
        }
        let Some(m) = self.members.get_mut(node) else {
            return false;
        };
        m.status_ltime = t;
        if m.status == Status::Leaving {
            m.status = Status::Alive;
            self.outputs.push_back(Output::Changed);
        }
        true
    }

    fn leave_intent(&mut self, now: Instant, t: u64, node: &str) -> bool {
        self.witness(t);
        let Some(m) = self.members.get(node) else {
            return self.remember_intent(now, node, t, Intent::Leave);
        };
        if !later(t, m.status_ltime) {
            return false;
        }
        if node == self.me && !self.leaving {
            // A stale leave about us (we restarted): refute it with a newer join.
            let t = self.clock;
            let me = self.me.clone();
            self.join_intent(now, t, &me);
            self.outputs
                .push_back(Output::Broadcast(intent(serf_kind::JOIN, t, &me)));
            return false;
        }
        let Some(m) = self.members.get_mut(node) else {
            return false;
        };
        match m.status {
            Status::Alive => {
                m.status = Status::Leaving;
                m.status_ltime = t;
                self.outputs.push_back(Output::Changed);
                true
            }
            Status::Failed => {
                m.status = Status::Left;
                m.status_ltime = t;
                m.since = now;
                self.emit(EventKind::Leave, node);
                true
            }
            Status::Leaving | Status::Left => false,
        }
    }

    /// Serf's part of our side of a push/pull.
    pub fn local_state(&self) -> Vec<u8> {
        PushPullState {
            ltime: self.clock,
            status_ltimes: self
                .members
                .values()
                .map(|m| (m.name.clone(), m.status_ltime))
                .collect(),
            left_members: self
                .members
                .values()
                .filter(|m| m.status == Status::Left)
                .map(|m| m.name.clone())
                .collect(),
            event_ltime: self.event_clock,
            events: self.recent_events(),
            query_ltime: self.query_clock,
        }
        .encode()
    }

    /// Serf's part of the other side of a push/pull: its clock and every member's intent.
    pub fn merge_remote_state(&mut self, now: Instant, bytes: &[u8]) -> Result<(), WireError> {
        if bytes.is_empty() {
            // memberlist without Serf above it sends no user state.
            return Ok(());
        }
        let pp = PushPullState::decode(bytes)?;
        if pp.ltime != 0 && self.plausible(pp.ltime) {
            self.witness(pp.ltime.wrapping_sub(1));
        }
        self.merge_events(pp.event_ltime, pp.query_ltime, &pp.events);
        let left: std::collections::BTreeSet<&String> = pp.left_members.iter().collect();
        for (name, t) in &pp.status_ltimes {
            if super::validate::name(name).is_err() || !self.plausible(*t) {
                continue;
            }
            if left.contains(name) {
                let was_alive = self
                    .members
                    .get(name)
                    .is_some_and(|m| m.status == Status::Alive);
                if self.leave_intent(now, *t, name) && was_alive {
                    // Pass it on, so that the member hears it and refutes it if it is false.
                    self.outputs
                        .push_back(Output::Broadcast(intent(serf_kind::LEAVE, *t, name)));
                }
            } else {
                self.join_intent(now, *t, name);
            }
        }
        Ok(())
    }

    /// Reconnects and reaps when due.
    pub fn tick(&mut self, now: Instant) {
        if now >= self.next_reconnect {
            self.next_reconnect = now + self.config.reconnect_interval;
            self.reconnect();
        }
        if now >= self.next_reap {
            self.next_reap = now + self.config.reap_interval;
            self.reap(now);
        }
        self.close_queries(now);
    }

    fn reconnect(&mut self) {
        if self.leaving {
            return;
        }
        let failed: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|m| m.status == Status::Failed)
            .map(|m| m.addr)
            .collect();
        if failed.is_empty() {
            return;
        }
        // Serf's rule: try with probability failed / alive, so a large healthy cluster does
        // not flood a few dead addresses, while a split half tries hard to heal.
        let alive = self
            .members
            .values()
            .filter(|m| m.status == Status::Alive)
            .count()
            .max(1);
        let roll = self.rng.below(1_000_000) as f64 / 1_000_000.0;
        if roll > failed.len() as f64 / alive as f64 {
            return;
        }
        let pick = failed[self.rng.below(failed.len())];
        self.outputs.push_back(Output::Reconnect(pick));
    }

    fn reap(&mut self, now: Instant) {
        let due: Vec<String> = self
            .members
            .values()
            .filter(|m| match m.status {
                Status::Failed => now.saturating_duration_since(m.since) >= self.config.reap_failed,
                Status::Left => now.saturating_duration_since(m.since) >= self.config.reap_left,
                _ => false,
            })
            .map(|m| m.name.clone())
            .collect();
        for name in due {
            if let Some(m) = self.members.remove(&name) {
                self.outputs.push_back(Output::Event(Event {
                    kind: EventKind::Reap,
                    member: m,
                }));
                self.outputs.push_back(Output::Forget(name));
                self.outputs.push_back(Output::Changed);
            }
        }
        let timeout = self.config.intent_timeout;
        self.intents
            .retain(|_, (_, _, at)| now.saturating_duration_since(*at) < timeout);
    }
}

#[cfg(test)]
mod tests;
