//! Violation events: the per-(workload, syscall) rate limit, the per-workload budget,
//! and the ring buffer.

use aya_ebpf::helpers::{
    bpf_get_current_comm,
    generated::{bpf_ktime_get_boot_ns, bpf_ktime_get_ns},
};
use probe_common::{
    COMM_LEN, EventBudget, NO_SLOT, RateKey, RateState, UNCLASSIFIED_INDEX, ViolationEvent, stat,
    window_admits,
};

use crate::{EVENT_BUDGETS, EVENT_LIMITS, SETTINGS, VIOLATIONS, bump};

/// Whether an event for (cgroup, syscall) may be sent now: `Some(n)` with the number
/// suppressed since the last one sent, or `None` past the limit of the key or past the
/// workload's budget (then the event counts as suppressed in its key, and the next
/// event of the key carries it). Updates race between CPUs, which makes the limits
/// approximate; counts stay exact in COUNTS.
#[inline(always)]
pub(crate) fn rate_limit(cgroup_id: u64, index: u32) -> Option<u32> {
    let settings = SETTINGS.get(0).copied().unwrap_or_default();
    let limit = settings.events_per_second;
    let budget = settings.workload_events_per_second;
    let key = RateKey {
        cgroup_id,
        index,
        _reserved: 0,
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    match EVENT_LIMITS.get_ptr_mut(key) {
        Some(state) => {
            // SAFETY: map value; concurrent updates only make the limit approximate.
            unsafe {
                let admitted = limit == 0
                    || window_admits(
                        &mut (*state).window_start_ns,
                        &mut (*state).sent,
                        now,
                        limit,
                    );
                if !admitted || !budget_admits(cgroup_id, now, budget) {
                    (*state).suppressed += 1;
                    return None;
                }
                let suppressed = (*state).suppressed;
                (*state).suppressed = 0;
                Some(suppressed)
            }
        }
        None => {
            let admitted = budget_admits(cgroup_id, now, budget);
            let state = RateState {
                window_start_ns: now,
                sent: admitted as u32,
                suppressed: !admitted as u32,
            };
            let _ = EVENT_LIMITS.insert(key, state, 0);
            admitted.then_some(0)
        }
    }
}

/// The workload's budget entry, made on first use. `None` only when the LRU map could
/// not take it.
#[inline(always)]
fn budget_of(cgroup_id: u64, now: u64) -> Option<*mut EventBudget> {
    if let Some(b) = EVENT_BUDGETS.get_ptr_mut(cgroup_id) {
        return Some(b);
    }
    let fresh = EventBudget {
        window_start_ns: now,
        ..EventBudget::default()
    };
    // BPF_NOEXIST: a CPU that raced us to it keeps its entry.
    let _ = EVENT_BUDGETS.insert(cgroup_id, fresh, 1);
    EVENT_BUDGETS.get_ptr_mut(cgroup_id)
}

/// Whether the workload's budget takes one more event now; if not, it is counted held.
#[inline(always)]
fn budget_admits(cgroup_id: u64, now: u64, budget: u32) -> bool {
    if budget == 0 {
        return true;
    }
    let Some(b) = budget_of(cgroup_id, now) else {
        return true;
    };
    // SAFETY: map value; concurrent updates only make the budget approximate.
    unsafe {
        if window_admits(&mut (*b).window_start_ns, &mut (*b).sent, now, budget) {
            return true;
        }
        (*b).held += 1;
    }
    bump(stat::EVENTS_HELD);
    false
}

/// An event of the workload was lost to a full ring buffer: counted for it and overall.
#[inline(always)]
fn count_dropped(cgroup_id: u64) {
    bump(stat::EVENTS_DROPPED);
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(b) = budget_of(cgroup_id, now) {
        // SAFETY: map value; a lost increment under a race only undercounts.
        unsafe { (*b).dropped += 1 };
    }
}

/// One event's fields, as `emit` writes them.
pub(crate) struct Report {
    pub(crate) slot: u32,
    pub(crate) mode: u32,
    pub(crate) outcome: u32,
    pub(crate) cgroup_id: u64,
    pub(crate) id: i64,
    pub(crate) index: u32,
    pub(crate) hook: u32,
    pub(crate) flags: u32,
    /// The arguments that decided it (with [`EVENT_ARGS`] in `flags`), else zeros.
    pub(crate) args: [u64; 2],
}

#[inline(always)]
pub(crate) fn emit(r: &Report) {
    let Some(suppressed) = rate_limit(r.cgroup_id, r.index) else {
        bump(stat::EVENTS_SUPPRESSED);
        return;
    };
    let Some(mut entry) = VIOLATIONS.reserve::<ViolationEvent>(0) else {
        count_dropped(r.cgroup_id);
        return;
    };
    let pid_tgid = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    let comm = bpf_get_current_comm().unwrap_or([0u8; COMM_LEN]);
    entry.write(ViolationEvent {
        // SAFETY: plain helper call.
        boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        cgroup_id: r.cgroup_id,
        id: r.id,
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        index: r.index,
        slot: r.slot,
        mode: r.mode,
        outcome: r.outcome,
        comm,
        hook: r.hook,
        flags: r.flags,
        suppressed,
        _reserved: 0,
        args: r.args,
    });
    entry.submit(0);
}

/// A hold (see `hold`): an event for the agent, past every rate limit and budget (each
/// is one stopped process, which the agent must hear of; if the ring is full, the agent's
/// periodic look at `HELD` finds it).
#[inline(always)]
pub(crate) fn emit_hold(cgroup_id: u64) {
    let Some(mut entry) = VIOLATIONS.reserve::<ViolationEvent>(0) else {
        bump(stat::EVENTS_DROPPED);
        return;
    };
    let pid_tgid = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    let comm = bpf_get_current_comm().unwrap_or([0u8; COMM_LEN]);
    entry.write(ViolationEvent {
        // SAFETY: plain helper call.
        boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        cgroup_id,
        id: 0,
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        index: UNCLASSIFIED_INDEX,
        slot: NO_SLOT,
        mode: 0,
        outcome: 0,
        comm,
        hook: 0,
        flags: probe_common::EVENT_HOLD,
        suppressed: 0,
        _reserved: 0,
        args: [0; 2],
    });
    entry.submit(0);
}
