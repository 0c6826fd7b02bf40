//! Argument rules as the probe holds them: the conditions of a slot's conditional
//! syscalls, the errnos it fails syscalls with, and what the decision may read of a
//! call. Re-exported at the crate root.

/// What the decision may read of one syscall, only when it has to.
pub trait CallArgs {
    /// The six register arguments (see [`SyscallArgs`]).
    fn registers(&self) -> SyscallArgs;
    /// For `clone3`: `clone_args.flags`, read from the caller's memory; `None` when it
    /// cannot be read (the kernel's copy is judged later anyway).
    fn clone3_flags(&self) -> Option<u64>;
}

/// Arguments of a call judged offline (counts, recordings), where none are known: all
/// zero, and clone3's flags unreadable. Callers that must tell apart a syscall allowed
/// for some arguments only ask [`PolicySlot::is_conditional`] first.
pub struct UnknownArgs;

impl CallArgs for UnknownArgs {
    fn registers(&self) -> SyscallArgs {
        [0; 6]
    }
    fn clone3_flags(&self) -> Option<u64> {
        None
    }
}

/// `errno` of "operation not permitted": what a hook fails a denied syscall with unless
/// the policy chose another.
pub const EPERM: u32 = 1;
/// Argument rules one slot holds, over all its syscalls.
pub const MAX_ARG_RULES: usize = 16;
/// Conditions one argument rule holds (one per register argument, as in seccomp).
pub const MAX_ARG_CONDS: usize = 6;
/// Syscalls with their own errno one slot holds.
pub const MAX_ERRNOS: usize = 16;
/// `ArgRule::syscalls` / `SyscallErrno::syscall` of an unused entry.
pub const NO_SYSCALL: u32 = u32::MAX;

/// The six register arguments of one syscall, as its ABI passes them (ia32: `ebx`,
/// `ecx`, `edx`, `esi`, `edi`, `ebp`, zero-extended; x86_64 and x32: `rdi`, `rsi`,
/// `rdx`, `r10`, `r8`, `r9`).
pub type SyscallArgs = [u64; 6];

/// Comparison operators of an [`ArgCond`], as in the OCI runtime spec (`SCMP_CMP_*`).
pub mod arg_op {
    pub const EQ: u32 = 1;
    pub const NE: u32 = 2;
    pub const LT: u32 = 3;
    pub const LE: u32 = 4;
    pub const GT: u32 = 5;
    pub const GE: u32 = 6;
    /// `arg & value == value_two`.
    pub const MASKED_EQ: u32 = 7;
}

/// One condition on one register argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgCond {
    /// One of [`arg_op`]; any other value never holds.
    pub op: u32,
    /// Which argument, 0..=5.
    pub arg: u16,
    /// 32: the kernel reads this argument as a 32-bit `int`, so only the low 32 bits of
    /// the register (and of the values) are compared; 64: all of them, as seccomp does.
    pub bits: u16,
    pub value: u64,
    pub value_two: u64,
}

impl ArgCond {
    pub const EMPTY: ArgCond = ArgCond {
        op: 0,
        arg: 0,
        bits: 64,
        value: 0,
        value_two: 0,
    };

    /// Whether the condition holds for `args`.
    #[inline(always)]
    pub fn holds(&self, args: &SyscallArgs) -> bool {
        let a = match self.arg {
            0 => args[0],
            1 => args[1],
            2 => args[2],
            3 => args[3],
            4 => args[4],
            5 => args[5],
            _ => return false,
        };
        let mask = if self.bits == 32 {
            0xffff_ffff
        } else {
            u64::MAX
        };
        let (a, v, v2) = (a & mask, self.value & mask, self.value_two & mask);
        match self.op {
            arg_op::EQ => a == v,
            arg_op::NE => a != v,
            arg_op::LT => a < v,
            arg_op::LE => a <= v,
            arg_op::GT => a > v,
            arg_op::GE => a >= v,
            arg_op::MASKED_EQ => a & v == v2,
            _ => false,
        }
    }
}

/// One argument rule: its syscall is allowed when all its conditions hold.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgRule {
    /// The syscall's index ([`syscall_index`]) in each ABI the rule applies to, in
    /// [`Abi::ALL`] order, or [`NO_SYSCALL`]: one rule serves a syscall in every ABI.
    pub syscalls: [u32; 3],
    /// How many of `conds` are used (at most [`MAX_ARG_CONDS`]).
    pub count: u32,
    pub conds: [ArgCond; MAX_ARG_CONDS],
}

impl ArgRule {
    pub const EMPTY: ArgRule = ArgRule {
        syscalls: [NO_SYSCALL; 3],
        count: 0,
        conds: [ArgCond::EMPTY; MAX_ARG_CONDS],
    };

    /// Whether the rule is one of syscall `index`'s.
    #[inline(always)]
    pub fn applies_to(&self, index: u32) -> bool {
        index != NO_SYSCALL
            && (self.syscalls[0] == index || self.syscalls[1] == index || self.syscalls[2] == index)
    }

    /// Whether every used condition holds.
    #[inline(always)]
    pub fn holds(&self, args: &SyscallArgs) -> bool {
        let mut j = 0;
        while j < MAX_ARG_CONDS {
            if (j as u32) < self.count && !self.conds[j].holds(args) {
                return false;
            }
            j += 1;
        }
        true
    }
}

/// The errno a hook fails one syscall with.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallErrno {
    /// Syscall index ([`syscall_index`]), or [`NO_SYSCALL`].
    pub syscall: u32,
    pub errno: u32,
}

impl SyscallErrno {
    pub const EMPTY: SyscallErrno = SyscallErrno {
        syscall: NO_SYSCALL,
        errno: EPERM,
    };
}
