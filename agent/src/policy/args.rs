//! Argument rules: `spec.rules`, `spec.errno` and `spec.namespaces`, compiled into what
//! the probe holds per slot (`probe_common::ArgRule`, `SyscallErrno`). Pure.
//!
//! Semantics are those of the OCI runtime spec's seccomp rules: the conditions of one
//! rule are ANDed, several rules for one syscall are ORed. Comparisons are unsigned
//! and 64 bits wide, as seccomp's, except for arguments the kernel reads as a 32-bit
//! `int` ([`int_args`]): there only the low 32 bits are compared, because those are
//! all the kernel sees. Seccomp compares all 64, so `socket(AF_VSOCK | 1 << 32)` passes
//! a seccomp rule `arg0 != 40` and still creates a vsock socket; it does not pass
//! sysfence's.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use marked_yaml::Spanned;
use probe_common::{ArgCond, arg_op};

use super::compile::{Action, Mode, SetCatalog, check_name};
use super::diag::{Diagnostic, start};
use super::model::{ArgRuleDoc, PolicySpec};
use crate::syscall_table;

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CondOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    MaskedEq,
}

impl CondOp {
    pub const NAMES: &'static str = "EQ, NE, LT, LE, GT, GE, MASKED_EQ";

    /// `EQ` or `SCMP_CMP_EQ`, any case.
    pub fn parse(s: &str) -> Option<CondOp> {
        let up = s.trim().to_ascii_uppercase();
        let bare = up.strip_prefix("SCMP_CMP_").unwrap_or(&up);
        Some(match bare {
            "EQ" => CondOp::Eq,
            "NE" => CondOp::Ne,
            "LT" => CondOp::Lt,
            "LE" => CondOp::Le,
            "GT" => CondOp::Gt,
            "GE" => CondOp::Ge,
            "MASKED_EQ" => CondOp::MaskedEq,
            _ => return None,
        })
    }

    /// The name in policies (`EQ`).
    pub fn as_str(self) -> &'static str {
        match self {
            CondOp::Eq => "EQ",
            CondOp::Ne => "NE",
            CondOp::Lt => "LT",
            CondOp::Le => "LE",
            CondOp::Gt => "GT",
            CondOp::Ge => "GE",
            CondOp::MaskedEq => "MASKED_EQ",
        }
    }

    /// The name in seccomp profiles (`SCMP_CMP_EQ`).
    pub fn seccomp_name(self) -> String {
        format!("SCMP_CMP_{}", self.as_str())
    }

    fn probe(self) -> u32 {
        match self {
            CondOp::Eq => arg_op::EQ,
            CondOp::Ne => arg_op::NE,
            CondOp::Lt => arg_op::LT,
            CondOp::Le => arg_op::LE,
            CondOp::Gt => arg_op::GT,
            CondOp::Ge => arg_op::GE,
            CondOp::MaskedEq => arg_op::MASKED_EQ,
        }
    }
}

/// One condition on one register argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cond {
    pub index: u8,
    pub op: CondOp,
    pub value: u64,
    /// For MASKED_EQ: `arg & value == value_two`. 0 otherwise.
    pub value_two: u64,
}

impl Cond {
    /// The probe's form, for syscall `name` (which says how wide the argument is).
    pub fn to_probe(self, name: &str) -> ArgCond {
        ArgCond {
            op: self.op.probe(),
            arg: self.index as u16,
            bits: if is_int_arg(name, self.index) { 32 } else { 64 },
            value: self.value,
            value_two: self.value_two,
        }
    }
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (i, v, v2) = (self.index, self.value, self.value_two);
        match self.op {
            CondOp::Eq => write!(f, "arg{i} == {v:#x}"),
            CondOp::Ne => write!(f, "arg{i} != {v:#x}"),
            CondOp::Lt => write!(f, "arg{i} < {v:#x}"),
            CondOp::Le => write!(f, "arg{i} <= {v:#x}"),
            CondOp::Gt => write!(f, "arg{i} > {v:#x}"),
            CondOp::Ge => write!(f, "arg{i} >= {v:#x}"),
            CondOp::MaskedEq => write!(f, "arg{i} & {v:#x} == {v2:#x}"),
        }
    }
}

/// One rule of one syscall: allowed when every condition holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub conds: Vec<Cond>,
    pub comment: Option<String>,
}

/// The first argument index two of `conds` test, if any: ANDed here, but a seccomp
/// profile entry with such conditions is read as their OR (by runc and gVisor).
pub fn repeated_index(conds: &[Cond]) -> Option<u8> {
    conds
        .iter()
        .enumerate()
        .find(|(i, c)| conds[..*i].iter().any(|d| d.index == c.index))
        .map(|(_, c)| c.index)
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let conds: Vec<String> = self.conds.iter().map(Cond::to_string).collect();
        f.write_str(&conds.join(" && "))
    }
}

/// Every `CLONE_NEW*` flag `clone` takes in its first argument: NEWNS, NEWCGROUP,
/// NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET (`CLONE_NEWTIME` exists for `clone3` and
/// `unshare` only; on `clone` its bit is part of the exit signal). Docker's default
/// profile masks the same bits.
pub const CLONE_NEW_MASK: u64 = 0x7e02_0000;

/// The condition `namespaces: deny` puts on `clone`.
pub const NO_NEW_NAMESPACE: Cond = Cond {
    index: 0,
    op: CondOp::MaskedEq,
    value: CLONE_NEW_MASK,
    value_two: 0,
};

/// Whether every rule keeps `clone`'s namespace flags clear: some condition on
/// argument 0 is a MASKED_EQ whose mask covers them all and whose expected value has
/// none of them.
pub fn rules_forbid_new_namespaces(rules: &[Rule]) -> bool {
    !rules.is_empty()
        && rules.iter().all(|r| {
            r.conds.iter().any(|c| {
                c.index == 0
                    && c.op == CondOp::MaskedEq
                    && c.value & CLONE_NEW_MASK == CLONE_NEW_MASK
                    && c.value_two & CLONE_NEW_MASK == 0
            })
        })
}

/// Syscall arguments the kernel reads as 32 bits wide (`int`, `unsigned int`, `pid_t`,
/// `uid_t`, and `clone`'s flags, of which it keeps `lower_32_bits`), by syscall name:
/// argument indexes. From the kernel's `SYSCALL_DEFINE`s; an argument not listed is
/// compared on all 64 bits.
pub fn int_args(name: &str) -> &'static [u8] {
    match name {
        "socket" | "socketpair" => &[0, 1, 2],
        "personality" | "userfaultfd" | "io_uring_setup" | "epoll_create1" | "inotify_init1"
        | "exit" | "exit_group" | "close" | "setuid" | "setgid" | "setfsuid" | "setfsgid"
        | "sched_setaffinity" | "process_vm_readv" | "process_vm_writev" | "arch_prctl"
        | "keyctl" | "bpf" | "prctl" | "rt_sigaction" | "rt_sigprocmask" | "fchmod" => &[0],
        "clone" => &[0],
        "setns" | "ioctl" | "fcntl" | "kill" | "tkill" | "listen" | "shutdown" | "setreuid"
        | "setregid" | "seccomp" | "eventfd2" | "timerfd_create" | "flock" | "pidfd_open"
        | "fanotify_init" | "sched_setscheduler" => &[0, 1],
        "tgkill" | "setresuid" | "setresgid" | "dup3" | "pidfd_getfd" | "membarrier"
        | "getpriority" | "setpriority" | "ioprio_set" | "fchown" | "kcmp" | "reboot" => &[0, 1, 2],
        "bind" | "connect" | "sendmsg" | "recvmsg" | "syslog" | "unlinkat" => &[0, 2],
        "accept4" | "sendto" | "recvfrom" | "signalfd4" => &[0, 3],
        "setsockopt" => &[0, 1, 2, 4],
        "getsockopt" => &[0, 1, 2],
        "perf_event_open" => &[1, 2, 3],
        "pidfd_send_signal" => &[0, 1, 3],
        "wait4" => &[0, 2],
        "waitid" => &[0, 1, 3],
        "madvise" | "mlock2" | "getrandom" => &[2],
        "umount2" | "memfd_create" | "pipe2" => &[1],
        "chown" | "lchown" => &[1, 2],
        "fchownat" => &[0, 2, 3, 4],
        "renameat2" => &[0, 2, 4],
        "read" | "write" | "lseek" => &[0],
        _ => &[],
    }
}

fn is_int_arg(name: &str, index: u8) -> bool {
    int_args(name).contains(&index)
}

/// `123`, `0x7E020000`, `0o755`, `0b101`; underscores allowed.
pub fn parse_u64(s: &str) -> Option<u64> {
    let t: String = s.trim().chars().filter(|c| *c != '_').collect();
    let lower = t.to_ascii_lowercase();
    if let Some(h) = lower.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()
    } else if let Some(o) = lower.strip_prefix("0o") {
        u64::from_str_radix(o, 8).ok()
    } else if let Some(b) = lower.strip_prefix("0b") {
        u64::from_str_radix(b, 2).ok()
    } else {
        lower.parse().ok()
    }
}

/// errno names `spec.errno` takes, with their x86 numbers.
pub const ERRNO_NAMES: &[(&str, u32)] = &[
    ("EPERM", 1),
    ("ENOENT", 2),
    ("EINTR", 4),
    ("EIO", 5),
    ("EBADF", 9),
    ("EAGAIN", 11),
    ("ENOMEM", 12),
    ("EACCES", 13),
    ("EFAULT", 14),
    ("EBUSY", 16),
    ("EEXIST", 17),
    ("ENODEV", 19),
    ("EINVAL", 22),
    ("ENOSPC", 28),
    ("EROFS", 30),
    ("ENOSYS", 38),
    ("EOPNOTSUPP", 95),
    ("EAFNOSUPPORT", 97),
];

/// `ENOSYS`: "no such syscall", which makes callers fall back to an older one.
pub const ENOSYS: u32 = 38;

/// The largest errno a syscall can fail with (`MAX_ERRNO`).
pub const MAX_ERRNO: u32 = 4095;

/// `ENOSYS` or `38`.
pub fn parse_errno(s: &str) -> Option<u32> {
    let t = s.trim();
    if let Some(&(_, n)) = ERRNO_NAMES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(t))
    {
        return Some(n);
    }
    t.parse().ok().filter(|n| (1..=MAX_ERRNO).contains(n))
}

/// `ENOSYS (38)`, or the number.
pub fn errno_label(n: u32) -> String {
    match ERRNO_NAMES.iter().find(|(_, v)| *v == n) {
        Some((name, _)) => format!("{name} ({n})"),
        None => n.to_string(),
    }
}

/// The rules of one `rules:` entry, per name, checked. Names are checked by the caller.
pub fn compile_rule(
    path: &Path,
    doc: &Spanned<ArgRuleDoc>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Rule> {
    let mut conds = Vec::new();
    let mut ok = true;
    if doc.args.is_empty() {
        diags.push(
            Diagnostic::error(
                path,
                start(doc.span()),
                "an argument rule with no condition",
            )
            .with_help("put the syscall in `allow` to allow it whatever its arguments"),
        );
        return None;
    }
    if doc.args.len() > probe_common::MAX_ARG_CONDS {
        diags.push(Diagnostic::error(
            path,
            start(doc.span()),
            format!(
                "{} conditions in one rule; the probe holds at most {}",
                doc.args.len(),
                probe_common::MAX_ARG_CONDS
            ),
        ));
        return None;
    }
    for c in &doc.args {
        let index = parse_u64(&c.index).filter(|i| *i <= 5);
        let op = CondOp::parse(&c.op);
        let value = c.value.as_ref().map(|v| (parse_u64(v), v));
        let value_two = c.value_two.as_ref().map(|v| (parse_u64(v), v));
        if index.is_none() {
            diags.push(
                Diagnostic::error(
                    path,
                    start(c.index.span()),
                    format!("argument index `{}`", *c.index),
                )
                .with_help("a syscall has six register arguments: index is 0 to 5"),
            );
            ok = false;
        }
        if op.is_none() {
            diags.push(
                Diagnostic::error(
                    path,
                    start(c.op.span()),
                    format!("unknown operator `{}`", *c.op),
                )
                .with_help(format!("op is one of: {}", CondOp::NAMES)),
            );
            ok = false;
        }
        for (parsed, v) in value.iter().chain(value_two.iter()) {
            if parsed.is_none() {
                diags.push(
                    Diagnostic::error(
                        path,
                        start(v.span()),
                        format!("`{}` is not a number", v.as_str()),
                    )
                    .with_help("write a 64-bit unsigned value, decimal or 0x hexadecimal"),
                );
                ok = false;
            }
        }
        if let Some((_, v)) = &value_two
            && op.is_some_and(|o| o != CondOp::MaskedEq)
        {
            diags.push(Diagnostic::warning(
                path,
                start(v.span()),
                "`valueTwo` is read by MASKED_EQ only: ignored",
            ));
        }
        if let (Some(index), Some(op)) = (index, op) {
            conds.push(Cond {
                index: index as u8,
                op,
                value: value.and_then(|v| v.0).unwrap_or(0),
                value_two: if op == CondOp::MaskedEq {
                    value_two.and_then(|v| v.0).unwrap_or(0)
                } else {
                    0
                },
            });
        }
    }
    if let Some(index) = repeated_index(&conds) {
        diags.push(
            Diagnostic::warning(
                path,
                start(doc.span()),
                format!(
                    "two conditions on argument {}: sysfence ANDs them, but an OCI seccomp \
                     profile ORs such conditions, so `export-seccomp` and the profile gVisor \
                     gets through `sysfence wrap` leave this rule out (refusing those calls)",
                    index
                ),
            )
            .with_help("to keep it in profiles, test each argument once per rule"),
        );
    }
    ok.then(|| Rule {
        conds,
        comment: doc.comment.clone(),
    })
}

/// Warnings for conditions on 32-bit arguments whose values do not fit in 32 bits: only
/// the low 32 bits are compared.
pub fn check_widths(path: &Path, name: &Spanned<String>, rule: &Rule, diags: &mut Vec<Diagnostic>) {
    for c in &rule.conds {
        if is_int_arg(name, c.index) && (c.value > u32::MAX as u64 || c.value_two > u32::MAX as u64)
        {
            diags.push(Diagnostic::warning(
                path,
                start(name.span()),
                format!(
                    "`{}`: argument {} is a 32-bit int to the kernel, so only the low 32 bits \
                     of `{c}` are compared",
                    **name, c.index
                ),
            ));
        }
    }
}

/// Per syscall name, its rules: the union of the rules of the policy and its sets,
/// without duplicates, in a stable order.
pub type RuleBook = BTreeMap<String, Vec<Rule>>;

/// Add `rule` for `name` unless an equal rule is there.
pub fn add_rule(book: &mut RuleBook, name: &str, rule: Rule) {
    let rules = book.entry(name.to_string()).or_default();
    if !rules.iter().any(|r| r.conds == rule.conds) {
        rules.push(rule);
    }
}

/// Where rules come from: the file, its `rules`, its `errno`, and whether it is the
/// policy itself (not an included set).
type RuleSource<'a> = (
    &'a Path,
    &'a [Spanned<ArgRuleDoc>],
    &'a BTreeMap<String, Spanned<String>>,
    bool,
);

/// `spec.rules`, `spec.errno` and `spec.namespaces`, with the rules and errnos of the
/// included sets (`included`): the rule book, the errnos, and whether namespaces are
/// denied. Takes out of `names` what `namespaces: deny` denies, and `clone`, which it
/// allows for some flags only.
#[allow(clippy::too_many_arguments)]
pub(super) fn compile_arguments(
    path: &Path,
    spec: &PolicySpec,
    catalog: &SetCatalog,
    included: &BTreeSet<String>,
    names: &mut BTreeSet<String>,
    listed: &BTreeMap<&str, &Spanned<String>>,
    mode: Mode,
    action: Action,
    diags: &mut Vec<Diagnostic>,
) -> (RuleBook, BTreeMap<String, u32>, bool) {
    let denied: BTreeSet<&str> = spec.deny.iter().map(|d| d.as_str()).collect();
    let mut book = RuleBook::new();
    let mut errnos: BTreeMap<String, u32> = BTreeMap::new();
    // The sets' first, then the policy's own (whose errno wins).
    let mut sources: Vec<RuleSource> = Vec::new();
    for set in included {
        if let Some((set_path, doc)) = catalog.get(set) {
            sources.push((set_path, &doc.spec.rules, &doc.spec.errno, false));
        }
    }
    sources.push((path, &spec.rules, &spec.errno, true));
    for (file, rule_docs, errno_docs, own) in sources {
        for doc in rule_docs {
            let Some(rule) = compile_rule(file, doc, diags) else {
                continue;
            };
            for n in &doc.names {
                if !check_name(file, n, diags) {
                    continue;
                }
                check_widths(file, n, &rule, diags);
                if denied.contains(n.as_str()) {
                    if own {
                        diags.push(Diagnostic::warning(
                            file,
                            start(n.span()),
                            format!("`{}` is denied: its argument rule has no effect", **n),
                        ));
                    }
                    continue;
                }
                if names.contains(n.as_str()) {
                    if own {
                        diags.push(
                            Diagnostic::warning(
                                file,
                                start(n.span()),
                                format!(
                                    "`{}` is allowed whatever its arguments (allow or include): \
                                     its argument rule has no effect",
                                    **n
                                ),
                            )
                            .with_help("remove it from `allow` (or from the included set) to judge its arguments"),
                        );
                    }
                    continue;
                }
                add_rule(&mut book, n, rule.clone());
            }
        }
        for (name, value) in errno_docs {
            let at = start(value.span());
            if !syscall_table::all_names().contains(name.as_str()) {
                diags.push(
                    Diagnostic::error(file, at, format!("`errno` names unknown syscall `{name}`"))
                        .with_help("keys of `errno` are syscall names, e.g. `clone3`"),
                );
                continue;
            }
            let Some(n) = parse_errno(value) else {
                diags.push(
                    Diagnostic::error(file, at, format!("unknown errno `{}`", **value)).with_help(
                        format!(
                            "an errno name ({}) or a number from 1 to {}",
                            ERRNO_NAMES
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", "),
                            MAX_ERRNO
                        ),
                    ),
                );
                continue;
            };
            if own && names.contains(name.as_str()) {
                diags.push(Diagnostic::warning(
                    file,
                    at,
                    format!("`{name}` is allowed: its errno has no effect"),
                ));
            }
            if n == probe_common::EPERM {
                errnos.remove(name);
            } else {
                errnos.insert(name.clone(), n);
            }
        }
        if own
            && mode == Mode::Enforce
            && action == Action::Kill
            && let Some((name, first)) = errno_docs.iter().next()
        {
            let message = if errno_docs.len() == 1
                && name == "clone3"
                && parse_errno(first) == Some(ENOSYS)
            {
                "`errno` is what `action: deny` fails a syscall with; under `action: kill` no \
                 errno is returned, so clone3, whose ENOSYS sends glibc to clone, is allowed \
                 where clone is (without namespace flags, if clone's rules keep them clear)"
            } else {
                "`errno` is what `action: deny` fails a syscall with; under `action: kill` a \
                 denied syscall runs and its task is killed, and no errno is returned"
            };
            diags.push(
                Diagnostic::warning(path, start(first.span()), message)
                    .with_help("set `action: deny` (needs BPF LSM; `sysfence doctor` says whether this kernel has it)"),
            );
        }
    }
    // What is allowed unconditionally needs no errno.
    errnos.retain(|n, _| !names.contains(n.as_str()));

    let from_sets = included.iter().find(|set| {
        catalog
            .get(set)
            .and_then(|(_, doc)| doc.spec.namespaces.as_ref())
            .is_some_and(|v| v.as_str() == "deny")
    });
    let deny_namespaces = match spec.namespaces.as_ref() {
        None => from_sets.is_some(),
        Some(v) => match v.as_str() {
            "deny" => true,
            "allow" => false,
            other => {
                diags.push(
                    Diagnostic::error(
                        path,
                        start(v.span()),
                        format!("unknown namespaces choice `{other}`"),
                    )
                    .with_help(
                        "namespaces is `deny` (no new namespace, by any syscall) or `allow`",
                    ),
                );
                false
            }
        },
    };
    if deny_namespaces {
        for syscall in ["unshare", "setns"] {
            if let Some(n) = listed.get(syscall) {
                diags.push(Diagnostic::warning(
                    path,
                    start(n.span()),
                    format!("`namespaces: deny` denies `{syscall}`: allowing it has no effect"),
                ));
            }
            names.remove(syscall);
            book.remove(syscall);
        }
        if names.remove("clone") {
            book.insert(
                "clone".to_string(),
                vec![Rule {
                    conds: vec![NO_NEW_NAMESPACE],
                    comment: Some("namespaces: deny".to_string()),
                }],
            );
        } else if let Some(rules) = book.get_mut("clone") {
            for rule in rules.iter_mut() {
                if rule.conds.contains(&NO_NEW_NAMESPACE) {
                    continue;
                }
                if rule.conds.len() >= probe_common::MAX_ARG_CONDS {
                    diags.push(Diagnostic::error(
                        path,
                        spec.namespaces.as_ref().and_then(|v| start(v.span())),
                        "a `clone` rule has six conditions: `namespaces: deny` cannot add its own",
                    ));
                    continue;
                }
                rule.conds.push(NO_NEW_NAMESPACE);
            }
        }
    }
    (book, errnos, deny_namespaces)
}
