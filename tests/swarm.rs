//! The lab on Docker Swarm (compose/swarm.yml), on a single-node swarm of this machine's
//! engine: the same images as the compose lab, webapps and load balancer finding each other
//! through Swarm's DNS (`tasks.<service>`) on an overlay network, the gossip key as a Swarm
//! secret. Under a bounded load through the published port (Swarm's routing mesh): the stack
//! serves from every webapp, follows `docker service scale`, and fails no request through a
//! rolling `docker service update --force` and a `docker kill` of a task. This machine's kernel
//! has no IPVS, so Swarm's routing mesh and virtual IPs do not work here: the stack publishes
//! ha's ports in host mode and every service is `endpoint_mode: dnsrr` (compose/swarm.yml).
//!
//! When the engine is in no swarm, the test makes it a single-node one
//! (`docker swarm init --advertise-addr 127.0.0.1`) and leaves it at the end; a swarm that was
//! already there is used and kept. The stack has its own name, subnet, ports and configs, so it
//! never touches a stack a user has deployed.

#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::http::{Client, Load};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `docker ARGS`, its stdout trimmed; panics with its stderr when it fails.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("{what}: {:.1} s", start.elapsed().as_secs_f64());
    start.elapsed()
}

/// A single-node swarm for the test's length: made (and left at the end) when the engine is
/// in none, else the one that is there.
struct Swarm {
    made: bool,
}

impl Swarm {
    fn join() -> Swarm {
        let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        match state.as_str() {
            "inactive" => {
                docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
                Swarm { made: true }
            }
            "active" => {
                eprintln!("using the swarm this engine is already in (it is kept)");
                Swarm { made: false }
            }
            other => panic!("this engine's swarm state is {other}: neither active nor inactive"),
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if self.made {
            let _ = Command::new("docker")
                .args(["swarm", "leave", "--force"])
                .output();
        }
    }
}

/// The stack under test, removed (and waited for) when dropped.
struct Stack {
    name: String,
    http: u16,
    stats: u16,
    subnet: String,
    dir: tempfile::TempDir,
}

impl Stack {
    fn deploy(name: &str, third: u8) -> Stack {
        let stack = Stack {
            name: common::tagged(name),
            http: common::free_port(),
            stats: common::free_port(),
            subnet: format!("10.210.{third}.0/24"),
            dir: tempfile::tempdir().unwrap(),
        };
        stack.remove();
        common::key_file(stack.dir.path(), "gossip.key", &common::random_key());
        // The configs as shipped, on this stack's own subnet.
        for which in ["ha", "webapp"] {
            let text = std::fs::read_to_string(root().join(format!("compose/swarm-{which}.toml")))
                .unwrap();
            assert!(
                text.contains("10.210.42.0/24"),
                "swarm-{which}.toml names the subnet"
            );
            let text = text.replace("10.210.42.0/24", &stack.subnet);
            std::fs::write(stack.dir.path().join(format!("{which}.toml")), text).unwrap();
        }
        let out = stack
            .env(Command::new("docker").args([
                "stack",
                "deploy",
                "--resolve-image",
                "never",
                "-c",
                "compose/swarm.yml",
                &stack.name,
            ]))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker stack deploy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stack
    }

    fn env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        let dir = self.dir.path();
        let version = format!("{}-{}", self.name, std::process::id());
        cmd.current_dir(root())
            .env("MUSTER_HTTP_PORT", self.http.to_string())
            .env("MUSTER_STATS_PORT", self.stats.to_string())
            .env("MUSTER_SWARM_SUBNET", &self.subnet)
            .env("MUSTER_SWARM_HA_CONFIG", dir.join("ha.toml"))
            .env("MUSTER_SWARM_WEBAPP_CONFIG", dir.join("webapp.toml"))
            .env("MUSTER_SWARM_CONFIG_VERSION", version)
            .env("MUSTER_GOSSIP_KEY_FILE", dir.join("gossip.key"))
    }

    /// `docker stack rm`, then waits until its containers and network are gone.
    fn remove(&self) {
        let _ = Command::new("docker")
            .args(["stack", "rm", &self.name])
            .output();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            let left = docker(&[
                "ps",
                "-aq",
                "--filter",
                &format!("label=com.docker.stack.namespace={}", self.name),
            ]);
            let nets = docker(&[
                "network",
                "ls",
                "-q",
                "--filter",
                &format!("label=com.docker.stack.namespace={}", self.name),
            ]);
            if left.is_empty() && nets.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        eprintln!("stack {}: still not removed after 60 s", self.name);
    }

    fn service(&self, s: &str) -> String {
        format!("{}_{s}", self.name)
    }

    /// The running containers of a service's tasks.
    fn containers(&self, s: &str) -> Vec<String> {
        let filter = format!("label=com.docker.swarm.service.name={}", self.service(s));
        docker(&["ps", "-q", "--filter", &filter])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http))
    }

    /// The webapps that answered `n` fresh requests through the load balancer.
    fn hosts(&self, n: usize) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        for _ in 0..n {
            let mut c = Client::new(self.addr());
            c.keep_cookies = false;
            if let Ok(r) = c.get("/")
                && r.status == 200
                && let Some(h) = host_of(&r.body)
            {
                seen.insert(h);
            }
        }
        seen
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The `host` field of the webapp's JSON answer.
fn host_of(body: &str) -> Option<String> {
    let at = body.find("\"host\":\"")? + 8;
    let rest = &body[at..];
    Some(rest[..rest.find('"')?].to_owned())
}

fn hostname(container: &str) -> String {
    docker(&["inspect", "-f", "{{.Config.Hostname}}", container])
}

#[test]
fn swarm_stack_serves_scales_and_rolls_over_without_a_failed_request() {
    common::build_images();
    let _swarm = Swarm::join();
    let stack = Stack::deploy("muster-e2e-swarm", 243);
    wait_for(
        "both webapps served through the published port",
        Duration::from_secs(120),
        || stack.hosts(20).len() == 2,
    );
    check_members(&stack, 2);

    let load = Load::start(
        stack.addr(),
        4,
        Duration::from_millis(5),
        Duration::from_secs(300),
        2_000_000,
    );
    docker(&[
        "service",
        "scale",
        "--detach",
        &format!("{}=3", stack.service("webapp")),
    ]);
    wait_for("three webapps served", Duration::from_secs(60), || {
        stack.hosts(30).len() == 3
    });
    let before: BTreeSet<String> = stack
        .containers("webapp")
        .iter()
        .map(|c| hostname(c))
        .collect();

    // A rolling update: one task at a time, the new one started before the old one stops.
    docker(&[
        "service",
        "update",
        "--force",
        "--detach",
        &stack.service("webapp"),
    ]);
    wait_for(
        "every webapp replaced and served",
        Duration::from_secs(150),
        || {
            let now = stack.hosts(30);
            now.len() == 3 && now.is_disjoint(&before)
        },
    );

    // A task killed: out of rotation, and Swarm's replacement in it.
    let victim = stack.containers("webapp").remove(0);
    let gone = hostname(&victim);
    docker(&["kill", &victim]);
    wait_for(
        "the killed task replaced and served",
        Duration::from_secs(60),
        || {
            let now = stack.hosts(30);
            now.len() == 3 && !now.contains(&gone)
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let stats = load.finish();
    eprintln!(
        "load through scale, rolling update and kill: {} ok, {} failed",
        stats.ok, stats.failed
    );
    assert_eq!(stats.failed, 0, "failed requests: {:?}", stats.errors);
    assert!(stats.ok > 2000, "the load ran: {stats:?}");
    check_members(&stack, 3);
}

/// `muster members` in the load balancer's task: every webapp alive at its address on the
/// stack's overlay (not docker_gwbridge's or the ingress network's), and HAProxy's servers
/// named after them.
fn check_members(stack: &Stack, n: usize) {
    let ha = stack.containers("ha").remove(0);
    let prefix = stack.subnet.trim_end_matches("0/24").to_owned();
    wait_for(
        &format!("{n} webapps alive on the overlay in muster members"),
        Duration::from_secs(30),
        || {
            let text = docker(&["exec", &ha, "muster", "members"]);
            let backends: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("role=backend") && l.contains(" alive "))
                .collect();
            backends.len() == n && backends.iter().all(|l| l.contains(&prefix))
        },
    );
    let text = docker(&["exec", &ha, "muster", "members"]);
    for line in text.lines() {
        let addr = line.split_whitespace().nth(1).unwrap_or("");
        assert!(
            addr.starts_with(&prefix),
            "member on the overlay {}: {line}",
            stack.subnet
        );
    }
}
