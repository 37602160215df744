//! What a run's end means for the container, outside a stop: restart with back-off, done,
//! given up, daemonized, or the end of the container. Only the main service and services
//! marked `critical` end the container; a side service never takes the main service down.
//! A failed `oneshot`, or a failed service that others still wait for, stops the start.

use std::time::{Duration, Instant};

use super::{Core, ExitStatus, ServiceId, State, backoff};
use crate::config::Restart;

impl Core {
    /// Whether this service's end, or giving up on it, ends the container.
    fn ends_container(&self, id: ServiceId) -> bool {
        Some(id) == self.main || self.services[id].spec.critical
    }

    /// Decides after a run that ended while muster runs (not stopping); `ran` is how long it
    /// ran.
    pub(super) fn settle_end(
        &mut self,
        id: ServiceId,
        status: ExitStatus,
        ran: Duration,
        now: Instant,
    ) {
        let ends_container = self.ends_container(id);
        let svc = &mut self.services[id];
        let name = svc.spec.name.clone();
        let quick = ran < svc.spec.min_uptime;
        if status.success() && quick && svc.left_behind && !svc.spec.oneshot {
            tracing::warn!(
                service = %name,
                "{name} daemonized: run it in the foreground (it exited 0 and left its processes \
                 running; muster does not start another copy)"
            );
            svc.state = State::Down;
            svc.daemonized = true;
            if ends_container {
                self.begin_stop(now, None, Some(0));
            } else {
                self.side_down(now);
            }
            return;
        }
        let restart = !svc.spec.oneshot
            && match svc.spec.restart {
                Restart::Always => true,
                Restart::OnFailure => !status.success(),
                Restart::Never => false,
            };
        if !restart {
            self.ended_for_good(id, status, ends_container, now);
            return;
        }
        if !quick {
            svc.crashes = 0;
            svc.last_delay = None;
        }
        svc.crashes += 1;
        let limit = svc.spec.crash_limit;
        if limit != 0 && svc.crashes > limit {
            svc.state = State::Down;
            let crashes = svc.crashes;
            if ends_container {
                tracing::error!(service = %name, %status, crashes, "crash loop, giving up");
                let code = if status.success() { 1 } else { status.code() };
                self.begin_stop(now, None, Some(code));
            } else {
                tracing::error!(
                    service = %name,
                    %status,
                    crashes,
                    "crash loop, giving up (crash_limit = {limit}): left stopped, the container goes on"
                );
                self.side_failed(id, status, now);
            }
            return;
        }
        let delay = backoff(
            svc.spec.restart_delay,
            svc.spec.restart_delay_max,
            svc.crashes,
        );
        if status.success() && quick && svc.last_delay.is_none() && !ends_container {
            tracing::info!(
                service = %name,
                "exited 0 before min_uptime and restart = \"always\" starts it again; \
                 for a task that runs once set oneshot = true or restart = \"never\""
            );
        }
        if svc.last_delay != Some(delay) {
            // Once per back-off step: a loop at the ceiling is not logged at every restart.
            svc.restart_reports += 1;
            let note = if delay == svc.spec.restart_delay_max {
                "restarting; the back-off is at restart_delay_max: the next restarts are not \
                 logged until a run lasts min_uptime"
            } else {
                "restarting"
            };
            tracing::warn!(
                service = %name,
                %status,
                crashes = svc.crashes,
                delay_ms = delay.as_millis() as u64,
                "{note}"
            );
        } else {
            tracing::debug!(service = %name, %status, crashes = svc.crashes, "restarting");
        }
        svc.last_delay = Some(delay);
        svc.state = State::Backoff { until: now + delay };
    }

    /// A run that is not restarted (`restart`, or a oneshot).
    fn ended_for_good(&mut self, id: ServiceId, status: ExitStatus, ends: bool, now: Instant) {
        let svc = &mut self.services[id];
        svc.state = State::Down;
        let name = svc.spec.name.clone();
        if status.success() {
            tracing::info!(service = %name, %status, "ended");
        } else {
            tracing::warn!(service = %name, %status, "ended");
        }
        if svc.spec.oneshot && !status.success() {
            tracing::error!(service = %name, %status, "oneshot {name} failed: stopping");
            self.begin_stop(now, None, Some(status.code()));
        } else if ends {
            self.begin_stop(now, None, Some(status.code()));
        } else if status.success() {
            // A oneshot that succeeded may unblock its dependents.
            self.side_down(now);
        } else {
            self.side_failed(id, status, now);
        }
    }

    /// A side service that failed for good: the container goes on, unless services wait for
    /// it (they could never start).
    fn side_failed(&mut self, id: ServiceId, status: ExitStatus, now: Instant) {
        if self.has_waiting_dependents(id) {
            let name = &self.services[id].spec.name;
            tracing::error!(service = %name, "a service that others wait for has failed");
            let code = if status.success() { 1 } else { status.code() };
            self.begin_stop(now, None, Some(code));
        } else {
            self.side_down(now);
        }
    }

    /// A side service is down for good: without a main service, the container ends once
    /// every service is down (with the first failure's code); otherwise dependents may start.
    fn side_down(&mut self, now: Instant) {
        if self.main.is_none() && self.services.iter().all(|s| s.state == State::Down) {
            let code = self
                .services
                .iter()
                .filter(|s| !s.daemonized)
                .filter_map(|s| s.last)
                .find(|st| !st.success())
                .map_or(0, ExitStatus::code);
            self.begin_stop(now, None, Some(code));
        } else {
            self.start_waiting();
        }
    }
}
