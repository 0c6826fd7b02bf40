//! Which policy slot holds what: the agent's allocator over `POLICIES`.
//!
//! A changed policy never rewrites the slot its workloads read: it is written into a
//! free slot, the workloads are switched to it (one `WORKLOADS` write each), and the old
//! slot is freed. A freed slot is not reused for [`QUARANTINE`], so that a syscall that
//! read the old binding just before the switch still finds the old policy whole.

use std::time::{Duration, Instant};

/// How long a freed slot keeps its content before it may be written again: far longer
/// than any run of the probe (nanoseconds), even preempted.
pub const QUARANTINE: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Holds a policy the agent uses (or a binding in the kernel still points at it).
    InUse,
    /// Free since then; reusable once [`QUARANTINE`] has passed.
    Free(Instant),
    /// Never written, or emptied long ago.
    Clean,
}

#[derive(Debug)]
pub struct SlotPool {
    states: Vec<State>,
}

impl SlotPool {
    /// `capacity` slots, all free.
    pub fn new(capacity: u32) -> SlotPool {
        SlotPool {
            states: vec![State::Clean; capacity as usize],
        }
    }

    pub fn capacity(&self) -> u32 {
        self.states.len() as u32
    }

    /// Mark a slot as in use (adopted from a pinned probe, or allocated).
    pub fn claim(&mut self, slot: u32) {
        if let Some(s) = self.states.get_mut(slot as usize) {
            *s = State::InUse;
        }
    }

    pub fn in_use(&self, slot: u32) -> bool {
        self.states.get(slot as usize) == Some(&State::InUse)
    }

    /// Free a slot: reusable after the quarantine.
    pub fn release(&mut self, slot: u32, now: Instant) {
        if let Some(s) = self.states.get_mut(slot as usize)
            && *s == State::InUse
        {
            *s = State::Free(now);
        }
    }

    /// A slot to write now, claimed, and whether its counters need zeroing (a clean
    /// slot's are zero already); `Err(wait)` when every free slot is still in
    /// quarantine (try again after `wait`), `Err(Duration::MAX)` when none is free.
    pub fn allocate(&mut self, now: Instant) -> Result<(u32, bool), Duration> {
        if let Some(i) = self.states.iter().position(|s| *s == State::Clean) {
            self.states[i] = State::InUse;
            return Ok((i as u32, false));
        }
        let mut wait = Duration::MAX;
        for (i, s) in self.states.iter_mut().enumerate() {
            if let State::Free(since) = *s {
                let age = now.saturating_duration_since(since);
                if age >= QUARANTINE {
                    *s = State::InUse;
                    return Ok((i as u32, true));
                }
                wait = wait.min(QUARANTINE - age);
            }
        }
        Err(wait)
    }

    /// Free slots past their quarantine, whose counters may be zeroed now (then
    /// [`SlotPool::mark_clean`]), so that a reload need not.
    pub fn scrubbable(&self, now: Instant) -> Vec<u32> {
        self.states
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                State::Free(since) if now.saturating_duration_since(*since) >= QUARANTINE => {
                    Some(i as u32)
                }
                _ => None,
            })
            .collect()
    }

    /// A free slot's counters are zero: it can be allocated without zeroing.
    pub fn mark_clean(&mut self, slot: u32) {
        if let Some(s) = self.states.get_mut(slot as usize)
            && matches!(s, State::Free(_))
        {
            *s = State::Clean;
        }
    }

    /// A slot of a pinned probe that no policy holds: its counters are from before.
    pub fn mark_dirty(&mut self, slot: u32, now: Instant) {
        if let Some(s) = self.states.get_mut(slot as usize)
            && *s == State::Clean
        {
            *s = State::Free(now - QUARANTINE);
        }
    }

    /// Slots in use.
    pub fn used(&self) -> usize {
        self.states.iter().filter(|s| **s == State::InUse).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_slots_wait_out_the_quarantine() {
        let t0 = Instant::now();
        let mut pool = SlotPool::new(2);
        assert_eq!(pool.allocate(t0), Ok((0, false)));
        assert_eq!(pool.allocate(t0), Ok((1, false)));
        assert_eq!(pool.allocate(t0), Err(Duration::MAX));
        pool.release(0, t0);
        assert!(!pool.in_use(0));
        // Still in quarantine: the old content must stay readable.
        let wait = pool.allocate(t0 + Duration::from_millis(100)).unwrap_err();
        assert_eq!(wait, QUARANTINE - Duration::from_millis(100));
        assert!(pool.scrubbable(t0).is_empty());
        // Reused after the quarantine: its counters must be zeroed first.
        assert_eq!(pool.allocate(t0 + QUARANTINE), Ok((0, true)));
        assert_eq!(pool.used(), 2);
        pool.release(1, t0);
        assert_eq!(pool.scrubbable(t0 + QUARANTINE), vec![1]);
        pool.mark_clean(1);
        assert_eq!(pool.allocate(t0 + QUARANTINE), Ok((1, false)));
    }

    #[test]
    fn claimed_slots_are_not_allocated() {
        let t0 = Instant::now();
        let mut pool = SlotPool::new(3);
        pool.claim(0);
        pool.claim(2);
        assert_eq!(pool.allocate(t0), Ok((1, false)));
        assert_eq!(pool.allocate(t0), Err(Duration::MAX));
        // Releasing a slot that is not in use changes nothing.
        pool.release(7, t0);
        assert_eq!(pool.capacity(), 3);
    }
}
