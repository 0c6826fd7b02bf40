//! The profile, as Docker reads it: the JSON model and the actions.

use std::fmt;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Profile {
    #[serde(default)]
    pub(super) default_action: Option<String>,
    #[serde(default)]
    pub(super) default_errno_ret: Option<u32>,
    #[serde(default)]
    pub(super) architectures: Option<Vec<String>>,
    #[serde(default)]
    pub(super) arch_map: Option<Vec<ArchMapEntry>>,
    #[serde(default)]
    pub(super) syscalls: Option<Vec<Rule>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ArchMapEntry {
    pub(super) architecture: String,
    #[serde(default)]
    pub(super) sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Rule {
    #[serde(default)]
    pub(super) names: Option<Vec<String>>,
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) action: Option<String>,
    #[serde(default)]
    pub(super) errno_ret: Option<u32>,
    #[serde(default)]
    pub(super) args: Option<Vec<Arg>>,
    #[serde(default)]
    pub(super) includes: Option<Filter>,
    #[serde(default)]
    pub(super) excludes: Option<Filter>,
    #[serde(default)]
    pub(super) comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Arg {
    pub(super) index: u32,
    #[serde(default)]
    pub(super) value: u64,
    #[serde(default)]
    pub(super) value_two: u64,
    pub(super) op: String,
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
pub(super) struct Filter {
    #[serde(default)]
    pub(super) caps: Option<Vec<String>>,
    #[serde(default)]
    pub(super) arches: Option<Vec<String>>,
    #[serde(default)]
    pub(super) min_kernel: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
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
    pub(super) fn parse(s: &str) -> Option<Action> {
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

    pub(super) fn allows(self) -> bool {
        matches!(self, Action::Allow | Action::Log)
    }

    pub(super) fn as_str(self) -> &'static str {
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
    pub(super) fn handed_over(self) -> Option<&'static str> {
        match self {
            Action::Trap => Some("SIGSYS to the task, whose handler may emulate the syscall"),
            Action::Trace => Some("a ptrace tracer decides"),
            Action::Notify => Some("a user-space supervisor decides"),
            _ => None,
        }
    }
}
