//! Children muster runs for itself rather than as services: helper commands (`haproxy -c`)
//! and readiness checks (`ready = { exec = … }`). Each is spawned like a service (own process
//! group, inherited signal state, user switch) and awaited here, while its exit status is
//! collected by the reaper like any other child's, so nothing but `reaper.rs` ever waits for a
//! pid.
//!
//! **Spawn, then register, is safe.** A child may exit before its pid is registered, but it
//! cannot be reaped in between: the reaper runs only in the supervisor's driver, a task on the
//! same current-thread runtime, and `Children::spawn_and_register` does not yield between
//! the fork and the insertion. The driver's next reap finds the pid registered and hands the
//! status to the waiting task instead of the core. Before the driver runs (the first HAProxy
//! config, checked before any service starts), nothing reaps, and the `_before_supervising`
//! variants wait for their child directly.

use std::collections::HashMap;
use std::io::Read;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::core::{ExitStatus, Pid};
use super::reaper;
use super::signals::Inherited;
use super::spawn::{self, Extras, Stdio3};
use crate::config::Service;

/// Runs and awaits muster's own children; cheap to clone (one shared registry).
#[derive(Clone)]
pub struct Children {
    inherited: Inherited,
    waiting: Arc<Mutex<HashMap<Pid, oneshot::Sender<ExitStatus>>>>,
}

/// What a helper command did.
#[derive(Debug)]
pub struct Outcome {
    /// How it ended.
    pub status: ExitStatus,
    /// Its standard output and error, interleaved (at most 64 KiB).
    pub output: String,
}

/// What a piped helper (an event handler) did.
#[derive(Debug)]
pub struct Piped {
    /// How it ended; `None` when it ran past its limit and its process group was killed.
    pub status: Option<ExitStatus>,
    /// Its standard output (the first [`PIPED_KEPT`] bytes; every line also went to `line`).
    pub stdout: Vec<u8>,
}

/// Bytes of a piped helper's standard output kept (Serf keeps 8 KiB of a handler's output).
pub const PIPED_KEPT: usize = 8 * 1024;

/// Called with each line a piped helper writes: `true` for stderr.
pub type LineSink = Arc<dyn Fn(bool, &str) + Send + Sync>;

/// Longest a helper command may run before it is killed.
const LIMIT: Duration = Duration::from_secs(30);

impl Children {
    /// A registry for children spawned with this inherited signal state.
    pub fn new(inherited: Inherited) -> Children {
        Children {
            inherited,
            waiting: Arc::default(),
        }
    }

    /// Hands an exit status to the task awaiting `pid`; gives the status back when nobody
    /// awaits it (a service or an orphan: the core's business). Called by the driver's reaper.
    pub fn deliver(&self, pid: Pid, status: ExitStatus) -> Option<ExitStatus> {
        let waiter = self.waiting.lock().ok().and_then(|mut w| w.remove(&pid));
        match waiter {
            Some(tx) => {
                let _ = tx.send(status);
                None
            }
            None => Some(status),
        }
    }

    /// The pids awaited right now (for a test harness that reaps in the supervisor's stead).
    pub fn awaited(&self) -> Vec<Pid> {
        self.waiting
            .lock()
            .map(|w| w.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Runs `helper.command` as a service with these settings would run (its environment,
    /// working directory and user) while the supervisor is reaping; its output is captured;
    /// it is killed after 30 s.
    pub async fn run_like(&self, helper: &Service) -> std::io::Result<Outcome> {
        let (reader, stdio) = capture()?;
        let (pid, status) = self.spawn_and_register(helper, stdio)?;
        let guard = KillOnDrop(pid);
        let output = tokio::task::spawn_blocking(move || read_all(reader));
        let status = tokio::time::timeout(LIMIT, status)
            .await
            .map_err(|_| {
                std::io::Error::other(format!("{} ran for more than 30 s", helper.command[0]))
            })?
            .map_err(|_| std::io::Error::other("the supervisor stopped"))?;
        // Reaped: the pid may be reused from now on, so it must not be signalled.
        std::mem::forget(guard);
        let output = output.await.unwrap_or_default();
        Ok(Outcome { status, output })
    }

    /// [`Children::run_like`], waited for directly: only before the supervisor starts reaping.
    pub fn run_like_before_supervising(&self, helper: &Service) -> std::io::Result<Outcome> {
        let (reader, stdio) = capture()?;
        let pid = spawn::spawn(helper, stdio, self.extras()).map_err(std::io::Error::other)?;
        let output = read_all(reader);
        let status = reaper::wait_for(pid)?;
        Ok(Outcome { status, output })
    }

    /// Runs `helper` while the supervisor is reaping, with `input` on its stdin, each line of
    /// its stdout and stderr handed to `line`; after `limit` its process group gets SIGKILL
    /// (and is still reaped here).
    pub async fn run_piped(
        &self,
        helper: &Service,
        input: Vec<u8>,
        limit: Duration,
        line: LineSink,
    ) -> std::io::Result<Piped> {
        let (stdin_r, mut stdin_w) = std::io::pipe()?;
        let (out_r, out_w) = std::io::pipe()?;
        let (err_r, err_w) = std::io::pipe()?;
        let stdio = Stdio3 {
            stdin: Stdio::from(stdin_r),
            stdout: Stdio::from(out_w),
            stderr: Stdio::from(err_w),
        };
        let (pid, status) = self.spawn_and_register(helper, stdio)?;
        let guard = KillOnDrop(pid);
        // A handler that never reads its stdin must not hold us: the writer is a thread of
        // its own, ended by the broken pipe at the handler's exit.
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let _ = stdin_w.write_all(&input);
        });
        let sink = line.clone();
        let stdout = tokio::task::spawn_blocking(move || read_lines(out_r, false, &*sink));
        let stderr = tokio::task::spawn_blocking(move || read_lines(err_r, true, &*line));
        let mut status = std::pin::pin!(status);
        let ended = match tokio::time::timeout(limit, &mut status).await {
            Ok(s) => Some(s),
            Err(_) => {
                // Still unreaped: the group may be signalled.
                let _ = spawn::send_signal(pid, true, libc::SIGKILL);
                None
            }
        };
        let killed = ended.is_none();
        let reaped = match ended {
            Some(s) => s,
            None => status.await,
        }
        .map_err(|_| std::io::Error::other("the supervisor stopped"))?;
        std::mem::forget(guard);
        // Output still open after the exit (a process left in the background) is not waited
        // for past a second.
        let kept = tokio::time::timeout(Duration::from_secs(1), stdout).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), stderr).await;
        Ok(Piped {
            status: (!killed).then_some(reaped),
            stdout: kept.ok().and_then(Result::ok).unwrap_or_default(),
        })
    }

    /// Runs `check` with no input or output and waits for its status (a readiness check). If
    /// the awaiting task is dropped (aborted, timed out), the check is killed; the reaper
    /// collects it.
    pub async fn status_of(&self, check: &Service) -> std::io::Result<ExitStatus> {
        let stdio = Stdio3 {
            stdin: Stdio::null(),
            stdout: Stdio::null(),
            stderr: Stdio::null(),
        };
        let (pid, status) = self.spawn_and_register(check, stdio)?;
        let guard = KillOnDrop(pid);
        let status = status.await;
        std::mem::forget(guard);
        status.map_err(|_| std::io::Error::other("the supervisor stopped"))
    }

    /// Spawns and registers the pid before anything can yield (see the module doc).
    fn spawn_and_register(
        &self,
        service: &Service,
        stdio: Stdio3,
    ) -> std::io::Result<(Pid, oneshot::Receiver<ExitStatus>)> {
        let pid = spawn::spawn(service, stdio, self.extras()).map_err(std::io::Error::other)?;
        let (tx, rx) = oneshot::channel();
        match self.waiting.lock() {
            Ok(mut w) => {
                w.insert(pid, tx);
            }
            Err(_) => {
                let _ = spawn::send_signal(pid, true, libc::SIGKILL);
                return Err(std::io::Error::other("the child registry is poisoned"));
            }
        }
        Ok((pid, rx))
    }

    fn extras(&self) -> Extras<'_> {
        Extras {
            inherited: &self.inherited,
            notify: None,
            foreground_tty: false,
        }
    }
}

/// A pipe for a child's stdout and stderr together.
fn capture() -> std::io::Result<(std::io::PipeReader, Stdio3)> {
    let (reader, writer) = std::io::pipe()?;
    let stdio = Stdio3 {
        stdin: Stdio::null(),
        stdout: Stdio::from(writer.try_clone()?),
        stderr: Stdio::from(writer),
    };
    Ok((reader, stdio))
}

/// Kills a child's process group that is still running when dropped; forget it once the
/// child is reaped.
struct KillOnDrop(Pid);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = spawn::send_signal(self.0, true, libc::SIGKILL);
    }
}

/// Reads a child's output to its end (at most 64 KiB are kept).
fn read_all(reader: std::io::PipeReader) -> String {
    let mut buf = Vec::new();
    let _ = reader.take(64 * 1024).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Hands each line of `reader` to `line` (a line is cut at 4 KiB) and keeps the first
/// [`PIPED_KEPT`] bytes.
fn read_lines(
    reader: std::io::PipeReader,
    stderr: bool,
    line: &(dyn Fn(bool, &str) + Send + Sync),
) -> Vec<u8> {
    use std::io::BufRead;
    let mut kept = Vec::new();
    let mut r = std::io::BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut r).take(4096).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return kept,
            Ok(_) => {}
        }
        let room = PIPED_KEPT - kept.len();
        kept.extend_from_slice(&buf[..buf.len().min(room)]);
        let text = String::from_utf8_lossy(&buf);
        line(stderr, text.trim_end_matches(['\n', '\r']));
    }
}
