//! The real muster binary with gossip encryption: a bad key stops it at start (exit 64, the
//! key named), two nodes holding the key (one from `encrypt_file`, one from `keyring_file`)
//! see each other, a node with another key is kept out and logged as refused, and a stream no
//! key opens (plaintext or wrong key) gets no answer while a sealed one gets the sealed state.

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
