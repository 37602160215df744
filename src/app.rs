//! The one module that knows every subsystem: it sets up the runtime, starts gossip and the
//! control socket when the configuration asks for them, and runs the supervisor with a
//! before-stop step that leaves the cluster, so a load balancer drains this node before its
//! services stop.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{self, Config, Profile};
use crate::gossip::driver::{self, Command, Publish, Settings};
use crate::gossip::serf::{self, Member};
use crate::gossip::swim;
use crate::haproxy::{self, model::Selection, sync::Sync};
use crate::logship;
use crate::supervisor::helper::Helpers;
use crate::supervisor::ready::Waiters;
use crate::supervisor::run::{self as supervisor, BeforeStop};
use crate::supervisor::signals::Inherited;

/// How long muster waits at exit for the collector to acknowledge what is queued.
const LOG_FLUSH: std::time::Duration = std::time::Duration::from_secs(3);

/// A problem of the configuration found only at start (the host name as node name): muster
/// exits 64, as for any bad configuration.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadConfig(pub String);

/// Runs muster for this configuration; returns the exit code.
pub fn run(config: Config) -> anyhow::Result<i32> {
    // Before any thread exists: record the inherited signal state, then become a subreaper.
    let inherited = Inherited::capture_and_unblock();
    supervisor::become_subreaper();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    runtime.block_on(async move {
        let (gossip, view) = match &config.gossip {
            Some(g) => {
                let (commands, view) = start_gossip(g)?;
                (Some(commands), Some(view))
            }
            None => (None, None),
        };
        let waiters = Waiters::default();
        let sync_stop = match &config.haproxy {
            Some(h) => {
                let helpers = Helpers::new(inherited, waiters.clone());
                let seeds = config.gossip.as_ref().is_some_and(|g| !g.join.is_empty());
                let service = config.services.iter().find(|s| s.name == "haproxy");
                start_haproxy_sync(h, service, helpers, view, seeds).await?
            }
            None => None,
        };
        if let Some(path) = &config.control_socket {
            if let Err(error) = serve_control(path, gossip.clone()) {
                tracing::warn!(socket = %path.display(), %error, "no control socket");
            }
        }
        let before_stop: Option<BeforeStop> = if gossip.is_some() || sync_stop.is_some() {
            Some(Box::new(move || {
                Box::pin(async move {
                    // The HAProxy sync stops first: HAProxy is about to soft-stop.
                    if let Some(stop) = sync_stop {
                        let _ = stop.send(());
                    }
                    if let Some(commands) = gossip {
                        let (done, wait) = oneshot::channel();
                        // The app's shell reads the clock: two seconds until the stop deadline
                        // computed at the first SIGTERM is passed here.
                        #[allow(clippy::disallowed_methods)]
                        let by = std::time::Instant::now() + std::time::Duration::from_secs(2);
                        if commands.send(Command::Leave { by, done }).is_ok() {
                            tracing::info!("leaving the cluster before stopping services");
                            let _ = wait.await;
                        }
                    }
                })
            }))
        } else {
            None
        };
        let (tap, shipper) = match &config.logship {
            Some(l) => {
                let host = match &l.hostname {
                    Some(h) => h.clone(),
                    None => hostname().unwrap_or_else(|_| "-".to_owned()),
                };
                let (tap, shipper) = logship::ship::start(l.clone(), host);
                (Some(tap), Some(shipper))
            }
            None => (None, None),
        };
        let code = supervisor::supervise(config, inherited, before_stop, tap, waiters).await;
        if let Some(s) = shipper {
            // Every line is queued by now (the output sink has finished): flush them.
            let undelivered = s.finish(LOG_FLUSH).await;
            if undelivered > 0 {
                tracing::error!(
                    lines = undelivered,
                    "log lines not delivered to the collector before exit"
                );
            }
        }
        code
    })
}

/// Renders HAProxy's first config from the membership known after a short wait (so an LB
/// that restarts comes back with every live server), then follows membership in a task;
/// returns what stops that task.
async fn start_haproxy_sync(
    h: &config::Haproxy,
    service: Option<&config::Service>,
    helpers: Helpers,
    view: Option<watch::Receiver<Vec<Member>>>,
    seeds: bool,
) -> anyhow::Result<Option<oneshot::Sender<()>>> {
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
        },
        master_socket: h.master_socket.clone(),
        haproxy: h.program.clone(),
        service: service.cloned(),
        debounce: h.debounce,
        drain_timeout: h.drain_timeout,
    };
    let Some(mut view) = view else {
        tracing::warn!(
            "[haproxy] without [gossip]: the servers stay as the template renders them with no member"
        );
        let sync = Sync::prepare(settings, helpers, Vec::new())
            .await
            .context("haproxy")?;
        drop(sync);
        return Ok(None);
    };
    if seeds {
        // The first join brings the whole membership (push/pull): wait for it, briefly.
        let wait = view.wait_for(|members| members.len() > 1);
        let _ = tokio::time::timeout(h.start_wait, wait).await;
    }
    let members = view.borrow_and_update().clone();
    let sync = Sync::prepare(settings, helpers, members)
        .await
        .context("haproxy")?;
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(sync.run(view, stopped));
    Ok(Some(stop))
}

fn start_gossip(
    g: &config::Gossip,
) -> anyhow::Result<(mpsc::UnboundedSender<Command>, watch::Receiver<Vec<Member>>)> {
    let name = match &g.name {
        Some(n) => n.clone(),
        None => {
            let host = hostname()?;
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
    let advertise = match g.advertise {
        Some(a) => a,
        None if g.bind.ip().is_unspecified() => {
            let ip = first_ipv4().ok_or_else(|| {
                anyhow::anyhow!(
                    "gossip: no non-loopback IPv4 address to advertise; set gossip.advertise"
                )
            })?;
            SocketAddr::new(IpAddr::V4(ip), g.bind.port())
        }
        None => g.bind,
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
    tracing::info!(name = %settings.name, %advertise, seeds = ?settings.seeds, "gossip starting");
    let (view, view_rx) = watch::channel(Vec::new());
    let (commands, commands_rx) = mpsc::unbounded_channel();
    let publish = Publish { view };
    tokio::spawn(async move {
        if let Err(error) = driver::run(settings, publish, commands_rx).await {
            tracing::error!(%error, "gossip stopped");
        }
    });
    Ok((commands, view_rx))
}

fn hostname() -> anyhow::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        anyhow::bail!("gossip: cannot read the host name; set gossip.name");
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// The first IPv4 address of an interface that is up and not loopback.
fn first_ipv4() -> Option<std::net::Ipv4Addr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we walk read-only and free with freeifaddrs.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut found = None;
        let mut cur = list;
        while !cur.is_null() {
            let ifa = &*cur;
            let up = ifa.ifa_flags & libc::IFF_UP as u32 != 0;
            let loopback = ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0;
            if up
                && !loopback
                && !ifa.ifa_addr.is_null()
                && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET
            {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                found = Some(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                break;
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
        found
    }
}

/// Serves `members [json]` on a Unix socket.
fn serve_control(
    path: &Path,
    gossip: Option<mpsc::UnboundedSender<Command>>,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket file left by an earlier run (the container restarted) is ours to replace.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let gossip = gossip.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let mut reader = BufReader::new(read.take(1024));
                if reader.read_line(&mut line).await.is_err() {
                    return;
                }
                let reply = answer(line.trim(), gossip.as_ref()).await;
                let _ = write.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(())
}

async fn answer(request: &str, gossip: Option<&mpsc::UnboundedSender<Command>>) -> String {
    let mut words = request.split_whitespace();
    match (words.next(), words.next()) {
        (Some("members"), format) => {
            let Some(g) = gossip else {
                return "error: gossip is not configured (no [gossip] table)\n".to_owned();
            };
            let (tx, rx) = oneshot::channel();
            if g.send(Command::Members(tx)).is_err() {
                return "error: gossip has stopped\n".to_owned();
            }
            match rx.await {
                Ok(members) if format == Some("json") => members_json(&members),
                Ok(members) => members_text(&members),
                Err(_) => "error: gossip has stopped\n".to_owned(),
            }
        }
        _ => format!("error: unknown request {request:?} (known: members [json])\n"),
    }
}

fn status(m: &Member) -> &'static str {
    m.status.as_str()
}

fn tags_of(m: &Member) -> &BTreeMap<String, String> {
    &m.tags
}

/// One line per member: name, address, status, tags (as `serf members` prints them).
pub fn members_text(members: &[Member]) -> String {
    let rows: Vec<[String; 4]> = members
        .iter()
        .map(|m| {
            let tags: Vec<String> = tags_of(m).iter().map(|(k, v)| format!("{k}={v}")).collect();
            [
                m.name.clone(),
                m.addr.to_string(),
                status(m).to_owned(),
                tags.join(","),
            ]
        })
        .collect();
    let width = |i: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or(0);
    let (w0, w1, w2) = (width(0), width(1), width(2));
    rows.iter()
        .map(|r| {
            format!("{:w0$}  {:w1$}  {:w2$}  {}\n", r[0], r[1], r[2], r[3]).replace("  \n", "\n")
        })
        .collect()
}

/// The members as a JSON array of `{name, addr, status, tags}`.
pub fn members_json(members: &[Member]) -> String {
    let mut out = String::from("[");
    for (i, m) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        crate::logging::push_json_string(&mut out, &m.name);
        out.push_str(",\"addr\":");
        crate::logging::push_json_string(&mut out, &m.addr.to_string());
        out.push_str(",\"status\":");
        crate::logging::push_json_string(&mut out, status(m));
        out.push_str(",\"tags\":{");
        for (j, (k, v)) in tags_of(m).iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            crate::logging::push_json_string(&mut out, k);
            out.push(':');
            crate::logging::push_json_string(&mut out, v);
        }
        out.push_str("}}");
    }
    out.push_str("]\n");
    out
}
