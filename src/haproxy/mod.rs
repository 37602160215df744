//! HAProxy dataplane sync (on the load balancer): HAProxy's servers follow the live members of
//! one role, through the runtime API, without a failed request.
//!
//! Pure cores, no I/O and no clock:
//!
//! - [`model`]: the documented model a template sees (members sorted by name, the lab's
//!   `addresses`), built from the gossip view;
//! - [`template`]: handlebars, strict, no HTML escaping;
//! - [`bisect`]: finding the members a config cannot hold, by halves, so one bad member never
//!   blocks the others;
//! - [`mod@cfg`]: a rendered config read back into its servers and its skeleton, and
//!   [`cfg::plan`], which turns two configs into runtime operations or a reload.
//!
//! The shell: [`runtime`] talks to HAProxy's admin and master sockets; [`sync`] is the task
//! that renders, validates (`haproxy -c`), writes atomically and applies.

pub mod bisect;
pub mod cfg;
pub mod model;
pub mod runtime;
pub mod sync;
pub mod template;

#[cfg(test)]
mod tests;
