//! The exec boundary. A container's policy starts where its workload starts: at the
//! `execve` of its entrypoint or of an `exec`'d command, as seccomp's does (the runtime
//! installs the filter just before that `execve`). Before it, a process the runtime puts
//! into a bound cgroup is the runtime's own setup (runc's init for `runc exec` calls
//! `keyctl` and `getppid`, and its Go runtime what it needs), not the workload.
//!
//! Who is setup is decided from the kernel's facts about the move, none of which the
//! workload controls: see [`is_setup`].

/// What the kernel knows about a process that lands in a cgroup: moved there by a
/// write to `cgroup.procs`, or born there by `clone3(CLONE_INTO_CGROUP)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Arrival {
    /// The process moved itself (for a fork, always false: its parent did it).
    pub by_itself: bool,
    /// Its new cgroup (or an ancestor) is bound to a policy.
    pub destination_bound: bool,
    /// Its `mm`'s dumpable bits are not 0, or it has no `mm`. runc and crun make
    /// their init non-dumpable before it joins a container; `execve` resets it.
    pub dumpable: bool,
    /// It was judged by a policy before (`PROCESS_SLOTS`: a child inherits its
    /// parent's note), carries one (`STRAYS`), or is setup already.
    pub policed: bool,
    /// The process that moved it (or its parent, for a fork) is policed, carries a
    /// policy, or is setup itself.
    pub mover_policed: bool,
    /// The mover's cgroup is one the agent knows as a workload's, bound or not.
    pub mover_in_workload: bool,
}

/// Whether the process is the runtime's setup, not judged by its cgroup's policy
/// until it execs: a never-policed, non-dumpable process put into a bound cgroup by
/// another process that is neither policed nor in any workload's cgroup. A
/// workload's processes are policed (and so are their children) or in a cgroup the
/// agent knows: it meets neither the process's conditions nor the mover's. (One gap
/// is left: a workload whose own cgroup is not known yet, under discovery without
/// the wrapper, that can write another container's `cgroup.procs`; see the README.)
#[inline(always)]
pub const fn is_setup(a: &Arrival) -> bool {
    a.destination_bound
        && !a.by_itself
        && !a.dumpable
        && !a.policed
        && !a.mover_policed
        && !a.mover_in_workload
}

/// `MMF_DUMPABLE_MASK`: the dumpable bits at the bottom of `mm_struct.flags`.
pub const DUMPABLE_MASK: u64 = 3;
/// The most setup processes recorded at once, node-wide. Only processes the host's
/// runtimes start can be recorded, never a workload's; beyond this, a setup process
/// is judged by its cgroup's policy at once (fail closed).
pub const MAX_SETUPS: u32 = 4096;
