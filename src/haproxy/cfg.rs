//! Reading a rendered `haproxy.cfg` back, and planning how to apply it.
//!
//! A config is split into its **servers** (`server` lines of `backend` and `listen` sections,
//! keyed by backend and name) and its **skeleton** (every other line, comments and spacing
//! normalised). [`plan`] compares two configs: when the skeletons are equal and every server
//! kept its options, the difference is a list of runtime operations (add, move, remove), so a
//! change of membership never reloads HAProxy; anything else is a structural change and asks
//! for a reload. Startup and change share this one path: `plan(None, new)` is the first start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// One `server` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Its backend (or `listen` section).
    pub backend: String,
    /// Its name.
    pub name: String,
    /// The address as written (`10.0.0.5:3000`).
    pub addr: String,
    /// The address when it is a literal IP and port.
    pub endpoint: Option<SocketAddr>,
    /// The options after the address.
    pub args: Vec<String>,
    /// The backend's `default-server` options (those of the `defaults` section first), which
    /// HAProxy does not apply to servers added at run time.
    pub defaults: Vec<String>,
}

/// Options `add server` refuses on HAProxy 2.6, with the number of values each takes.
const NOT_AT_RUNTIME: &[(&str, usize)] = &[
    ("cookie", 1),
    ("resolvers", 1),
    ("resolve-prefer", 1),
    ("resolve-net", 1),
    ("resolve-opts", 1),
    ("init-addr", 1),
    ("redir", 1),
    ("namespace", 1),
    ("log-proto", 1),
    ("disabled", 0),
    ("enabled", 0),
];

impl Server {
    /// The options for `add server`: the defaults, then the line's own, without those HAProxy
    /// 2.6 refuses at run time (a server is added in maintenance anyway).
    pub fn runtime_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut words = self.defaults.iter().chain(&self.args);
        while let Some(w) = words.next() {
            match NOT_AT_RUNTIME.iter().find(|(k, _)| k == w) {
                Some((_, n)) => {
                    for _ in 0..*n {
                        words.next();
                    }
                }
                None => out.push(w.clone()),
            }
        }
        out
    }

    /// Whether the server is health-checked (`check` in its options or its defaults, and no
    /// later `no-check`).
    pub fn checked(&self) -> bool {
        self.last_of("check", "no-check")
    }

    /// Its `id` option.
    pub fn id(&self) -> Option<u32> {
        let at = self.args.iter().rposition(|w| w == "id")?;
        self.args.get(at + 1)?.parse().ok()
    }

    /// Whether the config starts it disabled.
    pub fn disabled(&self) -> bool {
        self.last_of("disabled", "enabled")
    }

    fn last_of(&self, yes: &str, no: &str) -> bool {
        let mut on = false;
        for w in self.defaults.iter().chain(&self.args) {
            if w == yes {
                on = true;
            } else if w == no {
                on = false;
            }
        }
        on
    }
}

/// A rendered config read back into its servers and its skeleton (and the few global
/// settings the sync needs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// Every line but server lines, comments removed, words joined by one space.
    pub skeleton: Vec<String>,
    /// Server lines by (backend, name).
    pub servers: BTreeMap<(String, String), Server>,
    /// The admin stats socket (`stats socket PATH … level admin` in `global`).
    pub admin_socket: Option<PathBuf>,
    /// The `server-state-file` (joined to `server-state-base` when relative).
    pub state_file: Option<PathBuf>,
    /// Backends whose stick table stores server ids: sessions stick by server name, through
    /// one entry per server (name → id) that the sync keeps.
    pub name_tables: std::collections::BTreeSet<String>,
}

impl Rendered {
    /// The runtime command that points `s`'s backend's name-keyed stick table at it, when
    /// that backend has one and the server has an `id`.
    pub fn stick_entry(&self, s: &Server) -> Option<String> {
        if !self.name_tables.contains(&s.backend) {
            return None;
        }
        let sid = s.id()?;
        Some(format!(
            "set table {} key {} data.server_id {sid}",
            s.backend, s.name
        ))
    }

    /// [`Rendered::stick_entry`] for every server.
    pub fn stick_entries(&self) -> Vec<String> {
        self.servers
            .values()
            .filter_map(|s| self.stick_entry(s))
            .collect()
    }
}

const SECTIONS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "resolvers",
    "peers",
    "userlist",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "fcgi-app",
];

/// Splits a config line into words: `#` starts a comment outside quotes, quotes are kept.
pub fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('\\', _) => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ('"' | '\'', None) => {
                quote = Some(c);
                cur.push(c);
            }
            (c, Some(q)) if c == q => {
                quote = None;
                cur.push(c);
            }
            ('#', None) => break,
            (c, None) if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            (c, _) => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Reads a rendered config.
pub fn parse(text: &str) -> Rendered {
    let mut p = Rendered::default();
    let mut section = String::new();
    let mut section_name = String::new();
    let mut defaults_ds: Vec<String> = Vec::new();
    let mut backend_ds: Vec<String> = Vec::new();
    let mut state_base: Option<String> = None;
    let mut state_file: Option<String> = None;
    for line in text.lines() {
        let w = words(line);
        let Some(first) = w.first() else { continue };
        if SECTIONS.contains(&first.as_str()) {
            section = first.clone();
            section_name = w.get(1).cloned().unwrap_or_default();
            backend_ds.clear();
            if section == "defaults" {
                defaults_ds.clear();
            }
            p.skeleton.push(w.join(" "));
            continue;
        }
        let proxy = section == "backend" || section == "listen";
        match first.as_str() {
            "server" if proxy && w.len() >= 3 => {
                let s = Server {
                    backend: section_name.clone(),
                    name: w[1].clone(),
                    addr: w[2].clone(),
                    endpoint: w[2].parse().ok(),
                    args: w[3..].to_vec(),
                    defaults: defaults_ds.iter().chain(&backend_ds).cloned().collect(),
                };
                p.servers.insert((s.backend.clone(), s.name.clone()), s);
                continue;
            }
            "stick-table" if proxy && w.iter().any(|x| x == "server_id") => {
                p.name_tables.insert(section_name.clone());
            }
            "default-server" if section == "defaults" => defaults_ds.extend(w[1..].iter().cloned()),
            "default-server" if proxy => backend_ds.extend(w[1..].iter().cloned()),
            "stats" if section == "global" && w.get(1).map(String::as_str) == Some("socket") => {
                let admin = w.windows(2).any(|p| p[0] == "level" && p[1] == "admin");
                if admin && p.admin_socket.is_none() {
                    if let Some(path) = w.get(2) {
                        let path = path.strip_prefix("unix@").unwrap_or(path);
                        if path.starts_with('/') {
                            p.admin_socket = Some(PathBuf::from(path));
                        }
                    }
                }
            }
            "server-state-base" if section == "global" => state_base = w.get(1).cloned(),
            "server-state-file" if section == "global" => state_file = w.get(1).cloned(),
            _ => {}
        }
        p.skeleton.push(w.join(" "));
    }
    p.state_file = state_file.map(|f| match (&state_base, f.starts_with('/')) {
        (Some(base), false) => PathBuf::from(base).join(f),
        _ => PathBuf::from(f),
    });
    p
}

/// What to do to a running HAProxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Add this server (in maintenance), wait for its first good check when it has one, then
    /// put it in service (unless its line says `disabled`).
    Add(Server),
    /// The server moved: same name, new address.
    Move(Server),
    /// Take the server out: drained first when `gently` (the member is leaving), at once
    /// otherwise (it failed or vanished), then deleted.
    Remove {
        /// Its backend.
        backend: String,
        /// Its name.
        name: String,
        /// Drain before removing.
        gently: bool,
    },
}

/// The result of comparing the running config with a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The configs are the same: nothing to do.
    Nothing,
    /// Runtime operations are enough.
    Runtime(Vec<Op>),
    /// A reload is needed, for this reason.
    Reload(String),
}

/// Compares the running config (`None`: HAProxy is not running yet) with `new`. `leaving`
/// tells whether a server's member is leaving gracefully (its server is drained).
pub fn plan(old: Option<&Rendered>, new: &Rendered, leaving: &dyn Fn(&str) -> bool) -> Plan {
    let Some(old) = old else {
        return Plan::Reload("first configuration".to_owned());
    };
    if old.skeleton != new.skeleton {
        let line = old
            .skeleton
            .iter()
            .zip(&new.skeleton)
            .find(|(a, b)| a != b)
            .map(|(_, b)| b.clone())
            .or_else(|| new.skeleton.get(old.skeleton.len()).cloned())
            .unwrap_or_else(|| "lines removed".to_owned());
        return Plan::Reload(format!("the config changed beyond its servers: {line:?}"));
    }
    let mut ops = Vec::new();
    for (key, s) in &new.servers {
        match old.servers.get(key) {
            None => ops.push(Op::Add(s.clone())),
            Some(o) if o == s => {}
            Some(o) if o.args == s.args && o.defaults == s.defaults => match s.endpoint {
                Some(_) => ops.push(Op::Move(s.clone())),
                None => {
                    return Plan::Reload(format!(
                        "server {}/{} moved to {:?}, not an IP:port",
                        s.backend, s.name, s.addr
                    ));
                }
            },
            Some(_) => {
                return Plan::Reload(format!(
                    "the options of server {}/{} changed",
                    s.backend, s.name
                ));
            }
        }
    }
    for (backend, name) in old.servers.keys() {
        if !new.servers.contains_key(&(backend.clone(), name.clone())) {
            ops.push(Op::Remove {
                backend: backend.clone(),
                name: name.clone(),
                gently: leaving(name),
            });
        }
    }
    if ops.is_empty() {
        Plan::Nothing
    } else {
        Plan::Runtime(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "\
global
    stats socket /run/haproxy/admin.sock mode 600 level admin   # the sync's socket
    server-state-base /var/lib/haproxy
    server-state-file state
defaults
    mode http
    default-server inter 1s
backend nodes
    balance roundrobin
    default-server check rise 1
";

    fn config(servers: &[(&str, &str)]) -> Rendered {
        let mut text = BASE.to_owned();
        for (name, addr) in servers {
            text.push_str(&format!("    server {name} {addr} cookie {name}\n"));
        }
        text.push_str("listen stats\n    bind :1936\n");
        parse(&text)
    }

    fn check(old: &[(&str, &str)], new: &[(&str, &str)], expect: &str) {
        let leaving = |name: &str| name.starts_with("leaving");
        let got = match plan(Some(&config(old)), &config(new), &leaving) {
            Plan::Nothing => "nothing".to_owned(),
            Plan::Reload(why) => format!("reload: {why}"),
            Plan::Runtime(ops) => ops
                .iter()
                .map(|op| match op {
                    Op::Add(s) => format!("add {}/{} {}", s.backend, s.name, s.addr),
                    Op::Move(s) => format!("move {}/{} {}", s.backend, s.name, s.addr),
                    Op::Remove {
                        backend,
                        name,
                        gently,
                    } => format!(
                        "remove {backend}/{name}{}",
                        if *gently { " gently" } else { "" }
                    ),
                })
                .collect::<Vec<_>>()
                .join("; "),
        };
        assert_eq!(got, expect);
    }

    #[test]
    fn membership_changes_are_runtime_operations() {
        check(&[], &[], "nothing");
        check(
            &[("a", "10.0.0.1:3000")],
            &[("a", "10.0.0.1:3000")],
            "nothing",
        );
        check(&[], &[("a", "10.0.0.1:3000")], "add nodes/a 10.0.0.1:3000");
        check(
            &[
                ("a", "10.0.0.1:3000"),
                ("leaving-b", "10.0.0.2:3000"),
                ("c", "10.0.0.3:3000"),
            ],
            &[("a", "10.0.0.9:3000")],
            "move nodes/a 10.0.0.9:3000; remove nodes/c; remove nodes/leaving-b gently",
        );
    }

    #[test]
    fn structural_changes_reload() {
        let old = config(&[("a", "10.0.0.1:3000")]);
        let mut text = BASE.replace("roundrobin", "leastconn");
        text.push_str("    server a 10.0.0.1:3000 cookie a\nlisten stats\n    bind :1936\n");
        match plan(Some(&old), &parse(&text), &|_| false) {
            Plan::Reload(why) => assert!(why.contains("balance leastconn"), "{why}"),
            other => panic!("{other:?}"),
        }
        check(
            &[("a", "10.0.0.1:3000")],
            &[("a", "web:3000")],
            "reload: server nodes/a moved to \"web:3000\", not an IP:port",
        );
        assert_eq!(
            plan(None, &config(&[]), &|_| false),
            Plan::Reload("first configuration".to_owned())
        );
    }

    #[test]
    fn comments_and_spacing_are_not_structure() {
        let a = parse("global\n  maxconn 10 # ten\n\nbackend b\n  server s 1.2.3.4:5\n");
        let b =
            parse("global\n\tmaxconn   10\nbackend b # the backend\n  server s 1.2.3.4:5 # x\n");
        assert_eq!(a, b);
    }

    #[test]
    fn reads_sockets_state_file_and_defaults() {
        let p = config(&[("a", "10.0.0.1:3000")]);
        assert_eq!(
            p.admin_socket,
            Some(PathBuf::from("/run/haproxy/admin.sock"))
        );
        assert_eq!(p.state_file, Some(PathBuf::from("/var/lib/haproxy/state")));
        let s = &p.servers[&("nodes".to_owned(), "a".to_owned())];
        assert_eq!(s.endpoint, Some("10.0.0.1:3000".parse().expect("addr")));
        assert_eq!(s.runtime_args(), ["inter", "1s", "check", "rise", "1"]);
        assert!(s.checked());
        assert!(!s.disabled());
        assert_eq!(s.id(), None);
        let t = parse(
            "backend b\n  stick-table type string len 64 size 1k store server_id\n  server s 1.2.3.4:5 id 42\n",
        );
        assert_eq!(t.name_tables.iter().collect::<Vec<_>>(), ["b"]);
        assert_eq!(t.servers[&("b".to_owned(), "s".to_owned())].id(), Some(42));
        assert_eq!(t.stick_entries(), ["set table b key s data.server_id 42"]);
        assert!(
            p.stick_entries().is_empty(),
            "no name-keyed table, no entry"
        );
    }

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(
            words(r#"  http-request return string "a # b" \# c # comment"#),
            ["http-request", "return", "string", "\"a # b\"", "\\#", "c"]
        );
    }
}
