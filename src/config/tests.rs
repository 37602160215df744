//! Tests of configuration reading: the shipped samples parse, and bad files give every problem.

use super::*;

struct NoUsers;
impl UserDb for NoUsers {
    fn resolve(&self, spec: &str) -> Result<Credentials, String> {
        match spec {
            "nobody" => Ok(Credentials {
                uid: 65534,
                gid: 65534,
                groups: vec![65534],
            }),
            _ => Err(format!("user {spec:?} is not in /etc/passwd")),
        }
    }
}

fn problems(text: &str) -> Vec<String> {
    match Config::parse(text, &NoUsers) {
        Ok(c) => panic!("expected problems, got {c:?}"),
        Err(e) => e.problems,
    }
}

#[test]
fn sample_config_parses() {
    let text = include_str!("../../images/muster.sample.toml");
    let c = Config::parse(text, &NoUsers).expect("sample config is valid");
    assert_eq!(c.stop_timeout, Duration::from_secs(9));
    // logger, app, and the haproxy service [haproxy] brings (not main: app is).
    assert_eq!(c.services.len(), 3);
    assert_eq!(c.services[2].name, "haproxy");
    assert!(!c.services[2].main);
    let h = c.haproxy.as_ref().expect("[haproxy]");
    assert_eq!(h.drain_timeout, Duration::from_secs(10));
    assert_eq!(h.hold_timeout, Duration::from_secs(15));
    assert_eq!(h.role.as_deref(), Some("backend"));
    let app = &c.services[1];
    assert!(app.main);
    assert_eq!(app.depends_on, vec!["logger".to_owned()]);
    assert_eq!(
        app.ready,
        Some(Ready::Http(HttpUrl {
            authority: "127.0.0.1:3000".into(),
            host: "127.0.0.1:3000".into(),
            path: "/".into()
        }))
    );
    assert_eq!(app.log_prefix, "[app] ");
    assert_eq!(
        app.environment.get("PORT").map(String::as_str),
        Some("3000")
    );
}

#[test]
fn image_configs_parse() {
    // The images read the lab's key from the compose secret; here, from a key file of ours.
    let tmp = std::env::temp_dir().join(format!("muster-image-configs-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let key = tmp.join("gossip_key");
    std::fs::write(&key, "5K9OtfjNP9lbeR7vqmUYtA==\n").unwrap();
    for dir in ["webapp", "ha", "collector"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("images/{dir}/muster.toml"));
        if let Ok(text) = std::fs::read_to_string(&path) {
            let text = text.replace("/run/secrets/gossip_key", &key.display().to_string());
            let c = Config::parse(&text, &NoUsers)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(c.services.iter().any(|s| s.main), "{}", path.display());
        } else {
            panic!("{} is missing", path.display());
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn main_service_defaults_to_no_restart() {
    let c = Config::parse(
        "[services.a]\ncommand = [\"true\"]\nmain = true\n[services.b]\ncommand = [\"x\"]\n",
        &NoUsers,
    )
    .expect("valid");
    assert_eq!(c.services[0].restart, Restart::Never);
    assert_eq!(c.services[1].restart, Restart::Always);
    assert_eq!(c.services[1].stop_signal, Some(libc::SIGTERM));
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let got = problems(
        r#"
[supervisor]
stop_timeout = "soon"
colour = "red"

[services.a]
command = []
restart = "sometimes"
stop_signal = "SIGNOPE"
user = "ghost"
ready = { tcp = "nohost" }
depends_on = ["zzz"]
main = true

[services.b]
command = "not a list"
main = true
stop_grace = 5
output = "file"
"#,
    );
    let expect = [
        "supervisor.colour: unknown key",
        "supervisor.stop_timeout: \"soon\" is not a duration",
        "services.a.command: is empty",
        "services.a.restart: \"sometimes\" is not one of",
        "services.a.stop_signal: \"SIGNOPE\" is not a signal name",
        "services.a.user: user \"ghost\" is not in /etc/passwd",
        "services.a.ready.tcp: \"nohost\" is not host:port",
        "services.a.depends_on: \"zzz\" is not a declared service",
        "services.b.command: expected a list of strings, found string",
        "services.b.stop_grace: expected a string, found integer",
        "services.b.output: \"file\" is not one of",
        "services: only one service can be main, found a, b",
    ];
    for e in expect {
        assert!(
            got.iter().any(|p| p.starts_with(e)),
            "missing {e:?} in {got:#?}"
        );
    }
    assert_eq!(got.len(), expect.len(), "{got:#?}");
}

#[test]
fn cycles_are_named() {
    let got = problems(
        "[services.a]\ncommand=[\"x\"]\ndepends_on=[\"b\"]\n\
         [services.b]\ncommand=[\"x\"]\ndepends_on=[\"c\"]\n\
         [services.c]\ncommand=[\"x\"]\ndepends_on=[\"a\"]\n",
    );
    assert_eq!(
        got,
        vec!["services: depends_on forms a cycle: a -> b -> c -> a"]
    );
}

#[test]
fn empty_and_broken_files() {
    assert_eq!(
        problems(""),
        vec!["services: no service is declared (add a [services.NAME] table, or [haproxy])"]
    );
    let got = problems("[services.a\ncommand=");
    assert!(got[0].starts_with("not valid TOML:"), "{got:?}");
}

#[test]
fn durations_and_signals() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert!(parse_duration("5").is_err());
    assert!(parse_duration("s").is_err());
    assert!(parse_duration("-1s").is_err());
    assert_eq!(parse_signal("SIGUSR1"), Ok(libc::SIGUSR1));
    assert_eq!(parse_signal("term"), Ok(libc::SIGTERM));
    assert_eq!(parse_signal("9"), Ok(9));
    assert!(parse_signal("0").is_err());
    assert_eq!(signal_name(libc::SIGQUIT), "SIGQUIT");
}

#[test]
fn signal_map_and_success_codes() {
    let c = Config::parse(
        r#"
[services.web]
main = true
command = ["nginx"]
signal_map = { TERM = "QUIT", SIGHUP = 0, 10 = "USR2", RTMIN = 40 }
success_codes = [143, 0]
"#,
        &NoUsers,
    );
    assert!(c.is_err(), "RTMIN is not a name muster knows");
    let c = Config::parse(
        r#"
[services.web]
main = true
command = ["nginx"]
signal_map = { TERM = "QUIT", SIGHUP = 0, 10 = "USR2", STKFLT = 34 }
success_codes = [143, 0]
"#,
        &NoUsers,
    )
    .expect("valid");
    let web = &c.services[0];
    assert_eq!(
        web.signal_map,
        BTreeMap::from([(15, 3), (1, 0), (10, 12), (16, 34)])
    );
    assert_eq!(web.rewrite(libc::SIGTERM), Some(libc::SIGQUIT));
    assert_eq!(web.rewrite(libc::SIGHUP), None);
    assert_eq!(web.rewrite(libc::SIGWINCH), Some(libc::SIGWINCH));
    assert!(web.counts_as_success(143) && web.counts_as_success(0));
    assert!(!web.counts_as_success(1));
    let got = problems(
        r#"
[services.web]
command = ["nginx"]
signal_map = { KILL = "TERM", CHLD = "HUP", TERM = "NOPE", HUP = 65, USR1 = true }
success_codes = [143, 256, "x"]
"#,
    );
    let expect = [
        "services.web.signal_map.KILL: SIGKILL cannot be caught",
        "services.web.signal_map.CHLD: SIGCHLD is never forwarded",
        "services.web.signal_map.TERM: \"NOPE\" is not a signal name",
        "services.web.signal_map.HUP: 65 is not a signal number (1..=64) (or 0 for none)",
        "services.web.signal_map.USR1: expected a signal name or number, found boolean",
        "services.web.success_codes[1]: 256 is outside 0..=255",
        "services.web.success_codes[2]: expected an integer, found string",
    ];
    for e in expect {
        assert!(
            got.iter().any(|p| p.starts_with(e)),
            "missing {e:?} in {got:#?}"
        );
    }
    assert_eq!(got.len(), expect.len(), "{got:#?}");
}

#[test]
fn the_single_command_gets_its_knobs() {
    let knobs = Single {
        stop_timeout: Some(Duration::from_secs(20)),
        stop_signal: Some(libc::SIGQUIT),
        group: Some(false),
        signal_map: BTreeMap::from([(15, 3)]),
        success_codes: vec![143],
    };
    let c = Config::single(vec!["java".into()], &knobs);
    assert_eq!(c.stop_timeout, Duration::from_secs(20));
    let main = &c.services[0];
    assert_eq!(
        main.stop_grace,
        Duration::from_secs(20),
        "the grace is the whole timeout"
    );
    assert_eq!(main.stop_signal, Some(libc::SIGQUIT));
    assert!(!main.signal_group);
    assert_eq!(main.success_codes, vec![143]);
    let plain = Config::single(vec!["x".into()], &Single::default());
    assert_eq!(plain.stop_timeout, Duration::from_secs(9));
    assert_eq!(plain.services[0].stop_grace, Duration::from_secs(9));
    assert_eq!(
        plain.services[0].stop_signal, None,
        "the signal received is forwarded"
    );
    assert!(plain.services[0].signal_group);
}

#[test]
fn gossip_advertise_network() {
    let c = Config::parse(
        "[gossip]\nadvertise_network = \"10.210.42.0/24\"\n[services.a]\ncommand = [\"x\"]\n",
        &NoUsers,
    )
    .expect("valid");
    let net = c.gossip.expect("gossip").advertise_network.expect("set");
    assert_eq!(net.to_string(), "10.210.42.0/24");
    for (text, e) in [
        (
            "advertise = \"10.0.0.1\"\nadvertise_network = \"10.0.0.0/8\"",
            "gossip.advertise_network: set either",
        ),
        (
            "advertise_network = \"fd00::/8\"",
            "gossip.advertise_network: \"fd00::/8\" is not an IPv4 network",
        ),
        (
            "advertise_network = \"ten\"",
            "gossip.advertise_network: \"ten\" is not",
        ),
    ] {
        let got = problems(&format!(
            "[gossip]\n{text}\n[services.a]\ncommand = [\"x\"]\n"
        ));
        assert!(
            got.iter().any(|p| p.starts_with(e)),
            "missing {e:?} in {got:#?}"
        );
    }
}

#[test]
fn gossip_section() {
    let c = Config::parse(
        r#"
[gossip]
join = ["ha"]
tags = { role = "backend", port = "3000" }
profile = "local"
[services.a]
command = ["x"]
"#,
        &NoUsers,
    )
    .expect("valid");
    let g = c.gossip.expect("gossip");
    assert_eq!(g.join, vec!["ha".to_owned()]);
    assert_eq!(g.bind, "0.0.0.0:7946".parse().unwrap());
    assert_eq!(g.profile, Profile::Local);
    assert_eq!(g.tags.get("role").map(String::as_str), Some("backend"));
    assert_eq!(g.advertise_network, None);
    assert_eq!(
        c.control_socket,
        Some(PathBuf::from(DEFAULT_CONTROL_SOCKET))
    );

    let got = problems(
        "[gossip]\nbind = \"nowhere\"\nprofile = \"wan\"\nseeds = []\n[services.a]\ncommand = [\"x\"]\n",
    );
    for e in [
        "gossip.seeds: unknown key",
        "gossip.bind: \"nowhere\" is not an IP address",
        "gossip.profile: \"wan\" is not one of",
    ] {
        assert!(
            got.iter().any(|p| p.starts_with(e)),
            "missing {e:?} in {got:#?}"
        );
    }

    // A name or tag of our own that peers would refuse is refused here first, key named.
    let got = problems(
        "[gossip]\nname = \"web 1\"\ntags = { role = \"back end\", \"a#b\" = \"x\" }\nmax_members = 1\n[services.a]\ncommand = [\"x\"]\n",
    );
    for e in [
        "gossip.name: \"web 1\" holds \" \" at byte 3",
        "gossip.tags.role: \"back end\" holds \" \" at byte 4",
        "gossip.tags.a#b: the key \"a#b\" holds \"#\" at byte 1",
        "gossip.max_members: 1 is outside 2..=1000000",
    ] {
        assert!(
            got.iter().any(|p| p.starts_with(e)),
            "missing {e:?} in {got:#?}"
        );
    }
}

#[test]
fn logship_section() {
    let ok = Config::parse(
        "[logship]\ntarget = \"collector:2514\"\nprotocol = \"tcp\"\nqueue = 500\nwhen_full = \"drop-oldest\"\nfacility = \"local3\"\n[services.a]\ncommand = [\"true\"]\nmain = true\n",
        &NoUsers,
    )
    .unwrap();
    let l = ok.logship.unwrap();
    assert_eq!(l.target, "collector:2514");
    assert_eq!(l.protocol, LogProtocol::Tcp);
    assert_eq!(
        (l.queue, l.when_full, l.facility),
        (500, WhenFull::DropOldest, 19)
    );
    let p = problems(
        "[logship]\nprotocol = \"udp\"\nqueue = 0\nwhen_full = \"panic\"\nfacility = \"local9\"\nspool = \"spool\"\nspool_bytes = 1000\nsieve = 1\n[services.a]\ncommand = [\"true\"]\nmain = true\n",
    );
    for key in [
        "logship.target",
        "logship.protocol",
        "logship.queue",
        "logship.when_full",
        "logship.facility",
        "logship.spool: \"spool\" is not an absolute directory path",
        "logship.spool_bytes: 1000 is outside 1048576..=",
        "logship.sieve",
    ] {
        assert!(p.iter().any(|x| x.contains(key)), "{key} in {p:?}");
    }
    // The spool: a directory and its bound.
    let s = Config::parse(
        "[logship]\ntarget = \"c:1\"\nspool = \"/var/spool/muster\"\nspool_bytes = 2097152\n[services.a]\ncommand = [\"true\"]\nmain = true\n",
        &NoUsers,
    )
    .unwrap()
    .logship
    .unwrap();
    assert_eq!(
        (s.spool.as_deref(), s.spool_bytes),
        (Some(std::path::Path::new("/var/spool/muster")), 2 << 20)
    );
    let p = problems(
        "[logship]\ntarget = \"c:1\"\nspool_bytes = 2097152\n[services.a]\ncommand = [\"true\"]\nmain = true\n",
    );
    assert!(
        p.iter()
            .any(|x| x.contains("logship.spool_bytes: is set but logship.spool")),
        "{p:?}"
    );
    let p = problems(
        "[logship]\ntarget = \"c:1\"\nspool = 5\n[services.a]\ncommand = [\"true\"]\nmain = true\n",
    );
    assert!(p.iter().any(|x| x.contains("logship.spool")), "{p:?}");
    let p = problems(
        "[logship]\ntarget = \"collector\"\n[services.a]\ncommand = [\"true\"]\nmain = true\n",
    );
    assert!(p.iter().any(|x| x.contains("is not host:port")), "{p:?}");
    // Defaults: the app keeps running whatever the collector does, in bounded memory.
    let d = Config::parse(
        "[logship]\ntarget = \"c:1\"\n[services.a]\ncommand = [\"true\"]\nmain = true\n",
        &NoUsers,
    )
    .unwrap()
    .logship
    .unwrap();
    assert_eq!(
        (d.when_full, d.queue_bytes, d.ack_timeout),
        (
            WhenFull::DropWhileAway,
            32 << 20,
            std::time::Duration::from_secs(5)
        )
    );
    assert_eq!(
        (d.spool, d.spool_bytes),
        (None, 256 << 20),
        "no spool unless set"
    );
    let t = Config::parse(
        "[logship]\ntarget = \"c:1\"\nack_timeout = \"750ms\"\nwhen_full = \"block\"\n[services.a]\ncommand = [\"true\"]\nmain = true\n",
        &NoUsers,
    )
    .unwrap()
    .logship
    .unwrap();
    assert_eq!(
        (t.when_full, t.ack_timeout),
        (WhenFull::Block, std::time::Duration::from_millis(750))
    );
    for (text, want) in [
        ("drop-while-away", WhenFull::DropWhileAway),
        ("block", WhenFull::Block),
        ("drop-oldest", WhenFull::DropOldest),
    ] {
        let l = Config::parse(
            &format!("[logship]\ntarget = \"c:1\"\nwhen_full = \"{text}\"\n[services.a]\ncommand = [\"true\"]\nmain = true\n"),
            &NoUsers,
        )
        .unwrap()
        .logship
        .unwrap();
        assert_eq!(l.when_full, want, "{text}");
    }
    for bad in ["\"10ms\"", "\"soon\"", "5"] {
        let p = problems(&format!(
            "[logship]\ntarget = \"c:1\"\nack_timeout = {bad}\n[services.a]\ncommand = [\"true\"]\nmain = true\n"
        ));
        assert!(
            p.iter().any(|x| x.contains("logship.ack_timeout")),
            "{bad}: {p:?}"
        );
    }
}

#[test]
fn haproxy_table_brings_its_service() {
    let c = Config::parse("[haproxy]\nrole = \"web\"\nport = 3000\n", &NoUsers).expect("valid");
    let h = c.haproxy.as_ref().expect("haproxy");
    assert_eq!(h.role.as_deref(), Some("web"));
    assert_eq!(h.port, 3000);
    assert_eq!(h.debounce, std::time::Duration::from_millis(10));
    let s = &c.services[0];
    assert_eq!(s.name, "haproxy");
    assert!(s.main);
    assert!(!s.signal_group);
    assert_eq!(
        s.command,
        [
            "haproxy",
            "-W",
            "-db",
            "-S",
            "/run/haproxy/master.sock,mode,600",
            "-f",
            "/etc/haproxy/haproxy.cfg"
        ]
    );
    let own = Config::parse(
        "[haproxy]\nrole = \"\"\n[services.haproxy]\ncommand = [\"haproxy\", \"-W\"]\n",
        &NoUsers,
    )
    .expect("valid");
    assert_eq!(own.services.len(), 1);
    assert_eq!(own.services[0].command, ["haproxy", "-W"]);
    assert_eq!(own.haproxy.as_ref().and_then(|h| h.role.clone()), None);
}

#[test]
fn haproxy_hold_timeout_is_a_bounded_duration() {
    assert_eq!(
        problems("[haproxy]\nhold_timeout = \"10m\"\n"),
        vec!["haproxy.hold_timeout: is more than 300s: clients give up long before"]
    );
    let got = problems("[haproxy]\nhold_timeout = 15\n");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("haproxy.hold_timeout: "), "{got:?}");
    let c = Config::parse("[haproxy]\nhold_timeout = \"2500ms\"\n", &NoUsers).expect("valid");
    let h = c.haproxy.expect("[haproxy]");
    assert_eq!(h.hold_timeout, Duration::from_millis(2500));
}

#[test]
fn haproxy_table_problems() {
    let got =
        problems("[haproxy]\nport = 0\ntemplate = \"rel.hbs\"\ndebounce = \"5s\"\ncolor = 1\n");
    assert_eq!(
        got,
        vec![
            "haproxy.color: unknown key (known keys: template, config, role, port, master_socket, program, debounce, drain_timeout, start_wait, hold_timeout, trusted_networks)",
            "haproxy.template: \"rel.hbs\" is not an absolute path",
            "haproxy.port: 0 is outside 1..=65535",
            "haproxy.debounce: is more than 1s: changes would wait too long",
        ]
    );
}

#[test]
fn trusted_networks_are_checked_key_by_key() {
    let c = Config::parse(
        "[haproxy]\ntrusted_networks = [\"192.168.42.0/24\", \"fd00::/8\"]\n",
        &NoUsers,
    )
    .expect("valid");
    let nets = c.haproxy.unwrap().trusted_networks.expect("set");
    assert_eq!(nets.len(), 2);
    assert!(nets[0].contains([192, 168, 42, 9].into()));
    let default = Config::parse("[haproxy]\n", &NoUsers).expect("valid");
    assert_eq!(default.haproxy.unwrap().trusted_networks, None);
    let p = problems("[haproxy]\ntrusted_networks = [\"10.0.0.0/8\", \"10.0.0.0/40\", \"x\"]\n");
    assert!(
        p.iter()
            .any(|x| x.starts_with("haproxy.trusted_networks[1]: ")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|x| x.starts_with("haproxy.trusted_networks[2]: ")),
        "{p:?}"
    );
    let p = problems("[haproxy]\ntrusted_networks = []\n");
    assert!(
        p.iter()
            .any(|x| x.starts_with("haproxy.trusted_networks: is empty")),
        "{p:?}"
    );
    let p = problems("[haproxy]\ntrusted_networks = \"10.0.0.0/8\"\n");
    assert!(
        p.iter().any(|x| x.starts_with("haproxy.trusted_networks")),
        "{p:?}"
    );
}

#[test]
fn the_rpc_address_defaults_to_serfs_and_can_be_turned_off() {
    let parse = |extra: &str| {
        let text = format!("[services.a]\ncommand = [\"true\"]\n[gossip]\n{extra}\n");
        let c = Config::parse(&text, &NoUsers).expect("valid");
        let g = c.gossip.expect("[gossip]");
        (g.rpc_addr, g.rpc_auth)
    };
    let serf_default = SocketAddr::from(([127, 0, 0, 1], 7373));
    assert_eq!(parse(""), (Some(serf_default), None));
    assert_eq!(parse("rpc_addr = false"), (None, None));
    assert_eq!(
        parse("rpc_addr = \"127.0.0.1\"\nrpc_auth = \"k\""),
        (Some(serf_default), Some("k".to_owned()))
    );
    let p = problems(
        "[services.a]\ncommand = [\"true\"]\n[gossip]\nrpc_addr = \"nowhere\"\nrpc_auth = \"\"\n",
    );
    assert!(p.iter().any(|e| e.contains("gossip.rpc_addr")), "{p:?}");
    assert!(p.iter().any(|e| e.contains("gossip.rpc_auth")), "{p:?}");
}

#[test]
fn secure_mode_needs_a_key() {
    let base = "[services.a]\ncommand = [\"true\"]\n[gossip]\n";
    let p = problems(&format!("{base}secure = true\n"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains("gossip.secure") && p[0].contains("needs a key"),
        "{p:?}"
    );
    let p = problems(&format!("{base}secure = \"yes\"\n"));
    assert!(p[0].contains("gossip.secure"), "{p:?}");
    let c = Config::parse(
        &format!("{base}secure = true\nencrypt = \"5K9OtfjNP9lbeR7vqmUYtA==\"\n"),
        &NoUsers,
    )
    .expect("secure with a key");
    let g = c.gossip.expect("[gossip]");
    assert!(g.secure);
    assert_eq!(g.keys.0.len(), 1);
    let c = Config::parse(base, &NoUsers).expect("plain gossip");
    assert!(!c.gossip.expect("[gossip]").secure);
}
