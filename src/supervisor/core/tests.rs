//! Rules of the supervisor core, checked with a virtual clock and plain values.

#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use super::*;
use crate::config::{Config, Ready, Service};

const T0: Duration = Duration::ZERO;

struct Sim {
    core: Core,
    start: Instant,
}

impl Sim {
    fn new(services: Vec<Service>) -> Sim {
        let start = Instant::now();
        let config = Config {
            stop_timeout: Duration::from_secs(9),
            control_socket: None,
            services,
            gossip: None,
            logship: None,
            haproxy: None,
        };
        Sim {
            core: Core::new(&config),
            start,
        }
    }
    fn at(&self, t: Duration) -> Instant {
        self.start + t
    }
    fn feed(&mut self, t: Duration, input: Input) -> Vec<Action> {
        let now = self.at(t);
        self.core.handle(now, input);
        self.drain()
    }
    /// The driver's answer to a `Spawn`.
    fn spawned(&mut self, t: Duration, service: ServiceId, pid: Pid) -> Vec<Action> {
        self.feed(t, Input::Spawned { service, pid })
    }
    /// The reaper's news of an ended process.
    fn exited(&mut self, t: Duration, pid: Pid, status: ExitStatus) -> Vec<Action> {
        self.feed(t, Input::Exited { pid, status })
    }
    fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.core.poll_action()).collect()
    }
}

fn svc(name: &str) -> Service {
    Service::defaults(name, vec!["x".into()])
}

fn main_svc(name: &str) -> Service {
    Service {
        main: true,
        restart: Restart::Never,
        ..svc(name)
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn main_exit_code_becomes_muster_exit_code() {
    let mut s = Sim::new(vec![main_svc("app")]);
    assert_eq!(s.drain(), vec![Action::Spawn(0)]);
    assert_eq!(
        s.feed(
            T0,
            Input::Spawned {
                service: 0,
                pid: 10
            }
        ),
        vec![]
    );
    assert_eq!(
        s.feed(
            ms(5),
            Input::Exited {
                pid: 10,
                status: ExitStatus::Code(3)
            }
        ),
        vec![Action::SweepStrays(libc::SIGTERM)]
    );
    assert_eq!(s.feed(ms(6), Input::NoChildren), vec![Action::Exit(3)]);
}

#[test]
fn killed_main_gives_128_plus_signal_and_exec_failure_127() {
    let mut s = Sim::new(vec![main_svc("app")]);
    s.drain();
    s.spawned(T0, 0, 10);
    s.exited(ms(1), 10, ExitStatus::Signal(9));
    assert_eq!(s.feed(ms(2), Input::NoChildren), vec![Action::Exit(137)]);

    let mut s = Sim::new(vec![main_svc("app")]);
    s.drain();
    s.feed(
        T0,
        Input::SpawnFailed {
            service: 0,
            code: 127,
        },
    );
    assert_eq!(s.feed(ms(1), Input::NoChildren), vec![Action::Exit(127)]);
}

#[test]
fn sigterm_stops_dependents_first_then_dependencies() {
    let mut web = main_svc("web");
    web.depends_on = vec!["log".into()];
    let mut s = Sim::new(vec![svc("log"), web]);
    assert_eq!(s.drain(), vec![Action::Spawn(0)]);
    assert_eq!(
        s.feed(
            T0,
            Input::Spawned {
                service: 0,
                pid: 10
            }
        ),
        vec![Action::Spawn(1)]
    );
    s.spawned(T0, 1, 20);
    let sig = |pid, signal| Action::Signal {
        pid,
        group: true,
        signal,
    };
    assert_eq!(
        s.feed(ms(100), Input::Signal(libc::SIGTERM)),
        vec![sig(20, libc::SIGTERM)],
        "only the dependent is stopped first"
    );
    assert_eq!(
        s.feed(
            ms(150),
            Input::Exited {
                pid: 20,
                status: ExitStatus::Signal(15)
            }
        ),
        vec![sig(10, libc::SIGTERM)]
    );
    assert_eq!(
        s.feed(
            ms(160),
            Input::Exited {
                pid: 10,
                status: ExitStatus::Code(0)
            }
        ),
        vec![Action::SweepStrays(libc::SIGTERM)]
    );
    assert_eq!(s.feed(ms(161), Input::NoChildren), vec![Action::Exit(143)]);
}

#[test]
fn grace_expiry_kills_the_group_and_deadline_bounds_everything() {
    let mut app = main_svc("app");
    app.stop_grace = Duration::from_secs(2);
    app.signal_group = false;
    let mut s = Sim::new(vec![app]);
    s.drain();
    s.spawned(T0, 0, 10);
    assert_eq!(
        s.feed(T0, Input::Signal(libc::SIGTERM)),
        vec![Action::Signal {
            pid: 10,
            group: false,
            signal: libc::SIGTERM
        }]
    );
    assert_eq!(s.core.poll_timeout(), Some(s.at(Duration::from_secs(2))));
    assert_eq!(
        s.feed(Duration::from_secs(2), Input::Tick),
        vec![Action::Signal {
            pid: 10,
            group: true,
            signal: libc::SIGKILL
        }]
    );
    s.exited(ms(2001), 10, ExitStatus::Signal(9));
    // A stray that ignores SIGTERM is SIGKILLed 1 s before the 9 s deadline, so muster has
    // exited by then.
    assert_eq!(s.core.poll_timeout(), Some(s.at(Duration::from_secs(8))));
    assert_eq!(
        s.feed(Duration::from_secs(8), Input::Tick),
        vec![Action::SweepStrays(libc::SIGKILL)]
    );
    assert_eq!(s.feed(ms(8010), Input::NoChildren), vec![Action::Exit(137)]);
}

#[test]
fn unkillable_leftovers_do_not_keep_muster_alive() {
    let mut s = Sim::new(vec![main_svc("app")]);
    s.drain();
    s.spawned(T0, 0, 10);
    s.exited(T0, 10, ExitStatus::Code(0));
    // SIGKILL for everything 1 s before the 9 s deadline; half of that second later muster
    // exits without what survived it, leaving the rest for its last output and log flush.
    s.feed(Duration::from_secs(8), Input::Tick);
    assert_eq!(s.core.poll_timeout(), Some(s.at(ms(8_500))));
    assert_eq!(s.feed(ms(8_500), Input::Tick), vec![Action::Exit(0)]);
}

#[test]
fn a_critical_crash_loop_backs_off_exponentially_then_gives_up() {
    let mut side = svc("side");
    side.crash_limit = 3;
    side.critical = true;
    let mut s = Sim::new(vec![main_svc("app"), side]);
    assert_eq!(s.drain(), vec![Action::Spawn(0), Action::Spawn(1)]);
    s.spawned(T0, 0, 10);
    let mut t = T0;
    let mut pid = 20;
    for expected_delay in [500, 1000, 2000] {
        s.feed(t, Input::Spawned { service: 1, pid });
        s.feed(
            t + ms(10),
            Input::Exited {
                pid,
                status: ExitStatus::Code(2),
            },
        );
        let due = s.core.poll_timeout().expect("a restart is due");
        assert_eq!(due, s.at(t + ms(10 + expected_delay)));
        t = due - s.start;
        assert_eq!(s.feed(t, Input::Tick), vec![Action::Spawn(1)]);
        pid += 1;
    }
    s.feed(t, Input::Spawned { service: 1, pid });
    let actions = s.feed(
        t + ms(10),
        Input::Exited {
            pid,
            status: ExitStatus::Code(2),
        },
    );
    assert_eq!(
        actions,
        vec![Action::Signal {
            pid: 10,
            group: true,
            signal: libc::SIGTERM
        }],
        "the fourth crash in a row of a critical service gives up and stops the container"
    );
    s.exited(t + ms(20), 10, ExitStatus::Code(0));
    assert_eq!(s.feed(t + ms(21), Input::NoChildren), vec![Action::Exit(2)]);
}

#[test]
fn long_runs_reset_the_crash_count() {
    let mut s = Sim::new(vec![main_svc("app"), svc("side")]);
    s.drain();
    s.spawned(T0, 1, 20);
    s.exited(ms(10), 20, ExitStatus::Code(1));
    s.feed(ms(510), Input::Tick);
    s.spawned(ms(510), 1, 21);
    // Ran 20 s (more than min_uptime): the next back-off starts from the first delay again.
    s.exited(ms(20_510), 21, ExitStatus::Code(1));
    assert_eq!(s.core.poll_timeout(), Some(s.at(ms(21_010))));
}

#[test]
fn readiness_gates_dependents_and_stale_probes_are_ignored() {
    let mut db = svc("db");
    db.ready = Some(Ready::Tcp("127.0.0.1:5432".into()));
    let mut app = main_svc("app");
    app.depends_on = vec!["db".into()];
    let mut s = Sim::new(vec![app, db]);
    assert_eq!(s.drain(), vec![Action::Spawn(1)]);
    assert_eq!(
        s.feed(
            T0,
            Input::Spawned {
                service: 1,
                pid: 30
            }
        ),
        vec![Action::Probe {
            service: 1,
            pid: 30
        }]
    );
    assert_eq!(
        s.feed(
            ms(50),
            Input::Ready {
                service: 1,
                pid: 29
            }
        ),
        vec![]
    );
    assert_eq!(
        s.feed(
            ms(60),
            Input::Ready {
                service: 1,
                pid: 30
            }
        ),
        vec![Action::Spawn(0)]
    );
}

#[test]
fn not_ready_in_time_stops_with_code_1() {
    let mut app = main_svc("app");
    app.ready = Some(Ready::Tcp("127.0.0.1:1".into()));
    app.ready_timeout = Duration::from_secs(1);
    let mut s = Sim::new(vec![app]);
    s.drain();
    s.spawned(T0, 0, 10);
    let actions = s.feed(Duration::from_secs(1), Input::Tick);
    assert_eq!(
        actions,
        vec![
            Action::StopProbe(0),
            Action::Signal {
                pid: 10,
                group: true,
                signal: libc::SIGTERM
            }
        ]
    );
    s.exited(ms(1100), 10, ExitStatus::Signal(15));
    assert_eq!(s.feed(ms(1101), Input::NoChildren), vec![Action::Exit(1)]);
}

#[test]
fn forwarded_signals_go_to_main_only() {
    let mut s = Sim::new(vec![svc("side"), main_svc("app")]);
    s.drain();
    s.spawned(T0, 0, 10);
    s.spawned(T0, 1, 20);
    assert_eq!(
        s.feed(ms(1), Input::Signal(libc::SIGHUP)),
        vec![Action::Signal {
            pid: 20,
            group: true,
            signal: libc::SIGHUP
        }]
    );
    assert_eq!(
        s.feed(
            ms(2),
            Input::Exited {
                pid: 999,
                status: ExitStatus::Code(0)
            }
        ),
        vec![]
    );
    assert_eq!(s.core.orphans_reaped, 1);
}

#[test]
fn single_command_forwards_the_received_stop_signal() {
    let config = Config::single(vec!["sh".into()], &Default::default());
    let now = Instant::now();
    let mut core = Core::new(&config);
    assert_eq!(core.poll_action(), Some(Action::Spawn(0)));
    core.handle(
        now,
        Input::Spawned {
            service: 0,
            pid: 10,
        },
    );
    core.handle(now, Input::Signal(libc::SIGINT));
    assert_eq!(
        core.poll_action(),
        Some(Action::Signal {
            pid: 10,
            group: true,
            signal: libc::SIGINT
        })
    );
}

#[test]
fn second_stop_request_kills_at_once() {
    let mut s = Sim::new(vec![main_svc("app")]);
    s.drain();
    s.spawned(T0, 0, 10);
    s.feed(T0, Input::Signal(libc::SIGTERM));
    assert_eq!(
        s.feed(ms(100), Input::Signal(libc::SIGINT)),
        vec![
            Action::SweepStrays(libc::SIGKILL),
            Action::Signal {
                pid: 10,
                group: true,
                signal: libc::SIGKILL
            }
        ]
    );
}

#[test]
fn one_shot_success_unblocks_dependents() {
    let mut init = svc("init");
    init.restart = Restart::Never;
    init.ready = Some(Ready::Exec(vec!["false".into()]));
    let mut app = main_svc("app");
    app.depends_on = vec!["init".into()];
    let mut s = Sim::new(vec![init, app]);
    assert_eq!(s.drain(), vec![Action::Spawn(0)]);
    s.spawned(T0, 0, 10);
    assert_eq!(
        s.feed(
            ms(5),
            Input::Exited {
                pid: 10,
                status: ExitStatus::Code(0)
            }
        ),
        vec![Action::StopProbe(0), Action::Spawn(1)]
    );
}

#[test]
fn failed_one_shot_stops_the_container_with_its_code() {
    let mut init = svc("init");
    init.restart = Restart::Never;
    init.ready = Some(Ready::Exec(vec!["false".into()]));
    let mut app = main_svc("app");
    app.depends_on = vec!["init".into()];
    let mut s = Sim::new(vec![init, app]);
    s.drain();
    s.spawned(T0, 0, 10);
    s.exited(ms(5), 10, ExitStatus::Code(4));
    assert_eq!(s.feed(ms(6), Input::NoChildren), vec![Action::Exit(4)]);
}

#[test]
fn backoff_doubles_and_caps() {
    let f = |n| backoff(ms(500), Duration::from_secs(30), n);
    assert_eq!(f(1), ms(500));
    assert_eq!(f(2), ms(1000));
    assert_eq!(f(7), Duration::from_secs(30));
    assert_eq!(f(1000), Duration::from_secs(30));
}

/// A core that leaves the cluster first (2 s cap), with one running main service (pid 10).
fn leaving_sim(stop_timeout: Duration) -> Sim {
    let mut s = Sim::new(vec![main_svc("app")]);
    s.core.stop_timeout = stop_timeout;
    s.core.leave_first(Duration::from_secs(2));
    s.drain();
    s.spawned(T0, 0, 10);
    s
}

fn term(pid: Pid) -> Action {
    Action::Signal {
        pid,
        group: true,
        signal: libc::SIGTERM,
    }
}

#[test]
fn a_stop_request_leaves_first_then_stops_within_the_same_deadline() {
    let mut s = leaving_sim(Duration::from_secs(9));
    // The leave comes first; no service is signalled yet.
    assert_eq!(
        s.feed(ms(100), Input::Signal(libc::SIGTERM)),
        vec![Action::Leave { by: s.at(ms(2100)) }]
    );
    assert!(s.core.stopping());
    assert_eq!(s.core.deadline(), Some(s.at(ms(9100))));
    assert_eq!(s.core.poll_timeout(), Some(s.at(ms(2100))));
    // The leave is done: the services stop, and the deadline is still the first request's.
    assert_eq!(s.feed(ms(1200), Input::Left), vec![term(10)]);
    assert_eq!(s.core.deadline(), Some(s.at(ms(9100))));
    assert_eq!(
        s.core.poll_timeout(),
        Some(s.at(ms(6200))),
        "the service's 5 s grace"
    );
    s.exited(ms(1300), 10, ExitStatus::Code(0));
    assert_eq!(s.drain(), vec![]);
    assert_eq!(s.feed(ms(1301), Input::NoChildren), vec![Action::Exit(0)]);
}

#[test]
fn a_leave_that_does_not_finish_is_given_up_at_its_cap() {
    let mut s = leaving_sim(Duration::from_secs(9));
    s.feed(T0, Input::Signal(libc::SIGTERM));
    assert_eq!(s.feed(ms(1999), Input::Tick), vec![]);
    assert_eq!(s.feed(ms(2000), Input::Tick), vec![term(10)]);
    // An answer that comes late changes nothing.
    assert_eq!(s.feed(ms(2100), Input::Left), vec![]);
}

#[test]
fn a_leave_never_eats_the_services_budget_under_a_short_stop_timeout() {
    // stop_timeout 2 s: the leave may take at most until the kill point (2 s - 0.5 s), and the
    // stubborn service is killed there; muster exits by the deadline.
    let mut s = leaving_sim(Duration::from_secs(2));
    assert_eq!(
        s.feed(T0, Input::Signal(libc::SIGTERM)),
        vec![Action::Leave { by: s.at(ms(1500)) }]
    );
    assert_eq!(s.feed(ms(1500), Input::Tick), vec![term(10)]);
    assert_eq!(s.core.poll_timeout(), Some(s.at(ms(1500))));
    assert_eq!(
        s.feed(ms(1500), Input::Tick),
        vec![
            Action::SweepStrays(libc::SIGKILL),
            Action::Signal {
                pid: 10,
                group: true,
                signal: libc::SIGKILL
            }
        ]
    );
    // It survives even SIGKILL (stuck in the kernel): muster goes at 1.75 s, before the 2 s
    // deadline, as if it had been killed.
    assert_eq!(s.core.poll_timeout(), Some(s.at(ms(1750))));
    assert_eq!(s.feed(ms(1749), Input::Tick), vec![]);
    assert_eq!(s.feed(ms(1750), Input::Tick), vec![Action::Exit(137)]);
}

#[test]
fn a_second_request_cuts_the_leave_short() {
    let mut s = leaving_sim(Duration::from_secs(9));
    s.feed(T0, Input::Signal(libc::SIGTERM));
    assert_eq!(s.feed(ms(300), Input::Signal(libc::SIGINT)), vec![term(10)]);
    assert_eq!(s.core.deadline(), Some(s.at(ms(9000))));
}

#[test]
fn the_main_service_ending_during_the_leave_is_not_restarted_and_stops_muster() {
    let mut app = main_svc("app");
    app.restart = Restart::Always;
    let mut s = Sim::new(vec![app, svc("side")]);
    s.core.leave_first(Duration::from_secs(2));
    s.drain();
    s.spawned(T0, 0, 10);
    s.spawned(T0, 1, 20);
    s.feed(ms(10), Input::Signal(libc::SIGTERM));
    // The side service crashes during the leave: not restarted.
    assert_eq!(s.exited(ms(20), 20, ExitStatus::Code(1)), vec![]);
    // The main service ends: the stop goes on at once, its code is muster's.
    assert_eq!(
        s.exited(ms(30), 10, ExitStatus::Code(3)),
        vec![Action::SweepStrays(libc::SIGTERM)]
    );
    assert_eq!(s.feed(ms(40), Input::NoChildren), vec![Action::Exit(3)]);
}

#[test]
fn without_a_leave_a_request_stops_the_services_at_once() {
    let mut s = Sim::new(vec![main_svc("app")]);
    s.drain();
    s.spawned(T0, 0, 10);
    assert_eq!(s.feed(T0, Input::Signal(libc::SIGTERM)), vec![term(10)]);
    assert_eq!(s.core.deadline(), Some(s.at(Duration::from_secs(9))));
}

/// A core for `muster -- sh` with these knobs, its command running as pid 10.
fn single_sim(knobs: crate::config::Single) -> Sim {
    let config = Config::single(vec!["sh".into()], &knobs);
    let start = Instant::now();
    let mut s = Sim {
        core: Core::new(&config),
        start,
    };
    assert_eq!(s.drain(), vec![Action::Spawn(0)]);
    s.spawned(T0, 0, 10);
    s
}

fn to_group(signal: i32) -> Action {
    Action::Signal {
        pid: 10,
        group: true,
        signal,
    }
}

#[test]
fn every_signal_but_the_stop_requests_and_sigchld_is_forwarded() {
    let mut s = single_sim(Default::default());
    for sig in (1..=64).filter(|&n| {
        ![libc::SIGKILL, libc::SIGSTOP, libc::SIGTERM, libc::SIGINT].contains(&n)
            && ![libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU, libc::SIGCONT].contains(&n)
    }) {
        // (SIGCHLD never reaches the core: the driver reaps on it.)
        assert_eq!(
            s.feed(ms(1), Input::Signal(sig)),
            vec![to_group(sig)],
            "{sig}"
        );
    }
    assert!(!s.core.stopping());
}

#[test]
fn job_control_is_forwarded_then_stops_muster_and_sigcont_gives_the_terminal_back() {
    let mut s = single_sim(Default::default());
    for sig in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
        assert_eq!(
            s.feed(ms(1), Input::Signal(sig)),
            vec![to_group(sig), Action::Suspend]
        );
    }
    assert_eq!(
        s.feed(ms(2), Input::Signal(libc::SIGCONT)),
        vec![Action::Foreground(10), to_group(libc::SIGCONT)]
    );
    // During a stop muster keeps its deadline: the signal is forwarded, muster does not stop.
    s.feed(ms(3), Input::Signal(libc::SIGTERM));
    assert_eq!(
        s.feed(ms(4), Input::Signal(libc::SIGTSTP)),
        vec![to_group(libc::SIGTSTP)]
    );
}

#[test]
fn signal_map_rewrites_forwarded_and_stop_signals_and_can_drop() {
    let knobs = crate::config::Single {
        signal_map: [
            (libc::SIGTERM, libc::SIGQUIT),
            (libc::SIGHUP, 0),
            (libc::SIGUSR1, libc::SIGUSR2),
        ]
        .into(),
        group: Some(false),
        ..Default::default()
    };
    let mut s = single_sim(knobs);
    let alone = |signal| Action::Signal {
        pid: 10,
        group: false,
        signal,
    };
    assert_eq!(s.feed(ms(1), Input::Signal(libc::SIGHUP)), vec![]);
    assert_eq!(
        s.feed(ms(1), Input::Signal(libc::SIGUSR1)),
        vec![alone(libc::SIGUSR2)]
    );
    // SIGTERM still starts the stop; the command is sent SIGQUIT (dumb-init's -r 15:3).
    assert_eq!(
        s.feed(ms(2), Input::Signal(libc::SIGTERM)),
        vec![alone(libc::SIGQUIT)]
    );
    assert!(s.core.stopping());
}

#[test]
fn a_stop_signal_mapped_to_nothing_leaves_only_the_kill() {
    let mut service = main_svc("app");
    service.signal_map = [(libc::SIGTERM, 0)].into();
    service.stop_grace = ms(300);
    let mut s = Sim::new(vec![service]);
    s.drain();
    s.spawned(T0, 0, 10);
    assert_eq!(s.feed(ms(10), Input::Signal(libc::SIGTERM)), vec![]);
    assert_eq!(
        s.feed(ms(310), Input::Tick),
        vec![Action::Signal {
            pid: 10,
            group: true,
            signal: libc::SIGKILL
        }]
    );
}

#[test]
fn success_codes_count_as_success_for_the_exit_and_for_restarts() {
    let mut s = single_sim(crate::config::Single {
        success_codes: vec![143],
        ..Default::default()
    });
    s.feed(ms(1), Input::Signal(libc::SIGTERM));
    let mut actions = s.exited(ms(2), 10, ExitStatus::Signal(libc::SIGTERM));
    actions.extend(s.feed(ms(3), Input::NoChildren));
    assert!(actions.contains(&Action::Exit(0)), "{actions:?}");

    // on-failure: 3 is a success, no restart; the container stops with 0.
    let mut flaky = svc("flaky");
    flaky.restart = Restart::OnFailure;
    flaky.success_codes = vec![3];
    let mut s = Sim::new(vec![flaky]);
    s.drain();
    s.spawned(T0, 0, 20);
    let mut actions = s.exited(ms(5), 20, ExitStatus::Code(3));
    actions.extend(s.feed(ms(6), Input::NoChildren));
    assert!(
        !actions.contains(&Action::Spawn(0)),
        "not restarted: {actions:?}"
    );
    assert!(actions.contains(&Action::Exit(0)), "{actions:?}");
}

#[test]
fn the_single_command_has_the_whole_stop_timeout_as_grace() {
    // 9 s: the kill point is 8.5 s after SIGTERM (no pipe, no log flush: half a second kept),
    // so a command that needs 8 s to stop exits by itself.
    let mut s = single_sim(crate::config::Single {
        stop_timeout: Some(Duration::from_secs(9)),
        ..Default::default()
    });
    s.feed(T0, Input::Signal(libc::SIGTERM));
    assert_eq!(
        s.core.poll_timeout(),
        Some(s.at(Duration::from_millis(8500)))
    );
    assert_eq!(s.feed(Duration::from_millis(8499), Input::Tick), vec![]);
    let mut actions = s.exited(Duration::from_secs(8), 10, ExitStatus::Code(0));
    actions.extend(s.feed(Duration::from_secs(8), Input::NoChildren));
    assert!(actions.contains(&Action::Exit(0)), "{actions:?}");
    // With the output through muster's pipes, the reserve is the whole second.
    let mut piped = main_svc("app");
    piped.stop_grace = Duration::from_secs(30);
    let mut s = Sim::new(vec![piped]);
    s.drain();
    s.spawned(T0, 0, 10);
    s.feed(T0, Input::Signal(libc::SIGTERM));
    assert_eq!(s.core.poll_timeout(), Some(s.at(Duration::from_secs(8))));
}

#[test]
fn crash_limit_zero_never_gives_up() {
    let mut side = svc("side");
    side.crash_limit = 0;
    side.restart_delay_max = ms(2000);
    let mut s = Sim::new(vec![main_svc("app"), side]);
    assert_eq!(s.drain(), vec![Action::Spawn(0), Action::Spawn(1)]);
    s.spawned(T0, 0, 10);
    let mut t = T0;
    for pid in 20..70 {
        s.feed(t, Input::Spawned { service: 1, pid });
        s.exited(t + ms(10), pid, ExitStatus::Code(2));
        let due = s.core.poll_timeout().expect("a restart is always due");
        assert!(due <= s.at(t + ms(10 + 2000)), "back-off capped");
        t = due - s.start;
        assert_eq!(s.feed(t, Input::Tick), vec![Action::Spawn(1)]);
    }
    assert!(!s.core.stopping(), "50 crashes and still running");
}

mod policy;
