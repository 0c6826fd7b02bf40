//! The start hold: no container's entrypoint runs a syscall before its policy is bound,
//! even without the wrapper. An exec in a cgroup that no binding knows (nor any bound
//! ancestor), below a start-hold root the agent named (the parents its selectors and
//! the containers it found sit in), is held: the process is stopped before the first
//! instruction of its new program, and the agent, told by an event, looks at the
//! cgroup (binding it if a policy selects it) and resumes it.
//!
//! A runtime's init execs the entrypoint only once the container's state is written, so
//! the agent finds the container at that exec. What a hold costs: nothing on the
//! syscall path (it runs per exec, in `exec_boundary`), and the agent's look per held
//! exec, which only unknown cgroups below the roots pay (a container pays it once or
//! twice, before it is bound).

use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_task_btf, bpf_send_signal,
    },
    macros::map,
    maps::HashMap,
};
use probe_common::{NO_SLOT, stat};

use crate::{
    NO_PREALLOC, SETTINGS, WORKLOADS, bound_slot_or_none, bump, current_cgroup_id,
    events::emit_hold,
};

const SIGSTOP: u32 = 19;

/// Start-hold roots: cgroup v2 id → 1. Written by the agent; read by `exec_boundary`.
#[map]
static HOLD_ROOTS: HashMap<u64, u8> = HashMap::with_max_entries(1024, NO_PREALLOC);

/// tgid → the cgroup v2 id of a process held at its exec. Written by `exec_boundary`;
/// read and cleared (with a SIGCONT) by the agent; cleared by `sched_process_exit`.
#[map]
static HELD: HashMap<u32, u64> = HashMap::with_max_entries(4096, NO_PREALLOC);

/// Whether an ancestor of the current task's cgroup (not the cgroup itself) is a hold
/// root, at the levels the agent named.
#[inline(always)]
fn under_hold_root(levels: u32, cgroup_id: u64) -> bool {
    let mut level: i32 = 31;
    while level >= 0 {
        if levels & (1u32 << level) != 0 {
            // SAFETY: plain helper call; returns 0 when `level` is deeper than the task.
            let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
            // SAFETY: plain data.
            if ancestor != 0
                && ancestor != cgroup_id
                && unsafe { HOLD_ROOTS.get(ancestor) }.is_some()
            {
                return true;
            }
        }
        level -= 1;
    }
    false
}

/// The current process (`tgid`) just exec'd: hold it if its cgroup is unknown and below a
/// hold root.
#[inline(always)]
pub(crate) fn hold_if_unknown(tgid: u32) {
    let Some(settings) = SETTINGS.get(0) else {
        return;
    };
    let levels = settings.hold_levels;
    if levels == 0 {
        return;
    }
    // SAFETY: helper with no arguments; the pointer is only used for BTF-checked loads.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    let cgroup_id = current_cgroup_id(task);
    // SAFETY: plain data.
    if unsafe { WORKLOADS.get(cgroup_id) }.is_some() || bound_slot_or_none(cgroup_id) != NO_SLOT {
        return;
    }
    if !under_hold_root(levels, cgroup_id) {
        return;
    }
    // BPF_NOEXIST: a process is held once.
    if HELD.insert(tgid, cgroup_id, 1).is_err() {
        // SAFETY: plain data.
        if unsafe { HELD.get(tgid) }.is_none() {
            bump(stat::HOLD_FAILED);
        }
        return;
    }
    // SAFETY: plain helper call on the current process: it stops on its way back to
    // user space, before the first instruction of the program it exec'd.
    if unsafe { bpf_send_signal(SIGSTOP) } != 0 {
        let _ = HELD.remove(tgid);
        bump(stat::HOLD_FAILED);
        return;
    }
    bump(stat::HOLDS);
    emit_hold(cgroup_id);
}

/// The process `tgid` is gone: a hold of it ends. (Not counted: the agent removes
/// entries too, and a count both sides change would race.)
#[inline(always)]
pub(crate) fn forget(tgid: u32) {
    let _ = HELD.remove(tgid);
}
