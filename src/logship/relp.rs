//! RELP, as librelp 1.11 (Debian's rsyslog-relp) speaks it: frames
//! `TXNR SP COMMAND SP DATALEN [SP DATA] LF`, the `open` handshake, `syslog` commands answered
//! by `rsp 200`, `serverclose` as a hint to reconnect.
//!
//! [`FrameReader`] cuts a byte stream into frames: incremental, bounded (a frame larger than
//! its limit is an error, never an allocation), and it never panics. [`Client`] is the sans-IO
//! sender: it numbers transactions, keeps a sliding window of messages in flight, and after a
//! reconnect sends every message that was not acknowledged again, in order (so a collector
//! may see a message twice, never zero times).

use std::collections::VecDeque;

/// TXNR wraps back to 1 after this (0 is reserved for server hints).
pub const TXNR_MAX: u32 = 999_999_999;

/// The offer sent in `open`.
pub const OFFER: &[u8] = b"relp_version=0\nrelp_software=muster\ncommands=syslog";

/// A RELP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Transaction number.
    pub txnr: u32,
    /// Command (`open`, `syslog`, `close`, `rsp`, `serverclose`).
    pub command: String,
    /// Data, possibly empty.
    pub data: Vec<u8>,
}

/// Why a stream could not be read as RELP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelpError {
    /// The header is not `TXNR SP COMMAND SP DATALEN`.
    #[error("malformed RELP frame header")]
    Header,
    /// DATALEN is above the limit.
    #[error("RELP frame of {0} bytes is over the limit")]
    TooLarge(usize),
    /// The frame does not end with LF.
    #[error("RELP frame without its trailing LF")]
    Trailer,
}

/// Appends one frame.
pub fn encode(txnr: u32, command: &str, data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{txnr} {command} {}", data.len()).as_bytes());
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
}

/// Cuts frames out of a byte stream as it arrives.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    max_data: usize,
}

impl FrameReader {
    /// A reader that refuses frames with more than `max_data` bytes of data.
    pub fn new(max_data: usize) -> FrameReader {
        FrameReader {
            buf: Vec::new(),
            max_data,
        }
    }

    /// Adds bytes; returns the frames they complete. After an error the stream is unusable.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Frame>, RelpError> {
        self.buf.extend_from_slice(bytes);
        let mut frames = Vec::new();
        let mut at = 0;
        while let Some((frame, used)) = self.parse(&self.buf[at..])? {
            frames.push(frame);
            at += used;
        }
        self.buf.drain(..at);
        Ok(frames)
    }

    /// One frame from the front of `b`, or `None` when more bytes are needed.
    fn parse(&self, b: &[u8]) -> Result<Option<(Frame, usize)>, RelpError> {
        // Header: three space-separated fields; TXNR has at most 9 digits, a command at most
        // 32 letters, DATALEN at most 9 digits.
        let mut fields = [(0usize, 0usize); 3];
        let mut pos = 0;
        for (i, field) in fields.iter_mut().enumerate() {
            let start = pos;
            let limit = if i == 1 { 32 } else { 9 };
            while pos < b.len() && b[pos] != b' ' && b[pos] != b'\n' {
                pos += 1;
                if pos - start > limit {
                    return Err(RelpError::Header);
                }
            }
            if pos == b.len() {
                return Ok(None);
            }
            if pos == start {
                return Err(RelpError::Header);
            }
            *field = (start, pos);
            // DATALEN may be followed by LF directly (no data).
            if i < 2 && b[pos] != b' ' {
                return Err(RelpError::Header);
            }
            if i < 2 {
                pos += 1;
            }
        }
        let number = |(s, e): (usize, usize)| -> Result<usize, RelpError> {
            let text = &b[s..e];
            if !text.iter().all(u8::is_ascii_digit) {
                return Err(RelpError::Header);
            }
            std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or(RelpError::Header)
        };
        let txnr = number(fields[0])?;
        let command = &b[fields[1].0..fields[1].1];
        if !command.iter().all(u8::is_ascii_alphabetic) {
            return Err(RelpError::Header);
        }
        let len = number(fields[2])?;
        if len > self.max_data {
            return Err(RelpError::TooLarge(len));
        }
        // After DATALEN: LF (no data), or SP DATA LF.
        let data_start = if len == 0 {
            if b[pos] != b'\n' {
                return Err(RelpError::Header);
            }
            return Ok(Some((
                Frame {
                    txnr: txnr as u32,
                    command: String::from_utf8_lossy(command).into_owned(),
                    data: Vec::new(),
                },
                pos + 1,
            )));
        } else {
            if b[pos] != b' ' {
                return Err(RelpError::Header);
            }
            pos + 1
        };
        let end = data_start + len;
        if b.len() <= end {
            return Ok(None);
        }
        if b[end] != b'\n' {
            return Err(RelpError::Trailer);
        }
        Ok(Some((
            Frame {
                txnr: txnr as u32,
                command: String::from_utf8_lossy(command).into_owned(),
                data: b[data_start..end].to_vec(),
            },
            end + 1,
        )))
    }
}

/// What the client learned from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The session is open; messages can flow.
    Opened,
    /// These messages (by the id given to `queue`) were acknowledged.
    Acked(Vec<u64>),
    /// The connection must be dropped and made again (serverclose, a refused open, an
    /// error answer, a frame we cannot read). Nothing is lost: call `disconnected`.
    Reconnect(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Session {
    Closed,
    Opening(u32),
    Open,
}

/// The RELP sender, sans-IO. Feed it bytes read (`received`), take bytes to write
/// (`poll_write`); `connected` and `disconnected` frame each connection.
#[derive(Debug)]
pub struct Client {
    window: usize,
    session: Session,
    next_txnr: u32,
    /// Queued, not yet sent on this connection: (id, message).
    waiting: VecDeque<(u64, Vec<u8>)>,
    /// Sent on this connection, not acknowledged: (txnr, id, message), in sending order.
    in_flight: VecDeque<(u32, u64, Vec<u8>)>,
    out: Vec<u8>,
    reader: FrameReader,
    resent: u64,
}

impl Client {
    /// A client keeping at most `window` messages unacknowledged.
    pub fn new(window: usize, max_data: usize) -> Client {
        Client {
            window: window.max(1),
            session: Session::Closed,
            next_txnr: 1,
            waiting: VecDeque::new(),
            in_flight: VecDeque::new(),
            out: Vec::new(),
            reader: FrameReader::new(max_data),
            resent: 0,
        }
    }

    fn txnr(&mut self) -> u32 {
        let t = self.next_txnr;
        self.next_txnr = if t >= TXNR_MAX { 1 } else { t + 1 };
        t
    }

    /// Queues a message under `id` (the caller's handle to it, returned on acknowledgement).
    pub fn queue(&mut self, id: u64, message: Vec<u8>) {
        self.waiting.push_back((id, message));
        self.fill();
    }

    /// Messages not acknowledged yet (queued or in flight).
    pub fn unacked(&self) -> usize {
        self.waiting.len() + self.in_flight.len()
    }

    /// Whether the server owes an answer: to `open`, or to a message in flight (the shell
    /// times these out).
    pub fn outstanding(&self) -> bool {
        matches!(self.session, Session::Opening(_)) || !self.in_flight.is_empty()
    }

    /// Messages sent again after a reconnect, in all.
    pub fn resent(&self) -> u64 {
        self.resent
    }

    /// A new connection: the session starts with `open`.
    pub fn connected(&mut self) {
        self.out.clear();
        self.reader = FrameReader::new(self.reader.max_data);
        self.next_txnr = 1;
        let t = self.txnr();
        encode(t, "open", OFFER, &mut self.out);
        self.session = Session::Opening(t);
    }

    /// The connection is gone: whatever was in flight goes back to the front of the queue,
    /// in order, to be sent again on the next connection.
    pub fn disconnected(&mut self) {
        self.session = Session::Closed;
        self.out.clear();
        while let Some((_, id, msg)) = self.in_flight.pop_back() {
            self.resent += 1;
            self.waiting.push_front((id, msg));
        }
    }

    /// Ends the connection (as [`Client::disconnected`]) and takes every message not
    /// acknowledged out of the client, in order: at exit, for the disk spool.
    pub fn take_unacked(&mut self) -> Vec<(u64, Vec<u8>)> {
        self.disconnected();
        self.waiting.drain(..).collect()
    }

    /// Bytes to write now (empty when there is nothing).
    pub fn poll_write(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    fn fill(&mut self) {
        if self.session != Session::Open {
            return;
        }
        while self.in_flight.len() < self.window {
            let Some((id, msg)) = self.waiting.pop_front() else {
                break;
            };
            let t = self.txnr();
            encode(t, "syslog", &msg, &mut self.out);
            self.in_flight.push_back((t, id, msg));
        }
    }

    /// Bytes read from the server; says what they meant.
    pub fn received(&mut self, bytes: &[u8]) -> Vec<Reply> {
        let frames = match self.reader.push(bytes) {
            Ok(f) => f,
            Err(e) => return vec![Reply::Reconnect(e.to_string())],
        };
        let mut replies = Vec::new();
        let mut acked = Vec::new();
        for f in frames {
            match (f.command.as_str(), self.session) {
                ("serverclose", _) => {
                    replies.push(Reply::Reconnect("the collector closed the session".into()));
                    break;
                }
                ("rsp", Session::Opening(t)) if f.txnr == t => {
                    if f.data.starts_with(b"200") {
                        self.session = Session::Open;
                        replies.push(Reply::Opened);
                        self.fill();
                    } else {
                        replies.push(Reply::Reconnect(format!(
                            "the collector refused the session: {}",
                            String::from_utf8_lossy(&f.data)
                        )));
                        break;
                    }
                }
                ("rsp", Session::Open) => {
                    let Some(i) = self.in_flight.iter().position(|(t, _, _)| *t == f.txnr) else {
                        replies.push(Reply::Reconnect(format!(
                            "answer to unknown transaction {}",
                            f.txnr
                        )));
                        break;
                    };
                    if !f.data.starts_with(b"200") {
                        replies.push(Reply::Reconnect(format!(
                            "the collector answered {}",
                            String::from_utf8_lossy(&f.data)
                        )));
                        break;
                    }
                    if let Some((_, id, _)) = self.in_flight.remove(i) {
                        acked.push(id);
                    }
                }
                (other, _) => {
                    replies.push(Reply::Reconnect(format!(
                        "unexpected {other:?} from the collector"
                    )));
                    break;
                }
            }
        }
        if !acked.is_empty() {
            replies.insert(0, Reply::Acked(acked));
            self.fill();
        }
        replies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(bytes: &[u8]) -> Vec<Frame> {
        FrameReader::new(1 << 17).push(bytes).unwrap()
    }

    #[test]
    fn rsyslogs_answers_are_read_whole_or_in_pieces() {
        // The exchange recorded against Debian's rsyslog 8.2302 / librelp 1.11.
        let server = b"1 rsp 93 200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog\n2 rsp 6 200 OK\n3 rsp 0\n0 serverclose 0\n";
        let whole = frames(server);
        assert_eq!(whole.len(), 4);
        assert_eq!(whole[1].data, b"200 OK");
        assert_eq!((whole[2].txnr, whole[2].data.len()), (3, 0));
        assert_eq!(whole[3].command, "serverclose");
        let mut r = FrameReader::new(1 << 17);
        let mut piecewise = Vec::new();
        for b in server.iter() {
            piecewise.extend(r.push(&[*b]).unwrap());
        }
        assert_eq!(piecewise, whole);
    }

    #[test]
    fn frames_encode_as_librelp_expects() {
        let mut out = Vec::new();
        encode(2, "syslog", b"<134>1 x", &mut out);
        encode(3, "close", b"", &mut out);
        assert_eq!(out, b"2 syslog 8 <134>1 x\n3 close 0\n");
        let data = b"a\nb ] \x00\xff";
        let mut out = Vec::new();
        encode(7, "syslog", data, &mut out);
        assert_eq!(frames(&out)[0].data, data);
    }

    #[test]
    fn garbage_is_an_error_never_a_panic_or_a_big_allocation() {
        for bad in [
            &b"x rsp 0\n"[..],
            b"1 rsp -1\n",
            b"1  rsp 0\n",
            b"1 rsp 3 abcX",
            b"1234567890 rsp 0\n",
            b"1 r\xffp 0\n",
        ] {
            assert!(FrameReader::new(1 << 17).push(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            FrameReader::new(100).push(b"1 rsp 999999999 "),
            Err(RelpError::TooLarge(999_999_999))
        );
        // Random bytes, fed in random pieces: errors or frames, never a panic.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (rand() % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| b"0123456789 rsp\n200OK"[(rand() % 20) as usize])
                .collect();
            let mut r = FrameReader::new(64);
            let _ = r
                .push(&bytes[..len / 2])
                .and_then(|_| r.push(&bytes[len / 2..]));
        }
    }

    fn ack(t: u32) -> Vec<u8> {
        let mut out = Vec::new();
        encode(t, "rsp", b"200 OK", &mut out);
        out
    }

    fn sent(c: &mut Client) -> Vec<Frame> {
        frames(&c.poll_write())
    }

    #[test]
    fn open_then_a_sliding_window_then_resend_after_a_reconnect() {
        let mut c = Client::new(2, 1 << 17);
        for id in 0..5 {
            c.queue(id, format!("m{id}").into_bytes());
        }
        assert!(c.poll_write().is_empty(), "nothing before a connection");
        c.connected();
        assert!(c.outstanding(), "open awaits its answer");
        let open = sent(&mut c);
        assert_eq!((open[0].txnr, open[0].command.as_str()), (1, "open"));
        assert_eq!(c.received(&ack(1)), [Reply::Opened]);
        let f = sent(&mut c);
        assert_eq!(
            f.iter()
                .map(|f| (f.txnr, f.data.clone()))
                .collect::<Vec<_>>(),
            [(2, b"m0".to_vec()), (3, b"m1".to_vec())],
            "window of two"
        );
        // One ack opens one slot.
        assert!(c.outstanding());
        assert_eq!(c.received(&ack(2)), [Reply::Acked(vec![0])]);
        assert_eq!(sent(&mut c)[0].data, b"m2");
        // The collector restarts: m1 and m2 were never acknowledged.
        assert_eq!(
            c.received(b"0 serverclose 0\n"),
            [Reply::Reconnect("the collector closed the session".into())]
        );
        c.disconnected();
        assert_eq!(c.unacked(), 4);
        c.connected();
        assert_eq!(sent(&mut c)[0].command, "open");
        c.received(&ack(1));
        let again = sent(&mut c);
        assert_eq!(
            again
                .iter()
                .map(|f| (f.txnr, f.data.clone()))
                .collect::<Vec<_>>(),
            [(2, b"m1".to_vec()), (3, b"m2".to_vec())],
            "resent in order, numbered anew"
        );
        assert_eq!(c.resent(), 2);
        let mut acks = ack(2);
        acks.extend(ack(3));
        assert_eq!(c.received(&acks), [Reply::Acked(vec![1, 2])]);
        let rest = sent(&mut c);
        assert_eq!(rest.len(), 2);
        c.received(&ack(4));
        c.received(&ack(5));
        assert_eq!(c.unacked(), 0);
        assert!(!c.outstanding(), "open, nothing in flight: nothing owed");
    }

    #[test]
    fn refusals_and_error_answers_ask_for_a_reconnect() {
        let mut c = Client::new(8, 1 << 17);
        c.connected();
        let mut refuse = Vec::new();
        encode(1, "rsp", b"500 no", &mut refuse);
        assert!(matches!(c.received(&refuse)[..], [Reply::Reconnect(_)]));
        c.disconnected();
        c.connected();
        c.received(&ack(1));
        c.queue(9, b"x".to_vec());
        sent(&mut c);
        let mut err = Vec::new();
        encode(2, "rsp", b"500 full", &mut err);
        assert!(matches!(c.received(&err)[..], [Reply::Reconnect(_)]));
        c.disconnected();
        assert_eq!(c.unacked(), 1, "the refused message is kept");
    }

    #[test]
    fn txnr_wraps_to_one() {
        let mut c = Client::new(4, 1 << 17);
        c.next_txnr = TXNR_MAX;
        assert_eq!(c.txnr(), TXNR_MAX);
        assert_eq!(c.txnr(), 1);
    }
}
