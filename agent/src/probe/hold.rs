//! The start hold, user side: which cgroups are hold roots, and the processes held at
//! their exec (`HELD`), which the agent resumes once it has looked at their cgroup.

use std::collections::BTreeMap;

use anyhow::Context as _;

use super::Probe;

impl Probe {
    /// Make `roots` (cgroup id → level) the start-hold roots: an exec in an unknown
    /// cgroup below one is held until the agent has looked. Empty: no holds.
    pub fn set_hold_roots(&mut self, roots: &BTreeMap<u64, u32>) -> anyhow::Result<()> {
        if *roots == self.current_hold_roots {
            return Ok(());
        }
        for id in self.current_hold_roots.keys() {
            if !roots.contains_key(id) {
                // Already gone is fine.
                let _ = self.hold_roots.remove(id);
            }
        }
        for id in roots.keys() {
            self.hold_roots
                .insert(id, 1, 0)
                .context("writing HOLD_ROOTS (at most 1,024 roots)")?;
        }
        self.current_hold_roots = roots.clone();
        self.current_settings.hold_levels = roots
            .values()
            .fold(0, |acc, level| acc | 1u32.checked_shl(*level).unwrap_or(0));
        self.write_settings()
    }

    /// The processes held now: (tgid, cgroup id).
    pub fn held(&self) -> Vec<(u32, u64)> {
        self.held.iter().filter_map(Result::ok).collect::<Vec<_>>()
    }

    /// End the hold of `tgid`: forget it, then let it run (SIGCONT). Whether it was
    /// held (the kernel forgets a process that exits).
    pub fn release(&mut self, tgid: u32) -> bool {
        if self.held.remove(&tgid).is_err() {
            return false;
        }
        // SAFETY: plain kill(2). The entry was there: the process has not exited (the
        // kernel removes it at exit), so the pid is still the held process's.
        unsafe { libc::kill(tgid as i32, libc::SIGCONT) };
        true
    }

    /// The slot the agent bound the cgroup to, if any.
    pub fn slot_of(&self, cgroup_id: u64) -> Option<u32> {
        self.book
            .known
            .get(&cgroup_id)
            .copied()
            .filter(|s| *s != probe_common::NO_SLOT)
    }
}
