//! Types shared by the sysfence kernel probe (`probe-ebpf`) and the agent.
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of implicit padding, so that the
//! bytes the agent writes into a map are the bytes the probe reads. Size asserts at the
//! bottom of the file catch a layout drift at compile time, on both sides.
//!
//! The enforcement decision itself ([`decide`]) lives here too: it is pure, small, and
//! unit-tested on the host, and the probe calls exactly this function.
#![cfg_attr(not(any(feature = "user", test)), no_std)]

mod args;
pub use args::*;
mod limits;
pub use limits::*;
mod memo;
pub use memo::*;

/// Bit that marks an x32 syscall id on x86_64 (`__X32_SYSCALL_BIT`).
pub const X32_SYSCALL_BIT: u64 = 0x4000_0000;

/// `TS_COMPAT` in `thread_info.status` on x86_64: the task is in an ia32 syscall.
pub const TS_COMPAT: u32 = 0x0002;

/// The syscall numberings a task can use on x86_64.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Abi {
    /// The native 64-bit numbering.
    X86_64 = 0,
    /// i386 numbering, entered through `int 0x80`, `sysenter` or a 32-bit `syscall`.
    Ia32 = 1,
    /// x32 numbering: x86_64 numbers (and 512..) with [`X32_SYSCALL_BIT`] set.
    X32 = 2,
}

impl Abi {
    pub const ALL: [Abi; 3] = [Abi::X86_64, Abi::Ia32, Abi::X32];

    /// First index of this ABI in the syscall index space (see [`syscall_index`]).
    pub const fn base(self) -> u32 {
        match self {
            Abi::X86_64 => 0,
            Abi::Ia32 => 512,
            Abi::X32 => 1024,
        }
    }

    /// How many syscall numbers of this ABI the index space holds.
    pub const fn span(self) -> u32 {
        match self {
            Abi::X86_64 | Abi::Ia32 => 512,
            Abi::X32 => 1024,
        }
    }

    pub const fn from_u32(v: u32) -> Option<Abi> {
        match v {
            0 => Some(Abi::X86_64),
            1 => Some(Abi::Ia32),
            2 => Some(Abi::X32),
            _ => None,
        }
    }

    #[cfg(feature = "user")]
    pub const fn name(self) -> &'static str {
        match self {
            Abi::X86_64 => "x86_64",
            Abi::Ia32 => "i386",
            Abi::X32 => "x32",
        }
    }
}

/// Size of the syscall index space: x86_64 `0..512`, ia32 `512..1024`, x32 `1024..2048`.
pub const SYSCALL_INDEXES: u32 = 2048;

/// Counter index used for a syscall the probe could not classify (always a violation).
pub const UNCLASSIFIED_INDEX: u32 = SYSCALL_INDEXES;

/// Counter index of forks into a new namespace (any `CLONE_NEW*` flag in the kernel's
/// copy of a fork's flags, seen at `task_newtask`), whatever the policy says: what
/// `record` learns `namespaces:` from. Not a syscall.
pub const NEW_NAMESPACE_INDEX: u32 = SYSCALL_INDEXES + 1;

/// Counters per slot: one per syscall index, one for unclassified syscalls, one for
/// forks into a new namespace.
pub const COUNTERS_PER_SLOT: u32 = SYSCALL_INDEXES + 2;

/// Words of a slot's allow bitmap: one bit per syscall index.
pub const ALLOW_WORDS: usize = (SYSCALL_INDEXES / 64) as usize;

/// Index of `(abi, nr)` in the syscall index space, or `None` when `nr` is outside the
/// ABI's span (such a syscall is "unclassified" and always a violation).
#[inline(always)]
pub const fn syscall_index(abi: Abi, nr: u64) -> Option<u32> {
    if nr < abi.span() as u64 {
        Some(abi.base() + nr as u32)
    } else {
        None
    }
}

/// Inverse of [`syscall_index`].
pub const fn index_to_syscall(index: u32) -> Option<(Abi, u32)> {
    if index < 512 {
        Some((Abi::X86_64, index))
    } else if index < 1024 {
        Some((Abi::Ia32, index - 512))
    } else if index < SYSCALL_INDEXES {
        Some((Abi::X32, index - 1024))
    } else {
        None
    }
}

/// Classify a raw `sys_enter` id into (ABI, number). `compat` is the task's `TS_COMPAT`
/// state. Returns `None` for what cannot be classified: a negative id, or a number
/// outside the ABI's span. The probe denies those.
#[inline(always)]
pub const fn classify(id: i64, compat: bool) -> Option<u32> {
    if id < 0 {
        return None;
    }
    let id = id as u64;
    if compat {
        syscall_index(Abi::Ia32, id)
    } else if id & X32_SYSCALL_BIT != 0 {
        syscall_index(Abi::X32, id & !X32_SYSCALL_BIT)
    } else {
        syscall_index(Abi::X86_64, id)
    }
}

/// What a slot does with a syscall that is not allowed.
pub mod mode {
    /// Count only.
    pub const MONITOR: u32 = 0;
    /// Count, and emit a violation event; nothing is stopped (the dry run).
    pub const AUDIT: u32 = 1;
    /// Count, emit an event, and act (see [`super::action`]).
    pub const ENFORCE: u32 = 2;
}

/// How an `enforce` slot acts on a violation.
pub mod action {
    /// `bpf_send_signal(SIGKILL)` from `sys_enter`: the syscall body still runs first.
    pub const KILL: u32 = 0;
    /// `deny` was asked for where it cannot prevent, with `fallback: allow`: the
    /// syscall runs and is reported `not-preventable`.
    pub const ALLOW: u32 = 1;
    /// `deny` through BPF LSM: `sys_enter` marks the task, the LSM hooks fail the
    /// operation with EPERM; if no hook did, `sys_exit` kills (fallback `kill`).
    pub const DENY_OR_KILL: u32 = 2;
    /// As [`DENY_OR_KILL`], with fallback `allow`.
    pub const DENY_OR_ALLOW: u32 = 3;
}

/// What happened to a violating syscall. Carried in events and reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// `monitor` mode: counted, nothing else.
    Monitored = 0,
    /// `audit` mode: counted and reported, the syscall ran.
    Audited = 1,
    /// `enforce` + `kill`: SIGKILL sent from `sys_enter`; the syscall body still ran.
    KilledAfter = 2,
    /// The syscall failed with EPERM before its side effects (BPF LSM).
    Denied = 3,
    /// `deny` was asked for but no hook could stop the syscall: it ran.
    NotPreventable = 4,
}

impl Outcome {
    pub const fn from_u32(v: u32) -> Option<Outcome> {
        match v {
            0 => Some(Outcome::Monitored),
            1 => Some(Outcome::Audited),
            2 => Some(Outcome::KilledAfter),
            3 => Some(Outcome::Denied),
            4 => Some(Outcome::NotPreventable),
            _ => None,
        }
    }

    #[cfg(feature = "user")]
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Monitored => "monitored",
            Outcome::Audited => "audited",
            Outcome::KilledAfter => "killed-after",
            Outcome::Denied => "denied",
            Outcome::NotPreventable => "not-preventable",
        }
    }
}

/// A compiled policy as the probe sees it: value of `POLICIES[slot]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicySlot {
    /// One of [`mode`].
    pub mode: u32,
    /// One of [`action`]; read only in `enforce` mode.
    pub action: u32,
    /// Non-zero once the agent has filled the slot. An empty slot allows nothing.
    pub live: u32,
    /// [`SLOT_DENY_NAMESPACES`], ...
    pub flags: u32,
    /// One bit per syscall index (see [`syscall_index`]): set = allowed.
    pub allow: [u64; ALLOW_WORDS],
    /// One bit per syscall index: set = allowed when one of its [`ArgRule`]s in `rules`
    /// holds for the call's arguments. Only these calls read their arguments.
    pub conditional: [u64; ALLOW_WORDS],
    /// The argument rules of the conditional syscalls; unused entries apply to no
    /// syscall.
    pub rules: [ArgRule; MAX_ARG_RULES],
    /// The errno a hook fails a syscall with when it is not [`EPERM`]; unused entries
    /// have `syscall == NO_SYSCALL`.
    pub errnos: [SyscallErrno; MAX_ERRNOS],
}

impl PolicySlot {
    pub const EMPTY: PolicySlot = PolicySlot {
        mode: mode::MONITOR,
        action: action::KILL,
        live: 0,
        flags: 0,
        allow: [0; ALLOW_WORDS],
        conditional: [0; ALLOW_WORDS],
        rules: [ArgRule::EMPTY; MAX_ARG_RULES],
        errnos: [SyscallErrno::EMPTY; MAX_ERRNOS],
    };

    #[inline(always)]
    pub fn allows(&self, index: u32) -> bool {
        bit(&self.allow, index)
    }

    /// Whether `index` is allowed for some arguments only (see [`Self::args_permit`]).
    #[inline(always)]
    pub fn is_conditional(&self, index: u32) -> bool {
        bit(&self.conditional, index)
    }

    /// Whether the decision on `index` may depend on the call's arguments: its argument
    /// rules, or `clone3`'s flags when the slot denies new namespaces.
    #[inline(always)]
    pub fn judges_arguments(&self, index: u32) -> bool {
        self.is_conditional(index) || self.judges_clone3_flags(index)
    }

    /// Whether `index` is `clone3` (of any ABI) and the slot denies new namespaces: its
    /// flags, in memory, decide.
    #[inline(always)]
    pub fn judges_clone3_flags(&self, index: u32) -> bool {
        index & 511 == CLONE3 && self.flags & SLOT_DENY_NAMESPACES != 0
    }

    /// This slot, counting every call even under `enforce` ([`SLOT_COUNT_ALL`]).
    pub fn counting_every_call(self) -> PolicySlot {
        PolicySlot {
            flags: self.flags | SLOT_COUNT_ALL,
            ..self
        }
    }

    pub fn set_allowed(&mut self, index: u32) {
        self.allow[(index >> 6) as usize] |= 1u64 << (index & 63);
    }

    pub fn set_conditional(&mut self, index: u32) {
        self.conditional[(index >> 6) as usize] |= 1u64 << (index & 63);
    }

    /// Whether one of the rules of syscall `index` holds for `args`: the OCI semantics,
    /// rules ORed, the conditions of one rule ANDed.
    #[inline(always)]
    pub fn args_permit(&self, index: u32, args: &SyscallArgs) -> bool {
        let mut i = 0;
        while i < MAX_ARG_RULES {
            let rule = &self.rules[i];
            if rule.applies_to(index) && rule.holds(args) {
                return true;
            }
            i += 1;
        }
        false
    }

    /// The errno a hook fails syscall `index` with.
    #[inline(always)]
    pub fn errno_for(&self, index: u32) -> u32 {
        let mut i = 0;
        while i < MAX_ERRNOS {
            if self.errnos[i].syscall == index {
                return self.errnos[i].errno;
            }
            i += 1;
        }
        EPERM
    }
}

#[inline(always)]
fn bit(words: &[u64; ALLOW_WORDS], index: u32) -> bool {
    // Masked, not bounds-checked: the verifier rejects a bound the compiler may move.
    let word = ((index >> 6) as usize) & (ALLOW_WORDS - 1);
    words[word] & (1u64 << (index & 63)) != 0
}

/// `PolicySlot::flags`: no new namespace. `clone3` is allowed only when the flags it
/// reads from memory ask for none ([`clone_flags_denied`]), and the kernel's own copy
/// of every fork's flags is judged again (`task_newtask`), where no other thread can
/// change them.
pub const SLOT_DENY_NAMESPACES: u32 = 1;
/// `PolicySlot::flags`: a kill takes the whole workload (`killScope: workload`): the
/// probe marks the caller's cgroup doomed (`DOOMED_WORKLOADS`), so that every task in
/// it dies at its next syscall, and the agent writes its `cgroup.kill`.
pub const SLOT_KILL_WORKLOAD: u32 = 2;
/// `PolicySlot::flags`: count every call in `COUNTS`, even under `enforce` (which
/// otherwise counts its violations only). Set on a watched workload's own slot, whose
/// counts `sysfence watch` shows.
pub const SLOT_COUNT_ALL: u32 = 4;

/// Number of `clone3` in every ABI (the index of `clone3` is this plus the ABI's base).
pub const CLONE3: u32 = 435;

/// Every `CLONE_NEW*` flag a fork can ask for: NEWTIME, NEWNS, NEWCGROUP, NEWUTS,
/// NEWIPC, NEWUSER, NEWPID, NEWNET. (`clone` cannot pass NEWTIME, whose bit is part
/// of its exit signal there; `clone3` and the kernel's copy of the flags can.)
pub const CLONE_NEW_ANY: u64 = 0x7e02_0080;

/// Whether a slot refuses a fork with these flags (the kernel's copy, or what `clone3`
/// found in memory).
#[inline(always)]
pub fn clone_flags_denied(slot: &PolicySlot, clone_flags: u64) -> bool {
    slot.live != 0 && slot.flags & SLOT_DENY_NAMESPACES != 0 && clone_flags & CLONE_NEW_ANY != 0
}

/// What the probe does with one syscall: the whole enforcement decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Not allowed: report it with this outcome; `kill` says whether to send SIGKILL,
    /// `event` whether to emit a violation event now.
    Violation {
        outcome: Outcome,
        kill: bool,
        event: bool,
    },
    /// Not allowed, to be denied by the LSM hooks: mark the task; `sys_exit` learns
    /// whether a hook denied it and reports then. `fallback_kill`: kill if none did.
    /// `errno`: what the hooks fail it with.
    Deny {
        fallback_kill: bool,
        errno: u32,
    },
}

/// The enforcement decision: a slot, a classified syscall (`None` = unclassified), and
/// its arguments, read only when the slot allows the syscall for some arguments only
/// (or it is `clone3` and the slot denies new namespaces).
#[inline(always)]
pub fn decide(slot: &PolicySlot, index: Option<u32>, call: &impl CallArgs) -> Decision {
    if let Some(index) = index
        && slot.live != 0
        && (slot.allows(index)
            || (slot.is_conditional(index) && slot.args_permit(index, &call.registers())))
        && !(slot.judges_clone3_flags(index)
            && call
                .clone3_flags()
                .is_some_and(|f| clone_flags_denied(slot, f)))
    {
        return Decision::Allow;
    }
    match slot.mode {
        mode::MONITOR => Decision::Violation {
            outcome: Outcome::Monitored,
            kill: false,
            event: false,
        },
        mode::AUDIT => Decision::Violation {
            outcome: Outcome::Audited,
            kill: false,
            event: true,
        },
        // `enforce`, and any mode value this probe does not know: the strict choice.
        _ => match slot.action {
            action::DENY_OR_KILL | action::DENY_OR_ALLOW => Decision::Deny {
                fallback_kill: slot.action == action::DENY_OR_KILL,
                errno: match index {
                    Some(i) => slot.errno_for(i),
                    None => EPERM,
                },
            },
            action::ALLOW => Decision::Violation {
                outcome: Outcome::NotPreventable,
                kill: false,
                event: true,
            },
            _ => Decision::Violation {
                outcome: Outcome::KilledAfter,
                kill: true,
                event: true,
            },
        },
    }
}

/// Whether `slot` allows `index` whatever the call's arguments: [`decide`] says
/// [`Decision::Allow`] without reading them. The probe's shortcut for an enforced call
/// asks only this (see `sys_enter`).
#[inline(always)]
pub fn allowed_outright(slot: &PolicySlot, index: u32) -> bool {
    slot.live != 0 && slot.allows(index) && !slot.judges_clone3_flags(index)
}

/// `Binding::slot` of a cgroup the agent knows to be unpoliced: the lookup hits and the
/// probe returns at once, instead of trying the cgroup's ancestors.
pub const NO_SLOT: u32 = u32::MAX;

/// Value of `WORKLOADS[cgroup id]`: which slot polices the cgroup ([`NO_SLOT`]: none).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub slot: u32,
    pub _reserved: u32,
}

/// Value of `CGROUP_CACHE[cgroup_id & (CGROUP_CACHE_SIZE - 1)]`: a direct-mapped copy of
/// `WORKLOADS`, so that the common lookup is an array access instead of a hash lookup.
/// `cgroup_id` is 0 for an empty entry and [`CACHE_COLLISION`] where several known
/// cgroups share the index (the probe then asks `WORKLOADS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    pub cgroup_id: u64,
    pub slot: u32,
    pub _reserved: u32,
}

/// Entries of `CGROUP_CACHE` (a power of two).
pub const CGROUP_CACHE_SIZE: u32 = 16384;

/// `CacheEntry::cgroup_id` of an index shared by several cgroups.
pub const CACHE_COLLISION: u64 = u64::MAX;

/// Index of a cgroup in `CGROUP_CACHE`. Cgroup ids are kernfs inode numbers, handed out
/// in increasing order, so their low bits spread evenly.
#[inline(always)]
pub const fn cache_index(cgroup_id: u64) -> u32 {
    (cgroup_id & (CGROUP_CACHE_SIZE as u64 - 1)) as u32
}

/// Value of `PROCESS_SLOTS` and `STRAYS` (keyed by tgid): the policy a process was
/// judged under, and the workload (cgroup) it was judged in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessPolicy {
    pub cgroup_id: u64,
    pub slot: u32,
    pub _reserved: u32,
}

/// `clone3`'s `CLONE_INTO_CGROUP`: the child starts in the cgroup `clone_args.cgroup`
/// names, not its parent's.
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Whether a process judged under `judged` (or [`NO_SLOT`]) that lands in a cgroup
/// bound to `landed` (or [`NO_SLOT`]) must carry its policy along: it was policed, and
/// the cgroup's binding is not that policy. (When `landed` is another policy, both
/// judge it: the stricter of the two wins.)
#[inline(always)]
pub const fn carries_policy(judged: u32, landed: u32) -> bool {
    judged != NO_SLOT && judged != landed
}

/// Length of a task's `comm`.
pub const COMM_LEN: usize = 16;

/// A violation event, sent through the `VIOLATIONS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViolationEvent {
    /// `bpf_ktime_get_boot_ns()` at `sys_enter`.
    pub boot_ns: u64,
    pub cgroup_id: u64,
    /// Raw `sys_enter` id (with the x32 bit, if any).
    pub id: i64,
    pub pid: u32,
    pub tgid: u32,
    /// Syscall index ([`syscall_index`]) or [`UNCLASSIFIED_INDEX`].
    pub index: u32,
    pub slot: u32,
    pub mode: u32,
    /// An [`Outcome`] as u32.
    pub outcome: u32,
    pub comm: [u8; COMM_LEN],
    /// For `denied`: the LSM hook that denied it (index in [`LSM_HOOK_NAMES`]).
    pub hook: u32,
    /// [`EVENT_FALLBACK_KILLED`], ...
    pub flags: u32,
    /// Events of the same workload and syscall suppressed by the rate limit since the
    /// previous event sent for them (their calls are in the exact counters).
    pub suppressed: u32,
    pub _reserved: u32,
    /// With [`EVENT_ARGS`]: the arguments that decided it. `args[0]` is the first
    /// register argument, or for `clone3` the flags (read from memory at `sys_enter`,
    /// the kernel's copy at `task_newtask`); `args[1]` the second register argument.
    pub args: [u64; 2],
}

/// Event flag: `not-preventable`, and the fallback killed the task after the syscall.
pub const EVENT_FALLBACK_KILLED: u32 = 1;

/// A task's `DENY_MARKS` storage: a syscall in flight that the LSM hooks must deny.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenyMark {
    pub boot_ns: u64,
    pub cgroup_id: u64,
    pub id: i64,
    pub index: u32,
    pub slot: u32,
    /// Non-zero once a hook denied the operation.
    pub consumed: u32,
    /// The first hook that denied it.
    pub hook: u32,
    pub fallback_kill: u32,
    /// [`MARK_DENY`] or [`MARK_DOOMED`].
    pub kind: u32,
    /// What the hooks fail it with ([`EPERM`] unless the policy chose another).
    pub errno: u32,
    /// [`EVENT_ARGS`] when `args` holds the arguments that decided it.
    pub event_flags: u32,
    /// As [`ViolationEvent::args`].
    pub args: [u64; 2],
}

/// A [`DenyMark`] for a syscall the hooks must fail.
pub const MARK_DENY: u32 = 0;
/// A [`DenyMark`] for a child born into a namespace its policy denies: killed at its
/// first `sys_exit` (the return from the fork, before any instruction of its own) when
/// the deny path is attached, else at its first `sys_enter`; every hook fails it.
pub const MARK_DOOMED: u32 = 2;

/// A task's `RING_OWNERS` storage: a task that has an io_uring context (`task->io_uring`)
/// and makes syscalls under a `deny` policy. io_uring runs work for it outside of its
/// syscalls too (task_work after `sys_exit`: a poll-armed or `POLL_FIRST` request when it
/// becomes ready, the next request of a linked chain); the LSM hooks judge every
/// operation that runs while `where_` is not [`RING_DIRECT`] by `slot`, as the syscall it
/// stands for (see [`io_uring_op_syscall`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingOwner {
    pub cgroup_id: u64,
    pub slot: u32,
    /// [`RING_OUTSIDE`], [`RING_DIRECT`] or [`RING_ENTER`].
    pub where_: u32,
}

/// [`RingOwner::where_`]: between syscalls: what reaches a hook is io_uring's work.
pub const RING_OUTSIDE: u32 = 0;
/// [`RingOwner::where_`]: in a syscall of its own that the policy allowed: the hooks
/// are that syscall's.
pub const RING_DIRECT: u32 = 1;
/// [`RingOwner::where_`]: in `io_uring_enter` or `io_uring_register`, which run ring
/// work inline (submissions, task_work while waiting for completions).
pub const RING_ENTER: u32 = 2;
/// x86_64 (and i386) numbers of `io_uring_setup`, `io_uring_enter`, `io_uring_register`.
pub const IO_URING_SETUP: u32 = 425;
pub const IO_URING_REGISTER: u32 = 427;
/// `PF_EXITING` in `task_struct.flags`: the task is in `do_exit`, where io_uring cancels
/// and may run its pending work whatever syscall brought it there.
pub const PF_EXITING: u32 = 0x4;

/// Event flag: the operation came through io_uring (inline in `io_uring_enter`, or in an
/// io_uring worker thread), not through its own syscall.
pub const EVENT_IO_URING: u32 = 2;
/// `ViolationEvent.flags`: the self-protection hooks refused it (a policed task tried
/// to signal the agent, to write bpffs, or to ptrace a runtime's setup process).
pub const EVENT_SELF_PROTECTION: u32 = 4;
/// `ViolationEvent.flags`: a fork asked for a namespace the policy denies, in flags the
/// kernel had already copied (`task_newtask`): the caller is killed, and so is the
/// child at its first syscall.
pub const EVENT_NEW_NAMESPACE: u32 = 8;
/// `ViolationEvent.flags`: `args` holds the arguments that decided the violation.
pub const EVENT_ARGS: u32 = 16;
/// `ViolationEvent.flags`: a `ptrace` call: `args` holds its request and, in
/// `args[1]`, the target's pid as the caller sees it (low 32 bits) and the level of the
/// caller's pid namespace (high 32 bits; 0: the host's). A killed `PTRACE_ATTACH` has
/// already stopped its target: the agent resumes it.
pub const EVENT_PTRACE: u32 = 64;

/// Whether a syscall index is `ptrace`, in any ABI (x86_64 101, i386 26, x32 521).
#[inline(always)]
pub const fn is_ptrace(index: u32) -> bool {
    index == 101 || index == 512 + 26 || index == 1024 + 521
}

/// `ViolationEvent.flags`: not a violation: the process `tgid` exec'd in the cgroup
/// `cgroup_id`, which no binding knows and which sits below a start-hold root; it is
/// stopped (`HELD`) until the agent has looked at the cgroup and resumes it.
pub const EVENT_HOLD: u32 = 128;

/// `ViolationEvent.flags`: the kill took the workload (`killScope: workload`): its
/// cgroup is doomed; the agent writes its `cgroup.kill`.
pub const EVENT_WORKLOAD_KILLED: u32 = 32;

/// x86_64 number of `kill`, reported for a refused signal to the agent.
pub const KILL: u32 = 62;
/// Hook ids (see [`for_each_lsm_hook`]) the self-protection programs report.
pub const HOOK_FILE_OPEN: u32 = 0;
pub const HOOK_INODE_CREATE: u32 = 14;
pub const HOOK_INODE_LINK: u32 = 15;
pub const HOOK_INODE_UNLINK: u32 = 16;
pub const HOOK_INODE_SYMLINK: u32 = 17;
pub const HOOK_INODE_MKDIR: u32 = 18;
pub const HOOK_INODE_RMDIR: u32 = 19;
pub const HOOK_INODE_MKNOD: u32 = 20;
pub const HOOK_INODE_RENAME: u32 = 21;
pub const HOOK_TASK_KILL: u32 = 33;
pub const HOOK_PTRACE_ACCESS_CHECK: u32 = 48;
/// x86_64 number of `ptrace`, reported for a refused attach to a setup process.
pub const PTRACE: u32 = 101;
/// `statfs` magic of bpffs.
pub const BPF_FS_MAGIC: u64 = 0xcafe_4a11;
/// `FMODE_WRITE`.
pub const FMODE_WRITE: u32 = 0x2;

/// `PF_IO_WORKER` in `task_struct.flags`: an io_uring worker (io-wq or SQPOLL) thread.
pub const PF_IO_WORKER: u32 = 0x10;

/// x86_64 number of `io_uring_enter` (the same in the i386 table).
pub const IO_URING_ENTER: u32 = 426;

/// The x86_64 syscall an io_uring operation reaching LSM hook `hook` stands for, for
/// the hooks where that is unambiguous. An operation submitted through a ring is judged
/// as this syscall: denied if the policy does not allow it.
pub const fn io_uring_op_syscall(hook: u32) -> Option<u32> {
    match hook {
        0 => Some(257),  // file_open: openat
        14 => Some(257), // inode_create: openat (O_CREAT)
        15 => Some(265), // inode_link: linkat
        16 => Some(263), // inode_unlink: unlinkat
        17 => Some(266), // inode_symlink: symlinkat
        18 => Some(258), // inode_mkdir: mkdirat
        19 => Some(263), // inode_rmdir: unlinkat
        20 => Some(259), // inode_mknod: mknodat
        21 => Some(316), // inode_rename: renameat2
        23 => Some(188), // inode_setxattr: setxattr
        25 => Some(191), // inode_getxattr: getxattr
        52 => Some(41),  // socket_create: socket
        53 => Some(49),  // socket_bind: bind
        54 => Some(42),  // socket_connect: connect
        55 => Some(50),  // socket_listen: listen
        56 => Some(288), // socket_accept: accept4
        57 => Some(46),  // socket_sendmsg: sendmsg
        58 => Some(47),  // socket_recvmsg: recvmsg
        61 => Some(48),  // socket_shutdown: shutdown
        _ => None,
    }
}

/// Calls `$m!` with every LSM hook the probe attaches, as `(id, program, "hook")`.
/// One list serves both sides: the probe defines a program per entry, the agent names
/// hooks by id.
#[macro_export]
macro_rules! for_each_lsm_hook {
    ($m:ident) => {
        $m! {
            (0, lsm_file_open, "file_open"),
            (1, lsm_file_permission, "file_permission"),
            (2, lsm_file_ioctl, "file_ioctl"),
            (3, lsm_file_fcntl, "file_fcntl"),
            (4, lsm_file_lock, "file_lock"),
            (5, lsm_mmap_file, "mmap_file"),
            (6, lsm_file_mprotect, "file_mprotect"),
            (7, lsm_bprm_check_security, "bprm_check_security"),
            (8, lsm_sb_mount, "sb_mount"),
            (9, lsm_sb_umount, "sb_umount"),
            (10, lsm_sb_pivotroot, "sb_pivotroot"),
            (11, lsm_sb_remount, "sb_remount"),
            (12, lsm_sb_statfs, "sb_statfs"),
            (13, lsm_move_mount, "move_mount"),
            (14, lsm_inode_create, "inode_create"),
            (15, lsm_inode_link, "inode_link"),
            (16, lsm_inode_unlink, "inode_unlink"),
            (17, lsm_inode_symlink, "inode_symlink"),
            (18, lsm_inode_mkdir, "inode_mkdir"),
            (19, lsm_inode_rmdir, "inode_rmdir"),
            (20, lsm_inode_mknod, "inode_mknod"),
            (21, lsm_inode_rename, "inode_rename"),
            (22, lsm_inode_setattr, "inode_setattr"),
            (23, lsm_inode_setxattr, "inode_setxattr"),
            (24, lsm_inode_removexattr, "inode_removexattr"),
            (25, lsm_inode_getxattr, "inode_getxattr"),
            (26, lsm_inode_listxattr, "inode_listxattr"),
            (27, lsm_inode_getattr, "inode_getattr"),
            (28, lsm_inode_readlink, "inode_readlink"),
            (29, lsm_inode_permission, "inode_permission"),
            (30, lsm_path_chroot, "path_chroot"),
            (31, lsm_path_notify, "path_notify"),
            (32, lsm_task_alloc, "task_alloc"),
            (33, lsm_task_kill, "task_kill"),
            (34, lsm_task_fix_setuid, "task_fix_setuid"),
            (35, lsm_task_fix_setgid, "task_fix_setgid"),
            (36, lsm_task_prctl, "task_prctl"),
            (37, lsm_task_setpgid, "task_setpgid"),
            (38, lsm_task_getpgid, "task_getpgid"),
            (39, lsm_task_getsid, "task_getsid"),
            (40, lsm_task_setnice, "task_setnice"),
            (41, lsm_task_setioprio, "task_setioprio"),
            (42, lsm_task_getioprio, "task_getioprio"),
            (43, lsm_task_prlimit, "task_prlimit"),
            (44, lsm_task_setrlimit, "task_setrlimit"),
            (45, lsm_task_setscheduler, "task_setscheduler"),
            (46, lsm_task_getscheduler, "task_getscheduler"),
            (47, lsm_task_movememory, "task_movememory"),
            (48, lsm_ptrace_access_check, "ptrace_access_check"),
            (49, lsm_ptrace_traceme, "ptrace_traceme"),
            (50, lsm_capable, "capable"),
            (51, lsm_capset, "capset"),
            (52, lsm_socket_create, "socket_create"),
            (53, lsm_socket_bind, "socket_bind"),
            (54, lsm_socket_connect, "socket_connect"),
            (55, lsm_socket_listen, "socket_listen"),
            (56, lsm_socket_accept, "socket_accept"),
            (57, lsm_socket_sendmsg, "socket_sendmsg"),
            (58, lsm_socket_recvmsg, "socket_recvmsg"),
            (59, lsm_socket_setsockopt, "socket_setsockopt"),
            (60, lsm_socket_getsockopt, "socket_getsockopt"),
            (61, lsm_socket_shutdown, "socket_shutdown"),
            (62, lsm_socket_socketpair, "socket_socketpair"),
            (63, lsm_unix_stream_connect, "unix_stream_connect"),
            (64, lsm_netlink_send, "netlink_send"),
            (65, lsm_bpf, "bpf"),
            (66, lsm_perf_event_open, "perf_event_open"),
            (67, lsm_key_alloc, "key_alloc"),
            (68, lsm_key_permission, "key_permission"),
            (69, lsm_kernel_module_request, "kernel_module_request"),
            (70, lsm_kernel_read_file, "kernel_read_file"),
            (71, lsm_kernel_load_data, "kernel_load_data"),
            (72, lsm_userns_create, "userns_create"),
            (73, lsm_settime, "settime"),
            (74, lsm_syslog, "syslog"),
            (75, lsm_quotactl, "quotactl"),
            (76, lsm_locked_down, "locked_down"),
            (77, lsm_ipc_permission, "ipc_permission"),
            (78, lsm_msg_queue_alloc_security, "msg_queue_alloc_security"),
            (79, lsm_msg_queue_msgsnd, "msg_queue_msgsnd"),
            (80, lsm_shm_alloc_security, "shm_alloc_security"),
            (81, lsm_shm_shmat, "shm_shmat"),
            (82, lsm_sem_alloc_security, "sem_alloc_security"),
            (83, lsm_sem_semop, "sem_semop"),
            (84, lsm_uring_override_creds, "uring_override_creds"),
            (85, lsm_uring_sqpoll, "uring_sqpoll"),
        }
    };
}

macro_rules! hook_names {
    ($(($id:literal, $prog:ident, $hook:literal)),* $(,)?) => {
        /// LSM hook names by id (see [`for_each_lsm_hook`]).
        pub const LSM_HOOK_NAMES: &[&str] = &[$($hook),*];
        /// Probe program names by hook id.
        pub const LSM_PROGRAM_NAMES: &[&str] = &[$(stringify!($prog)),*];
        const _: () = { let mut i = 0; $( assert!($id == i); i += 1; )* let _ = i; };
    };
}
for_each_lsm_hook!(hook_names);

pub mod maps;
pub mod setup;

pub mod programs;

/// Indexes of the `STATS` per-CPU array: probe-wide health counters.
pub mod stat {
    /// Violation events dropped because the ring buffer was full.
    pub const EVENTS_DROPPED: u32 = 0;
    /// `bpf_send_signal` calls that failed.
    pub const KILL_FAILED: u32 = 1;
    /// `DENY_MARKS` was full: a `deny` fell back at once.
    pub const MARK_FAILED: u32 = 2;
    /// Violation events not sent because of the per-(workload, syscall) rate limit.
    pub const EVENTS_SUPPRESSED: u32 = 3;
    /// Violation events held back by a workload's budget (also counted in
    /// `EVENTS_SUPPRESSED`).
    pub const EVENTS_HELD: u32 = 4;
    /// Processes that left their workload's cgroup (or were born outside it) and are
    /// policed by what they carried (`STRAYS`).
    pub const STRAYS: u32 = 5;
    /// A process that left its workload could not be recorded (`STRAYS` full): the
    /// mover was killed instead.
    pub const STRAY_FAILED: u32 = 6;
    /// Processes a runtime put into a policed cgroup as its setup, judged from their
    /// `execve` on (`SETUP_UNTIL_EXEC`, see [`setup`](super::setup)).
    pub const SETUPS: u32 = 7;
    /// A runtime's setup process could not be recorded (`SETUP_UNTIL_EXEC` full): it is
    /// judged by its cgroup's policy at once.
    pub const SETUP_FAILED: u32 = 8;
    /// Execs held (stopped) in a new cgroup until the agent had looked at it (`HELD`).
    pub const HOLDS: u32 = 9;
    /// An exec that should have been held was not (`HELD` full, or the stop failed).
    pub const HOLD_FAILED: u32 = 10;
    pub const COUNT: u32 = 11;
}

const _: () = assert!(core::mem::size_of::<ArgCond>() == 24);
const _: () = assert!(core::mem::size_of::<ArgRule>() == 16 + 24 * MAX_ARG_CONDS);
const _: () = assert!(core::mem::size_of::<SyscallErrno>() == 8);
const _: () = assert!(
    core::mem::size_of::<PolicySlot>()
        == 16 + 16 * ALLOW_WORDS + (16 + 24 * MAX_ARG_CONDS) * MAX_ARG_RULES + 8 * MAX_ERRNOS
);
const _: () = assert!(core::mem::size_of::<Binding>() == 8);
const _: () = assert!(core::mem::size_of::<CacheEntry>() == 16);
const _: () = assert!(CGROUP_CACHE_SIZE.is_power_of_two());
const _: () = assert!(core::mem::size_of::<ProbeSettings>() == 16);
const _: () = assert!(core::mem::size_of::<EventBudget>() == 32);
const _: () = assert!(core::mem::size_of::<ProcessPolicy>() == 16);
const _: () = assert!(core::mem::size_of::<ViolationEvent>() == 96);
const _: () = assert!(core::mem::size_of::<RateKey>() == 16);
const _: () = assert!(core::mem::size_of::<RateState>() == 16);
const _: () = assert!(core::mem::size_of::<DenyMark>() == 72);
const _: () = assert!(core::mem::offset_of!(ViolationEvent, comm) == 48);
const _: () = assert!(ALLOW_WORDS.is_power_of_two());

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]`, `Copy`, and have no padding (see the size
    // asserts above), so any byte pattern of the right length is a valid value.
    unsafe impl aya::Pod for super::PolicySlot {}
    unsafe impl aya::Pod for super::Binding {}
    unsafe impl aya::Pod for super::CacheEntry {}
    unsafe impl aya::Pod for super::RateKey {}
    unsafe impl aya::Pod for super::RateState {}
    unsafe impl aya::Pod for super::EventBudget {}
    unsafe impl aya::Pod for super::ProcessPolicy {}
    unsafe impl aya::Pod for super::ProbeSettings {}
    unsafe impl aya::Pod for super::ViolationEvent {}
    unsafe impl aya::Pod for super::DenyMark {}
}

#[cfg(test)]
mod tests;
