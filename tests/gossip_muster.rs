//! Two real muster processes gossiping on 127.0.0.1: they see each other through
//! `muster members`, and a SIGTERM makes a node leave the cluster before it stops its services.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Run, code, config, eventually, free_port, muster};

const LONG: Duration = Duration::from_secs(20);

fn members(socket: &std::path::Path, json: bool) -> String {
    let mut cmd = Command::new(muster());
    cmd.args(["members", "--socket", socket.to_str().unwrap()]);
    if json {
        cmd.args(["--format", "json"]);
    }
    String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned()
}

#[test]
fn members_are_seen_and_sigterm_leaves_before_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let (lb_port, web_port) = (free_port(), free_port());
    let lb_sock = dir.path().join("lb.sock");
    let web_sock = dir.path().join("web.sock");
    let lb_dir = dir.path().join("lb");
    let web_dir = dir.path().join("web");
    std::fs::create_dir_all(&lb_dir).unwrap();
    std::fs::create_dir_all(&web_dir).unwrap();
    let lb_cfg = config(
        &lb_dir,
        &format!(
            r#"
[supervisor]
control_socket = "{sock}"
[gossip]
name = "lb"
bind = "127.0.0.1:{lb_port}"
tags = {{ role = "balancer" }}
profile = "local"
[services.main]
main = true
command = ["sleep", "1000"]
"#,
            sock = lb_sock.display()
        ),
    );
    let web_cfg = config(
        &web_dir,
        &format!(
            r#"
[supervisor]
control_socket = "{sock}"
[gossip]
name = "web1"
bind = "127.0.0.1:{web_port}"
join = ["127.0.0.1:{lb_port}"]
tags = {{ role = "backend", port = "3000" }}
profile = "local"
[services.app]
main = true
command = ["sh", "-c", "trap 'echo app-got-term; exit 0' TERM; echo app-up; while :; do sleep 0.05; done"]
"#,
            sock = web_sock.display()
        ),
    );
    let lb = Run::start(muster(), &["--config", lb_cfg.to_str().unwrap()]);
    let mut web = Run::start(muster(), &["--config", web_cfg.to_str().unwrap()]);
    web.wait_line("app-up", LONG);
    eventually("lb sees web1 alive", LONG, || {
        members(&lb_sock, false)
            .lines()
            .any(|l| l.starts_with("web1 ") && l.contains(" alive ") && l.contains("role=backend"))
    });
    let json = members(&web_sock, true);
    assert!(
        json.contains(r#""name":"lb""#) && json.contains(r#""role":"balancer""#),
        "{json}"
    );

    web.signal(libc::SIGTERM);
    assert_eq!(code(web.wait(LONG)), 0);
    let leaving = web.wait_line("leaving the cluster", LONG);
    let stopping = web.wait_line("app-got-term", LONG);
    assert!(
        leaving < stopping,
        "left before the service was stopped:\n{}",
        web.text()
    );
    eventually("lb sees web1 left", LONG, || {
        members(&lb_sock, false)
            .lines()
            .any(|l| l.starts_with("web1 ") && l.contains(" left "))
    });
    drop(lb);
}

#[test]
fn members_without_gossip_or_without_muster_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("c.sock");
    let cfg = config(
        dir.path(),
        &format!(
            "[supervisor]\ncontrol_socket = \"{}\"\n[services.main]\nmain = true\ncommand = [\"sh\", \"-c\", \"echo up; exec sleep 1000\"]\n",
            sock.display()
        ),
    );
    let run = Run::start(muster(), &["--config", cfg.to_str().unwrap()]);
    run.wait_line("up", LONG);
    eventually("control socket", LONG, || sock.exists());
    let out = Command::new(muster())
        .args(["members", "--socket", sock.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gossip is not configured"));
    let out = Command::new(muster())
        .args([
            "members",
            "--socket",
            dir.path().join("none.sock").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach a running muster"));
    drop(run);
}

/// A two-node cluster for the hostile-input test: (config path, control socket).
fn node(
    dir: &std::path::Path,
    name: &str,
    port: u16,
    join: Option<u16>,
) -> (String, std::path::PathBuf) {
    let sock = dir.join(format!("{name}.sock"));
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let join = join.map_or(String::new(), |p| format!("join = [\"127.0.0.1:{p}\"]"));
    let cfg = config(
        &sub,
        &format!(
            r#"
[supervisor]
control_socket = "{sock}"
[gossip]
name = "{name}"
bind = "127.0.0.1:{port}"
{join}
profile = "local"
[services.main]
main = true
command = ["sh", "-c", "echo up; exec sleep 1000"]
"#,
            sock = sock.display()
        ),
    );
    (cfg.to_str().unwrap().to_owned(), sock)
}

/// Every datagram and stream of the captured serf session, as bytes.
fn golden() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let text = include_str!("golden/serf-0.9.4-join-tags-leave.txt");
    let unhex = |h: &str| {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>()
    };
    let (mut udp, mut tcp) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.first() {
            Some(&"udp") => udp.push(unhex(f[2])),
            Some(&"tcp") => tcp.push(unhex(f[2])),
            _ => {}
        }
    }
    (udp, tcp)
}

#[test]
fn hostile_packets_and_streams_change_nothing() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (a_port, b_port) = (free_port(), free_port());
    let (a_cfg, a_sock) = node(dir.path(), "a", a_port, None);
    let (b_cfg, b_sock) = node(dir.path(), "b", b_port, Some(a_port));
    let a = Run::start(muster(), &["--config", &a_cfg]);
    let b = Run::start(muster(), &["--config", &b_cfg]);
    let view = |sock: &std::path::Path| {
        let mut rows: Vec<String> = members(sock, false)
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                format!("{} {}", f[0], f[2])
            })
            .collect();
        rows.sort();
        rows
    };
    let healthy = ["a alive".to_owned(), "b alive".to_owned()];
    eventually("a and b see each other", LONG, || {
        view(&a_sock) == healthy && view(&b_sock) == healthy
    });

    // Random datagrams; every truncation of every captured serf datagram, and the same with
    // one bit flipped (the CRC wrapper must reject both); and every truncation of each
    // message inside them, sent bare (the decoders must reject a cut message). A whole message
    // is never sent: it would be real news, not garbage.
    let (udp, tcp) = golden();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = format!("127.0.0.1:{a_port}");
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut sent = 0;
    for _ in 0..20_000 {
        let len = (rand() % 1500) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
        let _ = sock.send_to(&bytes, &target);
        sent += 1;
    }
    for p in &udp {
        // 18 of the 43 captured datagrams have no CRC wrapper (type 12): a flipped bit in one
        // of those can still be a valid message (say, an alive with another port), so only
        // CRC-protected ones are flipped.
        let has_crc = p[0] == 12;
        for cut in 1..p.len() {
            let _ = sock.send_to(&p[..cut], &target);
            sent += 1;
            if has_crc {
                let mut flipped = p.to_vec();
                let i = 5 + (rand() as usize) % (flipped.len() - 5);
                flipped[i] ^= 1 << (rand() % 8);
                let _ = sock.send_to(&flipped, &target);
                sent += 1;
            }
        }
        let parts = muster::gossip::wire::decode_packet(p).unwrap();
        for part in parts {
            let mut bare = vec![part.kind];
            bare.extend_from_slice(&part.body);
            for cut in 1..bare.len() {
                let _ = sock.send_to(&bare[..cut], &target);
                sent += 1;
            }
        }
        // Pace the sends a little so the kernel's buffer does not drop most of them.
        std::thread::sleep(Duration::from_millis(2));
    }
    // Push/pull streams: random bytes, truncated captured streams, a length that claims a
    // huge payload, and a connection that sends nothing at all.
    let mut streams = 0;
    let idle = std::net::TcpStream::connect(&target).unwrap();
    for s in &tcp {
        // A captured direction may hold more than one message: cut inside the first, so no
        // whole (and so legitimate) push/pull is ever sent.
        let first = (1..=s.len())
            .find(|&l| muster::gossip::wire::decode_stream(&s[..l]).is_ok())
            .unwrap_or(s.len());
        for cut in [1, 2, 5, 10, first / 2, first - 1] {
            if let Ok(mut c) = std::net::TcpStream::connect(&target) {
                let _ = c.write_all(&s[..cut]);
                streams += 1;
            }
        }
    }
    for _ in 0..50 {
        if let Ok(mut c) = std::net::TcpStream::connect(&target) {
            let bytes: Vec<u8> = (0..(rand() % 4096)).map(|_| rand() as u8).collect();
            let _ = c.write_all(&bytes);
            streams += 1;
        }
    }
    if let Ok(mut c) = std::net::TcpStream::connect(&target) {
        // A push/pull header (type 6) claiming 4 GiB of user state.
        let _ = c.write_all(&[
            6, 0x84, 0xa4, b'J', b'o', b'i', b'n', 0xc2, 0xa5, b'N', b'o', b'd', b'e', b's', 0x90,
        ]);
        let _ = c.write_all(&[0xac]);
        let _ = c.write_all(b"UserStateLen");
        let _ = c.write_all(&[0xce, 0xff, 0xff, 0xff, 0xff]);
        streams += 1;
    }
    eprintln!("sent {sent} hostile datagrams and {streams} hostile streams");

    // Still running, still answering, the same view on both sides, and b keeps a alive over
    // several probe rounds (a still answers probes).
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(view(&a_sock), healthy, "a's view\n{}", a.text());
        assert_eq!(view(&b_sock), healthy, "b's view\n{}", b.text());
    }
    drop(idle);
    drop((a, b));
}

#[test]
fn an_invalid_name_or_tag_of_our_own_stops_muster_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[gossip]\nname = \"web\\nprogram\"\nbind = \"127.0.0.1:0\"\ntags = { role = \"a b\" }\n[services.main]\nmain = true\ncommand = [\"sh\", \"-c\", \"echo started\"]\n",
    );
    let out = Command::new(muster())
        .args(["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("gossip.name: \"web\\nprogram\" holds \"\\n\""),
        "{stderr}"
    );
    assert!(stderr.contains("gossip.tags.role: \"a b\""), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("started"));
}
