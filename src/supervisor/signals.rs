//! Signals: what muster inherited (restored in every child before exec, as tini does), and how
//! muster receives every signal it can catch.
//!
//! One handler serves every signal from 1 to 64 but SIGKILL and SIGSTOP (which no process can
//! catch). It is installed before the first spawn, so no SIGCHLD can be missed, and before
//! any thread exists. It does three async-signal-safe things: it counts the signal, notes
//! when it last came, and writes a byte to a pipe that the driver's loop watches. The driver
//! then takes the signals in the order they came ([`Receiver::recv`]).
//!
//! The handler tells a signal sent to muster from one muster caused itself, by the origin the
//! kernel reports (`si_code`, `si_pid`):
//!
//! - sent by another process (`kill(2)`, `sigqueue(3)`, the terminal, the kernel on a hangup or
//!   a window change): counted, for the driver to act on, SIGSEGV and the other fault signals
//!   included;
//! - a real fault in muster (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS from the kernel,
//!   SIGABRT from muster's own `abort()`): handed back to the handler that was there before
//!   (Rust's stack-overflow report) and then to the default action, so muster dies of it as it
//!   would without a handler;
//! - the C library's own use of its reserved signals (glibc's 32 and 33, sent by muster to
//!   itself): handed to the C library's handler;
//! - muster's own SIGPIPE (a write to a closed pipe), SIGXFSZ and SIGXCPU (its own limits):
//!   dropped, as the default disposition muster had would have ignored or acted on muster only.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use tokio::io::unix::AsyncFd;

/// The highest signal number on Linux.
pub const MAX_SIGNAL: i32 = 64;

/// Signals raised by a fault of the program that receives them (when the kernel sends them).
const FAULTS: [i32; 7] = [
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGABRT,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGSEGV,
    libc::SIGSYS,
];

/// Whether muster can catch `sig` at all (the kernel never lets a process catch SIGKILL or
/// SIGSTOP).
pub fn catchable(sig: i32) -> bool {
    (1..=MAX_SIGNAL).contains(&sig) && sig != libc::SIGKILL && sig != libc::SIGSTOP
}

/// The signal mask and ignored signals muster was started with.
#[derive(Clone, Copy)]
pub struct Inherited {
    mask: libc::sigset_t,
    /// Bit `n - 1` set: signal `n` was ignored (SIG_IGN) when muster started.
    ignored: u64,
}

impl Inherited {
    /// Records the current state, then clears muster's own mask so it receives what it handles.
    /// Must run before the runtime starts any thread, and before [`install`].
    pub fn capture_and_unblock() -> Inherited {
        // SAFETY: plain libc calls on local, initialised storage; single-threaded at this point.
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut mask);
            libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut mask);
            let mut ignored = 0u64;
            for sig in 1..=MAX_SIGNAL {
                // SIGPIPE is set to SIG_IGN by Rust's runtime itself, not by our parent. The C
                // library answers EINVAL for its reserved signals (32 and 33 with glibc): they
                // are never recorded as ignored.
                if sig == libc::SIGPIPE || !catchable(sig) {
                    continue;
                }
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                    && old.sa_sigaction == libc::SIG_IGN
                {
                    ignored |= 1 << (sig - 1);
                }
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Inherited { mask, ignored }
        }
    }

    /// Puts the inherited mask and ignored signals back. Called in the child between fork and
    /// exec: async-signal-safe calls only. (exec itself resets muster's handlers to the default.)
    pub fn restore_in_child(&self) {
        // SAFETY: sigaction/sigprocmask are async-signal-safe; the structures are valid.
        unsafe {
            for sig in 1..=MAX_SIGNAL {
                if self.ignored & (1 << (sig - 1)) != 0 {
                    let mut act: libc::sigaction = std::mem::zeroed();
                    act.sa_sigaction = libc::SIG_IGN;
                    libc::sigaction(sig, &act, std::ptr::null_mut());
                }
            }
            libc::sigprocmask(libc::SIG_SETMASK, &self.mask, std::ptr::null_mut());
        }
    }
}

/// How many times each signal came since the driver last looked (index: the signal number).
static COUNT: [AtomicU32; 65] = [const { AtomicU32::new(0) }; 65];
/// When each signal last came, as a sequence number, so the driver takes them in order.
static LAST: [AtomicU64; 65] = [const { AtomicU64::new(0) }; 65];
/// The next sequence number.
static SEQUENCE: AtomicU64 = AtomicU64::new(1);
/// The write end of the wake-up pipe (-1 before [`install`]).
static WAKE: AtomicI32 = AtomicI32::new(-1);
/// muster's own pid, to know the signals it sent itself.
static OWN_PID: AtomicI32 = AtomicI32::new(0);
/// The handler each signal had before muster's (0: SIG_DFL, 1: SIG_IGN), for faults and the
/// C library's reserved signals.
static PREVIOUS: [AtomicUsize; 65] = [const { AtomicUsize::new(0) }; 65];
/// Bit `n - 1` set: the previous handler of signal `n` takes a `siginfo_t` (SA_SIGINFO).
static PREVIOUS_SIGINFO: AtomicU64 = AtomicU64::new(0);
/// Bit `n - 1` set: signal `n` is one the C library keeps for itself (installed with the raw
/// system call because the library's `sigaction` refuses it).
static RESERVED: AtomicU64 = AtomicU64::new(0);

/// Where a signal that reached the handler came from, and so what becomes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Sent to muster: the driver's to act on.
    Sent,
    /// A fault of muster itself: muster dies of it.
    Fault,
    /// The C library signalling its own threads: the library's handler takes it.
    Library,
    /// Caused by muster itself and harmless (its own SIGPIPE): dropped.
    Own,
}

/// Classifies a signal from what the kernel tells of its origin. `me` is muster's pid;
/// `reserved` says whether the C library keeps `sig` for itself.
fn origin(sig: i32, code: i32, pid: i32, me: i32, reserved: bool) -> Origin {
    let by_me = pid == me && matches!(code, libc::SI_USER | libc::SI_QUEUE | libc::SI_TKILL);
    if FAULTS.contains(&sig) && (code > 0 || by_me) {
        // A positive code is the kernel reporting a fault (or SI_KERNEL); from muster itself,
        // an abort().
        return Origin::Fault;
    }
    if reserved && by_me {
        return Origin::Library;
    }
    if by_me || (matches!(sig, libc::SIGXCPU | libc::SIGXFSZ) && code > 0) {
        return Origin::Own;
    }
    Origin::Sent
}

/// The handler of every catchable signal.
extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t with SA_SIGINFO; errno is thread-local.
    unsafe {
        let errno = *libc::__errno_location();
        let (code, pid) = ((*info).si_code, (*info).si_pid());
        let reserved = RESERVED.load(Ordering::Relaxed) & bit(sig) != 0;
        match origin(sig, code, pid, OWN_PID.load(Ordering::Relaxed), reserved) {
            Origin::Sent => note(sig),
            Origin::Fault => die_of(sig, code, info, ctx),
            Origin::Library => call_previous(sig, info, ctx),
            Origin::Own => {}
        }
        *libc::__errno_location() = errno;
    }
}

fn bit(sig: i32) -> u64 {
    if (1..=MAX_SIGNAL).contains(&sig) {
        1 << (sig - 1)
    } else {
        0
    }
}

/// Asks muster to stop as if it received SIGTERM (`serf leave` through the agent RPC): it
/// leaves the cluster, then stops its services, as for `docker stop`.
pub fn request_stop() {
    note(libc::SIGTERM);
}

/// Counts a signal for the driver and wakes it.
fn note(sig: i32) {
    let Ok(i) = usize::try_from(sig) else { return };
    if i >= COUNT.len() {
        return;
    }
    COUNT[i].fetch_add(1, Ordering::Relaxed);
    LAST[i].store(SEQUENCE.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
    let fd = WAKE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write is async-signal-safe; the pipe is non-blocking, and a full pipe
        // already holds a wake-up.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

/// Calls the handler that was in place before muster's, if it was a function.
///
/// # Safety
/// Only from the signal handler, with the kernel's `info` and `ctx`.
unsafe fn call_previous(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Ok(i) = usize::try_from(sig) else { return };
    let previous = PREVIOUS.get(i).map_or(0, |p| p.load(Ordering::Relaxed));
    if previous == libc::SIG_DFL || previous == libc::SIG_IGN {
        return;
    }
    // SAFETY: `previous` was read from sigaction as this signal's handler, with its flags.
    unsafe {
        if PREVIOUS_SIGINFO.load(Ordering::Relaxed) & bit(sig) != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(previous);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(previous);
            f(sig);
        }
    }
}

/// A real fault of muster: the previous handler (Rust's stack-overflow report) runs, then the
/// default action. A hardware fault happens again when the handler returns, now with the
/// default action; SIGTRAP, SIGSYS and a signal muster sent itself are raised again.
///
/// # Safety
/// Only from the signal handler, with the kernel's `info` and `ctx`.
unsafe fn die_of(sig: i32, code: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: async-signal-safe calls (the previous handler is one too), valid structures.
    unsafe {
        call_previous(sig, info, ctx);
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &act, std::ptr::null_mut());
        if code <= 0 || sig == libc::SIGTRAP || sig == libc::SIGSYS {
            libc::raise(sig);
        }
    }
}

/// What [`install`] set up: the read end of the wake-up pipe, for the driver.
pub struct Installed {
    wake: OwnedFd,
    /// Signals that could not be caught after all: taken by something below muster (valgrind
    /// keeps signal 64 for itself).
    pub uncaught: Vec<i32>,
}

/// Installs muster's handler for every catchable signal. Call once, before any thread and
/// any child exist, after [`Inherited::capture_and_unblock`]. Signals that come before the
/// driver runs wait for it (a SIGTERM during start-up stops muster once the driver starts).
pub fn install() -> io::Result<Installed> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 with a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just opened both descriptors; they are owned here.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    OWN_PID.store(std::process::id() as i32, Ordering::Relaxed);
    // The write end stays open for muster's whole life: the handler may run at any time.
    WAKE.store(write.into_raw_fd(), Ordering::Relaxed);
    let mut refused = Vec::new();
    for sig in (1..=MAX_SIGNAL).filter(|&s| catchable(s)) {
        match install_one(sig) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => refused.push(sig),
            Err(e) => return Err(e),
        }
    }
    let mut uncaught = Vec::new();
    for sig in refused {
        if let Err(e) = raw::install(sig) {
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e);
            }
            uncaught.push(sig);
        }
    }
    Ok(Installed {
        wake: read,
        uncaught,
    })
}

/// Installs the handler for one signal through the C library, keeping the previous handler
/// of the fault signals.
fn install_one(sig: i32) -> io::Result<()> {
    // SAFETY: sigaction with valid, zero-initialised structures; `on_signal` has the
    // SA_SIGINFO signature.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_signal as *const () as libc::sighandler_t;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
        libc::sigemptyset(&mut act.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, &act, &mut old) != 0 {
            return Err(io::Error::last_os_error());
        }
        if FAULTS.contains(&sig) {
            keep_previous(sig, old.sa_sigaction, old.sa_flags & libc::SA_SIGINFO != 0);
        }
    }
    Ok(())
}

fn keep_previous(sig: i32, handler: usize, siginfo: bool) {
    if let Some(slot) = usize::try_from(sig).ok().and_then(|i| PREVIOUS.get(i)) {
        slot.store(handler, Ordering::Relaxed);
        if siginfo {
            PREVIOUS_SIGINFO.fetch_or(bit(sig), Ordering::Relaxed);
        }
    }
}

/// The C library's reserved signals (glibc: 32, which nothing catches until a thread is
/// cancelled, so it kills any glibc program; and 33, which glibc catches for `setuid` in
/// threaded programs). Its `sigaction` refuses them, so muster installs its handler with the
/// system call, with the C library's own signal-return trampoline, and hands the library's
/// own uses (sent by muster to itself) to the library's handler.
mod raw {
    use super::*;

    /// The kernel's `struct sigaction` (handler, flags, restorer, mask).
    #[repr(C)]
    #[derive(Default)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }

    /// The flag saying `restorer` is the signal-return trampoline.
    const SA_RESTORER: u64 = 0x0400_0000;

    fn rt_sigaction(
        sig: i32,
        new: Option<&KernelSigaction>,
        old: Option<&mut KernelSigaction>,
    ) -> io::Result<()> {
        let new = new.map_or(std::ptr::null(), |n| n as *const KernelSigaction);
        let old = old.map_or(std::ptr::null_mut(), |o| o as *mut KernelSigaction);
        // SAFETY: the structures have the kernel's layout; 8 is the kernel's sigset size.
        let r = unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, new, old, 8usize) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub(super) fn install(sig: i32) -> io::Result<()> {
        // SIGHUP's action, installed through the C library just before, carries the
        // library's trampoline.
        let mut model = KernelSigaction::default();
        rt_sigaction(libc::SIGHUP, None, Some(&mut model))?;
        let act = KernelSigaction {
            handler: on_signal as *const () as usize,
            flags: (libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK) as u64
                | (model.flags & SA_RESTORER),
            restorer: model.restorer,
            mask: 0,
        };
        let mut old = KernelSigaction::default();
        RESERVED.fetch_or(bit(sig), Ordering::Relaxed);
        if let Err(e) = rt_sigaction(sig, Some(&act), Some(&mut old)) {
            RESERVED.fetch_and(!bit(sig), Ordering::Relaxed);
            return Err(e);
        }
        keep_previous(sig, old.handler, old.flags & libc::SA_SIGINFO as u64 != 0);
        Ok(())
    }
}

/// The signals the driver receives, in a form its loop can await.
pub struct Receiver {
    wake: AsyncFd<OwnedFd>,
}

impl Receiver {
    /// Watches the wake-up pipe; inside the runtime.
    pub fn new(installed: Installed) -> io::Result<Receiver> {
        // SAFETY: the descriptor is owned by the AsyncFd, so it stays open while registered.
        let wake = unsafe { AsyncFd::register(installed.wake) }?;
        Ok(Receiver { wake })
    }

    /// Waits until signals came; returns each in the order of its last arrival, as many times
    /// as it came (the kernel queues every real-time signal; a standard one pending twice
    /// counts once).
    pub async fn recv(&mut self) -> io::Result<Vec<i32>> {
        loop {
            let mut ready = self.wake.readable().await?;
            drain(self.wake.get_ref().as_raw_fd());
            ready.clear_ready();
            let taken = take();
            if !taken.is_empty() {
                return Ok(taken);
            }
        }
    }
}

/// Empties the wake-up pipe (non-blocking).
fn drain(fd: i32) {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: read into a local buffer of the given length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return;
        }
    }
}

/// Takes the counts the handler left: the signals in order of their last arrival.
fn take() -> Vec<i32> {
    let mut came = Vec::new();
    for sig in 1..=MAX_SIGNAL {
        let i = sig as usize;
        let n = COUNT[i].swap(0, Ordering::Relaxed);
        if n > 0 {
            came.push((LAST[i].load(Ordering::Relaxed), sig, n));
        }
    }
    in_order(came)
}

/// `(last arrival, signal, count)` to the list of signals, oldest first.
fn in_order(mut came: Vec<(u64, i32, u32)>) -> Vec<i32> {
    came.sort_unstable();
    came.into_iter()
        .flat_map(|(_, sig, n)| std::iter::repeat_n(sig, n as usize))
        .collect()
}

#[cfg(test)]
// The tests read the clock for their deadlines, and reap their children with the reaper's
// `wait_for` (so clippy does not see the wait).
#[allow(clippy::disallowed_methods, clippy::zombie_processes)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let me = 500;
        let sent = |sig, code, pid| origin(sig, code, pid, me, false);
        // kill(2) from another process, the terminal (SI_KERNEL), a parent namespace (pid 0).
        assert_eq!(sent(libc::SIGSEGV, libc::SI_USER, 42), Origin::Sent);
        assert_eq!(sent(libc::SIGINT, libc::SI_KERNEL, 0), Origin::Sent);
        assert_eq!(sent(libc::SIGHUP, libc::SI_USER, 0), Origin::Sent);
        assert_eq!(sent(40, libc::SI_QUEUE, 42), Origin::Sent);
        // A fault reported by the kernel (SEGV_MAPERR = 1), muster's own abort().
        assert_eq!(sent(libc::SIGSEGV, 1, 0), Origin::Fault);
        assert_eq!(sent(libc::SIGABRT, libc::SI_TKILL, me), Origin::Fault);
        // muster's write to a closed pipe; its own file size limit.
        assert_eq!(sent(libc::SIGPIPE, libc::SI_USER, me), Origin::Own);
        assert_eq!(sent(libc::SIGXCPU, libc::SI_KERNEL, 0), Origin::Own);
        // A child's end is never muster's own.
        assert_eq!(sent(libc::SIGCHLD, 1, 77), Origin::Sent);
        // The C library's own signal to itself, and the same number sent by someone else.
        assert_eq!(origin(33, libc::SI_TKILL, me, me, true), Origin::Library);
        assert_eq!(origin(32, libc::SI_USER, 42, me, true), Origin::Sent);
    }

    #[test]
    fn signals_are_taken_in_the_order_they_came() {
        let came = vec![(7, libc::SIGCONT, 1), (3, libc::SIGTSTP, 1), (5, 40, 3)];
        assert_eq!(
            in_order(came),
            vec![libc::SIGTSTP, 40, 40, 40, libc::SIGCONT]
        );
    }

    /// The child side of `a_real_fault_kills_muster_and_a_sent_one_does_not`: this test run
    /// again as its own process, with muster's handlers installed.
    fn fault_child(mode: &str) -> ! {
        let _installed = install().expect("install");
        match mode {
            "segv" => {
                // SAFETY: not safe at all: this is the fault being tested.
                unsafe { std::ptr::write_volatile(std::ptr::null_mut::<u8>(), 1) };
            }
            "abort" => std::process::abort(),
            _ => {
                // Wait for the parent's SIGSEGV to be counted, then exit 0.
                println!("ready");
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while std::time::Instant::now() < deadline {
                    if COUNT[libc::SIGSEGV as usize].load(Ordering::Relaxed) > 0 {
                        std::process::exit(0);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        }
        std::process::exit(3)
    }

    /// Waits for `child`, killing it after 10 s (a fault handled wrongly loops for ever).
    fn ended(child: &std::process::Child) -> crate::supervisor::core::ExitStatus {
        let pid = child.id() as i32;
        let (done, watch) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if watch
                .recv_timeout(std::time::Duration::from_secs(10))
                .is_err()
            {
                // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
        let status = crate::supervisor::reaper::wait_for(pid).unwrap();
        let _ = done.send(());
        let _ = watchdog.join();
        status
    }

    #[test]
    fn a_real_fault_kills_muster_and_a_sent_one_does_not() {
        use crate::supervisor::core::ExitStatus;
        use std::io::BufRead;
        if let Ok(mode) = std::env::var("MUSTER_FAULT_CHILD") {
            fault_child(&mode);
        }
        let name = "supervisor::signals::tests::a_real_fault_kills_muster_and_a_sent_one_does_not";
        let run = |mode: &str| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--nocapture", "--test-threads=1"])
                .env("MUSTER_FAULT_CHILD", mode)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        };
        for (mode, sig) in [("segv", libc::SIGSEGV), ("abort", libc::SIGABRT)] {
            let status = ended(&run(mode));
            assert_eq!(status, ExitStatus::Signal(sig), "{mode}");
        }
        let mut child = run("sent");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("ready") {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                break;
            }
        }
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as i32, libc::SIGSEGV) };
        assert_eq!(
            ended(&child),
            ExitStatus::Code(0),
            "a sent SIGSEGV is caught"
        );
    }

    #[test]
    fn only_kill_and_stop_are_out_of_reach() {
        let out: Vec<i32> = (0..=65).filter(|&s| !catchable(s)).collect();
        assert_eq!(out, vec![0, libc::SIGKILL, libc::SIGSTOP, 65]);
    }
}
