//! `[gossip] event_handlers`: the scripts run on membership events, user events and queries,
//! each written as `serf agent -event-handler` takes it (`[type[,type]=]script`, types
//! `member-join`, `member-leave`, `member-failed`, `member-update`, `member-reap`, `user`,
//! `user:NAME`, `query`, `query:NAME`, `*`; no type is every event), and `handler_timeout`.

use std::time::Duration;

use super::value::Validator;

/// `[gossip]` keys of the event handlers.
pub(super) const KEYS: &[&str] = &["event_handlers", "handler_timeout"];

/// Longest a handler may run unless `handler_timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which events a handler runs for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    /// Every event (`*`, or no type given).
    Any,
    /// A membership event: `member-join`, `member-leave`, `member-failed`, `member-update`,
    /// `member-reap` (the text as Serf names the event).
    Member(&'static str),
    /// User events, all of them or those of one name.
    User(Option<String>),
    /// Queries, all of them or those of one name.
    Query(Option<String>),
}

/// One entry of `event_handlers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHandler {
    /// The entry as written (how logs name the handler).
    pub spec: String,
    /// The events it runs for (at least one).
    pub filters: Vec<EventFilter>,
    /// What `/bin/sh -c` runs.
    pub script: String,
}

/// The membership event types, as Serf names them.
pub const MEMBER_EVENTS: [&str; 5] = [
    "member-join",
    "member-leave",
    "member-failed",
    "member-update",
    "member-reap",
];

/// Reads one entry the way Serf does (the first `=` splits types from script; types are
/// comma-separated), refusing what Serf would silently never run.
pub fn parse(spec: &str) -> Result<EventHandler, String> {
    let (types, script) = match spec.split_once('=') {
        Some((t, s)) => (t, s),
        None => ("", spec),
    };
    if script.trim().is_empty() {
        return Err(format!("{spec:?} names no script"));
    }
    let types = if types.is_empty() { "*" } else { types };
    let mut filters = Vec::new();
    for t in types.split(',') {
        let f = if t == "*" {
            EventFilter::Any
        } else if let Some(name) = t.strip_prefix("user:") {
            EventFilter::User(Some(name.to_owned()).filter(|n| !n.is_empty()))
        } else if t == "user" {
            EventFilter::User(None)
        } else if let Some(name) = t.strip_prefix("query:") {
            EventFilter::Query(Some(name.to_owned()).filter(|n| !n.is_empty()))
        } else if t == "query" {
            EventFilter::Query(None)
        } else if let Some(m) = MEMBER_EVENTS.iter().find(|m| **m == t) {
            EventFilter::Member(m)
        } else {
            return Err(format!(
                "{spec:?}: unknown event type {t:?} (known: {}, user, user:NAME, query, query:NAME, *)",
                MEMBER_EVENTS.join(", ")
            ));
        };
        filters.push(f);
    }
    Ok(EventHandler {
        spec: spec.to_owned(),
        filters,
        script: script.to_owned(),
    })
}

/// The program a script starts with (its first word), which must exist.
pub fn program(script: &str) -> &str {
    script.split_whitespace().next().unwrap_or("")
}

/// `event_handlers` and `handler_timeout` of the `[gossip]` table.
pub(super) fn read(t: &toml::Table, v: &mut Validator) -> (Vec<EventHandler>, Duration) {
    let mut out = Vec::new();
    if let Some(list) = v.string_list("gossip.event_handlers", t.get("event_handlers")) {
        for spec in list {
            match parse(&spec) {
                Ok(h) => out.push(h),
                Err(e) => v.problem("gossip.event_handlers", &e),
            }
        }
    }
    let timeout = match v.duration("gossip.handler_timeout", t.get("handler_timeout")) {
        Some(d) if d.is_zero() => {
            v.problem(
                "gossip.handler_timeout",
                "is zero: a handler needs some time",
            );
            DEFAULT_TIMEOUT
        }
        Some(d) => d,
        None => DEFAULT_TIMEOUT,
    };
    (out, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: &str, expect: Result<(Vec<EventFilter>, &str), &str>) {
        let got = parse(spec).map(|h| (h.filters, h.script));
        match (got, expect) {
            (Ok((f, s)), Ok((ef, es))) => assert_eq!((f, s.as_str()), (ef, es), "{spec}"),
            (Err(e), Err(needle)) => assert!(e.contains(needle), "{spec}: {e}"),
            (got, expect) => panic!("{spec}: got {got:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn entries_read_as_serf_reads_them() {
        use EventFilter::*;
        check(
            "member-join,member-leave=/x.sh",
            Ok((vec![Member("member-join"), Member("member-leave")], "/x.sh")),
        );
        check("/all.sh", Ok((vec![Any], "/all.sh")));
        check("*=/all.sh", Ok((vec![Any], "/all.sh")));
        check(
            "user:deploy=/d.sh a=b",
            Ok((vec![User(Some("deploy".into()))], "/d.sh a=b")),
        );
        check("user=/u", Ok((vec![User(None)], "/u")));
        check(
            "query:uptime=/q",
            Ok((vec![Query(Some("uptime".into()))], "/q")),
        );
        check("query:=/q", Ok((vec![Query(None)], "/q")));
        check(
            "member-joined=/x",
            Err("unknown event type \"member-joined\""),
        );
        check("member-join=", Err("names no script"));
        check("member-join,=/x", Err("unknown event type \"\""));
    }

    #[test]
    fn the_program_is_the_first_word() {
        assert_eq!(program("/a/b.sh --flag"), "/a/b.sh");
        assert_eq!(program("  logger -t x"), "logger");
    }
}
