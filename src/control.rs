//! The control socket: a Unix socket where a running muster answers one-line requests, and
//! the client side that `muster members` uses. The protocol: the client writes one line
//! (`members` or `members json`, at most 1 KiB) and reads the answer to end of file; an
//! answer that starts with `error: ` is an error message.
//!
//! The socket is its owner's only (mode 0600): muster binds it in a private directory and moves
//! it into place, so no other user can connect to it, not even for a moment after the bind.
//!
//! At most [`MAX_CONNECTIONS`] connections are open at once (a new one closes the oldest),
//! each for at most [`REQUEST_TIMEOUT`], and accepting pauses after an error (EMFILE).
//!
//! The server knows nothing of gossip (it borrows only gossip's listener `limits`): it is given a [`Members`] function that `app.rs`
//! builds on top of the gossip driver.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use crate::gossip::limits::{AcceptBackoff, Slots};

/// One member as `muster members` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Its name.
    pub name: String,
    /// Its gossip address, `ip:port`.
    pub addr: String,
    /// `alive`, `leaving`, `left` or `failed`.
    pub status: String,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// On a load balancer, its HAProxy server's state as muster commanded it (`in-service`,
    /// `joining`, `returning`, `held-back`, `draining`, `maintenance`; `-` when it is no
    /// server); `None` elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// On a load balancer's own row, how many drains it has held back so far (a leaving
    /// member's server kept in service, the last of its backend, until another was); `None`
    /// on every other row and elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drains_held_back: Option<u64>,
}

/// Asks for the current members; `None` when gossip has stopped.
pub type Members =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Option<Vec<Member>>> + Send>> + Send + Sync>;

/// Longest request line read.
const MAX_REQUEST: u64 = 1024;
/// Most connections open at once; a new one closes the oldest.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a connection may take to send its request and read the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the client waits for an answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves requests on a Unix socket at `path` (replacing a socket file left by an earlier
/// run); `members` is `None` without gossip.
pub fn serve(path: &Path, members: Option<Members>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket file left by an earlier run (the container restarted) is ours to replace.
    let _ = std::fs::remove_file(path);
    let listener = bind_private(path)?;
    listener.set_nonblocking(true)?;
    tokio::spawn(accept_loop(UnixListener::from_std(listener)?, members));
    Ok(())
}

/// A listening socket at `path` with mode 0600: bound in a directory only its owner can enter
/// (0700, beside `path`), made 0600 there, then renamed to `path`; the directory is removed.
fn bind_private(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let private = dir.join(format!(".muster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let inner = private.join("s");
    let bound = std::os::unix::net::UnixListener::bind(&inner).and_then(|l| {
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&inner, path)?;
        Ok(l)
    });
    let _ = std::fs::remove_dir_all(&private);
    bound
}

/// Accepts connections for ever: at most [`MAX_CONNECTIONS`] are open (a new one closes the
/// oldest), each bounded by [`REQUEST_TIMEOUT`]; after an accept error (EMFILE) accepting
/// pauses, longer at each error in a row, instead of spinning.
async fn accept_loop(listener: UnixListener, members: Option<Members>) {
    // Unix peers have no address: one "address" for all, so the oldest is closed first.
    let everyone = std::net::IpAddr::from([0, 0, 0, 0]);
    let mut slots = Slots::new(MAX_CONNECTIONS, MAX_CONNECTIONS);
    let mut open = std::collections::HashMap::new();
    let mut backoff = AcceptBackoff::default();
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let mut next = 0u64;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            Some(id) = done.recv() => {
                slots.release(id);
                open.remove(&id);
                continue;
            }
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff.succeeded();
                stream
            }
            Err(error) => {
                let pause = backoff.failed();
                if let Some(errors) = backoff.log_due(tokio::time::Instant::now().into_std()) {
                    tracing::warn!(%error, errors, "control socket: cannot accept, pausing (logged at most once a minute)");
                }
                // Out of descriptors: the oldest connection makes room for the next.
                if matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                    if let Some(task) = slots.evict().and_then(|old| open.remove(&old)) {
                        tokio::task::AbortHandle::abort(&task);
                    }
                }
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let id = next;
        next += 1;
        if let Some(old) = slots.admit(id, everyone) {
            if let Some(task) = open.remove(&old) {
                tokio::task::AbortHandle::abort(&task);
            }
        }
        let members = members.clone();
        let done_tx = done_tx.clone();
        let task = tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, serve_one(stream, members)).await;
            let _ = done_tx.send(id);
        });
        open.insert(id, task.abort_handle());
    }
}

/// Reads one request line and writes its answer.
async fn serve_one(stream: tokio::net::UnixStream, members: Option<Members>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::with_capacity(MAX_REQUEST as usize, read.take(MAX_REQUEST));
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    let reply = answer(line.trim(), members.as_ref()).await;
    let _ = write.write_all(reply.as_bytes()).await;
}

/// The answer to one request line.
async fn answer(request: &str, members: Option<&Members>) -> String {
    let mut words = request.split_whitespace();
    match (words.next(), words.next()) {
        (Some("members"), format) => {
            let Some(ask) = members else {
                return "error: gossip is not configured (no [gossip] table)\n".to_owned();
            };
            match ask().await {
                Some(list) if format == Some("json") => members_json(&list),
                Some(list) => members_text(&list),
                None => "error: gossip has stopped\n".to_owned(),
            }
        }
        _ => format!("error: unknown request {request:?} (known: members [json])\n"),
    }
}

/// One line per member: name, address, status, tags (as `serf members` prints them); on a
/// load balancer, `server=STATE` follows the tags, and its own row ends with
/// `drains-held-back=N`.
pub fn members_text(members: &[Member]) -> String {
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut row = vec![
                m.name.clone(),
                m.addr.clone(),
                m.status.clone(),
                tags.join(","),
            ];
            row.extend(m.server.as_ref().map(|s| format!("server={s}")));
            row.extend(m.drains_held_back.map(|n| format!("drains-held-back={n}")));
            row
        })
        .collect();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r.get(i).map_or(0, String::len))
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..6).map(width).collect();
    rows.iter()
        .map(|r| {
            let last = r.len() - 1;
            let mut line = String::new();
            for (i, cell) in r.iter().enumerate() {
                if i == last {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:w$}  ", w = widths[i]));
                }
            }
            line.truncate(line.trim_end().len());
            line.push('\n');
            line
        })
        .collect()
}

/// The members as a JSON array of `{name, addr, status, tags}` (on a load balancer, with
/// `server`, and `drains_held_back` on its own row), one line.
pub fn members_json(members: &[Member]) -> String {
    let mut out = serde_json::to_string(members).unwrap_or_else(|_| "[]".to_owned());
    out.push('\n');
    out
}

/// Asks the muster listening at `socket` for its members: the answer, or an error message.
pub fn request_members(socket: &Path, json: bool) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach a running muster at {}: {e} (is muster running here, with a control socket?)",
            socket.display()
        )
    })?;
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let request = if json { "members json\n" } else { "members\n" };
    let mut reply = String::new();
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.read_to_string(&mut reply))
        .map_err(|e| format!("no answer from {}: {e}", socket.display()))?;
    match reply.strip_prefix("error: ") {
        Some(e) => Err(e.trim_end().to_owned()),
        None => Ok(reply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, tags: &[(&str, &str)]) -> Member {
        Member {
            name: name.to_owned(),
            addr: "10.0.0.2:7946".to_owned(),
            status: "alive".to_owned(),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            server: None,
            drains_held_back: None,
        }
    }

    #[test]
    fn text_is_aligned_and_json_is_escaped() {
        let list = [
            member("web-1", &[("role", "backend"), ("port", "3000")]),
            member("ha", &[]),
        ];
        assert_eq!(
            members_text(&list),
            "web-1  10.0.0.2:7946  alive  port=3000,role=backend\nha     10.0.0.2:7946  alive\n"
        );
        // On a load balancer, each member's server state follows its tags.
        let mut lb = list.clone();
        lb[0].server = Some("held-back".to_owned());
        lb[1].server = Some("-".to_owned());
        lb[1].drains_held_back = Some(2);
        assert_eq!(
            members_text(&lb),
            "web-1  10.0.0.2:7946  alive  port=3000,role=backend  server=held-back\n\
             ha     10.0.0.2:7946  alive                          server=-          drains-held-back=2\n"
        );
        let json = members_json(&lb);
        assert!(json.contains("\"server\":\"held-back\""), "{json}");
        assert_eq!(json.matches("drains_held_back").count(), 1, "{json}");
        assert!(
            json.contains("\"server\":\"-\",\"drains_held_back\":2}"),
            "{json}"
        );
        let odd = [member("a\"b", &[("k", "v\\")])];
        assert_eq!(
            members_json(&odd),
            "[{\"name\":\"a\\\"b\",\"addr\":\"10.0.0.2:7946\",\"status\":\"alive\",\"tags\":{\"k\":\"v\\\\\"}}]\n"
        );
    }

    #[test]
    fn requests_are_answered() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let ask: Members = Arc::new(|| Box::pin(async { Some(vec![member("web-1", &[])]) }));
        rt.block_on(async {
            assert_eq!(
                answer("members", None).await,
                "error: gossip is not configured (no [gossip] table)\n"
            );
            assert_eq!(
                answer("members json", Some(&ask)).await,
                "[{\"name\":\"web-1\",\"addr\":\"10.0.0.2:7946\",\"status\":\"alive\",\"tags\":{}}]\n"
            );
            assert!(answer("frobnicate", Some(&ask)).await.starts_with("error: unknown request"));
        });
    }
}
