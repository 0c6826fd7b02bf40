//! Workloads: what a policy binds to, how the agent finds them, and when it binds.
//!
//! A [`Workload`] is `{cgroup id, cgroup path, runtime, container id, pod, namespace,
//! labels, image, container name}`. The agent builds it from every source there is, so
//! that it works with any runtime:
//!
//! - **cgroupfs** ([`cgroup_naming`]): the tree is walked and watched with inotify; the
//!   names that kubelet (systemd and cgroupfs drivers), containerd, CRI-O, Docker,
//!   Podman and Kata give their cgroups tell the container id, the pod UID and the QoS
//!   class.
//! - **runtime state** ([`runtime`]): the state directories of runc (`/run/runc`,
//!   containerd's `/run/containerd/runc/<namespace>`), crun (`/run/crun`), runsc
//!   (`/var/run/runsc`) and youki give the init pid, hence the cgroup, and the bundle,
//!   whose `config.json` annotations carry CRI metadata (containerd's
//!   `io.kubernetes.cri.*`, CRI-O's `io.kubernetes.pod.*`).
//! - **CRI** ([`cri`]): when a containerd or CRI-O socket is there, pod name, namespace,
//!   labels, container name, image and runtime handler.
//! - **processes**: gVisor's `runsc-sandbox`/`runsc-gofer` and Kata's shim and VMM
//!   (`containerd-shim-kata-v2`, `qemu-system-*`, `cloud-hypervisor`, `firecracker`)
//!   are recognised by their executables.
//!
//! # When a policy is bound: at the runtime's `start`
//!
//! The entrypoint's very first syscall must already be policed. The agent closes that
//! gap with a runtime wrapper, `sysfence wrap --runtime /usr/sbin/runc -- ARGS`, which
//! the node uses as its OCI runtime binary (containerd's `BinaryName`, CRI-O's
//! `runtime_path`, Docker's and Podman's `--runtime`). Every command is passed to the
//! real runtime unchanged, except that `start` first asks the agent, over a local
//! socket ([`socket`]), to classify and bind the container, and runs only once the agent
//! answers that the binding is in the kernel. `start` is the moment the OCI lifecycle
//! gives for this: `create` has finished the container's setup (namespaces, mounts,
//! `pivot_root`), and the runtime's init process waits on its exec FIFO; `start` opens
//! the FIFO and the init process execs the entrypoint. What is policed before the
//! entrypoint is the runtime's own last few calls (runc: `write`, `close`, `getpid`,
//! `execve`, and its Go runtime's `futex`, `nanosleep`, `epoll_pwait`), the same place
//! where a runtime installs a seccomp filter, so a policy needs nothing the
//! entrypoint itself would not.
//!
//! The alternatives were measured and rejected:
//!
//! - *An ancestor binding* (bind the pod or parent cgroup; the probe's fallback covers
//!   new container cgroups at once) polices the runtime's init from the moment it joins
//!   the container cgroup. runc's init then makes `unshare`, `keyctl`, about 50 `mount`s,
//!   `pivot_root`, `sethostname` and `umount2` under the container's policy: under
//!   `runtime-default` in `enforce`, no container would ever start, and in `audit` every
//!   start reports the runtime's calls as the workload's violations.
//! - *An OCI `createRuntime` hook* that waits for the agent binds at the same too-early
//!   point (before `pivot_root`), with the same result; the OCI hooks that run later
//!   (`startContainer`) run inside the container, whose root has no sysfence.
//! - *Binding when inotify reports the new cgroup* races with the runtime: usually in
//!   time, not always.
//!
//! Without the wrapper (a runtime the node does not route through it, a container that
//! was running before the agent, `runc run` which has no separate `start`), the agent
//! still binds every workload it discovers, on the inotify event or the periodic rescan;
//! such a binding is logged with `via: "discovery"`, and its first syscalls may have run
//! unpoliced. If the agent is unreachable, the wrapper refuses to start the container
//! (`--fail-open` lets it start unpoliced instead).
//!
//! # Sandboxed runtimes
//!
//! runc, crun and youki run the workload's syscalls on the host kernel. gVisor (`runsc`)
//! serves them in its Sentry, a user-space kernel: the host sees the Sentry's own
//! syscalls (and its gofer's), never the application's. Kata runs the workload in a VM:
//! the host sees the VMM. A policy bound to such a workload therefore judges the
//! sandbox, not the application: unless its selector names the runtime
//! (`runtime: runsc`), the agent applies it monitor-only and says so in its logs
//! (`sandboxed: true`, and a note on every bind). On a hybrid cgroup host, runsc
//! leaves its sandbox in the cgroup v2 root; the agent then places the sandbox's
//! processes in a v2 cgroup named after their v1 cgroup (as runc does itself) so that
//! it can bind it, and removes that cgroup when the sandbox is gone.

pub mod cgroup_naming;
pub mod cri;
pub mod manager;
pub mod runtime;
pub mod slots;
pub mod socket;

use std::collections::BTreeMap;

use serde::Serialize;

pub use cgroup_naming::{Engine, Kind};
pub use manager::{Manager, ManagerOptions};

use crate::policy::selector::KNOWN_RUNTIMES;

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

    /// The runtime whose processes these executables are, if they tell: gVisor's
    /// sandbox and gofer, Kata's shim and VMMs. `names` are executable base names
    /// (`/proc/PID/exe` or `argv[0]`).
    pub fn from_processes<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<Runtime> {
        let mut found = None;
        for n in names {
            let base = n.rsplit('/').next().unwrap_or(n);
            let base = base.strip_suffix(" (deleted)").unwrap_or(base);
            if matches!(base, "runsc" | "runsc-sandbox" | "runsc-gofer") {
                return Some(Runtime::Runsc);
            }
            if base == "containerd-shim-kata-v2"
                || base.starts_with("kata-")
                || base.starts_with("qemu-system-")
                || base == "qemu-kvm"
                || base == "cloud-hypervisor"
                || base == "firecracker"
                || base == "virtiofsd"
            {
                found = Some(Runtime::Kata);
            }
        }
        found
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
    }
}

#[cfg(test)]
mod tests;
