//! sysfence kernel side.
//!
//! The path of one syscall (see the design doc):
//! 1. `sys_enter` first asks its per-CPU `TASK_MEMO` (keyed by the task's syscall
//!    registers, valid for one `GENERATION`) what it found last time for this task.
//!    Otherwise it reads the task's cgroup v2 id and looks up its [`Binding`] in
//!    `CGROUP_CACHE` and `WORKLOADS`, falling back to the task's ancestors at the levels
//!    named in `SETTINGS`, and remembers the answer. No binding: return at once.
//! 2. The syscall is classified into (ABI, number) and judged by
//!    [`probe_common::decide`] against the slot's allow bitmap: the whole decision.
//! 3. The call is counted in `COUNTS`; a violation may kill and emit an event.
#![no_std]
#![no_main]
// The bpf target has no atomic read-modify-write in `core::sync::atomic`; the
// intrinsic lowers to the BPF atomic add instruction.
#![allow(internal_features)]
#![feature(core_intrinsics)]
// `asm!` for the one subtraction the verifier must see (see `hook_error`).
#![feature(asm_experimental_arch)]

use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_task_btf,
        bpf_ktime_get_boot_ns, bpf_send_signal,
    },
    macros::{btf_tracepoint, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::BtfTracePointContext,
};
use aya_log_ebpf::warn;

use aya_ebpf::{macros::lsm, programs::LsmContext};
use probe_common::{
    Binding, CGROUP_CACHE_SIZE, COUNTERS_PER_SLOT, CacheEntry, Decision, DenyMark,
    EVENT_FALLBACK_KILLED, EVENT_IO_URING, EVENT_WORKLOAD_KILLED, MARK_DENY, MARK_DOOMED, NO_SLOT,
    Outcome, PF_IO_WORKER, PolicySlot, ProbeSettings, RateKey, RateState, TASK_MEMO_SIZE,
    TS_COMPAT, TaskMemo, UNCLASSIFIED_INDEX, action, cache_index, classify, decide, generation,
    io_uring_op_syscall, memo_generation, memo_index, mode, stat,
};

mod arguments;
mod containment;
mod counting;
mod events;
mod hold;
mod kill;
mod marks;
mod quiet;
mod rings;
mod setup;
mod shortcut;
mod task_cast;
mod task_storage;
use arguments::{Call, deciding_args, doomed, hook_error};
use counting::{count, counts_every_call};
use events::{Report, emit};
use marks::denial_in_flight;
use quiet::{bump_kernel_generation, counter_add, counter_nonzero};

/// Default capacity of `POLICIES`; the agent may resize it before load.
const MAX_SLOTS: u32 = 64;
/// Default capacity of `WORKLOADS`; the agent may resize it before load.
const MAX_WORKLOADS: u32 = 16384;
const SIGKILL: u32 = 9;
/// `BPF_F_NO_PREALLOC`: a hash map's entries are allocated as they come, not up front,
/// so its kernel memory follows what is in it (the buckets aside).
pub(crate) const NO_PREALLOC: u32 = 1;
/// `CLONE_THREAD`: the child is a thread of the caller's group.
const CLONE_THREAD: u64 = 0x0001_0000;

/// Offset of `thread_info.status` inside `task_struct`. Written by the agent at load
/// time from the running kernel's BTF; read by `sys_enter` to detect ia32 syscalls.
#[unsafe(no_mangle)]
static TASK_STATUS_OFFSET: u32 = 0;

/// Offsets along `task->cgroups->dfl_cgrp->kn->id`, from the kernel's BTF (agent, at
/// load time). With them the probe reads the task's cgroup v2 id by direct BTF loads,
/// a third of the cost of `bpf_get_current_cgroup_id()` on the hot path. All zero: use
/// the helper.
#[unsafe(no_mangle)]
static CGROUP_ID_PATH: [u32; 4] = [0; 4];

// The maps. Each static's name is the map's name: it must equal its constant in
// `probe_common::maps` (the agent opens and pins the maps by those; an agent unit test
// checks the built object against them), and so must the programs' function names
// against `probe_common::programs`.

/// cgroup v2 id → [`Binding`]. Written by the agent (bind, unbind); read by `sys_enter`.
#[map]
static WORKLOADS: HashMap<u64, Binding> = HashMap::with_max_entries(MAX_WORKLOADS, NO_PREALLOC);

/// slot → compiled policy. Written by the agent (fill, free); read by `sys_enter`,
/// `sys_exit`, and the agent (`read_slot`).
#[map]
static POLICIES: Array<PolicySlot> = Array::with_max_entries(MAX_SLOTS, 0);

/// `slot * COUNTERS_PER_SLOT + syscall index` → calls: every call under `monitor` and
/// `audit`, violations only under `enforce`. One array for all CPUs (atomic adds), so
/// that a slot costs the same on any node. Written by `sys_enter` and `clone_guard`
/// ([`count`]); read and zeroed on slot reuse by the agent.
#[map]
static COUNTS: Array<u64> = Array::with_max_entries(MAX_SLOTS * COUNTERS_PER_SLOT, 0);

/// Violation events. Written by `emit` (`sys_enter`, `sys_exit`, the LSM hooks, the
/// guards); read by the agent.
#[map]
static VIOLATIONS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Direct-mapped copy of `WORKLOADS` (see `CacheEntry`). Written by the agent with
/// every bind and unbind; read by `sys_enter` before it tries `WORKLOADS`.
#[map]
static CGROUP_CACHE: Array<CacheEntry> = Array::with_max_entries(CGROUP_CACHE_SIZE, 0);

/// Probe-wide settings, one entry. Written by the agent; read by `sys_enter` and `emit`
/// (and by the agent when it adopts a pinned probe).
#[map]
static SETTINGS: Array<ProbeSettings> = Array::with_max_entries(1, 0);

/// Per-(workload, syscall) violation event rate limits. Written and read by `emit`;
/// read by the agent (suppressed violations no event carried yet). An LRU: a key
/// evicted by others' violations starts a fresh window; `COUNTS` keeps the totals.
#[map]
static EVENT_LIMITS: LruHashMap<RateKey, RateState> = LruHashMap::with_max_entries(8192, 0);

/// cgroup v2 id → that workload's event budget and the events it held back or lost.
/// Written by `emit`; read by the agent, which deletes the entries of gone workloads.
/// Only workloads with violations have one.
#[map]
static EVENT_BUDGETS: LruHashMap<u64, probe_common::EventBudget> =
    LruHashMap::with_max_entries(4096, 0);

/// Probe health counters (`probe_common::stat`), per CPU. Written by the programs
/// (`sys_enter`, `sys_exit`, `emit`); read by the agent.
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

// `DENY_MARKS` and `DENY_PENDING`: see `marks`; `RING_OWNERS`: see `rings`.

/// Per CPU, what `sys_enter` last found for a few tasks (see [`TaskMemo`]). Written and
/// read by `sys_enter` only.
#[map]
static TASK_MEMO: PerCpuArray<TaskMemo> = PerCpuArray::with_max_entries(TASK_MEMO_SIZE, 0);

/// Per CPU, one u64 through which `sys_enter` turns the `pt_regs` pointer it is given
/// into a number. Written and read by `sys_enter` only.
#[map]
static REGS_SCRATCH: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The agent's generation a `TASK_MEMO` entry is valid for (`probe_common::generation`):
/// written by the agent after every binding or settings change (0: memo off); read by
/// `sys_enter`. (The kernel's is in `quiet`'s `KERNEL_STATE`.)
#[map]
static GENERATION: Array<u64> = Array::with_max_entries(generation::COUNT, 0);

const EPERM: i32 = 1;

/// `raw_syscalls:sys_enter`: polices every syscall of every bound workload.
#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter(ctx: BtfTracePointContext) -> i32 {
    // Read first: the kernel's memo generation, and whether anything below is unusual.
    let node = quiet::now();
    let mut carried = NO_SLOT;
    if node.unusual {
        // A runtime's setup process, before its exec: not the workload yet (see `setup`).
        if setup::in_setup() {
            return 0;
        }
        // A process that carried its policy out of its workload's cgroup: judged by it
        // wherever it is (and by its new cgroup's policy too, below, if that is another).
        if let Some(p) = containment::stray_of_current() {
            carried = p.slot;
            // SAFETY: as below.
            let task = unsafe { bpf_get_current_task_btf() } as *const u8;
            police(&ctx, task, p.slot, p.cgroup_id);
        }
    }
    // The memo entry for this task on this CPU; null when the memo is off. (A raw
    // pointer and plain numbers, not Options: the verifier refuses to read the
    // registers a `None` leaves undefined.)
    let mut generation = 0;
    let mut regs = 0;
    let mut memo: *mut TaskMemo = core::ptr::null_mut();
    let mut memo_task = 0;
    let mut hit = false;
    let mut slot = NO_SLOT;
    let mut cgroup_id = 0;
    if let Some(g) = current_generation(node.kernel_generation)
        && let Some(r) = regs_address(&ctx)
        && let Some(m) = TASK_MEMO.get_ptr_mut(memo_index(r))
    {
        (generation, regs, memo) = (g, r, m);
        // SAFETY: this CPU's entry; this program does not nest with itself on a CPU.
        let m = unsafe { *m };
        if m.regs == regs && m.generation == generation {
            (hit, memo_task, slot, cgroup_id) = (true, m.task, m.slot, m.cgroup_id);
        }
    }
    if hit {
        if slot == NO_SLOT || slot == carried {
            return 0;
        }
        let task = task_cast::for_shortcut(memo_task);
        if !shortcut::allowed_outright_now(&ctx, task, slot, node.unusual) {
            police(&ctx, task_cast::trusted(), slot, cgroup_id);
        }
        return 0;
    }
    // SAFETY: helper with no arguments; the pointer is only used for BTF-checked loads.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    let cgroup_id = current_cgroup_id(task);
    let slot = bound_slot_or_none(cgroup_id);
    if !memo.is_null() {
        // SAFETY: as above. Stored with the generation read before the lookup, so an
        // answer that a concurrent change made stale is never taken as current.
        unsafe {
            *memo = TaskMemo {
                regs,
                task: task as u64,
                generation,
                cgroup_id,
                slot,
                _reserved: 0,
            }
        };
    }
    // Moved (to a cgroup bound to another policy, or to none), with the tracepoint that
    // follows moves still to come: this syscall is judged by the policy the process was
    // under, as one that hits the memo is (it carries that policy from here on, and is
    // judged by both from its next call).
    let moved = containment::note_process(slot, cgroup_id);
    let (slot, cgroup_id) = if moved.slot != NO_SLOT {
        (moved.slot, moved.cgroup_id)
    } else {
        (slot, cgroup_id)
    };
    if slot != NO_SLOT && slot != carried {
        police(&ctx, task, slot, cgroup_id);
    }
    0
}

/// The address of the task's saved user registers, at the top of its kernel stack:
/// unique among live tasks, and read without a helper call. The verifier types the
/// argument as a `pt_regs` pointer, on which no arithmetic is allowed; stored into a map
/// and read back, it is a plain number (a privileged program may store a pointer).
#[inline(always)]
fn regs_address(ctx: &BtfTracePointContext) -> Option<u64> {
    let regs: u64 = ctx.arg(0);
    let scratch = REGS_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's u64; this program does not nest with itself on a CPU.
    unsafe {
        core::ptr::write_volatile(scratch, regs);
        Some(core::ptr::read_volatile(scratch))
    }
}

/// The generation memo entries must carry now, or `None` when the memo is off. Read
/// before anything the lookup reads; `kernel` is [`quiet::now`]'s.
#[inline(always)]
fn current_generation(kernel: u64) -> Option<u64> {
    let agent = GENERATION.get_ptr(generation::AGENT)?;
    // SAFETY: a u64 map value that lives as long as the program; aligned loads do not
    // tear. Volatile, as are the loads of the lookup after it (the cgroup walk; the map
    // lookups are helper calls): the compiler keeps them in this order, and x86 does not
    // reorder loads with loads.
    unsafe { memo_generation(core::ptr::read_volatile(agent), kernel) }
}

/// `cgroup:cgroup_attach_task`: a task changed cgroup; what `sys_enter` remembered about
/// tasks may be stale. Attached with `sys_enter`.
#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn memo_cgroup_attach(_ctx: BtfTracePointContext) -> i32 {
    bump_kernel_generation();
    0
}

/// `sched:sched_process_exit`: a task is exiting; its kernel stack (the memo key) may
/// serve another task next. Attached with `sys_enter`.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn memo_task_exit(_ctx: BtfTracePointContext) -> i32 {
    bump_kernel_generation();
    0
}

/// Benchmark floor: an empty `raw_syscalls:sys_enter` program. Never attached by the
/// agent; `cargo xtask bench` attaches it alone to measure what the tracepoint costs.
#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter_floor(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// The current task's cgroup v2 id: `task->cgroups->dfl_cgrp->kn->id`, as
/// `bpf_get_current_cgroup_id()` computes it, by direct loads when the agent gave the
/// offsets.
#[inline(always)]
fn current_cgroup_id(task: *const u8) -> u64 {
    // SAFETY: a read of this program's frozen .rodata.
    let path = unsafe { core::ptr::read_volatile(&CGROUP_ID_PATH) };
    if path[0] == 0 {
        // SAFETY: helper with no arguments, always callable from tracing programs.
        return unsafe { bpf_get_current_cgroup_id() };
    }
    // SAFETY: each offset is that of a pointer (or the id) in the kernel's own BTF; the
    // verifier checks every load against the types and makes them fault-safe. The
    // tracepoint runs under RCU, as the helper does.
    unsafe {
        let cset =
            core::ptr::read_volatile(task.wrapping_add(path[0] as usize) as *const *const u8);
        let cgrp =
            core::ptr::read_volatile(cset.wrapping_add(path[1] as usize) as *const *const u8);
        let kn = core::ptr::read_volatile(cgrp.wrapping_add(path[2] as usize) as *const *const u8);
        core::ptr::read_volatile(kn.wrapping_add(path[3] as usize) as *const u64)
    }
}

/// `cgrp->kn`, the kernfs node of a `struct cgroup *`, by the offsets of
/// `CGROUP_ID_PATH` (the caller checks they were given).
#[inline(always)]
fn kernfs_of(cgrp: *const u8) -> *const u8 {
    // SAFETY: a read of frozen .rodata, then a BTF-checked load at an offset from the
    // kernel's BTF.
    unsafe {
        let path = core::ptr::read_volatile(&CGROUP_ID_PATH);
        core::ptr::read_volatile(cgrp.wrapping_add(path[2] as usize) as *const *const u8)
    }
}

/// `kn->id` of a kernfs node: a cgroup's v2 id.
#[inline(always)]
fn kernfs_id(kn: *const u8) -> u64 {
    // SAFETY: as in `kernfs_of`.
    unsafe {
        let path = core::ptr::read_volatile(&CGROUP_ID_PATH);
        core::ptr::read_volatile(kn.wrapping_add(path[3] as usize) as *const u64)
    }
}

/// The slot bound to the current task's cgroup, or to its deepest bound ancestor.
#[inline(always)]
fn bound_slot(cgroup_id: u64) -> Option<u32> {
    let slot = bound_slot_or_none(cgroup_id);
    (slot != NO_SLOT).then_some(slot)
}

/// As [`bound_slot`], with [`NO_SLOT`] for none: a plain number in every path (the
/// verifier refuses to read the register an `Option`'s `None` leaves undefined, which
/// the memo's store would).
#[inline(always)]
fn bound_slot_or_none(cgroup_id: u64) -> u32 {
    // The common case, policed or not: an inlined array access and one compare.
    if let Some(entry) = CGROUP_CACHE.get(cache_index(cgroup_id))
        && entry.cgroup_id == cgroup_id
    {
        return entry.slot;
    }
    // SAFETY: the value is plain data and the map is only read here.
    if let Some(binding) = unsafe { WORKLOADS.get(cgroup_id) } {
        // NO_SLOT: known and unpoliced (the common case on a node): one lookup.
        return binding.slot;
    }
    let Some(settings) = SETTINGS.get(0) else {
        return NO_SLOT;
    };
    let levels = settings.ancestor_levels;
    if levels == 0 {
        return NO_SLOT;
    }
    let mut level: i32 = 31;
    while level > 0 {
        if levels & (1u32 << level) != 0 {
            // SAFETY: plain helper call; returns 0 when `level` is deeper than the task.
            let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
            if ancestor != 0
                && let Some(binding) = unsafe { WORKLOADS.get(ancestor) }
                && binding.slot != NO_SLOT
            {
                return binding.slot;
            }
        }
        level -= 1;
    }
    NO_SLOT
}

/// Judge the current syscall under `slot_id`, count it, and act. A BPF subprogram of its
/// own (one call instruction): `sys_enter` calls it from three places, and three
/// inlined copies would not fit the 512-byte stack.
#[inline(never)]
fn police(ctx: &BtfTracePointContext, task: *const u8, slot_id: u32, cgroup_id: u64) {
    let Some(slot) = POLICIES.get(slot_id) else {
        return;
    };
    let id: i64 = ctx.arg(1);
    let compat = in_compat_syscall(task);
    let index = classify(id, compat);
    let counter = index.unwrap_or(UNCLASSIFIED_INDEX);
    // `enforce` counts its violations only (below): the allowed path of an enforced
    // workload, the hot one, writes no shared cache line.
    if counts_every_call(slot) {
        count(slot_id, counter);
    }
    if denial_in_flight() && doomed(ctx, task, slot, slot_id, cgroup_id, id, counter) {
        return;
    }
    if kill::doomed_workload(ctx, cgroup_id) {
        return;
    }
    match decide(slot, index, &Call { ctx, compat }) {
        Decision::Allow => {}
        Decision::Violation {
            outcome,
            kill,
            event,
        } => {
            if !counts_every_call(slot) {
                count(slot_id, counter);
            }
            let took_workload = kill && kill::kill_in_scope(ctx, slot, cgroup_id);
            if event {
                let (mut flags, args) = deciding_args(ctx, compat, slot, index);
                if took_workload {
                    flags |= EVENT_WORKLOAD_KILLED;
                }
                emit(&Report {
                    slot: slot_id,
                    mode: slot.mode,
                    outcome: outcome as u32,
                    cgroup_id,
                    id,
                    index: counter,
                    hook: 0,
                    flags,
                    args,
                });
            }
        }
        Decision::Deny {
            fallback_kill,
            errno,
        } => {
            if !counts_every_call(slot) {
                count(slot_id, counter);
            }
            let (event_flags, args) = deciding_args(ctx, compat, slot, index);
            let mark = DenyMark {
                // SAFETY: plain helper call.
                boot_ns: unsafe { bpf_ktime_get_boot_ns() },
                cgroup_id,
                id,
                index: counter,
                slot: slot_id,
                consumed: 0,
                hook: 0,
                fallback_kill: fallback_kill as u32,
                kind: MARK_DENY,
                errno,
                event_flags,
                args,
            };
            if !marks::set_mark(task, &mark) {
                mark_failed(ctx, slot, slot_id, cgroup_id, id, counter, 0);
            }
        }
    }
    // A task with a ring: the hooks must know whether what reaches them is this
    // syscall's or the ring's (see `rings`). Last, so that nothing of it is live while
    // the verifier walks `decide` (on 6.1 that doubled the states it explored).
    if slot.action >= action::DENY_OR_KILL && slot.mode == mode::ENFORCE {
        if !rings::enter_syscall(task, slot_id, cgroup_id, counter) {
            // The ring's work could not be told from this syscall's.
            mark_failed(ctx, slot, slot_id, cgroup_id, id, counter, EVENT_IO_URING);
        }
    } else {
        rings::not_judged(task);
    }
}

/// The kernel could not allocate a task's deny state (its memory is short): the LSM
/// hooks cannot deny for it. The call (or, with [`EVENT_IO_URING`], its ring's work) is
/// not preventable; do what the fallback says, and report it. (Inlined: a subprogram of
/// its own would need more than five arguments.)
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn mark_failed(
    ctx: &BtfTracePointContext,
    slot: &PolicySlot,
    slot_id: u32,
    cgroup_id: u64,
    id: i64,
    index: u32,
    mut flags: u32,
) {
    bump(stat::MARK_FAILED);
    let fallback_kill = slot.action == action::DENY_OR_KILL;
    if fallback_kill {
        flags |= EVENT_FALLBACK_KILLED;
        if kill::kill_in_scope(ctx, slot, cgroup_id) {
            flags |= EVENT_WORKLOAD_KILLED;
        }
    }
    emit(&Report {
        slot: slot_id,
        mode: slot.mode,
        outcome: Outcome::NotPreventable as u32,
        cgroup_id,
        id,
        index,
        hook: 0,
        flags,
        args: [0; 2],
    });
}

fn kill_current<C: aya_ebpf::EbpfContext>(ctx: &C, cgroup_id: u64) {
    // SAFETY: plain helper call on the current task.
    if unsafe { bpf_send_signal(SIGKILL) } != 0 {
        bump(stat::KILL_FAILED);
        warn!(
            ctx,
            "sysfence: bpf_send_signal failed, cgroup {}", cgroup_id
        );
    }
}

/// `raw_syscalls:sys_exit`: settles a syscall that was to be denied: `denied` if a hook
/// failed it, else `not-preventable` (and the fallback). Attached only when some policy
/// uses `action: deny` on a kernel with BPF LSM.
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: helper with no arguments; the pointer is only used for BTF-checked loads
    // and task storage.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    rings::leave_syscall(task);
    let Some(mark) = marks::take_mark(task) else {
        return 0;
    };
    if mark.kind == MARK_DOOMED {
        // The child's return from the fork: it dies before its first instruction.
        kill_current(&ctx, mark.cgroup_id);
        return 0;
    }
    let mut flags = 0;
    let outcome = if mark.consumed != 0 {
        Outcome::Denied
    } else {
        if mark.fallback_kill != 0 {
            flags = EVENT_FALLBACK_KILLED;
            let took_workload = match POLICIES.get(mark.slot) {
                Some(slot) => kill::kill_in_scope(&ctx, slot, mark.cgroup_id),
                None => {
                    kill_current(&ctx, mark.cgroup_id);
                    false
                }
            };
            if took_workload {
                flags |= EVENT_WORKLOAD_KILLED;
            }
        }
        Outcome::NotPreventable
    };
    let mode = POLICIES.get(mark.slot).map_or(0, |s| s.mode);
    emit(&Report {
        slot: mark.slot,
        mode,
        outcome: outcome as u32,
        cgroup_id: mark.cgroup_id,
        id: mark.id,
        index: mark.index,
        hook: mark.hook,
        flags: flags | mark.event_flags,
        args: mark.args,
    });
    0
}

/// `sched:sched_process_exit`: a thread that dies inside a marked syscall (exit, or a
/// kill) never reaches `sys_exit`; drop its mark so no later thread inherits it.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(_ctx: BtfTracePointContext) -> i32 {
    containment::forget_process();
    // SAFETY: as in `sys_exit`.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    rings::forget(task);
    if denial_in_flight() {
        marks::clear_mark(task);
    }
    0
}

/// Offset of `task_struct.flags`, from the kernel's BTF (agent, at load time): tells
/// io_uring worker threads (`PF_IO_WORKER`) apart.
#[unsafe(no_mangle)]
static TASK_FLAGS_OFFSET: u32 = 0;

/// Every LSM hook: fail the operation if the current thread is in a syscall its policy
/// denies (the first hook to do so is recorded for the report), or if it is io_uring
/// work standing for a syscall the policy denies, wherever that work runs (see `rings`).
#[inline(always)]
fn lsm_check(hook: u32) -> i32 {
    if denial_in_flight() {
        // SAFETY: helper with no arguments; the pointer is only used for task storage.
        let task = unsafe { bpf_get_current_task_btf() } as *const u8;
        if let Some(mark) = marks::mark_of(task) {
            // SAFETY: this task's own mark; only it writes it meanwhile.
            unsafe {
                if (*mark).consumed == 0 {
                    (*mark).consumed = 1;
                    (*mark).hook = hook;
                }
                return hook_error((*mark).errno);
            }
        }
    }
    if io_uring_op_syscall(hook).is_none() {
        return 0;
    }
    // SAFETY: helper with no arguments; BTF-checked loads at offsets from the kernel's BTF.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    // SAFETY: a read of this program's frozen .rodata.
    let flags_offset = unsafe { core::ptr::read_volatile(&TASK_FLAGS_OFFSET) };
    let flags = if flags_offset == 0 {
        0
    } else {
        // SAFETY: task_struct.flags, a BTF-checked load.
        unsafe { core::ptr::read_volatile(task.wrapping_add(flags_offset as usize) as *const u32) }
    };
    if flags & PF_IO_WORKER != 0 {
        // An io-wq or SQPOLL thread: part of the ring owner's process, in its cgroup.
        // A process that carried its policy out of its workload is judged by that too.
        if let Some(p) = containment::stray_of_current() {
            let verdict = judge_io_uring(hook, p.slot, p.cgroup_id);
            if verdict != 0 {
                return verdict;
            }
        }
        let cgroup_id = current_cgroup_id(task);
        return match bound_slot(cgroup_id) {
            Some(slot) => judge_io_uring(hook, slot, cgroup_id),
            None => 0,
        };
    }
    match rings::ring_work(task, flags) {
        Some((slot, cgroup_id)) => judge_io_uring(hook, slot, cgroup_id),
        None => 0,
    }
}

/// io_uring work of a policed task reached `hook`: deny it (enforce + deny) when the
/// policy does not allow the x86_64 syscall the operation stands for.
#[inline(always)]
fn judge_io_uring(hook: u32, slot_id: u32, cgroup_id: u64) -> i32 {
    let Some(nr) = io_uring_op_syscall(hook) else {
        return 0;
    };
    let Some(slot) = POLICIES.get(slot_id) else {
        return 0;
    };
    if slot.mode != mode::ENFORCE || slot.action < action::DENY_OR_KILL || slot.allows(nr) {
        return 0;
    }
    emit(&Report {
        slot: slot_id,
        mode: slot.mode,
        outcome: Outcome::Denied as u32,
        cgroup_id,
        id: nr as i64,
        index: nr,
        hook,
        flags: EVENT_IO_URING,
        args: [0; 2],
    });
    -EPERM
}

macro_rules! define_lsm_hooks {
    ($(($id:literal, $prog:ident, $hook:literal)),* $(,)?) => {
        $(
            #[doc = concat!("LSM `", $hook, "`: denies it for a thread marked by `sys_enter`.")]
            #[lsm(hook = $hook)]
            pub fn $prog(_ctx: LsmContext) -> i32 {
                lsm_check($id)
            }
        )*
    };
}
probe_common::for_each_lsm_hook!(define_lsm_hooks);

/// The agent's tgid (one entry; 0: none). Written by the agent at start; read by
/// `guard_agent_kill`.
#[map]
static GUARDED: Array<u32> = Array::with_max_entries(1, 0);

/// Offsets for the self-protection hooks, from the kernel's BTF (agent, at load time):
/// `task_struct.tgid`, `inode.i_sb`, `super_block.s_magic`, `file.f_inode`,
/// `file.f_mode`. All zero: the guards are not loaded.
#[unsafe(no_mangle)]
static GUARD_OFFSETS: [u32; 5] = [0; 5];

#[inline(always)]
fn guard_offset(i: usize) -> usize {
    // SAFETY: a read of this program's frozen .rodata.
    let offsets = unsafe { core::ptr::read_volatile(&GUARD_OFFSETS) };
    offsets[i] as usize
}

/// The slot of the current task's workload, when it is policed.
#[inline(always)]
fn current_policed_slot() -> Option<(u32, u64)> {
    // SAFETY: helper with no arguments; the pointer is only used for BTF-checked loads.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    let cgroup_id = current_cgroup_id(task);
    bound_slot(cgroup_id).map(|slot| (slot, cgroup_id))
}

/// Refuse, report, and say so: a policed task went for the agent or its pins.
#[inline(always)]
fn guard_refuse(slot: u32, cgroup_id: u64, hook: u32, nr: u32) -> i32 {
    emit(&Report {
        slot,
        mode: POLICIES.get(slot).map_or(0, |s| s.mode),
        outcome: Outcome::Denied as u32,
        cgroup_id,
        id: nr as i64,
        index: nr,
        hook,
        flags: probe_common::EVENT_SELF_PROTECTION,
        args: [0; 2],
    });
    -EPERM
}

/// LSM `task_kill`: a policed task may not signal the agent (any signal, any mode:
/// the agent is what polices it).
#[lsm(hook = "task_kill")]
pub fn guard_agent_kill(ctx: LsmContext) -> i32 {
    let Some(&agent) = GUARDED.get(0) else {
        return 0;
    };
    if agent == 0 {
        return 0;
    }
    // SAFETY: arg 0 of task_kill is the target `struct task_struct *`; the load is at
    // the BTF offset of `tgid` and checked by the verifier.
    let tgid = unsafe {
        let target: *const u8 = ctx.arg(0);
        core::ptr::read_volatile(target.wrapping_add(guard_offset(0)) as *const i32)
    };
    if tgid as u32 != agent {
        return 0;
    }
    match current_policed_slot() {
        Some((slot, cgroup_id)) => guard_refuse(
            slot,
            cgroup_id,
            probe_common::HOOK_TASK_KILL,
            probe_common::KILL,
        ),
        None => 0,
    }
}

/// Whether `inode` lives on bpffs.
#[inline(always)]
fn on_bpffs(inode: *const u8) -> bool {
    // SAFETY: BTF-checked loads at offsets from the kernel's BTF: inode->i_sb->s_magic.
    unsafe {
        let sb = core::ptr::read_volatile(inode.wrapping_add(guard_offset(1)) as *const *const u8);
        core::ptr::read_volatile(sb.wrapping_add(guard_offset(2)) as *const u64)
            == probe_common::BPF_FS_MAGIC
    }
}

#[inline(always)]
fn guard_bpffs_inode(inode: *const u8, hook: u32) -> i32 {
    if !on_bpffs(inode) {
        return 0;
    }
    match current_policed_slot() {
        Some((slot, cgroup_id)) => guard_refuse(
            slot,
            cgroup_id,
            hook,
            io_uring_op_syscall(hook).unwrap_or(UNCLASSIFIED_INDEX),
        ),
        None => 0,
    }
}

/// LSM `file_open`: a policed task may not open a bpffs file for writing.
#[lsm(hook = "file_open")]
pub fn guard_bpffs_open(ctx: LsmContext) -> i32 {
    // SAFETY: arg 0 of file_open is the `struct file *`; BTF-checked loads.
    let (inode, fmode) = unsafe {
        let file: *const u8 = ctx.arg(0);
        (
            core::ptr::read_volatile(file.wrapping_add(guard_offset(3)) as *const *const u8),
            core::ptr::read_volatile(file.wrapping_add(guard_offset(4)) as *const u32),
        )
    };
    if fmode & probe_common::FMODE_WRITE == 0 {
        return 0;
    }
    guard_bpffs_inode(inode, probe_common::HOOK_FILE_OPEN)
}

macro_rules! guard_bpffs_dir_hooks {
    ($(($prog:ident, $hook:literal, $arg:literal, $id:expr)),* $(,)?) => {
        $(
            #[doc = concat!("LSM `", $hook, "`: a policed task may not change bpffs (pins).")]
            #[lsm(hook = $hook)]
            pub fn $prog(ctx: LsmContext) -> i32 {
                // The hook's argument is the directory's `struct inode *`.
                let dir: *const u8 = ctx.arg($arg);
                guard_bpffs_inode(dir, $id)
            }
        )*
    };
}
guard_bpffs_dir_hooks! {
    (guard_bpffs_create, "inode_create", 0, probe_common::HOOK_INODE_CREATE),
    (guard_bpffs_link, "inode_link", 1, probe_common::HOOK_INODE_LINK),
    (guard_bpffs_unlink, "inode_unlink", 0, probe_common::HOOK_INODE_UNLINK),
    (guard_bpffs_symlink, "inode_symlink", 0, probe_common::HOOK_INODE_SYMLINK),
    (guard_bpffs_mkdir, "inode_mkdir", 0, probe_common::HOOK_INODE_MKDIR),
    (guard_bpffs_rmdir, "inode_rmdir", 0, probe_common::HOOK_INODE_RMDIR),
    (guard_bpffs_mknod, "inode_mknod", 0, probe_common::HOOK_INODE_MKNOD),
    (guard_bpffs_rename_from, "inode_rename", 0, probe_common::HOOK_INODE_RENAME),
    (guard_bpffs_rename_to, "inode_rename", 2, probe_common::HOOK_INODE_RENAME),
}

/// Whether the current syscall is an ia32 one (`TS_COMPAT` in `thread_info.status`).
#[inline(always)]
fn in_compat_syscall(task: *const u8) -> bool {
    // The offset is a constant of the frozen .rodata, so the verifier sees a fixed
    // offset into the BTF-typed task and allows a direct load: no helper call.
    // SAFETY: the offset comes from the running kernel's BTF (agent, at load time).
    let offset = unsafe { core::ptr::read_volatile(&TASK_STATUS_OFFSET) };
    // SAFETY: a PTR_TO_BTF_ID load; the kernel checks it against task_struct's BTF.
    let status =
        unsafe { core::ptr::read_volatile(task.wrapping_add(offset as usize) as *const u32) };
    status & TS_COMPAT != 0
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(counter) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot.
        unsafe { *counter += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 4] = *b"GPL\0";
