//! What the gossip listener lets a peer hold, as a pure core the driver asks: how many inbound
//! push/pull streams are open at once ([`MAX_INBOUND_STREAMS`], memberlist 0.6's
//! `maxPushPullRequests`), how many of them one address may hold ([`MAX_STREAMS_PER_IP`]), and
//! how long accepting pauses after an accept error such as EMFILE ([`AcceptBackoff`]).
//!
//! Where memberlist closes a new stream when 128 are pending (so 128 stalled connections
//! stop every push/pull for its 10 s stream timeout), [`Slots`] closes the *oldest* stream of
//! the address that holds the most: a peer that opens connections and sends nothing only
//! ever evicts its own, and a real peer's push/pull gets a slot at once.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most inbound push/pull streams open at once (memberlist: 128 pending push/pulls).
pub const MAX_INBOUND_STREAMS: usize = 128;
/// Most inbound streams one address holds at once.
pub const MAX_STREAMS_PER_IP: usize = 16;
/// First pause after an accept error.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause after repeated accept errors.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The inbound streams open now, oldest first, by the address they came from.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    per_ip: usize,
    /// Streams in the order they were admitted: `(id, address)`.
    open: VecDeque<(u64, IpAddr)>,
    /// How many streams each address holds.
    by_ip: BTreeMap<IpAddr, usize>,
}

impl Slots {
    /// Room for `max` streams, `per_ip` of them from one address.
    pub fn new(max: usize, per_ip: usize) -> Slots {
        Slots {
            max: max.max(1),
            per_ip: per_ip.max(1),
            open: VecDeque::new(),
            by_ip: BTreeMap::new(),
        }
    }

    /// Streams open now.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether no stream is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Admits stream `id` from `ip`; returns the stream to close to make room, if any: the
    /// oldest of `ip` when it holds its share, else the oldest of the address holding most.
    pub fn admit(&mut self, id: u64, ip: IpAddr) -> Option<u64> {
        let held = self.by_ip.get(&ip).copied().unwrap_or(0);
        let evict = if held >= self.per_ip {
            Some(ip)
        } else if self.open.len() >= self.max {
            self.by_ip
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(ip, _)| *ip)
        } else {
            None
        };
        let evicted = evict.and_then(|ip| {
            let at = self.open.iter().position(|(_, i)| *i == ip)?;
            let (id, _) = self.open.remove(at)?;
            self.forget_ip(ip);
            Some(id)
        });
        self.open.push_back((id, ip));
        *self.by_ip.entry(ip).or_insert(0) += 1;
        evicted
    }

    /// Frees a slot when no new stream can even be accepted (the descriptor limit): the oldest
    /// stream of the address holding most, if any.
    pub fn evict(&mut self) -> Option<u64> {
        let ip = self
            .by_ip
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(ip, _)| *ip)?;
        let at = self.open.iter().position(|(_, i)| *i == ip)?;
        let (id, _) = self.open.remove(at)?;
        self.forget_ip(ip);
        Some(id)
    }

    /// Stream `id` ended (or was closed); unknown ids are ignored.
    pub fn release(&mut self, id: u64) {
        if let Some(at) = self.open.iter().position(|(i, _)| *i == id) {
            if let Some((_, ip)) = self.open.remove(at) {
                self.forget_ip(ip);
            }
        }
    }

    fn forget_ip(&mut self, ip: IpAddr) {
        if let Some(n) = self.by_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.by_ip.remove(&ip);
            }
        }
    }
}

/// How often accept errors are logged at most.
pub const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(60);

/// The pause before the next accept after an error: doubled at each error in a row, from
/// [`ACCEPT_BACKOFF_MIN`] to [`ACCEPT_BACKOFF_MAX`], forgotten after a success. At the
/// descriptor limit the listener then tries once a second instead of spinning.
#[derive(Debug, Default, Clone)]
pub struct AcceptBackoff {
    current: Option<Duration>,
    /// Errors since the last success.
    pub errors: u64,
    /// Errors since the last log line, and when the next may be written.
    unlogged: u64,
    next_log: Option<Instant>,
}

impl AcceptBackoff {
    /// Whether an error at `now` is to be logged, and how many came since the last line
    /// (at most one line per [`ACCEPT_LOG_EVERY`]).
    pub fn log_due(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        if self.next_log.is_some_and(|at| now < at) {
            return None;
        }
        self.next_log = Some(now + ACCEPT_LOG_EVERY);
        Some(std::mem::take(&mut self.unlogged))
    }

    /// An accept failed: how long to pause.
    pub fn failed(&mut self) -> Duration {
        let next = self
            .current
            .map_or(ACCEPT_BACKOFF_MIN, |d| (d * 2).min(ACCEPT_BACKOFF_MAX));
        self.current = Some(next);
        self.errors += 1;
        next
    }

    /// An accept succeeded.
    pub fn succeeded(&mut self) {
        self.current = None;
        self.errors = 0;
    }
}

#[cfg(test)]
mod tests;
