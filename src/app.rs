//! The wiring: the one module that knows every subsystem. It builds the runtime, starts
//! gossip, the HAProxy sync, the control socket and log shipping as the configuration asks,
//! maps each subsystem's types into the next one's (gossip members into HAProxy backends and
//! control-socket rows, supervisor output lines into log-shipping lines), and owns shutdown:
//! the supervisor computes the stop deadline at the first SIGTERM, and the leave (with the
//! sync's stop) and the log flush are each given what is left of it (see the shutdown order in
//! `lib.rs`).

// The log flush's share of the stop deadline is measured here.
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::networks::Network;
use crate::config::{self, Config, Profile};
use crate::control;
use crate::gossip::driver::{self, Command, Publish, Settings};
use crate::gossip::serf::{self, Member};
use crate::gossip::swim;
use crate::gossip::wire;
use crate::handlers;
use crate::haproxy::{
    self,
    model::Selection,
    sync::{ServerStates, Syncer},
};
use crate::host;
use crate::logship;
use crate::supervisor::children::Children;
use crate::supervisor::output::{LogLine, Stream, Tap};
use crate::supervisor::run::{self as supervisor, BeforeStop};
use crate::supervisor::signals::{self, Inherited, Installed};

/// A problem of the configuration found only at start (the host name as node name): muster
/// exits 64, as for any bad configuration.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadConfig(pub String);

/// Runs muster for this configuration; returns the exit code.
pub fn run(config: Config) -> anyhow::Result<i32> {
    // Before any thread or child exists: record the inherited signal state, catch every
    // signal, then become a subreaper.
    let inherited = Inherited::capture_and_unblock();
    let signals = signals::install().context("cannot install signal handlers")?;
    supervisor::become_subreaper();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    runtime.block_on(wire_and_run(config, inherited, signals))
}

async fn wire_and_run(
    config: Config,
    inherited: Inherited,
    signals: Installed,
) -> anyhow::Result<i32> {
    let children = Children::new(inherited);
    let (gossip, view, own_name) = match &config.gossip {
        Some(g) => {
            let (commands, view, name) = start_gossip(g)?;
            let me = handlers::SelfNode {
                name: name.clone(),
                tags: g.tags.clone(),
            };
            let (list, timeout) = (g.event_handlers.clone(), g.handler_timeout);
            handlers::start(list, timeout, me, commands.clone(), children.clone())
                .await
                .context("event handlers")?;
            (Some(commands), Some(view), Some(name))
        }
        None => (None, None, None),
    };
    let (sync_stop, states) = match &config.haproxy {
        Some(h) => {
            let seeds = config.gossip.as_ref().is_some_and(|g| !g.join.is_empty());
            let service = config.services.iter().find(|s| s.name == "haproxy");
            let trusted = trusted_networks(h, config.gossip.as_ref());
            start_haproxy_sync(h, service, children.clone(), view, seeds, trusted).await?
        }
        None => (None, None),
    };
    if let Some(path) = &config.control_socket {
        let members = gossip
            .clone()
            .map(|g| members_of(g, states, own_name.unwrap_or_default()));
        if let Err(error) = control::serve(path, members) {
            tracing::warn!(socket = %path.display(), %error, "no control socket");
        }
    }
    let before_stop = leave_first(gossip, sync_stop);
    let (tap, shipper) = match &config.logship {
        Some(l) => {
            let host = host::name().unwrap_or_else(|_| "-".to_owned());
            let (feed, shipper) = logship::ship::start(l.clone(), &host);
            // The output sink's lines, as logship's.
            let tap: Tap = std::sync::Arc::new(move |line: LogLine| {
                let stream = match line.stream {
                    Stream::Stdout => logship::ship::Stream::Stdout,
                    Stream::Stderr => logship::ship::Stream::Stderr,
                };
                feed.push(logship::ship::Line::now(
                    line.service,
                    stream,
                    line.cont,
                    line.text,
                ));
            });
            (Some(tap), Some(shipper))
        }
        None => (None, None),
    };
    let ended =
        supervisor::supervise(config, inherited, signals, before_stop, tap, children).await?;
    if let Some(s) = shipper {
        // Every line is queued by now (the output sink has finished): flush them, within what
        // is left of the stop deadline (logship has its own cap too).
        let undelivered = s.finish(ended.work_by).await;
        if undelivered > 0 {
            tracing::error!(
                lines = undelivered,
                "log lines not delivered to the collector before exit"
            );
        }
    }
    Ok(ended.code)
}

// A held-back server is drained while its leaving app still answers (see HELD_BACK_MAX).
const _: () = assert!(
    crate::haproxy::servers::HELD_BACK_MAX.as_millis()
        < crate::gossip::node::LEAVE_PROPAGATE.as_millis()
);

/// The before-stop work: the HAProxy sync stops (HAProxy is about to soft-stop), then the
/// node leaves the cluster, so load balancers drain it before its services stop. Both are done
/// by the instant the supervisor gives.
fn leave_first(
    gossip: Option<mpsc::UnboundedSender<Command>>,
    sync_stop: Option<oneshot::Sender<Instant>>,
) -> Option<BeforeStop> {
    if gossip.is_none() && sync_stop.is_none() {
        return None;
    }
    Some(Box::new(move |by: Instant| {
        Box::pin(async move {
            if let Some(stop) = sync_stop {
                let _ = stop.send(by);
            }
            if let Some(commands) = gossip {
                let (done, wait) = oneshot::channel();
                if commands.send(Command::Leave { by, done }).is_ok() {
                    let _ = wait.await;
                }
            }
        })
    }))
}

/// The control socket's view of the members, asked of the gossip driver; on a load balancer,
/// with each member's HAProxy server state, and on its own row (`own_name`) the drains it held
/// back.
fn members_of(
    gossip: mpsc::UnboundedSender<Command>,
    states: Option<watch::Receiver<ServerStates>>,
    own_name: String,
) -> control::Members {
    std::sync::Arc::new(move || {
        let gossip = gossip.clone();
        let states = states.as_ref().map(|s| s.borrow().clone());
        let own_name = own_name.clone();
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            gossip.send(Command::Members(tx)).ok()?;
            let members = rx.await.ok()?;
            let rows = members.iter().map(|m| {
                let own = m.name == own_name;
                row(m, states.as_ref(), own)
            });
            Some(rows.collect())
        })
    })
}

/// A gossip member as the control socket shows it (`own`: this muster's own row).
fn row(m: &Member, states: Option<&ServerStates>, own: bool) -> control::Member {
    control::Member {
        name: m.name.clone(),
        addr: wire::canonical(m.addr).to_string(),
        status: m.status.as_str().to_owned(),
        tags: (*m.tags).clone(),
        server: states.map(|s| s.servers.get(&m.name).copied().unwrap_or("-").to_owned()),
        drains_held_back: states.filter(|_| own).map(|s| s.drains_held_back),
    }
}

/// The networks whose members may become servers: `[haproxy] trusted_networks`, or those of
/// this host's interfaces (loopback's only when gossip itself is on loopback: tests, one host).
fn trusted_networks(h: &config::Haproxy, gossip: Option<&config::Gossip>) -> Vec<Network> {
    if let Some(list) = &h.trusted_networks {
        return list.clone();
    }
    let loopback = gossip.is_some_and(|g| {
        g.bind.ip().is_loopback() || g.advertise.is_some_and(|a| a.ip().is_loopback())
    });
    let nets = crate::host::networks(loopback);
    let shown: Vec<String> = nets.iter().map(Network::to_string).collect();
    tracing::info!(networks = ?shown, "haproxy: members outside this host's networks become no server (set haproxy.trusted_networks to choose)");
    nets
}

/// Renders HAProxy's first config from the membership known after a short wait (so an LB
/// that restarts comes back with every live server), then follows membership in a task;
/// returns what stops that task (it takes the time by which the task must be done).
async fn start_haproxy_sync(
    h: &config::Haproxy,
    service: Option<&config::Service>,
    helpers: Children,
    view: Option<watch::Receiver<Vec<Member>>>,
    seeds: bool,
    trusted: Vec<Network>,
) -> anyhow::Result<(
    Option<oneshot::Sender<Instant>>,
    Option<watch::Receiver<ServerStates>>,
)> {
    for dir in [h.config.parent(), h.master_socket.parent()]
        .into_iter()
        .flatten()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("haproxy: cannot create {}", dir.display()))?;
    }
    let settings = haproxy::sync::Settings {
        template: h.template.clone(),
        config: h.config.clone(),
        selection: Selection {
            role: h.role.clone(),
            default_port: h.port,
            hold_timeout_ms: u64::try_from(h.hold_timeout.as_millis()).unwrap_or(u64::MAX),
            trusted,
        },
        master_socket: h.master_socket.clone(),
        haproxy: h.program.clone(),
        service: service.cloned(),
        debounce: h.debounce,
        drain_timeout: h.drain_timeout,
    };
    let runner = Box::new(HelperChecks(helpers));
    let Some(mut view) = view else {
        tracing::warn!(
            "[haproxy] without [gossip]: the servers stay as the template renders them with no member"
        );
        let sync = Syncer::start(settings, runner, Vec::new())
            .await
            .context("haproxy")?;
        drop(sync);
        return Ok((None, None));
    };
    // A restart of this container finds the config its last run wrote (newer than the
    // template: not the one a package installed): HAProxy starts on it at once, and the first
    // join renders it anew (see `Syncer::resume`).
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let resume = seeds
        && matches!((modified(&h.config), modified(&h.template)), (Some(c), Some(t)) if c > t);
    if seeds && !resume {
        // The first join brings the whole membership (push/pull): wait for it, briefly.
        let wait = view.wait_for(|members| members.len() > 1);
        let _ = tokio::time::timeout(h.start_wait, wait).await;
    }
    // Forwarded from now on: a change while the first config is rendered is not missed.
    let members = follow_members(view);
    let first = members.borrow().clone();
    let sync = if resume {
        Syncer::resume(settings, runner, first, Instant::now() + h.start_wait).await
    } else {
        Syncer::start(settings, runner, first).await
    }
    .context("haproxy")?;
    let mut sync = sync;
    let states = sync.states();
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(sync.run(members, stopped));
    Ok((Some(stop), Some(states)))
}

/// The gossip view as the HAProxy sync follows it.
fn haproxy_members(view: &[Member]) -> Vec<haproxy::model::Member> {
    use haproxy::model::Status;
    view.iter()
        .map(|m| haproxy::model::Member {
            name: m.name.clone(),
            addr: wire::canonical(m.addr).ip(),
            tags: (*m.tags).clone(),
            status: match m.status {
                serf::Status::Alive => Status::Alive,
                serf::Status::Leaving => Status::Leaving,
                serf::Status::Left => Status::Left,
                serf::Status::Failed => Status::Failed,
            },
        })
        .collect()
}

/// Forwards the changes of the gossip view that the HAProxy sync can see (name, address,
/// tags, status), mapped into its members; a change of Serf's own bookkeeping alone (a Lamport
/// time, a suspicion that cleared) gives no render.
fn follow_members(
    mut view: watch::Receiver<Vec<Member>>,
) -> watch::Receiver<Vec<haproxy::model::Member>> {
    let (tx, rx) = watch::channel(haproxy_members(&view.borrow_and_update()));
    tokio::spawn(async move {
        while view.changed().await.is_ok() {
            if tx.is_closed() {
                return;
            }
            let members = haproxy_members(&view.borrow_and_update());
            tx.send_if_modified(|current| {
                let changed = *current != members;
                if changed {
                    *current = members;
                }
                changed
            });
        }
    });
    rx
}

/// The HAProxy sync's `haproxy -c`, run as one of the supervisor's children: waited for directly
/// before the supervisor reaps, through its reaper afterwards.
pub struct HelperChecks(pub Children);

impl haproxy::check::Runner for HelperChecks {
    fn run<'a>(
        &'a self,
        service: &'a config::Service,
        reaping: haproxy::check::Reaping,
    ) -> haproxy::check::Running<'a> {
        Box::pin(async move {
            let outcome = match reaping {
                haproxy::check::Reaping::NotYet => self.0.run_like_before_supervising(service),
                haproxy::check::Reaping::Supervisor => self.0.run_like(service).await,
            }?;
            Ok(haproxy::check::Ran {
                success: outcome.status.success(),
                exit: outcome.status.to_string(),
                output: outcome.output,
            })
        })
    }
}

/// The gossip driver's commands, its view and the node name.
type Gossiping = (
    mpsc::UnboundedSender<Command>,
    watch::Receiver<Vec<Member>>,
    String,
);

/// Starts the gossip driver (and Serf's RPC).
fn start_gossip(g: &config::Gossip) -> anyhow::Result<Gossiping> {
    let name = match &g.name {
        Some(n) => n.clone(),
        None => {
            let host =
                host::name().context("gossip: cannot read the host name; set gossip.name")?;
            if let Err(e) = crate::config::names::name(&host) {
                return Err(BadConfig(format!(
                    "gossip.name: unset, and the host name {:?} {e}; set gossip.name",
                    crate::config::names::printable(&host, 64)
                ))
                .into());
            }
            host
        }
    };
    let advertise = match (g.advertise, &g.advertise_network) {
        (Some(a), _) => a,
        (None, Some(net)) => {
            let ip = host::ipv4_in(net).ok_or_else(|| {
                anyhow::anyhow!(
                    "gossip: no interface has an IPv4 address in advertise_network {net}"
                )
            })?;
            SocketAddr::new(IpAddr::V4(ip), g.bind.port())
        }
        (None, None) if g.bind.ip().is_unspecified() => {
            let ip = host::first_ipv4().ok_or_else(|| {
                anyhow::anyhow!(
                    "gossip: no non-loopback IPv4 address to advertise; set gossip.advertise"
                )
            })?;
            SocketAddr::new(IpAddr::V4(ip), g.bind.port())
        }
        (None, None) => g.bind,
    };
    let settings = Settings {
        name,
        bind: g.bind,
        advertise,
        seeds: g.join.clone(),
        tags: g.tags.clone(),
        profile: swim::Config {
            max_members: g.max_members,
            new_members_per_second: g.new_members_per_second,
            ..match g.profile {
                Profile::Lan => swim::Config::lan(),
                Profile::Local => swim::Config::local(),
            }
        },
        rejoin_interval: g.rejoin_interval,
        serf: serf::Config {
            reconnect_interval: g.reconnect_interval,
            reap_failed: g.reap_failed,
            reap_left: g.reap_left,
            ..serf::Config::default()
        },
    };
    let keyring = match g.keys.0.as_slice() {
        [] => None,
        keys => Some(
            crate::gossip::crypto::Keyring::new(keys)
                .map_err(|e| BadConfig(format!("gossip.encrypt: {e}")))?,
        ),
    };
    tracing::info!(name = %settings.name, %advertise, seeds = ?settings.seeds, encrypted = keyring.is_some(), keys = g.keys.0.len(), secure = g.secure, "gossip starting");
    let secure = g.secure;
    let (view, view_rx) = watch::channel(Vec::new());
    let (commands, commands_rx) = mpsc::unbounded_channel();
    if let Some(addr) = g.rpc_addr {
        start_rpc(addr, g, &settings.name, keyring.is_some(), &commands);
    }
    let name = settings.name.clone();
    let publish = Publish { view };
    tokio::spawn(async move {
        if let Err(error) =
            driver::run_secure(settings, keyring, secure, publish, commands_rx).await
        {
            tracing::error!(%error, "gossip stopped");
            if error
                .get_ref()
                .is_some_and(|e| e.is::<driver::NameConflictLost>())
            {
                // As Serf's agent: the node the cluster does not know under this name goes.
                crate::supervisor::signals::request_stop();
            }
        }
    });
    Ok((commands, view_rx, name))
}

/// Serf's agent RPC on `addr`, for the `serf` CLI and `muster event`/`query`/`keys`; a
/// failure to listen is only a warning (another agent may hold Serf's default port).
fn start_rpc(
    addr: SocketAddr,
    g: &config::Gossip,
    name: &str,
    encrypted: bool,
    commands: &mpsc::UnboundedSender<Command>,
) {
    if !addr.ip().is_loopback() && g.rpc_auth.is_none() {
        tracing::warn!(%addr, "serf rpc beyond loopback without [gossip] rpc_auth: whoever reaches it can list members and join");
    }
    let agent = crate::gossip::agent::Agent {
        name: name.to_owned(),
        auth: g.rpc_auth.clone(),
        encrypted,
        commands: commands.clone(),
        monitor: Some(std::sync::Arc::new(crate::logging::monitor)),
        stop: Some(std::sync::Arc::new(
            crate::supervisor::signals::request_stop,
        )),
    };
    match crate::gossip::agent::serve(addr, agent) {
        Ok(local) => {
            tracing::info!(addr = %local, "serf rpc listening (serf members -rpc-addr=…)")
        }
        Err(error) => {
            tracing::warn!(%addr, %error, "serf rpc: cannot listen; the serf CLI cannot reach this muster (set [gossip] rpc_addr, or false)")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods, clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    fn member(name: &str, status: serf::Status, suspect: bool, ltime: u64) -> Member {
        Member {
            name: name.to_owned(),
            addr: SocketAddr::from(([10, 0, 0, 2], 7946)),
            tags: std::sync::Arc::new([("role".to_owned(), "backend".to_owned())].into()),
            status,
            suspect,
            status_ltime: ltime,
            since: Instant::now(),
        }
    }

    #[test]
    fn the_sync_sees_only_changes_it_can_render() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let (view, rx) = watch::channel(vec![member("web-1", serf::Status::Alive, false, 1)]);
            let mut members = follow_members(rx);
            assert_eq!(members.borrow_and_update().len(), 1);
            let settle = || tokio::time::sleep(Duration::from_millis(20));
            // Serf's bookkeeping alone: a suspicion, a later Lamport time.
            view.send_replace(vec![member("web-1", serf::Status::Alive, true, 7)]);
            settle().await;
            assert!(!members.has_changed().unwrap(), "no render for a suspicion");
            // What HAProxy sees: the member leaves.
            view.send_replace(vec![member("web-1", serf::Status::Leaving, true, 8)]);
            settle().await;
            assert!(members.has_changed().unwrap());
            assert_eq!(
                members.borrow_and_update()[0].status,
                haproxy::model::Status::Leaving
            );
        });
    }
}
