//! The choices a policy makes in one word: its mode, its action, what `deny` falls back
//! to, what a kill takes; and how a choice is read, with the error for an unknown one.

use std::path::Path;

use marked_yaml::Spanned;
use serde::Serialize;

use super::diag::{Diagnostic, start};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Monitor,
    Audit,
    Enforce,
}

impl Mode {
    pub const NAMES: &'static str = "monitor, audit, enforce";

    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "monitor" => Some(Mode::Monitor),
            "audit" => Some(Mode::Audit),
            "enforce" => Some(Mode::Enforce),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Monitor => "monitor",
            Mode::Audit => "audit",
            Mode::Enforce => "enforce",
        }
    }
}

/// What `enforce` does to a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// SIGKILL from `sys_enter`; the syscall body still runs first.
    Kill,
    /// EPERM before side effects, through BPF LSM hooks; needs a kernel with BPF LSM.
    Deny,
}

/// What `deny` does when it cannot prevent a syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    Kill,
    Allow,
}

/// What a kill takes (`action: kill`, or `deny` falling back to `kill`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KillScope {
    /// The calling process (its thread group: SIGKILL always takes every thread).
    Process,
    /// Every process of the workload's cgroup: at its next syscall in the kernel, and
    /// by `cgroup.kill` from the agent. Nothing the killed syscall made (an fd in a
    /// shared table, a mapping in shared memory, an fd another process took with
    /// `pidfd_getfd`) survives in the workload.
    Workload,
}

impl KillScope {
    pub const NAMES: &'static str = "workload, process";

    pub fn parse(s: &str) -> Option<KillScope> {
        match s {
            "workload" => Some(KillScope::Workload),
            "process" => Some(KillScope::Process),
            _ => None,
        }
    }
}

/// Whose syscalls a policy is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The workload's application: on the host kernel under runc and crun, inside the
    /// sandbox under gVisor (its Sentry applies the policy, see `sysfence wrap`).
    #[default]
    Application,
    /// The processes a sandboxed runtime runs on the host for the workload (gVisor's
    /// Sentry and gofer, Kata's VMM): binds only to sandboxed workloads' host cgroups,
    /// as written, and never goes inside the sandbox.
    Sandbox,
}

impl Target {
    pub const NAMES: &'static str = "application, sandbox";

    pub fn parse(s: &str) -> Option<Target> {
        match s {
            "application" => Some(Target::Application),
            "sandbox" => Some(Target::Sandbox),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Target::Application => "application",
            Target::Sandbox => "sandbox",
        }
    }
}

pub(super) fn parse_choice<T>(
    path: &Path,
    value: Option<&Spanned<String>>,
    field: &str,
    default: T,
    choices: &str,
    parse: impl Fn(&str) -> Option<T>,
    diags: &mut Vec<Diagnostic>,
) -> T {
    let Some(v) = value else { return default };
    parse(v.as_str()).unwrap_or_else(|| {
        diags.push(
            Diagnostic::error(path, start(v.span()), format!("unknown {field} `{}`", **v))
                .with_help(format!("{field} is one of: {choices}")),
        );
        default
    })
}
