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
//! sysfence allows a syscall name per ABI (x86_64, i386, x32), outright or for some
//! argument values (`spec.rules`, with the OCI semantics), and fails denied syscalls
//! with a chosen errno under `action: deny` (`spec.errno`). A deny-by-default profile
//! such as Docker's imports exactly; where a profile is finer than that, the import is
//! an approximation, listed in [`Imported::warnings`]. The rules:
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
//! - **Argument conditions** (`args`). In a deny-by-default profile, a name allowed
//!   by applicable rules with `args` only gets those rules, with the same conditions
//!   (`spec.rules`); a name with an applicable allowing rule without `args` is allowed
//!   outright. A condition sysfence cannot hold (an unknown `op`, more than six) makes
//!   the name allowed whatever its arguments, with a warning. In an allow-by-default
//!   profile, a name denied for some argument values only is allowed, with a warning
//!   "allowed for some argument values only; sysfence allows all of them".
//!   [`ImportOptions::strict_args`] leaves out names allowed for some argument values
//!   only.
//! - **Conflicts.** A name both allowed and denied by applicable rules without `args`
//!   is left out, with a warning (runc refuses such a profile). A name allowed only with
//!   `args` and denied by an applicable rule gets a warning, and is allowed as above.
//! - **Unknown names** (not in [`crate::syscall_table::all_names`], e.g. the arm-only
//!   `recv`/`send`, or a syscall newer than the tables) that the profile allows are
//!   skipped with one warning naming them all ([`Imported::skipped_unknown`]). Known
//!   names that exist only in ABIs the profile does not cover are skipped too.
//! - **errno values.** A name the profile fails with an errno other than EPERM gets it
//!   in `spec.errno` (Docker fails `clone3` with ENOSYS, so that glibc falls back to
//!   `clone`). `action: deny` returns it. Under `action: kill` no errno can be
//!   returned: clone3 with ENOSYS is then allowed where clone is (without namespace
//!   flags when clone's rules keep them clear), and other names are killed; a warning
//!   says so.
//!
//! The generated policy has `mode: audit` (a dry run), its names in `spec.allow`,
//! sorted, its argument rules in `spec.rules`, its errnos in `spec.errno`, and a
//! comment header repeating the warnings. [`import`] checks it with
//! sysfence's own loader before returning it, and adds the loader's warnings (e.g. about
//! `ptrace` or io_uring) to its own.
//!
//! # Export: sysfence policy → profile
//!
//! [`export`] writes a profile that kubelet can use as a `Localhost` seccomp profile:
//! `defaultAction: SCMP_ACT_ERRNO` with `defaultErrnoRet: 1` (EPERM), `architectures`
//! with `SCMP_ARCH_X86_64` and, for each other ABI the policy allows anything in,
//! `SCMP_ARCH_X86` / `SCMP_ARCH_X32`, one `SCMP_ACT_ALLOW` rule with the sorted union
//! of the names allowed outright, one `SCMP_ACT_ALLOW` rule with `args` per argument
//! rule, and one `SCMP_ACT_ERRNO` rule per errno. Under `namespaces: deny`, clone3
//! fails with ENOSYS: its flags are in memory, where a seccomp filter cannot read them.
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

// Files: `profile` (the JSON model and the actions), `context` (the ABIs and the rules
// that apply on an amd64 host), `import` (profile to allowlist), `render` (the policy
// document, checked with the loader), `export` (policy to profile), `shape` (where a
// profile has the wrong shape), `error` (why an import fails).
pub mod command;
mod context;
mod error;
mod export;
mod import;
mod profile;
mod render;
mod shape;

use std::collections::BTreeSet;
use std::fmt;

use probe_common::Abi;

pub use error::ImportError;
pub use export::{ExportDefault, ExportOptions, Exported, export, export_string, export_with};
pub use import::import;

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
    /// The allowlist: `spec.allow` of the policy (names allowed whatever their
    /// arguments).
    pub allowed: BTreeSet<String>,
    /// Names allowed for some argument values only: `spec.rules` of the policy.
    pub rules: crate::policy::args::RuleBook,
    /// Names the profile fails with an errno other than EPERM: `spec.errno`.
    pub errnos: std::collections::BTreeMap<String, u32>,
    /// The ABIs the policy allows syscalls in (x86_64 always).
    pub abis: BTreeSet<Abi>,
    /// Names the profile allows that sysfence's syscall tables do not know: skipped.
    pub skipped_unknown: BTreeSet<String>,
    /// Every approximation and oddity, one line each; also in the YAML's header.
    pub warnings: Vec<String>,
}

/// How the warning about unknown names starts; the names follow, comma-separated.
pub const UNKNOWN_PREFIX: &str =
    "skipped names unknown to sysfence's syscall tables (other architectures, or newer kernels)";

/// `sys_admin`, `SYS_ADMIN` and `cap_sys_admin` as `CAP_SYS_ADMIN`.
fn normalize_cap(cap: &str) -> String {
    let up = cap.trim().to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// `` `a`, `b` ``: names for a warning.
fn quoted_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
