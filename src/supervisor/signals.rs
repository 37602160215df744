//! Signal state: what muster inherited (restored in every child before exec, as tini does), and
//! the streams of signals muster handles, registered before the first spawn so that no SIGCHLD
//! can be missed.

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The signal mask and ignored signals muster was started with.
#[derive(Clone, Copy)]
pub struct Inherited {
    mask: libc::sigset_t,
    /// Bit `n` set: signal `n` was ignored (SIG_IGN) when muster started.
    ignored: u64,
}

/// Signals muster forwards to the main service.
pub const FORWARDED: [i32; 5] = [
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGQUIT,
];

impl Inherited {
    /// Records the current state, then clears muster's own mask so it receives what it handles.
    /// Must run before the runtime starts any thread.
    pub fn capture_and_unblock() -> Inherited {
        // SAFETY: plain libc calls on local, initialised storage; single-threaded at this point.
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut mask);
            libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut mask);
            let mut ignored = 0u64;
            for sig in 1..32 {
                // SIGPIPE is set to SIG_IGN by Rust's runtime itself, not by our parent.
                if sig == libc::SIGPIPE || sig == libc::SIGKILL || sig == libc::SIGSTOP {
                    continue;
                }
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                    && old.sa_sigaction == libc::SIG_IGN
                {
                    ignored |= 1 << sig;
                }
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Inherited { mask, ignored }
        }
    }

    /// Puts the inherited mask and ignored signals back. Called in the child between fork and
    /// exec: async-signal-safe calls only.
    pub fn restore_in_child(&self) {
        // SAFETY: sigaction/sigprocmask are async-signal-safe; the structures are valid.
        unsafe {
            for sig in 1..32 {
                if self.ignored & (1 << sig) != 0 {
                    let mut act: libc::sigaction = std::mem::zeroed();
                    act.sa_sigaction = libc::SIG_IGN;
                    libc::sigaction(sig, &act, std::ptr::null_mut());
                }
            }
            libc::sigprocmask(libc::SIG_SETMASK, &self.mask, std::ptr::null_mut());
        }
    }
}

/// The signal streams the driver listens to.
pub struct Streams {
    /// A child changed state.
    pub child: Signal,
    /// Stop requests.
    pub term: Signal,
    /// Stop requests (Ctrl-C).
    pub int: Signal,
    /// Signals forwarded to the main service, with their numbers.
    pub forwarded: Vec<(i32, Signal)>,
}

impl Streams {
    /// Registers every handler. Call before the first spawn.
    pub fn register() -> io::Result<Streams> {
        let mut forwarded = Vec::new();
        for sig in FORWARDED {
            forwarded.push((sig, signal(SignalKind::from_raw(sig))?));
        }
        Ok(Streams {
            child: signal(SignalKind::child())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            forwarded,
        })
    }
}
