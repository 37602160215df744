//! HAProxy dataplane sync (on the load balancer): HAProxy's servers follow the live members of
//! one role, through the runtime API, without a failed request.
//!
//! This subsystem knows only `crate::config` and its own folder: it follows its own
//! [`model::Member`]s (`app.rs` maps the gossip view into them) and runs `haproxy -c` through a
//! [`check::Runner`] that `app.rs` gives it.
//!
//! Pure cores, no I/O and no clock:
//!
//! - [`model`]: the members followed, and the documented model a template sees (members
//!   sorted by name, the lab's `addresses`);
//! - [`template`]: handlebars, strict, no HTML escaping;
//! - [`bisect`]: finding the members a config cannot hold, by halves, so one bad member never
//!   blocks the others;
//! - [`mod@cfg`]: a rendered config read back into its servers and its skeleton, and
//!   [`cfg::plan`], which turns two configs into runtime operations or a reload;
//! - [`servers`]: the servers' lifecycle (join, check, in service, drain, maintenance, delete,
//!   bring back, the reload protocol) as a state machine fed HAProxy's typed replies, which
//!   emits runtime commands;
//! - [`check`]: the `haproxy -c` runs that check a config as the HAProxy service runs, and the
//!   `Runner` that carries them out.
//!
//! The shell: [`runtime`] talks to HAProxy's admin and master sockets and reads HAProxy's
//! answers into typed values; [`sync`] is the task that renders, validates (`haproxy -c`),
//! writes atomically, and carries out what [`servers`] decides.

pub mod bisect;
pub mod cfg;
pub mod check;
pub mod model;
pub mod runtime;
pub mod servers;
pub mod sync;
pub mod template;
