//! The supervisor's driver: a single-threaded tokio loop that feeds the core what happens
//! (signals, reaped children, readiness, time) and carries out the core's actions (spawn,
//! signal, probe, sweep, exit).

// The driver is where the supervisor reads the clock.
#![allow(clippy::disallowed_methods)]

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::children::Children;
use super::core::{Action, Core, Input, Pid, ServiceId};
use super::output::{ServicePipes, Sink, Stream, Tap};
use super::ready::Probe;
use super::signals::{Inherited, Installed, Receiver};
use super::spawn::{self, Extras, Stdio3};
use super::{reaper, strays};
use crate::config::{Config, Output, Ready};

/// How long muster waits, after its last child is gone, for output still in the pipes.
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);

/// Work to do when the first stop request arrives, before any service is signalled (leaving
/// the gossip cluster so the load balancer drains this node first). It is given the instant
/// by which it must be done, and is dropped then if it is not.
pub type BeforeStop = Box<dyn FnOnce(Instant) -> Pin<Box<dyn Future<Output = ()>>>>;

/// The before-stop work under way.
type Leaving = Pin<Box<dyn Future<Output = ()>>>;

/// Longest time the before-stop work may take, within the stop deadline.
pub const LEAVE_CAP: Duration = Duration::from_secs(2);

/// Kept from the stop deadline for muster's own exit, after the last output and the log flush.
pub const EXIT_MARGIN: Duration = Duration::from_millis(100);

/// How the supervisor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// muster's exit code.
    pub code: i32,
    /// When whatever runs after the supervisor (the log flush) must be done: the stop deadline
    /// (the first stop request plus `stop_timeout`) less [`EXIT_MARGIN`].
    pub work_by: Instant,
}

/// Runs the configuration until muster must exit. `inherited` must have been captured before
/// the runtime started; this runs inside a current-thread runtime. `tap`, when given,
/// receives every line of the services' output too (log shipping); every line has been handed
/// to it when this returns. `children` is the registry of muster's own children (helper
/// commands, readiness checks), whose statuses the reaper hands over. `signals` is what
/// [`super::signals::install`] set up before the first spawn.
pub async fn supervise(
    config: Config,
    inherited: Inherited,
    signals: Installed,
    before_stop: Option<BeforeStop>,
    tap: Option<Tap>,
    children: Children,
) -> anyhow::Result<Ended> {
    let mut driver = Driver::start(config, inherited, signals, tap, children)?;
    if before_stop.is_some() {
        driver.core.leave_first(LEAVE_CAP);
    }
    driver.before_stop = before_stop;
    driver.run().await
}

/// Makes muster the reaper of its orphaned descendants when it is not PID 1.
pub fn become_subreaper() {
    if std::process::id() == 1 {
        return;
    }
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) has no memory-safety preconditions.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "not PID 1 and cannot become a subreaper: orphans will not be reaped"
        );
    }
}

struct Driver {
    core: Core,
    inherited: Inherited,
    signals: Receiver,
    /// Signals received and not yet handled, oldest first: one is handled per turn of the
    /// loop, its actions carried out before the next (a suspend before a SIGCONT).
    queued: VecDeque<i32>,
    pipes: HashMap<ServiceId, ServicePipes>,
    relays: Vec<JoinHandle<()>>,
    sink: Option<Sink>,
    sink_thread: Option<std::thread::JoinHandle<()>>,
    probes: HashMap<ServiceId, JoinHandle<()>>,
    notify: HashMap<ServiceId, OwnedFd>,
    children: Children,
    /// Which service each running pid belongs to, to flush its output when it ends.
    runs: HashMap<Pid, ServiceId>,
    /// Processes already found left behind by a service that exited, so that another
    /// service's exit is not blamed for them.
    adopted: std::collections::HashSet<Pid>,
    inputs_tx: mpsc::UnboundedSender<Input>,
    inputs: mpsc::UnboundedReceiver<Input>,
    tty: bool,
    before_stop: Option<BeforeStop>,
    /// The before-stop work, while it runs.
    leaving: Option<Leaving>,
}

impl Driver {
    fn start(
        config: Config,
        inherited: Inherited,
        signals: Installed,
        tap: Option<Tap>,
        children: Children,
    ) -> anyhow::Result<Driver> {
        // The handlers were installed before any child existed; this only watches their pipe.
        for &sig in &signals.uncaught {
            tracing::warn!(
                signal = sig,
                "cannot catch this signal: it is neither handled nor forwarded"
            );
        }
        let signals = Receiver::new(signals)?;
        let mut pipes = HashMap::new();
        let mut relays = Vec::new();
        let (mut sink, mut sink_thread) = (None, None);
        for (id, s) in config.services.iter().enumerate() {
            if s.output != Output::Pipe {
                continue;
            }
            let sink = match &sink {
                Some(sink) => sink,
                None => {
                    let (started, thread) = Sink::start(tap.clone())?;
                    sink_thread = Some(thread);
                    sink.insert(started)
                }
            };
            let prefix: Arc<str> = Arc::from(s.log_prefix.as_str());
            let service: Arc<str> = Arc::from(s.name.as_str());
            let (out_r, out_w) = spawn::pipe()?;
            let (err_r, err_w) = spawn::pipe()?;
            let (out_tx, out_rx) = mpsc::unbounded_channel();
            let (err_tx, err_rx) = mpsc::unbounded_channel();
            relays.push(tokio::spawn(sink.clone().relay(
                out_r,
                service.clone(),
                prefix.clone(),
                Stream::Stdout,
                out_rx,
            )));
            relays.push(tokio::spawn(sink.clone().relay(
                err_r,
                service,
                prefix,
                Stream::Stderr,
                err_rx,
            )));
            pipes.insert(
                id,
                ServicePipes {
                    stdout: out_w,
                    stderr: err_w,
                    run_ended: [out_tx, err_tx],
                },
            );
        }
        let (inputs_tx, inputs) = mpsc::unbounded_channel();
        let tty = std::io::IsTerminal::is_terminal(&std::io::stdin());
        Ok(Driver {
            core: Core::new(&config),
            inherited,
            signals,
            queued: VecDeque::new(),
            pipes,
            relays,
            sink,
            sink_thread,
            probes: HashMap::new(),
            notify: HashMap::new(),
            children,
            runs: HashMap::new(),
            adopted: std::collections::HashSet::new(),
            inputs_tx,
            inputs,
            tty,
            before_stop: None,
            leaving: None,
        })
    }

    async fn run(mut self) -> anyhow::Result<Ended> {
        let code = loop {
            if let Some(code) = self.apply_actions() {
                break code;
            }
            if let Some(sig) = self.queued.pop_front() {
                self.on_signal(sig);
                continue;
            }
            let timeout = self.core.poll_timeout();
            let sleep = async {
                match timeout {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let leaving = async {
                match &mut self.leaving {
                    Some(work) => work.await,
                    None => std::future::pending().await,
                }
            };
            let input = tokio::select! {
                came = self.signals.recv() => {
                    self.queued.extend(came?);
                    None
                }
                () = leaving => {
                    self.leaving = None;
                    Some(Input::Left)
                }
                Some(input) = self.inputs.recv() => Some(input),
                _ = sleep => Some(Input::Tick),
            };
            if let Some(input) = input {
                self.core.handle(Instant::now(), input);
            }
        };
        let deadline = self.core.deadline().unwrap_or_else(Instant::now);
        let work_by = deadline.checked_sub(EXIT_MARGIN).unwrap_or(deadline);
        self.leaving = None;
        self.finish(work_by).await;
        Ok(Ended { code, work_by })
    }

    /// One signal muster received: SIGCHLD reaps, any other goes to the core.
    fn on_signal(&mut self, sig: i32) {
        if sig == libc::SIGCHLD {
            self.reap();
            return;
        }
        tracing::debug!(signal = %crate::config::signal_name(sig), "received");
        self.core.handle(Instant::now(), Input::Signal(sig));
    }

    /// Starts the before-stop work, bounded by `by`; with none, the leave is done at once.
    fn leave(&mut self, by: Instant) {
        match self.before_stop.take() {
            Some(work) => {
                let work = work(by);
                self.leaving = Some(Box::pin(async move {
                    let _ = tokio::time::timeout_at(by.into(), work).await;
                }));
            }
            None => self.core.handle(Instant::now(), Input::Left),
        }
    }

    /// Collects every ended child and tells the core (or the exec probe waiting for it).
    /// Returns `true` when no child is left.
    fn reap(&mut self) -> bool {
        let mut ended = Vec::new();
        let none_left = reaper::reap_all(|pid, status| ended.push((pid, status)));
        let now = Instant::now();
        for (pid, status) in ended {
            // A helper's or a check's status goes to the task awaiting it, not to the core.
            let Some(status) = self.children.deliver(pid, status) else {
                continue;
            };
            self.adopted.remove(&pid);
            if let Some(id) = self.runs.remove(&pid) {
                if let Some(p) = self.pipes.get(&id) {
                    for tx in &p.run_ended {
                        let _ = tx.send(());
                    }
                }
                // The main service's end stops everything anyway: no /proc walk in its
                // stop budget, its process group only.
                let walk = !self.core.service(id).main;
                if status.success() && self.left_behind(pid, walk) {
                    self.core.handle(now, Input::LeftBehind { pid });
                }
            }
            self.core.handle(now, Input::Exited { pid, status });
        }
        if none_left {
            self.core.handle(now, Input::NoChildren);
        }
        none_left
    }

    /// Whether the run `pid` that just exited left processes running: members of its process
    /// group, or (with `walk`) children of muster, orphans it left, that are no service, helper
    /// or earlier find. Those are remembered as found.
    fn left_behind(&mut self, pid: Pid, walk: bool) -> bool {
        // SAFETY: kill with signal 0 only checks that the group exists.
        let group = unsafe { libc::kill(-pid, 0) } == 0;
        if !walk {
            return group;
        }
        let helpers = self.children.awaited();
        let orphans: Vec<Pid> = strays::children_of(std::process::id() as Pid)
            .into_iter()
            .filter(|p| {
                !self.runs.contains_key(p) && !helpers.contains(p) && !self.adopted.contains(p)
            })
            .collect();
        let found = group || !orphans.is_empty();
        self.adopted.extend(orphans);
        found
    }

    /// Carries out what the core asked; returns the exit code once it asks to exit.
    fn apply_actions(&mut self) -> Option<i32> {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Spawn(id) => self.spawn(id),
                Action::Probe { service, pid } => {
                    let probe = Probe {
                        service: self.core.service(service).clone(),
                        id: service,
                        pid,
                        notify: self.notify.remove(&service),
                        children: self.children.clone(),
                        tx: self.inputs_tx.clone(),
                    };
                    if let Some(old) = self.probes.insert(service, tokio::spawn(probe.run())) {
                        old.abort();
                    }
                }
                Action::StopProbe(id) => {
                    if let Some(task) = self.probes.remove(&id) {
                        task.abort();
                    }
                }
                Action::Signal { pid, group, signal } => {
                    if let Err(error) = spawn::send_signal(pid, group, signal) {
                        tracing::warn!(pid, signal, %error, "cannot signal");
                    }
                }
                Action::SweepStrays(signal) => {
                    // Collect what is already gone first: with no child left there is no
                    // descendant either (orphans are re-parented to muster), so no walk.
                    if !self.reap() {
                        let n = strays::sweep(signal);
                        if n > 0 {
                            tracing::info!(
                                signal = %crate::config::signal_name(signal),
                                "signalled leftover processes"
                            );
                        }
                        self.reap();
                    }
                }
                Action::Leave { by } => self.leave(by),
                Action::Suspend => {
                    if std::process::id() != 1 {
                        tracing::debug!("stopping muster with its main service (job control)");
                        spawn::stop_self();
                    }
                }
                Action::Foreground(pid) => {
                    let given = self.runs.get(&pid).is_some_and(|&id| {
                        let s = self.core.service(id);
                        self.tty && s.main && s.output == Output::Inherit
                    });
                    if given {
                        if let Err(error) = spawn::give_foreground(pid) {
                            tracing::warn!(pid, %error, "cannot give the terminal back");
                        }
                    }
                }
                Action::Exit(code) => return Some(code),
            }
        }
        None
    }

    fn spawn(&mut self, id: ServiceId) {
        let service = self.core.service(id).clone();
        let stdio = match self.pipes.get(&id) {
            Some(p) => match (p.stdout.try_clone(), p.stderr.try_clone()) {
                (Ok(out), Ok(err)) => Stdio3 {
                    stdin: Stdio::null(),
                    stdout: Stdio::from(out),
                    stderr: Stdio::from(err),
                },
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(service = %service.name, error = %e, "cannot share output pipe");
                    self.core.handle(
                        Instant::now(),
                        Input::SpawnFailed {
                            service: id,
                            code: 126,
                        },
                    );
                    return;
                }
            },
            None => Stdio3 {
                stdin: Stdio::inherit(),
                stdout: Stdio::inherit(),
                stderr: Stdio::inherit(),
            },
        };
        let mut notify_pair = None;
        if let Some(Ready::NotifyFd(fd)) = service.ready {
            match spawn::pipe() {
                Ok((r, w)) => notify_pair = Some((r, w, fd)),
                Err(e) => {
                    tracing::error!(service = %service.name, error = %e, "cannot make notify pipe")
                }
            }
        }
        let extras = Extras {
            inherited: &self.inherited,
            notify: notify_pair.as_ref().map(|(_, w, fd)| (w, *fd)),
            foreground_tty: self.tty && service.main && service.output == Output::Inherit,
        };
        let result = spawn::spawn(&service, stdio, extras);
        let now = Instant::now();
        match result {
            Ok(pid) => {
                if let Some((r, _w, _)) = notify_pair {
                    // The write end is dropped here: only the child holds it now.
                    self.notify.insert(id, r);
                }
                self.runs.insert(pid, id);
                self.core.handle(now, Input::Spawned { service: id, pid });
            }
            Err(error) => {
                tracing::error!(service = %service.name, %error, "cannot start");
                self.core.handle(
                    now,
                    Input::SpawnFailed {
                        service: id,
                        code: error.code(),
                    },
                );
            }
        }
    }

    /// Lets the last output through, for at most `OUTPUT_DRAIN` and never past `deadline`.
    async fn finish(&mut self, deadline: Instant) {
        let limit = OUTPUT_DRAIN.min(deadline.saturating_duration_since(Instant::now()));
        for task in self.probes.values() {
            task.abort();
        }
        // Closing muster's write ends lets each relay see end-of-file once the children's are gone.
        self.pipes.clear();
        let relays = std::mem::take(&mut self.relays);
        let _ = tokio::time::timeout(limit, async {
            for r in relays {
                let _ = r.await;
            }
        })
        .await;
        self.sink = None;
        // Polled rather than joined from a helper thread: a helper still alive at exit would
        // leave its stack behind (valgrind's leak check sees it).
        if let Some(t) = self.sink_thread.take() {
            let until = Instant::now() + limit;
            while !t.is_finished() && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}
