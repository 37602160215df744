//! Starting processes: a service's run, or a readiness check. The child gets its own process
//! group, the signal state muster inherited, the service's identity and, for `notify_fd`, the
//! write end of a readiness pipe. Nothing here waits for a child: the reaper does.
//!
//! **A child dies with muster.** Every child is set to receive SIGKILL when muster dies
//! (`PR_SET_PDEATHSIG`), so a muster killed with SIGKILL or crashing outside a container (under
//! systemd, a test runner, `docker run --init`) leaves no service running unsupervised. SIGKILL
//! rather than the service's stop signal: nobody is left to send the kill after a grace, so a
//! service that ignores its stop signal would live on. It is set after the user switch (which
//! clears it), and the child then checks that muster is still its parent, closing the window
//! where muster died between the fork and the `prctl`. It reaches the service's own process
//! (kept across `exec`), not the processes that one starts: those are orphaned and end when
//! their own parent's death reaches them. As PID 1 the kernel does more on its own: when PID 1
//! of a namespace dies, every process in it is killed. The "parent" of a child is the thread
//! that forked it; muster spawns from its runtime's one thread, which lives as long as muster.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use super::core::Pid;
use super::signals::Inherited;
use crate::config::{Credentials, Service};

/// Where a child's standard streams go.
pub struct Stdio3 {
    /// Standard input.
    pub stdin: Stdio,
    /// Standard output.
    pub stdout: Stdio,
    /// Standard error.
    pub stderr: Stdio,
}

/// Why a spawn failed, with the exit code it stands for.
#[derive(Debug, thiserror::Error)]
#[error("cannot run {program:?}: {source}")]
pub struct SpawnError {
    /// The program that could not run.
    pub program: String,
    /// The operating system's reason.
    #[source]
    pub source: io::Error,
}

impl SpawnError {
    /// 127 when the program does not exist, 126 when it exists but cannot be executed (tini).
    pub fn code(&self) -> i32 {
        match self.source.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => 127,
            _ => 126,
        }
    }
}

/// What a spawn needs besides the service itself.
pub struct Extras<'a> {
    /// Signal state restored in the child.
    pub inherited: &'a Inherited,
    /// Write end of the readiness pipe and the fd number it must have in the child.
    pub notify: Option<(&'a OwnedFd, RawFd)>,
    /// Whether the child takes the terminal's foreground (interactive main service).
    pub foreground_tty: bool,
}

/// Starts one run of `service`; returns its pid, which is also its process group id.
pub fn spawn(service: &Service, stdio: Stdio3, extras: Extras<'_>) -> Result<Pid, SpawnError> {
    let program = service.command[0].clone();
    let err = |source| SpawnError {
        program: program.clone(),
        source,
    };
    if let Some(dir) = &service.working_dir {
        if !dir.is_dir() {
            return Err(err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("working_dir {} is not a directory", dir.display()),
            )));
        }
    }
    let mut cmd = Command::new(&service.command[0]);
    cmd.args(&service.command[1..])
        .envs(&service.environment)
        .stdin(stdio.stdin)
        .stdout(stdio.stdout)
        .stderr(stdio.stderr)
        .process_group(0);
    if let Some(dir) = &service.working_dir {
        cmd.current_dir(dir);
    }
    let inherited = *extras.inherited;
    let notify = extras.notify.map(|(fd, target)| (fd.as_raw_fd(), target));
    let user = service.user.clone();
    let tty = extras.foreground_tty;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (tcsetpgrp, sigprocmask, sigaction, dup2, fcntl, setgroups, setgid, setuid, prctl,
    // getppid) on values prepared before the fork.
    unsafe {
        cmd.pre_exec(move || child_setup(&inherited, notify, user.as_ref(), tty, parent));
    }
    let child = cmd.spawn().map_err(err)?;
    // The reaper collects this child; dropping `Child` neither waits nor kills.
    Ok(child.id() as Pid)
}

fn child_setup(
    inherited: &Inherited,
    notify: Option<(RawFd, RawFd)>,
    user: Option<&Credentials>,
    tty: bool,
    parent: libc::pid_t,
) -> io::Result<()> {
    let check = |r: libc::c_int| {
        if r == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: plain syscalls on valid arguments, in the single-threaded child.
    unsafe {
        if tty {
            // Take the terminal's foreground; block SIGTTOU so a background caller is not stopped.
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTTOU);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            libc::tcsetpgrp(0, libc::getpid());
        }
        inherited.restore_in_child();
        if let Some((fd, target)) = notify {
            if fd == target {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                check(libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC))?;
            } else {
                check(libc::dup2(fd, target))?;
            }
        }
        if let Some(u) = user {
            check(libc::setgroups(u.groups.len(), u.groups.as_ptr()))?;
            check(libc::setgid(u.gid))?;
            check(libc::setuid(u.uid))?;
        }
        // After the user switch, which would clear it (see the module doc).
        check(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ))?;
        if libc::getppid() != parent {
            // muster died before the death signal was set: do not run unsupervised.
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}

/// A pipe whose two ends are close-on-exec in muster (std's pipe sets `O_CLOEXEC`).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (reader, writer) = std::io::pipe()?;
    Ok((OwnedFd::from(reader), OwnedFd::from(writer)))
}

/// Sends a signal to a process or to its process group; a process already gone is not an error.
pub fn send_signal(pid: Pid, group: bool, signal: i32) -> io::Result<()> {
    if pid <= 1 {
        return Ok(());
    }
    let target = if group { -pid } else { pid };
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(target, signal) } == -1 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    Ok(())
}

/// Stops muster itself (SIGSTOP) until something sends it SIGCONT.
pub fn stop_self() {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(libc::getpid(), libc::SIGSTOP) };
}

/// Makes `pgid` the foreground process group of the terminal on muster's stdin, when that
/// foreground is muster's own group (a shell's `fg` gave it to muster; after a `bg` muster
/// leaves the terminal alone). Returns whether it did.
pub fn give_foreground(pgid: Pid) -> io::Result<bool> {
    // SAFETY: plain calls on fd 0 and a local signal set. SIGTTOU is blocked meanwhile, so
    // a change of foreground under muster cannot turn the call into a job-control stop.
    unsafe {
        if libc::tcgetpgrp(0) != libc::getpgrp() {
            return Ok(false);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTTOU);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        let r = libc::tcsetpgrp(0, pgid);
        let e = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if r != 0 {
            return Err(e);
        }
    }
    Ok(true)
}
