//! The agent's workload table and its bindings: discovery (cgroupfs, runtime state,
//! CRI), the choice of policy per workload, and the kernel's `WORKLOADS` kept in line
//! with it as workloads come and go.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow};
use probe_common::{PolicySlot, mode};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{
    Kind, Runtime, Workload, cgroup_naming,
    cri::{self, CriCache},
    runtime::{self, Annotations, StateEntry},
    slots::SlotPool,
    socket::{self, Request, StartRequest},
};
use crate::{
    api::protocol::BindingRow,
    cgroup,
    policy::{CompiledPolicy, Mode},
    probe::Probe,
};

/// Slots to give the probe for `policies` policies. Each policy takes two (as written,
/// and monitor-only for sandboxed runtimes); the rest is room for reloads, which write
/// a changed policy into free slots before switching, and for policies added later.
pub fn slots_needed(policies: usize) -> u32 {
    2 * (policies as u32).max(8) + 4
}

pub struct ManagerOptions {
    /// Mount point of the cgroup v2 hierarchy.
    pub cgroup_root: PathBuf,
    /// CRI sockets to ask; `None`: those of [`cri::DEFAULT_SOCKETS`] that exist.
    pub cri_sockets: Option<Vec<PathBuf>>,
    /// Runtime state roots to read besides the default ones.
    pub runtime_roots: Vec<PathBuf>,
}

struct PolicyEntry {
    policy: CompiledPolicy,
    /// What `slot` holds (as written); `monitor_slot` holds it with mode monitor.
    content: PolicySlot,
    slot: u32,
    monitor_slot: u32,
}

impl PolicyEntry {
    fn slot_for(&self, monitor_only: bool) -> u32 {
        if monitor_only {
            self.monitor_slot
        } else {
            self.slot
        }
    }
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

/// Which policy a workload gets, and whether monitor-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Choice {
    policy: usize,
    monitor_only: bool,
}

struct BoundEntry {
    choice: Choice,
    /// The slot written to `WORKLOADS`.
    slot: u32,
    /// The policy's name (indexes change on reload).
    policy: String,
    rel: String,
    /// When it was first bound (Unix ms).
    since_ms: u64,
}

/// How a binding came about, for logs.
#[derive(Clone, Copy)]
enum Via {
    /// Before the entrypoint: the runtime wrapper's `start`.
    Start { sent_ns: u64 },
    /// The cgroup appeared, or a rescan found it.
    Discovery,
}

const DEPARTED_KEPT: usize = 512;

pub struct Manager {
    root: PathBuf,
    hybrid: bool,
    policies: Vec<PolicyEntry>,
    workloads: HashMap<u64, Workload>,
    by_path: HashMap<String, u64>,
    bound: HashMap<u64, BoundEntry>,
    /// Recently removed workloads, to name late violation events.
    departed: VecDeque<Workload>,
    extra_roots: Vec<PathBuf>,
    /// Containers in the runtimes' state, by v2 cgroup path and by id.
    states: Vec<StateEntry>,
    state_by_cgroup: HashMap<String, usize>,
    state_by_id: HashMap<String, usize>,
    /// Containers whose state was read for a `start` but whose root is not scanned.
    started: HashMap<String, StateEntry>,
    annotations: HashMap<PathBuf, Annotations>,
    /// Runtime recognised from a cgroup's processes, per cgroup id.
    proc_runtime: HashMap<u64, Option<Runtime>>,
    cri: Vec<CriCache>,
    /// v2 cgroups made for sandboxes a runtime left in the v2 root: path → whether
    /// this agent created the directory.
    adopted: HashMap<String, bool>,
    /// A runtime is creating a container (its state directory exists, its state file
    /// not yet): new empty cgroups may be that container's.
    creating: bool,
    levels: u32,
    slots: SlotPool,
    /// Which policy each slot holds or held last, and whether monitor-only: names the
    /// policy of a violation event, even one from a slot freed since.
    slot_owner: HashMap<u32, (String, bool)>,
    /// Slots a pinned probe's bindings pointed at when this agent took over; freed
    /// after the first rescan has re-pointed them ([`Manager::finish_adoption`]).
    adopted_slots: Vec<u32>,
    /// Watchers per workload (`sysfence watch` through the API).
    watch_refs: HashMap<u64, u32>,
    /// Watched workloads counted in a slot of their own (a copy of their policy's):
    /// counting per workload only where a view asks for it.
    private: HashMap<u64, Private>,
    /// Freed slots whose counters hold calls the totals still need: read when their
    /// quarantine ends (in-flight increments have landed by then), then zeroed.
    retired: Vec<Retired>,
    /// Calls counted in slots since freed, per (policy, monitor-only) and per watched
    /// workload: totals never go back when a slot changes.
    policy_carry: HashMap<(String, bool), BTreeMap<u32, u64>>,
    workload_carry: HashMap<u64, BTreeMap<u32, u64>>,
}

/// A watched workload's own slot.
struct Private {
    slot: u32,
    /// The policy content it copies: when the policy changes, the copy is retired.
    content: PolicySlot,
    policy: String,
    monitor_only: bool,
}

/// A freed slot whose counters are still to be carried.
struct Retired {
    slot: u32,
    policy: String,
    monitor_only: bool,
    workload: Option<u64>,
}

impl Manager {
    /// Fill the slots of `policies` (each with its enforcement as computed by the
    /// caller) and get ready to bind. Nothing is bound before [`Manager::rescan`].
    pub fn new(
        options: ManagerOptions,
        policies: Vec<(CompiledPolicy, PolicySlot)>,
        probe: &mut Probe,
    ) -> anyhow::Result<Manager> {
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
        let cri_sockets = options.cri_sockets.unwrap_or_else(|| {
            cri::DEFAULT_SOCKETS
                .iter()
                .map(PathBuf::from)
                .filter(|p| p.exists())
                .collect()
        });
        let hybrid = is_hybrid(&options.cgroup_root);
        Ok(Manager {
            root: options.cgroup_root,
            hybrid,
            policies: entries,
            workloads: HashMap::new(),
            by_path: HashMap::new(),
            bound: HashMap::new(),
            departed: VecDeque::new(),
            extra_roots: options.runtime_roots,
            states: Vec::new(),
            state_by_cgroup: HashMap::new(),
            state_by_id: HashMap::new(),
            started: HashMap::new(),
            annotations: HashMap::new(),
            proc_runtime: HashMap::new(),
            cri: cri_sockets.into_iter().map(CriCache::new).collect(),
            adopted: HashMap::new(),
            creating: false,
            levels: u32::MAX,
            slots: pool,
            slot_owner,
            adopted_slots,
            watch_refs: HashMap::new(),
            private: HashMap::new(),
            retired: Vec::new(),
            policy_carry: HashMap::new(),
            workload_carry: HashMap::new(),
        })
    }

    /// The slot a bound workload should point at: its own copy while watched (and the
    /// copy still matches its policy), else its policy's.
    fn want_slot(&self, id: u64, c: Choice) -> u32 {
        let slot = self.slot_of(c);
        let e = &self.policies[c.policy];
        match self.private.get(&id) {
            Some(p)
                if p.policy == e.policy.name
                    && p.monitor_only == c.monitor_only
                    && p.content == Self::content_of(e, c.monitor_only) =>
            {
                p.slot
            }
            _ => slot,
        }
    }

    fn content_of(e: &PolicyEntry, monitor_only: bool) -> PolicySlot {
        if monitor_only {
            PolicySlot {
                mode: mode::MONITOR,
                ..e.content
            }
        } else {
            e.content
        }
    }

    /// Free a slot whose counters the totals still need (see `retired`).
    fn retire(&mut self, slot: u32, policy: String, monitor_only: bool, workload: Option<u64>) {
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
    /// retired.
    fn retire_stale_private(&mut self) {
        let stale: Vec<u64> = self
            .private
            .iter()
            .filter(|(id, p)| self.bound.get(id).is_none_or(|b| b.slot != p.slot))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            let p = self.private.remove(&id).expect("listed");
            self.retire(p.slot, p.policy, p.monitor_only, Some(id));
        }
    }

    /// A `watch` starts looking at these bound workloads: each gets a slot of its own
    /// (a copy of its policy's), so that its calls are counted apart. Workloads left
    /// sharing their policy's slot (no free slot) are returned.
    pub fn watch_acquire(&mut self, probe: &mut Probe, ids: &[u64]) -> anyhow::Result<Vec<u64>> {
        for id in ids {
            *self.watch_refs.entry(*id).or_default() += 1;
        }
        self.ensure_private(probe)?;
        Ok(ids
            .iter()
            .copied()
            .filter(|id| !self.private.contains_key(id))
            .collect())
    }

    /// A `watch` stops looking at these workloads: the last watcher gone, they go back
    /// to their policy's slot.
    pub fn watch_release(&mut self, probe: &mut Probe, ids: &[u64]) -> anyhow::Result<()> {
        for id in ids {
            let Some(n) = self.watch_refs.get_mut(id) else {
                continue;
            };
            *n -= 1;
            if *n > 0 {
                continue;
            }
            self.watch_refs.remove(id);
            self.workload_carry.remove(id);
            if let Some(p) = self.private.remove(id) {
                if let Some(b) = self.bound.get_mut(id) {
                    let slot = self.policies[b.choice.policy].slot_for(b.choice.monitor_only);
                    probe.bind(*id, slot)?;
                    b.slot = slot;
                }
                self.retire(p.slot, p.policy, p.monitor_only, Some(*id));
            }
        }
        Ok(())
    }

    /// Give every watched, bound workload without a slot of its own one, if free.
    fn ensure_private(&mut self, probe: &mut Probe) -> anyhow::Result<()> {
        let want: Vec<u64> = self
            .watch_refs
            .keys()
            .filter(|id| self.bound.contains_key(id) && !self.private.contains_key(id))
            .copied()
            .collect();
        for id in want {
            let Ok((slot, dirty)) = self.slots.allocate(std::time::Instant::now()) else {
                break;
            };
            let b = &self.bound[&id];
            let e = &self.policies[b.choice.policy];
            let content = Self::content_of(e, b.choice.monitor_only);
            let (policy, monitor_only) = (e.policy.name.clone(), b.choice.monitor_only);
            let written = if dirty {
                probe.fill_slot(slot, &content)
            } else {
                probe.write_slot(slot, &content)
            };
            if let Err(e) = written.and_then(|()| probe.bind(id, slot)) {
                self.slots.release(slot, std::time::Instant::now());
                return Err(e);
            }
            self.slot_owner.insert(slot, (policy.clone(), monitor_only));
            self.bound.get_mut(&id).expect("bound").slot = slot;
            self.private.insert(
                id,
                Private {
                    slot,
                    content,
                    policy,
                    monitor_only,
                },
            );
        }
        Ok(())
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

    /// After the first rescan of an agent that adopted a pinned probe: forget the
    /// bindings no workload of this agent has (cgroups gone while no agent ran), and
    /// free the slots no policy of this agent holds.
    pub fn finish_adoption(&mut self, probe: &mut Probe) -> anyhow::Result<usize> {
        let stale: Vec<u64> = probe
            .bindings()
            .map(|(id, _)| id)
            .filter(|id| !self.bound.contains_key(id))
            .collect();
        for id in &stale {
            probe.unbind(*id)?;
        }
        let held: HashSet<u32> = self
            .policies
            .iter()
            .flat_map(|e| [e.slot, e.monitor_slot])
            .collect();
        let now = std::time::Instant::now();
        for slot in std::mem::take(&mut self.adopted_slots) {
            if !held.contains(&slot) {
                self.slots.release(slot, now);
            }
        }
        self.update_levels(probe)?;
        Ok(stale.len())
    }

    /// Apply a new set of policies without a moment unpoliced: a changed policy is
    /// written into free slots, its workloads switched there, and its old slots freed.
    /// Unchanged policies keep their slots and counters.
    pub async fn reload(
        &mut self,
        probe: &mut Probe,
        policies: Vec<(CompiledPolicy, PolicySlot)>,
    ) -> anyhow::Result<ReloadSummary> {
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
            self.reindex_bound();
            return Err(e);
        }
        for name in old.keys().filter(|n| !n.starts_with('\0')) {
            summary.removed.push(name.clone());
        }
        self.policies = entries;
        self.reindex_bound();
        let before: HashMap<u64, u32> = self.bound.iter().map(|(id, b)| (*id, b.slot)).collect();
        self.apply_all(probe)?;
        summary.rebound = self
            .bound
            .iter()
            .filter(|(id, b)| before.get(id).is_some_and(|s| *s != b.slot))
            .count();
        for e in old.into_values() {
            self.retire(e.slot, e.policy.name.clone(), false, None);
            self.retire(e.monitor_slot, e.policy.name, true, None);
        }
        Ok(summary)
    }

    /// Point the bound workloads' choices at the policies' current indexes; a workload
    /// whose policy is gone gets another (or none) from `apply_all`.
    fn reindex_bound(&mut self) {
        let index: HashMap<&str, usize> = self
            .policies
            .iter()
            .enumerate()
            .map(|(i, e)| (e.policy.name.as_str(), i))
            .collect();
        for b in self.bound.values_mut() {
            b.choice.policy = index.get(b.policy.as_str()).copied().unwrap_or(usize::MAX);
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
    pub fn scrub_free_slots(&mut self, probe: &mut Probe) -> anyhow::Result<()> {
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
                    && self.watch_refs.contains_key(&id)
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
    pub fn policy_rows(&self) -> Vec<Value> {
        self.policies
            .iter()
            .map(|e| {
                let bound = self
                    .bound
                    .values()
                    .filter(|b| b.policy == e.policy.name)
                    .count();
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

    /// The bound workloads, described.
    pub fn bound_rows(&self) -> Vec<BindingRow> {
        let mut rows: Vec<BindingRow> = self
            .bound
            .iter()
            .map(|(id, b)| {
                let mut workload = self
                    .workloads
                    .get(id)
                    .map(Workload::to_ref)
                    .unwrap_or_default();
                workload.cgroup_id = *id;
                workload.cgroup.clone_from(&b.rel);
                BindingRow {
                    workload,
                    policy: b.policy.clone(),
                    mode: if b.choice.monitor_only {
                        "monitor"
                    } else {
                        self.policies
                            .get(b.choice.policy)
                            .map_or("?", |e| e.policy.mode.as_str())
                    }
                    .to_string(),
                    slot: Some(b.slot),
                    bound_ms: Some(b.since_ms),
                }
            })
            .collect();
        rows.sort_by(|a, b| a.workload.cgroup.cmp(&b.workload.cgroup));
        rows
    }

    /// Slots in use, and the probe's capacity.
    pub fn slot_usage(&self) -> (usize, u32) {
        (self.slots.used(), self.slots.capacity())
    }

    pub fn bound_count(&self) -> usize {
        self.bound.len()
    }

    /// The state roots read on every rescan (defaults that exist, and extra ones).
    pub fn state_roots(&self) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = runtime::DEFAULT_ROOTS
            .iter()
            .map(|(d, _)| PathBuf::from(d))
            .filter(|p| p.is_dir())
            .collect();
        for (parent, _) in runtime::DEFAULT_ROOT_PARENTS {
            if let Ok(dir) = std::fs::read_dir(parent) {
                roots.extend(dir.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
        }
        roots.extend(self.extra_roots.iter().cloned());
        roots.sort();
        roots.dedup();
        roots
    }

    /// Watch the cgroup tree and the runtime state roots; each change sends a wake-up.
    pub fn spawn_watcher(&self, wake: mpsc::Sender<()>) -> anyhow::Result<()> {
        use inotify::{Inotify, WatchMask};
        let root = self.root.clone();
        let state_roots = self.state_roots();
        let mut inotify = Inotify::init().context("inotify_init")?;
        let mask = WatchMask::CREATE | WatchMask::DELETE | WatchMask::ONLYDIR;
        let state_mask = WatchMask::CREATE | WatchMask::DELETE | WatchMask::MOVED_TO;
        let mut watches = inotify.watches();
        watches
            .add(&root, mask)
            .with_context(|| format!("watching {}", root.display()))?;
        for (_, abs) in cgroup::walk(&root) {
            let _ = watches.add(&abs, mask);
        }
        for r in &state_roots {
            let _ = watches.add(r, state_mask);
        }
        std::thread::Builder::new()
            .name("workload-watch".into())
            .spawn(move || {
                let mut buffer = [0u8; 8192];
                loop {
                    if let Err(e) = inotify.read_events_blocking(&mut buffer) {
                        warn!(error = %e, "cgroup watch stopped; relying on periodic rescans");
                        return;
                    }
                    // New directories need watches of their own; adding one twice is harmless.
                    let mut w = inotify.watches();
                    for (_, abs) in cgroup::walk(&root) {
                        let _ = w.add(&abs, mask);
                    }
                    if wake.blocking_send(()).is_err() {
                        return;
                    }
                }
            })?;
        Ok(())
    }

    async fn refresh_cri(&mut self) {
        for cache in &mut self.cri {
            let had_error = cache.last_error.is_some();
            if let Err(e) = cache.refresh().await
                && !had_error
            {
                warn!(event = "cri_unavailable", socket = %cache.socket.display(), error = %format!("{e:#}"), "CRI metadata unavailable; going on with cgroupfs and runtime state");
            }
        }
    }

    fn refresh_states(&mut self) {
        self.states.clear();
        self.creating = false;
        for root in self.state_roots() {
            self.states.extend(runtime::scan_root(&root));
            self.creating |= runtime::creating_in(&root);
        }
        let scanned: HashSet<(PathBuf, String)> = self
            .states
            .iter()
            .map(|s| (s.root.clone(), s.id.clone()))
            .collect();
        // Containers started through the wrapper whose root is not a scanned one: keep
        // them while their init process lives.
        self.started.retain(|_, s| {
            s.pid
                .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
        });
        for s in self.started.values_mut() {
            s.pending_start &= s.root.join(&s.id).join("exec.fifo").exists();
        }
        for s in self.started.values() {
            if !scanned.contains(&(s.root.clone(), s.id.clone())) {
                self.states.push(s.clone());
            }
        }
        // Annotations of bundles that are gone would pile up on a busy node.
        let bundles: HashSet<&PathBuf> = self
            .states
            .iter()
            .filter_map(|s| s.bundle.as_ref())
            .collect();
        self.annotations.retain(|b, _| bundles.contains(b));
        self.index_states();
    }

    fn index_states(&mut self) {
        self.state_by_cgroup.clear();
        self.state_by_id.clear();
        for (i, s) in self.states.iter().enumerate() {
            self.state_by_id.insert(s.id.clone(), i);
            let Some(pid) = s.pid else { continue };
            match runtime::v2_cgroup_of(pid) {
                Some(rel) if !rel.is_empty() => {
                    self.state_by_cgroup.insert(rel, i);
                }
                // Left in the v2 root (hybrid): known by its adopted cgroup, if any.
                Some(_) => {
                    if let Some(v1) = self.v1_of(s)
                        && self.adopted.contains_key(&v1)
                    {
                        self.state_by_cgroup.insert(v1, i);
                    }
                }
                None => {}
            }
        }
    }

    fn v1_of(&self, s: &StateEntry) -> Option<String> {
        s.v1_cgroup.clone().or_else(|| {
            let text = std::fs::read_to_string(format!("/proc/{}/cgroup", s.pid?)).ok()?;
            runtime::v1_cgroup_of(&text)
        })
    }

    /// Bring the workload table and the kernel's bindings in line with the system.
    pub async fn rescan(&mut self, probe: &mut Probe) -> anyhow::Result<()> {
        self.refresh_cri().await;
        self.refresh_states();
        self.adopt_sandboxes();
        let mut seen: Vec<(u64, String)> = Vec::new();
        for (rel, abs) in cgroup::walk(&self.root) {
            if let Ok(id) = cgroup::id_of(&abs) {
                seen.push((id, rel));
            }
        }
        let mut next = HashMap::new();
        for (id, rel) in seen {
            let mut w = self.classify(id, &rel);
            if let Some(earlier) = self.workloads.get(&id) {
                w.keep_identity_from(earlier);
            }
            if w.is_container() && !self.workloads.contains_key(&id) {
                log_workload(&w);
            }
            next.insert(id, w);
        }
        let old = std::mem::replace(&mut self.workloads, next);
        for (id, w) in old {
            if !self.workloads.contains_key(&id) {
                self.proc_runtime.remove(&id);
                self.departed.push_back(w);
                if self.departed.len() > DEPARTED_KEPT {
                    self.departed.pop_front();
                }
            }
        }
        self.by_path = self
            .workloads
            .iter()
            .map(|(id, w)| (w.cgroup_path.clone(), *id))
            .collect();
        self.apply_all(probe)?;
        self.remove_empty_adopted();
        Ok(())
    }

    /// Everything the sources say about one cgroup.
    fn classify(&mut self, id: u64, rel: &str) -> Workload {
        let mut w = Workload {
            cgroup_id: id,
            cgroup_path: rel.to_string(),
            ..Workload::default()
        };
        if let Some(n) = cgroup_naming::parse(rel) {
            w.kind = Some(n.kind);
            w.engine = n.engine;
            w.container_id = n.container_id;
            w.pod_uid = n.pod_uid;
            if n.engine == Some(super::Engine::Kata) {
                w.runtime = Some(Runtime::Kata);
            }
        }
        let state = self.state_by_cgroup.get(rel).copied().or_else(|| {
            w.container_id
                .as_ref()
                .and_then(|c| self.state_by_id.get(c).copied())
        });
        if let Some(i) = state {
            let s = self.states[i].clone();
            if w.runtime.is_none() {
                w.runtime = Some(s.runtime.clone());
            }
            w.container_id.get_or_insert(s.id.clone());
            w.kind.get_or_insert(Kind::Container);
            w.adopted = self.adopted.contains_key(rel);
            if let Some(bundle) = &s.bundle {
                let a = self
                    .annotations
                    .entry(bundle.clone())
                    .or_insert_with(|| {
                        runtime::parse_annotations(&runtime::bundle_annotations(bundle))
                    })
                    .clone();
                w.container = a.container;
                w.pod = a.pod;
                w.namespace = a.namespace;
                w.image = a.image;
                w.runtime_handler = a.runtime_handler;
                if w.pod_uid.is_none() {
                    w.pod_uid = a.pod_uid;
                }
                w.sandbox_container = a.sandbox == Some(true);
                if let Some(pod_id) = &a.sandbox_id
                    && let Some(pod) = self.cri.iter().find_map(|c| c.pod(pod_id))
                {
                    w.labels = pod.labels.clone();
                    if !pod.runtime_handler.is_empty() {
                        w.runtime_handler = Some(pod.runtime_handler.clone());
                    }
                }
            }
        }
        if let Some(cid) = &w.container_id
            && let Some(meta) = self.cri.iter().find_map(|c| c.lookup(cid))
        {
            let p = meta.pod;
            w.pod = Some(p.name).filter(|s| !s.is_empty()).or(w.pod);
            w.namespace = Some(p.namespace).filter(|s| !s.is_empty()).or(w.namespace);
            w.pod_uid = Some(p.uid).filter(|s| !s.is_empty()).or(w.pod_uid);
            w.labels = p.labels;
            if !p.runtime_handler.is_empty() {
                w.runtime_handler = Some(p.runtime_handler);
            }
            match meta.container {
                Some(c) => {
                    w.container = Some(c.name).filter(|s| !s.is_empty()).or(w.container);
                    w.image = Some(c.image).filter(|s| !s.is_empty()).or(w.image);
                    w.sandbox_container = false;
                }
                None => w.sandbox_container = true,
            }
            w.kind.get_or_insert(Kind::Container);
        }
        // Sandboxed runtimes show in the processes: gVisor's sandbox, Kata's VMM.
        if matches!(w.kind, Some(Kind::Container | Kind::Overhead))
            && !w.runtime.as_ref().is_some_and(Runtime::sandboxed)
        {
            let dir = self.root.join(rel);
            let found = self
                .proc_runtime
                .entry(id)
                .or_insert_with(|| {
                    let names = runtime::process_names(&dir);
                    Runtime::from_processes(names.iter().map(String::as_str))
                })
                .clone();
            if found.is_some() {
                w.runtime = found;
            }
        }
        if w.runtime.is_none()
            && let Some(h) = &w.runtime_handler
            && matches!(Runtime::from_name(h), Runtime::Runsc | Runtime::Kata)
        {
            w.runtime = Some(Runtime::from_name(h));
        }
        w
    }

    /// Place sandboxes that a runtime left in the v2 root (runsc on a hybrid host) in a
    /// v2 cgroup named after their v1 cgroup, when a policy would bind them.
    fn adopt_sandboxes(&mut self) {
        if !self.hybrid {
            return;
        }
        let candidates: Vec<StateEntry> = self
            .states
            .iter()
            .filter(|s| {
                s.pid
                    .is_some_and(|p| runtime::v2_cgroup_of(p).is_some_and(|r| r.is_empty()))
            })
            .cloned()
            .collect();
        let mut changed = false;
        for s in candidates {
            match self.adopt_state(&s) {
                Ok(Some(_)) => changed = true,
                Ok(None) => {}
                Err(e) => {
                    warn!(event = "adopt_failed", container_id = %s.id, error = %format!("{e:#}"))
                }
            }
        }
        if changed {
            self.index_states();
        }
    }

    /// Adopt one container's processes into the v2 mirror of its v1 cgroup, if a policy
    /// would bind it there. Returns the v2 path used.
    fn adopt_state(&mut self, s: &StateEntry) -> anyhow::Result<Option<String>> {
        let v1 = self
            .v1_of(s)
            .ok_or_else(|| anyhow!("container {} has no v1 cgroup to mirror", s.id))?;
        // Would any policy bind it? Classify as if it were there.
        let probe_w = {
            let mut w = Workload {
                cgroup_path: v1.clone(),
                runtime: Some(s.runtime.clone()),
                container_id: Some(s.id.clone()),
                kind: Some(Kind::Container),
                ..Workload::default()
            };
            if let Some(b) = &s.bundle {
                let a = runtime::parse_annotations(&runtime::bundle_annotations(b));
                w.container = a.container;
                w.namespace = a.namespace;
                w.pod = a.pod;
                w.image = a.image;
            }
            w
        };
        if self.choose(&probe_w).is_none() {
            return Ok(None);
        }
        let mut pids: Vec<u32> = s
            .pid
            .into_iter()
            .chain(s.other_pids.iter().copied())
            .collect();
        pids.extend(runtime::processes_left_in_v2_root(&v1));
        pids.sort_unstable();
        pids.dedup();
        let created = runtime::adopt(&self.root, &v1, &pids)?;
        // Processes forked meanwhile by one not yet moved: a second pass.
        let late = runtime::processes_left_in_v2_root(&v1);
        runtime::adopt(&self.root, &v1, &late)?;
        let was = self.adopted.insert(v1.clone(), created);
        if was.is_none() {
            info!(
                event = "adopted",
                container_id = %s.id,
                runtime = s.runtime.name(),
                cgroup = %v1,
                processes = pids.len() + late.len(),
                "hybrid cgroups: the runtime left the sandbox in the cgroup v2 root; sysfence placed it in a v2 cgroup of its own to police it"
            );
        }
        Ok(Some(v1))
    }

    /// Remove adopted cgroups whose sandbox is gone (only those this agent created).
    fn remove_empty_adopted(&mut self) {
        let root = self.root.clone();
        self.adopted.retain(|rel, created| {
            let dir = root.join(rel.as_str());
            let empty = std::fs::read_to_string(dir.join("cgroup.procs"))
                .map(|t| t.trim().is_empty())
                .unwrap_or(true);
            if !empty {
                return true;
            }
            if *created {
                let _ = std::fs::remove_dir(&dir);
                // Parents this agent may have created along the way stay: another
                // sandbox may be using them, and they cost nothing.
            }
            false
        });
    }

    /// The most specific matching policy, monitor-only on a sandboxed runtime unless the
    /// policy names that runtime.
    fn choose(&self, w: &Workload) -> Option<Choice> {
        let mut best: Option<(u32, usize)> = None;
        for (i, e) in self.policies.iter().enumerate() {
            if !e.policy.selector.matches(w) {
                continue;
            }
            let s = e.policy.selector.specificity();
            if best.is_none_or(|(b, _)| s > b) {
                best = Some((s, i));
            }
        }
        let (_, i) = best?;
        let p = &self.policies[i].policy;
        let monitor_only =
            w.sandboxed() && !p.selector.names_runtime_of(w) && p.mode != Mode::Monitor;
        Some(Choice {
            policy: i,
            monitor_only,
        })
    }

    fn slot_of(&self, c: Choice) -> u32 {
        self.policies[c.policy].slot_for(c.monitor_only)
    }

    fn apply_all(&mut self, probe: &mut Probe) -> anyhow::Result<()> {
        let want: HashMap<u64, Choice> = self
            .workloads
            .iter()
            .filter_map(|(id, w)| {
                let choice = self.choose(w)?;
                // Discovery never binds a container its runtime is still setting up, or
                // that waits for `start`: the policy would judge the runtime's own mounts,
                // pivot_root and the like (and kill them under enforce). The wrapper binds
                // it at `start`; without the wrapper, the next rescan after the
                // entrypoint's exec does.
                let pending_start = self
                    .state_by_cgroup
                    .get(&w.cgroup_path)
                    .is_some_and(|&i| self.states[i].pending_start);
                if !self.bound.contains_key(id)
                    && !w.sandboxed()
                    && (pending_start
                        || runtime_setting_up(
                            &self.root.join(&w.cgroup_path),
                            w.kind == Some(Kind::Container) || self.creating,
                        ))
                {
                    return None;
                }
                Some((*id, choice))
            })
            .collect();
        for (id, choice) in &want {
            if self.bound.get(id).map(|b| (b.choice, b.slot))
                != Some((*choice, self.want_slot(*id, *choice)))
            {
                self.bind(probe, *id, *choice, Via::Discovery)?;
            }
        }
        let gone: Vec<u64> = self
            .bound
            .keys()
            .filter(|id| !want.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            self.unbind(probe, id)?;
        }
        self.retire_stale_private();
        self.ensure_private(probe)?;
        self.update_levels(probe)
    }

    fn bind(&mut self, probe: &mut Probe, id: u64, choice: Choice, via: Via) -> anyhow::Result<()> {
        let slot = self.want_slot(id, choice);
        probe.bind(id, slot)?;
        let bound_ns = socket::monotonic_ns();
        let w = self.workloads.get(&id).cloned().unwrap_or_default();
        let p = &self.policies[choice.policy].policy;
        let applied = if choice.monitor_only {
            "monitor"
        } else {
            p.mode.as_str()
        };
        let (via_name, start_to_bound_us) = match via {
            Via::Start { sent_ns } => ("start", Some(bound_ns.saturating_sub(sent_ns) / 1000)),
            Via::Discovery => ("discovery", None),
        };
        let note = w
            .runtime
            .as_ref()
            .and_then(Runtime::sandbox_note)
            .map(|n| {
                if choice.monitor_only {
                    format!("{n}; policy `{}` applied monitor-only (select `runtime: {}` to apply it as written)", p.name, w.runtime.as_ref().map_or("", |r| r.name()))
                } else {
                    n.to_string()
                }
            })
            .unwrap_or_default();
        info!(
            event = "bound",
            policy = %p.name,
            mode = applied,
            cgroup = %w.cgroup_path,
            cgroup_id = id,
            via = via_name,
            start_to_bound_us,
            runtime = w.runtime.as_ref().map_or("", |r| r.name()),
            sandboxed = w.sandboxed(),
            container_id = w.container_id.as_deref().unwrap_or(""),
            container = w.container.as_deref().unwrap_or(""),
            pod = w.pod.as_deref().unwrap_or(""),
            namespace = w.namespace.as_deref().unwrap_or(""),
            image = w.image.as_deref().unwrap_or(""),
            note = %note,
        );
        let since_ms = self
            .bound
            .get(&id)
            .map_or_else(crate::clock::now_ms, |b| b.since_ms);
        self.bound.insert(
            id,
            BoundEntry {
                choice,
                slot,
                policy: p.name.clone(),
                rel: w.cgroup_path,
                since_ms,
            },
        );
        Ok(())
    }

    fn unbind(&mut self, probe: &mut Probe, id: u64) -> anyhow::Result<()> {
        probe.unbind(id)?;
        if let Some(b) = self.bound.remove(&id) {
            info!(event = "unbound", policy = %b.policy, cgroup = %b.rel, cgroup_id = id);
        }
        Ok(())
    }

    fn update_levels(&mut self, probe: &mut Probe) -> anyhow::Result<()> {
        let levels = self.bound.values().fold(0u32, |acc, b| {
            acc | 1u32.checked_shl(cgroup::level(&b.rel)).unwrap_or(0)
        });
        if levels != self.levels {
            probe.set_ancestor_levels(levels)?;
            self.levels = levels;
        }
        Ok(())
    }

    /// Answer a runtime socket request.
    pub async fn handle(&mut self, probe: &mut Probe, request: Request) -> Value {
        match request {
            Request::Start(s) => {
                let id = s.id.clone();
                match self.on_start(probe, s).await {
                    Ok(v) => v,
                    Err(e) => {
                        warn!(event = "start_failed", container_id = %id, error = %format!("{e:#}"));
                        json!({"ok": false, "error": format!("{e:#}")})
                    }
                }
            }
            Request::Workloads => match probe.workload_keys() {
                Ok(kernel) => json!({
                    "ok": true,
                    "kernel": kernel,
                    "bound": self.bound.iter().map(|(id, b)| json!({
                        "cgroup_id": id,
                        "cgroup": b.rel,
                        "policy": b.policy,
                        "monitor_only": b.choice.monitor_only,
                    })).collect::<Vec<_>>(),
                    "workloads": self.workloads.values().filter(|w| w.is_container()).collect::<Vec<_>>(),
                }),
                Err(e) => json!({"ok": false, "error": format!("{e:#}")}),
            },
        }
    }

    /// A runtime is about to start container `s.id`: classify it, bind it, answer.
    async fn on_start(&mut self, probe: &mut Probe, s: StartRequest) -> anyhow::Result<Value> {
        let runtime = Runtime::from_name(&s.runtime);
        let state = runtime::read_state(
            &runtime,
            s.runtime_path.as_deref(),
            s.root.as_deref(),
            &s.id,
        )?;
        let pid = state
            .pid
            .ok_or_else(|| anyhow!("{} state of {} names no process", s.runtime, s.id))?;
        let mut rel = runtime::v2_cgroup_of(pid)
            .ok_or_else(|| anyhow!("process {pid} of container {} is gone", s.id))?;
        if rel.is_empty() {
            if !self.hybrid {
                return Err(anyhow!(
                    "container {} runs in the cgroup v2 root: it cannot be told apart from the host",
                    s.id
                ));
            }
            match self.adopt_state(&state)? {
                Some(r) => rel = r,
                None => {
                    return Ok(
                        json!({"ok": true, "policy": null, "cgroup": "", "note": "no policy selects it"}),
                    );
                }
            }
        }
        let id = cgroup::id_of(&self.root.join(&rel))?;
        self.started.insert(
            format!("{}/{}", state.root.display(), state.id),
            state.clone(),
        );
        if let Some(i) = self
            .states
            .iter()
            .position(|x| x.root == state.root && x.id == state.id)
        {
            self.states[i] = state;
        } else {
            self.states.push(state);
        }
        self.index_states();
        // The CRI may not have this container yet (a pod's sandbox starts before the
        // pod is listed); ask again once.
        if !self.cri.is_empty() && !self.cri.iter().any(|c| c.knows(&s.id)) {
            self.refresh_cri().await;
        }
        let w = self.classify(id, &rel);
        if !self.workloads.contains_key(&id) || self.workloads.get(&id) != Some(&w) {
            log_workload(&w);
        }
        self.by_path.insert(rel.clone(), id);
        self.workloads.insert(id, w);
        let choice = self.workloads.get(&id).and_then(|w| self.choose(w));
        let reply = match choice {
            Some(c) => {
                if self.bound.get(&id).map(|b| (b.choice, b.slot))
                    != Some((c, self.want_slot(id, c)))
                {
                    self.bind(probe, id, c, Via::Start { sent_ns: s.sent_ns })?;
                }
                let p = &self.policies[c.policy].policy;
                json!({
                    "ok": true,
                    "policy": p.name,
                    "mode": if c.monitor_only { "monitor" } else { p.mode.as_str() },
                    "cgroup": rel,
                    "cgroup_id": id,
                    "start_to_bound_us": socket::monotonic_ns().saturating_sub(s.sent_ns) / 1000,
                })
            }
            None => {
                if self.bound.contains_key(&id) {
                    self.unbind(probe, id)?;
                }
                json!({"ok": true, "policy": null, "cgroup": rel, "cgroup_id": id})
            }
        };
        self.update_levels(probe)?;
        Ok(reply)
    }

    /// The workload a cgroup id belongs to: its own entry, or for a cgroup below a
    /// container, the container's; also recently removed ones.
    pub fn describe(&self, cgroup_id: u64) -> Option<&Workload> {
        let own = self.workloads.get(&cgroup_id).or_else(|| {
            self.departed
                .iter()
                .rev()
                .find(|w| w.cgroup_id == cgroup_id)
        })?;
        if own.is_container() {
            return Some(own);
        }
        let mut path = own.cgroup_path.as_str();
        while let Some((parent, _)) = path.rsplit_once('/') {
            if let Some(w) = self
                .by_path
                .get(parent)
                .and_then(|id| self.workloads.get(id))
                && w.is_container()
            {
                return Some(w);
            }
            path = parent;
        }
        Some(own)
    }

    /// The policy a slot holds, or held last, and whether monitor-only: names the
    /// policy of a violation event, even one from a slot freed since.
    pub fn policy_of_slot(&self, slot: u32) -> Option<(&str, bool)> {
        self.slot_owner
            .get(&slot)
            .map(|(name, m)| (name.as_str(), *m))
    }

    /// Unbind everything (agent shutdown) and remove the cgroups it adopted, if empty.
    pub fn unbind_all(&mut self, probe: &mut Probe) -> anyhow::Result<()> {
        let ids: Vec<u64> = self.bound.keys().copied().collect();
        for id in ids {
            probe.unbind(id)?;
        }
        self.bound.clear();
        self.remove_empty_adopted();
        Ok(())
    }
}

/// Whether a cgroup holds only an OCI runtime's own processes (runc's
/// `runc:[0:PARENT]`..`runc:[2:INIT]`, crun, youki, before they exec the entrypoint), or
/// is empty while `empty_is_setup` (it is a container's, or a runtime is creating a
/// container right now and may be about to move its init in).
fn runtime_setting_up(dir: &Path, empty_is_setup: bool) -> bool {
    let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
        return false;
    };
    let pids: Vec<u32> = procs
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .collect();
    if pids.is_empty() {
        return empty_is_setup;
    }
    pids.iter().all(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| is_runtime_init_comm(c.trim()))
    })
}

/// The `comm` of an OCI runtime's own process inside a container, before the exec of
/// the entrypoint.
pub fn is_runtime_init_comm(comm: &str) -> bool {
    comm.starts_with("runc:[") || comm.starts_with("youki:[") || comm == "crun" || comm == "runc"
}

fn log_workload(w: &Workload) {
    info!(
        event = "workload",
        cgroup = %w.cgroup_path,
        cgroup_id = w.cgroup_id,
        kind = w.kind.map_or("", |k| match k {
            Kind::Container if w.sandbox_container => "pod-sandbox",
            Kind::Container => "container",
            Kind::Pod => "pod",
            Kind::Monitor => "runtime-monitor",
            Kind::Overhead => "runtime-overhead",
        }),
        runtime = w.runtime.as_ref().map_or("", |r| r.name()),
        runtime_handler = w.runtime_handler.as_deref().unwrap_or(""),
        engine = w.engine.map_or("", |e| e.name()),
        sandboxed = w.sandboxed(),
        container_id = w.container_id.as_deref().unwrap_or(""),
        container = w.container.as_deref().unwrap_or(""),
        pod = w.pod.as_deref().unwrap_or(""),
        namespace = w.namespace.as_deref().unwrap_or(""),
        image = w.image.as_deref().unwrap_or(""),
        labels = %serde_json::to_string(&w.labels).unwrap_or_default(),
        adopted = w.adopted,
        note = w.runtime.as_ref().and_then(Runtime::sandbox_note).unwrap_or(""),
    );
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

/// Whether cgroup v1 controllers are mounted beside the v2 hierarchy at `v2_root`.
fn is_hybrid(v2_root: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines().any(|l| {
            l.split_once(" - ")
                .is_some_and(|(_, right)| right.split_whitespace().next() == Some("cgroup"))
        })
    }) && v2_root != Path::new("/sys/fs/cgroup")
}
