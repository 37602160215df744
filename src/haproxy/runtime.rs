//! HAProxy's two sockets: the admin stats socket (runtime API, kept open in prompt mode) and
//! the master CLI (one command per connection; `reload` closes it). HAProxy's answers are read
//! here, into typed values: a [`Reply`] to a command that changes a server, server states,
//! sessions and `show proc`; no caller searches HAProxy's text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// How long after a reload connections must reach the new worker.
const PIN: Duration = Duration::from_secs(5);

/// Longest wait for one answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to the admin socket, opened on first use and again after an error.
pub struct Admin {
    path: PathBuf,
    conn: Option<UnixStream>,
    /// The worker connections must reach, until when: right after a reload the old worker may
    /// still accept on the shared socket for a few milliseconds.
    worker: Option<(u32, tokio::time::Instant)>,
}

impl Admin {
    /// A client of the admin socket at `path` (not connected yet).
    pub fn new(path: &Path) -> Admin {
        Admin {
            path: path.to_owned(),
            conn: None,
            worker: None,
        }
    }

    /// For the next few seconds, only talk to the worker with this pid (the one a reload just
    /// started). Later connections take whichever worker answers (HAProxy may have been
    /// restarted since).
    pub fn expect_worker(&mut self, pid: Option<u32>) {
        self.worker = pid.map(|p| (p, tokio::time::Instant::now() + PIN));
        self.conn = None;
    }

    /// Closes the connection (an open CLI session would keep a soft-stopping HAProxy alive
    /// until `stats timeout`); the next command opens a new one.
    pub fn close(&mut self) {
        self.conn = None;
    }

    /// Sends one command and returns HAProxy's answer (trimmed).
    pub async fn command(&mut self, command: &str) -> std::io::Result<String> {
        let result = tokio::time::timeout(ANSWER_TIMEOUT, self.exchange(command)).await;
        match result {
            Ok(Ok(answer)) => {
                if !command.starts_with("show ") {
                    tracing::debug!(command, answer, "haproxy runtime api");
                }
                Ok(answer)
            }
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer to {command:?} within 5 s"),
                ))
            }
        }
    }

    /// Sends a command that changes a server (or a table) and reads HAProxy's reply.
    pub async fn change(&mut self, command: &str) -> Reply {
        match self.command(command).await {
            Ok(answer) => Reply::read(&answer),
            Err(e) => Reply::NoAnswer(e.to_string()),
        }
    }

    /// Whether HAProxy answers (`show info`).
    pub async fn answers(&mut self) -> bool {
        self.command("show info").await.is_ok()
    }

    /// `show servers state`, read.
    pub async fn servers_state(
        &mut self,
    ) -> std::io::Result<BTreeMap<(String, String), ServerState>> {
        Ok(parse_servers_state(&self.servers_state_text().await?))
    }

    /// `show servers state` as HAProxy writes it (the `server-state-file` format).
    pub async fn servers_state_text(&mut self) -> std::io::Result<String> {
        self.command("show servers state").await
    }

    /// The current sessions of every server (`show stat`).
    pub async fn sessions(&mut self) -> std::io::Result<BTreeMap<(String, String), u64>> {
        Ok(parse_sessions(&self.command("show stat").await?))
    }

    async fn exchange(&mut self, command: &str) -> std::io::Result<String> {
        let mut attempts = 0;
        while self.conn.is_none() {
            let mut s = UnixStream::connect(&self.path).await?;
            s.write_all(b"prompt\n").await?;
            read_prompt(&mut s).await?;
            if self
                .worker
                .is_some_and(|(_, until)| tokio::time::Instant::now() > until)
            {
                self.worker = None;
            }
            if let Some((want, _)) = self.worker {
                s.write_all(b"show info\n").await?;
                let info = read_prompt(&mut s).await?;
                let pid = info
                    .lines()
                    .find_map(|l| l.strip_prefix("Pid: "))
                    .and_then(|p| p.trim().parse::<u32>().ok());
                if pid != Some(want) {
                    attempts += 1;
                    if attempts > 200 {
                        return Err(std::io::Error::other(format!(
                            "the admin socket keeps reaching worker {pid:?}, not {want}"
                        )));
                    }
                    // The old worker is still accepting: it stops within milliseconds.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            }
            self.conn = Some(s);
        }
        let Some(s) = self.conn.as_mut() else {
            return Err(std::io::Error::other("not connected"));
        };
        s.write_all(command.as_bytes()).await?;
        s.write_all(b"\n").await?;
        read_prompt(s).await
    }
}

/// Reads up to the next prompt (`"\n> "`); returns what came before it.
async fn read_prompt(s: &mut UnixStream) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "haproxy closed the admin socket",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.ends_with(b"\n> ") {
            buf.truncate(buf.len() - 3);
            return Ok(String::from_utf8_lossy(&buf).trim().to_owned());
        }
    }
}

/// Sends one command to the master CLI and reads the answer until HAProxy closes.
pub async fn master(path: &Path, command: &str) -> std::io::Result<String> {
    let exchange = async {
        let mut s = UnixStream::connect(path).await?;
        s.write_all(command.as_bytes()).await?;
        s.write_all(b"\n").await?;
        // The master answers and closes only once our side is shut for writing.
        s.shutdown().await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    };
    tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::other(
                "the master CLI did not answer in 5 s",
            ))
        })
}

/// The master's `show proc`, read.
pub async fn procs(path: &Path) -> std::io::Result<Procs> {
    Ok(parse_procs(&master(path, "show proc").await?))
}

/// What HAProxy answered to a runtime command that changes a server, read in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Done: an empty answer, `New server registered.`, `Server deleted.`, a changed address
    /// (`IP changed from …`) or one that needed no change (`no need to change …`).
    Done,
    /// `add server` on a name the backend still holds (`Already exists a server with the same
    /// name in backend.`).
    Exists,
    /// `add server` with an `id` another server holds (`'id' : custom id N already used at …
    /// ('server NAME').`): the server named. HAProxy checks the id before the name, so a
    /// server that is still there under its own id answers this, naming itself.
    IdTaken {
        /// The server holding the id.
        by: String,
    },
    /// `No such server.` (or backend): it is gone already.
    NoSuchServer,
    /// `del server` on a server still in use: `Server still has connections attached to it,
    /// cannot remove it.`
    InUse,
    /// `del server` on a server not in maintenance: `Only servers in maintenance mode can be
    /// deleted.`
    NotInMaint,
    /// `enable health` on a server without a check: `Health check was not configured on this
    /// server, cannot enable.`
    NoCheck,
    /// Anything else: HAProxy refused, for this reason (its answer).
    Refused(String),
    /// HAProxy did not answer (the socket is gone, or 5 s passed): why. Nothing is known of
    /// what happened to the server.
    NoAnswer(String),
}

impl Reply {
    /// Reads an answer (as [`Admin::command`] returns it, trimmed).
    pub fn read(answer: &str) -> Reply {
        let a = answer.trim();
        if a.is_empty()
            || a.starts_with("New server registered")
            || a.starts_with("Server deleted")
            || a.starts_with("no need to change")
            || a.starts_with("IP changed from")
            || a.starts_with("port changed from")
            || a.starts_with("Health check enabled")
        {
            return Reply::Done;
        }
        if a.starts_with("Already exists a server") {
            return Reply::Exists;
        }
        if a.starts_with("'id' : custom id") && a.contains(" already used ") {
            if let Some(by) = a
                .rsplit_once("('server ")
                .and_then(|(_, rest)| rest.strip_suffix("').").or(rest.strip_suffix("')")))
            {
                return Reply::IdTaken { by: by.to_owned() };
            }
        }
        if a.starts_with("No such server") || a.starts_with("No such backend") {
            return Reply::NoSuchServer;
        }
        if a.starts_with("Server still has connections attached") {
            return Reply::InUse;
        }
        if a.starts_with("Only servers in maintenance mode can be deleted") {
            return Reply::NotInMaint;
        }
        if a.starts_with("Health check was not configured") {
            return Reply::NoCheck;
        }
        Reply::Refused(a.to_owned())
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Done => f.write_str("done"),
            Reply::Exists => f.write_str("the server exists already"),
            Reply::IdTaken { by } => write!(f, "its id is taken by server {by}"),
            Reply::NoSuchServer => f.write_str("no such server"),
            Reply::InUse => f.write_str("the server still has connections"),
            Reply::NotInMaint => f.write_str("the server is not in maintenance"),
            Reply::NoCheck => f.write_str("the server has no health check"),
            Reply::Refused(answer) => f.write_str(answer),
            Reply::NoAnswer(why) => f.write_str(why),
        }
    }
}

/// The master's `show proc`: its reload count, failed reloads, and the current workers' pids.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Procs {
    /// Reloads the master has done (failed ones included).
    pub reloads: u64,
    /// Failed reloads since the last good one.
    pub failed: u64,
    /// Pids of the workers of the current generation (reload count 0).
    pub current_workers: Vec<u32>,
}

/// Reads `show proc`.
pub fn parse_procs(text: &str) -> Procs {
    let mut p = Procs::default();
    let mut section = "";
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("# ") {
            section = title.trim();
            continue;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 3 || w[0].starts_with('#') {
            continue;
        }
        match (section, w[1]) {
            (_, "master") => {
                p.reloads = w[2].parse().unwrap_or(0);
                if let Some(i) = w.iter().position(|x| *x == "[failed:") {
                    p.failed = w
                        .get(i + 1)
                        .and_then(|f| f.trim_end_matches(']').parse().ok())
                        .unwrap_or(0);
                }
            }
            ("workers", "worker") if w[2] == "0" => {
                if let Ok(pid) = w[0].parse() {
                    p.current_workers.push(pid);
                }
            }
            _ => {}
        }
    }
    p
}

/// One server in `show servers state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerState {
    /// Operational state: 0 stopped, 1 starting, 2 running, 3 stopping.
    pub op: u8,
    /// Administrative flags: bit 0 forced maintenance, bit 3 forced drain.
    pub admin: u8,
    /// Last check result: 3 passed, 4 passed with conditions.
    pub check_result: u8,
    /// Check state flags: 2 configured, 4 enabled, 8 paused (HAProxy pauses the checks of a
    /// server put in maintenance).
    pub check_state: u8,
}

impl ServerState {
    /// Whether the last health check passed.
    pub fn check_passed(&self) -> bool {
        matches!(self.check_result, 3 | 4)
    }

    /// Whether it is in maintenance.
    pub fn maint(&self) -> bool {
        self.admin & 0x01 != 0
    }

    /// Whether it is draining (forced drain).
    pub fn draining(&self) -> bool {
        self.admin & 0x08 != 0
    }

    /// Whether its health checks are paused.
    pub fn checks_paused(&self) -> bool {
        self.check_state & 0x08 != 0
    }

    /// Whether it takes new requests: running, neither in maintenance nor draining.
    pub fn in_service(&self) -> bool {
        self.op == 2 && self.admin & 0x1f == 0
    }
}

/// Reads `show servers state` into (backend, server) → state.
pub fn parse_servers_state(text: &str) -> BTreeMap<(String, String), ServerState> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 14 || w[0].starts_with('#') {
            continue;
        }
        let num = |i: usize| w[i].parse::<u8>().ok();
        if let (Some(op), Some(admin), Some(check_result), Some(check_state)) =
            (num(5), num(6), num(11), num(13))
        {
            out.insert(
                (w[1].to_owned(), w[3].to_owned()),
                ServerState {
                    op,
                    admin,
                    check_result,
                    check_state,
                },
            );
        }
    }
    out
}

/// Reads the current sessions (`scur`) of servers from `show stat`.
pub fn parse_sessions(text: &str) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() > 5 && f[1] != "FRONTEND" && f[1] != "BACKEND" {
            if let Ok(n) = f[4].parse() {
                out.insert((f[0].to_owned(), f[1].to_owned()), n);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_show_proc() {
        let text = "#<PID>          <type>          <reloads>       <uptime>        <version>\n\
            2719            master          3 [failed: 1]   0d00h02m48s     2.6.12-1+deb12u4\n\
            # workers\n\
            2801            worker          0               0d00h00m01s     2.6.12-1+deb12u4\n\
            2723            worker          1               0d00h02m48s     2.6.12-1+deb12u4\n\
            # programs\n\n";
        assert_eq!(
            parse_procs(text),
            Procs {
                reloads: 3,
                failed: 1,
                current_workers: vec![2801]
            }
        );
    }

    #[test]
    fn reads_replies() {
        // Answers of Debian's haproxy 2.6.12, captured from its admin socket.
        for (answer, expect) in [
            ("", Reply::Done),
            ("New server registered.", Reply::Done),
            ("Server deleted.", Reply::Done),
            (
                "no need to change the addr, no need to change the port by 'stats socket command'",
                Reply::Done,
            ),
            (
                "IP changed from '127.0.0.1' to '127.0.0.2', port changed from '18202' to \
                 '18203' by 'stats socket command'",
                Reply::Done,
            ),
            (
                "no need to change the addr, port changed from '18202' to '18209' by 'stats \
                 socket command'",
                Reply::Done,
            ),
            (
                "Already exists a server with the same name in backend.",
                Reply::Exists,
            ),
            (
                "'id' : custom id 2 already used at (null):0 ('server b').",
                Reply::IdTaken { by: "b".into() },
            ),
            ("No such server.", Reply::NoSuchServer),
            (
                "Server still has connections attached to it, cannot remove it.",
                Reply::InUse,
            ),
            (
                "Only servers in maintenance mode can be deleted.",
                Reply::NotInMaint,
            ),
            (
                "Health check was not configured on this server, cannot enable.",
                Reply::NoCheck,
            ),
            (
                "weight of server c is not within 0 and 256 (999)..",
                Reply::Refused("weight of server c is not within 0 and 256 (999)..".into()),
            ),
            (
                "unknown keyword 'bogus'.",
                Reply::Refused("unknown keyword 'bogus'.".into()),
            ),
        ] {
            assert_eq!(Reply::read(answer), expect, "{answer:?}");
        }
    }

    #[test]
    fn reads_servers_state_and_sessions() {
        let text = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state \
            srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result\n\
            3 be 1 a 127.0.0.1 2 0 1 1 166 15 3 2 6 0 0 0 - 9101 - 0 0 - - 0\n\
            3 be 6 f 127.0.0.1 0 1 1 1 154 8 0 0 7 0 0 0 - 9107 - 0 0 - - 0\n";
        let s = parse_servers_state(text);
        let a = s[&("be".to_owned(), "a".to_owned())];
        assert!(a.check_passed() && !a.maint() && a.op == 2);
        assert!(a.in_service() && !a.draining() && !a.checks_paused());
        let f = s[&("be".to_owned(), "f".to_owned())];
        assert!(!f.check_passed() && f.maint() && !f.in_service());
        let drained = parse_servers_state(
            "3 nodes 2 b 127.0.0.1 2 8 1 1 0 15 3 2 6 0 0 1 - 18202 - 0 0 - - 0\n\
             3 nodes 3 c 127.0.0.1 0 1 1 1 0 15 3 0 14 0 0 1 - 18202 - 0 0 - - 0\n",
        );
        let b = drained[&("nodes".to_owned(), "b".to_owned())];
        assert!(b.draining() && !b.in_service() && !b.maint());
        let c = drained[&("nodes".to_owned(), "c".to_owned())];
        assert!(c.maint() && c.checks_paused());
        let stat = "# pxname,svname,qcur,qmax,scur,smax\nbe,a,0,0,7,9,\nbe,BACKEND,0,0,7,9,\n";
        assert_eq!(
            parse_sessions(stat).into_iter().collect::<Vec<_>>(),
            [(("be".to_owned(), "a".to_owned()), 7)]
        );
    }
}
