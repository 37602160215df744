//! Readiness probes: one task per run being probed, which reports `Input::Ready` once the run is
//! ready and then ends. A TCP connect, an HTTP GET answering 2xx, a command exiting 0 (run
//! through [`Children`], collected by the reaper), or a newline on the notification pipe.

use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::children::Children;
use super::core::{Input, Pid, ServiceId};
use crate::config::{HttpUrl, Ready, Service};

/// Longest time one probe attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a probe task needs.
pub struct Probe {
    /// The service probed (its `ready` says how).
    pub service: Service,
    /// Its id in the core.
    pub id: ServiceId,
    /// The run probed.
    pub pid: Pid,
    /// Read end of the notification pipe, for `notify_fd`.
    pub notify: Option<OwnedFd>,
    /// Runs exec probes' commands.
    pub children: Children,
    /// Where `Ready` is sent.
    pub tx: mpsc::UnboundedSender<Input>,
}

impl Probe {
    /// Probes until ready (then reports it) or until the task is aborted.
    pub async fn run(self) {
        let Some(kind) = self.service.ready.clone() else {
            return;
        };
        let ready = match kind {
            Ready::NotifyFd(_) => self.notified().await,
            other => loop {
                if self.attempt(&other).await {
                    break true;
                }
                tokio::time::sleep(self.service.ready_interval).await;
            },
        };
        if ready {
            let _ = self.tx.send(Input::Ready {
                service: self.id,
                pid: self.pid,
            });
        }
    }

    async fn attempt(&self, kind: &Ready) -> bool {
        let attempt = async {
            match kind {
                Ready::Tcp(addr) => TcpStream::connect(addr.as_str()).await.is_ok(),
                Ready::Http(url) => http_ok(url).await.unwrap_or(false),
                Ready::Exec(command) => self.exec(command).await,
                Ready::NotifyFd(_) => false,
            }
        };
        tokio::time::timeout(ATTEMPT_TIMEOUT, attempt)
            .await
            .unwrap_or(false)
    }

    async fn exec(&self, command: &[String]) -> bool {
        let check = Service {
            command: command.to_vec(),
            ..self.service.clone()
        };
        match self.children.status_of(&check).await {
            Ok(status) => status.success(),
            Err(error) => {
                tracing::warn!(service = %self.service.name, %error, "readiness check cannot run");
                false
            }
        }
    }

    async fn notified(&self) -> bool {
        let Some(fd) = self.notify.as_ref().and_then(|fd| fd.try_clone().ok()) else {
            return false;
        };
        let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
            return false;
        };
        let mut buf = [0u8; 64];
        loop {
            match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if buf[..n].contains(&b'\n') => return true,
                Ok(_) => {}
            }
        }
    }
}

/// One GET; true when the status is 2xx.
async fn http_ok(url: &HttpUrl) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect(url.authority.as_str()).await?;
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: muster-ready\r\nConnection: close\r\n\r\n",
        url.path, url.host
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(status_is_2xx(&head))
}

/// Whether an HTTP response head starts with a 2xx status line.
pub fn status_is_2xx(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    version.starts_with(b"HTTP/") && code.len() == 3 && code[0] == b'2'
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_lines() {
        use super::status_is_2xx as ok;
        assert!(ok(b"HTTP/1.1 200 OK\r\n"));
        assert!(ok(b"HTTP/1.0 204 No Content\r\n"));
        assert!(!ok(b"HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(!ok(b"HTTP/1.1 2000 odd\r\n"));
        assert!(!ok(b"SSH-2.0-OpenSSH\r\n"));
        assert!(!ok(b""));
    }
}
