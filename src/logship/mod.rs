//! Log shipping (issue "Log shipping"): every service's lines to a central collector over RELP
//! (or plain TCP with octet counting), nothing lost across collector restarts.
//!
//! The pure cores, no I/O and no clock:
//!
//! - [`syslog`]: RFC 5424 formatting of one line (PRI from the stream, RFC 3339 UTC time with
//!   microseconds, sanitized HOSTNAME and APP-NAME, a `muster@32473` structured-data element
//!   carrying the boot id and a sequence number so duplicates can be removed, a continuation
//!   mark for pieces of split lines; the message bytes are sent as they are, invalid UTF-8
//!   included) and RFC 6587 octet counting;
//! - [`relp`]: RELP frames (encode, and an incremental, bounded, never-panicking reader) and
//!   the client's state machine: `open` handshake, a sliding window of transactions, every
//!   unacknowledged message resent in order after a reconnect.
//!
//! - [`episode`]: the reconnect back-off, the collector's away/back episodes and the queue's
//!   accounting;
//! - [`overflow`]: what a full queue does with the next line (`drop-while-away`, `block`,
//!   `drop-oldest`; spooled instead of dropped when a spool is set);
//! - [`segment`]: the spool's record format (length, CRC-32, message), torn and damaged tails
//!   detected.
//!
//! The shells:
//!
//! - [`spool`]: the disk spool's segment files: append, read back in order, delete once
//!   acknowledged, bound by dropping the oldest, what is unacknowledged kept at exit;
//! - [`ship`]: a bounded queue of logship's own [`ship::Line`]s, filled through a
//!   [`ship::Feed`], and a tokio task that connects with back-off, keeps a sliding window of
//!   RELP transactions (the spool's backlog first), resends after reconnects and at shutdown
//!   flushes until the stop deadline or for [`ship::FLUSH_CAP`], whichever comes first, then
//!   writes what is left to the spool. Counters: queued, delivered, resent, dropped, spooled.
//!
//! This module knows only [`crate::config`]: `app.rs` turns the supervisor's lines into
//! [`ship::Line`]s.

pub mod episode;
pub mod overflow;
pub mod relp;
pub mod segment;
pub mod ship;
pub mod spool;
pub mod syslog;
