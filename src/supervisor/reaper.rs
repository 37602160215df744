//! The reaper: the one place in muster that calls `waitpid`. Every process muster adopts or
//! spawns, services, readiness checks and orphans alike, is collected here, so no other code
//! can steal an exit status. (`tokio::process` would reap its own children by pid on SIGCHLD,
//! racing this `waitpid(-1)`: either side could take the other's status.)

use super::core::{ExitStatus, Pid};

/// Collects every child that has ended, calling `ended` for each. Returns `true` when muster
/// has no child process left at all.
pub fn reap_all(mut ended: impl FnMut(Pid, ExitStatus)) -> bool {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid pointer to a local int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            ended(pid, decode(status));
            continue;
        }
        if pid == 0 {
            return false;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ECHILD) => return true,
            _ => return false,
        }
    }
}

/// Waits for one child. Only for use before the supervisor's loop runs (then nothing else
/// reaps); afterwards every status goes through [`reap_all`].
pub fn wait_for(pid: Pid) -> std::io::Result<ExitStatus> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid pointer to a local int.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(decode(status));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Turns a raw wait status into an exit code or a signal.
pub fn decode(status: i32) -> ExitStatus {
    if libc::WIFSIGNALED(status) {
        ExitStatus::Signal(libc::WTERMSIG(status))
    } else {
        ExitStatus::Code(libc::WEXITSTATUS(status))
    }
}
