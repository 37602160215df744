//! `haproxy -c`: which runs check a staged config, and the [`Runner`] that carries them out.
//!
//! A staged config is checked the way the HAProxy service will parse it: the service's program
//! and options with `-c` (and `-W`), the staged file in place of the config, the service's
//! environment, working directory and user, plus the variables HAProxy's master sets before it
//! parses the config again at a reload (`HAPROXY_MWORKER`, `HAPROXY_MASTER_CLI`,
//! `HAPROXY_CFGFILES`), so no conditional block is checked one way and run another. Running a
//! command is not this subsystem's business: `app.rs` gives the sync a [`Runner`] built on the
//! supervisor's helpers.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use crate::config::{self, Service};

/// Who collects the check's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaping {
    /// Nothing reaps children yet (the first config is checked before the supervisor starts):
    /// the runner waits for the check itself.
    NotYet,
    /// The supervisor reaps every child: the runner gets the check's status from it.
    Supervisor,
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    /// Whether it exited with code 0.
    pub success: bool,
    /// How it ended, in words (`exit code 1`, `killed by SIGKILL`).
    pub exit: String,
    /// Its standard output and error, interleaved.
    pub output: String,
}

/// The future a [`Runner`] returns.
pub type Running<'a> = Pin<Box<dyn Future<Output = std::io::Result<Ran>> + Send + 'a>>;

/// Runs a command as the supervisor would run this service (its environment, working
/// directory and user), and gives back how it ended and what it printed; an error when it
/// could not be run at all (or ran too long).
pub trait Runner: Send + std::marker::Sync {
    /// Runs `service.command`, its status collected as `reaping` says.
    fn run<'a>(&'a self, service: &'a Service, reaping: Reaping) -> Running<'a>;
}

/// What the checks are built from.
pub struct Target<'a> {
    /// The HAProxy service as the supervisor runs it; `None`: `haproxy -W -c` with muster's
    /// environment.
    pub service: Option<&'a Service>,
    /// The haproxy binary, when there is no service.
    pub haproxy: &'a str,
    /// The config HAProxy reads.
    pub config: &'a Path,
    /// HAProxy's master CLI socket.
    pub master_socket: &'a Path,
}

/// The `haproxy -c` runs that check `staged` for `target`: the HAProxy service's command with
/// `-c` (and `-W`), the staged file in place of the config, its environment, working directory
/// and user, plus what HAProxy's master sets before it parses the config at a reload. When the
/// service does not set `HAPROXY_MWORKER` itself (muster's own HAProxy service does, so its
/// first start parses the config as a reload does), its first start is checked too, in its
/// own environment.
pub fn runs(target: &Target<'_>, staged: &Path) -> Vec<Service> {
    let config = target.config.display().to_string();
    let mut base = match target.service {
        Some(s) => s.clone(),
        None => Service::defaults(
            "haproxy -c",
            vec![
                target.haproxy.to_owned(),
                "-W".to_owned(),
                "-f".to_owned(),
                config.clone(),
            ],
        ),
    };
    let (command, files) = check_command(&base.command, &config, &staged.display().to_string());
    base.name = "haproxy -c".to_owned();
    base.command = command;
    let mut runs = Vec::new();
    if !base.environment.contains_key("HAPROXY_MWORKER") {
        runs.push(base.clone());
    }
    base.environment.extend(config::haproxy_master_environment(
        target.master_socket,
        &files,
    ));
    runs.push(base);
    runs
}

/// The service's command turned into a check of `staged` (in place of `config`), and the
/// config files the service reads.
fn check_command(service: &[String], config: &str, staged: &str) -> (Vec<String>, Vec<String>) {
    let mut command = Vec::with_capacity(service.len() + 3);
    let mut files = Vec::new();
    let mut replaced = false;
    let mut words = service.iter();
    if let Some(program) = words.next() {
        command.push(program.clone());
    }
    command.push("-c".to_owned());
    while let Some(w) = words.next() {
        command.push(w.clone());
        if w == "-f" {
            if let Some(file) = words.next() {
                files.push(file.clone());
                if file == config && !replaced {
                    command.push(staged.to_owned());
                    replaced = true;
                } else {
                    command.push(file.clone());
                }
            }
        }
    }
    if !replaced {
        // The service does not name the config: check the staged file alone.
        command.truncate(2);
        command.extend(["-f".to_owned(), staged.to_owned()]);
        files = vec![config.to_owned()];
    }
    if !command.iter().any(|w| w == "-W" || w == "-Ws") {
        command.push("-W".to_owned());
    }
    (command, files)
}

/// HAProxy's alerts from `haproxy -c` output, on one line (all of it when there is none).
pub fn alerts(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("[ALERT]"))
        .map(|l| match l.find(" : ") {
            Some(i) => l[i + 3..].trim(),
            None => l.trim(),
        })
        .collect();
    if lines.is_empty() {
        output.trim().replace('\n', " | ")
    } else {
        lines.join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(service: Option<&Service>) -> Target<'_> {
        Target {
            service,
            haproxy: "haproxy",
            config: Path::new("/etc/haproxy/haproxy.cfg"),
            master_socket: Path::new("/run/haproxy/master.sock"),
        }
    }

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn haproxy_c_runs_like_the_service_with_the_masters_variables() {
        let staged = Path::new("/etc/haproxy/haproxy.cfg.new");
        let mut service = Service::defaults(
            "haproxy",
            words(&[
                "/usr/sbin/haproxy",
                "-W",
                "-db",
                "-S",
                "/run/haproxy/master.sock,mode,600",
                "-f",
                "/etc/haproxy/haproxy.cfg",
                "-f",
                "/etc/haproxy/extra.cfg",
            ]),
        );
        service.environment = [("TZ".to_owned(), "UTC".to_owned())].into();
        service.working_dir = Some("/etc/haproxy".into());
        // The service does not set HAPROXY_MWORKER: its first start is checked too.
        let runs = runs(&target(Some(&service)), staged);
        assert_eq!(runs.len(), 2);
        let expected = words(&[
            "/usr/sbin/haproxy",
            "-c",
            "-W",
            "-db",
            "-S",
            "/run/haproxy/master.sock,mode,600",
            "-f",
            "/etc/haproxy/haproxy.cfg.new",
            "-f",
            "/etc/haproxy/extra.cfg",
        ]);
        assert_eq!(runs[0].command, expected);
        assert_eq!(runs[0].environment, service.environment);
        assert_eq!(runs[1].command, expected);
        assert_eq!(runs[1].working_dir, service.working_dir);
        let env = &runs[1].environment;
        assert_eq!(env["TZ"], "UTC");
        assert_eq!(env["HAPROXY_MWORKER"], "1");
        assert_eq!(env["HAPROXY_MASTER_CLI"], "unix@/run/haproxy/master.sock");
        assert_eq!(
            env["HAPROXY_CFGFILES"],
            "/etc/haproxy/haproxy.cfg;/etc/haproxy/extra.cfg"
        );
        // Muster's own service sets them at its first start: one check.
        service
            .environment
            .extend(config::haproxy_master_environment(
                Path::new("/run/haproxy/master.sock"),
                &words(&["/etc/haproxy/haproxy.cfg"]),
            ));
        assert_eq!(super::runs(&target(Some(&service)), staged).len(), 1);
        // No service known: haproxy -W -c on the staged file, in the master's environment.
        let runs = super::runs(&target(None), staged);
        assert_eq!(runs.len(), 2);
        assert_eq!(
            runs[1].command,
            words(&["haproxy", "-c", "-W", "-f", "/etc/haproxy/haproxy.cfg.new"])
        );
        assert_eq!(
            runs[1].environment["HAPROXY_CFGFILES"],
            "/etc/haproxy/haproxy.cfg"
        );
    }

    #[test]
    fn alerts_are_read_onto_one_line() {
        let output = "[NOTICE]   (1) : haproxy version is 2.6.12\n\
            [ALERT]    (1) : config : parsing [x.cfg:3] : unknown keyword 'frob'.\n\
            [ALERT]    (1) : config : Fatal errors found in configuration.\n";
        assert_eq!(
            alerts(output),
            "config : parsing [x.cfg:3] : unknown keyword 'frob'. | config : Fatal errors \
             found in configuration."
        );
        assert_eq!(alerts("no\nalert\n"), "no | alert");
    }
}
