//! The lifecycle of HAProxy's servers, as a pure state machine.
//!
//! [`Servers`] is fed `(now, Input)`: a new config to bring HAProxy to, the answer to what it
//! asked for (a typed [`Reply`] to a runtime command, the servers' states and sessions, the
//! master's `show proc`), or a tick. It answers with [`Output`]s drained through
//! [`Servers::poll_output`]; [`Servers::poll_timeout`] says when it next needs a tick. It reads
//! no clock and does no I/O: the sync carries its outputs out through `runtime.rs` and feeds
//! the answers back, one output at a time (an output that needs an answer is the last one
//! given until the answer comes).
//!
//! Startup and change share one path: each config goes through [`cfg::plan`] against what the
//! running HAProxy holds, and the first one (`plan(None, new)`) is a reload that finds no
//! master yet, so HAProxy reads the file when it starts.
//!
//! - **Runtime operations**, the normal case. A joining member's server is added in
//!   maintenance, its address set away and back (HAProxy 2.6 computes a dynamic cookie only
//!   when the address changes), pointed at by its name-keyed stick table, its health check
//!   enabled, and put in service at its first good check (a server without a check at once,
//!   unless its line says `disabled`). A member that has left has its server drained until its
//!   sessions end (or `drain_timeout`), then put in maintenance and deleted (retried while
//!   HAProxy says it still has connections, until `drain_timeout`: then it stays in
//!   maintenance, and the next reload drops it). A failed member's server goes to maintenance
//!   at once, then is deleted. A server still there from a drain or removal under way when its
//!   member comes back is brought back: removal cancelled, address set, health forced down and
//!   the check enabled, ready, and followed until its next good check puts it in service.
//! - **A reload** for structural changes only (or when the config has no admin socket): the
//!   servers' state is saved to the `server-state-file` first, the master is asked to reload,
//!   and `show proc` is polled (at most [`RELOAD_LIMIT`]) until a new worker or a failure
//!   shows. Then the stopping workers' stick tables are filled again (they empty them when they
//!   start to stop, yet answer once more on each kept-alive connection), the new worker's are
//!   filled, and servers the state file restored out of service are resumed: waiting for
//!   their first check they go on waiting, on their way out they are brought back.
//!
//! An operation HAProxy refuses for one server is logged once (per server and message), that
//! server keeps what the running HAProxy holds (so the next update tries it again, see
//! [`Servers::behind`]), and the others go on.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::cfg::{self, Op, Plan, Rendered, Server};
use super::runtime::{Procs, Reply, ServerState};

/// A server's key: (backend, name).
pub type Key = (String, String);

/// Poll interval while servers wait for their first good check or drain, and while a reload
/// waits for its new worker.
pub const POLL: Duration = Duration::from_millis(10);
/// How often the name-keyed stick tables are filled again (their entries expire).
pub const TABLE_REFRESH: Duration = Duration::from_secs(3600);
/// Longest wait for a new worker after a reload.
pub const RELOAD_LIMIT: Duration = Duration::from_secs(15);
/// Longest a leaving member's server is held back in service: a leaving muster keeps its
/// app serving for `gossip::node::LEAVE_PROPAGATE` (1 s) after it leaves, and this ends the
/// hold-back with margin before that, so the server is drained while its app still answers
/// (requests then wait in HAProxy's hold) rather than taken out by a failed check after its
/// app closed (the requests sent to it meanwhile fail). `app.rs` checks it is the shorter.
pub const HELD_BACK_MAX: Duration = Duration::from_millis(600);

/// What the machine is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A config was written (checked by `haproxy -c`): bring HAProxy to it. `leaving` names
    /// the members that are leaving or have left: a server they lose is drained. Taken up as
    /// soon as the work under way is done (a later one replaces one not taken up yet).
    Config {
        /// The config, read back.
        config: Rendered,
        /// Members leaving or gone on purpose.
        leaving: BTreeSet<String>,
    },
    /// HAProxy has started (its admin socket answers, or waiting for it gave up): its stick
    /// tables are filled now, and every [`TABLE_REFRESH`] from now on.
    Started,
    /// Time passed ([`Servers::poll_timeout`]).
    Tick,
    /// HAProxy's reply to [`Output::Command`].
    Reply(Reply),
    /// The answer to [`Output::Observe`]; `None` when HAProxy did not answer.
    Observed(Option<Observation>),
    /// The answer to [`Output::ShowProc`]; an error when the master CLI did not answer.
    Procs(Result<Procs, String>),
    /// [`Output::Reload`] was sent.
    ReloadSent,
}

/// What HAProxy's servers look like.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// `show servers state` (empty when not asked for).
    pub states: BTreeMap<Key, ServerState>,
    /// The current sessions of each server (`show stat`; empty when not asked for).
    pub sessions: BTreeMap<Key, u64>,
}

/// What the machine asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this runtime command on the admin socket; answer [`Input::Reply`].
    Command(String),
    /// Read the servers' states and/or sessions; answer [`Input::Observed`].
    Observe {
        /// `show servers state` is wanted.
        states: bool,
        /// `show stat` is wanted.
        sessions: bool,
    },
    /// Ask the master CLI for `show proc`; answer [`Input::Procs`].
    ShowProc,
    /// Write `show servers state` to this file, by rename (a failure is only logged); no
    /// answer.
    SaveState(PathBuf),
    /// Send `reload` to the master CLI; answer [`Input::ReloadSent`].
    Reload,
    /// Send these commands to each of these stopping workers through the master CLI
    /// (`@!PID`); failures are only logged; no answer.
    ToStoppingWorkers {
        /// The workers' pids.
        pids: Vec<u32>,
        /// The commands.
        commands: Vec<String>,
    },
    /// Talk to this admin socket from now on (`None`: there is none) and, for the next few
    /// seconds, only to this worker (the one a reload just started); no answer.
    Connect {
        /// The admin socket.
        socket: Option<PathBuf>,
        /// The worker connections must reach.
        worker: Option<u32>,
    },
    /// Runtime operations for a config are done (for the log); no answer.
    Applied {
        /// How many operations there were.
        changes: usize,
        /// Whether some were refused (the servers concerned are tried again).
        failed: bool,
    },
}

/// A server on its way in or out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// Added in maintenance; put in service at its first good check.
    Joining { since: Instant },
    /// Brought back (it was still there, draining or in maintenance): ready, its health forced
    /// down, so HAProxy puts it in service at its next good check; followed until then.
    Returning { since: Instant },
    /// Draining until it has no session or the deadline passes.
    Draining { deadline: Instant },
    /// Its member is leaving, but it is the last server of its backend in service while
    /// another is on its way in: it stays in service until another one is (then it drains),
    /// its own check fails (its app is gone: out of rotation), or the deadline passes.
    HeldBack { since: Instant, deadline: Instant },
    /// In maintenance; deleted once HAProxy lets go of it.
    Removing { since: Instant },
}

/// One runtime command, and what its reply means.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    command: String,
    expect: Expect,
}

impl Step {
    fn must(command: String) -> Step {
        Step {
            command,
            expect: Expect::Done,
        }
    }
}

/// How a step's reply is read.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// Anything but done fails the script.
    Done,
    /// A refusal is logged; the script goes on (a stick table entry).
    Optional,
    /// The reply does not matter.
    Ignored,
    /// `add server`: a server still there is brought back instead.
    Added(Box<Server>),
    /// Out of rotation (drain or maintenance): a server gone already is out.
    Out,
    /// `state ready` after a joining server's first good check.
    InService { since: Instant },
    /// `state maint` after a drain.
    Drained,
    /// `del server`.
    Deleted { since: Instant },
}

/// What follows when all of a script's steps are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Nothing,
    Joining,
    BroughtBack { checked: bool },
    Draining,
    OutOfRotation,
}

/// Who hears of a script that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnFail {
    /// A runtime operation: logged once, the server keeps what HAProxy holds.
    Apply,
    /// Bringing back a server after a reload: logged.
    Resume,
    /// Its steps do not fail.
    Never,
}

/// A server's commands in a row.
#[derive(Debug, Clone, PartialEq)]
struct Script {
    key: Key,
    steps: VecDeque<Step>,
    then: Then,
    on_fail: OnFail,
}

impl Script {
    fn one(key: Key, step: Step) -> Script {
        Script {
            key,
            steps: VecDeque::from([step]),
            then: Then::Nothing,
            on_fail: OnFail::Never,
        }
    }
}

/// What a reply does to its script.
enum Next {
    /// On to the next step.
    Go,
    /// This step first, then the next.
    Insert(Step),
    /// The script ends here, well, without its follow-up.
    Stop,
    /// The script failed, for this reason.
    Fail(String),
    /// The script goes on as this one.
    Replace(Script),
}

/// Runtime operations for one config.
#[derive(Debug)]
struct Apply {
    /// The config to reach.
    new: Rendered,
    /// What HAProxy held before.
    old: Rendered,
    /// What HAProxy holds: `new`, but a server whose operation failed keeps its old line (or
    /// none, for an add).
    held: Rendered,
    changes: usize,
}

/// A reload under way.
#[derive(Debug)]
struct Reload {
    new: Rendered,
    why: String,
    started: Instant,
    phase: Phase,
}

#[derive(Debug)]
enum Phase {
    /// Asking `show proc` before.
    Before,
    /// Sending `reload`.
    Sent { before: Procs },
    /// Waiting until `at` to ask `show proc` again; `after` is the last answer.
    Waiting {
        before: Procs,
        after: Procs,
        at: Instant,
    },
    /// Asking `show proc` after.
    Asking { before: Procs, after: Procs },
    /// Filling the new worker's stick tables.
    Filling,
    /// Reading which servers the state file restored out of service.
    Restoring,
    /// Resuming them.
    Resuming,
}

#[derive(Debug)]
enum Job {
    Apply(Apply),
    /// A look at the pending servers, and each one's next step.
    Round,
    Fill,
    Reload(Reload),
}

/// What the output under way waits for.
#[derive(Debug)]
enum Awaiting {
    Reply(Step),
    Observation,
    Procs,
    ReloadSent,
}

/// The servers of a running HAProxy, on their way in and out.
#[derive(Debug)]
pub struct Servers {
    /// Longest drain of a leaving member's server (and longest wait for a delete).
    drain_timeout: Duration,
    /// The time of the last input.
    now: Instant,
    /// What the running HAProxy holds; `None` before the first config.
    running: Option<Rendered>,
    /// The admin socket commands go to.
    admin: Option<PathBuf>,
    /// Whether `running` lags behind the last config (an operation failed).
    behind: bool,
    pending: BTreeMap<Key, Pending>,
    /// The last failure of a runtime operation per server, logged once.
    failures: BTreeMap<String, String>,
    job: Option<Job>,
    /// The current job's commands, server by server.
    scripts: VecDeque<Script>,
    awaiting: Option<Awaiting>,
    outputs: VecDeque<Output>,
    /// A config not taken up yet (work was under way).
    queued: Option<(Rendered, BTreeSet<String>)>,
    /// When the stick tables are filled next (`None` until HAProxy has started).
    next_fill: Option<Instant>,
    /// When the pending servers were last looked at.
    last_round: Option<Instant>,
    /// How many drains were held back (a leaving last server kept in service), ever.
    held_back: u64,
}

impl Servers {
    /// A machine that knows of no HAProxy yet.
    pub fn new(now: Instant, drain_timeout: Duration) -> Servers {
        Servers {
            drain_timeout,
            now,
            running: None,
            admin: None,
            behind: false,
            pending: BTreeMap::new(),
            failures: BTreeMap::new(),
            job: None,
            scripts: VecDeque::new(),
            awaiting: None,
            outputs: VecDeque::new(),
            queued: None,
            next_fill: None,
            last_round: None,
            held_back: 0,
        }
    }

    /// How many drains were held back so far: a leaving member's server kept in service, as
    /// the last one of its backend, until another was.
    pub fn held_back(&self) -> u64 {
        self.held_back
    }

    /// Each server's state as muster has commanded it, by server name (for `muster members`
    /// on a load balancer): `joining` (in maintenance until its first good check),
    /// `returning`, `in-service`, `held-back` (leaving, but the last one in service),
    /// `draining`, `maintenance`. A name in several backends shows its first backend's.
    pub fn states(&self) -> BTreeMap<String, &'static str> {
        let mut out = BTreeMap::new();
        // A leaving server is out of the config already but still in HAProxy: pending.
        for (k, p) in &self.pending {
            let state = match p {
                Pending::Joining { .. } => "joining",
                Pending::Returning { .. } => "returning",
                Pending::Draining { .. } => "draining",
                Pending::HeldBack { .. } => "held-back",
                Pending::Removing { .. } => "maintenance",
            };
            out.entry(k.1.clone()).or_insert(state);
        }
        let servers = self.running.iter().flat_map(|r| &r.servers);
        for ((_, name), s) in servers {
            let state = if s.disabled() {
                "maintenance"
            } else {
                "in-service"
            };
            out.entry(name.clone()).or_insert(state);
        }
        out
    }

    /// What the running HAProxy holds (`None` before the first config).
    pub fn running(&self) -> Option<&Rendered> {
        self.running.as_ref()
    }

    /// Whether what HAProxy holds lags behind the last config (an operation was refused): the
    /// same config is worth giving again.
    pub fn behind(&self) -> bool {
        self.behind
    }

    /// Whether work is under way (outputs to carry out, answers or a time to wait for).
    pub fn busy(&self) -> bool {
        self.job.is_some() || !self.outputs.is_empty()
    }

    /// Whether anything is under way or followed (a server on its way in or out): when not,
    /// the admin session can be let go.
    pub fn following(&self) -> bool {
        self.busy() || !self.pending.is_empty()
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Instant, input: Input) {
        self.now = now;
        let awaiting = self.awaiting.take();
        match (input, awaiting) {
            (Input::Config { config, leaving }, a) => {
                self.awaiting = a;
                self.queued = Some((config, leaving));
            }
            (Input::Started, a) => {
                self.awaiting = a;
                self.next_fill = Some(now);
            }
            (Input::Tick, a) => {
                self.awaiting = a;
                self.tick();
            }
            (Input::Reply(reply), Some(Awaiting::Reply(step))) => self.replied(step, reply),
            (Input::Observed(o), Some(Awaiting::Observation)) => self.observed(o),
            (Input::Procs(p), Some(Awaiting::Procs)) => self.procs(p),
            (Input::ReloadSent, Some(Awaiting::ReloadSent)) => self.reload_sent(),
            (input, a) => {
                tracing::debug!(?input, "haproxy: an answer to nothing asked");
                self.awaiting = a;
            }
        }
        if self.job.is_none() {
            self.start_due_work();
        }
    }

    /// The next output; `None` when there is nothing to do until an answer or a tick.
    pub fn poll_output(&mut self) -> Option<Output> {
        loop {
            if let Some(o) = self.outputs.pop_front() {
                return Some(o);
            }
            if self.awaiting.is_some() || self.job.is_none() {
                return None;
            }
            if let Some(command) = self.next_command() {
                return Some(Output::Command(command));
            }
            // The job's scripts are done: it moves on, or ends.
            if !self.job_moves_on() {
                return None;
            }
        }
    }

    /// When the machine next needs a tick.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.job {
            Some(Job::Reload(Reload {
                phase: Phase::Waiting { at, .. },
                ..
            })) => Some(*at),
            Some(_) => None,
            None => {
                let round = (!self.pending.is_empty())
                    .then(|| self.last_round.map_or(self.now, |t| t + POLL));
                round.into_iter().chain(self.next_fill).min()
            }
        }
    }

    /// Time passed: a reload waiting for its new worker asks `show proc` again.
    fn tick(&mut self) {
        let Some(Job::Reload(r)) = &mut self.job else {
            return;
        };
        let Phase::Waiting { before, after, at } = &r.phase else {
            return;
        };
        if self.now < *at {
            return;
        }
        let (before, after) = (before.clone(), after.clone());
        r.phase = Phase::Asking { before, after };
        self.outputs.push_back(Output::ShowProc);
        self.awaiting = Some(Awaiting::Procs);
    }

    /// Starts what is due, when nothing is under way: a config given, the tables' refill, a
    /// look at the pending servers.
    fn start_due_work(&mut self) {
        if let Some((config, leaving)) = self.queued.take() {
            return self.start_config(config, &leaving);
        }
        if self.next_fill.is_some_and(|t| t <= self.now) {
            self.next_fill = Some(self.now + TABLE_REFRESH);
            self.fill_tables();
            if !self.scripts.is_empty() {
                self.job = Some(Job::Fill);
            }
            return;
        }
        let due = self.last_round.is_none_or(|t| t + POLL <= self.now);
        if !self.pending.is_empty() && due {
            self.start_round();
        }
    }

    fn start_config(&mut self, new: Rendered, leaving: &BTreeSet<String>) {
        let leaving = |name: &str| leaving.contains(name);
        match cfg::plan(self.running.as_ref(), &new, &leaving) {
            Plan::Nothing => {
                self.running = Some(new);
                self.behind = false;
            }
            // No admin socket in the config: only a reload can apply changes.
            Plan::Runtime(_) if self.admin.is_none() => {
                let why = "the config has no admin stats socket (stats socket … level admin)";
                self.start_reload(new, why.to_owned());
            }
            Plan::Runtime(ops) => {
                for op in &ops {
                    let script = match op {
                        Op::Remove {
                            backend,
                            name,
                            gently: true,
                        } if self.last_in_service(&new, &ops, backend, name) => {
                            self.hold_back((backend.clone(), name.clone()));
                            continue;
                        }
                        Op::Add(s) => self.add(s),
                        Op::Move(s) => Script {
                            key: key(s),
                            steps: relocate(s).into_iter().collect(),
                            then: Then::Nothing,
                            on_fail: OnFail::Apply,
                        },
                        Op::Remove {
                            backend,
                            name,
                            gently,
                        } => remove((backend.clone(), name.clone()), *gently),
                    };
                    self.scripts.push_back(Script {
                        on_fail: OnFail::Apply,
                        ..script
                    });
                }
                let old = self.running.clone().unwrap_or_default();
                self.job = Some(Job::Apply(Apply {
                    held: new.clone(),
                    new,
                    old,
                    changes: ops.len(),
                }));
            }
            Plan::Reload(why) => self.start_reload(new, why),
        }
    }

    /// Whether draining `backend/name` (its member leaving) would leave its backend with no
    /// server in service while another is on its way in: no other server of the backend stays
    /// settled (held, not on its way in or out, not disabled), and one is joining or coming
    /// back. With no server on its way, the drain goes ahead: HAProxy's hold (the template's
    /// `muster_hold`) makes requests wait for the next server rather than the app going.
    fn last_in_service(&self, new: &Rendered, ops: &[Op], backend: &str, name: &str) -> bool {
        let others = |k: &&Key| k.0 == backend && k.1 != name;
        let Some(running) = &self.running else {
            return false;
        };
        let settled = running
            .servers
            .iter()
            .filter(|(k, _)| others(k))
            .any(|(k, s)| {
                new.servers.get(k) == Some(s) && !s.disabled() && !self.pending.contains_key(k)
            });
        if settled {
            return false;
        }
        let added = |k: &Key| {
            ops.iter()
                .any(|op| matches!(op, Op::Add(s) if key(s) == *k))
        };
        new.servers.iter().filter(|(k, _)| others(k)).any(|(k, s)| {
            !s.disabled()
                && (added(k)
                    || matches!(
                        self.pending.get(k),
                        Some(Pending::Joining { .. } | Pending::Returning { .. })
                    ))
        })
    }

    /// Keeps a leaving member's server in service (see [`Pending::HeldBack`]).
    fn hold_back(&mut self, key: Key) {
        let (since, deadline) = (self.now, self.now + self.drain_timeout.min(HELD_BACK_MAX));
        self.held_back += 1;
        tracing::info!(
            server = %label(&key),
            held_back = self.held_back,
            "drain held back: the last server in service stays until another is"
        );
        self.pending
            .insert(key, Pending::HeldBack { since, deadline });
    }

    fn start_reload(&mut self, new: Rendered, why: String) {
        self.behind = false;
        self.job = Some(Job::Reload(Reload {
            new,
            why,
            started: self.now,
            phase: Phase::Before,
        }));
        self.outputs.push_back(Output::ShowProc);
        self.awaiting = Some(Awaiting::Procs);
    }

    fn start_round(&mut self) {
        self.last_round = Some(self.now);
        if self.admin.is_none() {
            self.pending.clear();
            return;
        }
        let states = self.pending.values().any(|p| {
            matches!(
                p,
                Pending::Joining { .. } | Pending::Returning { .. } | Pending::HeldBack { .. }
            )
        });
        let sessions = self
            .pending
            .values()
            .any(|p| matches!(p, Pending::Draining { .. } | Pending::Removing { .. }));
        self.job = Some(Job::Round);
        self.outputs.push_back(Output::Observe { states, sessions });
        self.awaiting = Some(Awaiting::Observation);
    }

    /// Takes the next step of the first script, finishing scripts whose steps are done.
    fn next_command(&mut self) -> Option<String> {
        while let Some(script) = self.scripts.front_mut() {
            if let Some(step) = script.steps.pop_front() {
                let command = step.command.clone();
                self.awaiting = Some(Awaiting::Reply(step));
                return Some(command);
            }
            if let Some(script) = self.scripts.pop_front() {
                self.follow_up(&script.key, script.then);
                self.succeeded(&script);
            }
        }
        None
    }

    fn replied(&mut self, step: Step, reply: Reply) {
        let Some(key) = self.scripts.front().map(|s| s.key.clone()) else {
            return;
        };
        match self.react(&key, step, reply) {
            Next::Go => {}
            Next::Insert(step) => {
                if let Some(s) = self.scripts.front_mut() {
                    s.steps.push_front(step);
                }
            }
            Next::Stop => {
                if let Some(s) = self.scripts.pop_front() {
                    self.succeeded(&s);
                }
            }
            Next::Fail(why) => {
                if let Some(s) = self.scripts.pop_front() {
                    self.failed(&s, why);
                }
            }
            Next::Replace(new) => {
                if let Some(s) = self.scripts.front_mut() {
                    *s = Script {
                        on_fail: s.on_fail,
                        ..new
                    };
                }
            }
        }
    }

    /// What a reply means for its script.
    fn react(&mut self, key: &Key, step: Step, reply: Reply) -> Next {
        let refused = |reply: &Reply| Next::Fail(format!("{}: {reply}", step.command));
        match step.expect {
            Expect::Done if reply == Reply::Done => Next::Go,
            Expect::Done => refused(&reply),
            Expect::Optional => {
                if reply != Reply::Done {
                    let error = format!("{}: {reply}", step.command);
                    tracing::warn!(%error, "sticky sessions not set up for this server");
                }
                Next::Go
            }
            Expect::Ignored => Next::Go,
            Expect::Added(s) => match reply {
                Reply::Done => {
                    self.pending.remove(key);
                    Next::Go
                }
                // Still there from a drain or removal under way (or left in maintenance).
                Reply::Exists => Next::Replace(self.bring_back(&s)),
                Reply::IdTaken { by } if by == s.name => Next::Replace(self.bring_back(&s)),
                other => refused(&other),
            },
            Expect::Out => match reply {
                Reply::Done => Next::Go,
                // Gone already (deleted by hand, or HAProxy restarted without it).
                Reply::NoSuchServer => {
                    self.pending.remove(key);
                    Next::Stop
                }
                other => refused(&other),
            },
            Expect::InService { since } => self.put_in_service(key, since, reply),
            Expect::Drained => self.drained(key, reply),
            Expect::Deleted { since } => self.deleted(key, since, reply),
        }
    }

    fn put_in_service(&mut self, key: &Key, since: Instant, reply: Reply) -> Next {
        let id = label(key);
        match reply {
            Reply::Done => {
                let after_ms = ms(self.now - since);
                tracing::info!(server = %id, after_ms, "in service (first check passed)");
                self.pending.remove(key);
            }
            Reply::NoSuchServer => {
                self.pending.remove(key);
            }
            // Asked again at the next round.
            Reply::NoAnswer(_) => {}
            other => {
                tracing::warn!(server = %id, answer = %other, "not put in service");
                self.pending.remove(key);
            }
        }
        Next::Stop
    }

    fn drained(&mut self, key: &Key, reply: Reply) -> Next {
        match reply {
            Reply::Done => {
                let since = self.now;
                self.pending
                    .insert(key.clone(), Pending::Removing { since });
            }
            Reply::NoSuchServer => {
                self.pending.remove(key);
            }
            Reply::NoAnswer(_) => {}
            other => {
                tracing::warn!(server = %label(key), answer = %other, "left draining");
                self.pending.remove(key);
            }
        }
        Next::Stop
    }

    fn deleted(&mut self, key: &Key, since: Instant, reply: Reply) -> Next {
        let id = label(key);
        match reply {
            // Tried again at the next round, until the drain timeout.
            Reply::InUse => {
                if self.now - since > self.drain_timeout {
                    // It stays in maintenance; the next reload drops it.
                    tracing::warn!(server = %id, "left in maintenance (still has connections)");
                    self.pending.remove(key);
                }
                Next::Stop
            }
            Reply::NotInMaint => Next::Insert(Step {
                command: format!("set server {id} state maint"),
                expect: Expect::Ignored,
            }),
            Reply::NoAnswer(_) => Next::Stop,
            reply => {
                if !matches!(reply, Reply::Done | Reply::NoSuchServer) {
                    tracing::warn!(server = %id, answer = %reply, "del server");
                }
                self.pending.remove(key);
                let table = self
                    .running
                    .as_ref()
                    .is_some_and(|r| r.name_tables.contains(&key.0));
                if !table {
                    return Next::Stop;
                }
                Next::Insert(Step {
                    command: format!("clear table {} key {}", key.0, key.1),
                    expect: Expect::Ignored,
                })
            }
        }
    }

    fn follow_up(&mut self, key: &Key, then: Then) {
        let now = self.now;
        let id = label(key);
        match then {
            Then::Nothing => {}
            Then::Joining => {
                self.pending
                    .insert(key.clone(), Pending::Joining { since: now });
            }
            Then::BroughtBack { checked } => {
                if checked {
                    self.pending
                        .insert(key.clone(), Pending::Returning { since: now });
                }
                tracing::info!(server = %id, "brought back (its member is alive again)");
            }
            Then::Draining => {
                let deadline = now + self.drain_timeout;
                self.pending
                    .insert(key.clone(), Pending::Draining { deadline });
                tracing::info!(server = %id, "draining (member leaving)");
            }
            Then::OutOfRotation => {
                self.pending
                    .insert(key.clone(), Pending::Removing { since: now });
                tracing::info!(server = %id, "out of rotation (member failed or gone)");
            }
        }
    }

    fn succeeded(&mut self, script: &Script) {
        if script.on_fail == OnFail::Apply {
            self.failures.remove(&label(&script.key));
        }
    }

    fn failed(&mut self, script: &Script, why: String) {
        let key = &script.key;
        let id = label(key);
        match script.on_fail {
            OnFail::Apply => {
                if self.failures.get(&id) != Some(&why) {
                    tracing::warn!(server = %id, error = %why, "haproxy refused an operation; the server is tried again at the next update");
                    self.failures.insert(id, why);
                }
                if let Some(Job::Apply(a)) = &mut self.job {
                    match a.old.servers.get(key) {
                        Some(s) => a.held.servers.insert(key.clone(), s.clone()),
                        None => a.held.servers.remove(key),
                    };
                }
            }
            OnFail::Resume => {
                tracing::warn!(server = %id, error = %why, "not brought back after the reload");
            }
            OnFail::Never => tracing::debug!(server = %id, error = %why, "haproxy"),
        }
    }

    /// The job's scripts are done: it moves on to its next phase, or ends (and the next due
    /// work starts). False when it waits for a tick.
    fn job_moves_on(&mut self) -> bool {
        match self.job.take() {
            Some(Job::Apply(a)) => {
                let failed = a.held != a.new;
                self.behind = failed;
                self.running = Some(a.held);
                self.outputs.push_back(Output::Applied {
                    changes: a.changes,
                    failed,
                });
            }
            Some(Job::Reload(r)) => {
                if !self.reload_moves_on(r) {
                    return false;
                }
            }
            Some(Job::Round | Job::Fill) | None => {}
        }
        if self.job.is_none() {
            self.start_due_work();
        }
        true
    }

    fn observed(&mut self, observation: Option<Observation>) {
        let Some(o) = observation else {
            // HAProxy did not answer: this round (or the resume) is over.
            return;
        };
        match &self.job {
            Some(Job::Round) => self.round(&o),
            Some(Job::Reload(_)) => self.resume(&o),
            _ => {}
        }
    }

    /// Each pending server's next step, by what HAProxy shows.
    fn round(&mut self, o: &Observation) {
        let now = self.now;
        let keys: Vec<Key> = self.pending.keys().cloned().collect();
        for key in keys {
            let id = label(&key);
            let Some(p) = self.pending.get(&key).copied() else {
                continue;
            };
            let step = match p {
                Pending::Joining { since } => match o.states.get(&key) {
                    None => {
                        self.pending.remove(&key);
                        continue;
                    }
                    Some(st) if st.check_passed() => Step {
                        command: format!("set server {id} state ready"),
                        expect: Expect::InService { since },
                    },
                    Some(_) => continue,
                },
                Pending::Returning { since } => {
                    match o.states.get(&key) {
                        None => {
                            self.pending.remove(&key);
                        }
                        Some(st) if st.in_service() => {
                            let after_ms = ms(now - since);
                            tracing::info!(server = %id, after_ms, "in service (back, check passed)");
                            self.pending.remove(&key);
                        }
                        Some(_) => {}
                    }
                    continue;
                }
                Pending::Draining { deadline } => {
                    let idle = o.sessions.get(&key).is_none_or(|&n| n == 0);
                    if !idle && now < deadline {
                        continue;
                    }
                    if !idle {
                        tracing::warn!(server = %id, "drain deadline passed; sessions remain");
                    }
                    Step {
                        command: format!("set server {id} state maint"),
                        expect: Expect::Drained,
                    }
                }
                Pending::Removing { since } => Step {
                    command: format!("del server {id}"),
                    expect: Expect::Deleted { since },
                },
                Pending::HeldBack { since, deadline } => {
                    if let Some(script) = self.held_back_next(&key, since, deadline, o) {
                        self.scripts.push_back(script);
                    }
                    continue;
                }
            };
            self.scripts.push_back(Script::one(key, step));
        }
    }

    /// A held-back server's next step: drained once another server of its backend is in
    /// service (or at the deadline), out of rotation when its own check failed.
    fn held_back_next(
        &mut self,
        key: &Key,
        since: Instant,
        deadline: Instant,
        o: &Observation,
    ) -> Option<Script> {
        let id = label(key);
        let after_ms = ms(self.now - since);
        let Some(own) = o.states.get(key) else {
            self.pending.remove(key);
            return None;
        };
        let other = o
            .states
            .iter()
            .any(|(k, st)| k.0 == key.0 && k != key && st.in_service());
        if other {
            tracing::info!(server = %id, after_ms, "drain held back until now: another server is in service");
        } else if !own.in_service() {
            tracing::info!(server = %id, after_ms, "drain held back until now: its app is gone");
            self.pending.remove(key);
            return Some(remove(key.clone(), false));
        } else if self.now >= deadline {
            tracing::info!(server = %id, after_ms, "drain held back until now: its app is about to stop");
        } else {
            return None;
        }
        self.pending.remove(key);
        Some(remove(key.clone(), true))
    }

    fn procs(&mut self, answer: Result<Procs, String>) {
        let mut r = match self.job.take() {
            Some(Job::Reload(r)) => r,
            other => {
                self.job = other;
                return;
            }
        };
        match (std::mem::replace(&mut r.phase, Phase::Before), answer) {
            (Phase::Before, Err(error)) => {
                // HAProxy is not running (yet): it will read the file when it starts.
                tracing::debug!(%error, "no master CLI; the new config applies at start");
                self.pending.clear();
                if self.admin != r.new.admin_socket {
                    self.admin.clone_from(&r.new.admin_socket);
                    self.outputs.push_back(Output::Connect {
                        socket: self.admin.clone(),
                        worker: None,
                    });
                }
                self.running = Some(r.new);
                return;
            }
            (Phase::Before, Ok(before)) => {
                if let (Some(_), Some(file)) = (&self.admin, &r.new.state_file) {
                    self.outputs.push_back(Output::SaveState(file.clone()));
                }
                tracing::info!(reason = %r.why, "reloading haproxy");
                self.outputs.push_back(Output::Reload);
                self.awaiting = Some(Awaiting::ReloadSent);
                r.phase = Phase::Sent { before };
            }
            (Phase::Asking { before, after }, answer) => {
                let after = answer.unwrap_or(after);
                let new_worker = after
                    .current_workers
                    .iter()
                    .any(|p| !before.current_workers.contains(p));
                let settled = after.reloads > before.reloads && (after.failed > 0 || new_worker);
                if settled || self.now - r.started >= RELOAD_LIMIT {
                    return self.reload_waited(r, &before, &after);
                }
                let at = self.now + POLL;
                r.phase = Phase::Waiting { before, after, at };
            }
            (phase, _) => r.phase = phase,
        }
        self.job = Some(Job::Reload(r));
    }

    fn reload_sent(&mut self) {
        let at = self.now + POLL;
        if let Some(Job::Reload(r)) = &mut self.job {
            if let Phase::Sent { before } = std::mem::replace(&mut r.phase, Phase::Before) {
                let after = before.clone();
                r.phase = Phase::Waiting { before, after, at };
            }
        }
    }

    /// The wait for the new worker is over (it showed, or a failure did, or time ran out).
    fn reload_waited(&mut self, mut r: Reload, before: &Procs, after: &Procs) {
        let worker = after
            .current_workers
            .iter()
            .find(|p| !before.current_workers.contains(p))
            .copied();
        self.admin.clone_from(&r.new.admin_socket);
        self.outputs.push_back(Output::Connect {
            socket: self.admin.clone(),
            worker,
        });
        self.pending.clear();
        if after.failed > 0 || after.reloads == before.reloads {
            tracing::error!(
                failed = after.failed,
                "haproxy reload failed; the old worker keeps serving"
            );
            return;
        }
        // The old worker empties its stick tables when it starts to stop, yet answers once more
        // on each kept-alive connection; the new worker starts with empty ones. Fill both at
        // once, so only requests of the first milliseconds can miss their sticky server.
        let entries = self
            .running
            .as_ref()
            .map(Rendered::stick_entries)
            .unwrap_or_default();
        if !entries.is_empty() && !before.current_workers.is_empty() {
            self.outputs.push_back(Output::ToStoppingWorkers {
                pids: before.current_workers.clone(),
                commands: entries,
            });
        }
        self.running = Some(std::mem::take(&mut r.new));
        self.next_fill = Some(self.now + TABLE_REFRESH);
        self.fill_tables();
        r.phase = Phase::Filling;
        self.job = Some(Job::Reload(r));
    }

    /// The reload's scripts are done: on to its next phase. False when it waits for a tick.
    fn reload_moves_on(&mut self, mut r: Reload) -> bool {
        match r.phase {
            Phase::Filling => {
                tracing::info!(ms = ms(self.now - r.started), "haproxy reloaded");
                if self.admin.is_none() {
                    return true;
                }
                self.outputs.push_back(Output::Observe {
                    states: true,
                    sessions: false,
                });
                self.awaiting = Some(Awaiting::Observation);
                r.phase = Phase::Restoring;
                self.job = Some(Job::Reload(r));
            }
            // Resumed (or HAProxy did not say what it restored): the reload is done.
            Phase::Restoring | Phase::Resuming => {}
            // Waiting for a tick (or an answer), not for scripts.
            _ => {
                self.job = Some(Job::Reload(r));
                return false;
            }
        }
        true
    }

    /// After a reload, servers the state file restored out of service although the config
    /// lists them: waiting for their first check (in maintenance) they go on waiting; drained
    /// or put in maintenance on their way out, their member is back, so they are brought back.
    fn resume(&mut self, o: &Observation) {
        let Some(running) = self.running.clone() else {
            return;
        };
        if let Some(Job::Reload(r)) = &mut self.job {
            r.phase = Phase::Resuming;
        }
        for (key, st) in &o.states {
            let Some(s) = running.servers.get(key) else {
                continue;
            };
            if s.disabled() || !(st.maint() || st.draining()) {
                continue;
            }
            if st.maint() && !st.draining() && s.checked() && !st.checks_paused() {
                let since = self.now;
                self.pending.insert(key.clone(), Pending::Joining { since });
            } else {
                let script = self.bring_back(s);
                self.scripts.push_back(Script {
                    on_fail: OnFail::Resume,
                    ..script
                });
            }
        }
    }

    /// Points every server's name-keyed stick table entry at it (at start, after a reload, and
    /// every [`TABLE_REFRESH`], so no entry expires).
    fn fill_tables(&mut self) {
        if self.admin.is_none() {
            return;
        }
        let Some(running) = &self.running else {
            return;
        };
        for s in running.servers.values() {
            if let Some(command) = running.stick_entry(s) {
                let step = Step {
                    command,
                    expect: Expect::Optional,
                };
                self.scripts.push_back(Script::one(key(s), step));
            }
        }
    }

    /// The entry of `s`'s backend's name-keyed stick table, when there is one.
    fn stick(&self, s: &Server) -> Option<Step> {
        let command = self.running.as_ref()?.stick_entry(s)?;
        Some(Step {
            command,
            expect: Expect::Optional,
        })
    }

    /// Adds a server: in maintenance, its address set away and back, its stick table entry,
    /// then its check enabled (in service at the first good one) or put in service.
    fn add(&self, s: &Server) -> Script {
        let id = label(&key(s));
        let mut command = format!("add server {id} {}", s.addr);
        for w in s.runtime_args() {
            command.push(' ');
            command.push_str(&w);
        }
        let mut steps = VecDeque::from([Step {
            command,
            expect: Expect::Added(Box::new(s.clone())),
        }]);
        if let Some(e) = s.endpoint {
            // HAProxy 2.6 computes a dynamic cookie only when the address changes: move the
            // server away and back so it gets the same cookie as it would from the config.
            let other = if e.port() == 65535 { 1 } else { e.port() + 1 };
            steps.push_back(Step::must(format!(
                "set server {id} addr {} port {other}",
                e.ip()
            )));
            steps.extend(relocate(s));
        }
        steps.extend(self.stick(s));
        let then = if s.checked() {
            steps.push_back(Step::must(format!("enable health {id}")));
            Then::Joining
        } else {
            if !s.disabled() {
                steps.push_back(Step::must(format!("set server {id} state ready")));
            }
            Then::Nothing
        };
        Script {
            key: key(s),
            steps,
            then,
            on_fail: OnFail::Apply,
        }
    }

    /// A server HAProxy still holds (draining, or in maintenance on its way out) whose member
    /// is back: its removal is cancelled, its address set, and it goes back in service. A
    /// checked server is put ready with its health forced down, so HAProxy sends it nothing
    /// (sticky clients included) until a check at the new address passes: leaving maintenance
    /// alone would restore its last check result, which may be stale.
    fn bring_back(&mut self, s: &Server) -> Script {
        let id = label(&key(s));
        self.pending.remove(&key(s));
        let mut steps: VecDeque<Step> = relocate(s).into_iter().chain(self.stick(s)).collect();
        let then = if s.disabled() {
            steps.push_back(Step::must(format!("set server {id} state maint")));
            Then::Nothing
        } else {
            if s.checked() {
                // Out of maintenance first (checks resume), then down until a good check.
                for command in ["state drain", "health down"] {
                    steps.push_back(Step::must(format!("set server {id} {command}")));
                }
                steps.push_back(Step::must(format!("enable health {id}")));
            }
            steps.push_back(Step::must(format!("set server {id} state ready")));
            Then::BroughtBack {
                checked: s.checked(),
            }
        };
        Script {
            key: key(s),
            steps,
            then,
            on_fail: OnFail::Apply,
        }
    }
}

/// Takes a server out: drained (its member left) or in maintenance at once (it failed or is
/// gone); deleted later, when a round finds it idle.
fn remove(key: Key, gently: bool) -> Script {
    let state = if gently { "drain" } else { "maint" };
    let step = Step {
        command: format!("set server {} state {state}", label(&key)),
        expect: Expect::Out,
    };
    Script {
        then: if gently {
            Then::Draining
        } else {
            Then::OutOfRotation
        },
        ..Script::one(key, step)
    }
}

/// Moves a server to its address (nothing for an address that is not an IP and port).
fn relocate(s: &Server) -> Option<Step> {
    let e = s.endpoint?;
    let id = label(&key(s));
    Some(Step::must(format!(
        "set server {id} addr {} port {}",
        e.ip(),
        e.port()
    )))
}

fn key(s: &Server) -> Key {
    (s.backend.clone(), s.name.clone())
}

/// A server as the runtime API names it: `backend/name`.
fn label(key: &Key) -> String {
    format!("{}/{}", key.0, key.1)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

#[cfg(test)]
mod tests;
