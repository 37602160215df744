//! Helpers shared by the integration tests: run the real `muster` binary, collect its output
//! lines with their arrival times, and wait with deadlines (never a fixed sleep as a check).

#![allow(dead_code, clippy::disallowed_methods, clippy::unwrap_used)]

pub mod forge;
pub mod http;
pub mod lb;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Makes what `cmd` starts the test's own: its own process group (killed whole on drop by
/// the owners here), and SIGKILL when the test's thread ends, so a test that panics or is
/// ended by the runner's timeout leaves nothing running (muster's services then die with
/// muster: it sets the same for them).
pub fn owned(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.process_group(0)
}

/// Kills the process group `pid` leads, if it is still there.
pub fn kill_group(pid: u32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
    }
}

/// Ends a child this test started with [`owned`] and does not hold a `Child` for: its whole
/// group is killed and the child reaped, so what it used (a temporary directory) can go next.
pub fn end(pid: u32) {
    kill_group(pid);
    let mut status = 0;
    // SAFETY: waitpid with a valid pointer to a local int; the pid is this process's child.
    unsafe {
        libc::waitpid(pid as i32, &mut status, 0);
    }
}

/// Path of the binary under test.
pub fn muster() -> &'static str {
    env!("CARGO_BIN_EXE_muster")
}

/// A running muster whose stdout and stderr lines are collected.
pub struct Run {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<(Instant, String)>>>,
    pub started: Instant,
}

impl Run {
    /// Starts `program args` (muster, or a wrapper such as unshare) with output collected.
    pub fn start(program: &str, args: &[&str]) -> Run {
        Self::start_cmd(Command::new(program).args(args))
    }

    pub fn start_cmd(cmd: &mut Command) -> Run {
        let started = Instant::now();
        let mut child = owned(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn muster");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for stream in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("  | {line}");
                    lines.lock().unwrap().push((Instant::now(), line));
                }
            });
        }
        Run {
            child,
            lines,
            started,
        }
    }

    /// Waits for exit; on timeout kills it and fails the test.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Give the reader threads a moment to drain what is left in the pipes.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "muster did not exit within {limit:?}; output:\n{}",
                    self.text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until a line containing `needle` has been seen; returns when it arrived.
    pub fn wait_line(&self, needle: &str, limit: Duration) -> Instant {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(t) = self.line_time(needle) {
                return t;
            }
            if Instant::now() > deadline {
                panic!(
                    "no line containing {needle:?} within {limit:?}; output:\n{}",
                    self.text()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn line_time(&self, needle: &str) -> Option<Instant> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
    }

    pub fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| l.contains(needle))
            .count()
    }

    pub fn times(&self, needle: &str) -> Vec<Instant> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
            .collect()
    }

    pub fn text(&self) -> String {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn signal(&self, sig: i32) {
        signal(self.child.id() as i32, sig);
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            kill_group(self.child.id());
            let _ = self.child.wait();
        }
    }
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

/// Writes a config file into `dir` and returns its path.
pub fn config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("muster.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// The exit code, or 128+signal if the process itself was killed.
pub fn code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Waits until `cond` holds, polling; panics with `what` at the deadline.
pub fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The first child process of `pid` (for `unshare --fork`, that is muster as PID 1).
pub fn first_child(pid: u32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// A port free for both TCP and UDP on 127.0.0.1 (gossip binds both).
pub fn free_port() -> u16 {
    // Never the same port twice in one test process: the kernel may hand a just-released
    // port out again, and two parts of one test (a gossip port and HAProxy's frontend) then
    // collide (seen once: haproxy "cannot bind socket (Address already in use)").
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !given.contains(&port) && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
}

/// A random 32-byte gossip key, base64 as `serf keygen` writes it.
pub fn random_key() -> String {
    use base64::Engine;
    use std::io::Read;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// `key` written to `dir/name` with mode 0600 (what `compose/lab` makes of the lab's key).
pub fn key_file(dir: &Path, name: &str, key: &str) -> PathBuf {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    writeln!(f, "{key}").unwrap();
    path
}

/// Builds every image of the compose lab from source (`images/build.sh`: the static binary,
/// the base image when missing, the images; Docker's cache makes a second run fast).
pub fn build_images() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let build = Command::new(root.join("images/build.sh"))
        .status()
        .expect("run images/build.sh");
    assert!(build.success(), "images/build.sh failed");
}

/// A Docker project or stack name for this checkout: `base`, with `-TAG` when
/// `MUSTER_IMAGE_TAG` names images other than the default `dev` (a second checkout), so two
/// checkouts' labs never share one.
pub fn tagged(base: &str) -> String {
    match std::env::var("MUSTER_IMAGE_TAG")
        .unwrap_or_default()
        .as_str()
    {
        "" | "dev" => base.to_owned(),
        tag => format!("{base}-{tag}"),
    }
}
