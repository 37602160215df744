//! Secure mode (`[gossip] secure = true`), for clusters of muster nodes only: the pure rules
//! that make a captured packet worthless later and let a member speak only for itself.
//!
//! On top of the keyring's AES-GCM, every datagram and push/pull stream carries, inside the
//! sealed plaintext, an **envelope**: its kind (datagram, push/pull request, push/pull
//! answer), the sender's name, the sender's wall clock in milliseconds and a per-sender
//! sequence number, then the memberlist bytes as before. The additional data binds it to
//! where it goes: a datagram or request to the destination address it was sent to, an
//! answer to the requester's name (and its sequence number, inside, to the request). So:
//!
//! - a packet replayed to **another** node does not open there (another destination);
//! - one replayed to the **same** node is refused by [`Replay`]: outside the time window
//!   ([`WINDOW`], in either direction), or a `(sender, seq)` already seen in it;
//! - a push/pull answer opens only for the request it answers, once ([`Outstanding`]).
//!
//! Clock assumption: the nodes' wall clocks agree within [`WINDOW`] (one host, or NTP). A
//! node's sequence numbers start from its boot time in microseconds, so a restarted node
//! counts on above its predecessor.
//!
//! Identity: the envelope's sender is authenticated only as far as the key is: every key
//! holder can write any sender name. [`speaks_for`] is the rule the SWIM core applies: an
//! address is bound to a name (a new member, or a member at a new address) only by an answer
//! to our own probe, sealed as from that name, that came from that address's IP.
//!
//! memberlist's packets carry none of this, so secure mode does not interoperate with Go
//! agents (Serf, Consul): the additional data differs, and neither side opens the other's
//! traffic.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How far a packet's timestamp may be from the receiver's clock, either way.
pub const WINDOW: Duration = Duration::from_secs(30);
/// Sequence numbers remembered below a sender's highest, per sender.
pub const SEQ_WINDOW: u64 = 1024;
/// What starts the additional data (so nothing else sealed with the key opens as this).
const CONTEXT: &[u8] = b"muster secure 1";
/// The envelope's first byte.
const MAGIC: u8 = 0xA7;
/// Bytes before the name: magic, kind, time, seq, name length.
const FIXED: usize = 1 + 1 + 8 + 8 + 1;
/// Outstanding push/pull requests remembered.
pub const MAX_OUTSTANDING: usize = 256;

/// What an envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A UDP datagram.
    Datagram = 1,
    /// The opening side of a push/pull.
    Request = 2,
    /// The answer to a push/pull request.
    Answer = 3,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Datagram),
            2 => Some(Kind::Request),
            3 => Some(Kind::Answer),
            _ => None,
        }
    }
}

/// A decoded envelope, borrowing the plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// What it is.
    pub kind: Kind,
    /// Who says it sent it.
    pub sender: &'a str,
    /// The sender's wall clock, milliseconds since the UNIX epoch.
    pub time_ms: u64,
    /// The sender's sequence number (for an answer: the request's).
    pub seq: u64,
    /// The memberlist bytes.
    pub body: &'a [u8],
}

/// Why secure traffic is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not an envelope (a keyed peer that is not in secure mode, or damage).
    #[error("no secure envelope")]
    Malformed,
    /// An envelope of another kind than expected here.
    #[error("unexpected envelope kind")]
    Kind,
    /// Its time is outside the window: stale (or from a clock too far off).
    #[error("outside the time window")]
    Stale,
    /// A `(sender, seq)` already seen, or too far below the sender's highest.
    #[error("replayed")]
    Replayed,
    /// Too many senders in the window to remember another one.
    #[error("too many senders")]
    Full,
    /// An answer to no request of ours (or to one already answered).
    #[error("answer to no outstanding request")]
    Unsolicited,
}

/// The plaintext to seal: the envelope, then `body`. `sender` is at most 255 bytes (muster's
/// names are at most 128).
pub fn wrap(kind: Kind, sender: &str, time_ms: u64, seq: u64, body: &[u8]) -> Vec<u8> {
    let name = &sender.as_bytes()[..sender.len().min(255)];
    let mut out = Vec::with_capacity(FIXED + name.len() + body.len());
    out.push(MAGIC);
    out.push(kind as u8);
    out.extend_from_slice(&time_ms.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(body);
    out
}

/// The envelope at the start of an opened plaintext.
pub fn unwrap(plain: &[u8]) -> Result<Envelope<'_>, Refused> {
    if plain.len() < FIXED || plain[0] != MAGIC {
        return Err(Refused::Malformed);
    }
    let kind = Kind::from_byte(plain[1]).ok_or(Refused::Malformed)?;
    let mut n = [0u8; 8];
    n.copy_from_slice(&plain[2..10]);
    let time_ms = u64::from_be_bytes(n);
    n.copy_from_slice(&plain[10..18]);
    let seq = u64::from_be_bytes(n);
    let len = usize::from(plain[18]);
    let name = plain.get(FIXED..FIXED + len).ok_or(Refused::Malformed)?;
    let sender = std::str::from_utf8(name).map_err(|_| Refused::Malformed)?;
    if sender.is_empty() {
        return Err(Refused::Malformed);
    }
    Ok(Envelope {
        kind,
        sender,
        time_ms,
        seq,
        body: &plain[FIXED + len..],
    })
}

/// The additional data of a datagram or push/pull request sent to `dest`.
pub fn aad_to(kind: Kind, dest: SocketAddr) -> Vec<u8> {
    let mut out = CONTEXT.to_vec();
    out.push(kind as u8);
    match dest.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&dest.port().to_be_bytes());
    out
}

/// The additional data of a push/pull answer to `requester`.
pub fn aad_answer(requester: &str) -> Vec<u8> {
    let mut out = CONTEXT.to_vec();
    out.push(Kind::Answer as u8);
    out.extend_from_slice(requester.as_bytes());
    out
}

/// Whether `time_ms` is within [`WINDOW`] of `now_ms`.
pub fn in_window(now_ms: u64, time_ms: u64) -> bool {
    now_ms.abs_diff(time_ms) <= WINDOW.as_millis() as u64
}

/// What one sender was last heard with.
#[derive(Debug, Clone)]
struct Seen {
    /// The newest timestamp accepted.
    newest_ms: u64,
    /// The highest sequence number accepted.
    top: u64,
    /// Bit `i`: `top - i` was accepted.
    bits: [u64; (SEQ_WINDOW / 64) as usize],
}

impl Seen {
    fn new(time_ms: u64, seq: u64) -> Seen {
        let mut bits = [0u64; (SEQ_WINDOW / 64) as usize];
        bits[0] = 1;
        Seen {
            newest_ms: time_ms,
            top: seq,
            bits,
        }
    }

    fn bit(&self, i: u64) -> bool {
        self.bits[(i / 64) as usize] >> (i % 64) & 1 == 1
    }

    fn set(&mut self, i: u64) {
        self.bits[(i / 64) as usize] |= 1 << (i % 64);
    }

    /// Moves the top up by `by`, keeping what stays within the window.
    fn shift(&mut self, by: u64) {
        if by >= SEQ_WINDOW {
            self.bits = [0; (SEQ_WINDOW / 64) as usize];
            return;
        }
        let words = (by / 64) as usize;
        let bits = (by % 64) as u32;
        let n = self.bits.len();
        for i in (0..n).rev() {
            let lo = i.checked_sub(words).map_or(0, |j| self.bits[j]);
            let below = i.checked_sub(words + 1).map_or(0, |j| self.bits[j]);
            self.bits[i] = if bits == 0 {
                lo
            } else {
                lo << bits | below >> (64 - bits)
            };
        }
    }
}

/// The replay cache: per sender, the newest time and the sequence numbers seen near the top,
/// for at most `max_senders` senders (a sender heard last outside the window is forgotten
/// when room is needed: nothing it sent can pass the window again).
#[derive(Debug, Clone)]
pub struct Replay {
    max_senders: usize,
    senders: HashMap<String, Seen>,
}

impl Replay {
    /// A cache for at most `max_senders` senders (the cluster's `max_members`).
    pub fn new(max_senders: usize) -> Replay {
        Replay {
            max_senders: max_senders.max(1),
            senders: HashMap::new(),
        }
    }

    /// How many senders it remembers.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Accepts `(sender, time_ms, seq)` at `now_ms` once, or says why not.
    pub fn check(
        &mut self,
        now_ms: u64,
        sender: &str,
        time_ms: u64,
        seq: u64,
    ) -> Result<(), Refused> {
        if !in_window(now_ms, time_ms) {
            return Err(Refused::Stale);
        }
        let window_ms = WINDOW.as_millis() as u64;
        let Some(seen) = self.senders.get_mut(sender) else {
            if self.senders.len() >= self.max_senders {
                self.senders
                    .retain(|_, s| s.newest_ms.saturating_add(window_ms) >= now_ms);
                if self.senders.len() >= self.max_senders {
                    return Err(Refused::Full);
                }
            }
            self.senders
                .insert(sender.to_owned(), Seen::new(time_ms, seq));
            return Ok(());
        };
        if seen.newest_ms.saturating_add(window_ms) < now_ms {
            // Everything accepted from it is outside the window now: nothing in the window
            // can repeat it, so it starts afresh (a restart after a clock step back).
            *seen = Seen::new(time_ms, seq);
            return Ok(());
        }
        if seq > seen.top {
            seen.shift(seq - seen.top);
            seen.top = seq;
            seen.set(0);
        } else {
            let below = seen.top - seq;
            if below >= SEQ_WINDOW || seen.bit(below) {
                return Err(Refused::Replayed);
            }
            seen.set(below);
        }
        seen.newest_ms = seen.newest_ms.max(time_ms);
        Ok(())
    }
}

/// Our push/pull requests still waiting for their answer: each answer is taken once, from
/// the peer it was sent to, before its deadline.
#[derive(Debug, Clone, Default)]
pub struct Outstanding {
    requests: VecDeque<(u64, SocketAddr, Instant)>,
}

impl Outstanding {
    /// Remembers request `seq` to `to` until `deadline` (the oldest is dropped beyond
    /// [`MAX_OUTSTANDING`]).
    pub fn sent(&mut self, seq: u64, to: SocketAddr, deadline: Instant) {
        if self.requests.len() >= MAX_OUTSTANDING {
            self.requests.pop_front();
        }
        self.requests.push_back((seq, to, deadline));
    }

    /// Takes the request `seq` answered by `from` at `now`, if it is outstanding.
    pub fn answered(&mut self, now: Instant, seq: u64, from: SocketAddr) -> Result<(), Refused> {
        self.requests.retain(|r| r.2 >= now);
        let at = self
            .requests
            .iter()
            .position(|r| r.0 == seq && r.1 == from)
            .ok_or(Refused::Unsolicited)?;
        self.requests.remove(at);
        Ok(())
    }

    /// How many are outstanding.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }
}

/// Whether an answer to our probe of `name` at `addr` binds that address to the name: in
/// secure mode only when it was sealed as from `name` itself (`sender`) and came from the
/// address's IP (its port may differ behind a forwarder). Without secure mode, any answer
/// to our random sequence number does.
pub fn speaks_for(
    secure: bool,
    sender: Option<&str>,
    from: SocketAddr,
    name: &str,
    addr: SocketAddr,
) -> bool {
    !secure || (sender == Some(name) && from.ip() == addr.ip())
}

#[cfg(test)]
mod tests;
