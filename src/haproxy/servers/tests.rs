//! Tests of the servers' lifecycle: the machine against a fake HAProxy that keeps its servers'
//! states and answers as Debian's haproxy 2.6 does. Each test reads as the transcript of what
//! was said (HAProxy commands, other outputs, and log lines at INFO and above), on a virtual
//! clock.

// One real instant is the origin of the virtual clock.
#![allow(clippy::disallowed_methods)]

use std::sync::{Arc, Mutex};

use super::*;

const SKELETON: &str = "\
global
    stats socket /run/haproxy/admin.sock mode 600 level admin
    server-state-file /var/lib/haproxy/state
defaults
    mode http
backend nodes
    balance roundrobin
    stick-table type string len 64 size 1k store server_id
";

/// A config whose backend `nodes` holds these server lines (`name addr options…`).
fn config(servers: &[&str]) -> Rendered {
    let mut text = SKELETON.to_owned();
    for s in servers {
        text.push_str(&format!("    server {s}\n"));
    }
    cfg::parse(&text)
}

fn nodes(name: &str) -> Key {
    ("nodes".to_owned(), name.to_owned())
}

/// A server as the fake holds it.
#[derive(Debug, Clone, Default)]
struct Held {
    maint: bool,
    drain: bool,
    checks: bool,
    paused: bool,
    passed: bool,
    sessions: u64,
}

/// A fake HAProxy.
#[derive(Default)]
struct Fake {
    servers: BTreeMap<Key, Held>,
    /// Replies given instead of the real one to the next commands that start with these.
    refuse: Vec<(String, Reply)>,
    /// The master's `show proc`; `None`: no master CLI answers.
    master: Option<Procs>,
    /// Whether a reload fails.
    reload_fails: bool,
}

impl Fake {
    fn answer(&mut self, output: &Output) -> Option<Input> {
        match output {
            Output::Command(c) => Some(Input::Reply(self.command(c))),
            Output::Observe { .. } => Some(Input::Observed(Some(self.observation()))),
            Output::ShowProc => Some(Input::Procs(
                self.master.clone().ok_or_else(|| "no master".to_owned()),
            )),
            Output::Reload => {
                if let Some(m) = &mut self.master {
                    m.reloads += 1;
                    if self.reload_fails {
                        m.failed += 1;
                    } else {
                        let next = m.current_workers.iter().max().map_or(100, |p| p + 1);
                        m.current_workers = vec![next];
                    }
                }
                Some(Input::ReloadSent)
            }
            _ => None,
        }
    }

    fn command(&mut self, c: &str) -> Reply {
        if let Some(i) = self.refuse.iter().position(|(p, _)| c.starts_with(p)) {
            return self.refuse.remove(i).1;
        }
        let w: Vec<&str> = c.split_whitespace().collect();
        let key = |id: &str| {
            let (b, n) = id.split_once('/').expect("backend/name");
            (b.to_owned(), n.to_owned())
        };
        if let ["add", "server", id, ..] = w[..] {
            if self.servers.contains_key(&key(id)) {
                return Reply::Exists;
            }
            let held = Held {
                maint: true,
                ..Held::default()
            };
            self.servers.insert(key(id), held);
            return Reply::Done;
        }
        if let ["set" | "clear", "table", ..] = w[..] {
            return Reply::Done;
        }
        let id = match w[..] {
            ["set" | "del", "server", id, ..] | ["enable", "health", id] => id,
            _ => return Reply::Refused(format!("unknown command {c:?}")),
        };
        let Some(s) = self.servers.get_mut(&key(id)) else {
            return Reply::NoSuchServer;
        };
        match w[..] {
            [_, _, _, "state", "ready"] => (s.maint, s.drain, s.paused) = (false, false, false),
            [_, _, _, "state", "drain"] => (s.maint, s.drain, s.paused) = (false, true, false),
            [_, _, _, "state", "maint"] => (s.maint, s.paused) = (true, s.checks),
            [_, _, _, "health", "down"] => s.passed = false,
            [_, _, _, "addr", ..] => {}
            ["enable", "health", _] => s.checks = true,
            ["del", ..] if !s.maint => return Reply::NotInMaint,
            ["del", ..] if s.sessions > 0 => return Reply::InUse,
            ["del", ..] => {
                self.servers.remove(&key(id));
            }
            _ => return Reply::Refused(format!("unknown command {c:?}")),
        }
        Reply::Done
    }

    fn observation(&self) -> Observation {
        let mut o = Observation::default();
        for (k, s) in &self.servers {
            let up = !s.maint && (s.passed || !s.checks);
            let state = ServerState {
                op: if up { 2 } else { 0 },
                admin: u8::from(s.maint) | u8::from(s.drain) << 3,
                check_result: if s.passed { 3 } else { 0 },
                check_state: if s.checks { 6 } else { 0 } | if s.paused { 8 } else { 0 },
            };
            o.states.insert(k.clone(), state);
            o.sessions.insert(k.clone(), s.sessions);
        }
        o
    }
}

/// The log lines written while a test runs.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The machine, the fake, a virtual clock and the transcript.
struct Harness {
    m: Servers,
    haproxy: Fake,
    now: Instant,
    logs: Logs,
    transcript: Vec<String>,
    _guard: tracing::subscriber::DefaultGuard,
}

const DRAIN: Duration = Duration::from_secs(3);

impl Harness {
    fn new() -> Harness {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::INFO)
            .without_time()
            .with_target(false)
            .finish();
        let now = Instant::now();
        Harness {
            m: Servers::new(now, DRAIN),
            haproxy: Fake::default(),
            now,
            logs,
            transcript: Vec::new(),
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// A machine whose HAProxy runs `servers` (given as its first config, before HAProxy
    /// started, as at muster's start), all in service.
    fn running(servers: &[&str]) -> Harness {
        let mut h = Harness::new();
        h.input(Input::Config {
            config: config(servers),
            leaving: BTreeSet::new(),
        });
        for s in servers {
            let name = s.split_whitespace().next().expect("name");
            let checks = s.contains(" check");
            let held = Held {
                checks,
                passed: checks,
                ..Held::default()
            };
            h.haproxy.servers.insert(nodes(name), held);
        }
        h.haproxy.master = Some(Procs {
            reloads: 0,
            failed: 0,
            current_workers: vec![100],
        });
        h.input(Input::Started);
        h.take();
        h
    }

    fn logged(&mut self) {
        let mut buf = self.logs.0.lock().expect("logs");
        let text = String::from_utf8_lossy(&buf).into_owned();
        buf.clear();
        for line in text.lines() {
            // Durations vary with nothing the test controls: drop them.
            let line = match line.find(" after_ms=") {
                Some(i) => &line[..i],
                None => line,
            };
            let line = match line.find(" ms=") {
                Some(i) => &line[..i],
                None => line,
            };
            self.transcript.push(line.trim().to_owned());
        }
    }

    /// Feeds `input`, then carries out every output with the fake until the machine waits.
    fn input(&mut self, input: Input) {
        self.m.handle(self.now, input);
        self.logged();
        while let Some(output) = self.m.poll_output() {
            self.logged();
            self.transcript.push(match &output {
                Output::Command(c) => c.clone(),
                other => format!("{other:?}"),
            });
            if let Some(answer) = self.haproxy.answer(&output) {
                self.m.handle(self.now, answer);
                self.logged();
            }
        }
        self.logged();
    }

    /// Gives a config (and who is leaving).
    fn config(&mut self, servers: &[&str], leaving: &[&str]) -> String {
        let leaving = leaving.iter().map(|n| (*n).to_owned()).collect();
        self.input(Input::Config {
            config: config(servers),
            leaving,
        });
        self.take()
    }

    /// Lets `d` pass, ticking at every timeout on the way.
    fn after(&mut self, d: Duration) -> String {
        let end = self.now + d;
        while let Some(at) = self.m.poll_timeout().filter(|&at| at <= end) {
            self.now = self.now.max(at);
            self.input(Input::Tick);
        }
        self.now = end;
        self.input(Input::Tick);
        self.take()
    }

    fn take(&mut self) -> String {
        std::mem::take(&mut self.transcript).join("\n")
    }

    fn held(&self, name: &str) -> Option<&Held> {
        self.haproxy.servers.get(&nodes(name))
    }

    fn pass_check(&mut self, name: &str) {
        if let Some(s) = self.haproxy.servers.get_mut(&nodes(name)) {
            s.passed = true;
        }
    }
}

const A: &str = "a 10.0.0.1:3000 id 1 check";
const B: &str = "b 10.0.0.2:3000 id 2 check";

#[test]
fn the_first_config_finds_no_haproxy_and_is_what_it_will_start_with() {
    let mut h = Harness::new();
    assert_eq!(
        h.config(&[A], &[]),
        "ShowProc\n\
         Connect { socket: Some(\"/run/haproxy/admin.sock\"), worker: None }"
    );
    assert_eq!(h.m.running(), Some(&config(&[A])));
    assert!(!h.m.following());
    // Once HAProxy answers, its stick table learns every server.
    h.input(Input::Started);
    assert_eq!(h.take(), "set table nodes key a data.server_id 1");
    assert_eq!(h.m.poll_timeout(), Some(h.now + TABLE_REFRESH));
    assert_eq!(
        h.after(TABLE_REFRESH),
        "set table nodes key a data.server_id 1"
    );
}

#[test]
fn a_joining_server_is_added_checked_and_put_in_service_at_its_first_good_check() {
    let mut h = Harness::running(&[]);
    assert_eq!(
        h.config(&[A], &[]),
        "add server nodes/a 10.0.0.1:3000 id 1 check\n\
         set server nodes/a addr 10.0.0.1 port 3001\n\
         set server nodes/a addr 10.0.0.1 port 3000\n\
         set table nodes key a data.server_id 1\n\
         enable health nodes/a\n\
         Applied { changes: 1, failed: false }\n\
         Observe { states: true, sessions: false }"
    );
    assert!(h.held("a").is_some_and(|s| s.maint && s.checks));
    assert!(h.m.following());
    // No good check yet: it waits, looked at every POLL.
    assert_eq!(h.after(POLL), "Observe { states: true, sessions: false }");
    h.pass_check("a");
    assert_eq!(
        h.after(POLL),
        "Observe { states: true, sessions: false }\n\
         set server nodes/a state ready\n\
         INFO in service (first check passed) server=nodes/a"
    );
    assert!(h.held("a").is_some_and(|s| !s.maint));
    assert!(!h.m.following());
    assert_eq!(h.after(Duration::from_secs(1)), "");
}

#[test]
fn a_server_without_a_check_is_in_service_at_once_unless_disabled() {
    let mut h = Harness::running(&[]);
    assert_eq!(
        h.config(&["a 10.0.0.1:3000", "b 10.0.0.2:3000 disabled"], &[]),
        "add server nodes/a 10.0.0.1:3000\n\
         set server nodes/a addr 10.0.0.1 port 3001\n\
         set server nodes/a addr 10.0.0.1 port 3000\n\
         set server nodes/a state ready\n\
         add server nodes/b 10.0.0.2:3000\n\
         set server nodes/b addr 10.0.0.2 port 3001\n\
         set server nodes/b addr 10.0.0.2 port 3000\n\
         Applied { changes: 2, failed: false }"
    );
    assert!(!h.m.following());
    assert!(h.held("b").is_some_and(|s| s.maint));
}

#[test]
fn a_leaving_members_server_is_drained_then_put_in_maintenance_then_deleted() {
    let mut h = Harness::running(&[A, B]);
    h.haproxy.servers.get_mut(&nodes("a")).expect("a").sessions = 2;
    assert_eq!(
        h.config(&[B], &["a"]),
        "set server nodes/a state drain\n\
         INFO draining (member leaving) server=nodes/a\n\
         Applied { changes: 1, failed: false }\n\
         Observe { states: false, sessions: true }"
    );
    // Sessions remain: it drains on.
    assert_eq!(h.after(POLL), "Observe { states: false, sessions: true }");
    h.haproxy.servers.get_mut(&nodes("a")).expect("a").sessions = 0;
    assert_eq!(
        h.after(POLL),
        "Observe { states: false, sessions: true }\n\
         set server nodes/a state maint"
    );
    assert_eq!(
        h.after(POLL),
        "Observe { states: false, sessions: true }\n\
         del server nodes/a\n\
         clear table nodes key a"
    );
    assert!(h.held("a").is_none());
    assert!(!h.m.following());
    assert_eq!(h.m.running(), Some(&config(&[B])));
}

#[test]
fn a_drain_ends_at_its_deadline_even_with_sessions_left() {
    let mut h = Harness::running(&[A]);
    h.haproxy.servers.get_mut(&nodes("a")).expect("a").sessions = 1;
    h.config(&[], &["a"]);
    let rounds = h.after(DRAIN - POLL);
    assert!(!rounds.contains("maint"), "{rounds}");
    assert_eq!(
        h.after(POLL),
        "Observe { states: false, sessions: true }\n\
         WARN drain deadline passed; sessions remain server=nodes/a\n\
         set server nodes/a state maint"
    );
}

#[test]
fn a_failed_members_server_goes_to_maintenance_at_once_then_is_deleted() {
    let mut h = Harness::running(&[A, B]);
    assert_eq!(
        h.config(&[B], &[]),
        "set server nodes/a state maint\n\
         INFO out of rotation (member failed or gone) server=nodes/a\n\
         Applied { changes: 1, failed: false }\n\
         Observe { states: false, sessions: true }\n\
         del server nodes/a\n\
         clear table nodes key a"
    );
    assert!(!h.m.following());
}

#[test]
fn a_delete_haproxy_refuses_is_retried_logged_once_and_the_others_go_on() {
    let mut h = Harness::running(&[A, B]);
    h.haproxy.servers.get_mut(&nodes("a")).expect("a").sessions = 1;
    assert_eq!(
        h.config(&[], &[]),
        "set server nodes/a state maint\n\
         INFO out of rotation (member failed or gone) server=nodes/a\n\
         set server nodes/b state maint\n\
         INFO out of rotation (member failed or gone) server=nodes/b\n\
         Applied { changes: 2, failed: false }\n\
         Observe { states: false, sessions: true }\n\
         del server nodes/a\n\
         del server nodes/b\n\
         clear table nodes key b"
    );
    // a still has a connection: refused, tried again every round; b is gone.
    let retries = h.after(DRAIN - POLL);
    assert_eq!(
        retries.matches("del server nodes/a").count(),
        retries.lines().count() / 2,
        "{retries}"
    );
    assert!(!retries.contains("WARN"), "{retries}");
    // Past the drain timeout: left in maintenance, said once.
    let end = h.after(2 * POLL);
    assert!(
        end.ends_with(
            "del server nodes/a\n\
             WARN left in maintenance (still has connections) server=nodes/a"
        ),
        "{end}"
    );
    assert_eq!(end.matches("WARN").count(), 1, "{end}");
    assert!(h.held("a").is_some_and(|s| s.maint));
    assert!(!h.m.following());
    assert_eq!(h.after(Duration::from_secs(1)), "");
}

#[test]
fn an_operation_haproxy_refuses_is_logged_once_kept_out_and_tried_again() {
    let mut h = Harness::running(&[]);
    let heavy = "h 10.0.0.3:3000 id 3 check weight 999";
    for _ in 0..2 {
        h.haproxy.refuse.push((
            "add server nodes/h ".to_owned(),
            Reply::Refused("weight of server h is not within 0 and 256 (999)..".to_owned()),
        ));
    }
    let first = h.config(&[A, heavy], &[]);
    assert!(
        first.contains(
            "WARN haproxy refused an operation; the server is tried again at the next \
             update server=nodes/h error=add server nodes/h 10.0.0.3:3000 id 3 check \
             weight 999: weight of server h is not within 0 and 256 (999).."
        ),
        "{first}"
    );
    assert!(
        first.contains("enable health nodes/a"),
        "the others go on: {first}"
    );
    assert!(
        first.contains("Applied { changes: 2, failed: true }"),
        "{first}"
    );
    assert!(h.m.behind());
    assert_eq!(h.m.running(), Some(&config(&[A])), "h is not held");
    // The same config again: h is tried again, the refusal not logged again.
    assert_eq!(
        h.config(&[A, heavy], &[]),
        "add server nodes/h 10.0.0.3:3000 id 3 check weight 999\n\
         Applied { changes: 1, failed: true }"
    );
    // HAProxy takes it this time.
    let third = h.config(&[A, heavy], &[]);
    assert!(
        third.ends_with("Applied { changes: 1, failed: false }"),
        "{third}"
    );
    assert!(!h.m.behind());
    assert_eq!(h.m.running(), Some(&config(&[A, heavy])));
}

#[test]
fn a_member_back_while_its_server_drains_is_brought_back_and_in_service_at_a_good_check() {
    let mut h = Harness::running(&[A]);
    h.haproxy.servers.get_mut(&nodes("a")).expect("a").sessions = 1;
    h.config(&[], &["a"]);
    assert!(h.held("a").is_some_and(|s| s.drain));
    // Back at another port.
    assert_eq!(
        h.config(&["a 10.0.0.1:3009 id 1 check"], &[]),
        "add server nodes/a 10.0.0.1:3009 id 1 check\n\
         set server nodes/a addr 10.0.0.1 port 3009\n\
         set table nodes key a data.server_id 1\n\
         set server nodes/a state drain\n\
         set server nodes/a health down\n\
         enable health nodes/a\n\
         set server nodes/a state ready\n\
         INFO brought back (its member is alive again) server=nodes/a\n\
         Applied { changes: 1, failed: false }"
    );
    assert_eq!(h.after(POLL), "Observe { states: true, sessions: false }");
    h.pass_check("a");
    assert_eq!(
        h.after(POLL),
        "Observe { states: true, sessions: false }\n\
         INFO in service (back, check passed) server=nodes/a"
    );
    assert!(!h.m.following(), "the drain is cancelled");
    assert_eq!(h.after(DRAIN * 2), "");
    assert!(h.held("a").is_some_and(|s| !s.maint && !s.drain));
}

#[test]
fn a_member_back_while_its_server_is_in_maintenance_is_brought_back() {
    let mut h = Harness::running(&[A]);
    h.haproxy.servers.get_mut(&nodes("a")).expect("a").sessions = 1;
    h.config(&[], &[]);
    h.after(POLL);
    assert!(h.held("a").is_some_and(|s| s.maint));
    // HAProxy checks the id before the name: the server still there names itself.
    h.haproxy.refuse.push((
        "add server nodes/a ".to_owned(),
        Reply::IdTaken { by: "a".to_owned() },
    ));
    let back = h.config(&[A], &[]);
    assert!(
        back.starts_with(
            "add server nodes/a 10.0.0.1:3000 id 1 check\n\
             set server nodes/a addr 10.0.0.1 port 3000\n"
        ),
        "{back}"
    );
    assert!(back.contains("INFO brought back"), "{back}");
    h.pass_check("a");
    assert_eq!(
        h.after(POLL),
        "Observe { states: true, sessions: false }\n\
         INFO in service (back, check passed) server=nodes/a"
    );
    // The pending delete is gone with it.
    assert_eq!(h.after(DRAIN * 2), "");
    assert!(h.held("a").is_some());
}

#[test]
fn a_structural_change_reloads_and_resumes_what_the_state_file_restored() {
    let c = "c 10.0.0.3:3000 id 3 check";
    let mut h = Harness::running(&[A, B, c]);
    // b was on its way out when the reload came (the state file keeps it drained); the
    // new config lists it again. c was waiting for its first check.
    h.haproxy.servers.get_mut(&nodes("b")).expect("b").drain = true;
    let held = Held {
        maint: true,
        checks: true,
        ..Held::default()
    };
    h.haproxy.servers.insert(nodes("c"), held);
    let mut new = config(&[A, B, c]);
    new.skeleton.push("option forwardfor".to_owned());
    h.input(Input::Config {
        config: new.clone(),
        leaving: BTreeSet::new(),
    });
    assert_eq!(
        h.take(),
        "ShowProc\n\
         INFO reloading haproxy reason=the config changed beyond its servers: \
         \"option forwardfor\"\n\
         SaveState(\"/var/lib/haproxy/state\")\n\
         Reload"
    );
    assert!(h.m.busy());
    assert_eq!(h.m.poll_timeout(), Some(h.now + POLL));
    assert_eq!(
        h.after(POLL),
        "ShowProc\n\
         Connect { socket: Some(\"/run/haproxy/admin.sock\"), worker: Some(101) }\n\
         ToStoppingWorkers { pids: [100], commands: [\"set table nodes key a \
         data.server_id 1\", \"set table nodes key b data.server_id 2\", \"set table \
         nodes key c data.server_id 3\"] }\n\
         set table nodes key a data.server_id 1\n\
         set table nodes key b data.server_id 2\n\
         set table nodes key c data.server_id 3\n\
         INFO haproxy reloaded\n\
         Observe { states: true, sessions: false }\n\
         set server nodes/b addr 10.0.0.2 port 3000\n\
         set table nodes key b data.server_id 2\n\
         set server nodes/b state drain\n\
         set server nodes/b health down\n\
         enable health nodes/b\n\
         set server nodes/b state ready\n\
         INFO brought back (its member is alive again) server=nodes/b\n\
         Observe { states: true, sessions: false }"
    );
    assert_eq!(h.m.running(), Some(&new));
    assert!(!h.m.busy());
    h.pass_check("b");
    h.pass_check("c");
    assert_eq!(
        h.after(POLL),
        "Observe { states: true, sessions: false }\n\
         INFO in service (back, check passed) server=nodes/b\n\
         set server nodes/c state ready\n\
         INFO in service (first check passed) server=nodes/c"
    );
    assert!(!h.m.following());
}

#[test]
fn a_reload_that_fails_keeps_the_old_config_running() {
    let mut h = Harness::running(&[A]);
    h.haproxy.reload_fails = true;
    let mut new = config(&[A]);
    new.skeleton.push("option forwardfor".to_owned());
    h.input(Input::Config {
        config: new,
        leaving: BTreeSet::new(),
    });
    h.take();
    assert_eq!(
        h.after(POLL),
        "ShowProc\n\
         ERROR haproxy reload failed; the old worker keeps serving failed=1\n\
         Connect { socket: Some(\"/run/haproxy/admin.sock\"), worker: None }"
    );
    assert_eq!(h.m.running(), Some(&config(&[A])));
    assert!(!h.m.busy());
}

#[test]
fn a_reload_gives_up_waiting_for_a_new_worker_after_the_limit() {
    let mut h = Harness::running(&[A]);
    h.haproxy.master = Some(Procs::default());
    let mut new = config(&[A]);
    new.skeleton.push("option forwardfor".to_owned());
    h.input(Input::Config {
        config: new,
        leaving: BTreeSet::new(),
    });
    // The master takes the reload, then answers no more: no new worker ever shows.
    h.haproxy.master = None;
    h.take();
    let waited = h.after(RELOAD_LIMIT - POLL);
    assert!(!waited.contains("Connect"), "still waiting");
    assert!(h.m.busy());
    let end = h.after(2 * POLL);
    assert!(end.contains("haproxy reload failed"), "{end}");
    assert!(!h.m.busy());
}

#[test]
fn a_config_given_while_work_is_under_way_is_taken_up_after_it() {
    let mut h = Harness::running(&[A]);
    let mut new = config(&[A]);
    new.skeleton.push("option forwardfor".to_owned());
    h.input(Input::Config {
        config: new,
        leaving: BTreeSet::new(),
    });
    h.take();
    // Given mid-reload (the sync does not, but the machine does not lose it).
    let mut newer = config(&[A, B]);
    newer.skeleton.push("option forwardfor".to_owned());
    h.input(Input::Config {
        config: newer.clone(),
        leaving: BTreeSet::new(),
    });
    assert_eq!(h.take(), "");
    let rest = h.after(POLL);
    assert!(rest.contains("INFO haproxy reloaded"), "{rest}");
    assert!(rest.contains("add server nodes/b"), "{rest}");
    assert_eq!(h.m.running(), Some(&newer));
}

#[test]
fn without_an_admin_socket_a_change_of_servers_reloads() {
    let mut h = Harness::new();
    let text = "global\nbackend nodes\n    server a 10.0.0.1:3000\n";
    h.input(Input::Config {
        config: cfg::parse(text),
        leaving: BTreeSet::new(),
    });
    assert_eq!(h.take(), "ShowProc");
    h.haproxy.master = Some(Procs::default());
    h.input(Input::Config {
        config: cfg::parse(&format!("{text}    server b 10.0.0.2:3000\n")),
        leaving: BTreeSet::new(),
    });
    assert_eq!(
        h.take(),
        "ShowProc\n\
         INFO reloading haproxy reason=the config has no admin stats socket (stats \
         socket … level admin)\n\
         Reload"
    );
}

#[test]
fn the_last_server_in_service_is_not_drained_while_another_joins_until_that_one_is_in_service() {
    let mut h = Harness::running(&[A]);
    let out = h.config(&[B], &["a"]);
    assert!(!out.contains("nodes/a state"), "{out}");
    assert!(out.contains("drain held back"), "{out}");
    assert!(out.contains("add server nodes/b"), "{out}");
    assert_eq!(h.m.held_back(), 1);
    // b waits for its first good check: a stays in service.
    let out = h.after(POLL * 5);
    assert!(!out.contains("nodes/a state"), "{out}");
    assert!(h.held("a").is_some_and(|s| !s.maint && !s.drain));
    let states = h.m.states();
    assert_eq!((states["a"], states["b"]), ("held-back", "joining"));
    h.pass_check("b");
    let out = h.after(POLL);
    assert!(out.contains("set server nodes/b state ready"), "{out}");
    // Now that b is in service, a drains, then goes.
    let out = h.after(POLL);
    assert!(
        out.contains("another server is in service")
            && out.contains("set server nodes/a state drain"),
        "{out}"
    );
    let states = h.m.states();
    assert_eq!((states["a"], states["b"]), ("draining", "in-service"));
    h.after(POLL * 3);
    assert!(h.held("a").is_none());
    assert!(!h.m.following());
}

#[test]
fn a_held_back_server_whose_app_is_gone_goes_out_of_rotation_at_once() {
    let mut h = Harness::running(&[A]);
    h.config(&[B], &["a"]);
    // a's check fails (its app stopped): no point keeping it, no point draining it.
    h.haproxy.servers.get_mut(&nodes("a")).expect("a").passed = false;
    let out = h.after(POLL);
    assert!(
        out.contains("its app is gone") && out.contains("set server nodes/a state maint"),
        "{out}"
    );
    assert!(!out.contains("nodes/a state drain"), "{out}");
}

#[test]
fn a_held_back_drain_goes_ahead_before_the_leaving_app_stops() {
    let mut h = Harness::running(&[A]);
    h.config(&[B], &["a"]);
    let out = h.after(HELD_BACK_MAX - POLL);
    assert!(!out.contains("nodes/a state"), "{out}");
    let out = h.after(POLL * 2);
    assert!(
        out.contains("its app is about to stop") && out.contains("set server nodes/a state drain"),
        "{out}"
    );
}

#[test]
fn with_another_server_in_service_or_none_on_its_way_a_leaving_server_drains_at_once() {
    // Another one in service: drained at once (nothing is held back).
    let mut h = Harness::running(&[A, B]);
    let out = h.config(&[B, "c 10.0.0.3:3000 id 3 check"], &["a"]);
    assert!(out.contains("set server nodes/a state drain"), "{out}");
    assert_eq!(h.m.held_back(), 0);
    // The only one, with no server on its way in: drained at once (HAProxy's hold makes the
    // requests wait for the next server).
    let mut h = Harness::running(&[A]);
    let out = h.config(&[], &["a"]);
    assert!(out.contains("set server nodes/a state drain"), "{out}");
    assert_eq!(h.m.held_back(), 0);
}
