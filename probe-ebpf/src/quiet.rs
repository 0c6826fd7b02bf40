//! What `sys_enter` reads before anything else, with one lookup: the memo's kernel
//! generation, and whether anything unusual (a setup, a stray, a pending denial, a
//! doomed workload, a ring owner) is going on anywhere on the node.

use aya_ebpf::{macros::map, maps::Array};
use core::intrinsics::{AtomicOrdering, atomic_xadd};
use probe_common::KernelState;

/// The kernel's generation and the count of anything unusual (one [`KernelState`]).
/// Written by the probe only, with atomic adds: [`bump_kernel_generation`] and
/// [`counter_add`]; read by `sys_enter`.
#[map]
static KERNEL_STATE: Array<KernelState> = Array::with_max_entries(1, 0);

/// `KERNEL_STATE` as `sys_enter` found it on entry.
#[derive(Clone, Copy)]
pub(crate) struct Node {
    pub(crate) kernel_generation: u64,
    /// Whether a setup, stray, denial, doom or ring owner may exist: then each is
    /// checked for; otherwise none is.
    pub(crate) unusual: bool,
}

/// Both words, each with a plain volatile load (an aligned u64 load does not tear).
/// Unreadable (it never is: index 0 of a one-entry array), everything counts as
/// unusual.
#[inline(always)]
pub(crate) fn now() -> Node {
    let Some(state) = KERNEL_STATE.get_ptr(0) else {
        return Node {
            kernel_generation: 0,
            unusual: true,
        };
    };
    // SAFETY: map values that live as long as the program.
    unsafe {
        Node {
            kernel_generation: core::ptr::read_volatile(&raw const (*state).generation),
            unusual: core::ptr::read_volatile(&raw const (*state).unusual) != 0,
        }
    }
}

/// Add `delta` to a one-entry u64 counter map (`u64::MAX` takes one away), and to the
/// unusual sum: raised first and lowered last, so the sum is never zero while the count
/// is not. Every writer of such a counter uses this.
#[inline(always)]
pub(crate) fn counter_add(counter: &Array<u64>, delta: u64) {
    let lowering = delta > i64::MAX as u64;
    if !lowering {
        add_unusual(delta);
    }
    if let Some(p) = counter.get_ptr_mut(0) {
        add(p, delta);
    }
    if lowering {
        add_unusual(delta);
    }
}

#[inline(always)]
fn add_unusual(delta: u64) {
    if let Some(state) = KERNEL_STATE.get_ptr_mut(0) {
        // SAFETY: a field of the one value, which lives as long as the program.
        add(unsafe { &raw mut (*state).unusual }, delta);
    }
}

/// The atomic add every writer of `KERNEL_STATE` and of the counts it sums uses. (An
/// atomic add is a full barrier on x86: the other CPUs see the adds in order.)
#[inline(always)]
fn add(word: *mut u64, delta: u64) {
    // SAFETY: callers pass a u64 map value that lives as long as the program.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(word, delta) };
}

/// Whether a one-entry u64 counter map is not zero: one array load. (A plain volatile
/// load: the BPF backend has no atomic load, and an aligned u64 load does not tear.)
#[inline(always)]
pub(crate) fn counter_nonzero(counter: &Array<u64>) -> bool {
    counter
        .get_ptr(0)
        // SAFETY: a u64 map value that lives as long as the program.
        .is_some_and(|p| unsafe { core::ptr::read_volatile(p) } != 0)
}

/// A task changed cgroup or exits: no memo entry from before stays current.
#[inline(always)]
pub(crate) fn bump_kernel_generation() {
    if let Some(state) = KERNEL_STATE.get_ptr_mut(0) {
        // SAFETY: as in `add_unusual`.
        add(unsafe { &raw mut (*state).generation }, 1);
    }
}
