//! Short helper commands muster runs for itself (for example `haproxy -c`): spawned like a
//! service, their output captured, their exit status collected by the reaper like any other
//! child's, so nothing else ever waits for a pid.

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use tokio::sync::oneshot;

use super::core::ExitStatus;
use super::ready::{KillOnDrop, Waiters};
use super::reaper;
use super::signals::Inherited;
use super::spawn::{self, Extras, Stdio3};
use crate::config::Service;

/// Runs helper commands; cheap to clone.
#[derive(Clone)]
pub struct Helpers {
    inherited: Inherited,
    waiters: Waiters,
}

/// What a helper command did.
#[derive(Debug)]
pub struct Outcome {
    /// How it ended.
    pub status: ExitStatus,
    /// Its standard output and error, interleaved.
    pub output: String,
}

/// Longest a helper may run before it is killed.
const LIMIT: Duration = Duration::from_secs(30);

impl Helpers {
    /// Helpers whose exit statuses arrive through `waiters` (filled by the supervisor's reaper).
    pub fn new(inherited: Inherited, waiters: Waiters) -> Helpers {
        Helpers { inherited, waiters }
    }

    /// Runs `command` while the supervisor is reaping; kills it after 30 s.
    pub async fn run(&self, command: &[String]) -> std::io::Result<Outcome> {
        self.run_like(&Service::defaults("helper", command.to_vec()))
            .await
    }

    /// Runs `helper.command` as a service would run with these settings (its environment,
    /// working directory and user) while the supervisor is reaping; kills it after 30 s.
    pub async fn run_like(&self, helper: &Service) -> std::io::Result<Outcome> {
        let command = &helper.command;
        let (pid, reader) = self.spawn(helper)?;
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiters.lock() {
            w.insert(pid, tx);
        }
        let guard = KillOnDrop(pid);
        let output = tokio::task::spawn_blocking(move || read_all(reader));
        let status = tokio::time::timeout(LIMIT, rx)
            .await
            .map_err(|_| std::io::Error::other(format!("{} ran for more than 30 s", command[0])))?
            .map_err(|_| std::io::Error::other("the supervisor stopped"))?;
        // Reaped: the pid may be reused from now on, so it must not be signalled.
        std::mem::forget(guard);
        let output = output.await.unwrap_or_default();
        Ok(Outcome { status, output })
    }

    /// Runs `command` and waits for it directly: only before the supervisor starts reaping.
    pub fn run_before_supervising(&self, command: &[String]) -> std::io::Result<Outcome> {
        self.run_like_before_supervising(&Service::defaults("helper", command.to_vec()))
    }

    /// [`Helpers::run_like`], waited for directly: only before the supervisor starts reaping.
    pub fn run_like_before_supervising(&self, helper: &Service) -> std::io::Result<Outcome> {
        let (pid, reader) = self.spawn(helper)?;
        let output = read_all(reader);
        let status = reaper::wait_for(pid)?;
        Ok(Outcome { status, output })
    }

    fn spawn(&self, service: &Service) -> std::io::Result<(i32, std::io::PipeReader)> {
        let (reader, writer) = std::io::pipe()?;
        let stdio = Stdio3 {
            stdin: Stdio::null(),
            stdout: Stdio::from(writer.try_clone()?),
            stderr: Stdio::from(writer),
        };
        let extras = Extras {
            inherited: &self.inherited,
            notify: None,
            foreground_tty: false,
        };
        let pid = spawn::spawn(service, stdio, extras).map_err(std::io::Error::other)?;
        Ok((pid, reader))
    }
}

/// Reads a helper's output to its end (at most 64 KiB are kept).
fn read_all(reader: std::io::PipeReader) -> String {
    let mut buf = Vec::new();
    let _ = reader.take(64 * 1024).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
