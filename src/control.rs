//! The control socket: a Unix socket where a running muster answers one-line requests, and
//! the client side that `muster members` uses. The protocol: the client writes one line
//! (`members` or `members json`, at most 1 KiB) and reads the answer to end of file; an
//! answer that starts with `error: ` is an error message.
//!
//! The server knows nothing of gossip: it is given a [`Members`] function that `app.rs`
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
}

/// Asks for the current members; `None` when gossip has stopped.
pub type Members =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Option<Vec<Member>>> + Send>> + Send + Sync>;

/// Longest request line read.
const MAX_REQUEST: u64 = 1024;
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
    let listener = UnixListener::bind(path)?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let members = members.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let mut reader = BufReader::new(read.take(MAX_REQUEST));
                if reader.read_line(&mut line).await.is_err() {
                    return;
                }
                let reply = answer(line.trim(), members.as_ref()).await;
                let _ = write.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(())
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

/// One line per member: name, address, status, tags (as `serf members` prints them).
pub fn members_text(members: &[Member]) -> String {
    let rows: Vec<[String; 4]> = members
        .iter()
        .map(|m| {
            let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            [
                m.name.clone(),
                m.addr.clone(),
                m.status.clone(),
                tags.join(","),
            ]
        })
        .collect();
    let width = |i: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or(0);
    let (w0, w1, w2) = (width(0), width(1), width(2));
    rows.iter()
        .map(|r| {
            format!("{:w0$}  {:w1$}  {:w2$}  {}\n", r[0], r[1], r[2], r[3]).replace("  \n", "\n")
        })
        .collect()
}

/// The members as a JSON array of `{name, addr, status, tags}`, one line.
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
