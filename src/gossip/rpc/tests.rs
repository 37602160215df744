use super::*;

const GOLDEN: &str = include_str!("../../../tests/golden/serf-0.9.4-rpc.txt");

/// One captured connection: the CLI's reads and the agent's, in order.
type Conn = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// The captured connections.
fn connections() -> Vec<Conn> {
    let mut out: Vec<Conn> = Vec::new();
    for line in GOLDEN.lines().filter(|l| !l.starts_with('#')) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("conn"), _) => out.push((Vec::new(), Vec::new())),
            (Some(dir), Some(hex)) => {
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect();
                let conn = out.last_mut().unwrap();
                if dir == "c>s" {
                    conn.0.push(bytes);
                } else {
                    conn.1.push(bytes);
                }
            }
            _ => {}
        }
    }
    out
}

/// Every object in `bytes`, maps sorted by key (Go writes struct fields in its own order).
fn objects(bytes: &[u8]) -> Vec<Value> {
    fn sorted(v: Value) -> Value {
        match v {
            Value::Map(mut entries) => {
                entries.sort_by(|a, b| format!("{}", a.0).cmp(&format!("{}", b.0)));
                Value::Map(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
            v => v,
        }
    }
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (v, used) = msgpack::decode(rest).unwrap();
        out.push(sorted(v));
        rest = &rest[used..];
    }
    out
}

/// The steps a session gives for a connection's reads.
fn steps(reads: &[Vec<u8>], auth: Option<&str>) -> Vec<Step> {
    let mut s = Session::new(auth.map(str::to_owned));
    let mut out = Vec::new();
    for r in reads {
        s.feed(r);
        while let Some(step) = s.step() {
            out.push(step);
        }
    }
    out
}

fn calls(steps: &[Step]) -> Vec<Request> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Call { request, .. } => Some(request.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn every_request_the_serf_cli_sent_is_read_as_it_meant_it() {
    let conns = connections();
    assert_eq!(conns.len(), 16);
    let mut all = Vec::new();
    for (reads, answers) in &conns {
        let steps = steps(reads, None);
        // The handshake is answered by the session itself, as the agent answered it.
        let Step::Reply(reply) = &steps[0] else {
            panic!("{steps:?}")
        };
        assert_eq!(objects(reply), objects(&answers[0])[..1]);
        assert!(!steps.iter().any(|s| matches!(s, Step::Close { .. })));
        all.extend(calls(&steps));
    }
    let filter = |tags: &[(&str, &str)], status: &str| {
        Request::MembersFiltered(Filter {
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            status: status.into(),
            name: String::new(),
        })
    };
    let expected = [
        filter(&[], ""),
        filter(&[], ""),
        filter(&[("role", "backend")], "alive"),
        filter(&[], ""),
        Request::Stats,
        Request::Event {
            name: "deploy".into(),
            payload: b"hello".to_vec(),
            coalesce: true,
        },
        Request::Query(Query {
            request_ack: true,
            timeout_ns: 1_000_000_000,
            name: "uptime".into(),
            ..Query::default()
        }),
        Request::GetCoordinate { node: "s1".into() },
        Request::GetCoordinate { node: "s2".into() },
        Request::ListKeys,
        Request::Tags {
            set: [("foo".to_owned(), "bar".to_owned())].into(),
            delete: Vec::new(),
        },
        Request::Members,
        Request::Query(Query {
            request_ack: true,
            name: "_serf_ping".into(),
            ..Query::default()
        }),
        Request::Stream { kind: "*".into() },
        Request::Monitor {
            level: "info".into(),
        },
        Request::Join {
            existing: vec!["127.0.0.1:17947".into()],
            replay: false,
        },
        filter(&[], "failed"),
        Request::ForceLeave {
            node: "s2".into(),
            prune: false,
        },
        filter(&[], ""),
    ];
    assert_eq!(all, expected);
}

#[test]
fn the_members_answer_is_the_one_the_agent_gave() {
    // The agent's answer to the third connection (members -status=alive -tag role=backend).
    let conns = connections();
    let answers: Vec<Value> = conns[2].1.iter().flat_map(|a| objects(a)).collect();
    let ours = MemberInfo {
        name: "s1".into(),
        addr: "127.0.0.1:17946".parse().unwrap(),
        tags: [("port", "3000"), ("role", "backend")]
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        status: "alive",
    };
    assert_eq!(objects(&header(2, "")), answers[1..2]);
    assert_eq!(objects(&members_body(&[ours])), answers[2..3]);
}

#[test]
fn a_command_before_the_handshake_or_auth_closes_the_connection_with_serfs_error() {
    let req = |command: &str, seq: u64| {
        msgpack::to_vec(&Value::map([
            ("Command", Value::Raw(command.as_bytes().to_vec())),
            ("Seq", Value::Uint(seq)),
        ]))
    };
    let body = |k: &str, v: Value| msgpack::to_vec(&Value::map([(k, v)]));
    let closed_with = |steps: &[Step], error: &str| {
        matches!(steps.last(), Some(Step::Close { reply: Some(r), .. })
            if objects(r) == objects(&header(1, error))
                || objects(r) == objects(&header(2, error))
                || objects(r) == objects(&header(3, error)))
    };
    let s = steps(&[req("members", 1)], None);
    assert!(closed_with(&s, "Handshake required"), "{s:?}");

    let hello = [req("handshake", 1), body("Version", Value::Uint(1))].concat();
    let wrong = [
        req("auth", 2),
        body("AuthKey", Value::Raw(b"nope".to_vec())),
    ]
    .concat();
    let s = steps(&[hello.clone(), wrong, req("members", 3)], Some("sesame"));
    assert_eq!(
        s[1],
        Step::Reply(header(2, "Invalid authentication token")),
        "{s:?}"
    );
    assert!(closed_with(&s, "Authentication required"), "{s:?}");
    let right = [
        req("auth", 2),
        body("AuthKey", Value::Raw(b"sesame".to_vec())),
    ]
    .concat();
    let s = steps(&[hello.clone(), right, req("members", 3)], Some("sesame"));
    assert_eq!(calls(&s), [Request::Members]);

    // A second handshake, another version, an unknown command.
    let again = [hello.clone(), hello.clone()].concat();
    let s = steps(&[again], None);
    assert_eq!(s[1], Step::Reply(header(1, "Handshake already performed")));
    let v2 = [req("handshake", 1), body("Version", Value::Uint(2))].concat();
    assert_eq!(
        steps(&[v2], None)[0],
        Step::Reply(header(1, "Unsupported IPC version"))
    );
    let s = steps(&[hello, req("frobnicate", 2)], None);
    assert!(closed_with(&s, "Unsupported command"), "{s:?}");
}

#[test]
fn bad_bodies_and_oversized_objects_close_the_connection() {
    let hello = msgpack::to_vec(&Value::map([
        ("Command", Value::Raw(b"handshake".to_vec())),
        ("Seq", Value::Uint(1)),
    ]));
    let version = msgpack::to_vec(&Value::map([("Version", Value::Uint(1))]));
    let join = msgpack::to_vec(&Value::map([
        ("Command", Value::Raw(b"join".to_vec())),
        ("Seq", Value::Uint(2)),
    ]));
    // Existing must be a list of strings.
    let bad = msgpack::to_vec(&Value::map([("Existing", Value::Uint(7))]));
    let s = steps(&[hello.clone(), version.clone(), join, bad], None);
    assert!(
        matches!(s.last(), Some(Step::Close { reply: None, why }) if why.contains("Existing")),
        "{s:?}"
    );
    // A string header announcing 1 MiB, and its bytes trickling in: closed once past the bound.
    let mut session = Session::new(None);
    session.feed(&hello);
    session.feed(&version);
    assert!(matches!(session.step(), Some(Step::Reply(_))));
    let mut big = vec![0xdb];
    big.extend_from_slice(&(1u32 << 20).to_be_bytes());
    session.feed(&big);
    let mut step = None;
    for _ in 0..(MAX_OBJECT / 4096 + 2) {
        session.feed(&[b'x'; 4096]);
        step = session.step();
        if step.is_some() {
            break;
        }
    }
    assert!(
        matches!(&step, Some(Step::Close { why, .. }) if why.contains("more than")),
        "{step:?}"
    );
    assert!(session.buf.is_empty());
    session.feed(b"more");
    assert_eq!(session.step(), None);
    // Garbage.
    let s = steps(&[vec![0xc1, 0x00]], None);
    assert!(matches!(&s[0], Step::Close { why, .. } if why.contains("MessagePack")));
}

#[test]
fn filters_match_as_serfs_do_anchored_regular_expressions() {
    let m = |name: &str, status: &'static str, tags: &[(&str, &str)]| MemberInfo {
        name: name.into(),
        addr: "10.0.0.1:7946".parse().unwrap(),
        tags: tags
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        status,
    };
    let all = vec![
        m("web-1", "alive", &[("role", "backend")]),
        m("web-2", "failed", &[("role", "backend")]),
        m("ha", "alive", &[("role", "balancer")]),
        m("log", "alive", &[]),
    ];
    let names = |f: Filter| -> Vec<String> {
        filter(all.clone(), &f)
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect()
    };
    let by_tag = |v: &str| Filter {
        tags: [("role".to_owned(), v.to_owned())].into(),
        ..Filter::default()
    };
    assert_eq!(names(by_tag("back")), Vec::<String>::new());
    assert_eq!(names(by_tag("back.*")), ["web-1", "web-2"]);
    assert_eq!(names(by_tag("backend|balancer")), ["web-1", "web-2", "ha"]);
    let status = Filter {
        status: "alive".into(),
        name: "web-.*".into(),
        ..Filter::default()
    };
    assert_eq!(names(status), ["web-1"]);
    assert_eq!(names(Filter::default()).len(), 4);
    let bad = Filter {
        name: "(".into(),
        ..Filter::default()
    };
    assert!(filter(all.clone(), &bad).is_err());
    let long = Filter {
        name: "a".repeat(MAX_PATTERN + 1),
        ..Filter::default()
    };
    assert!(filter(all, &long).is_err());
}

#[test]
fn stream_filters_read_serfs_syntax() {
    let f = StreamFilter::parse("member-join,user:deploy,query").unwrap();
    assert!(f.wants("member-join", None));
    assert!(!f.wants("member-leave", None));
    assert!(f.wants("user", Some("deploy")));
    assert!(!f.wants("user", Some("other")));
    assert!(f.wants("query", Some("uptime")));
    assert!(StreamFilter::parse("*").unwrap().wants("member-reap", None));
    for bad in ["", "members", "user:", "member-join:x", "user,,query"] {
        assert_eq!(StreamFilter::parse(bad), None, "{bad}");
    }
}
