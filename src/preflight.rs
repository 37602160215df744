//! What startup checks beyond the configuration file's own text: files that must exist,
//! templates that must compile, a host name that must do as a node name, gossip keys that
//! make a keyring, a log spool directory that can be created and written (check-config
//! creates it too), event handler scripts that exist. `muster check-config`
//! and `muster run` both call [`problems`], so a file that check-config accepts does not fail
//! at startup for one of these, and both report it with the same line and exit 64.

use crate::config::{Config, names};
use crate::haproxy::template::Template;
use crate::host;

/// Every problem startup would meet, each as `key: what is wrong`.
pub fn problems(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
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

/// The program an event handler's script starts with: a path (with a `/`) must be a file
/// muster may execute; a bare name must be found in `PATH`.
fn script_exists(script: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let program = crate::config::handlers::program(script);
    let runnable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return match std::fs::metadata(program) {
            Err(e) => Err(format!("cannot use {program}: {e}")),
            Ok(m) if !m.is_file() => Err(format!("{program} is not a file")),
            Ok(_) if !runnable(program.as_ref()) => Err(format!("{program} is not executable")),
            Ok(_) => Ok(()),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| runnable(&d.join(program))) {
        Ok(())
    } else {
        Err(format!("{program} is not found in PATH"))
    }
}
