//! What a data source of `watch` (and `record`) produces: cumulative counts per
//! workload per (ABI, syscall), with the workload's identity and its policy.

pub use crate::{
    api::protocol::Filters,
    model::{Counts, SyscallKey, WorkloadRef},
};

/// One workload in a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadCounts {
    pub identity: WorkloadRef,
    /// The policy bound to it and its mode, when the source knows (the agent does; the
    /// standalone probe does not police).
    pub policy: Option<String>,
    pub mode: Option<String>,
    /// Cumulative since the source began watching this workload.
    pub counts: Counts,
    /// Cumulative violations (syscalls outside the policy), agent source only.
    pub violations: Counts,
    /// The arguments that decided the last violation, per syscall judged on them.
    pub violation_args: std::collections::BTreeMap<SyscallKey, String>,
    /// The workload went away: these are its last counts.
    pub gone: bool,
    /// `counts` are the application's syscalls inside a gVisor sandbox.
    pub inside_sandbox: bool,
    /// With `inside_sandbox`: the sandbox's own host syscalls (what the probe counts
    /// for its cgroup), cumulative. Empty otherwise.
    pub host_counts: Counts,
}

/// Everything a source knows at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Unix time, milliseconds.
    pub t_ms: u64,
    pub workloads: Vec<WorkloadCounts>,
}

impl Snapshot {
    /// A frame of the agent's watch, as a snapshot.
    pub fn from_frame(frame: crate::api::protocol::WatchFrame) -> Snapshot {
        Snapshot {
            t_ms: frame.t_ms,
            workloads: frame
                .workloads
                .into_iter()
                .map(|w| WorkloadCounts {
                    identity: w.binding.workload,
                    policy: Some(w.binding.policy).filter(|p| !p.is_empty()),
                    mode: Some(w.binding.mode).filter(|m| !m.is_empty()),
                    counts: w.counts,
                    violations: w.violations,
                    violation_args: w.violation_args,
                    gone: false,
                    inside_sandbox: w.inside_sandbox,
                    host_counts: Counts::new(),
                })
                .collect(),
        }
    }
}
