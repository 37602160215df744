//! The shipper: a bounded queue filled through a [`Feed`] (from the supervisor's output sink,
//! by way of `app.rs`), and a tokio task that formats each line as RFC 5424 and sends it to the
//! collector over RELP (or plain TCP with octet counting), reconnecting with back-off and
//! resending whatever was not acknowledged. At shutdown it flushes until a deadline and reports
//! its counters.

// The shipper stamps lines with the wall clock and keeps its flush deadline.
#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};

use super::relp::{Client, Reply};
use super::syslog::{self, Severity};
use crate::config::{LogProtocol, Logship, WhenFull};

/// Longest flush at exit, however much time the stop deadline leaves.
pub const FLUSH_CAP: Duration = Duration::from_secs(3);

/// RELP transactions in flight at once (a sliding window: acknowledgements stream back while
/// sending goes on, which avoids the delayed-ACK stall of lock-step windows).
const WINDOW: usize = 1024;
/// Largest RELP data accepted from the collector.
const MAX_DATA: usize = 128 * 1024;
/// Back-off between connection attempts: from this, doubling, up to `BACKOFF_MAX`.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Why a connection was given up at the end.
const DEADLINE_PASSED: &str = "the stop deadline passed";

/// Which stream of a service a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output: shipped with severity `info`.
    Stdout,
    /// Standard error: shipped with severity `err`.
    Stderr,
}

/// One line of a service's output, as the shipper takes it.
#[derive(Debug, Clone)]
pub struct Line {
    /// The service that wrote it: the APP-NAME.
    pub service: Arc<str>,
    /// The stream it came from: the severity.
    pub stream: Stream,
    /// Whether this piece continues an over-long line that was cut (`cont="1"`).
    pub cont: bool,
    /// The bytes of the line, without its newline (any bytes: they are sent as they are).
    pub text: Vec<u8>,
    /// When it was written: the TIMESTAMP.
    pub time: SystemTime,
}

impl Line {
    /// A line written now.
    pub fn now(service: Arc<str>, stream: Stream, cont: bool, text: Vec<u8>) -> Line {
        Line {
            service,
            stream,
            cont,
            text,
            time: SystemTime::now(),
        }
    }
}

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

impl Counters {
    /// Lines neither delivered nor dropped: those still queued or waiting for an
    /// acknowledgement.
    fn undelivered(&self) -> u64 {
        let queued = self.queued.load(Ordering::Relaxed);
        let gone = self.delivered.load(Ordering::Relaxed) + self.dropped.load(Ordering::Relaxed);
        queued.saturating_sub(gone)
    }
}

struct Entry {
    seq: u64,
    line: Line,
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

    /// Puts entries taken earlier back at the front, in their order.
    fn unpop(&mut self, entries: Vec<Entry>) {
        for e in entries.into_iter().rev() {
            self.bytes += e.line.text.len();
            self.lines.push_front(e);
        }
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
    closing: AtomicBool,
}

impl Shared {
    fn new(settings: &Logship) -> Shared {
        Shared {
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
            closing: AtomicBool::new(false),
        }
    }

    /// Queues a line, applying the full-queue policy.
    fn enqueue(&self, line: Line) {
        let Ok(mut q) = self.queue.lock() else {
            return;
        };
        while !q.lines.is_empty()
            && (q.lines.len() >= self.capacity || q.bytes + line.text.len() > self.capacity_bytes)
        {
            let policy = if self.closing.load(Ordering::Relaxed) {
                WhenFull::DropOldest
            } else {
                self.when_full
            };
            match policy {
                WhenFull::DropOldest => {
                    q.pop();
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
                WhenFull::Block => {
                    // Wait for room; the timeout only re-checks, it never gives up.
                    q = match self.room.wait_timeout(q, Duration::from_millis(500)) {
                        Ok((q, _)) => q,
                        Err(_) => return,
                    };
                }
            }
        }
        let seq = q.next_seq;
        q.next_seq += 1;
        q.bytes += line.text.len();
        q.lines.push_back(Entry { seq, line });
        drop(q);
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        self.arrived.notify_one();
    }

    /// Takes lines while `room` allows; wakes blocked writers.
    fn take(&self, room: usize) -> Vec<Entry> {
        let Ok(mut q) = self.queue.lock() else {
            return Vec::new();
        };
        let n = room.min(q.lines.len());
        let taken: Vec<Entry> = (0..n).filter_map(|_| q.pop()).collect();
        drop(q);
        if !taken.is_empty() {
            self.room.notify_all();
        }
        taken
    }

    /// Puts lines that could not be written back at the front of the queue.
    fn give_back(&self, entries: Vec<Entry>) {
        if let Ok(mut q) = self.queue.lock() {
            q.unpop(entries);
        }
    }

    fn queued(&self) -> usize {
        self.queue.lock().map_or(0, |q| q.lines.len())
    }
}

/// Where lines enter the shipper: cheap to clone and to call from any thread (the
/// supervisor's output sink calls it for every line). A full queue blocks the caller or drops
/// the oldest line, as `[logship] when_full` says, and both are counted.
#[derive(Clone)]
pub struct Feed {
    shared: Arc<Shared>,
}

impl Feed {
    /// Queues a line for the collector.
    pub fn push(&self, line: Line) {
        self.shared.enqueue(line);
    }
}

/// The running shipper.
pub struct Shipper {
    shared: Arc<Shared>,
    finish: Option<oneshot::Sender<Instant>>,
    task: tokio::task::JoinHandle<u64>,
}

/// Starts the shipping task (inside a tokio runtime); returns the feed for the services'
/// lines and the handle that flushes at exit. `host` is the HOSTNAME of every line unless
/// `[logship] hostname` sets one.
pub fn start(settings: Logship, host: &str) -> (Feed, Shipper) {
    let shared = Arc::new(Shared::new(&settings));
    let hostname = settings.hostname.clone().unwrap_or_else(|| host.to_owned());
    let (finish_tx, finish_rx) = oneshot::channel();
    let boot = boot_id();
    tracing::info!(target = %settings.target, boot = %boot, "shipping logs");
    let task = Task {
        relp: settings.protocol == LogProtocol::Relp,
        settings,
        hostname,
        boot,
        shared: shared.clone(),
        deadline: Deadline {
            rx: finish_rx,
            at: None,
        },
        client: Client::new(WINDOW, MAX_DATA),
        backoff: BACKOFF_MIN,
        buf: vec![0u8; 16 * 1024],
    };
    let task = tokio::spawn(task.run());
    let feed = Feed {
        shared: shared.clone(),
    };
    let shipper = Shipper {
        shared,
        finish: Some(finish_tx),
        task,
    };
    (feed, shipper)
}

/// A per-boot id: the start time and the pid, in hex.
fn boot_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{:x}", nanos, std::process::id())
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

    /// Flushes what is queued until `by` or for [`FLUSH_CAP`], whichever comes first, then
    /// stops; logs the counters and returns the number of lines that could not be delivered.
    pub async fn finish(mut self, by: Instant) -> u64 {
        self.closing();
        let by = by.min(Instant::now() + FLUSH_CAP);
        if let Some(f) = self.finish.take() {
            let _ = f.send(by);
        }
        self.shared.arrived.notify_one();
        // The task keeps the deadline itself; this only makes sure of it.
        let undelivered = match tokio::time::timeout_at(by.into(), &mut self.task).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => self.shared.counters.undelivered(),
            Err(_) => {
                self.task.abort();
                self.shared.counters.undelivered()
            }
        };
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

/// The flush deadline, unknown until [`Shipper::finish`] sends it.
struct Deadline {
    rx: oneshot::Receiver<Instant>,
    at: Option<Instant>,
}

impl Deadline {
    /// Whether the deadline is known and has passed.
    fn passed(&self) -> bool {
        self.at.is_some_and(|d| Instant::now() >= d)
    }

    /// Awaits `work`; `None` if the deadline became known meanwhile, or passed.
    async fn wake<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        match self.at {
            Some(at) => tokio::time::timeout_at(at.into(), work).await.ok(),
            None => tokio::select! {
                r = work => Some(r),
                d = &mut self.rx => {
                    self.at = Some(d.unwrap_or_else(|_| Instant::now()));
                    None
                }
            },
        }
    }

    /// Awaits `work`; `None` only if the deadline passed first (learning it does not stop
    /// the work).
    async fn bounded<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        tokio::pin!(work);
        if self.at.is_none() {
            if let Some(r) = self.wake(&mut work).await {
                return Some(r);
            }
        }
        self.wake(work).await
    }
}

/// What a session waits for.
enum Event {
    /// Bytes from the collector (RELP replies), its end, or an error.
    Read(std::io::Result<usize>),
    /// Lines were queued.
    Arrived,
}

/// The shipping task.
struct Task {
    settings: Logship,
    relp: bool,
    hostname: String,
    boot: String,
    shared: Arc<Shared>,
    deadline: Deadline,
    /// RELP's window, kept across connections so what was not acknowledged is sent again.
    client: Client,
    /// The next pause between connection attempts.
    backoff: Duration,
    /// What the collector sends.
    buf: Vec<u8>,
}

impl Task {
    /// Ships until the flush is done or its deadline passed; returns how many lines were
    /// left undelivered.
    async fn run(mut self) -> u64 {
        loop {
            if self.deadline.at.is_some() {
                let pending = self.pending();
                if pending == 0 || self.deadline.passed() {
                    return pending as u64;
                }
            }
            let attempt =
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.settings.target));
            match self.deadline.wake(attempt).await {
                Some(Ok(Ok(stream))) => self.session(stream).await,
                Some(Ok(Err(error))) => {
                    tracing::debug!(target = %self.settings.target, %error, "collector unreachable");
                    self.back_off().await;
                }
                Some(Err(_)) => self.back_off().await,
                // The deadline is known (or passed): see whether the flush is done.
                None => {}
            }
        }
    }

    /// Lines queued or waiting for their acknowledgement.
    fn pending(&self) -> usize {
        self.shared.queued() + self.client.unacked()
    }

    /// Waits before the next connection attempt (not past the deadline), then doubles the
    /// wait for the one after.
    async fn back_off(&mut self) {
        let _ = self.deadline.wake(tokio::time::sleep(self.backoff)).await;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// One connection to the collector, until it breaks or the flush is done.
    async fn session(&mut self, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        tracing::info!(target = %self.settings.target, "connected to the collector");
        let resent_before = self.client.resent();
        if self.relp {
            self.client.connected();
        }
        let why = self.exchange(&mut stream).await;
        if self.relp {
            self.client.disconnected();
            self.shared
                .counters
                .resent
                .fetch_add(self.client.resent() - resent_before, Ordering::Relaxed);
        }
        if !why.is_empty() {
            tracing::warn!(target = %self.settings.target, reason = %why, unacked = self.client.unacked(), "collector connection lost; will resend");
        }
    }

    /// Moves lines to the collector and reads its replies; returns why the connection ends
    /// (empty when the flush is done).
    async fn exchange(&mut self, stream: &mut TcpStream) -> String {
        // RELP sends lines once the collector accepted `open`; plain TCP at once.
        let mut open = !self.relp;
        loop {
            if open {
                if let Err(why) = self.send_queued(stream).await {
                    return why;
                }
            }
            let out = self.client.poll_write();
            if !out.is_empty() {
                if let Err(why) = write(&mut self.deadline, stream, &out).await {
                    return why;
                }
            }
            if self.deadline.at.is_some() {
                if self.pending() == 0 {
                    return String::new();
                }
                if self.deadline.passed() {
                    return DEADLINE_PASSED.to_owned();
                }
            }
            let more = open && self.client.unacked() < WINDOW;
            let (buf, arrived) = (&mut self.buf, &self.shared.arrived);
            let event = self.deadline.wake(async {
                tokio::select! {
                    r = stream.read(buf) => Event::Read(r),
                    () = arrived.notified(), if more => Event::Arrived,
                }
            });
            match event.await {
                Some(Event::Read(Ok(0))) => return "the collector closed the connection".into(),
                Some(Event::Read(Err(error))) => return error.to_string(),
                Some(Event::Read(Ok(n))) => {
                    if let Err(why) = self.replies(n, &mut open) {
                        return why;
                    }
                }
                // Lines arrived, or the deadline became known or passed: go round.
                Some(Event::Arrived) | None => {}
            }
        }
    }

    /// Moves queued lines into the RELP window, or writes them as octet-counted frames (plain
    /// TCP, where a line counts as delivered once written).
    async fn send_queued(&mut self, stream: &mut TcpStream) -> Result<(), String> {
        let room = WINDOW.saturating_sub(self.client.unacked());
        let batch = self.shared.take(room);
        if self.relp {
            for e in batch {
                let msg = self.format(&e);
                self.client.queue(e.seq, msg);
            }
            return Ok(());
        }
        if batch.is_empty() {
            return Ok(());
        }
        let mut frames = Vec::new();
        for e in &batch {
            syslog::octet_counted(&self.format(e), &mut frames);
        }
        if let Err(why) = write(&mut self.deadline, stream, &frames).await {
            // Not written (or not all): queue the batch again, in order. Plain TCP has no
            // acknowledgements, so what the collector had read may arrive twice, and what it
            // read but did not store is lost.
            self.shared.give_back(batch);
            return Err(why);
        }
        self.shared
            .counters
            .delivered
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Handles the `n` bytes the collector sent (RELP replies).
    fn replies(&mut self, n: usize, open: &mut bool) -> Result<(), String> {
        for reply in self.client.received(&self.buf[..n]) {
            match reply {
                Reply::Opened => {
                    *open = true;
                    self.backoff = BACKOFF_MIN;
                }
                Reply::Acked(ids) => {
                    self.shared
                        .counters
                        .delivered
                        .fetch_add(ids.len() as u64, Ordering::Relaxed);
                }
                Reply::Reconnect(why) => return Err(why),
            }
        }
        Ok(())
    }

    /// The RFC 5424 message of a queued line.
    fn format(&self, e: &Entry) -> Vec<u8> {
        let line = &e.line;
        let time = line
            .time
            .duration_since(UNIX_EPOCH)
            .map_or((0, 0), |d| (d.as_secs(), d.subsec_micros()));
        let mut out = Vec::with_capacity(line.text.len() + 128);
        syslog::format(
            &syslog::Line {
                facility: self.settings.facility,
                severity: match line.stream {
                    Stream::Stdout => Severity::Info,
                    Stream::Stderr => Severity::Error,
                },
                time,
                hostname: &self.hostname,
                app: &line.service,
                pid: None,
                boot: &self.boot,
                seq: e.seq,
                cont: line.cont,
                text: &line.text,
            },
            &mut out,
        );
        out
    }
}

/// Writes all of `bytes`, giving up when the deadline passes.
async fn write(
    deadline: &mut Deadline,
    stream: &mut TcpStream,
    bytes: &[u8],
) -> Result<(), String> {
    match deadline.bounded(stream.write_all(bytes)).await {
        Some(Ok(())) => Ok(()),
        Some(Err(error)) => Err(error.to_string()),
        None => Err(DEADLINE_PASSED.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(target: String, queue: usize, when_full: WhenFull) -> Logship {
        Logship {
            target,
            protocol: LogProtocol::Relp,
            queue,
            queue_bytes: 1 << 20,
            when_full,
            hostname: Some("web-1".to_owned()),
            facility: 1,
        }
    }

    fn line(text: &str) -> Line {
        Line::now(
            Arc::from("app"),
            Stream::Stdout,
            false,
            text.as_bytes().to_vec(),
        )
    }

    #[test]
    fn a_full_queue_drops_its_oldest_lines_and_counts_them() {
        let shared = Shared::new(&settings(String::new(), 2, WhenFull::DropOldest));
        for text in ["a", "b", "c", "d"] {
            shared.enqueue(line(text));
        }
        let c = &shared.counters;
        assert_eq!(c.queued.load(Ordering::Relaxed), 4);
        assert_eq!(c.dropped.load(Ordering::Relaxed), 2);
        let taken = shared.take(10);
        let seqs: Vec<u64> = taken.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [3, 4], "the newest lines stay, numbered as they came");
        shared.give_back(taken);
        assert_eq!(shared.queued(), 2);
        assert_eq!(c.undelivered(), 2);
    }

    #[test]
    fn finishing_with_the_collector_down_reports_every_line_undelivered() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let undelivered = runtime.block_on(async {
            let (feed, shipper) = start(
                settings(format!("127.0.0.1:{port}"), 100, WhenFull::Block),
                "web-1",
            );
            let writer = feed.clone();
            std::thread::spawn(move || (0..3).for_each(|i| writer.push(line(&i.to_string()))))
                .join()
                .unwrap();
            feed.push(line("last"));
            shipper
                .finish(Instant::now() + Duration::from_millis(200))
                .await
        });
        assert_eq!(undelivered, 4);
    }
}
