//! The binder: which policy each workload gets, and why. It asks the
//! [`super::index`] what each cgroup is, the [`super::table`] which slot holds each
//! policy, and keeps the kernel's `WORKLOADS` map in line with both as workloads come
//! and go, as policies change, and as the runtime wrapper reports a `start`.

mod sandbox;

use std::collections::{BTreeMap, HashMap};

use probe_common::PolicySlot;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{
    Runtime, Workload,
    index::{CgroupIndex, IndexOptions},
    socket::{self, Request, StartRequest},
    table::{Choice, PolicyEntry, PolicyTable, ReloadSummary},
};
use crate::{
    cgroup,
    model::Binding,
    policy::{CompiledPolicy, Mode, Target},
    probe::Probe,
};

/// A workload bound to a policy.
struct BoundEntry {
    choice: Choice,
    /// The slot written to `WORKLOADS`.
    slot: u32,
    /// The policy's name (indexes change on reload).
    policy: String,
    rel: String,
    /// When it was first bound (Unix ms).
    since_ms: u64,
    /// Why it has this policy (`selector`, `fail-closed: ...`, `ancestor`, ...).
    reason: String,
}

/// How a binding came about, for logs.
#[derive(Clone, Copy)]
enum Via {
    /// Before the entrypoint: the runtime wrapper's `start`.
    Start { sent_ns: u64 },
    /// The cgroup appeared, or a rescan found it.
    Discovery,
}

pub use sandbox::{SandboxEntry, SandboxRecord};

pub struct Binder {
    index: CgroupIndex,
    table: PolicyTable,
    bound: HashMap<u64, BoundEntry>,
    /// The ancestor levels written to the probe's settings (bit N: a binding at depth N).
    levels: u32,
    /// Watchers per workload (`sysfence watch` through the API).
    watch_refs: HashMap<u64, u32>,
    /// Bindings found pinned when this agent took over a running probe: cgroup id →
    /// the policy (name, monitor-only) its slot held, if a policy of this agent holds
    /// the same content. A pinned binding is never dropped on the strength of what the
    /// cgroup's processes look like: it is re-derived from trusted sources and changed
    /// only to an equal or stricter policy, until the policy files change.
    floors: HashMap<u64, (String, bool)>,
    /// The policy for containers whose identity cannot be established and that no
    /// policy could select (`--default-policy`).
    default_policy: Option<String>,
    /// runsc containers the wrapper asked about before `create`, by container id: the
    /// policy they were given inside the sandbox (see [`super::sandbox`]).
    sandboxes: HashMap<String, SandboxEntry>,
    /// The trace session runsc starts each sandbox with (`--pod-init-config`), when the
    /// agent listens for gVisor's trace points.
    trace_config: Option<std::path::PathBuf>,
}

/// How strict a mode is: monitor-only and monitor count, audit reports, enforce acts.
fn strictness(mode: Mode, monitor_only: bool) -> u8 {
    match mode {
        _ if monitor_only => 0,
        Mode::Monitor => 0,
        Mode::Audit => 1,
        Mode::Enforce => 2,
    }
}

/// How strict a choice is (see [`strictness`]); a choice of no policy in `entries`, none.
fn strictness_of(entries: &[PolicyEntry], c: Choice) -> u8 {
    entries
        .get(c.policy)
        .map_or(0, |e| strictness(e.policy.mode, c.monitor_only))
}

/// The rule that no binding is weakened: `own`, unless `other` (a pinned floor, the
/// binding a workload has, its bound ancestor's) is strictly stricter.
fn never_weaker(
    entries: &[PolicyEntry],
    own: (Choice, String),
    other: Option<(Choice, String)>,
) -> (Choice, String) {
    match other {
        Some(o) if strictness_of(entries, o.0) > strictness_of(entries, own.0) => o,
        _ => own,
    }
}

/// Why a workload has its bound ancestor's policy rather than its own.
const ANCESTOR_WHY: &str = "ancestor: its own policy is weaker than its parent's";

/// The nearest proper ancestor of `path` in `by_path`.
fn nearest_ancestor<'a, T>(by_path: &'a HashMap<&str, T>, path: &str) -> Option<&'a T> {
    let mut p = path;
    while let Some((parent, _)) = p.rsplit_once('/') {
        if let Some(t) = by_path.get(parent) {
            return Some(t);
        }
        p = parent;
    }
    None
}

/// The policy a workload's cgroup gets on the host: the most specific whose selector
/// matches it. When its identity is incomplete ([`Workload::unknown`]), fail closed:
/// the strictest policy that could select it once known (then the most specific), else
/// `default` (the agent's `--default-policy`). A sandboxed workload's cgroup holds the
/// runtime's own processes (gVisor's Sentry, Kata's VMM): a `target: sandbox` policy
/// that selects it applies as written; failing one, its application's policy applies
/// monitor-only unless it names that runtime. Returns the choice and why it was made,
/// for `status`.
pub fn choose_why(
    entries: &[PolicyEntry],
    w: &Workload,
    default: Option<&str>,
) -> Option<(Choice, String)> {
    if w.sandboxed()
        && let Some((i, why)) = pick(entries, w, default, Target::Sandbox)
    {
        let why = format!("{why} (target: sandbox)");
        return Some((
            Choice {
                policy: i,
                monitor_only: false,
            },
            why,
        ));
    }
    let (i, why) = pick(entries, w, default, Target::Application)?;
    let p = &entries[i].policy;
    let monitor_only = w.sandboxed() && !p.selector.names_runtime_of(w) && p.mode != Mode::Monitor;
    Some((
        Choice {
            policy: i,
            monitor_only,
        },
        why,
    ))
}

/// The policy a runsc container's application gets inside its sandbox: as
/// [`choose_why`] among `target: application` policies, as written.
pub fn choose_inside_why(
    entries: &[PolicyEntry],
    w: &Workload,
    default: Option<&str>,
) -> Option<(Choice, String)> {
    pick(entries, w, default, Target::Application).map(|(policy, why)| {
        (
            Choice {
                policy,
                monitor_only: false,
            },
            why,
        )
    })
}

/// The selection rule of [`choose_why`] among the policies for `target`.
fn pick(
    entries: &[PolicyEntry],
    w: &Workload,
    default: Option<&str>,
    target: Target,
) -> Option<(usize, String)> {
    let strict = |i: usize| strictness(entries[i].policy.mode, false);
    let spec = |i: usize| entries[i].policy.selector.specificity();
    let eligible = |i: &usize| entries[*i].policy.target == target;
    match &w.unknown {
        None => {
            let i = (0..entries.len())
                .filter(eligible)
                .filter(|&i| entries[i].policy.selector.matches(w))
                .max_by_key(|&i| (spec(i), std::cmp::Reverse(i)))?;
            Some((i, "selector".to_string()))
        }
        Some(unknown) => {
            let could = (0..entries.len())
                .filter(eligible)
                .filter(|&i| entries[i].policy.selector.could_match(w))
                .max_by_key(|&i| (strict(i), spec(i), std::cmp::Reverse(i)));
            match could {
                Some(i) => Some((
                    i,
                    format!("fail-closed: {unknown}; the strictest policy that could select it"),
                )),
                None => {
                    let name = default?;
                    let i = entries
                        .iter()
                        .position(|e| e.policy.name == name && e.policy.target == target)?;
                    Some((i, format!("default policy: {unknown}")))
                }
            }
        }
    }
}

/// [`choose_why`] without a default policy and without the reason.
pub fn choose(entries: &[PolicyEntry], w: &Workload) -> Option<Choice> {
    choose_why(entries, w, None).map(|(c, _)| c)
}

impl Binder {
    /// Fill the slots of `policies` (each with its enforcement as computed by the
    /// caller) and get ready to bind. Nothing is bound before [`Binder::rescan`].
    pub fn new(
        options: IndexOptions,
        policies: Vec<(CompiledPolicy, PolicySlot)>,
        probe: &mut Probe,
    ) -> anyhow::Result<Binder> {
        let table = PolicyTable::new(policies, probe)?;
        // A pinned binding whose slot holds exactly the content of a policy of this
        // agent (the policy files did not change for it) is that policy's floor.
        let mut floors = HashMap::new();
        if probe.adopted() {
            let pinned: Vec<(u64, u32)> = probe.bindings().collect();
            for (id, slot) in pinned {
                let Ok(content) = probe.read_slot(slot) else {
                    continue;
                };
                for e in table.entries() {
                    if let Some(monitor_only) = PolicyTable::holds(e, &content) {
                        floors
                            .entry(id)
                            .or_insert_with(|| (e.policy.name.clone(), monitor_only));
                    }
                }
            }
        }
        Ok(Binder {
            table,
            index: CgroupIndex::new(options),
            bound: HashMap::new(),
            levels: u32::MAX,
            watch_refs: HashMap::new(),
            floors,
            default_policy: None,
            sandboxes: HashMap::new(),
            trace_config: None,
        })
    }

    /// The policy for containers of unknown identity that no policy could select; it
    /// must be one of the policies loaded.
    pub fn set_default_policy(&mut self, name: Option<String>) -> anyhow::Result<()> {
        if let Some(n) = &name
            && self.table.index_of(n).is_none()
        {
            anyhow::bail!(
                "--default-policy {n}: no policy of that name is loaded (metadata.name of a SyscallPolicy in the policy directory)"
            );
        }
        self.default_policy = name;
        Ok(())
    }

    /// What the cgroups are.
    pub fn index(&self) -> &CgroupIndex {
        &self.index
    }

    /// Processes the probe holds at their exec (see `CgroupIndex::note_execd`).
    pub fn note_execd(&mut self, pids: impl IntoIterator<Item = u32>) {
        self.index.note_execd(pids);
    }

    /// The start-hold roots now (see [`super::hold`]): cgroup id → level.
    pub fn hold_roots(&self) -> BTreeMap<u64, u32> {
        super::hold::roots(&self.index, &self.table)
    }

    /// Bring the workload table and the kernel's bindings in line with the system.
    pub async fn rescan(&mut self, probe: &mut Probe) -> anyhow::Result<()> {
        let table = &self.table;
        self.index
            .rescan(&|w| choose(table.entries(), w).is_some())
            .await;
        self.apply_all(probe)?;
        self.index.remove_empty_adopted();
        Ok(())
    }

    /// Watch the cgroup tree and the runtime state roots; each change sends a wake-up.
    pub fn spawn_watcher(&self, wake: mpsc::Sender<()>) -> anyhow::Result<()> {
        self.index.spawn_watcher(wake)
    }

    /// The workload a cgroup id belongs to (see [`CgroupIndex::describe`]).
    pub fn describe(&self, cgroup_id: u64) -> Option<&Workload> {
        self.index.describe(cgroup_id)
    }

    /// The policy a slot holds or held last (see [`PolicyTable::policy_of_slot`]).
    pub fn policy_of_slot(&self, slot: u32) -> Option<(&str, bool)> {
        self.table.policy_of_slot(slot)
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
            .filter(|id| !self.table.counted_apart(*id))
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
            if let Some(p) = self.table.take_private(*id) {
                if let Some(b) = self.bound.get_mut(id) {
                    let slot = self.table.slot_of(b.choice);
                    probe.bind(*id, slot)?;
                    b.slot = slot;
                }
                self.table
                    .retire(p.slot, p.policy, p.monitor_only, Some(*id));
            }
        }
        Ok(())
    }

    /// Give every watched, bound workload without a slot of its own one, if free.
    fn ensure_private(&mut self, probe: &mut Probe) -> anyhow::Result<()> {
        let want: Vec<u64> = self
            .watch_refs
            .keys()
            .filter(|id| self.bound.contains_key(id) && !self.table.counted_apart(**id))
            .copied()
            .collect();
        for id in want {
            let choice = self.bound[&id].choice;
            let Some(slot) = self.table.give_private(probe, id, choice)? else {
                break;
            };
            if let Err(e) = probe.bind(id, slot) {
                self.table.forget_private(id);
                return Err(e);
            }
            self.bound.get_mut(&id).expect("bound").slot = slot;
        }
        Ok(())
    }

    /// A watched workload's calls since it was first watched.
    pub fn workload_counts(&self, probe: &Probe, id: u64) -> BTreeMap<u32, u64> {
        self.table.workload_counts(probe, id)
    }

    /// Whether a workload is counted in a slot of its own.
    pub fn counted_apart(&self, id: u64) -> bool {
        self.table.counted_apart(id)
    }

    /// Calls per (policy, monitor-only) and syscall index.
    pub fn policy_counts(&self, probe: &Probe) -> BTreeMap<(String, bool), BTreeMap<u32, u64>> {
        self.table.policy_counts(probe)
    }

    /// After the first rescan of an agent that adopted a pinned probe: every pinned
    /// binding whose policy this agent still holds was re-derived, never weaker (see
    /// `floors`); forget the others, whose cgroups went away while no agent ran or
    /// whose policy files changed and select them no more, and free the slots nothing
    /// points at. Returns how many were forgotten.
    pub fn finish_adoption(&mut self, probe: &mut Probe) -> anyhow::Result<usize> {
        let pinned: Vec<(u64, u32)> = probe.bindings().collect();
        let mut stale = 0;
        for (id, slot) in pinned {
            if self.bound.contains_key(&id) {
                continue;
            }
            if let Some(w) = self.index.get(id) {
                info!(
                    event = "pinned_binding_dropped",
                    cgroup = %w.cgroup_path,
                    cgroup_id = id,
                    slot,
                    "its slot holds no policy of the policy files now in force, and none selects it"
                );
            }
            probe.unbind(id)?;
            stale += 1;
        }
        self.table.release_adopted(&Default::default());
        self.update_levels(probe)?;
        Ok(stale)
    }

    /// Apply a new set of policies without a moment unpoliced: a changed policy is
    /// written into free slots, its workloads switched there, and its old slots freed.
    /// Unchanged policies keep their slots and counters.
    pub async fn reload(
        &mut self,
        probe: &mut Probe,
        policies: Vec<(CompiledPolicy, PolicySlot)>,
    ) -> anyhow::Result<ReloadSummary> {
        let result = self.table.replace(probe, policies).await;
        self.reindex_bound();
        if result.is_ok() {
            // The policy files changed: bindings are derived from them alone now.
            self.floors.clear();
        }
        let (mut summary, old) = result?;
        let before: HashMap<u64, u32> = self.bound.iter().map(|(id, b)| (*id, b.slot)).collect();
        self.apply_all(probe)?;
        summary.rebound = self
            .bound
            .iter()
            .filter(|(id, b)| before.get(id).is_some_and(|s| *s != b.slot))
            .count();
        self.table.retire_entries(old);
        Ok(summary)
    }

    /// Point the bound workloads' choices at the policies' current indexes; a workload
    /// whose policy is gone gets another (or none) from `apply_all`.
    fn reindex_bound(&mut self) {
        let index: HashMap<&str, usize> = self
            .table
            .entries()
            .iter()
            .enumerate()
            .map(|(i, e)| (e.policy.name.as_str(), i))
            .collect();
        for b in self.bound.values_mut() {
            b.choice.policy = index.get(b.policy.as_str()).copied().unwrap_or(usize::MAX);
        }
    }

    /// Zero the counters of freed slots past their quarantine, off the reload path.
    pub fn scrub_free_slots(&mut self, probe: &mut Probe) -> anyhow::Result<()> {
        let watched = &self.watch_refs;
        self.table
            .scrub_free_slots(probe, &|id| watched.contains_key(&id))
    }

    /// Policies in force: name, file, mode, slot, monitor slot, workloads bound.
    pub fn policy_rows(&self) -> Vec<Value> {
        let bound = &self.bound;
        self.table
            .policy_rows(&|name| bound.values().filter(|b| b.policy == name).count())
    }

    /// The bound workloads, described.
    pub fn bound_rows(&self) -> Vec<Binding> {
        let mut rows: Vec<Binding> = self
            .bound
            .iter()
            .map(|(id, b)| {
                let mut workload = self
                    .index
                    .get(*id)
                    .map(Workload::to_ref)
                    .unwrap_or_default();
                workload.cgroup_id = *id;
                workload.cgroup.clone_from(&b.rel);
                Binding {
                    workload,
                    policy: b.policy.clone(),
                    mode: if b.choice.monitor_only {
                        "monitor"
                    } else {
                        self.table
                            .entries()
                            .get(b.choice.policy)
                            .map_or("?", |e| e.policy.mode.as_str())
                    }
                    .to_string(),
                    slot: Some(b.slot),
                    bound_ms: Some(b.since_ms),
                    reason: b.reason.clone(),
                }
            })
            .collect();
        rows.sort_by(|a, b| a.workload.cgroup.cmp(&b.workload.cgroup));
        rows
    }

    /// Slots in use, and the probe's capacity.
    pub fn slot_usage(&self) -> (usize, u32) {
        self.table.slot_usage()
    }

    pub fn bound_count(&self) -> usize {
        self.bound.len()
    }

    fn apply_all(&mut self, probe: &mut Probe) -> anyhow::Result<()> {
        let entries = self.table.entries();
        let floor_of = |id: u64| {
            let (name, monitor_only) = self.floors.get(&id)?;
            let policy = entries.iter().position(|e| &e.policy.name == name)?;
            Some(Choice {
                policy,
                monitor_only: *monitor_only,
            })
        };
        // What each workload's own identity asks for.
        let mut own: HashMap<u64, (Choice, String)> = HashMap::new();
        for (id, w) in self.index.workloads() {
            let floor = floor_of(*id);
            let pinned = || {
                "pinned: the binding found pinned is stricter; kept until the policy files change"
                    .to_string()
            };
            let choice = match (
                choose_why(entries, w, self.default_policy.as_deref()),
                floor,
            ) {
                (Some(c), f) => never_weaker(entries, c, f.map(|f| (f, pinned()))),
                (None, Some(f)) => (f, pinned()),
                (None, None) => continue,
            };
            // Discovery never binds a container its runtime is still setting up, or
            // that waits for `start`: the policy would judge the runtime's own mounts,
            // pivot_root and the like (and kill them under enforce). The wrapper binds
            // it at `start`; without the wrapper, the next rescan after the
            // entrypoint's exec does. A binding this agent or a pinned probe already
            // has is never held back.
            if !self.bound.contains_key(id)
                && floor.is_none()
                && !w.sandboxed()
                && self.index.runtime_busy(w)
            {
                continue;
            }
            own.insert(*id, choice);
        }
        // A cgroup below a bound one keeps its ancestor's policy (the probe falls back
        // to it) unless the runtime's state vouches for it as a container of its own;
        // and it is never bound to a weaker mode than its ancestor's.
        let by_path: HashMap<&str, Choice> = own
            .iter()
            .filter_map(|(id, (c, _))| Some((self.index.get(*id)?.cgroup_path.as_str(), *c)))
            .collect();
        let want: HashMap<u64, (Choice, String)> = own
            .iter()
            .filter_map(|(id, (c, why))| {
                let w = self.index.get(*id)?;
                match nearest_ancestor(&by_path, &w.cgroup_path) {
                    Some(_) if !w.vouched => None,
                    a => Some((
                        *id,
                        never_weaker(
                            entries,
                            (*c, why.clone()),
                            a.map(|a| (*a, ANCESTOR_WHY.to_string())),
                        ),
                    )),
                }
            })
            .collect();
        for (id, (choice, why)) in &want {
            if self
                .bound
                .get(id)
                .map(|b| (b.choice, b.slot, b.reason.as_str()))
                != Some((*choice, self.table.want_slot(*id, *choice), why.as_str()))
            {
                self.bind(probe, *id, *choice, Via::Discovery, why)?;
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
        let bound = &self.bound;
        self.table
            .retire_stale_private(&|id| bound.get(&id).map(|b| b.slot));
        self.ensure_private(probe)?;
        self.update_levels(probe)
    }

    fn bind(
        &mut self,
        probe: &mut Probe,
        id: u64,
        choice: Choice,
        via: Via,
        reason: &str,
    ) -> anyhow::Result<()> {
        let slot = self.table.want_slot(id, choice);
        probe.bind(id, slot)?;
        let bound_ns = socket::monotonic_ns();
        let w = self.index.get(id).cloned().unwrap_or(Workload {
            cgroup_id: id,
            ..Workload::default()
        });
        let p = &self.table.entries()[choice.policy].policy;
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
        info_workload!(
            &w,
            event = "bound",
            policy = %p.name,
            mode = applied,
            via = via_name,
            start_to_bound_us,
            note = %note,
            reason,
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
                reason: reason.to_string(),
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
        let levels = self
            .bound
            .values()
            .map(|b| b.rel.as_str())
            .fold(0u32, |acc, rel| {
                acc | 1u32.checked_shl(cgroup::level(rel)).unwrap_or(0)
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
            Request::Sandbox(s) => {
                let id = s.id.clone();
                match self.on_sandbox(s) {
                    Ok(v) => v,
                    Err(e) => {
                        warn!(event = "sandbox_failed", container_id = %id, error = %format!("{e:#}"));
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
                    "workloads": self.index.workloads().values().filter(|w| w.is_container()).collect::<Vec<_>>(),
                }),
                Err(e) => json!({"ok": false, "error": format!("{e:#}")}),
            },
        }
    }

    /// A runtime is about to start container `s.id`: index it, bind it, answer.
    async fn on_start(&mut self, probe: &mut Probe, s: StartRequest) -> anyhow::Result<Value> {
        let table = &self.table;
        let admitted = self
            .index
            .admit_start(&s, &|w| choose(table.entries(), w).is_some())
            .await?;
        let Some((id, rel)) = admitted else {
            return Ok(
                json!({"ok": true, "policy": null, "cgroup": "", "note": "no policy selects it"}),
            );
        };
        let choice = self
            .index
            .get(id)
            .and_then(|w| choose_why(self.table.entries(), w, self.default_policy.as_deref()));
        let reply = match choice {
            Some(own) => {
                let entries = self.table.entries();
                // Never weaker than a binding it already has, nor than a bound
                // ancestor's, as discovery would have it.
                let had = self.bound.get(&id).map(|b| (b.choice, b.reason.clone()));
                let ancestors: HashMap<&str, Choice> = self
                    .bound
                    .values()
                    .map(|b| (b.rel.as_str(), b.choice))
                    .collect();
                let ancestor =
                    nearest_ancestor(&ancestors, &rel).map(|a| (*a, ANCESTOR_WHY.to_string()));
                let (c, why) = never_weaker(entries, never_weaker(entries, own, had), ancestor);
                if self.bound.get(&id).map(|b| (b.choice, b.slot))
                    != Some((c, self.table.want_slot(id, c)))
                {
                    self.bind(probe, id, c, Via::Start { sent_ns: s.sent_ns }, &why)?;
                }
                let p = &self.table.entries()[c.policy].policy;
                json!({
                    "ok": true,
                    "policy": p.name,
                    "mode": if c.monitor_only { "monitor" } else { p.mode.as_str() },
                    "cgroup": rel,
                    "cgroup_id": id,
                    "start_to_bound_us": socket::monotonic_ns().saturating_sub(s.sent_ns) / 1000,
                })
            }
            // A start never unbinds: a binding goes when its cgroup does, or when the
            // policy files change.
            None => match self.bound.get(&id) {
                Some(b) => json!({"ok": true, "policy": b.policy, "cgroup": rel, "cgroup_id": id,
                                  "note": "no policy selects it now; its binding stays"}),
                None => json!({"ok": true, "policy": null, "cgroup": rel, "cgroup_id": id}),
            },
        };
        self.update_levels(probe)?;
        Ok(reply)
    }

    /// Unbind everything (agent shutdown) and remove the cgroups it adopted, if empty.
    pub fn unbind_all(&mut self, probe: &mut Probe) -> anyhow::Result<()> {
        let ids: Vec<u64> = self.bound.keys().copied().collect();
        for id in ids {
            probe.unbind(id)?;
        }
        self.bound.clear();
        self.index.remove_empty_adopted();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
