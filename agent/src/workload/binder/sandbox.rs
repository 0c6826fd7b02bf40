//! runsc containers, before `create`: the policy their application gets inside the
//! sandbox (see [`crate::workload::sandbox`]), chosen as discovery will choose it.

use serde_json::{Value, json};

use super::{Binder, choose_inside_why};
use crate::{
    model::{Runtime, Workload},
    policy::CompiledPolicy,
    workload::{sandbox, socket::SandboxRequest},
};

/// The most runsc containers remembered at once (a root-only socket asks; the oldest
/// go first).
const MAX_SANDBOXES: usize = 16384;

/// What the agent answered for a runsc container, kept on disk beside its Sentry-log
/// pipe so that a restarted agent resumes reading what its sandbox reports.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SandboxRecord {
    /// The wrapper's request: the container, its bundle, the runtime's `--root`.
    pub request: SandboxRequest,
    /// The policy it was given inside, by name.
    pub policy: Option<String>,
    /// Whether gVisor's seccomp enforces it (a Sentry-log pipe reports the refusals).
    pub enforced: bool,
    /// When the wrapper asked (Unix ms).
    pub since_ms: u64,
}

impl SandboxEntry {
    /// The record of this entry, for `request`.
    pub fn record(&self, request: SandboxRequest) -> SandboxRecord {
        SandboxRecord {
            request,
            policy: self.policy.clone(),
            enforced: self.enforced,
            since_ms: self.since_ms,
        }
    }
}

/// What a runsc container was given inside its sandbox.
#[derive(Clone, Debug)]
pub struct SandboxEntry {
    /// The policy, `None` when none selects it.
    pub policy: Option<String>,
    /// The container as its bundle and the CRI described it before `create`.
    pub workload: Workload,
    /// Whether a seccomp profile was installed (the policy stops syscalls inside).
    pub enforced: bool,
    /// The runtime's `--root`, as the wrapper gave it.
    pub root: Option<std::path::PathBuf>,
    /// When the wrapper asked (Unix ms).
    pub since_ms: u64,
}

impl Binder {
    /// Where runsc sandboxes are to send their trace points (`--pod-init-config`).
    pub fn set_trace_config(&mut self, path: Option<std::path::PathBuf>) {
        self.trace_config = path;
    }

    /// What runsc container `id` was given inside its sandbox, if the wrapper asked.
    pub fn sandbox(&self, id: &str) -> Option<&SandboxEntry> {
        self.sandboxes.get(id)
    }

    /// Forget runsc container `id` (it is gone).
    pub fn forget_sandbox(&mut self, id: &str) {
        self.sandboxes.remove(id);
    }

    /// The runsc containers the wrapper asked about, by id.
    pub fn sandbox_ids(&self) -> Vec<String> {
        self.sandboxes.keys().cloned().collect()
    }

    /// A runsc container an earlier agent answered (see [`SandboxRecord`]): remember
    /// what it was given, as it was given, with its identity read again from its bundle
    /// and the CRI (the bare id and runtime when its bundle is gone).
    pub fn restore_sandbox(&mut self, record: &SandboxRecord) {
        let runtime = Runtime::from_name(&record.request.runtime);
        let (mut w, pod_id) = match sandbox::read_config(&record.request.bundle) {
            Ok(config) => sandbox::prospective_workload(&record.request.id, runtime, &config),
            Err(_) => sandbox::prospective_workload(&record.request.id, runtime, &json!({})),
        };
        self.index.complete_from_cri(&mut w, pod_id.as_deref());
        self.insert_sandbox(
            record.request.id.clone(),
            SandboxEntry {
                policy: record.policy.clone(),
                workload: w,
                enforced: record.enforced,
                root: record.request.root.clone(),
                since_ms: record.since_ms,
            },
        );
    }

    /// Remember a runsc container, the oldest forgotten past [`MAX_SANDBOXES`].
    fn insert_sandbox(&mut self, id: String, entry: SandboxEntry) {
        if self.sandboxes.len() >= MAX_SANDBOXES && !self.sandboxes.contains_key(&id) {
            let oldest = self
                .sandboxes
                .iter()
                .min_by_key(|(_, e)| e.since_ms)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.sandboxes.remove(&k);
            }
        }
        self.sandboxes.insert(id, entry);
    }

    /// The compiled policy of that name, if loaded.
    pub fn policy_named(&self, name: &str) -> Option<&CompiledPolicy> {
        self.table
            .entries()
            .iter()
            .map(|e| &e.policy)
            .find(|p| p.name == name)
    }

    /// A runsc container is about to be created: choose its policy as discovery will
    /// (from its bundle and the CRI, never from the workload), and answer the profile
    /// that makes gVisor apply it to the application.
    pub(super) fn on_sandbox(&mut self, s: SandboxRequest) -> anyhow::Result<Value> {
        let runtime = Runtime::from_name(&s.runtime);
        if !runtime.sandboxed() || runtime == Runtime::Kata {
            anyhow::bail!(
                "`{}` runs containers on the host kernel: the probe polices them from `start`; \
                 only runsc takes a policy into its sandbox",
                s.runtime
            );
        }
        let config = sandbox::read_config(&s.bundle)?;
        let (mut w, pod_id) = sandbox::prospective_workload(&s.id, runtime, &config);
        self.index.complete_from_cri(&mut w, pod_id.as_deref());
        let choice = choose_inside_why(self.table.entries(), &w, self.default_policy.as_deref());
        let policy = choice.map(|(c, why)| (&self.table.entries()[c.policy].policy, why));
        let (profile, warnings) = match policy
            .as_ref()
            .and_then(|(p, _)| sandbox::sandbox_profile_with_warnings(p))
        {
            Some((profile, warnings)) => (Some(profile), warnings),
            None => (None, Vec::new()),
        };
        let entry = SandboxEntry {
            policy: policy.as_ref().map(|(p, _)| p.name.clone()),
            workload: w.clone(),
            enforced: profile.is_some(),
            root: s.root.clone(),
            since_ms: crate::clock::now_ms(),
        };
        match &policy {
            Some((p, why)) => info_workload!(&w,
                event = "sandbox_policy",
                policy = %p.name,
                mode = p.mode.as_str(),
                inside = if profile.is_some() { "seccomp (--oci-seccomp)" } else { "trace only" },
                reason = %why,
                profile_warnings = %warnings.join("; "),
            ),
            None => info_workload!(
                &w,
                event = "sandbox_policy",
                policy = "",
                reason = "no policy selects it",
            ),
        }
        let reply = json!({
            "ok": true,
            "policy": entry.policy,
            "mode": policy.as_ref().map(|(p, _)| p.mode.as_str()),
            "seccomp": profile,
            "profile_warnings": warnings,
            "trace_config": self.trace_config.as_ref().map(|p| p.display().to_string()),
        });
        self.insert_sandbox(s.id, entry);
        Ok(reply)
    }
}
