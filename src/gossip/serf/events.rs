//! User events and queries in Serf's layer, by Serf's rules (`UserEvent`, `handleUserEvent`,
//! `Query`, `handleQuery`, `handleQueryResponse`): each has its own Lamport clock, is
//! delivered once (the rings of [`user::Seen`]), processed by its sender too, and gossiped on
//! while new. A query's acknowledgement and answers go straight to the asker's address; the
//! asker takes each member's answer once, until the query's time is up.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::super::msgpack::Value;
use super::user::{self, Query, QueryFilter, QueryResponse, UserEvent};
use super::{Asked, MAX_ASKED, Output, Serf, plausible, witness};

/// A query as this node asks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ask {
    /// Its name.
    pub name: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Who answers (empty: everyone).
    pub filters: Vec<QueryFilter>,
    /// Whether members acknowledge.
    pub ack: bool,
    /// How long answers are taken.
    pub timeout: Duration,
    /// How many other members relay each answer too (Serf's `RelayFactor`, at most 5).
    pub relay_factor: u8,
}

/// Most relays of one answer (Serf's CLI allows up to 5).
const MAX_RELAY: u8 = 5;

/// Most answers (acknowledgements and responses) one query passes on.
const MAX_ANSWERS: usize = 8192;
/// Longest regular expression of a tag filter, and its compiled size bound.
const MAX_EXPR: usize = 512;
const EXPR_SIZE: usize = 256 * 1024;

impl Serf {
    /// Sends a user event (as `serf event`): it is processed here too, then gossiped. Refused
    /// when name and payload exceed [`user::EVENT_SIZE_LIMIT`], as Serf refuses them.
    pub fn user_event(&mut self, name: &str, payload: &[u8], coalesce: bool) -> Result<(), String> {
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err("an event name is 1-128 characters, no control characters".into());
        }
        if name.len() + payload.len() > user::EVENT_SIZE_LIMIT {
            return Err(format!(
                "user event exceeds the limit of {} bytes before encoding",
                user::EVENT_SIZE_LIMIT
            ));
        }
        let e = UserEvent {
            ltime: self.event_clock,
            name: name.to_owned(),
            payload: payload.to_vec(),
            coalesce,
        };
        if e.encode().len() > user::EVENT_SIZE_LIMIT {
            return Err(format!(
                "user event exceeds the limit of {} bytes after encoding",
                user::EVENT_SIZE_LIMIT
            ));
        }
        self.event_clock = self.event_clock.wrapping_add(1);
        self.take_event(e);
        Ok(())
    }

    /// A user event from gossip (the body after its type byte).
    pub(super) fn on_event(&mut self, rest: &[u8]) -> bool {
        UserEvent::decode(rest).is_some_and(|e| self.take_event(e))
    }

    /// A user event from gossip, a push/pull or our own: witnessed, then delivered and
    /// gossiped when new.
    fn take_event(&mut self, e: UserEvent) -> bool {
        if !plausible(self.event_clock, e.ltime) {
            return false;
        }
        witness(&mut self.event_clock, e.ltime);
        if !self.events.first(
            self.event_clock,
            e.ltime,
            (e.name.clone(), e.payload.clone()),
        ) {
            return false;
        }
        self.outputs.push_back(Output::Broadcast(e.encode()));
        self.outputs.push_back(Output::UserEvent(e));
        true
    }

    /// Asks a query from this node, at `addr` (where answers come): processed here too (we
    /// acknowledge and may answer our own query, as Serf does), then gossiped.
    pub fn query(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        ask: Ask,
        id: u32,
    ) -> Result<Query, String> {
        let q = Query {
            ltime: self.query_clock,
            id,
            addr: addr.ip(),
            port: addr.port(),
            source: self.me.clone(),
            filters: ask.filters,
            flags: if ask.ack { user::FLAG_ACK } else { 0 },
            relay_factor: ask.relay_factor.min(MAX_RELAY),
            timeout: ask.timeout,
            name: ask.name,
            payload: ask.payload,
        };
        let body = q.encode();
        if body.len() > user::QUERY_SIZE_LIMIT {
            return Err(format!(
                "query exceeds the limit of {} bytes",
                user::QUERY_SIZE_LIMIT
            ));
        }
        if self.asked.len() >= MAX_ASKED {
            return Err(format!("{MAX_ASKED} queries are open already"));
        }
        self.asked.insert(
            (q.ltime, q.id),
            Asked {
                until: now + q.timeout,
                acks: Default::default(),
                answers: Default::default(),
            },
        );
        self.query_clock = self.query_clock.wrapping_add(1);
        self.on_query(now, &body, &body[1..]);
        Ok(q)
    }

    /// A query from gossip (or our own): when new it is gossiped on (unless its sender said
    /// not to); when its filters select us it is acknowledged (if asked) and delivered.
    pub(super) fn on_query(&mut self, _now: Instant, body: &[u8], rest: &[u8]) -> bool {
        let Some(q) = Query::decode(rest) else {
            return false;
        };
        if !plausible(self.query_clock, q.ltime) {
            return false;
        }
        // Answers go to the asker's address: only to a member's own, or anyone could have
        // every member send datagrams to an address of their choice.
        let to = SocketAddr::new(q.addr, q.port);
        if self.members.get(&q.source).is_none_or(|m| m.addr != to) {
            return false;
        }
        witness(&mut self.query_clock, q.ltime);
        if !self.queries.first(self.query_clock, q.ltime, q.id) {
            return false;
        }
        if !q.has(user::FLAG_NO_BROADCAST) {
            self.outputs.push_back(Output::Broadcast(body.to_vec()));
        }
        if !self.selected(&q.filters) {
            return true;
        }
        if q.has(user::FLAG_ACK) {
            let ack = QueryResponse {
                ltime: q.ltime,
                id: q.id,
                from: self.me.clone(),
                flags: user::FLAG_ACK,
                payload: Vec::new(),
            };
            self.answer_to(&q, ack.encode());
        }
        // Serf's internal queries (`_serf_ping`, the key queries) are answered by the node,
        // not by handlers.
        if q.name.starts_with("_serf_") {
            self.outputs.push_back(Output::InternalQuery(q));
        } else {
            self.outputs.push_back(Output::Query(q));
        }
        true
    }

    /// Whether a query's filters select this node.
    fn selected(&self, filters: &[QueryFilter]) -> bool {
        let tags = self.members.get(&self.me).map(|m| &m.tags);
        filters.iter().all(|f| match f {
            QueryFilter::Nodes(names) => names.contains(&self.me),
            QueryFilter::Tag { tag, expr } => {
                let value = tags.and_then(|t| t.get(tag)).map_or("", String::as_str);
                expr.len() <= MAX_EXPR
                    && regex_lite::RegexBuilder::new(expr)
                        .size_limit(EXPR_SIZE)
                        .build()
                        .is_ok_and(|re| re.is_match(value))
            }
        })
    }

    /// Answers query `q` (delivered by [`Output::Query`]) with `payload`, straight to its
    /// asker. Refused over [`user::RESPONSE_SIZE_LIMIT`].
    pub fn respond(&mut self, q: &Query, payload: &[u8]) -> Result<(), String> {
        let r = QueryResponse {
            ltime: q.ltime,
            id: q.id,
            from: self.me.clone(),
            flags: 0,
            payload: payload.to_vec(),
        };
        let body = r.encode();
        if body.len() > user::RESPONSE_SIZE_LIMIT {
            return Err(format!(
                "response exceeds the limit of {} bytes",
                user::RESPONSE_SIZE_LIMIT
            ));
        }
        self.answer_to(q, body);
        Ok(())
    }

    /// Sends an answer to `q`'s asker, and through `relay_factor` other alive members (each
    /// forwards it once), so an answer survives a lossy path: Serf's `relayResponse`.
    fn answer_to(&mut self, q: &Query, body: Vec<u8>) {
        let to = SocketAddr::new(q.addr, q.port);
        let relays: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|m| m.status == super::Status::Alive && m.name != self.me && m.addr != to)
            .map(|m| m.addr)
            .collect();
        let mut relays = relays;
        for _ in 0..usize::from(q.relay_factor.min(MAX_RELAY)).min(relays.len()) {
            let pick = relays.swap_remove(self.rng.below(relays.len()));
            self.outputs.push_back(Output::SendTo {
                to: pick,
                body: user::relay(to, &body),
            });
        }
        self.outputs.push_back(Output::SendTo { to, body });
    }

    /// A relayed answer: forwarded once to its destination, only when that is a member's
    /// address (a relay to anywhere else would let anyone aim our datagrams at a victim).
    pub(super) fn on_relay(&mut self, rest: &[u8]) {
        let Some((to, inner)) = user::unrelay(rest) else {
            return;
        };
        let known = self.members.values().any(|m| m.addr == to);
        if known && inner.first() == Some(&super::serf_kind::QUERY_RESPONSE) {
            self.outputs.push_back(Output::SendTo {
                to,
                body: inner.to_vec(),
            });
        }
    }

    /// An answer to one of our queries: passed on once per member and kind, while open.
    pub(super) fn on_answer(&mut self, rest: &[u8]) {
        let Some(r) = QueryResponse::decode(rest) else {
            return;
        };
        let Some(asked) = self.asked.get_mut(&(r.ltime, r.id)) else {
            return;
        };
        let fresh = if r.is_ack() {
            asked.acks.insert(r.from.clone())
        } else {
            asked.answers.insert(r.from.clone())
        };
        if fresh && asked.acks.len() + asked.answers.len() <= MAX_ANSWERS {
            self.outputs.push_back(Output::QueryAnswer(r));
        }
    }

    /// Closes the queries whose time is up ([`Output::QueryDone`] for each).
    pub(super) fn close_queries(&mut self, now: Instant) {
        let done: Vec<(u64, u32)> = self
            .asked
            .iter()
            .filter(|(_, a)| now >= a.until)
            .map(|(k, _)| *k)
            .collect();
        for (ltime, id) in done {
            self.asked.remove(&(ltime, id));
            self.outputs.push_back(Output::QueryDone { ltime, id });
        }
    }

    /// Serf's user events in our push/pull: `[{LTime, Events: [{Name, Payload}]}]`.
    pub(super) fn recent_events(&self) -> Vec<Value> {
        self.events
            .recent()
            .map(|(t, seen)| {
                let list = seen
                    .iter()
                    .map(|(name, payload)| {
                        Value::map([
                            ("Name", Value::Raw(name.as_bytes().to_vec())),
                            ("Payload", Value::Raw(payload.clone())),
                        ])
                    })
                    .collect();
                Value::map([("LTime", Value::Uint(t)), ("Events", Value::Array(list))])
            })
            .collect()
    }

    /// The clocks and events of a peer's push/pull. The first one only sets where events start
    /// (no replay of what happened before we joined, as Serf's agent by default); later ones
    /// deliver the events we missed.
    pub(super) fn merge_events(&mut self, event_ltime: u64, query_ltime: u64, events: &[Value]) {
        if event_ltime != 0 && plausible(self.event_clock, event_ltime) {
            witness(&mut self.event_clock, event_ltime.wrapping_sub(1));
        }
        if query_ltime != 0 && plausible(self.query_clock, query_ltime) {
            witness(&mut self.query_clock, query_ltime.wrapping_sub(1));
        }
        if !self.merged {
            self.merged = true;
            self.events.min_time = self.events.min_time.max(event_ltime);
            return;
        }
        for slot in events.iter().take(user::BUFFER as usize) {
            let (Some(ltime), Some(Value::Array(list))) = (
                slot.get("LTime").and_then(Value::as_u64),
                slot.get("Events"),
            ) else {
                continue;
            };
            for e in list.iter().take(64) {
                let Some(name) = e.get("Name").and_then(user::event_name) else {
                    continue;
                };
                let payload = e.get("Payload").and_then(Value::as_bytes).unwrap_or(&[]);
                self.take_event(UserEvent {
                    ltime,
                    name,
                    payload: payload.to_vec(),
                    coalesce: false,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
