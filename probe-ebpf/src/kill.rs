//! What a kill takes. Under `killScope: process` the caller's process (SIGKILL takes
//! every thread). Under `killScope: workload` its whole cgroup: the cgroup is doomed,
//! every task in it dies at its next syscall (before the syscall runs), and the agent
//! writes the cgroup's `cgroup.kill` for the tasks that make none.

use aya_ebpf::{
    EbpfContext,
    helpers::generated::bpf_ktime_get_boot_ns,
    macros::{btf_tracepoint, map},
    maps::{Array, HashMap},
    programs::BtfTracePointContext,
};
use probe_common::{PolicySlot, SLOT_KILL_WORKLOAD};

use crate::{
    CGROUP_ID_PATH, NO_PREALLOC, counter_add, counter_nonzero, kernfs_id, kernfs_of, kill_current,
};

/// cgroup v2 id → when its workload was doomed (boot ns). Written by the kill sites;
/// read by `sys_enter` and the agent (which writes the cgroup's `cgroup.kill`); deleted by
/// `lift_doom` when the cgroup's last task is gone.
#[map]
static DOOMED_WORKLOADS: HashMap<u64, u64> = HashMap::with_max_entries(4096, NO_PREALLOC);

/// Number of entries in `DOOMED_WORKLOADS`. Written by the kill sites (add) and
/// `lift_doom` (remove); read by `sys_enter` and `lift_doom`.
#[map]
static DOOMED_COUNT: Array<u64> = Array::with_max_entries(1, 0);

/// Kill the caller for a violation of `slot`, and doom its workload when the policy
/// says a kill takes it. Whether the workload was doomed (for the event's flags).
#[inline(always)]
pub(crate) fn kill_in_scope<C: EbpfContext>(ctx: &C, slot: &PolicySlot, cgroup_id: u64) -> bool {
    kill_current(ctx, cgroup_id);
    if slot.flags & SLOT_KILL_WORKLOAD == 0 {
        return false;
    }
    // SAFETY: plain data.
    if unsafe { DOOMED_WORKLOADS.get(cgroup_id) }.is_some() {
        return true;
    }
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    // BPF_NOEXIST: a racing CPU that doomed it first keeps its entry (and its count).
    if DOOMED_WORKLOADS.insert(cgroup_id, now, 1).is_ok() {
        counter_add(&DOOMED_COUNT, 1);
    }
    // Full: the agent's `cgroup.kill` still comes with the event.
    true
}

/// Whether the task's cgroup is doomed (then it is killed now, before its syscall
/// runs). One array load while no workload is.
#[inline(always)]
pub(crate) fn doomed_workload<C: EbpfContext>(ctx: &C, cgroup_id: u64) -> bool {
    if !counter_nonzero(&DOOMED_COUNT) {
        return false;
    }
    // SAFETY: plain data.
    if unsafe { DOOMED_WORKLOADS.get(cgroup_id) }.is_none() {
        return false;
    }
    kill_current(ctx, cgroup_id);
    true
}

/// Whether some workload is doomed (one array load).
#[inline(always)]
pub(crate) fn any_doomed() -> bool {
    counter_nonzero(&DOOMED_COUNT)
}

/// `cgroup:cgroup_notify_populated`: a cgroup (with the cgroups below it) lost its last
/// task, or got its first. A doomed workload whose tasks are all gone is doomed no more:
/// the doom ends the workload's processes, it does not poison the cgroup for what a
/// runtime starts in it later. Attached at every load; runs per change, not per syscall.
#[btf_tracepoint(function = "cgroup_notify_populated")]
pub fn lift_doom(ctx: BtfTracePointContext) -> i32 {
    let populated: i32 = ctx.arg(2);
    if populated != 0 {
        return 0;
    }
    if !counter_nonzero(&DOOMED_COUNT) {
        return 0;
    }
    // SAFETY: frozen .rodata; cgroup.kn and kernfs_node.id at offsets from the kernel's
    // BTF (no offsets: nothing is lifted; a doomed cgroup then stays doomed until it goes).
    let path = unsafe { core::ptr::read_volatile(&CGROUP_ID_PATH) };
    if path[2] == 0 {
        return 0;
    }
    let id = kernfs_id(kernfs_of(ctx.arg(0)));
    if DOOMED_WORKLOADS.remove(id).is_ok() {
        counter_add(&DOOMED_COUNT, u64::MAX);
    }
    0
}
