//! The container's policy with the real binary and real processes: a main service keeps
//! serving through a side service's crash loop, `crash_limit`, `restart = "never"`, oneshot
//! ordering, a daemonizing service, and check-config agreeing with startup.

#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::http::Client;
use common::{Run, code, config, eventually, free_port, muster};

const LONG: Duration = Duration::from_secs(20);

fn run_config(cfg: &std::path::Path) -> Run {
    Run::start(muster(), &["--config", cfg.to_str().unwrap()])
}

/// VmRSS of a process, in kB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// Processes whose command line is exactly `argv`.
fn processes(argv: &[&str]) -> Vec<i32> {
    let want = argv.join("\0") + "\0";
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes())
        })
        .collect()
}

#[test]
fn the_main_service_serves_throughout_a_side_crash_loop() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[services.web]
main = true
command = ["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1", "--directory", "{d}"]
ready = {{ tcp = "127.0.0.1:{port}" }}
[services.forwarder]
command = ["sh", "-c", "echo fwd-start; exit 1"]
restart_delay = "50ms"
restart_delay_max = "400ms"
crash_limit = 0
[services.flaky]
command = ["sh", "-c", "echo flaky-start; exit 3"]
restart_delay = "50ms"
crash_limit = 2
"#,
            d = dir.path().display()
        ),
    );
    std::fs::write(dir.path().join("index.html"), "hello").unwrap();
    let mut run = run_config(&cfg);
    run.wait_line("ready", LONG);
    let pid = run.child.id();
    let rss_before = rss_kb(pid);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut client = Client::new(addr);
    let (mut ok, mut failed) = (0u32, 0u32);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        // http.server answers HTTP/1.0 and closes: one connection per request.
        client.reconnect();
        match client.get("/index.html") {
            Ok(r) if r.status == 200 => ok += 1,
            _ => failed += 1,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let rss_after = rss_kb(pid);
    let starts = run.count("[forwarder] fwd-start");
    let reports = run
        .text()
        .lines()
        .filter(|l| l.contains("forwarder") && l.contains("restarting"))
        .count();
    eprintln!(
        "policy figures: requests answered {ok}, failed {failed}; forwarder starts {starts}, \
         restart lines {reports}; muster RSS {rss_before} kB before, {rss_after} kB after"
    );
    assert_eq!(failed, 0, "every request answered");
    assert!(ok > 100, "{ok} requests answered");
    // 50, 100, 200, 400 ms and then 400 ms again and again: ~13 starts in 5 s.
    assert!(starts >= 8, "still restarted: {starts} starts");
    assert_eq!(reports, 4, "one line per back-off step, not per restart");
    assert_eq!(
        run.count("[flaky] flaky-start"),
        3,
        "two restarts, then given up"
    );
    assert!(run.text().contains("left stopped, the container goes on"));
    assert!(run.child.try_wait().unwrap().is_none(), "muster still runs");
    run.signal(libc::SIGTERM);
    let c = code(run.wait(LONG));
    assert!(c == 143 || c == 0, "the main service's own end: {c}");
}

#[test]
fn side_services_that_end_with_0_do_not_end_the_container() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        r#"
[services.app]
main = true
command = ["sh", "-c", "echo app-up; trap 'exit 0' TERM; while :; do sleep 0.05; done"]
[services.report]
restart = "never"
command = ["sh", "-c", "echo report-done; exit 0"]
[services.warmup]
command = ["sh", "-c", "echo warmup-done; exit 0"]
restart_delay = "50ms"
restart_delay_max = "100ms"
"#,
    );
    let mut run = run_config(&cfg);
    run.wait_line("[report] report-done", LONG);
    // The issue's case gave up after 6 quick exits: wait for more than that.
    eventually("warmup restarted 8 times", LONG, || {
        run.count("[warmup] warmup-done") >= 8
    });
    assert_eq!(run.count("[report] report-done"), 1, "never restarted");
    assert!(
        run.text()
            .contains("set oneshot = true or restart = \"never\"")
    );
    assert!(run.child.try_wait().unwrap().is_none(), "muster still runs");
    run.signal(libc::SIGTERM);
    assert_eq!(code(run.wait(LONG)), 0, "the main service's code");
}

#[test]
fn a_oneshot_completes_before_its_dependents_and_a_failed_one_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[services.migrate]
oneshot = true
command = ["sh", "-c", "sleep 0.5; echo v2 > {d}/schema; echo migrate-done"]
[services.app]
main = true
depends_on = ["migrate"]
command = ["sh", "-c", "echo app-sees-$(cat {d}/schema); trap 'exit 0' TERM; while :; do sleep 0.05; done"]
"#
        ),
    );
    let mut run = run_config(&cfg);
    run.wait_line("[app] app-sees-v2", LONG);
    let done = run.line_time("migrate-done").unwrap();
    assert!(done <= run.line_time("app-sees").unwrap());
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(run.count("migrate-done"), 1, "run once");
    run.signal(libc::SIGTERM);
    assert_eq!(code(run.wait(LONG)), 0);

    let cfg = config(
        dir.path(),
        r#"
[services.migrate]
oneshot = true
command = ["sh", "-c", "echo migrate-fails; exit 3"]
[services.app]
main = true
depends_on = ["migrate"]
command = ["sh", "-c", "echo app-started; sleep 30"]
"#,
    );
    let mut run = run_config(&cfg);
    assert_eq!(code(run.wait(LONG)), 3, "the oneshot's code");
    let text = run.text();
    assert!(text.contains("oneshot migrate failed"), "{text}");
    assert!(!text.contains("app-started"), "{text}");
}

#[test]
fn a_daemonizing_service_is_reported_once_and_not_started_again() {
    let dir = tempfile::tempdir().unwrap();
    // Two daemons: one stays in the service's process group, one leaves it (setsid).
    let cfg = config(
        dir.path(),
        r#"
[services.app]
main = true
command = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"]
[services.grouped]
command = ["sh", "-c", "sleep 307 & echo forked"]
restart_delay = "50ms"
[services.detached]
command = ["sh", "-c", "setsid sleep 308 & sleep 0.1; echo forked"]
restart_delay = "50ms"
"#,
    );
    let mut run = run_config(&cfg);
    run.wait_line("grouped daemonized: run it in the foreground", LONG);
    run.wait_line("detached daemonized: run it in the foreground", LONG);
    std::thread::sleep(Duration::from_secs(2));
    let grouped = processes(&["sleep", "307"]);
    let detached = processes(&["sleep", "308"]);
    eprintln!(
        "policy figures: daemon copies after 2 s: grouped {}, detached {}",
        grouped.len(),
        detached.len()
    );
    assert_eq!(grouped.len(), 1, "one copy of the daemon");
    assert_eq!(detached.len(), 1, "one copy of the daemon");
    assert_eq!(run.count("daemonized: run it in the foreground"), 2);
    assert_eq!(run.count("[grouped] forked"), 1);
    assert!(run.child.try_wait().unwrap().is_none(), "muster still runs");
    run.signal(libc::SIGTERM);
    assert_eq!(code(run.wait(LONG)), 0);
    eventually("the daemons swept at the stop", LONG, || {
        processes(&["sleep", "307"]).is_empty() && processes(&["sleep", "308"]).is_empty()
    });
}

#[test]
fn check_config_fails_where_startup_fails() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let base = format!(
        r#"
[services.app]
main = true
command = ["sleep", "30"]
[haproxy]
config = "{d}/haproxy.cfg"
master_socket = "{d}/master.sock"
"#
    );
    let missing = format!("{base}template = \"{d}/missing.hbs\"\n");
    std::fs::write(dir.path().join("bad.hbs"), "global\n{{#each servers}}\n").unwrap();
    let broken = format!("{base}template = \"{d}/bad.hbs\"\n");
    let side = "[services.app]\nmain = true\ncommand = [\"sleep\", \"30\"]\n[services.side]\n";
    let no_program = format!("{side}command = [\"muster-no-such-program\"]\n");
    let no_dir = format!("{side}command = [\"sleep\", \"30\"]\nworking_dir = \"{d}/gone\"\n");
    let relative = format!("{side}command = [\"./run.sh\"]\nworking_dir = \"{d}\"\n");
    for (text, needle) in [
        (missing, "haproxy.template: cannot read"),
        (broken, "haproxy.template: does not compile"),
        (
            no_program,
            "services.side.command: muster-no-such-program is not found in PATH",
        ),
        (no_dir, "services.side.working_dir: cannot use"),
        (relative, "services.side.command: cannot use ./run.sh"),
    ] {
        let cfg = config(dir.path(), &text);
        let mut check = Run::start(muster(), &["check-config", cfg.to_str().unwrap()]);
        assert_eq!(code(check.wait(LONG)), 64, "{}", check.text());
        let mut start = run_config(&cfg);
        assert_eq!(code(start.wait(LONG)), 64, "{}", start.text());
        let line = |r: &Run| {
            r.text()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::trim)
                .map(str::to_owned)
        };
        let checked = line(&check).unwrap_or_else(|| panic!("{}", check.text()));
        assert_eq!(Some(checked), line(&start), "the same problem line");
    }
}
