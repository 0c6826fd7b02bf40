//! Counts and violations of one slot, as `run` reports them.

use std::collections::BTreeMap;

use probe_common::{ALLOW_WORDS, Decision, Outcome, PolicySlot, decide, index_to_syscall};
use serde::Serialize;

use crate::{event::Violation, syscall_table};

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
    pub outcome: String,
    /// Events seen per outcome, when they differ (a `deny` can be `denied` one time
    /// and `not-preventable` another). Event counts can trail `count` if events were
    /// dropped; `count` is exact.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub outcomes: BTreeMap<String, u64>,
    /// For `denied`: the LSM hook that denied it first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
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
    /// The arguments that decided the first event, for syscalls judged on them
    /// (`flags=NEWUSER|NEWNET`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
    /// A fork's namespace flags were caught on the kernel's copy (`task_newtask`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub new_namespace: bool,
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
    events: &[Violation],
) -> (Vec<CountRow>, Vec<ViolationRow>) {
    let mut by_index: BTreeMap<u32, Vec<&Violation>> = BTreeMap::new();
    let mut via_ring: BTreeMap<u32, Vec<&Violation>> = BTreeMap::new();
    for e in events {
        let Some(index) = e.index.or_else(|| e.key().index()) else {
            continue;
        };
        if e.via_io_uring {
            via_ring.entry(index).or_default().push(e);
        } else {
            by_index.entry(index).or_default().push(e);
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
        // Counts carry no arguments: a syscall allowed for some arguments only was a
        // violation exactly when the probe reported one.
        let judged = classified.is_some_and(|i| slot.judges_arguments(i));
        if judged && !by_index.contains_key(&index) {
            continue;
        }
        let mut no_rules = PolicySlot {
            conditional: [0; ALLOW_WORDS],
            ..*slot
        };
        if judged {
            no_rules.allow[(index >> 6) as usize % ALLOW_WORDS] &= !(1u64 << (index & 63));
        }
        let implied = match decide(&no_rules, classified, &probe_common::UnknownArgs) {
            Decision::Allow => continue,
            Decision::Violation { outcome, .. } => outcome,
            // Settled at sys_exit; without an event we cannot tell which way it went.
            Decision::Deny { .. } => Outcome::NotPreventable,
        };
        let seen = by_index.get(&index).map(Vec::as_slice).unwrap_or_default();
        let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
        for e in seen {
            *outcomes.entry(e.outcome.clone()).or_default() += 1;
        }
        let outcome = outcomes
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or(implied.name().to_string(), |(name, _)| name.clone());
        let example = seen.first();
        let hook = seen
            .iter()
            .find(|e| e.outcome == Outcome::Denied.name() && !e.hook.is_empty())
            .map(|e| e.hook.clone());
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
            fallback_killed: seen.iter().any(|e| e.fallback_killed),
            via_io_uring: false,
            pid: example.map(|e| e.pid),
            comm: example.map(|e| e.comm.clone()),
            args: seen
                .iter()
                .find(|e| !e.args.is_empty())
                .map(|e| e.args.clone()),
            new_namespace: seen.iter().any(|e| e.new_namespace),
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
            outcome: first.outcome.clone(),
            outcomes: BTreeMap::new(),
            hook: Some(first.hook.clone()).filter(|h| !h.is_empty()),
            fallback_killed: false,
            via_io_uring: true,
            pid: Some(first.pid),
            comm: Some(first.comm.clone()),
            args: None,
            new_namespace: false,
        });
    }
    count_rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.syscall.cmp(&b.syscall)));
    (count_rows, violations)
}
