//! The vocabulary every command shares: what a workload is ([`Workload`], as the agent
//! knows it; [`WorkloadRef`], as outputs name it), which runtime runs it ([`Runtime`]),
//! what its cgroup path says ([`Engine`], [`Kind`]), and one syscall of one ABI
//! ([`SyscallKey`]).
//!
//! Where each field comes from, and which sources are trusted, is the business of
//! [`crate::workload`]; this module only names things.

use std::{collections::BTreeMap, fmt, str::FromStr};

use probe_common::Abi;
use serde::{Deserialize, Serialize};

use crate::syscall_table;

/// The runtime names a policy's `selector.runtime` may use besides a CRI handler.
pub const KNOWN_RUNTIMES: &[&str] = &["runc", "crun", "runsc", "kata", "youki"];

/// Who created the container cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    Containerd,
    CriO,
    Docker,
    Podman,
    Kata,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Containerd => "containerd",
            Engine::CriO => "cri-o",
            Engine::Docker => "docker",
            Engine::Podman => "podman",
            Engine::Kata => "kata",
        }
    }
}

/// What the cgroup is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A container's own cgroup.
    Container,
    /// A Kubernetes pod cgroup (parent of its containers).
    Pod,
    /// A runtime's monitor process (conmon), not the workload.
    Monitor,
    /// A runtime's overhead cgroup (Kata's VMM outside the sandbox cgroup).
    Overhead,
}

/// An OCI runtime, as recognised.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    Runc,
    Crun,
    Runsc,
    Kata,
    Youki,
    Other(String),
}

impl Runtime {
    /// From a runtime binary's name, a state directory's owner or a CRI handler.
    pub fn from_name(name: &str) -> Runtime {
        let base = name.rsplit('/').next().unwrap_or(name);
        match base {
            "runc" => Runtime::Runc,
            "crun" => Runtime::Crun,
            "runsc" | "runsc-sandbox" | "runsc-gofer" | "gvisor" => Runtime::Runsc,
            "youki" => Runtime::Youki,
            b if b.starts_with("kata") || b == "containerd-shim-kata-v2" => Runtime::Kata,
            other => Runtime::Other(other.to_string()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Runtime::Runc => "runc",
            Runtime::Crun => "crun",
            Runtime::Runsc => "runsc",
            Runtime::Kata => "kata",
            Runtime::Youki => "youki",
            Runtime::Other(s) => s,
        }
    }

    /// Whether the host sees the sandbox's syscalls rather than the application's.
    pub fn sandboxed(&self) -> bool {
        matches!(self, Runtime::Runsc | Runtime::Kata)
    }

    /// What the host sees of a sandboxed workload, for logs and reports.
    pub fn sandbox_note(&self) -> Option<&'static str> {
        match self {
            Runtime::Runsc => {
                Some("sandboxed: host sees the gVisor Sentry's syscalls, not the application's")
            }
            Runtime::Kata => {
                Some("sandboxed: host sees the Kata VMM's syscalls, not the application's")
            }
            _ => None,
        }
    }
}

impl Serialize for Runtime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// What a policy binds to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub cgroup_id: u64,
    /// Relative to the cgroup v2 root, no leading `/`.
    pub cgroup_path: String,
    pub runtime: Option<Runtime>,
    /// The CRI runtime handler (RuntimeClass), when the CRI told.
    pub runtime_handler: Option<String>,
    pub engine: Option<Engine>,
    pub kind: Option<Kind>,
    pub container_id: Option<String>,
    /// The container's name.
    pub container: Option<String>,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    pub namespace: Option<String>,
    /// The pod's labels.
    pub labels: BTreeMap<String, String>,
    pub image: Option<String>,
    /// The pod's infrastructure (pause) container.
    pub sandbox_container: bool,
    /// The v2 cgroup was made by sysfence (hybrid host, runtime left it in the root).
    pub adopted: bool,
    /// The runtime's state vouches that this cgroup is the container's own (its init
    /// process is in it). A container id read from the cgroup's name alone is a claim:
    /// a workload can create cgroups with any name below its own.
    pub vouched: bool,
    /// Why this container's identity is incomplete, if it is (the CRI does not know it,
    /// no runtime's state accounts for it): then its policy is chosen failing closed,
    /// the strictest that could select it.
    pub unknown: Option<String>,
    /// A container of a pod that the CRI, answering, does not list yet (a pod's sandbox
    /// inside RunPodSandbox): its labels are still to come. The start hold keeps its
    /// entrypoint until they do.
    pub awaiting_cri: bool,
}

impl Workload {
    /// Whether the workload's pod metadata is known (namespace at least).
    pub fn in_pod(&self) -> bool {
        self.namespace.is_some()
    }

    pub fn sandboxed(&self) -> bool {
        self.runtime.as_ref().is_some_and(Runtime::sandboxed)
    }

    /// Whether `name`, as a selector's `runtime`, names this workload's runtime: a known
    /// runtime name is compared with the recognised runtime, any other name with the
    /// CRI runtime handler.
    pub fn runtime_is(&self, name: &str) -> bool {
        if KNOWN_RUNTIMES.contains(&name) {
            self.runtime.as_ref().is_some_and(|r| r.name() == name)
        } else {
            self.runtime_handler.as_deref() == Some(name)
        }
    }

    /// Whether anything beyond the cgroup is known: a container of some runtime.
    pub fn is_container(&self) -> bool {
        self.container_id.is_some() || self.runtime.is_some()
    }

    /// Fill what this classification lacks from an earlier one of the same cgroup (a
    /// cgroup id names one cgroup for good): a container's runtime state goes when it is
    /// deleted, a moment before its cgroup, and its last events must still name it.
    pub fn keep_identity_from(&mut self, earlier: &Workload) {
        fn keep<T: Clone>(now: &mut Option<T>, before: &Option<T>) {
            if now.is_none() {
                now.clone_from(before);
            }
        }
        if self.cgroup_id != earlier.cgroup_id {
            return;
        }
        keep(&mut self.runtime, &earlier.runtime);
        keep(&mut self.runtime_handler, &earlier.runtime_handler);
        keep(&mut self.engine, &earlier.engine);
        keep(&mut self.kind, &earlier.kind);
        keep(&mut self.container_id, &earlier.container_id);
        keep(&mut self.container, &earlier.container);
        keep(&mut self.pod, &earlier.pod);
        keep(&mut self.pod_uid, &earlier.pod_uid);
        keep(&mut self.namespace, &earlier.namespace);
        keep(&mut self.image, &earlier.image);
        if self.labels.is_empty() {
            self.labels.clone_from(&earlier.labels);
        }
        self.sandbox_container |= earlier.sandbox_container;
        self.vouched |= earlier.vouched;
    }
}

impl Workload {
    /// How outputs name this workload: flat strings, empty where unknown.
    pub fn to_ref(&self) -> WorkloadRef {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        WorkloadRef {
            cgroup_id: self.cgroup_id,
            cgroup: self.cgroup_path.clone(),
            namespace: text(&self.namespace),
            pod: text(&self.pod),
            container: text(&self.container),
            container_id: text(&self.container_id),
            image: text(&self.image),
            runtime: self.runtime.as_ref().map_or("", |r| r.name()).to_string(),
            labels: self.labels.clone(),
        }
    }
}

/// One syscall of one ABI, written `abi:name` (`x86_64:read`, `i386:mount`), as the
/// agent API keys its counts. `name` is the kernel's name, `#N` for a number without
/// one, or `unclassified` (ABI `unknown`) for what the probe could not classify.
/// `abi:name` of [`SyscallKey::new_namespace`]: not a syscall.
const NEW_NAMESPACE_ABI: &str = "any";
const NEW_NAMESPACE_NAME: &str = "new-namespace";

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SyscallKey {
    pub abi: String,
    pub name: String,
}

impl SyscallKey {
    pub fn new(abi: &str, name: &str) -> SyscallKey {
        SyscallKey {
            abi: abi.to_string(),
            name: name.to_string(),
        }
    }

    /// The key of a probe counter index.
    pub fn of_index(index: u32) -> SyscallKey {
        let (abi, name) = syscall_table::describe_index(index);
        SyscallKey {
            abi: abi.map_or("unknown", Abi::name).to_string(),
            name,
        }
    }

    pub fn abi(&self) -> Option<Abi> {
        Abi::ALL.into_iter().find(|a| a.name() == self.abi)
    }

    /// The pseudo-key of forks into a new namespace (the probe's `NEW_NAMESPACE_INDEX`
    /// counter): in recordings, what `namespaces:` is learned from.
    pub fn new_namespace() -> SyscallKey {
        SyscallKey::new(NEW_NAMESPACE_ABI, NEW_NAMESPACE_NAME)
    }

    pub fn is_new_namespace(&self) -> bool {
        self.abi == NEW_NAMESPACE_ABI && self.name == NEW_NAMESPACE_NAME
    }

    /// The probe's counter index, when the key names a real syscall of a known ABI.
    pub fn index(&self) -> Option<u32> {
        let abi = self.abi()?;
        match self.name.strip_prefix('#') {
            Some(nr) => probe_common::syscall_index(abi, nr.parse().ok()?),
            None => syscall_table::index_of(abi, &self.name),
        }
    }

    /// Whether a policy can name it: a known ABI and a syscall name (not `#N`).
    pub fn nameable(&self) -> bool {
        self.abi().is_some() && syscall_table::all_names().contains(self.name.as_str())
    }

    /// `mount (i386)` for other ABIs, bare `read` for x86_64, as reports print it.
    pub fn label(&self) -> String {
        if self.is_new_namespace() {
            return "fork into a new namespace (CLONE_NEW*)".to_string();
        }
        match self.abi() {
            Some(abi) => syscall_table::label(Some(abi), &self.name),
            None => self.name.clone(),
        }
    }
}

impl fmt::Display for SyscallKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.abi, self.name)
    }
}

impl FromStr for SyscallKey {
    type Err = String;
    fn from_str(s: &str) -> Result<SyscallKey, String> {
        match s.split_once(':') {
            Some((abi, name)) if !abi.is_empty() && !name.is_empty() => {
                Ok(SyscallKey::new(abi, name))
            }
            _ => Err(format!("`{s}`: expected ABI:SYSCALL, e.g. `x86_64:read`")),
        }
    }
}

impl Serialize for SyscallKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SyscallKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Counts keyed by syscall.
pub type Counts = BTreeMap<SyscallKey, u64>;

/// A workload as outputs name it (logs, the API, `watch`, reports): flat strings,
/// empty where a field is unknown. Made from a [`Workload`] by [`Workload::to_ref`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkloadRef {
    pub cgroup_id: u64,
    /// Relative to the cgroup v2 root.
    pub cgroup: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub container_id: String,
    pub image: String,
    pub runtime: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl WorkloadRef {
    /// A short name for tables: `namespace/pod/container`, else the container id's
    /// first 12 characters, else the cgroup path.
    pub fn display_name(&self) -> String {
        if !self.pod.is_empty() || !self.namespace.is_empty() {
            let mut parts = vec![self.namespace.as_str(), self.pod.as_str()];
            if !self.container.is_empty() {
                parts.push(&self.container);
            }
            return parts
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join("/");
        }
        if !self.container.is_empty() {
            return self.container.clone();
        }
        if !self.container_id.is_empty() {
            return self.container_id.chars().take(12).collect();
        }
        if self.cgroup.is_empty() {
            format!("cgroup #{}", self.cgroup_id)
        } else {
            self.cgroup.clone()
        }
    }
}

/// A workload bound to a policy, as `status`, `events` and `watch` list it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Binding {
    #[serde(flatten)]
    pub workload: WorkloadRef,
    pub policy: String,
    /// The mode applied: the policy's, or `monitor` where it is applied monitor-only.
    pub mode: String,
    /// The policy slot the workload points at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<u32>,
    /// When it was first bound (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound_ms: Option<u64>,
    /// Why it has this policy: `selector`, `fail-closed: ...`, `default policy: ...`,
    /// `ancestor: ...`, `pinned: ...`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_resolve() {
        let k: SyscallKey = "i386:mount".parse().unwrap();
        assert_eq!(k.to_string(), "i386:mount");
        assert_eq!(k.label(), "mount (i386)");
        assert_eq!(k.index(), syscall_table::index_of(Abi::Ia32, "mount"));
        let read = SyscallKey::of_index(0);
        assert_eq!(read, SyscallKey::new("x86_64", "read"));
        assert_eq!(read.label(), "read");
        let un = SyscallKey::of_index(probe_common::UNCLASSIFIED_INDEX);
        assert_eq!(un.to_string(), "unknown:unclassified");
        assert!(un.index().is_none() && !un.nameable());
        assert!("nocolon".parse::<SyscallKey>().is_err());
    }
}
