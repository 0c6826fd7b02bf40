//! The task `sys_enter` remembered, read without a helper call: `bpf_rdonly_cast` of the
//! memoised pointer, which the verifier turns into a plain move (see
//! [`probe_common::task_cast`] for how the call gets its ids).

use aya_ebpf::helpers::bpf_get_current_task_btf;
use probe_common::task_cast::{CALL_PLACEHOLDER, TYPE_PLACEHOLDER, kfunc_call, mov_imm};

/// 1 when the agent wrote the kernel's ids into the `bpf_rdonly_cast` call; 0 when it
/// turned the call into `r0 = 0` (a kernel without the kfunc) and the helper must serve.
/// Written by the agent at load time; read by `sys_enter`.
#[unsafe(no_mangle)]
static TASK_CAST: u32 = 0;

/// The current task, for the shortcut's loads (`thread_info.status`, `io_uring`): the
/// memo's pointer cast read-only where the kernel can, else the helper's answer. The cast
/// pointer is untrusted: loads only, never a helper's or a map's argument (use
/// [`trusted`]). The memo's hit guarantees it is the current task: its key, the task's
/// kernel stack, is forgotten when the task exits.
#[inline(always)]
pub(crate) fn for_shortcut(memo_task: u64) -> *const u8 {
    // SAFETY: a read of this program's frozen .rodata.
    if unsafe { core::ptr::read_volatile(&TASK_CAST) } == 0 {
        return trusted();
    }
    let task: u64;
    // SAFETY: `r2 = <task_struct>; call bpf_rdonly_cast`, with the ids the agent wrote:
    // the verifier rewrites the call into `r0 = r1` and types r0 as an untrusted
    // `task_struct` pointer, whose loads it makes fault-safe. r1–r5 are the call's.
    unsafe {
        core::arch::asm!(
            ".quad {ty}",
            ".quad {call}",
            ty = const mov_imm(2, TYPE_PLACEHOLDER),
            call = const kfunc_call(CALL_PLACEHOLDER),
            inlateout("r1") memo_task => _,
            lateout("r0") task,
            lateout("r2") _,
            lateout("r3") _,
            lateout("r4") _,
            lateout("r5") _,
            options(nostack, readonly),
        );
    }
    task as *const u8
}

/// The current task, trusted: the helper's answer.
#[inline(always)]
pub(crate) fn trusted() -> *const u8 {
    // SAFETY: helper with no arguments; the pointer is only used for BTF-checked loads
    // and as the task storage key.
    unsafe { bpf_get_current_task_btf() as *const u8 }
}
