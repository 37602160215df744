//! muster's gossip against Debian's real `serf agent` on 127.0.0.1: muster joins serf, serf
//! sees it alive with its tags and keeps seeing it alive (muster answers its probes), muster
//! sees serf, and muster's graceful leave shows as `left` in `serf members`.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use muster::gossip::driver::{self, Command as Cmd, Settings};
use muster::gossip::swim::{self, EventKind};
use tokio::sync::{mpsc, oneshot};

mod common;

use common::free_port;

/// A muster gossip node on 127.0.0.1 (LAN profile), driven on its own runtime.
struct Node {
    port: u16,
    runtime: tokio::runtime::Runtime,
    events: mpsc::UnboundedReceiver<swim::Event>,
    commands: mpsc::UnboundedSender<Cmd>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Node {
    fn start(name: &str, seeds: Vec<String>, tags: &[(&str, &str)]) -> Node {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let settings = Settings {
            name: name.into(),
            bind: addr,
            advertise: addr,
            seeds,
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            profile: swim::Config::lan(),
            rejoin_interval: Duration::from_secs(30),
        };
        let (events_tx, events) = mpsc::unbounded_channel();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let task = runtime.spawn(driver::run(settings, events_tx, commands_rx));
        Node {
            port,
            runtime,
            events,
            commands,
            task,
        }
    }

    /// Waits for the next event of `kind` about `member`.
    fn next(&mut self, kind: EventKind, member: &str, limit: Duration) -> Option<swim::Event> {
        let events = &mut self.events;
        self.runtime.block_on(async {
            tokio::time::timeout(limit, async {
                while let Some(e) = events.recv().await {
                    if e.kind == kind && e.member.name == member {
                        return Some(e);
                    }
                }
                None
            })
            .await
            .ok()
            .flatten()
        })
    }
}

struct Serf {
    child: Child,
    rpc: String,
}

impl Serf {
    fn start(name: &str, port: u16, tags: &[&str]) -> Serf {
        Self::start_with(name, port, tags, &[])
    }

    fn start_with(name: &str, port: u16, tags: &[&str], extra: &[&str]) -> Serf {
        if Command::new("serf").arg("version").output().is_err() {
            panic!("the serf binary is missing: tests/run installs Debian's serf package");
        }
        let rpc = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new("serf");
        cmd.args([
            "agent",
            "-node",
            name,
            "-bind",
            &format!("127.0.0.1:{port}"),
            "-rpc-addr",
            &rpc,
        ]);
        for t in tags {
            cmd.args(["-tag", t]);
        }
        cmd.args(extra);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Serf { child, rpc }
    }

    /// `serf members` as (name, status, tags) rows.
    fn members(&self) -> Vec<(String, String, String)> {
        let out = Command::new("serf")
            .args(["members", "-rpc-addr", &self.rpc])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3).then(|| {
                    (
                        f[0].to_owned(),
                        f[2].to_owned(),
                        f.get(3).copied().unwrap_or("").to_owned(),
                    )
                })
            })
            .collect()
    }

    fn status_of(&self, name: &str) -> Option<(String, String)> {
        self.members()
            .into_iter()
            .find(|m| m.0 == name)
            .map(|m| (m.1, m.2))
    }
}

impl Drop for Serf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("{what}: {:?}", start.elapsed());
    start.elapsed()
}

#[test]
fn serf_sees_muster_join_stay_alive_and_leave() {
    let serf_port = free_port();
    let serf = Serf::start("serf1", serf_port, &["role=balancer"]);
    let seeds = vec![format!("127.0.0.1:{serf_port}")];
    let mut node = Node::start("muster1", seeds, &[("role", "backend"), ("port", "3000")]);

    // serf lists muster alive with its tags (the join retries until serf listens).
    wait_for("serf sees muster1 alive", Duration::from_secs(15), || {
        serf.status_of("muster1").is_some_and(|(s, _)| s == "alive")
    });
    let (_, tags) = serf.status_of("muster1").unwrap();
    assert!(
        tags.contains("role=backend") && tags.contains("port=3000"),
        "tags: {tags}"
    );

    // muster saw serf join, with serf's tags.
    let joined = node
        .next(EventKind::Join, "serf1", Duration::from_secs(5))
        .expect("a join event for serf1");
    let serf_tags = muster::gossip::wire::decode_tags(&joined.member.meta).unwrap();
    assert_eq!(serf_tags.get("role").map(String::as_str), Some("balancer"));

    // serf probes muster every second; with no ack it would suspect it and, after 4 s,
    // declare it failed. It stays alive over 8 s.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        let status = serf.status_of("muster1").map(|s| s.0);
        assert_eq!(
            status.as_deref(),
            Some("alive"),
            "after {:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // A graceful leave shows as left, not failed.
    let (done_tx, done_rx) = oneshot::channel();
    node.commands.send(Cmd::Leave(done_tx)).unwrap();
    node.runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), done_rx).await })
        .unwrap()
        .unwrap();
    wait_for("serf sees muster1 left", Duration::from_secs(5), || {
        serf.status_of("muster1").is_some_and(|(s, _)| s == "left")
    });
}

#[test]
fn serf_joins_muster_and_each_detects_the_other_killed() {
    let mut node = Node::start("muster2", vec![], &[("role", "balancer")]);

    // A real serf agent joins muster (serf's push/pull arrives LZW-compressed).
    let join = format!("127.0.0.1:{}", node.port);
    let mut serf = Serf::start_with("serf2", free_port(), &["role=backend"], &["-join", &join]);
    wait_for(
        "serf (joined through muster) lists muster2 alive",
        Duration::from_secs(15),
        || serf.status_of("muster2").is_some_and(|(s, _)| s == "alive"),
    );
    node.next(EventKind::Join, "serf2", Duration::from_secs(5))
        .expect("muster saw serf2 join");

    // kill -9 of serf: muster declares it failed (LAN profile: 1 s probes, 4 s suspicion).
    serf.child.kill().unwrap();
    serf.child.wait().unwrap();
    let killed = Instant::now();
    node.next(EventKind::Fail, "serf2", Duration::from_secs(15))
        .expect("muster declared serf2 failed");
    eprintln!(
        "kill -9 of serf -> failed at muster: {:?}",
        killed.elapsed()
    );
    node.task.abort();
}

#[test]
fn serf_detects_a_killed_muster_as_failed() {
    let serf_port = free_port();
    let serf = Serf::start("serf3", serf_port, &["role=balancer"]);
    let node = Node::start("muster3", vec![format!("127.0.0.1:{serf_port}")], &[]);
    wait_for("serf sees muster3 alive", Duration::from_secs(15), || {
        serf.status_of("muster3").is_some_and(|(s, _)| s == "alive")
    });
    // Stopping the runtime is muster vanishing without a word, like kill -9.
    node.runtime.shutdown_background();
    drop(node.commands);
    let took = wait_for("serf sees muster3 failed", Duration::from_secs(20), || {
        serf.status_of("muster3")
            .is_some_and(|(s, _)| s == "failed")
    });
    eprintln!("muster vanished -> failed at serf: {took:?}");
}
