//! The real muster binary with gossip encryption: a bad key stops it at start (exit 64, the
//! key named), two nodes holding the key (one from `encrypt_file`, one from `keyring_file`)
//! see each other, a node with another key is kept out and logged as refused, and a stream no
//! key opens (plaintext or wrong key) gets no answer while a sealed one gets the sealed state;
//! serf's golden datagrams sealed give a keyed node the view they give a plain one, and the
//! CPU per datagram of both paths is measured (tests/bench/gossip.py prints it).

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use std::io::{Read, Write};

use base64::Engine;
use common::{Run, config, eventually, free_port, muster};
use muster::gossip::crypto::Keyring;
use muster::gossip::wire;

fn b64(key: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap()
}

const KEY: &str = "5K9OtfjNP9lbeR7vqmUYtA==";
const OTHER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const LONG: Duration = Duration::from_secs(20);

fn members(socket: &Path) -> String {
    let out = Command::new(muster())
        .args(["members", "--socket", socket.to_str().unwrap()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `name`'s status in the node's `muster members`.
fn status(socket: &Path, name: &str) -> Option<String> {
    members(socket).lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&name)).then(|| f.get(2).unwrap_or(&"").to_string())
    })
}

/// A node's config with `keys` (lines of `[gossip]`): (config, control socket).
fn node(dir: &Path, name: &str, port: u16, join: Option<u16>, keys: &str) -> (PathBuf, PathBuf) {
    let sock = dir.join(format!("{name}.sock"));
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let join = join.map_or(String::new(), |p| format!("join = [\"127.0.0.1:{p}\"]"));
    let cfg = config(
        &sub,
        &format!(
            "[supervisor]\ncontrol_socket = \"{sock}\"\n[gossip]\nname = \"{name}\"\n\
             bind = \"127.0.0.1:{port}\"\n{join}\nprofile = \"local\"\n{keys}\n\
             [services.main]\nmain = true\ncommand = [\"sh\", \"-c\", \"echo up; exec sleep 1000\"]\n",
            sock = sock.display()
        ),
    );
    (cfg, sock)
}

#[test]
fn a_bad_key_stops_muster_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("ring.json");
    std::fs::write(&garbage, "[\"not base64!\"]").unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let cases = [
        (
            "encrypt = \"c2hvcnQ=\"".to_owned(),
            "gossip.encrypt: the key is 5 bytes",
        ),
        (
            "encrypt = \"@@@\"".to_owned(),
            "gossip.encrypt: not a base64 key",
        ),
        (
            "encrypt_file = \"/nonexistent/secret\"".to_owned(),
            "gossip.encrypt_file: cannot read /nonexistent/secret",
        ),
        (
            format!("keyring_file = \"{}\"", garbage.display()),
            "gossip.keyring_file: ",
        ),
        (
            format!(
                "encrypt = \"{OTHER_KEY}\"\nencrypt_file = \"{}\"",
                key_file.display()
            ),
            "gossip.encrypt_file: holds another key than gossip.encrypt",
        ),
    ];
    for (i, (keys, expect)) in cases.iter().enumerate() {
        let (cfg, _) = node(dir.path(), &format!("bad{i}"), free_port(), None, keys);
        let out = Command::new(muster())
            .args(["--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{keys}: {stderr}");
        assert!(stderr.contains(expect), "{keys}: {stderr}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("up"),
            "{keys}"
        );
    }
}

#[test]
fn nodes_with_the_key_see_each_other_and_another_key_is_kept_out() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("gossip.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    // b's keyring: the cluster's key primary, and another one installed (read, never sent).
    let ring = dir.path().join("keyring.json");
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let (a_cfg, a_sock) = node(
        dir.path(),
        "a",
        pa,
        None,
        &format!("encrypt_file = \"{}\"", key_file.display()),
    );
    std::fs::write(&ring, format!("[\"{KEY}\", \"{OTHER_KEY}\"]")).unwrap();
    let (b_cfg, b_sock) = node(
        dir.path(),
        "b",
        pb,
        Some(pa),
        &format!("keyring_file = \"{}\"", ring.display()),
    );
    let (c_cfg, c_sock) = node(
        dir.path(),
        "c",
        pc,
        Some(pa),
        &format!("encrypt = \"{OTHER_KEY}\""),
    );
    let a = Run::start(muster(), &["--config", a_cfg.to_str().unwrap()]);
    let b = Run::start(muster(), &["--config", b_cfg.to_str().unwrap()]);
    let c = Run::start(muster(), &["--config", c_cfg.to_str().unwrap()]);
    eventually("a sees b alive", LONG, || {
        status(&a_sock, "b").as_deref() == Some("alive")
    });
    eventually("b sees a alive", LONG, || {
        status(&b_sock, "a").as_deref() == Some("alive")
    });
    // c keeps re-joining a every second; a refuses it and says so (at most once a minute).
    a.wait_line("gossip traffic refused", LONG);
    std::thread::sleep(Duration::from_secs(3));
    for (who, sock) in [("a", &a_sock), ("b", &b_sock)] {
        let m = members(sock);
        assert!(status(sock, "c").is_none(), "{who} lists c:\n{m}");
    }
    let m = members(&c_sock);
    assert!(
        !m.lines()
            .any(|l| l.starts_with("a ") || l.starts_with("b "))
            && m.lines().count() == 1,
        "c lists a or b:\n{m}"
    );
    assert_eq!(a.count("gossip traffic refused"), 1, "{}", a.text());

    // A stream no key of a's opens gets no answer at all (a closes it); one sealed with the
    // key gets a's sealed push/pull.
    let other = Keyring::new(&[b64(OTHER_KEY)]).unwrap();
    let right = Keyring::new(&[b64(KEY)]).unwrap();
    let request = wire::encode_push_pull(true, &[], &[]);
    let plain = request.clone();
    let wrong = other.seal_stream(&[1; 12], &request);
    let good = right.seal_stream(&[2; 12], &request);
    let answer = |bytes: &[u8]| -> Vec<u8> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", pa)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(bytes).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    };
    assert!(
        answer(&plain).is_empty(),
        "a answered a plaintext push/pull"
    );
    assert!(
        answer(&wrong).is_empty(),
        "a answered a wrong-key push/pull"
    );
    let got = answer(&good);
    let pp = wire::decode_stream(&right.open_stream(&got).unwrap()).unwrap();
    assert!(pp.nodes.iter().any(|n| n.name == "a"), "a's sealed answer");
    drop((a, b, c));
}

#[test]
fn one_keyring_file_serves_serf_and_muster() {
    // The same JSON keyring file given to `serf agent -keyring-file` and to muster's
    // `keyring_file`: one cluster, sealed with the first key.
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("keyring.json");
    std::fs::write(&ring, format!("[\"{OTHER_KEY}\", \"{KEY}\"]")).unwrap();
    let (serf_port, rpc_port, port) = (free_port(), free_port(), free_port());
    let rpc = format!("127.0.0.1:{rpc_port}");
    let mut serf = common::owned(Command::new("serf").args([
        "agent",
        "-node",
        "ringserf",
        "-bind",
        &format!("127.0.0.1:{serf_port}"),
        "-rpc-addr",
        &rpc,
        "-keyring-file",
        ring.to_str().unwrap(),
    ]))
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let (cfg, sock) = node(
        dir.path(),
        "ringmuster",
        port,
        Some(serf_port),
        &format!("keyring_file = \"{}\"", ring.display()),
    );
    let m = Run::start(muster(), &["--config", cfg.to_str().unwrap()]);
    let serf_members = || {
        let out = Command::new("serf")
            .args(["members", "-rpc-addr", &rpc])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    eventually("serf lists ringmuster alive", LONG, || {
        serf_members()
            .lines()
            .any(|l| l.starts_with("ringmuster ") && l.contains(" alive"))
    });
    eventually("muster lists ringserf alive", LONG, || {
        status(&sock, "ringserf").as_deref() == Some("alive")
    });
    assert_eq!(m.count("gossip traffic refused"), 0, "{}", m.text());
    let _ = serf.kill();
    let _ = serf.wait();
    drop(m);
}

/// The golden serf datagrams (`tests/golden/`), as captured.
fn golden_datagrams() -> Vec<Vec<u8>> {
    include_str!("golden/serf-0.9.4-join-tags-leave.txt")
        .lines()
        .filter_map(|l| l.strip_prefix("udp "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|hex| {
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect()
        })
        .collect()
}

/// A node as the driver makes it, keyed or not, with nothing pending.
fn cost_node(keyring: Option<Keyring>, now: std::time::Instant) -> muster::gossip::node::Node {
    use muster::gossip::node::{Node, Settings};
    use muster::gossip::{serf, swim};
    let settings = Settings {
        name: "me".to_owned(),
        advertise: "10.0.0.1:7946".parse().unwrap(),
        tags: Default::default(),
        profile: swim::Config::lan(),
        serf: serf::Config::default(),
        rejoin_interval: Duration::from_secs(30),
        incarnation: 1,
        seed: 1,
    };
    let n = Node::new(settings, false, now);
    let mut n = match keyring {
        Some(k) => n.with_keyring(k, [5; muster::gossip::crypto::NONCE]),
        None => n,
    };
    while n.poll_output().is_some() {}
    n
}

/// Nanoseconds per datagram for the node to take `packets` (and carry out what it asks, its
/// answers sealed when keyed), over `rounds` passes; and the datagrams it sent in answer.
fn receive_ns(
    node: &mut muster::gossip::node::Node,
    packets: &[Vec<u8>],
    rounds: usize,
) -> (f64, Vec<Vec<u8>>) {
    use muster::gossip::node::{Input, Output};
    let from = "10.0.0.2:7946".parse().unwrap();
    let mut sent = Vec::new();
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        for p in packets {
            node.handle(start, Input::Datagram { from, bytes: p });
            while let Some(o) = node.poll_output() {
                if let Output::Transmit { bytes, .. } = o {
                    sent.push(bytes);
                }
            }
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / (rounds * packets.len()) as f64;
    (ns, sent)
}

#[test]
fn sealed_golden_datagrams_give_the_plaintext_view_and_their_cost_is_measured() {
    // The real serf datagrams, in plaintext to a plain node and sealed (AES-256, version 1) to
    // a keyed one: both decode all of them and answer alike (the keyed node's answers sealed),
    // nothing is refused. The CPU per datagram of
    // both paths (open + decode + SWIM and Serf, and sealing the answers) is printed for
    // tests/bench/gossip.py (the fastest of 20 slices); CRYPTO_COST_ROUNDS sets the passes
    // (the bench runs release).
    let rounds: usize = std::env::var("CRYPTO_COST_ROUNDS").map_or(20, |v| v.parse().unwrap());
    let ring = Keyring::new(&[b64(OTHER_KEY)]).unwrap();
    let plain = golden_datagrams();
    assert!(plain.len() > 20);
    let mut nonces = muster::gossip::crypto::Nonces::new([1; muster::gossip::crypto::NONCE]);
    let sealed: Vec<Vec<u8>> = plain
        .iter()
        .map(|p| ring.seal(1, &nonces.next_nonce(), p, b""))
        .collect();
    let now = std::time::Instant::now();
    let (mut a, mut b) = (cost_node(None, now), cost_node(Some(ring.clone()), now));
    // In 20 slices, the four measured in turn; the fastest slice of each is reported (the
    // slices a busy host preempts are slower, never faster).
    let slice = rounds.div_ceil(20);
    let per = |t: std::time::Instant, n: usize| t.elapsed().as_nanos() as f64 / n as f64;
    let (mut plain_sent, mut keyed_sent) = (Vec::new(), Vec::new());
    let mut best = [f64::MAX; 4];
    let (mut opened, mut out) = (0, 0);
    for _ in 0..20 {
        let (ns, sent) = receive_ns(&mut a, &plain, slice);
        best[0] = best[0].min(ns);
        plain_sent.extend(sent);
        let (ns, sent) = receive_ns(&mut b, &sealed, slice);
        best[1] = best[1].min(ns);
        keyed_sent.extend(sent);
        // The cipher alone.
        let t = std::time::Instant::now();
        for _ in 0..slice {
            for s in &sealed {
                opened += ring.open(s, b"").map_or(0, |p| p.len());
            }
        }
        best[2] = best[2].min(per(t, slice * sealed.len()));
        let t = std::time::Instant::now();
        for _ in 0..slice {
            for p in &plain {
                out += ring.seal(1, &nonces.next_nonce(), p, b"").len();
            }
        }
        best[3] = best[3].min(per(t, slice * plain.len()));
    }
    let [plain_ns, keyed_ns, open_ns, seal_ns] = best;
    let rounds = slice * 20;
    assert_eq!(b.crypto_refused().packets, 0);
    assert_eq!((a.undecodable(), b.undecodable()), (0, 0));
    assert_eq!(plain_sent.len(), keyed_sent.len());
    assert!(
        !plain_sent.is_empty(),
        "the node answered none of serf's datagrams"
    );
    for (p, k) in plain_sent.iter().zip(&keyed_sent) {
        assert_eq!(
            ring.open(k, b"").unwrap().len(),
            p.len(),
            "an answer sent unsealed"
        );
    }
    assert_eq!(opened, rounds * plain.iter().map(Vec::len).sum::<usize>());
    assert_eq!(out, rounds * sealed.iter().map(Vec::len).sum::<usize>());
    let mean = plain.iter().map(Vec::len).sum::<usize>() / plain.len();
    println!(
        "crypto cost: {} datagrams of {mean} bytes on average, {rounds} rounds: receive plaintext \
         {plain_ns:.0} ns, encrypted {keyed_ns:.0} ns per datagram; open {open_ns:.0} ns, seal \
         {seal_ns:.0} ns",
        plain.len()
    );
}
