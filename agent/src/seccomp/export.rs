//! Export: a sysfence policy to a seccomp profile kubelet can use; see the module
//! documentation of [`super`].

use std::collections::{BTreeMap, BTreeSet};

use probe_common::Abi;
use serde::Serialize;

use super::{ARCH_X32, ARCH_X86, ARCH_X86_64, ENOSYS, EPERM, quoted_list};
use crate::policy::{CompiledPolicy, Mode};
use crate::syscall_table;

/// The default action of an exported profile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExportDefault {
    /// `SCMP_ACT_ERRNO` with `defaultErrnoRet: 1` (EPERM): enforce the allowlist.
    #[default]
    Errno,
    /// `SCMP_ACT_LOG`: allow everything, and have the kernel log what the allowlist does
    /// not cover (a dry run, like `audit`).
    Log,
    /// `SCMP_ACT_KILL`: the syscall does not run and the calling thread is killed. The
    /// strongest action gVisor's `--oci-seccomp` knows (it has no `KILL_PROCESS`).
    KillThread,
}

/// How to export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportOptions {
    pub default_action: ExportDefault,
    /// Only `SCMP_ARCH_X86_64`: for gVisor, which runs no other ABI (its seccomp ignores
    /// `architectures` and judges native syscall numbers only).
    pub native_only: bool,
}

impl ExportOptions {
    /// `Log` for `audit` and `monitor` (the syscalls run), `Errno` for `enforce`.
    pub fn for_mode(mode: Mode) -> Self {
        ExportOptions {
            default_action: match mode {
                Mode::Audit | Mode::Monitor => ExportDefault::Log,
                Mode::Enforce => ExportDefault::Errno,
            },
            native_only: false,
        }
    }
}

/// What [`export_with`] produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Exported {
    pub profile: serde_json::Value,
    /// The profile as pretty-printed JSON, fields in the usual order, ending in a newline.
    pub json: String,
    /// Where the profile is wider than the policy.
    pub warnings: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProfileOut {
    default_action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    default_errno_ret: Option<u32>,
    architectures: Vec<&'static str>,
    syscalls: Vec<SyscallOut>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SyscallOut {
    names: Vec<String>,
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errno_ret: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    args: Vec<ArgOut>,
    comment: String,
}

/// One condition, as the OCI runtime spec writes it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArgOut {
    index: u8,
    value: u64,
    value_two: u64,
    op: String,
}

/// The seccomp profile of a policy: deny with EPERM what it does not allow. See the
/// module documentation.
pub fn export(policy: &CompiledPolicy) -> serde_json::Value {
    export_with(policy, &ExportOptions::default()).profile
}

/// [`export`], as pretty-printed JSON ending in a newline.
pub fn export_string(policy: &CompiledPolicy) -> String {
    export_with(policy, &ExportOptions::default()).json
}

/// The seccomp profile of a policy, with a choice of default action, and the warnings.
pub fn export_with(policy: &CompiledPolicy, options: &ExportOptions) -> Exported {
    // Per ABI, the names that exist in it.
    let per_abi: BTreeMap<Abi, BTreeSet<&str>> = Abi::ALL
        .into_iter()
        .map(|abi| {
            let names = policy
                .abi_names
                .get(&abi)
                .into_iter()
                .flatten()
                .map(String::as_str)
                .filter(|n| syscall_table::number(abi, n).is_some())
                .collect();
            (abi, names)
        })
        .collect();
    let exported: Vec<Abi> = Abi::ALL
        .into_iter()
        .filter(|abi| *abi == Abi::X86_64 || (!options.native_only && !per_abi[abi].is_empty()))
        .collect();
    let union: BTreeSet<&str> = exported
        .iter()
        .flat_map(|abi| per_abi[abi].iter().copied())
        .collect();

    let mut warnings = Vec::new();
    for &abi in &exported {
        let wider: Vec<&str> = union
            .iter()
            .copied()
            .filter(|n| syscall_table::number(abi, n).is_some() && !per_abi[&abi].contains(n))
            .collect();
        if !wider.is_empty() {
            warnings.push(format!(
                "a seccomp profile allows the same names for every architecture it lists: \
                 the profile also allows for {} {} (allowed by the policy for another ABI only)",
                abi.name(),
                quoted_list(wider)
            ));
        }
    }

    let (default_action, default_errno_ret) = match options.default_action {
        ExportDefault::Errno => ("SCMP_ACT_ERRNO", Some(EPERM)),
        ExportDefault::Log => ("SCMP_ACT_LOG", None),
        ExportDefault::KillThread => ("SCMP_ACT_KILL", None),
    };
    let out = ProfileOut {
        default_action,
        default_errno_ret,
        architectures: exported
            .iter()
            .map(|abi| match abi {
                Abi::X86_64 => ARCH_X86_64,
                Abi::Ia32 => ARCH_X86,
                Abi::X32 => ARCH_X32,
            })
            .collect(),
        syscalls: {
            let mut out = Vec::new();
            if !union.is_empty() {
                out.push(SyscallOut {
                    names: union.iter().map(|n| n.to_string()).collect(),
                    action: "SCMP_ACT_ALLOW",
                    errno_ret: None,
                    args: Vec::new(),
                    comment: format!(
                        "sysfence policy `{}` (mode {}): {} syscall names",
                        policy.name,
                        policy.mode.as_str(),
                        union.len()
                    ),
                });
            }
            // Argument rules: one entry per rule, as Docker writes them. A rule with two
            // conditions on one argument means AND here, but runc and gVisor OR every
            // condition of such an entry: written, it would allow more than the policy.
            for (name, rules) in &policy.rules {
                for rule in rules {
                    if let Some(index) = crate::policy::args::repeated_index(&rule.conds) {
                        warnings.push(format!(
                            "`{name}`: a rule with two conditions on argument {index} is left \
                             out: in a seccomp profile runc and gVisor OR the conditions of \
                             such an entry, which would allow more than the policy; the \
                             profile refuses those calls instead (write the rule with one \
                             condition per argument to keep it)"
                        ));
                        continue;
                    }
                    out.push(SyscallOut {
                        names: vec![name.clone()],
                        action: "SCMP_ACT_ALLOW",
                        errno_ret: None,
                        args: rule
                            .conds
                            .iter()
                            .map(|c| ArgOut {
                                index: c.index,
                                value: c.value,
                                value_two: c.value_two,
                                op: c.op.seccomp_name(),
                            })
                            .collect(),
                        comment: rule.comment.clone().unwrap_or_default(),
                    });
                }
            }
            // errnos, grouped by value; and clone3 under `namespaces: deny`, whose flags
            // a seccomp filter cannot read: ENOSYS, so that glibc falls back to clone.
            let mut errnos: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
            for (name, &errno) in &policy.errnos {
                errnos.entry(errno).or_default().insert(name.clone());
            }
            if policy.deny_namespaces && union.contains("clone3") {
                out[0].names.retain(|n| n != "clone3");
                errnos
                    .entry(ENOSYS)
                    .or_default()
                    .insert("clone3".to_string());
                warnings.push(
                    "`clone3` is allowed by the policy when its flags ask for no namespace; a \
                     seccomp filter cannot read its flags (they are in memory), so the profile \
                     fails it with ENOSYS, as Docker's does: glibc falls back to clone, whose \
                     flags the profile judges"
                        .to_string(),
                );
            }
            for (errno, names) in errnos {
                out.push(SyscallOut {
                    names: names.into_iter().collect(),
                    action: "SCMP_ACT_ERRNO",
                    errno_ret: Some(errno),
                    args: Vec::new(),
                    comment: String::new(),
                });
            }
            out.retain(|r| !r.names.is_empty());
            out
        },
    };
    // Serializing plain strings and numbers cannot fail.
    let profile = serde_json::to_value(&out).expect("profile serializes");
    let mut json = serde_json::to_string_pretty(&out).expect("profile serializes");
    json.push('\n');
    Exported {
        profile,
        json,
        warnings,
    }
}
