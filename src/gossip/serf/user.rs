//! Serf's user events and queries on the wire, and the Lamport-slot buffers that keep each
//! from being delivered twice, as Serf's `handleUserEvent` and `handleQuery` do: a ring of
//! [`BUFFER`] slots by Lamport time; a message older than the ring, or one its slot already
//! holds, is dropped. Byte layouts follow the capture of Debian's serf in
//! `tests/golden/serf-0.9.4-events-queries.txt`.
//!
//! Everything decoded here comes from the network: names are validated, payloads bounded by
//! the datagram they came in, and a decoded message allocates no more than it carried.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use super::super::msgpack::{self, Value};
use super::super::swim::{ip_bytes, socket};
use super::super::wire::serf_kind;

/// Slots of the de-duplication rings (Serf's `EventBuffer` and `QueryBuffer`).
pub const BUFFER: u64 = 512;
/// Largest user event, name and payload together before encoding, and encoded (Serf's
/// `UserEventSizeLimit`).
pub const EVENT_SIZE_LIMIT: usize = 512;
/// Largest query, encoded (Serf's `QuerySizeLimit`).
pub const QUERY_SIZE_LIMIT: usize = 1024;
/// Largest query response payload, encoded (Serf's `QueryResponseSizeLimit`).
pub const RESPONSE_SIZE_LIMIT: usize = 1024;
/// Query flag: the sender wants acknowledgements.
pub const FLAG_ACK: u64 = 1;
/// Query flag: not to be gossiped further.
pub const FLAG_NO_BROADCAST: u64 = 2;
/// Most events of one Lamport time kept in a slot (distinct events at one time are rare).
const MAX_PER_SLOT: usize = 64;

/// A user event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEvent {
    /// Its Lamport time (the event clock).
    pub ltime: u64,
    /// Its name.
    pub name: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Whether handlers may coalesce it.
    pub coalesce: bool,
}

impl UserEvent {
    /// `[3][msgpack {CC, LTime, Name, Payload}]`, as Serf writes it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![serf_kind::USER_EVENT];
        msgpack::encode(
            &Value::map([
                ("CC", Value::Bool(self.coalesce)),
                ("LTime", Value::Uint(self.ltime)),
                ("Name", Value::Raw(self.name.as_bytes().to_vec())),
                ("Payload", raw_or_nil(&self.payload)),
            ]),
            &mut out,
        );
        out
    }

    /// Reads the body after the type byte; `None` when it is not a user event.
    pub fn decode(body: &[u8]) -> Option<UserEvent> {
        let (v, _) = msgpack::decode(body).ok()?;
        Some(UserEvent {
            ltime: v.get("LTime")?.as_u64()?,
            name: event_name(v.get("Name")?)?,
            payload: bytes(v.get("Payload")),
            coalesce: matches!(v.get("CC"), Some(Value::Bool(true))),
        })
    }
}

/// What may select the members that answer a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryFilter {
    /// Only these members.
    Nodes(Vec<String>),
    /// Only members whose tag matches this regular expression (unanchored, as Serf's).
    Tag {
        /// The tag.
        tag: String,
        /// The expression.
        expr: String,
    },
}

/// A query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Its Lamport time (the query clock).
    pub ltime: u64,
    /// Its id, random, with `ltime` the key of its answers.
    pub id: u32,
    /// Where answers go: the asker's gossip address.
    pub addr: IpAddr,
    /// And port.
    pub port: u16,
    /// The asker's name.
    pub source: String,
    /// Who answers.
    pub filters: Vec<QueryFilter>,
    /// [`FLAG_ACK`], [`FLAG_NO_BROADCAST`].
    pub flags: u64,
    /// How many other members relay each answer.
    pub relay_factor: u8,
    /// How long answers are taken.
    pub timeout: Duration,
    /// Its name.
    pub name: String,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl Query {
    /// `[4][msgpack {Addr, Filters, Flags, ID, LTime, Name, Payload, Port, RelayFactor,
    /// SourceNode, Timeout}]`.
    pub fn encode(&self) -> Vec<u8> {
        let addr = ip_bytes(&std::net::SocketAddr::new(self.addr, self.port));
        let filters = if self.filters.is_empty() {
            Value::Nil
        } else {
            Value::Array(
                self.filters
                    .iter()
                    .map(|f| Value::Raw(encode_filter(f)))
                    .collect(),
            )
        };
        let mut out = vec![serf_kind::QUERY];
        msgpack::encode(
            &Value::map([
                ("Addr", Value::Raw(addr)),
                ("Filters", filters),
                ("Flags", Value::Uint(self.flags)),
                ("ID", Value::Uint(u64::from(self.id))),
                ("LTime", Value::Uint(self.ltime)),
                ("Name", Value::Raw(self.name.as_bytes().to_vec())),
                ("Payload", raw_or_nil(&self.payload)),
                ("Port", Value::Uint(u64::from(self.port))),
                ("RelayFactor", Value::Uint(u64::from(self.relay_factor))),
                ("SourceNode", Value::Raw(self.source.as_bytes().to_vec())),
                (
                    "Timeout",
                    Value::Uint(u64::try_from(self.timeout.as_nanos()).unwrap_or(u64::MAX)),
                ),
            ]),
            &mut out,
        );
        out
    }

    /// Reads the body after the type byte; `None` when it is not a valid query.
    pub fn decode(body: &[u8]) -> Option<Query> {
        let (v, _) = msgpack::decode(body).ok()?;
        let at = socket(v.get("Addr")?.as_bytes()?, v.get("Port")?.as_u64()?)?;
        let filters = match v.get("Filters") {
            None | Some(Value::Nil) => Vec::new(),
            Some(Value::Array(items)) if items.len() <= 16 => items
                .iter()
                .map(|f| decode_filter(f.as_bytes()?))
                .collect::<Option<_>>()?,
            Some(_) => return None,
        };
        let source = v.get("SourceNode")?.as_str()?;
        super::super::validate::name(source).ok()?;
        Some(Query {
            ltime: v.get("LTime")?.as_u64()?,
            id: u32::try_from(v.get("ID")?.as_u64()?).ok()?,
            addr: at.ip(),
            port: at.port(),
            source: source.to_owned(),
            filters,
            flags: v.get("Flags").and_then(Value::as_u64).unwrap_or(0),
            relay_factor: u8::try_from(v.get("RelayFactor").and_then(Value::as_u64).unwrap_or(0))
                .ok()?,
            timeout: Duration::from_nanos(v.get("Timeout").and_then(Value::as_u64).unwrap_or(0)),
            name: event_name(v.get("Name")?)?,
            payload: bytes(v.get("Payload")),
        })
    }

    /// Whether `flag` is set.
    pub fn has(&self, flag: u64) -> bool {
        self.flags & flag != 0
    }
}

/// Type 0: `msgpack [names]`; type 1: `msgpack {Expr, Tag}`.
fn encode_filter(f: &QueryFilter) -> Vec<u8> {
    match f {
        QueryFilter::Nodes(names) => {
            let mut out = vec![0];
            let list = names
                .iter()
                .map(|n| Value::Raw(n.as_bytes().to_vec()))
                .collect();
            msgpack::encode(&Value::Array(list), &mut out);
            out
        }
        QueryFilter::Tag { tag, expr } => {
            let mut out = vec![1];
            msgpack::encode(
                &Value::map([
                    ("Expr", Value::Raw(expr.as_bytes().to_vec())),
                    ("Tag", Value::Raw(tag.as_bytes().to_vec())),
                ]),
                &mut out,
            );
            out
        }
    }
}

fn decode_filter(bytes: &[u8]) -> Option<QueryFilter> {
    let (&kind, rest) = bytes.split_first()?;
    let (v, _) = msgpack::decode(rest).ok()?;
    match kind {
        0 => match v {
            Value::Array(items) => Some(QueryFilter::Nodes(
                items
                    .iter()
                    .map(|n| n.as_str().map(str::to_owned))
                    .collect::<Option<_>>()?,
            )),
            _ => None,
        },
        1 => Some(QueryFilter::Tag {
            tag: v.get("Tag")?.as_str()?.to_owned(),
            expr: v.get("Expr")?.as_str()?.to_owned(),
        }),
        _ => None,
    }
}

/// An answer to a query: an acknowledgement or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryResponse {
    /// The query's Lamport time.
    pub ltime: u64,
    /// The query's id.
    pub id: u32,
    /// Who answers.
    pub from: String,
    /// [`FLAG_ACK`] for an acknowledgement.
    pub flags: u64,
    /// The response (empty for an acknowledgement).
    pub payload: Vec<u8>,
}

impl QueryResponse {
    /// `[5][msgpack {Flags, From, ID, LTime, Payload}]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![serf_kind::QUERY_RESPONSE];
        msgpack::encode(
            &Value::map([
                ("Flags", Value::Uint(self.flags)),
                ("From", Value::Raw(self.from.as_bytes().to_vec())),
                ("ID", Value::Uint(u64::from(self.id))),
                ("LTime", Value::Uint(self.ltime)),
                ("Payload", raw_or_nil(&self.payload)),
            ]),
            &mut out,
        );
        out
    }

    /// Reads the body after the type byte.
    pub fn decode(body: &[u8]) -> Option<QueryResponse> {
        let (v, _) = msgpack::decode(body).ok()?;
        let from = v.get("From")?.as_str()?;
        super::super::validate::name(from).ok()?;
        Some(QueryResponse {
            ltime: v.get("LTime")?.as_u64()?,
            id: u32::try_from(v.get("ID")?.as_u64()?).ok()?,
            from: from.to_owned(),
            flags: v.get("Flags").and_then(Value::as_u64).unwrap_or(0),
            payload: bytes(v.get("Payload")),
        })
    }

    /// Whether this is an acknowledgement.
    pub fn is_ack(&self) -> bool {
        self.flags & FLAG_ACK != 0
    }
}

/// A relayed message: `[9][msgpack {DestAddr: {IP, Port, Zone}}][message]`, as Serf's
/// `encodeRelayMessage` writes it.
pub fn relay(to: std::net::SocketAddr, message: &[u8]) -> Vec<u8> {
    let ip = ip_bytes(&to);
    let mut out = vec![serf_kind::RELAY];
    msgpack::encode(
        &Value::map([(
            "DestAddr",
            Value::map([
                ("IP", Value::Raw(ip)),
                ("Port", Value::Uint(u64::from(to.port()))),
                ("Zone", Value::Raw(Vec::new())),
            ]),
        )]),
        &mut out,
    );
    out.extend_from_slice(message);
    out
}

/// The destination and the message of a relayed message (after its type byte).
pub fn unrelay(rest: &[u8]) -> Option<(std::net::SocketAddr, &[u8])> {
    let (header, used) = msgpack::decode(rest).ok()?;
    let dest = header.get("DestAddr")?;
    let to = socket(dest.get("IP")?.as_bytes()?, dest.get("Port")?.as_u64()?)?;
    Some((to, &rest[used..]))
}

/// Nil for an empty payload, as Go writes a nil slice.
fn raw_or_nil(b: &[u8]) -> Value {
    if b.is_empty() {
        Value::Nil
    } else {
        Value::Raw(b.to_vec())
    }
}

fn bytes(v: Option<&Value>) -> Vec<u8> {
    v.and_then(Value::as_bytes)
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

/// An event or query name: UTF-8 without control characters, at most 128 bytes. It reaches
/// handlers' environment (`SERF_USER_EVENT`) and logs, so nothing else is let in.
pub(super) fn event_name(v: &Value) -> Option<String> {
    let s = v.as_str()?;
    (!s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control)).then(|| s.to_owned())
}

/// The de-duplication ring of one clock: per slot, its Lamport time and what it has seen.
#[derive(Debug, Clone)]
pub struct Seen<K> {
    slots: BTreeMap<u64, (u64, Vec<K>)>,
    /// Messages before this time are ignored (those before a join, with no replay).
    pub min_time: u64,
}

impl<K: PartialEq> Default for Seen<K> {
    fn default() -> Seen<K> {
        Seen {
            slots: BTreeMap::new(),
            min_time: 0,
        }
    }
}

impl<K: PartialEq> Seen<K> {
    /// Whether `key` at `ltime` is new given the clock `now` (it is then recorded).
    pub fn first(&mut self, now: u64, ltime: u64, key: K) -> bool {
        if ltime < self.min_time || (now > BUFFER && ltime < now - BUFFER) {
            return false;
        }
        let slot = self
            .slots
            .entry(ltime % BUFFER)
            .or_insert((ltime, Vec::new()));
        if slot.0 != ltime {
            *slot = (ltime, Vec::new());
        }
        if slot.1.contains(&key) || slot.1.len() >= MAX_PER_SLOT {
            return false;
        }
        slot.1.push(key);
        true
    }

    /// The slots in time order, for the push/pull (events only).
    pub fn recent(&self) -> impl Iterator<Item = (u64, &[K])> {
        let mut all: Vec<(u64, &[K])> = self
            .slots
            .values()
            .map(|(t, k)| (*t, k.as_slice()))
            .collect();
        all.sort_by_key(|(t, _)| *t);
        all.into_iter()
    }
}

#[cfg(test)]
mod tests;
