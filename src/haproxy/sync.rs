//! The sync task: membership in, HAProxy changes out.
//!
//! On every change of the gossip view (debounced briefly) and every few seconds (so an edited
//! template is picked up), the template is rendered; a text that differs from the file is
//! checked with `haproxy -c` and written atomically, and [`cfg::plan`] decides how it reaches
//! the running HAProxy:
//!
//! - **runtime operations**, the normal case: a joining member's server is added in
//!   maintenance with its health check enabled and put in service at its first good check; a
//!   member that has left has its server drained until its sessions end (or `drain_timeout`),
//!   then put in maintenance and deleted; a failed member's server goes to maintenance at once.
//!   A server still there from a drain or removal under way when its member comes back is
//!   brought back: removal cancelled, address set, in service at its next good check;
//! - **a reload** through the master CLI for structural changes only (or when the config has
//!   no admin socket): the servers' state is saved to the `server-state-file` first, and the
//!   new worker is awaited in `show proc`.
//!
//! `haproxy -c` runs like the HAProxy service (its program and options, environment, working
//! directory and user), in master-worker mode and with the variables HAProxy's master sets
//! before it parses the config again at a reload (`HAPROXY_MWORKER`, `HAPROXY_MASTER_CLI`,
//! `HAPROXY_CFGFILES`), so no conditional block is checked one way and run another.
//!
//! One bad member never blocks the others: when the render is refused (by the template or by
//! `haproxy -c`) but a render without members passes, the members at fault are found by
//! halves ([`super::bisect`]), left out and logged once each; they are judged again only when
//! they or the template change. A template edited into something that fails even without
//! members (or that refuses a member the config holds) is logged once, and the last good
//! template keeps rendering membership changes. An operation HAProxy refuses for one server is
//! logged, and that server is tried again at the next update; the others go on. Only when the
//! last good template cannot render anything at all does the last good file stay as it is.

// The sync measures its own latencies and deadlines: it reads the clock.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::bisect::{Bisect, Step};
use super::cfg::{self, Op, Parsed, Plan, Server};
use super::model::{Model, ModelMember, Selection};
use super::runtime::{self, Admin, Reply};
use super::template::Template;
use crate::config::names as validate;
use crate::config::{self, Service};
use crate::gossip::serf::{Member, Status};
use crate::supervisor::children::{Children as Helpers, Outcome};

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
/// Poll interval while servers wait for their first good check or drain.
const POLL: Duration = Duration::from_millis(10);
/// How often the name-keyed stick tables are filled again (their entries expire).
const TABLE_REFRESH: Duration = Duration::from_secs(3600);
/// Longest wait for a new worker after a reload.
const RELOAD_LIMIT: Duration = Duration::from_secs(15);
/// Longest member name shown in a log line.
const SHOWN: usize = 64;

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
    /// In maintenance; deleted once HAProxy lets go of it.
    Removing { since: Instant },
}

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

/// The sync's state.
pub struct Sync {
    settings: Settings,
    helpers: Helpers,
    /// Whether `haproxy -c` is waited for directly (before the supervisor reaps).
    direct: bool,
    /// The text of the config file (the last good render).
    text: Option<String>,
    /// What the running HAProxy holds.
    running: Option<Parsed>,
    /// Whether `running` lags behind the file (an operation failed): planned again at the
    /// next update even when the render did not change.
    behind: bool,
    /// The last error reported, so it is logged once.
    last_error: Option<String>,
    pending: BTreeMap<(String, String), Pending>,
    view: Vec<Member>,
    /// When the stick tables were last filled.
    last_fill: Instant,
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
    /// The last failure of a runtime operation per server, logged once.
    failures: BTreeMap<String, String>,
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

impl Sync {
    /// Renders, checks and writes the first config for this view, before HAProxy starts. When
    /// that fails, an existing config file is kept (and used); with none, this is an error.
    pub async fn prepare(
        settings: Settings,
        helpers: Helpers,
        view: Vec<Member>,
    ) -> Result<Sync, RenderError> {
        let mut sync = Sync {
            settings,
            helpers,
            direct: true,
            text: None,
            running: None,
            behind: false,
            last_error: None,
            pending: BTreeMap::new(),
            view,
            last_fill: Instant::now(),
            template: None,
            refused_template: None,
            next_generation: 0,
            included: BTreeMap::new(),
            left_out: BTreeMap::new(),
            invalid: BTreeMap::new(),
            failures: BTreeMap::new(),
        };
        let result = match sync.settle().await {
            Ok(text) => sync.commit(&text),
            Err(e) => Err(e),
        };
        sync.direct = false;
        if let Err(e) = result {
            match std::fs::read_to_string(&sync.settings.config) {
                Ok(old) => {
                    tracing::error!(error = %e, config = %sync.settings.config.display(), "keeping the existing config");
                    sync.text = Some(old);
                }
                Err(_) => return Err(e),
            }
        }
        sync.running = sync.text.as_deref().map(cfg::parse);
        let servers = sync.running.as_ref().map_or(0, |p| p.servers.len());
        tracing::info!(servers, config = %sync.settings.config.display(), "haproxy config ready");
        Ok(sync)
    }

    /// Follows the view until the view's sender is gone or `stop` fires (muster is stopping:
    /// no change is applied any more, and no CLI session holds HAProxy's soft stop back).
    pub async fn run(
        mut self,
        mut views: watch::Receiver<Vec<Member>>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        let mut recheck = tokio::time::interval(TEMPLATE_RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // An interval, not a sleep per turn: views change often (suspicions, retries) and must
        // not keep pushing the poll back.
        let mut poll_tick = tokio::time::interval(POLL);
        poll_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut admin = self.admin();
        self.wait_for_haproxy(&mut admin).await;
        self.fill_tables(&mut admin).await;
        loop {
            let poll = !self.pending.is_empty();
            tokio::select! {
                changed = views.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // Debounce: a burst of changes gives one render.
                    tokio::time::sleep(self.settings.debounce).await;
                    self.view = views.borrow_and_update().clone();
                    self.update(&mut admin).await;
                }
                _ = recheck.tick() => {
                    self.update(&mut admin).await;
                    if self.last_fill.elapsed() > TABLE_REFRESH {
                        self.fill_tables(&mut admin).await;
                    }
                }
                _ = poll_tick.tick(), if poll => self.advance(&mut admin).await,
                _ = &mut stop => return,
            }
            match admin.as_mut() {
                None => admin = self.admin(),
                // Nothing under way: let go of the CLI session until the next change.
                Some(a) if self.pending.is_empty() => a.close(),
                Some(_) => {}
            }
        }
    }

    /// Waits (at most `RELOAD_LIMIT`) until HAProxy's admin socket answers.
    async fn wait_for_haproxy(&self, admin: &mut Option<Admin>) {
        let Some(a) = admin.as_mut() else { return };
        let started = Instant::now();
        while a.command("show info").await.is_err() && started.elapsed() < RELOAD_LIMIT {
            tokio::time::sleep(POLL).await;
        }
    }

    fn admin(&self) -> Option<Admin> {
        let path = self.running.as_ref()?.admin_socket.as_ref()?;
        Some(Admin::new(path))
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

    /// The text the file should hold for the current view: rendered with the template file
    /// when it is good, with the last good template otherwise, members at fault left out.
    async fn settle(&mut self) -> Result<String, RenderError> {
        let (model, invalid) = Model::checked(&self.view, &self.settings.selection);
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

    /// `haproxy -c` on the text, staged beside the config; directly before the supervisor
    /// runs, through its reaper afterwards.
    async fn check(&self, text: &str) -> Result<(), RenderError> {
        let staging = self.stage(text)?;
        for run in check_runs(&self.settings, &staging) {
            let outcome = if self.direct {
                self.helpers.run_like_before_supervising(&run)
            } else {
                self.helpers.run_like(&run).await
            };
            verdict(outcome)?;
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

    /// Renders for the current view and applies what changed.
    async fn update(&mut self, admin: &mut Option<Admin>) {
        let started = Instant::now();
        let text = match self.settle().await {
            Ok(t) => t,
            Err(e) => return self.report(e),
        };
        let changed = self.text.as_deref() != Some(text.as_str());
        if !changed && !self.behind {
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
        let new = cfg::parse(&text);
        let view = &self.view;
        let left = |name: &str| {
            view.iter()
                .any(|m| m.name == name && matches!(m.status, Status::Leaving | Status::Left))
        };
        let plan = cfg::plan(self.running.as_ref(), &new, &left);
        match plan {
            Plan::Nothing => {
                self.running = Some(new);
                self.behind = false;
            }
            Plan::Runtime(ops) => match admin.as_mut() {
                // No admin socket in the config: only a reload can apply changes.
                None => {
                    let why = "the config has no admin stats socket (stats socket … level admin)";
                    self.reload(admin, new, why).await;
                }
                Some(a) => {
                    let count = ops.len();
                    let held = self.apply(a, &new, &ops).await;
                    let failed = held != new;
                    self.behind = failed;
                    self.running = Some(held);
                    tracing::info!(
                        changes = count,
                        failed,
                        settle_ms = ms(settled),
                        apply_ms = ms(started.elapsed() - settled),
                        "haproxy servers updated at run time"
                    );
                }
            },
            Plan::Reload(why) => self.reload(admin, new, &why).await,
        }
    }

    /// Carries out runtime operations; returns what HAProxy holds afterwards: `new`, but a
    /// server whose operation failed keeps its old line (or none, for an add), so the next
    /// update tries it again. Failures are logged once per server and message.
    async fn apply(&mut self, a: &mut Admin, new: &Parsed, ops: &[Op]) -> Parsed {
        let old = self.running.clone().unwrap_or_default();
        let mut held = new.clone();
        let now = Instant::now();
        for op in ops {
            let (key, result) = match op {
                Op::Remove {
                    backend,
                    name,
                    gently,
                } => {
                    let key = (backend.clone(), name.clone());
                    (key.clone(), self.remove(a, &key, *gently, now).await)
                }
                Op::Add(s) => {
                    let key = (s.backend.clone(), s.name.clone());
                    (key, self.add(a, s, now).await)
                }
                Op::Move(s) => {
                    let key = (s.backend.clone(), s.name.clone());
                    (key, self.relocate(a, s).await)
                }
            };
            let id = format!("{}/{}", key.0, key.1);
            match result {
                Ok(()) => {
                    self.failures.remove(&id);
                }
                Err(why) => {
                    if self.failures.get(&id) != Some(&why) {
                        tracing::warn!(server = %id, error = %why, "haproxy refused an operation; the server is tried again at the next update");
                        self.failures.insert(id, why);
                    }
                    match old.servers.get(&key) {
                        Some(s) => held.servers.insert(key, s.clone()),
                        None => held.servers.remove(&key),
                    };
                }
            }
        }
        held
    }

    /// Takes a server out: drained (its member left) or in maintenance at once (it failed or
    /// is gone), deleted later by [`Sync::advance`].
    async fn remove(
        &mut self,
        a: &mut Admin,
        key: &(String, String),
        gently: bool,
        now: Instant,
    ) -> Result<(), String> {
        let id = format!("{}/{}", key.0, key.1);
        let state = if gently { "drain" } else { "maint" };
        match ask(a, &format!("set server {id} state {state}")).await? {
            Reply::Done => {}
            // Gone already (deleted by hand, or HAProxy restarted without it).
            Reply::NoSuchServer => {
                self.pending.remove(key);
                return Ok(());
            }
            other => return Err(format!("set server {id} state {state}: {other}")),
        }
        if gently {
            let deadline = now + self.settings.drain_timeout;
            self.pending
                .insert(key.clone(), Pending::Draining { deadline });
            tracing::info!(server = %id, "draining (member leaving)");
        } else {
            self.pending
                .insert(key.clone(), Pending::Removing { since: now });
            tracing::info!(server = %id, "out of rotation (member failed or gone)");
        }
        Ok(())
    }

    /// Moves a server to its member's new address.
    async fn relocate(&mut self, a: &mut Admin, s: &Server) -> Result<(), String> {
        let Some(e) = s.endpoint else { return Ok(()) };
        let id = format!("{}/{}", s.backend, s.name);
        let command = format!("set server {id} addr {} port {}", e.ip(), e.port());
        match ask(a, &command).await? {
            Reply::Done => Ok(()),
            other => Err(format!("{command}: {other}")),
        }
    }

    async fn add(&mut self, a: &mut Admin, s: &Server, now: Instant) -> Result<(), String> {
        let id = format!("{}/{}", s.backend, s.name);
        let key = (s.backend.clone(), s.name.clone());
        let mut command = format!("add server {id} {}", s.addr);
        for w in s.runtime_args() {
            command.push(' ');
            command.push_str(&w);
        }
        match ask(a, &command).await? {
            Reply::Done => {}
            // Still there from a drain or removal under way (or left in maintenance).
            Reply::Exists => return self.bring_back(a, s, now).await,
            Reply::IdTaken { by } if by == s.name => return self.bring_back(a, s, now).await,
            other => return Err(format!("{command}: {other}")),
        }
        if let Some(e) = s.endpoint {
            // HAProxy 2.6 computes a dynamic cookie only when the address changes: move the
            // server away and back so it gets the same cookie as it would from the config.
            let other = if e.port() == 65535 { 1 } else { e.port() + 1 };
            order(a, &format!("set server {id} addr {} port {other}", e.ip())).await?;
            order(
                a,
                &format!("set server {id} addr {} port {}", e.ip(), e.port()),
            )
            .await?;
        }
        self.stick(a, s).await;
        if s.checked() {
            order(a, &format!("enable health {id}")).await?;
            self.pending.insert(key, Pending::Joining { since: now });
        } else {
            self.pending.remove(&key);
            if !s.disabled() {
                order(a, &format!("set server {id} state ready")).await?;
            }
        }
        Ok(())
    }

    /// A server HAProxy still holds (draining, or in maintenance on its way out) whose member
    /// is back: its removal is cancelled, its address set, and it goes back in service. A
    /// checked server is put ready with its health forced down, so HAProxy sends it nothing
    /// (sticky clients included) until a check at the new address passes: leaving maintenance
    /// alone would restore its last check result, which may be stale.
    async fn bring_back(&mut self, a: &mut Admin, s: &Server, now: Instant) -> Result<(), String> {
        let id = format!("{}/{}", s.backend, s.name);
        let key = (s.backend.clone(), s.name.clone());
        self.pending.remove(&key);
        self.relocate(a, s).await?;
        self.stick(a, s).await;
        if s.disabled() {
            return order(a, &format!("set server {id} state maint")).await;
        }
        if s.checked() {
            // Out of maintenance first (checks resume), then down until a good check.
            order(a, &format!("set server {id} state drain")).await?;
            order(a, &format!("set server {id} health down")).await?;
            order(a, &format!("enable health {id}")).await?;
        }
        order(a, &format!("set server {id} state ready")).await?;
        if s.checked() {
            self.pending.insert(key, Pending::Returning { since: now });
        }
        tracing::info!(server = %id, "brought back (its member is alive again)");
        Ok(())
    }

    /// Points the backend's name-keyed stick table at this server (sessions stick by name).
    async fn stick(&self, a: &mut Admin, s: &Server) {
        let Some(command) = self.running.as_ref().and_then(|r| r.stick_entry(s)) else {
            return;
        };
        if let Err(e) = order(a, &command).await {
            tracing::warn!(error = %e, "sticky sessions not set up for this server");
        }
    }

    /// Fills the name-keyed stick tables for every server (at start, after a reload, and now
    /// and then so no entry expires).
    async fn fill_tables(&mut self, admin: &mut Option<Admin>) {
        self.last_fill = Instant::now();
        let (Some(a), Some(running)) = (admin.as_mut(), self.running.as_ref()) else {
            return;
        };
        for command in running.stick_entries() {
            if let Err(e) = order(a, &command).await {
                tracing::warn!(error = %e, "sticky sessions not set up for this server");
            }
        }
    }

    /// Fills the stick tables of stopping workers through the master CLI (`@!PID`).
    async fn refill_old_workers(&self, pids: &[u32]) {
        let Some(running) = self.running.as_ref() else {
            return;
        };
        let entries = running.stick_entries();
        for pid in pids {
            for chunk in entries.chunks(50) {
                let line: Vec<String> = chunk.iter().map(|c| format!("@!{pid} {c}")).collect();
                if let Err(e) =
                    runtime::master(&self.settings.master_socket, &line.join("; ")).await
                {
                    tracing::debug!(error = %e, pid, "stopping worker's stick table not refilled");
                }
            }
        }
    }

    /// Moves pending servers along: in service after a good check, out after a drain.
    async fn advance(&mut self, admin: &mut Option<Admin>) {
        let Some(a) = admin.as_mut() else {
            self.pending.clear();
            return;
        };
        let now = Instant::now();
        let joining = self
            .pending
            .values()
            .any(|p| matches!(p, Pending::Joining { .. } | Pending::Returning { .. }));
        let draining = self
            .pending
            .values()
            .any(|p| matches!(p, Pending::Draining { .. } | Pending::Removing { .. }));
        let Some(states) = query(
            a,
            joining,
            "show servers state",
            runtime::parse_servers_state,
        )
        .await
        else {
            return;
        };
        let Some(sessions) = query(a, draining, "show stat", runtime::parse_sessions).await else {
            return;
        };
        let keys: Vec<_> = self.pending.keys().cloned().collect();
        for key in keys {
            let id = format!("{}/{}", key.0, key.1);
            let Some(p) = self.pending.get(&key).copied() else {
                continue;
            };
            match p {
                Pending::Joining { since } => match states.get(&key) {
                    None => {
                        self.pending.remove(&key);
                    }
                    Some(st) if st.check_passed() => {
                        match ask(a, &format!("set server {id} state ready")).await {
                            Ok(Reply::Done) => {
                                tracing::info!(server = %id, after_ms = ms(now - since), "in service (first check passed)");
                                self.pending.remove(&key);
                            }
                            Ok(Reply::NoSuchServer) => {
                                self.pending.remove(&key);
                            }
                            Ok(other) => {
                                tracing::warn!(server = %id, answer = %other, "not put in service");
                                self.pending.remove(&key);
                            }
                            Err(_) => {}
                        }
                    }
                    Some(_) => {}
                },
                Pending::Returning { since } => match states.get(&key) {
                    None => {
                        self.pending.remove(&key);
                    }
                    Some(st) if st.in_service() => {
                        tracing::info!(server = %id, after_ms = ms(now - since), "in service (back, check passed)");
                        self.pending.remove(&key);
                    }
                    Some(_) => {}
                },
                Pending::Draining { deadline } => {
                    let idle = sessions.get(&key).is_none_or(|&n| n == 0);
                    if idle || now >= deadline {
                        if !idle {
                            tracing::warn!(server = %id, "drain deadline passed; sessions remain");
                        }
                        match ask(a, &format!("set server {id} state maint")).await {
                            Ok(Reply::Done) => {
                                self.pending.insert(key, Pending::Removing { since: now });
                            }
                            Ok(Reply::NoSuchServer) => {
                                self.pending.remove(&key);
                            }
                            Ok(other) => {
                                tracing::warn!(server = %id, answer = %other, "left draining");
                                self.pending.remove(&key);
                            }
                            Err(_) => {}
                        }
                    }
                }
                Pending::Removing { since } => {
                    match ask(a, &format!("del server {id}")).await {
                        Ok(Reply::InUse) => {
                            if now - since > self.settings.drain_timeout {
                                // It stays in maintenance; the next reload drops it.
                                tracing::warn!(server = %id, "left in maintenance (still has connections)");
                                self.pending.remove(&key);
                            }
                        }
                        Ok(Reply::NotInMaint) => {
                            let _ = ask(a, &format!("set server {id} state maint")).await;
                        }
                        Ok(reply) => {
                            if !matches!(reply, Reply::Done | Reply::NoSuchServer) {
                                tracing::warn!(server = %id, answer = %reply, "del server");
                            }
                            self.pending.remove(&key);
                            let table = self
                                .running
                                .as_ref()
                                .is_some_and(|r| r.name_tables.contains(&key.0));
                            if table {
                                let command = format!("clear table {} key {}", key.0, key.1);
                                let _ = a.command(&command).await;
                            }
                        }
                        Err(_) => {}
                    }
                }
            }
        }
    }

    /// Saves the servers' state, reloads through the master CLI and waits for the new worker.
    async fn reload(&mut self, admin: &mut Option<Admin>, new: Parsed, why: &str) {
        let started = Instant::now();
        self.behind = false;
        let master = self.settings.master_socket.clone();
        let before = match runtime::master(&master, "show proc").await {
            Ok(text) => runtime::parse_procs(&text),
            Err(e) => {
                // HAProxy is not running (yet): it will read the file when it starts.
                tracing::debug!(error = %e, "no master CLI; the new config applies at start");
                self.running = Some(new);
                self.pending.clear();
                return;
            }
        };
        if let (Some(a), Some(state_file)) = (admin.as_mut(), new.state_file.as_ref()) {
            match a.command("show servers state").await {
                Ok(state) => {
                    let tmp = state_file.with_extension("new");
                    let written = std::fs::write(&tmp, format!("{state}\n"))
                        .and_then(|()| std::fs::rename(&tmp, state_file));
                    if let Err(e) = written {
                        tracing::warn!(error = %e, file = %state_file.display(), "server state not saved");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "server state not read"),
            }
        }
        tracing::info!(reason = why, "reloading haproxy");
        let _ = runtime::master(&master, "reload").await;
        let mut after = before.clone();
        while started.elapsed() < RELOAD_LIMIT {
            tokio::time::sleep(POLL).await;
            if let Ok(text) = runtime::master(&master, "show proc").await {
                after = runtime::parse_procs(&text);
                if after.reloads > before.reloads
                    && (after.failed > 0
                        || after
                            .current_workers
                            .iter()
                            .any(|p| !before.current_workers.contains(p)))
                {
                    break;
                }
            }
        }
        *admin = new.admin_socket.as_deref().map(Admin::new);
        let worker = after
            .current_workers
            .iter()
            .find(|p| !before.current_workers.contains(p))
            .copied();
        if let Some(a) = admin.as_mut() {
            a.expect_worker(worker);
        }
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
        self.refill_old_workers(&before.current_workers).await;
        self.running = Some(new);
        self.fill_tables(admin).await;
        tracing::info!(ms = ms(started.elapsed()), "haproxy reloaded");
        self.resume_restored(admin).await;
    }

    /// After a reload, servers the state file restored out of service although the config
    /// lists them: waiting for their first check (in maintenance) they go on waiting; drained
    /// or put in maintenance on their way out, their member is back, so they are brought back.
    async fn resume_restored(&mut self, admin: &mut Option<Admin>) {
        let (Some(a), Some(running)) = (admin.as_mut(), self.running.clone()) else {
            return;
        };
        let Ok(text) = a.command("show servers state").await else {
            return;
        };
        let now = Instant::now();
        for (key, st) in runtime::parse_servers_state(&text) {
            let Some(s) = running.servers.get(&key) else {
                continue;
            };
            if s.disabled() || !(st.maint() || st.draining()) {
                continue;
            }
            if st.maint() && !st.draining() && s.checked() && !st.checks_paused() {
                self.pending.insert(key, Pending::Joining { since: now });
            } else if let Err(e) = self.bring_back(a, s, now).await {
                tracing::warn!(server = %format!("{}/{}", key.0, key.1), error = %e, "not brought back after the reload");
            }
        }
    }
}

/// The `haproxy -c` runs that check `staged`: the HAProxy service's command with `-c`
/// (and `-W`), the staged file in place of the config, its environment, working directory
/// and user, plus what HAProxy's master sets before it parses the config at a reload.
/// When the service does not set `HAPROXY_MWORKER` itself (muster's own HAProxy service
/// does, so its first start parses the config as a reload does), its first start is
/// checked too, in its own environment.
fn check_runs(settings: &Settings, staged: &Path) -> Vec<Service> {
    let config = settings.config.display().to_string();
    let mut base = match &settings.service {
        Some(s) => s.clone(),
        None => Service::defaults(
            "haproxy -c",
            vec![
                settings.haproxy.clone(),
                "-W".to_owned(),
                "-f".to_owned(),
                config.clone(),
            ],
        ),
    };
    let staged = staged.display().to_string();
    let mut command = Vec::with_capacity(base.command.len() + 3);
    let mut files = Vec::new();
    let mut replaced = false;
    let mut words = base.command.iter();
    if let Some(program) = words.next() {
        command.push(program.clone());
    }
    command.push("-c".to_owned());
    while let Some(w) = words.next() {
        command.push(w.clone());
        if w == "-f" {
            if let Some(file) = words.next() {
                files.push(file.clone());
                if *file == config && !replaced {
                    command.push(staged.clone());
                    replaced = true;
                } else {
                    command.push(file.clone());
                }
            }
        }
    }
    if !replaced {
        // The service does not name the config: check the staged file alone.
        command.truncate(2);
        command.extend(["-f".to_owned(), staged]);
        files = vec![config];
    }
    if !command.iter().any(|w| w == "-W" || w == "-Ws") {
        command.push("-W".to_owned());
    }
    base.name = "haproxy -c".to_owned();
    base.command = command;
    let mut runs = Vec::new();
    if !base.environment.contains_key("HAPROXY_MWORKER") {
        runs.push(base.clone());
    }
    base.environment.extend(config::haproxy_master_environment(
        &settings.master_socket,
        &files,
    ));
    runs.push(base);
    runs
}

/// Reads `command`'s answer through `parse` when `wanted` (an empty value otherwise); `None`
/// when HAProxy did not answer.
async fn query<T: Default>(
    a: &mut Admin,
    wanted: bool,
    command: &str,
    parse: fn(&str) -> T,
) -> Option<T> {
    if !wanted {
        return Some(T::default());
    }
    a.command(command).await.ok().map(|text| parse(&text))
}

/// Sends a command and reads HAProxy's reply; an error when HAProxy does not answer.
async fn ask(a: &mut Admin, command: &str) -> Result<Reply, String> {
    let answer = a
        .command(command)
        .await
        .map_err(|e| format!("{command}: {e}"))?;
    Ok(Reply::read(&answer))
}

/// Sends a command that must succeed.
async fn order(a: &mut Admin, command: &str) -> Result<(), String> {
    match ask(a, command).await? {
        Reply::Done => Ok(()),
        other => Err(format!("{command}: {other}")),
    }
}

/// What `haproxy -c` said: accepted, or refused with its alerts.
fn verdict(outcome: std::io::Result<Outcome>) -> Result<(), RenderError> {
    let outcome = outcome.map_err(|e| RenderError::Run(e.to_string()))?;
    if outcome.status.success() {
        Ok(())
    } else {
        Err(RenderError::Invalid(alerts(&outcome.output)))
    }
}

/// HAProxy's alerts from `haproxy -c` output, on one line (all of it when there is none).
fn alerts(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("[ALERT]"))
        .map(|l| match l.find(" : ") {
            Some(i) => l[i + 3..].trim(),
            None => l.trim(),
        })
        .collect();
    if lines.is_empty() {
        output.trim().replace('\n', " | ")
    } else {
        lines.join(" | ")
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(service: Option<Service>) -> Settings {
        Settings {
            template: "/etc/haproxy/haproxy.cfg.hbs".into(),
            config: "/etc/haproxy/haproxy.cfg".into(),
            selection: Selection {
                role: None,
                default_port: 80,
            },
            master_socket: "/run/haproxy/master.sock".into(),
            haproxy: "haproxy".into(),
            service,
            debounce: Duration::from_millis(10),
            drain_timeout: Duration::from_secs(1),
        }
    }

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn haproxy_c_runs_like_the_service_with_the_masters_variables() {
        let staged = Path::new("/etc/haproxy/haproxy.cfg.new");
        let mut service = Service::defaults(
            "haproxy",
            words(&[
                "/usr/sbin/haproxy",
                "-W",
                "-db",
                "-S",
                "/run/haproxy/master.sock,mode,600",
                "-f",
                "/etc/haproxy/haproxy.cfg",
                "-f",
                "/etc/haproxy/extra.cfg",
            ]),
        );
        service.environment = [("TZ".to_owned(), "UTC".to_owned())].into();
        service.working_dir = Some("/etc/haproxy".into());
        // The service does not set HAPROXY_MWORKER: its first start is checked too.
        let runs = check_runs(&settings(Some(service.clone())), staged);
        assert_eq!(runs.len(), 2);
        let expected = words(&[
            "/usr/sbin/haproxy",
            "-c",
            "-W",
            "-db",
            "-S",
            "/run/haproxy/master.sock,mode,600",
            "-f",
            "/etc/haproxy/haproxy.cfg.new",
            "-f",
            "/etc/haproxy/extra.cfg",
        ]);
        assert_eq!(runs[0].command, expected);
        assert_eq!(runs[0].environment, service.environment);
        assert_eq!(runs[1].command, expected);
        assert_eq!(runs[1].working_dir, service.working_dir);
        let env = &runs[1].environment;
        assert_eq!(env["TZ"], "UTC");
        assert_eq!(env["HAPROXY_MWORKER"], "1");
        assert_eq!(env["HAPROXY_MASTER_CLI"], "unix@/run/haproxy/master.sock");
        assert_eq!(
            env["HAPROXY_CFGFILES"],
            "/etc/haproxy/haproxy.cfg;/etc/haproxy/extra.cfg"
        );
        // Muster's own service sets them at its first start: one check.
        service
            .environment
            .extend(config::haproxy_master_environment(
                Path::new("/run/haproxy/master.sock"),
                &words(&["/etc/haproxy/haproxy.cfg"]),
            ));
        assert_eq!(check_runs(&settings(Some(service)), staged).len(), 1);
        // No service known: haproxy -W -c on the staged file, in the master's environment.
        let runs = check_runs(&settings(None), staged);
        assert_eq!(runs.len(), 2);
        assert_eq!(
            runs[1].command,
            words(&["haproxy", "-c", "-W", "-f", "/etc/haproxy/haproxy.cfg.new"])
        );
        assert_eq!(
            runs[1].environment["HAPROXY_CFGFILES"],
            "/etc/haproxy/haproxy.cfg"
        );
    }
}
