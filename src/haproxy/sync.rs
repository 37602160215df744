//! The sync task: membership in, HAProxy changes out.
//!
//! On every change of the gossip view (debounced briefly) and every few seconds (so an edited
//! template is picked up), the template is rendered; a text that differs from the file is
//! checked with `haproxy -c` and written atomically, and [`cfg::plan`] decides how it reaches
//! the running HAProxy:
//!
//! - **runtime operations**, the normal case: a joining member's server is added in
//!   maintenance with its health check enabled and put in service at its first good check; a
//!   leaving member's server is drained until its sessions end (or `drain_timeout`), then put
//!   in maintenance and deleted; a failed member's server goes to maintenance at once;
//! - **a reload** through the master CLI for structural changes: the servers' state is saved to
//!   the `server-state-file` first, and the new worker is awaited in `show proc`.
//!
//! A template or config that does not pass keeps the last good file (and HAProxy) running,
//! and HAProxy's own message is logged.

// The sync measures its own latencies and deadlines: it reads the clock.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::cfg::{self, Op, Parsed, Plan, Server};
use super::model::{Model, Selection};
use super::runtime::{self, Admin};
use super::template::Template;
use crate::gossip::serf::{Member, Status};
use crate::supervisor::helper::{Helpers, Outcome};

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
    /// The haproxy binary (for `haproxy -c`).
    pub haproxy: String,
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

/// A server on its way in or out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// Added in maintenance; put in service at its first good check.
    Joining { since: Instant },
    /// Draining until it has no session or the deadline passes.
    Draining { deadline: Instant },
    /// In maintenance; deleted once HAProxy lets go of it.
    Removing { since: Instant },
}

/// The sync's state.
pub struct Sync {
    settings: Settings,
    helpers: Helpers,
    /// The text of the config file (the last good render).
    text: Option<String>,
    /// What the running HAProxy holds.
    running: Option<Parsed>,
    /// The last error reported, so it is logged once.
    last_error: Option<String>,
    pending: BTreeMap<(String, String), Pending>,
    view: Vec<Member>,
    /// When the stick tables were last filled.
    last_fill: Instant,
    /// The template's text and its compiled form, compiled again only when the text changes.
    template: Option<(String, Template)>,
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
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The path.
        path: PathBuf,
        /// The reason.
        source: std::io::Error,
    },
}

impl Sync {
    /// Renders, checks and writes the first config for this view, before HAProxy starts. When
    /// that fails, an existing config file is kept (and used); with none, this is an error.
    pub fn prepare(
        settings: Settings,
        helpers: Helpers,
        view: Vec<Member>,
    ) -> Result<Sync, RenderError> {
        let mut sync = Sync {
            settings,
            helpers,
            text: None,
            running: None,
            last_error: None,
            pending: BTreeMap::new(),
            view,
            last_fill: Instant::now(),
            template: None,
        };
        let text = sync.render()?;
        let result = match sync.check_direct(&text) {
            Ok(()) => sync.commit(&text),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {}
            Err(e) => match std::fs::read_to_string(&sync.settings.config) {
                Ok(old) => {
                    tracing::error!(error = %e, config = %sync.settings.config.display(), "keeping the existing config");
                    sync.text = Some(old);
                }
                Err(_) => return Err(e),
            },
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

    fn render(&mut self) -> Result<String, RenderError> {
        let path = &self.settings.template;
        let text = std::fs::read_to_string(path).map_err(|source| RenderError::Read {
            path: path.clone(),
            source,
        })?;
        if self.template.as_ref().is_none_or(|(old, _)| *old != text) {
            let compiled = Template::compile(&text, &path.display().to_string())
                .map_err(|e| RenderError::Template(e.to_string()))?;
            self.template = Some((text, compiled));
        }
        let Some((_, template)) = self.template.as_ref() else {
            return Err(RenderError::Template("no template".to_owned()));
        };
        let model = Model::new(&self.view, &self.settings.selection);
        template
            .render(&model)
            .map_err(|e| RenderError::Template(e.to_string()))
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

    fn check_command(&self, path: &Path) -> Vec<String> {
        vec![
            self.settings.haproxy.clone(),
            "-c".to_owned(),
            "-f".to_owned(),
            path.display().to_string(),
        ]
    }

    /// `haproxy -c` on the staged text, waited for directly (before the supervisor runs).
    fn check_direct(&self, text: &str) -> Result<(), RenderError> {
        let staging = self.stage(text)?;
        verdict(
            self.helpers
                .run_before_supervising(&self.check_command(&staging)),
        )
    }

    /// `haproxy -c` on the staged text, collected by the supervisor's reaper.
    async fn check(&self, text: &str) -> Result<(), RenderError> {
        let staging = self.stage(text)?;
        verdict(self.helpers.run(&self.check_command(&staging)).await)
    }

    /// Moves the checked staging file over the config (atomic rename in one directory).
    fn commit(&mut self, text: &str) -> Result<(), RenderError> {
        std::fs::rename(self.staging(), &self.settings.config).map_err(|source| {
            RenderError::Write {
                path: self.settings.config.clone(),
                source,
            }
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
        let text = match self.render() {
            Ok(t) => t,
            Err(e) => return self.report(e),
        };
        if self.text.as_deref() == Some(text.as_str()) {
            return;
        }
        let rendered = started.elapsed();
        if let Err(e) = self.check(&text).await {
            return self.report(e);
        }
        let checked = started.elapsed();
        if let Err(e) = self.commit(&text) {
            return self.report(e);
        }
        if self.last_error.take().is_some() {
            tracing::info!("the haproxy config is good again");
        }
        let new = cfg::parse(&text);
        let view = &self.view;
        let leaving = |name: &str| {
            view.iter()
                .any(|m| m.name == name && matches!(m.status, Status::Leaving | Status::Left))
        };
        let plan = cfg::plan(self.running.as_ref(), &new, &leaving);
        match plan {
            Plan::Nothing => self.running = Some(new),
            Plan::Runtime(ops) => {
                let count = ops.len();
                match self.apply(admin, &ops).await {
                    Ok(()) => {
                        self.running = Some(new);
                        tracing::info!(
                            changes = count,
                            render_ms = ms(rendered),
                            check_ms = ms(checked - rendered),
                            apply_ms = ms(started.elapsed() - checked),
                            "haproxy servers updated at run time"
                        );
                    }
                    Err(why) => self.reload(admin, new, &why).await,
                }
            }
            Plan::Reload(why) => self.reload(admin, new, &why).await,
        }
    }

    /// Carries out runtime operations; an error asks for a reload instead.
    async fn apply(&mut self, admin: &mut Option<Admin>, ops: &[Op]) -> Result<(), String> {
        let Some(a) = admin.as_mut() else {
            // No admin socket in the config: only a reload can apply changes.
            return Err("the config has no admin stats socket (stats socket … level admin)".into());
        };
        let now = Instant::now();
        for op in ops {
            match op {
                Op::Remove {
                    backend,
                    name,
                    gently,
                } => {
                    let id = format!("{backend}/{name}");
                    let key = (backend.clone(), name.clone());
                    if *gently {
                        send(a, &format!("set server {id} state drain")).await?;
                        let deadline = now + self.settings.drain_timeout;
                        self.pending.insert(key, Pending::Draining { deadline });
                        tracing::info!(server = %id, "draining (member leaving)");
                    } else {
                        send(a, &format!("set server {id} state maint")).await?;
                        self.pending.insert(key, Pending::Removing { since: now });
                        tracing::info!(server = %id, "out of rotation (member failed or gone)");
                    }
                }
                Op::Add(s) => self.add(a, s, now).await?,
                Op::Move(s) => {
                    if let Some(e) = s.endpoint {
                        let id = format!("{}/{}", s.backend, s.name);
                        send(
                            a,
                            &format!("set server {id} addr {} port {}", e.ip(), e.port()),
                        )
                        .await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn add(&mut self, a: &mut Admin, s: &Server, now: Instant) -> Result<(), String> {
        let id = format!("{}/{}", s.backend, s.name);
        let key = (s.backend.clone(), s.name.clone());
        let mut command = format!("add server {id} {}", s.addr);
        for w in s.runtime_args() {
            command.push(' ');
            command.push_str(&w);
        }
        let answer = a.command(&command).await.map_err(|e| e.to_string())?;
        if answer.contains("Already exists") {
            // Still there from a drain or removal under way: bring it back.
            if let Some(e) = s.endpoint {
                send(
                    a,
                    &format!("set server {id} addr {} port {}", e.ip(), e.port()),
                )
                .await?;
            }
        } else if !answer.contains("New server registered") {
            return Err(format!("{command}: {answer}"));
        } else if let Some(e) = s.endpoint {
            // HAProxy 2.6 computes a dynamic cookie only when the address changes: move the
            // server away and back so it gets the same cookie as it would from the config.
            let other = if e.port() == 65535 { 1 } else { e.port() + 1 };
            send(a, &format!("set server {id} addr {} port {other}", e.ip())).await?;
            send(
                a,
                &format!("set server {id} addr {} port {}", e.ip(), e.port()),
            )
            .await?;
        }
        self.stick(a, s).await;
        if s.checked() {
            send(a, &format!("enable health {id}")).await?;
            self.pending.insert(key, Pending::Joining { since: now });
        } else {
            self.pending.remove(&key);
            if !s.disabled() {
                send(a, &format!("set server {id} state ready")).await?;
            }
        }
        Ok(())
    }

    /// Points the backend's name-keyed stick table at this server (sessions stick by name).
    async fn stick(&self, a: &mut Admin, s: &Server) {
        let Some(command) = self.running.as_ref().and_then(|r| r.stick_entry(s)) else {
            return;
        };
        if let Err(e) = send(a, &command).await {
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
            if let Err(e) = send(a, &command).await {
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
            .any(|p| matches!(p, Pending::Joining { .. }));
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
                        if send(a, &format!("set server {id} state ready"))
                            .await
                            .is_ok()
                        {
                            tracing::info!(server = %id, after_ms = ms(now - since), "in service (first check passed)");
                            self.pending.remove(&key);
                        }
                    }
                    Some(_) => {}
                },
                Pending::Draining { deadline } => {
                    let idle = sessions.get(&key).is_none_or(|&n| n == 0);
                    if idle || now >= deadline {
                        if !idle {
                            tracing::warn!(server = %id, "drain deadline passed; sessions remain");
                        }
                        if send(a, &format!("set server {id} state maint"))
                            .await
                            .is_ok()
                        {
                            self.pending.insert(key, Pending::Removing { since: now });
                        }
                    }
                }
                Pending::Removing { since } => {
                    match a.command(&format!("del server {id}")).await {
                        Ok(answer) if answer.contains("still has connections") => {
                            if now - since > self.settings.drain_timeout {
                                // It stays in maintenance; the next reload drops it.
                                tracing::warn!(server = %id, %answer, "left in maintenance");
                                self.pending.remove(&key);
                            }
                        }
                        Ok(answer) => {
                            if !answer.contains("Server deleted") {
                                tracing::debug!(server = %id, %answer, "del server");
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
        // Servers restored in maintenance that the config does not disable were waiting for
        // their first check: they go on waiting.
        let (Some(a), Some(running)) = (admin.as_mut(), self.running.as_ref()) else {
            return;
        };
        if let Ok(text) = a.command("show servers state").await {
            let now = Instant::now();
            for (key, st) in runtime::parse_servers_state(&text) {
                if let Some(s) = running.servers.get(&key) {
                    if st.maint() && !s.disabled() && s.checked() {
                        self.pending.insert(key, Pending::Joining { since: now });
                    }
                }
            }
        }
    }
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

/// Sends a command whose answer must be empty (or a known success).
async fn send(a: &mut Admin, command: &str) -> Result<(), String> {
    let answer = a.command(command).await.map_err(|e| e.to_string())?;
    let ok = answer.is_empty()
        || answer.starts_with("no need to change")
        || answer.contains("changed from")
        || answer.contains("Health check enabled");
    if ok {
        Ok(())
    } else {
        Err(format!("{command}: {answer}"))
    }
}

/// What `haproxy -c` said: accepted, or refused with its alerts.
fn verdict(outcome: std::io::Result<Outcome>) -> Result<(), RenderError> {
    let outcome =
        outcome.map_err(|e| RenderError::Invalid(format!("cannot run haproxy -c: {e}")))?;
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
