//! The real binary as a child subreaper and as PID 1 of a new PID namespace
//! (`unshare --pid --fork --mount-proc`): exit codes, reaping, signals, restarts, stop order,
//! grace, readiness and bad configurations.

#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Run, code, config, eventually, muster};

const LONG: Duration = Duration::from_secs(20);

fn single(args: &[&str]) -> i32 {
    let mut all = vec!["--"];
    all.extend_from_slice(args);
    let mut run = Run::start(muster(), &all);
    code(run.wait(LONG))
}

fn in_pid_namespace(args: &[&str]) -> Run {
    let mut all = vec!["--pid", "--fork", "--mount-proc", "--kill-child", muster()];
    all.extend_from_slice(args);
    Run::start("unshare", &all)
}

#[test]
fn exit_codes_follow_tini_rules() {
    assert_eq!(single(&["true"]), 0);
    assert_eq!(single(&["sh", "-c", "exit 3"]), 3);
    assert_eq!(single(&["sh", "-c", "exit 255"]), 255);
    assert_eq!(single(&["sh", "-c", "kill -9 $$"]), 137);
    assert_eq!(single(&["sh", "-c", "kill -TERM $$"]), 143);
    assert_eq!(single(&["/nonexistent/program"]), 127);
    assert_eq!(single(&["/etc/passwd"]), 126, "not executable");
    assert_eq!(single(&["/"]), 126, "a directory");
}

#[test]
fn sigterm_is_forwarded_and_gives_143() {
    let mut run = Run::start(muster(), &["--", "sleep", "30"]);
    eventually("sleep to start", LONG, || {
        common::first_child(run.child.id()).is_some()
    });
    run.signal(libc::SIGTERM);
    assert_eq!(code(run.wait(LONG)), 143);
    assert!(run.started.elapsed() < Duration::from_secs(5));
}

#[test]
fn signals_are_forwarded_to_the_main_service() {
    let script = r#"
for s in HUP USR1 USR2 WINCH QUIT; do trap "echo got-$s" $s; done
trap 'echo got-TERM; exit 0' TERM
echo armed
while :; do sleep 0.02; done
"#;
    let mut run = Run::start(muster(), &["--", "bash", "-c", script]);
    run.wait_line("armed", LONG);
    for (sig, name) in [
        (libc::SIGHUP, "HUP"),
        (libc::SIGUSR1, "USR1"),
        (libc::SIGUSR2, "USR2"),
        (libc::SIGWINCH, "WINCH"),
        (libc::SIGQUIT, "QUIT"),
    ] {
        run.signal(sig);
        run.wait_line(&format!("got-{name}"), LONG);
    }
    run.signal(libc::SIGTERM);
    run.wait_line("got-TERM", LONG);
    assert_eq!(code(run.wait(LONG)), 0, "main exited 0 after its TERM trap");
}

/// The main service makes 1,000 orphans that exit at once, then checks that none of its
/// siblings under muster stays a zombie.
const ORPHANS: &str = r#"
i=0
while [ $i -lt 1000 ]; do sh -c 'true & true &' ; i=$((i+1)); done
for try in $(seq 500); do
  z=0
  for st in /proc/[0-9]*/stat; do
    set -- $(cat "$st" 2>/dev/null | sed 's/.*) //')
    [ "$1" = Z ] && [ "$2" = "$PPID" ] && z=$((z+1))
  done
  if [ $z -eq 0 ]; then echo "no zombies"; exit 0; fi
  sleep 0.01
done
echo "zombies left: $z"; exit 1
"#;

#[test]
fn a_thousand_orphans_are_reaped_as_subreaper() {
    let mut run = Run::start(muster(), &["--", "sh", "-c", ORPHANS]);
    assert_eq!(code(run.wait(Duration::from_secs(60))), 0, "{}", run.text());
    run.wait_line("no zombies", LONG);
}

#[test]
fn a_thousand_orphans_are_reaped_as_pid1() {
    let mut run = in_pid_namespace(&["--", "sh", "-c", ORPHANS]);
    assert_eq!(code(run.wait(Duration::from_secs(60))), 0, "{}", run.text());
    run.wait_line("no zombies", LONG);
}

#[test]
fn as_pid1_a_grandchild_gets_its_grace_after_the_main_exits() {
    // The grandchild needs 0.5 s to shut down after SIGTERM; single-child inits kill it at once.
    let script = r#"
sh -c 'trap "sleep 0.5; echo grandchild-done; exit 0" TERM; echo grandchild-up; while :; do sleep 0.05; done' &
sleep 0.3
exit 7
"#;
    let mut run = in_pid_namespace(&["--", "sh", "-c", script]);
    run.wait_line("grandchild-up", LONG);
    assert_eq!(code(run.wait(LONG)), 7);
    assert!(run.line_time("grandchild-done").is_some(), "{}", run.text());
}

#[test]
fn as_pid1_sigterm_stops_everything_with_the_main_code() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[services.side]
command = ["sh", "-c", "trap 'test -e {d}/app-done && echo side-stopped-after-app; exit 0' TERM; echo side-up; while :; do sleep 0.05; done"]
[services.app]
main = true
depends_on = ["side"]
command = ["sh", "-c", "trap 'touch {d}/app-done; exit 0' TERM; echo app-up; while :; do sleep 0.05; done"]
"#
        ),
    );
    let mut run = in_pid_namespace(&["--config", cfg.to_str().unwrap()]);
    run.wait_line("app-up", LONG);
    run.wait_line("side-up", LONG);
    let pid1 = common::first_child(run.child.id()).expect("muster runs as PID 1's host pid");
    common::signal(pid1, libc::SIGTERM);
    assert_eq!(code(run.wait(LONG)), 0);
    run.wait_line("side-stopped-after-app", LONG);
}

#[test]
fn stop_order_is_reverse_dependency_and_grace_ends_in_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[supervisor]
stop_timeout = "5s"
[services.db]
command = ["sh", "-c", "trap 'test -e {d}/app-done && echo db-stopped-after-app; exit 0' TERM; echo db-up; while :; do sleep 0.05; done"]
[services.stubborn]
command = ["sh", "-c", "trap '' TERM; echo stubborn-up; while :; do sleep 0.05; done"]
stop_grace = "500ms"
[services.app]
main = true
depends_on = ["db"]
command = ["sh", "-c", "trap 'sleep 0.2; touch {d}/app-done; exit 0' TERM; echo app-up; while :; do sleep 0.05; done"]
"#
        ),
    );
    let mut run = Run::start(muster(), &["--config", cfg.to_str().unwrap()]);
    run.wait_line("[app] app-up", LONG);
    run.wait_line("[db] db-up", LONG);
    run.wait_line("[stubborn] stubborn-up", LONG);
    let asked = std::time::Instant::now();
    run.signal(libc::SIGTERM);
    assert_eq!(code(run.wait(LONG)), 0, "the main service exited 0");
    let took = asked.elapsed();
    run.wait_line("[db] db-stopped-after-app", LONG);
    assert!(run.text().contains("grace over, killing"), "{}", run.text());
    assert!(
        took >= Duration::from_millis(500),
        "the stubborn service had its grace: {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "within the stop timeout: {took:?}"
    );
}

#[test]
fn a_critical_crash_loop_backs_off_then_gives_up_with_the_service_code() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        r#"
[services.flaky]
command = ["sh", "-c", "echo flaky-start $(date +%s%N); exit 2"]
restart_delay = "100ms"
crash_limit = 3
critical = true
[services.app]
main = true
command = ["sleep", "30"]
"#,
    );
    let mut run = Run::start(muster(), &["--config", cfg.to_str().unwrap()]);
    assert_eq!(code(run.wait(LONG)), 2, "{}", run.text());
    // The service prints its own start times: output delivery delays do not matter.
    let text = run.text();
    let starts: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split("flaky-start ").nth(1))
        .map(|t| t.trim().parse().unwrap())
        .collect();
    assert_eq!(starts.len(), 4, "one start and three restarts:\n{text}");
    for (i, pair) in starts.windows(2).enumerate() {
        let gap = Duration::from_nanos(pair[1] - pair[0]);
        let floor = Duration::from_millis(100 << i);
        assert!(
            gap >= floor,
            "restart {} came after {gap:?}, before {floor:?}",
            i + 1
        );
    }
    assert!(run.text().contains("crash loop, giving up"));
}

#[test]
fn restart_keeps_the_output_stream() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        r#"
[services.counter]
command = ["sh", "-c", "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; printf 'run %s partial' $n; [ $n -ge 3 ] && exit 0; exit 1"]
working_dir = "."
restart = "on-failure"
restart_delay = "50ms"
main = true
"#,
    );
    let mut cmd = std::process::Command::new(muster());
    cmd.args(["--config", cfg.to_str().unwrap()])
        .current_dir(dir.path());
    let mut run = Run::start_cmd(&mut cmd);
    assert_eq!(code(run.wait(LONG)), 0, "{}", run.text());
    for n in 1..=3 {
        assert_eq!(
            run.count(&format!("[counter] run {n} partial")),
            1,
            "{}",
            run.text()
        );
    }
}

#[test]
fn readiness_orders_the_start() {
    // Each dependency leaves a mark before it reports ready; the main service checks the marks
    // itself when it starts, so the order is proven by the processes, not by output timing.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[services.notifier]
command = ["sh", "-c", "sleep 0.3; touch {d}/notified; echo >&3; exec sleep 30"]
ready = {{ notify_fd = 3 }}
[services.checked]
command = ["sh", "-c", "sleep 0.3; touch {d}/checked; exec sleep 30"]
ready = {{ exec = ["test", "-e", "{d}/checked"] }}
ready_interval = "20ms"
[services.app]
main = true
depends_on = ["notifier", "checked"]
command = ["sh", "-c", "test -e {d}/notified && test -e {d}/checked && echo both-ready && exit 5; echo too-early; exit 1"]
"#
        ),
    );
    let mut run = Run::start(muster(), &["--config", cfg.to_str().unwrap()]);
    assert_eq!(code(run.wait(LONG)), 5, "{}", run.text());
    run.wait_line("both-ready", LONG);
}

#[test]
fn tcp_and_http_readiness() {
    let port = |_| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (web, gate) = (port(0), port(1));
    let dir = tempfile::tempdir().unwrap();
    // web answers HTTP after 0.3 s; gate checks at its start that web answers, then listens
    // after 0.3 s; app checks at its start that gate accepts connections.
    let web_cmd = format!(
        "import http.server,time\ntime.sleep(0.3)\nhttp.server.HTTPServer(('127.0.0.1',{web}),http.server.SimpleHTTPRequestHandler).serve_forever()"
    );
    let gate_cmd = format!(
        "import socket,time,urllib.request\nurllib.request.urlopen('http://127.0.0.1:{web}/',timeout=2)\nprint('web-answered-before-gate', flush=True)\ntime.sleep(0.3)\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1',{gate})); s.listen()\nwhile True: s.accept()[0].close()"
    );
    let app_cmd = format!(
        "import socket\nsocket.create_connection(('127.0.0.1',{gate}),timeout=2).close()\nprint('gate-open-before-app', flush=True)"
    );
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[services.web]
command = ["python3", "-c", {web_cmd:?}]
ready = {{ http = "http://127.0.0.1:{web}/" }}
[services.gate]
depends_on = ["web"]
command = ["python3", "-c", {gate_cmd:?}]
ready = {{ tcp = "127.0.0.1:{gate}" }}
[services.app]
main = true
depends_on = ["gate"]
command = ["python3", "-c", {app_cmd:?}]
"#
        ),
    );
    let mut run = Run::start(muster(), &["--config", cfg.to_str().unwrap()]);
    assert_eq!(code(run.wait(LONG)), 0, "{}", run.text());
    run.wait_line("web-answered-before-gate", LONG);
    run.wait_line("gate-open-before-app", LONG);
}

#[test]
fn not_ready_in_time_stops_the_container() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        r#"
[services.app]
main = true
command = ["sleep", "30"]
ready = { exec = ["false"] }
ready_timeout = "300ms"
"#,
    );
    let mut run = Run::start(muster(), &["--config", cfg.to_str().unwrap()]);
    assert_eq!(code(run.wait(LONG)), 1);
    assert!(run.text().contains("not ready in time"), "{}", run.text());
}

#[test]
fn bad_config_names_the_field_exits_64_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[services.app]
main = true
command = ["touch", "{}"]
restart = "sometimes"
stop_grace = "forever"
[services.other]
comand = ["x"]
"#,
            marker.display()
        ),
    );
    for args in [
        vec!["--config", cfg.to_str().unwrap()],
        vec!["check-config", cfg.to_str().unwrap()],
    ] {
        let mut run = Run::start(muster(), &args);
        assert_eq!(code(run.wait(LONG)), 64);
        let text = run.text();
        for needle in [
            "services.app.restart: \"sometimes\" is not one of",
            "services.app.stop_grace: \"forever\" is not a duration",
            "services.other.comand: unknown key",
            "services.other.command: is missing",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
    }
    assert!(!marker.exists(), "nothing was started");
    let mut run = Run::start(muster(), &["--config", "/nonexistent/muster.toml"]);
    assert_eq!(code(run.wait(LONG)), 64);
    assert!(run.text().contains("cannot read /nonexistent/muster.toml"));
}

#[test]
fn environment_is_passed_through_with_additions() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        r#"
[services.app]
main = true
command = ["sh", "-c", "echo \"env $FROM_PARENT $ADDED\""]
environment = { ADDED = "yes" }
"#,
    );
    let mut cmd = std::process::Command::new(muster());
    cmd.args(["--config", cfg.to_str().unwrap()])
        .env("FROM_PARENT", "inherited");
    let mut run = Run::start_cmd(&mut cmd);
    assert_eq!(code(run.wait(LONG)), 0);
    run.wait_line("[app] env inherited yes", LONG);
}

#[test]
fn inherited_signal_state_is_restored_in_the_child() {
    // Like tini's sigconf test: the parent ignores SIGINT and SIGTTOU and blocks SIGTTIN.
    let py = format!(
        "import os,signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nsignal.signal(signal.SIGTTOU, signal.SIG_IGN)\nsignal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTTIN])\nos.execv({m:?}, [{m:?}, '--', 'cat', '/proc/self/status'])",
        m = muster()
    );
    let mut run = Run::start("python3", &["-c", &py]);
    assert_eq!(code(run.wait(LONG)), 0);
    let text = run.text();
    let field = |name: &str| {
        let line = text.lines().find(|l| l.starts_with(name)).expect(name);
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    let bit = |sig: i32| 1u64 << (sig - 1);
    assert_ne!(
        field("SigIgn:") & bit(libc::SIGINT),
        0,
        "SIGINT still ignored"
    );
    assert_ne!(
        field("SigIgn:") & bit(libc::SIGTTOU),
        0,
        "SIGTTOU still ignored"
    );
    assert_ne!(
        field("SigBlk:") & bit(libc::SIGTTIN),
        0,
        "SIGTTIN still blocked"
    );
}

#[test]
fn each_service_leads_its_own_process_group() {
    let mut run = Run::start(
        muster(),
        &[
            "--",
            "sh",
            "-c",
            "ps_pgid=$(cut -d' ' -f5 /proc/$$/stat); echo \"pid $$ pgid $ps_pgid\"",
        ],
    );
    assert_eq!(code(run.wait(LONG)), 0);
    let text = run.text();
    let line = text
        .lines()
        .find(|l| l.starts_with("pid "))
        .expect("pid line");
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f[1], f[3], "{line}");
}

#[test]
fn user_switch_drops_root_groups() {
    // Runs as root in CI and here; as another user the switch itself would be refused.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test needs root (tests/run runs as root on the project's machines)");
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        r#"
[services.app]
main = true
user = "nobody"
command = ["sh", "-c", "echo \"ids $(id -u) $(id -g) $(id -G)\""]
"#,
    );
    let mut run = Run::start(muster(), &["--config", cfg.to_str().unwrap()]);
    assert_eq!(code(run.wait(LONG)), 0, "{}", run.text());
    let text = run.text();
    let line = text.lines().find(|l| l.contains("ids ")).expect("ids line");
    let ids: Vec<&str> = line
        .split("ids ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(ids[0], "65534", "{line}");
    assert!(!ids[1..].contains(&"0"), "no root group left: {line}");
}

#[test]
fn under_a_terminal_the_main_command_gets_the_foreground() {
    // As with `docker run -it`: muster leads the session of a pseudo-terminal; its child must
    // own the terminal's foreground so that Ctrl-C and job control reach it.
    let py = format!(
        r#"
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv({m:?}, [{m:?}, "--", "python3", "-c",
        "import os; print('foreground', os.tcgetpgrp(0) == os.getpgrp(), flush=True)"])
out = b""
while True:
    try:
        chunk = os.read(fd, 1024)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
print("status", os.waitstatus_to_exitcode(status))
"#,
        m = muster()
    );
    let mut run = Run::start("python3", &["-c", &py]);
    assert_eq!(code(run.wait(LONG)), 0);
    run.wait_line("foreground True", LONG);
    run.wait_line("status 0", LONG);
}
