//! The start hold, the agent's side. The probe stops a process at its exec in a cgroup no
//! binding knows, below a hold root, and says so; the agent rescans (which binds the
//! cgroup when a policy selects it), then lets every held process go.

use std::{collections::BTreeMap, time::Duration};

use tracing::{info, warn};

use super::Agent;

/// The longest a process stays held when its cgroup is never found (an agent that cannot
/// read the cgroup tree must not stop a node's new processes for good).
pub(super) const HOLD_AT_MOST: Duration = Duration::from_secs(10);

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
    /// now, and let go every held process whose cgroup the rescan saw, knowing it was
    /// held: it bound the cgroup if a policy selects it, and if it found nothing there,
    /// the next exec there is held again. A process whose cgroup the rescan did not see
    /// yet (made while it ran), or that was held after the rescan began, stays held for
    /// the next one; none stays longer than [`HOLD_AT_MOST`].
    /// Processes whose event was lost are found in `HELD` all the same.
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
        let held = self.probe.held();
        self.holds_seen
            .retain(|tgid, _| held.iter().any(|(t, _)| t == tgid));
        for (tgid, cgroup_id) in held {
            let since = *self.holds_seen.entry(tgid).or_insert(now);
            let held_us = now.saturating_sub(since) / 1000;
            let w = self.workloads.describe(cgroup_id);
            let expired = held_us >= HOLD_AT_MOST.as_micros() as u64;
            // A process held after the rescan noted the held ones waits for the next:
            // this one read the runtime's state without knowing the entrypoint had
            // exec'd, and took its container for one still in setup.
            let considered = self.workloads.index().execd_noted(tgid);
            // A pod's container the CRI does not list yet (its sandbox, inside
            // RunPodSandbox) has no labels yet: no policy that selects on them could
            // bind it. It waits for the CRI, which lists it once RunPodSandbox returns.
            let awaiting_cri = w.is_some_and(|w| w.awaiting_cri);
            if (w.is_none() || !considered || awaiting_cri) && !expired {
                continue;
            }
            // What ran the exec, for the reader, read while it is still stopped: the name
            // its exec gave it (or one it set since, which only names it).
            let comm = std::fs::read_to_string(format!("/proc/{tgid}/comm"))
                .map(|c| c.trim_end().to_string())
                .unwrap_or_default();
            if !self.probe.release(tgid) {
                continue;
            }
            self.holds_seen.remove(&tgid);
            let policy = self
                .probe
                .slot_of(cgroup_id)
                .and_then(|s| self.workloads.policy_of_slot(s))
                .map(|(name, _)| name.to_string());
            if w.is_none() {
                warn!(
                    event = "hold_expired",
                    pid = tgid,
                    comm,
                    cgroup_id,
                    held_us,
                    "its cgroup was not found in time: let go unbound"
                );
                continue;
            }
            info!(
                event = "hold_released",
                pid = tgid,
                comm,
                cgroup_id,
                cgroup = %w.map(|w| w.cgroup_path.as_str()).unwrap_or(""),
                container_id = %w.and_then(|w| w.container_id.as_deref()).unwrap_or(""),
                policy = %policy.as_deref().unwrap_or(""),
                held_us,
            );
        }
    }
}
