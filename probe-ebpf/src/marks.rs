//! Per-task deny state. A syscall `sys_enter` denies is marked in its task's own storage
//! (`DENY_MARKS`, task storage): the LSM hooks read the mark, `sys_exit` takes it, and it
//! is freed with the task. There is no capacity shared between tasks: however many
//! threads a workload leaves blocked in denied syscalls, another workload's denials are
//! marked, and enforced, as before.

use aya_ebpf::{macros::btf_map, macros::map, maps::Array};
use probe_common::DenyMark;

use crate::{counter_add, counter_nonzero, task_storage::TaskStorage};

/// Task → a syscall in flight that the LSM hooks must deny. Written by `sys_enter`
/// (mark) and `clone_guard` (a doomed child), the LSM hooks (consume), `sys_exit` and
/// `sched_process_exit` (clear).
#[btf_map]
static DENY_MARKS: TaskStorage<DenyMark> = TaskStorage::new();

/// Number of marks (one u64): lets every LSM hook and `sys_exit` return at once when no
/// denial is in flight. Written by whoever adds or removes a mark; read by the LSM
/// hooks and `sys_exit`.
#[map]
static DENY_PENDING: Array<u64> = Array::with_max_entries(1, 0);

#[inline(always)]
fn pending_add(delta: u64) {
    counter_add(&DENY_PENDING, delta);
}

/// Whether any task has a mark: one array load.
#[inline(always)]
pub(crate) fn denial_in_flight() -> bool {
    counter_nonzero(&DENY_PENDING)
}

/// `task`'s mark, if it has one. (Only this task writes it while it runs.)
#[inline(always)]
pub(crate) fn mark_of(task: *const u8) -> Option<*mut DenyMark> {
    if !denial_in_flight() {
        return None;
    }
    DENY_MARKS.get(task)
}

/// Mark `task` (replacing a stale mark of its own). `false`: the kernel could not
/// allocate the task's storage; the caller applies the fallback.
#[inline(always)]
pub(crate) fn set_mark(task: *const u8, mark: &DenyMark) -> bool {
    if let Some(p) = DENY_MARKS.get(task) {
        // SAFETY: this task's own value.
        unsafe { *p = *mark };
        return true;
    }
    if DENY_MARKS.get_or_insert(task, mark).is_some() {
        pending_add(1);
        return true;
    }
    false
}

/// Take `task`'s mark away, if it has one.
#[inline(always)]
pub(crate) fn take_mark(task: *const u8) -> Option<DenyMark> {
    // SAFETY: plain data, copied out before the value is deleted.
    let mark = unsafe { *mark_of(task)? };
    clear_mark(task);
    Some(mark)
}

/// Drop `task`'s mark, if it has one.
#[inline(always)]
pub(crate) fn clear_mark(task: *const u8) {
    if DENY_MARKS.delete(task) {
        pending_add(u64::MAX);
    }
}
