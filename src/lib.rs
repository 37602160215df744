//! muster: one small static binary that is PID 1 of every container of a load-balanced web
//! cluster: the supervisor, a member of the cluster by gossip (Serf's wire format), the shipper
//! of every service's log lines to a central collector, and on the load balancer the keeper of
//! HAProxy's servers. The README says what it does for a user; this says where things are.
//!
//! # Layout
//!
//! Entry point: `main.rs` calls [`cli::main`], which parses the command line and either
//! validates a configuration ([`config`]), asks a running muster for its members
//! ([`control`]'s client), or runs muster through [`app::run`]: the one module that knows every
//! subsystem. It starts gossip (and its event handlers), the control socket, log shipping and the HAProxy sync when
//! configured (the sync renders HAProxy's first config before the supervisor starts HAProxy),
//! maps each subsystem's types into the next one's, and runs the supervisor with a
//! before-stop step that stops the sync and leaves the cluster.
//!
//! The subsystems are folders: `supervisor/`, `gossip/`, `haproxy/`, `logship/`. Each knows
//! only [`config`] and its own folder. Beside them: [`control`] (the control socket's server,
//! mode 0600, and client, given a function for the members), [`host`] (host name, address to
//! advertise, its interfaces' networks),
//! [`handlers`] (Serf's event handler scripts, between gossip and the supervisor's children)
//! and [`logging`] (muster's own log lines).
//!
//! - [`config`]: the TOML file, read into a table and validated key by key into typed values,
//!   so `check-config` reports every problem at once; `users` resolves `user` from
//!   `/etc/passwd` and `/etc/group` without NSS (muster is static); `names` holds what a member
//!   name and a tag may be, for muster's own configuration and for what peers announce; `networks`
//!   reads `[haproxy] trusted_networks` (CIDR), the addresses a member may have to be a server;
//!   `keys` reads the gossip keys (`encrypt`, `encrypt_file`, `keyring_file`); `handlers` reads
//!   `event_handlers` as `serf agent -event-handler` does.
//! - [`supervisor::core`]: the pure state machine. It is fed `(now, Input)` (spawned, exited,
//!   ready, signal, left, tick) and answers with `Action`s (spawn, probe, signal, sweep
//!   strays, leave, suspend, foreground, exit). Start order, readiness gating, restart
//!   back-off, crash-loop limit, the fate of every signal (forwarded through `signal_map`, the
//!   stop, job control), the stop deadline, the leave before stopping, stop order, grace and
//!   the exit code (`success_codes`) are all decided here and unit-tested with a virtual
//!   clock. `core/policy.rs` holds what a run's end means for the container (main and
//!   `critical` services end it, side crash loops back off, `oneshot`, daemonized services).
//! - [`supervisor::run`]: the driver, a single-threaded tokio `select!` loop over the signals
//!   received, reaped children, probe results and the core's next deadline; signals are fed
//!   to the core one at a time, in the order they came.
//! - [`supervisor::spawn`]: fork/exec of a service: own process group, inherited signal state
//!   restored, user switch, notification fd, terminal foreground, SIGKILL when muster dies
//!   (`PR_SET_PDEATHSIG`).
//! - [`supervisor::reaper`]: `waitpid(-1)` until nothing is left.
//! - [`supervisor::children`]: children muster runs for itself (helper commands such as
//!   `haproxy -c`, exec readiness checks), awaited there while the reaper collects their
//!   status like any child's.
//! - [`supervisor::ready`]: readiness probes (tcp, http, exec, notify fd).
//! - [`supervisor::output`]: the pipes muster holds for each service, the line splitter, and
//!   the sink thread that writes lines to the container's stdout/stderr (the seam for log
//!   shipping).
//! - [`supervisor::strays`]: signalling leftover processes: `kill(-1)` as PID 1, a walk of our
//!   own descendants in `/proc` otherwise; muster's direct children, to tell a service that
//!   daemonized.
//! - [`handlers`]: Serf's event handlers (`[gossip] event_handlers`): the pure part (which
//!   entry an event runs, Serf's environment and stdin for it) unit-tested; the shell
//!   subscribes to the gossip driver (bounded), queues each event per entry (one run at a
//!   time, in order, no coalescing) and runs `/bin/sh -c SCRIPT` through
//!   `supervisor::children` (`run_piped`: stdin, output lines to the log, SIGKILL to the
//!   group at `handler_timeout`); a query's answer goes back by `Command::Respond`. Wired by
//!   `app.rs` (`tests/serf_handlers.rs`, `tests/lab_handlers.rs`).
//! - [`agent_cli`]: `muster event`, `query`, `keys` and `force-leave`, the `serf` commands
//!   through the agent RPC, for people without Serf installed.
//! - [`preflight`]: what startup checks beyond the file's text (the HAProxy template reads and
//!   compiles, services' programs and working directories and handler scripts exist, the spool is writable, the host name does as a node name), shared by `check-config` and `run`.
//! - [`supervisor::signals`]: the inherited signal mask and ignored signals, and the one
//!   handler of every catchable signal (1 to 64 but SIGKILL and SIGSTOP; glibc's 32 and 33
//!   through the system call): it counts what other processes sent and wakes the driver
//!   through a pipe, and hands muster's own faults back to the default action, so a real
//!   crash still kills muster.
//! - [`gossip`]: membership in Serf's wire format. So far the pure codec: `msgpack` (the old
//!   spec Serf's gossip speaks), `lzw` (Go's `compress/lzw`), `wire` (CRC, compression,
//!   compound, push/pull streams, node states, tags), checked byte for byte against packets
//!   captured from Debian's serf 0.9.4 (`tests/serf_golden.rs`); and `swim`, the sans-IO
//!   SWIM + Lifeguard core (`handle(now, input)`, `poll_output()`, `poll_timeout()`, seeded
//!   RNG), tested in a deterministic network simulator (`tests/common/sim.rs`, driven by
//!   `tests/gossip_sim.rs` and by the scale benchmark `tests/gossip_scale.rs`). Both layers
//!   keep their members in a `roll` (a shared base map and each clone's own changes): a `View` of a converged cluster
//!   (`swim::View`, `serf::View`, `node::View`) starts nodes that share its memory until they
//!   change a member, which is how the simulator holds 10,000 nodes. `serf`, Serf's
//!   sans-IO layer above it (Lamport clock, intents, alive/leaving/left/failed, Serf's
//!   push/pull state, reconnect, reap); `crypto`, memberlist's AES-GCM keyring and framing
//!   (datagrams and streams, versions 0 and 1); `secure`, secure mode's pure rules (the envelope with sender, time and
//!   sequence number bound to the destination, the replay cache, answers bound to their request,
//!   and `speaks_for`: only a member's own answer at its IP binds its name to an address;
//!   `tests/secure_mode.rs`); `node`, the two composed into one sans-IO node fed
//!   bytes and time (framing, push/pull state, join timer, leave); and `driver`, the tokio
//!   shell around `node` (UDP + TCP push/pull, DNS for seeds), which logs every event and
//!   publishes the whole view on a `watch`, tested against Debian's real `serf agent` (`tests/serf_interop.rs`). `limits` is what its listener lets a peer hold: at most 128
//!   inbound push/pull streams, 16 per address (a new one closes the oldest of the address
//!   holding most), and the back-off after an accept error (EMFILE); the control socket uses
//!   it too (`tests/hostile_limits.rs`). The decoders, plaintext and
//!   behind the keyring, are fuzzed by `tests/fuzz/` (cargo-fuzz). `rpc` is Serf's agent RPC (a sans-IO
//!   session: handshake, auth, bounded objects, typed requests, Serf's answers) and `agent`
//!   its TCP server on `[gossip] rpc_addr`, talking to the driver by command, so Debian's
//!   `serf` CLI works against muster (`tests/serf_cli.rs`); `agent/client.rs` is the blocking
//!   client [`agent_cli`] uses. `serf/user.rs` holds Serf's user events, queries and answers
//!   on the wire and the Lamport-slot rings that de-duplicate them; `serf/events.rs` Serf's
//!   rules for them (own clocks, delivery once, answers straight to the asker's member
//!   address); `node/internal.rs` the internal queries a node answers (`_serf_ping`,
//!   `_serf_conflict`, the key queries of `serf keys`, which change the keyring in use); and
//!   `driver/hub.rs` hands membership events, user events and queries to subscribers (RPC
//!   streams, `serf monitor`, event handlers) without ever stalling gossip. `validate` reads node meta against
//!   the character sets and limits of `config::names`; `swim` applies them to everything
//!   announced, admits a new name only once it answers a probe, holds a third party's
//!   harmful claims about a live member while the member can refute them, and never sends a
//!   stranger more bytes than its packet carried (`tests/hostile_gossip.rs` attacks a load balancer this way).
//! - [`logship`]: log shipping. Pure cores: RFC 5424 formatting (`syslog`), RELP frames and
//!   the sans-IO client that resends what was not acknowledged (`relp`), the back-off and
//!   episodes (`episode`), what a full queue does (`overflow`: wait, drop the oldest, or
//!   spool it, from `when_full` and whether the collector is present) and the spool's
//!   checksummed segment format (`segment`); the shells: `spool`, the disk spool's segment
//!   files, and `ship`, a bounded queue filled through a `Feed` of logship's own lines and a
//!   tokio task talking to the collector. `app.rs` starts it with
//!   `[logship]`, feeds it from the output sink's `Tap`, and at exit gives it until a deadline
//!   (3 s at most) to deliver what is queued, then writes what is left to the disk spool
//!   when `[logship] spool` is set.
//! - [`haproxy`]: the HAProxy sync on the load balancer. It knows only `config`: it follows its
//!   own `model::Member`s (`app.rs` maps the gossip view into them) and runs `haproxy -c`
//!   through a `check::Runner` (`app.rs` builds one on `supervisor::children`). Pure cores:
//!   `model` (the alive and leaving members of one role with valid names and tags at trusted addresses, sorted, plus
//!   the lab's `addresses`), `template` (handlebars, strict, no escaping), `bisect` (the search
//!   by halves for the members a config cannot hold), `cfg` (a rendered config read back into
//!   servers and skeleton; `plan(old, new)` gives runtime operations, or a reload for a
//!   structural change, and `plan(None, new)` is the first start), `servers` (the servers'
//!   lifecycle: add, first good check, drain, maintenance, delete, bring back, and the reload
//!   protocol, as a sans-IO machine fed HAProxy's typed replies and observed states that emits
//!   runtime commands) and `check` (the `haproxy -W -c` runs, like the HAProxy service in its
//!   master's environment). The shell: `runtime` (admin socket in prompt mode, master CLI,
//!   HAProxy's answers read into typed values) and `sync`, the task following the members:
//!   render, check, members at fault left out, atomic write, then what `servers` decides carried
//!   out; the deadline its stop carries bounds the work under way.
//!
//! # Shutdown order
//!
//! The first SIGTERM or SIGINT (or the main service ending) fixes one deadline: now plus
//! `stop_timeout`. Everything after it takes the smaller of its own cap and what is left:
//!
//! 1. **Leave** (with `[gossip]` or `[haproxy]`; a phase of the supervisor core): the HAProxy
//!    sync stops (nothing more is applied, its CLI session is let go), then the node leaves the
//!    cluster so load balancers drain it. At most 2 s, and never past the kill point. Only on a
//!    stop request; a second request cuts it short. No service is signalled meanwhile.
//! 2. **Services**, in reverse dependency order, each with its stop signal (through its
//!    `signal_map`), then SIGKILL at the end of its `stop_grace` or at the kill point: the
//!    deadline minus a reserve (1 s, or a quarter of `stop_timeout` when that is less; 0.5 s
//!    when no output pipe or log flush comes after, as for `muster -- CMD`, whose grace is the
//!    whole stop timeout). Leftover processes get SIGTERM once the services are down, SIGKILL
//!    at the kill point.
//! 3. **Exit** once no child is left, or half the reserve after the kill point with whatever
//!    survived SIGKILL.
//! 4. **Last output** from the services' pipes (at most 0.5 s), then the **log flush** to the
//!    collector (at most 3 s), both cut at the deadline less 100 ms for muster's own exit.
//!
//! `tests/shutdown.rs` holds muster to it with services ignoring SIGTERM, a peer that answers
//! nothing and a collector that is down.
//!
//! # Architecture invariants
//!
//! - **A subsystem knows only `config` and its own folder**: `app.rs` maps between them
//!   (tested by `tests/invariants.rs`, which also keeps every function in `src/` under 100
//!   lines).
//! - **Only `supervisor/reaper.rs` calls `waitpid`.** No `tokio::process`, no
//!   `std::process::Child::wait`: a second waiter would steal exit statuses (tested by
//!   `tests/invariants.rs`).
//! - **`supervisor/core.rs`, `gossip/` (but its `driver.rs`), `logship/` (but its `ship.rs`
//!   and `spool.rs`)
//!   and `haproxy/` (but its `runtime.rs` and `sync.rs`) do no I/O and read no clock**: time (and, for gossip, the random seed) comes in as an argument.
//! - **Decoders never panic and never allocate more than their input justifies**: every
//!   length is checked against the bytes left or an explicit limit.
//! - **A name or tag from the network is stored only after `gossip::validate` accepted it**
//!   (`swim` for memberlist messages and push/pulls, `serf` for intents), and the HAProxy
//!   model checks again before rendering: what a peer says reaches `haproxy.cfg` as data.
//! - **Signal handlers are installed before the first thread and the first spawn**, so no
//!   SIGCHLD is lost and no signal finds a thread without them (`app::run`).
//! - **muster dies of no signal another process sends but SIGKILL** (and stops on SIGSTOP):
//!   every other one is caught, as PID 1 and as a subreaper (`tests/signals.rs`).
//! - **A service never outlives muster**: every child gets SIGKILL when muster dies
//!   (`tests/death.rs`), and `tests/run` fails if a process it started is still running.
//! - **A pid is signalled only while the core holds it unreaped** (Running or Stopping), so a
//!   recycled pid is never hit.
//! - **muster never exits before its descendants are gone or the kill point has passed, and
//!   always by the stop deadline**; every wait has a deadline.
//! - **HAProxy's config file only ever holds a render that `haproxy -c` accepted**, written by
//!   rename; a membership change never reloads HAProxy (tests/haproxy_sync.rs counts reloads).

pub mod agent_cli;
pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod gossip;
pub mod handlers;
pub mod haproxy;
pub mod host;
pub mod logging;
pub mod logship;
pub mod preflight;
pub mod supervisor;
