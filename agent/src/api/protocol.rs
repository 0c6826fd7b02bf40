//! The agent API's wire types: what a client asks ([`Request`]) and what the agent
//! answers ([`WatchFrame`], [`EventsAnswer`], the status object), one JSON object per
//! line. Both the server ([`super::server`]) and the client ([`super::client`]) use
//! these types, so the contract lives here and nowhere else.
//!
//! - `{"op":"status"}` → one line: the agent's state (see `sysfence status --json`).
//! - `{"op":"events"}` → one [`EventsAnswer`] line: bound workloads and the violation
//!   records kept ([`crate::event::Violation`], as in the agent's log).
//! - `{"op":"watch","namespace":..,"pod":..,"container":..,"cgroup":..}` (absent or
//!   `null` filters match everything) → one [`WatchFrame`] line per second, counts and
//!   violations cumulative since the watch began, until the client hangs up.
//! - Any error: `{"ok":false,"error":"..."}`, then the connection closes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    event::Violation,
    model::{Binding, Counts, SyscallKey, WorkloadRef},
    policy::selector::Glob,
};

/// One request line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Status,
    Events,
    Watch(Filters),
}

impl Request {
    /// The request as one line, without the newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("requests serialize")
    }
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

/// The answer to `{"op":"events"}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventsAnswer {
    #[serde(default = "yes")]
    pub ok: bool,
    /// Since when the agent has been collecting (Unix ms).
    pub since_ms: u64,
    #[serde(default)]
    pub workloads: Vec<Binding>,
    #[serde(default)]
    pub violations: Vec<Violation>,
}

fn yes() -> bool {
    true
}

/// One line of a watch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchFrame {
    pub t_ms: u64,
    #[serde(default)]
    pub workloads: Vec<FrameWorkload>,
}

/// One workload in a watch frame.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FrameWorkload {
    #[serde(flatten)]
    pub binding: Binding,
    /// Calls since the watch began looking at it, per `abi:syscall`.
    pub counts: Counts,
    /// Violations since then, per `abi:syscall`.
    pub violations: Counts,
    /// For syscalls judged on their arguments: the arguments that decided the last
    /// violation (`flags=NEWUSER|NEWNET`), per `abi:syscall`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub violation_args: BTreeMap<SyscallKey, String>,
    /// Why counts are missing, if they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// `counts` are the application's syscalls inside a gVisor sandbox (its trace
    /// session), not the host syscalls of the sandbox.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inside_sandbox: bool,
}

/// An error answer.
pub fn error(message: impl Into<String>) -> serde_json::Value {
    serde_json::json!({"ok": false, "error": message.into()})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_by_op() {
        let f = Filters {
            namespace: Some("shop".into()),
            ..Filters::default()
        };
        let line = Request::Watch(f.clone()).to_line();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["op"], "watch");
        assert_eq!(v["namespace"], "shop");
        assert_eq!(Request::Events.to_line(), r#"{"op":"events"}"#);
        let back: Request = serde_json::from_str(r#"{"op":"watch","pod":null}"#).unwrap();
        assert_eq!(back, Request::Watch(Filters::default()));
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
    }

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
