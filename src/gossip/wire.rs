//! memberlist's and Serf's packets, as Debian's serf 0.9.4 (memberlist 0.2.2) sends them.
//!
//! A UDP packet is, outermost first: an optional label header (`[244][len][label]`, newer
//! memberlist only), an optional CRC (`[12][crc32 BE]`), an optional compression wrapper
//! (`[9]` + msgpack `{Algo: 0, Buf}` holding LZW data), then either a compound message
//! (`[7][count][count × u16 BE length][parts]`) or one message `[type][msgpack body]`. A TCP
//! stream carries the same typed messages, possibly inside a compression wrapper; push/pull is
//! `[6]` + header + node states + Serf's own state. Serf's messages ride in memberlist's `user`
//! messages as `[serf type][msgpack body]`.
//!
//! Everything here is pure: bytes in, values out. Bad input is an error, never a panic, and no
//! allocation exceeds what the input (or a stated limit) justifies.

use std::collections::BTreeMap;

use super::lzw;
use super::msgpack::{self, Value};

/// memberlist message types (append-only in Go's source).
pub mod kind {
    /// Direct probe.
    pub const PING: u8 = 0;
    /// Probe through a third node.
    pub const INDIRECT_PING: u8 = 1;
    /// Answer to a probe.
    pub const ACK: u8 = 2;
    /// A node is suspected dead.
    pub const SUSPECT: u8 = 3;
    /// A node is alive (with its address, meta and versions).
    pub const ALIVE: u8 = 4;
    /// A node is dead (or, when it says so itself, has left).
    pub const DEAD: u8 = 5;
    /// Full state exchange over TCP.
    pub const PUSH_PULL: u8 = 6;
    /// Several messages in one packet.
    pub const COMPOUND: u8 = 7;
    /// A message of the layer above (Serf).
    pub const USER: u8 = 8;
    /// LZW-compressed payload.
    pub const COMPRESS: u8 = 9;
    /// Encrypted stream.
    pub const ENCRYPT: u8 = 10;
    /// Negative answer of an indirect probe.
    pub const NACK: u8 = 11;
    /// CRC-checked payload.
    pub const HAS_CRC: u8 = 12;
    /// Error answer on a stream.
    pub const ERR: u8 = 13;
    /// Label header (memberlist 0.3 and later).
    pub const HAS_LABEL: u8 = 244;
}

/// Serf message types, carried inside memberlist `user` messages.
pub mod serf_kind {
    /// Leave intent.
    pub const LEAVE: u8 = 0;
    /// Join intent.
    pub const JOIN: u8 = 1;
    /// Serf's state in a push/pull.
    pub const PUSH_PULL: u8 = 2;
    /// User event.
    pub const USER_EVENT: u8 = 3;
    /// Query.
    pub const QUERY: u8 = 4;
    /// Query response.
    pub const QUERY_RESPONSE: u8 = 5;
    /// Name-conflict response.
    pub const CONFLICT_RESPONSE: u8 = 6;
    /// Key request.
    pub const KEY_REQUEST: u8 = 7;
    /// Key response.
    pub const KEY_RESPONSE: u8 = 8;
    /// Relayed message.
    pub const RELAY: u8 = 9;
}

/// Largest decompressed UDP payload accepted (a packet is at most 64 KiB on the wire).
pub const MAX_PACKET_PAYLOAD: usize = 1 << 20;
/// Largest stream accepted, read or decompressed, whatever `max_members` allows (memberlist
/// 0.6's `maxPushStateBytes`, 20 MiB); [`max_stream_bytes`] is the bound actually used.
pub const MAX_STREAM_PAYLOAD: usize = 20 << 20;
/// Largest node state in a push/pull: a name of 128 bytes, meta of 512, an address and
/// memberlist's fields fit with room to spare; a longer one ends the stream at once.
pub const MAX_NODE_STATE_BYTES: usize = 1024;
/// Serf's state in a push/pull may hold this much beside [`USER_STATE_PER_NODE`] per member
/// announced (recent events and queries).
pub const USER_STATE_BASE: usize = 256 << 10;
/// Serf's state per member announced: its name in the status times and the left members.
pub const USER_STATE_PER_NODE: usize = 320;

/// The most bytes a push/pull announcing at most `max_nodes` members may take, on the wire or
/// decompressed: a stream longer than that is cut, not read whole.
pub fn max_stream_bytes(max_nodes: usize) -> usize {
    let per = MAX_NODE_STATE_BYTES + USER_STATE_PER_NODE;
    max_nodes
        .saturating_mul(per)
        .saturating_add(USER_STATE_BASE + 4096)
        .min(MAX_STREAM_PAYLOAD)
}
/// Most messages one packet may carry, compound parts of every level together (a compound
/// header counts at most 255; nesting could multiply that).
pub const MAX_PACKET_PARTS: usize = 512;
/// Deepest nesting of wrappers (CRC, compression, compound) accepted.
const MAX_LAYERS: usize = 4;

/// Why a packet or stream cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Nothing, or not enough, to read.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// The CRC does not match: the packet was damaged.
    #[error("checksum mismatch")]
    BadCrc,
    /// A body is not valid MessagePack.
    #[error("bad msgpack in {what}: {error}")]
    Msgpack {
        /// Which message.
        what: &'static str,
        /// The decoder's reason.
        error: msgpack::DecodeError,
    },
    /// The compressed payload cannot be decoded.
    #[error("bad compression: {0}")]
    Lzw(#[from] lzw::LzwError),
    /// A compression algorithm other than LZW.
    #[error("unknown compression algorithm {0}")]
    UnknownAlgo(u64),
    /// Encrypted traffic, which muster does not read (no keyring is configured).
    #[error("encrypted message, but no keyring is configured")]
    Encrypted,
    /// Wrappers nested too deeply.
    #[error("too many nested layers")]
    TooDeep,
    /// A push/pull announces more members than this node keeps.
    #[error("push/pull of {0} members, more than the {1} kept")]
    TooMany(u64, usize),
    /// A packet carries more messages than [`MAX_PACKET_PARTS`].
    #[error("more than {0} messages in one packet")]
    TooManyParts(usize),
    /// A part of a stream is longer than its limit (the stream is cut there).
    #[error("{0} longer than {1} bytes")]
    TooBig(&'static str, usize),
    /// A field is missing or of the wrong type.
    #[error("{message}: field {field} missing or of the wrong type")]
    Field {
        /// Which message.
        message: &'static str,
        /// Which field.
        field: &'static str,
    },
}

/// One message from a packet: its memberlist type and its body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// memberlist message type.
    pub kind: u8,
    /// The bytes after the type: msgpack for most, `[serf type][msgpack]` for `user`.
    pub body: Vec<u8>,
}

/// Splits a UDP packet into its messages, unwrapping label, CRC, compression and compound.
///
/// Bounded as a whole: all the decompressions of one packet together yield at most
/// [`MAX_PACKET_PAYLOAD`] bytes (so compound parts that are each a compression bomb share one
/// budget), and a packet holds at most [`MAX_PACKET_PARTS`] messages.
pub fn decode_packet(buf: &[u8]) -> Result<Vec<Part>, WireError> {
    let mut parts = Vec::new();
    let mut budget = MAX_PACKET_PAYLOAD;
    unwrap_packet(buf, 0, &mut parts, &mut budget)?;
    Ok(parts)
}

fn unwrap_packet(
    buf: &[u8],
    depth: usize,
    parts: &mut Vec<Part>,
    budget: &mut usize,
) -> Result<(), WireError> {
    if depth > MAX_LAYERS {
        return Err(WireError::TooDeep);
    }
    let (&t, rest) = buf.split_first().ok_or(WireError::Truncated("packet"))?;
    match t {
        kind::HAS_LABEL => {
            let (&len, rest) = rest.split_first().ok_or(WireError::Truncated("label"))?;
            let rest = rest
                .get(usize::from(len)..)
                .ok_or(WireError::Truncated("label"))?;
            unwrap_packet(rest, depth + 1, parts, budget)
        }
        kind::HAS_CRC => {
            if rest.len() < 4 {
                return Err(WireError::Truncated("crc"));
            }
            let want = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            if crc32(&rest[4..]) != want {
                return Err(WireError::BadCrc);
            }
            unwrap_packet(&rest[4..], depth + 1, parts, budget)
        }
        kind::COMPRESS => {
            let inner = decompress(rest, *budget)?;
            *budget -= inner.len();
            unwrap_packet(&inner, depth + 1, parts, budget)
        }
        kind::COMPOUND => {
            let (&count, rest) = rest.split_first().ok_or(WireError::Truncated("compound"))?;
            let count = usize::from(count);
            let lens = rest
                .get(..count * 2)
                .ok_or(WireError::Truncated("compound lengths"))?;
            let mut body = &rest[count * 2..];
            for i in 0..count {
                let len = usize::from(u16::from_be_bytes([lens[2 * i], lens[2 * i + 1]]));
                // memberlist keeps the parts that arrived whole and drops a truncated tail.
                let Some(part) = body.get(..len) else {
                    return Err(WireError::Truncated("compound part"));
                };
                unwrap_packet(part, depth + 1, parts, budget)?;
                body = &body[len..];
            }
            Ok(())
        }
        kind::ENCRYPT => Err(WireError::Encrypted),
        _ => {
            if parts.len() >= MAX_PACKET_PARTS {
                return Err(WireError::TooManyParts(MAX_PACKET_PARTS));
            }
            parts.push(Part {
                kind: t,
                body: rest.to_vec(),
            });
            Ok(())
        }
    }
}

/// Reads a compression wrapper's msgpack `{Algo, Buf}` and decodes the LZW data.
pub fn decompress(body: &[u8], limit: usize) -> Result<Vec<u8>, WireError> {
    let (v, _) = msgpack::decode(body).map_err(|error| WireError::Msgpack {
        what: "compress",
        error,
    })?;
    let algo = v.get("Algo").and_then(Value::as_u64).unwrap_or(0);
    if algo != 0 {
        return Err(WireError::UnknownAlgo(algo));
    }
    let buf = v
        .get("Buf")
        .and_then(Value::as_bytes)
        .ok_or(WireError::Field {
            message: "compress",
            field: "Buf",
        })?;
    Ok(lzw::decode(buf, limit)?)
}

/// Wraps a payload in LZW compression as memberlist does.
pub fn compress(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind::COMPRESS];
    let wrapper = Value::map([
        ("Algo", Value::Uint(0)),
        ("Buf", Value::Raw(lzw::encode(payload))),
    ]);
    msgpack::encode(&wrapper, &mut out);
    out
}

/// Puts several encoded messages in one compound packet (at most 255 parts of 64 KiB each).
pub fn compound(messages: &[Vec<u8>]) -> Vec<u8> {
    let messages = &messages[..messages.len().min(255)];
    let mut out = vec![kind::COMPOUND, messages.len() as u8];
    for m in messages {
        out.extend_from_slice(&(m.len().min(0xffff) as u16).to_be_bytes());
    }
    for m in messages {
        out.extend_from_slice(&m[..m.len().min(0xffff)]);
    }
    out
}

/// Prefixes a payload with its CRC, as memberlist does for peers that speak protocol 5.
pub fn with_crc(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(kind::HAS_CRC);
    out.extend_from_slice(&crc32(payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Encodes one message: its type byte then its msgpack body.
pub fn message(kind: u8, body: &Value) -> Vec<u8> {
    let mut out = vec![kind];
    msgpack::encode(body, &mut out);
    out
}

/// The address to reach or compare: an IPv4 address in Go's 16-byte form (`::ffff:a.b.c.d`,
/// which a `serf agent` bound to 0.0.0.0 announces for itself) as the IPv4 address. Members
/// keep the form they announced, so it goes back to them byte for byte (memberlist takes
/// another form of its own address for a conflict).
pub fn canonical(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    std::net::SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// CRC-32 (IEEE), as Go's `hash/crc32.ChecksumIEEE`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = (crc >> 8) ^ CRC_TABLE[((crc ^ u32::from(b)) & 0xff) as usize];
    }
    !crc
}

/// IEEE CRC-32 (reflected, polynomial 0xedb88320), one byte at a time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// Decodes a message body as one msgpack value (trailing bytes are ignored, as Go does).
pub fn body(what: &'static str, bytes: &[u8]) -> Result<Value, WireError> {
    msgpack::decode(bytes)
        .map(|(v, _)| v)
        .map_err(|error| WireError::Msgpack { what, error })
}

/// A member as memberlist announces it in `alive` messages and push/pull node states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// Node name (unique in the cluster).
    pub name: String,
    /// IP address bytes (4 or 16).
    pub addr: Vec<u8>,
    /// Gossip port.
    pub port: u16,
    /// Node meta: Serf's tags.
    pub meta: Vec<u8>,
    /// Incarnation number (refutes older rumours about the node).
    pub incarnation: u32,
    /// Push/pull only: 0 alive, 1 suspect, 2 dead, 3 left.
    pub state: Option<u8>,
    /// Protocol versions `[pmin, pmax, pcur, dmin, dmax, dcur]`.
    pub vsn: Vec<u8>,
}

impl NodeState {
    /// Reads an `alive` body or a push/pull node state.
    pub fn from_value(what: &'static str, v: &Value) -> Result<NodeState, WireError> {
        let field = |field| WireError::Field {
            message: what,
            field,
        };
        let name_key = if v.get("Name").is_some() {
            "Name"
        } else {
            "Node"
        };
        Ok(NodeState {
            name: v
                .get(name_key)
                .and_then(Value::as_str)
                .ok_or(field("Node"))?
                .to_owned(),
            addr: v
                .get("Addr")
                .and_then(Value::as_bytes)
                .ok_or(field("Addr"))?
                .to_vec(),
            port: v
                .get("Port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or(field("Port"))?,
            meta: v
                .get("Meta")
                .and_then(Value::as_bytes)
                .unwrap_or_default()
                .to_vec(),
            incarnation: v
                .get("Incarnation")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or(field("Incarnation"))?,
            state: v.get("State").and_then(Value::as_u64).map(|s| s as u8),
            vsn: match v.get("Vsn") {
                Some(Value::Raw(r)) => r.clone(),
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(Value::as_u64)
                    .map(|n| n as u8)
                    .collect(),
                _ => Vec::new(),
            },
        })
    }

    /// The `alive` body, keys in the order Go writes them (sorted).
    pub fn alive_body(&self) -> Value {
        Value::map([
            ("Addr", Value::Raw(self.addr.clone())),
            ("Incarnation", Value::Uint(u64::from(self.incarnation))),
            ("Meta", Value::Raw(self.meta.clone())),
            ("Node", Value::Raw(self.name.as_bytes().to_vec())),
            ("Port", Value::Uint(u64::from(self.port))),
            ("Vsn", Value::Raw(self.vsn.clone())),
        ])
    }

    /// Appends the node as a push/pull entry: `{Addr, Incarnation, Meta, Name, Port, State,
    /// Vsn}` (written directly: a push/pull carries every member).
    pub fn write_push_pull(&self, out: &mut Vec<u8>) {
        use msgpack::{write_map_len, write_raw, write_uint};
        write_map_len(7, out);
        write_raw(b"Addr", out);
        write_raw(&self.addr, out);
        write_raw(b"Incarnation", out);
        write_uint(u64::from(self.incarnation), out);
        write_raw(b"Meta", out);
        write_raw(&self.meta, out);
        write_raw(b"Name", out);
        write_raw(self.name.as_bytes(), out);
        write_raw(b"Port", out);
        write_uint(u64::from(self.port), out);
        write_raw(b"State", out);
        write_uint(u64::from(self.state.unwrap_or(0)), out);
        write_raw(b"Vsn", out);
        write_raw(&self.vsn, out);
    }

    /// The address as text, for messages.
    pub fn addr_text(&self) -> String {
        match self.addr.len() {
            4 => std::net::Ipv4Addr::new(self.addr[0], self.addr[1], self.addr[2], self.addr[3])
                .to_string(),
            16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&self.addr);
                std::net::Ipv6Addr::from(a).to_string()
            }
            _ => format!("{:?}", self.addr),
        }
    }
}

/// Serf's tags from node meta: `0xFF` then a msgpack map of strings (protocol 3 and later),
/// or, from older agents, the bare role.
pub fn decode_tags(meta: &[u8]) -> Result<BTreeMap<String, String>, WireError> {
    let mut tags = BTreeMap::new();
    match meta.split_first() {
        None => {}
        Some((0xff, rest)) => {
            if let Value::Map(entries) = body("tags", rest)? {
                for (k, v) in entries {
                    if let (Some(k), Some(v)) = (k.as_str(), v.as_str()) {
                        tags.insert(k.to_owned(), v.to_owned());
                    }
                }
            }
        }
        Some(_) => {
            tags.insert(
                "role".to_owned(),
                String::from_utf8_lossy(meta).into_owned(),
            );
        }
    }
    Ok(tags)
}

/// Encodes tags as Serf's node meta.
pub fn encode_tags(tags: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = vec![0xff];
    let map = Value::Map(
        tags.iter()
            .map(|(k, v)| {
                (
                    Value::Raw(k.as_bytes().to_vec()),
                    Value::Raw(v.as_bytes().to_vec()),
                )
            })
            .collect(),
    );
    msgpack::encode(&map, &mut out);
    out
}

/// A push/pull exchange as read from a TCP stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushPull {
    /// Whether the sender is joining.
    pub join: bool,
    /// The sender's view of every member.
    pub nodes: Vec<NodeState>,
    /// Serf's state (`[2][msgpack messagePushPull]`), opaque here.
    pub user_state: Vec<u8>,
}

/// Reads a push/pull from a stream's bytes (after unwrapping compression).
pub fn decode_stream(stream: &[u8]) -> Result<PushPull, WireError> {
    decode_stream_bounded(stream, usize::MAX)
}

/// [`decode_stream`], refusing a push/pull that announces more than `max_nodes` members as
/// soon as its header is read (so a huge one is not decoded again and again as it arrives).
pub fn decode_stream_bounded(stream: &[u8], max_nodes: usize) -> Result<PushPull, WireError> {
    let (&t, rest) = stream.split_first().ok_or(WireError::Truncated("stream"))?;
    match t {
        kind::COMPRESS => {
            let inner = decompress(rest, max_stream_bytes(max_nodes))?;
            if inner.first() == Some(&kind::COMPRESS) {
                return Err(WireError::TooDeep);
            }
            decode_stream_bounded(&inner, max_nodes)
        }
        kind::ENCRYPT => Err(WireError::Encrypted),
        kind::PUSH_PULL => {
            let (header, mut used) = msgpack::decode(rest).map_err(|error| WireError::Msgpack {
                what: "push/pull header",
                error,
            })?;
            let n = header
                .get("Nodes")
                .and_then(Value::as_u64)
                .ok_or(WireError::Field {
                    message: "push/pull header",
                    field: "Nodes",
                })?;
            if usize::try_from(n).map_or(true, |n| n > max_nodes) {
                return Err(WireError::TooMany(n, max_nodes));
            }
            let user_len = header
                .get("UserStateLen")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let most_user = USER_STATE_PER_NODE
                .saturating_mul(n as usize)
                .saturating_add(USER_STATE_BASE);
            if user_len > most_user as u64 {
                return Err(WireError::TooBig("push/pull user state", most_user));
            }
            let join = header.get("Join") == Some(&Value::Bool(true));
            let mut nodes = Vec::new();
            for _ in 0..n {
                let node = &rest[used..];
                let (v, len) = msgpack::decode(node).map_err(|error| {
                    if node.len() > MAX_NODE_STATE_BYTES {
                        WireError::TooBig("push/pull node", MAX_NODE_STATE_BYTES)
                    } else {
                        WireError::Msgpack {
                            what: "push/pull node",
                            error,
                        }
                    }
                })?;
                if len > MAX_NODE_STATE_BYTES {
                    return Err(WireError::TooBig("push/pull node", MAX_NODE_STATE_BYTES));
                }
                used += len;
                nodes.push(NodeState::from_value("push/pull node", &v)?);
            }
            let user_state = usize::try_from(user_len)
                .ok()
                .and_then(|l| rest.get(used..used.checked_add(l)?))
                .ok_or(WireError::Truncated("push/pull user state"))?
                .to_vec();
            Ok(PushPull {
                join,
                nodes,
                user_state,
            })
        }
        _ => Err(WireError::Field {
            message: "stream",
            field: "type (expected push/pull)",
        }),
    }
}

/// Encodes a push/pull as memberlist writes it on a stream (uncompressed; Go accepts both).
pub fn encode_push_pull(join: bool, nodes: &[NodeState], user_state: &[u8]) -> Vec<u8> {
    let mut out = vec![kind::PUSH_PULL];
    let header = Value::map([
        ("Join", Value::Bool(join)),
        ("Nodes", Value::Uint(nodes.len() as u64)),
        ("UserStateLen", Value::Uint(user_state.len() as u64)),
    ]);
    msgpack::encode(&header, &mut out);
    for n in nodes {
        n.write_push_pull(&mut out);
    }
    out.extend_from_slice(user_state);
    out
}

/// Whether a stream decode failed only because more bytes are still to come.
pub fn incomplete(error: &WireError) -> bool {
    matches!(
        error,
        WireError::Truncated(_)
            | WireError::Msgpack {
                error: msgpack::DecodeError::Truncated(_),
                ..
            }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pull_round_trips_and_reports_incomplete_input() {
        let node = NodeState {
            name: "a".into(),
            addr: vec![127, 0, 0, 1],
            port: 7946,
            meta: vec![0xff, 0x80],
            incarnation: 3,
            state: Some(0),
            vsn: vec![1, 5, 2, 2, 5, 5],
        };
        let bytes = encode_push_pull(true, std::slice::from_ref(&node), b"\x02\x80");
        let pp = decode_stream(&bytes).expect("decodes");
        assert!(pp.join);
        assert_eq!(pp.nodes, vec![node]);
        assert_eq!(pp.user_state, b"\x02\x80");
        for cut in 1..bytes.len() {
            let e = decode_stream(&bytes[..cut]).expect_err("cut short");
            assert!(incomplete(&e), "cut at {cut}: {e}");
        }
    }

    #[test]
    fn push_pull_entries_are_written_as_the_value_tree_encoded_them() {
        let n = NodeState {
            name: "a-rather-long-name-of-more-than-32-bytes".into(),
            addr: vec![0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            port: 17946,
            meta: vec![0xff; 40],
            incarnation: u32::MAX,
            state: Some(3),
            vsn: vec![1, 5, 2, 2, 5, 5],
        };
        let reference = Value::map([
            ("Addr", Value::Raw(n.addr.clone())),
            ("Incarnation", Value::Uint(u64::from(n.incarnation))),
            ("Meta", Value::Raw(n.meta.clone())),
            ("Name", Value::Raw(n.name.as_bytes().to_vec())),
            ("Port", Value::Uint(u64::from(n.port))),
            ("State", Value::Uint(u64::from(n.state.unwrap_or(0)))),
            ("Vsn", Value::Raw(n.vsn.clone())),
        ]);
        for state in [Some(3), None] {
            let n = NodeState { state, ..n.clone() };
            let mut out = Vec::new();
            n.write_push_pull(&mut out);
            let mut want = reference.clone();
            if let Value::Map(entries) = &mut want {
                entries[5].1 = Value::Uint(u64::from(state.unwrap_or(0)));
            }
            assert_eq!(out, msgpack::to_vec(&want), "{state:?}");
        }
    }

    #[test]
    fn crc_matches_go() {
        // Go: crc32.ChecksumIEEE([]byte("123456789")) == 0xcbf43926.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn layers_round_trip() {
        let ping = message(
            kind::PING,
            &Value::map([
                ("SeqNo", Value::Uint(7)),
                ("Node", Value::Raw(b"a".to_vec())),
            ]),
        );
        let user = vec![kind::USER, serf_kind::JOIN, 0x80];
        let packet = with_crc(&compress(&compound(&[ping.clone(), user.clone()])));
        let parts = decode_packet(&packet).expect("decodes");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].kind, kind::PING);
        assert_eq!(parts[0].body, ping[1..]);
        assert_eq!(parts[1].body, user[1..]);
    }

    #[test]
    fn streams_are_cut_at_their_bounds() {
        let node = |name: &str| NodeState {
            name: name.to_owned(),
            addr: vec![127, 0, 0, 1],
            port: 7946,
            meta: Vec::new(),
            incarnation: 1,
            state: Some(0),
            vsn: vec![1, 5, 2, 0, 0, 0],
        };
        // A node state longer than its limit ends the stream once that much has come,
        // long before the rest.
        let long = encode_push_pull(false, &[node(&"a".repeat(1 << 20))], &[]);
        let early = &long[..4 * MAX_NODE_STATE_BYTES];
        assert!(matches!(
            decode_stream_bounded(early, 10),
            Err(WireError::TooBig("push/pull node", _))
        ));
        // Serf's state is bounded by the members announced, from the header on.
        let big_user = encode_push_pull(false, &[node("x")], &vec![0; USER_STATE_BASE + 400]);
        assert!(matches!(
            decode_stream_bounded(&big_user[..64], 10),
            Err(WireError::TooBig("push/pull user state", _))
        ));
        // A real one passes, and the whole-stream bound grows with max_members up to 20 MiB.
        let ok = encode_push_pull(false, &[node("x")], &[0x80]);
        assert!(decode_stream_bounded(&ok, 10).is_ok());
        assert!(max_stream_bytes(5000) < 8 << 20);
        assert_eq!(max_stream_bytes(1_000_000), MAX_STREAM_PAYLOAD);
    }

    #[test]
    fn damaged_or_hostile_packets_are_errors() {
        let mut p = with_crc(&[kind::PING, 0x80]);
        p[6] ^= 1;
        assert_eq!(decode_packet(&p), Err(WireError::BadCrc));
        assert!(decode_packet(&[]).is_err());
        assert!(decode_packet(&[kind::COMPOUND, 3, 0, 1]).is_err());
        assert_eq!(
            decode_packet(&[kind::ENCRYPT, 1, 2]),
            Err(WireError::Encrypted)
        );
        // A compression bomb stops at the limit.
        let bomb = compress(&vec![0u8; MAX_PACKET_PAYLOAD + 1]);
        assert!(matches!(decode_packet(&bomb), Err(WireError::Lzw(_))));
        // Wrappers inside wrappers stop at a fixed depth.
        let mut nested = vec![kind::PING, 0x80];
        for _ in 0..10 {
            nested = with_crc(&nested);
        }
        assert_eq!(decode_packet(&nested), Err(WireError::TooDeep));
        // Compound parts that are each a compression bomb share one budget.
        let half = compress(&vec![0u8; MAX_PACKET_PAYLOAD / 2 + 1]);
        let shared = compound(&[half.clone(), half]);
        assert!(matches!(decode_packet(&shared), Err(WireError::Lzw(_))));
        // A compound of compounds cannot multiply the messages past the limit.
        let pings: Vec<Vec<u8>> = (0..255).map(|_| vec![kind::PING]).collect();
        let inner = compound(&pings);
        let outer = compound(&[inner.clone(), inner.clone(), inner]);
        assert_eq!(
            decode_packet(&outer),
            Err(WireError::TooManyParts(MAX_PACKET_PARTS))
        );
        assert_eq!(decode_packet(&compound(&pings)).map(|p| p.len()), Ok(255));
    }

    #[test]
    fn tags_round_trip() {
        let tags: BTreeMap<String, String> = [("role", "backend"), ("port", "3000")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        assert_eq!(decode_tags(&encode_tags(&tags)), Ok(tags));
        assert_eq!(decode_tags(b"web").unwrap()["role"], "web");
    }
}
