//! Policies stick to processes. A process judged under a policy keeps being judged by
//! it when it, or a child, lands in a cgroup that policy is not bound to: moved by a
//! write to `cgroup.procs` (its own or another's), or born there by
//! `clone3(CLONE_INTO_CGROUP)`. Where the new cgroup has a policy of its own, both judge
//! it: the stricter wins.
//!
//! `sys_enter` notes, per process, the policy it found (`PROCESS_SLOTS`, written only when
//! it looks the cgroup up, not per syscall). The `cgroup_attach_task` tracepoint runs
//! after a move, when the process's old cgroup is gone from its task: the note says
//! what it was judged under. A process that leaves goes to `STRAYS`, which `sys_enter`
//! reads (only while `STRAY_COUNT` is not zero) before anything else. The tracepoint
//! fires only once the move is done, so a syscall can come in between: one that misses
//! the memo finds the note from the old cgroup and makes the process a stray itself
//! (and is judged by the old policy, as one that hits the memo is).

use aya_ebpf::{
    helpers::generated::bpf_get_current_task_btf,
    macros::{btf_tracepoint, map},
    maps::{Array, HashMap},
    programs::BtfTracePointContext,
};
use probe_common::{CLONE_INTO_CGROUP, NO_SLOT, ProcessPolicy, carries_policy, stat};

use crate::{
    CGROUP_ID_PATH, CLONE_THREAD, NO_PREALLOC, SETTINGS, WORKLOADS, bound_slot, bump,
    current_cgroup_id, kernfs_id, kernfs_of, kill_current,
};

/// tgid → the policy a policed process was last judged under. Written by `sys_enter`
/// (when it looks the task's cgroup up); read by `memo_cgroup_attach`; cleared by
/// `sched_process_exit` when the process is gone.
#[map]
static PROCESS_SLOTS: HashMap<u32, ProcessPolicy> = HashMap::with_max_entries(65536, NO_PREALLOC);

/// tgid → the policy a process carries out of its workload's cgroup. Written by
/// `memo_cgroup_attach` and `clone_guard`; read by `sys_enter`; cleared by
/// `sched_process_exit`.
#[map]
static STRAYS: HashMap<u32, ProcessPolicy> = HashMap::with_max_entries(16384, NO_PREALLOC);

/// Number of entries in `STRAYS`. Written by whoever adds or removes one; read by
/// `sys_enter`.
#[map]
static STRAY_COUNT: Array<u64> = Array::with_max_entries(1, 0);

/// Offsets from the kernel's BTF (agent, at load time): `task_struct.tgid`,
/// `task_struct.signal`, `signal_struct.live`, `kernfs_node.parent` (`__parent` since
/// 6.15). Any zero: processes are not followed.
#[unsafe(no_mangle)]
static CONTAINMENT_OFFSETS: [u32; 4] = [0; 4];

#[inline(always)]
fn offsets() -> Option<[usize; 4]> {
    // SAFETY: a read of this program's frozen .rodata.
    let o = unsafe { core::ptr::read_volatile(&CONTAINMENT_OFFSETS) };
    // SAFETY: as above.
    let path = unsafe { core::ptr::read_volatile(&CGROUP_ID_PATH) };
    if o.contains(&0) || path[0] == 0 {
        return None;
    }
    Some([o[0] as usize, o[1] as usize, o[2] as usize, o[3] as usize])
}

/// Load a value of type `T` at `offset` into a BTF-typed kernel object.
///
/// # Safety
/// `base` is a BTF pointer from the kernel and `offset` that of a member of type `T`
/// in its type, from the kernel's BTF; the verifier checks the load.
#[inline(always)]
unsafe fn field<T: Copy>(base: *const u8, offset: usize) -> T {
    unsafe { core::ptr::read_volatile(base.wrapping_add(offset) as *const T) }
}

#[inline(always)]
fn tgid_of(task: *const u8, o: &[usize; 4]) -> u32 {
    // SAFETY: task_struct.tgid.
    unsafe { field::<u32>(task, o[0]) }
}

/// Whether any process is a stray: one array load.
#[inline(always)]
fn any_strays() -> bool {
    crate::counter_nonzero(&STRAY_COUNT)
}

/// The policy the process of `tgid` carries, if it is a stray.
#[inline(always)]
fn stray(tgid: u32) -> Option<ProcessPolicy> {
    if !any_strays() {
        return None;
    }
    // SAFETY: plain data, copied out.
    unsafe { STRAYS.get(tgid) }.copied()
}

/// The policy the current process carries, if it is a stray. One array load (and no
/// helper call) when there are none.
#[inline(always)]
pub(crate) fn stray_of_current() -> Option<ProcessPolicy> {
    if !any_strays() {
        return None;
    }
    stray((aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32)
}

/// `sys_enter` looked the current task's cgroup up and found `slot` (perhaps
/// [`NO_SLOT`]): note it for its process, if it is policed and not the note there
/// already. A note from another cgroup, under a policy this one is not bound to, means
/// the process was moved and `cgroup_attach_task` has not run yet: that tracepoint fires
/// after the move, and the process (or a child whose first syscall this is) may make
/// syscalls in between. It carries its policy from now on, as the tracepoint would have
/// made it, and the policy is returned for this syscall to be judged by; [`NO_SLOT`]
/// when nothing moved. (A stray's note stays where it was judged until it lands in
/// another policed cgroup.)
#[inline(always)]
pub(crate) fn note_process(slot: u32, cgroup_id: u64) -> ProcessPolicy {
    let mut moved = ProcessPolicy {
        cgroup_id: 0,
        slot: NO_SLOT,
        _reserved: 0,
    };
    // Processes are not followed: nothing would clear a note when its process exits,
    // and a stale one would follow the next process given its pid.
    if offsets().is_none() {
        return moved;
    }
    let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: plain data, copied out.
    if let Some(p) = unsafe { PROCESS_SLOTS.get(tgid) }.copied() {
        if p.slot == slot && p.cgroup_id == cgroup_id {
            return moved;
        }
        if p.cgroup_id != cgroup_id && carries_policy(p.slot, slot) {
            moved = p;
            if !make_stray(tgid, p) {
                // The note stays: `cgroup_attach_task` finds the move and acts on the
                // failure.
                bump(stat::STRAY_FAILED);
                return moved;
            }
        }
    }
    if slot == NO_SLOT {
        return moved;
    }
    let _ = PROCESS_SLOTS.insert(
        tgid,
        ProcessPolicy {
            cgroup_id,
            slot,
            _reserved: 0,
        },
        0,
    );
    moved
}

fn count_strays(delta: u64) {
    crate::counter_add(&STRAY_COUNT, delta);
}

/// Record that the process `tgid` carries `policy` out of its workload. `false` when
/// `STRAYS` could not take it.
#[inline(always)]
fn make_stray(tgid: u32, policy: ProcessPolicy) -> bool {
    // SAFETY: plain data.
    if unsafe { STRAYS.get(tgid) }.is_some() {
        return true;
    }
    // BPF_NOEXIST: a racing CPU that made it first keeps its entry (and its count).
    if STRAYS.insert(tgid, policy, 1).is_ok() {
        count_strays(1);
        bump(stat::STRAYS);
        return true;
    }
    // SAFETY: plain data.
    unsafe { STRAYS.get(tgid) }.is_some()
}

/// The slot bound to the cgroup `cgrp` (a `struct cgroup *`), or to its deepest bound
/// ancestor, as `sys_enter` would find it for a task in it. Walks up the kernfs tree
/// (rare paths only: moves and forks into another cgroup).
#[inline(always)]
fn slot_of_cgroup(cgrp: *const u8, o: &[usize; 4]) -> u32 {
    let mut kn = kernfs_of(cgrp);
    // SAFETY: plain data.
    if let Some(b) = unsafe { WORKLOADS.get(kernfs_id(kn)) } {
        return b.slot;
    }
    if SETTINGS.get(0).is_none_or(|s| s.ancestor_levels == 0) {
        return NO_SLOT;
    }
    let mut i = 0;
    while i < 32 {
        // SAFETY: kernfs_node.parent (the root's is null: the load then reads 0).
        kn = unsafe { field(kn, o[3]) };
        if kn.is_null() {
            break;
        }
        // SAFETY: plain data.
        if let Some(b) = unsafe { WORKLOADS.get(kernfs_id(kn)) }
            && b.slot != NO_SLOT
        {
            return b.slot;
        }
        i += 1;
    }
    NO_SLOT
}

/// The cgroup (`struct cgroup *`) a task is in: `task->cgroups->dfl_cgrp`.
#[inline(always)]
fn cgroup_of(task: *const u8) -> *const u8 {
    // SAFETY: frozen .rodata; offsets from the kernel's BTF.
    let path = unsafe { core::ptr::read_volatile(&CGROUP_ID_PATH) };
    unsafe {
        let cset: *const u8 = field(task, path[0] as usize);
        field(cset, path[1] as usize)
    }
}

/// `cgroup:cgroup_attach_task` (after a move by `cgroup.procs` or `cgroup.threads`): if
/// the moved process was policed and its new cgroup is not bound to that policy, it
/// carries it. If it cannot, the mover is killed when it is the moved process or is
/// policed. Attached at every load; runs per move, not per syscall.
#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn follow_cgroup_move(ctx: BtfTracePointContext) -> i32 {
    follow_move(&ctx);
    0
}

#[inline(always)]
fn follow_move(ctx: &BtfTracePointContext) {
    let Some(o) = offsets() else {
        return;
    };
    let dst: *const u8 = ctx.arg(0);
    let task: *const u8 = ctx.arg(2);
    let tgid = tgid_of(task, &o);
    let dst_id = kernfs_id(kernfs_of(dst));
    // SAFETY: plain data, copied out.
    let judged = (unsafe { PROCESS_SLOTS.get(tgid) }).copied();
    // Never judged, or only in its new cgroup: this tracepoint runs after the move, and
    // a syscall the process made in between was judged there. Either way, perhaps a
    // runtime's setup process joining its container.
    if judged.is_none_or(|j| j.cgroup_id == dst_id) {
        if stray(tgid).is_some() {
            return;
        }
        // SAFETY: helper with no arguments.
        let current = unsafe { bpf_get_current_task_btf() } as *const u8;
        let mover = tgid_of(current, &o);
        // SAFETY: plain data.
        let mover_policed = unsafe { PROCESS_SLOTS.get(mover) }.is_some() || stray(mover).is_some();
        let destination = (dst_id, slot_of_cgroup(dst, &o) != NO_SLOT);
        if crate::setup::arrived(task, tgid, mover, mover_policed, destination) && judged.is_some()
        {
            // Judged from its exec on: noted then.
            let _ = PROCESS_SLOTS.remove(tgid);
        }
        return;
    }
    let Some(judged) = judged else {
        return;
    };
    if !carries_policy(judged.slot, slot_of_cgroup(dst, &o)) {
        return;
    }
    if !make_stray(tgid, judged) {
        bump(stat::STRAY_FAILED);
        // SAFETY: helper with no arguments.
        let current = unsafe { bpf_get_current_task_btf() } as *const u8;
        let mover = tgid_of(current, &o);
        // SAFETY: plain data.
        if mover == tgid || unsafe { PROCESS_SLOTS.get(mover) }.is_some() {
            kill_current(ctx, judged.cgroup_id);
        }
    }
}

/// `task_newtask`: a child process of a stray is one too; a child a policed process
/// starts in another cgroup (`CLONE_INTO_CGROUP`) carries its parent's policy.
#[inline(always)]
pub(crate) fn follow_fork(ctx: &BtfTracePointContext, clone_flags: u64) {
    if clone_flags & CLONE_THREAD != 0 {
        return;
    }
    let Some(o) = offsets() else {
        return;
    };
    // SAFETY: helper with no arguments.
    let current = unsafe { bpf_get_current_task_btf() } as *const u8;
    let child: *const u8 = ctx.arg(0);
    let parent = tgid_of(current, &o);
    // A runtime's setup process forks its setup.
    if crate::setup::forked(parent, tgid_of(child, &o)) {
        return;
    }
    // The child is judged as its parent was until it makes a syscall of its own: a
    // sibling may move it before it does.
    // SAFETY: plain data, copied out.
    if let Some(note) = unsafe { PROCESS_SLOTS.get(parent) }.copied() {
        let _ = PROCESS_SLOTS.insert(tgid_of(child, &o), note, 0);
    }
    let mut carried = stray(parent);
    if carried.is_none()
        && clone_flags & CLONE_INTO_CGROUP != 0
        // SAFETY: plain data.
        && unsafe { PROCESS_SLOTS.get(parent) }.is_none()
    {
        // A parent never judged starts its child in another cgroup: a runtime's setup
        // process (crun's `exec`), perhaps.
        let child_cgroup = cgroup_of(child);
        let destination = (
            kernfs_id(kernfs_of(child_cgroup)),
            slot_of_cgroup(child_cgroup, &o) != NO_SLOT,
        );
        let _ = crate::setup::arrived(child, tgid_of(child, &o), parent, false, destination);
    }
    if carried.is_none() && clone_flags & CLONE_INTO_CGROUP != 0 {
        let cgroup_id = current_cgroup_id(current);
        let slot = bound_slot(cgroup_id).unwrap_or(NO_SLOT);
        if carries_policy(slot, slot_of_cgroup(cgroup_of(child), &o)) {
            carried = Some(ProcessPolicy {
                cgroup_id,
                slot,
                _reserved: 0,
            });
        }
    }
    if let Some(policy) = carried
        && !make_stray(tgid_of(child, &o), policy)
    {
        // Not recorded: the parent dies (the child is marked by the caller's guard
        // only for namespaces; without a record it would run unpoliced).
        bump(stat::STRAY_FAILED);
        kill_current(ctx, policy.cgroup_id);
    }
}

/// `sched_process_exit`: when the last thread of a process exits, its notes go.
#[inline(always)]
pub(crate) fn forget_process() {
    let Some(o) = offsets() else {
        return;
    };
    // SAFETY: helper with no arguments.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    // SAFETY: task_struct.signal, signal_struct.live (an atomic_t: its counter first);
    // `live` is decremented before this tracepoint, so 0 means the group is dead.
    let live: i32 = unsafe {
        let signal: *const u8 = field(task, o[1]);
        field(signal, o[2])
    };
    if live != 0 {
        return;
    }
    let tgid = tgid_of(task, &o);
    crate::setup::end(tgid);
    crate::hold::forget(tgid);
    let _ = PROCESS_SLOTS.remove(tgid);
    if STRAYS.remove(tgid).is_ok() {
        count_strays(u64::MAX);
    }
}
