//! The shipper: a bounded queue filled from the supervisor's output sink (through a `Tap`),
//! and a tokio task that formats each line as RFC 5424 and sends it to the collector over RELP
//! (or plain TCP with octet counting), reconnecting with back-off and resending whatever was
//! not acknowledged. At shutdown it flushes within a deadline and reports its counters.

// The shipper stamps lines with the wall clock.
#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};

use super::relp::{Client, Reply};
use super::syslog::{self, Line, Severity};
use crate::config::{LogProtocol, Logship, WhenFull};
use crate::supervisor::output::{LogLine, Stream, Tap};

/// RELP transactions in flight at once (a sliding window: acknowledgements stream back while
/// sending goes on, which avoids the delayed-ACK stall of lock-step windows).
const WINDOW: usize = 1024;
/// Largest RELP data accepted from the collector.
const MAX_DATA: usize = 128 * 1024;
/// Back-off between connection attempts: from this, doubling, up to `BACKOFF_MAX`.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the shipper did, for the log line at exit and for tests.
#[derive(Debug, Default)]
pub struct Counters {
    /// Lines taken from the services.
    pub queued: AtomicU64,
    /// Lines the collector acknowledged (RELP) or that were written (TCP).
    pub delivered: AtomicU64,
    /// Lines sent again after a reconnect.
    pub resent: AtomicU64,
    /// Lines dropped because the queue was full (`drop-oldest`).
    pub dropped: AtomicU64,
}

struct Entry {
    seq: u64,
    time: (u64, u32),
    line: LogLine,
}

struct Queue {
    lines: VecDeque<Entry>,
    /// Bytes of text in `lines`.
    bytes: usize,
    next_seq: u64,
}

impl Queue {
    fn pop(&mut self) -> Option<Entry> {
        let e = self.lines.pop_front()?;
        self.bytes -= e.line.text.len();
        Some(e)
    }
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when the queue has room again (for `block`).
    room: Condvar,
    /// Wakes the shipping task when lines arrive.
    arrived: Notify,
    capacity: usize,
    capacity_bytes: usize,
    when_full: WhenFull,
    counters: Counters,
    /// Set when muster is exiting: a full queue then drops (and counts) instead of blocking,
    /// so the last lines cannot hold the exit up.
    closing: std::sync::atomic::AtomicBool,
}

/// The running shipper.
pub struct Shipper {
    shared: Arc<Shared>,
    finish: Option<oneshot::Sender<Instant>>,
    task: tokio::task::JoinHandle<u64>,
}

/// Starts the shipping task (inside a tokio runtime) and returns the tap for the output sink.
pub fn start(settings: Logship, hostname: String) -> (Tap, Shipper) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            lines: VecDeque::new(),
            bytes: 0,
            next_seq: 1,
        }),
        room: Condvar::new(),
        arrived: Notify::new(),
        capacity: settings.queue,
        capacity_bytes: settings.queue_bytes,
        when_full: settings.when_full,
        counters: Counters::default(),
        closing: std::sync::atomic::AtomicBool::new(false),
    });
    let tap_shared = shared.clone();
    let tap: Tap = Arc::new(move |line: LogLine| enqueue(&tap_shared, line));
    let (finish_tx, finish_rx) = oneshot::channel();
    let boot = boot_id();
    tracing::info!(target = %settings.target, boot = %boot, "shipping logs");
    let task = tokio::spawn(run(settings, hostname, boot, shared.clone(), finish_rx));
    (
        tap,
        Shipper {
            shared,
            finish: Some(finish_tx),
            task,
        },
    )
}

/// A per-boot id: the start time and the pid, in hex.
fn boot_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{:x}", nanos, std::process::id())
}

fn now_stamp() -> (u64, u32) {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or((0, 0), |d| (d.as_secs(), d.subsec_micros()))
}

/// Runs on the output sink's thread: queue the line, applying the full-queue policy.
fn enqueue(shared: &Shared, line: LogLine) {
    let Ok(mut q) = shared.queue.lock() else {
        return;
    };
    while !q.lines.is_empty()
        && (q.lines.len() >= shared.capacity || q.bytes + line.text.len() > shared.capacity_bytes)
    {
        let policy = if shared.closing.load(Ordering::Relaxed) {
            WhenFull::DropOldest
        } else {
            shared.when_full
        };
        match policy {
            WhenFull::DropOldest => {
                q.pop();
                shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            WhenFull::Block => {
                // Wait for room; the timeout only re-checks, it never gives up.
                q = match shared.room.wait_timeout(q, Duration::from_millis(500)) {
                    Ok((q, _)) => q,
                    Err(_) => return,
                };
            }
        }
    }
    let seq = q.next_seq;
    q.next_seq += 1;
    q.bytes += line.text.len();
    q.lines.push_back(Entry {
        seq,
        time: now_stamp(),
        line,
    });
    drop(q);
    shared.counters.queued.fetch_add(1, Ordering::Relaxed);
    shared.arrived.notify_one();
}

impl Shipper {
    /// muster is stopping: from now on a full queue drops its oldest line (counted) rather
    /// than making the services wait.
    pub fn closing(&self) {
        self.shared.closing.store(true, Ordering::Relaxed);
        self.shared.room.notify_all();
    }

    /// The counters so far.
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Flushes what is queued for at most `budget`, then stops; logs the counters and returns
    /// the number of lines that could not be delivered.
    pub async fn finish(mut self, budget: Duration) -> u64 {
        self.closing();
        if let Some(f) = self.finish.take() {
            let _ = f.send(Instant::now() + budget);
        }
        self.shared.arrived.notify_one();
        let undelivered = (&mut self.task).await.unwrap_or(0);
        let c = &self.shared.counters;
        tracing::info!(
            queued = c.queued.load(Ordering::Relaxed),
            delivered = c.delivered.load(Ordering::Relaxed),
            resent = c.resent.load(Ordering::Relaxed),
            dropped = c.dropped.load(Ordering::Relaxed),
            undelivered,
            "log shipping stopped"
        );
        undelivered
    }
}

fn format_entry(e: &Entry, hostname: &str, boot: &str, facility: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(e.line.text.len() + 128);
    syslog::format(
        &Line {
            facility,
            severity: match e.line.stream {
                Stream::Stdout => Severity::Info,
                Stream::Stderr => Severity::Error,
            },
            time: e.time,
            hostname,
            app: &e.line.service,
            pid: None,
            boot,
            seq: e.seq,
            cont: e.line.cont,
            text: &e.line.text,
        },
        &mut out,
    );
    out
}

/// Takes lines from the shared queue while `room` allows; wakes blocked writers.
fn take(shared: &Shared, room: usize) -> Vec<Entry> {
    let Ok(mut q) = shared.queue.lock() else {
        return Vec::new();
    };
    let n = room.min(q.lines.len());
    let taken: Vec<Entry> = (0..n).filter_map(|_| q.pop()).collect();
    drop(q);
    if !taken.is_empty() {
        shared.room.notify_all();
    }
    taken
}

fn queued(shared: &Shared) -> usize {
    shared.queue.lock().map_or(0, |q| q.lines.len())
}

/// The shipping task; returns how many lines were left undelivered at the deadline.
async fn run(
    settings: Logship,
    hostname: String,
    boot: String,
    shared: Arc<Shared>,
    mut finish: oneshot::Receiver<Instant>,
) -> u64 {
    let mut client = Client::new(WINDOW, MAX_DATA);
    let mut deadline: Option<Instant> = None;
    let mut backoff = BACKOFF_MIN;
    let mut buf = vec![0u8; 16 * 1024];
    let relp = settings.protocol == LogProtocol::Relp;
    loop {
        let pending = queued(&shared) + client.unacked();
        if let Some(d) = deadline {
            if pending == 0 || Instant::now() >= d {
                return pending as u64;
            }
        }
        // Connect (with a deadline if we are finishing).
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&settings.target));
        let stream = tokio::select! {
            r = attempt => match r {
                Ok(Ok(s)) => Some(s),
                Ok(Err(error)) => {
                    tracing::debug!(target = %settings.target, %error, "collector unreachable");
                    None
                }
                Err(_) => None,
            },
            d = &mut finish, if deadline.is_none() => {
                deadline = Some(d.unwrap_or_else(|_| Instant::now()));
                continue;
            }
        };
        let Some(mut stream) = stream else {
            let wait = match deadline {
                Some(d) => backoff.min(d.saturating_duration_since(Instant::now())),
                None => backoff,
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                d = &mut finish, if deadline.is_none() => {
                    deadline = Some(d.unwrap_or_else(|_| Instant::now()));
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            continue;
        };
        let _ = stream.set_nodelay(true);
        tracing::info!(target = %settings.target, "connected to the collector");
        let resent_before = client.resent();
        let mut open = !relp;
        if relp {
            client.connected();
        }
        let why = 'session: loop {
            // Move lines into the window and write what the client produced.
            if open {
                let room = WINDOW.saturating_sub(client.unacked());
                let batch = take(&shared, room);
                if relp {
                    for e in batch {
                        let msg = format_entry(&e, &hostname, &boot, settings.facility);
                        client.queue(e.seq, msg);
                    }
                } else if !batch.is_empty() {
                    let mut frames = Vec::new();
                    for e in &batch {
                        let msg = format_entry(e, &hostname, &boot, settings.facility);
                        syslog::octet_counted(&msg, &mut frames);
                    }
                    if let Err(error) = stream.write_all(&frames).await {
                        // Not written (or not all): queue the batch again, in order. Plain
                        // TCP has no acknowledgements, so what the collector had read may
                        // arrive twice, and what it read but did not store is lost.
                        if let Ok(mut q) = shared.queue.lock() {
                            for e in batch.into_iter().rev() {
                                q.bytes += e.line.text.len();
                                q.lines.push_front(e);
                            }
                        }
                        break 'session error.to_string();
                    }
                    shared
                        .counters
                        .delivered
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
            }
            let out = client.poll_write();
            if !out.is_empty() {
                if let Err(error) = stream.write_all(&out).await {
                    break 'session error.to_string();
                }
            }
            if let Some(d) = deadline {
                if queued(&shared) + client.unacked() == 0 {
                    break 'session String::new();
                }
                if Instant::now() >= d {
                    break 'session "the stop deadline passed".into();
                }
            }
            let until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                r = stream.read(&mut buf) => match r {
                    Ok(0) => break 'session "the collector closed the connection".into(),
                    Err(error) => break 'session error.to_string(),
                    Ok(n) => {
                        for reply in client.received(&buf[..n]) {
                            match reply {
                                Reply::Opened => {
                                    open = true;
                                    backoff = BACKOFF_MIN;
                                }
                                Reply::Acked(ids) => {
                                    shared.counters.delivered.fetch_add(ids.len() as u64, Ordering::Relaxed);
                                }
                                Reply::Reconnect(why) => break 'session why,
                            }
                        }
                    }
                },
                () = shared.arrived.notified(), if open && client.unacked() < WINDOW => {}
                d = &mut finish, if deadline.is_none() => {
                    deadline = Some(d.unwrap_or_else(|_| Instant::now()));
                }
                () = tokio::time::sleep_until(until.into()), if deadline.is_some() => {}
            }
        };
        if relp {
            client.disconnected();
            shared
                .counters
                .resent
                .fetch_add(client.resent() - resent_before, Ordering::Relaxed);
        }
        if !why.is_empty() {
            tracing::warn!(target = %settings.target, reason = %why, unacked = client.unacked(), "collector connection lost; will resend");
        }
    }
}
