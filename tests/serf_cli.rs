//! Debian's `serf` CLI against a running muster, through Serf's agent RPC (`[gossip]
//! rpc_addr`): `serf join`, `serf members` (plain, `-format=json`, `-status`, `-tag`,
//! `-name`), `serf info`, `serf rtt`; `serf event`, `serf query` and `serf monitor` across serf
//! and muster nodes; a `serf keys` rotation of a mixed cluster of three serf and three muster,
//! and a node that missed it; `serf force-leave`, `serf leave`, a name conflict; the `muster`
//! commands that stand in for serf's; an RPC client answering queries with `respond`; the
//! auth key (`rpc_auth`); and clients that break the protocol or hold connections open.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;

use common::{Run, config, eventually, free_port, muster};

const LONG: Duration = Duration::from_secs(20);

/// A muster node with gossip and the RPC on loopback, tagged role=backend port=3000.
fn start_muster(dir: &Path, name: &str, extra: &str) -> (Run, u16, u16) {
    let (gossip, rpc) = (free_port(), free_port());
    let cfg = config(
        dir,
        &format!(
            r#"
[supervisor]
control_socket = false
[services.app]
main = true
command = ["sleep", "600"]
[gossip]
name = "{name}"
bind = "127.0.0.1:{gossip}"
profile = "local"
tags = {{ role = "backend", port = "3000" }}
rpc_addr = "127.0.0.1:{rpc}"
{extra}
"#
        ),
    );
    let run = Run::start(muster(), &["--config", cfg.to_str().unwrap()]);
    run.wait_line("serf rpc listening", LONG);
    (run, gossip, rpc)
}

/// A real `serf agent` on loopback with these extra arguments; its gossip and RPC ports.
fn start_serf_with(name: &str, extra: &[&str]) -> (Child, u16, u16) {
    let (gossip, rpc) = (free_port(), free_port());
    let child = common::owned(
        Command::new("serf")
            .args(["agent", &format!("-node={name}")])
            .arg(format!("-bind=127.0.0.1:{gossip}"))
            .arg(format!("-rpc-addr=127.0.0.1:{rpc}"))
            .args(["-tag", "role=balancer"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .spawn()
    .expect("serf is installed (tests/run installs it)");
    eventually("serf agent listening", LONG, || {
        TcpStream::connect(("127.0.0.1", rpc)).is_ok()
    });
    (child, gossip, rpc)
}

/// `serf ARGS -rpc-addr=127.0.0.1:RPC`: exit code and stdout + stderr.
fn serf(rpc: u16, args: &[&str]) -> (i32, String) {
    // Go's flags end at the first argument that is not one: the address comes first.
    let out = Command::new("serf")
        .arg(args[0])
        .arg(format!("-rpc-addr=127.0.0.1:{rpc}"))
        .args(&args[1..])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The member names of a `serf members` listing.
fn names(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// muster's `[gossip]` line for `key` (none: plaintext).
fn muster_key(key: Option<&str>) -> String {
    key.map(|k| format!("encrypt = \"{k}\""))
        .unwrap_or_default()
}

/// serf agent's flag for `key`, after `others`.
fn serf_args<'a>(flag: &'a Option<String>, others: &[&'a str]) -> Vec<&'a str> {
    let mut args = others.to_vec();
    args.extend(flag.as_deref());
    args
}

#[test]
fn the_serf_cli_joins_lists_and_reports_through_muster_as_through_an_agent() {
    joins_lists_and_reports(None);
}

#[test]
fn the_serf_cli_joins_lists_and_reports_through_muster_in_an_encrypted_cluster() {
    joins_lists_and_reports(Some(&keygen()));
}

fn joins_lists_and_reports(key: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let (_m, _, rpc) = start_muster(dir.path(), "m1", &muster_key(key));
    let flag = key.map(|k| format!("-encrypt={k}"));
    let (mut agent, serf_gossip, agent_rpc) = start_serf_with("s1", &serf_args(&flag, &[]));

    let (code, out) = serf(rpc, &["join", &format!("127.0.0.1:{serf_gossip}")]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Successfully joined cluster by contacting 1 nodes"),
        "{out}"
    );
    eventually("s1 alive in serf members", LONG, || {
        let (_, out) = serf(rpc, &["members"]);
        out.lines()
            .any(|l| l.starts_with("s1 ") && l.contains(" alive"))
    });
    let (code, out) = serf(rpc, &["members"]);
    assert_eq!(code, 0);
    let m1 = out.lines().find(|l| l.starts_with("m1 ")).unwrap();
    assert!(
        m1.contains("alive") && m1.contains("port=3000,role=backend"),
        "{out}"
    );

    let (code, json) = serf(rpc, &["members", "-format=json"]);
    assert_eq!(code, 0, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let members = v["members"].as_array().unwrap();
    let m1 = members.iter().find(|m| m["name"] == "m1").unwrap();
    assert_eq!(m1["tags"]["role"], "backend");
    assert_eq!(m1["status"], "alive");
    assert!(m1["addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(members.len(), 2);

    assert_eq!(
        names(&serf(rpc, &["members", "-tag", "role=backend"]).1),
        ["m1"]
    );
    assert_eq!(
        names(&serf(rpc, &["members", "-tag", "role=back.*"]).1),
        ["m1"]
    );
    assert_eq!(
        names(&serf(rpc, &["members", "-status=alive", "-name=s.*"]).1),
        ["s1"]
    );
    assert!(names(&serf(rpc, &["members", "-tag", "role=back"]).1).is_empty());

    let (code, info) = serf(rpc, &["info"]);
    assert_eq!(code, 0, "{info}");
    assert!(
        info.contains("name = m1") && info.contains("members = 2"),
        "{info}"
    );
    // serf reachability asks every member `_serf_ping`: muster answers it, through serf's
    // agent and through muster's own RPC.
    for via in [agent_rpc, rpc] {
        let (code, out) = serf(via, &["reachability"]);
        eprintln!("serf reachability: {out}");
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("live members: 2")
                && out.contains("Successfully contacted all live nodes"),
            "{out}"
        );
    }
    let (_, rtt) = serf(rpc, &["rtt", "s1"]);
    assert!(rtt.contains("Could not find a coordinate"), "{rtt}");

    // Tags, set and deleted, as on an agent; a tag peers would refuse is refused.
    let (code, out) = serf(rpc, &["tags", "-set", "color=blue"]);
    assert_eq!(code, 0, "{out}");
    let has_blue = || serf(rpc, &["members", "-name=m1"]).1.contains("color=blue");
    assert!(has_blue());
    eventually("s1 sees the new tag", LONG, || {
        serf(agent_rpc, &["members", "-name=m1", "-tag", "color=blue"])
            .1
            .starts_with("m1 ")
    });
    assert_eq!(serf(rpc, &["tags", "-delete", "color"]).0, 0);
    assert!(!has_blue());
    let (code, out) = serf(rpc, &["tags", "-set", "bad=a b"]);
    assert_eq!(code, 1, "{out}");
    // An unknown member cannot be forced out; the CLI fails as on any agent error.
    let (code, out) = serf(rpc, &["force-leave", "nobody"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no member named"), "{out}");

    // serf dies: muster's listing says failed, as serf's own would.
    agent.kill().unwrap();
    agent.wait().unwrap();
    eventually("s1 failed", LONG, || {
        names(&serf(rpc, &["members", "-status=failed"]).1) == ["s1"]
    });
    // force-leave: failed becomes left.
    assert_eq!(serf(rpc, &["force-leave", "s1"]).0, 0);
    assert_eq!(names(&serf(rpc, &["members", "-status=left"]).1), ["s1"]);
}

#[test]
fn the_auth_key_is_required_and_broken_or_idle_clients_do_not_block_the_rpc() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _, rpc) = start_muster(dir.path(), "m2", r#"rpc_auth = "sesame""#);
    let (code, out) = serf(rpc, &["members"]);
    assert_eq!(code, 1);
    assert!(out.contains("Authentication required"), "{out}");
    let (code, out) = serf(rpc, &["members", "-rpc-auth=wrong"]);
    assert_eq!(code, 1);
    assert!(out.contains("Invalid authentication token"), "{out}");
    let (code, out) = serf(rpc, &["members", "-rpc-auth=sesame"]);
    assert_eq!((code, names(&out)), (0, vec!["m2".to_owned()]), "{out}");

    // Garbage is answered by closing the connection.
    let mut s = TcpStream::connect(("127.0.0.1", rpc)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&[0xc1; 64]).unwrap();
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap(), 0);
    // 200 idle connections: the oldest are closed, and the CLI still gets through.
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(("127.0.0.1", rpc)).unwrap())
        .collect();
    let (code, out) = serf(rpc, &["members", "-rpc-auth=sesame"]);
    assert_eq!(code, 0, "{out}");
    let open = std::fs::read_dir(format!("/proc/{}/fd", m.child.id()))
        .unwrap()
        .count();
    assert!(open < 120, "{open} descriptors open in muster");
    drop(idle);
}

#[test]
fn user_events_and_queries_cross_between_serf_and_muster_and_serf_monitor_shows_them() {
    events_queries_and_monitor(None);
}

#[test]
fn user_events_queries_and_monitor_work_the_same_in_an_encrypted_cluster() {
    events_queries_and_monitor(Some(&keygen()));
}

fn events_queries_and_monitor(key: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let (_m, _, rpc) = start_muster(dir.path(), "m1", &muster_key(key));
    // serf's handlers: user events appended to a file, `uptime` answered.
    let seen = dir.path().join("seen");
    let script = dir.path().join("handler.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$SERF_EVENT\" = query ]; then echo \"up from $SERF_SELF_NAME\"; else echo \"$SERF_EVENT $SERF_USER_EVENT $(cat)\" >> {}; fi\n",
            seen.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", script.to_str().unwrap()])
        .status()
        .unwrap();
    let handler = format!("-event-handler={}", script.display());
    let flag = key.map(|k| format!("-encrypt={k}"));
    let (_agent, serf_gossip, serf_rpc) = start_serf_with("s1", &serf_args(&flag, &[&handler]));
    // `serf monitor` against muster: its log lines and the events it hears.
    let monitor = common::owned(
        Command::new("timeout")
            .args([
                "15",
                "serf",
                "monitor",
                &format!("-rpc-addr=127.0.0.1:{rpc}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (code, out) = serf(rpc, &["join", &format!("127.0.0.1:{serf_gossip}")]);
    assert_eq!(code, 0, "{out}");

    // muster → serf: the event reaches serf's handler with its payload.
    let (code, out) = serf(rpc, &["event", "deploy", "v2"]);
    assert_eq!(code, 0, "{out}");
    eventually("serf's handler ran", LONG, || {
        std::fs::read_to_string(&seen).is_ok_and(|t| t.contains("user deploy v2"))
    });
    // A query asked through muster: both acknowledge, serf's handler answers.
    let (code, out) = serf(rpc, &["query", "-timeout=3s", "uptime"]);
    assert_eq!(code, 0, "{out}");
    for needle in [
        "Ack from 'm1'",
        "Ack from 's1'",
        "Response from 's1': up from s1",
    ] {
        assert!(out.contains(needle), "{needle}: {out}");
    }
    // serf → muster: its event reaches muster, its query is acknowledged by muster.
    let (code, out) = serf(serf_rpc, &["event", "fromserf", "abc"]);
    assert_eq!(code, 0, "{out}");
    let (_, out) = serf(serf_rpc, &["query", "-timeout=2s", "-node=m1", "uptime"]);
    assert!(
        out.contains("Ack from 'm1'") && !out.contains("Ack from 's1'"),
        "{out}"
    );
    // Too large for Serf's limit: refused, as serf refuses it.
    let big = "x".repeat(600);
    let (code, out) = serf(rpc, &["event", "big", &big]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("exceeds the limit"), "{out}");

    std::thread::sleep(Duration::from_millis(500));
    common::signal(monitor.id() as i32, libc::SIGTERM);
    let shown = String::from_utf8(monitor.wait_with_output().unwrap().stdout).unwrap();
    for needle in [
        "Name: \"fromserf\"",
        "Payload: \"abc\"",
        "Event: \"member-join\"",
        "muster: info user event name=fromserf",
    ] {
        assert!(shown.contains(needle), "{needle}: {shown}");
    }
}

/// `serf keygen`: a new random key, base64.
fn keygen() -> String {
    let out = Command::new("serf").arg("keygen").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn serf_keys_rotates_the_keys_of_a_mixed_cluster_of_three_serf_and_three_muster() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (keygen(), keygen());
    let keyed = format!("encrypt = \"{old}\"");
    let mut musters = Vec::new();
    for name in ["m1", "m2", "m3"] {
        let sub = dir.path().join(name);
        std::fs::create_dir_all(&sub).unwrap();
        musters.push(start_muster(&sub, name, &keyed));
    }
    let rpc = musters[0].2;
    let mut agents = Vec::new();
    for name in ["s1", "s2", "s3"] {
        agents.push(start_serf_with(name, &[&format!("-encrypt={old}")]));
    }
    for (_, gossip, _) in musters.iter().skip(1) {
        assert_eq!(serf(rpc, &["join", &format!("127.0.0.1:{gossip}")]).0, 0);
    }
    for (_, gossip, _) in &agents {
        assert_eq!(serf(rpc, &["join", &format!("127.0.0.1:{gossip}")]).0, 0);
    }
    let alive = |rpc: u16| serf(rpc, &["members", "-status=alive"]).1.lines().count();
    // Every member sees all six before the rotation: `serf keys -list`
    // counts answers against the asking node's own view.
    let rpcs: Vec<u16> = musters
        .iter()
        .map(|m| m.2)
        .chain(agents.iter().map(|a| a.2))
        .collect();
    eventually("six alive members everywhere", LONG, || {
        rpcs.iter().all(|&r| alive(r) == 6)
    });

    // The rotation, asked through muster: every member answers each step.
    for (step, done) in [
        (format!("-install={new}"), "Successfully installed key"),
        (format!("-use={new}"), "Successfully changed primary key"),
        (format!("-remove={old}"), "Successfully removed key"),
    ] {
        let (code, out) = serf(rpc, &["keys", &step]);
        assert_eq!(code, 0, "{step}: {out}");
        assert!(out.contains(done), "{step}: {out}");
    }
    // Both kinds of agent list the new key alone, on all six.
    for r in [rpc, agents[0].2] {
        let (code, out) = serf(r, &["keys", "-list"]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&format!("{new}  [6/6]")), "{out}");
        assert!(!out.contains(&old), "{out}");
    }
    // Refused as Serf refuses it.
    let (code, out) = serf(rpc, &["keys", &format!("-remove={new}")]);
    assert_eq!(code, 1);
    assert!(
        out.contains("Removing the primary key is not allowed")
            && out.contains("6/6 nodes reported failure"),
        "{out}"
    );
    // The cluster still talks, under the new key only: a kill is seen, and a node with only
    // the old key is kept out.
    let (mut s3, ..) = agents.pop().unwrap();
    s3.kill().unwrap();
    s3.wait().unwrap();
    eventually("s3 failed", LONG, || {
        names(&serf(rpc, &["members", "-status=failed"]).1) == ["s3"]
    });
    let late = dir.path().join("late");
    std::fs::create_dir_all(&late).unwrap();
    let (_late, late_gossip, late_rpc) = start_muster(&late, "late", &keyed);
    let (code, _) = serf(late_rpc, &["join", &format!("127.0.0.1:{}", musters[0].1)]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !names(&serf(rpc, &["members"]).1).contains(&"late".to_owned()),
        "a node with the removed key joined (join exit code {code})"
    );
    let _ = late_gossip;
}

#[test]
fn a_node_down_during_a_rotation_gets_back_in_and_learns_the_new_primary_where_serf_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (keygen(), keygen());
    let keyed = format!("encrypt = \"{old}\"");
    let sub = |n: &str| {
        let d = dir.path().join(n);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let (_m1, m1_gossip, rpc) = start_muster(&sub("m1"), "m1", &keyed);
    let (_s1, s1_gossip, s1_rpc) = start_serf_with("s1", &[&format!("-encrypt={old}")]);
    assert_eq!(serf(rpc, &["join", &format!("127.0.0.1:{s1_gossip}")]).0, 0);
    // The rotation, with the new key installed everywhere before the other two steps.
    assert_eq!(serf(rpc, &["keys", &format!("-install={new}")]).0, 0);
    assert_eq!(serf(rpc, &["keys", &format!("-use={new}")]).0, 0);
    assert_eq!(serf(rpc, &["keys", &format!("-remove={old}")]).0, 0);
    // A node that was down meanwhile comes back holding both keys, the old one primary (its
    // keyring file as it was when it went down).
    let ring = dir.path().join("keyring.json");
    std::fs::write(&ring, format!("[\"{old}\", \"{new}\"]")).unwrap();
    let file = format!(
        "keyring_file = \"{}\"\njoin = [\"127.0.0.1:{m1_gossip}\"]",
        ring.display()
    );
    let started = std::time::Instant::now();
    let (_m2, _, _) = start_muster(&sub("m2"), "m2", &file);
    eventually("m2 back in the cluster", LONG, || {
        serf(rpc, &["members", "-status=alive"])
            .1
            .lines()
            .any(|l| l.starts_with("m2 "))
            && serf(s1_rpc, &["members", "-status=alive"])
                .1
                .lines()
                .any(|l| l.starts_with("m2 "))
    });
    eprintln!("muster: back in after {:?}", started.elapsed());
    let (_, keys) = serf(rpc, &["keys", "-list"]);
    assert!(keys.contains(&format!("{new}  [3/3]")), "{keys}");

    // A serf agent in the same state cannot get back in (serf#579).
    let (mut s2, _, s2_rpc) =
        start_serf_with("s2", &[&format!("-keyring-file={}", ring.display())]);
    let (code, out) = serf(s2_rpc, &["join", &format!("127.0.0.1:{m1_gossip}")]);
    eprintln!("serf's join with the old primary: exit {code}, {out}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !names(&serf(rpc, &["members"]).1).contains(&"s2".to_owned()),
        "serf got in"
    );
    s2.kill().unwrap();
    s2.wait().unwrap();
}

/// `muster ARGS` against the RPC at `rpc`: exit code and stdout + stderr.
fn muster_cli(rpc: u16, args: &[&str]) -> (i32, String) {
    let out = Command::new(muster())
        .args(args)
        .env("MUSTER_RPC_ADDR", format!("127.0.0.1:{rpc}"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn muster_event_query_keys_and_force_leave_do_what_the_serf_commands_do() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen();
    let (_m, _, rpc) = start_muster(dir.path(), "m1", &format!("encrypt = \"{key}\""));
    let seen = dir.path().join("seen");
    let script = dir.path().join("handler.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$SERF_EVENT\" = query ]; then echo pong; else echo \"$SERF_USER_EVENT $(cat)\" >> {}; fi\n",
            seen.display()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let (mut s1, s1_gossip, _) = start_serf_with(
        "s1",
        &[
            &format!("-encrypt={key}"),
            &format!("-event-handler={}", script.display()),
        ],
    );
    assert_eq!(serf(rpc, &["join", &format!("127.0.0.1:{s1_gossip}")]).0, 0);

    let (code, out) = muster_cli(rpc, &["event", "deploy", "v3"]);
    assert_eq!(code, 0, "{out}");
    eventually("serf's handler got it", LONG, || {
        std::fs::read_to_string(&seen).is_ok_and(|t| t.contains("deploy v3"))
    });
    let (code, out) = muster_cli(rpc, &["query", "--timeout", "2s", "ping-me"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ack from m1") && out.contains("response from s1: pong"),
        "{out}"
    );
    let (code, out) = muster_cli(
        rpc,
        &[
            "query",
            "--format",
            "json",
            "--node",
            "s1",
            "--timeout",
            "1s",
            "x",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["responses"]["s1"], "pong\n");
    let (code, out) = muster_cli(rpc, &["keys", "--list"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{key}  [2/2]")), "{out}");
    let (code, out) = muster_cli(rpc, &["keys", "--remove", &key]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Removing the primary key is not allowed"),
        "{out}"
    );
    assert_eq!(muster_cli(rpc, &["keys", "--list", "--use", &key]).0, 64);

    s1.kill().unwrap();
    s1.wait().unwrap();
    eventually("s1 failed", LONG, || {
        names(&serf(rpc, &["members", "-status=failed"]).1) == ["s1"]
    });
    let (code, out) = muster_cli(rpc, &["force-leave", "s1"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(names(&serf(rpc, &["members", "-status=left"]).1), ["s1"]);
    // Nothing listening: a clear error, exit 1.
    let (code, out) = muster_cli(common::free_port(), &["event", "x"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot reach the agent RPC"), "{out}");
}

#[test]
fn serf_leave_makes_muster_leave_the_cluster_and_stop_as_docker_stop_does() {
    let dir = tempfile::tempdir().unwrap();
    let (mut m, _, rpc) = start_muster(dir.path(), "m1", "");
    let (_s1, s1_gossip, s1_rpc) = start_serf_with("s1", &[]);
    assert_eq!(serf(rpc, &["join", &format!("127.0.0.1:{s1_gossip}")]).0, 0);
    eventually("s1 sees m1", LONG, || {
        names(&serf(s1_rpc, &["members", "-status=alive"]).1).contains(&"m1".to_owned())
    });
    let (code, out) = serf(rpc, &["leave"]);
    assert_eq!(code, 0, "{out}");
    let status = m.wait(LONG);
    assert!(m.text().contains("stopping service=app"), "{}", m.text());
    eprintln!("muster exited: {status:?}");
    eventually("s1 sees m1 left, not failed", LONG, || {
        names(&serf(s1_rpc, &["members", "-status=left"]).1) == ["m1"]
    });
}

#[test]
fn a_second_node_with_a_taken_name_loses_serfs_vote_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen();
    let keyed = format!("encrypt = \"{key}\"");
    let sub = |n: &str| {
        let d = dir.path().join(n);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let (mut m1, m1_gossip, rpc) = start_muster(&sub("first"), "dup", &keyed);
    let (_s1, s1_gossip, s1_rpc) = start_serf_with("s1", &[&format!("-encrypt={key}")]);
    assert_eq!(serf(rpc, &["join", &format!("127.0.0.1:{s1_gossip}")]).0, 0);
    // A second node under the same name joins through s1.
    let extra = format!("{keyed}\njoin = [\"127.0.0.1:{s1_gossip}\"]");
    let (mut m2, ..) = start_muster(&sub("second"), "dup", &extra);
    let status = m2.wait(Duration::from_secs(30));
    let text = m2.text();
    assert!(text.contains("name conflict"), "{text}");
    eprintln!("the second 'dup' stopped: {status:?}");
    // The first one stays, and serf still knows it under the name.
    assert!(
        m1.child.try_wait().unwrap().is_none(),
        "the first 'dup' stopped too"
    );
    assert!(
        !m1.text()
            .contains("name conflict: the cluster knows another")
    );
    let (_, members) = serf(s1_rpc, &["members", "-status=alive", "-name=dup"]);
    assert!(
        members.contains(&format!("127.0.0.1:{m1_gossip}")),
        "{members}"
    );
}

#[test]
fn an_rpc_client_streaming_queries_answers_them_with_respond() {
    use muster::gossip::agent::client::{Client, raw};
    use muster::gossip::msgpack::Value;
    let dir = tempfile::tempdir().unwrap();
    let (_m, _, rpc) = start_muster(dir.path(), "m1", "");
    // A client that answers `uptime` queries, as an application beside Serf's agent does.
    let addr = format!("127.0.0.1:{rpc}");
    let mut c = Client::connect(&addr, None, LONG).unwrap();
    let seq = c
        .send("stream", Some(Value::map([("Type", raw("query:uptime"))])))
        .unwrap();
    c.header(seq).unwrap();
    let asker = std::thread::spawn(move || serf(rpc, &["query", "-timeout=3s", "uptime"]));
    c.header(seq).unwrap();
    let record = c.object().unwrap();
    assert_eq!(record.get("Event").and_then(Value::as_str), Some("query"));
    let id = record.get("ID").and_then(Value::as_u64).unwrap();
    let r = c
        .send(
            "respond",
            Some(Value::map([
                ("ID", Value::Uint(id)),
                ("Payload", raw("up 5 days")),
            ])),
        )
        .unwrap();
    c.header(r).unwrap();
    let (code, out) = asker.join().unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Response from 'm1': up 5 days"), "{out}");
    // An id that names no open query is refused.
    let r = c
        .send(
            "respond",
            Some(Value::map([
                ("ID", Value::Uint(id + 1000)),
                ("Payload", raw("x")),
            ])),
        )
        .unwrap();
    assert!(c.header(r).is_err());
}
