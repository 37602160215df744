//! The configuration: a TOML file read into a `toml::Table`, then validated key by key into
//! typed values, so that every problem in the file is reported at once, each naming the key it
//! is about (`services.app.restart: ...`). Nothing here binds, spawns or signals; the only I/O is
//! reading the file and, for `user`, `/etc/passwd` and `/etc/group`.

pub mod handlers;
mod keys;
pub use keys::GossipKeys;
pub mod names;
pub mod networks;
mod policy;
pub mod users;
mod value;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use users::{Credentials, UserDb};
pub use value::{parse_duration, parse_signal, signal_name};

/// Where the configuration is read from when neither `--config` nor `$MUSTER_CONFIG` is given.
pub const DEFAULT_PATH: &str = "/etc/muster/muster.toml";

/// The validated configuration of one muster process.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Budget of the whole shutdown, from the stop request to muster's exit.
    pub stop_timeout: Duration,
    /// Unix socket where `muster members` (and later commands) reach the running muster.
    pub control_socket: Option<PathBuf>,
    /// Services in the order they appear in the file; names are unique.
    pub services: Vec<Service>,
    /// Membership by gossip, when the file has a `[gossip]` table.
    pub gossip: Option<Gossip>,
    /// Log shipping, when the file has a `[logship]` table.
    pub logship: Option<Logship>,
    /// HAProxy sync, when the file has a `[haproxy]` table.
    pub haproxy: Option<Haproxy>,
}

/// The `[haproxy]` table, validated: muster renders HAProxy's config from membership and keeps
/// the running HAProxy in step.
#[derive(Debug, Clone, PartialEq)]
pub struct Haproxy {
    /// The handlebars template.
    pub template: PathBuf,
    /// The config file muster writes (and HAProxy reads).
    pub config: PathBuf,
    /// Members whose `role` tag has this value become servers; `None`: every member.
    pub role: Option<String>,
    /// Port of members without a `port` tag.
    pub port: u16,
    /// HAProxy's master CLI socket.
    pub master_socket: PathBuf,
    /// The haproxy program.
    pub program: String,
    /// Quiet time after a membership change before rendering.
    pub debounce: Duration,
    /// Longest drain of a leaving member's server.
    pub drain_timeout: Duration,
    /// Longest wait at start for the first membership (with gossip seeds) before HAProxy starts.
    pub start_wait: Duration,
    /// Longest wait of a request for a server in service (the template's hold).
    pub hold_timeout: Duration,
    /// Networks a member's address must be in to become a server; `None`: the networks of
    /// this host's interfaces (`app.rs` reads them at start).
    pub trusted_networks: Option<Vec<networks::Network>>,
}

/// Where the control socket is when the configuration does not say.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/muster/control.sock";

/// The `[logship]` table, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Logship {
    /// Collector, `host:port` (resolved again at every connection).
    pub target: String,
    /// RELP (acknowledged) or plain TCP with octet counting.
    pub protocol: LogProtocol,
    /// Lines held in memory while the collector is slow or away.
    pub queue: usize,
    /// Bytes held at most in that queue (each line's text plus a fixed overhead).
    pub queue_bytes: usize,
    /// Longest wait for the collector's answer to RELP `open` or to any message in flight
    /// (and for a write to go through) before the connection is given up and made again.
    pub ack_timeout: Duration,
    /// What happens when the queue is full.
    pub when_full: WhenFull,
    /// Directory of the disk spool (`spool`): lines the memory queue cannot hold while the
    /// collector is away, and what is undelivered at exit, kept across restarts. None: no
    /// spool.
    pub spool: Option<PathBuf>,
    /// Bytes the spool's segment files may hold at most (`spool_bytes`); beyond, the oldest
    /// segment is dropped and its lines counted.
    pub spool_bytes: u64,
    /// HOSTNAME of the messages; the host name when unset.
    pub hostname: Option<String>,
    /// Syslog facility number (1 = user, 16..=23 = local0..local7).
    pub facility: u8,
}

/// Transports to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogProtocol {
    /// RELP: every message acknowledged, unacknowledged ones resent after a reconnect.
    Relp,
    /// TCP with RFC 6587 octet counting: for collectors without RELP; a restart can lose lines.
    Tcp,
}

/// Policy when the shipping queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// The default: while the collector is connected and acknowledging, the services'
    /// output waits (back-pressure, nothing lost to a slower collector); while it is away
    /// (not connected, in back-off, not answering within `ack_timeout`), the oldest line is
    /// dropped and counted (or spooled), so the services never stall.
    DropWhileAway,
    /// The services' output waits (their writes block): nothing is lost, but a collector
    /// away for long stalls every piped service.
    Block,
    /// The oldest queued line is dropped and counted: the services keep running whatever
    /// the collector does.
    DropOldest,
}

/// The `[gossip]` table, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Gossip {
    /// Node name; the host name when unset.
    pub name: Option<String>,
    /// Address for UDP and TCP.
    pub bind: SocketAddr,
    /// Address announced; found from the interfaces when unset and `bind` is 0.0.0.0.
    pub advertise: Option<SocketAddr>,
    /// `advertise_network`: advertise this host's IPv4 address inside this network (the
    /// overlay of a Docker Swarm task, which also has docker_gwbridge and maybe ingress).
    pub advertise_network: Option<networks::Network>,
    /// Seeds to join, `host` or `host:port` (Docker DNS names such as `ha` work).
    pub join: Vec<String>,
    /// Tags announced to the cluster (Serf's tags: `role`, `port`, ...).
    pub tags: BTreeMap<String, String>,
    /// `lan` (Serf's timings) or `local` (one Docker network).
    pub profile: Profile,
    /// How often the seeds are joined again, so a split or a restarted seed heals.
    pub rejoin_interval: Duration,
    /// How often a failed member is tried again.
    pub reconnect_interval: Duration,
    /// How long a failed member is remembered (and retried) before it is forgotten.
    pub reap_failed: Duration,
    /// How long a member that left is remembered.
    pub reap_left: Duration,
    /// Most members kept (self and names still to answer their first probe included).
    pub max_members: usize,
    /// New names admitted per second.
    pub new_members_per_second: u32,
    /// Encryption keys (`encrypt`, `encrypt_file`, `keyring_file`), primary first; empty for
    /// a plaintext cluster.
    pub keys: GossipKeys,
    /// Where Serf's agent RPC listens (`rpc_addr`, default `127.0.0.1:7373`); `None`: nowhere
    /// (`rpc_addr = false`).
    pub rpc_addr: Option<SocketAddr>,
    /// The key RPC clients must give (`rpc_auth`, as `serf agent -rpc-auth`).
    pub rpc_auth: Option<String>,
    /// Scripts run on events (`event_handlers`, as `serf agent -event-handler`).
    pub event_handlers: Vec<handlers::EventHandler>,
    /// Longest a handler runs before its process group is killed (`handler_timeout`).
    pub handler_timeout: Duration,
    /// Secure mode (muster-only clusters): replayed and stale traffic refused, a member's
    /// address taken only from the member itself. Requires a key.
    pub secure: bool,
}

/// Gossip timing profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// memberlist's LAN defaults, as `serf agent` uses.
    Lan,
    /// Tuned for containers on one Docker network.
    Local,
}

/// One supervised service, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Name of the service: the key of its table.
    pub name: String,
    /// Program and arguments, passed to exec verbatim (never through a shell).
    pub command: Vec<String>,
    /// Whether this service's exit ends the container.
    pub main: bool,
    /// Variables added to (or replacing) the inherited environment.
    pub environment: BTreeMap<String, String>,
    /// Working directory of the service; muster's own when unset.
    pub working_dir: Option<PathBuf>,
    /// Identity to run as; muster's own when unset.
    pub user: Option<Credentials>,
    /// When the service is started again after it ends.
    pub restart: Restart,
    /// First back-off delay; it doubles after each crash in a row.
    pub restart_delay: Duration,
    /// Ceiling of the back-off delay.
    pub restart_delay_max: Duration,
    /// A run shorter than this counts as a crash.
    pub min_uptime: Duration,
    /// Crashes in a row tolerated before muster gives up on the service; 0 never gives up
    /// (the default for a side service: it is restarted with back-off for as long as muster
    /// runs).
    pub crash_limit: u32,
    /// Whether this service ending for good (or being given up on) ends the container, as the
    /// main service does.
    pub critical: bool,
    /// Whether this service runs once to completion (never restarted) before its dependents
    /// start; its failure stops the container.
    pub oneshot: bool,
    /// Services that must be ready before this one starts (and stop after it).
    pub depends_on: Vec<String>,
    /// How readiness is known; `None` means ready as soon as started.
    pub ready: Option<Ready>,
    /// How long readiness may take before muster gives up.
    pub ready_timeout: Duration,
    /// Pause between two readiness probes.
    pub ready_interval: Duration,
    /// Signal that asks the service to stop; `None` forwards the signal muster received.
    pub stop_signal: Option<i32>,
    /// Time between the stop signal and SIGKILL.
    pub stop_grace: Duration,
    /// Whether signals go to the whole process group or to the first process only.
    pub signal_group: bool,
    /// Signals rewritten before the service is sent them (forwarded ones and the stop
    /// signal, not the SIGKILL at the end of the grace): received → sent, 0 = not sent.
    pub signal_map: BTreeMap<i32, i32>,
    /// Exit codes (128+N for signal N) that count as success: no restart for `on-failure`,
    /// a dependency satisfied, and muster's exit code 0 for the main service (tini's `-e`).
    pub success_codes: Vec<i32>,
    /// Where the service's stdout and stderr go.
    pub output: Output,
    /// Text put before each copied output line; empty for none.
    pub log_prefix: String,
}

/// Restart policy of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Restart whenever it ends.
    Always,
    /// Restart when it ends with a non-zero code or a signal.
    OnFailure,
    /// Never restart.
    Never,
}

/// How muster learns that a service is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// A TCP connection to this address (`host:port`) succeeds.
    Tcp(String),
    /// A GET to this `http://host:port/path` URL answers 2xx.
    Http(HttpUrl),
    /// This command exits 0.
    Exec(Vec<String>),
    /// The service writes a newline to this file descriptor.
    NotifyFd(i32),
}

/// The parts of an `http://` URL that a readiness probe needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host:port` to connect to (port 80 when the URL has none).
    pub authority: String,
    /// Host header value.
    pub host: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Where a service's output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// muster holds a pipe per stream and copies lines to its own stdout and stderr.
    Pipe,
    /// The service writes to muster's own stdout and stderr.
    Inherit,
}

/// Every problem found in a configuration, each naming its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    /// One line per problem, `key: what is wrong`.
    pub problems: Vec<String>,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path, users: &dyn UserDb) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
            problems: vec![format!("cannot read {}: {error}", path.display())],
        })?;
        Config::parse(&text, users)
    }

    /// Validates configuration text.
    pub fn parse(text: &str, users: &dyn UserDb) -> Result<Config, ConfigError> {
        let table: toml::Table = text.parse().map_err(|error: toml::de::Error| ConfigError {
            problems: vec![format!("not valid TOML: {}", error.to_string().trim_end())],
        })?;
        let mut v = value::Validator::default();
        let config = validate(&table, &mut v, users);
        v.finish(config)
    }

    /// The configuration of `muster -- CMD ARGS...`: one main service, like tini, with the
    /// knobs the command line and its environment gave. Its grace is the whole stop timeout:
    /// SIGKILL comes only at the kill point.
    pub fn single(command: Vec<String>, knobs: &Single) -> Config {
        let stop_timeout = knobs.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT);
        Config {
            stop_timeout,
            control_socket: None,
            gossip: None,
            logship: None,
            haproxy: None,
            services: vec![Service {
                name: "main".to_owned(),
                main: true,
                restart: Restart::Never,
                stop_signal: knobs.stop_signal,
                stop_grace: stop_timeout,
                signal_group: knobs.group.unwrap_or(true),
                signal_map: knobs.signal_map.clone(),
                success_codes: knobs.success_codes.clone(),
                output: Output::Inherit,
                log_prefix: String::new(),
                ..Service::defaults("main", command)
            }],
        }
    }
}

/// The default budget of the whole shutdown (under Docker's 10 s).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(9);

/// The knobs of `muster -- CMD`, from the command line or the environment; what is unset
/// keeps its default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Single {
    /// `--stop-timeout`: the whole stop budget (default 9 s).
    pub stop_timeout: Option<Duration>,
    /// `--stop-signal`: what the command gets at the stop (default: the signal received).
    pub stop_signal: Option<i32>,
    /// `--no-group` (false) or `-g` (true): signals to the process group (the default).
    pub group: Option<bool>,
    /// `-r S:R`: signals rewritten before they are sent (0: not sent).
    pub signal_map: BTreeMap<i32, i32>,
    /// `-e CODE`: exit codes that count as success.
    pub success_codes: Vec<i32>,
}

impl Service {
    /// A service with every optional key at its default.
    pub fn defaults(name: &str, command: Vec<String>) -> Service {
        Service {
            name: name.to_owned(),
            command,
            main: false,
            environment: BTreeMap::new(),
            working_dir: None,
            user: None,
            restart: Restart::Always,
            restart_delay: Duration::from_millis(500),
            restart_delay_max: Duration::from_secs(30),
            min_uptime: Duration::from_secs(10),
            crash_limit: 0,
            critical: false,
            oneshot: false,
            depends_on: Vec::new(),
            ready: None,
            ready_timeout: Duration::from_secs(30),
            ready_interval: Duration::from_millis(100),
            stop_signal: Some(libc::SIGTERM),
            stop_grace: Duration::from_secs(5),
            signal_group: true,
            signal_map: BTreeMap::new(),
            success_codes: Vec::new(),
            output: Output::Pipe,
            log_prefix: format!("[{name}] "),
        }
    }

    /// The signal this service is sent in place of `sig` (`signal_map`); `None` when the map
    /// drops it.
    pub fn rewrite(&self, sig: i32) -> Option<i32> {
        match self.signal_map.get(&sig) {
            Some(0) => None,
            Some(&to) => Some(to),
            None => Some(sig),
        }
    }

    /// Whether a run that ended with `code` (128+N for signal N) counts as a success.
    pub fn counts_as_success(&self, code: i32) -> bool {
        code == 0 || self.success_codes.contains(&code)
    }
}

fn validate(table: &toml::Table, v: &mut value::Validator, users: &dyn UserDb) -> Config {
    v.only_keys(
        "",
        table,
        &["supervisor", "services", "gossip", "logship", "haproxy"],
    );
    let mut stop_timeout = DEFAULT_STOP_TIMEOUT;
    let mut control_socket = Some(PathBuf::from(DEFAULT_CONTROL_SOCKET));
    if let Some(sup) = v.table("supervisor", table.get("supervisor")) {
        v.only_keys("supervisor", sup, &["stop_timeout", "control_socket"]);
        if let Some(d) = v.duration("supervisor.stop_timeout", sup.get("stop_timeout")) {
            stop_timeout = d;
        }
        match sup.get("control_socket") {
            Some(toml::Value::Boolean(false)) => control_socket = None,
            Some(raw) => {
                if let Some(p) = v.string("supervisor.control_socket", Some(raw)) {
                    control_socket = Some(PathBuf::from(p));
                }
            }
            None => {}
        }
    }
    let gossip = table.get("gossip").and_then(|raw| gossip(raw, v));
    let logship = table.get("logship").and_then(|raw| logship(raw, v));
    let haproxy = table.get("haproxy").and_then(|raw| haproxy(raw, v));
    let mut services = Vec::new();
    let listed = v.table("services", table.get("services"));
    for (name, raw) in listed.into_iter().flatten() {
        if let Some(s) = service(name, raw, v, users) {
            services.push(s);
        }
    }
    if let Some(h) = &haproxy {
        if !services.iter().any(|s| s.name == "haproxy") {
            let main = !services.iter().any(|s| s.main);
            services.push(haproxy_service(h, main));
        }
    }
    if services.is_empty() && listed.is_none_or(|l| l.is_empty()) {
        v.problem(
            "services",
            "no service is declared (add a [services.NAME] table, or [haproxy])",
        );
    }
    check_relations(&services, v);
    Config {
        stop_timeout,
        control_socket,
        services,
        gossip,
        logship,
        haproxy,
    }
}

const HAPROXY_KEYS: &[&str] = &[
    "template",
    "config",
    "role",
    "port",
    "master_socket",
    "program",
    "debounce",
    "drain_timeout",
    "start_wait",
    "hold_timeout",
    "trusted_networks",
];

fn haproxy(raw: &toml::Value, v: &mut value::Validator) -> Option<Haproxy> {
    let t = v.table("haproxy", Some(raw))?;
    v.only_keys("haproxy", t, HAPROXY_KEYS);
    let path = |v: &mut value::Validator, key: &str, default: &str| -> PathBuf {
        match v.string(&format!("haproxy.{key}"), t.get(key)) {
            Some(p) if p.starts_with('/') => PathBuf::from(p),
            Some(p) => {
                v.problem(
                    &format!("haproxy.{key}"),
                    &format!("{p:?} is not an absolute path"),
                );
                PathBuf::from(default)
            }
            None => PathBuf::from(default),
        }
    };
    let mut h = Haproxy {
        template: path(v, "template", "/etc/haproxy/haproxy.cfg.hbs"),
        config: path(v, "config", "/etc/haproxy/haproxy.cfg"),
        role: Some("backend".to_owned()),
        port: 80,
        master_socket: path(v, "master_socket", "/run/haproxy/master.sock"),
        program: v
            .string("haproxy.program", t.get("program"))
            .unwrap_or_else(|| "haproxy".to_owned()),
        debounce: Duration::from_millis(10),
        drain_timeout: Duration::from_secs(10),
        start_wait: Duration::from_secs(2),
        hold_timeout: Duration::from_secs(15),
        trusted_networks: None,
    };
    if let Some(r) = v.string("haproxy.role", t.get("role")) {
        h.role = if r.is_empty() { None } else { Some(r) };
    }
    if let Some(p) = v.integer("haproxy.port", t.get("port"), 1, 65535) {
        h.port = p as u16;
    }
    if let Some(d) = v.duration("haproxy.debounce", t.get("debounce")) {
        if d > Duration::from_secs(1) {
            v.problem(
                "haproxy.debounce",
                "is more than 1s: changes would wait too long",
            );
        }
        h.debounce = d;
    }
    if let Some(d) = v.duration("haproxy.drain_timeout", t.get("drain_timeout")) {
        h.drain_timeout = d;
    }
    if let Some(d) = v.duration("haproxy.start_wait", t.get("start_wait")) {
        h.start_wait = d;
    }
    if let Some(d) = v.duration("haproxy.hold_timeout", t.get("hold_timeout")) {
        if d > Duration::from_secs(300) {
            v.problem(
                "haproxy.hold_timeout",
                "is more than 300s: clients give up long before",
            );
        }
        h.hold_timeout = d;
    }
    if let Some(list) = v.string_list("haproxy.trusted_networks", t.get("trusted_networks")) {
        h.trusted_networks = trusted_networks(v, &list);
    }
    if h.template == h.config {
        v.problem("haproxy.config", "is the template itself");
    }
    Some(h)
}

/// `[haproxy] trusted_networks`: every entry a network, and at least one.
fn trusted_networks(v: &mut value::Validator, list: &[String]) -> Option<Vec<networks::Network>> {
    if list.is_empty() {
        v.problem(
            "haproxy.trusted_networks",
            "is empty: no member could become a server (\"0.0.0.0/0\" trusts every IPv4 address)",
        );
        return None;
    }
    let mut out = Vec::new();
    for (i, text) in list.iter().enumerate() {
        match networks::Network::parse(text) {
            Ok(n) => out.push(n),
            Err(e) => v.problem(&format!("haproxy.trusted_networks[{i}]"), &e),
        }
    }
    Some(out)
}

/// The HAProxy service a `[haproxy]` table brings when no `[services.haproxy]` is declared:
/// master-worker in the foreground with the master CLI muster reloads through; SIGUSR1 (soft
/// stop) to the master only, which forwards it to its workers. Its environment holds what
/// HAProxy's master sets before it parses the config again at a reload
/// ([`haproxy_master_environment`]), so the first start parses the config as every reload
/// does, and as muster's `haproxy -c` checks it.
fn haproxy_service(h: &Haproxy, main: bool) -> Service {
    let config = h.config.display().to_string();
    Service {
        main,
        environment: haproxy_master_environment(&h.master_socket, &[config]),
        restart: if main {
            Restart::Never
        } else {
            Restart::Always
        },
        stop_signal: Some(libc::SIGUSR1),
        signal_group: false,
        ..Service::defaults(
            "haproxy",
            vec![
                h.program.clone(),
                "-W".to_owned(),
                "-db".to_owned(),
                "-S".to_owned(),
                format!("{},mode,600", h.master_socket.display()),
                "-f".to_owned(),
                h.config.display().to_string(),
            ],
        )
    }
}

/// The variables HAProxy's master sets before it parses the config again at a reload (seen
/// with `.diag` on Debian's 2.6, whose first start in master-worker mode sets none of them):
/// `HAPROXY_MWORKER=1`, `HAPROXY_MASTER_CLI=unix@SOCKET` and `HAPROXY_CFGFILES=FILE;…`.
pub fn haproxy_master_environment(
    master_socket: &std::path::Path,
    files: &[String],
) -> BTreeMap<String, String> {
    [
        ("HAPROXY_MWORKER", "1".to_owned()),
        (
            "HAPROXY_MASTER_CLI",
            format!("unix@{}", master_socket.display()),
        ),
        ("HAPROXY_CFGFILES", files.join(";")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

const LOGSHIP_KEYS: &[&str] = &[
    "target",
    "protocol",
    "queue",
    "queue_bytes",
    "ack_timeout",
    "when_full",
    "hostname",
    "facility",
    "spool",
    "spool_bytes",
];

/// Default bound of the disk spool: 256 MiB.
pub const DEFAULT_SPOOL_BYTES: u64 = 256 << 20;
/// Smallest `spool_bytes`: 1 MiB (a few segments).
const MIN_SPOOL_BYTES: i64 = 1 << 20;

fn logship(raw: &toml::Value, v: &mut value::Validator) -> Option<Logship> {
    let t = v.table("logship", Some(raw))?;
    v.only_keys("logship", t, LOGSHIP_KEYS);
    let mut l = Logship {
        target: logship_target(t, v),
        protocol: LogProtocol::Relp,
        queue: 100_000,
        queue_bytes: 32 << 20,
        ack_timeout: Duration::from_secs(5),
        when_full: WhenFull::DropWhileAway,
        spool: spool(t, v),
        spool_bytes: DEFAULT_SPOOL_BYTES,
        hostname: v.string("logship.hostname", t.get("hostname")),
        facility: 1,
    };
    let protocols = [("relp", LogProtocol::Relp), ("tcp", LogProtocol::Tcp)];
    if let Some(p) = v.choice("logship.protocol", t.get("protocol"), &protocols) {
        l.protocol = p;
    }
    if let Some(n) = v.integer("logship.queue", t.get("queue"), 1, 100_000_000) {
        l.queue = n as usize;
    }
    if let Some(n) = v.integer("logship.queue_bytes", t.get("queue_bytes"), 65_536, 1 << 40) {
        l.queue_bytes = n as usize;
    }
    if let Some(d) = v.duration("logship.ack_timeout", t.get("ack_timeout")) {
        if d < Duration::from_millis(100) {
            v.problem("logship.ack_timeout", "must be at least 100ms");
        } else {
            l.ack_timeout = d;
        }
    }
    let bytes = t.get("spool_bytes");
    if let Some(n) = v.integer("logship.spool_bytes", bytes, MIN_SPOOL_BYTES, 1 << 50) {
        l.spool_bytes = n as u64;
        if !t.contains_key("spool") {
            v.problem(
                "logship.spool_bytes",
                "is set but logship.spool (the spool directory) is not",
            );
        }
    }
    let policies = [
        ("drop-while-away", WhenFull::DropWhileAway),
        ("block", WhenFull::Block),
        ("drop-oldest", WhenFull::DropOldest),
    ];
    if let Some(w) = v.choice("logship.when_full", t.get("when_full"), &policies) {
        l.when_full = w;
    }
    if let Some(f) = facility(t, v) {
        l.facility = f;
    }
    Some(l)
}

/// `logship.spool`: an absolute directory path (whether it can be written is a preflight
/// check).
fn spool(t: &toml::Table, v: &mut value::Validator) -> Option<PathBuf> {
    let text = v.string("logship.spool", t.get("spool"))?;
    if !text.starts_with('/') {
        v.problem(
            "logship.spool",
            &format!("{text:?} is not an absolute directory path"),
        );
        return None;
    }
    Some(PathBuf::from(text))
}

/// `logship.target`, required: `host:port` with a port above 0 (empty when it is not).
fn logship_target(t: &toml::Table, v: &mut value::Validator) -> String {
    match v.string("logship.target", t.get("target")) {
        Some(text)
            if text
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0)) =>
        {
            text
        }
        Some(text) => {
            v.problem("logship.target", &format!("{text:?} is not host:port"));
            String::new()
        }
        None => {
            if !t.contains_key("target") {
                v.problem(
                    "logship.target",
                    "is required (the collector, as host:port)",
                );
            }
            String::new()
        }
    }
}

/// `logship.facility`: `user` (1) or `local0` … `local7` (16..=23).
fn facility(t: &toml::Table, v: &mut value::Validator) -> Option<u8> {
    let f = v.string("logship.facility", t.get("facility"))?;
    let local = f
        .strip_prefix("local")
        .and_then(|n| n.parse::<u8>().ok())
        .filter(|n| *n <= 7);
    match (f.as_str(), local) {
        ("user", _) => Some(1),
        (_, Some(n)) => Some(16 + n),
        _ => {
            v.problem(
                "logship.facility",
                &format!("{f:?} is not one of \"user\", \"local0\" … \"local7\""),
            );
            None
        }
    }
}

const GOSSIP_KEYS: &[&str] = &[
    "name",
    "bind",
    "advertise",
    "advertise_network",
    "join",
    "tags",
    "profile",
    "rejoin_interval",
    "reconnect_interval",
    "reap_failed",
    "reap_left",
    "max_members",
    "new_members_per_second",
    "rpc_addr",
    "rpc_auth",
    "secure",
];

fn gossip(raw: &toml::Value, v: &mut value::Validator) -> Option<Gossip> {
    let t = v.table("gossip", Some(raw))?;
    let known: Vec<&str> = GOSSIP_KEYS
        .iter()
        .chain(keys::KEYS)
        .chain(handlers::KEYS)
        .copied()
        .collect();
    let (event_handlers, handler_timeout) = handlers::read(t, v);
    v.only_keys("gossip", t, &known);
    let mut g = Gossip {
        name: v.string("gossip.name", t.get("name")),
        bind: socket_addr(t, v, "bind", 7946)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 7946))),
        advertise: socket_addr(t, v, "advertise", 7946),
        advertise_network: advertise_network(t, v),
        join: v
            .string_list("gossip.join", t.get("join"))
            .unwrap_or_default(),
        tags: BTreeMap::new(),
        profile: Profile::Lan,
        rejoin_interval: Duration::from_secs(30),
        reconnect_interval: Duration::from_secs(30),
        reap_failed: Duration::from_secs(600),
        reap_left: Duration::from_secs(300),
        max_members: 5000,
        new_members_per_second: 1000,
        keys: keys::gossip_keys(t, v),
        rpc_addr: match t.get("rpc_addr") {
            Some(toml::Value::Boolean(false)) => None,
            _ => Some(
                socket_addr(t, v, "rpc_addr", 7373)
                    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7373))),
            ),
        },
        rpc_auth: v.string("gossip.rpc_auth", t.get("rpc_auth")),
        event_handlers,
        handler_timeout,
        secure: v.bool("gossip.secure", t.get("secure")).unwrap_or(false),
    };
    if g.advertise.is_some() && g.advertise_network.is_some() {
        v.problem(
            "gossip.advertise_network",
            "set either gossip.advertise or gossip.advertise_network, not both",
        );
    }
    if g.rpc_auth.as_deref() == Some("") {
        v.problem("gossip.rpc_auth", "is empty: leave it out for no auth key");
    }
    if g.secure && !keys::KEYS.iter().any(|k| t.contains_key(*k)) {
        v.problem(
            "gossip.secure",
            "needs a key: set gossip.encrypt, gossip.encrypt_file or gossip.keyring_file \
             (secure mode works on top of the keyring)",
        );
    }
    if let Some(name) = &g.name {
        if let Err(e) = names::name(name) {
            v.problem("gossip.name", &format!("{name:?} {e}"));
        }
    }
    if let Some(tags) = v.table("gossip.tags", t.get("tags")) {
        g.tags = gossip_tags(tags, v);
    }
    let profiles = [("lan", Profile::Lan), ("local", Profile::Local)];
    if let Some(p) = v.choice("gossip.profile", t.get("profile"), &profiles) {
        g.profile = p;
    }
    durations(
        v,
        "gossip",
        t,
        [
            ("rejoin_interval", &mut g.rejoin_interval),
            ("reconnect_interval", &mut g.reconnect_interval),
            ("reap_failed", &mut g.reap_failed),
            ("reap_left", &mut g.reap_left),
        ],
    );
    if let Some(n) = v.integer("gossip.max_members", t.get("max_members"), 2, 1_000_000) {
        g.max_members = n as usize;
    }
    if let Some(n) = v.integer(
        "gossip.new_members_per_second",
        t.get("new_members_per_second"),
        1,
        1_000_000,
    ) {
        g.new_members_per_second = n as u32;
    }
    Some(g)
}

/// `gossip.advertise_network`: an IPv4 network in CIDR notation.
fn advertise_network(t: &toml::Table, v: &mut value::Validator) -> Option<networks::Network> {
    let text = v.string("gossip.advertise_network", t.get("advertise_network"))?;
    match networks::Network::parse(&text) {
        Ok(n) if n.addr.is_ipv4() => Some(n),
        Ok(_) => {
            v.problem(
                "gossip.advertise_network",
                &format!("{text:?} is not an IPv4 network (gossip advertises IPv4)"),
            );
            None
        }
        Err(e) => {
            v.problem("gossip.advertise_network", &e);
            None
        }
    }
}

/// `gossip.KEY` as an address: `IP:port`, or an IP alone with `default_port`.
fn socket_addr(
    t: &toml::Table,
    v: &mut value::Validator,
    key: &str,
    default_port: u16,
) -> Option<SocketAddr> {
    let text = v.string(&format!("gossip.{key}"), t.get(key))?;
    let with_port = if text.parse::<SocketAddr>().is_ok() {
        text.clone()
    } else {
        format!("{text}:{default_port}")
    };
    match with_port.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            v.problem(
                &format!("gossip.{key}"),
                &format!("{text:?} is not an IP address or IP:port"),
            );
            None
        }
    }
}

/// `gossip.tags`: each key and value as Serf's peers accept them, and all of them within
/// the node meta Serf allows.
fn gossip_tags(tags: &toml::Table, v: &mut value::Validator) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut each_ok = true;
    for (k, val) in tags {
        let key = format!("gossip.tags.{k}");
        if let Some(text) = v.string(&key, Some(val)) {
            let bad = names::tag_key(k)
                .map_err(|e| format!("the key {k:?} {e}"))
                .and_then(|()| names::tag_value(&text).map_err(|e| format!("{text:?} {e}")));
            if let Err(why) = bad {
                v.problem(&key, &why);
                each_ok = false;
            }
            out.insert(k.clone(), text);
        }
    }
    if each_ok && names::encoded_len(&out) > names::MAX_META {
        v.problem(
            "gossip.tags",
            "take more than the 512 bytes of node meta Serf allows",
        );
    }
    out
}

/// Reads each duration `AT.KEY` of `t` into its slot; a slot keeps its default when the key
/// is absent or wrong (the problem is reported).
fn durations<'a>(
    v: &mut value::Validator,
    at: &str,
    t: &toml::Table,
    slots: impl IntoIterator<Item = (&'static str, &'a mut Duration)>,
) {
    for (key, slot) in slots {
        if let Some(d) = v.duration(&format!("{at}.{key}"), t.get(key)) {
            *slot = d;
        }
    }
}

const SERVICE_KEYS: &[&str] = &[
    "command",
    "main",
    "environment",
    "working_dir",
    "user",
    "restart",
    "restart_delay",
    "restart_delay_max",
    "min_uptime",
    "crash_limit",
    "critical",
    "oneshot",
    "depends_on",
    "ready",
    "ready_timeout",
    "ready_interval",
    "stop_signal",
    "stop_grace",
    "signal_group",
    "signal_map",
    "success_codes",
    "output",
    "log_prefix",
];

fn service(
    name: &str,
    raw: &toml::Value,
    v: &mut value::Validator,
    users: &dyn UserDb,
) -> Option<Service> {
    let base = format!("services.{name}");
    let at = |key: &str| format!("{base}.{key}");
    let t = v.table(&base, Some(raw))?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        v.problem(
            &base,
            "a service name uses only letters, digits, '-', '_' and '.'",
        );
    }
    v.only_keys(&base, t, SERVICE_KEYS);
    let mut s = Service::defaults(name, command(&at("command"), t, v));
    if let Some(b) = v.bool(&at("main"), t.get("main")) {
        s.main = b;
        if b {
            s.restart = Restart::Never;
        }
    }
    if let Some(env) = v.table(&at("environment"), t.get("environment")) {
        s.environment = environment(&at("environment"), env, v);
    }
    s.working_dir = v
        .string(&at("working_dir"), t.get("working_dir"))
        .map(PathBuf::from);
    if let Some(user) = v.string(&at("user"), t.get("user")) {
        match users.resolve(&user) {
            Ok(c) => s.user = Some(c),
            Err(e) => v.problem(&at("user"), &e),
        }
    }
    let restarts = [
        ("always", Restart::Always),
        ("on-failure", Restart::OnFailure),
        ("never", Restart::Never),
    ];
    if let Some(r) = v.choice(&at("restart"), t.get("restart"), &restarts) {
        s.restart = r;
    }
    timings(&base, t, v, &mut s);
    policy::policy(&base, t, v, &mut s);
    if let Some(deps) = v.string_list(&at("depends_on"), t.get("depends_on")) {
        s.depends_on = deps;
    }
    if let Some(r) = t.get("ready") {
        s.ready = ready(&at("ready"), r, v);
    }
    if let Some(raw) = t.get("stop_signal") {
        match value::signal_of(raw) {
            Ok(sig) => s.stop_signal = Some(sig),
            Err(e) => v.problem(&at("stop_signal"), &e),
        }
    }
    if let Some(b) = v.bool(&at("signal_group"), t.get("signal_group")) {
        s.signal_group = b;
    }
    if let Some(map) = v.table(&at("signal_map"), t.get("signal_map")) {
        s.signal_map = signal_map(&at("signal_map"), map, v);
    }
    if let Some(codes) = t.get("success_codes") {
        s.success_codes = v.integer_list(&at("success_codes"), codes, 0, 255);
    }
    output(&base, t, v, &mut s);
    Some(s)
}

/// `signal_map`: `{ TERM = "QUIT", HUP = 0 }`, a signal muster receives (name or number) to
/// the one the service is sent, 0 for none.
fn signal_map(at: &str, map: &toml::Table, v: &mut value::Validator) -> BTreeMap<i32, i32> {
    let mut out = BTreeMap::new();
    for (key, raw) in map {
        let entry = format!("{at}.{key}");
        let from = match check_rewritten(key) {
            Ok(sig) => sig,
            Err(e) => {
                v.problem(&entry, &e);
                continue;
            }
        };
        let to = match raw {
            toml::Value::Integer(0) => Ok(0),
            other => value::signal_of(other),
        };
        match to {
            Ok(to) => {
                out.insert(from, to);
            }
            Err(e) => v.problem(&entry, &format!("{e} (or 0 for none)")),
        }
    }
    out
}

/// A signal that can be rewritten: one muster receives and forwards (not SIGKILL or SIGSTOP,
/// which it never receives, nor SIGCHLD, which it never forwards).
pub fn check_rewritten(text: &str) -> Result<i32, String> {
    let sig = parse_signal(text)?;
    match sig {
        libc::SIGKILL | libc::SIGSTOP => Err(format!(
            "{} cannot be caught, so muster never has it to rewrite",
            signal_name(sig)
        )),
        libc::SIGCHLD => Err("SIGCHLD is never forwarded, so it cannot be rewritten".to_owned()),
        _ => Ok(sig),
    }
}

/// `command`, required and not empty (empty when it is not).
fn command(at: &str, t: &toml::Table, v: &mut value::Validator) -> Vec<String> {
    match v.string_list(at, t.get("command")) {
        Some(c) if c.is_empty() => {
            v.problem(at, "is empty: give the program and its arguments");
            Vec::new()
        }
        Some(c) => c,
        None => {
            if t.get("command").is_none() {
                v.problem(at, "is missing: give the program and its arguments");
            }
            Vec::new()
        }
    }
}

/// `environment`: variables with a usable name and a text value.
fn environment(at: &str, env: &toml::Table, v: &mut value::Validator) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, val) in env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            v.problem(at, &format!("{key:?} is not a variable name"));
        }
        if let Some(text) = v.string(&format!("{at}.{key}"), Some(val)) {
            out.insert(key.clone(), text);
        }
    }
    out
}

/// The durations of a service (back-off, uptime, readiness, grace), checked together.
fn timings(base: &str, t: &toml::Table, v: &mut value::Validator, s: &mut Service) {
    durations(
        v,
        base,
        t,
        [
            ("restart_delay", &mut s.restart_delay),
            ("restart_delay_max", &mut s.restart_delay_max),
            ("min_uptime", &mut s.min_uptime),
            ("ready_timeout", &mut s.ready_timeout),
            ("ready_interval", &mut s.ready_interval),
            ("stop_grace", &mut s.stop_grace),
        ],
    );
    if s.restart_delay_max < s.restart_delay {
        v.problem(
            &format!("{base}.restart_delay_max"),
            "is shorter than restart_delay",
        );
    }
    if s.ready_interval.is_zero() {
        v.problem(&format!("{base}.ready_interval"), "must be longer than 0s");
    }
}

/// Where a service's output goes (`output`) and the prefix of its copied lines
/// (`log_prefix`: a text, `true` for the default, `false` for none).
fn output(base: &str, t: &toml::Table, v: &mut value::Validator, s: &mut Service) {
    let outputs = [("pipe", Output::Pipe), ("inherit", Output::Inherit)];
    if let Some(o) = v.choice(&format!("{base}.output"), t.get("output"), &outputs) {
        s.output = o;
    }
    match t.get("log_prefix") {
        None => {}
        Some(toml::Value::Boolean(true)) => {}
        Some(toml::Value::Boolean(false)) => s.log_prefix.clear(),
        Some(toml::Value::String(p)) => s.log_prefix = p.clone(),
        Some(other) => v.problem(
            &format!("{base}.log_prefix"),
            &format!("expected true, false or a text, found {}", other.type_str()),
        ),
    }
}

fn ready(at: &str, raw: &toml::Value, v: &mut value::Validator) -> Option<Ready> {
    let t = v.table(at, Some(raw))?;
    if t.len() != 1 {
        v.problem(
            at,
            "give exactly one of tcp = \"host:port\", http = \"http://...\", exec = [...], notify_fd = N",
        );
        return None;
    }
    let (kind, val) = t.iter().next()?;
    let key = format!("{at}.{kind}");
    match kind.as_str() {
        "tcp" => {
            let addr = v.string(&key, Some(val))?;
            match addr.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    Some(Ready::Tcp(addr))
                }
                _ => {
                    v.problem(&key, &format!("{addr:?} is not host:port"));
                    None
                }
            }
        }
        "http" => {
            let url = v.string(&key, Some(val))?;
            match value::http_url(&url) {
                Ok(u) => Some(Ready::Http(u)),
                Err(e) => {
                    v.problem(&key, &e);
                    None
                }
            }
        }
        "exec" => match v.string_list(&key, Some(val)) {
            Some(c) if !c.is_empty() => Some(Ready::Exec(c)),
            Some(_) => {
                v.problem(&key, "is empty: give the program and its arguments");
                None
            }
            None => None,
        },
        "notify_fd" => v
            .integer(&key, Some(val), 3, 1023)
            .map(|n| Ready::NotifyFd(n as i32)),
        other => {
            v.problem(
                at,
                &format!("{other:?} is not one of \"tcp\", \"http\", \"exec\", \"notify_fd\""),
            );
            None
        }
    }
}

/// Checks what involves several services: one main at most, known dependencies, no cycle.
fn check_relations(services: &[Service], v: &mut value::Validator) {
    let mains: Vec<&str> = services
        .iter()
        .filter(|s| s.main)
        .map(|s| s.name.as_str())
        .collect();
    if mains.len() > 1 {
        v.problem(
            "services",
            &format!("only one service can be main, found {}", mains.join(", ")),
        );
    }
    for s in services {
        for dep in &s.depends_on {
            if dep == &s.name {
                v.problem(
                    &format!("services.{}.depends_on", s.name),
                    "a service cannot depend on itself",
                );
            } else if !services.iter().any(|o| &o.name == dep) {
                v.problem(
                    &format!("services.{}.depends_on", s.name),
                    &format!("{dep:?} is not a declared service"),
                );
            }
        }
    }
    if let Some(cycle) = find_cycle(services) {
        v.problem(
            "services",
            &format!("depends_on forms a cycle: {}", cycle.join(" -> ")),
        );
    }
}

/// Returns one dependency cycle as a list of names (first name repeated at the end), if any.
fn find_cycle(services: &[Service]) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        i: usize,
        services: &[Service],
        marks: &mut [Mark],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<String>> {
        marks[i] = Mark::Open;
        stack.push(i);
        for dep in &services[i].depends_on {
            let Some(j) = services.iter().position(|s| &s.name == dep) else {
                continue;
            };
            match marks[j] {
                Mark::Open => {
                    let from = stack.iter().position(|&k| k == j).unwrap_or(0);
                    let mut names: Vec<String> = stack[from..]
                        .iter()
                        .map(|&k| services[k].name.clone())
                        .collect();
                    names.push(services[j].name.clone());
                    return Some(names);
                }
                Mark::New => {
                    if let Some(c) = visit(j, services, marks, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks[i] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; services.len()];
    for i in 0..services.len() {
        if marks[i] == Mark::New {
            if let Some(c) = visit(i, services, &mut marks, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
