//! `muster event`, `muster query`, `muster keys` and `muster force-leave`: the `serf`
//! commands for people without Serf installed. Each talks to the running muster through
//! Serf's agent RPC (`[gossip] rpc_addr`), as `serf` would, so it works against a Serf agent
//! too.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::gossip::agent::client::{Client, raw};
use crate::gossip::msgpack::Value;

/// The common flags of the four commands.
const COMMON: &str = "\
Common options:
      --rpc-addr ADDR   the agent RPC (default: $MUSTER_RPC_ADDR, else 127.0.0.1:7373)
      --rpc-auth KEY    its auth key ([gossip] rpc_auth; default: $MUSTER_RPC_AUTH)
";

/// Help of each command.
pub fn help(name: &str) -> String {
    let usage = match name {
        "event" => {
            "muster event: send a user event to the cluster (as serf event)\n\nUsage:\n  muster event [--no-coalesce] NAME [PAYLOAD]\n\nName and payload together: at most 512 bytes (Serf's limit).\n"
        }
        "query" => {
            "muster query: ask the cluster and print the answers (as serf query)\n\nUsage:\n  muster query [--node NAME]... [--tag KEY=REGEX]... [--timeout DUR] [--no-ack]\n               [--format text|json] NAME [PAYLOAD]\n\nPrints each acknowledgement and answer as it comes, then the totals.\n"
        }
        "keys" => {
            "muster keys: the cluster's gossip keys (as serf keys)\n\nUsage:\n  muster keys --list | --install KEY | --use KEY | --remove KEY\n\nRotation: --install the new key, --use it, then --remove the old one. Exit 1 when a\nmember failed (each one's error is printed).\n"
        }
        _ => {
            "muster force-leave: mark a failed member as left (as serf force-leave)\n\nUsage:\n  muster force-leave [--prune] NODE\n\n--prune forgets the member at once.\n"
        }
    };
    format!("{usage}\n{COMMON}")
}

/// One of the four commands, parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct Agent {
    /// `event`, `query`, `keys` or `force-leave`.
    pub command: String,
    /// Positional arguments.
    pub args: Vec<String>,
    /// Flags without a value (`no-coalesce`, `no-ack`, `prune`, `list`).
    pub switches: Vec<String>,
    /// Flags with a value, in order.
    pub options: Vec<(String, String)>,
}

const SWITCHES: &[&str] = &["no-coalesce", "no-ack", "prune", "list"];
const OPTIONS: &[&str] = &[
    "rpc-addr", "rpc-auth", "node", "tag", "timeout", "format", "install", "use", "remove",
];

/// Reads the arguments after the command's name; `Ok(None)` for `--help`.
pub fn parse(command: &str, parser: &mut lexopt::Parser) -> Result<Option<Agent>, String> {
    use lexopt::prelude::*;
    let mut a = Agent {
        command: command.to_owned(),
        args: Vec::new(),
        switches: Vec::new(),
        options: Vec::new(),
    };
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long(l) if SWITCHES.contains(&l) => a.switches.push(l.to_owned()),
            Long(l) if OPTIONS.contains(&l) => {
                let l = l.to_owned();
                let v = parser.value().map_err(|e| e.to_string())?;
                let v = v
                    .into_string()
                    .map_err(|v| format!("--{l} {v:?} is not UTF-8"))?;
                a.options.push((l, v));
            }
            Value(v) => a
                .args
                .push(v.into_string().map_err(|v| format!("{v:?} is not UTF-8"))?),
            other => return Err(other.unexpected().to_string()),
        }
    }
    let wanted = match command {
        "event" | "query" => 1..=2,
        "force-leave" => 1..=1,
        _ => 0..=0,
    };
    if !wanted.contains(&a.args.len()) {
        return Err(format!(
            "{command}: wrong number of arguments (see muster {command} --help)"
        ));
    }
    Ok(Some(a))
}

impl Agent {
    fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.options
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn has(&self, switch: &str) -> bool {
        self.switches.iter().any(|s| s == switch)
    }
}

/// Runs one of the commands; the exit code (1 when the agent said no, 64 for bad arguments).
pub fn run(a: &Agent, env: impl Fn(&str) -> Option<String>) -> i32 {
    let addr = a
        .option("rpc-addr")
        .map(str::to_owned)
        .or_else(|| env("MUSTER_RPC_ADDR"))
        .unwrap_or_else(|| "127.0.0.1:7373".to_owned());
    let auth = a
        .option("rpc-auth")
        .map(str::to_owned)
        .or_else(|| env("MUSTER_RPC_AUTH"));
    let result =
        Client::connect(&addr, auth.as_deref(), Duration::from_secs(10)).and_then(|mut c| match a
            .command
            .as_str()
        {
            "event" => event(&mut c, a),
            "query" => query(&mut c, a),
            "keys" => keys(&mut c, a),
            _ => force_leave(&mut c, a),
        });
    match result {
        Ok(()) => 0,
        Err(e) if e.starts_with("usage: ") => {
            eprintln!("muster {}: {}", a.command, &e["usage: ".len()..]);
            crate::cli::EXIT_USAGE
        }
        Err(e) => {
            eprintln!("muster {}: {e}", a.command);
            1
        }
    }
}

fn event(c: &mut Client, a: &Agent) -> Result<(), String> {
    let name = &a.args[0];
    let payload = a.args.get(1).map_or("", String::as_str);
    let seq = c.send(
        "event",
        Some(Value::map([
            ("Name", raw(name)),
            ("Payload", raw(payload)),
            ("Coalesce", Value::Bool(!a.has("no-coalesce"))),
        ])),
    )?;
    c.header(seq)?;
    println!("event {name:?} sent");
    Ok(())
}

fn force_leave(c: &mut Client, a: &Agent) -> Result<(), String> {
    let seq = c.send(
        "force-leave",
        Some(Value::map([
            ("Node", raw(&a.args[0])),
            ("Prune", Value::Bool(a.has("prune"))),
        ])),
    )?;
    c.header(seq)?;
    println!("{} forced to leave", a.args[0]);
    Ok(())
}

fn keys(c: &mut Client, a: &Agent) -> Result<(), String> {
    let ops = [
        ("install", "install-key"),
        ("use", "use-key"),
        ("remove", "remove-key"),
    ];
    let chosen: Vec<(&str, &str)> = ops
        .iter()
        .filter_map(|(flag, cmd)| a.option(flag).map(|k| (*cmd, k)))
        .collect();
    let seq = match (chosen.as_slice(), a.has("list")) {
        ([], true) => c.send("list-keys", None)?,
        ([(cmd, key)], false) => c.send(cmd, Some(Value::map([("Key", raw(key))])))?,
        _ => return Err("usage: give exactly one of --list, --install, --use, --remove".into()),
    };
    // The body follows the header even when members failed: read both, then report.
    let header = c.header(seq);
    let body = c.object()?;
    if let Some(Value::Map(msgs)) = body.get("Messages") {
        for (node, msg) in msgs {
            println!("failed: {} {}", show(node), show(msg));
        }
    }
    if a.has("list") {
        let nodes = body.get("NumNodes").and_then(Value::as_u64).unwrap_or(0);
        if let Some(Value::Map(keys)) = body.get("Keys") {
            for (key, count) in keys {
                println!("{}  [{}/{nodes}]", show(key), count.as_u64().unwrap_or(0));
            }
        }
    } else if header.is_ok() {
        println!("done on every member");
    }
    header
}

fn show(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

fn query(c: &mut Client, a: &Agent) -> Result<(), String> {
    let timeout = match a.option("timeout") {
        Some(t) => {
            crate::config::parse_duration(t).map_err(|e| format!("usage: --timeout {t:?}: {e}"))?
        }
        None => Duration::ZERO,
    };
    let json = match a.option("format") {
        None | Some("text") => false,
        Some("json") => true,
        Some(f) => return Err(format!("usage: --format {f:?}: use text or json")),
    };
    let mut tags = BTreeMap::new();
    for t in a.all("tag") {
        let (k, v) = t
            .split_once('=')
            .ok_or_else(|| format!("usage: --tag {t:?}: write KEY=REGEX"))?;
        tags.insert(k.to_owned(), v.to_owned());
    }
    let nodes: Vec<Value> = a.all("node").map(raw).collect();
    let body = Value::map([
        ("FilterNodes", Value::Array(nodes)),
        (
            "FilterTags",
            Value::Map(tags.iter().map(|(k, v)| (raw(k), raw(v))).collect()),
        ),
        ("RequestAck", Value::Bool(!a.has("no-ack"))),
        ("RelayFactor", Value::Uint(0)),
        (
            "Timeout",
            Value::Uint(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX)),
        ),
        ("Name", raw(&a.args[0])),
        ("Payload", raw(a.args.get(1).map_or("", String::as_str))),
    ]);
    let seq = c.send("query", Some(body))?;
    c.header(seq)?;
    c.read_timeout(timeout.max(Duration::from_secs(10)) + Duration::from_secs(5));
    let (mut acks, mut answers) = (Vec::new(), BTreeMap::new());
    loop {
        c.header(seq)?;
        let r = c.object()?;
        let from = r.get("From").map(show).unwrap_or_default();
        match r.get("Type").and_then(Value::as_str) {
            Some("ack") => {
                if !json {
                    println!("ack from {from}");
                }
                acks.push(from);
            }
            Some("response") => {
                let payload = r.get("Payload").and_then(Value::as_bytes).unwrap_or(&[]);
                let text = String::from_utf8_lossy(payload).into_owned();
                if !json {
                    println!("response from {from}: {}", text.trim_end());
                }
                answers.insert(from, text);
            }
            _ => break,
        }
    }
    if json {
        let out = serde_json::json!({"acks": acks, "responses": answers});
        println!("{out}");
    } else {
        println!("{} acks, {} responses", acks.len(), answers.len());
    }
    Ok(())
}
