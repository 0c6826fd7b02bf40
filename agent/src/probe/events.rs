//! What the probe says about violation events: those the rate limits hold back, the
//! per-workload budgets, and the health counters; and letting go of the event state of
//! workloads that are gone.

use anyhow::Context as _;
use probe_common::{RateKey, stat};

use super::{Probe, ProbeStats};

impl Probe {
    /// Violations suppressed by the rate limit and not yet carried by an event, per
    /// (cgroup id, syscall index): with the events' own counts, exact totals.
    pub fn pending_suppressed(&self) -> anyhow::Result<Vec<(u64, u32, u64)>> {
        let mut out = Vec::new();
        for item in self.limits.iter() {
            let (key, state) = item.context("reading EVENT_LIMITS")?;
            if state.suppressed > 0 {
                out.push((key.cgroup_id, key.index, u64::from(state.suppressed)));
            }
        }
        Ok(out)
    }

    /// Per workload (cgroup id) with any: the events its budget held back and the events
    /// of it the full ring buffer lost, since it was first seen.
    pub fn event_budgets(&self) -> anyhow::Result<Vec<(u64, u64, u64)>> {
        let mut out = Vec::new();
        for item in self.budgets.iter() {
            let (cgroup_id, b) = item.context("reading EVENT_BUDGETS")?;
            if b.held > 0 || b.dropped > 0 {
                out.push((cgroup_id, b.held, b.dropped));
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Let go of the kernel's per-workload event state (budgets, rate limits) of
    /// workloads that are gone: the LRU maps would evict them in time, but a gone
    /// workload's entries must not push out a live one's.
    pub fn forget_event_state(&mut self, live: &dyn Fn(u64) -> bool) -> anyhow::Result<usize> {
        let budgets: Vec<u64> = self
            .budgets
            .keys()
            .filter_map(Result::ok)
            .filter(|id| !live(*id))
            .collect();
        let limits: Vec<RateKey> = self
            .limits
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !live(k.cgroup_id))
            .collect();
        for id in &budgets {
            // Already gone (evicted) is fine.
            let _ = self.budgets.remove(id);
        }
        for k in &limits {
            let _ = self.limits.remove(k);
        }
        Ok(budgets.len() + limits.len())
    }

    pub fn stats(&self) -> anyhow::Result<ProbeStats> {
        let sum = |i: u32| -> anyhow::Result<u64> { Ok(self.stats.get(&i, 0)?.iter().sum()) };
        Ok(ProbeStats {
            events_dropped: sum(stat::EVENTS_DROPPED)?,
            kill_failed: sum(stat::KILL_FAILED)?,
            mark_failed: sum(stat::MARK_FAILED)?,
            events_suppressed: sum(stat::EVENTS_SUPPRESSED)?,
            events_held: sum(stat::EVENTS_HELD)?,
            strays: sum(stat::STRAYS)?,
            stray_failed: sum(stat::STRAY_FAILED)?,
            setups: sum(stat::SETUPS)?,
            setup_failed: sum(stat::SETUP_FAILED)?,
            holds: sum(stat::HOLDS)?,
            hold_failed: sum(stat::HOLD_FAILED)?,
        })
    }

    /// The cgroups doomed by a kill under `killScope: workload`.
    pub fn doomed_workloads(&self) -> anyhow::Result<Vec<u64>> {
        let mut out = Vec::new();
        for key in self.doomed.keys() {
            out.push(key.context("reading DOOMED_WORKLOADS")?);
        }
        Ok(out)
    }

    /// Whether the cgroup is doomed now.
    pub fn is_doomed(&self, cgroup_id: u64) -> bool {
        self.doomed.get(&cgroup_id, 0).is_ok()
    }
}
