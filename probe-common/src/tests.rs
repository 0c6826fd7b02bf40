//! Unit tests of the shared types and of the decision.
use super::*;

/// Arguments the decision must not read.
struct NoArgs;
impl CallArgs for NoArgs {
    fn registers(&self) -> SyscallArgs {
        panic!("the decision read the arguments of a syscall without argument rules")
    }
    fn clone3_flags(&self) -> Option<u64> {
        panic!("the decision read clone3's flags")
    }
}
#[allow(non_upper_case_globals)]
const no_args: &NoArgs = &NoArgs;

/// Registers (and clone3 flags) the decision may read.
struct Regs(SyscallArgs, Option<u64>);
impl CallArgs for Regs {
    fn registers(&self) -> SyscallArgs {
        self.0
    }
    fn clone3_flags(&self) -> Option<u64> {
        self.1
    }
}

fn slot_allowing(mode: u32, indexes: &[u32]) -> PolicySlot {
    let mut s = PolicySlot {
        mode,
        live: 1,
        ..PolicySlot::EMPTY
    };
    for &i in indexes {
        s.set_allowed(i);
    }
    s
}

#[test]
fn classify_separates_the_three_abis() {
    assert_eq!(classify(21, false), Some(21));
    assert_eq!(classify(21, true), Some(512 + 21));
    assert_eq!(
        classify((X32_SYSCALL_BIT | 21) as i64, false),
        Some(1024 + 21)
    );
    assert_eq!(
        classify((X32_SYSCALL_BIT | 547) as i64, false),
        Some(1024 + 547)
    );
}

#[test]
fn classify_refuses_what_it_cannot_place() {
    assert_eq!(classify(-1, false), None);
    assert_eq!(classify(512, false), None);
    assert_eq!(classify(512, true), None);
    assert_eq!(classify((X32_SYSCALL_BIT | 1024) as i64, false), None);
    assert_eq!(classify(i64::MAX, false), None);
}

#[test]
fn index_round_trips() {
    for abi in Abi::ALL {
        for nr in [0u32, 1, abi.span() - 1] {
            let i = syscall_index(abi, nr as u64).unwrap();
            assert_eq!(index_to_syscall(i), Some((abi, nr)));
        }
    }
    assert_eq!(index_to_syscall(UNCLASSIFIED_INDEX), None);
}

#[test]
fn decide_allows_only_listed_index_of_that_abi() {
    let s = slot_allowing(mode::ENFORCE, &[21]);
    assert_eq!(decide(&s, Some(21), no_args), Decision::Allow);
    // i386 21 is mount: same number, other ABI, not allowed.
    assert!(matches!(
        decide(&s, Some(512 + 21), no_args),
        Decision::Violation { kill: true, .. }
    ));
    assert!(matches!(
        decide(&s, None, no_args),
        Decision::Violation { kill: true, .. }
    ));
}

#[test]
fn decide_follows_mode() {
    let m = slot_allowing(mode::MONITOR, &[]);
    assert_eq!(
        decide(&m, Some(1), no_args),
        Decision::Violation {
            outcome: Outcome::Monitored,
            kill: false,
            event: false
        }
    );
    let a = slot_allowing(mode::AUDIT, &[]);
    assert_eq!(
        decide(&a, Some(1), no_args),
        Decision::Violation {
            outcome: Outcome::Audited,
            kill: false,
            event: true
        }
    );
    let e = slot_allowing(mode::ENFORCE, &[]);
    assert_eq!(
        decide(&e, Some(1), no_args),
        Decision::Violation {
            outcome: Outcome::KilledAfter,
            kill: true,
            event: true
        }
    );
    let n = PolicySlot {
        action: action::ALLOW,
        ..e
    };
    assert_eq!(
        decide(&n, Some(1), no_args),
        Decision::Violation {
            outcome: Outcome::NotPreventable,
            kill: false,
            event: true
        }
    );
    let d = PolicySlot {
        action: action::DENY_OR_KILL,
        ..e
    };
    assert_eq!(
        decide(&d, Some(1), no_args),
        Decision::Deny {
            fallback_kill: true,
            errno: EPERM
        }
    );
    let d = PolicySlot {
        action: action::DENY_OR_ALLOW,
        ..e
    };
    assert_eq!(
        decide(&d, Some(1), no_args),
        Decision::Deny {
            fallback_kill: false,
            errno: EPERM
        }
    );
    assert_eq!(
        decide(&d, None, no_args),
        Decision::Deny {
            fallback_kill: false,
            errno: EPERM
        }
    );
    // An unknown mode value is treated as the strictest one.
    let u = slot_allowing(77, &[]);
    assert!(matches!(
        decide(&u, Some(1), no_args),
        Decision::Violation { kill: true, .. }
    ));
}

#[test]
fn io_uring_hooks_name_the_syscall_they_stand_for() {
    let name = |h: &str| LSM_HOOK_NAMES.iter().position(|n| *n == h).unwrap() as u32;
    assert_eq!(io_uring_op_syscall(name("file_open")), Some(257));
    assert_eq!(io_uring_op_syscall(name("inode_mkdir")), Some(258));
    assert_eq!(io_uring_op_syscall(name("inode_rename")), Some(316));
    assert_eq!(io_uring_op_syscall(name("socket_connect")), Some(42));
    assert_eq!(io_uring_op_syscall(name("socket_accept")), Some(288));
    assert_eq!(io_uring_op_syscall(name("capable")), None);
    for (i, h) in LSM_HOOK_NAMES.iter().enumerate() {
        if let Some(nr) = io_uring_op_syscall(i as u32) {
            assert!(nr < 512, "{h}");
        }
    }
}

#[test]
fn memo_index_spreads_kernel_stacks() {
    // vmap'd 16 KiB stacks with a guard page land 32 KiB apart.
    let base = 0xffff_c900_0000_0000u64 + 0x3f58;
    let used: std::collections::BTreeSet<u32> =
        (0..8u64).map(|i| memo_index(base + i * 0x8000)).collect();
    assert!(used.len() >= 4, "{used:?}");
    for i in 0..64u64 {
        assert!(memo_index(base + i * 0x4000) < TASK_MEMO_SIZE);
    }
}

#[test]
fn memo_generation_is_off_until_the_agent_turns_it_on() {
    assert_eq!(memo_generation(0, 5), None);
    assert_eq!(memo_generation(1, 0), Some(1));
    // A bump on either side changes it.
    assert_ne!(memo_generation(2, 0), memo_generation(1, 0));
    assert_ne!(memo_generation(1, 1), memo_generation(1, 0));
}

#[test]
fn empty_slot_allows_nothing() {
    let mut s = PolicySlot {
        mode: mode::ENFORCE,
        ..PolicySlot::EMPTY
    };
    s.set_allowed(1);
    assert!(matches!(
        decide(&s, Some(1), no_args),
        Decision::Violation { .. }
    ));
}

fn cond(arg: u16, op: u32, value: u64, value_two: u64) -> ArgCond {
    ArgCond {
        op,
        arg,
        bits: 64,
        value,
        value_two,
    }
}

fn rule(syscall: u32, conds: &[ArgCond]) -> ArgRule {
    let mut r = ArgRule {
        syscalls: [syscall, NO_SYSCALL, NO_SYSCALL],
        count: conds.len() as u32,
        ..ArgRule::EMPTY
    };
    r.conds[..conds.len()].copy_from_slice(conds);
    r
}

/// An enforce/kill slot where syscall 56 (`clone`) is allowed under `rules` only.
fn conditional_slot(rules: &[ArgRule]) -> PolicySlot {
    let mut s = slot_allowing(mode::ENFORCE, &[0, 1]);
    s.set_conditional(56);
    s.rules[..rules.len()].copy_from_slice(rules);
    s
}

fn with_arg(i: usize, v: u64) -> SyscallArgs {
    let mut a = [0xdead_0000_0000_beef; 6];
    a[i] = v;
    a
}

#[test]
fn every_operator_compares_as_the_oci_spec_says() {
    use arg_op::*;
    type Case<'a> = (u32, u64, u64, &'a [u64], &'a [u64]);
    let cases: &[Case] = &[
        (EQ, 5, 0, &[5], &[4, 6, 0, u64::MAX]),
        (NE, 5, 0, &[4, 6, 0, u64::MAX], &[5]),
        (LT, 5, 0, &[0, 4], &[5, 6, u64::MAX]),
        (LE, 5, 0, &[0, 4, 5], &[6, u64::MAX]),
        (GT, 5, 0, &[6, u64::MAX], &[0, 4, 5]),
        (GE, 5, 0, &[5, 6, u64::MAX], &[0, 4]),
        (
            MASKED_EQ,
            0x7e02_0000,
            0,
            &[0, 0x11, 0x0001_0000],
            &[0x1000_0000, 0x7e02_0000],
        ),
        (MASKED_EQ, 0xff, 0x08, &[0x08, 0x1208], &[0x09, 0x00]),
    ];
    for &(op, value, value_two, holds, fails) in cases {
        for arg in 0..6u16 {
            let c = cond(arg, op, value, value_two);
            for &v in holds {
                assert!(
                    c.holds(&with_arg(arg as usize, v)),
                    "op {op} arg{arg} = {v:#x}"
                );
            }
            for &v in fails {
                assert!(
                    !c.holds(&with_arg(arg as usize, v)),
                    "op {op} arg{arg} = {v:#x}"
                );
            }
        }
    }
    // An operator this probe does not know, or an argument past the sixth, never holds.
    assert!(!cond(0, 0, 0, 0).holds(&[0; 6]));
    assert!(!cond(0, 99, 0, 0).holds(&[0; 6]));
    assert!(!cond(6, arg_op::EQ, 0, 0).holds(&[0; 6]));
}

#[test]
fn conditions_of_one_rule_are_anded_and_rules_are_ored() {
    use arg_op::*;
    // clone allowed when (arg0 == 1 && arg1 == 2) || arg2 == 3.
    let s = conditional_slot(&[
        rule(56, &[cond(0, EQ, 1, 0), cond(1, EQ, 2, 0)]),
        rule(56, &[cond(2, EQ, 3, 0)]),
    ]);
    let d = |args: SyscallArgs| decide(&s, Some(56), &Regs(args, None));
    assert_eq!(d([1, 2, 0, 0, 0, 0]), Decision::Allow);
    assert_eq!(d([0, 0, 3, 0, 0, 0]), Decision::Allow);
    assert_eq!(d([1, 2, 3, 0, 0, 0]), Decision::Allow);
    for args in [[1, 0, 0, 0, 0, 0], [0, 2, 0, 0, 0, 0], [0; 6]] {
        assert!(
            matches!(d(args), Decision::Violation { kill: true, .. }),
            "{args:?}"
        );
    }
    // Rules of another syscall do not count for this one.
    let other = conditional_slot(&[rule(57, &[cond(0, EQ, 0, 0)])]);
    assert!(matches!(
        decide(&other, Some(56), &Regs([0; 6], None)),
        Decision::Violation { .. }
    ));
    // A conditional syscall whose rules all fail is a violation like any other, and
    // an allowed one never reads its arguments.
    assert_eq!(decide(&s, Some(1), no_args), Decision::Allow);
    // The arguments are not read for a syscall with no rules.
    assert!(matches!(
        decide(&s, Some(2), no_args),
        Decision::Violation { .. }
    ));
}

#[test]
fn int_arguments_ignore_the_upper_half_of_the_register() {
    // `socket(AF_VSOCK)` denied with NE 40. The kernel reads `int family`, the low
    // 32 bits: with 64-bit compares, garbage in the upper half would pass the rule
    // and still create a vsock socket. 32-bit compares see what the kernel sees.
    let mut c = cond(0, arg_op::NE, 40, 0);
    let garbage = 0x0000_0001_0000_0028u64;
    assert!(c.holds(&with_arg(0, garbage)), "64-bit: what seccomp does");
    c.bits = 32;
    assert!(
        !c.holds(&with_arg(0, garbage)),
        "32-bit: what the kernel reads"
    );
    assert!(!c.holds(&with_arg(0, 40)));
    assert!(c.holds(&with_arg(0, 2)));
    // MASKED_EQ on clone flags (`lower_32_bits(clone_flags)` in the kernel).
    let mut m = cond(0, arg_op::MASKED_EQ, 0x7e02_0000, 0);
    m.bits = 32;
    assert!(m.holds(&with_arg(0, 0xffff_ffff_0000_0011)));
    assert!(!m.holds(&with_arg(0, 0xffff_ffff_1000_0011)));
}

#[test]
fn a_denied_syscall_carries_its_errno() {
    let mut s = conditional_slot(&[]);
    s.action = action::DENY_OR_KILL;
    s.errnos[0] = SyscallErrno {
        syscall: 435,
        errno: 38,
    };
    assert_eq!(
        decide(&s, Some(435), no_args),
        Decision::Deny {
            fallback_kill: true,
            errno: 38
        }
    );
    assert_eq!(
        decide(&s, Some(56), &Regs([0; 6], None)),
        Decision::Deny {
            fallback_kill: true,
            errno: EPERM
        }
    );
    assert_eq!(
        decide(&s, None, no_args),
        Decision::Deny {
            fallback_kill: true,
            errno: EPERM
        }
    );
}

#[test]
fn a_rule_of_the_last_entry_and_all_conditions_are_read() {
    let mut rules = [ArgRule::EMPTY; MAX_ARG_RULES];
    let conds: [ArgCond; MAX_ARG_CONDS] =
        core::array::from_fn(|i| cond(i as u16, arg_op::EQ, i as u64 + 1, 0));
    rules[MAX_ARG_RULES - 1] = rule(56, &conds);
    let s = conditional_slot(&rules);
    assert_eq!(
        decide(&s, Some(56), &Regs([1, 2, 3, 4, 5, 6], None)),
        Decision::Allow
    );
    assert!(matches!(
        decide(&s, Some(56), &Regs([1, 2, 3, 4, 5, 7], None)),
        Decision::Violation { .. }
    ));
}

#[test]
fn clone3_asking_for_a_namespace_is_a_violation_when_namespaces_are_denied() {
    let mut s = slot_allowing(mode::ENFORCE, &[CLONE3, 512 + CLONE3, 1024 + CLONE3, 56]);
    // Namespaces allowed: clone3's flags are not even read.
    assert_eq!(decide(&s, Some(CLONE3), no_args), Decision::Allow);
    s.flags = SLOT_DENY_NAMESPACES;
    for index in [CLONE3, 512 + CLONE3, 1024 + CLONE3] {
        for flags in [0x1000_0000u64, 0x80, 0x2_0000, 0x4000_0000 | 0x0001_0f00] {
            assert!(
                matches!(
                    decide(&s, Some(index), &Regs([0; 6], Some(flags))),
                    Decision::Violation { kill: true, .. }
                ),
                "{index} {flags:#x}"
            );
        }
        // Threads and forks pass; flags that cannot be read are judged later, on
        // the kernel's copy.
        for flags in [Some(0x3d0f00), Some(0), None] {
            assert_eq!(
                decide(&s, Some(index), &Regs([0; 6], flags)),
                Decision::Allow
            );
        }
    }
    // Other syscalls never read clone3's flags.
    assert_eq!(decide(&s, Some(56), no_args), Decision::Allow);
    assert!(clone_flags_denied(&s, 0x1000_0000));
    assert!(!clone_flags_denied(&s, 0x3d0f00));
    s.live = 0;
    assert!(!clone_flags_denied(&s, 0x1000_0000));
}

#[test]
fn an_event_window_admits_its_limit_per_second_and_then_opens_again() {
    let (mut start, mut sent) = (0u64, 0u32);
    let t0 = 5_000_000_000;
    let admitted = (0..10)
        .filter(|i| window_admits(&mut start, &mut sent, t0 + i * 1_000, 3))
        .count();
    assert_eq!(admitted, 3, "three of ten in one second");
    assert!(!window_admits(&mut start, &mut sent, t0 + 999_999_999, 3));
    assert!(
        window_admits(&mut start, &mut sent, t0 + 1_000_000_000, 3),
        "a second later the window opens again"
    );
    assert_eq!((start, sent), (t0 + 1_000_000_000, 1));
    assert!(!window_admits(&mut start, &mut sent, t0 + 2_000_000_000, 0));
}

#[test]
fn a_process_carries_its_policy_only_out_of_it() {
    assert!(
        carries_policy(3, NO_SLOT),
        "out of its workload, into nothing"
    );
    assert!(carries_policy(3, 5), "into another policy: both judge");
    assert!(!carries_policy(3, 3), "within its workload");
    assert!(
        !carries_policy(NO_SLOT, 5),
        "never policed: nothing to carry"
    );
}

/// runc's init for `runc exec`, as the kernel sees it when runc moves it into the
/// container's cgroup.
const RUNC_EXEC_INIT: setup::Arrival = setup::Arrival {
    by_itself: false,
    destination_bound: true,
    dumpable: false,
    policed: false,
    mover_policed: false,
    mover_in_workload: false,
};

#[test]
fn a_runtimes_non_dumpable_init_put_into_a_bound_cgroup_is_setup() {
    assert!(setup::is_setup(&RUNC_EXEC_INIT));
}

#[test]
fn no_arrival_a_workload_can_make_is_setup() {
    use setup::{Arrival, is_setup};
    let cases: [(&str, Arrival); 6] = [
        (
            "moved by a policed process (the workload moving a child)",
            Arrival {
                mover_policed: true,
                ..RUNC_EXEC_INIT
            },
        ),
        (
            "moved by a process in a workload's cgroup (known, not policed)",
            Arrival {
                mover_in_workload: true,
                ..RUNC_EXEC_INIT
            },
        ),
        (
            "a process that moved itself",
            Arrival {
                by_itself: true,
                ..RUNC_EXEC_INIT
            },
        ),
        (
            "a process that was policed before (it carries its policy)",
            Arrival {
                policed: true,
                ..RUNC_EXEC_INIT
            },
        ),
        (
            "a dumpable process (a running program an admin moves in)",
            Arrival {
                dumpable: true,
                ..RUNC_EXEC_INIT
            },
        ),
        (
            "a cgroup no policy is bound to (nothing to hold back)",
            Arrival {
                destination_bound: false,
                ..RUNC_EXEC_INIT
            },
        ),
    ];
    for (what, arrival) in cases {
        assert!(!is_setup(&arrival), "{what} must not be setup");
    }
}

/// The probe's shortcut (`allowed_outright`) may skip the decision only where the
/// decision would allow without reading a thing: every index, every kind of slot.
#[test]
fn what_is_allowed_outright_the_decision_allows_without_reading_arguments() {
    let mut slots = Vec::new();
    let mut plain = slot_allowing(mode::ENFORCE, &[39, 56, CLONE3, 512 + 20, 1024 + CLONE3]);
    slots.push(plain);
    plain.flags = SLOT_DENY_NAMESPACES;
    slots.push(plain);
    plain.live = 0;
    slots.push(plain);
    let mut conditional = conditional_slot(&[rule(41, &[cond(0, arg_op::EQ, 1, 0)])]);
    conditional.set_allowed(39);
    slots.push(conditional);
    let mut seen = 0;
    for s in &slots {
        // Every index `classify` can give.
        for index in 0..UNCLASSIFIED_INDEX {
            if allowed_outright(s, index) {
                seen += 1;
                assert_eq!(decide(s, Some(index), no_args), Decision::Allow, "{index}");
            } else if s.live != 0 && s.allows(index) {
                // Left to the decision: clone3 while namespaces are denied.
                assert_eq!(index & 511, CLONE3, "{index}");
                assert_ne!(s.flags & SLOT_DENY_NAMESPACES, 0);
            }
        }
    }
    // Not vacuous: the allowed indexes of the live slots, clone3 aside where denied.
    assert_eq!(seen, 5 + 3 + 3, "allowed outright");
}
