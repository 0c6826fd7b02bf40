//! Counts and violations of one slot, as `run` reports them.

use std::collections::BTreeMap;

use probe_common::{
    Decision, EVENT_FALLBACK_KILLED, EVENT_IO_URING, LSM_HOOK_NAMES, Outcome, PolicySlot,
    ViolationEvent, decide, index_to_syscall,
};
use serde::Serialize;

use crate::{probe::comm_str, syscall_table};

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CountRow {
    pub abi: String,
    pub syscall: String,
    pub nr: Option<u32>,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ViolationRow {
    pub abi: String,
    pub syscall: String,
    pub nr: Option<u32>,
    /// Exact: from the kernel's counters.
    pub count: u64,
    /// The most frequent outcome among the events (or what the mode implies).
    pub outcome: &'static str,
    /// Events seen per outcome, when they differ (a `deny` can be `denied` one time
    /// and `not-preventable` another). Event counts can trail `count` if events were
    /// dropped; `count` is exact.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub outcomes: BTreeMap<&'static str, u64>,
    /// For `denied`: the LSM hook that denied it first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<&'static str>,
    /// For `not-preventable`: the fallback killed the task after the syscall ran.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fallback_killed: bool,
    /// The operation came through io_uring, not its own syscall: `count` is the number
    /// of events (io_uring work is not in the syscall counters).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub via_io_uring: bool,
    /// An example offender, from the first event; `None` in monitor mode (no events).
    pub pid: Option<u32>,
    pub comm: Option<String>,
}

fn abi_and_name(index: u32) -> (String, String, Option<u32>) {
    let (abi, name) = syscall_table::describe_index(index);
    let nr = index_to_syscall(index).map(|(_, nr)| nr);
    (abi.map_or("unknown", |a| a.name()).to_string(), name, nr)
}

/// Rows for every counted syscall, and for those that were violations.
pub fn summarize(
    slot: &PolicySlot,
    counts: &[(u32, u64)],
    events: &[ViolationEvent],
) -> (Vec<CountRow>, Vec<ViolationRow>) {
    let mut by_index: BTreeMap<u32, Vec<&ViolationEvent>> = BTreeMap::new();
    let mut via_ring: BTreeMap<u32, Vec<&ViolationEvent>> = BTreeMap::new();
    for e in events {
        if e.flags & EVENT_IO_URING != 0 {
            via_ring.entry(e.index).or_default().push(e);
        } else {
            by_index.entry(e.index).or_default().push(e);
        }
    }
    let mut count_rows = Vec::new();
    let mut violations = Vec::new();
    for &(index, count) in counts {
        let (abi, syscall, nr) = abi_and_name(index);
        count_rows.push(CountRow {
            abi: abi.clone(),
            syscall: syscall.clone(),
            nr,
            count,
        });
        let classified = index_to_syscall(index).map(|_| index);
        let implied = match decide(slot, classified) {
            Decision::Allow => continue,
            Decision::Violation { outcome, .. } => outcome,
            // Settled at sys_exit; without an event we cannot tell which way it went.
            Decision::Deny { .. } => Outcome::NotPreventable,
        };
        let seen = by_index.get(&index).map(Vec::as_slice).unwrap_or_default();
        let mut outcomes: BTreeMap<&'static str, u64> = BTreeMap::new();
        for e in seen {
            if let Some(o) = Outcome::from_u32(e.outcome) {
                *outcomes.entry(o.name()).or_default() += 1;
            }
        }
        let outcome = outcomes
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or(implied.name(), |(name, _)| *name);
        let example = seen.first();
        let hook = seen
            .iter()
            .find(|e| e.outcome == Outcome::Denied as u32)
            .and_then(|e| LSM_HOOK_NAMES.get(e.hook as usize).copied());
        violations.push(ViolationRow {
            abi,
            syscall,
            nr,
            count,
            outcome,
            outcomes: if outcomes.len() > 1 {
                outcomes
            } else {
                BTreeMap::new()
            },
            hook,
            fallback_killed: seen.iter().any(|e| e.flags & EVENT_FALLBACK_KILLED != 0),
            via_io_uring: false,
            pid: example.map(|e| e.tgid),
            comm: example.map(|e| comm_str(&e.comm)),
        });
    }
    for (index, seen) in via_ring {
        let (abi, syscall, nr) = abi_and_name(index);
        let first = seen[0];
        violations.push(ViolationRow {
            abi,
            syscall,
            nr,
            count: seen.len() as u64,
            outcome: Outcome::from_u32(first.outcome).map_or("unknown", Outcome::name),
            outcomes: BTreeMap::new(),
            hook: LSM_HOOK_NAMES.get(first.hook as usize).copied(),
            fallback_killed: false,
            via_io_uring: true,
            pid: Some(first.tgid),
            comm: Some(comm_str(&first.comm)),
        });
    }
    count_rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.syscall.cmp(&b.syscall)));
    (count_rows, violations)
}
