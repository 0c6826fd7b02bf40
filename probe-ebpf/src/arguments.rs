//! What the probe reads of a call's arguments, and the namespace guard: the registers
//! and clone3's flags for `decide`, the arguments an event reports, the kernel's copy
//! of a fork's flags (`task_newtask`), and the errno an LSM hook returns.

use aya_ebpf::{
    helpers::{
        bpf_probe_read_user,
        generated::{bpf_get_current_task_btf, bpf_ktime_get_boot_ns},
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use probe_common::{
    CLONE_NEW_ANY, CLONE3, CallArgs, DenyMark, EVENT_ARGS, EVENT_NEW_NAMESPACE, EVENT_PTRACE,
    EVENT_WORKLOAD_KILLED, MARK_DOOMED, NEW_NAMESPACE_INDEX, Outcome, PolicySlot, SyscallArgs,
    action, clone_flags_denied, is_ptrace, mode, stat,
};

use crate::{
    CLONE_THREAD, EPERM, POLICIES, Report, bound_slot, bump, current_cgroup_id, emit, marks,
};

/// What `decide` may read of the current syscall.
pub(crate) struct Call<'a> {
    pub(crate) ctx: &'a BtfTracePointContext,
    pub(crate) compat: bool,
}

impl CallArgs for Call<'_> {
    /// The six register arguments, as the syscall's ABI passes them. Offsets are those
    /// of x86_64's `struct pt_regs` (the uapi layout, fixed): x86_64 and x32 pass `rdi
    /// rsi rdx r10 r8 r9`, ia32 passes `ebx ecx edx esi edi ebp`, 32 bits wide (what a
    /// 64-bit task left in the upper halves is not part of them).
    #[inline(always)]
    fn registers(&self) -> SyscallArgs {
        let regs: *const u8 = self.ctx.arg(0);
        // Constant offsets only: the verifier allows no variable offset into `pt_regs`.
        // SAFETY: BTF-checked loads inside the `pt_regs` the tracepoint was given.
        let r = |offset: usize| unsafe {
            core::ptr::read_volatile(regs.wrapping_add(offset) as *const u64)
        };
        if self.compat {
            let m = 0xffff_ffffu64;
            [
                r(40) & m,
                r(88) & m,
                r(96) & m,
                r(104) & m,
                r(112) & m,
                r(32) & m,
            ]
        } else {
            [r(112), r(104), r(96), r(56), r(72), r(64)]
        }
    }

    /// `clone_args.flags`, the first u64 its first argument points to. Another thread
    /// may change it after this read: `clone_guard` judges the kernel's copy too.
    #[inline(always)]
    fn clone3_flags(&self) -> Option<u64> {
        let args = self.registers()[0] as *const u64;
        // SAFETY: a checked read of user memory; fails cleanly on a bad address.
        unsafe { bpf_probe_read_user(args) }.ok()
    }
}

/// `task_newtask`: a fork got past every check with flags the kernel has copied, which
/// no other thread can change any more. If they ask for a namespace the caller's
/// enforcing policy denies (`clone3` whose flags changed after `sys_enter` read them),
/// kill the caller and mark the child, which dies before it runs (see `MARK_DOOMED`).
#[btf_tracepoint(function = "task_newtask")]
pub fn clone_guard(ctx: BtfTracePointContext) -> i32 {
    let clone_flags: u64 = ctx.arg(1);
    crate::containment::follow_fork(&ctx, clone_flags);
    if clone_flags & CLONE_NEW_ANY == 0 {
        return 0;
    }
    // SAFETY: helper with no arguments; the pointer is only used for BTF-checked loads.
    let current = unsafe { bpf_get_current_task_btf() } as *const u8;
    let cgroup_id = current_cgroup_id(current);
    let Some(slot_id) = bound_slot(cgroup_id) else {
        return 0;
    };
    let Some(slot) = POLICIES.get(slot_id) else {
        return 0;
    };
    crate::counting::count(slot_id, NEW_NAMESPACE_INDEX);
    if slot.mode != mode::ENFORCE
        || !(slot.action == action::KILL || slot.action == action::DENY_OR_KILL)
        || !clone_flags_denied(slot, clone_flags)
    {
        return 0;
    }
    let took_workload = crate::kill::kill_in_scope(&ctx, slot, cgroup_id);
    // A thread of the caller dies with it; another process is marked, in its own task
    // storage.
    let child: *const u8 = ctx.arg(0);
    if clone_flags & CLONE_THREAD == 0 && !child.is_null() {
        let mark = DenyMark {
            // SAFETY: plain helper call.
            boot_ns: unsafe { bpf_ktime_get_boot_ns() },
            cgroup_id,
            id: CLONE3 as i64,
            index: CLONE3,
            slot: slot_id,
            consumed: 0,
            hook: 0,
            fallback_kill: 1,
            kind: MARK_DOOMED,
            errno: EPERM as u32,
            event_flags: 0,
            args: [0; 2],
        };
        if !marks::set_mark(child, &mark) {
            bump(stat::MARK_FAILED);
        }
    }
    emit(&Report {
        slot: slot_id,
        mode: slot.mode,
        outcome: Outcome::KilledAfter as u32,
        cgroup_id,
        id: CLONE3 as i64,
        index: CLONE3,
        hook: 0,
        flags: EVENT_NEW_NAMESPACE
            | EVENT_ARGS
            | if took_workload {
                EVENT_WORKLOAD_KILLED
            } else {
                0
            },
        args: [clone_flags, 0],
    });
    0
}

/// Kill the current task if it is a child marked by `clone_guard`, from `sys_enter`
/// (its syscall then runs: the deny path's `sys_exit` gets it before that, on its
/// return from the fork). Whether it was.
#[inline(always)]
pub(crate) fn doomed(
    ctx: &BtfTracePointContext,
    task: *const u8,
    policy: &PolicySlot,
    slot: u32,
    cgroup_id: u64,
    id: i64,
    index: u32,
) -> bool {
    // SAFETY: this task's own mark, read once.
    if !marks::mark_of(task).is_some_and(|m| unsafe { (*m).kind } == MARK_DOOMED) {
        return false;
    }
    marks::clear_mark(task);
    let took_workload = crate::kill::kill_in_scope(ctx, policy, cgroup_id);
    emit(&Report {
        slot,
        mode: mode::ENFORCE,
        outcome: Outcome::KilledAfter as u32,
        cgroup_id,
        id,
        index,
        hook: 0,
        flags: EVENT_NEW_NAMESPACE
            | if took_workload {
                EVENT_WORKLOAD_KILLED
            } else {
                0
            },
        args: [0; 2],
    });
    true
}

/// The arguments that decided a violation, for its event, when the decision read any
/// (a syscall judged on its arguments): ([`EVENT_ARGS`], args), else (0, zeros).
#[inline(always)]
pub(crate) fn deciding_args(
    ctx: &BtfTracePointContext,
    compat: bool,
    slot: &PolicySlot,
    index: Option<u32>,
) -> (u32, [u64; 2]) {
    match index {
        Some(i) if is_ptrace(i) => {
            let regs = Call { ctx, compat }.registers();
            (
                EVENT_PTRACE,
                [regs[0], (regs[1] & 0xffff_ffff) | (pid_level() << 32)],
            )
        }
        Some(i) if slot.judges_arguments(i) => {
            let call = Call { ctx, compat };
            let regs = call.registers();
            let first = if i & 511 == CLONE3 {
                call.clone3_flags().unwrap_or(0)
            } else {
                regs[0]
            };
            (EVENT_ARGS, [first, regs[1]])
        }
        _ => (0, [0; 2]),
    }
}

/// Offsets of `task_struct.thread_pid` and `pid.level`, from the kernel's BTF (agent,
/// at load time). Zero: the level reads as 0.
#[unsafe(no_mangle)]
static PID_LEVEL_PATH: [u32; 2] = [0; 2];

/// The level of the current task's pid namespace (0: the host's).
#[inline(always)]
fn pid_level() -> u64 {
    // SAFETY: a read of this program's frozen .rodata.
    let path = unsafe { core::ptr::read_volatile(&PID_LEVEL_PATH) };
    if path[0] == 0 {
        return 0;
    }
    // SAFETY: helper with no arguments; BTF-checked loads at offsets from the kernel's
    // BTF: task->thread_pid->level.
    unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        let pid = core::ptr::read_volatile(task.wrapping_add(path[0] as usize) as *const *const u8);
        u64::from(core::ptr::read_volatile(
            pid.wrapping_add(path[1] as usize) as *const u32
        ))
    }
}

/// `-errno` for an LSM hook to return, `errno` within 1..=4095 (else EPERM). The
/// verifier requires a hook's return value in [-4095, 0], and before 6.13 it tracks
/// no range through a negation, which the compiler emits for `-errno`: the subtraction
/// `0 - errno` is written in assembly so that the verifier sees it and its range.
#[inline(always)]
pub(crate) fn hook_error(errno: u32) -> i32 {
    let e = (errno & 0xfff) as u64;
    if e == 0 || e != errno as u64 {
        return -EPERM;
    }
    let ret: u64;
    // SAFETY: register arithmetic only.
    unsafe {
        core::arch::asm!(
            "{r} = 0",
            "{r} -= {e}",
            r = out(reg) ret,
            e = in(reg) e,
            options(pure, nomem, nostack),
        );
    }
    ret as i32
}
