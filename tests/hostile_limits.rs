//! Bounded input on every listener (issue 13, items 5 and 6), shown from outside against a
//! real muster on 127.0.0.1 (gossip profile `local`, a control socket, one `sleep` service):
//! floods of idle TCP connections to the gossip port and to the control socket, a 40 MiB
//! push/pull, 60,000-character names, and the descriptor limit reached. Each test asserts the
//! bound (RSS growth, the stream cut early, push/pull and `muster members` still answered,
//! CPU idle at EMFILE) and prints its figures (`eprintln!`, `FIGURE` lines that
//! `tests/bench/hostile.sh` collects into report/hostile.md).

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::forge::{self, alive, backend_tags, node_state, packet};
use common::lb::{cpu_seconds, rss_kib};
use common::{Run, config, eventually, free_port, muster};
use muster::gossip::wire::encode_push_pull;

const LONG: Duration = Duration::from_secs(20);
/// The most RSS a flood may add (the goal: a few MiB of idle).
const MAX_GROWTH_KIB: u64 = 4 * 1024;

/// A gossiping muster with a control socket, optionally under a descriptor limit.
struct Node {
    run: Run,
    gossip: SocketAddr,
    control: PathBuf,
}

impl Node {
    fn start(dir: &Path, nofile: Option<u32>) -> Node {
        let port = free_port();
        let control = dir.join("control.sock");
        let cfg = config(
            dir,
            &format!(
                r#"
[supervisor]
control_socket = "{control}"
stop_timeout = "3s"
[gossip]
name = "target"
bind = "127.0.0.1:{port}"
profile = "local"
[services.main]
main = true
command = ["sleep", "1000"]
"#,
                control = control.display()
            ),
        );
        let cfg = cfg.to_str().unwrap().to_owned();
        // The bench runs the same floods against another build (the anchor) through this.
        let bin = std::env::var("MUSTER_UNDER_TEST").unwrap_or_else(|_| muster().to_owned());
        let run = match nofile {
            Some(n) => Run::start(
                "prlimit",
                &[&format!("--nofile={n}:{n}"), &bin, "--config", &cfg],
            ),
            None => Run::start(&bin, &["--config", &cfg]),
        };
        let gossip = SocketAddr::from(([127, 0, 0, 1], port));
        eventually("control socket", LONG, || {
            UnixStream::connect(&control).is_ok()
        });
        let node = Node {
            run,
            gossip,
            control,
        };
        // Settled: the first allocations of the runtime are behind us.
        std::thread::sleep(Duration::from_millis(300));
        node
    }

    fn pid(&self) -> u32 {
        self.run.child.id()
    }

    fn rss(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// The peak RSS so far (VmHWM), in KiB: what a flood cost even if it was freed since.
    fn peak(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    fn members(&self) -> Result<String, String> {
        let out = Command::new(muster())
            .args(["members", "--socket", self.control.to_str().unwrap()])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// A push/pull from a real peer's point of view: announce `peer`, get the view back.
    fn push_pull_works(&self, peer: &str) -> bool {
        let me = node_state(
            peer,
            SocketAddr::from(([127, 0, 0, 1], free_port())),
            backend_tags(1),
            1,
        );
        match forge::push_pull_within(self.gossip, &[me], Duration::from_secs(8)) {
            Ok(pp) => pp.nodes.iter().any(|n| n.name == "target"),
            Err(e) => {
                eprintln!("push/pull failed: {e}");
                false
            }
        }
    }
}

fn figure(what: &str, value: impl std::fmt::Display) {
    eprintln!("FIGURE {what} = {value}");
}

#[test]
fn idle_gossip_connections_are_bounded_and_push_pull_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), None);
    let idle = node.rss();
    // 2,000 in the default run (opening them is the kernel's time, about 3 ms each here);
    // tests/bench/hostile.sh asks for the issue's 8,000.
    let n: usize = std::env::var("MUSTER_FLOOD_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let started = Instant::now();
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        match TcpStream::connect(node.gossip) {
            Ok(s) => held.push(s),
            Err(e) => panic!("connect {} failed: {e}", held.len()),
        }
    }
    eprintln!("{n} connections opened in {:?}", started.elapsed());
    figure("gossip_idle_tcp.connections", n);
    std::thread::sleep(Duration::from_millis(500));
    let flooded = node.rss();
    figure("gossip_idle_tcp.rss_idle_kib", idle);
    figure("gossip_idle_tcp.rss_flooded_kib", flooded);
    figure("gossip_idle_tcp.rss_peak_kib", node.peak());
    // A real peer's push/pull is answered while the attacker still holds its connections.
    let t = Instant::now();
    let works = node.push_pull_works("peer-1");
    figure("gossip_idle_tcp.push_pull_ok", works);
    assert!(works, "push/pull under {n} stalled connections");
    figure("gossip_idle_tcp.push_pull_ms", t.elapsed().as_millis());
    assert!(
        flooded.saturating_sub(idle) < MAX_GROWTH_KIB,
        "rss {idle} -> {flooded} KiB under {n} idle connections"
    );
    assert!(node.run.text().contains("too many streams open"));
    drop(held);
}

#[test]
fn a_40_mib_push_pull_is_cut_early() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), None);
    let idle = node.rss();
    // One member whose name is 40 MiB: the stream is cut at the node's limit.
    let huge = node_state(
        &"a".repeat(40 << 20),
        SocketAddr::from(([127, 0, 0, 1], 9)),
        Vec::new(),
        1,
    );
    let bytes = encode_push_pull(false, &[huge], &[]);
    let mut s = TcpStream::connect(node.gossip).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut sent = 0usize;
    let mut cut = false;
    for chunk in bytes.chunks(64 * 1024) {
        match s.write_all(chunk) {
            Ok(()) => sent += chunk.len(),
            Err(e) => {
                eprintln!("write failed after {sent} bytes: {e}");
                cut = true;
                break;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = node.rss();
    let peak = node.peak();
    figure("push_pull_40mib.bytes_accepted_before_cut", sent);
    figure("push_pull_40mib.rss_idle_kib", idle);
    figure("push_pull_40mib.rss_after_kib", after);
    figure("push_pull_40mib.rss_peak_kib", peak);
    assert!(cut, "muster read the whole 40 MiB push/pull");
    // What the kernel's socket buffers took before the reset, not what muster kept.
    assert!(sent < 16 << 20, "{sent} bytes were taken before the cut");
    assert!(
        after.saturating_sub(idle) < MAX_GROWTH_KIB,
        "rss {idle} -> {after} KiB"
    );
    // A Serf state said to be 40 MiB is refused at the header.
    let small = node_state("x", SocketAddr::from(([127, 0, 0, 1], 9)), Vec::new(), 1);
    let mut bytes = encode_push_pull(false, &[small], &vec![0u8; 40 << 20]);
    bytes.truncate(64 * 1024);
    let mut s = TcpStream::connect(node.gossip).unwrap();
    let _ = s.write_all(&bytes);
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut b = [0u8; 16];
    let closed = matches!(std::io::Read::read(&mut s, &mut b), Ok(0) | Err(_));
    assert!(closed, "a 40 MiB user state was waited for");
    assert!(node.push_pull_works("peer-1"));
}

#[test]
fn names_of_60000_characters_are_refused_without_growth() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), None);
    let idle = node.rss();
    let name = format!("evil\n{}\u{7}", "x".repeat(60_000));
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // In a push/pull (a datagram cannot hold it).
    let r = forge::push_pull(node.gossip, &[node_state(&name, addr, backend_tags(1), 1)]);
    eprintln!(
        "push/pull with a 60,000-character name: {:?}",
        r.as_ref().err()
    );
    assert!(
        r.is_err(),
        "a 60,000-character name was taken in a push/pull"
    );
    // And the longest a datagram holds.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let long = "y".repeat(60_000);
    udp.send_to(
        &packet(&[alive(&long, addr, backend_tags(1), 1)]),
        node.gossip,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let members = node.members().unwrap();
    assert!(
        !members.contains("xxxx") && !members.contains("yyyy"),
        "{members}"
    );
    let after = node.rss();
    figure("names_60000.rss_idle_kib", idle);
    figure("names_60000.rss_after_kib", after);
    figure("names_60000.rss_peak_kib", node.peak());
    assert!(after.saturating_sub(idle) < MAX_GROWTH_KIB);
}

#[test]
fn idle_control_connections_are_bounded_and_members_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), None);
    let idle = node.rss();
    let mut held = Vec::new();
    for _ in 0..3000 {
        held.push(UnixStream::connect(&node.control).unwrap());
    }
    std::thread::sleep(Duration::from_millis(500));
    let flooded = node.rss();
    figure("control_idle_3000.rss_idle_kib", idle);
    figure("control_idle_3000.rss_flooded_kib", flooded);
    figure("control_idle_3000.rss_peak_kib", node.peak());
    let t = Instant::now();
    let members = node.members();
    figure("control_idle_3000.members_ms", t.elapsed().as_millis());
    assert!(members.unwrap().contains("target"));
    assert!(
        flooded.saturating_sub(idle) < MAX_GROWTH_KIB,
        "rss {idle} -> {flooded} KiB under 3,000 idle control connections"
    );
    drop(held);
}

#[test]
fn at_the_descriptor_limit_muster_idles_and_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Some(64));
    // More than the 64 descriptors, fewer than the listeners' backlogs (a connect past a full
    // backlog would wait on the kernel, not on muster).
    let (mut tcp, mut unix) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        if let Ok(s) = TcpStream::connect_timeout(&node.gossip, Duration::from_millis(200)) {
            tcp.push(s);
        }
        if let Ok(s) = UnixStream::connect(&node.control) {
            unix.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_seconds(node.pid());
    let window = Duration::from_secs(2);
    std::thread::sleep(window);
    let used = cpu_seconds(node.pid()) - before;
    let share = used / window.as_secs_f64();
    figure("emfile.cpu_share", format!("{share:.3}"));
    // Room is made: a real peer's push/pull is still answered.
    let works = node.push_pull_works("peer-1");
    figure("emfile.push_pull_ok", works);
    assert!(
        share < 0.1,
        "muster used {:.0} % CPU at the descriptor limit",
        share * 100.0
    );
    assert!(works, "push/pull at the descriptor limit");
    assert!(node.run.text().contains("cannot accept, pausing"));
    drop((tcp, unix));
}
