//! The shipper's pure decisions, no I/O and no clock (times are inputs): the reconnect
//! back-off, the "collector away / back" episodes that the log reports once each, and the
//! queue's memory accounting with its "dropping lines" episodes.

use std::time::Duration;

/// First pause after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between two attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Reconnect back-off: [`BACKOFF_MIN`] doubling to [`BACKOFF_MAX`] on every failure (refused,
/// timed out, garbage, closed), back to the start only after a healthy session.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// A failure: how long to wait before the next attempt (the wait after it doubles).
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        wait
    }

    /// A healthy session (the collector answered as it should): the next failure waits
    /// [`BACKOFF_MIN`] again.
    pub fn healthy(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// What to log about the collector, once per episode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The collector went away (first failure of an episode).
    Away {
        /// Why the first attempt failed.
        reason: String,
    },
    /// The collector is back.
    Back {
        /// Failed attempts during the episode.
        failures: u64,
        /// How long it was away.
        away: Duration,
        /// Lines sent again during the episode (they may reach the collector twice).
        resent: u64,
        /// Lines dropped during the episode (full queue).
        dropped: u64,
    },
}

/// The collector's episodes (times are the shell's monotonic clock, as a duration since
/// any fixed origin): healthy, or away since a failure. A failure while healthy opens
/// an episode ([`Note::Away`]); further failures are only counted; the next healthy session
/// closes it ([`Note::Back`] with what it cost).
#[derive(Debug, Default)]
pub struct Outage {
    away: Option<Away>,
}

#[derive(Debug)]
struct Away {
    since: Duration,
    failures: u64,
    resent_before: u64,
    dropped_before: u64,
}

impl Outage {
    /// A connection attempt or a session failed for `reason`; `resent` and `dropped` are the
    /// shipper's counters so far.
    pub fn failed(
        &mut self,
        now: Duration,
        reason: &str,
        resent: u64,
        dropped: u64,
    ) -> Option<Note> {
        if let Some(a) = &mut self.away {
            a.failures += 1;
            return None;
        }
        self.away = Some(Away {
            since: now,
            failures: 1,
            resent_before: resent,
            dropped_before: dropped,
        });
        Some(Note::Away {
            reason: reason.to_owned(),
        })
    }

    /// The collector answered as it should.
    pub fn healthy(&mut self, now: Duration, resent: u64, dropped: u64) -> Option<Note> {
        let a = self.away.take()?;
        Some(Note::Back {
            failures: a.failures,
            away: now.saturating_sub(a.since),
            resent: resent.saturating_sub(a.resent_before),
            dropped: dropped.saturating_sub(a.dropped_before),
        })
    }

    /// Whether an episode is open.
    pub fn is_away(&self) -> bool {
        self.away.is_some()
    }
}

/// Bytes a queued line costs beyond its text: the entry, its `Arc` of the service name and
/// its `Vec` header, rounded up (so a queue of many short lines is bounded too).
pub const LINE_OVERHEAD: usize = 96;

/// What the queue should do with an incoming line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// There is room: queue it.
    Fits,
    /// The queue is full: drop the oldest line (or wait, under `block`), then ask again.
    Full,
}

/// The queue's accounting: lines and bytes (text plus [`LINE_OVERHEAD`]) against both
/// bounds, and the drop episodes (one warning when drops start, one line with the count when
/// the queue has drained to half).
#[derive(Debug)]
pub struct Budget {
    max_lines: usize,
    max_bytes: usize,
    lines: usize,
    bytes: usize,
    /// Lines dropped in the current drop episode, if one is open.
    dropping: Option<u64>,
}

/// What to log about drops, once per episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drops {
    /// The first drop of an episode.
    Started,
    /// The queue drained to half: the episode dropped this many lines (0 under `block`).
    Ended(u64),
}

impl Budget {
    /// A queue of at most `max_lines` lines and `max_bytes` bytes.
    pub fn new(max_lines: usize, max_bytes: usize) -> Budget {
        Budget {
            max_lines: max_lines.max(1),
            max_bytes,
            lines: 0,
            bytes: 0,
            dropping: None,
        }
    }

    /// The cost of a line of `len` bytes of text.
    pub fn cost(len: usize) -> usize {
        len + LINE_OVERHEAD
    }

    /// Whether a line of `len` bytes can be queued now. An empty queue takes any line, so
    /// one line larger than the bound still goes through.
    pub fn admit(&self, len: usize) -> Admit {
        if self.lines == 0 {
            return Admit::Fits;
        }
        if self.lines >= self.max_lines || self.bytes + Budget::cost(len) > self.max_bytes {
            Admit::Full
        } else {
            Admit::Fits
        }
    }

    /// A line of `len` bytes was queued (or put back).
    pub fn added(&mut self, len: usize) {
        self.lines += 1;
        self.bytes += Budget::cost(len);
    }

    /// A line of `len` bytes left the queue (taken for sending); may close a drop episode.
    pub fn removed(&mut self, len: usize) -> Option<Drops> {
        self.lines = self.lines.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(Budget::cost(len));
        let drained = self.lines <= self.max_lines / 2 && self.bytes <= self.max_bytes / 2;
        match self.dropping {
            Some(n) if drained => {
                self.dropping = None;
                Some(Drops::Ended(n))
            }
            _ => None,
        }
    }

    /// The oldest line, of `len` bytes, was dropped to make room; may open a full-queue
    /// episode.
    pub fn dropped(&mut self, len: usize) -> Option<Drops> {
        self.lines = self.lines.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(Budget::cost(len));
        self.overflow(1)
    }

    /// A writer waits for room (`block`); may open a full-queue episode.
    pub fn blocked(&mut self) -> Option<Drops> {
        self.overflow(0)
    }

    fn overflow(&mut self, dropped: u64) -> Option<Drops> {
        match &mut self.dropping {
            Some(n) => {
                *n += dropped;
                None
            }
            None => {
                self.dropping = Some(dropped);
                Some(Drops::Started)
            }
        }
    }

    /// Lines and bytes held.
    pub fn held(&self) -> (usize, usize) {
        (self.lines, self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_thirty_seconds_and_resets_after_a_healthy_session() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..11).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(
            waits,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000
            ]
        );
        b.healthy();
        assert_eq!(b.failed(), BACKOFF_MIN);
        // Attempts in 5 s of failures at once (a garbage collector): bounded.
        let mut b = Backoff::default();
        let (mut t, mut attempts) = (Duration::ZERO, 0);
        while t < Duration::from_secs(5) {
            attempts += 1;
            t += b.failed();
        }
        assert_eq!(attempts, 6);
    }

    #[test]
    fn an_outage_is_reported_once_away_and_once_back_with_its_cost() {
        let t0 = Duration::from_secs(100);
        let mut o = Outage::default();
        assert_eq!(
            o.healthy(t0, 0, 0),
            None,
            "healthy while healthy: nothing to say"
        );
        assert_eq!(
            o.failed(t0, "connection refused", 3, 1),
            Some(Note::Away {
                reason: "connection refused".into()
            })
        );
        assert!(o.is_away());
        for i in 0..1000 {
            assert_eq!(
                o.failed(t0 + Duration::from_millis(i), "garbage", 3, 1),
                None
            );
        }
        assert_eq!(
            o.healthy(t0 + Duration::from_secs(7), 10, 51),
            Some(Note::Back {
                failures: 1001,
                away: Duration::from_secs(7),
                resent: 7,
                dropped: 50,
            })
        );
        assert!(!o.is_away());
        assert_eq!(o.healthy(t0 + Duration::from_secs(8), 10, 51), None);
        assert!(matches!(
            o.failed(t0, "timeout", 10, 51),
            Some(Note::Away { .. })
        ));
    }

    #[test]
    fn the_budget_counts_lines_and_bytes_with_overhead_and_reports_drop_episodes() {
        let mut b = Budget::new(4, 4 * Budget::cost(10));
        assert_eq!(
            b.admit(1 << 20),
            Admit::Fits,
            "an empty queue takes any line"
        );
        for _ in 0..4 {
            assert_eq!(b.admit(10), Admit::Fits);
            b.added(10);
        }
        assert_eq!(b.admit(0), Admit::Full, "line bound");
        assert_eq!(b.dropped(10), Some(Drops::Started));
        assert_eq!(
            b.admit(11),
            Admit::Full,
            "byte bound: 3 lines of 10 + one of 11"
        );
        assert_eq!(b.admit(10), Admit::Fits);
        b.added(10);
        assert_eq!(b.dropped(10), None, "one warning per episode");
        b.added(10);
        assert_eq!(b.held(), (4, 4 * Budget::cost(10)));
        assert_eq!(b.removed(10), None, "3 of 4 held: not drained yet");
        assert_eq!(b.removed(10), Some(Drops::Ended(2)));
        assert_eq!(b.removed(10), None);
        (0..3).for_each(|_| b.added(10));
        assert_eq!(b.admit(10), Admit::Full);
        assert_eq!(b.blocked(), Some(Drops::Started));
        assert_eq!(b.blocked(), None);
        b.removed(10);
        assert_eq!(
            b.removed(10),
            Some(Drops::Ended(0)),
            "blocking drops nothing"
        );
        // Many empty lines are bounded by the overhead.
        let mut b = Budget::new(1_000_000, 1000 * Budget::cost(0));
        let mut n = 0;
        while b.admit(0) == Admit::Fits {
            b.added(0);
            n += 1;
        }
        assert_eq!(n, 1000);
    }
}
