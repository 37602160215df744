//! The compose lab end to end with the real Docker engine: build every image from source,
//! `docker-compose up`, serve through HAProxy from both webapps, stop cleanly within the grace
//! period, and end a webapp's container with 137 when its main process is killed.
//!
//! The lab runs under its own project name, network, subnet and free ports, so it never
//! touches a lab a user has running.

#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::http::{Client, Load};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    common::free_port()
}

struct Lab {
    /// Compose project name; the network is named after it.
    project: String,
    /// Third byte of the lab's private subnet 192.168.X.0/24.
    subnet: u8,
    http: u16,
    stats: u16,
    /// Holds the lab's gossip key (`gossip.key`, mode 600), given to docker-compose as
    /// `MUSTER_GOSSIP_KEY_FILE`: every lab is encrypted, as `compose/lab` makes it.
    secrets: tempfile::TempDir,
}

impl Lab {
    /// A lab under its own project, network and free ports, taken down first if left over.
    /// With `MUSTER_IMAGE_TAG` set (a second checkout building its own images), the project
    /// name carries the tag and `MUSTER_LAB_SUBNET_OFFSET` moves the subnet down, so two
    /// checkouts' labs can run at once.
    fn new(project: &str, subnet: u8) -> Lab {
        let offset: u8 = std::env::var("MUSTER_LAB_SUBNET_OFFSET")
            .ok()
            .and_then(|o| o.parse().ok())
            .unwrap_or(0);
        let lab = Lab {
            project: common::tagged(project),
            subnet: subnet - offset,
            http: free_port(),
            stats: free_port(),
            secrets: tempfile::tempdir().unwrap(),
        };
        common::key_file(lab.secrets.path(), "gossip.key", &common::random_key());
        lab.compose(&["down", "-v", "-t", "5"]);
        lab
    }
}

impl Lab {
    fn compose(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new("docker-compose")
            .current_dir(root())
            .args(["-p", &self.project, "-f", "compose/docker-compose.yml"])
            .args(args)
            .env("MUSTER_HTTP_PORT", self.http.to_string())
            .env("MUSTER_STATS_PORT", self.stats.to_string())
            .env("MUSTER_NETWORK", format!("{}-heig", self.project))
            .env("MUSTER_SUBNET", format!("192.168.{}.0/24", self.subnet))
            .env("MUSTER_HA_IP", format!("192.168.{}.42", self.subnet))
            .env("MUSTER_GOSSIP_KEY_FILE", self.key())
            .output()
            .expect("run docker-compose");
        eprintln!(
            "docker-compose {} -> {}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
        out
    }

    /// `docker-compose up -d --scale webapp=N`, which must succeed.
    fn scale(&self, n: usize) {
        let scale = format!("webapp={n}");
        assert!(
            self.compose(&["up", "-d", "--scale", &scale])
                .status
                .success(),
            "docker-compose up --scale {scale}"
        );
    }

    /// Container ids of a service, or of the whole lab for `""`.
    fn ids(&self, service: &str) -> Vec<String> {
        let mut args = vec!["ps", "-q"];
        if !service.is_empty() {
            args.push(service);
        }
        let out = self.compose(&args);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Container ids of a service's running containers (`ps -q` lists stopped ones too).
    fn running(&self, service: &str) -> Vec<String> {
        let project = format!("label=com.docker.compose.project={}", self.project);
        let service = format!("label=com.docker.compose.service={service}");
        docker(&["ps", "-q", "--filter", &project, "--filter", &service])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Asserts that exactly `n` webapp containers run (compose/docker-compose.yml says
    /// `scale: 2`: an `up` that does not name its scale gives two).
    fn assert_webapps(&self, n: usize, when: &str) {
        let running = self.running("webapp");
        assert_eq!(running.len(), n, "webapps running {when}: {running:?}");
    }

    fn get(&self, port: u16, path: &str) -> Option<(u16, String)> {
        get(port, path)
    }

    /// The lab's gossip key file.
    fn key(&self) -> std::path::PathBuf {
        self.secrets.path().join("gossip.key")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let out = self.compose(&["logs", "--no-color", "--tail", "150", "ha"]);
            eprintln!("ha's last lines:\n{}", String::from_utf8_lossy(&out.stdout));
        }
        self.compose(&["down", "-v", "-t", "10"]);
    }
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: lab\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

fn json_field(body: &str, key: &str) -> Option<String> {
    let start = body.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let end = start + body[start..].find('"')?;
    Some(body[start..end].to_owned())
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = start.elapsed();
    eprintln!("{what}: {took:?}");
    took
}

/// Lines with muster's sequence numbers in `text`, and how many numbers are missing below the
/// highest, per boot (all boots summed).
fn seq_gaps(text: &str) -> (usize, usize) {
    let mut boots: std::collections::BTreeMap<String, BTreeSet<u64>> = Default::default();
    for line in text.lines() {
        let Some(sd) = line.split("boot=\"").nth(1) else {
            continue;
        };
        let boot = sd.split('"').next().unwrap_or_default().to_owned();
        let Some(seq) = sd
            .split("seq=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        boots.entry(boot).or_default().insert(seq);
    }
    let lines = boots.values().map(BTreeSet::len).sum();
    let missing = boots
        .values()
        .map(|seqs| seqs.last().map_or(0, |max| *max as usize - seqs.len()))
        .sum();
    (lines, missing)
}

/// Hosts that answered `n` GETs through the load balancer; every answer must be 200.
fn hosts_seen(lab: &Lab, n: usize) -> BTreeSet<String> {
    let mut hosts = BTreeSet::new();
    for _ in 0..n {
        let (code, body) = lab.get(lab.http, "/").expect("the load balancer answers");
        assert_eq!(code, 200, "{body}");
        hosts.insert(json_field(&body, "host").expect("host in JSON"));
    }
    hosts
}

#[test]
fn lab_serves_stops_cleanly_and_reports_a_killed_app() {
    common::build_images();

    let lab = Lab::new("muster-e2e", 242);
    assert!(
        lab.compose(&["up", "-d"]).status.success(),
        "docker-compose up"
    );

    // Both webapps serve through the load balancer.
    let webapps = lab.ids("webapp");
    assert_eq!(webapps.len(), 2, "two webapps by default");
    let expected: BTreeSet<String> = webapps
        .iter()
        .map(|id| docker(&["inspect", "-f", "{{.Config.Hostname}}", id]))
        .collect();
    wait_for(
        "both webapps served through ha",
        Duration::from_secs(60),
        || {
            let mut seen = BTreeSet::new();
            for _ in 0..10 {
                match lab.get(lab.http, "/") {
                    Some((200, body)) => {
                        seen.extend(json_field(&body, "host"));
                    }
                    _ => return false,
                }
            }
            seen == expected
        },
    );
    assert_eq!(hosts_seen(&lab, 40), expected);

    // Membership by gossip: the webapps joined ha, which lists them alive with their role.
    let ha = lab.ids("ha").remove(0);
    let backends_alive = |n: usize| {
        let out = docker(&["exec", &ha, "muster", "members"]);
        out.lines()
            .filter(|l| l.contains(" alive ") && l.contains("role=backend"))
            .count()
            == n
    };
    wait_for(
        "ha lists both webapps alive by gossip",
        Duration::from_secs(30),
        || backends_alive(2),
    );
    let listed = docker(&["exec", &ha, "muster", "members"]);
    for host in &expected {
        assert!(listed.contains(host.as_str()), "{host} in:\n{listed}");
    }

    // Log shipping: each webapp's request log reaches the collector, in a file of its own.
    let collector = lab.ids("collector").remove(0);
    let remote = |cmd: &str| docker(&["exec", &collector, "sh", "-c", cmd]);
    for host in &expected {
        wait_for(
            &format!("{host}'s request lines in the collector"),
            Duration::from_secs(30),
            || {
                remote(&format!(
                    "grep -c 'GET /' /var/log/remote/{host}/webapp.log"
                )) != "0"
                    && !remote(&format!("cat /var/log/remote/{host}/webapp.log")).is_empty()
            },
        );
    }
    // `docker restart` of the collector under load: every line HAProxy logged (one per
    // request) arrives, none missing from its per-boot sequence.
    let restart = std::thread::spawn({
        let collector = collector.clone();
        move || {
            std::thread::sleep(Duration::from_millis(500));
            docker(&["restart", "-t", "10", &collector])
        }
    });
    for _ in 0..300 {
        let (code, _) = lab.get(lab.http, "/").expect("the load balancer answers");
        assert_eq!(code, 200);
        std::thread::sleep(Duration::from_millis(5));
    }
    restart.join().unwrap();
    let mut report = String::new();
    wait_for(
        "every line of ha's boot in the collector after its restart",
        Duration::from_secs(30),
        || {
            let text = remote("cat /var/log/remote/ha/*.log");
            let (lines, missing) = seq_gaps(&text);
            report = format!("{lines} lines from ha, {missing} missing");
            lines > 300 && missing == 0
        },
    );
    eprintln!("collector restarted under load: {report}");
    lab.scale(3);
    wait_for(
        "a third webapp joins by gossip",
        Duration::from_secs(60),
        || backends_alive(3),
    );
    lab.scale(2);
    wait_for(
        "the removed webapp leaves by gossip",
        Duration::from_secs(30),
        || {
            backends_alive(2)
                && docker(&["exec", &ha, "muster", "members"])
                    .lines()
                    .any(|l| l.contains(" left ") && l.contains("role=backend"))
        },
    );
    let (code, page) = lab.get(lab.stats, "/").expect("stats page");
    assert_eq!(code, 200);
    assert!(page.contains("nodes"), "the stats page lists the backend");

    // `docker-compose stop` ends every container cleanly, well within Docker's 10 s.
    let all: Vec<String> = lab.ids("");
    assert_eq!(all.len(), 4, "ha, two webapps, collector");
    let asked = Instant::now();
    assert!(lab.compose(&["stop", "-t", "10"]).status.success());
    let took = asked.elapsed();
    eprintln!("docker-compose stop took {took:?}");
    assert!(took < Duration::from_secs(8), "stop took {took:?}");
    for id in &all {
        let state = docker(&[
            "inspect",
            "-f",
            "{{.Name}} {{.State.ExitCode}} {{.State.OOMKilled}}",
            id,
        ]);
        let f: Vec<&str> = state.split_whitespace().collect();
        assert_eq!(f[1], "0", "{state}: clean exit, not SIGKILLed by Docker");
        assert_eq!(f[2], "false", "{state}");
    }

    // Killing a webapp's main process ends its container with 128+9; the other one serves.
    assert!(lab.compose(&["up", "-d"]).status.success());
    wait_for("both webapps back", Duration::from_secs(60), || {
        (0..10)
            .filter_map(|_| lab.get(lab.http, "/"))
            .filter(|(c, _)| *c == 200)
            .filter_map(|(_, b)| json_field(&b, "host"))
            .collect::<BTreeSet<_>>()
            .len()
            == 2
    });
    let victim = &lab.ids("webapp")[0];
    let kill = Command::new("docker")
        .args(["exec", victim, "sh", "-c", "kill -9 $(pidof node)"])
        .status()
        .expect("docker exec");
    assert!(kill.success(), "node was found and killed");
    wait_for(
        "the killed webapp's container to exit",
        Duration::from_secs(10),
        || docker(&["inspect", "-f", "{{.State.Status}}", victim]) == "exited",
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.ExitCode}}", victim]),
        "137"
    );
    let survivors = hosts_seen(&lab, 10);
    assert_eq!(survivors.len(), 1, "the other webapp serves: {survivors:?}");
}

fn json_number(body: &str, key: &str) -> Option<u64> {
    let start = body.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = body[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Hosts answering `n` cookie-less GETs through the load balancer (any status counts as none).
fn hosts_now(lab: &Lab, n: usize) -> BTreeSet<String> {
    (0..n)
        .filter_map(|_| lab.get(lab.http, "/"))
        .filter(|(c, _)| *c == 200)
        .filter_map(|(_, b)| json_field(&b, "host"))
        .collect()
}

/// A client with cookies that must stay on one webapp, its session's view count going up by
/// one at every request.
struct Sticky {
    client: Client,
    host: String,
    views: u64,
    requests: u64,
}

impl Sticky {
    fn new(http: u16) -> Sticky {
        let mut client = Client::new(SocketAddr::from(([127, 0, 0, 1], http)));
        let r = client.get("/").expect("first sticky request");
        assert_eq!(r.status, 200, "{}", r.body);
        Sticky {
            host: json_field(&r.body, "host").expect("host"),
            views: json_number(&r.body, "sessionViews").expect("sessionViews"),
            client,
            requests: 1,
        }
    }

    fn check(&mut self) {
        let r = self.client.get("/").expect("sticky request");
        assert_eq!(r.status, 200, "{}", r.body);
        let host = json_field(&r.body, "host").expect("host");
        let views = json_number(&r.body, "sessionViews").expect("sessionViews");
        assert_eq!(
            (host.as_str(), views),
            (self.host.as_str(), self.views + 1),
            "the sticky client changed backend or lost its session after {} requests",
            self.requests
        );
        self.views = views;
        self.requests += 1;
    }
}

#[test]
fn lab_follows_scaling_and_kills_under_load_without_a_failed_request() {
    common::build_images();
    let lab = Lab::new("muster-e2e-sync", 243);
    lab.scale(1);
    wait_for(
        "the webapp served through ha",
        Duration::from_secs(60),
        || hosts_now(&lab, 1).len() == 1,
    );
    let mut sticky = Sticky::new(lab.http);
    let load = Load::start(
        SocketAddr::from(([127, 0, 0, 1], lab.http)),
        4,
        Duration::from_millis(5),
        Duration::from_secs(600),
        2_000_000,
    );

    // 1 → 10: every new webapp takes traffic; the sticky client stays where it is.
    lab.scale(10);
    wait_for("ten webapps served", Duration::from_secs(120), || {
        sticky.check();
        hosts_now(&lab, 40).len() == 10
    });
    // 10 → 1: the nine removed ones are drained and removed, the sticky one stays.
    lab.scale(1);
    wait_for("one webapp left", Duration::from_secs(60), || {
        sticky.check();
        hosts_now(&lab, 10) == BTreeSet::from([sticky.host.clone()])
    });
    // 1 → 4, then `docker kill` of the three new ones under load.
    lab.scale(4);
    wait_for("four webapps served", Duration::from_secs(60), || {
        sticky.check();
        hosts_now(&lab, 20).len() == 4
    });
    for id in lab.ids("webapp") {
        let host = docker(&["inspect", "-f", "{{.Config.Hostname}}", &id]);
        if host != sticky.host {
            docker(&["kill", &id]);
        }
    }
    wait_for(
        "the killed webapps out of rotation",
        Duration::from_secs(30),
        || {
            sticky.check();
            hosts_now(&lab, 10) == BTreeSet::from([sticky.host.clone()])
        },
    );
    for _ in 0..20 {
        sticky.check();
    }
    let stats = load.finish();
    eprintln!(
        "load through the churn: {} ok, {} failed; sticky client: {} requests, {} views",
        stats.ok, stats.failed, sticky.requests, sticky.views
    );
    assert_eq!(stats.failed, 0, "failed requests: {:?}", stats.errors);
    assert!(stats.ok > 1000, "the load ran: {stats:?}");

    // The stats page lists the live member by name.
    let (code, page) = lab.get(lab.stats, "/").expect("stats page");
    assert_eq!(code, 200);
    assert!(
        page.contains(&sticky.host),
        "stats page names {}",
        sticky.host
    );

    // A restart of the load balancer rebuilds its servers from gossip; the sticky client
    // keeps its webapp and its session.
    let ha = lab.ids("ha").remove(0);
    docker(&["restart", "-t", "10", &ha]);
    wait_for(
        "ha serving again after its restart",
        Duration::from_secs(60),
        || hosts_now(&lab, 1).len() == 1,
    );
    // Its keep-alive connection died with the old HAProxy: a browser opens a new one.
    sticky.client.reconnect();
    for _ in 0..10 {
        sticky.check();
    }

    // A webapp killed and started again (same name, maybe another address) gets back the
    // clients that did not come meanwhile.
    lab.scale(3);
    wait_for("three webapps served", Duration::from_secs(60), || {
        hosts_now(&lab, 20).len() == 3
    });
    let (new, host) = lab
        .ids("webapp")
        .into_iter()
        .map(|id| {
            let host = docker(&["inspect", "-f", "{{.Config.Hostname}}", &id]);
            (id, host)
        })
        .find(|(id, host)| {
            *host != sticky.host && docker(&["inspect", "-f", "{{.State.Running}}", id]) == "true"
        })
        .expect("a running webapp besides the sticky one");
    let mut client = loop {
        let mut c = Client::new(SocketAddr::from(([127, 0, 0, 1], lab.http)));
        let r = c.get("/").unwrap();
        if json_field(&r.body, "host").as_deref() == Some(host.as_str()) {
            break c;
        }
    };
    let address = |id: &str| {
        docker(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            id,
        ])
    };
    let old_ip = address(&new);
    docker(&["kill", &new]);
    wait_for(
        "the killed webapp out of rotation",
        Duration::from_secs(30),
        || !hosts_now(&lab, 10).contains(&host),
    );
    docker(&["start", &new]);
    wait_for(
        "the webapp back in rotation",
        Duration::from_secs(60),
        || hosts_now(&lab, 10).contains(&host),
    );
    eprintln!(
        "the restarted webapp was at {old_ip}, is at {}",
        address(&new)
    );
    for _ in 0..10 {
        let r = client.get("/").unwrap();
        assert_eq!(json_field(&r.body, "host").as_deref(), Some(host.as_str()));
    }
}

/// Issue 12: with a single webapp, the lifecycles users go through every day (a deploy that
/// recreates it, stop and start, restart) fail no request: HAProxy holds them until the webapp is back in service,
/// counts them on the stats page's /hold, and logs each episode once.
#[test]
fn lab_holds_requests_while_the_only_webapp_stops_and_restarts() {
    common::build_images();
    let lab = Lab::new("muster-e2e-hold", 234);
    lab.scale(1);
    wait_for(
        "the webapp served through ha",
        Duration::from_secs(60),
        || hosts_now(&lab, 1).len() == 1,
    );
    let load = Load::start(
        SocketAddr::from(([127, 0, 0, 1], lab.http)),
        4,
        Duration::from_millis(5),
        Duration::from_secs(120),
        2_000_000,
    );
    std::thread::sleep(Duration::from_secs(1));
    // A deploy: the only webapp recreated (with its scale named: the file says 2).
    lab.assert_webapps(1, "before the deploy");
    let before = lab.running("webapp");
    assert!(
        lab.compose(&[
            "up",
            "-d",
            "--force-recreate",
            "--no-deps",
            "--scale",
            "webapp=1",
            "webapp"
        ])
        .status
        .success()
    );
    lab.assert_webapps(1, "after the deploy");
    wait_for("the new webapp served", Duration::from_secs(30), || {
        hosts_now(&lab, 1).len() == 1 && lab.running("webapp") != before
    });
    // Stop, 3 s with no webapp at all, start.
    assert!(lab.compose(&["stop", "webapp"]).status.success());
    lab.assert_webapps(0, "after stop");
    std::thread::sleep(Duration::from_secs(3));
    assert!(lab.compose(&["start", "webapp"]).status.success());
    lab.assert_webapps(1, "after start");
    wait_for("the webapp back", Duration::from_secs(30), || {
        hosts_now(&lab, 1).len() == 1
    });
    // `docker restart` of the only webapp.
    let web = lab.running("webapp").remove(0);
    docker(&["restart", &web]);
    lab.assert_webapps(1, "after docker restart");
    wait_for("the webapp back again", Duration::from_secs(30), || {
        hosts_now(&lab, 1).len() == 1
    });
    std::thread::sleep(Duration::from_secs(1));
    let stats = load.finish();
    eprintln!("load: {} ok, {} failed", stats.ok, stats.failed);
    assert_eq!(stats.failed, 0, "failed requests: {:?}", stats.errors);
    assert!(stats.ok > 500, "the load ran: {stats:?}");

    // HAProxy's hold counted them: held, all released, none timed out.
    let (code, body) = lab.get(lab.stats, "/hold").expect("/hold");
    assert_eq!(code, 200, "{body}");
    let row: Vec<u64> = body
        .lines()
        .find_map(|l| l.strip_prefix("nodes "))
        .expect("a line for backend nodes")
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    let (held, released, timed_out, episodes) = (row[0], row[1], row[2], row[4]);
    assert!(held >= 4, "the 4 clients were held at least once: {body}");
    assert_eq!((released, timed_out), (held, 0), "{body}");
    // One log line when an episode starts and one when it ends, not one per request (HAProxy
    // echoes Lua's log lines on stderr too, as `[warning] … : muster hold: …`).
    let logs = lab.compose(&["logs", "--no-color", "ha"]);
    let logs = String::from_utf8_lossy(&logs.stdout);
    let starts = logs
        .matches("] muster hold: backend nodes has no server in service")
        .count();
    let ends = logs
        .matches("] muster hold: backend nodes has a server again after")
        .count();
    assert_eq!(starts as u64, episodes, "{body}\n{logs}");
    assert!(ends >= 1 && (ends as u64) <= episodes, "{body}\n{logs}");
    assert!(
        held > episodes,
        "more requests held than episodes logged: {body}"
    );
    // On the load balancer, `muster members` shows each member's server as muster commanded it.
    let ha = lab.ids("ha").remove(0);
    let members = docker(&["exec", &ha, "muster", "members"]);
    let alive: Vec<&str> = members
        .lines()
        .filter(|l| l.contains(" alive ") && l.contains("role=backend"))
        .collect();
    assert!(
        !alive.is_empty() && alive.iter().all(|r| r.ends_with("server=in-service")),
        "{members}"
    );
    // A member that left (the recreated container's predecessor) is no server.
    assert!(
        members
            .lines()
            .filter(|l| l.contains(" left "))
            .all(|l| l.ends_with("server=-")),
        "{members}"
    );

    // The load balancer's own restart: only its listening gap fails (connections refused or
    // reset while no HAProxy listens), never an answer; it comes back with the server.
    let load = Load::start(
        SocketAddr::from(([127, 0, 0, 1], lab.http)),
        4,
        Duration::from_millis(5),
        Duration::from_secs(60),
        2_000_000,
    );
    std::thread::sleep(Duration::from_secs(1));
    docker(&["restart", &ha]);
    wait_for("ha serving again", Duration::from_secs(30), || {
        hosts_now(&lab, 1).len() == 1
    });
    std::thread::sleep(Duration::from_secs(2));
    let stats = load.finish();
    let gap = stats.failing.map_or(0.0, |(a, b)| b - a);
    eprintln!(
        "ha restart: {} ok, {} failed, failing for {:.0} ms",
        stats.ok,
        stats.failed,
        gap * 1000.0
    );
    assert!(
        stats.statuses.is_empty(),
        "answers that were errors: {stats:?}"
    );
    assert!(stats.ok > 100, "the load ran: {stats:?}");
}

/// Containers started by hand (`docker run`), removed with the test.
struct Intruders(Vec<String>);

impl Drop for Intruders {
    fn drop(&mut self) {
        for name in &self.0 {
            if std::thread::panicking() {
                eprintln!(
                    "{name}'s logs:\n{}",
                    docker(&["logs", "--tail", "30", name])
                );
            }
            docker(&["rm", "-f", name]);
        }
    }
}

/// Issue 13: ha's sockets are root's only and its stats page refuses admin actions; the lab's
/// gossip is encrypted with its key (a compose secret). A webapp container
/// started by hand on the lab's network without the secret does not start (exit 64, the key
/// named); one given another key, and one whose config has no key at all (plaintext), run and
/// try to join `ha` but never become a member nor an HAProxy server, no request fails, and ha
/// logs the refused traffic.
#[test]
fn lab_keeps_out_a_webapp_started_by_hand_without_the_key() {
    common::build_images();
    let lab = Lab::new("muster-e2e-key", 236);
    lab.scale(1);
    wait_for(
        "the webapp served through ha",
        Duration::from_secs(60),
        || hosts_now(&lab, 1).len() == 1,
    );
    let real = hosts_now(&lab, 1);
    let ha = lab.ids("ha").remove(0);

    ha_control_surfaces_are_closed(&lab, &ha, &real);
    let network = format!("{}-heig", lab.project);
    let tag = std::env::var("MUSTER_IMAGE_TAG").unwrap_or_else(|_| "dev".to_owned());
    let image = format!("muster/webapp:{tag}");
    let name = |what: &str| format!("{}-intruder-{what}", lab.project);

    // Without the secret: muster refuses to start, naming the key.
    refused_without_the_secret(&network, &image);

    // With another key, and with a config that has no key: they run and try to join.
    let dir = lab.secrets.path();
    let wrong = common::key_file(dir, "wrong.key", &common::random_key());
    let plain_cfg = dir.join("plaintext.toml");
    let shipped = std::fs::read_to_string(root().join("images/webapp/muster.toml")).unwrap();
    let plaintext: String = shipped
        .lines()
        .filter(|l| !l.starts_with("encrypt_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(
        plaintext.len(),
        shipped.len(),
        "the shipped config has a key"
    );
    std::fs::write(&plain_cfg, plaintext).unwrap();
    let intruders = Intruders(vec![name("wrongkey"), name("plaintext")]);
    let mounts = [
        format!("{}:/run/secrets/gossip_key:ro", wrong.display()),
        format!("{}:/etc/muster/muster.toml:ro", plain_cfg.display()),
    ];
    for (who, mount) in intruders.0.iter().zip(&mounts) {
        let host = who.rsplit('-').next().unwrap();
        let id = docker(&[
            "run",
            "-d",
            "--network",
            &network,
            "--name",
            who,
            "--hostname",
            &format!("intruder-{host}"),
            "-v",
            mount,
            &image,
        ]);
        assert!(!id.is_empty(), "docker run {who}");
    }
    wait_for(
        "ha logs refused gossip traffic",
        Duration::from_secs(30),
        || {
            let logs = lab.compose(&["logs", "--no-color", "ha"]);
            String::from_utf8_lossy(&logs.stdout).contains("gossip traffic refused")
        },
    );
    // 15 s (more than the webapps' 10 s rejoin interval): never a member, never a server.
    let requests = kept_out(&lab, &ha, &intruders.0, &real, Duration::from_secs(15));
    let logs = lab.compose(&["logs", "--no-color", "ha"]);
    let logs = String::from_utf8_lossy(&logs.stdout);
    let refused: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("gossip traffic refused"))
        .collect();
    eprintln!(
        "kept out for 15 s, {requests} requests all served by {real:?}; ha logged:\n{}",
        refused.join("\n")
    );
    // The intruders' own side: they never joined either.
    for who in &intruders.0 {
        let theirs = docker(&["exec", who, "muster", "members"]);
        eprintln!("{who} sees:\n{theirs}");
        assert!(
            !theirs
                .lines()
                .any(|l| l.contains(" alive ") && l.contains("role=balancer")),
            "{theirs}"
        );
    }
}

/// In `ha`: muster's and HAProxy's sockets and the key are root's only (0600), the key is in no
/// container's log, and the published stats page refuses an admin action against the live
/// webapp (`real`), which stays in service.
fn ha_control_surfaces_are_closed(lab: &Lab, ha: &str, real: &BTreeSet<String>) {
    for socket in [
        "/run/muster/control.sock",
        "/run/haproxy/admin.sock",
        "/run/haproxy/master.sock",
    ] {
        let mode = docker(&["exec", ha, "stat", "-c", "%a %U %F", socket]);
        eprintln!("ha: {socket}: {mode}");
        assert_eq!(mode, "600 root socket", "{socket}");
    }
    // The key: root's only inside the container, and never in a log.
    let secret = docker(&["exec", ha, "stat", "-c", "%a %U", "/run/secrets/gossip_key"]);
    assert_eq!(secret, "600 root", "/run/secrets/gossip_key");
    let key = std::fs::read_to_string(lab.key()).unwrap();
    let logs = lab.compose(&["logs", "--no-color"]);
    assert!(
        !String::from_utf8_lossy(&logs.stdout).contains(key.trim()),
        "the gossip key is in the lab's logs"
    );
    let body = format!("s={}&action=maint&b=nodes", real.first().unwrap());
    let mut s = TcpStream::connect(("127.0.0.1", lab.stats)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "POST / HTTP/1.0\r\nHost: lab\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.contains("st=DENY"), "{answer}");
    assert_eq!(&hosts_now(lab, 5), real, "the webapp is still in service");
}

/// `docker run` of the webapp image on the lab's network without the secret: muster does not
/// start (exit 64), naming the key file it cannot read.
fn refused_without_the_secret(network: &str, image: &str) {
    let out = Command::new("timeout")
        .args(["60", "docker", "run", "--rm", "--network", network])
        .args(["--hostname", "intruder-nokey", image])
        .output()
        .expect("docker run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("docker run without the secret: {}\n{stderr}", out.status);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("gossip.encrypt_file: cannot read /run/secrets/gossip_key"),
        "{stderr}"
    );
}

/// For `window`: the `intruders` keep running, are never in `ha`'s members nor on the stats
/// page, and every request is served by the `real` webapp. The requests sent.
fn kept_out(
    lab: &Lab,
    ha: &str,
    intruders: &[String],
    real: &BTreeSet<String>,
    window: Duration,
) -> usize {
    let start = Instant::now();
    let mut requests = 0;
    while start.elapsed() < window {
        for who in intruders {
            assert_eq!(
                docker(&["inspect", "-f", "{{.State.Running}}", who]),
                "true",
                "{who} runs (it is kept out, not crashed)"
            );
        }
        let members = docker(&["exec", ha, "muster", "members"]);
        assert!(!members.contains("intruder"), "{members}");
        let (code, page) = lab.get(lab.stats, "/;csv").expect("stats csv");
        assert_eq!(code, 200);
        assert!(!page.contains("intruder"), "{page}");
        assert_eq!(&hosts_seen(lab, 5), real, "only the real webapp serves");
        requests += 5;
        std::thread::sleep(Duration::from_millis(500));
    }
    requests
}
