//! Log shipping against Debian's real rsyslog (imrelp and imtcp) on 127.0.0.1: lines arrive
//! with their per-boot sequence numbers; collector restarts mid-stream lose nothing; a
//! collector that is down at start receives everything once it is up; a stalled collector
//! with `drop-oldest` does not hold the service back and the drops are counted; binary data,
//! invalid UTF-8 and a 1 MiB line arrive intact or cleanly split. Under the default
//! `drop-while-away`: a collector down (or frozen past `ack_timeout`) for long never holds a
//! chatty service back, the oldest lines are the ones dropped and the count is logged once;
//! a healthy collector slower than the service loses nothing (back-pressure). With the disk
//! spool: a long outage and a SIGTERM restart of muster lose nothing and keep the order, a
//! collector back in the same run gets the spool then the queue, and a spool directory that
//! cannot be made is a configuration error (exit 64). Against a listener of the
//! test's own: what muster sends parses as RFC 5424 (`syslog_rfc5424`) with every field as
//! expected, and a collector that is down or stops reading does not hold muster's exit past
//! the flush deadline.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Run, code, config, eventually, free_port, muster};

const LONG: Duration = Duration::from_secs(60);

/// rsyslogd in the foreground, writing every message it receives to `out` as RFC 5424.
struct Rsyslog {
    child: Option<Child>,
    dir: PathBuf,
    relp: u16,
    tcp: u16,
}

impl Rsyslog {
    fn new(dir: &Path) -> Rsyslog {
        let action = format!(
            r#"action(type="omfile" file="{}/out.log" template="RSYSLOG_SyslogProtocol23Format")"#,
            dir.display()
        );
        Rsyslog::with(dir, "", &action)
    }

    /// A collector that is healthy but slower than a fast writer: a main queue of 1,000
    /// messages (imrelp acknowledges once a message is in it, and waits while it is full),
    /// emptied by `omprog` into a program that writes `out.log` at about 5,000 lines a second.
    fn slow(dir: &Path) -> Rsyslog {
        std::fs::create_dir_all(dir).unwrap();
        let program = dir.join("slow.py");
        std::fs::write(
            &program,
            format!(
                "import sys, time\nout = open('{}/out.log', 'a')\nfor i, l in enumerate(sys.stdin):\n    out.write(l)\n    if i % 50 == 0:\n        out.flush(); time.sleep(0.01)\n",
                dir.display()
            ),
        )
        .unwrap();
        let action = format!(
            r#"action(type="omprog" binary="/usr/bin/python3 {}" template="RSYSLOG_SyslogProtocol23Format")"#,
            program.display()
        );
        Rsyslog::with(
            dir,
            "module(load=\"omprog\")\nmain_queue(queue.type=\"FixedArray\" queue.size=\"1000\")",
            &action,
        )
    }

    fn with(dir: &Path, queue: &str, action: &str) -> Rsyslog {
        assert!(
            Path::new("/usr/sbin/rsyslogd").exists(),
            "rsyslogd is missing: tests/run installs Debian's rsyslog and rsyslog-relp"
        );
        std::fs::create_dir_all(dir.join("work")).unwrap();
        let mut r = Rsyslog {
            child: None,
            dir: dir.to_owned(),
            relp: free_port(),
            tcp: free_port(),
        };
        let conf = format!(
            r#"
global(workDirectory="{dir}/work" maxMessageSize="64k")
module(load="imrelp")
module(load="imtcp")
input(type="imrelp" port="{relp}" address="127.0.0.1" ruleset="remote" maxDataSize="64k")
input(type="imtcp" port="{tcp}" address="127.0.0.1" ruleset="remote" discardTruncatedMsg="on")
{queue}
ruleset(name="remote") {{
    {action}
}}
"#,
            dir = dir.display(),
            relp = r.relp,
            tcp = r.tcp,
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
        r.start();
        r
    }

    fn start(&mut self) {
        let child = common::owned(&mut Command::new("/usr/sbin/rsyslogd"))
            .args(["-n", "-f"])
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.relp;
        eventually("rsyslog listens", LONG, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// A graceful stop (SIGTERM), as `docker restart` does.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            common::signal(c.id() as i32, libc::SIGTERM);
            c.wait().unwrap();
        }
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            common::signal(c.id() as i32, sig);
        }
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join("out.log")).unwrap_or_default())
            .into_owned()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Per boot id, every sequence number received, with how many times.
fn sequences(text: &str) -> BTreeMap<String, BTreeMap<u64, u32>> {
    let mut out: BTreeMap<String, BTreeMap<u64, u32>> = BTreeMap::new();
    for line in text.lines() {
        let Some(sd) = line.split("[muster@32473 ").nth(1) else {
            continue;
        };
        let field = |name: &str| {
            sd.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .map(str::to_owned)
        };
        let (Some(boot), Some(seq)) = (field("boot"), field("seq")) else {
            continue;
        };
        *out.entry(boot)
            .or_default()
            .entry(seq.parse().unwrap())
            .or_default() += 1;
    }
    out
}

/// Checks that one boot delivered exactly 1..=n (duplicates allowed); returns the duplicates.
fn complete(text: &str, n: u64) -> u64 {
    let seqs = sequences(text);
    assert_eq!(seqs.len(), 1, "one boot id: {:?}", seqs.keys());
    let got = seqs.values().next().unwrap();
    let missing: Vec<u64> = (1..=n).filter(|s| !got.contains_key(s)).take(10).collect();
    assert!(
        missing.is_empty(),
        "{} of {n} lines arrived; first missing: {missing:?}",
        got.len()
    );
    assert_eq!(got.len() as u64, n, "no line beyond the {n} written");
    got.values().map(|c| u64::from(c - 1)).sum()
}

/// muster with this configuration; the service's stdout (also shipped) is not kept.
fn start(cfg: &Path) -> Run {
    Run::start_cmd(
        Command::new(muster())
            .args(["--config", cfg.to_str().unwrap()])
            .stdout(Stdio::null()),
    )
}

/// muster's last words on shipping: queued, delivered, resent, dropped, undelivered.
fn shipping_stats(run: &Run) -> String {
    run.text()
        .lines()
        .find(|l| l.contains("log shipping stopped"))
        .unwrap_or_default()
        .to_owned()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn muster_config(dir: &Path, target: u16, extra: &str, command: &str) -> PathBuf {
    config(
        dir,
        &format!(
            r#"
[logship]
target = "127.0.0.1:{target}"
hostname = "web-1"
{extra}
[services.app]
main = true
command = ["python3", "-c", '''{command}''']
"#
        ),
    )
}

/// Writes `n` lines `line I`, in bursts, over about `secs` seconds, then lingers.
fn producer(n: u64, secs: f64, linger: f64) -> String {
    format!(
        "import sys, time\nn = {n}\nstep = max(1, n // 100)\nfor i in range(1, n + 1):\n    sys.stdout.write('line %d\\n' % i)\n    if i % step == 0:\n        sys.stdout.flush(); time.sleep({secs} / 100)\nsys.stdout.flush()\ntime.sleep({linger})\n"
    )
}

#[test]
fn collector_restarts_mid_stream_lose_nothing() {
    let n: u64 = std::env::var("LOGSHIP_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let restarts: u32 = std::env::var("LOGSHIP_RESTARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let dir = tempfile::tempdir().unwrap();
    let mut rsyslog = Rsyslog::new(&dir.path().join("collector"));
    let secs = 1.0 + f64::from(restarts);
    // The service writes faster than muster ships, so the queue is full whenever the collector
    // goes: under the default `drop-while-away` the lines beyond it are dropped (and counted).
    // What is tested here is RELP's resend of the unacknowledged window, so the queue waits.
    let cfg = muster_config(
        dir.path(),
        rsyslog.relp,
        "when_full = \"block\"",
        &producer(n, secs, 1.0),
    );
    let started = Instant::now();
    let mut run = start(&cfg);
    for i in 0..restarts {
        let at = Duration::from_secs_f64((f64::from(i) + 1.0) * secs / (f64::from(restarts) + 1.0));
        std::thread::sleep(at.saturating_sub(started.elapsed()));
        rsyslog.stop();
        std::thread::sleep(Duration::from_millis(300));
        rsyslog.start();
    }
    assert_eq!(code(run.wait(LONG)), 0, "{}", run.text());
    rsyslog.stop();
    let dups = complete(&rsyslog.output(), n);
    let stats = shipping_stats(&run);
    // Restarts broke the connection mid-stream: logged once per episode. A restart that
    // falls inside a back-off (muster is waiting to reconnect, so it has no connection to
    // break) belongs to the episode already open, so there may be fewer episodes than
    // restarts; every episode ends with the collector back.
    let episodes = run.count("log collector unavailable");
    let back = run.count("log collector back");
    eprintln!(
        "{n} lines, {restarts} collector restarts: 0 lost, {dups} duplicates ({stats}), {episodes} episodes, {:?}",
        started.elapsed()
    );
    assert!(stats.contains("undelivered=0"), "{stats}");
    assert!(
        (1..=restarts as usize).contains(&episodes),
        "restarts broke the connection mid-stream ({episodes} episodes for {restarts} restarts)"
    );
    assert_eq!(
        back, episodes,
        "every episode ended with the collector back"
    );
}

#[test]
fn a_collector_down_at_start_receives_everything_once_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut rsyslog = Rsyslog::new(&dir.path().join("collector"));
    rsyslog.stop();
    let n = 5_000;
    let cfg = muster_config(dir.path(), rsyslog.relp, "", &producer(n, 0.2, 3.0));
    let mut run = start(&cfg);
    std::thread::sleep(Duration::from_millis(1500));
    rsyslog.start();
    assert_eq!(code(run.wait(LONG)), 0, "{}", run.text());
    rsyslog.stop();
    complete(&rsyslog.output(), n);
}

#[test]
fn a_stalled_collector_with_drop_oldest_does_not_hold_the_service_and_drops_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = Rsyslog::new(&dir.path().join("collector"));
    rsyslog.signal(libc::SIGSTOP);
    let n = 200_000;
    let cfg = muster_config(
        dir.path(),
        rsyslog.relp,
        "queue = 1000\nwhen_full = \"drop-oldest\"",
        &format!(
            "import sys, time\nt = time.time()\nfor i in range({n}): sys.stdout.write('line %d\\n' % i)\nsys.stdout.flush()\nprint('wrote in %.2f s' % (time.time() - t), file=sys.stderr)\n"
        ),
    );
    let mut run = start(&cfg);
    let took = run.wait_line("wrote in", LONG) - run.started;
    assert_eq!(code(run.wait(LONG)), 0, "{}", run.text());
    let stats = shipping_stats(&run);
    eprintln!("stalled collector: {n} lines written in {took:?}; {stats}");
    let dropped: u64 = stats
        .split("dropped=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    assert!(dropped > 0, "drops are counted: {stats}");
    assert!(
        took < Duration::from_secs(20),
        "the service was held back: {took:?}"
    );
    rsyslog.signal(libc::SIGCONT);
}

#[test]
fn binary_invalid_utf8_and_a_one_mib_line_arrive_intact_or_cleanly_split() {
    let dir = tempfile::tempdir().unwrap();
    let mut rsyslog = Rsyslog::new(&dir.path().join("collector"));
    let script = "import sys, time\nw = sys.stdout.buffer\nw.write(b'bin \\x00\\x01\\x7f end\\n')\nw.write(b'bad \\xff\\xfe\\xc3\\x28 end\\n')\nw.write(b'utf8 h\\xc3\\xa9llo \\xe2\\x9c\\x93\\n')\nw.write(b'x' * (1 << 20) + b'\\n')\nw.write(b'after\\n')\nw.flush()\ntime.sleep(1)\n";
    let cfg = muster_config(dir.path(), rsyslog.relp, "", script);
    let mut run = start(&cfg);
    assert_eq!(code(run.wait(LONG)), 0, "{}", run.text());
    rsyslog.stop();
    let raw = std::fs::read(rsyslog.dir.join("out.log")).unwrap();
    let text = String::from_utf8_lossy(&raw);
    // rsyslog's file writer escapes control characters as #ooo; DEL and the bytes above 0x7f
    // pass as they are.
    assert!(contains(&raw, b"bin #000#001\x7f end"), "{text:.1000}");
    assert!(
        contains(&raw, b"bad \xff\xfe\xc3\x28 end"),
        "invalid UTF-8 arrives as sent"
    );
    assert!(text.contains("utf8 héllo ✓"));
    // The 1 MiB line: 64 pieces of 16 KiB, the first without and the rest with cont="1".
    let pieces: Vec<&str> = text.lines().filter(|l| l.ends_with("xxxxxxxx")).collect();
    let total: usize = pieces
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().len())
        .sum();
    assert_eq!(total, 1 << 20, "every x arrived");
    assert_eq!(pieces.len(), 64);
    assert!(!pieces[0].contains("cont=\"1\""));
    assert!(pieces[1..].iter().all(|l| l.contains("cont=\"1\"")));
    assert!(text.contains(" after"), "the next line is whole");
    complete(&text, 5 + 63);
}

#[test]
fn plain_tcp_with_octet_counting_delivers_multiline_safe_frames() {
    let dir = tempfile::tempdir().unwrap();
    let mut rsyslog = Rsyslog::new(&dir.path().join("collector"));
    let n = 2_000;
    let cfg = muster_config(
        dir.path(),
        rsyslog.tcp,
        "protocol = \"tcp\"",
        &producer(n, 0.2, 1.0),
    );
    let mut run = start(&cfg);
    assert_eq!(code(run.wait(LONG)), 0, "{}", run.text());
    rsyslog.stop();
    complete(&rsyslog.output(), n);
}

/// The frames of an RFC 6587 octet-counted stream (`LEN SP MSG`), each checked whole.
fn octet_frames(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let sp = bytes
            .iter()
            .position(|&b| b == b' ')
            .expect("a frame starts with LEN SP");
        let len: usize = std::str::from_utf8(&bytes[..sp])
            .unwrap()
            .parse()
            .expect("LEN is a number");
        let rest = &bytes[sp + 1..];
        assert!(rest.len() >= len, "a frame of {len} bytes is cut short");
        frames.push(&rest[..len]);
        bytes = &rest[len..];
    }
    frames
}

/// Accepts one connection on `listener` and reads it to its end (muster closes it when it
/// exits); panics at the deadline.
fn read_connection(listener: &TcpListener, limit: Duration) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    listener.set_nonblocking(true).unwrap();
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "muster did not connect");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the connection was not closed ({} bytes read)",
            got.len()
        );
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn what_muster_sends_parses_as_rfc5424_with_every_field_in_place() {
    use syslog_rfc5424::{SyslogFacility, SyslogSeverity};
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = r#"import sys
o, e = sys.stdout.buffer, sys.stderr.buffer
o.write(b'plain ascii\n')
o.write('utf-8: h\u00e9llo \u2713\n'.encode())
o.write(b'\n')
o.write(b'  spaces around  \n')
o.write(b'brackets ] [x] "quotes" \\ end\n')
o.write(b'x' * 40000 + b'\n')
o.flush()
e.write(b'to stderr\n')
e.write(b'second on stderr\n')
e.flush()
"#;
    // No `hostname`: muster takes the host's.
    let cfg = config(
        dir.path(),
        &format!(
            "[logship]\ntarget = \"127.0.0.1:{port}\"\nprotocol = \"tcp\"\nfacility = \"local3\"\n[services.app]\nmain = true\ncommand = [\"python3\", \"-c\", '''{script}''']\n"
        ),
    );
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let mut run = start(&cfg);
    let bytes = read_connection(&listener, LONG);
    assert_eq!(code(run.wait(LONG)), 0, "{}", run.text());
    let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let host = Command::new("uname").arg("-n").output().unwrap().stdout;
    let host = String::from_utf8(host).unwrap().trim().to_owned();

    let (mut stdout, mut stderr, mut boots, mut seqs) = (vec![], vec![], vec![], vec![]);
    for frame in octet_frames(&bytes) {
        let text = std::str::from_utf8(frame).expect("these lines are UTF-8");
        let m = syslog_rfc5424::parse_message(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(m.facility, SyslogFacility::LOG_LOCAL3, "{text}");
        assert_eq!(m.hostname.as_deref(), Some(host.as_str()), "{text}");
        assert_eq!(m.appname.as_deref(), Some("app"), "{text}");
        assert_eq!((&m.procid, &m.msgid), (&None, &None), "muster sets neither");
        let secs = m.timestamp.unwrap();
        assert!(
            (before.as_secs() as i64..=after.as_secs() as i64).contains(&secs),
            "{text}"
        );
        let sd = |name| m.sd.find_tuple("muster@32473", name).cloned();
        boots.push(sd("boot").unwrap());
        seqs.push(sd("seq").unwrap().parse::<u64>().unwrap());
        let piece = (m.msg.clone(), sd("cont").is_some());
        match m.severity {
            SyslogSeverity::SEV_INFO => stdout.push(piece),
            SyslogSeverity::SEV_ERR => stderr.push(piece),
            other => panic!("severity {other:?}: {text}"),
        }
    }
    let line = |text: &str, cont: bool| (text.to_owned(), cont);
    let x = |n: usize| "x".repeat(n);
    assert_eq!(
        stdout,
        [
            line("plain ascii", false),
            line("utf-8: h\u{e9}llo \u{2713}", false),
            line("", false),
            line("  spaces around  ", false),
            line("brackets ] [x] \"quotes\" \\ end", false),
            // 40,000 bytes: cut into pieces of 16 KiB, the later ones marked.
            line(&x(16_384), false),
            line(&x(16_384), true),
            line(&x(7_232), true),
        ]
    );
    assert_eq!(
        stderr,
        [line("to stderr", false), line("second on stderr", false)]
    );
    assert!(boots.iter().all(|b| b == &boots[0] && !b.is_empty()));
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=10).collect::<Vec<u64>>(),
        "one sequence number each"
    );
    let stats = shipping_stats(&run);
    assert!(
        stats.contains("queued=10 delivered=10") && stats.contains("undelivered=0"),
        "{stats}"
    );
}

/// Waits for muster to exit; returns its status and when the exit was seen (to the ms).
fn exit_time(run: &mut Run, limit: Duration) -> (ExitStatus, Instant) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            let at = Instant::now();
            // Let the reader threads take what is left in the pipes.
            std::thread::sleep(Duration::from_millis(50));
            return (status, at);
        }
        assert!(
            Instant::now() < deadline,
            "muster did not exit: {}",
            run.text()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The flush deadline of these tests: `stop_timeout`, well under logship's own cap (3 s).
const FLUSH_BY: Duration = Duration::from_secs(1);
/// Time allowed past that deadline for muster to exit (the supervisor's own stop, the
/// runtime's teardown, a loaded machine).
const EXIT_MARGIN: Duration = Duration::from_millis(300);

/// muster with a 1 s stop deadline and a main service running `script`; returns how long
/// after the service ended muster exited, and the shipper's last words.
fn flush_after_main_ends(dir: &Path, target: u16, extra: &str, script: &str) -> (Duration, String) {
    let cfg = config(
        dir,
        &format!(
            "[supervisor]\nstop_timeout = \"{}ms\"\n[logship]\ntarget = \"127.0.0.1:{target}\"\n{extra}\n[services.app]\nmain = true\ncommand = [\"python3\", \"-c\", '''{script}''']\n",
            FLUSH_BY.as_millis()
        ),
    );
    let mut run = start(&cfg);
    let ended = run.wait_line("ended service=app", LONG);
    let (status, exited) = exit_time(&mut run, LONG);
    assert_eq!(code(status), 0, "{}", run.text());
    (exited - ended, shipping_stats(&run))
}

#[test]
fn with_the_collector_down_muster_exits_by_the_flush_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let down = free_port();
    let (took, stats) = flush_after_main_ends(
        dir.path(),
        down,
        "",
        "for i in range(100): print('line', i)",
    );
    eprintln!(
        "collector down, deadline {FLUSH_BY:?}: exited {took:?} after the main service ended; {stats}"
    );
    assert!(stats.contains("undelivered=100"), "reported: {stats}");
    assert!(
        took >= FLUSH_BY - Duration::from_millis(100),
        "kept trying until the deadline: {took:?}"
    );
    assert!(
        took < FLUSH_BY + EXIT_MARGIN,
        "exited {took:?} after the main service ended"
    );
}

#[test]
fn a_collector_that_stops_reading_does_not_hold_the_exit_past_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    // Connections complete in the kernel's backlog, nothing is ever read: once the socket
    // buffers are full (a few MiB), muster's writes block.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (took, stats) = flush_after_main_ends(
        dir.path(),
        port,
        "protocol = \"tcp\"",
        "import sys\nfor i in range(512): sys.stdout.write('%05d ' % i + 'y' * 16000 + '\\n')\nsys.stdout.flush()\n",
    );
    eprintln!(
        "collector not reading, deadline {FLUSH_BY:?}: exited {took:?} after the main service ended; {stats}"
    );
    assert!(!stats.contains("undelivered=0"), "reported: {stats}");
    assert!(
        took < FLUSH_BY + EXIT_MARGIN,
        "exited {took:?} after the main service ended"
    );
    drop(listener);
}

/// The numbers of the `line N` messages the collector wrote, in the order it wrote them.
fn line_numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.rsplit_once(" line ").and_then(|(_, n)| n.parse().ok()))
        .collect()
}

/// A number in muster's last words on shipping (`queued=`, `dropped=`, …).
fn stat(stats: &str, name: &str) -> u64 {
    stats
        .split(&format!(" {name}="))
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {stats:?}"))
}

/// Writes `n` lines `line I` as fast as it can, says how long that took on stderr, then
/// waits for the file `flag` (at most 60 s).
fn chatty(n: u64, flag: &Path) -> String {
    format!(
        "import os, sys, time\nt = time.time()\nfor i in range(1, {n} + 1): sys.stdout.write('line %d\\n' % i)\nsys.stdout.flush()\nprint('wrote in %.2f s' % (time.time() - t), file=sys.stderr, flush=True)\nend = time.time() + 60\nwhile not os.path.exists('{}') and time.time() < end: time.sleep(0.02)\n",
        flag.display()
    )
}

#[test]
fn a_collector_away_for_long_never_stalls_a_chatty_service_and_the_drops_are_counted() {
    // The default policy, no spool: the oldest lines go while the collector is away.
    let dir = tempfile::tempdir().unwrap();
    let mut rsyslog = Rsyslog::new(&dir.path().join("collector"));
    rsyslog.stop();
    let n = 300_000;
    let flag = dir.path().join("done");
    let cfg = muster_config(dir.path(), rsyslog.relp, "queue = 20000", &chatty(n, &flag));
    let mut run = start(&cfg);
    // The service finishes writing while the collector is still down: under `block` it
    // would wait here until the collector is back (it never is before this line).
    let took = run.wait_line("wrote in", LONG) - run.started;
    assert_eq!(run.count("collector away: log queue full, dropping"), 1);
    // The collector comes back: the queue (the newest 20,000 lines) arrives, the drops are
    // reported once.
    rsyslog.start();
    run.wait_line("collector away: dropped", LONG);
    std::fs::write(&flag, "").unwrap();
    assert_eq!(code(run.wait(LONG)), 0, "{}", run.text());
    rsyslog.stop();
    let stats = shipping_stats(&run);
    let dropped = stat(&stats, "dropped");
    let got = line_numbers(&rsyslog.output());
    eprintln!(
        "collector away: {n} lines written in {took:?}, {dropped} dropped, {} delivered; {stats}",
        got.len()
    );
    assert!(dropped > 0, "{stats}");
    assert_eq!(stat(&stats, "undelivered"), 0, "{stats}");
    let mut unique = got.clone();
    unique.dedup();
    assert_eq!(
        unique,
        (dropped + 1..=n).collect::<Vec<u64>>(),
        "the oldest lines were the ones dropped, the rest arrived in order"
    );
    assert_eq!(run.count("collector away: dropped"), 1, "once per episode");
}

#[test]
fn a_healthy_slow_collector_under_the_default_loses_nothing_the_service_waits() {
    let dir = tempfile::tempdir().unwrap();
    let mut rsyslog = Rsyslog::slow(&dir.path().join("collector"));
    let n = 40_000;
    let flag = dir.path().join("done");
    let cfg = muster_config(dir.path(), rsyslog.relp, "queue = 2000", &chatty(n, &flag));
    let mut run = start(&cfg);
    let took = run.wait_line("wrote in", LONG) - run.started;
    eventually("every line reaches the slow collector", LONG, || {
        line_numbers(&rsyslog.output()).len() as u64 >= n
    });
    std::fs::write(&flag, "").unwrap();
    assert_eq!(code(run.wait(LONG)), 0, "{}", run.text());
    rsyslog.stop();
    let stats = shipping_stats(&run);
    eprintln!(
        "slow collector: {n} lines written in {took:?} (held back by the collector); {stats}"
    );
    assert!(
        run.count("the services' output waits for the collector") >= 1,
        "the queue filled, so back-pressure was what kept the lines: {}",
        run.text()
    );
    assert_eq!(stat(&stats, "dropped"), 0, "{stats}");
    assert_eq!(
        run.count("log collector unavailable"),
        0,
        "it stayed healthy"
    );
    // The lines and the service's "wrote in" on stderr.
    complete(&rsyslog.output(), n + 1);
    let got = line_numbers(&rsyslog.output());
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order, once each");
}

#[test]
fn with_a_spool_a_long_outage_and_a_restart_of_muster_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut rsyslog = Rsyslog::new(&dir.path().join("collector"));
    rsyslog.stop();
    let spool = dir.path().join("spool");
    let n = 60_000;
    // 16 MiB: segments of 2 MiB, so the lines span several.
    let extra = format!(
        "queue = 5000\nspool = \"{}\"\nspool_bytes = 16777216",
        spool.display()
    );
    // First run: the collector is down all along; muster is stopped with SIGTERM.
    let flag = dir.path().join("never");
    let cfg = muster_config(dir.path(), rsyslog.relp, &extra, &chatty(n, &flag));
    let mut run = start(&cfg);
    let took = run.wait_line("wrote in", LONG) - run.started;
    run.signal(libc::SIGTERM);
    run.wait(LONG);
    let first = shipping_stats(&run);
    let segments = std::fs::read_dir(&spool).unwrap().count();
    eprintln!("first run: {n} lines written in {took:?}; {first}; {segments} segment files");
    assert!(segments > 0);
    assert_eq!(stat(&first, "dropped"), 0, "{first}");
    assert_eq!(stat(&first, "undelivered"), 0, "{first}");
    // The lines and the service's "wrote in" on stderr.
    assert_eq!(stat(&first, "spooled"), n + 1, "{first}");
    // Second run, same spool, the collector up: the first run's lines arrive first.
    rsyslog.start();
    let flag = dir.path().join("done");
    let cfg = muster_config(
        dir.path(),
        rsyslog.relp,
        &extra,
        &format!("{}print('line {}', flush=True)\n", wait_for(&flag), n + 1),
    );
    let started = Instant::now();
    let mut run = start(&cfg);
    run.wait_line("lines left by an earlier run are sent first", LONG);
    eventually("the spooled lines arrive", LONG, || {
        line_numbers(&rsyslog.output()).len() as u64 >= n
    });
    let replay = started.elapsed();
    std::fs::write(&flag, "").unwrap();
    assert_eq!(code(run.wait(LONG)), 0, "{}", run.text());
    rsyslog.stop();
    let got = line_numbers(&rsyslog.output());
    let second = shipping_stats(&run);
    eprintln!(
        "second run: {} lines delivered in {replay:?}; {second}",
        got.len()
    );
    assert_eq!(
        got,
        (1..=n + 1).collect::<Vec<u64>>(),
        "every line, in order, once"
    );
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "delivered segments are deleted"
    );
}

/// Python that waits for the file `flag` (at most 60 s).
fn wait_for(flag: &Path) -> String {
    format!(
        "import os, time\nend = time.time() + 60\nwhile not os.path.exists('{}') and time.time() < end: time.sleep(0.02)\n",
        flag.display()
    )
}

#[test]
fn a_spool_directory_that_cannot_be_made_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let port = free_port();
    for (spool, needle) in [
        (file.join("spool"), "logship.spool: cannot create"),
        (file.clone(), "a-file is not a directory"),
    ] {
        let cfg = muster_config(
            dir.path(),
            port,
            &format!("spool = \"{}\"", spool.display()),
            "print('never')",
        );
        let mut check = Run::start(muster(), &["check-config", cfg.to_str().unwrap()]);
        assert_eq!(code(check.wait(LONG)), 64, "{}", check.text());
        let mut run = start(&cfg);
        assert_eq!(code(run.wait(LONG)), 64, "{}", run.text());
        for r in [&check, &run] {
            assert_eq!(r.count(needle), 1, "{}", r.text());
        }
        assert_eq!(run.count("never"), 0, "nothing started");
    }
    // A directory that can be made is made, by check-config too.
    let spool = dir.path().join("new/spool");
    let cfg = muster_config(
        dir.path(),
        port,
        &format!("spool = \"{}\"", spool.display()),
        "print('never')",
    );
    let mut check = Run::start(muster(), &["check-config", cfg.to_str().unwrap()]);
    assert_eq!(code(check.wait(LONG)), 0, "{}", check.text());
    assert!(spool.is_dir());
}

#[test]
fn a_collector_that_stops_answering_is_away_after_ack_timeout_and_the_service_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = Rsyslog::new(&dir.path().join("collector"));
    let (go, done) = (dir.path().join("go"), dir.path().join("done"));
    let n = 200_000;
    // 1,000 lines while the collector is healthy, then (on `go`) 200,000 more as fast as
    // possible while it is frozen.
    let first = format!(
        "import time\nfor i in range(1, 1001): print('line %d' % i)\nsys.stdout.flush()\n{}t = time.time()\n",
        wait_for(&go)
    );
    let script = format!(
        "import sys\n{first}for i in range(1, {n} + 1): sys.stdout.write('line %d\\n' % (1000 + i))\nsys.stdout.flush()\nprint('wrote in %.2f s' % (time.time() - t), file=sys.stderr, flush=True)\n{wait_done}",
        wait_done = wait_for(&done),
    );
    let cfg = muster_config(
        dir.path(),
        rsyslog.relp,
        "queue = 20000\nack_timeout = \"1s\"",
        &script,
    );
    let mut run = start(&cfg);
    eventually("the first lines arrive", LONG, || {
        line_numbers(&rsyslog.output()).len() >= 1000
    });
    rsyslog.signal(libc::SIGSTOP);
    std::fs::write(&go, "").unwrap();
    let line = run.wait_line("wrote in", LONG);
    let wrote = run
        .text()
        .lines()
        .find(|l| l.contains("wrote in"))
        .unwrap_or_default()
        .to_owned();
    run.wait_line("no answer from the collector in 1s", LONG);
    rsyslog.signal(libc::SIGCONT);
    run.wait_line("collector away: dropped", LONG);
    std::fs::write(&done, "").unwrap();
    assert_eq!(code(run.wait(LONG)), 0, "{}", run.text());
    let stats = shipping_stats(&run);
    let dropped = stat(&stats, "dropped");
    eprintln!("collector frozen: {n} lines, service {wrote:?}; {stats}");
    assert!(dropped > 0, "{stats}");
    // The service finished while the collector was still frozen (SIGCONT comes after).
    assert!(line <= run.line_time("collector away: dropped").unwrap());
    assert_eq!(stat(&stats, "undelivered"), 0, "{stats}");
}

#[test]
fn with_a_spool_a_collector_back_in_the_same_run_gets_the_spool_then_the_queue_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut rsyslog = Rsyslog::new(&dir.path().join("collector"));
    rsyslog.stop();
    let spool = dir.path().join("spool");
    let n = 50_000;
    let flag = dir.path().join("done");
    let cfg = muster_config(
        dir.path(),
        rsyslog.relp,
        &format!(
            "queue = 5000\nspool = \"{}\"\nspool_bytes = 8388608",
            spool.display()
        ),
        &chatty(n, &flag),
    );
    let mut run = start(&cfg);
    run.wait_line("wrote in", LONG);
    // "wrote in" comes on stderr: muster may still be reading the last lines of stdout from
    // the pipe. The collector comes back once muster has read them all (they are queued or
    // spooled by then).
    run.wait_line(&format!("] line {n}"), LONG);
    rsyslog.start();
    eventually("every line arrives", LONG, || {
        line_numbers(&rsyslog.output()).len() as u64 >= n
    });
    std::fs::write(&flag, "").unwrap();
    assert_eq!(code(run.wait(LONG)), 0, "{}", run.text());
    rsyslog.stop();
    let stats = shipping_stats(&run);
    eprintln!("spool, collector back in the same run: {stats}");
    assert_eq!(
        line_numbers(&rsyslog.output()),
        (1..=n).collect::<Vec<u64>>(),
        "every line, in order, once"
    );
    assert!(stat(&stats, "spooled") >= n - 5000, "{stats}");
    assert_eq!(stat(&stats, "dropped"), 0, "{stats}");
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);
}

#[test]
fn a_full_spool_drops_its_oldest_lines_counts_them_and_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut rsyslog = Rsyslog::new(&dir.path().join("collector"));
    rsyslog.stop();
    let spool = dir.path().join("spool");
    // About 10 MB of messages for a spool of 1 MiB.
    let n = 100_000;
    let flag = dir.path().join("done");
    let cfg = muster_config(
        dir.path(),
        rsyslog.relp,
        &format!(
            "queue = 5000\nspool = \"{}\"\nspool_bytes = 1048576",
            spool.display()
        ),
        &chatty(n, &flag),
    );
    let mut run = start(&cfg);
    run.wait_line("wrote in", LONG);
    let on_disk: u64 = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    rsyslog.start();
    run.wait_line("collector away: dropped", LONG);
    std::fs::write(&flag, "").unwrap();
    assert_eq!(code(run.wait(LONG)), 0, "{}", run.text());
    rsyslog.stop();
    let stats = shipping_stats(&run);
    let dropped = stat(&stats, "dropped");
    eprintln!("spool of 1 MiB: {on_disk} bytes on disk once the lines were written; {stats}");
    assert!(on_disk <= 1 << 20, "{on_disk}");
    assert_eq!(run.count("log spool full"), 1, "once per episode");
    let got = line_numbers(&rsyslog.output());
    assert_eq!(
        got,
        (dropped + 1..=n).collect::<Vec<u64>>(),
        "the oldest were dropped, the rest arrived in order"
    );
}
