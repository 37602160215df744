//! Who hears what the cluster says: the driver's subscribers (RPC streams, event handlers)
//! get membership events, user events and queries; queries delivered here wait (bounded, for
//! their timeout) for an answer by handle; the queries this node asked route their answers
//! to whoever asked. A subscriber that does not keep up loses events (counted), never stalls
//! gossip.

use std::collections::BTreeMap;
use std::time::Instant;

use tokio::sync::mpsc;

use super::super::serf::{self, user};

/// Events a subscriber may hold unread before it loses some.
pub const SUBSCRIBER_BACKLOG: usize = 1024;
/// Most subscribers at once.
pub const MAX_SUBSCRIBERS: usize = 64;
/// Most delivered queries waiting for an answer at once.
const MAX_DELIVERED: usize = 256;

/// What a subscriber hears.
#[derive(Debug, Clone)]
pub enum Heard {
    /// A membership event.
    Member(serf::Event),
    /// A user event.
    User(user::UserEvent),
    /// A query to answer, by `handle` (see [`super::Command::Respond`]).
    Query {
        /// What answers it.
        handle: u64,
        /// The query.
        query: user::Query,
    },
}

/// What the asker of a query hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A member acknowledged.
    Ack(String),
    /// A member answered.
    Response(String, Vec<u8>),
    /// The query is closed.
    Done,
}

/// The driver's subscribers and open queries.
#[derive(Debug, Default)]
pub struct Hub {
    subscribers: Vec<mpsc::Sender<Heard>>,
    delivered: BTreeMap<u64, (user::Query, Instant)>,
    next_handle: u64,
    asked: BTreeMap<(u64, u32), mpsc::UnboundedSender<Answer>>,
    /// Events subscribers lost because they did not keep up, since the last look.
    pub lost: u64,
}

impl Hub {
    /// Adds a subscriber; `false` when there are too many.
    pub fn subscribe(&mut self, tx: mpsc::Sender<Heard>) -> bool {
        self.subscribers.retain(|s| !s.is_closed());
        if self.subscribers.len() >= MAX_SUBSCRIBERS {
            return false;
        }
        self.subscribers.push(tx);
        true
    }

    fn tell(&mut self, heard: &Heard) {
        self.subscribers.retain(|s| !s.is_closed());
        for s in &self.subscribers {
            if s.try_send(heard.clone()).is_err() {
                self.lost += 1;
                if self.lost.is_power_of_two() {
                    tracing::warn!(
                        lost = self.lost,
                        "a subscriber (event handlers, serf stream) is behind: events dropped"
                    );
                }
            }
        }
    }

    /// A membership event.
    pub fn member(&mut self, e: &serf::Event) {
        if !self.subscribers.is_empty() {
            self.tell(&Heard::Member(e.clone()));
        }
    }

    /// A user event.
    pub fn user(&mut self, e: user::UserEvent) {
        self.tell(&Heard::User(e));
    }

    /// A query to answer, open until `now` plus its timeout.
    pub fn query(&mut self, now: Instant, q: user::Query) {
        if self.subscribers.is_empty() {
            return;
        }
        self.expire(now);
        if self.delivered.len() >= MAX_DELIVERED {
            self.lost += 1;
            return;
        }
        let handle = self.next_handle;
        self.next_handle += 1;
        self.delivered.insert(handle, (q.clone(), now + q.timeout));
        self.tell(&Heard::Query { handle, query: q });
    }

    /// The query `handle` stands for, while it is open.
    pub fn delivered(&mut self, now: Instant, handle: u64) -> Option<user::Query> {
        self.expire(now);
        self.delivered.get(&handle).map(|(q, _)| q.clone())
    }

    fn expire(&mut self, now: Instant) {
        self.delivered.retain(|_, (_, until)| now < *until);
    }

    /// A query this node asked: its answers go to `tx`.
    pub fn asked(&mut self, q: &user::Query, tx: mpsc::UnboundedSender<Answer>) {
        self.asked.insert((q.ltime, q.id), tx);
    }

    /// An answer to one of ours.
    pub fn answer(&mut self, r: user::QueryResponse) {
        if let Some(tx) = self.asked.get(&(r.ltime, r.id)) {
            let a = if r.is_ack() {
                Answer::Ack(r.from)
            } else {
                Answer::Response(r.from, r.payload)
            };
            let _ = tx.send(a);
        }
    }

    /// One of ours is closed.
    pub fn done(&mut self, ltime: u64, id: u32) {
        if let Some(tx) = self.asked.remove(&(ltime, id)) {
            let _ = tx.send(Answer::Done);
        }
    }
}
