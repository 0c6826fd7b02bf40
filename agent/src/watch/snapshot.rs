//! What a data source of `watch` (and `record`) produces: cumulative counts per
//! workload per (ABI, syscall), with the workload's identity and its policy.

use serde::{Deserialize, Serialize};

pub use crate::model::{Counts, SyscallKey, WorkloadRef};
use crate::policy::selector::Glob;

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

/// `--namespace`, `--pod`, `--container`, `--cgroup`: every filter given must match.
/// Names match exactly; `cgroup` is a glob under the cgroup v2 root where `*` stops at
/// `/`, as a policy's `cgroupPath`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Filters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        self.namespace.is_none()
            && self.pod.is_none()
            && self.container.is_none()
            && self.cgroup.is_none()
    }

    /// Check the cgroup glob.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(g) = &self.cgroup {
            Glob::path(g.trim_start_matches('/'))
                .map_err(|e| anyhow::anyhow!("--cgroup `{g}`: not a valid glob: {e}"))?;
        }
        Ok(())
    }

    pub fn cgroup_matches(&self, path: &str) -> bool {
        match &self.cgroup {
            None => true,
            Some(g) => Glob::path(g.trim_start_matches('/'))
                .is_ok_and(|g| g.matches(path.trim_start_matches('/'))),
        }
    }

    pub fn matches(&self, w: &WorkloadRef) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|v| v == have);
        eq(&self.namespace, &w.namespace)
            && eq(&self.pod, &w.pod)
            && eq(&self.container, &w.container)
            && self.cgroup_matches(&w.cgroup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_like_selectors() {
        let w = WorkloadRef {
            cgroup: "kubepods/burstable/podabc/cri-containerd-1".into(),
            namespace: "shop".into(),
            pod: "web-1".into(),
            container: "nginx".into(),
            ..WorkloadRef::default()
        };
        assert!(Filters::default().matches(&w));
        let f = Filters {
            namespace: Some("shop".into()),
            cgroup: Some("kubepods/*/pod*/*".into()),
            ..Filters::default()
        };
        assert!(f.matches(&w));
        let f = Filters {
            cgroup: Some("kubepods/*".into()),
            ..Filters::default()
        };
        assert!(!f.matches(&w), "`*` stops at `/`");
        let f = Filters {
            pod: Some("web-2".into()),
            ..Filters::default()
        };
        assert!(!f.matches(&w));
    }
}
