//! When muster dies, its services go with it: `kill -9` of muster as a subreaper (not PID 1,
//! where the kernel does it anyway) leaves none of them running, not even one that ignores
//! SIGTERM.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::{Run, config, muster};

const LONG: Duration = Duration::from_secs(20);

/// The pid muster logged for a started service.
fn pid_of(run: &Run, service: &str) -> i32 {
    let needle = format!("started service={service} pid=");
    let text = run.text();
    let line = text
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no {needle:?} in:\n{text}"));
    line.split("pid=").nth(1).unwrap().trim().parse().unwrap()
}

/// Whether `pid` is a live process (a zombie waiting for its new parent is not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

#[test]
fn kill_9_of_muster_takes_its_services_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        r#"
[services.stubborn]
command = ["sh", "-c", "trap '' TERM; echo stubborn-up; exec sleep 1000"]
[services.shell]
command = ["sh", "-c", "trap '' TERM; echo shell-up; while :; do sleep 0.05; done"]
[services.app]
main = true
command = ["sleep", "1000"]
"#,
    );
    let mut run = Run::start(muster(), &["--config", cfg.to_str().unwrap()]);
    run.wait_line("stubborn-up", LONG);
    run.wait_line("shell-up", LONG);
    run.wait_line("started service=app", LONG);
    let pids: Vec<(&str, i32)> = ["stubborn", "shell", "app"]
        .into_iter()
        .map(|s| (s, pid_of(&run, s)))
        .collect();
    assert!(pids.iter().all(|(_, p)| alive(*p)), "{pids:?} run");

    let killed = Instant::now();
    run.signal(libc::SIGKILL);
    run.wait(LONG);
    // Within a second every service is gone (the shell's last `sleep 0.05` with it).
    let gone = loop {
        let left: Vec<_> = pids.iter().filter(|(_, p)| alive(*p)).collect();
        if left.is_empty() {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "still running a second after muster was killed: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    println!(
        "services gone {} ms after kill -9 of muster",
        gone.as_millis()
    );
}
