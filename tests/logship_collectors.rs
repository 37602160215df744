//! Collectors that misbehave, against real processes: a collector that accepts the
//! connection and never answers RELP `open`, while the main service is a real HTTP server
//! (`python3 -m http.server`) that logs every request (requests keep being answered, muster's
//! RSS stays bounded, the RELP client gives up on the silent collector after `ack_timeout`,
//! and once Debian's rsyslog answers on the port every logged request arrives); and a
//! collector that answers RELP `open` with garbage (reconnects bounded by the back-off, one
//! warning for the episode); those two set `when_full` explicitly. Under the default
//! settings (nothing in `[logship]` but the target), a silent collector while a side service
//! writes several times `queue_bytes`: muster's RSS grows by at most about `queue_bytes`,
//! the HTTP main service answers every request, and the drops are counted.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Run, config, eventually, free_port, muster, owned};

const LONG: Duration = Duration::from_secs(60);

/// A listener on `port` that accepts every connection and never writes a byte; what it
/// reads is thrown away. Dropping it closes the listener and every connection.
struct Silent {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Silent {
    fn new(port: u16) -> Silent {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (s, a) = (stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            let mut conns: Vec<TcpStream> = Vec::new();
            let mut buf = [0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                if let Ok((c, _)) = listener.accept() {
                    c.set_nonblocking(true).unwrap();
                    a.fetch_add(1, Ordering::Relaxed);
                    conns.push(c);
                }
                // Read and discard, so the sender's writes never block on us; keep every
                // connection open (a peer's close is noticed, then the socket dropped).
                conns.retain_mut(|c| !matches!(c.read(&mut buf), Ok(0)));
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Silent {
            stop,
            accepted,
            thread: Some(thread),
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Debian's rsyslogd with imrelp on `port`, every message into `dir/out.log`.
struct Rsyslog {
    child: Child,
    out: std::path::PathBuf,
}

impl Rsyslog {
    fn new(dir: &Path, port: u16) -> Rsyslog {
        assert!(
            Path::new("/usr/sbin/rsyslogd").exists(),
            "rsyslogd is missing: tests/run installs Debian's rsyslog and rsyslog-relp"
        );
        std::fs::create_dir_all(dir.join("work")).unwrap();
        let out = dir.join("out.log");
        let conf = format!(
            r#"
global(workDirectory="{work}" maxMessageSize="64k")
module(load="imrelp")
input(type="imrelp" port="{port}" address="127.0.0.1" ruleset="r" maxDataSize="64k")
ruleset(name="r" queue.type="Direct") {{
    action(type="omfile" file="{out}" template="RSYSLOG_SyslogProtocol23Format")
}}
"#,
            work = dir.join("work").display(),
            out = out.display(),
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
        let child = common::owned(&mut Command::new("/usr/sbin/rsyslogd"))
            .args(["-n", "-f"])
            .arg(dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        eventually("rsyslog listens", LONG, || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Rsyslog { child, out }
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.out).unwrap_or_default()).into_owned()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// muster's resident set, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// One HTTP/1.0 GET on a new connection; the status code, or None on any error.
fn get(port: u16, path: &str) -> Option<u16> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(c, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).ok()?;
    let head = String::from_utf8_lossy(&answer[..answer.len().min(32)]).into_owned();
    head.split_whitespace().nth(1)?.parse().ok()
}

/// Requests `?i=FROM..` as fast as they are answered for `secs`; every status, and the
/// successes per second of the phase.
fn load(port: u16, from: u64, secs: u64) -> (u64, BTreeMap<u16, u64>, Vec<u64>) {
    let start = Instant::now();
    let (mut i, mut statuses, mut per_second) = (from, BTreeMap::new(), vec![0u64; secs as usize]);
    while start.elapsed() < Duration::from_secs(secs) {
        let status = get(port, &format!("/ok.txt?i={i}")).unwrap_or(0);
        *statuses.entry(status).or_default() += 1;
        if status == 200 {
            let s = (start.elapsed().as_secs() as usize).min(per_second.len() - 1);
            per_second[s] += 1;
        }
        i += 1;
    }
    (i, statuses, per_second)
}

/// Which request numbers (`?i=N`) the collector wrote, with how many times.
fn requests_logged(text: &str) -> BTreeMap<u64, u32> {
    let mut out = BTreeMap::new();
    for part in text.split("/ok.txt?i=").skip(1) {
        let n: String = part.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = n.parse() {
            *out.entry(n).or_default() += 1;
        }
    }
    out
}

/// The main service both silent-collector tests run: Python's HTTP server on `http`, serving
/// `ok.txt` from a site under `dir`, logging every request (to stderr, so to muster).
fn web_service(dir: &Path, http: u16) -> String {
    let site = dir.join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("ok.txt"), "ok\n").unwrap();
    format!(
        "[services.web]\nmain = true\ncommand = [\"python3\", \"-m\", \"http.server\", \"{http}\", \"--bind\", \"127.0.0.1\", \"--directory\", \"{}\"]\n",
        site.display()
    )
}

#[test]
fn a_silent_collector_never_stalls_a_logging_http_server_and_a_real_one_then_gets_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let (relp, http) = (free_port(), free_port());
    let silent = Silent::new(relp);
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[supervisor]
control_socket = false
[logship]
target = "127.0.0.1:{relp}"
hostname = "web-1"
ack_timeout = "1s"
when_full = "block"
queue = 1000000
queue_bytes = 536870912
{web}"#,
            web = web_service(dir.path(), http)
        ),
    );
    let run = Run::start_cmd(
        Command::new(muster())
            .args(["--config", cfg.to_str().unwrap()])
            .stdout(Stdio::null()),
    );
    let pid = run.child.id();
    eventually("the web server answers", LONG, || {
        get(http, "/ok.txt?i=warmup") == Some(200)
    });
    // Phase 1: the collector accepts and never answers. Every request is answered, every
    // second; muster's memory grows by the queued lines only.
    let rss_start = rss_kib(pid);
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (stop, samples) = (sampler_stop.clone(), samples.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                samples.lock().unwrap().push(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let (next, statuses, per_second) = load(http, 0, 8);
    sampler_stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let rss_max = samples.lock().unwrap().iter().copied().max().unwrap();
    let accepted = silent.accepted.load(Ordering::Relaxed);
    eprintln!(
        "silent collector, 8 s: {next} requests {statuses:?}, per second {per_second:?}; \
         muster RSS {rss_start} -> max {rss_max} KiB; the collector accepted {accepted} connections"
    );
    assert_eq!(
        statuses.keys().collect::<Vec<_>>(),
        [&200],
        "every request answered 200"
    );
    assert!(
        per_second.iter().all(|&n| n > 0),
        "requests answered in every second: {per_second:?}"
    );
    // The queued lines (~100 bytes of text + 96 of accounting each) and nothing more.
    let bound = 4096 + next * 400 / 1024;
    assert!(
        rss_max.saturating_sub(rss_start) < bound,
        "muster's RSS grew from {rss_start} to {rss_max} KiB (bound {bound} KiB over start)"
    );
    assert!(
        run.count("no answer from the collector in 1s") >= 1,
        "the RELP client gave up on the silent collector:\n{}",
        run.text()
    );
    assert!(
        accepted >= 2,
        "and connected again ({accepted} connections)"
    );
    assert_eq!(
        run.count("log collector unavailable"),
        1,
        "one warning for the episode:\n{}",
        run.text()
    );
    // Phase 2: a real collector answers on the port; what was queued and what is logged
    // from now on all arrives.
    drop(silent);
    let rsyslog = Rsyslog::new(&dir.path().join("collector"), relp);
    let (end, statuses2, _) = load(http, next, 2);
    assert_eq!(
        statuses2.keys().collect::<Vec<_>>(),
        [&200],
        "every request answered 200"
    );
    run.wait_line("log collector back", LONG);
    let mut missing = Vec::new();
    eventually("every logged request at the collector", LONG, || {
        let got = requests_logged(&rsyslog.output());
        missing = (0..end).filter(|i| !got.contains_key(i)).take(10).collect();
        missing.is_empty()
    });
    let got = requests_logged(&rsyslog.output());
    let dups: u32 = got.values().map(|c| c - 1).sum();
    eprintln!("{end} requests logged: 0 lost, {dups} duplicates");
    assert_eq!(got.len() as u64, end, "no request beyond those made");
}

/// A listener on `port` that answers whatever arrives with garbage and closes; counts the
/// connections.
fn garbage(port: u16, stop: Arc<AtomicBool>, accepted: Arc<AtomicUsize>) {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut c, _)) => {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut buf = [0u8; 4096];
                    let _ = c.read(&mut buf);
                    let _ = c.write_all(b"HTTP/1.1 400 what\r\n\r\n\xff\xfe nonsense 1 rsp x\n");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
}

#[test]
fn a_garbage_collector_gets_reconnects_bounded_by_the_back_off_and_one_warning() {
    let dir = tempfile::tempdir().unwrap();
    let relp = free_port();
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    garbage(relp, stop.clone(), accepted.clone());
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[supervisor]
control_socket = false
[logship]
target = "127.0.0.1:{relp}"
hostname = "web-1"
ack_timeout = "1s"
when_full = "block"
queue = 100000
[services.app]
main = true
command = ["python3", "-c", "import sys, time\nfor i in range(100000):\n    print('line', i, flush=True); time.sleep(0.01)"]
"#
        ),
    );
    let run = Run::start_cmd(
        Command::new(muster())
            .args(["--config", cfg.to_str().unwrap()])
            .stdout(Stdio::null()),
    );
    run.wait_line("log collector unavailable", LONG);
    let since = Instant::now();
    let before = accepted.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(10));
    let during = accepted.load(Ordering::Relaxed) - before;
    let total = accepted.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let warnings = run.count("log collector unavailable");
    let collector_lines = run.count("log collector");
    eprintln!(
        "garbage collector: {total} connections in all, {during} in {:?} after the first \
         warning; {warnings} warnings, {collector_lines} lines about the collector",
        since.elapsed()
    );
    // Back-off from 100 ms doubling to 30 s: 7 or 8 attempts in 10 s; a few more at most
    // with scheduling noise, never hundreds.
    assert!(
        (2..=20).contains(&during),
        "{during} connections in 10 s: the back-off bounds them"
    );
    assert_eq!(warnings, 1, "one warning per episode:\n{}", run.text());
    assert_eq!(
        collector_lines,
        1,
        "and nothing per attempt:\n{}",
        run.text()
    );
}

/// The default `queue_bytes` (`src/config`): what a silent collector may cost in memory.
const DEFAULT_QUEUE_BYTES: u64 = 32 << 20;

/// A side service writing 1,000-byte lines (`chatty NNNNNNNN xxx…`) as fast as it can for
/// `secs` seconds, in bursts of 1,000 20 ms apart (up to ~40 MB/s), then saying how many it wrote (on stderr) and idling.
fn chatty(secs: u64) -> String {
    format!(
        "import sys, time\nt = time.time()\npad = 'x' * 983\nn = 0\nwhile time.time() - t < {secs}:\n    for _ in range(1000):\n        sys.stdout.write('chatty %08d %s\\n' % (n, pad)); n += 1\n    sys.stdout.flush(); time.sleep(0.02)\nprint('chatty wrote %d lines' % n, file=sys.stderr, flush=True)\ntime.sleep(3600)\n"
    )
}

/// muster's RSS every 100 ms until `stop` is set; the samples (KiB).
fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut samples = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            samples.push(rss_kib(pid));
            std::thread::sleep(Duration::from_millis(100));
        }
        samples
    })
}

/// `name=N` in muster's "log shipping stopped" line.
fn stat(stats: &str, name: &str) -> u64 {
    stats
        .split(&format!(" {name}="))
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {stats:?}"))
}

#[test]
fn under_the_default_settings_a_silent_collector_costs_at_most_queue_bytes_and_the_app_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (relp, http) = (free_port(), free_port());
    let silent = Silent::new(relp);
    // Nothing but the target in [logship]: when_full, queue, queue_bytes and ack_timeout
    // are the defaults.
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[supervisor]
control_socket = false
[logship]
target = "127.0.0.1:{relp}"
{web}[services.chatty]
command = ["python3", "-c", '''{chatty}''']
"#,
            web = web_service(dir.path(), http),
            chatty = chatty(8),
        ),
    );
    // The services' output is also muster's: stdout (the chatty lines) is thrown away,
    // stderr (muster's log, the web server's request lines) goes to a file.
    let log = dir.path().join("muster.stderr");
    let mut run = Owned::muster(&cfg, &log);
    let pid = run.0.id();
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("the web server answers", LONG, || {
        get(http, "/ok.txt?i=warmup") == Some(200)
    });
    let rss_start = rss_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(pid, stop.clone());
    let (requests, statuses, per_second) = load(http, 0, 10);
    eventually("chatty says what it wrote", LONG, || {
        text().contains("chatty wrote")
    });
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    let rss_max = samples.iter().copied().max().unwrap();
    common::signal(pid as i32, libc::SIGTERM);
    eventually("muster exits", LONG, || run.0.try_wait().unwrap().is_some());
    let text = text();
    let (written, stats) = written_and_stats(&text);
    let (queued, dropped) = (stat(&stats, "queued"), stat(&stats, "dropped"));
    eprintln!(
        "default settings, silent collector: chatty wrote {written} lines ({} MiB); {requests} \
         requests {statuses:?}, per second {per_second:?}; muster RSS {rss_start} -> max \
         {rss_max} KiB over {} samples; {stats}",
        (written * 1000) >> 20,
        samples.len()
    );
    drop(silent);
    assert!(
        written * 1000 > 3 * DEFAULT_QUEUE_BYTES,
        "the service wrote more than three times queue_bytes ({written} lines)"
    );
    assert_eq!(
        statuses.keys().collect::<Vec<_>>(),
        [&200],
        "every request answered 200"
    );
    assert!(
        per_second.iter().all(|&n| n > 0),
        "requests answered in every second: {per_second:?}"
    );
    // The queue's bytes (text plus accounting) and a few MiB of buffers and allocator slack.
    let bound = (DEFAULT_QUEUE_BYTES >> 10) + 6 * 1024;
    assert!(
        rss_max.saturating_sub(rss_start) < bound,
        "muster's RSS grew from {rss_start} to {rss_max} KiB (bound {bound} KiB over start)"
    );
    // Nothing was delivered: what was not dropped was still queued at exit. The drops are
    // counted, and said once when they started.
    assert!(queued >= written, "{stats}");
    assert_eq!(stat(&stats, "delivered"), 0, "{stats}");
    assert_eq!(dropped + stat(&stats, "undelivered"), queued, "{stats}");
    assert!(dropped >= written - DEFAULT_QUEUE_BYTES / 1000, "{stats}");
    assert_eq!(
        text.matches("collector away: log queue full, dropping the oldest lines")
            .count(),
        1,
        "one warning when drops started:\n{text}"
    );
}

/// How many lines chatty said it wrote, and muster's "log shipping stopped" line.
fn written_and_stats(text: &str) -> (u64, String) {
    let written = text
        .split("chatty wrote ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("chatty did not say what it wrote:\n{text}"));
    let stats = text
        .lines()
        .find(|l| l.contains("log shipping stopped"))
        .unwrap_or_default()
        .to_owned();
    (written, stats)
}

/// A child started with [`owned`], its process group killed when the test ends.
struct Owned(Child);

impl Owned {
    /// muster with `cfg`, its stdout thrown away and its stderr into `log`.
    fn muster(cfg: &Path, log: &Path) -> Owned {
        Owned(
            owned(Command::new(muster()).args(["--config", cfg.to_str().unwrap()]))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log).unwrap())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            common::kill_group(self.0.id());
            let _ = self.0.wait();
        }
    }
}
