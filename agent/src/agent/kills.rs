//! `killScope: workload`, the agent's half. The probe dooms the workload's cgroup (every
//! task in it dies at its next syscall); the agent writes the cgroup's `cgroup.kill`,
//! which also takes the tasks that make no syscall (a spinning sibling that shares the
//! killed syscall's memory). The probe lifts the doom once the cgroup has no task left.

use tracing::{info, warn};

use super::Agent;

impl Agent {
    /// Write `cgroup.kill` of the cgroup `cgroup_id` (and so of every cgroup below it),
    /// while its doom is in force: once its last task is gone the probe lifts it, and
    /// what starts in the cgroup after that is not the killed workload.
    pub(super) fn kill_workload(&mut self, cgroup_id: u64) {
        if !self.probe.is_doomed(cgroup_id) {
            return;
        }
        let index = self.workloads.index();
        let (Some(w), Some(dir)) = (index.get(cgroup_id), index.dir_of(cgroup_id)) else {
            warn!(
                event = "workload_kill_failed",
                cgroup_id,
                "a doomed cgroup the agent does not know: its tasks die at their next syscall, and the next rescan tries again"
            );
            return;
        };
        match std::fs::write(dir.join("cgroup.kill"), "1") {
            Ok(()) => {
                info!(event = "workload_killed", cgroup = %w.cgroup_path, cgroup_id, "killScope: workload: every process of the workload was killed (cgroup.kill)")
            }
            Err(e) => {
                warn!(event = "workload_kill_failed", cgroup = %w.cgroup_path, cgroup_id, error = %e, "cgroup.kill failed: the workload's tasks still die at their next syscall")
            }
        }
    }

    /// On every rescan: a doomed cgroup that still has processes gets `cgroup.kill`
    /// again (a kill whose event the rate limit held back, or that came in while the
    /// agent was down). The probe lifts a doom itself when the cgroup's last task is gone.
    pub(super) fn sweep_doomed(&mut self) {
        let Ok(doomed) = self.probe.doomed_workloads() else {
            return;
        };
        for cgroup_id in doomed {
            let Some(dir) = self.workloads.index().dir_of(cgroup_id) else {
                continue;
            };
            let populated = std::fs::read_to_string(dir.join("cgroup.procs"))
                .map(|p| !p.trim().is_empty())
                .unwrap_or(false);
            if populated {
                self.kill_workload(cgroup_id);
            }
        }
    }
}
