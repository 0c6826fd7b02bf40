//! The probe's settings and the limits on violation events: the per-(workload, syscall)
//! rate limit and the per-workload budget, and the window both count in.

/// Value of `SETTINGS[0]`: probe-wide settings the agent changes at run time.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSettings {
    /// Bit `l` set: some binding sits at cgroup level `l` (1..=31). On a `WORKLOADS` miss
    /// the probe tries the task's ancestors at those levels, deepest first.
    pub ancestor_levels: u32,
    /// Violation events per (cgroup, syscall) per second; past it, events are counted
    /// as suppressed (and carried by the next event) instead of sent. 0 = no limit.
    pub events_per_second: u32,
    /// Violation events per workload (cgroup) per second, whatever the syscalls: the
    /// budget that keeps one workload cycling through syscall numbers from filling the
    /// ring buffer that every workload shares. Past it, events are counted as suppressed
    /// in their (cgroup, syscall) key, as past `events_per_second`. 0 = no budget.
    pub workload_events_per_second: u32,
    /// Bit `l` set: some start-hold root (`HOLD_ROOTS`) sits at cgroup level `l`. The
    /// first exec in an unknown cgroup below one is held until the agent has looked
    /// (see `hold`). 0: no holds.
    pub hold_levels: u32,
}

/// Default of [`ProbeSettings::events_per_second`].
pub const DEFAULT_EVENTS_PER_SECOND: u32 = 20;
/// Default of [`ProbeSettings::workload_events_per_second`]: ten syscalls at the full
/// per-syscall rate. The ring buffer holds ~2,700 events, so a dozen workloads at their
/// budget cannot fill it between two reads of the agent.
pub const DEFAULT_WORKLOAD_EVENTS_PER_SECOND: u32 = 200;

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            ancestor_levels: 0,
            events_per_second: DEFAULT_EVENTS_PER_SECOND,
            workload_events_per_second: DEFAULT_WORKLOAD_EVENTS_PER_SECOND,
            hold_levels: 0,
        }
    }
}

/// One second's window of an event rate limit: whether one more event fits in it, at
/// `now` (ns), under `limit` events per second. Opens a new window when a second has
/// passed; counts the event in `sent` when it fits.
#[inline(always)]
pub fn window_admits(window_start_ns: &mut u64, sent: &mut u32, now: u64, limit: u32) -> bool {
    if now.wrapping_sub(*window_start_ns) >= 1_000_000_000 {
        *window_start_ns = now;
        *sent = 0;
    }
    if *sent >= limit {
        return false;
    }
    *sent += 1;
    true
}

/// Value of `EVENT_BUDGETS`: one workload's event budget, and what it cost the workload.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventBudget {
    pub window_start_ns: u64,
    /// Events sent in this window.
    pub sent: u32,
    pub _reserved: u32,
    /// Events held back by the budget, ever (each also counted as suppressed in its
    /// (cgroup, syscall) key, so violation totals stay exact).
    pub held: u64,
    /// Events of this workload lost because the ring buffer was full, ever.
    pub dropped: u64,
}

/// Key of `EVENT_LIMITS`: one rate limit per workload and syscall.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateKey {
    pub cgroup_id: u64,
    pub index: u32,
    pub _reserved: u32,
}

/// Value of `EVENT_LIMITS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateState {
    pub window_start_ns: u64,
    pub sent: u32,
    /// Suppressed since the last event sent for this key.
    pub suppressed: u32,
}
