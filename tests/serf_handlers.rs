//! Event handlers (`[gossip] event_handlers`) beside Debian's real `serf agent` running the
//! same script on loopback: the same environment and stdin lines for joins, leaves, failures,
//! user events and queries (a query answered from both); and a member that fails and is back
//! within a second, delivered by muster as `member-failed` then `member-join`, where Serf's
//! agent coalescing keeps only what came last. A handler that outlives `handler_timeout` is
//! killed with its process group; check-config refuses a missing script.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Run, config, eventually, free_port, muster};

const LONG: Duration = Duration::from_secs(30);

/// A handler that appends, for each run, a header line with Serf's variables and then its
/// stdin, to the file named by its argument.
const LOGGER: &str = r#"#!/bin/sh
{
  printf '%s event=%s self=%s role=%s tag_role=%s user=%s/%s query=%s/%s\n' \
    "$(date +%s.%N)" "$SERF_EVENT" "$SERF_SELF_NAME" "$SERF_SELF_ROLE" "$SERF_TAG_ROLE" \
    "$SERF_USER_EVENT" "$SERF_USER_LTIME" "$SERF_QUERY_NAME" "$SERF_QUERY_LTIME"
  sed 's/^/  /'
} >> "$1"
"#;

/// A query handler: answers with its node and what it was asked.
const ANSWER: &str = "#!/bin/sh\nread -r asked\necho \"$SERF_SELF_NAME got $asked\"\n";

fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// muster on loopback with these handlers; its gossip port and output.
fn start_muster(dir: &Path, name: &str, handlers: &[String], extra: &str) -> (Run, u16) {
    let gossip = free_port();
    let list: Vec<String> = handlers.iter().map(|h| format!("{h:?}")).collect();
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let cfg = config(
        &sub,
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
rpc_addr = false
tags = {{ role = "balancer" }}
event_handlers = [{}]
{extra}
"#,
            list.join(", ")
        ),
    );
    let run = Run::start(muster(), &["--config", cfg.to_str().unwrap()]);
    run.wait_line("gossip starting", LONG);
    (run, gossip)
}

/// A real `serf agent` on loopback (profile local); its gossip and RPC ports. Its log goes to
/// `log` when given.
fn start_serf(name: &str, gossip: u16, args: &[String], log: Option<&Path>) -> (Child, u16) {
    let rpc = free_port();
    let out = match log {
        Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
        None => Stdio::null(),
    };
    let child = common::owned(
        Command::new("serf")
            .args(["agent", &format!("-node={name}"), "-profile=local"])
            .arg(format!("-bind=127.0.0.1:{gossip}"))
            .arg(format!("-rpc-addr=127.0.0.1:{rpc}"))
            .args(args)
            .stdout(out)
            .stderr(Stdio::null()),
    )
    .spawn()
    .expect("serf is installed (tests/run installs it)");
    eventually("serf agent listening", LONG, || {
        TcpStream::connect(("127.0.0.1", rpc)).is_ok()
    });
    (child, rpc)
}

fn stop(mut child: Child) {
    common::kill_group(child.id());
    let _ = child.wait();
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The runs a handler log holds: (time, header without the time, stdin lines).
fn runs(log: &str) -> Vec<(f64, String, Vec<String>)> {
    let mut out: Vec<(f64, String, Vec<String>)> = Vec::new();
    for line in log.lines() {
        if let Some(body) = line.strip_prefix("  ") {
            if let Some(last) = out.last_mut() {
                last.2.push(body.to_owned());
            }
        } else if let Some((t, rest)) = line.split_once(' ') {
            out.push((t.parse().unwrap_or(0.0), rest.to_owned(), Vec::new()));
        }
    }
    out
}

/// (event, member line) for each member line about `who`, in order.
fn member_events(log: &str, who: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (_, header, lines) in runs(log) {
        let event = header
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_start_matches("event=")
            .to_owned();
        for l in lines {
            if l.split('\t').next() == Some(who) {
                out.push((event.clone(), l));
            }
        }
    }
    out
}

fn serf_cli(rpc: u16, args: &[&str]) -> String {
    let out = Command::new("serf")
        .arg(args[0])
        .arg(format!("-rpc-addr=127.0.0.1:{rpc}"))
        .args(&args[1..])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn handlers_get_what_serf_s_handlers_get() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let logger = script(d, "log.sh", LOGGER);
    let answer = script(d, "answer.sh", ANSWER);
    let (m_log, s_log) = (d.join("muster.log"), d.join("serf.log"));
    let handlers = |log: &Path| {
        vec![
            format!(
                "member-join,member-leave,member-failed,user={} {}",
                logger.display(),
                log.display()
            ),
            format!("query:uptime={}", answer.display()),
        ]
    };
    let (_m, m_port) = start_muster(d, "m", &handlers(&m_log), "");
    let s_port = free_port();
    let mut s_args = vec![
        "-tag".to_owned(),
        "role=balancer".to_owned(),
        format!("-join=127.0.0.1:{m_port}"),
    ];
    for h in handlers(&s_log) {
        s_args.push(format!("-event-handler={h}"));
    }
    let (s, s_rpc) = start_serf("s", s_port, &s_args, None);
    let backend = |name: &str| {
        let args = [
            "-tag".to_owned(),
            "role=backend".to_owned(),
            format!("-join=127.0.0.1:{m_port}"),
        ];
        start_serf(name, free_port(), &args, None)
    };
    // w1 joins and leaves (SIGINT: a graceful leave); w2 joins and is killed.
    let (w1, _) = backend("w1");
    let (w2, _) = backend("w2");
    let both = |who: &str, event: &str| {
        member_events(&read(&m_log), who)
            .iter()
            .any(|(e, _)| e == event)
            && member_events(&read(&s_log), who)
                .iter()
                .any(|(e, _)| e == event)
    };
    eventually("w1 and w2 joined, seen by both", LONG, || {
        both("w1", "member-join") && both("w2", "member-join")
    });
    common::signal(w1.id() as i32, libc::SIGINT);
    eventually("w1 left, seen by both", LONG, || both("w1", "member-leave"));
    stop(w2);
    eventually("w2 failed, seen by both", LONG, || {
        both("w2", "member-failed")
    });
    let out = serf_cli(s_rpc, &["event", "deploy", "v1.2"]);
    assert!(out.contains("Event 'deploy' dispatched"), "{out}");
    let user = |log: &Path| {
        runs(&read(log))
            .into_iter()
            .find(|(_, h, _)| h.starts_with("event=user"))
    };
    eventually("the user event ran both handlers", LONG, || {
        user(&m_log).is_some() && user(&s_log).is_some()
    });
    let asked = serf_cli(s_rpc, &["query", "-timeout=3s", "uptime", "now?"]);

    let (m_text, s_text) = (read(&m_log), read(&s_log));
    eprintln!("--- muster's handler log\n{m_text}--- serf's handler log\n{s_text}---");
    for who in ["w1", "w2"] {
        assert_eq!(
            member_events(&m_text, who),
            member_events(&s_text, who),
            "{who}: the member lines muster's handler got, and serf's"
        );
    }
    // Both hear their own join first.
    let own = |text: &str, me: &str| member_events(text, me).first().map(|(e, _)| e.clone());
    assert_eq!(own(&m_text, "m").as_deref(), Some("member-join"));
    assert_eq!(own(&s_text, "s").as_deref(), Some("member-join"));
    assert_eq!(
        member_events(&m_text, "w1")[0].1,
        "w1\t127.0.0.1\tbackend\trole=backend"
    );
    let (mu, su) = (user(&m_log).unwrap(), user(&s_log).unwrap());
    assert_eq!(
        mu.1.replace("self=m", "self=s"),
        su.1,
        "the user event's variables"
    );
    assert_eq!(mu.2, su.2, "the user event's stdin");
    assert_eq!(mu.2, ["v1.2"]);
    assert!(mu.1.contains("role=balancer tag_role=balancer user=deploy/"));
    eprintln!("--- serf query uptime\n{asked}---");
    assert!(asked.contains("m got now?"), "muster answers: {asked}");
    assert!(asked.contains("s got now?"), "serf answers: {asked}");
    stop(w1);
    stop(s);
}

#[test]
fn a_fail_then_rejoin_within_a_second_is_two_events_under_muster() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let logger = script(d, "log.sh", LOGGER);
    let (m_log, s_log) = (d.join("muster.log"), d.join("serf.log"));
    let handler = |log: &Path| format!("{} {}", logger.display(), log.display());
    let (_m, m_port) = start_muster(d, "m", &[handler(&m_log)], "");
    let serf_out = d.join("serf-agent.out");
    let s_args = [
        format!("-join=127.0.0.1:{m_port}"),
        format!("-event-handler={}", handler(&s_log)),
    ];
    let (s, s_rpc) = start_serf("s", free_port(), &s_args, Some(&serf_out));
    let v_port = free_port();
    let v_args = [
        "-tag".to_owned(),
        "role=backend".to_owned(),
        format!("-join=127.0.0.1:{m_port}"),
    ];
    let (v, _) = start_serf("v", v_port, &v_args, None);
    let seen = |log: &Path, event: &str| {
        member_events(&read(log), "v")
            .iter()
            .filter(|(e, _)| e == event)
            .count()
    };
    eventually("v joined, seen by both handlers", LONG, || {
        seen(&m_log, "member-join") == 1 && seen(&s_log, "member-join") == 1
    });
    let killed = Instant::now();
    stop(v);
    // Back as soon as both have noticed the failure: muster by its handler, serf by its
    // log line (its handler hears nothing before the coalescing ends).
    eventually("both noticed v failed", LONG, || {
        seen(&m_log, "member-failed") == 1 && read(&serf_out).contains("EventMemberFailed: v")
    });
    let noticed = killed.elapsed();
    let back_at = Instant::now();
    let (v, _) = start_serf("v", v_port, &v_args, None);
    eventually("muster's handler heard v join again", LONG, || {
        seen(&m_log, "member-join") == 2
    });
    let rejoin_heard = back_at.elapsed();
    // serf's coalescer flushes within 3 s of the first event; v alive there too first.
    eventually("v alive again at serf", LONG, || {
        serf_cli(s_rpc, &["members", "-status=alive"]).contains("\nv ")
            || serf_cli(s_rpc, &["members", "-status=alive"]).starts_with("v ")
    });
    std::thread::sleep(Duration::from_secs(4));
    let events = |log: &Path| -> Vec<String> {
        member_events(&read(log), "v")
            .into_iter()
            .map(|(e, _)| e)
            .collect()
    };
    let (m_events, s_events) = (events(&m_log), events(&s_log));
    let failed_to_join = |log: &Path| {
        let r = runs(&read(log));
        let t = |ev: &str| {
            r.iter()
                .filter(|(_, h, l)| {
                    h.starts_with(&format!("event={ev} ")) && l.iter().any(|x| x.starts_with("v\t"))
                })
                .map(|(t, _, _)| *t)
                .next_back()
        };
        t("member-join").zip(t("member-failed")).map(|(j, f)| j - f)
    };
    println!(
        "fail-then-rejoin: failure noticed by both {:.2} s after kill -9; v restarted at once; \
         muster's handler heard the rejoin {:.2} s later",
        noticed.as_secs_f64(),
        rejoin_heard.as_secs_f64()
    );
    println!(
        "  muster delivered {m_events:?} (failed -> join {:.2} s apart in its handler)",
        failed_to_join(&m_log).unwrap_or(f64::NAN)
    );
    println!("  serf   delivered {s_events:?}");
    assert_eq!(
        m_events,
        ["member-join", "member-failed", "member-join"],
        "muster delivers the failure and the rejoin, in order"
    );
    stop(v);
    stop(s);
}

#[test]
fn a_handler_past_its_timeout_is_killed_with_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pidfile = d.join("sleeper.pid");
    let slow = script(
        d,
        "slow.sh",
        &format!(
            "#!/bin/sh\nsleep 300 &\necho $! > {}\necho started\nwait\n",
            pidfile.display()
        ),
    );
    let handler = format!("member-join={}", slow.display());
    let (m, m_port) = start_muster(d, "m", &[handler], "handler_timeout = \"1s\"");
    let args = [format!("-join=127.0.0.1:{m_port}")];
    let (w, _) = start_serf("w", free_port(), &args, None);
    m.wait_line("started", LONG);
    let t = m.wait_line("ran past gossip.handler_timeout", LONG);
    let pid: i32 = read(&pidfile).trim().parse().unwrap();
    eventually("the handler's background child is gone", LONG, || {
        // SAFETY: signal 0 only checks that the pid exists.
        unsafe { libc::kill(pid, 0) != 0 }
    });
    let started = m.line_time("started").unwrap();
    println!(
        "handler killed {:.2} s after its first line",
        (t - started).as_secs_f64()
    );
    stop(w);
}

#[test]
fn check_config_refuses_a_missing_script_and_an_unknown_event() {
    let dir = tempfile::tempdir().unwrap();
    for (handler, needle) in [
        ("member-join=/nonexistent/join.sh", "/nonexistent/join.sh"),
        (
            "member-joined=/bin/true",
            "unknown event type \"member-joined\"",
        ),
    ] {
        let cfg = config(
            dir.path(),
            &format!(
                "[services.app]\nmain = true\ncommand = [\"true\"]\n[gossip]\nname = \"m\"\n\
                 event_handlers = [{handler:?}]\n"
            ),
        );
        // check-config, and a start: both refuse it the same way.
        for args in [
            vec!["check-config", cfg.to_str().unwrap()],
            vec!["--config", cfg.to_str().unwrap()],
        ] {
            let out = Command::new(muster()).args(&args).output().unwrap();
            let text = String::from_utf8_lossy(&out.stderr);
            eprintln!("{args:?} {handler}: {text}");
            assert_eq!(out.status.code(), Some(64), "{text}");
            assert!(
                text.contains("gossip.event_handlers") && text.contains(needle),
                "{text}"
            );
        }
    }
}
