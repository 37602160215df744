//! The supervisor's pure core: a state machine that decides what to start, restart, signal and
//! kill, and with which code muster exits. It is fed `(now, Input)` by the driver and answers
//! with `Action`s drained through `poll_action()`; `poll_timeout()` says when it next needs a
//! `Tick`. It never reads a clock, spawns or signals anything itself, so every rule here is
//! tested with plain values (see `tests` below).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::{Config, Output, Restart, Service, signal_name};

/// A process id as the kernel gives it.
pub type Pid = i32;

/// Index of a service in the configuration's list.
pub type ServiceId = usize;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called exit with this code.
    Code(i32),
    /// A signal with this number killed it.
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + the signal number.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }

    /// Whether the process exited with code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by {}", signal_name(*s)),
        }
    }
}

/// What happened, as told by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A `Spawn` action succeeded.
    Spawned {
        /// The service spawned.
        service: ServiceId,
        /// Its process id (and process group id).
        pid: Pid,
    },
    /// A `Spawn` action failed before the program ran; `code` is 126 or 127.
    SpawnFailed {
        /// The service that could not be spawned.
        service: ServiceId,
        /// 127 when the program was not found, 126 when it could not be executed.
        code: i32,
    },
    /// The reaper collected a process (a service or any orphan).
    Exited {
        /// The reaped process.
        pid: Pid,
        /// How it ended.
        status: ExitStatus,
    },
    /// A readiness probe succeeded for this run of the service.
    Ready {
        /// The service probed.
        service: ServiceId,
        /// The run the probe was started for.
        pid: Pid,
    },
    /// muster received this signal.
    Signal(i32),
    /// The reaper found that muster has no child process left at all.
    NoChildren,
    /// The leave asked by [`Action::Leave`] is done.
    Left,
    /// Time passed (the deadline from `poll_timeout` or any other wake-up).
    Tick,
}

/// What the driver must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start the service and answer with `Spawned` or `SpawnFailed`.
    Spawn(ServiceId),
    /// Start probing readiness of this run; answer `Ready` when it is.
    Probe {
        /// The service to probe.
        service: ServiceId,
        /// The run to probe.
        pid: Pid,
    },
    /// Stop probing this service (it ended or is being stopped).
    StopProbe(ServiceId),
    /// Send a signal to a process, or to its whole process group.
    Signal {
        /// The process (also the group id: each service leads its own group).
        pid: Pid,
        /// Whether to signal the group rather than the process.
        group: bool,
        /// The signal number.
        signal: i32,
    },
    /// Send a signal to every process left under muster that is not a service.
    SweepStrays(i32),
    /// Stop muster itself until a SIGCONT (job control: it was sent SIGTSTP, SIGTTIN or
    /// SIGTTOU, and forwarded it). The driver cannot do it as PID 1: the kernel does not let
    /// PID 1 stop itself.
    Suspend,
    /// Give the terminal's foreground back to this run of the main service, if muster holds
    /// the terminal and gave it the foreground at its start (a SIGCONT came: after a shell's
    /// `fg`, the foreground is muster's). Comes before the SIGCONT is forwarded.
    Foreground(Pid),
    /// Leave the cluster (the before-stop work) by `by` at the latest, then answer `Left`.
    /// No service is signalled before the answer comes or `by` passes.
    Leave {
        /// When the leave must be over.
        by: Instant,
    },
    /// Exit muster with this code.
    Exit(i32),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Waiting for its dependencies to be ready.
    Waiting,
    /// `Spawn` was asked; the answer has not come yet.
    Spawning,
    /// Running; `ready` once its probe succeeded, otherwise it must be by `ready_by`.
    Running {
        pid: Pid,
        started: Instant,
        ready: bool,
        ready_by: Instant,
    },
    /// Crashed; starts again at `until`.
    Backoff { until: Instant },
    /// Asked to stop; SIGKILL at `kill_at` unless it has been sent already.
    Stopping {
        pid: Pid,
        kill_at: Instant,
        killed: bool,
    },
    /// Ended for good.
    Down,
}

struct Svc {
    spec: Service,
    state: State,
    /// Runs in a row that ended within `min_uptime`.
    crashes: u32,
    /// How its last run ended.
    last: Option<ExitStatus>,
    /// Whether a readiness probe runs for the current run.
    probing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Running,
    /// A stop request came and the cluster is being left; the services still run.
    Leaving {
        /// When muster must have exited: the first request plus `stop_timeout`.
        deadline: Instant,
        /// When the leave is given up.
        until: Instant,
        /// The signal that asked for the stop.
        trigger: Option<i32>,
    },
    Stopping {
        /// When muster must have exited: the first stop request plus `stop_timeout`.
        deadline: Instant,
        /// The signal that started the stop, forwarded to services without a stop signal.
        trigger: Option<i32>,
        /// Whether the strays were sent SIGTERM / SIGKILL already.
        swept: bool,
        killed_all: bool,
    },
    Exited,
}

/// Most of the stop budget kept for after the last SIGKILL: reaping what was killed, then the
/// driver's last output and the log flush. A quarter of `stop_timeout` when that is less.
const EXIT_RESERVE: Duration = Duration::from_millis(1000);

/// The same when nothing but the reaping comes after the last SIGKILL: no service's output
/// goes through muster's pipes and no log is shipped (`muster -- CMD`). A command's own
/// shutdown may then use up to half a second more of the budget.
const BARE_EXIT_RESERVE: Duration = Duration::from_millis(500);

/// The supervisor's decisions for one configuration.
pub struct Core {
    services: Vec<Svc>,
    stop_timeout: Duration,
    /// [`EXIT_RESERVE`], or [`BARE_EXIT_RESERVE`] when no output or log flush follows.
    reserve_cap: Duration,
    /// The longest leave before stopping, when there is one to do.
    leave: Option<Duration>,
    /// When muster must have exited, once a stop began (kept after the exit).
    stop_deadline: Option<Instant>,
    main: Option<ServiceId>,
    phase: Phase,
    /// Exit code decided before the main service's own end (give-up, failed readiness).
    exit_code: Option<i32>,
    /// Whether the driver reported that no child process is left.
    no_children: bool,
    actions: VecDeque<Action>,
    /// Processes reaped that were not services (orphans adopted by muster).
    pub orphans_reaped: u64,
}

impl Core {
    /// A core for this configuration; its first actions start the services that depend on
    /// nothing.
    pub fn new(config: &Config) -> Core {
        let services: Vec<Svc> = config
            .services
            .iter()
            .map(|spec| Svc {
                spec: spec.clone(),
                state: State::Waiting,
                crashes: 0,
                last: None,
                probing: false,
            })
            .collect();
        let main = services.iter().position(|s| s.spec.main);
        let piped = services.iter().any(|s| s.spec.output == Output::Pipe);
        let reserve_cap = if piped || config.logship.is_some() {
            EXIT_RESERVE
        } else {
            BARE_EXIT_RESERVE
        };
        let mut core = Core {
            services,
            stop_timeout: config.stop_timeout,
            reserve_cap,
            leave: None,
            stop_deadline: None,
            main,
            phase: Phase::Running,
            exit_code: None,
            no_children: false,
            actions: VecDeque::new(),
            orphans_reaped: 0,
        };
        core.start_waiting();
        core
    }

    /// Makes a stop request (SIGTERM, SIGINT) leave the cluster first, for at most `cap`
    /// ([`Action::Leave`]), within the same stop deadline.
    pub fn leave_first(&mut self, cap: Duration) {
        self.leave = Some(cap);
    }

    /// The stop deadline once a stop began: muster exits by then.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Leaving { deadline, .. } | Phase::Stopping { deadline, .. } => Some(deadline),
            Phase::Running | Phase::Exited => self.stop_deadline,
        }
    }

    /// The part of the stop budget kept for after the last SIGKILL.
    fn reserve(&self) -> Duration {
        self.reserve_cap.min(self.stop_timeout / 4)
    }

    /// When everything still running gets SIGKILL: the deadline less the reserve.
    fn kill_point(&self, deadline: Instant) -> Instant {
        deadline - self.reserve()
    }

    /// When muster exits even with processes that survived SIGKILL: half the reserve after
    /// the kill point, leaving the other half for the last output and the log flush.
    fn give_up_point(&self, deadline: Instant) -> Instant {
        self.kill_point(deadline) + self.reserve() / 2
    }

    /// The service behind an id, for the driver.
    pub fn service(&self, id: ServiceId) -> &Service {
        &self.services[id].spec
    }

    /// The next action for the driver, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When the core next needs a `Tick`, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for s in &self.services {
            match s.state {
                State::Backoff { until } => at(until),
                State::Running {
                    ready: false,
                    ready_by,
                    ..
                } => at(ready_by),
                State::Stopping {
                    kill_at,
                    killed: false,
                    ..
                } => at(kill_at),
                _ => {}
            }
        }
        match self.phase {
            Phase::Leaving { until, .. } => at(until),
            Phase::Stopping {
                deadline,
                killed_all,
                ..
            } => {
                if killed_all {
                    at(self.give_up_point(deadline));
                } else {
                    at(self.kill_point(deadline));
                }
            }
            Phase::Running | Phase::Exited => {}
        }
        next
    }

    /// Whether muster is shutting down (leaving or stopping services).
    pub fn stopping(&self) -> bool {
        matches!(self.phase, Phase::Leaving { .. } | Phase::Stopping { .. })
    }

    /// Feeds what happened at `now`.
    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Spawned { service, pid } => self.spawned(service, pid, now),
            Input::SpawnFailed { service, code } => {
                if self.services[service].state == State::Spawning {
                    self.services[service].state = State::Running {
                        pid: 0,
                        started: now,
                        ready: false,
                        ready_by: now,
                    };
                    self.ended(service, ExitStatus::Code(code), now);
                }
            }
            Input::Exited { pid, status } => {
                let found = self.services.iter().position(|s| match s.state {
                    State::Running { pid: p, .. } | State::Stopping { pid: p, .. } => p == pid,
                    _ => false,
                });
                match found {
                    Some(id) => self.ended(id, status, now),
                    None => self.orphans_reaped += 1,
                }
            }
            Input::Ready { service, pid } => self.ready(service, pid),
            Input::Signal(sig) => self.signal(sig, now),
            Input::NoChildren => self.no_children = true,
            Input::Left => {
                if let Phase::Leaving { trigger, .. } = self.phase {
                    self.begin_stop(now, trigger, None);
                }
            }
            Input::Tick => self.tick(now),
        }
        self.progress(now);
    }

    fn spawned(&mut self, id: ServiceId, pid: Pid, now: Instant) {
        let svc = &mut self.services[id];
        if svc.state != State::Spawning {
            return;
        }
        self.no_children = false;
        let has_probe = svc.spec.ready.is_some();
        svc.state = State::Running {
            pid,
            started: now,
            ready: !has_probe,
            ready_by: now + svc.spec.ready_timeout,
        };
        tracing::info!(service = %svc.spec.name, pid, "started");
        if has_probe {
            svc.probing = true;
            self.actions.push_back(Action::Probe { service: id, pid });
        } else {
            self.start_waiting();
        }
        if self.stopping() {
            // A stop began while the spawn was under way: stop this run too.
            self.progress(now);
        }
    }

    fn ready(&mut self, id: ServiceId, pid: Pid) {
        let svc = &mut self.services[id];
        if let State::Running {
            pid: p,
            ref mut ready,
            ..
        } = svc.state
        {
            if p == pid && !*ready {
                *ready = true;
                svc.probing = false;
                tracing::info!(service = %svc.spec.name, pid, "ready");
                self.start_waiting();
            }
        }
    }

    /// A signal muster received (never SIGCHLD: the driver reaps on it). SIGTERM and SIGINT
    /// ask for the stop; every other one is forwarded to the main service (to every service
    /// when none is main), rewritten by its `signal_map`. Job control stops muster too, after
    /// the forward, unless a stop is under way (it must keep its deadline).
    fn signal(&mut self, sig: i32, now: Instant) {
        if sig == libc::SIGTERM || sig == libc::SIGINT {
            self.stop_request(sig, now);
            return;
        }
        let targets: Vec<ServiceId> = match self.main {
            Some(m) => vec![m],
            None => (0..self.services.len()).collect(),
        };
        if sig == libc::SIGCONT {
            if let Some(State::Running { pid, .. }) = self.main.map(|m| self.services[m].state) {
                self.actions.push_back(Action::Foreground(pid));
            }
        }
        for id in targets {
            if let State::Running { pid, .. } | State::Stopping { pid, .. } =
                self.services[id].state
            {
                let spec = &self.services[id].spec;
                if let Some(signal) = spec.rewrite(sig) {
                    self.actions.push_back(Action::Signal {
                        pid,
                        group: spec.signal_group,
                        signal,
                    });
                }
            }
        }
        let job_control = matches!(sig, libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU);
        if job_control && self.phase == Phase::Running {
            self.actions.push_back(Action::Suspend);
        }
    }

    /// SIGTERM or SIGINT: the first starts the stop (or the leave), a second one cuts the
    /// leave short or kills at once.
    fn stop_request(&mut self, sig: i32, now: Instant) {
        let reserve = self.reserve();
        match self.phase {
            Phase::Running => match self.leave {
                Some(cap) => {
                    let deadline = now + self.stop_timeout;
                    let until = (now + cap).min(self.kill_point(deadline));
                    tracing::info!(signal = %signal_name(sig), "leaving the cluster before stopping services");
                    self.phase = Phase::Leaving {
                        deadline,
                        until,
                        trigger: Some(sig),
                    };
                    self.actions.push_back(Action::Leave { by: until });
                }
                None => {
                    tracing::info!(signal = %signal_name(sig), "stopping services");
                    self.begin_stop(now, Some(sig), None);
                }
            },
            Phase::Leaving { .. } => {
                // A second request: the leave is cut short, the services stop now.
                tracing::info!(signal = %signal_name(sig), "stop requested again, stopping services now");
                self.begin_stop(now, Some(sig), None);
            }
            Phase::Stopping {
                ref mut deadline, ..
            } => {
                // A second request: no more grace.
                tracing::warn!(signal = %signal_name(sig), "stop requested again, killing now");
                // The kill point is now; what is left is the time kept for the exit.
                *deadline = (*deadline).min(now + reserve);
                self.tick(now);
            }
            Phase::Exited => {}
        }
    }

    /// Runs the rules of an ended run.
    fn ended(&mut self, id: ServiceId, status: ExitStatus, now: Instant) {
        let status = self.counted(id, status);
        let svc = &mut self.services[id];
        let started = match svc.state {
            State::Running { started, .. } => Some(started),
            _ => None,
        };
        svc.last = Some(status);
        if svc.probing {
            svc.probing = false;
            self.actions.push_back(Action::StopProbe(id));
        }
        let name = svc.spec.name.clone();
        if matches!(self.phase, Phase::Leaving { .. } | Phase::Stopping { .. }) {
            // Nothing restarts once a stop began; the main service ending cuts a leave short.
            tracing::info!(service = %name, %status, "stopped");
            svc.state = State::Down;
            if Some(id) == self.main && self.exit_code.is_none() {
                self.exit_code = Some(status.code());
            }
            if Some(id) == self.main {
                if let Phase::Leaving { trigger, .. } = self.phase {
                    self.begin_stop(now, trigger, None);
                }
            }
            return;
        }
        let restart = match svc.spec.restart {
            Restart::Always => true,
            Restart::OnFailure => !status.success(),
            Restart::Never => false,
        };
        if !restart {
            svc.state = State::Down;
            if status.success() {
                tracing::info!(service = %name, %status, "ended");
            } else {
                tracing::warn!(service = %name, %status, "ended");
            }
            if Some(id) == self.main {
                self.begin_stop(now, None, Some(status.code()));
            } else if !status.success() && self.has_waiting_dependents(id) {
                tracing::error!(service = %name, "a service that others wait for has failed");
                self.begin_stop(now, None, Some(status.code()));
            } else if self.main.is_none() && self.services.iter().all(|s| s.state == State::Down) {
                let code = self
                    .services
                    .iter()
                    .filter_map(|s| s.last)
                    .find(|st| !st.success())
                    .map_or(0, ExitStatus::code);
                self.begin_stop(now, None, Some(code));
            } else {
                // A one-shot that succeeded may unblock its dependents.
                self.start_waiting();
            }
            return;
        }
        let ran = started.map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        if ran >= svc.spec.min_uptime {
            svc.crashes = 0;
        }
        svc.crashes += 1;
        if svc.spec.crash_limit > 0 && svc.crashes > svc.spec.crash_limit {
            tracing::error!(
                service = %name,
                %status,
                crashes = svc.crashes,
                "crash loop, giving up"
            );
            svc.state = State::Down;
            let code = if status.success() { 1 } else { status.code() };
            self.begin_stop(now, None, Some(code));
            return;
        }
        let delay = backoff(
            svc.spec.restart_delay,
            svc.spec.restart_delay_max,
            svc.crashes,
        );
        tracing::warn!(
            service = %name,
            %status,
            delay_ms = delay.as_millis() as u64,
            "restarting"
        );
        svc.state = State::Backoff { until: now + delay };
    }

    /// How a run's end counts: a code in the service's `success_codes` as exit code 0.
    fn counted(&self, id: ServiceId, status: ExitStatus) -> ExitStatus {
        let spec = &self.services[id].spec;
        if status == ExitStatus::Code(0) || !spec.counts_as_success(status.code()) {
            return status;
        }
        tracing::info!(service = %spec.name, %status, "counted as success (success_codes)");
        ExitStatus::Code(0)
    }

    fn has_waiting_dependents(&self, id: ServiceId) -> bool {
        let name = &self.services[id].spec.name;
        self.services
            .iter()
            .any(|s| s.state == State::Waiting && s.spec.depends_on.contains(name))
    }

    /// Whether every dependency of `id` is ready, or a finished one-shot that succeeded.
    fn deps_satisfied(&self, id: ServiceId) -> bool {
        self.services[id].spec.depends_on.iter().all(|dep| {
            self.services.iter().any(|s| {
                &s.spec.name == dep
                    && match s.state {
                        State::Running { ready, .. } => ready,
                        State::Down => {
                            s.spec.restart == Restart::Never
                                && s.last.is_some_and(ExitStatus::success)
                        }
                        _ => false,
                    }
            })
        })
    }

    fn start_waiting(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        for id in 0..self.services.len() {
            if self.services[id].state == State::Waiting && self.deps_satisfied(id) {
                self.services[id].state = State::Spawning;
                self.actions.push_back(Action::Spawn(id));
            }
        }
    }

    /// Starts stopping the services; the deadline is the one computed at the first stop
    /// request when a leave came first.
    fn begin_stop(&mut self, now: Instant, trigger: Option<i32>, code: Option<i32>) {
        let deadline = match self.phase {
            Phase::Running => now + self.stop_timeout,
            Phase::Leaving { deadline, .. } => deadline,
            Phase::Stopping { .. } | Phase::Exited => return,
        };
        if self.exit_code.is_none() {
            self.exit_code = code;
        }
        self.phase = Phase::Stopping {
            deadline,
            trigger,
            swept: false,
            killed_all: false,
        };
        for svc in &mut self.services {
            if matches!(svc.state, State::Waiting | State::Backoff { .. }) {
                svc.state = State::Down;
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        let kill_point = self.deadline().map(|d| self.kill_point(d));
        match self.phase {
            Phase::Running => {
                for id in 0..self.services.len() {
                    match self.services[id].state {
                        State::Backoff { until } if until <= now => {
                            self.services[id].state = State::Spawning;
                            self.actions.push_back(Action::Spawn(id));
                        }
                        State::Running {
                            ready: false,
                            ready_by,
                            ..
                        } if ready_by <= now => {
                            let svc = &self.services[id];
                            tracing::error!(
                                service = %svc.spec.name,
                                timeout_ms = svc.spec.ready_timeout.as_millis() as u64,
                                "not ready in time, stopping"
                            );
                            self.begin_stop(now, None, Some(1));
                            break;
                        }
                        _ => {}
                    }
                }
            }
            Phase::Leaving { until, trigger, .. } => {
                if now >= until {
                    tracing::warn!("the leave did not finish in time; stopping services");
                    self.begin_stop(now, trigger, None);
                }
            }
            Phase::Stopping {
                ref mut killed_all, ..
            } => {
                let past_deadline = kill_point.is_some_and(|k| now >= k);
                if past_deadline && !*killed_all {
                    *killed_all = true;
                    self.actions.push_back(Action::SweepStrays(libc::SIGKILL));
                }
                for svc in &mut self.services {
                    if let State::Stopping {
                        pid,
                        kill_at,
                        ref mut killed,
                    } = svc.state
                    {
                        if !*killed && (kill_at <= now || past_deadline) {
                            *killed = true;
                            tracing::warn!(service = %svc.spec.name, pid, "grace over, killing");
                            self.actions.push_back(Action::Signal {
                                pid,
                                group: true,
                                signal: libc::SIGKILL,
                            });
                        }
                    }
                }
            }
            Phase::Exited => {}
        }
    }

    /// Moves a stop forward: stops services whose dependents are down, sweeps strays, exits.
    fn progress(&mut self, now: Instant) {
        let Phase::Stopping {
            deadline,
            trigger,
            swept,
            killed_all,
        } = self.phase
        else {
            return;
        };
        let kill_point = self.kill_point(deadline);
        for id in 0..self.services.len() {
            let State::Running { pid, .. } = self.services[id].state else {
                continue;
            };
            let name = &self.services[id].spec.name;
            let dependents_up = self.services.iter().any(|s| {
                s.spec.depends_on.contains(name)
                    && matches!(
                        s.state,
                        State::Running { .. } | State::Stopping { .. } | State::Spawning
                    )
            });
            if dependents_up {
                continue;
            }
            let svc = &mut self.services[id];
            let asked = svc.spec.stop_signal.or(trigger).unwrap_or(libc::SIGTERM);
            let signal = svc.spec.rewrite(asked);
            if svc.probing {
                svc.probing = false;
                self.actions.push_back(Action::StopProbe(id));
            }
            let kill_at = (now + svc.spec.stop_grace).min(kill_point);
            let shown = signal.map_or_else(|| "none (signal_map)".to_owned(), signal_name);
            tracing::info!(service = %svc.spec.name, pid, signal = %shown, "stopping");
            svc.state = State::Stopping {
                pid,
                kill_at,
                killed: killed_all,
            };
            if let Some(signal) = signal {
                self.actions.push_back(Action::Signal {
                    pid,
                    group: svc.spec.signal_group,
                    signal,
                });
            }
            if killed_all {
                self.actions.push_back(Action::Signal {
                    pid,
                    group: true,
                    signal: libc::SIGKILL,
                });
            }
        }
        let all_down = self.services.iter().all(|s| matches!(s.state, State::Down));
        // Past this, muster exits even with processes that survived SIGKILL, so that it is
        // gone by the deadline.
        let hard_limit = killed_all && now >= self.give_up_point(deadline);
        if !all_down && !hard_limit {
            return;
        }
        if all_down && !swept {
            if let Phase::Stopping { ref mut swept, .. } = self.phase {
                *swept = true;
            }
            self.actions.push_back(Action::SweepStrays(libc::SIGTERM));
            return;
        }
        if self.no_children || hard_limit {
            if hard_limit && !self.no_children {
                tracing::error!("processes survived SIGKILL; exiting without them");
            }
            let code = self.exit_code.unwrap_or_else(|| match self.main {
                // A main service that outlived SIGKILL counts as killed by it.
                Some(m) if self.services[m].state != State::Down => 128 + libc::SIGKILL,
                Some(m) => self.services[m].last.map_or(0, ExitStatus::code),
                None => 0,
            });
            self.stop_deadline = Some(deadline);
            self.phase = Phase::Exited;
            self.actions.push_back(Action::Exit(code));
        }
    }
}

/// The back-off before restart number `crashes` (1-based): doubling from `first`, capped.
pub fn backoff(first: Duration, max: Duration, crashes: u32) -> Duration {
    let factor = 1u32
        .checked_shl(crashes.saturating_sub(1))
        .unwrap_or(u32::MAX);
    first.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests;
