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

use super::episode::{Admit, Backoff, Budget, Drops, Note, Outage};
use super::overflow::{Collector, Overflow, on_full};
use super::relp::{Client, Reply};
use super::spool::{self, Spool};
use super::syslog::{self, Severity};
use crate::config::{LogProtocol, Logship, WhenFull};

/// Longest flush at exit, however much time the stop deadline leaves.
pub const FLUSH_CAP: Duration = Duration::from_secs(3);

/// RELP transactions in flight at once (a sliding window: acknowledgements stream back while
/// sending goes on, which avoids the delayed-ACK stall of lock-step windows).
const WINDOW: usize = 1024;
/// Largest RELP data accepted from the collector.
const MAX_DATA: usize = 128 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A session that was healthy this long resets the reconnect back-off when it ends.
const HEALTHY_SESSION: Duration = Duration::from_secs(1);
/// Why a connection was given up at the end.
const DEADLINE_PASSED: &str = "the stop deadline passed";
/// With a spool, the end of the flush that is kept for writing what is left to it.
const SPOOL_RESERVE: Duration = Duration::from_millis(500);

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
    /// Lines dropped: the queue was full (under `drop-oldest`, or `drop-while-away` with the
    /// collector away), or the spool was (its oldest segments).
    pub dropped: AtomicU64,
    /// Lines written to the disk spool (overflow while the collector was away, and what was
    /// undelivered at exit).
    pub spooled: AtomicU64,
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
    /// Lines and bytes against the bounds, and the full-queue episodes.
    budget: Budget,
    next_seq: u64,
    /// The disk spool, when configured: every line in it is older than every line in
    /// `lines`, so it is sent first.
    spool: Option<Spool>,
    /// A drop episode of the spool (its bound reached) is open: logged once.
    spool_dropping: bool,
    /// Writing the spool failed: logged once.
    spool_failed: bool,
}

/// What the shipping task takes to send: spooled messages (older) first, then lines.
#[derive(Default)]
struct Batch {
    spooled: Vec<(u64, Vec<u8>)>,
    lines: Vec<Entry>,
}

impl Batch {
    fn len(&self) -> usize {
        self.spooled.len() + self.lines.len()
    }
}

impl Queue {
    fn pop(&mut self) -> Option<Entry> {
        let e = self.lines.pop_front()?;
        if let Some(Drops::Ended(dropped)) = self.budget.removed(e.line.text.len()) {
            tracing::info!(dropped, "log queue has room again");
        }
        Some(e)
    }

    /// Puts entries taken earlier back at the front, in their order.
    fn unpop(&mut self, entries: Vec<Entry>) {
        for e in entries.into_iter().rev() {
            self.budget.added(e.line.text.len());
            self.lines.push_front(e);
        }
    }

    /// Drops the oldest line to make room; says so when drops start.
    fn drop_oldest(&mut self, collector: Collector) -> bool {
        let Some(e) = self.lines.pop_front() else {
            return false;
        };
        if self.budget.dropped(e.line.text.len()) == Some(Drops::Started) {
            let (lines, bytes) = self.budget.held();
            if collector == Collector::Away {
                tracing::warn!(
                    lines,
                    bytes,
                    "collector away: log queue full, dropping the oldest lines (counted; the total is logged when it is back)"
                );
            } else {
                tracing::warn!(
                    lines,
                    bytes,
                    "log queue full: dropping the oldest lines (counted) until the collector catches up"
                );
            }
        }
        true
    }

    /// Moves the oldest line to the spool (formatted); returns the lines spooled and
    /// dropped doing it (the spool's bound, or a write that failed), or None when the queue
    /// is empty.
    fn spool_oldest(&mut self, stamp: &Stamp) -> Option<(u64, u64)> {
        let e = self.pop()?;
        let spool = self.spool.as_mut()?;
        match spool.append(&stamp.format(&e)) {
            Ok(0) => Some((1, 0)),
            Ok(dropped) => {
                if !self.spool_dropping {
                    self.spool_dropping = true;
                    tracing::warn!(
                        bytes = spool.bytes(),
                        dropped,
                        "log spool full: dropping its oldest lines (counted; logged once until the collector is back)"
                    );
                }
                Some((1, dropped))
            }
            Err(error) => {
                if !self.spool_failed {
                    self.spool_failed = true;
                    tracing::error!(%error, "cannot write the log spool: dropping lines instead (counted, logged once)");
                }
                Some((0, 1))
            }
        }
    }
}

struct Shared {
    queue: Mutex<Queue>,
    /// Whether the collector is connected and acknowledging (for `drop-while-away`).
    present: AtomicBool,
    /// How lines become messages (the spool holds messages).
    stamp: Stamp,
    /// Signalled when the queue has room again (for `block`).
    room: Condvar,
    /// Wakes the shipping task when lines arrive.
    arrived: Notify,
    when_full: WhenFull,
    counters: Counters,
    /// Set when muster is exiting: a full queue then drops (and counts) instead of blocking,
    /// so the last lines cannot hold the exit up.
    closing: AtomicBool,
}

impl Shared {
    fn new(settings: &Logship, stamp: Stamp, spool: Option<Spool>) -> Shared {
        Shared {
            queue: Mutex::new(Queue {
                lines: VecDeque::new(),
                budget: Budget::new(settings.queue, settings.queue_bytes),
                next_seq: 1,
                spool,
                spool_dropping: false,
                spool_failed: false,
            }),
            present: AtomicBool::new(false),
            stamp,
            room: Condvar::new(),
            arrived: Notify::new(),
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
        while q.budget.admit(line.text.len()) == Admit::Full {
            let collector = if self.present.load(Ordering::Relaxed) {
                Collector::Present
            } else {
                Collector::Away
            };
            let closing = self.closing.load(Ordering::Relaxed);
            match on_full(self.when_full, collector, closing, q.spool.is_some()) {
                Overflow::DropOldest => {
                    if !q.drop_oldest(collector) {
                        break;
                    }
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Overflow::SpoolOldest => {
                    let Some((spooled, dropped)) = q.spool_oldest(&self.stamp) else {
                        break;
                    };
                    let c = &self.counters;
                    c.spooled.fetch_add(spooled, Ordering::Relaxed);
                    c.dropped.fetch_add(dropped, Ordering::Relaxed);
                }
                Overflow::Wait => {
                    if q.budget.blocked() == Some(Drops::Started) {
                        tracing::warn!(
                            "log queue full: the services' output waits for the collector (nothing dropped)"
                        );
                    }
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
        q.budget.added(line.text.len());
        q.lines.push_back(Entry { seq, line });
        drop(q);
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        self.arrived.notify_one();
    }

    /// Takes what `room` allows, the spool's backlog first (it is older); wakes blocked
    /// writers.
    fn take(&self, room: usize) -> Batch {
        let Ok(mut q) = self.queue.lock() else {
            return Batch::default();
        };
        let mut batch = Batch::default();
        if let Some(sp) = q.spool.as_mut() {
            while batch.len() < room && sp.has_backlog() {
                match sp.take(room - batch.len()) {
                    Ok(got) if !got.is_empty() => batch.spooled.extend(got),
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "log spool: cannot read back");
                        break;
                    }
                }
            }
            if sp.has_backlog() {
                return batch;
            }
        }
        let n = (room - batch.len()).min(q.lines.len());
        batch.lines = (0..n).filter_map(|_| q.pop()).collect();
        drop(q);
        if !batch.lines.is_empty() {
            self.room.notify_all();
        }
        batch
    }

    /// Puts what could not be written back at the front, in order.
    fn give_back(&self, batch: Batch) {
        if let Ok(mut q) = self.queue.lock() {
            q.unpop(batch.lines);
            if let Some(sp) = q.spool.as_mut() {
                sp.untake(batch.spooled);
            }
        }
    }

    /// Spooled messages were acknowledged (or written, over TCP): their segments may go.
    fn acked_spooled(&self, keys: impl Iterator<Item = u64>) {
        let Ok(mut q) = self.queue.lock() else {
            return;
        };
        if let Some(sp) = q.spool.as_mut() {
            for key in keys.filter(|k| spool::is_key(*k)) {
                if let Err(error) = sp.acked(key) {
                    tracing::warn!(%error, "log spool: cannot delete a delivered segment");
                }
            }
        }
    }

    /// Lines queued in memory, plus one when the spool has a backlog.
    fn queued(&self) -> usize {
        self.queue.lock().map_or(0, |q| {
            q.lines.len() + usize::from(q.spool.as_ref().is_some_and(Spool::has_backlog))
        })
    }

    fn has_spool(&self) -> bool {
        self.queue.lock().is_ok_and(|q| q.spool.is_some())
    }

    /// Whether the collector is connected and acknowledging; writers waiting for room look
    /// again when it goes away.
    fn set_present(&self, present: bool) {
        if self.present.swap(present, Ordering::Relaxed) && !present {
            self.room.notify_all();
        }
    }

    /// At exit, with a spool: the RELP window's unacknowledged messages (`window`, in order)
    /// and then the memory queue go to the spool, synced. Returns the lines that could not be
    /// kept.
    fn persist(&self, window: Vec<(u64, Vec<u8>)>) -> u64 {
        let Ok(mut guard) = self.queue.lock() else {
            return 0;
        };
        let q = &mut *guard;
        let Some(sp) = q.spool.as_mut() else {
            return 0;
        };
        let fresh = window.iter().filter(|w| !spool::is_key(w.0)).count() as u64;
        let held = window.len() as u64 + q.lines.len() as u64;
        let mut kept = 0;
        let mut dropped = 0;
        let result = sp
            .keep_unacked(window.into_iter().map(|w| w.1).collect())
            .and_then(|()| {
                while let Some(e) = q.lines.pop_front() {
                    dropped += sp.append(&self.stamp.format(&e))?;
                    kept += 1;
                }
                sp.sync()
            });
        let c = &self.counters;
        c.dropped.fetch_add(dropped, Ordering::Relaxed);
        match result {
            Ok(()) => {
                c.spooled.fetch_add(fresh + kept, Ordering::Relaxed);
                tracing::info!(
                    lines = held,
                    bytes = sp.bytes(),
                    "log lines not delivered are kept in the spool for the next run"
                );
                0
            }
            Err(error) => {
                tracing::error!(%error, "cannot write the log spool at exit");
                held.saturating_sub(kept)
            }
        }
    }
}

/// How a queued line becomes an RFC 5424 message.
struct Stamp {
    hostname: String,
    boot: String,
    facility: u8,
}

impl Stamp {
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
                facility: self.facility,
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
    let hostname = settings.hostname.clone().unwrap_or_else(|| host.to_owned());
    let (finish_tx, finish_rx) = oneshot::channel();
    let boot = boot_id();
    tracing::info!(target = %settings.target, boot = %boot, "shipping logs");
    let stamp = Stamp {
        hostname,
        boot,
        facility: settings.facility,
    };
    let shared = Arc::new(Shared::new(&settings, stamp, open_spool(&settings)));
    let task = Task {
        relp: settings.protocol == LogProtocol::Relp,
        settings,
        shared: shared.clone(),
        deadline: Deadline {
            rx: finish_rx,
            at: None,
        },
        client: Client::new(WINDOW, MAX_DATA),
        backoff: Backoff::default(),
        outage: Outage::default(),
        origin: Instant::now(),
        healthy_since: None,
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

/// The spool of `[logship] spool`, if set and it opens (preflight checked that it can);
/// says what an earlier run left in it.
fn open_spool(settings: &Logship) -> Option<Spool> {
    let dir = settings.spool.as_ref()?;
    match Spool::open(dir, settings.spool_bytes) {
        Ok((spool, left)) => {
            if left.segments > 0 {
                tracing::info!(
                    spool = %dir.display(),
                    segments = left.segments,
                    bytes = left.bytes,
                    "log spool: lines left by an earlier run are sent first"
                );
            }
            Some(spool)
        }
        Err(error) => {
            tracing::error!(spool = %dir.display(), %error, "cannot open the log spool: shipping without it");
            None
        }
    }
}

/// A per-boot id: the start time and the pid, in hex.
fn boot_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{:x}", nanos, std::process::id())
}

impl Shipper {
    /// muster is stopping: from now on a full queue drops its oldest line (counted), or
    /// moves it to the spool when there is one, rather than making the services wait.
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
        // With a spool, the task stops flushing early enough to write the rest to it.
        let flush_by = if self.shared.has_spool() {
            let left = by.saturating_duration_since(Instant::now());
            by - SPOOL_RESERVE.min(left / 3)
        } else {
            by
        };
        if let Some(f) = self.finish.take() {
            let _ = f.send(flush_by);
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
            spooled = c.spooled.load(Ordering::Relaxed),
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
    /// An answer owed did not come in time.
    Silent,
}

/// The shipping task.
struct Task {
    settings: Logship,
    relp: bool,
    shared: Arc<Shared>,
    deadline: Deadline,
    /// RELP's window, kept across connections so what was not acknowledged is sent again.
    client: Client,
    /// The pause before the next connection attempt.
    backoff: Backoff,
    /// Whether the collector is away, for one warning and one "back" line per episode.
    outage: Outage,
    /// The origin of the times given to `outage`.
    origin: Instant,
    /// When this session proved healthy (RELP: lines acknowledged, or `open` accepted with
    /// nothing to send; TCP: a batch written).
    healthy_since: Option<Instant>,
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
                    if pending > 0 && self.shared.has_spool() {
                        return self.shared.persist(self.client.take_unacked());
                    }
                    return pending as u64;
                }
            }
            let attempt =
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.settings.target));
            let why = match self.deadline.wake(attempt).await {
                Some(Ok(Ok(stream))) => self.session(stream).await,
                Some(Ok(Err(error))) => format!("cannot connect: {error}"),
                Some(Err(_)) => format!("cannot connect: no answer in {CONNECT_TIMEOUT:?}"),
                // The deadline is known (or passed): see whether the flush is done.
                None => String::new(),
            };
            if !why.is_empty() && why != DEADLINE_PASSED {
                self.failed(&why);
                self.back_off().await;
            }
        }
    }

    /// A connection attempt or a session failed: the first failure of an episode is logged.
    fn failed(&mut self, why: &str) {
        let c = &self.shared.counters;
        let (resent, dropped) = (
            c.resent.load(Ordering::Relaxed),
            c.dropped.load(Ordering::Relaxed),
        );
        if let Some(Note::Away { reason }) =
            self.outage
                .failed(self.origin.elapsed(), why, resent, dropped)
        {
            tracing::warn!(
                target = %self.settings.target,
                %reason,
                unacked = self.client.unacked(),
                queued = self.shared.queued(),
                "log collector unavailable: retrying with back-off (logged once until it is back)"
            );
        } else {
            tracing::debug!(target = %self.settings.target, reason = %why, "log collector still unavailable");
        }
    }

    /// The session proved healthy: an episode, if one was open, ends with one line.
    fn healthy(&mut self) {
        if self.healthy_since.is_some() {
            return;
        }
        self.shared.set_present(true);
        let now = Instant::now();
        self.healthy_since = Some(now);
        let c = &self.shared.counters;
        let (resent, dropped) = (
            c.resent.load(Ordering::Relaxed),
            c.dropped.load(Ordering::Relaxed),
        );
        if let Some(Note::Back {
            failures,
            away,
            resent,
            dropped,
        }) = self.outage.healthy(self.origin.elapsed(), resent, dropped)
        {
            tracing::info!(
                target = %self.settings.target,
                failures,
                away_ms = away.as_millis() as u64,
                resent,
                dropped,
                "log collector back"
            );
            if dropped > 0 {
                let total = c.dropped.load(Ordering::Relaxed);
                tracing::warn!(
                    dropped,
                    total,
                    "collector away: dropped {dropped} lines (the collector is back; {total} dropped in all)"
                );
            }
            if let Ok(mut q) = self.shared.queue.lock() {
                q.spool_dropping = false;
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
        let wait = self.backoff.failed();
        let _ = self.deadline.wake(tokio::time::sleep(wait)).await;
    }

    /// One connection to the collector, until it breaks or the flush is done; returns why it
    /// ended (empty when the flush is done). A session that was healthy long enough resets
    /// the back-off.
    async fn session(&mut self, mut stream: TcpStream) -> String {
        let _ = stream.set_nodelay(true);
        tracing::debug!(target = %self.settings.target, "connected to the collector");
        self.healthy_since = None;
        let resent_before = self.client.resent();
        if self.relp {
            self.client.connected();
        }
        let why = self.exchange(&mut stream).await;
        self.shared.set_present(false);
        if self.relp {
            self.client.disconnected();
            self.shared
                .counters
                .resent
                .fetch_add(self.client.resent() - resent_before, Ordering::Relaxed);
        }
        if self
            .healthy_since
            .is_some_and(|t| t.elapsed() >= HEALTHY_SESSION)
        {
            self.backoff.healthy();
        }
        why
    }

    /// Moves lines to the collector and reads its replies; returns why the connection ends
    /// (empty when the flush is done). An answer owed (to `open`, to a message in flight) that
    /// does not come within `ack_timeout` ends it too.
    async fn exchange(&mut self, stream: &mut TcpStream) -> String {
        // RELP sends lines once the collector accepted `open`; plain TCP at once.
        let mut open = !self.relp;
        let limit = self.settings.ack_timeout;
        // Since when an answer is owed (reset by every answer).
        let mut owed_since: Option<Instant> = None;
        loop {
            if open {
                if let Err(why) = self.send_queued(stream).await {
                    return why;
                }
            }
            let out = self.client.poll_write();
            if !out.is_empty() {
                if let Err(why) = write(&mut self.deadline, stream, &out, limit).await {
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
            owed_since = match (self.client.outstanding(), owed_since) {
                (false, _) => None,
                (true, None) => Some(Instant::now()),
                (true, since) => since,
            };
            let more = open && self.client.unacked() < WINDOW;
            let (buf, arrived) = (&mut self.buf, &self.shared.arrived);
            let event = self.deadline.wake(async {
                let wait = async {
                    tokio::select! {
                        r = stream.read(buf) => Event::Read(r),
                        () = arrived.notified(), if more => Event::Arrived,
                    }
                };
                match owed_since {
                    Some(since) => tokio::time::timeout_at((since + limit).into(), wait)
                        .await
                        .unwrap_or(Event::Silent),
                    None => wait.await,
                }
            });
            match event.await {
                Some(Event::Read(Ok(0))) => return "the collector closed the connection".into(),
                Some(Event::Read(Err(error))) => return error.to_string(),
                Some(Event::Read(Ok(n))) => match self.replies(n, &mut open) {
                    Err(why) => return why,
                    Ok(true) => owed_since = None,
                    Ok(false) => {}
                },
                Some(Event::Silent) => {
                    return format!("no answer from the collector in {limit:?}");
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
            for (key, msg) in batch.spooled {
                self.client.queue(key, msg);
            }
            for e in batch.lines {
                let msg = self.shared.stamp.format(&e);
                self.client.queue(e.seq, msg);
            }
            return Ok(());
        }
        if batch.len() == 0 {
            return Ok(());
        }
        let mut frames = Vec::new();
        for (_, msg) in &batch.spooled {
            syslog::octet_counted(msg, &mut frames);
        }
        for e in &batch.lines {
            syslog::octet_counted(&self.shared.stamp.format(e), &mut frames);
        }
        if let Err(why) = write(
            &mut self.deadline,
            stream,
            &frames,
            self.settings.ack_timeout,
        )
        .await
        {
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
        self.shared
            .acked_spooled(batch.spooled.iter().map(|(key, _)| *key));
        self.healthy();
        Ok(())
    }

    /// Handles the `n` bytes the collector sent (RELP replies); returns whether any answer
    /// was complete.
    fn replies(&mut self, n: usize, open: &mut bool) -> Result<bool, String> {
        if !self.relp {
            return Err("the collector sent data on a plain TCP connection".into());
        }
        let replies = self.client.received(&self.buf[..n]);
        let answered = !replies.is_empty();
        for reply in replies {
            match reply {
                Reply::Opened => {
                    *open = true;
                    // Nothing waits for an acknowledgement: open is all the proof there is.
                    if self.client.unacked() == 0 && self.shared.queued() == 0 {
                        self.healthy();
                    }
                }
                Reply::Acked(ids) => {
                    self.shared
                        .counters
                        .delivered
                        .fetch_add(ids.len() as u64, Ordering::Relaxed);
                    self.shared.acked_spooled(ids.into_iter());
                    self.healthy();
                }
                Reply::Reconnect(why) => return Err(why),
            }
        }
        Ok(answered)
    }
}

/// Writes all of `bytes`, giving up when the deadline passes or after `limit` (a collector
/// that stopped reading).
async fn write(
    deadline: &mut Deadline,
    stream: &mut TcpStream,
    bytes: &[u8],
    limit: Duration,
) -> Result<(), String> {
    let work = tokio::time::timeout(limit, stream.write_all(bytes));
    match deadline.bounded(work).await {
        Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(error))) => Err(error.to_string()),
        Some(Err(_)) => Err(format!("the collector read nothing for {limit:?}")),
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
            ack_timeout: Duration::from_secs(5),
            when_full,
            spool: None,
            spool_bytes: crate::config::DEFAULT_SPOOL_BYTES,
            hostname: Some("web-1".to_owned()),
            facility: 1,
        }
    }

    fn shared(settings: &Logship, spool: Option<Spool>) -> Shared {
        let stamp = Stamp {
            hostname: "web-1".into(),
            boot: "b".into(),
            facility: 1,
        };
        Shared::new(settings, stamp, spool)
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
        let shared = shared(&settings(String::new(), 2, WhenFull::DropOldest), None);
        for text in ["a", "b", "c", "d"] {
            shared.enqueue(line(text));
        }
        let c = &shared.counters;
        assert_eq!(c.queued.load(Ordering::Relaxed), 4);
        assert_eq!(c.dropped.load(Ordering::Relaxed), 2);
        let taken = shared.take(10);
        let seqs: Vec<u64> = taken.lines.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [3, 4], "the newest lines stay, numbered as they came");
        shared.give_back(taken);
        assert_eq!(shared.queued(), 2);
        assert_eq!(c.undelivered(), 2);
    }

    #[test]
    fn drop_while_away_waits_for_a_present_collector_and_drops_once_it_is_away() {
        let shared = Arc::new(shared(
            &settings(String::new(), 2, WhenFull::DropWhileAway),
            None,
        ));
        shared.set_present(true);
        shared.enqueue(line("a"));
        shared.enqueue(line("b"));
        let writer = shared.clone();
        let third = std::thread::spawn(move || writer.enqueue(line("c")));
        std::thread::sleep(Duration::from_millis(200));
        let c = &shared.counters;
        assert_eq!(c.queued.load(Ordering::Relaxed), 2, "the writer waits");
        assert!(!third.is_finished());
        shared.set_present(false);
        third.join().unwrap();
        assert_eq!(c.dropped.load(Ordering::Relaxed), 1, "the oldest went");
        let seqs: Vec<u64> = shared.take(10).lines.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [2, 3]);
    }

    #[test]
    fn with_a_spool_the_oldest_lines_go_to_disk_and_come_back_first_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        let shared = shared(
            &settings(String::new(), 2, WhenFull::DropWhileAway),
            Some(spool),
        );
        for text in ["a", "b", "c", "d", "e"] {
            shared.enqueue(line(text));
        }
        let c = &shared.counters;
        assert_eq!(c.spooled.load(Ordering::Relaxed), 3);
        assert_eq!(c.dropped.load(Ordering::Relaxed), 0);
        let batch = shared.take(2);
        assert_eq!((batch.spooled.len(), batch.lines.len()), (2, 0));
        let batch2 = shared.take(10);
        assert_eq!(batch2.spooled.len(), 1);
        let texts: Vec<String> = batch
            .spooled
            .iter()
            .chain(&batch2.spooled)
            .map(|(_, m)| {
                String::from_utf8_lossy(m)
                    .rsplit(' ')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .chain(
                batch2
                    .lines
                    .iter()
                    .map(|e| String::from_utf8_lossy(&e.line.text).into_owned()),
            )
            .collect();
        assert_eq!(texts, ["a", "b", "c", "d", "e"]);
        shared.acked_spooled(batch.spooled.iter().chain(&batch2.spooled).map(|r| r.0));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
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
