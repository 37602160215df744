//! Serf's internal queries, answered by the node: `_serf_ping` (the acknowledgement is the
//! answer) and the key queries `serf keys` sends (`_serf_install-key`, `_serf_use-key`,
//! `_serf_remove-key`, `_serf_list-keys`): the request `[7][{Key}]`, the answer
//! `[8][{Keys, Message, PrimaryKey, Result}]`, as Debian's serf writes them. The keyring they
//! change is the one that seals and opens gossip from then on.

use base64::Engine;

use super::super::msgpack::{self, Value};
use super::super::serf::user::Query;
use super::super::wire::serf_kind;

/// What a key query does to the keyring, and the answer it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAnswer {
    /// Whether it worked.
    pub result: bool,
    /// Why not.
    pub message: String,
    /// The keys (list only), base64, primary first.
    pub keys: Vec<String>,
    /// The primary key (list only), base64.
    pub primary: String,
}

impl KeyAnswer {
    fn failed(message: &str) -> KeyAnswer {
        KeyAnswer {
            result: false,
            message: message.to_owned(),
            keys: Vec::new(),
            primary: String::new(),
        }
    }

    /// `[8][msgpack {Keys, Message, PrimaryKey, Result}]`.
    pub fn encode(&self) -> Vec<u8> {
        let keys = if self.keys.is_empty() {
            Value::Nil
        } else {
            Value::Array(
                self.keys
                    .iter()
                    .map(|k| Value::Raw(k.as_bytes().to_vec()))
                    .collect(),
            )
        };
        let mut out = vec![serf_kind::KEY_RESPONSE];
        msgpack::encode(
            &Value::map([
                ("Keys", keys),
                ("Message", Value::Raw(self.message.as_bytes().to_vec())),
                ("PrimaryKey", Value::Raw(self.primary.as_bytes().to_vec())),
                ("Result", Value::Bool(self.result)),
            ]),
            &mut out,
        );
        out
    }

    /// Reads an answer (from any member) to one of our key queries.
    pub fn decode(payload: &[u8]) -> Option<KeyAnswer> {
        let (&kind, rest) = payload.split_first()?;
        if kind != serf_kind::KEY_RESPONSE {
            return None;
        }
        let (v, _) = msgpack::decode(rest).ok()?;
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let keys = match v.get("Keys") {
            Some(Value::Array(items)) => items
                .iter()
                .take(crate::gossip::crypto::MAX_KEYS * 4)
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        Some(KeyAnswer {
            result: matches!(v.get("Result"), Some(Value::Bool(true))),
            message: text("Message"),
            keys,
            primary: text("PrimaryKey"),
        })
    }
}

/// The answer to `_serf_conflict`: `[6][msgpack Member]` (nil when the name is unknown), the
/// member as Serf encodes its `Member` (status as a number: 1 alive, 2 leaving, 3 left,
/// 4 failed).
pub fn conflict_answer(m: Option<&crate::gossip::serf::Member>) -> Vec<u8> {
    use crate::gossip::serf::Status;
    let mut out = vec![serf_kind::CONFLICT_RESPONSE];
    let Some(m) = m else {
        msgpack::encode(&Value::Nil, &mut out);
        return out;
    };
    let addr = match m.addr.ip() {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    let status = match m.status {
        Status::Alive => 1,
        Status::Leaving => 2,
        Status::Left => 3,
        Status::Failed => 4,
    };
    let tags = Value::Map(
        m.tags
            .iter()
            .map(|(k, v)| {
                (
                    Value::Raw(k.as_bytes().to_vec()),
                    Value::Raw(v.as_bytes().to_vec()),
                )
            })
            .collect(),
    );
    msgpack::encode(
        &Value::map([
            ("Name", Value::Raw(m.name.as_bytes().to_vec())),
            ("Addr", Value::Raw(addr)),
            ("Port", Value::Uint(u64::from(m.addr.port()))),
            ("Tags", tags),
            ("Status", Value::Uint(status)),
            ("ProtocolMin", Value::Uint(1)),
            ("ProtocolMax", Value::Uint(5)),
            ("ProtocolCur", Value::Uint(2)),
            ("DelegateMin", Value::Uint(2)),
            ("DelegateMax", Value::Uint(5)),
            ("DelegateCur", Value::Uint(5)),
        ]),
        &mut out,
    );
    out
}

/// The address a `_serf_conflict` answer names (`None`: the member is unknown there, or the
/// answer is not one).
pub fn conflict_addr(payload: &[u8]) -> Option<std::net::SocketAddr> {
    let (&kind, rest) = payload.split_first()?;
    if kind != serf_kind::CONFLICT_RESPONSE {
        return None;
    }
    let (v, _) = msgpack::decode(rest).ok()?;
    let ip = match v.get("Addr")?.as_bytes()? {
        b if b.len() == 4 => std::net::IpAddr::from(<[u8; 4]>::try_from(b).ok()?),
        b if b.len() == 16 => {
            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?);
            v6.to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4)
        }
        _ => return None,
    };
    let port = u16::try_from(v.get("Port")?.as_u64()?).ok()?;
    Some(std::net::SocketAddr::new(ip, port))
}

/// A key query's payload: `[7][msgpack {Key}]` (an empty key for `list-keys`).
pub fn key_request(key: &[u8]) -> Vec<u8> {
    let mut out = vec![serf_kind::KEY_REQUEST];
    msgpack::encode(&Value::map([("Key", Value::Raw(key.to_vec()))]), &mut out);
    out
}

fn requested_key(payload: &[u8]) -> Option<Vec<u8>> {
    let (&kind, rest) = payload.split_first()?;
    if kind != serf_kind::KEY_REQUEST {
        return None;
    }
    let (v, _) = msgpack::decode(rest).ok()?;
    Some(
        v.get("Key")
            .and_then(Value::as_bytes)
            .unwrap_or(&[])
            .to_vec(),
    )
}

/// Carries out an internal query on `keyring` (`None`: a plaintext node). Returns the answer
/// payload to send (none for `_serf_ping`, none for a name it does not know) and whether the
/// keyring changed.
pub fn answer(
    q: &Query,
    keyring: Option<&mut crate::gossip::crypto::Keyring>,
) -> (Option<Vec<u8>>, bool) {
    let op = match q.name.as_str() {
        "_serf_install-key" | "_serf_use-key" | "_serf_remove-key" | "_serf_list-keys" => {
            &q.name["_serf_".len()..]
        }
        _ => return (None, false),
    };
    let Some(ring) = keyring else {
        let why = if op == "list-keys" {
            "Keyring is empty (encryption not enabled)"
        } else {
            "No keyring to modify (encryption not enabled)"
        };
        return (Some(KeyAnswer::failed(why).encode()), false);
    };
    let Some(key) = requested_key(&q.payload) else {
        return (Some(KeyAnswer::failed("bad key request").encode()), false);
    };
    let done = match op {
        "install-key" => ring.install(&key),
        "use-key" => ring.use_key(&key),
        "remove-key" => ring.remove(&key),
        _ => {
            let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
            let keys: Vec<String> = ring.keys().map(b64).collect();
            let answer = KeyAnswer {
                result: true,
                message: String::new(),
                primary: keys.first().cloned().unwrap_or_default(),
                keys,
            };
            return (Some(answer.encode()), false);
        }
    };
    match done {
        Ok(()) => {
            let answer = KeyAnswer {
                result: true,
                message: String::new(),
                keys: Vec::new(),
                primary: String::new(),
            };
            (Some(answer.encode()), true)
        }
        Err(e) => (Some(KeyAnswer::failed(&e).encode()), false),
    }
}

#[cfg(test)]
mod tests;
