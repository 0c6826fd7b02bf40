//! What the agent keeps for its API and its metrics: the recent violation records,
//! violation totals per series, reload outcomes; and the `/metrics` snapshot.

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap, VecDeque},
    time::SystemTime,
};

use probe_common::index_to_syscall;
use serde_json::Value;

use super::Agent;
use crate::{
    clock::unix_ms,
    event::Violation,
    metrics::{Snapshot, ViolationSeries},
    model::Counts,
    probe::pins,
    syscall_table,
};

/// Violation records kept for `sysfence report` (the newest).
pub const RECENT_VIOLATIONS: usize = 10_000;

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
    pub exported: RefCell<BTreeMap<ViolationSeries, u64>>,
    pub reloads: BTreeMap<String, u64>,
    pub last_reload_success: SystemTime,
    pub last_reload: Value,
}

impl Telemetry {
    pub fn record_violation(&mut self, mut v: Violation) {
        let series = ViolationSeries::of(&v);
        let cgroup_id = v.workload.cgroup_id;
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
        self.next_seq += 1;
        v.stamp(unix_ms(SystemTime::now()), self.next_seq);
        self.last_record.insert((cgroup_id, index), self.next_seq);
        self.recent.push_back(v);
        if self.recent.len() > RECENT_VIOLATIONS {
            self.recent.pop_front();
        }
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
            last_record: HashMap::new(),
            next_seq: 0,
            exported: RefCell::new(BTreeMap::new()),
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

    /// Everything `/metrics` exports, read now.
    pub(super) fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for ((policy, monitor_only), counts) in self.workloads.policy_counts(&self.probe) {
            let mode = if monitor_only {
                "monitor-only"
            } else {
                "as-written"
            };
            for (index, n) in counts {
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
                if let Some(key) = self.telemetry.by_rate_key.get(&(cgroup_id, index)) {
                    *s.violations.entry(key.clone()).or_default() += n;
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
            s.kill_failed = stats.kill_failed;
            s.mark_failed = stats.mark_failed;
        }
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
