//! io_uring work judged wherever it runs. Operations a ring runs never pass
//! `sys_enter`; they reach the LSM hooks in one of three places:
//! - inline in `io_uring_enter` (or `io_uring_register`), in the submitting task;
//! - in an io-wq or SQPOLL thread (`PF_IO_WORKER`), which lives in the ring owner's
//!   process and cgroup: judged by that cgroup's policy (see `lsm_check`);
//! - in io_uring's task_work, which runs in the submitting task *between* its
//!   syscalls, after `sys_exit`: a poll-armed request (`IORING_RECVSEND_POLL_FIRST`,
//!   `IORING_ACCEPT_POLL_FIRST`, or one that found no data) once it is ready, the next
//!   request of a linked chain.
//!
//! For a task with an io_uring context under a `deny` policy, `sys_enter` and
//! `sys_exit` keep where the task is (`RING_OWNERS`, task storage): in a syscall of its
//! own, in `io_uring_enter`, or outside any. Whatever reaches a hook while it is not in a
//! syscall of its own (or while it exits) is ring work, judged by the policy noted at
//! its last syscall, as the syscall the operation stands for.

use aya_ebpf::{macros::btf_map, macros::map, maps::Array};
use probe_common::{
    IO_URING_ENTER, IO_URING_REGISTER, IO_URING_SETUP, PF_EXITING, RING_DIRECT, RING_ENTER,
    RING_OUTSIDE, RingOwner,
};

use crate::{counter_add, counter_nonzero, task_storage::TaskStorage};

/// Task → where a task with an io_uring context under a `deny` policy is, and its
/// policy. Written by `sys_enter` and `sys_exit`; read by the LSM hooks; cleared by
/// `sched_process_exit`.
#[btf_map]
static RING_OWNERS: TaskStorage<RingOwner> = TaskStorage::new();

/// Number of tasks in `RING_OWNERS`. Written by whoever adds or removes one; read by
/// `sys_exit` and the LSM hooks.
#[map]
static RING_OWNER_COUNT: Array<u64> = Array::with_max_entries(1, 0);

/// Offset of `task_struct.io_uring` (the task's io_uring context, set by its first
/// ring), from the kernel's BTF (agent, at load time). Zero: the kernel has no io_uring.
#[unsafe(no_mangle)]
static TASK_IO_URING_OFFSET: u32 = 0;

#[inline(always)]
fn count_add(delta: u64) {
    counter_add(&RING_OWNER_COUNT, delta);
}

#[inline(always)]
fn any_owners() -> bool {
    counter_nonzero(&RING_OWNER_COUNT)
}

/// Whether `task` has an io_uring context: one load.
#[inline(always)]
fn has_ring(task: *const u8) -> bool {
    // SAFETY: a read of this program's frozen .rodata.
    let offset = unsafe { core::ptr::read_volatile(&TASK_IO_URING_OFFSET) };
    if offset == 0 {
        return false;
    }
    // SAFETY: a BTF-checked load of a pointer member of task_struct.
    let ctx = unsafe { core::ptr::read_volatile(task.wrapping_add(offset as usize) as *const u64) };
    ctx != 0
}

/// `sys_enter`, for a syscall of `task` judged under a `deny` policy (`index`: its
/// syscall index, or `UNCLASSIFIED_INDEX`): note where the task now is when it has, or is making,
/// a ring. `false`: the kernel could not allocate the task's storage (the caller applies
/// the policy's fallback). A subprogram of its own: inlined, LLVM interleaves it with
/// `decide` and copies a register the verifier sees as never written.
#[inline(never)]
pub(crate) fn enter_syscall(task: *const u8, slot: u32, cgroup_id: u64, index: u32) -> bool {
    if !follows_ring(task, index) {
        return true;
    }
    // A plain number, not an Option: the verifier refuses to read the register a `None`
    // leaves undefined.
    let nr = index & 511;
    let owner = RingOwner {
        cgroup_id,
        slot,
        where_: if nr == IO_URING_ENTER || nr == IO_URING_REGISTER {
            RING_ENTER
        } else {
            RING_DIRECT
        },
    };
    if let Some(p) = RING_OWNERS.get(task) {
        // SAFETY: this task's own value; only it writes it.
        unsafe { *p = owner };
        return true;
    }
    if RING_OWNERS.get_or_insert(task, &owner).is_some() {
        count_add(1);
        return true;
    }
    false
}

/// `sys_enter`, for a syscall of `task` under a policy that denies nothing: a ring
/// owner it was before (its policy changed) is forgotten.
#[inline(always)]
pub(crate) fn not_judged(task: *const u8) {
    if any_owners() && has_ring(task) && RING_OWNERS.delete(task) {
        count_add(u64::MAX);
    }
}

/// Whether call `index` of `task` is one [`enter_syscall`] records: an io_uring call, or
/// any call of a task that has a ring.
#[inline(always)]
fn follows_ring(task: *const u8, index: u32) -> bool {
    let nr = index & 511;
    nr == IO_URING_SETUP || nr == IO_URING_ENTER || nr == IO_URING_REGISTER || has_ring(task)
}

/// Whether judging call `index` under an `enforce` slot (`deny`: its action denies)
/// would leave the ring state as it is ([`enter_syscall`], [`not_judged`]): no ring
/// call, and no ring that needs following. The shortcut in `sys_enter` asks it, with
/// `unusual` `false` when no task owns a ring ([`quiet::now`](crate::quiet::now)).
#[inline(always)]
pub(crate) fn untouched(task: *const u8, deny: bool, index: u32, unusual: bool) -> bool {
    if deny {
        !follows_ring(task, index)
    } else {
        !unusual || !any_owners() || !has_ring(task)
    }
}

/// `sys_exit`: `task` is between syscalls now.
#[inline(always)]
pub(crate) fn leave_syscall(task: *const u8) {
    if !any_owners() || !has_ring(task) {
        return;
    }
    if let Some(p) = RING_OWNERS.get(task) {
        // SAFETY: this task's own value; only it writes it.
        unsafe { (*p).where_ = RING_OUTSIDE };
    }
}

/// An LSM hook runs in `task` (with `task_struct.flags` `flags`): when that is ring work
/// of a ring owner, the policy and cgroup to judge it by.
#[inline(always)]
pub(crate) fn ring_work(task: *const u8, flags: u32) -> Option<(u32, u64)> {
    if !any_owners() || !has_ring(task) {
        return None;
    }
    // SAFETY: plain data, copied out.
    let owner = unsafe { *RING_OWNERS.get(task)? };
    if owner.where_ == RING_DIRECT && flags & PF_EXITING == 0 {
        return None;
    }
    Some((owner.slot, owner.cgroup_id))
}

/// `sched_process_exit`: `task` is gone.
#[inline(always)]
pub(crate) fn forget(task: *const u8) {
    if any_owners() && RING_OWNERS.delete(task) {
        count_add(u64::MAX);
    }
}
