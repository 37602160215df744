//! The container's policy: who ends it, crash loops of side services, oneshots, daemons.

use super::*;

/// Crashes service `id` (started at `t` as `pid`) 10 ms after each start, `n` times, each
/// restart at the moment it is due; returns the delays seen and the time after the last.
fn crash_loop(s: &mut Sim, id: ServiceId, mut t: Duration, n: usize) -> (Vec<u64>, Duration) {
    let mut delays = Vec::new();
    for i in 0..n {
        let pid = 1000 + i as Pid;
        s.spawned(t, id, pid);
        let acts = s.exited(t + ms(10), pid, ExitStatus::Code(1));
        assert!(
            acts.iter().all(|a| !matches!(a, Action::Signal { .. })),
            "a side crash signals nothing: {acts:?}"
        );
        let Some(due) = s.core.poll_timeout() else {
            return (delays, t + ms(10));
        };
        delays.push((due - s.at(t + ms(10))).as_millis() as u64);
        t = due - s.start;
        assert_eq!(s.feed(t, Input::Tick), vec![Action::Spawn(id)]);
    }
    (delays, t)
}

#[test]
fn a_side_crash_loop_backs_off_to_the_ceiling_and_never_takes_the_main_service_down() {
    let mut s = Sim::new(vec![main_svc("app"), svc("forwarder")]);
    assert_eq!(s.core.services[1].spec.crash_limit, 0, "never give up");
    assert_eq!(s.drain(), vec![Action::Spawn(0), Action::Spawn(1)]);
    s.spawned(T0, 0, 10);
    let (delays, t) = crash_loop(&mut s, 1, T0, 40);
    assert_eq!(delays.len(), 40, "restarted every time");
    assert_eq!(
        &delays[..8],
        &[500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
    );
    assert!(
        delays[7..].iter().all(|&d| d == 30000),
        "capped at restart_delay_max"
    );
    assert_eq!(
        s.core.services[1].restart_reports, 7,
        "reported once per back-off step, not per restart"
    );
    assert!(!s.core.stopping(), "the container goes on");
    // The main service still decides the end.
    s.exited(t + ms(1), 10, ExitStatus::Code(0));
    assert!(s.core.stopping());
}

#[test]
fn a_long_run_resets_the_steps_so_the_next_loop_is_reported_again() {
    let mut s = Sim::new(vec![main_svc("app"), svc("side")]);
    s.drain();
    let (_, t) = crash_loop(&mut s, 1, T0, 3);
    assert_eq!(s.core.services[1].restart_reports, 3);
    s.spawned(t, 1, 50);
    s.exited(t + Duration::from_secs(60), 50, ExitStatus::Code(1));
    assert_eq!(s.core.services[1].restart_reports, 4);
    assert_eq!(
        s.core.poll_timeout(),
        Some(s.at(t + Duration::from_secs(60) + ms(500)))
    );
}

#[test]
fn a_side_service_reaching_its_crash_limit_is_left_stopped_and_the_container_goes_on() {
    let mut side = svc("side");
    side.crash_limit = 2;
    let mut s = Sim::new(vec![main_svc("app"), side]);
    s.drain();
    s.spawned(T0, 0, 10);
    let (delays, t) = crash_loop(&mut s, 1, T0, 10);
    assert_eq!(delays, vec![500, 1000], "two restarts, then given up");
    assert_eq!(s.core.services[1].state, State::Down);
    assert!(!s.core.stopping());
    assert_eq!(s.core.poll_timeout(), None, "nothing more to do");
    s.exited(t + ms(5), 10, ExitStatus::Code(0));
    assert_eq!(s.feed(t + ms(6), Input::NoChildren), vec![Action::Exit(0)]);
}

#[test]
fn crash_limit_zero_on_a_critical_service_never_gives_up() {
    let mut side = svc("db");
    side.critical = true;
    side.crash_limit = 0;
    let mut s = Sim::new(vec![main_svc("app"), side]);
    s.drain();
    let (delays, _) = crash_loop(&mut s, 1, T0, 30);
    assert_eq!(delays.len(), 30);
    assert!(!s.core.stopping());
}

#[test]
fn a_critical_service_that_ends_ends_the_container_with_its_code() {
    let mut db = svc("db");
    db.critical = true;
    db.restart = Restart::Never;
    let mut s = Sim::new(vec![main_svc("app"), db]);
    s.drain();
    s.spawned(T0, 0, 10);
    s.spawned(T0, 1, 11);
    let acts = s.exited(ms(100), 11, ExitStatus::Code(3));
    assert_eq!(acts, vec![term(10)]);
    s.exited(ms(110), 10, ExitStatus::Code(0));
    assert_eq!(s.feed(ms(111), Input::NoChildren), vec![Action::Exit(3)]);
}

#[test]
fn restart_never_side_services_that_end_are_done_and_the_container_goes_on() {
    let mut ok = svc("warmup");
    ok.restart = Restart::Never;
    let mut bad = svc("report");
    bad.restart = Restart::Never;
    let mut s = Sim::new(vec![main_svc("app"), ok, bad]);
    s.drain();
    s.spawned(T0, 0, 10);
    s.spawned(T0, 1, 11);
    s.spawned(T0, 2, 12);
    assert_eq!(s.exited(ms(50), 11, ExitStatus::Code(0)), vec![]);
    assert_eq!(s.exited(ms(60), 12, ExitStatus::Code(2)), vec![]);
    assert!(!s.core.stopping());
    assert_eq!(s.core.poll_timeout(), None);
    s.exited(ms(70), 10, ExitStatus::Code(0));
    assert_eq!(
        s.feed(ms(71), Input::NoChildren),
        vec![Action::Exit(0)],
        "the main service's code, not the side service's"
    );
}

#[test]
fn a_default_side_service_that_exits_0_once_is_restarted_and_never_ends_the_container() {
    let mut s = Sim::new(vec![main_svc("app"), svc("warmup")]);
    s.drain();
    s.spawned(T0, 0, 10);
    s.spawned(T0, 1, 11);
    assert_eq!(s.exited(ms(50), 11, ExitStatus::Code(0)), vec![]);
    assert_eq!(s.core.poll_timeout(), Some(s.at(ms(550))));
    assert!(!s.core.stopping());
}

#[test]
fn a_oneshot_completes_before_its_dependents_start_and_is_never_restarted() {
    let mut migrate = svc("migrate");
    migrate.oneshot = true; // restart stays "always" here: oneshot wins
    let mut app = main_svc("app");
    app.depends_on = vec!["migrate".into()];
    let mut s = Sim::new(vec![migrate, app]);
    assert_eq!(s.drain(), vec![Action::Spawn(0)]);
    assert_eq!(
        s.spawned(T0, 0, 10),
        vec![],
        "running is not enough: the dependent waits for the end"
    );
    assert_eq!(
        s.exited(ms(800), 10, ExitStatus::Code(0)),
        vec![Action::Spawn(1)]
    );
    assert_eq!(s.core.services[0].state, State::Down);
    assert_eq!(s.core.poll_timeout(), None, "no restart");
}

#[test]
fn a_failed_oneshot_stops_the_start_with_its_code_even_without_dependents() {
    let mut warm = svc("warm");
    warm.oneshot = true;
    let mut s = Sim::new(vec![main_svc("app"), warm]);
    s.drain();
    s.spawned(T0, 0, 10);
    s.spawned(T0, 1, 11);
    assert_eq!(s.exited(ms(30), 11, ExitStatus::Code(5)), vec![term(10)]);
    s.exited(ms(40), 10, ExitStatus::Signal(libc::SIGTERM));
    assert_eq!(s.feed(ms(41), Input::NoChildren), vec![Action::Exit(5)]);
}

#[test]
fn a_service_that_daemonizes_is_reported_and_not_started_again() {
    let mut web = svc("web");
    web.restart = Restart::Always;
    let mut after = svc("after");
    after.depends_on = vec!["web".into()];
    let mut s = Sim::new(vec![main_svc("app"), web, after]);
    assert_eq!(s.drain(), vec![Action::Spawn(0), Action::Spawn(1)]);
    s.spawned(T0, 0, 10);
    assert_eq!(s.spawned(T0, 1, 11), vec![Action::Spawn(2)]);
    s.spawned(T0, 2, 12);
    s.feed(ms(40), Input::LeftBehind { pid: 11 });
    assert_eq!(s.exited(ms(40), 11, ExitStatus::Code(0)), vec![]);
    assert!(s.core.services[1].daemonized);
    assert_eq!(s.core.services[1].state, State::Down);
    assert_eq!(s.core.poll_timeout(), None, "no second copy is started");
    assert!(!s.core.stopping());
}

#[test]
fn leftovers_of_a_crash_or_of_a_long_run_are_no_daemon() {
    let mut s = Sim::new(vec![main_svc("app"), svc("a"), svc("b")]);
    s.drain();
    s.spawned(T0, 1, 11);
    s.spawned(T0, 2, 12);
    // A crash that leaves its group behind is a crash: restarted.
    s.feed(ms(40), Input::LeftBehind { pid: 11 });
    s.exited(ms(40), 11, ExitStatus::Code(1));
    assert!(!s.core.services[1].daemonized);
    assert!(matches!(s.core.services[1].state, State::Backoff { .. }));
    // Exit 0 after min_uptime with a child left: restarted (restart = "always").
    s.feed(Duration::from_secs(20), Input::LeftBehind { pid: 12 });
    s.exited(Duration::from_secs(20), 12, ExitStatus::Code(0));
    assert!(!s.core.services[2].daemonized);
    assert!(matches!(s.core.services[2].state, State::Backoff { .. }));
    // A flag for a run that is gone does not stick to the next run.
    s.feed(ms(540), Input::Tick);
    s.spawned(ms(540), 1, 21);
    s.exited(ms(600), 21, ExitStatus::Code(0));
    assert!(!s.core.services[1].daemonized);
}

#[test]
fn without_a_main_service_the_container_ends_when_every_service_is_down() {
    let mut a = svc("a");
    a.restart = Restart::Never;
    let mut b = svc("b");
    b.restart = Restart::Never;
    let mut s = Sim::new(vec![a, b]);
    s.drain();
    s.spawned(T0, 0, 10);
    s.spawned(T0, 1, 11);
    s.exited(ms(10), 10, ExitStatus::Code(0));
    assert!(!s.core.stopping());
    s.exited(ms(20), 11, ExitStatus::Code(7));
    assert_eq!(s.feed(ms(21), Input::NoChildren), vec![Action::Exit(7)]);
}

#[test]
fn a_side_service_given_up_on_while_others_wait_for_it_stops_the_start() {
    let mut db = svc("db");
    db.crash_limit = 1;
    db.ready = Some(Ready::Tcp("127.0.0.1:5432".into()));
    let mut app = main_svc("app");
    app.depends_on = vec!["db".into()];
    let mut s = Sim::new(vec![db, app]);
    assert_eq!(s.drain(), vec![Action::Spawn(0)]);
    s.spawned(T0, 0, 10);
    s.exited(ms(10), 10, ExitStatus::Code(2));
    s.feed(ms(510), Input::Tick);
    s.spawned(ms(510), 0, 11);
    s.exited(ms(520), 11, ExitStatus::Code(2));
    assert!(s.core.stopping(), "app could never start");
    assert_eq!(s.feed(ms(521), Input::NoChildren), vec![Action::Exit(2)]);
}
