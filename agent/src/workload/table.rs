//! The policy table: which policy slot holds which policy (as written, and
//! monitor-only), filling fresh slots on reload, retiring old ones after the switch,
//! and the counts each slot holds. It knows nothing of cgroups: the
//! [`super::binder`] points workloads at the slots this table hands out.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::anyhow;
use probe_common::{PolicySlot, mode};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::slots::SlotPool;
use crate::{policy::CompiledPolicy, probe::Probe};

/// Slots to give the probe for `policies` policies. Each policy takes two (as written,
/// and monitor-only for sandboxed runtimes); the rest is room for reloads, which write
/// a changed policy into free slots before switching, and for policies added later.
pub fn slots_needed(policies: usize) -> u32 {
    2 * (policies as u32).max(8) + 4
}

/// A policy in force and its two slots.
pub struct PolicyEntry {
    pub policy: CompiledPolicy,
    /// What `slot` holds (as written); `monitor_slot` holds it with mode monitor.
    pub content: PolicySlot,
    pub slot: u32,
    pub monitor_slot: u32,
}

impl PolicyEntry {
    pub fn slot_for(&self, monitor_only: bool) -> u32 {
        if monitor_only {
            self.monitor_slot
        } else {
            self.slot
        }
    }
}

/// Which policy a workload gets (an index into the table), and whether monitor-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    pub policy: usize,
    pub monitor_only: bool,
}

/// What a reload changed, by policy name.
#[derive(Debug, Default, serde::Serialize)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
    /// Workloads switched to another slot.
    pub rebound: usize,
}

impl ReloadSummary {
    pub fn is_noop(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// A watched workload's own slot: a copy of its policy's, so that its calls are
/// counted apart while a `watch` looks at it.
pub struct Private {
    pub slot: u32,
    /// The policy content it copies: when the policy changes, the copy is retired.
    pub content: PolicySlot,
    pub policy: String,
    pub monitor_only: bool,
}

/// A freed slot whose counters are still to be carried.
struct Retired {
    slot: u32,
    policy: String,
    monitor_only: bool,
    workload: Option<u64>,
}

pub struct PolicyTable {
    policies: Vec<PolicyEntry>,
    slots: SlotPool,
    /// Which policy each slot holds or held last, and whether monitor-only: names the
    /// policy of a violation event, even one from a slot freed since.
    slot_owner: HashMap<u32, (String, bool)>,
    /// Slots a pinned probe's bindings pointed at when this agent took over; freed
    /// once the first rescan has re-pointed them ([`PolicyTable::release_adopted`]).
    adopted_slots: Vec<u32>,
    /// Watched workloads counted in a slot of their own.
    private: HashMap<u64, Private>,
    /// Freed slots whose counters hold calls the totals still need: read when their
    /// quarantine ends (in-flight increments have landed by then), then zeroed.
    retired: Vec<Retired>,
    /// Calls counted in slots since freed, per (policy, monitor-only) and per watched
    /// workload: totals never go back when a slot changes.
    policy_carry: HashMap<(String, bool), BTreeMap<u32, u64>>,
    workload_carry: HashMap<u64, BTreeMap<u32, u64>>,
}

impl PolicyTable {
    /// Fill the slots of `policies` (each with its enforcement as computed by the
    /// caller). Adopting a pinned probe, a slot that already holds exactly a policy's
    /// content is that policy's.
    pub fn new(
        policies: Vec<(CompiledPolicy, PolicySlot)>,
        probe: &mut Probe,
    ) -> anyhow::Result<PolicyTable> {
        let mut pool = SlotPool::new(probe.max_slots());
        // Adopting a pinned probe: a slot that already holds exactly a policy's content
        // is that policy's (its workloads stay where they are, its counters go on);
        // slots that bindings point at stay untouched until they are re-pointed.
        let mut pinned: Vec<Option<PolicySlot>> = vec![None; probe.max_slots() as usize];
        let mut adopted_slots = Vec::new();
        if probe.adopted() {
            for (i, p) in pinned.iter_mut().enumerate() {
                let content = probe.read_slot(i as u32)?;
                if content.live != 0 {
                    *p = Some(content);
                }
            }
            for (_, slot) in probe.bindings() {
                if slot != probe_common::NO_SLOT && !adopted_slots.contains(&slot) {
                    pool.claim(slot);
                    adopted_slots.push(slot);
                }
            }
        }
        if probe.adopted() {
            // Counters of pinned slots no policy takes are not zero: zero before reuse.
            let now = std::time::Instant::now();
            for slot in 0..probe.max_slots() {
                pool.mark_dirty(slot, now);
            }
        }
        let mut taken = HashSet::new();
        let mut place = |probe: &mut Probe, content: PolicySlot| -> anyhow::Result<u32> {
            if let Some(i) = pinned
                .iter()
                .enumerate()
                .position(|(i, p)| *p == Some(content) && !taken.contains(&(i as u32)))
            {
                taken.insert(i as u32);
                pool.claim(i as u32);
                return Ok(i as u32);
            }
            let (slot, _) = pool.allocate(std::time::Instant::now()).map_err(|_| {
                anyhow!(
                    "no free policy slot: the probe has {} ({} policies at most);                      raise the capacity with fewer policies per file set, or run                      `sysfence agent --uninstall` and start again",
                    probe.max_slots(),
                    (probe.max_slots() - 4) / 2
                )
            })?;
            taken.insert(slot);
            probe.fill_slot(slot, &content)?;
            Ok(slot)
        };
        let mut entries = Vec::new();
        let mut slot_owner = HashMap::new();
        for (policy, slot) in policies {
            let s = place(probe, slot)?;
            let m = place(
                probe,
                PolicySlot {
                    mode: mode::MONITOR,
                    ..slot
                },
            )?;
            slot_owner.insert(s, (policy.name.clone(), false));
            slot_owner.insert(m, (policy.name.clone(), true));
            info!(
                event = "policy_loaded",
                policy = %policy.name,
                file = %policy.file.display(),
                mode = policy.mode.as_str(),
                selector = %describe_selector(&policy),
                specificity = policy.selector.specificity(),
                slot = s,
                allowed = policy.allowed_names.len()
            );
            if policy.selector.is_empty() {
                warn!(event = "no_selector", policy = %policy.name, "policy has no spec.selector: it binds nothing");
            }
            entries.push(PolicyEntry {
                policy,
                content: slot,
                slot: s,
                monitor_slot: m,
            });
        }
        Ok(PolicyTable {
            policies: entries,
            slots: pool,
            slot_owner,
            adopted_slots,
            private: HashMap::new(),
            retired: Vec::new(),
            policy_carry: HashMap::new(),
            workload_carry: HashMap::new(),
        })
    }

    /// The policies in force, in file order.
    pub fn entries(&self) -> &[PolicyEntry] {
        &self.policies
    }

    /// The entry of a policy by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.policies.iter().position(|e| e.policy.name == name)
    }

    /// The policy's slot for a choice.
    pub fn slot_of(&self, c: Choice) -> u32 {
        self.policies[c.policy].slot_for(c.monitor_only)
    }

    /// The slot a bound workload should point at: its own copy while watched (and the
    /// copy still matches its policy), else its policy's.
    pub fn want_slot(&self, id: u64, c: Choice) -> u32 {
        let slot = self.slot_of(c);
        let e = &self.policies[c.policy];
        match self.private.get(&id) {
            Some(p)
                if p.policy == e.policy.name
                    && p.monitor_only == c.monitor_only
                    && p.content == Self::private_content_of(e, c.monitor_only) =>
            {
                p.slot
            }
            _ => slot,
        }
    }

    /// What a policy's slot holds, as written or monitor-only.
    pub fn content_of(e: &PolicyEntry, monitor_only: bool) -> PolicySlot {
        if monitor_only {
            PolicySlot {
                mode: mode::MONITOR,
                ..e.content
            }
        } else {
            e.content
        }
    }

    /// What a watched workload's own slot holds: its policy's content, counting every
    /// call (`enforce` alone counts only violations; `watch` shows all).
    pub fn private_content_of(e: &PolicyEntry, monitor_only: bool) -> PolicySlot {
        Self::content_of(e, monitor_only).counting_every_call()
    }

    /// Whether `content` (read from a slot) is `e`'s policy: as written, monitor-only
    /// (`Some(monitor_only)`), or neither. A watched workload's own copy counts.
    pub fn holds(e: &PolicyEntry, content: &PolicySlot) -> Option<bool> {
        [false, true].into_iter().find(|&monitor_only| {
            Self::content_of(e, monitor_only) == *content
                || Self::private_content_of(e, monitor_only) == *content
        })
    }

    /// Free a slot whose counters the totals still need (see `retired`).
    pub fn retire(&mut self, slot: u32, policy: String, monitor_only: bool, workload: Option<u64>) {
        self.slots.release(slot, std::time::Instant::now());
        self.slot_owner.insert(slot, (policy.clone(), monitor_only));
        self.retired.push(Retired {
            slot,
            policy,
            monitor_only,
            workload,
        });
    }

    /// Private slots no longer pointed at (the workload left, or its policy changed):
    /// retired. `bound_slot` tells which slot a workload points at, if bound.
    pub fn retire_stale_private(&mut self, bound_slot: &dyn Fn(u64) -> Option<u32>) {
        let stale: Vec<u64> = self
            .private
            .iter()
            .filter(|(id, p)| bound_slot(**id) != Some(p.slot))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            let p = self.private.remove(&id).expect("listed");
            self.retire(p.slot, p.policy, p.monitor_only, Some(id));
        }
    }

    /// A slot of its own for a watched workload bound by `choice`, filled with a copy of
    /// its policy; `None` when no slot is free. The caller points the workload at it.
    pub fn give_private(
        &mut self,
        probe: &mut Probe,
        id: u64,
        choice: Choice,
    ) -> anyhow::Result<Option<u32>> {
        let Ok((slot, dirty)) = self.slots.allocate(std::time::Instant::now()) else {
            return Ok(None);
        };
        let e = &self.policies[choice.policy];
        let content = Self::private_content_of(e, choice.monitor_only);
        let policy = e.policy.name.clone();
        let written = if dirty {
            probe.fill_slot(slot, &content)
        } else {
            probe.write_slot(slot, &content)
        };
        if let Err(e) = written {
            self.slots.release(slot, std::time::Instant::now());
            return Err(e);
        }
        self.slot_owner
            .insert(slot, (policy.clone(), choice.monitor_only));
        self.private.insert(
            id,
            Private {
                slot,
                content,
                policy,
                monitor_only: choice.monitor_only,
            },
        );
        Ok(Some(slot))
    }

    /// Undo [`PolicyTable::give_private`] when pointing the workload at the slot failed.
    pub fn forget_private(&mut self, id: u64) {
        if let Some(p) = self.private.remove(&id) {
            self.slots.release(p.slot, std::time::Instant::now());
        }
    }

    /// The last watcher of a workload is gone: its own slot, if any, is taken back
    /// (the caller points the workload at its policy's slot first, then retires it).
    pub fn take_private(&mut self, id: u64) -> Option<Private> {
        self.workload_carry.remove(&id);
        self.private.remove(&id)
    }

    /// A watched workload's calls since it was first watched (its own slot, the ones
    /// it had before, and those freed but not yet carried).
    pub fn workload_counts(&self, probe: &Probe, id: u64) -> BTreeMap<u32, u64> {
        let mut total = self.workload_carry.get(&id).cloned().unwrap_or_default();
        let slots = self.private.get(&id).map(|p| p.slot).into_iter().chain(
            self.retired
                .iter()
                .filter(|r| r.workload == Some(id))
                .map(|r| r.slot),
        );
        for slot in slots {
            for (index, n) in probe.slot_counts(slot).unwrap_or_default() {
                *total.entry(index).or_default() += n;
            }
        }
        total
    }

    /// Whether a workload is counted in a slot of its own.
    pub fn counted_apart(&self, id: u64) -> bool {
        self.private.contains_key(&id)
    }

    /// Calls per (policy, monitor-only) and syscall index: the policies' slots, the
    /// watched workloads' own slots, freed slots not yet carried, and the carry.
    pub fn policy_counts(&self, probe: &Probe) -> BTreeMap<(String, bool), BTreeMap<u32, u64>> {
        let mut out: BTreeMap<(String, bool), BTreeMap<u32, u64>> = BTreeMap::new();
        let mut add = |key: (String, bool), slot: u32| {
            let counts = out.entry(key).or_default();
            for (index, n) in probe.slot_counts(slot).unwrap_or_default() {
                *counts.entry(index).or_default() += n;
            }
        };
        for e in &self.policies {
            add((e.policy.name.clone(), false), e.slot);
            add((e.policy.name.clone(), true), e.monitor_slot);
        }
        for p in self.private.values() {
            add((p.policy.clone(), p.monitor_only), p.slot);
        }
        for r in &self.retired {
            add((r.policy.clone(), r.monitor_only), r.slot);
        }
        for (key, carry) in &self.policy_carry {
            let counts = out.entry(key.clone()).or_default();
            for (index, n) in carry {
                *counts.entry(*index).or_default() += n;
            }
        }
        out
    }

    /// After the first rescan of an agent that adopted a pinned probe: free the slots
    /// no policy of this agent holds and no binding still points at (`keep`).
    pub fn release_adopted(&mut self, keep: &HashSet<u32>) {
        let held: HashSet<u32> = self
            .policies
            .iter()
            .flat_map(|e| [e.slot, e.monitor_slot])
            .collect();
        let now = std::time::Instant::now();
        for slot in std::mem::take(&mut self.adopted_slots) {
            if !held.contains(&slot) && !keep.contains(&slot) {
                self.slots.release(slot, now);
            }
        }
    }

    /// Take a new set of policies: unchanged ones keep their slots and counters, a
    /// changed or new one is written into fresh slots. Returns what changed and the
    /// entries replaced, whose slots the caller retires once its workloads are switched
    /// ([`PolicyTable::retire_entries`]). On error, what was in force stays.
    pub async fn replace(
        &mut self,
        probe: &mut Probe,
        policies: Vec<(CompiledPolicy, PolicySlot)>,
    ) -> anyhow::Result<(ReloadSummary, Vec<PolicyEntry>)> {
        let mut summary = ReloadSummary::default();
        let mut old: HashMap<String, PolicyEntry> = std::mem::take(&mut self.policies)
            .into_iter()
            .map(|e| (e.policy.name.clone(), e))
            .collect();
        let mut entries = Vec::new();
        let mut result = Ok(());
        for (policy, content) in policies {
            if let Some(prev) = old.remove(&policy.name) {
                if prev.content == content {
                    if prev.policy.selector == policy.selector && prev.policy.file == policy.file {
                        summary.unchanged.push(policy.name.clone());
                    } else {
                        summary.changed.push(policy.name.clone());
                    }
                    entries.push(PolicyEntry {
                        policy,
                        content,
                        slot: prev.slot,
                        monitor_slot: prev.monitor_slot,
                    });
                    continue;
                }
                // Changed content: new slots below; the old ones are freed after the
                // switch.
                old.insert(format!("\0{}", policy.name), prev);
                summary.changed.push(policy.name.clone());
            } else {
                summary.added.push(policy.name.clone());
            }
            let monitor = PolicySlot {
                mode: mode::MONITOR,
                ..content
            };
            let s = match self.fresh_slot(probe, &content).await {
                Ok(s) => s,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let m = match self.fresh_slot(probe, &monitor).await {
                Ok(m) => m,
                Err(e) => {
                    self.slots.release(s, std::time::Instant::now());
                    result = Err(e);
                    break;
                }
            };
            self.slot_owner.insert(s, (policy.name.clone(), false));
            self.slot_owner.insert(m, (policy.name.clone(), true));
            entries.push(PolicyEntry {
                policy,
                content,
                slot: s,
                monitor_slot: m,
            });
        }
        if let Err(e) = result {
            // Out of slots: keep what is in force. Free the slots filled so far.
            let now = std::time::Instant::now();
            let prev_slots: HashSet<u32> = old
                .values()
                .flat_map(|e| [e.slot, e.monitor_slot])
                .collect();
            for e in &entries {
                for slot in [e.slot, e.monitor_slot] {
                    if !prev_slots.contains(&slot) {
                        self.slots.release(slot, now);
                    }
                }
            }
            let mut restored: Vec<PolicyEntry> = old.into_values().collect();
            restored.extend(entries.into_iter().filter(|e| prev_slots.contains(&e.slot)));
            self.policies = restored;
            return Err(e);
        }
        for name in old.keys().filter(|n| !n.starts_with('\0')) {
            summary.removed.push(name.clone());
        }
        self.policies = entries;
        Ok((summary, old.into_values().collect()))
    }

    /// Free the slots of replaced policies (their counters are carried when scrubbed).
    pub fn retire_entries(&mut self, old: Vec<PolicyEntry>) {
        for e in old {
            self.retire(e.slot, e.policy.name.clone(), false, None);
            self.retire(e.monitor_slot, e.policy.name, true, None);
        }
    }

    /// A free slot, written with `content` (waiting out the quarantine if need be).
    async fn fresh_slot(&mut self, probe: &mut Probe, content: &PolicySlot) -> anyhow::Result<u32> {
        loop {
            match self.slots.allocate(std::time::Instant::now()) {
                Ok((slot, dirty)) => {
                    let written = if dirty {
                        probe.fill_slot(slot, content)
                    } else {
                        probe.write_slot(slot, content)
                    };
                    if let Err(e) = written {
                        self.slots.release(slot, std::time::Instant::now());
                        return Err(e);
                    }
                    return Ok(slot);
                }
                Err(wait) if wait == std::time::Duration::MAX => {
                    return Err(anyhow!(
                        "no free policy slot: {} of {} in use; this agent's probe holds {}                          policies at most (restart the agent with fewer policies, or run                          `sysfence agent --uninstall` and start it again to resize)",
                        self.slots.used(),
                        self.slots.capacity(),
                        (self.slots.capacity() - 4) / 2
                    ));
                }
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Zero the counters of freed slots past their quarantine, off the reload path.
    pub fn scrub_free_slots(
        &mut self,
        probe: &mut Probe,
        watched: &dyn Fn(u64) -> bool,
    ) -> anyhow::Result<()> {
        for slot in self.slots.scrubbable(std::time::Instant::now()) {
            let counts = probe.slot_counts(slot)?;
            for r in self.retired.iter().filter(|r| r.slot == slot) {
                let carry = self
                    .policy_carry
                    .entry((r.policy.clone(), r.monitor_only))
                    .or_default();
                for (index, n) in &counts {
                    *carry.entry(*index).or_default() += n;
                }
                if let Some(id) = r.workload
                    && watched(id)
                {
                    let carry = self.workload_carry.entry(id).or_default();
                    for (index, n) in &counts {
                        *carry.entry(*index).or_default() += n;
                    }
                }
            }
            self.retired.retain(|r| r.slot != slot);
            probe.zero_counts(slot)?;
            self.slots.mark_clean(slot);
        }
        Ok(())
    }

    /// Policies in force: name, file, mode, slot, monitor slot, workloads bound.
    pub fn policy_rows(&self, bound: &dyn Fn(&str) -> usize) -> Vec<Value> {
        self.policies
            .iter()
            .map(|e| {
                let bound = bound(&e.policy.name);
                json!({
                    "name": e.policy.name,
                    "file": e.policy.file.display().to_string(),
                    "mode": e.policy.mode.as_str(),
                    "slot": e.slot,
                    "monitor_slot": e.monitor_slot,
                    "allowed": e.policy.allowed_names.len(),
                    "bound": bound,
                })
            })
            .collect()
    }

    /// Slots in use, and the probe's capacity.
    pub fn slot_usage(&self) -> (usize, u32) {
        (self.slots.used(), self.slots.capacity())
    }

    /// The policy a slot holds, or held last, and whether monitor-only: names the
    /// policy of a violation event, even one from a slot freed since.
    pub fn policy_of_slot(&self, slot: u32) -> Option<(&str, bool)> {
        self.slot_owner
            .get(&slot)
            .map(|(name, m)| (name.as_str(), *m))
    }
}

fn describe_selector(p: &CompiledPolicy) -> String {
    let s = &p.selector;
    let mut parts = Vec::new();
    if let Some(v) = &s.namespace {
        parts.push(format!("namespace={v}"));
    }
    if let Some(l) = &s.pod_labels {
        parts.push(format!("podLabels({} requirements)", l.requirements.len()));
    }
    if let Some(v) = &s.container {
        parts.push(format!("container={v}"));
    }
    if let Some(v) = &s.image {
        parts.push(format!("image={}", v.text));
    }
    if let Some(v) = &s.runtime {
        parts.push(format!("runtime={v}"));
    }
    if let Some(v) = &s.cgroup_path {
        parts.push(format!("cgroupPath={}", v.text));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_for_two_slots_per_policy_and_a_reload() {
        assert_eq!(slots_needed(0), 20);
        assert_eq!(slots_needed(8), 20);
        assert_eq!(slots_needed(30), 64);
        assert!(
            slots_needed(100) >= 2 * 100 + 2,
            "every policy twice, and room to swap"
        );
    }

    #[test]
    fn a_reload_that_changes_nothing_is_a_noop() {
        let mut s = ReloadSummary {
            unchanged: vec!["web".into()],
            ..ReloadSummary::default()
        };
        assert!(s.is_noop());
        s.changed.push("db".into());
        assert!(!s.is_noop());
    }
}
