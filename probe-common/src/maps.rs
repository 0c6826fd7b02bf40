//! Names of the probe's maps: the `#[map]` statics of `probe-ebpf` (the ELF symbols the
//! agent opens, resizes and pins them by). The probe cannot take its statics' names from
//! here, so an agent unit test checks every name against the built object, both ways.

/// cgroup v2 id → [`Binding`](super::Binding). Written by the agent (bind, unbind);
/// read by `sys_enter`.
pub const WORKLOADS: &str = "WORKLOADS";
/// slot → compiled policy ([`PolicySlot`](super::PolicySlot)). Written by the agent
/// (fill, free); read by `sys_enter`, `sys_exit`, and the agent (`read_slot`).
pub const POLICIES: &str = "POLICIES";
/// `slot * COUNTERS_PER_SLOT + syscall index` → calls, per CPU. Written by
/// `sys_enter`; read (summed over CPUs) and zeroed on slot reuse by the agent.
pub const COUNTS: &str = "COUNTS";
/// Violation events ([`ViolationEvent`](super::ViolationEvent)), a ring buffer.
/// Written by `emit` (`sys_enter`, `sys_exit`, the LSM hooks, the guards); read by
/// the agent.
pub const VIOLATIONS: &str = "VIOLATIONS";
/// Direct-mapped copy of `WORKLOADS` ([`CacheEntry`](super::CacheEntry)). Written by
/// the agent with every bind and unbind; read by `sys_enter` before it tries
/// `WORKLOADS`.
pub const CGROUP_CACHE: &str = "CGROUP_CACHE";
/// Probe-wide settings ([`ProbeSettings`](super::ProbeSettings)), one entry. Written
/// by the agent; read by `sys_enter` and `emit` (and by the agent when it adopts a
/// pinned probe).
pub const SETTINGS: &str = "SETTINGS";
/// Per-(workload, syscall) violation event rate limits. Written and read by `emit`;
/// read by the agent (suppressed violations no event carried yet).
pub const EVENT_LIMITS: &str = "EVENT_LIMITS";
/// cgroup v2 id → that workload's event budget ([`EventBudget`](super::EventBudget)),
/// an LRU hash. Written by `emit`; read by the agent (held and dropped events per
/// workload), which deletes the entries of workloads that are gone.
pub const EVENT_BUDGETS: &str = "EVENT_BUDGETS";
/// tgid → the policy a policed process was last judged under
/// ([`ProcessPolicy`](super::ProcessPolicy)). Written by `sys_enter` (when it looks a
/// task's cgroup up); read by `memo_cgroup_attach` (a process that moves carries it);
/// cleared by `sched_process_exit` when the process is gone.
pub const PROCESS_SLOTS: &str = "PROCESS_SLOTS";
/// tgid → the policy a process carries out of its workload's cgroup
/// ([`ProcessPolicy`](super::ProcessPolicy)). Written by `memo_cgroup_attach` (moves
/// by `cgroup.procs`) and `clone_guard` (children of strays, `CLONE_INTO_CGROUP`); read by
/// `sys_enter`, which polices the process by it wherever it is; cleared by
/// `sched_process_exit`.
pub const STRAYS: &str = "STRAYS";
/// Number of entries in `STRAYS` (one u64): `sys_enter` looks a task up there only when
/// it is not zero. Written by whoever adds or removes a stray; read by `sys_enter`.
pub const STRAY_COUNT: &str = "STRAY_COUNT";
/// cgroup v2 id → when its workload was doomed (boot ns): a kill under
/// `killScope: workload`. Written by the kill sites (`sys_enter`, `sys_exit`,
/// `clone_guard`); read by `sys_enter`, which kills every task of a doomed cgroup at its
/// next syscall, and by the agent, which writes the cgroup's `cgroup.kill`. Deleted by
/// `lift_doom` when the cgroup's last task is gone.
pub const DOOMED_WORKLOADS: &str = "DOOMED_WORKLOADS";
/// Number of entries in `DOOMED_WORKLOADS` (one u64): `sys_enter` looks there only when
/// it is not zero. Written by the kill sites (add) and `lift_doom` (remove); read by
/// `sys_enter` and `lift_doom`.
pub const DOOMED_COUNT: &str = "DOOMED_COUNT";
/// Probe health counters ([`stat`](super::stat)), per CPU. Written by the programs
/// (`sys_enter`, `sys_exit`, `emit`); read by the agent.
pub const STATS: &str = "STATS";
/// Task storage: a task's syscall in flight that the LSM hooks must deny
/// ([`DenyMark`](super::DenyMark)), freed with the task. Written by `sys_enter` (mark)
/// and `clone_guard` (a doomed child), the LSM hooks (consume), `sys_exit` and
/// `sched_process_exit` (clear).
pub const DENY_MARKS: &str = "DENY_MARKS";
/// Number of entries in `DENY_MARKS` (one u64). Written by whoever adds or removes a
/// mark; read by the LSM hooks and `sys_exit`.
pub const DENY_PENDING: &str = "DENY_PENDING";
/// Task storage: where a task that uses io_uring under a `deny` policy is
/// ([`RingOwner`](super::RingOwner)): in a syscall of its own, in `io_uring_enter`, or
/// outside any (where io_uring's task_work runs). Written by `sys_enter` and `sys_exit`;
/// read by the LSM hooks; cleared by `sched_process_exit`.
pub const RING_OWNERS: &str = "RING_OWNERS";
/// Number of entries in `RING_OWNERS` (one u64). Written by whoever adds or removes
/// one; read by `sys_exit` and the LSM hooks.
pub const RING_OWNER_COUNT: &str = "RING_OWNER_COUNT";
/// The agent's tgid (one entry; 0: none). Written by the agent at start; read by
/// `guard_agent_kill`.
pub const GUARDED: &str = "GUARDED";
/// The agent's generation a `TASK_MEMO` entry is valid for
/// ([`generation`](super::generation)). Written by the agent; read by `sys_enter`.
pub const GENERATION: &str = "GENERATION";
/// The kernel's generation and the count of anything unusual
/// ([`KernelState`](super::KernelState), one entry). Written by the probe only
/// (`memo_cgroup_attach`, `memo_task_exit`, and every writer of the five counts it
/// sums); read by `sys_enter`.
pub const KERNEL_STATE: &str = "KERNEL_STATE";
/// Per CPU, what `sys_enter` last found for a few tasks
/// ([`TaskMemo`](super::TaskMemo)). Written and read by `sys_enter` only.
pub const TASK_MEMO: &str = "TASK_MEMO";
/// Per CPU, one u64 through which `sys_enter` turns its `pt_regs` pointer into a
/// number. Written and read by `sys_enter` only.
pub const REGS_SCRATCH: &str = "REGS_SCRATCH";

/// tgid → the cgroup v2 id a runtime's setup process was put into
/// ([`setup`](super::setup)): a process not judged by that cgroup's policy until its
/// `execve` (the exec boundary). Written by `follow_cgroup_move` and `clone_guard`
/// (children of setup processes, `CLONE_INTO_CGROUP`); read by `sys_enter` and
/// `guard_setup_ptrace`; cleared by `exec_boundary` (its exec) and `sched_process_exit`.
pub const SETUP_UNTIL_EXEC: &str = "SETUP_UNTIL_EXEC";
/// Number of entries in `SETUP_UNTIL_EXEC` (one u64): `sys_enter` looks a task up there
/// only when it is not zero. Written by whoever adds or removes one; read by
/// `sys_enter` and `guard_setup_ptrace`.
pub const SETUP_COUNT: &str = "SETUP_COUNT";

/// Start-hold roots: cgroup v2 id → 1. The first exec in an unknown cgroup below one is
/// held. Written by the agent (the parents its selectors and discovered containers
/// name); read by `exec_boundary`.
pub const HOLD_ROOTS: &str = "HOLD_ROOTS";
/// tgid → the cgroup v2 id of a process stopped at its exec until the agent has looked
/// at that cgroup. Written by `exec_boundary`; read, and cleared with a SIGCONT, by the
/// agent; cleared by `sched_process_exit`.
pub const HELD: &str = "HELD";

/// Every map above: the maps the programs and the agent share, all pinned. (The
/// object's `.rodata` and the log channel `AYA_LOGS` are per load, and not here.)
pub const ALL: &[&str] = &[
    WORKLOADS,
    POLICIES,
    COUNTS,
    VIOLATIONS,
    CGROUP_CACHE,
    SETTINGS,
    EVENT_LIMITS,
    EVENT_BUDGETS,
    PROCESS_SLOTS,
    STRAYS,
    STRAY_COUNT,
    DOOMED_WORKLOADS,
    DOOMED_COUNT,
    STATS,
    DENY_MARKS,
    DENY_PENDING,
    RING_OWNERS,
    RING_OWNER_COUNT,
    GUARDED,
    GENERATION,
    KERNEL_STATE,
    TASK_MEMO,
    REGS_SCRATCH,
    SETUP_UNTIL_EXEC,
    SETUP_COUNT,
    HOLD_ROOTS,
    HELD,
];
