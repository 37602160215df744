//! The control surfaces other users or the network could reach (issue 13, item 7), with real
//! processes: muster's control socket is its owner's only (0600) whatever the umask, and
//! another user cannot connect; HAProxy's admin and master sockets, as muster starts HAProxy
//! with the shipped template, are 0600 Unix sockets of the user running it, and no `stats
//! socket` listens on the network; the stats page is read-only (no admin form, a POSTed
//! action is refused and changes no server). Run as root, like the rest of the suite: the
//! other user is 65534, switched to with `setpriv`.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::lb::{Lb, start_backends};
use common::{Run, config, eventually, muster};

/// The user another user's processes run as here.
const NOBODY: &str = "65534";

/// `muster members --socket PATH` run as user and group 65534: (success, stderr).
fn members_as_nobody(socket: &Path) -> (bool, String) {
    let out = Command::new("setpriv")
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--"])
        .arg(muster())
        .args(["members", "--socket", socket.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Connecting to the Unix socket `path` as user 65534: the error, if refused.
fn connect_as_nobody(path: &Path) -> Result<(), String> {
    let out = Command::new("setpriv")
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--"])
        .args(["python3", "-c"])
        .arg("import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])")
        .arg(path)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A directory every user may enter, so that only a socket's own mode keeps them out.
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn mode(path: &Path) -> (u32, u32) {
    let m = std::fs::metadata(path).unwrap();
    (m.permissions().mode() & 0o7777, m.uid())
}

#[test]
fn the_control_socket_is_its_owners_only_whatever_the_umask() {
    let dir = open_dir();
    let socket = dir.path().join("run").join("control.sock");
    let cfg = config(
        dir.path(),
        &format!(
            "[supervisor]\ncontrol_socket = \"{}\"\n[services.main]\nmain = true\n\
             command = [\"sh\", \"-c\", \"echo up; exec sleep 1000\"]\n",
            socket.display()
        ),
    );
    // umask 0: a socket bound as is would be 0777, open to every user.
    let mut cmd = Command::new(muster());
    cmd.args(["--config", cfg.to_str().unwrap()]);
    // SAFETY: umask is async-signal-safe and touches no memory.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::umask(0);
            Ok(())
        });
    }
    let run = Run::start_cmd(&mut cmd);
    run.wait_line("up", Duration::from_secs(10));
    eventually("the control socket", Duration::from_secs(10), || {
        socket.exists()
    });
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    assert_eq!(mode(&socket), (0o600, me), "{}", socket.display());
    // The private directory it was bound in is gone.
    let left: Vec<_> = std::fs::read_dir(socket.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("control.sock")]);
    // Its owner is answered; another user cannot connect.
    let own = Command::new(muster())
        .args(["members", "--socket", socket.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&own.stderr).contains("gossip is not configured"),
        "{own:?}"
    );
    let (ok, stderr) = members_as_nobody(&socket);
    eprintln!("muster members as user 65534: {stderr}");
    assert!(!ok && stderr.contains("Permission denied"), "{stderr}");
}

#[test]
fn haproxys_sockets_are_its_users_only_and_none_is_on_the_network() {
    let dir = open_dir();
    let lb = Lb::start(dir.path());
    std::fs::set_permissions(&lb.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    let master = lb.dir.join("master.sock");
    // HAProxy may serve before its master has made the master socket.
    eventually("haproxy's sockets", Duration::from_secs(10), || {
        lb.admin_socket.exists() && master.exists()
    });
    for socket in [&lb.admin_socket, &master] {
        assert_eq!(mode(socket), (0o600, me), "{}", socket.display());
        let refused = connect_as_nobody(socket).expect_err("user 65534 connected");
        assert!(refused.contains("Permission denied"), "{refused}");
    }
    assert!(lb.admin("show info").unwrap().contains("Name: HAProxy"));
    // The rendered config (the shipped template): every stats socket is a Unix path with
    // mode 600, and the stats page has no admin level.
    let rendered = std::fs::read_to_string(&lb.config).unwrap();
    let sockets: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("stats socket"))
        .collect();
    assert_eq!(sockets.len(), 1, "{rendered}");
    for s in &sockets {
        let addr = s.split_whitespace().nth(2).unwrap();
        assert!(addr.starts_with('/'), "a stats socket on the network: {s}");
        assert!(s.contains(" mode 600 "), "{s}");
    }
    assert!(!rendered.contains("stats admin"), "{rendered}");
}

/// One HTTP/1.0 request to 127.0.0.1:`port`: the whole answer.
fn http(port: u16, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    String::from_utf8_lossy(&raw).into_owned()
}

#[test]
fn the_stats_page_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let lb = Lb::start(dir.path());
    let _backends = start_backends(dir.path(), &lb, &["web-a"]);
    let page = http(
        lb.stats,
        "GET / HTTP/1.0\r\nHost: lb\r\nConnection: close\r\n\r\n",
    );
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("web-a"), "the page lists the server");
    // With `stats admin`, HAProxy 2.6 adds `<form method="post">` and `<select name=action>`
    // (its scope box is a GET form, which stays).
    let lower = page.to_ascii_lowercase();
    assert!(
        !lower.contains("method=\"post\"") && !lower.contains("name=action"),
        "an admin form on the stats page"
    );
    // What an admin-enabled page would take to put web-a in maintenance.
    let body = "s=web-a&action=maint&b=nodes";
    let answer = http(
        lb.stats,
        &format!(
            "POST / HTTP/1.0\r\nHost: lb\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    let head = answer.split("\r\n\r\n").next().unwrap_or_default();
    eprintln!("POST of an action to the stats page:\n{head}");
    let status = head.lines().next().unwrap_or_default();
    let location = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("location:"))
        .unwrap_or_default();
    // HAProxy answers a POST without `stats admin` with a redirect to ";st=DENY" (";st=DONE"
    // when it applied the action).
    assert!(
        !status.contains(" 200") && location.contains("st=DENY"),
        "{head}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let servers = lb.servers();
    assert!(servers["web-a"].in_service(), "{servers:?}");
    assert!(!servers["web-a"].maint(), "{servers:?}");
}
