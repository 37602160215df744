//! The command line: parses arguments, prints help, and turns every outcome into an exit code
//! (the main service's, or 64 for a bad command line or configuration, as linkerd and BSD's
//! sysexits do).

use std::ffi::OsString;
use std::path::PathBuf;

use crate::config::{self, Config};

/// Exit code for a bad command line or configuration (EX_USAGE).
pub const EXIT_USAGE: i32 = 64;

const HELP: &str = "\
muster: PID 1 for load-balanced web containers

Usage:
  muster [OPTIONS] [--config PATH]     run the services declared in a TOML file
  muster [OPTIONS] [--] CMD [ARGS...]  run one command, like tini or dumb-init
  muster check-config [PATH]           validate a configuration, print every problem
  muster members [--format json] [--socket PATH]
                                       the cluster as a running muster sees it (with [gossip])
  muster event NAME [PAYLOAD]          send a user event (as serf event)
  muster query NAME [PAYLOAD]          ask the cluster, print the answers (as serf query)
  muster keys --list|--install K|--use K|--remove K
                                       the cluster's gossip keys (as serf keys)
  muster force-leave NODE              mark a failed member as left (as serf force-leave)
  muster version                       print the version

Options:
      --config PATH       TOML file (default: $MUSTER_CONFIG, else /etc/muster/muster.toml)
      --stop-timeout DUR  budget of the whole stop, first SIGTERM to exit (default 9s)
  -v, --verbose           more of muster's own messages: -v info, -vv debug, -vvv trace
  -s                      accepted for tini: muster is a subreaper whenever it is not PID 1
  -h, --help              print this help
  -V, --version           print the version

Options for one command (CMD) only:
      --stop-signal SIG   signal CMD gets at the stop (default: the one muster received)
      --no-group          send signals to CMD alone, not to its whole process group
  -c, --single-child      the same as --no-group (dumb-init's flag)
  -g                      send signals to CMD's process group (the default; tini's flag)
  -r, --rewrite S:R       send signal R when signal S comes (names or numbers; R=0: none)
  -e CODE                 exit 0 when CMD exits with CODE (128+N for signal N; tini's flag)

-r and -e can be repeated. Only --config takes a path; -c takes nothing (CMD follows).

muster reaps every zombie and forwards every signal it can catch but SIGCHLD to the main
service's whole process group, real-time signals included. SIGTSTP, SIGTTIN and SIGTTOU
also stop muster until SIGCONT, as dumb-init does (not as PID 1). SIGTERM and SIGINT stop
services in reverse dependency order within the stop timeout: CMD gets the signal muster
received. The README's table says what becomes of each signal.
muster exits with the main service's code, 128+N when a signal N killed it, 126/127 when it
could not be executed, 64 for a bad command line or configuration.

The configuration can also make muster a member of the cluster by gossip, in HashiCorp
Serf's wire format ([gossip]), ship every service's log lines to a collector over RELP
([logship]), and, on the load balancer, run HAProxy and keep its servers equal to the live
members through its runtime API ([haproxy]). See images/muster.sample.toml.

Environment (a flag wins over its variable):
  MUSTER_CONFIG         configuration file when --config is not given
  MUSTER_STOP_TIMEOUT   as --stop-timeout (with a configuration too: replaces stop_timeout)
  MUSTER_STOP_SIGNAL    as --stop-signal
  MUSTER_NO_GROUP       1 or true: as --no-group
  MUSTER_REWRITE        as -r, a list: 15:3,2:0
  MUSTER_SUCCESS_CODES  as -e, a list: 143,130
  MUSTER_LOG            muster's own log level: error, warn, info, debug, trace, off
                        (default: info with a configuration, error with a single command)
  MUSTER_LOG_FORMAT     text (default) or json (one object per line)
";

const CHECK_HELP: &str = "\
muster check-config: validate a configuration file

Usage:
  muster check-config [PATH]

PATH defaults to $MUSTER_CONFIG, else /etc/muster/muster.toml. Prints every problem, one per
line, naming the key it is about, and exits 64 when there is any; prints a summary and exits 0
otherwise.
";

const MEMBERS_HELP: &str = "\
muster members: the cluster as a running muster sees it

Usage:
  muster members [--format text|json] [--socket PATH]

Asks the muster running in this container (through its control socket, by default
/run/muster/control.sock) for every member it knows: name, address, status (alive, suspect,
failed, left) and tags. Needs a [gossip] table in that muster's configuration.
";

const VERSION_HELP: &str = "\
muster version: print muster's version

Usage:
  muster version
";

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Command {
    Run {
        config: Option<PathBuf>,
        flags: Flags,
    },
    Single {
        argv: Vec<String>,
        flags: Flags,
    },
    Check(Option<PathBuf>),
    Members {
        json: bool,
        socket: PathBuf,
    },
    Version,
    Help(&'static str),
    /// `event`, `query`, `keys`, `force-leave`: through the agent RPC.
    Agent(crate::agent_cli::Agent),
    /// The help of one of those.
    AgentHelp(String),
}

/// The options of a run, from the command line.
#[derive(Debug, Default, PartialEq)]
struct Flags {
    /// The knobs of a single command (`--stop-timeout` applies to a configuration too).
    single: config::Single,
    /// How many `-v`.
    verbose: u8,
    /// The flags given that only mean something for one command, with the configuration key
    /// that does the same, for the message when a configuration is run.
    single_only: Vec<(&'static str, &'static str)>,
}

fn parse(args: Vec<OsString>) -> Result<Command, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut config = None;
    let mut flags = Flags::default();
    let mut first = true;
    loop {
        if let Some(mut raw) = parser.try_raw_args() {
            if raw.peek().is_some_and(|a| a == "--") {
                raw.next();
                return single(raw.collect(), flags);
            }
        }
        let Some(arg) = parser.next().map_err(|e| e.to_string())? else {
            return run(config, flags);
        };
        let at_start = std::mem::replace(&mut first, false);
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(HELP)),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long("config") => {
                config = Some(PathBuf::from(parser.value().map_err(|e| e.to_string())?));
            }
            Value(v) if at_start => {
                if let Some(command) = subcommand(&v, &mut parser)? {
                    return Ok(command);
                }
                if config.is_some() {
                    return Err(format!("unexpected argument {v:?} after --config"));
                }
                let mut argv = vec![v];
                argv.extend(parser.raw_args().map_err(|e| e.to_string())?);
                return single(argv, flags);
            }
            Value(v) if config.is_none() => {
                let mut argv = vec![v];
                argv.extend(parser.raw_args().map_err(|e| e.to_string())?);
                return single(argv, flags);
            }
            Short(c) => run_flag(&Opt::Short(c), &mut parser, &mut flags)?,
            Long(l) => {
                let l = l.to_owned();
                run_flag(&Opt::Long(l), &mut parser, &mut flags)?
            }
            Value(v) => return Err(format!("unexpected argument {v:?} after --config")),
        }
    }
}

/// An option, as given.
enum Opt {
    Short(char),
    Long(String),
}

/// One option of a run (anything but --config, --help, --version and the command).
fn run_flag(opt: &Opt, parser: &mut lexopt::Parser, flags: &mut Flags) -> Result<(), String> {
    use Opt::{Long, Short};
    let text = |parser: &mut lexopt::Parser, flag: &str| -> Result<String, String> {
        let v = parser.value().map_err(|e| e.to_string())?;
        v.into_string()
            .map_err(|v| format!("{flag} {v:?}: not valid UTF-8"))
    };
    let single = &mut flags.single;
    let long = match opt {
        Long(l) => l.as_str(),
        Short(_) => "",
    };
    match (opt, long) {
        (Short('v'), _) | (_, "verbose") => flags.verbose = flags.verbose.saturating_add(1),
        // muster makes itself a subreaper whenever it is not PID 1.
        (Short('s'), _) => {}
        (_, "stop-timeout") => {
            let t = text(parser, "--stop-timeout")?;
            single.stop_timeout =
                Some(config::parse_duration(&t).map_err(|e| format!("--stop-timeout: {e}"))?);
        }
        (_, "stop-signal") => {
            let t = text(parser, "--stop-signal")?;
            single.stop_signal =
                Some(config::parse_signal(&t).map_err(|e| format!("--stop-signal: {e}"))?);
            flags.single_only.push(("--stop-signal", "stop_signal"));
        }
        (Short('c'), _) | (_, "single-child" | "no-group") => {
            single.group = Some(false);
            flags.single_only.push(("--no-group", "signal_group"));
        }
        (Short('g'), _) => {
            single.group = Some(true);
            flags.single_only.push(("-g", "signal_group"));
        }
        (Short('r'), _) | (_, "rewrite") => {
            let t = text(parser, "--rewrite")?;
            let (from, to) = rewrite(&t).map_err(|e| format!("--rewrite {t}: {e}"))?;
            single.signal_map.insert(from, to);
            flags.single_only.push(("--rewrite", "signal_map"));
        }
        (Short('e'), _) => {
            let t = text(parser, "-e")?;
            single
                .success_codes
                .push(exit_code(&t).map_err(|e| format!("-e {t}: {e}"))?);
            flags.single_only.push(("-e", "success_codes"));
        }
        (Short(c), _) => return Err(format!("invalid option '-{c}'")),
        (Long(l), _) => return Err(format!("invalid option '--{l}'")),
    }
    Ok(())
}

/// `check-config`, `members`, `version` and `help` as the first argument.
fn subcommand(v: &OsString, parser: &mut lexopt::Parser) -> Result<Option<Command>, String> {
    use lexopt::prelude::*;
    let command = match v.to_str() {
        Some("check-config") => {
            let mut path = None;
            while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
                match arg {
                    Short('h') | Long("help") => return Ok(Some(Command::Help(CHECK_HELP))),
                    Value(p) if path.is_none() => path = Some(PathBuf::from(p)),
                    other => return Err(other.unexpected().to_string()),
                }
            }
            Command::Check(path)
        }
        Some("members") => {
            let mut json = false;
            let mut socket = PathBuf::from(config::DEFAULT_CONTROL_SOCKET);
            while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
                match arg {
                    Short('h') | Long("help") => return Ok(Some(Command::Help(MEMBERS_HELP))),
                    Long("format") => {
                        let f = parser.value().map_err(|e| e.to_string())?;
                        match f.to_str() {
                            Some("json") => json = true,
                            Some("text") => json = false,
                            _ => return Err(format!("--format {f:?}: use text or json")),
                        }
                    }
                    Long("socket") => {
                        socket = PathBuf::from(parser.value().map_err(|e| e.to_string())?);
                    }
                    other => return Err(other.unexpected().to_string()),
                }
            }
            Command::Members { json, socket }
        }
        Some("version") => match parser.next().map_err(|e| e.to_string())? {
            None => Command::Version,
            Some(Short('h') | Long("help")) => Command::Help(VERSION_HELP),
            Some(other) => return Err(other.unexpected().to_string()),
        },
        Some("help") => Command::Help(HELP),
        Some(name @ ("event" | "query" | "keys" | "force-leave")) => {
            match crate::agent_cli::parse(name, parser)? {
                Some(a) => Command::Agent(a),
                None => Command::AgentHelp(crate::agent_cli::help(name)),
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(command))
}

/// A run of a configuration file: the flags that are for one command only are refused.
fn run(config: Option<PathBuf>, flags: Flags) -> Result<Command, String> {
    if let Some((flag, key)) = flags.single_only.first() {
        return Err(format!(
            "{flag} is for one command (muster -- CMD); in a configuration, set services.NAME.{key}"
        ));
    }
    Ok(Command::Run { config, flags })
}

fn single(argv: Vec<OsString>, flags: Flags) -> Result<Command, String> {
    let mut out = Vec::with_capacity(argv.len());
    for a in argv {
        match a.into_string() {
            Ok(s) if !s.contains('\0') => out.push(s),
            Ok(_) => return Err("an argument contains a NUL byte".to_owned()),
            Err(a) => return Err(format!("argument {a:?} is not valid UTF-8")),
        }
    }
    if out.is_empty() {
        return Err("no command given".to_owned());
    }
    Ok(Command::Single { argv: out, flags })
}

/// `S:R` of `--rewrite`: two signals (names or numbers), R may be 0 (not sent).
fn rewrite(text: &str) -> Result<(i32, i32), String> {
    let (from, to) = text
        .split_once(':')
        .ok_or_else(|| "write the received signal, ':', then the one sent (15:3)".to_owned())?;
    let from = config::check_rewritten(from)?;
    let to = match to.trim() {
        "0" => 0,
        t => config::parse_signal(t)?,
    };
    Ok((from, to))
}

/// An exit code for `-e`: 0 to 255.
fn exit_code(text: &str) -> Result<i32, String> {
    match text.trim().parse::<i32>() {
        Ok(n) if (0..=255).contains(&n) => Ok(n),
        _ => Err("an exit code is a number from 0 to 255".to_owned()),
    }
}

/// Fills in, from `MUSTER_*` variables (read through `var`), what no flag set. With a
/// configuration (`single` false) only MUSTER_STOP_TIMEOUT applies; the others are returned
/// as warnings.
fn from_environment(
    flags: &mut Flags,
    single: bool,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>, String> {
    let knobs = &mut flags.single;
    let mut ignored = Vec::new();
    let bad = |name: &str, e: String| format!("{name}: {e}");
    if let Some(t) = var("MUSTER_STOP_TIMEOUT").filter(|_| knobs.stop_timeout.is_none()) {
        knobs.stop_timeout =
            Some(config::parse_duration(&t).map_err(|e| bad("MUSTER_STOP_TIMEOUT", e))?);
    }
    let others = [
        "MUSTER_STOP_SIGNAL",
        "MUSTER_NO_GROUP",
        "MUSTER_REWRITE",
        "MUSTER_SUCCESS_CODES",
    ];
    if !single {
        for name in others {
            if var(name).is_some() {
                ignored.push(format!(
                    "{name} is for one command (muster -- CMD); ignored with a configuration"
                ));
            }
        }
        return Ok(ignored);
    }
    if let Some(t) = var("MUSTER_STOP_SIGNAL").filter(|_| knobs.stop_signal.is_none()) {
        knobs.stop_signal = Some(config::parse_signal(&t).map_err(|e| bad(others[0], e))?);
    }
    if let Some(t) = var("MUSTER_NO_GROUP").filter(|_| knobs.group.is_none()) {
        knobs.group = match t.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" => Some(false),
            "" | "0" | "false" | "no" => None,
            _ => return Err(bad(others[1], format!("{t:?} is not 1, true, 0 or false"))),
        };
    }
    if let Some(t) = var("MUSTER_REWRITE").filter(|_| knobs.signal_map.is_empty()) {
        for item in list(&t) {
            let (from, to) = rewrite(item).map_err(|e| bad(others[2], format!("{item}: {e}")))?;
            knobs.signal_map.insert(from, to);
        }
    }
    if let Some(t) = var("MUSTER_SUCCESS_CODES").filter(|_| knobs.success_codes.is_empty()) {
        for item in list(&t) {
            let code = exit_code(item).map_err(|e| bad(others[3], format!("{item}: {e}")))?;
            knobs.success_codes.push(code);
        }
    }
    Ok(ignored)
}

/// The items of a variable's list, separated by commas or spaces.
fn list(text: &str) -> impl Iterator<Item = &str> {
    text.split([',', ' ']).filter(|i| !i.is_empty())
}

fn config_path(given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| std::env::var_os("MUSTER_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH))
}

/// Runs muster with these arguments (without the program name); returns the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let command = match parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("muster: {e}\nRun 'muster --help' for usage.");
            return EXIT_USAGE;
        }
    };
    match command {
        Command::Help(text) => {
            print!("{text}");
            0
        }
        Command::Version => {
            println!("muster {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Command::Check(path) => check(&config_path(path)),
        Command::Run { config, flags } => run_config(config_path(config), flags),
        Command::Members { json, socket } => members(json, &socket),
        Command::Agent(a) => crate::agent_cli::run(&a, |k| std::env::var(k).ok()),
        Command::AgentHelp(text) => {
            print!("{text}");
            0
        }
        Command::Single { argv, mut flags } => {
            if let Err(e) = from_environment(&mut flags, true, |k| std::env::var(k).ok()) {
                eprintln!("muster: {e}");
                return EXIT_USAGE;
            }
            crate::logging::init(crate::logging::LevelFilter::ERROR, flags.verbose);
            supervise(Config::single(argv, &flags.single))
        }
    }
}

/// `check-config`: prints every problem of the file, or a summary.
fn check(path: &std::path::Path) -> i32 {
    match loaded(path) {
        Ok(c) => {
            let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
            println!(
                "{}: valid, {} service(s): {}",
                path.display(),
                c.services.len(),
                names.join(", ")
            );
            0
        }
        Err(e) => {
            eprintln!("{}: invalid configuration", path.display());
            for p in &e.problems {
                eprintln!("  {p}");
            }
            EXIT_USAGE
        }
    }
}

/// The configuration at `path`, with what startup checks beyond its text
/// ([`crate::preflight`]) reported as its problems: check-config and run agree.
fn loaded(path: &std::path::Path) -> Result<Config, config::ConfigError> {
    let c = Config::load(path, &config::users::SystemUsers)?;
    let problems = crate::preflight::problems(&c);
    if problems.is_empty() {
        Ok(c)
    } else {
        Err(config::ConfigError { problems })
    }
}

/// Runs the services of the file at `path`.
fn run_config(path: PathBuf, mut flags: Flags) -> i32 {
    let ignored = match from_environment(&mut flags, false, |k| std::env::var(k).ok()) {
        Ok(ignored) => ignored,
        Err(e) => {
            eprintln!("muster: {e}");
            return EXIT_USAGE;
        }
    };
    crate::logging::init(crate::logging::LevelFilter::INFO, flags.verbose);
    for warning in ignored {
        tracing::warn!("{warning}");
    }
    match loaded(&path) {
        Ok(mut c) => {
            if let Some(t) = flags.single.stop_timeout {
                c.stop_timeout = t;
            }
            supervise(c)
        }
        Err(e) => {
            eprintln!(
                "muster: {}: invalid configuration, nothing started",
                path.display()
            );
            for p in &e.problems {
                eprintln!("  {p}");
            }
            if !path.exists() {
                eprintln!(
                    "  (give a command, as in 'muster -- CMD ARGS', or a file with --config)"
                );
            }
            EXIT_USAGE
        }
    }
}

/// Asks the running muster for its members and prints them.
fn members(json: bool, socket: &std::path::Path) -> i32 {
    match crate::control::request_members(socket, json) {
        Ok(reply) => {
            print!("{reply}");
            0
        }
        Err(e) => {
            eprintln!("muster: {e}");
            1
        }
    }
}

fn supervise(config: Config) -> i32 {
    match crate::app::run(config) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("muster: {e:#}");
            if e.downcast_ref::<crate::app::BadConfig>().is_some() {
                EXIT_USAGE
            } else {
                1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    fn check(args: &[&str], expect: Result<Command, &str>) {
        let got = parse(args.iter().map(OsString::from).collect());
        match expect {
            Ok(c) => assert_eq!(got, Ok(c), "{args:?}"),
            Err(text) => assert!(
                got.as_ref().is_err_and(|e| e.contains(text)),
                "{args:?}: {got:?}"
            ),
        }
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    fn plain(argv: &[&str]) -> Command {
        Command::Single {
            argv: v(argv),
            flags: Flags::default(),
        }
    }

    fn run(config: Option<&str>) -> Command {
        Command::Run {
            config: config.map(PathBuf::from),
            flags: Flags::default(),
        }
    }

    #[test]
    fn command_lines() {
        check(&[], Ok(run(None)));
        check(&["--config", "/x.toml"], Ok(run(Some("/x.toml"))));
        check(&["--", "version"], Ok(plain(&["version"])));
        check(
            &["--", "sh", "-c", "exit 3"],
            Ok(plain(&["sh", "-c", "exit 3"])),
        );
        check(&["--", "--", "true"], Ok(plain(&["--", "true"])));
        check(&["node", "--inspect"], Ok(plain(&["node", "--inspect"])));
        check(&["check-config"], Ok(Command::Check(None)));
        check(
            &["check-config", "a.toml"],
            Ok(Command::Check(Some("a.toml".into()))),
        );
        check(&["check-config", "--help"], Ok(Command::Help(CHECK_HELP)));
        check(&["version"], Ok(Command::Version));
        check(&["--version"], Ok(Command::Version));
        check(&["-V"], Ok(Command::Version));
        check(
            &["members", "--format", "json"],
            Ok(Command::Members {
                json: true,
                socket: config::DEFAULT_CONTROL_SOCKET.into(),
            }),
        );
        check(&["members", "--format", "yaml"], Err("use text or json"));
        check(&["version", "--help"], Ok(Command::Help(VERSION_HELP)));
        check(&["--help"], Ok(Command::Help(HELP)));
        check(&["--"], Err("no command given"));
        check(&["--frobnicate"], Err("--frobnicate"));
        check(&["version", "extra"], Err("extra"));
        check(&["--config"], Err("missing argument"));
        check(&["--config", "a.toml", "b"], Err("after --config"));
    }

    #[test]
    fn tini_and_dumb_init_lines() {
        let with =
            |single: config::Single, only: &[(&'static str, &'static str)], argv: &[&str]| {
                Command::Single {
                    argv: v(argv),
                    flags: Flags {
                        single,
                        verbose: 0,
                        single_only: only.to_vec(),
                    },
                }
            };
        // dumb-init -c CMD: the command is never read as a path of --config.
        check(
            &["-c", "nginx", "-g", "daemon off;"],
            Ok(with(
                config::Single {
                    group: Some(false),
                    ..Default::default()
                },
                &[("--no-group", "signal_group")],
                &["nginx", "-g", "daemon off;"],
            )),
        );
        // tini -s -g -e 143 -- java -jar app.jar
        check(
            &["-s", "-g", "-e", "143", "--", "java", "-jar", "app.jar"],
            Ok(with(
                config::Single {
                    group: Some(true),
                    success_codes: vec![143],
                    ..Default::default()
                },
                &[("-g", "signal_group"), ("-e", "success_codes")],
                &["java", "-jar", "app.jar"],
            )),
        );
        // dumb-init --rewrite 15:3 -r 1:0 nginx; names too, and -r attached.
        let map = BTreeMap::from([(15, 3), (1, 0), (libc::SIGUSR1, libc::SIGHUP)]);
        check(
            &["--rewrite", "15:3", "-r", "1:0", "-rUSR1:SIGHUP", "nginx"],
            Ok(with(
                config::Single {
                    signal_map: map,
                    ..Default::default()
                },
                &[("--rewrite", "signal_map"); 3],
                &["nginx"],
            )),
        );
        check(
            &[
                "--stop-timeout",
                "20s",
                "--stop-signal",
                "QUIT",
                "-vv",
                "--",
                "x",
            ],
            Ok(Command::Single {
                argv: v(&["x"]),
                flags: Flags {
                    single: config::Single {
                        stop_timeout: Some(Duration::from_secs(20)),
                        stop_signal: Some(libc::SIGQUIT),
                        ..Default::default()
                    },
                    verbose: 2,
                    single_only: vec![("--stop-signal", "stop_signal")],
                },
            }),
        );
        // The flags of one command are refused with a configuration; these two are not.
        check(
            &["-g", "--config", "a.toml"],
            Err("set services.NAME.signal_group"),
        );
        check(&["-e", "1"], Err("-e is for one command"));
        assert!(matches!(
            parse(
                ["-s", "-v", "--stop-timeout", "3s", "--config", "a.toml"]
                    .map(OsString::from)
                    .to_vec()
            ),
            Ok(Command::Run { .. })
        ));
        // Bad values name the flag; a value is never taken from the command.
        check(
            &["-r", "15", "x"],
            Err("--rewrite 15: write the received signal"),
        );
        check(&["-r", "9:15", "x"], Err("SIGKILL cannot be caught"));
        check(&["-r", "17:1", "x"], Err("SIGCHLD is never forwarded"));
        check(
            &["-e", "300", "x"],
            Err("-e 300: an exit code is a number from 0 to 255"),
        );
        check(
            &["--stop-timeout", "soon", "x"],
            Err("--stop-timeout: \"soon\" is not a duration"),
        );
        check(
            &["--stop-signal", "NOPE", "x"],
            Err("--stop-signal: \"NOPE\" is not a signal name"),
        );
        check(&["-e"], Err("missing argument"));
    }

    #[test]
    fn environment_fills_what_no_flag_set() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let mut flags = Flags::default();
        flags.single.stop_signal = Some(libc::SIGINT);
        let all: &[(&str, &str)] = &[
            ("MUSTER_STOP_TIMEOUT", "20s"),
            ("MUSTER_STOP_SIGNAL", "QUIT"),
            ("MUSTER_NO_GROUP", "1"),
            ("MUSTER_REWRITE", "15:3, 2:0"),
            ("MUSTER_SUCCESS_CODES", "143,130"),
        ];
        assert_eq!(from_environment(&mut flags, true, env(all)), Ok(vec![]));
        assert_eq!(
            flags.single,
            config::Single {
                stop_timeout: Some(Duration::from_secs(20)),
                stop_signal: Some(libc::SIGINT),
                group: Some(false),
                signal_map: BTreeMap::from([(15, 3), (2, 0)]),
                success_codes: vec![143, 130],
            }
        );
        // With a configuration, only the stop timeout applies; the rest is reported.
        let mut flags = Flags::default();
        let ignored = from_environment(&mut flags, false, env(all)).unwrap();
        assert_eq!(flags.single.stop_timeout, Some(Duration::from_secs(20)));
        assert_eq!(flags.single.signal_map, BTreeMap::new());
        assert_eq!(ignored.len(), 4, "{ignored:?}");
        // A bad value names its variable.
        let bad = from_environment(
            &mut Flags::default(),
            true,
            env(&[("MUSTER_NO_GROUP", "maybe")]),
        );
        assert!(bad.is_err_and(|e| e.starts_with("MUSTER_NO_GROUP: ")));
    }

    #[test]
    fn every_flag_has_one_line_of_help() {
        for flag in [
            "--config PATH",
            "--stop-timeout DUR",
            "-v, --verbose",
            "-s ",
            "-h, --help",
            "-V, --version",
            "--stop-signal SIG",
            "--no-group",
            "-c, --single-child",
            "-g ",
            "-r, --rewrite S:R",
            "-e CODE",
        ] {
            let lines = HELP
                .lines()
                .filter(|l| l.trim_start().starts_with(flag))
                .count();
            assert_eq!(lines, 1, "{flag}");
        }
        let longest = HELP.lines().map(|l| l.chars().count()).max();
        assert!(longest <= Some(96), "lines fit a terminal: {longest:?}");
    }
}
