//! Counting calls in `COUNTS`: every call under `monitor` and `audit` (and in
//! `SLOT_COUNT_ALL` slots), only violations under `enforce`.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use probe_common::{COUNTERS_PER_SLOT, PolicySlot, SLOT_COUNT_ALL, mode};

use crate::COUNTS;

/// Whether `slot` counts every call, not only its violations (see `COUNTS`). Read
/// afresh where asked (volatile), so that no answer stays live across `decide`: on 6.1
/// a live flag there doubled the states the verifier explored in `police`.
#[inline(always)]
pub(crate) fn counts_every_call(slot: &PolicySlot) -> bool {
    // SAFETY: reads of a map value that lives as long as the program.
    let (slot_mode, flags) = unsafe {
        (
            core::ptr::read_volatile(&slot.mode),
            core::ptr::read_volatile(&slot.flags),
        )
    };
    slot_mode != mode::ENFORCE || flags & SLOT_COUNT_ALL != 0
}

/// Count one call in `COUNTS` (`slot * COUNTERS_PER_SLOT + counter`).
#[inline(always)]
pub(crate) fn count(slot_id: u32, counter: u32) {
    if let Some(p) = COUNTS.get_ptr_mut(slot_id * COUNTERS_PER_SLOT + counter) {
        // SAFETY: a u64 map value that lives as long as the program; every writer of
        // `COUNTS` adds atomically (the array is shared by all CPUs).
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, 1) };
    }
}
