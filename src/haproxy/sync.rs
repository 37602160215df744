//! The sync task: members in, HAProxy changes out. It is the shell around
//! [`super::servers`]: it renders, checks and writes the config, gives each config it writes
//! to the servers' lifecycle machine, and carries the machine's commands out through
//! [`super::runtime`], feeding HAProxy's typed replies back.
//!
//! On every change of the members it follows (debounced briefly) and every few seconds (so an
//! edited template is picked up), the template is rendered; a text that differs from the file
//! is checked with `haproxy -c` and written atomically, and [`Servers`] brings the running
//! HAProxy to it: runtime operations for a change of servers, a reload for a structural
//! change. The first config, rendered before HAProxy starts, goes the same way
//! (`plan(None, new)`: a reload that finds no master yet, so HAProxy reads the file when it
//! starts).
//!
//! `haproxy -c` runs like the HAProxy service ([`super::check`]), through the [`Runner`]
//! `app.rs` gives: waited for by the runner before the supervisor reaps (the first config),
//! through the supervisor's reaper afterwards.
//!
//! One bad member never blocks the others: when the render is refused (by the template or by
//! `haproxy -c`) but a render without members passes, the members at fault are found by
//! halves ([`super::bisect`]), left out and logged once each; they are judged again only when
//! they or the template change. A template edited into something that fails even without
//! members (or that refuses a member the config holds) is logged once, and the last good
//! template keeps rendering membership changes. Only when the last good template cannot render
//! anything at all does the last good file stay as it is.
//!
//! Stopping: the stop signal carries a deadline. From then on nothing new is started; the work
//! under way (a `haproxy -c`, a runtime command, the wait for a new worker after a reload) ends
//! by the deadline at the latest, and the admin session is let go, so no CLI session holds
//! HAProxy's soft stop back.

// The sync measures its own latencies and deadlines: it reads the clock.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::bisect::{Bisect, Step};
use super::cfg;
use super::check::{self, Reaping, Runner, Target};
use super::model::{Member, Model, ModelMember, Selection};
use super::runtime::{self, Admin, Reply};
use super::servers::{Input, Observation, Output, POLL, RELOAD_LIMIT, Servers};
use super::template::Template;
use crate::config::Service;
use crate::config::names as validate;

/// How the sync runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The handlebars template.
    pub template: PathBuf,
    /// The rendered config HAProxy reads.
    pub config: PathBuf,
    /// Which members become servers.
    pub selection: Selection,
    /// HAProxy's master CLI socket (`-S`).
    pub master_socket: PathBuf,
    /// The haproxy binary (for `haproxy -c` when `service` is `None`).
    pub haproxy: String,
    /// The HAProxy service as the supervisor runs it: `haproxy -c` runs its command (with
    /// `-c`, and the staged file in place of the config) with its environment, working
    /// directory and user. `None`: `haproxy -W -c -f STAGED` with muster's environment.
    pub service: Option<Service>,
    /// Quiet time awaited after a change before rendering, so a burst gives one render.
    pub debounce: Duration,
    /// Longest drain of a leaving member's server.
    pub drain_timeout: Duration,
}

/// How often the template file is read again when nothing else happens.
const TEMPLATE_RECHECK: Duration = Duration::from_secs(2);
/// Longest member name shown in a log line.
const SHOWN: usize = 64;

/// A compiled template and the text it came from.
struct Compiled {
    text: String,
    template: Template,
    /// A number that changes whenever the text does: members left out are judged again
    /// under a new template.
    generation: u64,
}

/// A member left out of the config because its render was refused.
struct LeftOut {
    /// What it looked like then: it is judged again when that changes.
    member: ModelMember,
    /// The template generation it was judged with.
    generation: u64,
}

/// What a search over the members settled on.
enum Found {
    /// This render passed; these members (and why) were found at fault and are left out.
    Text {
        text: String,
        at_fault: Vec<(ModelMember, String)>,
    },
    /// Even a render without any member is refused: the template is at fault.
    TemplateFault(RenderError),
}

/// The keeper of HAProxy's config and servers: renders, checks and writes the config, and
/// brings the running HAProxy to it.
pub struct Syncer {
    settings: Settings,
    /// Runs `haproxy -c`.
    runner: Box<dyn Runner>,
    /// Who collects the exit status of `haproxy -c`: the runner itself before the supervisor
    /// reaps, the supervisor afterwards.
    reaping: Reaping,
    /// The text of the config file (the last good render).
    text: Option<String>,
    /// The last error reported, so it is logged once.
    last_error: Option<String>,
    /// The members followed.
    members: Vec<Member>,
    /// The last good template: the one that rendered the file.
    template: Option<Compiled>,
    /// A template text that is not used (it does not compile, or it is refused without any
    /// member, or it refuses a member the file holds), so it is compiled and logged once.
    refused_template: Option<String>,
    /// The generation the next compiled template gets.
    next_generation: u64,
    /// Members in the file, as rendered: a new template must accept them all.
    included: BTreeMap<String, ModelMember>,
    /// Members left out because their render was refused, by name.
    left_out: BTreeMap<String, LeftOut>,
    /// Members left out of the model for an invalid name or tag (escaped name → reason),
    /// logged once.
    invalid: BTreeMap<String, String>,
    /// The servers' lifecycle: what the running HAProxy holds, and what it is told next.
    servers: Servers,
    /// The admin socket, as the machine last named it (`None`: the config has none).
    admin: Option<Admin>,
    /// When the update under way started, and how long its render and check took (for the
    /// log).
    timing: Option<(Instant, Duration)>,
    /// Started from the file a previous run left (see [`Syncer::resume`]): until this
    /// instant, a view with no other member than this one renders nothing.
    provisional: Option<Instant>,
    /// Where the servers' states go (see [`Syncer::states`]).
    states: Option<watch::Sender<ServerStates>>,
}

/// What `muster members` shows of the sync on a load balancer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStates {
    /// Each server's state as the sync has commanded it, by server name (see
    /// [`Servers::states`]).
    pub servers: BTreeMap<String, &'static str>,
    /// How many drains were held back so far (see [`Servers::held_back`]).
    pub drains_held_back: u64,
}

impl ServerStates {
    fn of(servers: &Servers) -> ServerStates {
        ServerStates {
            servers: servers.states(),
            drains_held_back: servers.held_back(),
        }
    }
}

/// Why a render could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The template could not be read.
    #[error("cannot read the template {path}: {source}")]
    Read {
        /// The template's path.
        path: PathBuf,
        /// The reason.
        source: std::io::Error,
    },
    /// The template is invalid or refers to a missing field.
    #[error("template: {0}")]
    Template(String),
    /// `haproxy -c` refused the rendered config (kept beside the config as `.new`).
    #[error("haproxy -c refused the rendered config: {0}")]
    Invalid(String),
    /// `haproxy -c` could not be run at all: nothing is judged.
    #[error("cannot run haproxy -c: {0}")]
    Run(String),
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The path.
        path: PathBuf,
        /// The reason.
        source: std::io::Error,
    },
}

impl RenderError {
    /// Whether this is a verdict on the render (the template's or `haproxy -c`'s), rather than
    /// a failure to reach one.
    fn is_verdict(&self) -> bool {
        matches!(self, RenderError::Template(_) | RenderError::Invalid(_))
    }
}

/// The stop signal, and its deadline once it came.
struct Stop {
    signal: oneshot::Receiver<Instant>,
    deadline: Option<tokio::time::Instant>,
}

impl Stop {
    fn came(&self) -> bool {
        self.deadline.is_some()
    }

    /// Notes the deadline; a sender gone without one means now.
    fn arrived(&mut self, at: Result<Instant, oneshot::error::RecvError>) -> tokio::time::Instant {
        let deadline = at.map_or_else(|_| tokio::time::Instant::now(), Into::into);
        self.deadline = Some(deadline);
        deadline
    }

    /// Runs `work` to its end or, once stop has come, until the deadline at the latest
    /// (`None`: cut short).
    async fn bound<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        if let Some(deadline) = self.deadline {
            return tokio::time::timeout_at(deadline, work).await.ok();
        }
        tokio::pin!(work);
        tokio::select! {
            out = &mut work => Some(out),
            at = &mut self.signal => {
                let deadline = self.arrived(at);
                tokio::time::timeout_at(deadline, work).await.ok()
            }
        }
    }
}

impl Syncer {
    /// Renders, checks and writes the first config for these members, before HAProxy starts,
    /// and takes it as what HAProxy will hold. When that fails, an existing config file is
    /// kept (and used); with none, this is an error.
    pub async fn start(
        settings: Settings,
        runner: Box<dyn Runner>,
        members: Vec<Member>,
    ) -> Result<Syncer, RenderError> {
        let mut s = Syncer::new(settings, runner, members);
        let rendered = match s.settle().await {
            Ok(text) => s.commit(&text).map(|()| text),
            Err(e) => Err(e),
        };
        s.reaping = Reaping::Supervisor;
        let text = match rendered {
            Ok(text) => text,
            Err(e) => match std::fs::read_to_string(&s.settings.config) {
                Ok(old) => {
                    tracing::error!(error = %e, config = %s.settings.config.display(), "keeping the existing config");
                    s.text = Some(old.clone());
                    old
                }
                Err(_) => return Err(e),
            },
        };
        // The first start goes the way of every change.
        s.follow(&text).await;
        let servers = s.servers.running().map_or(0, |r| r.servers.len());
        tracing::info!(servers, config = %s.settings.config.display(), "haproxy config ready");
        Ok(s)
    }

    /// Starts HAProxy on the config file a previous run of this container left (its last
    /// known servers), without waiting for the membership: a restarted load balancer listens
    /// as soon as HAProxy has started. The first view that holds another member than this one
    /// (the first push/pull), or any view after `until`, renders the file anew and applies the
    /// difference through the runtime API. With no file, this is [`Syncer::start`].
    pub async fn resume(
        settings: Settings,
        runner: Box<dyn Runner>,
        members: Vec<Member>,
        until: Instant,
    ) -> Result<Syncer, RenderError> {
        let Ok(old) = std::fs::read_to_string(&settings.config) else {
            return Syncer::start(settings, runner, members).await;
        };
        let mut s = Syncer::new(settings, runner, members);
        s.reaping = Reaping::Supervisor;
        s.text = Some(old.clone());
        s.provisional = Some(until);
        s.follow(&old).await;
        let servers = s.servers.running().map_or(0, |r| r.servers.len());
        tracing::info!(servers, config = %s.settings.config.display(), "haproxy starts with the last config it ran; the first membership renders it anew");
        Ok(s)
    }

    fn new(settings: Settings, runner: Box<dyn Runner>, members: Vec<Member>) -> Syncer {
        let servers = Servers::new(Instant::now(), settings.drain_timeout);
        Syncer {
            settings,
            runner,
            reaping: Reaping::NotYet,
            text: None,
            last_error: None,
            members,
            template: None,
            refused_template: None,
            next_generation: 0,
            included: BTreeMap::new(),
            left_out: BTreeMap::new(),
            invalid: BTreeMap::new(),
            servers,
            admin: None,
            timing: None,
            provisional: None,
            states: None,
        }
    }

    /// The servers' states from now on, updated as they change (for `muster members`).
    pub fn states(&mut self) -> watch::Receiver<ServerStates> {
        let (tx, rx) = watch::channel(ServerStates::of(&self.servers));
        self.states = Some(tx);
        rx
    }

    fn publish_states(&self) {
        if let Some(tx) = &self.states {
            let now = ServerStates::of(&self.servers);
            tx.send_if_modified(|current| {
                let changed = *current != now;
                if changed {
                    *current = now;
                }
                changed
            });
        }
    }

    /// Follows the members until their sender is gone or `stop` gives a deadline (muster is
    /// stopping: nothing new is applied, what is under way ends by the deadline, and no CLI
    /// session holds HAProxy's soft stop back). A sender dropped without a deadline stops it
    /// at once.
    pub async fn run(
        mut self,
        mut members: watch::Receiver<Vec<Member>>,
        stop: oneshot::Receiver<Instant>,
    ) {
        let mut stop = Stop {
            signal: stop,
            deadline: None,
        };
        let mut recheck = tokio::time::interval(TEMPLATE_RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        stop.bound(self.wait_for_haproxy()).await;
        if stop.came() {
            return;
        }
        self.servers.handle(Instant::now(), Input::Started);
        stop.bound(self.drive()).await;
        self.publish_states();
        while !stop.came() {
            let wake = self.servers.poll_timeout();
            let at = wake.unwrap_or_else(|| Instant::now() + TEMPLATE_RECHECK);
            tokio::select! {
                changed = members.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // Debounce: a burst of changes gives one render.
                    stop.bound(tokio::time::sleep(self.settings.debounce)).await;
                    if stop.came() {
                        return;
                    }
                    self.members = members.borrow_and_update().clone();
                    stop.bound(self.update()).await;
                }
                _ = recheck.tick() => {
                    stop.bound(self.update()).await;
                }
                () = tokio::time::sleep_until(at.into()), if wake.is_some() => {
                    self.servers.handle(Instant::now(), Input::Tick);
                    stop.bound(self.drive()).await;
                }
                at = &mut stop.signal => {
                    stop.arrived(at);
                }
            }
            self.publish_states();
            if !self.servers.following() {
                // Nothing under way: let go of the CLI session until the next change.
                if let Some(a) = self.admin.as_mut() {
                    a.close();
                }
            }
        }
    }

    /// Waits (at most `RELOAD_LIMIT`) until HAProxy's admin socket answers.
    async fn wait_for_haproxy(&mut self) {
        let Some(a) = self.admin.as_mut() else { return };
        let started = Instant::now();
        while !a.answers().await && started.elapsed() < RELOAD_LIMIT {
            tokio::time::sleep(POLL).await;
        }
    }

    /// Reads the template file; a text that differs from the last good template's (and was
    /// not refused before) is compiled and returned as a candidate. A template that cannot be
    /// read or compiled is logged once and the last good one stays; with none, that is the
    /// error.
    fn candidate(&mut self) -> Result<Option<Compiled>, RenderError> {
        let path = &self.settings.template;
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(source) => {
                let e = RenderError::Read {
                    path: path.clone(),
                    source,
                };
                return self.template_refused(None, e).map(|()| None);
            }
        };
        if self.template.as_ref().is_some_and(|t| t.text == text) {
            if self.refused_template.take().is_some() {
                tracing::info!("the haproxy template is good again");
            }
            return Ok(None);
        }
        if self.refused_template.as_ref() == Some(&text) {
            return Ok(None);
        }
        match Template::compile(&text, &path.display().to_string()) {
            Ok(template) => {
                let generation = self.next_generation;
                self.next_generation += 1;
                Ok(Some(Compiled {
                    text,
                    template,
                    generation,
                }))
            }
            Err(e) => {
                let e = RenderError::Template(e.to_string());
                self.template_refused(Some(text), e).map(|()| None)
            }
        }
    }

    /// A template that is not used: logged once (by its text); an error only when there is no
    /// last good template to go on with.
    fn template_refused(
        &mut self,
        text: Option<String>,
        e: RenderError,
    ) -> Result<(), RenderError> {
        if self.template.is_none() {
            return Err(e);
        }
        let message = e.to_string();
        let key = text.unwrap_or_else(|| format!("\0{message}"));
        if self.refused_template.as_ref() != Some(&key) {
            tracing::error!(error = %message, "template refused: keeping the last good haproxy template");
            self.refused_template = Some(key);
        }
        Ok(())
    }

    /// The text the file should hold for the current members: rendered with the template file
    /// when it is good, with the last good template otherwise, members at fault left out.
    async fn settle(&mut self) -> Result<String, RenderError> {
        let (model, invalid) = Model::checked(&self.members, &self.settings.selection);
        self.note_invalid(invalid);
        if let Some(candidate) = self.candidate()? {
            match self.search(&candidate, &model).await? {
                Found::Text { text, at_fault } => {
                    let refuses_held = at_fault
                        .iter()
                        .any(|(m, _)| self.included.get(&m.name) == Some(m));
                    if !refuses_held || self.template.is_none() {
                        if self.refused_template.take().is_some() {
                            tracing::info!("the haproxy template is good again");
                        }
                        self.template = Some(candidate);
                        self.adopt(&model, at_fault);
                        return Ok(text);
                    }
                    let (m, why) = at_fault
                        .iter()
                        .find(|(m, _)| self.included.get(&m.name) == Some(m))
                        .map(|(m, why)| (m.name.clone(), why.clone()))
                        .unwrap_or_default();
                    let e = RenderError::Template(format!(
                        "it refuses member {}, which the config holds: {why}",
                        validate::printable(&m, SHOWN)
                    ));
                    self.template_refused(Some(candidate.text), e)?;
                }
                Found::TemplateFault(e) => self.template_refused(Some(candidate.text), e)?,
            }
        }
        let Some(good) = self.template.take() else {
            return Err(RenderError::Template("no template".to_owned()));
        };
        let found = self.search(&good, &model).await;
        self.template = Some(good);
        match found? {
            Found::Text { text, at_fault } => {
                self.adopt(&model, at_fault);
                Ok(text)
            }
            Found::TemplateFault(e) => Err(e),
        }
    }

    /// Logs members newly left out of the model for an invalid name or tag.
    fn note_invalid(&mut self, invalid: Vec<super::model::Refused>) {
        let now: BTreeMap<String, String> =
            invalid.into_iter().map(|r| (r.name, r.reason)).collect();
        for (name, reason) in &now {
            if self.invalid.get(name) != Some(reason) {
                tracing::warn!(member = %name, %reason, "member left out of haproxy's config: invalid name or tag");
            }
        }
        self.invalid = now;
    }

    /// Records the outcome of a search whose render is used: who is in the file, who is left
    /// out (the new ones logged).
    fn adopt(&mut self, model: &Model, at_fault: Vec<(ModelMember, String)>) {
        let generation = self.template.as_ref().map_or(0, |t| t.generation);
        let mut left_out = BTreeMap::new();
        for m in &model.members {
            if let Some(l) = self.left_out.remove(&m.name) {
                if l.member == *m && l.generation == generation {
                    left_out.insert(m.name.clone(), l);
                }
            }
        }
        for (m, reason) in at_fault {
            tracing::warn!(member = %validate::printable(&m.name, SHOWN), %reason, "member left out of haproxy's config: its render is refused");
            left_out.insert(
                m.name.clone(),
                LeftOut {
                    member: m,
                    generation,
                },
            );
        }
        self.left_out = left_out;
        self.included = model
            .members
            .iter()
            .filter(|m| !self.left_out.contains_key(&m.name))
            .map(|m| (m.name.clone(), m.clone()))
            .collect();
    }

    /// Renders and checks `model` with `t`; when refused, finds the members at fault by
    /// halves. Members left out before under this template, unchanged, stay out unjudged.
    async fn search(&self, t: &Compiled, model: &Model) -> Result<Found, RenderError> {
        let known: BTreeSet<&str> = model
            .members
            .iter()
            .filter(|m| {
                self.left_out
                    .get(&m.name)
                    .is_some_and(|l| l.member == **m && l.generation == t.generation)
            })
            .map(|m| m.name.as_str())
            .collect();
        let candidates: Vec<&ModelMember> = model
            .members
            .iter()
            .filter(|m| !known.contains(m.name.as_str()))
            .collect();
        let mut bisect = Bisect::new(candidates.len());
        let mut passed: Option<String> = None;
        let mut refused: Option<RenderError> = None;
        let mut at_fault = Vec::new();
        loop {
            match bisect.step() {
                Step::Check(set) => {
                    let names: BTreeSet<&str> =
                        set.iter().map(|&i| candidates[i].name.as_str()).collect();
                    let sub = model.only(|m| names.contains(m.name.as_str()));
                    let result = match t.template.render(&sub) {
                        Err(e) => Err(RenderError::Template(e.to_string())),
                        Ok(text) if self.text.as_ref() == Some(&text) => Ok(text),
                        Ok(text) => self.check(&text).await.map(|()| text),
                    };
                    match result {
                        Ok(text) => {
                            passed = Some(text);
                            bisect.answer(true);
                        }
                        Err(e) if e.is_verdict() => {
                            if let Some(i) = bisect.answer(false) {
                                at_fault.push((candidates[i].clone(), e.to_string()));
                            }
                            refused = Some(e);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Step::Done { .. } => {
                    let Some(text) = passed else {
                        return Err(RenderError::Template("nothing rendered".to_owned()));
                    };
                    return Ok(Found::Text { text, at_fault });
                }
                Step::TemplateFault => {
                    let e = refused.unwrap_or_else(|| RenderError::Template("refused".to_owned()));
                    return Ok(Found::TemplateFault(e));
                }
            }
        }
    }

    fn staging(&self) -> PathBuf {
        let mut name = self.settings.config.as_os_str().to_owned();
        name.push(".new");
        PathBuf::from(name)
    }

    fn stage(&self, text: &str) -> Result<PathBuf, RenderError> {
        let staging = self.staging();
        std::fs::write(&staging, text).map_err(|source| RenderError::Write {
            path: staging.clone(),
            source,
        })?;
        Ok(staging)
    }

    /// `haproxy -c` on the text, staged beside the config; waited for by the runner before
    /// the supervisor reaps, through its reaper afterwards.
    async fn check(&self, text: &str) -> Result<(), RenderError> {
        let staging = self.stage(text)?;
        let target = Target {
            service: self.settings.service.as_ref(),
            haproxy: &self.settings.haproxy,
            config: &self.settings.config,
            master_socket: &self.settings.master_socket,
        };
        for run in check::runs(&target, &staging) {
            let ran = self
                .runner
                .run(&run, self.reaping)
                .await
                .map_err(|e| RenderError::Run(e.to_string()))?;
            if !ran.success {
                tracing::debug!(exit = %ran.exit, "haproxy -c refused the render");
                return Err(RenderError::Invalid(check::alerts(&ran.output)));
            }
        }
        Ok(())
    }

    /// Writes the checked text over the config (atomic rename in one directory).
    fn commit(&mut self, text: &str) -> Result<(), RenderError> {
        let staging = self.stage(text)?;
        std::fs::rename(staging, &self.settings.config).map_err(|source| RenderError::Write {
            path: self.settings.config.clone(),
            source,
        })?;
        self.text = Some(text.to_owned());
        Ok(())
    }

    fn report(&mut self, e: RenderError) {
        let message = e.to_string();
        if self.last_error.as_ref() != Some(&message) {
            tracing::error!(error = %message, "keeping the last good haproxy config");
            self.last_error = Some(message);
        }
    }

    /// Renders for the current members and applies what changed.
    async fn update(&mut self) {
        if let Some(until) = self.provisional {
            if self.members.len() <= 1 && Instant::now() < until {
                return;
            }
            self.provisional = None;
        }
        let started = Instant::now();
        let text = match self.settle().await {
            Ok(t) => t,
            Err(e) => return self.report(e),
        };
        let changed = self.text.as_deref() != Some(text.as_str());
        if !changed && !self.servers.behind() {
            return;
        }
        let settled = started.elapsed();
        if changed {
            if let Err(e) = self.commit(&text) {
                return self.report(e);
            }
        }
        if self.last_error.take().is_some() {
            tracing::info!("the haproxy config is good again");
        }
        self.timing = Some((started, settled));
        self.follow(&text).await;
    }

    /// Brings HAProxy to `text`, the config just written: the machine plans how, the shell
    /// carries it out.
    async fn follow(&mut self, text: &str) {
        let leaving: BTreeSet<String> = self
            .members
            .iter()
            .filter(|m| m.status.leaving())
            .map(|m| m.name.clone())
            .collect();
        let config = cfg::parse(text);
        self.servers
            .handle(Instant::now(), Input::Config { config, leaving });
        self.drive().await;
    }

    /// Carries out the machine's outputs until it has nothing under way (waiting when it
    /// waits for time, as for a reload's new worker).
    async fn drive(&mut self) {
        loop {
            while let Some(output) = self.servers.poll_output() {
                self.carry_out(output).await;
            }
            if !self.servers.busy() {
                return;
            }
            let Some(at) = self.servers.poll_timeout() else {
                return;
            };
            tokio::time::sleep_until(at.into()).await;
            self.servers.handle(Instant::now(), Input::Tick);
        }
    }

    /// Carries out one output, and feeds the answer back when it has one.
    async fn carry_out(&mut self, output: Output) {
        let master = &self.settings.master_socket;
        let answer = match output {
            Output::Command(command) => Input::Reply(match self.admin.as_mut() {
                Some(a) => a.change(&command).await,
                None => Reply::NoAnswer("the config has no admin socket".to_owned()),
            }),
            Output::Observe { states, sessions } => {
                Input::Observed(self.observe(states, sessions).await)
            }
            Output::ShowProc => {
                Input::Procs(runtime::procs(master).await.map_err(|e| e.to_string()))
            }
            Output::Reload => {
                let _ = runtime::master(master, "reload").await;
                Input::ReloadSent
            }
            Output::SaveState(file) => return self.save_state(&file).await,
            Output::ToStoppingWorkers { pids, commands } => {
                return to_stopping_workers(master, &pids, &commands).await;
            }
            Output::Connect { socket, worker } => {
                self.admin = socket.map(|path| {
                    let mut a = Admin::new(&path);
                    a.expect_worker(worker);
                    a
                });
                return;
            }
            Output::Applied { changes, failed } => {
                let (started, settled) = self.timing.unwrap_or((Instant::now(), Duration::ZERO));
                tracing::info!(
                    changes,
                    failed,
                    settle_ms = ms(settled),
                    apply_ms = ms(started.elapsed().saturating_sub(settled)),
                    "haproxy servers updated at run time"
                );
                return;
            }
        };
        self.servers.handle(Instant::now(), answer);
    }

    /// The servers' states and/or sessions; `None` when HAProxy did not answer.
    async fn observe(&mut self, states: bool, sessions: bool) -> Option<Observation> {
        let a = self.admin.as_mut()?;
        let mut o = Observation::default();
        if states {
            o.states = a.servers_state().await.ok()?;
        }
        if sessions {
            o.sessions = a.sessions().await.ok()?;
        }
        Some(o)
    }

    /// Saves the servers' state to the `server-state-file` (by rename), for the reload.
    async fn save_state(&mut self, file: &Path) {
        let Some(a) = self.admin.as_mut() else { return };
        match a.servers_state_text().await {
            Ok(state) => {
                let tmp = file.with_extension("new");
                let written = std::fs::write(&tmp, format!("{state}\n"))
                    .and_then(|()| std::fs::rename(&tmp, file));
                if let Err(e) = written {
                    tracing::warn!(error = %e, file = %file.display(), "server state not saved");
                }
            }
            Err(e) => tracing::warn!(error = %e, "server state not read"),
        }
    }
}

/// Sends `commands` to each stopping worker through the master CLI (`@!PID`), 50 to a line.
async fn to_stopping_workers(master: &Path, pids: &[u32], commands: &[String]) {
    for pid in pids {
        for chunk in commands.chunks(50) {
            let line: Vec<String> = chunk.iter().map(|c| format!("@!{pid} {c}")).collect();
            if let Err(e) = runtime::master(master, &line.join("; ")).await {
                tracing::debug!(error = %e, pid, "stopping worker's stick table not refilled");
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

#[cfg(test)]
mod tests {
    //! The stop deadline, with a runner that runs nothing and, where HAProxy must answer, a
    //! fake admin socket.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use super::*;
    use crate::haproxy::model::Status;

    /// Says yes to every check, at once or (while `slow`) after a minute.
    struct Accepting {
        slow: Arc<AtomicBool>,
    }

    impl Runner for Accepting {
        fn run<'a>(&'a self, _: &'a Service, _: Reaping) -> check::Running<'a> {
            Box::pin(async move {
                if self.slow.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                Ok(check::Ran {
                    success: true,
                    exit: "exit code 0".to_owned(),
                    output: String::new(),
                })
            })
        }
    }

    fn settings(dir: &Path) -> Settings {
        let template = dir.join("haproxy.cfg.hbs");
        let text = format!(
            "global\n    stats socket {}/admin.sock level admin\nbackend nodes\n\
             {{{{#each members}}}}    server {{{{name}}}} {{{{address}}}}:{{{{port}}}} check\n{{{{/each}}}}",
            dir.display()
        );
        std::fs::write(&template, text).expect("template");
        Settings {
            template,
            config: dir.join("haproxy.cfg"),
            selection: Selection {
                role: None,
                default_port: 80,
                hold_timeout_ms: 15_000,
                trusted: Selection::everywhere(),
            },
            master_socket: dir.join("master.sock"),
            haproxy: "haproxy".to_owned(),
            service: None,
            debounce: Duration::from_millis(10),
            drain_timeout: Duration::from_secs(3),
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// An admin socket that shows web-a in maintenance, its check not passed yet, and answers
    /// every other command with nothing; tells `closed` when a connection ends.
    fn fake_admin(path: &Path, closed: tokio::sync::mpsc::UnboundedSender<()>) {
        let listener = tokio::net::UnixListener::bind(path).expect("bind");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let closed = closed.clone();
                tokio::spawn(async move {
                    let (read, mut write) = s.split();
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let answer = if line.starts_with("show servers state") {
                            "1\n3 nodes 1 web-a 10.0.0.1 0 1 1 1 0 0 0 0 6 0 0 0 - 80 - 0 0 - - 0\n> "
                        } else {
                            "\n> "
                        };
                        if write.write_all(answer.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                    let _ = closed.send(());
                });
            }
        });
    }

    fn member(name: &str) -> Member {
        Member {
            name: name.to_owned(),
            addr: [10, 0, 0, 1].into(),
            tags: BTreeMap::new(),
            status: Status::Alive,
        }
    }

    /// Waits (at most `PROMPTLY`) until `cond` holds.
    async fn eventually(cond: impl Fn() -> bool) {
        let started = Instant::now();
        while !cond() {
            assert!(started.elapsed() < PROMPTLY, "never happened");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Generous: the work cut short would have taken 15 s or more.
    const PROMPTLY: Duration = Duration::from_secs(5);

    #[test]
    fn resume_starts_on_the_file_left_and_renders_only_once_members_come_or_time_is_up() {
        let dir = tempfile::tempdir().expect("dir");
        let set = settings(dir.path());
        let config = set.config.clone();
        let left = format!(
            "global\n    stats socket {}/admin.sock level admin\nbackend nodes\n    server web-old 10.0.0.9:80 check\n",
            dir.path().display()
        );
        std::fs::write(&config, &left).expect("config");
        runtime().block_on(async {
            let slow = Arc::new(AtomicBool::new(false));
            let runner = Box::new(Accepting { slow });
            let until = Instant::now() + Duration::from_secs(60);
            let mut sync = Syncer::resume(set, runner, vec![member("ha")], until)
                .await
                .expect("resume");
            // HAProxy starts on the file as it was, with its last known server.
            assert_eq!(std::fs::read_to_string(&config).expect("config"), left);
            let running = sync.servers.running().expect("running");
            assert!(running.servers.keys().any(|(_, n)| n == "web-old"));
            // A view of this member alone (no push/pull yet) renders nothing.
            tokio::time::timeout(PROMPTLY, sync.update())
                .await
                .expect("update");
            assert_eq!(std::fs::read_to_string(&config).expect("config"), left);
            // The first view with another member renders the file anew.
            sync.members = vec![member("ha"), member("web-a")];
            tokio::time::timeout(PROMPTLY, sync.update())
                .await
                .expect("update");
            let text = std::fs::read_to_string(&config).expect("config");
            assert!(
                text.contains("server web-a ") && !text.contains("web-old"),
                "{text}"
            );
        });
        // Time up: even a view of this member alone renders.
        let dir = tempfile::tempdir().expect("dir");
        let set = settings(dir.path());
        let config = set.config.clone();
        std::fs::write(&config, &left).expect("config");
        runtime().block_on(async {
            let runner = Box::new(Accepting {
                slow: Arc::new(AtomicBool::new(false)),
            });
            let mut sync = Syncer::resume(set, runner, vec![member("ha")], Instant::now())
                .await
                .expect("resume");
            tokio::time::timeout(PROMPTLY, sync.update())
                .await
                .expect("update");
            let text = std::fs::read_to_string(&config).expect("config");
            assert!(
                text.contains("server ha ") && !text.contains("web-old"),
                "{text}"
            );
        });
    }

    #[test]
    fn stop_ends_the_wait_for_haproxy_by_its_deadline() {
        let dir = tempfile::tempdir().expect("dir");
        let settings = settings(dir.path());
        runtime().block_on(async {
            let slow = Arc::new(AtomicBool::new(false));
            let runner = Box::new(Accepting { slow });
            let sync = Syncer::start(settings, runner, Vec::new())
                .await
                .expect("start");
            // No HAProxy answers: the task would wait RELOAD_LIMIT for it.
            let (_members, view) = watch::channel(Vec::new());
            let (stop, stopped) = oneshot::channel();
            let task = tokio::spawn(sync.run(view, stopped));
            tokio::time::sleep(Duration::from_millis(50)).await;
            let asked = Instant::now();
            let _ = stop.send(asked + Duration::from_millis(100));
            task.await.expect("task");
            assert!(asked.elapsed() < PROMPTLY, "{:?}", asked.elapsed());
        });
    }

    #[test]
    fn stop_ends_a_check_under_way_by_its_deadline_applies_nothing_and_lets_go_of_haproxy() {
        let dir = tempfile::tempdir().expect("dir");
        let settings = settings(dir.path());
        let config = settings.config.clone();
        runtime().block_on(async {
            let slow = Arc::new(AtomicBool::new(false));
            let runner = Box::new(Accepting { slow: slow.clone() });
            let sync = Syncer::start(settings, runner, Vec::new())
                .await
                .expect("start");
            let first = std::fs::read_to_string(&config).expect("config");
            let (closed, mut connections_closed) = tokio::sync::mpsc::unbounded_channel();
            fake_admin(&dir.path().join("admin.sock"), closed);
            let (members, view) = watch::channel(Vec::new());
            let (stop, stopped) = oneshot::channel();
            let task = tokio::spawn(sync.run(view, stopped));
            // web-a joins: its server waits for its first check, followed on an open session.
            members.send(vec![member("web-a")]).expect("send");
            eventually(|| std::fs::read_to_string(&config).is_ok_and(|t| t != first)).await;
            let first = std::fs::read_to_string(&config).expect("config");
            // web-b joins while `haproxy -c` hangs.
            slow.store(true, Ordering::SeqCst);
            members
                .send(vec![member("web-a"), member("web-b")])
                .expect("send");
            tokio::time::sleep(Duration::from_millis(200)).await;
            while connections_closed.try_recv().is_ok() {}
            let asked = Instant::now();
            let _ = stop.send(asked + Duration::from_millis(100));
            task.await.expect("task");
            assert!(asked.elapsed() < PROMPTLY, "{:?}", asked.elapsed());
            assert_eq!(std::fs::read_to_string(&config).expect("config"), first);
            let closed = tokio::time::timeout(PROMPTLY, connections_closed.recv()).await;
            assert_eq!(closed, Ok(Some(())), "the admin session is let go");
        });
    }
}
