//! Typed reading of TOML values that collects problems instead of stopping at the first, plus
//! the small parsers for durations, signals and URLs that the configuration uses.

use std::time::Duration;

use super::{ConfigError, HttpUrl};

/// Collects problems while the configuration is read.
#[derive(Default)]
pub(super) struct Validator {
    problems: Vec<String>,
}

impl Validator {
    pub(super) fn problem(&mut self, key: &str, what: &str) {
        if key.is_empty() {
            self.problems.push(what.to_owned());
        } else {
            self.problems.push(format!("{key}: {what}"));
        }
    }

    pub(super) fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }

    fn wrong_type(&mut self, key: &str, expected: &str, found: &toml::Value) {
        self.problem(
            key,
            &format!("expected {expected}, found {}", found.type_str()),
        );
    }

    /// Reports every key of `table` that is not in `known`.
    pub(super) fn only_keys(&mut self, at: &str, table: &toml::Table, known: &[&str]) {
        for key in table.keys() {
            if !known.contains(&key.as_str()) {
                let full = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                self.problem(
                    &full,
                    &format!("unknown key (known keys: {})", known.join(", ")),
                );
            }
        }
    }

    pub(super) fn table<'a>(
        &mut self,
        key: &str,
        raw: Option<&'a toml::Value>,
    ) -> Option<&'a toml::Table> {
        match raw? {
            toml::Value::Table(t) => Some(t),
            other => {
                self.wrong_type(key, "a table", other);
                None
            }
        }
    }

    pub(super) fn string(&mut self, key: &str, raw: Option<&toml::Value>) -> Option<String> {
        match raw? {
            toml::Value::String(s) if s.contains('\0') => {
                self.problem(key, "contains a NUL byte");
                None
            }
            toml::Value::String(s) => Some(s.clone()),
            other => {
                self.wrong_type(key, "a string", other);
                None
            }
        }
    }

    pub(super) fn bool(&mut self, key: &str, raw: Option<&toml::Value>) -> Option<bool> {
        match raw? {
            toml::Value::Boolean(b) => Some(*b),
            other => {
                self.wrong_type(key, "true or false", other);
                None
            }
        }
    }

    pub(super) fn integer(
        &mut self,
        key: &str,
        raw: Option<&toml::Value>,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        match raw? {
            toml::Value::Integer(n) if (min..=max).contains(n) => Some(*n),
            toml::Value::Integer(n) => {
                self.problem(key, &format!("{n} is outside {min}..={max}"));
                None
            }
            other => {
                self.wrong_type(key, "an integer", other);
                None
            }
        }
    }

    pub(super) fn string_list(
        &mut self,
        key: &str,
        raw: Option<&toml::Value>,
    ) -> Option<Vec<String>> {
        match raw? {
            toml::Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(self.string(&format!("{key}[{i}]"), Some(item))?);
                }
                Some(out)
            }
            other => {
                self.wrong_type(key, "a list of strings", other);
                None
            }
        }
    }

    /// One of a few words, each standing for a value: `"x" is not one of "a", "b"` otherwise.
    pub(super) fn choice<T: Copy>(
        &mut self,
        key: &str,
        raw: Option<&toml::Value>,
        options: &[(&str, T)],
    ) -> Option<T> {
        let text = self.string(key, raw)?;
        if let Some((_, value)) = options.iter().find(|(word, _)| *word == text) {
            return Some(*value);
        }
        let words: Vec<String> = options.iter().map(|(w, _)| format!("{w:?}")).collect();
        self.problem(key, &format!("{text:?} is not one of {}", words.join(", ")));
        None
    }

    /// A list of integers, each within `min..=max`; the good ones when some are not.
    pub(super) fn integer_list(
        &mut self,
        key: &str,
        raw: &toml::Value,
        min: i64,
        max: i64,
    ) -> Vec<i32> {
        let toml::Value::Array(items) = raw else {
            self.wrong_type(key, "a list of integers", raw);
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if let Some(n) = self.integer(&format!("{key}[{i}]"), Some(item), min, max) {
                out.push(n as i32);
            }
        }
        out
    }

    pub(super) fn duration(&mut self, key: &str, raw: Option<&toml::Value>) -> Option<Duration> {
        let text = self.string(key, raw)?;
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(key, &e);
                None
            }
        }
    }
}

/// Parses `"250ms"`, `"5s"`, `"1.5s"`, `"2m"`, `"1h"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (write e.g. \"250ms\", \"5s\", \"2m\")");
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let secs = n * scale;
    if !secs.is_finite() || secs > 86_400.0 * 365.0 {
        return Err(format!("{text:?} is too long"));
    }
    Ok(Duration::from_secs_f64(secs))
}

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", 16),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// Parses `"SIGTERM"`, `"term"` or `"15"` into a signal number.
pub fn parse_signal(text: &str) -> Result<i32, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        return Err(format!("{n} is not a signal number (1..=64)"));
    }
    let upper = t.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS
        .iter()
        .find(|(name, _)| *name == bare)
        .map(|(_, n)| *n)
        .ok_or_else(|| format!("{text:?} is not a signal name (e.g. \"SIGTERM\", \"USR1\")"))
}

/// The `SIGxxx` name of a signal number, for messages.
pub fn signal_name(sig: i32) -> String {
    SIGNALS
        .iter()
        .find(|(_, n)| *n == sig)
        .map(|(name, _)| format!("SIG{name}"))
        .unwrap_or_else(|| format!("signal {sig}"))
}

pub(super) fn signal_of(raw: &toml::Value) -> Result<i32, String> {
    match raw {
        toml::Value::String(s) => parse_signal(s),
        toml::Value::Integer(n) => parse_signal(&n.to_string()),
        other => Err(format!(
            "expected a signal name or number, found {}",
            other.type_str()
        )),
    }
}

/// Splits an `http://host[:port][/path]` URL for the readiness probe.
pub(super) fn http_url(url: &str) -> Result<HttpUrl, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?} does not start with http:// (https is not probed)"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let with_port = match authority.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => authority.to_owned(),
        Some((_, port)) if !authority.ends_with(']') => {
            return Err(format!("{url:?} has a bad port {port:?}"));
        }
        _ => format!("{authority}:80"),
    };
    Ok(HttpUrl {
        authority: with_port,
        host: authority.to_owned(),
        path: path.to_owned(),
    })
}
