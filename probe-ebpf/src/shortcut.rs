//! The policed path's shortcut: an enforced call its policy allows outright, decided
//! without the `police` subprogram (see `sys_enter`).

use aya_ebpf::programs::BtfTracePointContext;
use probe_common::{action, classify};

use crate::{
    POLICIES, counting::counts_every_call, in_compat_syscall, kill, marks::denial_in_flight, rings,
};

/// Taken before [`police`](crate::police) on the memo's hit: an `enforce` slot that
/// counts only violations allows this call outright, and no denial, doom or ring is in
/// flight. `police` would decide `Allow` and do nothing else; its call (whose
/// return costs as much as a helper's on this kind of host) is spared. Any doubt: `false`.
/// `task` may be [`for_shortcut`](crate::task_cast::for_shortcut)'s untrusted pointer:
/// only loads go through it. `unusual`: [`quiet::now`](crate::quiet::now)'s; when it is
/// `false`, no denial, doom or ring owner exists, and none is looked for.
#[inline(always)]
pub(crate) fn allowed_outright_now(
    ctx: &BtfTracePointContext,
    task: *const u8,
    slot_id: u32,
    unusual: bool,
) -> bool {
    let Some(slot) = POLICIES.get(slot_id) else {
        return false;
    };
    if counts_every_call(slot) || (unusual && (denial_in_flight() || kill::any_doomed())) {
        return false;
    }
    let id: i64 = ctx.arg(1);
    let Some(index) = classify(id, in_compat_syscall(task)) else {
        return false;
    };
    probe_common::allowed_outright(slot, index)
        && rings::untouched(task, slot.action >= action::DENY_OR_KILL, index, unusual)
}
