//! muster: one small static binary that is PID 1 of every container of a load-balanced web
//! cluster: the supervisor, a member of the cluster by gossip (Serf's wire format), the shipper
//! of every service's log lines to a central collector, and on the load balancer the keeper of
//! HAProxy's servers (see `../shared/DESIGN.md`).
//!
//! # Layout
//!
//! Entry point: `main.rs` calls [`cli::main`], which parses the command line and either
//! validates a configuration ([`config`]), asks a running muster for its members, or runs
//! muster through [`app::run`]: the one module that knows every subsystem. It starts gossip, the
//! control socket, log shipping and the HAProxy sync when configured (the sync renders HAProxy's
//! first config before the supervisor starts HAProxy), and runs the supervisor with a
//! before-stop step that stops the sync and leaves the cluster.
//!
//! - [`config`]: the TOML file, read into a table and validated key by key into typed values,
//!   so `check-config` reports every problem at once; `users` resolves `user` from
//!   `/etc/passwd` and `/etc/group` without NSS (muster is static).
//! - [`supervisor::core`]: the pure state machine. It is fed `(now, Input)` (spawned, exited,
//!   ready, signal, tick) and answers with `Action`s (spawn, probe, signal, sweep strays,
//!   exit). Start order, readiness gating, restart back-off, crash-loop limit, stop order,
//!   grace and the exit code are all decided here and unit-tested with a virtual clock.
//! - [`supervisor::run`]: the driver, a single-threaded tokio `select!` loop over signal
//!   streams, reaped children, probe results and the core's next deadline.
//! - [`supervisor::spawn`]: fork/exec of a service: own process group, inherited signal state
//!   restored, user switch, notification fd, terminal foreground.
//! - [`supervisor::reaper`]: `waitpid(-1)` until nothing is left.
//! - [`supervisor::helper`]: short commands muster runs for itself (`haproxy -c`), their exit
//!   status collected by the reaper like any child's.
//! - [`supervisor::ready`]: readiness probes (tcp, http, exec, notify fd).
//! - [`supervisor::output`]: the pipes muster holds for each service, the line splitter, and
//!   the sink thread that writes lines to the container's stdout/stderr (the seam for log
//!   shipping).
//! - [`supervisor::strays`]: signalling leftover processes: `kill(-1)` as PID 1, a walk of our
//!   own descendants in `/proc` otherwise.
//! - [`supervisor::signals`]: the inherited signal mask and ignored signals, and the streams
//!   muster listens to.
//! - [`gossip`]: membership in Serf's wire format. So far the pure codec: `msgpack` (the old
//!   spec Serf's gossip speaks), `lzw` (Go's `compress/lzw`), `wire` (CRC, compression,
//!   compound, push/pull streams, node states, tags), checked byte for byte against packets
//!   captured from Debian's serf 0.9.4 (`tests/serf_golden.rs`); and `swim`, the sans-IO
//!   SWIM + Lifeguard core (`handle(now, input)`, `poll_output()`, `poll_timeout()`, seeded
//!   RNG), tested in a deterministic network simulator (`tests/gossip_sim.rs`); `serf`, Serf's
//!   sans-IO layer above it (Lamport clock, intents, alive/leaving/left/failed, Serf's
//!   push/pull state, reconnect, reap); `node`, the two composed into one sans-IO node fed
//!   bytes and time (framing, push/pull state, join timer, leave); and `driver`, the tokio
//!   shell around `node` (UDP + TCP push/pull, DNS for seeds), which logs every event and publishes the whole view on a
//!   `watch`, tested against Debian's real `serf agent` (`tests/serf_interop.rs`). The
//!   decoders are fuzzed by `tests/fuzz/` (cargo-fuzz). `validate` holds the character sets
//!   and limits of names and tags; `swim` applies them to everything announced, admits a new
//!   name only once it answers a probe, holds a third party's harmful claims about a live
//!   member while the member can refute them, and never sends a stranger more bytes than
//!   its packet carried (`tests/hostile_gossip.rs` attacks a load balancer this way).
//! - [`logship`]: log shipping. Pure cores: RFC 5424 formatting (`syslog`), RELP frames and
//!   the sans-IO client that resends what was not acknowledged (`relp`); and `ship`, the
//!   shell: a bounded queue filled through the output sink's `Tap` (block or drop-oldest) and
//!   a tokio task talking to the collector. `app.rs` starts it with `[logship]` and gives it
//!   a few seconds at exit to deliver what is queued.
//! - [`haproxy`]: the HAProxy sync on the load balancer. Pure cores: `model` (the alive and
//!   leaving members of one role with valid names and tags, sorted, plus the lab's
//!   `addresses`), `template` (handlebars, strict, no escaping), `bisect` (the search by halves
//!   for the members a config cannot hold) and `cfg` (a rendered config read back into servers
//!   and skeleton; `plan(old, new)` gives runtime operations, or a reload for a structural
//!   change, and `plan(None, new)` is the first start). The shell: `runtime` (admin socket in
//!   prompt mode, master CLI, HAProxy's replies read in one place) and `sync`, the task
//!   following the gossip view: render, `haproxy -W -c` run like the HAProxy service in its
//!   master's environment, members at fault left out, atomic write, then add / drain / remove
//!   servers through the runtime API, or save server state and reload through the master CLI.
//!
//! # Architecture invariants
//!
//! - **Only `supervisor/reaper.rs` calls `waitpid`.** No `tokio::process`, no
//!   `std::process::Child::wait`: a second waiter would steal exit statuses (tested by
//!   `tests/invariants.rs`).
//! - **`supervisor/core.rs`, `gossip/` (but its `driver.rs`), `logship/` (but its `ship.rs`)
//!   and `haproxy/` (but its `runtime.rs` and `sync.rs`) do no I/O and read no clock**: time (and, for gossip, the random seed) comes in as an argument.
//! - **Decoders never panic and never allocate more than their input justifies**: every
//!   length is checked against the bytes left or an explicit limit.
//! - **A name or tag from the network is stored only after `gossip::validate` accepted it**
//!   (`swim` for memberlist messages and push/pulls, `serf` for intents), and the HAProxy
//!   model checks again before rendering: what a peer says reaches `haproxy.cfg` as data.
//! - **Signal handlers are registered before the first spawn**, so no SIGCHLD is lost.
//! - **A pid is signalled only while the core holds it unreaped** (Running or Stopping), so a
//!   recycled pid is never hit.
//! - **muster never exits before its descendants are gone or the stop deadline has passed**;
//!   every wait has a deadline.
//! - **HAProxy's config file only ever holds a render that `haproxy -c` accepted**, written by
//!   rename; a membership change never reloads HAProxy (tests/haproxy_sync.rs counts reloads).

pub mod app;
pub mod cli;
pub mod config;
pub mod gossip;
pub mod haproxy;
pub mod logging;
pub mod logship;
pub mod supervisor;
