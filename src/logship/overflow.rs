//! What a full memory queue does with the next line, decided from the policy
//! (`[logship] when_full`), whether the collector is present, whether muster is exiting and
//! whether a disk spool is configured. Pure: the shell ([`super::ship`]) knows the facts and
//! carries the answer out.

use crate::config::WhenFull;

/// The collector as the shipper last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collector {
    /// Connected, its RELP session open and acknowledging (or, over plain TCP, taking
    /// writes): a full queue only means it is slower than the services.
    Present,
    /// Not connected, in reconnect back-off, or not (yet) answering: nothing the queue holds
    /// will leave it soon.
    Away,
}

/// What to do with a full queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// The writer waits for room (back-pressure reaches the service).
    Wait,
    /// The oldest queued line is dropped and counted.
    DropOldest,
    /// The oldest queued line moves to the disk spool (its order kept: every spooled line is
    /// older than every line in memory).
    SpoolOldest,
}

/// The decision. Under `drop-while-away` nothing is dropped while the collector is present,
/// and nothing waits while it is away; at exit nothing waits; a spool takes whatever would
/// otherwise be dropped, or wait for a collector that is away.
pub fn on_full(policy: WhenFull, collector: Collector, closing: bool, spool: bool) -> Overflow {
    let away = collector == Collector::Away;
    let would = match policy {
        _ if closing => Overflow::DropOldest,
        WhenFull::DropOldest => Overflow::DropOldest,
        WhenFull::DropWhileAway if away => Overflow::DropOldest,
        WhenFull::DropWhileAway => Overflow::Wait,
        WhenFull::Block => Overflow::Wait,
    };
    match would {
        Overflow::DropOldest if spool => Overflow::SpoolOldest,
        Overflow::Wait if spool && away => Overflow::SpoolOldest,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Collector::{Away, Present};
    use Overflow::{DropOldest, SpoolOldest, Wait};
    use WhenFull::{Block, DropWhileAway};

    fn check(policy: WhenFull, collector: Collector, closing: bool, spool: bool, want: Overflow) {
        assert_eq!(
            on_full(policy, collector, closing, spool),
            want,
            "{policy:?} {collector:?} closing={closing} spool={spool}"
        );
    }

    #[test]
    fn drop_while_away_waits_for_a_present_collector_and_drops_for_an_away_one() {
        check(DropWhileAway, Present, false, false, Wait);
        check(DropWhileAway, Away, false, false, DropOldest);
        check(DropWhileAway, Present, true, false, DropOldest);
        check(DropWhileAway, Present, false, true, Wait);
        check(DropWhileAway, Away, false, true, SpoolOldest);
        check(DropWhileAway, Present, true, true, SpoolOldest);
    }

    #[test]
    fn block_and_drop_oldest_keep_their_meaning_and_a_spool_takes_what_they_would_lose() {
        check(Block, Present, false, false, Wait);
        check(Block, Away, false, false, Wait);
        check(Block, Away, true, false, DropOldest);
        check(Block, Away, false, true, SpoolOldest);
        check(Block, Present, false, true, Wait);
        check(WhenFull::DropOldest, Present, false, false, DropOldest);
        check(WhenFull::DropOldest, Away, false, false, DropOldest);
        check(WhenFull::DropOldest, Present, false, true, SpoolOldest);
        check(WhenFull::DropOldest, Away, true, true, SpoolOldest);
    }
}
