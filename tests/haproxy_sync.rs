//! HAProxy sync against Debian's real haproxy on 127.0.0.1: a load-balancer muster (gossip +
//! `[haproxy]`, rendering the shipped template) and backend musters (gossip + an HTTP app,
//! itself a small haproxy answering its member's name). Membership churn, `kill -9` and a
//! broken template under a bounded load, counting every failed request; the shipped template
//! rendered for 0, 1, 100 and 1,000 members, compared with snapshots and checked with
//! `haproxy -c`.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::http::{Client, Load};
use common::{Run, config, eventually, first_child, free_port, muster, signal};
use muster::haproxy::model::{Member, Status};
use muster::haproxy::model::{Model, Selection};
use muster::haproxy::template::Template;

const LONG: Duration = Duration::from_secs(30);

fn shipped_template() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/haproxy/haproxy.cfg.hbs"
    ))
    .unwrap()
}

/// The shipped template, moved to loopback ports and a private directory, request logs off.
fn loopback_template(dir: &Path, http: u16, stats: u16) -> String {
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

struct Lb {
    run: Run,
    http: SocketAddr,
    gossip: u16,
    template: PathBuf,
    config: PathBuf,
    dir: PathBuf,
}

fn start_lb(dir: &Path) -> Lb {
    start_lb_with(dir, "1s", None)
}

/// A load balancer whose requests wait at most `hold_timeout` for a server; `page` replaces
/// the shipped "app is starting" page, as a user's own file would.
fn start_lb_with(dir: &Path, hold_timeout: &str, page: Option<&str>) -> Lb {
    let dir = dir.join("lb");
    std::fs::create_dir_all(&dir).unwrap();
    let (http, stats, gossip) = (free_port(), free_port(), free_port());
    let template = dir.join("haproxy.cfg.hbs");
    std::fs::write(&template, loopback_template(&dir, http, stats)).unwrap();
    if let Some(page) = page {
        std::fs::write(dir.join("starting.html"), page).unwrap();
    }
    let cfg = config(
        &dir,
        &format!(
            r#"
[supervisor]
control_socket = "{d}/control.sock"
stop_timeout = "5s"
[gossip]
name = "lb"
bind = "127.0.0.1:{gossip}"
tags = {{ role = "balancer" }}
profile = "local"
[haproxy]
template = "{template}"
config = "{d}/haproxy.cfg"
master_socket = "{d}/master.sock"
drain_timeout = "3s"
hold_timeout = "{hold_timeout}"
"#,
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
        template,
        config: dir.join("haproxy.cfg"),
        dir,
    }
}

struct Backend {
    run: Run,
    name: String,
}

impl Backend {
    /// `kill -9` of the member: its muster and its app at once, as `docker kill` does.
    fn kill9(&self) {
        let app = first_child(self.run.child.id());
        signal(self.run.child.id() as i32, libc::SIGKILL);
        if let Some(app) = app {
            signal(app, libc::SIGKILL);
        }
    }
}

/// A backend member: muster with gossip, supervising a tiny haproxy answering its name on `port`.
fn start_backend(dir: &Path, name: &str, port: u16, lb_gossip: u16) -> Backend {
    start_backend_after(dir, name, port, lb_gossip, 0)
}

/// A backend member whose app starts listening `delay_ms` after muster (an app that takes its
/// time to start): its member joins at once, its server waits for its first check.
fn start_backend_after(
    dir: &Path,
    name: &str,
    port: u16,
    lb_gossip: u16,
    delay_ms: u32,
) -> Backend {
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
[services.app]
main = true
command = {command}
stop_signal = "SIGUSR1"
"#,
            command = if delay_ms == 0 {
                format!(r#"["haproxy", "-db", "-f", "{}"]"#, app.display())
            } else {
                format!(
                    r#"["sh", "-c", "sleep {}; exec haproxy -db -f {}"]"#,
                    f64::from(delay_ms) / 1000.0,
                    app.display()
                )
            },
        ),
    );
    Backend {
        run: Run::start(muster(), &["--config", cfg.to_str().unwrap()]),
        name: name.to_owned(),
    }
}

/// Backends `names` (each on a free port), all awaited in service.
fn start_backends<const N: usize>(dir: &Path, lb: &Lb, names: [&str; N]) -> [Backend; N] {
    let started = names.map(|n| start_backend(dir, n, free_port(), lb.gossip));
    for n in names {
        wait_in_service(lb, n);
    }
    started
}

fn wait_in_service(lb: &Lb, name: &str) {
    lb.run.wait_line(&format!("server=nodes/{name} "), LONG);
    eventually(&format!("{name} in service"), LONG, || {
        has_been_in_service(lb, name)
    });
}

/// A client (with cookies) whose first request landed on `name`.
fn client_on(lb: &Lb, name: &str) -> Client {
    loop {
        let mut c = Client::new(lb.http);
        if c.get("/").unwrap().body.trim() == name {
            return c;
        }
    }
}

/// Whether a line of the load balancer's log holds both `a` and `b`.
fn logged(lb: &Lb, a: &str, b: &str) -> bool {
    lb.run
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|(_, l)| l.contains(a) && l.contains(b))
}

/// How many times `name`'s server has been put in service (its first check passed).
fn times_in_service(lb: &Lb, name: &str) -> usize {
    let needle = format!("nodes/{name} ");
    lb.run
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, l)| l.contains("in service") && l.contains(&needle))
        .count()
}

fn has_been_in_service(lb: &Lb, name: &str) -> bool {
    times_in_service(lb, name) > 0
}

/// Whether `name` answers one of 20 cookie-less requests (round robin reaches every server).
fn served_by(lb: &Lb, name: &str) -> bool {
    (0..20).any(|_| {
        Client::new(lb.http)
            .get("/")
            .is_ok_and(|r| r.body.trim() == name)
    })
}

#[test]
fn a_member_joins_serves_leaves_and_fails_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let lb = start_lb(dir.path());
    // An empty backend holds the request for hold_timeout (1 s here), then answers a clear
    // 503, not a connection error; the hold counts it as timed out.
    let asked = Instant::now();
    let r = Client::new(lb.http).get("/").unwrap();
    assert_eq!(r.status, 503);
    assert!(r.body.contains("within the hold timeout"), "{}", r.body);
    assert!(
        asked.elapsed() >= Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    let [a, b] = start_backends(dir.path(), &lb, ["web-a", "web-b"]);
    assert!(served_by(&lb, "web-a") && served_by(&lb, "web-b"));
    // No reload for membership: only the first start.
    assert_eq!(lb.run.count("reloading haproxy"), 0, "{}", lb.run.text());

    let load = Load::start(lb.http, 4, Duration::from_millis(2), LONG, 1_000_000);
    let c = start_backend(dir.path(), "web-c", free_port(), lb.gossip);
    wait_in_service(&lb, "web-c");
    // Graceful leave: drained, then deleted.
    a.run.signal(libc::SIGTERM);
    lb.run.wait_line("server=nodes/web-a", LONG);
    eventually("web-a drained", LONG, || logged(&lb, "draining", "web-a"));
    // Crash: out of rotation at once.
    b.kill9();
    eventually("web-b out of rotation", LONG, || {
        logged(&lb, "out of rotation", "web-b")
    });
    std::thread::sleep(Duration::from_secs(2));
    let stats = load.finish();
    eprintln!("load: {stats:?}");
    assert_eq!(stats.failed, 0, "failed requests: {:?}", stats.errors);
    assert!(
        stats.by_body.get("web-c").copied().unwrap_or(0) > 0,
        "{stats:?}"
    );
    assert!(served_by(&lb, "web-c"));
    assert_eq!(lb.run.count("reloading haproxy"), 0, "{}", lb.run.text());
    drop(c);
}

/// `muster members` (text, or json) asked of the load balancer's control socket.
fn lb_members(lb: &Lb, json: bool) -> String {
    let socket = lb.dir.join("control.sock");
    let mut cmd = Command::new(muster());
    cmd.arg("members").arg("--socket").arg(&socket);
    if json {
        cmd.args(["--format", "json"]);
    }
    let out = cmd.output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `name`'s server state in the load balancer's `muster members`, if it has a row.
fn member_server(lb: &Lb, name: &str) -> Option<String> {
    lb_members(lb, false)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("server=")))
        .map(str::to_owned)
}

/// Issue 12: a leaving member whose server is the last one in service while another member's
/// server is on its way in (its app still starting) is held back: kept in service until the
/// other one is, so no request fails; `muster members` shows it `held-back`, and the load
/// balancer's own row counts the drain it held back (text and json).
#[test]
fn the_last_server_leaving_while_another_starts_is_held_back_and_counted_in_members() {
    let dir = tempfile::tempdir().unwrap();
    let lb = start_lb_with(dir.path(), "10s", None);
    let [a] = start_backends(dir.path(), &lb, ["web-a"]);
    assert!(lb_members(&lb, false).contains("drains-held-back=0"));
    let load = Load::start(lb.http, 4, Duration::from_millis(2), LONG, 1_000_000);
    // web-b's member joins at once, its app listens 0.6 s later: its server waits in
    // maintenance. It must be in service within web-a's leave (muster stops web-a's app 1 s
    // after announcing it, `LEAVE_PROPAGATE`): a replacement slower than that finds web-a's
    // server held back with its app gone, and the requests HAProxy sent it meanwhile fail
    // (4 of 4 clients with a 4 s start, before `HELD_BACK_MAX`).
    let b = start_backend_after(dir.path(), "web-b", free_port(), lb.gossip, 600);
    eventually("web-b joining", LONG, || {
        member_server(&lb, "web-b").as_deref() == Some("joining")
    });
    a.run.signal(libc::SIGTERM);
    let mut seen = Vec::new();
    eventually("web-a held back, then gone", LONG, || {
        let state = member_server(&lb, "web-a").unwrap_or_default();
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        logged(&lb, "drain held back until now", "web-a")
    });
    eprintln!("web-a's server in muster members: {seen:?}");
    assert!(seen.iter().any(|s| s == "held-back"), "{seen:?}");
    wait_in_service(&lb, "web-b");
    assert!(served_by(&lb, "web-b"));
    let stats = load.finish();
    eprintln!("load: {stats:?}");
    assert_eq!(stats.failed, 0, "failed requests: {:?}", stats.errors);
    assert!(
        logged(&lb, "drain held back:", "web-a"),
        "{}",
        lb.run.text()
    );

    // The load balancer's own row counts it; no other row has the count.
    let text = lb_members(&lb, false);
    let own: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("drains-held-back="))
        .collect();
    assert_eq!(own.len(), 1, "{text}");
    assert!(
        own[0].starts_with("lb ") && own[0].ends_with("drains-held-back=1"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&lb_members(&lb, true)).unwrap();
    let rows = json.as_array().unwrap();
    let counted: Vec<(&str, u64)> = rows
        .iter()
        .filter_map(|m| {
            let n = m.get("drains_held_back")?.as_u64()?;
            Some((m["name"].as_str()?, n))
        })
        .collect();
    assert_eq!(counted, [("lb", 1)], "{json}");
    drop(b);
}

/// A GET of `/` with these extra header lines, on a fresh connection: status, head, body, and
/// how long the answer took.
fn get_with(addr: SocketAddr, headers: &str) -> (u16, String, String, Duration) {
    use std::io::{Read, Write};
    let asked = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: lb\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned(), asked.elapsed())
}

#[test]
fn a_held_request_goes_as_soon_as_a_server_is_in_service_and_a_browser_gets_the_starting_page() {
    let dir = tempfile::tempdir().unwrap();
    let lb = start_lb_with(dir.path(), "10s", None);
    // A browser that has waited 3 s gets the shipped page: a 503 that reloads itself, never
    // cached.
    let (status, head, body, took) = get_with(lb.http, "Accept: text/html,*/*;q=0.8\r\n");
    assert_eq!(status, 503, "{head}");
    assert!(body.contains("The app is starting") && body.contains("http-equiv=\"refresh\""));
    let head = head.to_lowercase();
    assert!(
        head.contains("retry-after: 2") && head.contains("cache-control: no-store"),
        "{head}"
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(10),
        "{took:?}"
    );
    // A request without `text/html` waits; a backend starting meanwhile answers it.
    let waiting = std::thread::spawn({
        let http = lb.http;
        move || get_with(http, "")
    });
    std::thread::sleep(Duration::from_millis(500));
    let b = start_backend(dir.path(), "web-a", free_port(), lb.gossip);
    let (status, head, body, took) = waiting.join().unwrap();
    assert_eq!((status, body.trim()), (200, "web-a"), "{head}");
    eprintln!("held for {took:?} until web-a was in service");
    assert!(took >= Duration::from_millis(500), "{took:?}");
    drop(b);
    drop(lb);

    // A user's own page replaces the shipped one.
    let dir = tempfile::tempdir().unwrap();
    let page = "<html><body>Back soon (our own page)</body></html>\n";
    let lb = start_lb_with(dir.path(), "10s", Some(page));
    let (status, _, body, _) = get_with(lb.http, "Accept: text/html\r\n");
    assert_eq!((status, body.as_str()), (503, page));
}

#[test]
fn a_hundred_membership_changes_under_load_fail_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let lb = start_lb(dir.path());
    let mut live: Vec<Backend> = Vec::new();
    for i in 0..3 {
        let b = start_backend(dir.path(), &format!("web-{i}"), free_port(), lb.gossip);
        wait_in_service(&lb, &b.name);
        live.push(b);
    }
    let load = Load::start(
        lb.http,
        4,
        Duration::from_millis(2),
        Duration::from_secs(240),
        10_000_000,
    );
    let started = Instant::now();
    let mut changes = 0;
    let mut next = 3;
    let mut gone = Vec::new();
    while changes < 100 {
        // Joins while few are live; otherwise alternately a graceful leave and a kill -9.
        if live.len() < 3 || (changes % 3 == 0 && live.len() < 6) {
            let b = start_backend(dir.path(), &format!("web-{next}"), free_port(), lb.gossip);
            next += 1;
            live.push(b);
        } else {
            // Never leave the backend without a server in service: the others must be in
            // service (a started member needs its app up and a first check) before one goes.
            eventually("two other members in service", LONG, || {
                live[1..]
                    .iter()
                    .filter(|b| has_been_in_service(&lb, &b.name))
                    .count()
                    >= 2
            });
            let b = live.remove(0);
            if changes % 2 == 0 {
                b.run.signal(libc::SIGTERM);
            } else {
                b.kill9();
            }
            gone.push(b);
        }
        changes += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(3));
    let stats = load.finish();
    eprintln!(
        "{changes} changes in {:.1}s; load: ok {} failed {}; backends seen {}",
        started.elapsed().as_secs_f64(),
        stats.ok,
        stats.failed,
        stats.by_body.len()
    );
    assert_eq!(stats.failed, 0, "failed requests: {:?}", stats.errors);
    assert!(
        stats.by_body.len() >= 20,
        "too few members served: {stats:?}"
    );
    assert_eq!(lb.run.count("reloading haproxy"), 0, "{}", lb.run.text());
}

#[test]
fn a_broken_template_or_config_keeps_the_old_config_serving() {
    let dir = tempfile::tempdir().unwrap();
    let lb = start_lb(dir.path());
    let _a = start_backends(dir.path(), &lb, ["web-a"]);
    let good = std::fs::read_to_string(&lb.template).unwrap();
    let served = std::fs::read_to_string(&lb.config).unwrap();

    // A handlebars syntax error.
    std::fs::write(&lb.template, good.replace("{{/each}}", "")).unwrap();
    lb.run
        .wait_line("keeping the last good haproxy template", LONG);
    assert!(lb.run.text().contains("template:"), "{}", lb.run.text());
    // A config HAProxy refuses (even without members): its own message is logged.
    std::fs::write(
        &lb.template,
        good.replace("balance roundrobin", "balance roundrobin\n    frobnicate"),
    )
    .unwrap();
    lb.run.wait_line("haproxy -c refused", LONG);
    assert!(lb.run.text().contains("frobnicate"), "{}", lb.run.text());
    assert_eq!(std::fs::read_to_string(&lb.config).unwrap(), served);
    // Members still follow, rendered with the last good template: no reload.
    let _b = start_backend(dir.path(), "web-b", free_port(), lb.gossip);
    wait_in_service(&lb, "web-b");
    let now = std::fs::read_to_string(&lb.config).unwrap();
    assert!(now.contains("server web-b "), "{now}");
    assert!(!now.contains("frobnicate"), "{now}");
    assert!(served_by(&lb, "web-a") && served_by(&lb, "web-b"));
    assert_eq!(lb.run.count("reloading haproxy"), 0, "{}", lb.run.text());
    // Each refusal was logged once, not at every recheck.
    assert_eq!(lb.run.count("frobnicate"), 1, "{}", lb.run.text());
    // Fixed: the template is used again.
    std::fs::write(&lb.template, &good).unwrap();
    lb.run.wait_line("the haproxy template is good again", LONG);
    assert!(served_by(&lb, "web-b"));
}

#[test]
fn a_sticky_client_keeps_its_backend_and_a_returning_member_gets_its_clients_back() {
    let dir = tempfile::tempdir().unwrap();
    let lb = start_lb(dir.path());
    let [a, _b] = start_backends(dir.path(), &lb, ["web-a", "web-b"]);
    // A client that landed on web-a.
    let mut sticky = client_on(&lb, "web-a");
    assert_eq!(
        sticky.cookies.get("MUSTERSRV").map(String::as_str),
        Some("web-a")
    );
    let mut others = Vec::new();
    for i in 0..3 {
        let o = start_backend(dir.path(), &format!("web-x{i}"), free_port(), lb.gossip);
        wait_in_service(&lb, &o.name);
        others.push(o);
        for _ in 0..10 {
            assert_eq!(sticky.get("/").unwrap().body.trim(), "web-a");
        }
    }
    others.remove(0).run.signal(libc::SIGTERM);
    others.remove(0).kill9();
    for _ in 0..50 {
        assert_eq!(sticky.get("/").unwrap().body.trim(), "web-a");
        std::thread::sleep(Duration::from_millis(20));
    }
    // web-a dies; then it comes back under its name at another address (port): a client that
    // did not come meanwhile is sent to it again.
    let away = sticky.cookies.clone();
    a.kill9();
    eventually("web-a out of rotation", LONG, || {
        logged(&lb, "out of rotation", "web-a")
    });
    // Meanwhile the sticky client is balanced to another server, and follows it.
    let moved = sticky.get("/").unwrap().body.trim().to_owned();
    assert_ne!(moved, "web-a");
    assert_eq!(sticky.cookies.get("MUSTERSRV"), Some(&moved));
    let a2 = start_backend(dir.path(), "web-a", free_port(), lb.gossip);
    eventually("web-a back in service", LONG, || {
        times_in_service(&lb, "web-a") >= 2
    });
    let mut back = Client::new(lb.http);
    back.cookies = away;
    for _ in 0..10 {
        assert_eq!(back.get("/").unwrap().body.trim(), "web-a");
    }
    for _ in 0..10 {
        assert_eq!(sticky.get("/").unwrap().body.trim(), moved);
    }
    drop(a2);
    let _ = lb.dir;
}

fn member(name: &str, ip: [u8; 4], port: u16) -> Member {
    Member {
        name: name.to_owned(),
        addr: ip.into(),
        tags: [
            ("role".to_owned(), "backend".to_owned()),
            ("port".to_owned(), port.to_string()),
        ]
        .into(),
        status: Status::Alive,
    }
}

/// Renders the shipped template for `n` members (given in a scrambled order).
fn render(n: usize) -> String {
    let mut view: Vec<Member> = (0..n)
        .map(|i| {
            member(
                &format!("web-{i:04}"),
                [10, 1, (i / 250) as u8, (i % 250) as u8 + 2],
                3000,
            )
        })
        .collect();
    view.push(member("ha", [10, 1, 255, 1], 80));
    view.last_mut()
        .unwrap()
        .tags
        .insert("role".into(), "balancer".into());
    view.reverse();
    view.rotate_left(n / 3);
    let model = Model::new(
        &view,
        &Selection {
            role: Some("backend".into()),
            default_port: 80,
            hold_timeout_ms: 15_000,
            trusted: Selection::everywhere(),
        },
    );
    Template::compile(&shipped_template(), "haproxy.cfg.hbs")
        .unwrap()
        .render(&model)
        .unwrap()
}

#[test]
fn the_shipped_template_renders_byte_stable_configs_that_haproxy_accepts() {
    let dir = tempfile::tempdir().unwrap();
    for n in [0, 1, 100, 1000] {
        let text = render(n);
        assert_eq!(text, render(n), "not byte-stable for {n}");
        let snapshot = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/snapshots/haproxy-{n}.cfg"));
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&snapshot, &text).unwrap();
        }
        let expected = std::fs::read_to_string(&snapshot).unwrap_or_else(|e| {
            panic!("{}: {e} (UPDATE_SNAPSHOTS=1 writes it)", snapshot.display())
        });
        assert!(
            expected == text,
            "{} differs from the rendered text",
            snapshot.display()
        );
        assert_eq!(text.matches("\n    server web-").count(), n);
        // haproxy -c on the config, with its paths moved to a private directory.
        let path = dir.path().join(format!("haproxy-{n}.cfg"));
        std::fs::write(
            &path,
            hold_files(dir.path(), &text)
                .replace("/run/haproxy/", &format!("{}/", dir.path().display())),
        )
        .unwrap();
        let out = Command::new("haproxy")
            .args(["-c", "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "haproxy -c refused {n} members:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_structural_change_reloads_with_server_state_kept_and_no_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let lb = start_lb(dir.path());
    let [_a, b] = start_backends(dir.path(), &lb, ["web-a", "web-b"]);
    // A client stuck to web-a keeps it across the reload (the sync fills the new worker's
    // stick table).
    let mut sticky = client_on(&lb, "web-a");
    let load = Load::start(lb.http, 4, Duration::from_millis(2), LONG, 1_000_000);
    std::thread::sleep(Duration::from_millis(300));
    let good = std::fs::read_to_string(&lb.template).unwrap();
    std::fs::write(
        &lb.template,
        good.replace(
            "    option forwardfor\n",
            "    option forwardfor\n    http-response set-header X-Generation two\n",
        ),
    )
    .unwrap();
    lb.run.wait_line("haproxy reloaded", LONG);
    for _ in 0..20 {
        assert_eq!(sticky.get("/").unwrap().body.trim(), "web-a");
    }
    let c = start_backend(dir.path(), "web-c", free_port(), lb.gossip);
    wait_in_service(&lb, "web-c");
    b.run.signal(libc::SIGTERM);
    eventually("web-b drained", LONG, || {
        lb.run
            .text()
            .contains("draining (member leaving) server=nodes/web-b")
    });
    std::thread::sleep(Duration::from_millis(500));
    let stats = load.finish();
    eprintln!("load: {stats:?}");
    assert_eq!(stats.failed, 0, "failed requests: {:?}", stats.errors);
    assert_eq!(lb.run.count("reloading haproxy"), 1, "{}", lb.run.text());
    // The new worker serves the new config, with every live server up (state file).
    let r = Client::new(lb.http).get("/").unwrap();
    assert_eq!(r.header("x-generation"), Some("two"));
    assert!(served_by(&lb, "web-a") && served_by(&lb, "web-c"));
    assert!(!served_by(&lb, "web-b"));
    drop(c);
}

/// The sync itself (the library's `Sync`, a real haproxy) following a view that jumps from 0 to
/// N members, then gains one more: how long render, check and apply take at that size. The
/// members' apps are N tiny HTTP listeners in this process; gossip is left out (its own
/// benchmark covers it). N is `MUSTER_BENCH_MEMBERS` (default 200); tests/bench/haproxy.py
/// runs it with 1,000 and reads the `BENCH` line.
#[test]
fn scale_render_and_apply_at_many_members() {
    use muster::haproxy::runtime::{Admin, parse_servers_state};
    use muster::haproxy::sync::{Settings, Syncer};
    use muster::supervisor::children::Children;
    use muster::supervisor::signals::Inherited;

    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_test_writer()
        .try_init();
    let n: usize = std::env::var("MUSTER_BENCH_MEMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The members' apps: every GET or HEAD answers 200 with the member's name.
    let mut ports = Vec::new();
    for i in 0..=n {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        ports.push(listener.local_addr().unwrap().port());
        let name = format!("m-{i:04}");
        runtime.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                let name = name.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    let Ok(k) = s.read(&mut buf).await else {
                        return;
                    };
                    let head = buf[..k].starts_with(b"HEAD");
                    let body = if head { "" } else { name.as_str() };
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        name.len()
                    );
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
    }
    // HAProxy's ports are chosen once the apps hold theirs, so they cannot meet.
    let (http, stats) = (free_port(), free_port());
    let template = dir.path().join("haproxy.cfg.hbs");
    std::fs::write(&template, loopback_template(dir.path(), http, stats)).unwrap();
    // A reaper for the helpers' `haproxy -c` (this process plays muster's supervisor). It
    // waits only for the helpers' pids: this test's own children are its own business.
    let helpers = Children::new(Inherited::capture_and_unblock());
    std::thread::spawn({
        let children = helpers.clone();
        move || loop {
            for pid in children.awaited() {
                let mut status = 0;
                // SAFETY: waitpid with a valid pointer to a local int.
                if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                    children.deliver(pid, muster::supervisor::reaper::decode(status));
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let settings = Settings {
        template,
        config: dir.path().join("haproxy.cfg"),
        selection: Selection {
            role: Some("backend".into()),
            default_port: 80,
            hold_timeout_ms: 15_000,
            trusted: Selection::everywhere(),
        },
        master_socket: dir.path().join("master.sock"),
        haproxy: "haproxy".into(),
        service: None,
        debounce: Duration::from_millis(10),
        drain_timeout: Duration::from_secs(3),
    };
    let sync = runtime
        .block_on(Syncer::start(
            settings.clone(),
            Box::new(muster::app::HelperChecks(helpers)),
            Vec::new(),
        ))
        .unwrap();
    // Not waited for with `wait()`: the reaper thread above collects it.
    #[allow(clippy::zombie_processes)]
    let haproxy = common::owned(&mut Command::new("haproxy"))
        .args(["-W", "-db", "-S"])
        .arg(&settings.master_socket)
        .arg("-f")
        .arg(&settings.config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let admin_path = dir.path().join("admin.sock");
    eventually("haproxy's admin socket", LONG, || admin_path.exists());
    let view_of = |k: usize| -> Vec<Member> {
        (0..k)
            .map(|i| member(&format!("m-{i:04}"), [127, 0, 0, 1], ports[i]))
            .collect()
    };
    let (tx, rx) = tokio::sync::watch::channel(Vec::new());
    let (_stop, stopped) = tokio::sync::oneshot::channel();
    runtime.spawn(sync.run(rx, stopped));
    let mut admin = Admin::new(&admin_path);
    let in_service = |admin: &mut Admin| -> (usize, usize) {
        let text = runtime
            .block_on(admin.command("show servers state"))
            .unwrap_or_default();
        let states = parse_servers_state(&text);
        let ready = states.values().filter(|s| s.op == 2 && !s.maint()).count();
        (states.len(), ready)
    };
    // Render and check alone, at this size.
    let model = Model::new(&view_of(n), &settings.selection);
    let compiled =
        Template::compile(&std::fs::read_to_string(&settings.template).unwrap(), "t").unwrap();
    let t = Instant::now();
    let text = compiled.render(&model).unwrap();
    let render_ms = t.elapsed().as_secs_f64() * 1e3;
    let probe = dir.path().join("probe.cfg");
    std::fs::write(&probe, &text).unwrap();
    let t = Instant::now();
    assert!(
        Command::new("haproxy")
            .args(["-c", "-q", "-f"])
            .arg(&probe)
            .status()
            .unwrap()
            .success()
    );
    let check_ms = t.elapsed().as_secs_f64() * 1e3;

    // 0 → n members at once.
    let t = Instant::now();
    tx.send(view_of(n)).unwrap();
    let mut added = None;
    eventually("every server in service", Duration::from_secs(120), || {
        let (present, ready) = in_service(&mut admin);
        if present >= n && added.is_none() {
            added = Some(t.elapsed());
        }
        ready == n
    });
    let all_ready = t.elapsed();
    let added = added.unwrap_or(all_ready);
    // One more join at that size.
    let t = Instant::now();
    tx.send(view_of(n + 1)).unwrap();
    eventually("the extra server in service", LONG, || {
        in_service(&mut admin).1 == n + 1
    });
    let one_more = t.elapsed();
    let rendered = std::fs::read_to_string(&settings.config).unwrap();
    assert_eq!(rendered.matches("\n    server m-").count(), n + 1);
    assert!(served_by_port(http, "m-0000") || served_by_port(http, &format!("m-{n:04}")));
    let bench = format!(
        "{{\"members\": {n}, \"render_ms\": {render_ms:.2}, \"check_ms\": {check_ms:.1}, \
         \"all_added_ms\": {:.1}, \"all_in_service_ms\": {:.1}, \"one_more_in_service_ms\": {:.1}}}",
        added.as_secs_f64() * 1e3,
        all_ready.as_secs_f64() * 1e3,
        one_more.as_secs_f64() * 1e3
    );
    println!("BENCH {bench}");
    common::end(haproxy.id());
}

fn served_by_port(http: u16, name: &str) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], http));
    (0..50).any(|_| {
        Client::new(addr)
            .get("/")
            .is_ok_and(|r| r.body.trim() == name)
    })
}

/// A backend member like [`start_backend`]'s, with `extra` tags (TOML, e.g. `weight = "999"`).
fn start_tagged_backend(dir: &Path, name: &str, lb_gossip: u16, extra: &str) -> Backend {
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
tags = {{ role = "backend", port = "{port}", {extra} }}
profile = "local"
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
    }
}

/// The shipped template with a block only HAProxy's master-worker mode parses: a keyword
/// HAProxy refuses, inside `.if defined(HAPROXY_MWORKER)`.
fn with_mworker_block(text: &str) -> String {
    text.replacen(
        "\nglobal\n",
        "\nglobal\n.if defined(HAPROXY_MWORKER)\n    frobnicate-in-master-worker\n.endif\n",
        1,
    )
}

#[test]
fn haproxy_c_checks_what_master_worker_mode_parses() {
    let dir = tempfile::tempdir().unwrap();
    let lb = start_lb(dir.path());
    let _a = start_backends(dir.path(), &lb, ["web-a"]);
    let good = std::fs::read_to_string(&lb.template).unwrap();
    let served = std::fs::read_to_string(&lb.config).unwrap();
    // What HAProxy does: a plain `haproxy -W -c` skips the block (Debian's 2.6 defines
    // HAPROXY_MWORKER only from the first reload on), the master's environment does not.
    let probe = lb.dir.join("probe.cfg");
    std::fs::write(&probe, with_mworker_block(&served)).unwrap();
    let plain = Command::new("haproxy")
        .args(["-W", "-c", "-f"])
        .arg(&probe)
        .output()
        .unwrap();
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let as_reload = Command::new("haproxy")
        .args(["-W", "-c", "-f"])
        .arg(&probe)
        .env("HAPROXY_MWORKER", "1")
        .output()
        .unwrap();
    assert!(!as_reload.status.success());
    // muster's check refuses it; the old config keeps serving, and no reload happens.
    std::fs::write(&lb.template, with_mworker_block(&good)).unwrap();
    lb.run.wait_line("haproxy -c refused", LONG);
    assert!(
        logged(&lb, "haproxy -c refused", "frobnicate-in-master-worker"),
        "{}",
        lb.run.text()
    );
    assert_eq!(std::fs::read_to_string(&lb.config).unwrap(), served);
    assert!(served_by(&lb, "web-a"));
    assert_eq!(lb.run.count("reloading haproxy"), 0, "{}", lb.run.text());
}

#[test]
fn a_member_haproxy_refuses_is_left_out_and_the_others_still_change() {
    let dir = tempfile::tempdir().unwrap();
    let lb = start_lb(dir.path());
    // Servers get their member's `weight` tag (1 without one); HAProxy refuses more than 256.
    let weighted = std::fs::read_to_string(&lb.template).unwrap().replace(
        "    server {{name}} {{address}}:{{port}} id {{id}}\n",
        "    server {{name}} {{address}}:{{port}} id {{id}} weight \
         {{#if tags.weight}}{{tags.weight}}{{else}}1{{/if}}\n",
    );
    assert!(weighted.contains("weight {{#if"));
    std::fs::write(&lb.template, weighted).unwrap();
    let [a] = start_backends(dir.path(), &lb, ["web-a"]);
    let heavy = start_tagged_backend(dir.path(), "web-heavy", lb.gossip, r#"weight = "999""#);
    let load = Load::start(lb.http, 4, Duration::from_millis(2), LONG, 1_000_000);
    eventually("web-heavy left out", LONG, || {
        logged(&lb, "member left out of haproxy's config", "web-heavy")
    });
    assert!(
        logged(
            &lb,
            "web-heavy",
            "weight of server web-heavy is not within 0 and 256"
        ),
        "{}",
        lb.run.text()
    );
    // Another member still joins, and one still leaves.
    let b = start_tagged_backend(dir.path(), "web-b", lb.gossip, r#"weight = "20""#);
    wait_in_service(&lb, "web-b");
    a.run.signal(libc::SIGTERM);
    eventually("web-a drained", LONG, || logged(&lb, "draining", "web-a"));
    eventually("web-a gone from the config", LONG, || {
        !std::fs::read_to_string(&lb.config)
            .unwrap()
            .contains("server web-a ")
    });
    let stats = load.finish();
    eprintln!("load: {stats:?}");
    assert_eq!(stats.failed, 0, "failed requests: {:?}", stats.errors);
    let text = std::fs::read_to_string(&lb.config).unwrap();
    assert!(
        text.contains("server web-b ") && text.contains(" weight 20"),
        "{text}"
    );
    assert!(!text.contains("web-heavy"), "{text}");
    assert!(served_by(&lb, "web-b") && !served_by(&lb, "web-heavy"));
    // Logged once, though the view changed since and the template is read every 2 s.
    assert_eq!(
        lb.run.count("member left out of haproxy's config"),
        1,
        "{}",
        lb.run.text()
    );
    assert_eq!(lb.run.count("reloading haproxy"), 0, "{}", lb.run.text());
    drop((b, heavy));
}

/// The library's `Sync` driving a real haproxy, fed views by hand: the members' apps are
/// HTTP listeners in this process (`GET /slow` answers after 2 s, to hold a session open).
struct Seam {
    runtime: tokio::runtime::Runtime,
    views: tokio::sync::watch::Sender<Vec<Member>>,
    _stop: tokio::sync::oneshot::Sender<Instant>,
    http: SocketAddr,
    admin: PathBuf,
    master: PathBuf,
    haproxy: u32,
    _dir: tempfile::TempDir,
}

impl Seam {
    fn start(drain_timeout: Duration) -> Seam {
        use muster::haproxy::sync::{Settings, Syncer};
        use muster::supervisor::children::Children;
        use muster::supervisor::signals::Inherited;

        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (http, stats) = (free_port(), free_port());
        let template = dir.path().join("haproxy.cfg.hbs");
        std::fs::write(&template, loopback_template(dir.path(), http, stats)).unwrap();
        // A reaper for the helpers' `haproxy -c` only (this process plays the supervisor).
        let helpers = Children::new(Inherited::capture_and_unblock());
        let children = helpers.clone();
        std::thread::spawn(move || {
            loop {
                for pid in children.awaited() {
                    let mut status = 0;
                    // SAFETY: waitpid with a valid pointer to a local int.
                    if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                        children.deliver(pid, muster::supervisor::reaper::decode(status));
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let settings = Settings {
            template,
            config: dir.path().join("haproxy.cfg"),
            selection: Selection {
                role: Some("backend".into()),
                default_port: 80,
                hold_timeout_ms: 15_000,
                trusted: Selection::everywhere(),
            },
            master_socket: dir.path().join("master.sock"),
            haproxy: "haproxy".into(),
            service: None,
            debounce: Duration::from_millis(10),
            drain_timeout,
        };
        let sync = runtime
            .block_on(Syncer::start(
                settings.clone(),
                Box::new(muster::app::HelperChecks(helpers)),
                Vec::new(),
            ))
            .unwrap();
        let config = settings.config.display().to_string();
        // Started as muster starts it: master-worker, with the master's reload variables.
        #[allow(clippy::zombie_processes)]
        let haproxy = common::owned(&mut Command::new("haproxy"))
            .args(["-W", "-db", "-S"])
            .arg(&settings.master_socket)
            .arg("-f")
            .arg(&config)
            .envs(muster::config::haproxy_master_environment(
                &settings.master_socket,
                std::slice::from_ref(&config),
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let admin = dir.path().join("admin.sock");
        eventually("haproxy's admin socket", LONG, || admin.exists());
        let (views, rx) = tokio::sync::watch::channel(Vec::new());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        runtime.spawn(sync.run(rx, stopped));
        Seam {
            runtime,
            views,
            _stop: stop,
            http: SocketAddr::from(([127, 0, 0, 1], http)),
            admin,
            master: settings.master_socket,
            haproxy: haproxy.id(),
            _dir: dir,
        }
    }

    /// An app answering `name` on a fresh port; returns the port.
    fn app(&self, name: &str) -> u16 {
        let listener = self
            .runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let name = name.to_owned();
        self.runtime.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                let name = name.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    loop {
                        let Ok(k) = s.read(&mut buf).await else {
                            return;
                        };
                        if k == 0 {
                            return;
                        }
                        let head = buf[..k].starts_with(b"HEAD");
                        if buf[..k].starts_with(b"GET /slow") {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                        let body = if head { "" } else { name.as_str() };
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            name.len()
                        );
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        port
    }

    fn view(&self, members: Vec<Member>) {
        self.views.send(members).unwrap();
    }

    fn servers(&self) -> std::collections::BTreeMap<String, muster::haproxy::runtime::ServerState> {
        let mut admin = muster::haproxy::runtime::Admin::new(&self.admin);
        let text = self
            .runtime
            .block_on(admin.command("show servers state"))
            .unwrap_or_default();
        muster::haproxy::runtime::parse_servers_state(&text)
            .into_iter()
            .map(|((_, name), st)| (name, st))
            .collect()
    }

    fn wait_until(
        &self,
        what: &str,
        cond: impl Fn(Option<muster::haproxy::runtime::ServerState>) -> bool,
        name: &str,
    ) {
        eventually(what, LONG, || cond(self.servers().get(name).copied()));
    }

    fn reloads(&self) -> u64 {
        let text = self
            .runtime
            .block_on(muster::haproxy::runtime::master(&self.master, "show proc"))
            .unwrap();
        muster::haproxy::runtime::parse_procs(&text).reloads
    }

    /// A request to `name`'s server (by its sticky cookie) that holds a session for 2 s, on a
    /// thread: its answer's body.
    fn slow_request(&self, name: &str) -> std::thread::JoinHandle<Result<String, String>> {
        let mut c = Client::new(self.http);
        c.cookies.insert("MUSTERSRV".into(), name.into());
        std::thread::spawn(move || {
            c.get("/slow")
                .map(|r| format!("{} {}", r.status, r.body.trim()))
        })
    }
}

impl Drop for Seam {
    fn drop(&mut self) {
        // Gone before the temporary directory it runs in (a field, dropped after this).
        common::end(self.haproxy);
    }
}

fn with_status(mut m: Member, status: Status) -> Member {
    m.status = status;
    m
}

#[test]
fn servers_flapping_out_and_back_end_in_service_without_a_reload_or_a_failed_request() {
    let seam = Seam::start(Duration::from_secs(10));
    let local = [127, 0, 0, 1];
    let (pa, pb, pc) = (seam.app("web-a"), seam.app("web-b"), seam.app("web-c"));
    let (a, b, c) = (
        member("web-a", local, pa),
        member("web-b", local, pb),
        member("web-c", local, pc),
    );
    seam.view(vec![a.clone(), b.clone(), c.clone()]);
    for n in ["web-a", "web-b", "web-c"] {
        seam.wait_until(
            &format!("{n} in service"),
            |s| s.is_some_and(|s| s.in_service()),
            n,
        );
    }
    let load = Load::start(seam.http, 4, Duration::from_millis(2), LONG, 1_000_000);

    // web-b fails while a session holds it (so it stays in maintenance, not deleted), then
    // comes back alive: brought back, not stuck in maintenance.
    let held = seam.slow_request("web-b");
    eventually("web-b's slow session", LONG, || {
        let stat = seam.runtime.block_on(async {
            let mut admin = muster::haproxy::runtime::Admin::new(&seam.admin);
            admin.command("show stat").await.unwrap_or_default()
        });
        muster::haproxy::runtime::parse_sessions(&stat)
            .get(&("nodes".to_owned(), "web-b".to_owned()))
            .is_some_and(|&n| n > 0)
    });
    seam.view(vec![
        a.clone(),
        with_status(b.clone(), Status::Failed),
        c.clone(),
    ]);
    seam.wait_until(
        "web-b in maintenance",
        |s| s.is_some_and(|s| s.maint()),
        "web-b",
    );
    seam.view(vec![a.clone(), b.clone(), c.clone()]);
    seam.wait_until(
        "web-b back in service",
        |s| s.is_some_and(|s| s.in_service()),
        "web-b",
    );
    assert_eq!(held.join().unwrap(), Ok("200 web-b".to_owned()));

    // web-a leaves while a session holds it (so it stays draining), then a fresh web-a joins
    // at another port: back in service there, not stuck in DRAIN.
    let held = seam.slow_request("web-a");
    std::thread::sleep(Duration::from_millis(200));
    seam.view(vec![
        with_status(a.clone(), Status::Left),
        b.clone(),
        c.clone(),
    ]);
    seam.wait_until(
        "web-a draining",
        |s| s.is_some_and(|s| s.draining()),
        "web-a",
    );
    let pa2 = seam.app("web-a");
    let a2 = member("web-a", local, pa2);
    seam.view(vec![a2.clone(), b.clone(), c.clone()]);
    seam.wait_until(
        "web-a back in service",
        |s| s.is_some_and(|s| s.in_service()),
        "web-a",
    );
    assert_eq!(held.join().unwrap(), Ok("200 web-a".to_owned()));
    assert!(served_by_port(seam.http.port(), "web-a"));

    // web-c fails and is back at once, many times: it ends in service.
    for _ in 0..10 {
        seam.view(vec![
            a2.clone(),
            b.clone(),
            with_status(c.clone(), Status::Failed),
        ]);
        std::thread::sleep(Duration::from_millis(30));
        seam.view(vec![a2.clone(), b.clone(), c.clone()]);
        std::thread::sleep(Duration::from_millis(30));
    }
    seam.wait_until(
        "web-c in service",
        |s| s.is_some_and(|s| s.in_service()),
        "web-c",
    );

    let stats = load.finish();
    eprintln!("load: {stats:?}");
    assert_eq!(stats.failed, 0, "failed requests: {:?}", stats.errors);
    assert_eq!(seam.reloads(), 0, "a membership change reloaded haproxy");
    let servers = seam.servers();
    assert!(servers.values().all(|s| s.in_service()), "{servers:?}");
}

#[test]
fn a_leave_intent_alone_keeps_the_server_in_service() {
    let seam = Seam::start(Duration::from_secs(3));
    let local = [127, 0, 0, 1];
    let (pa, pb) = (seam.app("web-a"), seam.app("web-b"));
    let (a, b) = (member("web-a", local, pa), member("web-b", local, pb));
    seam.view(vec![a.clone(), b.clone()]);
    for n in ["web-a", "web-b"] {
        seam.wait_until(
            &format!("{n} in service"),
            |s| s.is_some_and(|s| s.in_service()),
            n,
        );
    }
    // Leaving (a Serf leave intent, which any peer can forge): still in service.
    seam.view(vec![with_status(a.clone(), Status::Leaving), b.clone()]);
    observe_for(Duration::from_millis(500), || {
        assert!(seam.servers().get("web-a").is_some_and(|s| s.in_service()));
    });
    // Left (memberlist): drained, then gone.
    seam.view(vec![with_status(a, Status::Left), b]);
    seam.wait_until("web-a gone", |s| s.is_none(), "web-a");
    assert!(served_by_port(seam.http.port(), "web-b"));
}

/// Runs `check` every 20 ms for `window`.
fn observe_for(window: Duration, mut check: impl FnMut()) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        check();
        std::thread::sleep(Duration::from_millis(20));
    }
}
