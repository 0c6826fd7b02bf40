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
    /// The workload went away: these are its last counts.
    pub gone: bool,
}

/// Everything a source knows at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Unix time, milliseconds.
    pub t_ms: u64,
    pub workloads: Vec<WorkloadCounts>,
}
