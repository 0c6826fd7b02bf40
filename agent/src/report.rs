//! Counts and violations of one slot, as `run` reports them.

use std::collections::BTreeMap;

use probe_common::{Decision, Outcome, PolicySlot, ViolationEvent, decide, index_to_syscall};
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
    pub outcome: &'static str,
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
    let mut first_event: BTreeMap<u32, &ViolationEvent> = BTreeMap::new();
    for e in events {
        first_event.entry(e.index).or_insert(e);
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
        if let Decision::Violation { outcome, .. } = decide(slot, classified) {
            let example = first_event.get(&index);
            let outcome = example
                .and_then(|e| Outcome::from_u32(e.outcome))
                .unwrap_or(outcome);
            violations.push(ViolationRow {
                abi,
                syscall,
                nr,
                count,
                outcome: outcome.name(),
                pid: example.map(|e| e.tgid),
                comm: example.map(|e| comm_str(&e.comm)),
            });
        }
    }
    count_rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.syscall.cmp(&b.syscall)));
    (count_rows, violations)
}
