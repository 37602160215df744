//! The listener limits' unit tests.

// One real instant is the origin of the virtual clock.
#![allow(clippy::disallowed_methods)]

use super::*;

fn ip(last: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, last])
}

#[test]
fn a_flooding_address_evicts_only_its_own_streams() {
    let mut s = Slots::new(4, 2);
    assert_eq!(s.admit(1, ip(9)), None);
    assert_eq!(s.admit(2, ip(9)), None);
    // Its third stream closes its first.
    assert_eq!(s.admit(3, ip(9)), Some(1));
    assert_eq!(s.admit(4, ip(9)), Some(2));
    // A real peer gets in without closing anything.
    assert_eq!(s.admit(5, ip(1)), None);
    assert_eq!(s.len(), 3);
}

#[test]
fn when_full_the_address_holding_most_loses_its_oldest() {
    let mut s = Slots::new(3, 3);
    s.admit(1, ip(1));
    s.admit(2, ip(9));
    s.admit(3, ip(9));
    assert_eq!(s.admit(4, ip(2)), Some(2));
    assert_eq!(s.len(), 3);
    s.release(1);
    s.release(77);
    assert_eq!(s.len(), 2);
    assert_eq!(s.evict(), Some(3));
    assert_eq!(s.evict(), Some(4));
    assert_eq!(s.evict(), None);
    assert_eq!(s.admit(5, ip(3)), None);
    assert_eq!(s.len(), 1);
}

#[test]
fn accept_errors_back_off_to_a_second_and_reset() {
    let mut b = AcceptBackoff::default();
    assert_eq!(b.failed(), ACCEPT_BACKOFF_MIN);
    assert_eq!(b.failed(), ACCEPT_BACKOFF_MIN * 2);
    for _ in 0..20 {
        b.failed();
    }
    assert_eq!(b.failed(), ACCEPT_BACKOFF_MAX);
    b.succeeded();
    assert_eq!(b.failed(), ACCEPT_BACKOFF_MIN);
    assert_eq!(b.errors, 1);
    let t = Instant::now();
    assert_eq!(b.log_due(t), Some(1));
    assert_eq!(b.log_due(t + Duration::from_secs(1)), None);
    assert_eq!(b.log_due(t + Duration::from_secs(2)), None);
    assert_eq!(b.log_due(t + ACCEPT_LOG_EVERY), Some(3));
}
