//! A small blocking HTTP/1.1 client with keep-alive and a cookie jar, and a bounded load
//! generator built on it that counts every failed request (an I/O error or a status other
//! than 200), for the HAProxy sync tests.

#![allow(dead_code, clippy::disallowed_methods, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A client with one keep-alive connection and a cookie jar.
pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    pub cookies: BTreeMap<String, String>,
    /// Whether answers' cookies are kept and sent back (a browser); off for the load.
    pub keep_cookies: bool,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            conn: None,
            cookies: BTreeMap::new(),
            keep_cookies: true,
        }
    }

    /// Forgets the open connection (its server went away); cookies are kept.
    pub fn reconnect(&mut self) {
        self.conn = None;
    }

    /// GET `path`; an error is a failed request (no retry, not even on a reused connection).
    pub fn get(&mut self, path: &str) -> Result<Response, String> {
        let result = self.exchange(path);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn exchange(&mut self, path: &str) -> Result<Response, String> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
                .map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.set_nodelay(true).unwrap();
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().unwrap();
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: lb\r\nUser-Agent: muster-test\r\n");
        if !cookie.is_empty() {
            req.push_str(&format!("Cookie: {}\r\n", cookie.join("; ")));
        }
        req.push_str("\r\n");
        conn.get_mut()
            .write_all(req.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let mut line = String::new();
        let n = conn
            .read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before an answer".into());
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            conn.read_line(&mut h).map_err(|e| format!("read: {e}"))?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let mut resp = Response {
            status,
            headers,
            body: String::new(),
        };
        let len: usize = resp
            .header("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        if resp.header("transfer-encoding").is_some() {
            return Err("chunked answers are not supported by this client".into());
        }
        let mut body = vec![0u8; len];
        conn.read_exact(&mut body)
            .map_err(|e| format!("read body: {e}"))?;
        resp.body = String::from_utf8_lossy(&body).into_owned();
        for (k, v) in &resp.headers {
            if self.keep_cookies && k.eq_ignore_ascii_case("set-cookie") {
                if let Some((name, rest)) = v.split_once('=') {
                    let value = rest.split(';').next().unwrap_or("").to_owned();
                    if value.is_empty() {
                        self.cookies.remove(name);
                    } else {
                        self.cookies.insert(name.to_owned(), value);
                    }
                }
            }
        }
        if resp
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        {
            self.conn = None;
        }
        Ok(resp)
    }
}

/// What a load run saw.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub ok: u64,
    pub failed: u64,
    /// The first failures, with the time since the start.
    pub errors: Vec<String>,
    /// Answers per body text (the backends answer with their name).
    pub by_body: BTreeMap<String, u64>,
    /// Answers other than 200, by status (the rest of the failures are connection errors).
    pub statuses: BTreeMap<u16, u64>,
    /// When the first and the last failed request were sent, in seconds since the start.
    pub failing: Option<(f64, f64)>,
}

/// A bounded load: `conns` keep-alive clients without cookies, each pausing `pause` between requests, until
/// stopped, `max_time` has passed or `max_requests` were sent in all.
pub struct Load {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<Stats>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(
        addr: SocketAddr,
        conns: usize,
        pause: Duration,
        max_time: Duration,
        max_requests: u64,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(Stats::default()));
        let started = Instant::now();
        let threads = (0..conns)
            .map(|_| {
                let stop = stop.clone();
                let stats = stats.clone();
                std::thread::spawn(move || {
                    // No cookies: round robin spreads the load over every server.
                    let mut c = Client::new(addr);
                    c.keep_cookies = false;
                    let per = max_requests / conns as u64;
                    for _ in 0..per {
                        if stop.load(Ordering::Relaxed) || started.elapsed() > max_time {
                            break;
                        }
                        let sent = started.elapsed().as_secs_f64();
                        let r = c.get("/");
                        let mut s = stats.lock().unwrap();
                        if !matches!(&r, Ok(r) if r.status == 200) {
                            let (first, last) = s.failing.unwrap_or((sent, sent));
                            s.failing = Some((first.min(sent), last.max(sent)));
                        }
                        match r {
                            Ok(r) if r.status == 200 => {
                                s.ok += 1;
                                *s.by_body.entry(r.body.trim().to_owned()).or_default() += 1;
                            }
                            Ok(r) => {
                                s.failed += 1;
                                *s.statuses.entry(r.status).or_default() += 1;
                                if s.errors.len() < 20 {
                                    let t = started.elapsed().as_secs_f64();
                                    s.errors.push(format!("{t:.3}s: status {}", r.status));
                                }
                            }
                            Err(e) => {
                                s.failed += 1;
                                if s.errors.len() < 20 {
                                    let t = started.elapsed().as_secs_f64();
                                    s.errors.push(format!("{t:.3}s: {e}"));
                                }
                            }
                        }
                        drop(s);
                        std::thread::sleep(pause);
                    }
                })
            })
            .collect();
        Load {
            stop,
            stats,
            threads,
        }
    }

    /// What was seen so far.
    pub fn snapshot(&self) -> Stats {
        self.stats.lock().unwrap().clone()
    }

    pub fn finish(self) -> Stats {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.stats.lock().unwrap().clone()
    }
}
