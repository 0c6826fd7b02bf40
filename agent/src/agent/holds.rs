//! The start hold, the agent's side. The probe stops a process at its exec in a cgroup no
//! binding knows, below a hold root, and says so; the agent rescans (which binds the
//! cgroup when a policy selects it), then lets every held process go.

use std::collections::BTreeMap;

use tracing::{info, warn};

use super::Agent;

/// `CLOCK_BOOTTIME` in ns: the clock of the probe's event times.
fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Agent {
    /// Whether the probe said it held a process the agent has not let go yet.
    pub(super) fn holds_waiting(&self) -> bool {
        !self.holds_seen.is_empty()
    }

    /// After a rescan: bring the hold roots in line with the policies and containers
    /// now, and let every held process go. The rescan bound its cgroup if a policy
    /// selects it; if it found nothing, its next exec there is held again. Held
    /// processes whose event was lost are found in `HELD` all the same.
    pub(super) fn settle_holds(&mut self) {
        let roots = if self.options.start_hold {
            self.workloads.hold_roots()
        } else {
            BTreeMap::new()
        };
        if let Err(e) = self.probe.set_hold_roots(&roots) {
            warn!(event = "hold_roots_failed", error = %format!("{e:#}"), "new containers below the roots not written may start before they are bound");
        }
        let now = boot_ns();
        for (tgid, cgroup_id) in self.probe.held() {
            if !self.probe.release(tgid) {
                continue;
            }
            let held_us = self
                .holds_seen
                .get(&tgid)
                .map(|t| now.saturating_sub(*t) / 1000);
            let w = self.workloads.describe(cgroup_id);
            let policy = self
                .probe
                .slot_of(cgroup_id)
                .and_then(|s| self.workloads.policy_of_slot(s))
                .map(|(name, _)| name.to_string());
            info!(
                event = "hold_released",
                pid = tgid,
                cgroup_id,
                cgroup = %w.map(|w| w.cgroup_path.as_str()).unwrap_or(""),
                container_id = %w.and_then(|w| w.container_id.as_deref()).unwrap_or(""),
                policy = %policy.as_deref().unwrap_or(""),
                held_us = held_us.unwrap_or(0),
            );
        }
        self.holds_seen.clear();
    }
}
