//! muster's gossip against Debian's real `serf agent` on 127.0.0.1: muster joins serf, serf
//! sees it alive with its tags and keeps seeing it alive (muster answers its probes), muster
//! sees serf, muster's graceful leave shows as `left` in `serf members`, and a mixed cluster of
//! three serf agents and three muster nodes agrees on joins, tag changes, leaves and kills.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use muster::gossip::crypto::Keyring;
use muster::gossip::driver::{self, Command as Cmd, Publish, Settings};
use muster::gossip::serf::{self as serf_layer, Status};
use muster::gossip::swim;
use tokio::sync::{mpsc, oneshot, watch};

mod common;

use common::free_port;

/// A muster gossip node on 127.0.0.1 (LAN profile), driven on its own runtime.
struct Node {
    port: u16,
    runtime: tokio::runtime::Runtime,
    view: watch::Receiver<Vec<serf_layer::Member>>,
    commands: mpsc::UnboundedSender<Cmd>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Node {
    fn start(name: &str, seeds: Vec<String>, tags: &[(&str, &str)]) -> Node {
        Node::start_keyed(name, seeds, tags, None)
    }

    /// A node of an encrypted cluster when `key` is given (base64, as `serf -encrypt`).
    fn start_keyed(
        name: &str,
        seeds: Vec<String>,
        tags: &[(&str, &str)],
        key: Option<&str>,
    ) -> Node {
        let keyring = key.map(|k| Keyring::new(&[b64(k)]).unwrap());
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
            serf: serf_layer::Config::default(),
        };
        let (view_tx, view) = watch::channel(Vec::new());
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let publish = Publish { view: view_tx };
        let task = runtime.spawn(driver::run_keyed(settings, keyring, publish, commands_rx));
        Node {
            port,
            runtime,
            view,
            commands,
            task,
        }
    }

    /// Waits until this node's published view has `member` in `status`.
    fn until(
        &mut self,
        status: Status,
        member: &str,
        limit: Duration,
    ) -> Option<serf_layer::Member> {
        let view = &mut self.view;
        self.runtime.block_on(async {
            tokio::time::timeout(limit, async {
                loop {
                    let found = view
                        .borrow_and_update()
                        .iter()
                        .find(|m| m.name == member && m.status == status)
                        .cloned();
                    if found.is_some() || view.changed().await.is_err() {
                        return found;
                    }
                }
            })
            .await
            .ok()
            .flatten()
        })
    }

    /// (status, tags as `k=v,…`) of `name` in this node's published view.
    fn status_of(&self, name: &str) -> Option<(String, String)> {
        self.view.borrow().iter().find(|m| m.name == name).map(|m| {
            let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            (m.status.as_str().to_owned(), tags.join(","))
        })
    }

    fn leave(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        let by = Instant::now() + Duration::from_secs(5);
        self.commands
            .send(Cmd::Leave { by, done: done_tx })
            .unwrap();
        self.runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), done_rx).await })
            .unwrap()
            .unwrap();
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
        let child = common::owned(&mut cmd)
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

fn b64(key: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap()
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
        .until(Status::Alive, "serf1", Duration::from_secs(5))
        .expect("serf1 alive in muster's view");
    let serf_tags = joined.tags;
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
    node.leave();
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
    node.until(Status::Alive, "serf2", Duration::from_secs(5))
        .expect("muster saw serf2 join");

    // kill -9 of serf: muster declares it failed (LAN profile: 1 s probes, 4 s suspicion).
    serf.child.kill().unwrap();
    serf.child.wait().unwrap();
    let killed = Instant::now();
    node.until(Status::Failed, "serf2", Duration::from_secs(15))
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

/// One agent of the mixed cluster, whichever kind it is.
enum Agent {
    Serf(Serf),
    Muster(Node),
}

impl Agent {
    fn status_of(&self, name: &str) -> Option<(String, String)> {
        match self {
            Agent::Serf(s) => s.status_of(name),
            Agent::Muster(n) => n.status_of(name),
        }
    }
}

/// Waits until every agent in `observers` reports `status` for each of `names`.
fn all_agree(
    agents: &[(String, Agent)],
    observers: &[usize],
    names: &[&str],
    status: &str,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    let what = format!("{} agents see {names:?} {status}", observers.len());
    let mut told = false;
    wait_for(&what, limit, || {
        let agree = observers.iter().all(|&i| {
            names
                .iter()
                .all(|n| agents[i].1.status_of(n).is_some_and(|(s, _)| s == status))
        });
        if !agree && !told && started.elapsed() + Duration::from_millis(200) >= limit {
            told = true;
            // Say who does not see whom before the wait fails.
            for &i in observers {
                let views: Vec<String> = names
                    .iter()
                    .map(|n| format!("{n}={:?}", agents[i].1.status_of(n).map(|(s, _)| s)))
                    .collect();
                eprintln!("{} sees {}", agents[i].0, views.join(" "));
            }
        }
        agree
    })
}

#[test]
fn mixed_cluster_of_three_serf_and_three_muster_agrees() {
    // serf-a is the first seed; the others join across kinds: m1 through serf-a, serf-b
    // through m1, m2 through serf-b, serf-c through m2, m3 through serf-c.
    let mut agents: Vec<(String, Agent)> = Vec::new();
    let port_a = free_port();
    agents.push((
        "serf-a".into(),
        Agent::Serf(Serf::start("serf-a", port_a, &["role=balancer"])),
    ));
    let m1 = Node::start(
        "m1",
        vec![format!("127.0.0.1:{port_a}")],
        &[("role", "backend")],
    );
    let m1_join = format!("127.0.0.1:{}", m1.port);
    agents.push(("m1".into(), Agent::Muster(m1)));
    let port_b = free_port();
    agents.push((
        "serf-b".into(),
        Agent::Serf(Serf::start_with(
            "serf-b",
            port_b,
            &["role=backend"],
            &["-retry-join", &m1_join, "-retry-interval", "1s"],
        )),
    ));
    let m2 = Node::start(
        "m2",
        vec![format!("127.0.0.1:{port_b}")],
        &[("role", "backend")],
    );
    let m2_join = format!("127.0.0.1:{}", m2.port);
    agents.push(("m2".into(), Agent::Muster(m2)));
    let port_c = free_port();
    agents.push((
        "serf-c".into(),
        Agent::Serf(Serf::start_with(
            "serf-c",
            port_c,
            &["role=backend"],
            &["-retry-join", &m2_join, "-retry-interval", "1s"],
        )),
    ));
    agents.push((
        "m3".into(),
        Agent::Muster(Node::start(
            "m3",
            vec![format!("127.0.0.1:{port_c}")],
            &[("role", "backend")],
        )),
    ));
    let names: Vec<String> = agents.iter().map(|(n, _)| n.clone()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let everyone: Vec<usize> = (0..agents.len()).collect();

    // Joins spread by gossip in well under a second, but a node that misses every
    // retransmission of one alive (seen once under a loaded machine: serf-a without serf-c
    // after 30 s) learns it only from a push/pull, every 30 s on a serf agent: the bound
    // leaves room for two.
    let took = all_agree(&agents, &everyone, &names, "alive", Duration::from_secs(70));
    eprintln!("mixed 3+3: all six see all six alive after {took:?}");

    // A tag change on a serf agent reaches every muster node (and every serf).
    let Agent::Serf(b) = &agents[2].1 else {
        unreachable!()
    };
    let out = Command::new("serf")
        .args(["tags", "-rpc-addr", &b.rpc, "-set", "color=blue"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "serf tags: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "everyone sees serf-b's new tag",
        Duration::from_secs(10),
        || {
            everyone.iter().all(|&i| {
                agents[i]
                    .1
                    .status_of("serf-b")
                    .is_some_and(|(_, t)| t.contains("color=blue"))
            })
        },
    );

    // Graceful leaves, one of each kind: both show as left everywhere else.
    let Agent::Muster(m2) = &agents[3].1 else {
        unreachable!()
    };
    m2.leave();
    let Agent::Serf(c) = &mut agents[4].1 else {
        unreachable!()
    };
    // SIGINT is serf's graceful leave.
    // SAFETY: kill(2) on a child we started and have not reaped.
    unsafe { libc::kill(c.child.id() as i32, libc::SIGINT) };
    c.child.wait().unwrap();
    let rest = [0, 1, 2, 5];
    let took = all_agree(
        &agents,
        &rest,
        &["m2", "serf-c"],
        "left",
        Duration::from_secs(10),
    );
    eprintln!("mixed 3+3: a graceful leave of each kind seen as left by the rest after {took:?}");

    // kill -9, one of each kind: both are failed at the survivors.
    let Agent::Serf(a) = &mut agents[0].1 else {
        unreachable!()
    };
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let Agent::Muster(m3) = &agents[5].1 else {
        unreachable!()
    };
    m3.task.abort();
    let survivors = [1, 2];
    let took = all_agree(
        &agents,
        &survivors,
        &["serf-a", "m3"],
        "failed",
        Duration::from_secs(30),
    );
    eprintln!(
        "mixed 3+3: kill -9 of one of each kind seen as failed by the survivors after {took:?}"
    );
    // ...while the survivors still see each other alive, and the leavers still as left.
    all_agree(
        &agents,
        &survivors,
        &["m1", "serf-b"],
        "alive",
        Duration::from_secs(1),
    );
    all_agree(
        &agents,
        &survivors,
        &["m2", "serf-c"],
        "left",
        Duration::from_secs(1),
    );
}

/// Keys as `serf keygen` makes them (16 bytes), and a 32-byte one.
const KEY: &str = "5K9OtfjNP9lbeR7vqmUYtA==";
const OTHER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

#[test]
fn encrypted_serf_and_muster_form_one_cluster_both_ways() {
    // serf joins muster: serf's join is an encrypted push/pull to muster.
    let mut m1 = Node::start_keyed("emuster1", vec![], &[("role", "balancer")], Some(KEY));
    let join = format!("127.0.0.1:{}", m1.port);
    let serf_port = free_port();
    let serf = Serf::start_with(
        "eserf1",
        serf_port,
        &["role=backend"],
        &["-encrypt", KEY, "-join", &join],
    );
    wait_for(
        "encrypted serf lists emuster1 alive",
        Duration::from_secs(15),
        || {
            serf.status_of("emuster1")
                .is_some_and(|(s, _)| s == "alive")
        },
    );
    m1.until(Status::Alive, "eserf1", Duration::from_secs(5))
        .expect("emuster1 saw eserf1 join");

    // muster joins serf: m2's only seed is serf; it learns m1 from serf's push/pull answer
    // (m1 and m2 never exchanged anything before), and serf sees m2.
    let mut m2 = Node::start_keyed(
        "emuster2",
        vec![format!("127.0.0.1:{serf_port}")],
        &[("role", "backend")],
        Some(KEY),
    );
    m2.until(Status::Alive, "eserf1", Duration::from_secs(15))
        .expect("emuster2 joined eserf1");
    m2.until(Status::Alive, "emuster1", Duration::from_secs(5))
        .expect("emuster2 learned emuster1 through serf");
    m1.until(Status::Alive, "emuster2", Duration::from_secs(10))
        .expect("emuster1 learned emuster2");
    wait_for(
        "encrypted serf lists emuster2 alive",
        Duration::from_secs(10),
        || {
            serf.status_of("emuster2")
                .is_some_and(|(s, _)| s == "alive")
        },
    );

    // Probes are encrypted too: every member stays alive over several probe rounds (serf
    // would suspect, then fail, a member whose acks it cannot read).
    std::thread::sleep(Duration::from_secs(6));
    for name in ["emuster1", "emuster2", "eserf1"] {
        assert_eq!(
            serf.status_of(name).map(|s| s.0).as_deref(),
            Some("alive"),
            "{name}"
        );
        assert_eq!(
            m1.status_of(name).map(|s| s.0).as_deref(),
            Some("alive"),
            "{name}"
        );
        assert_eq!(
            m2.status_of(name).map(|s| s.0).as_deref(),
            Some("alive"),
            "{name}"
        );
    }
    // A graceful leave travels encrypted.
    m2.leave();
    wait_for(
        "encrypted serf sees emuster2 left",
        Duration::from_secs(5),
        || serf.status_of("emuster2").is_some_and(|(s, _)| s == "left"),
    );
}

#[test]
fn a_wrong_key_and_a_plaintext_serf_are_kept_out() {
    // An encrypted serf, and a muster with another key that tries to join it.
    let serf_port = free_port();
    let keyed_serf = Serf::start_with("kserf", serf_port, &[], &["-encrypt", KEY]);
    let wrong = Node::start_keyed(
        "wrongkey",
        vec![format!("127.0.0.1:{serf_port}")],
        &[],
        Some(OTHER_KEY),
    );
    // A keyed muster, and a plaintext serf that tries to join it.
    let keyed = Node::start_keyed("kmuster", vec![], &[], Some(KEY));
    let plain_serf = Serf::start("plainserf", free_port(), &[]);
    wait_for(
        "both serf agents answer RPC",
        Duration::from_secs(10),
        || keyed_serf.status_of("kserf").is_some() && plain_serf.status_of("plainserf").is_some(),
    );
    // `serf join` (a plaintext push/pull) fails: the keyed muster does not answer it.
    let out = Command::new("serf")
        .args(["join", "-rpc-addr", &plain_serf.rpc])
        .arg(format!("127.0.0.1:{}", keyed.port))
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serf join succeeded: {said}");
    eprintln!("plaintext serf join: {}", said.trim());
    // The wrong-key muster keeps re-joining every second meanwhile.
    std::thread::sleep(Duration::from_secs(6));
    let names = |rows: Vec<(String, String, String)>| -> Vec<String> {
        rows.into_iter().map(|r| r.0).collect()
    };
    assert_eq!(names(keyed_serf.members()), vec!["kserf"]);
    assert_eq!(names(plain_serf.members()), vec!["plainserf"]);
    let view =
        |n: &Node| -> Vec<String> { n.view.borrow().iter().map(|m| m.name.clone()).collect() };
    assert_eq!(view(&wrong), vec!["wrongkey"]);
    assert_eq!(view(&keyed), vec!["kmuster"]);
}
