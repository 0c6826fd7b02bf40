//! `sys_enter`'s per-task memo: what it needs to know about a task it saw before, and
//! when that is still valid.

/// Value of `TASK_MEMO[memo_index(regs)]`, per CPU: what `sys_enter` last found for the
/// task whose syscall registers sit at `regs` (the top of its kernel stack, unique among
/// live tasks), so that the next syscall of that task on that CPU needs neither
/// `bpf_get_current_task_btf()` nor the cgroup lookup. Valid while `generation` equals
/// the current [`memo_generation`]: the agent bumps it after every change to what the
/// lookup reads, the kernel side when a task changes cgroup or exits (its stack, hence
/// `regs`, may then serve another task).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskMemo {
    pub regs: u64,
    /// The task itself (`struct task_struct *`), for loads through [`task_cast`].
    pub task: u64,
    pub generation: u64,
    pub cgroup_id: u64,
    /// The bound slot, or [`NO_SLOT`](crate::NO_SLOT).
    pub slot: u32,
    pub _reserved: u32,
}

/// Entries of `TASK_MEMO` per CPU (a power of two).
pub const TASK_MEMO_SIZE: u32 = 8;

/// Index of a task's syscall registers in `TASK_MEMO`. Kernel stacks are 16 KiB-aligned
/// (and guard-paged), so the bits above 14 tell tasks apart.
#[inline(always)]
pub const fn memo_index(regs: u64) -> u32 {
    (((regs >> 14) ^ (regs >> 17)) & (TASK_MEMO_SIZE as u64 - 1)) as u32
}

/// `GENERATION` entries: written by the agent only.
pub mod generation {
    /// 0 until the agent has attached the invalidating programs, then bumped after every
    /// change to `WORKLOADS`, `CGROUP_CACHE` or `SETTINGS`.
    pub const AGENT: u32 = 0;
    pub const COUNT: u32 = 1;
}

/// Value of `KERNEL_STATE`'s one entry: what the kernel side keeps for `sys_enter`,
/// which reads both words with one lookup. Written with atomic adds, field by field, by
/// the probe only (the agent never writes it: a whole-value update would lose adds).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelState {
    /// The memo's kernel generation: bumped when a task changes cgroup or exits.
    pub generation: u64,
    /// Setups, strays, pending denials, doomed workloads and ring owners, summed (each
    /// is also counted in its own map). Zero on a quiet node: `sys_enter` then skips the
    /// five checks. Raised before the count it sums, lowered after it, so that it is
    /// never zero while one of them is not.
    pub unusual: u64,
}

/// The generation a [`TaskMemo`] must carry to be valid: `None` when the memo is off.
/// Both counters only grow, so their sum changes whenever either does.
#[inline(always)]
pub const fn memo_generation(agent: u64, kernel: u64) -> Option<u64> {
    if agent == 0 {
        None
    } else {
        Some(agent.wrapping_add(kernel))
    }
}

/// The `bpf_rdonly_cast` kfunc call through which `sys_enter` reads the memoised task
/// without a helper call (kernels from 6.2, where the verifier turns the call into a
/// plain move). The probe object holds the two instructions below with placeholder
/// immediates; the agent writes the running kernel's BTF ids into them before loading,
/// or turns the call into `r0 = 0` where the kfunc is missing (and tells the probe so).
pub mod task_cast {
    /// Placeholder `imm` of the call (`bpf_rdonly_cast`'s id in the kernel's BTF).
    pub const CALL_PLACEHOLDER: u32 = 0x7366_6b31;
    /// Placeholder `imm` of `r2 = imm` (`struct task_struct`'s id in the kernel's BTF).
    pub const TYPE_PLACEHOLDER: u32 = 0x7366_7431;

    /// `call imm` to a kfunc of the kernel's BTF (`BPF_PSEUDO_KFUNC_CALL` in `src_reg`).
    pub const fn kfunc_call(imm: u32) -> u64 {
        0x85 | (0x20 << 8) | ((imm as u64) << 32)
    }

    /// `r<dst> = imm` (64-bit move of an immediate).
    pub const fn mov_imm(dst: u8, imm: u32) -> u64 {
        0xb7 | ((dst as u64 & 0xf) << 8) | ((imm as u64) << 32)
    }
}

const _: () = assert!(core::mem::size_of::<TaskMemo>() == 40);
const _: () = assert!(TASK_MEMO_SIZE.is_power_of_two());

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, `Copy`, no padding (the size assert above).
unsafe impl aya::Pod for TaskMemo {}
