//! What startup checks beyond the configuration file's own text: files that must exist,
//! templates that must compile, a host name that must do as a node name, gossip keys that
//! make a keyring, a log spool directory that can be created and written (check-config
//! creates it too), event handler scripts that exist, services' programs and working
//! directories that exist. `muster check-config`
//! and `muster run` both call [`problems`], so a file that check-config accepts does not fail
//! at startup for one of these, and both report it with the same line and exit 64.

use crate::config::{Config, names};
use crate::haproxy::template::Template;
use crate::host;

/// Every problem startup would meet, each as `key: what is wrong`.
pub fn problems(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for s in &config.services {
        out.extend(service_problems(s));
    }
    if let Some(h) = &config.haproxy {
        let path = &h.template;
        match std::fs::read_to_string(path) {
            Err(e) => out.push(format!(
                "haproxy.template: cannot read {}: {e}",
                path.display()
            )),
            Ok(text) => {
                if let Err(e) = Template::compile(&text, &path.display().to_string()) {
                    out.push(format!("haproxy.template: does not compile: {e}"));
                }
            }
        }
    }
    if let Some(dir) = config.logship.as_ref().and_then(|l| l.spool.as_ref()) {
        if let Err(e) = crate::logship::spool::check_dir(dir) {
            out.push(format!("logship.spool: {e}"));
        }
    }
    if let Some(g) = &config.gossip {
        for h in &g.event_handlers {
            if let Err(e) = script_exists(&h.script) {
                out.push(format!("gossip.event_handlers: {:?}: {e}", h.spec));
            }
        }
        if !g.keys.0.is_empty() {
            if let Err(e) = crate::gossip::crypto::Keyring::new(&g.keys.0) {
                out.push(format!("gossip.encrypt: {e}"));
            }
        }
        if g.name.is_none() {
            match host::name() {
                Err(e) => out.push(format!(
                    "gossip.name: unset, and the host name cannot be read ({e}); set gossip.name"
                )),
                Ok(host) => {
                    if let Err(e) = names::name(&host) {
                        out.push(format!(
                            "gossip.name: unset, and the host name {:?} {e}; set gossip.name",
                            names::printable(&host, 64)
                        ));
                    }
                }
            }
        }
    }
    out
}

/// A service's working directory must be a directory, and its program (relative to that
/// directory when it is a relative path) a file muster may execute, or a bare name found in
/// the service's `PATH` (its `environment` one when it sets it, as exec searches).
fn service_problems(s: &crate::config::Service) -> Vec<String> {
    let mut out = Vec::new();
    let at = |key: &str| format!("services.{}.{key}", s.name);
    if let Some(dir) = &s.working_dir {
        match std::fs::metadata(dir) {
            Err(e) => out.push(format!(
                "{}: cannot use {}: {e}",
                at("working_dir"),
                dir.display()
            )),
            Ok(m) if !m.is_dir() => {
                out.push(format!(
                    "{}: {} is not a directory",
                    at("working_dir"),
                    dir.display()
                ));
            }
            Ok(_) => {}
        }
    }
    let Some(program) = s.command.first() else {
        return out;
    };
    let base = s.working_dir.clone().unwrap_or_default();
    let path = s
        .environment
        .get("PATH")
        .map(std::ffi::OsString::from)
        .or_else(|| std::env::var_os("PATH"))
        // exec's own search path when none is set.
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    if let Err(e) = runnable(program, &base, &path) {
        out.push(format!("{}: {e}", at("command")));
    }
    out
}

/// The program an event handler's script starts with: a path (with a `/`) must be a file
/// muster may execute; a bare name must be found in `PATH`.
fn script_exists(script: &str) -> Result<(), String> {
    let program = crate::config::handlers::program(script);
    let path = std::env::var_os("PATH").unwrap_or_default();
    runnable(program, std::path::Path::new(""), &path)
}

/// Whether `program` can be started: a path (with a `/`, relative to `base`) must be an
/// executable file; a bare name must be one in a directory of `path`.
fn runnable(program: &str, base: &std::path::Path, path: &std::ffi::OsStr) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let full = base.join(program);
        return match std::fs::metadata(&full) {
            Err(e) => Err(format!("cannot use {program}: {e}")),
            Ok(m) if !m.is_file() => Err(format!("{program} is not a file")),
            Ok(_) if !executable(&full) => Err(format!("{program} is not executable")),
            Ok(_) => Ok(()),
        };
    }
    if std::env::split_paths(path).any(|d| executable(&d.join(program))) {
        Ok(())
    } else {
        Err(format!("{program} is not found in PATH"))
    }
}
