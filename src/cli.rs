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
  muster [--config PATH]        run the services declared in a TOML file
  muster [--] CMD [ARGS...]     run one command, like tini
  muster check-config [PATH]    validate a configuration, print every problem
  muster members [--format json] [--socket PATH]
                                the cluster as a running muster sees it (with [gossip])
  muster version                print the version

Options:
  -c, --config PATH   configuration file (default: $MUSTER_CONFIG, else /etc/muster/muster.toml)
  -h, --help          print this help

muster reaps every zombie, forwards SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH and SIGQUIT to the
main service, and on SIGTERM or SIGINT stops services in reverse dependency order within
the stop timeout (default 9 s). It exits with the main service's code, 128+N when a signal
N killed it, 126/127 when it could not be executed, 64 for a bad configuration.

The configuration can also make muster a member of the cluster by gossip, in HashiCorp
Serf's wire format ([gossip]), ship every service's log lines to a collector over RELP
([logship]), and, on the load balancer, run HAProxy and keep its servers equal to the live
members through its runtime API ([haproxy]). See images/muster.sample.toml.

Environment:
  MUSTER_CONFIG   configuration file when --config is not given
  MUSTER_LOG      muster's own log level: error, warn, info, debug, trace, off
                  (default: info with a configuration, error with a single command)
  MUSTER_LOG_FORMAT  text (default) or json (one object per line)
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
    Run(Option<PathBuf>),
    Single(Vec<String>),
    Check(Option<PathBuf>),
    Members { json: bool, socket: PathBuf },
    Version,
    Help(&'static str),
}

fn parse(args: Vec<OsString>) -> Result<Command, String> {
    use lexopt::prelude::*;
    if args.first().is_some_and(|a| a == "--") {
        return single(args.into_iter().skip(1).collect());
    }
    let mut parser = lexopt::Parser::from_args(args);
    let mut config = None;
    loop {
        let Some(arg) = parser.next().map_err(|e| e.to_string())? else {
            return Ok(Command::Run(config));
        };
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(HELP)),
            Short('c') | Long("config") => {
                config = Some(PathBuf::from(parser.value().map_err(|e| e.to_string())?));
            }
            Value(v) if config.is_none() && v == "check-config" => {
                let mut path = None;
                while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
                    match arg {
                        Short('h') | Long("help") => return Ok(Command::Help(CHECK_HELP)),
                        Value(p) if path.is_none() => path = Some(PathBuf::from(p)),
                        other => return Err(other.unexpected().to_string()),
                    }
                }
                return Ok(Command::Check(path));
            }
            Value(v) if config.is_none() && v == "members" => {
                let mut json = false;
                let mut socket = PathBuf::from(config::DEFAULT_CONTROL_SOCKET);
                while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
                    match arg {
                        Short('h') | Long("help") => return Ok(Command::Help(MEMBERS_HELP)),
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
                return Ok(Command::Members { json, socket });
            }
            Value(v) if config.is_none() && v == "version" => {
                return match parser.next().map_err(|e| e.to_string())? {
                    None => Ok(Command::Version),
                    Some(Short('h') | Long("help")) => Ok(Command::Help(VERSION_HELP)),
                    Some(other) => Err(other.unexpected().to_string()),
                };
            }
            Value(v) if config.is_none() && v == "help" => return Ok(Command::Help(HELP)),
            Value(first) if config.is_none() => {
                let mut argv = vec![first];
                argv.extend(parser.raw_args().map_err(|e| e.to_string())?);
                return single(argv);
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
}

fn single(argv: Vec<OsString>) -> Result<Command, String> {
    let mut out = Vec::with_capacity(argv.len());
    for a in argv {
        match a.into_string() {
            Ok(s) if !s.contains('\0') => out.push(s),
            Ok(_) => return Err("an argument contains a NUL byte".to_owned()),
            Err(a) => return Err(format!("argument {a:?} is not valid UTF-8")),
        }
    }
    if out.is_empty() {
        return Err("no command given after --".to_owned());
    }
    Ok(Command::Single(out))
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
        Command::Check(path) => {
            let path = config_path(path);
            match Config::load(&path, &config::users::SystemUsers) {
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
        Command::Run(path) => {
            crate::logging::init(crate::logging::LevelFilter::INFO);
            let path = config_path(path);
            match Config::load(&path, &config::users::SystemUsers) {
                Ok(c) => supervise(c),
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
        Command::Members { json, socket } => members(json, &socket),
        Command::Single(argv) => {
            crate::logging::init(crate::logging::LevelFilter::ERROR);
            supervise(Config::single(argv))
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

    #[test]
    fn command_lines() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        check(&[], Ok(Command::Run(None)));
        check(
            &["--config", "/x.toml"],
            Ok(Command::Run(Some("/x.toml".into()))),
        );
        check(&["-c", "/x.toml"], Ok(Command::Run(Some("/x.toml".into()))));
        check(&["--", "version"], Ok(Command::Single(v(&["version"]))));
        check(
            &["--", "sh", "-c", "exit 3"],
            Ok(Command::Single(v(&["sh", "-c", "exit 3"]))),
        );
        check(
            &["--", "--", "true"],
            Ok(Command::Single(v(&["--", "true"]))),
        );
        check(
            &["node", "--inspect"],
            Ok(Command::Single(v(&["node", "--inspect"]))),
        );
        check(&["check-config"], Ok(Command::Check(None)));
        check(
            &["check-config", "a.toml"],
            Ok(Command::Check(Some("a.toml".into()))),
        );
        check(&["check-config", "--help"], Ok(Command::Help(CHECK_HELP)));
        check(&["version"], Ok(Command::Version));
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
    }
}
