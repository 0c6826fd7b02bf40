//! Violation events: the per-(workload, syscall) rate limit and the ring buffer.

use aya_ebpf::helpers::{
    bpf_get_current_comm,
    generated::{bpf_ktime_get_boot_ns, bpf_ktime_get_ns},
};
use probe_common::{COMM_LEN, DEFAULT_EVENTS_PER_SECOND, RateKey, RateState, ViolationEvent, stat};

use crate::{EVENT_LIMITS, SETTINGS, VIOLATIONS, bump};

/// Whether an event for (cgroup, syscall) may be sent now: `Some(n)` with the number
/// suppressed since the last one sent, or `None` past the limit. Updates race between
/// CPUs, which makes the limit approximate; counts stay exact in COUNTS.
#[inline(always)]
pub(crate) fn rate_limit(cgroup_id: u64, index: u32) -> Option<u32> {
    let limit = SETTINGS
        .get(0)
        .map_or(DEFAULT_EVENTS_PER_SECOND, |s| s.events_per_second);
    if limit == 0 {
        return Some(0);
    }
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
                if now.wrapping_sub((*state).window_start_ns) >= 1_000_000_000 {
                    (*state).window_start_ns = now;
                    (*state).sent = 0;
                }
                if (*state).sent >= limit {
                    (*state).suppressed += 1;
                    return None;
                }
                (*state).sent += 1;
                let suppressed = (*state).suppressed;
                (*state).suppressed = 0;
                Some(suppressed)
            }
        }
        None => {
            let state = RateState {
                window_start_ns: now,
                sent: 1,
                suppressed: 0,
            };
            let _ = EVENT_LIMITS.insert(key, state, 0);
            Some(0)
        }
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
        bump(stat::EVENTS_DROPPED);
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
