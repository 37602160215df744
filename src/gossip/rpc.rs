//! Serf's agent RPC, the pure part: what `serf members -rpc-addr=…` and every other `serf`
//! subcommand speak to an agent. MessagePack objects back to back on one TCP connection: a
//! request header `{Command, Seq}`, then a body for the commands that take one; each answer is
//! a header `{Seq, Error}`, then a body for the commands that give one. Streaming commands
//! (`monitor`, `stream`, `query`) answer several records under their request's `Seq`.
//!
//! [`Session`] reads requests from the bytes a connection delivers: it enforces the handshake
//! (version 1, first), the optional auth key, and a bound on every object, and hands out typed
//! [`Request`]s. The `body` functions write the answers. Checked against the traffic of
//! Debian's `serf` CLI with a real agent (`tests/golden/serf-rpc.txt`).
//!
//! Everything here comes from whoever can reach the RPC address: nothing is trusted. A
//! request larger than [`MAX_OBJECT`] closes the connection; strings are kept as given, for
//! the agent to validate.

use std::collections::BTreeMap;

use super::msgpack::{self, DecodeError, Value};

/// The largest request object read; anything longer closes the connection. Serf's own limits
/// are far below (user events 512 bytes, queries 1 KiB).
pub const MAX_OBJECT: usize = 64 * 1024;
/// The one RPC version Serf's agents speak.
pub const VERSION: u64 = 1;

/// A request, as its command and body give it. Missing fields take Go's zero values.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `auth {AuthKey}`.
    Auth {
        /// The key given.
        key: String,
    },
    /// `event {Name, Payload, Coalesce}`: a user event.
    Event {
        /// The event's name.
        name: String,
        /// Its payload.
        payload: Vec<u8>,
        /// Whether handlers may coalesce it with others of its name.
        coalesce: bool,
    },
    /// `force-leave {Node, Prune}`.
    ForceLeave {
        /// The failed member to mark as left.
        node: String,
        /// Whether to forget it at once.
        prune: bool,
    },
    /// `join {Existing, Replay}`.
    Join {
        /// Addresses to join (`host[:port]`).
        existing: Vec<String>,
        /// Whether old user events may be replayed.
        replay: bool,
    },
    /// `members`.
    Members,
    /// `members-filtered {Tags, Status, Name}` (each a regular expression, anchored).
    MembersFiltered(Filter),
    /// `tags {Tags, DeleteTags}`.
    Tags {
        /// Tags to set.
        set: BTreeMap<String, String>,
        /// Tags to delete.
        delete: Vec<String>,
    },
    /// `stream {Type}`: events as records.
    Stream {
        /// Which events (Serf's filter syntax, `*` for all).
        kind: String,
    },
    /// `monitor {LogLevel}`: log lines as records.
    Monitor {
        /// The lowest level shown.
        level: String,
    },
    /// `stop {Stop}`: ends a stream or monitor.
    Stop {
        /// The `Seq` of the request that started it.
        seq: u64,
    },
    /// `leave`.
    Leave,
    /// `query {…}`.
    Query(Query),
    /// `respond {ID, Payload}`: the answer to a query a stream delivered.
    Respond {
        /// The query's id, as the stream gave it.
        id: u64,
        /// The answer.
        payload: Vec<u8>,
    },
    /// `install-key`, `use-key`, `remove-key` `{Key}`.
    Key {
        /// Which of the three.
        op: KeyOp,
        /// The key, base64.
        key: String,
    },
    /// `list-keys`.
    ListKeys,
    /// `stats`.
    Stats,
    /// `get-coordinate {Node}`.
    GetCoordinate {
        /// The member whose network coordinate is asked for.
        node: String,
    },
}

/// What `members-filtered` keeps: members whose every listed tag matches, whose status and
/// name match (empty: anything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Tag name → pattern of its value; the tag must be present.
    pub tags: BTreeMap<String, String>,
    /// Pattern of the status.
    pub status: String,
    /// Pattern of the name.
    pub name: String,
}

/// A query as a client asks for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// Only these members answer (empty: all).
    pub filter_nodes: Vec<String>,
    /// Only members whose tags match these patterns answer.
    pub filter_tags: BTreeMap<String, String>,
    /// Whether members acknowledge receipt.
    pub request_ack: bool,
    /// How many other members relay each answer.
    pub relay_factor: u64,
    /// Go's `time.Duration`: nanoseconds; 0 means the agent's default.
    pub timeout_ns: u64,
    /// The query's name.
    pub name: String,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// The key commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOp {
    /// `install-key`.
    Install,
    /// `use-key`.
    Use,
    /// `remove-key`.
    Remove,
}

/// One step of a session.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A request to carry out; answer it under `seq`.
    Call {
        /// The request's `Seq`.
        seq: u64,
        /// What it asks.
        request: Request,
    },
    /// An answer the session gives by itself (the handshake, a refusal).
    Reply(Vec<u8>),
    /// Send `reply` (if any), then close the connection.
    Close {
        /// The last answer.
        reply: Option<Vec<u8>>,
        /// Why, for the log.
        why: String,
    },
}

/// A connection's requests, read from the bytes it delivers.
#[derive(Debug)]
pub struct Session {
    buf: Vec<u8>,
    /// A header read whose body has not come yet.
    header: Option<(String, u64)>,
    shaken: bool,
    /// The key `auth` must give (`None`: no auth).
    auth_key: Option<String>,
    authed: bool,
    closed: bool,
}

impl Session {
    /// A new connection's session; with `auth_key`, every command but the handshake and
    /// `auth` needs a successful `auth` first.
    pub fn new(auth_key: Option<String>) -> Session {
        Session {
            buf: Vec::new(),
            header: None,
            shaken: false,
            auth_key,
            authed: false,
            closed: false,
        }
    }

    /// Whether the handshake was done.
    pub fn shaken(&self) -> bool {
        self.shaken
    }

    /// Appends bytes the connection delivered.
    pub fn feed(&mut self, bytes: &[u8]) {
        if !self.closed {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next step, `None` until more bytes come. After a `Close`, always `None`.
    pub fn step(&mut self) -> Option<Step> {
        if self.closed {
            return None;
        }
        let object = match self.object() {
            Ok(Some(v)) => v,
            Ok(None) => return None,
            Err(why) => return Some(self.close(None, why)),
        };
        match self.header.take() {
            None => self.on_header(&object),
            Some((command, seq)) => self.on_body(&command, seq, &object),
        }
    }

    /// The next whole object, if the buffer holds one.
    fn object(&mut self) -> Result<Option<Value>, String> {
        match msgpack::decode(&self.buf) {
            Ok((v, used)) => {
                self.buf.drain(..used);
                Ok(Some(v))
            }
            Err(DecodeError::Truncated(_)) if self.buf.len() <= MAX_OBJECT => Ok(None),
            Err(DecodeError::Truncated(_)) => {
                Err(format!("a request object of more than {MAX_OBJECT} bytes"))
            }
            Err(e) => Err(format!("not MessagePack: {e}")),
        }
    }

    fn close(&mut self, reply: Option<Vec<u8>>, why: String) -> Step {
        self.closed = true;
        self.buf = Vec::new();
        Step::Close { reply, why }
    }

    fn on_header(&mut self, v: &Value) -> Option<Step> {
        let (Some(command), Some(seq)) = (
            v.get("Command").and_then(Value::as_str),
            v.get("Seq").and_then(Value::as_u64),
        ) else {
            return Some(self.close(None, "a request header without Command and Seq".into()));
        };
        let command = command.to_owned();
        if command != "handshake" && !self.shaken {
            let reply = header(seq, "Handshake required");
            return Some(self.close(Some(reply), "a command before the handshake".into()));
        }
        let needs_auth = self.auth_key.is_some() && !self.authed;
        if needs_auth && command != "handshake" && command != "auth" {
            let reply = header(seq, "Authentication required");
            return Some(self.close(Some(reply), "a command before auth".into()));
        }
        let bodiless = match command.as_str() {
            "members" => Some(Request::Members),
            "leave" => Some(Request::Leave),
            "list-keys" => Some(Request::ListKeys),
            "stats" => Some(Request::Stats),
            _ => None,
        };
        if let Some(request) = bodiless {
            return Some(Step::Call { seq, request });
        }
        if !takes_body(&command) {
            let reply = header(seq, "Unsupported command");
            let why = format!("unsupported command {:?}", clip(&command));
            return Some(self.close(Some(reply), why));
        }
        self.header = Some((command, seq));
        self.step()
    }

    fn on_body(&mut self, command: &str, seq: u64, body: &Value) -> Option<Step> {
        let request = match command {
            "handshake" => return Some(self.handshake(seq, body)),
            "auth" => return Some(self.auth(seq, body)),
            _ => parse_body(command, body),
        };
        Some(match request {
            Ok(request) => Step::Call { seq, request },
            Err(why) => self.close(None, format!("{command}: {why}")),
        })
    }

    fn handshake(&mut self, seq: u64, body: &Value) -> Step {
        let version = body.get("Version").and_then(Value::as_u64).unwrap_or(0);
        let error = if version != VERSION {
            "Unsupported IPC version"
        } else if self.shaken {
            "Handshake already performed"
        } else {
            self.shaken = true;
            ""
        };
        Step::Reply(header(seq, error))
    }

    fn auth(&mut self, seq: u64, body: &Value) -> Step {
        let given = body.get("AuthKey").and_then(Value::as_str).unwrap_or("");
        let error = match &self.auth_key {
            Some(key) if constant_time_eq(key.as_bytes(), given.as_bytes()) => {
                self.authed = true;
                ""
            }
            Some(_) => "Invalid authentication token",
            None => "",
        };
        Step::Reply(header(seq, error))
    }
}

/// Commands whose header a body follows.
fn takes_body(command: &str) -> bool {
    matches!(
        command,
        "handshake"
            | "auth"
            | "event"
            | "force-leave"
            | "join"
            | "members-filtered"
            | "tags"
            | "stream"
            | "monitor"
            | "stop"
            | "query"
            | "respond"
            | "install-key"
            | "use-key"
            | "remove-key"
            | "get-coordinate"
    )
}

/// A body read into its request.
fn parse_body(command: &str, b: &Value) -> Result<Request, String> {
    if !matches!(b, Value::Map(_)) {
        return Err("the body is not a map".into());
    }
    Ok(match command {
        "event" => Request::Event {
            name: text(b, "Name")?,
            payload: bytes(b, "Payload")?,
            coalesce: flag(b, "Coalesce")?,
        },
        "force-leave" => Request::ForceLeave {
            node: text(b, "Node")?,
            prune: flag(b, "Prune")?,
        },
        "join" => Request::Join {
            existing: texts(b, "Existing")?,
            replay: flag(b, "Replay")?,
        },
        "members-filtered" => Request::MembersFiltered(Filter {
            tags: text_map(b, "Tags")?,
            status: text(b, "Status")?,
            name: text(b, "Name")?,
        }),
        "tags" => Request::Tags {
            set: text_map(b, "Tags")?,
            delete: texts(b, "DeleteTags")?,
        },
        "stream" => Request::Stream {
            kind: text(b, "Type")?,
        },
        "monitor" => Request::Monitor {
            level: text(b, "LogLevel")?,
        },
        "stop" => Request::Stop {
            seq: number(b, "Stop")?,
        },
        "query" => Request::Query(Query {
            filter_nodes: texts(b, "FilterNodes")?,
            filter_tags: text_map(b, "FilterTags")?,
            request_ack: flag(b, "RequestAck")?,
            relay_factor: number(b, "RelayFactor")?,
            timeout_ns: number(b, "Timeout")?,
            name: text(b, "Name")?,
            payload: bytes(b, "Payload")?,
        }),
        "respond" => Request::Respond {
            id: number(b, "ID")?,
            payload: bytes(b, "Payload")?,
        },
        "install-key" | "use-key" | "remove-key" => Request::Key {
            op: match command {
                "install-key" => KeyOp::Install,
                "use-key" => KeyOp::Use,
                _ => KeyOp::Remove,
            },
            key: text(b, "Key")?,
        },
        "get-coordinate" => Request::GetCoordinate {
            node: text(b, "Node")?,
        },
        other => return Err(format!("no body expected for {other:?}")),
    })
}

fn field<'a>(b: &'a Value, key: &str) -> Option<&'a Value> {
    b.get(key).filter(|v| !matches!(v, Value::Nil))
}

fn text(b: &Value, key: &str) -> Result<String, String> {
    match field(b, key) {
        None => Ok(String::new()),
        Some(v) => v
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{key} is not a string")),
    }
}

fn bytes(b: &Value, key: &str) -> Result<Vec<u8>, String> {
    match field(b, key) {
        None => Ok(Vec::new()),
        Some(v) => v
            .as_bytes()
            .map(<[u8]>::to_vec)
            .ok_or_else(|| format!("{key} is not bytes")),
    }
}

fn flag(b: &Value, key: &str) -> Result<bool, String> {
    match field(b, key) {
        None => Ok(false),
        Some(Value::Bool(x)) => Ok(*x),
        Some(_) => Err(format!("{key} is not a boolean")),
    }
}

fn number(b: &Value, key: &str) -> Result<u64, String> {
    match field(b, key) {
        None => Ok(0),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("{key} is not a non-negative integer")),
    }
}

fn texts(b: &Value, key: &str) -> Result<Vec<String>, String> {
    match field(b, key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("{key} holds something other than strings")),
        Some(_) => Err(format!("{key} is not a list")),
    }
}

fn text_map(b: &Value, key: &str) -> Result<BTreeMap<String, String>, String> {
    match field(b, key) {
        None => Ok(BTreeMap::new()),
        Some(Value::Map(entries)) => entries
            .iter()
            .map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("{key} holds something other than strings")),
        Some(_) => Err(format!("{key} is not a map")),
    }
}

/// At most 64 characters of a client's text, for the log.
fn clip(s: &str) -> String {
    s.chars()
        .take(64)
        .collect::<String>()
        .escape_debug()
        .to_string()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A response header: `{Seq, Error}` (`""`: no error).
pub fn header(seq: u64, error: &str) -> Vec<u8> {
    msgpack::to_vec(&Value::map([
        ("Seq", Value::Uint(seq)),
        ("Error", Value::Raw(error.as_bytes().to_vec())),
    ]))
}

/// One member as the RPC shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its name.
    pub name: String,
    /// Its gossip address.
    pub addr: std::net::SocketAddr,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// `alive`, `leaving`, `left` or `failed`.
    pub status: &'static str,
}

/// Memberlist's protocol range and Serf's, as muster speaks them (what Debian's serf 0.8
/// reports for itself: memberlist 1–5 at 2, Serf 2–5 at 5).
const PROTOCOL: (u64, u64, u64) = (1, 5, 2);
const DELEGATE: (u64, u64, u64) = (2, 5, 5);

fn member_value(m: &MemberInfo) -> Value {
    Value::map([
        ("Name", Value::Raw(m.name.as_bytes().to_vec())),
        ("Addr", Value::Raw(super::swim::ip_bytes(&m.addr))),
        ("Port", Value::Uint(u64::from(m.addr.port()))),
        ("Tags", string_map(&m.tags)),
        ("Status", Value::Raw(m.status.as_bytes().to_vec())),
        ("ProtocolMin", Value::Uint(PROTOCOL.0)),
        ("ProtocolMax", Value::Uint(PROTOCOL.1)),
        ("ProtocolCur", Value::Uint(PROTOCOL.2)),
        ("DelegateMin", Value::Uint(DELEGATE.0)),
        ("DelegateMax", Value::Uint(DELEGATE.1)),
        ("DelegateCur", Value::Uint(DELEGATE.2)),
    ])
}

fn string_map(m: &BTreeMap<String, String>) -> Value {
    Value::Map(
        m.iter()
            .map(|(k, v)| {
                (
                    Value::Raw(k.as_bytes().to_vec()),
                    Value::Raw(v.as_bytes().to_vec()),
                )
            })
            .collect(),
    )
}

/// The body of `members` and `members-filtered`: `{Members: […]}`.
pub fn members_body(members: &[MemberInfo]) -> Vec<u8> {
    let list = members.iter().map(member_value).collect();
    msgpack::to_vec(&Value::map([("Members", Value::Array(list))]))
}

/// The body of `join`: `{Num}`, how many addresses were contacted.
pub fn join_body(num: usize) -> Vec<u8> {
    msgpack::to_vec(&Value::map([("Num", Value::Uint(num as u64))]))
}

/// The body of `get-coordinate` when the node has none (muster keeps no network
/// coordinates): `{Coord: nil, Ok: false}`; `serf rtt` then says it found none.
pub fn no_coordinate_body() -> Vec<u8> {
    msgpack::to_vec(&Value::map([
        ("Coord", Value::Nil),
        ("Ok", Value::Bool(false)),
    ]))
}

/// The body of `stats`: sections (`agent`, `runtime`, `serf`, `tags`) of string pairs.
pub fn stats_body(sections: &[(&str, Vec<(String, String)>)]) -> Vec<u8> {
    let v = Value::Map(
        sections
            .iter()
            .map(|(name, pairs)| {
                let pairs: BTreeMap<String, String> = pairs.iter().cloned().collect();
                (Value::Raw(name.as_bytes().to_vec()), string_map(&pairs))
            })
            .collect(),
    );
    msgpack::to_vec(&v)
}

/// What the members answered to a key query (`serf keys`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySummary {
    /// Alive members asked.
    pub nodes: usize,
    /// Answers.
    pub responses: usize,
    /// Answers that were failures.
    pub errors: usize,
    /// Per key (base64), how many members hold it (`list-keys`).
    pub keys: BTreeMap<String, u64>,
    /// Per member, its error.
    pub messages: BTreeMap<String, String>,
}

/// The body of the key commands: `{Keys, Messages, NumErr, NumNodes, NumResp}`.
pub fn key_body(s: &KeySummary) -> Vec<u8> {
    let keys = Value::Map(
        s.keys
            .iter()
            .map(|(k, n)| (Value::Raw(k.as_bytes().to_vec()), Value::Uint(*n)))
            .collect(),
    );
    msgpack::to_vec(&Value::map([
        ("Keys", keys),
        ("Messages", string_map(&s.messages)),
        ("NumErr", Value::Uint(s.errors as u64)),
        ("NumNodes", Value::Uint(s.nodes as u64)),
        ("NumResp", Value::Uint(s.responses as u64)),
    ]))
}

/// A `monitor` record: one log line.
pub fn log_record(line: &str) -> Vec<u8> {
    msgpack::to_vec(&Value::map([("Log", Value::Raw(line.as_bytes().to_vec()))]))
}

/// A `stream` record for a membership event: `{Event: "member-join", Members: [...]}`.
pub fn member_event_record(event: &str, members: &[MemberInfo]) -> Vec<u8> {
    let list = members.iter().map(member_value).collect();
    msgpack::to_vec(&Value::map([
        ("Event", Value::Raw(event.as_bytes().to_vec())),
        ("Members", Value::Array(list)),
    ]))
}

/// A `stream` record for a user event: `{Event: "user", LTime, Name, Payload, Coalesce}`.
pub fn user_event_record(ltime: u64, name: &str, payload: &[u8], coalesce: bool) -> Vec<u8> {
    msgpack::to_vec(&Value::map([
        ("Event", Value::Raw(b"user".to_vec())),
        ("LTime", Value::Uint(ltime)),
        ("Name", Value::Raw(name.as_bytes().to_vec())),
        ("Payload", Value::Raw(payload.to_vec())),
        ("Coalesce", Value::Bool(coalesce)),
    ]))
}

/// A `stream` record for a query to answer with `respond {ID}`:
/// `{Event: "query", ID, LTime, Name, Payload}`.
pub fn query_event_record(id: u64, ltime: u64, name: &str, payload: &[u8]) -> Vec<u8> {
    msgpack::to_vec(&Value::map([
        ("Event", Value::Raw(b"query".to_vec())),
        ("ID", Value::Uint(id)),
        ("LTime", Value::Uint(ltime)),
        ("Name", Value::Raw(name.as_bytes().to_vec())),
        ("Payload", Value::Raw(payload.to_vec())),
    ]))
}

/// A `query` record: `{Type: "ack" | "response" | "done", From, Payload}`.
pub fn query_record(kind: &str, from: &str, payload: Option<&[u8]>) -> Vec<u8> {
    msgpack::to_vec(&Value::map([
        ("Type", Value::Raw(kind.as_bytes().to_vec())),
        ("From", Value::Raw(from.as_bytes().to_vec())),
        (
            "Payload",
            payload.map_or(Value::Nil, |p| Value::Raw(p.to_vec())),
        ),
    ]))
}

/// Which events a `stream` wants, in Serf's syntax: `*`, or a comma-separated list of
/// `member-join`, `member-leave`, `member-failed`, `member-update`, `member-reap`, `user`,
/// `user:NAME`, `query`, `query:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFilter(Vec<(String, Option<String>)>);

impl StreamFilter {
    /// Reads Serf's syntax; `None` when a part is not one of the above.
    pub fn parse(text: &str) -> Option<StreamFilter> {
        const KINDS: [&str; 8] = [
            "*",
            "member-join",
            "member-leave",
            "member-failed",
            "member-update",
            "member-reap",
            "user",
            "query",
        ];
        let mut parts = Vec::new();
        for part in text.split(',') {
            let (kind, name) = match part.split_once(':') {
                Some((k @ ("user" | "query"), n)) if !n.is_empty() => (k, Some(n.to_owned())),
                Some(_) => return None,
                None => (part, None),
            };
            if !KINDS.contains(&kind) {
                return None;
            }
            parts.push((kind.to_owned(), name));
        }
        Some(StreamFilter(parts))
    }

    /// Whether an event of `kind` (`member-join`…, `user`, `query`) named `name` passes.
    pub fn wants(&self, kind: &str, name: Option<&str>) -> bool {
        self.0
            .iter()
            .any(|(k, n)| k == "*" || (k == kind && n.as_deref().is_none_or(|n| Some(n) == name)))
    }
}

/// Why a filter cannot be applied (a regular expression that does not compile).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Failed to apply regex: {0}")]
pub struct BadFilter(String);

/// Longest regular expression compiled for a client, and its compiled size bound.
const MAX_PATTERN: usize = 512;
const REGEX_SIZE: usize = 256 * 1024;

fn anchored(pattern: &str) -> Result<regex_lite::Regex, BadFilter> {
    if pattern.len() > MAX_PATTERN {
        return Err(BadFilter(format!(
            "a pattern longer than {MAX_PATTERN} bytes"
        )));
    }
    regex_lite::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE)
        .build()
        .map_err(|e| BadFilter(e.to_string()))
}

/// The members `filter` keeps, as Serf's agent filters them: each listed tag present and
/// matching its pattern, the status and name matching theirs (patterns anchored at both ends).
pub fn filter(members: Vec<MemberInfo>, filter: &Filter) -> Result<Vec<MemberInfo>, BadFilter> {
    let tags: Vec<(&String, regex_lite::Regex)> = filter
        .tags
        .iter()
        .map(|(k, p)| Ok((k, anchored(p)?)))
        .collect::<Result<_, BadFilter>>()?;
    let optional = |p: &str| (!p.is_empty()).then(|| anchored(p)).transpose();
    let status = optional(&filter.status)?;
    let name = optional(&filter.name)?;
    Ok(members
        .into_iter()
        .filter(|m| {
            tags.iter()
                .all(|(k, re)| m.tags.get(*k).is_some_and(|v| re.is_match(v)))
                && status.as_ref().is_none_or(|re| re.is_match(m.status))
                && name.as_ref().is_none_or(|re| re.is_match(&m.name))
        })
        .collect())
}

#[cfg(test)]
mod tests;
