//! The exec boundary (see [`probe_common::setup`]): a process the runtime puts into a
//! bound cgroup as its own setup is not judged by that cgroup's policy until it exec's.
//!
//! The moves and forks that make one are seen by `follow_cgroup_move` and `clone_guard`
//! (through `containment`), which ask [`arrived`] and [`forked`]. `sys_enter` asks
//! [`in_setup`] first, with one array load while there is none. `exec_boundary` ends it at
//! the process's exec; `guard_setup_ptrace` keeps policed tracers off it meanwhile.

use aya_ebpf::{
    helpers::generated::bpf_get_current_task_btf,
    macros::{btf_tracepoint, lsm, map},
    maps::{Array, HashMap},
    programs::{BtfTracePointContext, LsmContext},
};
use probe_common::{
    HOOK_PTRACE_ACCESS_CHECK, NO_SLOT, PTRACE,
    setup::{Arrival, DUMPABLE_MASK, MAX_SETUPS, is_setup},
    stat,
};

use crate::{
    NO_PREALLOC, WORKLOADS, bound_slot_or_none, bump, counter_add, counter_nonzero,
    current_cgroup_id, current_policed_slot, guard_refuse,
};

/// tgid → the cgroup v2 id of the cgroup a runtime's setup process was put into. Written
/// by `follow_cgroup_move` and `clone_guard`; read by `sys_enter` and
/// `guard_setup_ptrace`; cleared by `exec_boundary` and `sched_process_exit`.
#[map]
static SETUP_UNTIL_EXEC: HashMap<u32, u64> = HashMap::with_max_entries(MAX_SETUPS, NO_PREALLOC);

/// Number of entries in `SETUP_UNTIL_EXEC`. Written by whoever adds or removes one; read
/// by `sys_enter` and `guard_setup_ptrace`.
#[map]
static SETUP_COUNT: Array<u64> = Array::with_max_entries(1, 0);

/// Offsets from the kernel's BTF (agent, at load time): `task_struct.mm`,
/// `mm_struct.flags`. Either zero: no process is ever setup.
#[unsafe(no_mangle)]
static SETUP_OFFSETS: [u32; 2] = [0; 2];

#[inline(always)]
fn any_setups() -> bool {
    counter_nonzero(&SETUP_COUNT)
}

/// Whether the process `tgid` is setup.
#[inline(always)]
pub(crate) fn is_setup_process(tgid: u32) -> bool {
    // SAFETY: plain data.
    any_setups() && unsafe { SETUP_UNTIL_EXEC.get(tgid) }.is_some()
}

/// Whether the current process is setup: its syscalls are not judged. One array load
/// (and no helper call) while no process is.
#[inline(always)]
pub(crate) fn in_setup() -> bool {
    if !any_setups() {
        return false;
    }
    let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: plain data.
    unsafe { SETUP_UNTIL_EXEC.get(tgid) }.is_some()
}

/// Whether `task`'s memory may be dumped (and so traced by its owner): the dumpable
/// bits of `task->mm->flags`. A task with no `mm` counts as dumpable: it is never setup.
#[inline(always)]
fn dumpable(task: *const u8) -> bool {
    // SAFETY: a read of this program's frozen .rodata.
    let o = unsafe { core::ptr::read_volatile(&SETUP_OFFSETS) };
    if o[0] == 0 || o[1] == 0 {
        return true;
    }
    // SAFETY: BTF-checked loads at offsets from the kernel's BTF (task_struct.mm, then
    // the first word of mm_struct.flags, whose low bits are the dumpable mode).
    unsafe {
        let mm = core::ptr::read_volatile(task.wrapping_add(o[0] as usize) as *const *const u8);
        if mm.is_null() {
            return true;
        }
        core::ptr::read_volatile(mm.wrapping_add(o[1] as usize) as *const u64) & DUMPABLE_MASK != 0
    }
}

/// Whether the current task (the mover, or the forking parent) is in a cgroup the agent
/// knows as a workload's, bound or not, or under one bound.
#[inline(always)]
fn current_in_workload() -> bool {
    // SAFETY: helper with no arguments; the pointer is only used for BTF-checked loads.
    let current = unsafe { bpf_get_current_task_btf() } as *const u8;
    let cgroup_id = current_cgroup_id(current);
    // SAFETY: plain data.
    unsafe { WORKLOADS.get(cgroup_id) }.is_some() || bound_slot_or_none(cgroup_id) != NO_SLOT
}

/// Record `tgid` as setup in `cgroup_id`; whether it is. A failure is counted: the
/// process is then judged by its cgroup's policy at once.
#[inline(always)]
fn make_setup(tgid: u32, cgroup_id: u64) -> bool {
    // SAFETY: plain data.
    if unsafe { SETUP_UNTIL_EXEC.get(tgid) }.is_some() {
        return true;
    }
    // BPF_NOEXIST: a racing CPU that made it first keeps its entry (and its count).
    if SETUP_UNTIL_EXEC.insert(tgid, cgroup_id, 1).is_ok() {
        counter_add(&SETUP_COUNT, 1);
        bump(stat::SETUPS);
        return true;
    }
    // SAFETY: plain data.
    if unsafe { SETUP_UNTIL_EXEC.get(tgid) }.is_some() {
        return true;
    }
    bump(stat::SETUP_FAILED);
    false
}

/// A process that was never judged (`PROCESS_SLOTS` has no note of it, or only one from
/// its new cgroup) was moved into a cgroup (`destination_bound` when a policy is bound
/// there) by the current task, whose own notes the caller gives: record it as setup if
/// it is one, and say so.
#[inline(always)]
pub(crate) fn arrived(
    task: *const u8,
    tgid: u32,
    mover_tgid: u32,
    mover_policed: bool,
    destination: (u64, bool),
) -> bool {
    let (cgroup_id, destination_bound) = destination;
    let arrival = Arrival {
        by_itself: tgid == mover_tgid,
        destination_bound,
        dumpable: dumpable(task),
        policed: is_setup_process(tgid),
        mover_policed: mover_policed || is_setup_process(mover_tgid),
        mover_in_workload: current_in_workload(),
    };
    is_setup(&arrival) && make_setup(tgid, cgroup_id)
}

/// A fork: the child of a setup process is setup too, until it exec's (runc's init forks
/// before it exec's). `true` when the child was the parent's setup.
#[inline(always)]
pub(crate) fn forked(parent: u32, child: u32) -> bool {
    if !any_setups() {
        return false;
    }
    // SAFETY: plain data, copied out.
    let Some(cgroup_id) = (unsafe { SETUP_UNTIL_EXEC.get(parent) }).copied() else {
        return false;
    };
    make_setup(child, cgroup_id);
    true
}

/// Forget the process `tgid`: it exec'd, or it is gone.
#[inline(always)]
pub(crate) fn end(tgid: u32) {
    if any_setups() && SETUP_UNTIL_EXEC.remove(tgid).is_ok() {
        counter_add(&SETUP_COUNT, u64::MAX);
    }
}

/// `sched:sched_process_exec`: the process's exec succeeded (its other threads are gone).
/// A setup process is judged by its cgroup's policy from its next syscall on; a process
/// in an unknown cgroup below a start-hold root is held (see `hold`). Attached with
/// `sys_enter`; runs per exec, not per syscall.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn exec_boundary(_ctx: BtfTracePointContext) -> i32 {
    let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    end(tgid);
    crate::hold::hold_if_unknown(tgid);
    0
}

/// Offset of `task_struct.tgid`: the guards' first offset.
#[inline(always)]
fn tgid_of(task: *const u8) -> u32 {
    // SAFETY: a BTF-checked load at the offset of task_struct.tgid from the kernel's BTF.
    unsafe { core::ptr::read_volatile(task.wrapping_add(crate::guard_offset(0)) as *const u32) }
}

/// LSM `ptrace_access_check`: a policed task may not ptrace a setup process, nor read or
/// write its memory (`/proc/PID/mem`, `process_vm_writev`), nor take its fds
/// (`pidfd_getfd`): it would run its own code unjudged.
#[lsm(hook = "ptrace_access_check")]
pub fn guard_setup_ptrace(ctx: LsmContext) -> i32 {
    if !any_setups() {
        return 0;
    }
    // Arg 0 of ptrace_access_check: the target `struct task_struct *`.
    let target: *const u8 = ctx.arg(0);
    if !is_setup_process(tgid_of(target)) {
        return 0;
    }
    if let Some(p) = crate::containment::stray_of_current() {
        return guard_refuse(p.slot, p.cgroup_id, HOOK_PTRACE_ACCESS_CHECK, PTRACE);
    }
    match current_policed_slot() {
        Some((slot, cgroup_id)) => guard_refuse(slot, cgroup_id, HOOK_PTRACE_ACCESS_CHECK, PTRACE),
        None => 0,
    }
}
