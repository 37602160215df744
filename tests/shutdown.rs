//! The stop deadline from outside: `stop_timeout` is the time from the first SIGTERM to
//! muster's exit, whatever is in the way. Here everything is: services that ignore SIGTERM
//! with a grace longer than the timeout, a peer that answers nothing while muster leaves the
//! cluster, and a log collector that is down with lines queued.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::{Run, code, config, eventually, free_port, muster};

const LONG: Duration = Duration::from_secs(20);

fn members(socket: &std::path::Path) -> String {
    let out = std::process::Command::new(muster())
        .args(["members", "--socket", socket.to_str().unwrap()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn muster_exits_before_stop_timeout_whatever_is_in_the_way() {
    let dir = tempfile::tempdir().unwrap();
    let (peer_port, node_port) = (free_port(), free_port());
    // The collector's port: bound once to be free, then closed, so nothing listens there.
    let collector_port = free_port();
    let sock = dir.path().join("node.sock");
    let peer_dir = dir.path().join("peer");
    let node_dir = dir.path().join("node");
    std::fs::create_dir_all(&peer_dir).unwrap();
    std::fs::create_dir_all(&node_dir).unwrap();
    let peer_cfg = config(
        &peer_dir,
        &format!(
            r#"
[gossip]
name = "peer"
bind = "127.0.0.1:{peer_port}"
profile = "local"
[services.main]
main = true
command = ["sleep", "1000"]
"#
        ),
    );
    let node_cfg = config(
        &node_dir,
        &format!(
            r#"
[supervisor]
stop_timeout = "3s"
control_socket = "{sock}"
[gossip]
name = "node"
bind = "127.0.0.1:{node_port}"
join = ["127.0.0.1:{peer_port}"]
profile = "local"
[logship]
target = "127.0.0.1:{collector_port}"
protocol = "relp"
[services.stubborn]
command = ["sh", "-c", "trap '' TERM; echo stubborn-up; while :; do echo tick; sleep 0.05; done"]
stop_grace = "30s"
[services.app]
main = true
command = ["sh", "-c", "trap 'echo app-ignores-term' TERM; echo app-up; while :; do sleep 0.05; done"]
stop_grace = "30s"
"#,
            sock = sock.display()
        ),
    );
    let mut peer = Run::start(muster(), &["--config", peer_cfg.to_str().unwrap()]);
    let mut node = Run::start(muster(), &["--config", node_cfg.to_str().unwrap()]);
    node.wait_line("app-up", LONG);
    node.wait_line("stubborn-up", LONG);
    eventually("the node sees the peer alive", LONG, || {
        members(&sock)
            .lines()
            .any(|l| l.starts_with("peer ") && l.contains(" alive"))
    });
    // The peer stops answering anything (probes, the leave) from now on.
    peer.signal(libc::SIGSTOP);

    let asked = Instant::now();
    node.signal(libc::SIGTERM);
    // Polled here, finely: `Run::wait` gives the output readers a moment after the exit.
    let (status, took) = loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            break (status, asked.elapsed());
        }
        assert!(
            asked.elapsed() < LONG,
            "muster did not exit:\n{}",
            node.text()
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    node.wait(LONG);
    println!(
        "SIGTERM to exit: {} ms (stop_timeout 3 s)",
        took.as_millis()
    );
    let text = node.text();
    assert!(
        took < Duration::from_secs(3),
        "muster took {took:?}, more than its 3 s stop_timeout:\n{text}"
    );
    assert_eq!(code(status), 137, "the main service was SIGKILLed:\n{text}");
    // What was in the way was really there.
    let leaving = node.wait_line("leaving the cluster", LONG);
    let ignored = node.wait_line("app-ignores-term", LONG);
    assert!(leaving < ignored, "left before stopping services:\n{text}");
    assert!(text.contains("grace over, killing"), "{text}");
    assert!(
        text.contains("log lines not delivered to the collector before exit"),
        "the collector was down with lines queued:\n{text}"
    );
    // The peer is let go and stopped too: nothing is left running.
    peer.signal(libc::SIGCONT);
    peer.signal(libc::SIGTERM);
    assert_eq!(code(peer.wait(LONG)), 143);
}
