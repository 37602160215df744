//! A load-balancer muster (gossip profile `local` and `[haproxy]` rendering the shipped
//! template, moved to loopback) driving Debian's real haproxy on 127.0.0.1, and backend
//! musters (gossip and a tiny haproxy answering its member's name) joining it: the rig of the
//! tests that attack or churn a load balancer from outside. What they observe goes through
//! the same doors an operator uses: HAProxy's admin socket (`show servers state`), `muster
//! members` on the control socket, the LB's log lines, `/proc`.

#![allow(dead_code, clippy::disallowed_methods, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::http::Client;
use super::{Run, config, eventually, first_child, free_port, muster, signal};

/// Deadline for anything that should happen in a second or two.
pub const LONG: Duration = Duration::from_secs(30);

/// The template the images ship.
pub fn shipped_template() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/haproxy/haproxy.cfg.hbs"
    ))
    .unwrap()
}

/// The shipped template, moved to loopback ports and a private directory, request logs off.
pub fn loopback_template(dir: &Path, http: u16, stats: u16) -> String {
    hold_files(dir, &shipped_template())
        .replace("bind *:80", &format!("bind 127.0.0.1:{http}"))
        .replace("bind *:1936", &format!("bind 127.0.0.1:{stats}"))
        .replace("/run/haproxy/", &format!("{}/", dir.display()))
        .replace("    log global\n", "")
}

/// Copies the hold's files (haproxy/muster-hold.lua, starting.html) into `dir` and points
/// `text` at them there instead of /etc/haproxy/.
fn hold_files(dir: &Path, text: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    for f in ["muster-hold.lua", "starting.html"] {
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("haproxy")
            .join(f);
        std::fs::copy(from, dir.join(f)).unwrap();
    }
    text.replace("/etc/haproxy/", &format!("{}/", dir.display()))
}

/// A running load balancer.
pub struct Lb {
    pub run: Run,
    /// HAProxy's frontend.
    pub http: SocketAddr,
    /// The gossip port (UDP and TCP) on 127.0.0.1.
    pub gossip: u16,
    /// HAProxy's stats page port.
    pub stats: u16,
    pub template: PathBuf,
    /// The rendered haproxy.cfg.
    pub config: PathBuf,
    /// HAProxy's admin socket (the template's `/run/haproxy/` moved here).
    pub admin_socket: PathBuf,
    /// muster's control socket (`muster members`).
    pub control: PathBuf,
    pub dir: PathBuf,
}

/// One server as `show servers state` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub name: String,
    pub addr: String,
    pub port: u16,
    /// 0 stopped, 1 starting, 2 running, 3 stopping.
    pub op: u8,
    /// HAProxy's `srv_admin` flags: 0x01 forced maintenance, 0x02 inherited, 0x04 config,
    /// 0x08 forced drain, 0x10 inherited drain, 0x20 resolution, 0x40 FQDN set.
    pub admin: u8,
}

impl Server {
    /// Up and taking new requests.
    pub fn in_service(&self) -> bool {
        self.op == 2 && self.admin & 0x3f == 0
    }

    pub fn draining(&self) -> bool {
        self.admin & 0x18 != 0
    }

    pub fn maint(&self) -> bool {
        self.admin & 0x27 != 0
    }
}

impl Lb {
    /// Starts a load balancer in `dir/lb` and waits until HAProxy listens.
    pub fn start(dir: &Path) -> Lb {
        Self::start_with(dir, "")
    }

    /// [`Lb::start`] with more lines in its `[haproxy]` table.
    pub fn start_with(dir: &Path, haproxy: &str) -> Lb {
        Self::start_full(dir, free_port(), "", haproxy)
    }

    /// [`Lb::start`] on gossip port `gossip`, with more lines in its `[gossip]` table and its
    /// `[haproxy]` table.
    pub fn start_full(dir: &Path, gossip: u16, gossip_extra: &str, haproxy: &str) -> Lb {
        let dir = dir.join("lb");
        std::fs::create_dir_all(&dir).unwrap();
        let (http, stats) = (free_port(), free_port());
        let template = dir.join("haproxy.cfg.hbs");
        std::fs::write(&template, loopback_template(&dir, http, stats)).unwrap();
        let control = dir.join("control.sock");
        let cfg = config(
            &dir,
            &format!(
                r#"
[supervisor]
control_socket = "{control}"
stop_timeout = "5s"
[gossip]
name = "lb"
bind = "127.0.0.1:{gossip}"
tags = {{ role = "balancer" }}
profile = "local"
{gossip_extra}
[haproxy]
template = "{template}"
config = "{d}/haproxy.cfg"
master_socket = "{d}/master.sock"
drain_timeout = "3s"
{haproxy}
"#,
                control = control.display(),
                template = template.display(),
                d = dir.display()
            ),
        );
        let run = Run::start(muster(), &["--config", cfg.to_str().unwrap()]);
        run.wait_line("haproxy config ready", LONG);
        let http = SocketAddr::from(([127, 0, 0, 1], http));
        eventually("haproxy listening", LONG, || {
            std::net::TcpStream::connect(http).is_ok()
        });
        Lb {
            run,
            http,
            gossip,
            stats,
            template,
            config: dir.join("haproxy.cfg"),
            admin_socket: dir.join("admin.sock"),
            control,
            dir,
        }
    }

    pub fn gossip_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.gossip))
    }

    /// The pid of the LB's muster.
    pub fn pid(&self) -> u32 {
        self.run.child.id()
    }

    /// One command on HAProxy's admin socket (non-interactive: it answers and closes).
    pub fn admin(&self, command: &str) -> std::io::Result<String> {
        let mut s = UnixStream::connect(&self.admin_socket)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("{command}\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// The servers of backend `nodes`, by name (empty when the socket does not answer).
    pub fn servers(&self) -> BTreeMap<String, Server> {
        let text = self.admin("show servers state nodes").unwrap_or_default();
        parse_servers(&text)
    }

    /// `muster members` against the LB's control socket: its stdout, or a panic when it does
    /// not answer.
    pub fn members(&self) -> String {
        self.try_members()
            .unwrap_or_else(|e| panic!("muster members failed: {e}"))
    }

    /// `muster members` against the LB's control socket: its stdout, or its stderr when it
    /// failed (it gives up after 5 s without an answer).
    pub fn try_members(&self) -> Result<String, String> {
        let out = Command::new(muster())
            .args(["members", "--socket", self.control.to_str().unwrap()])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `name`'s row in `muster members`: (address, status), if listed.
    pub fn member(&self, name: &str) -> Option<(String, String)> {
        member_row(&self.members(), name)
    }

    /// How many reloads the LB has started ("reloading haproxy" lines).
    pub fn reloads(&self) -> usize {
        self.run.count("reloading haproxy")
    }

    /// Whether a line of the LB's log holds both `a` and `b`.
    pub fn logged(&self, a: &str, b: &str) -> bool {
        self.run
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|(_, l)| l.contains(a) && l.contains(b))
    }

    /// When a line arriving after `after` first held both `a` and `b`.
    pub fn logged_after(&self, after: Instant, a: &str, b: &str) -> Option<Instant> {
        self.run
            .lines
            .lock()
            .unwrap()
            .iter()
            .find(|(t, l)| *t >= after && l.contains(a) && l.contains(b))
            .map(|(t, _)| *t)
    }

    /// Waits until `name`'s server is in service in HAProxy.
    pub fn wait_in_service(&self, name: &str) {
        eventually(&format!("{name} in service"), LONG, || {
            self.servers().get(name).is_some_and(Server::in_service)
        });
    }

    /// Whether `name` answers one of 20 cookie-less requests (round robin reaches every server).
    pub fn served_by(&self, name: &str) -> bool {
        (0..20).any(|_| {
            Client::new(self.http)
                .get("/")
                .is_ok_and(|r| r.body.trim() == name)
        })
    }

    /// The LB muster's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// CPU time the LB's muster has used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }
}

/// Reads `show servers state` into servers by name.
pub fn parse_servers(text: &str) -> BTreeMap<String, Server> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 19 || w[0].starts_with('#') {
            continue;
        }
        let (Ok(op), Ok(admin), Ok(port)) = (w[5].parse(), w[6].parse(), w[18].parse()) else {
            continue;
        };
        out.insert(
            w[3].to_owned(),
            Server {
                name: w[3].to_owned(),
                addr: w[4].to_owned(),
                port,
                op,
                admin,
            },
        );
    }
    out
}

/// `name`'s (address, status) in the text of `muster members`.
pub fn member_row(members: &str, name: &str) -> Option<(String, String)> {
    members.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        (w.len() >= 3 && w[0] == name).then(|| (w[1].to_owned(), w[2].to_owned()))
    })
}

/// VmRSS of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// utime + stime of `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name and state.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// A backend member.
pub struct Backend {
    pub run: Run,
    pub name: String,
    /// Its app's HTTP port.
    pub port: u16,
    /// Its gossip port on 127.0.0.1.
    pub gossip: u16,
}

impl Backend {
    /// A backend member: muster with gossip joining `lb_gossip`, supervising a tiny haproxy
    /// answering its name on a free port.
    pub fn start(dir: &Path, name: &str, lb_gossip: u16) -> Backend {
        Self::start_full(dir, name, lb_gossip, "")
    }

    /// [`Backend::start`] with more lines in its `[gossip]` table.
    pub fn start_full(dir: &Path, name: &str, lb_gossip: u16, gossip_extra: &str) -> Backend {
        let port = free_port();
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let app = dir.join("app.cfg");
        std::fs::write(
            &app,
            format!(
                "defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    \
                 timeout server 30s\nfrontend app\n    bind 127.0.0.1:{port}\n    \
                 http-request return status 200 content-type text/plain string \"{name}\"\n"
            ),
        )
        .unwrap();
        let gossip = free_port();
        let cfg = config(
            &dir,
            &format!(
                r#"
[supervisor]
control_socket = false
stop_timeout = "5s"
[gossip]
name = "{name}"
bind = "127.0.0.1:{gossip}"
join = ["127.0.0.1:{lb_gossip}"]
tags = {{ role = "backend", port = "{port}" }}
profile = "local"
{gossip_extra}
[services.app]
main = true
command = ["haproxy", "-db", "-f", "{app}"]
stop_signal = "SIGUSR1"
"#,
                app = app.display()
            ),
        );
        Backend {
            run: Run::start(muster(), &["--config", cfg.to_str().unwrap()]),
            name: name.to_owned(),
            port,
            gossip,
        }
    }

    pub fn gossip_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.gossip))
    }

    /// `kill -9` of the member: its muster and its app at once, as `docker kill` does.
    pub fn kill9(&self) {
        let app = first_child(self.run.child.id());
        signal(self.run.child.id() as i32, libc::SIGKILL);
        if let Some(app) = app {
            signal(app, libc::SIGKILL);
        }
    }
}

/// Backends `names`, started together, each awaited in service in HAProxy.
pub fn start_backends(dir: &Path, lb: &Lb, names: &[&str]) -> Vec<Backend> {
    let started: Vec<Backend> = names
        .iter()
        .map(|n| Backend::start(dir, n, lb.gossip))
        .collect();
    for n in names {
        lb.wait_in_service(n);
    }
    started
}

/// Calls `check` every `every` for `window`: a fixed observation window for "nothing
/// happens", not a synchronisation.
pub fn observe(window: Duration, every: Duration, mut check: impl FnMut()) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        check();
        std::thread::sleep(every);
    }
}
