//! The lab's own Task 5 handler scripts (`images/ha/serf-handlers/`, as the lab wrote them)
//! run unchanged under muster in the `ha` image (`MUSTER_CONFIG=/etc/muster/lab-handlers.toml`)
//! and, beside it, under Debian's real `serf agent` in a second container of the same image
//! with the lab's `-event-handler` lines; two webapps join, one is stopped (`docker stop`: a
//! leave), one is killed (`docker kill`: a failure). Both keep the same `/nodes` files and
//! write the same "received" lines to `/var/log/serf.log`; the "script triggered" lines count
//! the runs, and Serf's coalescing runs its script once for its own and `ha`'s join where
//! muster runs it for each (measured: 3 runs before s1's line under muster, 2 under serf).
//!
//! The lab's Task 3 scripts (`images/ha/serf-handlers/task3/`: they only log, every role) run
//! the same way, muster's configuration pointed at them: the same "received" lines.
//!
//! Everything runs on a network of its own, named after `MUSTER_IMAGE_TAG` and the task, and is
//! removed at the end, even when the test fails.

#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

mod common;

const LONG: Duration = Duration::from_secs(90);

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker").args(args).output().expect("docker");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn ok(args: &[&str]) -> String {
    let (success, text) = docker(args);
    assert!(success, "docker {args:?}: {text}");
    text
}

/// The containers and network of this test, removed on drop.
struct Setup {
    prefix: String,
    tag: String,
    containers: Vec<String>,
}

impl Setup {
    fn new(task: &str) -> Setup {
        let tag = std::env::var("MUSTER_IMAGE_TAG").unwrap_or_else(|_| "dev".into());
        let prefix = format!("muster-{tag}-handlers-{task}");
        let s = Setup {
            prefix,
            tag,
            containers: Vec::new(),
        };
        s.clean();
        ok(&["network", "create", &s.prefix]);
        s
    }

    fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    fn clean(&self) {
        for c in ["ha", "serf", "s1", "s2"] {
            let _ = docker(&["rm", "-f", &self.name(c)]);
        }
        let _ = docker(&["network", "rm", &self.prefix]);
    }

    /// `docker run -d` of `image` as `short` (also its host name), with these arguments
    /// before the image and after it.
    fn run(&mut self, short: &str, before: &[&str], image: &str, after: &[&str]) {
        let name = self.name(short);
        let image = format!("muster/{image}:{}", self.tag);
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--hostname",
            short,
            "--network",
            &self.prefix,
        ];
        args.extend_from_slice(before);
        args.push(&image);
        args.extend_from_slice(after);
        ok(&args);
        self.containers.push(name);
    }

    fn exec(&self, short: &str, script: &str) -> String {
        docker(&["exec", &self.name(short), "sh", "-c", script]).1
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        for c in &self.containers {
            if std::thread::panicking() {
                eprintln!("--- docker logs {c}\n{}", docker(&["logs", c]).1);
            }
        }
        self.clean();
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < LONG, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
    start.elapsed()
}

/// `/nodes` as `name: content` lines.
fn nodes(s: &Setup, who: &str) -> String {
    s.exec(
        who,
        "for f in $(ls /nodes); do printf '%s: %s\\n' \"$f\" \"$(cat /nodes/$f)\"; done",
    )
}

/// Starts the two load balancers of the same `ha` image: `ha` under muster (its configuration
/// chosen by `muster_env`, with `mounts`), and `serf` under Debian's serf agent with the lab's
/// command line (README Task 2) and `-event-handler` lines for the scripts in `scripts`; both
/// in a cluster sealed with `key` (the secret mounted from `secret`).
fn start_balancers(s: &mut Setup, key: &str, secret: &str, muster_env: &[&str], scripts: &str) {
    let mut before = vec!["--network-alias", "ha", "-v", secret];
    before.extend_from_slice(muster_env);
    s.run("ha", &before, "ha", &[]);
    let encrypt = format!("-encrypt={key}");
    let join = format!("member-join={scripts}member-join.sh");
    let leave = format!("member-leave,member-failed={scripts}member-leave.sh");
    s.run(
        "serf",
        &[
            "-v",
            "/usr/bin/serf:/usr/bin/serf:ro",
            "--entrypoint",
            "/usr/bin/serf",
        ],
        "ha",
        &[
            "agent",
            "-node=serf-ha",
            "-retry-join=ha",
            "-retry-interval=1s",
            &encrypt,
            "-event-handler",
            &join,
            "-event-handler",
            &leave,
            "-tag",
            "role=balancer",
        ],
    );
}

#[test]
fn the_lab_s_scripts_do_under_muster_what_they_do_under_serf() {
    common::build_images();
    let dir = tempfile::tempdir().unwrap();
    let key = common::random_key();
    let key_file = common::key_file(dir.path(), "gossip.key", &key);
    let secret = format!("{}:/run/secrets/gossip_key:ro", key_file.display());
    let mut s = Setup::new("task5");
    let env = ["-e", "MUSTER_CONFIG=/etc/muster/lab-handlers.toml"];
    start_balancers(&mut s, &key, &secret, &env, "/serf-handlers/");
    let log = |s: &Setup, who: &str| s.exec(who, "cat /var/log/serf.log 2>/dev/null");
    wait_for("both load balancers ran a join script", || {
        log(&s, "ha").contains("triggered") && log(&s, "serf").contains("triggered")
    });
    let both_nodes = |s: &Setup, want: &[&str]| {
        [nodes(s, "ha"), nodes(s, "serf")].iter().all(|n| {
            let names: Vec<&str> = n.lines().filter_map(|l| l.split(':').next()).collect();
            names == want
        })
    };
    let backend = ["--network-alias", "webapp", "-v", &secret];
    s.run("s1", &backend, "webapp", &[]);
    let t1 = wait_for("s1 in both /nodes", || both_nodes(&s, &["s1"]));
    s.run("s2", &backend, "webapp", &[]);
    let t2 = wait_for("s2 in both /nodes", || both_nodes(&s, &["s1", "s2"]));
    let (joined_ha, joined_serf) = (nodes(&s, "ha"), nodes(&s, "serf"));
    ok(&["stop", &s.name("s1")]);
    let t3 = wait_for("s1 gone from both /nodes", || both_nodes(&s, &["s2"]));
    ok(&["kill", &s.name("s2")]);
    let t4 = wait_for("s2 gone from both /nodes", || both_nodes(&s, &[]));
    let (ha_log, serf_log) = (log(&s, "ha"), log(&s, "serf"));
    let events: Vec<String> = docker(&["logs", &s.name("ha")])
        .1
        .lines()
        .filter(|l| l.contains("membership") || l.contains("event handler"))
        .map(str::to_owned)
        .collect();
    eprintln!("--- muster's membership events\n{}", events.join("\n"));
    eprintln!("--- /nodes after the joins, muster:\n{joined_ha}--- serf:\n{joined_serf}");
    eprintln!("--- /var/log/serf.log, muster:\n{ha_log}--- serf:\n{serf_log}---");
    println!(
        "both /nodes: s1 in {:.1} s, s2 in {:.1} s, s1 gone {:.1} s after docker stop, s2 gone \
         {:.1} s after docker kill (slowest of the two); serf.log identical: {}",
        t1.as_secs_f64(),
        t2.as_secs_f64(),
        t3.as_secs_f64(),
        t4.as_secs_f64(),
        ha_log == serf_log
    );
    assert_eq!(joined_ha, joined_serf, "/nodes under muster and under serf");
    assert_eq!(
        received(&ha_log),
        [
            "Member join event received from: s1 with role backend",
            "Member join event received from: s2 with role backend",
            "Member member-leave event received from: s1 with role backend",
            "Member member-failed event received from: s2 with role backend",
        ]
    );
    assert_eq!(received(&ha_log), received(&serf_log));
}

/// The "received" lines of a serf.log.
fn received(log: &str) -> Vec<String> {
    log.lines()
        .filter(|x| x.contains("received"))
        .map(str::to_owned)
        .collect()
}

/// The lab's Task 3 scripts (`images/ha/serf-handlers/task3/`: they only log, for every role)
/// under muster, with the image's lab-handlers.toml pointed at them, and under serf: the same
/// "received" lines for both load balancers and both webapps, the webapps' in the same order.
#[test]
fn the_lab_s_task_3_scripts_log_under_muster_what_they_log_under_serf() {
    common::build_images();
    let dir = tempfile::tempdir().unwrap();
    let key = common::random_key();
    let key_file = common::key_file(dir.path(), "gossip.key", &key);
    let secret = format!("{}:/run/secrets/gossip_key:ro", key_file.display());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let image_config = std::fs::read_to_string(root.join("images/ha/lab-handlers.toml")).unwrap();
    let config = image_config.replace("=/serf-handlers/", "=/serf-handlers/task3/");
    assert_eq!(
        config.matches("/serf-handlers/task3/").count(),
        2,
        "{config}"
    );
    let config_file = dir.path().join("task3.toml");
    std::fs::write(&config_file, config).unwrap();
    let mount = format!("{}:/etc/muster/task3.toml:ro", config_file.display());
    let mut s = Setup::new("task3");
    let env = ["-e", "MUSTER_CONFIG=/etc/muster/task3.toml", "-v", &mount];
    start_balancers(&mut s, &key, &secret, &env, "/serf-handlers/task3/");
    let log = |s: &Setup, who: &str| s.exec(who, "cat /var/log/serf.log 2>/dev/null");
    let both_have = |s: &Setup, line: &str| ["ha", "serf"].iter().all(|w| log(s, w).contains(line));
    wait_for("both load balancers logged each other's join", || {
        both_have(&s, "received from: ha with role balancer")
            && both_have(&s, "received from: serf-ha with role balancer")
    });
    let backend = ["--network-alias", "webapp", "-v", &secret];
    s.run("s1", &backend, "webapp", &[]);
    wait_for("s1's join in both logs", || {
        both_have(&s, "join event received from: s1 with role backend")
    });
    s.run("s2", &backend, "webapp", &[]);
    wait_for("s2's join in both logs", || {
        both_have(&s, "join event received from: s2 with role backend")
    });
    ok(&["stop", &s.name("s1")]);
    wait_for("s1's leave in both logs", || {
        both_have(&s, "member-leave event received from: s1 with role backend")
    });
    ok(&["kill", &s.name("s2")]);
    wait_for("s2's failure in both logs", || {
        both_have(
            &s,
            "member-failed event received from: s2 with role backend",
        )
    });
    let (ha_log, serf_log) = (log(&s, "ha"), log(&s, "serf"));
    eprintln!("--- /var/log/serf.log, muster:\n{ha_log}--- serf:\n{serf_log}---");
    let webapps = |l: &str| -> Vec<String> {
        received(l)
            .into_iter()
            .filter(|x| x.contains("role backend"))
            .collect()
    };
    assert_eq!(
        webapps(&ha_log),
        [
            "Member join event received from: s1 with role backend",
            "Member join event received from: s2 with role backend",
            "Member member-leave event received from: s1 with role backend",
            "Member member-failed event received from: s2 with role backend",
        ]
    );
    assert_eq!(webapps(&ha_log), webapps(&serf_log));
    // The two load balancers' joins come in whatever order each heard them.
    let (mut ours, mut theirs) = (received(&ha_log), received(&serf_log));
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs, "the same lines under muster and under serf");
    assert_eq!(ours.len(), 6, "{ours:?}");
    // Task 3 keeps no registry: the scripts wrote no /nodes file.
    assert_eq!(nodes(&s, "ha"), "");
}
