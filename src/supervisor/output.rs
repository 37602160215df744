//! Services' output: muster holds one pipe per stream of each piped service for its whole life
//! (a restarted run writes into the same pipe, so nothing is lost between runs), cuts what
//! arrives into lines, and hands each line to the log sink. The sink is a thread of its own that
//! writes to muster's stdout or stderr, so a slow reader of the container's logs slows the
//! services' pipes (back-pressure) but never the supervisor's event loop.
//!
//! The sink is also the seam for log shipping: a `LogLine` carries everything a forwarder needs.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// Longest line passed on whole; longer ones are cut into pieces of this size.
pub const MAX_LINE: usize = 16 * 1024;

/// How long a line without its newline waits for the rest before it is passed on.
pub const PARTIAL_FLUSH: Duration = Duration::from_millis(200);

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of a service's output, without its newline.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// The service that wrote it.
    pub service: Arc<str>,
    /// Text put before the line when it is written to the container's output.
    pub prefix: Arc<str>,
    /// Whether this piece continues an over-long line cut at `MAX_LINE`.
    pub cont: bool,
    /// The stream it came from.
    pub stream: Stream,
    /// The bytes of the line (any bytes: invalid UTF-8 is passed on as it is).
    pub text: Vec<u8>,
}

/// The pipes muster holds for one piped service.
pub struct ServicePipes {
    /// Write end given to each run as stdout.
    pub stdout: OwnedFd,
    /// Write end given to each run as stderr.
    pub stderr: OwnedFd,
    /// Tell the two relays that a run ended.
    pub run_ended: [mpsc::UnboundedSender<()>; 2],
}

/// Cuts a byte stream into lines. Pure: the relay task feeds it what it reads.
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
    /// The next piece continues a line that was cut.
    continuing: bool,
}

impl LineSplitter {
    /// Adds bytes; returns the complete lines (and pieces of over-long lines) they finish,
    /// each with whether it continues a cut line.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            let (body, complete) = match chunk.last() {
                Some(b'\n') => (&chunk[..chunk.len() - 1], true),
                _ => (chunk, false),
            };
            self.pending.extend_from_slice(body);
            while self.pending.len() > MAX_LINE {
                let rest = self.pending.split_off(MAX_LINE);
                out.push((std::mem::replace(&mut self.pending, rest), self.continuing));
                self.continuing = true;
            }
            if complete {
                out.push((std::mem::take(&mut self.pending), self.continuing));
                self.continuing = false;
            }
        }
        out
    }

    /// Whether a partial line is waiting.
    pub fn has_partial(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Takes the partial line, if any (with whether it continues a cut line).
    pub fn flush(&mut self) -> Option<(Vec<u8>, bool)> {
        let cont = std::mem::take(&mut self.continuing);
        (!self.pending.is_empty()).then(|| (std::mem::take(&mut self.pending), cont))
    }
}

/// A second destination for every line (log shipping), called on the sink's thread after the
/// line was written to the container's output. It may block: that slows the services' pipes,
/// never the supervisor.
pub type Tap = Arc<dyn Fn(LogLine) + Send + Sync>;

/// Where lines go.
#[derive(Clone)]
pub struct Sink {
    tx: mpsc::Sender<LogLine>,
}

impl Sink {
    /// Starts the writer thread; the returned handle ends when every `Sink` clone is dropped.
    pub fn start(tap: Option<Tap>) -> std::io::Result<(Sink, std::thread::JoinHandle<()>)> {
        let (tx, mut rx) = mpsc::channel::<LogLine>(256);
        let handle = std::thread::Builder::new()
            .name("muster-output".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut buf = Vec::with_capacity(1024);
                while let Some(line) = rx.blocking_recv() {
                    buf.clear();
                    buf.extend_from_slice(line.prefix.as_bytes());
                    buf.extend_from_slice(&line.text);
                    buf.push(b'\n');
                    // A closed or broken stdout loses lines; it must not stop the supervisor.
                    let _ = match line.stream {
                        Stream::Stdout => std::io::stdout().lock().write_all(&buf),
                        Stream::Stderr => std::io::stderr().lock().write_all(&buf),
                    };
                    if let Some(tap) = &tap {
                        tap(line);
                    }
                }
                let _ = std::io::stdout().flush();
            })?;
        Ok((Sink { tx }, handle))
    }

    /// Copies one pipe into the sink until its writers are all gone.
    ///
    /// A message on `run_ended` says the run writing into the pipe has ended: what it wrote is
    /// read at once and its partial last line is passed on, so it is not glued to the next run's.
    pub async fn relay(
        self,
        read_end: OwnedFd,
        service: Arc<str>,
        prefix: Arc<str>,
        stream: Stream,
        mut run_ended: mpsc::UnboundedReceiver<()>,
    ) {
        let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end) else {
            tracing::error!("cannot watch an output pipe");
            return;
        };
        let mut splitter = LineSplitter::default();
        let mut buf = vec![0u8; 8192];
        loop {
            let wait_partial = async {
                if splitter.has_partial() {
                    tokio::time::sleep(PARTIAL_FLUSH).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            let read = tokio::select! {
                r = pipe.read(&mut buf) => r,
                Some(()) = run_ended.recv() => {
                    // Everything the run wrote is in the pipe already: take it, then cut.
                    while let Ok(n) = pipe.try_read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        for (text, cont) in splitter.push(&buf[..n]) {
                            self.send(&service, &prefix, stream, text, cont).await;
                        }
                    }
                    if let Some((text, cont)) = splitter.flush() {
                        self.send(&service, &prefix, stream, text, cont).await;
                    }
                    continue;
                }
                () = wait_partial => {
                    if let Some((text, cont)) = splitter.flush() {
                        self.send(&service, &prefix, stream, text, cont).await;
                    }
                    continue;
                }
            };
            match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    for (text, cont) in splitter.push(&buf[..n]) {
                        self.send(&service, &prefix, stream, text, cont).await;
                    }
                }
            }
        }
        if let Some((text, cont)) = splitter.flush() {
            self.send(&service, &prefix, stream, text, cont).await;
        }
    }

    async fn send(
        &self,
        service: &Arc<str>,
        prefix: &Arc<str>,
        stream: Stream,
        text: Vec<u8>,
        cont: bool,
    ) {
        let _ = self
            .tx
            .send(LogLine {
                service: service.clone(),
                prefix: prefix.clone(),
                cont,
                stream,
                text,
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(chunks: &[&[u8]], lines: &[&[u8]], partial: Option<&[u8]>) {
        let mut s = LineSplitter::default();
        let mut got = Vec::new();
        for c in chunks {
            got.extend(s.push(c).into_iter().map(|(l, cont)| {
                assert!(!cont);
                l
            }));
        }
        let want: Vec<Vec<u8>> = lines.iter().map(|l| l.to_vec()).collect();
        assert_eq!(got, want);
        assert_eq!(s.flush().map(|(l, _)| l), partial.map(<[u8]>::to_vec));
    }

    #[test]
    fn lines_are_cut_at_newlines_across_reads() {
        check(&[b"a\nb", b"c\n\nd"], &[b"a", b"bc", b""], Some(b"d"));
        check(&[b"\xff\xfe\n"], &[b"\xff\xfe"], None);
        check(&[], &[], None);
    }

    #[test]
    fn long_lines_are_split() {
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let mut s = LineSplitter::default();
        let mut got = s.push(&long);
        got.extend(s.push(b"\n"));
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0.len(), MAX_LINE);
        assert_eq!(got[2].0.len(), 5);
        let conts: Vec<bool> = got.iter().map(|(_, c)| *c).collect();
        assert_eq!(
            conts,
            [false, true, true],
            "pieces after the first are continuations"
        );
        assert_eq!(s.push(b"next\n"), [(b"next".to_vec(), false)]);
    }
}
