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
//!
//! # What the agent believes, and from where
//!
//! The workload is the adversary: what it says about itself is a claim, never an
//! identity. The runtime, the sandbox and whether a container waits for `start` come
//! from the runtimes' state directories (`state.json`, `exec.fifo`), the CRI (runtime
//! handler, pod sandbox) and the runtime wrapper's own `--runtime`: never from the
//! names (`comm`, `argv[0]`, `/proc/PID/exe`) or environment of the processes inside.
//! A container id read from a cgroup's name is a claim too: only a runtime's state
//! whose init process sits in the cgroup vouches for it ([`Workload::vouched`]). A
//! cgroup below a bound workload keeps its ancestor's policy (the probe falls back to
//! the ancestor's binding) unless the runtime vouches for it as a container of its
//! own, and even then it is never bound to a weaker mode than its ancestor's.
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
//! The wrapper ([`wrap`]) runs `run`, which has no separate `start`, as `create`, the
//! binding and `start`, and refuses `restore` (no `start` to bind at).
//!
//! Without the wrapper (a runtime the node does not route through it, a container that
//! was running before the agent), the agent
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
//!
//! The application inside gVisor gets its policy inside the sandbox: through the
//! wrapper, runsc runs with the policy as the bundle's seccomp profile and
//! `--oci-seccomp`, and reports the application's syscalls to the agent's trace sink
//! (see [`sandbox`], [`crate::gvisor`]). Inside a Kata VM, sysfence sees nothing.

/// `tracing::info!` of an event about workload `$w`, with the fields every such line
/// carries (its cgroup, runtime and names, as the runtime's state and the CRI give
/// them) after the event's own `$fields`.
macro_rules! info_workload {
    ($w:expr, $($fields:tt)*) => {{
        let w: &$crate::model::Workload = $w;
        tracing::info!(
            $($fields)*
            cgroup = %w.cgroup_path,
            cgroup_id = w.cgroup_id,
            runtime = w.runtime.as_ref().map_or("", |r| r.name()),
            sandboxed = w.sandboxed(),
            container_id = w.container_id.as_deref().unwrap_or(""),
            container = w.container.as_deref().unwrap_or(""),
            pod = w.pod.as_deref().unwrap_or(""),
            namespace = w.namespace.as_deref().unwrap_or(""),
            image = w.image.as_deref().unwrap_or(""),
        )
    }};
}

pub mod binder;
pub mod cgroup_naming;
pub mod cri;
pub mod hold;
pub mod index;
pub mod runtime;
pub mod sandbox;
pub mod sentry_log;
pub mod slots;
pub mod socket;
pub mod table;
pub mod wrap;

pub use binder::Binder;
pub use index::{CgroupIndex, IndexOptions};

pub use crate::model::{Engine, Kind, Runtime, Workload};

#[cfg(test)]
mod tests;
