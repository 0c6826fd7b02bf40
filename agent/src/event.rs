//! The violation record: one Rust type from the ring buffer to every output.
//!
//! The probe writes a [`ViolationEvent`] (plain old data) into the `VIOLATIONS` ring
//! buffer. The agent, or `sysfence run`, decodes it once into a [`Violation`]
//! ([`Violation::from_event`]), enriches it once with what it knows of the workload and
//! the policy ([`Violation::enrich`]), and hands that same value to every output:
//!
//! - the log: [`Violation::log`], one JSON line `"event":"violation"` with these fields;
//! - the metrics: `metrics::ViolationSeries::of`;
//! - the API's `events` answer and `watch` frames (serde, below);
//! - reports: `sysfence report` reads the log or the API back into this type, and
//!   `run`'s summary aggregates it.
//!
//! Its serde form is the contract of the log and the API: field names do not change
//! without a format version.

use probe_common::{
    EVENT_ARGS, EVENT_FALLBACK_KILLED, EVENT_IO_URING, EVENT_NEW_NAMESPACE, EVENT_SELF_PROTECTION,
    LSM_HOOK_NAMES, Outcome, ViolationEvent, index_to_syscall,
};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::{
    clock,
    model::{SyscallKey, Workload, WorkloadRef},
    probe::comm_str,
    syscall_table,
};

/// A syscall outside a workload's policy: who made it, what it was, and what happened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Violation {
    /// When the agent received it (RFC 3339); from a log, the log line's own time.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub timestamp: String,
    /// The same, in Unix milliseconds (the API's records).
    #[serde(skip_serializing_if = "is_zero")]
    pub t_ms: u64,
    /// The agent's sequence number of the record (the API's records).
    #[serde(skip_serializing_if = "is_zero")]
    pub seq: u64,
    /// The policy of the slot that judged it (`?` when the slot is unknown).
    pub policy: String,
    /// The policy was applied monitor-only (a sandboxed runtime it does not name).
    pub monitor_only: bool,
    /// The workload, as the agent knew it when the event arrived.
    #[serde(flatten)]
    pub workload: WorkloadRef,
    /// The host sees the sandbox's syscalls (gVisor, Kata), not the application's.
    pub sandboxed: bool,
    /// Thread group and thread.
    pub pid: u32,
    pub tid: u32,
    /// The task's own name for itself: a claim of the workload, never an identity.
    pub comm: String,
    /// `/proc/PID/exe` when the agent read it (empty once the task is gone).
    pub exe: String,
    /// `x86_64`, `i386`, `x32`, or `unknown` when the probe could not classify it.
    pub abi: String,
    /// As people read it: `ptrace`, `mount (i386)`, `unclassified`.
    pub syscall: String,
    /// The syscall number in its ABI, or the raw id when unclassified.
    pub nr: i64,
    /// `monitored`, `audited`, `killed-after`, `denied`, `not-preventable`, ...
    pub outcome: String,
    /// For `denied`: the LSM hook that refused it.
    pub hook: String,
    /// The operation came through io_uring, not its own syscall.
    pub via_io_uring: bool,
    /// A self-protection guard refused it (a signal to the agent, a write to bpffs).
    pub self_protection: bool,
    /// `not-preventable` and the policy's fallback killed the task.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fallback_killed: bool,
    /// The kill took the whole workload (`killScope: workload`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub workload_killed: bool,
    /// The arguments that decided it, as people read them (`flags=NEWUSER|NEWNET`,
    /// `family=AF_VSOCK`), for syscalls judged on their arguments.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub args: String,
    /// A fork asked for a namespace its policy denies, seen on the kernel's copy of
    /// its flags: the caller was killed, and its child at its first syscall.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub new_namespace: bool,
    /// Events of the same workload and syscall the kernel's rate limit held back since
    /// the previous one: this record stands for `1 + suppressed` calls.
    pub suppressed: u64,
    /// The probe's counter index of the syscall, when decoded from the kernel (a
    /// record read back from a log has [`Violation::key`] instead).
    #[serde(skip)]
    pub index: Option<u32>,
}

/// `CLONE_*` flags by name, for `flags=` in reports.
const CLONE_FLAGS: &[(u64, &str)] = &[
    (0x0000_0080, "NEWTIME"),
    (0x0000_0100, "VM"),
    (0x0000_0200, "FS"),
    (0x0000_0400, "FILES"),
    (0x0000_0800, "SIGHAND"),
    (0x0000_1000, "PIDFD"),
    (0x0000_2000, "PTRACE"),
    (0x0000_4000, "VFORK"),
    (0x0000_8000, "PARENT"),
    (0x0001_0000, "THREAD"),
    (0x0002_0000, "NEWNS"),
    (0x0004_0000, "SYSVSEM"),
    (0x0008_0000, "SETTLS"),
    (0x0010_0000, "PARENT_SETTID"),
    (0x0020_0000, "CHILD_CLEARTID"),
    (0x0040_0000, "DETACHED"),
    (0x0080_0000, "UNTRACED"),
    (0x0100_0000, "CHILD_SETTID"),
    (0x0200_0000, "NEWCGROUP"),
    (0x0400_0000, "NEWUTS"),
    (0x0800_0000, "NEWIPC"),
    (0x1000_0000, "NEWUSER"),
    (0x2000_0000, "NEWPID"),
    (0x4000_0000, "NEWNET"),
    (0x8000_0000, "IO"),
];

/// `NEWUSER|NEWNET|0x11`: the flags that have names, then what is left, in hex.
pub fn clone_flags_label(flags: u64) -> String {
    let mut parts = Vec::new();
    let mut rest = flags;
    for &(bit, name) in CLONE_FLAGS {
        if flags & bit != 0 {
            parts.push(name.to_string());
            rest &= !bit;
        }
    }
    if rest != 0 || parts.is_empty() {
        parts.push(format!("{rest:#x}"));
    }
    parts.join("|")
}

/// The arguments that decided a violation, as people read them.
pub fn describe_args(syscall: &str, args: [u64; 2]) -> String {
    let name = syscall.split(' ').next().unwrap_or(syscall);
    match name {
        // clone's low byte is the exit signal; clone3's flags have none.
        "clone" => format!("flags={}", clone_flags_label(args[0] & !0xff)),
        "clone3" | "unshare" => format!("flags={}", clone_flags_label(args[0])),
        "socket" | "socketpair" => {
            let family = args[0] as u32;
            let known = match family {
                1 => "AF_UNIX",
                2 => "AF_INET",
                10 => "AF_INET6",
                16 => "AF_NETLINK",
                17 => "AF_PACKET",
                38 => "AF_ALG",
                40 => "AF_VSOCK",
                _ => "",
            };
            if known.is_empty() {
                format!("family={family}")
            } else {
                format!("family={known}")
            }
        }
        "personality" => format!("persona={:#x}", args[0] as u32),
        _ => format!("arg0={:#x} arg1={:#x}", args[0], args[1]),
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Violation {
    /// What the kernel said, decoded: the workload and policy are not known yet.
    pub fn from_event(event: &ViolationEvent) -> Violation {
        let (abi, name) = syscall_table::describe_index(event.index);
        let outcome = Outcome::from_u32(event.outcome);
        Violation {
            workload: WorkloadRef {
                cgroup_id: event.cgroup_id,
                ..WorkloadRef::default()
            },
            pid: event.tgid,
            tid: event.pid,
            comm: comm_str(&event.comm),
            abi: abi.map_or("unknown", |a| a.name()).to_string(),
            syscall: syscall_table::label(abi, &name),
            nr: index_to_syscall(event.index).map_or(event.id, |(_, nr)| i64::from(nr)),
            outcome: outcome.map_or("unknown", Outcome::name).to_string(),
            hook: LSM_HOOK_NAMES
                .get(event.hook as usize)
                .filter(|_| outcome == Some(Outcome::Denied))
                .copied()
                .unwrap_or("")
                .to_string(),
            via_io_uring: event.flags & EVENT_IO_URING != 0,
            self_protection: event.flags & EVENT_SELF_PROTECTION != 0,
            fallback_killed: event.flags & EVENT_FALLBACK_KILLED != 0,
            workload_killed: event.flags & probe_common::EVENT_WORKLOAD_KILLED != 0,
            args: if event.flags & EVENT_ARGS != 0 {
                describe_args(&name, event.args)
            } else if event.flags & probe_common::EVENT_PTRACE != 0 {
                crate::undo::describe_ptrace(event.args)
            } else {
                String::new()
            },
            new_namespace: event.flags & EVENT_NEW_NAMESPACE != 0,
            suppressed: u64::from(event.suppressed),
            index: Some(event.index),
            ..Violation::default()
        }
    }

    /// Add what the agent knows: the workload the cgroup belongs to (if known), the
    /// policy of the slot (name, monitor-only), and the task's executable.
    pub fn enrich(&mut self, workload: Option<&Workload>, policy: Option<(&str, bool)>) {
        if let Some(w) = workload {
            self.workload = WorkloadRef {
                // The event's own cgroup, even when it is below the container's.
                cgroup_id: self.workload.cgroup_id,
                labels: Default::default(),
                ..w.to_ref()
            };
            self.sandboxed = w.sandboxed();
        }
        self.policy = policy.map_or("?", |(name, _)| name).to_string();
        self.monitor_only = policy.is_some_and(|(_, m)| m);
        // The task may be gone (killed) by now; then the exe is unknown.
        self.exe = std::fs::read_link(format!("/proc/{}/exe", self.pid))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
    }

    /// Stamp the time the agent received it, and its sequence number.
    pub fn stamp(&mut self, t_ms: u64, seq: u64) {
        self.t_ms = t_ms;
        self.timestamp = clock::iso_ms(t_ms);
        self.seq = seq;
    }

    /// The syscall, keyed as counts are (`i386:mount`).
    pub fn key(&self) -> SyscallKey {
        let suffix = format!(" ({})", self.abi);
        let name = self
            .syscall
            .strip_suffix(&suffix)
            .unwrap_or(&self.syscall)
            .to_string();
        SyscallKey {
            abi: if self.abi.is_empty() {
                "unknown".into()
            } else {
                self.abi.clone()
            },
            name,
        }
    }

    /// The calls this record stands for.
    pub fn calls(&self) -> u64 {
        1 + self.suppressed
    }

    /// When it happened, in Unix milliseconds, if known.
    pub fn time_ms(&self) -> Option<u64> {
        if self.t_ms != 0 {
            return Some(self.t_ms);
        }
        clock::parse_rfc3339_ms(&self.timestamp)
    }

    /// Log it: one JSON line with `"event":"violation"` and the fields above.
    pub fn log(&self) {
        let w = &self.workload;
        warn!(
            event = "violation",
            policy = %self.policy,
            monitor_only = self.monitor_only,
            cgroup = %w.cgroup,
            cgroup_id = w.cgroup_id,
            pid = self.pid,
            tid = self.tid,
            comm = %self.comm,
            exe = %self.exe,
            abi = %self.abi,
            syscall = %self.syscall,
            nr = self.nr,
            outcome = %self.outcome,
            runtime = %w.runtime,
            sandboxed = self.sandboxed,
            container_id = %w.container_id,
            container = %w.container,
            pod = %w.pod,
            namespace = %w.namespace,
            image = %w.image,
            hook = %self.hook,
            via_io_uring = self.via_io_uring,
            self_protection = self.self_protection,
            fallback_killed = self.fallback_killed,
            workload_killed = self.workload_killed,
            args = %self.args,
            suppressed = self.suppressed,
        );
    }
}

#[cfg(test)]
mod tests {
    use probe_common::{Abi, syscall_index};

    use super::*;
    use crate::model::Runtime;

    fn event(abi: Abi, nr: u32, outcome: Outcome) -> ViolationEvent {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"evil");
        ViolationEvent {
            cgroup_id: 42,
            tgid: 100,
            pid: 101,
            index: syscall_index(abi, u64::from(nr)).unwrap(),
            id: i64::from(nr),
            outcome: outcome as u32,
            comm,
            suppressed: 3,
            flags: EVENT_IO_URING,
            boot_ns: 0,
            slot: 0,
            mode: 0,
            hook: 0,
            _reserved: 0,
            args: [0; 2],
        }
    }

    #[test]
    fn the_arguments_that_decided_are_shown_as_people_read_them() {
        let mut e = event(Abi::X86_64, 56, Outcome::KilledAfter);
        e.flags = EVENT_ARGS;
        e.args = [0x5400_0011, 0];
        let v = Violation::from_event(&e);
        assert_eq!(v.args, "flags=NEWUTS|NEWUSER|NEWNET");
        assert!(!v.new_namespace);
        assert_eq!(
            describe_args("clone3", [0x1000_0080, 0]),
            "flags=NEWTIME|NEWUSER"
        );
        assert_eq!(
            describe_args("socket", [0x1_0000_0028, 1]),
            "family=AF_VSOCK"
        );
        assert_eq!(
            describe_args("personality (i386)", [0x40_0000, 0]),
            "persona=0x400000"
        );
        assert_eq!(clone_flags_label(0), "0x0");
        // Without EVENT_ARGS, nothing is made up.
        e.flags = EVENT_NEW_NAMESPACE;
        let v = Violation::from_event(&e);
        assert_eq!(v.args, "");
        assert!(v.new_namespace);
    }

    #[test]
    fn decoded_once_with_the_abi_and_the_outcome() {
        let v = Violation::from_event(&event(Abi::Ia32, 21, Outcome::Audited));
        assert_eq!(v.syscall, "mount (i386)");
        assert_eq!(v.abi, "i386");
        assert_eq!(v.key(), SyscallKey::new("i386", "mount"));
        assert_eq!(v.nr, 21);
        assert_eq!(v.outcome, "audited");
        assert_eq!(v.comm, "evil");
        assert_eq!((v.pid, v.tid, v.workload.cgroup_id), (100, 101, 42));
        assert!(v.via_io_uring && !v.self_protection);
        assert_eq!(v.calls(), 4);
        assert_eq!(v.hook, "", "a hook is named only for `denied`");
    }

    #[test]
    fn enriched_with_the_workload_keeps_the_events_cgroup() {
        let mut v = Violation::from_event(&event(Abi::X86_64, 101, Outcome::KilledAfter));
        let w = Workload {
            cgroup_id: 7,
            cgroup_path: "kubepods/pod1/abc".into(),
            runtime: Some(Runtime::Runsc),
            container_id: Some("abc".into()),
            pod: Some("web-1".into()),
            namespace: Some("shop".into()),
            ..Workload::default()
        };
        v.enrich(Some(&w), Some(("web", true)));
        assert_eq!(v.workload.cgroup_id, 42);
        assert_eq!(v.workload.cgroup, "kubepods/pod1/abc");
        assert_eq!(v.workload.runtime, "runsc");
        assert!(v.sandboxed && v.monitor_only);
        assert_eq!(v.policy, "web");
        let mut unknown = Violation::from_event(&event(Abi::X86_64, 101, Outcome::KilledAfter));
        unknown.enrich(None, None);
        assert_eq!(unknown.policy, "?");
    }

    #[test]
    fn the_serde_form_is_the_logs_and_round_trips() {
        let mut v = Violation::from_event(&event(Abi::X86_64, 101, Outcome::Denied));
        v.enrich(None, Some(("web", false)));
        v.stamp(1_795_914_123_456, 9);
        let text = serde_json::to_string(&v).unwrap();
        for key in [
            "\"policy\":\"web\"",
            "\"cgroup_id\":42",
            "\"cgroup\":\"\"",
            "\"container_id\":\"\"",
            "\"syscall\":\"ptrace\"",
            "\"outcome\":\"denied\"",
            "\"suppressed\":3",
            "\"seq\":9",
        ] {
            assert!(text.contains(key), "{key} missing in {text}");
        }
        let back: Violation = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back,
            Violation {
                index: None,
                ..v.clone()
            }
        );
        assert_eq!(back.time_ms(), Some(1_795_914_123_456));
        let from_log: Violation = serde_json::from_str(
            r#"{"timestamp":"2026-11-29T00:00:02.500000Z","level":"WARN","event":"violation","syscall":"mount (i386)","abi":"i386"}"#,
        )
        .unwrap();
        assert_eq!(from_log.key(), SyscallKey::new("i386", "mount"));
        assert!(from_log.time_ms().is_some());
    }
}
