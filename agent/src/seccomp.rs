//! Conversion between sysfence policies and OCI/Docker seccomp JSON profiles. Pure: no
//! I/O; the CLI reads and writes the files.
//!
//! # Import: profile → sysfence policy
//!
//! [`import`] reads the Docker form of a profile (`defaultAction`, `defaultErrnoRet`,
//! `architectures` or `archMap`, and `syscalls[]` with `names` or the legacy `name`,
//! `action`, `errnoRet`, `args`, `includes`/`excludes` and `comment`), resolves it the
//! way Docker does on an amd64 host, and turns what it allows into a sysfence allowlist.
//!
//! sysfence allows a syscall name or not, per ABI (x86_64, i386, x32), and never reads
//! arguments, so the import is an approximation where the profile is finer than that.
//! Every approximation is listed in [`Imported::warnings`]. The rules:
//!
//! - **Context.** The profile is resolved for an amd64 host ([`ImportOptions::capabilities`],
//!   Docker's default capabilities unless told otherwise, and
//!   [`ImportOptions::kernel`], 6.1 by default). A rule applies when its `includes`
//!   match (every listed field: `arches` names the host architecture, every cap in `caps`
//!   is held, the kernel is at least `minKernel`) and its `excludes` do not (any listed
//!   field matching excludes it), as in moby's `setupSeccomp`.
//! - **`arches` in includes/excludes** are matched against the host architecture only,
//!   `amd64`, as Docker does (it compares them with `runtime.GOARCH`): a rule that names
//!   `x86` or `x32` but not `amd64` does not apply on an amd64 host, even though the
//!   filter covers those ABIs. Such rules get a warning.
//! - **ABIs.** x86_64 is always filtered (the native architecture). i386 and x32 are
//!   allowed when `architectures` (or the `archMap` entry of `SCMP_ARCH_X86_64`) lists
//!   `SCMP_ARCH_X86` / `SCMP_ARCH_X32`; otherwise the kernel filter refuses them, and
//!   the policy says `abi: {ia32: deny}` / `{x32: deny}`. A profile whose architectures
//!   are all outside the amd64 family is an error.
//! - **Actions.** `SCMP_ACT_ALLOW` allows. `SCMP_ACT_LOG` (allowed, and logged) allows.
//!   `SCMP_ACT_ERRNO`, `SCMP_ACT_KILL*` deny. `SCMP_ACT_TRAP` (SIGSYS, the syscall does
//!   not run), `SCMP_ACT_TRACE` (a ptrace tracer decides) and `SCMP_ACT_NOTIFY` (a
//!   user-space supervisor decides) deny, with a warning: sysfence cannot hand a syscall
//!   to anyone.
//! - **Deny by default** (`defaultAction` other than ALLOW/LOG): the allowlist is the
//!   names of the applicable allowing rules.
//! - **Allow by default** (`SCMP_ACT_ALLOW`, `SCMP_ACT_LOG`): the profile is a denylist.
//!   The allowlist is every name sysfence's syscall tables know for the resolved ABIs,
//!   minus the denied names; a warning says so (syscalls newer than the tables are not
//!   allowed).
//! - **Argument conditions** (`args`). A name is allowed when the profile allows it for
//!   *some* argument values: in a deny-by-default profile, when any applicable allowing
//!   rule names it, with or without `args`; in an allow-by-default profile, unless an
//!   applicable denying rule without `args` names it. Each name allowed for some
//!   argument values only (every applicable allowing rule has `args`, or a denying rule
//!   with `args` names it too) gets a warning "allowed for some argument values only;
//!   sysfence allows all of them". This is what makes Docker's default profile, which
//!   allows `clone` and `personality` only for some arguments, come out as Docker
//!   allows it. [`ImportOptions::strict_args`] instead leaves such names out: a name
//!   is then allowed only when the profile allows it whatever the arguments.
//! - **Conflicts.** A name both allowed and denied by applicable rules without `args`
//!   is left out, with a warning (runc refuses such a profile). A name allowed only with
//!   `args` and denied by an applicable rule gets a warning, and is allowed as above.
//! - **Unknown names** (not in [`crate::syscall_table::all_names`], e.g. the arm-only
//!   `recv`/`send`, or a syscall newer than the tables) that the profile allows are
//!   skipped with one warning naming them all ([`Imported::skipped_unknown`]). Known
//!   names that exist only in ABIs the profile does not cover are skipped too.
//! - **errno values** cannot be reproduced: sysfence audits, or kills. A name the
//!   profile fails with `ENOSYS` (as Docker does for `clone3`, so that glibc falls back
//!   to `clone`) gets a warning: under `enforce`, calling it kills the task instead.
//!
//! The generated policy has `mode: audit` (a dry run), its names in `spec.allow`,
//! sorted, and a comment header repeating the warnings. [`import`] checks it with
//! sysfence's own loader before returning it, and adds the loader's warnings (e.g. about
//! `ptrace` or io_uring) to its own.
//!
//! # Export: sysfence policy → profile
//!
//! [`export`] writes a profile that kubelet can use as a `Localhost` seccomp profile:
//! `defaultAction: SCMP_ACT_ERRNO` with `defaultErrnoRet: 1` (EPERM), `architectures`
//! with `SCMP_ARCH_X86_64` and, for each other ABI the policy allows anything in,
//! `SCMP_ARCH_X86` / `SCMP_ARCH_X32`, and one `SCMP_ACT_ALLOW` rule with the sorted
//! union of the allowed names.
//!
//! The default action does not follow the policy's mode: a seccomp profile is an
//! enforcement artefact, and exporting the same allowlist the same way whatever the
//! mode keeps import → export → import stable. [`export_with`] and
//! [`ExportOptions::for_mode`] write `SCMP_ACT_LOG` instead for `audit`/`monitor`
//! (the kernel logs what sysfence would report; nothing is refused). Note that such a
//! profile imports back as a denylist (it allows everything), which is what it means.
//!
//! A profile cannot allow a name for one ABI and not another (Docker's `arches` is the
//! host's architecture, not the ABI). When the policy's ABIs allow different names, the
//! export allows the union for every exported ABI, and [`Exported::warnings`] says which
//! names that widens.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use probe_common::Abi;
use serde::{Deserialize, Serialize};

use crate::policy::{self, CompiledPolicy, Mode, model};
use crate::syscall_table;

/// Docker's default capabilities (moby `oci/caps/defaults.go`).
pub const DOCKER_DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The host architecture as Docker names it in `includes.arches` / `excludes.arches`.
const HOST_ARCH: &str = "amd64";
/// Docker names of the other amd64-family ABIs, which `arches` never matches on amd64.
const OTHER_FAMILY_ARCHES: &[&str] = &["x86", "x32"];

const ARCH_X86_64: &str = "SCMP_ARCH_X86_64";
const ARCH_X86: &str = "SCMP_ARCH_X86";
const ARCH_X32: &str = "SCMP_ARCH_X32";

/// errno of `ENOSYS` on x86.
const ENOSYS: u32 = 38;
/// errno of `EPERM`.
const EPERM: u32 = 1;

/// A kernel version as `minKernel` writes it: `<major>.<minor>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
}

impl KernelVersion {
    pub const fn new(major: u32, minor: u32) -> Self {
        KernelVersion { major, minor }
    }

    /// `"4.8"`. Like Docker: exactly two numbers, not `0.0`.
    pub fn parse(s: &str) -> Option<Self> {
        let (major, minor) = s.trim().split_once('.')?;
        let v = KernelVersion::new(major.parse().ok()?, minor.parse().ok()?);
        (v != KernelVersion::new(0, 0)).then_some(v)
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What to resolve a profile for, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportOptions {
    /// `metadata.name` of the generated policy (a Kubernetes-style name).
    pub name: String,
    /// Capabilities held by the container, for `includes.caps` / `excludes.caps`.
    /// `SYS_ADMIN` and `cap_sys_admin` mean `CAP_SYS_ADMIN`.
    pub capabilities: BTreeSet<String>,
    /// Kernel version for `minKernel`.
    pub kernel: KernelVersion,
    /// Leave out names the profile allows for some argument values only, instead of
    /// allowing them whatever the arguments.
    pub strict_args: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            name: "imported-seccomp".to_string(),
            capabilities: DOCKER_DEFAULT_CAPS.iter().map(|c| c.to_string()).collect(),
            kernel: KernelVersion::new(6, 1),
            strict_args: false,
        }
    }
}

/// What [`import`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    /// A complete sysfence policy document; it passes `sysfence check`.
    pub policy_yaml: String,
    /// The allowlist: `spec.allow` of the policy.
    pub allowed: BTreeSet<String>,
    /// The ABIs the policy allows syscalls in (x86_64 always).
    pub abis: BTreeSet<Abi>,
    /// Names the profile allows that sysfence's syscall tables do not know: skipped.
    pub skipped_unknown: BTreeSet<String>,
    /// Every approximation and oddity, one line each; also in the YAML's header.
    pub warnings: Vec<String>,
}

/// Why a profile could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "invalid JSON at line {line}, column {column}: {message}\n  help: fix the JSON syntax \
         at that position; a seccomp profile is an object such as \
         {{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"syscalls\": [...]}}"
    )]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "not a seccomp profile: {}{message} (line {line}, column {column})\n  help: fields \
         are `defaultAction` (string), `architectures` (list of strings), `archMap` (list of \
         {{architecture, subArchitectures}}), `syscalls` (list of {{names, action, errnoRet, \
         args, includes, excludes, comment}}); fix the value at that position",
        .field.as_ref().map(|f| format!("`{f}`: ")).unwrap_or_default()
    )]
    Shape {
        /// Where in the profile, as a path such as `syscalls[3].names`, when known.
        field: Option<String>,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "the profile has no `defaultAction`\n  help: add `\"defaultAction\": \"SCMP_ACT_ERRNO\"` \
         (deny what the rules do not allow)"
    )]
    MissingDefaultAction,
    #[error(
        "{at}: unknown action `{action}`\n  help: use one of SCMP_ACT_ALLOW, SCMP_ACT_LOG, \
         SCMP_ACT_ERRNO, SCMP_ACT_KILL, SCMP_ACT_KILL_PROCESS, SCMP_ACT_KILL_THREAD, \
         SCMP_ACT_TRAP, SCMP_ACT_TRACE, SCMP_ACT_NOTIFY"
    )]
    UnknownAction { at: String, action: String },
    #[error("{at}: no `action`\n  help: add `\"action\": \"SCMP_ACT_ALLOW\"` or another action")]
    MissingAction { at: String },
    #[error(
        "the profile has both `architectures` and `archMap`\n  help: keep one of them, as \
         Docker requires"
    )]
    ArchitecturesAndArchMap,
    #[error(
        "{at}: has both `name` and `names`\n  help: keep one of them: `names` is the current \
         form, as Docker requires"
    )]
    NameAndNames { at: String },
    #[error(
        "{at}: invalid minKernel `{value}`\n  help: write it as \"<major>.<minor>\", e.g. \"4.8\""
    )]
    InvalidMinKernel { at: String, value: String },
    #[error(
        "the profile is for other architectures ({found}), not amd64\n  help: sysfence \
         enforces x86_64, i386 and x32 syscalls only: use a profile that lists \
         SCMP_ARCH_X86_64 (in `architectures`, or as an `archMap` architecture)"
    )]
    NoAmd64 { found: String },
    #[error(
        "invalid policy name `{name}`\n  help: use lowercase letters, digits, `-` and `.`, \
         starting and ending with a letter or digit, as Kubernetes names"
    )]
    InvalidName { name: String },
    #[error(
        "the generated policy does not pass sysfence's loader (a sysfence bug):\n{0}\n  help: \
         please report it with the profile"
    )]
    Generated(String),
}

impl ImportError {
    fn from_json(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        let (line, column) = (e.line(), e.column());
        // serde_json appends " at line L column C"; the position is reported separately.
        let text = e.to_string();
        let message = match text.rfind(" at line ") {
            Some(i) => text[..i].to_string(),
            None => text,
        };
        match e.classify() {
            Category::Data => ImportError::Shape {
                field: None,
                line,
                column,
                message,
            },
            Category::Syntax | Category::Eof | Category::Io => ImportError::Syntax {
                line,
                column,
                message,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// The profile, as Docker reads it.

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    #[serde(default)]
    default_action: Option<String>,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMapEntry>>,
    #[serde(default)]
    syscalls: Option<Vec<Rule>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMapEntry {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    names: Option<Vec<String>>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<Arg>>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
    #[serde(default)]
    comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u32,
    #[serde(default)]
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (i, v, v2) = (self.index, self.value, self.value_two);
        match self.op.as_str() {
            "SCMP_CMP_EQ" => write!(f, "arg{i} == {v:#x}"),
            "SCMP_CMP_NE" => write!(f, "arg{i} != {v:#x}"),
            "SCMP_CMP_LT" => write!(f, "arg{i} < {v:#x}"),
            "SCMP_CMP_LE" => write!(f, "arg{i} <= {v:#x}"),
            "SCMP_CMP_GT" => write!(f, "arg{i} > {v:#x}"),
            "SCMP_CMP_GE" => write!(f, "arg{i} >= {v:#x}"),
            "SCMP_CMP_MASKED_EQ" => write!(f, "arg{i} & {v:#x} == {v2:#x}"),
            other => write!(f, "arg{i} {other} {v:#x}"),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Allow,
    Log,
    Errno,
    Kill,
    KillProcess,
    KillThread,
    Trap,
    Trace,
    Notify,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "SCMP_ACT_ALLOW" => Action::Allow,
            "SCMP_ACT_LOG" => Action::Log,
            "SCMP_ACT_ERRNO" => Action::Errno,
            "SCMP_ACT_KILL" => Action::Kill,
            "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
            "SCMP_ACT_KILL_THREAD" => Action::KillThread,
            "SCMP_ACT_TRAP" => Action::Trap,
            "SCMP_ACT_TRACE" => Action::Trace,
            "SCMP_ACT_NOTIFY" => Action::Notify,
            _ => return None,
        })
    }

    fn allows(self) -> bool {
        matches!(self, Action::Allow | Action::Log)
    }

    fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "SCMP_ACT_ALLOW",
            Action::Log => "SCMP_ACT_LOG",
            Action::Errno => "SCMP_ACT_ERRNO",
            Action::Kill => "SCMP_ACT_KILL",
            Action::KillProcess => "SCMP_ACT_KILL_PROCESS",
            Action::KillThread => "SCMP_ACT_KILL_THREAD",
            Action::Trap => "SCMP_ACT_TRAP",
            Action::Trace => "SCMP_ACT_TRACE",
            Action::Notify => "SCMP_ACT_NOTIFY",
        }
    }

    /// Why sysfence cannot do what this action does, for the actions that hand the
    /// syscall to someone.
    fn handed_over(self) -> Option<&'static str> {
        match self {
            Action::Trap => Some("SIGSYS to the task, whose handler may emulate the syscall"),
            Action::Trace => Some("a ptrace tracer decides"),
            Action::Notify => Some("a user-space supervisor decides"),
            _ => None,
        }
    }
}

/// A rule that applies in the resolved context.
struct Applied<'a> {
    at: String,
    action: Action,
    rule: &'a Rule,
}

impl Applied<'_> {
    fn conditional(&self) -> bool {
        self.rule.args.as_ref().is_some_and(|a| !a.is_empty())
    }

    fn conditions(&self) -> String {
        self.rule
            .args
            .iter()
            .flatten()
            .map(Arg::to_string)
            .collect::<Vec<_>>()
            .join(" && ")
    }

    fn comment(&self) -> String {
        match self.rule.comment.as_deref().map(str::trim) {
            Some(c) if !c.is_empty() => format!(" [comment: {c}]"),
            _ => String::new(),
        }
    }
}

/// The applicable rules naming one syscall.
#[derive(Default)]
struct NameRules<'r, 'a> {
    allow_uncond: Vec<&'r Applied<'a>>,
    allow_cond: Vec<&'r Applied<'a>>,
    deny_uncond: Vec<&'r Applied<'a>>,
    deny_cond: Vec<&'r Applied<'a>>,
}

fn normalize_cap(cap: &str) -> String {
    let up = cap.trim().to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

fn quoted_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The ABIs the profile filters on an amd64 host.
fn resolve_abis(
    profile: &Profile,
    warnings: &mut Vec<String>,
) -> Result<BTreeSet<Abi>, ImportError> {
    let architectures = profile.architectures.as_deref().unwrap_or_default();
    let arch_map = profile.arch_map.as_deref().unwrap_or_default();
    if !architectures.is_empty() && !arch_map.is_empty() {
        return Err(ImportError::ArchitecturesAndArchMap);
    }
    let listed: Vec<&str> = if !arch_map.is_empty() {
        let Some(entry) = arch_map.iter().find(|e| e.architecture == ARCH_X86_64) else {
            let found: Vec<&str> = arch_map.iter().map(|e| e.architecture.as_str()).collect();
            return Err(ImportError::NoAmd64 {
                found: found.join(", "),
            });
        };
        std::iter::once(entry.architecture.as_str())
            .chain(entry.sub_architectures.iter().flatten().map(String::as_str))
            .collect()
    } else {
        architectures.iter().map(String::as_str).collect()
    };
    let mut abis = BTreeSet::from([Abi::X86_64]);
    if listed.is_empty() {
        warnings.push(
            "the profile lists no architectures: the runtime filters the native one only \
             (x86_64) and refuses i386 and x32 syscalls; imported with `abi: {ia32: deny, \
             x32: deny}`"
                .to_string(),
        );
        return Ok(abis);
    }
    let family = |a: &&str| [ARCH_X86_64, ARCH_X86, ARCH_X32].contains(a);
    if !listed.iter().any(family) {
        return Err(ImportError::NoAmd64 {
            found: listed.join(", "),
        });
    }
    if !listed.contains(&ARCH_X86_64) {
        warnings.push(format!(
            "the profile's architectures omit {ARCH_X86_64}: the native architecture is \
             filtered anyway, with the same rules; imported for x86_64 too"
        ));
    }
    if listed.contains(&ARCH_X86) {
        abis.insert(Abi::Ia32);
    }
    if listed.contains(&ARCH_X32) {
        abis.insert(Abi::X32);
    }
    let others: Vec<&str> = listed.iter().copied().filter(|a| !family(a)).collect();
    if !others.is_empty() {
        warnings.push(format!(
            "architectures outside the amd64 family ignored: {}",
            others.join(", ")
        ));
    }
    Ok(abis)
}

/// Whether a rule applies in the context, as moby's `setupSeccomp` decides it.
fn applies(
    rule: &Rule,
    at: &str,
    caps: &BTreeSet<String>,
    kernel: KernelVersion,
    warnings: &mut Vec<String>,
) -> Result<bool, ImportError> {
    let min_kernel = |f: &Filter, which: &str| -> Result<Option<KernelVersion>, ImportError> {
        match f.min_kernel.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) => {
                KernelVersion::parse(v)
                    .map(Some)
                    .ok_or_else(|| ImportError::InvalidMinKernel {
                        at: format!("{at}.{which}.minKernel"),
                        value: v.to_string(),
                    })
            }
        }
    };
    let empty = Filter::default();
    let inc = rule.includes.as_ref().unwrap_or(&empty);
    let exc = rule.excludes.as_ref().unwrap_or(&empty);
    // Parse both versions first, so that a bad one is reported whatever the context.
    let inc_kernel = min_kernel(inc, "includes")?;
    let exc_kernel = min_kernel(exc, "excludes")?;
    let inc_arches = inc.arches.as_deref().unwrap_or_default();
    let exc_arches = exc.arches.as_deref().unwrap_or_default();
    let family_only = |arches: &[String]| {
        !arches.iter().any(|a| a == HOST_ARCH)
            && arches
                .iter()
                .any(|a| OTHER_FAMILY_ARCHES.contains(&a.as_str()))
    };
    if !inc_arches.is_empty() && family_only(inc_arches) {
        warnings.push(format!(
            "{at}: includes.arches [{}] names x86/x32 but not amd64: Docker matches `arches` \
             against the host architecture, so on an amd64 host the rule does not apply \
             (not imported)",
            inc_arches.join(", ")
        ));
    }
    if family_only(exc_arches) {
        warnings.push(format!(
            "{at}: excludes.arches [{}] names x86/x32 but not amd64: Docker matches `arches` \
             against the host architecture, so on an amd64 host the rule still applies",
            exc_arches.join(", ")
        ));
    }
    let held = |c: &String| caps.contains(&normalize_cap(c));
    if exc_arches.iter().any(|a| a == HOST_ARCH)
        || exc.caps.iter().flatten().any(held)
        || exc_kernel.is_some_and(|k| kernel >= k)
    {
        return Ok(false);
    }
    if (!inc_arches.is_empty() && !inc_arches.iter().any(|a| a == HOST_ARCH))
        || !inc.caps.iter().flatten().all(held)
        || inc_kernel.is_some_and(|k| kernel < k)
    {
        return Ok(false);
    }
    Ok(true)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PolicyOut<'a> {
    api_version: &'a str,
    kind: &'a str,
    metadata: MetadataOut<'a>,
    spec: SpecOut<'a>,
}

#[derive(Serialize)]
struct MetadataOut<'a> {
    name: &'a str,
    description: String,
}

#[derive(Serialize)]
struct SpecOut<'a> {
    mode: &'a str,
    allow: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    abi: Option<AbiOut>,
}

#[derive(Serialize)]
struct AbiOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    ia32: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x32: Option<&'static str>,
}

/// Convert a seccomp profile (JSON text) into a sysfence policy. See the module
/// documentation for how the profile is resolved and approximated.
pub fn import(json: &str, options: &ImportOptions) -> Result<Imported, ImportError> {
    if !crate::policy::compile::valid_name(&options.name) {
        return Err(ImportError::InvalidName {
            name: options.name.clone(),
        });
    }
    // A byte-order mark is not JSON, but editors write one.
    let json = json.strip_prefix('\u{feff}').unwrap_or(json);
    // Syntax first, so that a syntax error is reported as one even when the text would
    // also have the wrong shape before that point.
    let value: serde_json::Value = serde_json::from_str(json).map_err(ImportError::from_json)?;
    if !value.is_object() {
        return Err(ImportError::Shape {
            field: None,
            line: 1,
            column: 1,
            message: "the profile must be a JSON object".to_string(),
        });
    }
    let profile: Profile = serde_json::from_str(json).map_err(|e| {
        let mut e = ImportError::from_json(e);
        if let ImportError::Shape { field, .. } = &mut e {
            *field = shape::locate(&value);
        }
        e
    })?;
    let mut warnings = Vec::new();

    let default_action = profile
        .default_action
        .as_deref()
        .ok_or(ImportError::MissingDefaultAction)?;
    let default_action =
        Action::parse(default_action).ok_or_else(|| ImportError::UnknownAction {
            at: "defaultAction".to_string(),
            action: default_action.to_string(),
        })?;
    let denylist = default_action.allows();
    if let Some(why) = default_action.handed_over() {
        warnings.push(format!(
            "defaultAction {} ({why}): sysfence cannot hand a syscall over; what the rules do \
             not allow is denied",
            default_action.as_str()
        ));
    }
    if !denylist && profile.default_errno_ret == Some(ENOSYS) {
        warnings.push(
            "defaultErrnoRet is ENOSYS (38), so that programs fall back from syscalls they \
             may not use; sysfence cannot return an errno: under `enforce`, calling one kills \
             the task"
                .to_string(),
        );
    }

    let abis = resolve_abis(&profile, &mut warnings)?;
    let caps: BTreeSet<String> = options
        .capabilities
        .iter()
        .map(|c| normalize_cap(c))
        .collect();

    // The applicable rules, in order.
    let rules = profile.syscalls.as_deref().unwrap_or_default();
    let mut applied: Vec<Applied> = Vec::new();
    let mut rule_names: Vec<Vec<&str>> = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("syscalls[{i}]");
        let action_text = rule
            .action
            .as_deref()
            .ok_or_else(|| ImportError::MissingAction { at: at.clone() })?;
        let action = Action::parse(action_text).ok_or_else(|| ImportError::UnknownAction {
            at: at.clone(),
            action: action_text.to_string(),
        })?;
        let names: Vec<&str> = match (&rule.name, &rule.names) {
            (Some(n), Some(list)) if !n.is_empty() && !list.is_empty() => {
                return Err(ImportError::NameAndNames { at });
            }
            (Some(n), _) if !n.is_empty() => vec![n.as_str()],
            (_, Some(list)) => list.iter().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        if !applies(rule, &at, &caps, options.kernel, &mut warnings)? {
            continue;
        }
        if names.is_empty() {
            warnings.push(format!("{at}: names no syscall: ignored"));
            continue;
        }
        applied.push(Applied { at, action, rule });
        rule_names.push(names);
    }

    // Per name, the applicable rules naming it.
    let mut by_name: BTreeMap<&str, NameRules> = BTreeMap::new();
    for (a, names) in applied.iter().zip(&rule_names) {
        for &n in names {
            let e = by_name.entry(n).or_default();
            match (a.action.allows(), a.conditional()) {
                (true, false) => e.allow_uncond.push(a),
                (true, true) => e.allow_cond.push(a),
                (false, false) => e.deny_uncond.push(a),
                (false, true) => e.deny_cond.push(a),
            }
        }
    }

    // Rules that hand syscalls over, and LOG rules.
    let mut logged = BTreeSet::new();
    for (a, names) in applied.iter().zip(&rule_names) {
        if let Some(why) = a.action.handed_over() {
            warnings.push(format!(
                "{}: {} for {} ({why}){}: sysfence cannot hand a syscall over; treated as denied",
                a.at,
                a.action.as_str(),
                quoted_list(names.iter().copied()),
                a.comment()
            ));
        }
        if a.action == Action::Log {
            logged.extend(names.iter().copied());
        }
    }
    if !logged.is_empty() && !denylist {
        warnings.push(format!(
            "SCMP_ACT_LOG (allowed, and logged) for {}: allowed; sysfence counts allowed \
             syscalls but does not report each call",
            quoted_list(logged.iter().copied())
        ));
    }

    // The verdict, per name: allowed for some argument values, and for all of them.
    let mut some_allowed: BTreeSet<&str> = BTreeSet::new();
    let mut all_allowed: BTreeSet<&str> = BTreeSet::new();
    let mut partial: Vec<(&str, Vec<String>)> = Vec::new();
    for (&n, r) in &by_name {
        let conflict = !r.allow_uncond.is_empty() && !r.deny_uncond.is_empty();
        if conflict {
            warnings.push(format!(
                "`{n}`: both allowed ({}) and denied ({}) by applicable rules without argument \
                 conditions; runc refuses such a profile; left out",
                r.allow_uncond
                    .iter()
                    .map(|a| a.at.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                r.deny_uncond
                    .iter()
                    .map(|a| format!("{} {}", a.at, a.action.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            continue;
        }
        let (some, all) = if denylist {
            (
                r.deny_uncond.is_empty(),
                r.deny_uncond.is_empty() && r.deny_cond.is_empty(),
            )
        } else {
            (
                !r.allow_uncond.is_empty() || !r.allow_cond.is_empty(),
                !r.allow_uncond.is_empty() && r.deny_uncond.is_empty() && r.deny_cond.is_empty(),
            )
        };
        if some {
            some_allowed.insert(n);
        }
        if all {
            all_allowed.insert(n);
        }
        if some && !all {
            let mut why = Vec::new();
            if !denylist && r.allow_uncond.is_empty() {
                let conds: Vec<String> = r
                    .allow_cond
                    .iter()
                    .map(|a| format!("{}{}", a.conditions(), a.comment()))
                    .collect();
                why.push(format!("allowed only when {}", conds.join(" || ")));
            }
            for a in r.deny_uncond.iter().chain(&r.deny_cond) {
                if a.conditional() {
                    why.push(format!(
                        "denied by {} ({}) when {}{}",
                        a.at,
                        a.action.as_str(),
                        a.conditions(),
                        a.comment()
                    ));
                } else {
                    why.push(format!(
                        "also denied by {} ({}){}",
                        a.at,
                        a.action.as_str(),
                        a.comment()
                    ));
                }
            }
            partial.push((n, why));
        }
        // Failing with ENOSYS asks callers to fall back; sysfence cannot do that.
        if !some || (options.strict_args && !all) {
            for a in r.deny_uncond.iter().chain(&r.deny_cond) {
                if a.action == Action::Errno && a.rule.errno_ret == Some(ENOSYS) {
                    let example = if n == "clone3" {
                        " (glibc 2.34 and later call clone3 first, for every new thread)"
                    } else {
                        ""
                    };
                    warnings.push(format!(
                        "`{n}`: the profile fails it with ENOSYS ({}{}) so that callers fall \
                         back to another syscall; sysfence cannot return an errno: under \
                         `enforce`, calling `{n}` kills the task{example}; allow it if the \
                         workload calls it",
                        a.at,
                        a.comment()
                    ));
                    break;
                }
            }
        }
    }
    for (n, why) in &partial {
        let verdict = if options.strict_args {
            "left out (strict_args)"
        } else {
            "sysfence allows all of them"
        };
        warnings.push(format!(
            "`{n}`: allowed for some argument values only ({}); {verdict}",
            why.join("; ")
        ));
    }
    let chosen = if options.strict_args {
        &all_allowed
    } else {
        &some_allowed
    };

    // From names to the allowlist.
    let known = syscall_table::all_names();
    let in_abis = |n: &str| {
        abis.iter()
            .any(|&abi| syscall_table::number(abi, n).is_some())
    };
    let mut allowed: BTreeSet<String> = BTreeSet::new();
    let mut skipped_unknown: BTreeSet<String> = BTreeSet::new();
    if denylist {
        let denied: BTreeSet<&str> = by_name
            .keys()
            .copied()
            .filter(|n| !chosen.contains(n))
            .collect();
        let universe: BTreeSet<&str> = known.iter().copied().filter(|n| in_abis(n)).collect();
        allowed.extend(
            universe
                .iter()
                .filter(|n| !denied.contains(*n))
                .map(|n| n.to_string()),
        );
        warnings.push(format!(
            "defaultAction {} makes the profile a denylist: imported as an allowlist of every \
             syscall sysfence's tables know for {} ({} names) minus the {} the profile denies; \
             syscalls newer than the tables are not allowed",
            default_action.as_str(),
            abis.iter().map(|a| a.name()).collect::<Vec<_>>().join(", "),
            universe.len(),
            universe.len() - allowed.len()
        ));
    } else {
        let mut elsewhere = BTreeSet::new();
        for &n in chosen {
            if !known.contains(n) {
                skipped_unknown.insert(n.to_string());
            } else if !in_abis(n) {
                elsewhere.insert(n);
            } else {
                allowed.insert(n.to_string());
            }
        }
        // Names the strict choice dropped can still be unknown: report every one.
        for &n in &some_allowed {
            if !known.contains(n) {
                skipped_unknown.insert(n.to_string());
            }
        }
        if !elsewhere.is_empty() {
            warnings.push(format!(
                "skipped {} name(s) that exist only in ABIs the profile's architectures do not \
                 include: {}",
                elsewhere.len(),
                quoted_list(elsewhere.iter().copied())
            ));
        }
    }
    if !skipped_unknown.is_empty() {
        warnings.push(format!(
            "{}: {}",
            UNKNOWN_PREFIX,
            skipped_unknown
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    let policy_yaml = render_policy(options, &allowed, &abis, &mut warnings)?;
    Ok(Imported {
        policy_yaml,
        allowed,
        abis,
        skipped_unknown,
        warnings,
    })
}

/// How the warning about unknown names starts; the names follow, comma-separated.
pub const UNKNOWN_PREFIX: &str =
    "skipped names unknown to sysfence's syscall tables (other architectures, or newer kernels)";

/// The policy document, checked with sysfence's loader. The loader's warnings are added
/// to `warnings` and the header is written last, so that it lists them all.
fn render_policy(
    options: &ImportOptions,
    allowed: &BTreeSet<String>,
    abis: &BTreeSet<Abi>,
    warnings: &mut Vec<String>,
) -> Result<String, ImportError> {
    let deny = |abi| (!abis.contains(&abi)).then_some("deny");
    let abi = (!abis.contains(&Abi::Ia32) || !abis.contains(&Abi::X32)).then(|| AbiOut {
        ia32: deny(Abi::Ia32),
        x32: deny(Abi::X32),
    });
    let caps_label = {
        let default: BTreeSet<String> = DOCKER_DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
        let held: BTreeSet<String> = options
            .capabilities
            .iter()
            .map(|c| normalize_cap(c))
            .collect();
        if held == default {
            "Docker's default capabilities".to_string()
        } else {
            format!("{} capabilities", held.len())
        }
    };
    let doc = PolicyOut {
        api_version: model::API_VERSION,
        kind: model::KIND_POLICY,
        metadata: MetadataOut {
            name: &options.name,
            description: format!(
                "Imported from a seccomp profile (amd64, {caps_label}, kernel {}{}).",
                options.kernel,
                if options.strict_args {
                    ", strict_args"
                } else {
                    ""
                }
            ),
        },
        spec: SpecOut {
            mode: Mode::Audit.as_str(),
            allow: allowed.iter().map(String::as_str).collect(),
            abi,
        },
    };
    let body = serde_yaml::to_string(&doc)
        .map_err(|e| ImportError::Generated(format!("serde_yaml: {e}")))?;

    // Self-check with the loader: parse + compile, as `sysfence check` does.
    let path = Path::new("<import-seccomp>");
    let parsed = model::parse(path, &body).map_err(|d| ImportError::Generated(d.to_string()))?;
    let model::Document::Policy(doc) = parsed else {
        return Err(ImportError::Generated("not a policy".to_string()));
    };
    let (compiled, diags) = policy::compile::compile(path, &doc, &policy::shipped_catalog())
        .map_err(|d| ImportError::Generated(policy::Rejected(d).to_string()))?;
    for d in diags {
        warnings.push(format!("sysfence check: {}", d.message));
    }
    if compiled.allowed_names.iter().ne(allowed.iter()) {
        return Err(ImportError::Generated(
            "the compiled allowlist differs from the imported one".to_string(),
        ));
    }

    let mut header = String::from(
        "# Imported from an OCI/Docker seccomp profile by sysfence (see `sysfence policy \
         import-seccomp`).\n# sysfence allows syscall names per ABI and never reads \
         arguments: review the notes below\n# before moving this policy from `audit` to \
         `enforce`.\n",
    );
    if warnings.is_empty() {
        header.push_str("# No approximation was needed.\n");
    } else {
        header.push_str(&format!("# {} note(s):\n", warnings.len()));
        for w in warnings.iter() {
            header.push_str("# - ");
            // Profile text (names, comments) reaches the comment: a `\r` or NUL there would
            // end the comment line and break the document, so control characters are escaped.
            header.push_str(
                &w.replace('\n', " ")
                    .chars()
                    .map(|c| {
                        if c.is_control() && c != '\t' {
                            c.escape_default().to_string()
                        } else {
                            c.to_string()
                        }
                    })
                    .collect::<String>(),
            );
            header.push('\n');
        }
    }
    Ok(header + &body)
}

// ---------------------------------------------------------------------------------------
// Export.

/// The default action of an exported profile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExportDefault {
    /// `SCMP_ACT_ERRNO` with `defaultErrnoRet: 1` (EPERM): enforce the allowlist.
    #[default]
    Errno,
    /// `SCMP_ACT_LOG`: allow everything, and have the kernel log what the allowlist does
    /// not cover (a dry run, like `audit`).
    Log,
}

/// How to export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportOptions {
    pub default_action: ExportDefault,
}

impl ExportOptions {
    /// `Log` for `audit` and `monitor` (the syscalls run), `Errno` for `enforce`.
    pub fn for_mode(mode: Mode) -> Self {
        ExportOptions {
            default_action: match mode {
                Mode::Audit | Mode::Monitor => ExportDefault::Log,
                Mode::Enforce => ExportDefault::Errno,
            },
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
struct SyscallOut {
    names: Vec<String>,
    action: &'static str,
    comment: String,
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
        .filter(|abi| *abi == Abi::X86_64 || !per_abi[abi].is_empty())
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
        syscalls: if union.is_empty() {
            Vec::new()
        } else {
            vec![SyscallOut {
                names: union.iter().map(|n| n.to_string()).collect(),
                action: "SCMP_ACT_ALLOW",
                comment: format!(
                    "sysfence policy `{}` (mode {}): {} syscall names",
                    policy.name,
                    policy.mode.as_str(),
                    union.len()
                ),
            }]
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

/// Where a profile that does not deserialize has the wrong shape: the path of the first
/// value of the wrong type, e.g. `syscalls[3].names[0]`.
mod shape {
    use serde::de::DeserializeOwned;
    use serde_json::Value;

    use super::{ArchMapEntry, Arg, Filter, Rule};

    type Check = fn(&Value, &str) -> Option<String>;

    fn fails<T: DeserializeOwned>(v: &Value) -> bool {
        T::deserialize(v).is_err()
    }

    /// An optional value of type `T` (null or missing is fine).
    fn optional<T: DeserializeOwned>(v: &Value, at: &str) -> Option<String> {
        fails::<Option<T>>(v).then(|| at.to_string())
    }

    fn required<T: DeserializeOwned>(v: &Value, at: &str) -> Option<String> {
        fails::<T>(v).then(|| at.to_string())
    }

    fn string(v: &Value, at: &str) -> Option<String> {
        required::<String>(v, at)
    }

    /// An optional list whose elements pass `elem`.
    fn list(v: &Value, at: &str, elem: Check) -> Option<String> {
        if v.is_null() {
            return None;
        }
        let Some(items) = v.as_array() else {
            return Some(at.to_string());
        };
        items
            .iter()
            .enumerate()
            .find_map(|(i, e)| elem(e, &format!("{at}[{i}]")))
    }

    /// An object whose fields pass their checks; the object itself when they all do but
    /// the whole does not (a missing required field).
    fn object<T: DeserializeOwned>(
        v: &Value,
        at: &str,
        fields: &[(&str, Check)],
    ) -> Option<String> {
        if !v.is_object() {
            return Some(at.to_string());
        }
        fields
            .iter()
            .find_map(|(k, check)| check(&v[*k], &format!("{at}.{k}")))
            .or_else(|| required::<T>(v, at))
    }

    fn arch_entry(v: &Value, at: &str) -> Option<String> {
        object::<ArchMapEntry>(
            v,
            at,
            &[
                ("architecture", string),
                ("subArchitectures", |v, at| list(v, at, string)),
            ],
        )
    }

    fn arg(v: &Value, at: &str) -> Option<String> {
        object::<Arg>(
            v,
            at,
            &[
                ("index", required::<u32>),
                ("value", optional::<u64>),
                ("valueTwo", optional::<u64>),
                ("op", string),
            ],
        )
    }

    fn filter(v: &Value, at: &str) -> Option<String> {
        if v.is_null() {
            return None;
        }
        object::<Filter>(
            v,
            at,
            &[
                ("caps", |v, at| list(v, at, string)),
                ("arches", |v, at| list(v, at, string)),
                ("minKernel", optional::<String>),
            ],
        )
    }

    fn rule(v: &Value, at: &str) -> Option<String> {
        object::<Rule>(
            v,
            at,
            &[
                ("names", |v, at| list(v, at, string)),
                ("name", optional::<String>),
                ("action", optional::<String>),
                ("errnoRet", optional::<u32>),
                ("args", |v, at| list(v, at, arg)),
                ("includes", filter),
                ("excludes", filter),
                ("comment", optional::<String>),
            ],
        )
    }

    pub(super) fn locate(profile: &Value) -> Option<String> {
        optional::<String>(&profile["defaultAction"], "defaultAction")
            .or_else(|| optional::<u32>(&profile["defaultErrnoRet"], "defaultErrnoRet"))
            .or_else(|| list(&profile["architectures"], "architectures", string))
            .or_else(|| list(&profile["archMap"], "archMap", arch_entry))
            .or_else(|| list(&profile["syscalls"], "syscalls", rule))
    }
}

#[cfg(test)]
mod tests;
