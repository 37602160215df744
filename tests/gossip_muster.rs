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
