//! What the agent keeps for its API and its metrics: the recent violation records,
//! violation totals per series, reload outcomes; and the `/metrics` snapshot.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    time::SystemTime,
};

use probe_common::index_to_syscall;
use serde_json::Value;

use super::Agent;
use crate::{
    clock::unix_ms,
    event::Violation,
    metrics::{BudgetRow, Snapshot, ViolationSeries},
    model::{Counts, SyscallKey},
    probe::pins,
    syscall_table,
};

/// Violation records kept for `sysfence report` (the newest).
pub const RECENT_VIOLATIONS: usize = 10_000;
/// Violation series (`sysfence_violations_total`) per workload with their own syscall
/// label; past it, a workload's further syscalls are summed in one series labelled
/// `syscall="other"`, so that no workload can grow the metrics (or the agent's memory)
/// by cycling through syscall numbers.
pub const SERIES_PER_WORKLOAD: usize = 32;
/// The label of the series that sums the rest.
pub const OTHER: &str = "other";
/// Syscall series (`sysfence_syscalls_total`) per policy and applied mode with their own
/// `abi` and `syscall` labels; syscalls first seen past it are summed in one series
/// labelled `other`.
pub const SYSCALL_SERIES_PER_POLICY: usize = 64;

/// A policy's per-syscall counts as series: those of `members` keep their own, new
/// syscalls join (largest count first) while there is room, the rest are summed under
/// `None`. Membership only grows, so no series, `other` included, ever goes back.
pub fn cap_syscall_series(
    members: &mut BTreeSet<u32>,
    mut counts: Vec<(u32, u64)>,
    cap: usize,
) -> Vec<(Option<u32>, u64)> {
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut out = Vec::with_capacity(counts.len().min(cap + 1));
    let mut other = 0;
    for (index, n) in counts {
        if members.contains(&index) || members.len() < cap && members.insert(index) {
            out.push((Some(index), n));
        } else {
            other += n;
        }
    }
    if other > 0 {
        out.push((None, other));
    }
    out
}

/// What the agent keeps for its API and metrics.
pub struct Telemetry {
    pub started: SystemTime,
    pub recent: VecDeque<Violation>,
    pub violations: BTreeMap<ViolationSeries, u64>,
    /// The key of the last event per (cgroup id, syscall index), to name violations
    /// the rate limit holds back, and the highest total exported per key (a counter
    /// never goes back, even when a scrape falls between the kernel sending an event
    /// and the agent reading it).
    pub by_rate_key: HashMap<(u64, u32), ViolationSeries>,
    /// The sequence number of the last record per (cgroup id, syscall index).
    pub last_record: HashMap<(u64, u32), u64>,
    pub next_seq: u64,
    /// Violations per workload (cgroup id) and `abi:syscall`, for watches.
    pub watch_violations: HashMap<u64, Counts>,
    /// The arguments that decided the last violation, per workload and `abi:syscall`,
    /// for watches (syscalls judged on their arguments only).
    pub watch_violation_args: HashMap<u64, BTreeMap<SyscallKey, String>>,
    /// The series each workload (cgroup id) counts in, to cap them and to let them go
    /// with the workload.
    pub series_of: HashMap<u64, BTreeSet<ViolationSeries>>,
    pub exported: RefCell<BTreeMap<ViolationSeries, u64>>,
    /// The syscall indexes with a `sysfence_syscalls_total` series of their own, per
    /// (policy, monitor-only) (see [`cap_syscall_series`]).
    pub syscall_series: RefCell<HashMap<(String, bool), BTreeSet<u32>>>,
    pub reloads: BTreeMap<String, u64>,
    pub last_reload_success: SystemTime,
    pub last_reload: Value,
}

impl Telemetry {
    pub fn record_violation(&mut self, mut v: Violation) {
        let cgroup_id = v.workload.cgroup_id;
        let mut series = ViolationSeries::of(&v);
        let mine = self.series_of.entry(cgroup_id).or_default();
        if !mine.contains(&series) && mine.len() >= SERIES_PER_WORKLOAD {
            series.abi = OTHER.to_string();
            series.syscall = OTHER.to_string();
        }
        mine.insert(series.clone());
        let index = v.index.or_else(|| v.key().index());
        *self.violations.entry(series.clone()).or_default() += v.calls();
        let index = index.unwrap_or(probe_common::UNCLASSIFIED_INDEX);
        self.by_rate_key.insert((cgroup_id, index), series);
        *self
            .watch_violations
            .entry(cgroup_id)
            .or_default()
            .entry(v.key())
            .or_default() += v.calls();
        if !v.args.is_empty() {
            self.watch_violation_args
                .entry(cgroup_id)
                .or_default()
                .insert(v.key(), v.args.clone());
        }
        self.next_seq += 1;
        v.stamp(unix_ms(SystemTime::now()), self.next_seq);
        self.last_record.insert((cgroup_id, index), self.next_seq);
        self.recent.push_back(v);
        if self.recent.len() > RECENT_VIOLATIONS {
            self.recent.pop_front();
        }
    }

    /// Let go of what is kept per workload for workloads that are gone (`live` says
    /// which are not): their series, rate-limit keys and watch counts. The recent
    /// records stay (bounded), for reports.
    pub fn prune(&mut self, live: &dyn Fn(u64) -> bool) -> usize {
        let gone: BTreeSet<u64> = self
            .series_of
            .keys()
            .chain(self.watch_violations.keys())
            .copied()
            .filter(|id| !live(*id))
            .collect();
        for id in &gone {
            for series in self.series_of.remove(id).unwrap_or_default() {
                self.violations.remove(&series);
                self.exported.get_mut().remove(&series);
            }
            self.watch_violations.remove(id);
            self.watch_violation_args.remove(id);
        }
        self.by_rate_key.retain(|(id, _), _| live(*id));
        self.last_record.retain(|(id, _), _| live(*id));
        gone.len()
    }

    /// The series the suppressed calls of (cgroup, syscall index) count in. A key no
    /// event named yet (the workload's budget held every one of them) gets the series
    /// its first event would have, modelled on a series of the same workload (same
    /// policy and outcome), so that the totals stay exact; `None` for a workload with
    /// no series at all.
    pub fn series_for_pending(&mut self, cgroup_id: u64, index: u32) -> Option<ViolationSeries> {
        if let Some(series) = self.by_rate_key.get(&(cgroup_id, index)) {
            return Some(series.clone());
        }
        let mine = self.series_of.get_mut(&cgroup_id)?;
        let template = mine.iter().next()?.clone();
        let (abi, name) = syscall_table::describe_index(index);
        let mut series = ViolationSeries {
            abi: abi.map_or("unknown", |a| a.name()).to_string(),
            syscall: syscall_table::label(abi, &name),
            ..template
        };
        if !mine.contains(&series) && mine.len() >= SERIES_PER_WORKLOAD {
            series.abi = OTHER.to_string();
            series.syscall = OTHER.to_string();
        }
        mine.insert(series.clone());
        self.by_rate_key.insert((cgroup_id, index), series.clone());
        Some(series)
    }

    pub fn count_reload(&mut self, result: &str) {
        *self.reloads.entry(result.to_string()).or_default() += 1;
    }
}

impl Telemetry {
    pub fn new(now: SystemTime) -> Telemetry {
        Telemetry {
            started: now,
            recent: VecDeque::new(),
            violations: BTreeMap::new(),
            by_rate_key: HashMap::new(),
            watch_violations: HashMap::new(),
            watch_violation_args: HashMap::new(),
            series_of: HashMap::new(),
            last_record: HashMap::new(),
            next_seq: 0,
            exported: RefCell::new(BTreeMap::new()),
            syscall_series: RefCell::new(HashMap::new()),
            reloads: BTreeMap::new(),
            last_reload_success: now,
            last_reload: serde_json::json!({"result": "initial", "t_ms": unix_ms(now)}),
        }
    }
}

impl Agent {
    /// The violation records kept, with the calls the kernel's rate limit still holds
    /// back added to the last record of their workload and syscall: each record stands
    /// for `1 + suppressed` calls, and the total is exact.
    pub(super) fn recent_violations(&self) -> Vec<Violation> {
        let mut records: Vec<Violation> = self.telemetry.recent.iter().cloned().collect();
        if let Ok(pending) = self.probe.pending_suppressed() {
            for (cgroup_id, index, n) in pending {
                let Some(last) = self.telemetry.last_record.get(&(cgroup_id, index)) else {
                    continue;
                };
                if let Some(r) = records.iter_mut().rev().find(|r| r.seq == *last) {
                    r.suppressed += n;
                }
            }
        }
        records
    }

    /// Workloads whose events their budget held back or the full ring buffer lost, named,
    /// read from the kernel now.
    pub(super) fn budget_rows(&self) -> Vec<BudgetRow> {
        let Ok(budgets) = self.probe.event_budgets() else {
            return Vec::new();
        };
        budgets
            .into_iter()
            .map(|(cgroup_id, held, dropped)| {
                let mut workload = self
                    .workloads
                    .describe(cgroup_id)
                    .map(crate::workload::Workload::to_ref)
                    .unwrap_or_default();
                workload.cgroup_id = cgroup_id;
                BudgetRow {
                    workload,
                    held,
                    dropped,
                }
            })
            .collect()
    }

    /// Everything `/metrics` exports, read now.
    pub(super) fn snapshot(&mut self) -> Snapshot {
        let mut s = Snapshot::default();
        for ((policy, monitor_only), counts) in self.workloads.policy_counts(&self.probe) {
            let mode = if monitor_only {
                "monitor-only"
            } else {
                "as-written"
            };
            let mut members = self.telemetry.syscall_series.borrow_mut();
            let members = members.entry((policy.clone(), monitor_only)).or_default();
            let counts = counts.into_iter().collect();
            for (index, n) in cap_syscall_series(members, counts, SYSCALL_SERIES_PER_POLICY) {
                let Some(index) = index else {
                    *s.syscalls
                        .entry((policy.clone(), mode.to_string(), OTHER.into(), OTHER.into()))
                        .or_default() += n;
                    continue;
                };
                let (abi, name) = syscall_table::describe_index(index);
                let abi = abi.map_or("unknown", |a| a.name()).to_string();
                let name = if index_to_syscall(index).is_some() {
                    name.to_string()
                } else {
                    "unclassified".to_string()
                };
                *s.syscalls
                    .entry((policy.clone(), mode.to_string(), abi, name))
                    .or_default() += n;
            }
        }
        s.violations = self.telemetry.violations.clone();
        if let Ok(pending) = self.probe.pending_suppressed() {
            for (cgroup_id, index, n) in pending {
                if let Some(key) = self.telemetry.series_for_pending(cgroup_id, index) {
                    *s.violations.entry(key).or_default() += n;
                }
            }
        }
        let mut exported = self.telemetry.exported.borrow_mut();
        for (key, n) in s.violations.iter_mut() {
            let high = exported.entry(key.clone()).or_default();
            *n = (*n).max(*high);
            *high = *n;
        }
        drop(exported);
        for row in self.workloads.policy_rows() {
            s.bound.insert(
                row["name"].as_str().unwrap_or("").to_string(),
                row["bound"].as_u64().unwrap_or(0),
            );
        }
        s.reloads = self.telemetry.reloads.clone();
        s.last_reload_success = self
            .telemetry
            .last_reload_success
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if let Ok(stats) = self.probe.stats() {
            s.events_dropped = stats.events_dropped;
            s.events_suppressed = stats.events_suppressed;
            s.events_held = stats.events_held;
            s.kill_failed = stats.kill_failed;
            s.mark_failed = stats.mark_failed;
        }
        s.budgets = self.budget_rows();
        let (used, capacity) = self.workloads.slot_usage();
        s.slots_used = used as u64;
        s.slots_capacity = capacity as u64;
        s.probe = vec![
            ("pinned".into(), self.probe.pin_dir().is_some().to_string()),
            ("adopted".into(), self.probe.adopted().to_string()),
            ("layout".into(), pins::LAYOUT_VERSION.to_string()),
            (
                "deny".into(),
                if self.deny.is_ok() { "attached" } else { "off" }.into(),
            ),
            (
                "self_protection".into(),
                if self.guards.is_ok() {
                    "attached"
                } else {
                    "off"
                }
                .into(),
            ),
        ];
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WorkloadRef;

    fn violation(cgroup_id: u64, nr: i64) -> Violation {
        Violation {
            policy: "web".into(),
            workload: WorkloadRef {
                cgroup_id,
                cgroup: format!("pods/w{cgroup_id}"),
                ..WorkloadRef::default()
            },
            abi: "x86_64".into(),
            syscall: format!("#{nr}"),
            outcome: "audited".into(),
            ..Violation::default()
        }
    }

    #[test]
    fn a_workload_cycling_syscalls_cannot_grow_the_series_past_its_cap() {
        let mut t = Telemetry::new(SystemTime::now());
        for nr in 0..1200 {
            t.record_violation(violation(1, 600 + nr));
        }
        t.record_violation(violation(2, 7));
        let of = |id: u64| {
            t.violations
                .keys()
                .filter(|s| s.cgroup == format!("pods/w{id}"))
                .count()
        };
        assert_eq!(
            of(1),
            SERIES_PER_WORKLOAD + 1,
            "its own series and one `other`"
        );
        assert_eq!(of(2), 1, "another workload keeps its own series");
        let other: u64 = t
            .violations
            .iter()
            .filter(|(s, _)| s.syscall == OTHER)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(other, 1200 - SERIES_PER_WORKLOAD as u64, "summed, not lost");
    }

    #[test]
    fn syscall_series_are_capped_per_policy_and_never_go_back() {
        let mut members = BTreeSet::new();
        let first: Vec<(u32, u64)> = (0..100).map(|i| (i, 1000 - u64::from(i))).collect();
        let series = cap_syscall_series(&mut members, first, 10);
        assert_eq!(series.len(), 11, "ten of their own and `other`");
        assert_eq!(series[0], (Some(0), 1000), "the largest first");
        let other: u64 = (10..100).map(|i| 1000 - i).sum();
        assert_eq!(series[10], (None, other), "summed, not lost");
        // A syscall that grows past the members later stays in `other`, and the members
        // keep their series even when they are no longer the largest.
        let mut later: Vec<(u32, u64)> = (0..100).map(|i| (i, 1000 - u64::from(i))).collect();
        later[50].1 = 1_000_000;
        let series = cap_syscall_series(&mut members, later, 10);
        assert!(series.contains(&(Some(9), 991)));
        assert!(!series.iter().any(|(i, _)| *i == Some(50)));
        assert_eq!(series.last(), Some(&(None, other - 950 + 1_000_000)));
        assert_eq!(members.len(), 10);
    }

    #[test]
    fn calls_held_back_before_any_event_of_their_syscall_count_in_the_workloads_series() {
        let mut t = Telemetry::new(SystemTime::now());
        assert_eq!(
            t.series_for_pending(1, 1024 + 600),
            None,
            "nothing to model on"
        );
        t.record_violation(violation(1, 7));
        let held = t.series_for_pending(1, 1024 + 600).unwrap();
        assert_eq!((held.abi.as_str(), held.policy.as_str()), ("x32", "web"));
        assert_eq!(held.outcome, "audited");
        assert_eq!(held.syscall, "#600 (x32)");
        assert_eq!(
            t.series_for_pending(1, 1024 + 600),
            Some(held),
            "the same each time"
        );
        for nr in 0..100 {
            t.series_for_pending(1, 1024 + nr);
        }
        assert_eq!(t.series_of[&1].len(), SERIES_PER_WORKLOAD + 1, "capped");
    }

    #[test]
    fn watches_get_the_arguments_of_the_last_violation() {
        let mut t = Telemetry::new(SystemTime::now());
        let mut v = violation(1, 56);
        v.syscall = "clone".into();
        v.args = "flags=NEWUSER".into();
        t.record_violation(v.clone());
        v.args = "flags=NEWNET".into();
        t.record_violation(v);
        t.record_violation(violation(1, 7));
        let args = &t.watch_violation_args[&1];
        assert_eq!(args.len(), 1, "only syscalls judged on their arguments");
        assert_eq!(args[&SyscallKey::new("x86_64", "clone")], "flags=NEWNET");
        t.prune(&|_| false);
        assert!(t.watch_violation_args.is_empty());
    }

    #[test]
    fn what_a_workload_leaves_behind_goes_with_it() {
        let mut t = Telemetry::new(SystemTime::now());
        for nr in 0..10 {
            t.record_violation(violation(1, nr));
            t.record_violation(violation(2, nr));
        }
        assert_eq!(t.prune(&|id| id == 2), 1);
        assert!(t.violations.keys().all(|s| s.cgroup == "pods/w2"));
        assert!(t.by_rate_key.keys().all(|(id, _)| *id == 2));
        assert!(!t.watch_violations.contains_key(&1));
        assert_eq!(t.recent.len(), 20, "records stay for reports");
    }
}
