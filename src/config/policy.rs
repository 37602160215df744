//! A service's place in the container's life: `critical`, `oneshot` and `crash_limit`, and the
//! defaults that follow from `main`. Only the main service and critical services end the
//! container; a side service is restarted with back-off and never gives up unless its
//! `crash_limit` says so.

use crate::config::{Restart, Service, value};

/// The crash limit of the main service and of critical services when none is given.
pub const END_CONTAINER_CRASH_LIMIT: u32 = 5;

/// Reads `critical`, `oneshot` and `crash_limit` (after `main` and `restart`).
pub(super) fn policy(base: &str, t: &toml::Table, v: &mut value::Validator, s: &mut Service) {
    let at = |key: &str| format!("{base}.{key}");
    if let Some(b) = v.bool(&at("critical"), t.get("critical")) {
        s.critical = b;
    }
    if let Some(b) = v.bool(&at("oneshot"), t.get("oneshot")) {
        s.oneshot = b;
    }
    if s.oneshot {
        if s.main {
            v.problem(
                &at("oneshot"),
                "a oneshot cannot be main (a main service with restart = \"never\" is already run once)",
            );
        }
        if t.contains_key("restart") && s.restart != Restart::Never {
            v.problem(
                &at("restart"),
                "a oneshot is never restarted: leave restart out or set it to \"never\"",
            );
        }
        if t.contains_key("ready") {
            v.problem(
                &at("ready"),
                "a oneshot is complete when it exits 0, and its dependents wait for that: leave ready out",
            );
        }
        s.restart = Restart::Never;
    }
    s.crash_limit = if s.main || s.critical {
        END_CONTAINER_CRASH_LIMIT
    } else {
        0
    };
    if let Some(n) = v.integer(&at("crash_limit"), t.get("crash_limit"), 0, 1_000_000) {
        s.crash_limit = n as u32;
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Restart, users::SystemUsers};

    fn parse(text: &str) -> Result<Config, Vec<String>> {
        Config::parse(text, &SystemUsers).map_err(|e| e.problems)
    }

    #[test]
    fn defaults_follow_the_services_place() {
        let c = parse(
            "[services.app]\ncommand=[\"x\"]\nmain=true\n\
             [services.db]\ncommand=[\"x\"]\ncritical=true\n\
             [services.fwd]\ncommand=[\"x\"]\n\
             [services.fwd5]\ncommand=[\"x\"]\ncrash_limit=0\n\
             [services.init]\ncommand=[\"x\"]\noneshot=true\n",
        )
        .expect("valid");
        let limits: Vec<u32> = c.services.iter().map(|s| s.crash_limit).collect();
        assert_eq!(limits, vec![5, 5, 0, 0, 0]);
        assert!(c.services[1].critical && !c.services[2].critical);
        assert!(c.services[4].oneshot);
        assert_eq!(c.services[4].restart, Restart::Never);
    }

    #[test]
    fn conflicting_keys_are_named() {
        let got = parse(
            "[services.app]\ncommand=[\"x\"]\nmain=true\noneshot=true\n\
             [services.init]\ncommand=[\"x\"]\noneshot=true\nrestart=\"always\"\n\
             [services.probe]\ncommand=[\"x\"]\noneshot=true\nready={ tcp = \"127.0.0.1:1\" }\n\
             [services.side]\ncommand=[\"x\"]\ncrash_limit=-1\ncritical=\"yes\"\n",
        )
        .expect_err("invalid");
        let joined = got.join("\n");
        for key in [
            "services.app.oneshot",
            "services.init.restart",
            "services.probe.ready",
            "services.side.crash_limit",
            "services.side.critical",
        ] {
            assert!(joined.contains(key), "{key} not named in {joined}");
        }
    }
}
