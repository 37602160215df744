//! What becomes of every signal sent to the real binary, as PID 1 of a new PID namespace and
//! as a subreaper (not PID 1), against a command that records what it receives; job control
//! under a pseudo-terminal; and the stop knobs and flags tini and dumb-init users reach for.
//!
//! Every run is inside a new PID namespace (`unshare --pid --fork --mount-proc --kill-child`),
//! so whatever a failing test leaves is killed with the namespace. In the subreaper runs a
//! small Python reaper is PID 1 and muster its child.

#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Run, code, eventually, first_child, muster};

const LONG: Duration = Duration::from_secs(20);

/// Debian's Python, by its path: a `python3` found first on PATH may be a wrapper script
/// (pyenv's shims) that adds processes between muster and the program.
const PYTHON: &str = "/usr/bin/python3";

/// Records every signal it can catch (Python cannot catch 32 and 33, which glibc keeps) as
/// `got N;`, and exits 0 on SIGTERM or SIGINT.
const RECORDER: &str = r#"
import os, signal
def got(n, frame):
    os.write(1, b"got %d;\n" % n)
    if n in (signal.SIGTERM, signal.SIGINT):
        os._exit(0)
for n in range(1, 65):
    if n not in (9, 19, 32, 33):
        signal.signal(n, got)
os.write(1, b"ready;\n")
while True:
    signal.pause()
"#;

/// PID 1 of the namespace for the subreaper runs: starts muster, reaps, and says how muster
/// ended (an exit code, or `muster killed by N` and 99).
const REAPER: &str = r#"
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
while True:
    p, status = os.waitpid(-1, 0)
    if p == pid:
        break
if os.WIFSIGNALED(status):
    print("muster killed by %d" % os.WTERMSIG(status), flush=True)
    sys.exit(99)
sys.exit(os.WEXITSTATUS(status))
"#;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Pid1,
    Subreaper,
}

/// muster with `args` in a new PID namespace, as PID 1 or as the reaper's child.
fn start(mode: Mode, args: &[&str]) -> Run {
    start_env(mode, args, &[])
}

fn start_env(mode: Mode, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut all = vec!["--pid", "--fork", "--mount-proc", "--kill-child"];
    if mode == Mode::Subreaper {
        all.extend([PYTHON, "-c", REAPER]);
    }
    all.push(muster());
    all.extend_from_slice(args);
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(&all).envs(env.iter().copied());
    Run::start_cmd(&mut cmd)
}

/// muster's pid as this test sees it.
fn muster_pid(run: &Run, mode: Mode) -> i32 {
    let mut pid = 0;
    eventually("muster to start", LONG, || {
        let first = first_child(run.child.id());
        pid = match (mode, first) {
            (Mode::Pid1, Some(p)) => p,
            (Mode::Subreaper, Some(p)) => first_child(p as u32).unwrap_or(0),
            (_, None) => 0,
        };
        pid > 0
    });
    pid
}

/// The state letter of a process (`S`, `R`, `T` stopped...), `?` when it is gone.
fn state(pid: i32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.to_owned()))
        .and_then(|r| r.trim_start().chars().next())
        .unwrap_or('?')
}

/// Waits until `needle` was seen `n` times.
fn wait_count(run: &Run, needle: &str, n: usize) {
    let deadline = Instant::now() + LONG;
    while run.count(needle) < n {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not seen {n} times:\n{}",
            run.text()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn got(sig: i32) -> String {
    format!("got {sig};")
}

/// Signals the recorder must receive once each, muster running on: all it can catch but
/// KILL/STOP (uncatchable), CHLD (never forwarded), TERM/INT (the stop), the job-control ones
/// and CONT (checked apart), and USR1/USR2 (used as markers).
fn plain_signals() -> Vec<i32> {
    let apart = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGCHLD,
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGCONT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        32,
        33,
    ];
    (1..=64).filter(|s| !apart.contains(s)).collect()
}

fn every_signal(mode: Mode) {
    let mut run = start(mode, &["--", PYTHON, "-c", RECORDER]);
    run.wait_line("ready;", LONG);
    let pid = muster_pid(&run, mode);
    let running = |why: &str| {
        let s = state(pid);
        assert!(
            s == 'S' || s == 'R',
            "muster is {s:?} after {why}:\n{}",
            run.text()
        );
    };
    // Every catchable signal is forwarded, faults and real-time signals included, and muster
    // runs on (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP and SIGSYS sent by kill(2)).
    for sig in plain_signals() {
        common::signal(pid, sig);
        run.wait_line(&got(sig), LONG);
        running(&format!("signal {sig}"));
    }
    // SIGCHLD is not forwarded: by the time the next signal arrives, it would have been.
    common::signal(pid, libc::SIGCHLD);
    common::signal(pid, libc::SIGUSR2);
    run.wait_line(&got(libc::SIGUSR2), LONG);
    assert_eq!(run.count(&got(libc::SIGCHLD)), 0, "{}", run.text());
    // Job control: forwarded, then muster stops until SIGCONT (as a subreaper), or runs on
    // (as PID 1: the kernel does not let PID 1 stop itself).
    for (i, sig) in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU]
        .into_iter()
        .enumerate()
    {
        common::signal(pid, sig);
        run.wait_line(&got(sig), LONG);
        match mode {
            Mode::Subreaper => {
                eventually("muster to stop", LONG, || state(pid) == 'T');
            }
            Mode::Pid1 => {
                common::signal(pid, libc::SIGUSR1);
                wait_count(&run, &got(libc::SIGUSR1), i + 1);
            }
        }
        common::signal(pid, libc::SIGCONT);
        wait_count(&run, &got(libc::SIGCONT), i + 1);
        running(&format!("signal {sig} and SIGCONT"));
    }
    // SIGTERM: forwarded as the stop; the recorder exits 0, so does muster.
    common::signal(pid, libc::SIGTERM);
    assert_eq!(code(run.wait(LONG)), 0, "{}", run.text());
    for sig in plain_signals().into_iter().chain([21, 22, 20, 15]) {
        assert_eq!(run.count(&got(sig)), 1, "signal {sig}:\n{}", run.text());
    }
}

#[test]
fn every_signal_has_its_fate_as_pid1() {
    every_signal(Mode::Pid1);
}

#[test]
fn every_signal_has_its_fate_as_a_subreaper() {
    every_signal(Mode::Subreaper);
}

#[test]
fn sigint_stops_with_the_command_getting_sigint() {
    for mode in [Mode::Pid1, Mode::Subreaper] {
        let mut run = start(mode, &["--", PYTHON, "-c", RECORDER]);
        run.wait_line("ready;", LONG);
        common::signal(muster_pid(&run, mode), libc::SIGINT);
        assert_eq!(code(run.wait(LONG)), 0, "{mode:?}: {}", run.text());
        assert_eq!(run.count(&got(libc::SIGINT)), 1, "{mode:?}: {}", run.text());
    }
}

#[test]
fn the_c_library_signals_32_and_33_reach_the_command_too() {
    // Python cannot catch them, `sleep` does not: it dies of them, and muster exits by itself
    // with 128+N (it is not killed: as PID 1 it would not even be reached without a handler).
    for mode in [Mode::Pid1, Mode::Subreaper] {
        for sig in [32, 33] {
            let mut run = start(mode, &["--", "sleep", "30"]);
            let pid = muster_pid(&run, mode);
            eventually("sleep to start", LONG, || first_child(pid as u32).is_some());
            common::signal(pid, sig);
            let status = run.wait(LONG);
            assert_eq!(status.code(), Some(128 + sig), "{mode:?}: {}", run.text());
        }
    }
}

/// Under a pseudo-terminal, as `docker run -it` or a shell gives one, the way dumb-init's
/// tests drive it: SIGTSTP to muster reaches the command and stops muster (its parent sees it
/// stopped); SIGCONT continues both. In between the script gives the terminal's foreground to
/// muster, as a shell's `fg` does; muster hands it back to the command before the SIGCONT.
const PTY: &str = r#"
import os, pty, select, signal, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(MUSTER, [MUSTER, "--", PYTHON, "-c", CHILD])
out = b""
def say(*words):
    print("test:", *words, flush=True)
def read_until(needle, limit=10.0):
    global out
    end = time.time() + limit
    while needle not in out:
        if time.time() > end:
            say("timed out waiting for", needle, "in", out)
            os.kill(pid, signal.SIGKILL)
            sys.exit(3)
        if select.select([fd], [], [], 0.05)[0]:
            try:
                chunk = os.read(fd, 1024)
            except OSError as e:
                say("pty closed:", e)
                return
            # Complete lines only: a chunk can end in the middle of one.
            start = out.rfind(b"\n") + 1
            out += chunk
            end = out.rfind(b"\n") + 1
            for line in out[start:end].decode(errors="replace").splitlines():
                if line.strip():
                    say("pty:", line.strip())
def wait_for(what, flags, test, limit=10.0):
    end = time.time() + limit
    while time.time() < end:
        p, status = os.waitpid(pid, flags | os.WNOHANG)
        if p == pid and test(status):
            return status
        time.sleep(0.01)
    say("muster did not", what)
    os.kill(pid, signal.SIGKILL)
    sys.exit(4)
read_until(b"ready")
os.kill(pid, signal.SIGUSR1)
read_until(b"gave the terminal to muster")
os.kill(pid, signal.SIGTSTP)
read_until(b"got TSTP")
wait_for("stop", os.WUNTRACED, os.WIFSTOPPED)
say("muster stopped")
os.kill(pid, signal.SIGCONT)
read_until(b"got CONT")
wait_for("continue", os.WCONTINUED, os.WIFCONTINUED)
say("muster continued")
os.kill(pid, signal.SIGTERM)
read_until(b"got TERM")
status = wait_for("exit", 0, os.WIFEXITED)
say("muster exited", os.WEXITSTATUS(status))
"#;

/// The command under muster in the pty test: records TSTP and CONT, with whether it owns the
/// terminal's foreground, and on SIGUSR1 gives the foreground to muster's group.
const PTY_CHILD: &str = r#"
import os, signal, sys
def fg():
    return os.tcgetpgrp(0) == os.getpgrp()
def on(n, frame):
    name = signal.Signals(n).name[3:]
    if n == signal.SIGUSR1:
        os.tcsetpgrp(0, os.getpgid(os.getppid()))
        os.write(1, b"gave the terminal to muster\n")
        return
    os.write(1, b"got %s foreground %s\n" % (name.encode(), str(fg()).encode()))
    if n == signal.SIGTERM:
        sys.exit(0)
for n in (signal.SIGTSTP, signal.SIGCONT, signal.SIGTERM, signal.SIGUSR1):
    signal.signal(n, on)
signal.signal(signal.SIGTTOU, signal.SIG_IGN)
os.write(1, b"ready foreground %s\n" % str(fg()).encode())
while True:
    signal.pause()
"#;

#[test]
fn under_a_pty_sigtstp_and_sigcont_stop_and_continue_muster_with_its_command() {
    let script = PTY
        .replace("MUSTER", &format!("{:?}", muster()))
        .replace("PYTHON", &format!("{PYTHON:?}"))
        .replace("CHILD", &format!("{PTY_CHILD:?}"));
    let mut cmd = std::process::Command::new("unshare");
    cmd.args([
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        PYTHON,
        "-c",
        &script,
    ]);
    let mut run = Run::start_cmd(&mut cmd);
    assert_eq!(code(run.wait(LONG)), 0, "{}", run.text());
    for line in [
        "ready foreground True",
        "got TSTP foreground False",
        "muster stopped",
        "got CONT foreground True",
        "muster continued",
        "got TERM",
        "muster exited 0",
    ] {
        run.wait_line(line, LONG);
    }
}

#[test]
fn a_command_needing_8s_to_stop_exits_0_with_stop_timeout_9s() {
    // tini and dumb-init let it finish (exit 0 at 8 s); muster used to kill it at 5 s.
    let script = r#"trap 'sleep 8; exit 0' TERM; echo armed; while :; do sleep 0.1; done"#;
    let mut run = start(
        Mode::Subreaper,
        &["--stop-timeout", "9s", "--", "sh", "-c", script],
    );
    run.wait_line("armed", LONG);
    let pid = muster_pid(&run, Mode::Subreaper);
    let asked = Instant::now();
    common::signal(pid, libc::SIGTERM);
    assert_eq!(code(run.wait(LONG)), 0, "{}", run.text());
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_secs(8) && took < Duration::from_millis(8500),
        "exited {took:?} after SIGTERM"
    );
}

#[test]
fn rewrite_15_3_sends_sigquit_and_e_143_exits_0() {
    // dumb-init's -r 15:3 (docker stop becomes nginx's graceful SIGQUIT).
    let script = r#"trap 'echo got-QUIT; exit 0' QUIT; trap 'echo got-TERM; exit 1' TERM; echo armed; while :; do sleep 0.05; done"#;
    let mut run = start(Mode::Pid1, &["-r", "15:3", "sh", "-c", script]);
    run.wait_line("armed", LONG);
    common::signal(muster_pid(&run, Mode::Pid1), libc::SIGTERM);
    assert_eq!(code(run.wait(LONG)), 0, "{}", run.text());
    run.wait_line("got-QUIT", LONG);
    assert_eq!(run.count("got-TERM"), 0, "{}", run.text());
    // tini's -e 143: a JVM-like command killed by SIGTERM counts as success.
    for (args, expect) in [
        (vec!["-e", "143", "--", "sleep", "30"], 0),
        (vec!["--", "sleep", "30"], 143),
    ] {
        let mut run = start(Mode::Subreaper, &args);
        let pid = muster_pid(&run, Mode::Subreaper);
        eventually("sleep to start", LONG, || first_child(pid as u32).is_some());
        common::signal(pid, libc::SIGTERM);
        assert_eq!(code(run.wait(LONG)), expect, "{args:?}: {}", run.text());
    }
}

/// The command leads a group with a second shell in it; both record SIGUSR1.
const PAIR: &str = r#"
sh -c 'trap "echo inner-USR1" USR1; echo inner-up; while :; do sleep 0.05; done' &
trap 'echo outer-USR1' USR1
echo outer-up
while :; do sleep 0.05; done
"#;

#[test]
fn no_group_sends_signals_to_the_command_alone() {
    /// Flags, environment, and whether the inner shell gets the signal too.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], bool);
    let runs: [Case; 4] = [
        (&["--"], &[], true),
        (&["--no-group", "--"], &[], false),
        (&["-c"], &[], false),
        (&["--"], &[("MUSTER_NO_GROUP", "1")], false),
    ];
    for (flags, env, group) in runs {
        let mut args = flags.to_vec();
        args.extend(["sh", "-c", PAIR]);
        let mut run = start_env(Mode::Pid1, &args, env);
        run.wait_line("inner-up", LONG);
        run.wait_line("outer-up", LONG);
        let pid = muster_pid(&run, Mode::Pid1);
        common::signal(pid, libc::SIGUSR1);
        run.wait_line("outer-USR1", LONG);
        if group {
            run.wait_line("inner-USR1", LONG);
        }
        common::signal(pid, libc::SIGTERM);
        let status = run.wait(LONG);
        assert_eq!(
            run.count("inner-USR1"),
            usize::from(group),
            "{flags:?} {env:?}: {}",
            run.text()
        );
        assert_eq!(code(status), 143, "{flags:?}: {}", run.text());
    }
}

#[test]
fn stop_timeout_and_stop_signal_from_the_environment() {
    // A command that ignores SIGTERM: SIGKILL at the kill point, 1 s - 0.25 s after SIGTERM.
    let script =
        r#"trap '' TERM; trap 'echo got-USR2' USR2; echo armed; while :; do sleep 0.05; done"#;
    let mut run = start_env(
        Mode::Subreaper,
        &["--", "sh", "-c", script],
        &[
            ("MUSTER_STOP_TIMEOUT", "1s"),
            ("MUSTER_STOP_SIGNAL", "USR2"),
        ],
    );
    run.wait_line("armed", LONG);
    let asked = Instant::now();
    common::signal(muster_pid(&run, Mode::Subreaper), libc::SIGTERM);
    assert_eq!(code(run.wait(LONG)), 128 + libc::SIGKILL, "{}", run.text());
    let took = asked.elapsed();
    assert!(took < Duration::from_millis(1000), "{took:?}");
    assert!(took >= Duration::from_millis(700), "{took:?}");
    // The stop signal was USR2, and the shell ignores TERM and survives USR2's trap.
    run.wait_line("got-USR2", LONG);
    // A bad value is a bad command line.
    let mut run = start_env(
        Mode::Subreaper,
        &["--", "true"],
        &[("MUSTER_STOP_TIMEOUT", "soon")],
    );
    assert_eq!(code(run.wait(LONG)), 64);
    run.wait_line("MUSTER_STOP_TIMEOUT: \"soon\" is not a duration", LONG);
}

#[test]
fn tini_and_dumb_init_entrypoints_keep_working() {
    for (args, expect) in [
        (&["-c", "sh", "-c", "exit 4"][..], 4),
        (&["-s", "-g", "--", "sh", "-c", "exit 5"][..], 5),
        (&["-v", "--single-child", "--rewrite", "1:0", "true"][..], 0),
        (&["-e", "3", "--", "sh", "-c", "exit 3"][..], 0),
    ] {
        let mut run = Run::start(muster(), args);
        assert_eq!(code(run.wait(LONG)), expect, "{args:?}: {}", run.text());
    }
    let mut run = Run::start(muster(), &["--version"]);
    assert_eq!(code(run.wait(LONG)), 0);
    run.wait_line(&format!("muster {}", env!("CARGO_PKG_VERSION")), LONG);
    // A flag is never mistaken for a path: -c is dumb-init's, --config takes the file.
    let mut run = Run::start(muster(), &["-c", "/nonexistent/muster.toml"]);
    assert_eq!(code(run.wait(LONG)), 127, "{}", run.text());
    let mut run = Run::start(muster(), &["-g", "--config", "/nonexistent.toml"]);
    assert_eq!(code(run.wait(LONG)), 64);
    run.wait_line("-g is for one command", LONG);
}
