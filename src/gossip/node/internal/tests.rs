#![allow(clippy::disallowed_methods)]
use super::*;

#[test]
fn key_requests_and_answers_round_trip_and_a_conflict_answer_names_the_member() {
    assert_eq!(
        requested_key(&key_request(b"0123456789abcdef")).unwrap(),
        b"0123456789abcdef"
    );
    assert_eq!(requested_key(&[0x09, 0x80]), None);
    let a = KeyAnswer {
        result: true,
        message: String::new(),
        keys: vec!["a2V5".into()],
        primary: "a2V5".into(),
    };
    assert_eq!(KeyAnswer::decode(&a.encode()), Some(a));
    assert_eq!(KeyAnswer::decode(&[0x07]), None);
    let m = crate::gossip::serf::Member {
        name: "web-1".into(),
        addr: "10.0.0.7:7946".parse().unwrap(),
        tags: std::sync::Arc::new([("role".to_owned(), "backend".to_owned())].into()),
        status: crate::gossip::serf::Status::Failed,
        suspect: false,
        status_ltime: 3,
        since: std::time::Instant::now(),
    };
    let bytes = conflict_answer(Some(&m));
    assert_eq!(bytes[0], serf_kind::CONFLICT_RESPONSE);
    let (v, _) = msgpack::decode(&bytes[1..]).unwrap();
    assert_eq!(v.get("Name").and_then(Value::as_str), Some("web-1"));
    assert_eq!(
        v.get("Addr").and_then(Value::as_bytes),
        Some(&[10, 0, 0, 7][..])
    );
    assert_eq!(v.get("Status").and_then(Value::as_u64), Some(4));
    assert_eq!(
        conflict_answer(None),
        vec![serf_kind::CONFLICT_RESPONSE, 0xc0]
    );
}
