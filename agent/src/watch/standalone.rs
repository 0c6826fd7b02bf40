//! The standalone source: sysfence's own probe, monitor only, one counting slot per
//! workload, so counts are per workload whether or not the agent runs.
//!
//! Workloads are found by the agent's own discovery ([`crate::workload::CgroupIndex`], so
//! it binds nothing): containers from cgroupfs, the runtimes' state and the CRI. With
//! `--cgroup`, any cgroup whose path matches counts too, container or not. Each
//! matching workload gets a slot that allows everything in `monitor` mode (nothing is
//! judged, every call is counted) and its cgroup is bound to it; its child cgroups
//! count with it through the probe's ancestor fallback.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use probe_common::{PolicySlot, mode};

use super::snapshot::{Counts, Filters, Snapshot, SyscallKey, WorkloadCounts, WorkloadRef};
use crate::{
    cgroup,
    probe::{Probe, ProbeOptions},
    workload::{CgroupIndex, IndexOptions},
};
use crate::{clock::now_ms, model::Workload};

/// A slot that counts every call and judges none.
pub fn allow_all_slot() -> PolicySlot {
    PolicySlot {
        mode: mode::MONITOR,
        live: 1,
        allow: [u64::MAX; probe_common::ALLOW_WORDS],
        ..PolicySlot::EMPTY
    }
}

/// A slot's counts as keyed counts, with its forks into a new namespace (under
/// [`SyscallKey::new_namespace`]) when there were any.
pub fn slot_keyed(probe: &Probe, slot: u32) -> anyhow::Result<Counts> {
    let mut counts = keyed(&probe.slot_counts(slot)?);
    let forks = probe.slot_new_namespaces(slot)?;
    if forks > 0 {
        counts.insert(SyscallKey::new_namespace(), forks);
    }
    Ok(counts)
}

/// The per-index counts of a probe slot as keyed counts.
pub fn keyed(counts: &[(u32, u64)]) -> Counts {
    counts
        .iter()
        .map(|&(i, n)| (SyscallKey::of_index(i), n))
        .collect()
}

struct Watched {
    identity: WorkloadRef,
    slot: u32,
}

/// Where standalone discovery learns what a cgroup is, besides the cgroup tree.
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    /// Runtime state roots to read besides the default ones.
    pub runtime_roots: Vec<PathBuf>,
    /// CRI sockets to ask; `None`: the usual ones that exist.
    pub cri_sockets: Option<Vec<PathBuf>>,
}

pub struct Standalone {
    probe: Probe,
    index: CgroupIndex,
    runtime: tokio::runtime::Runtime,
    root: PathBuf,
    filters: Filters,
    watched: BTreeMap<u64, Watched>,
    free: Vec<u32>,
    /// Workloads that matched but found no free slot (said once each).
    unwatched: HashMap<u64, ()>,
    rescan_every: Duration,
    last_rescan: Option<Instant>,
    /// Workloads whose counting the last rescan began (see [`Standalone::take_new`]);
    /// cleared by each rescan, so that a `watch` that never asks keeps none.
    new: Vec<WorkloadRef>,
}

impl Standalone {
    /// Load the probe with `max_workloads` slots.
    pub fn new(
        filters: Filters,
        max_workloads: u32,
        rescan_every: Duration,
        discovery: Discovery,
    ) -> anyhow::Result<Standalone> {
        filters.validate()?;
        // A socket named on the command line that is not there is a typo or a runtime
        // that is down: counting without the pods' names would match no pod filter.
        for socket in discovery.cri_sockets.iter().flatten() {
            if !socket.exists() {
                anyhow::bail!(
                    "--cri-socket {}: no such socket (is the runtime running? containerd's is \
                     its `grpc.address`, CRI-O's `listen`)",
                    socket.display()
                );
            }
        }
        let max_workloads = max_workloads.max(1);
        let mut probe = Probe::load(ProbeOptions {
            max_slots: max_workloads,
            attach: true,
            ..ProbeOptions::default()
        })?;
        probe.settle();
        let root = cgroup::v2_root()?;
        let index = CgroupIndex::new(IndexOptions {
            cgroup_root: root.clone(),
            cri_sockets: discovery.cri_sockets,
            runtime_roots: discovery.runtime_roots,
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime for discovery")?;
        Ok(Standalone {
            probe,
            index,
            runtime,
            root,
            filters,
            watched: BTreeMap::new(),
            free: (0..max_workloads).rev().collect(),
            unwatched: HashMap::new(),
            rescan_every,
            last_rescan: None,
            new: Vec::new(),
        })
    }

    /// The state root of container `id`, if discovery found its runtime's state.
    pub fn state_root(&self, id: &str) -> Option<PathBuf> {
        self.index.state_root(id).map(std::path::Path::to_path_buf)
    }

    pub fn max_workloads(&self) -> u32 {
        self.probe.max_slots()
    }

    /// The workloads that match the filters now, and whether each is a container. A
    /// sandbox its runtime left in the cgroup v2 root (runsc on a hybrid host) is placed
    /// in a v2 cgroup of its own when it matches, as the agent does, so that it has one.
    fn discover(&mut self) -> anyhow::Result<BTreeMap<u64, (WorkloadRef, bool)>> {
        let filters = self.filters.clone();
        self.runtime.block_on(
            self.index
                .rescan(&|w| w.sandboxed() && filters.matches(&w.to_ref())),
        );
        let mut found = BTreeMap::new();
        for w in self.index.workloads().values().filter(|w| w.is_container()) {
            let identity = w.to_ref();
            if identity.cgroup_id != 0 && self.filters.matches(&identity) {
                found.insert(identity.cgroup_id, (identity, true));
            }
        }
        if self.filters.cgroup.is_some() {
            for (rel, abs) in cgroup::walk(&self.root) {
                if found.values().any(|(w, _)| w.cgroup == rel)
                    || !self.filters.cgroup_matches(&rel)
                {
                    continue;
                }
                let Ok(id) = cgroup::id_of(&abs) else {
                    continue;
                };
                let identity = self
                    .index
                    .describe(id)
                    .filter(|w| w.cgroup_id == id)
                    .map(Workload::to_ref)
                    .unwrap_or(WorkloadRef {
                        cgroup_id: id,
                        cgroup: rel,
                        ..WorkloadRef::default()
                    });
                if self.filters.matches(&identity) {
                    found.insert(id, (identity, false));
                }
            }
        }
        Ok(found)
    }

    /// Bind new workloads to free slots, retire those that are gone (their last counts
    /// are returned).
    fn rescan(&mut self) -> anyhow::Result<Vec<WorkloadCounts>> {
        self.new.clear();
        let found = self.discover()?;
        let mut retired = Vec::new();
        let gone: Vec<u64> = self
            .watched
            .keys()
            .filter(|id| !found.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            let w = self.watched.remove(&id).expect("watched");
            let counts = slot_keyed(&self.probe, w.slot)?;
            self.probe.unbind(id)?;
            self.probe.free_slot(w.slot)?;
            self.free.push(w.slot);
            retired.push(WorkloadCounts {
                identity: w.identity,
                counts,
                gone: true,
                ..WorkloadCounts::default()
            });
        }
        self.unwatched.retain(|id, ()| found.contains_key(id));
        for (id, (identity, _)) in found {
            if self.watched.contains_key(&id) || self.unwatched.contains_key(&id) {
                continue;
            }
            // A container its runtime is still setting up (or that waits for `start`)
            // is left for a later rescan: the runtime's own mounts, pivot_root and the
            // like are not the workload's calls.
            if self
                .index
                .get(id)
                .is_some_and(|w| self.index.runtime_busy(w))
            {
                continue;
            }
            let Some(slot) = self.free.pop() else {
                eprintln!(
                    "sysfence: no free counting slot for {} (cgroup {}): raise --max-workloads \
                     (now {})",
                    identity.display_name(),
                    identity.cgroup,
                    self.probe.max_slots()
                );
                self.unwatched.insert(id, ());
                continue;
            };
            self.probe.fill_slot(slot, &allow_all_slot())?;
            self.probe.bind(id, slot)?;
            self.new.push(identity.clone());
            self.watched.insert(id, Watched { identity, slot });
        }
        let levels = self.watched.values().fold(0u32, |acc, w| {
            acc | 1u32
                .checked_shl(cgroup::level(&w.identity.cgroup))
                .unwrap_or(0)
        });
        self.probe.set_ancestor_levels(levels)?;
        Ok(retired)
    }

    /// The workloads whose counting the last rescan began (ask after every
    /// [`Standalone::poll`]): their calls before it are not counted.
    pub fn take_new(&mut self) -> Vec<WorkloadRef> {
        std::mem::take(&mut self.new)
    }

    /// Rescan if due, then read every watched workload's counts.
    pub fn poll(&mut self) -> anyhow::Result<Snapshot> {
        let retired = if self
            .last_rescan
            .is_none_or(|t| t.elapsed() >= self.rescan_every)
        {
            self.last_rescan = Some(Instant::now());
            self.rescan()?
        } else {
            Vec::new()
        };
        let mut workloads = retired;
        for w in self.watched.values() {
            workloads.push(WorkloadCounts {
                identity: w.identity.clone(),
                counts: slot_keyed(&self.probe, w.slot)?,
                ..WorkloadCounts::default()
            });
        }
        Ok(Snapshot {
            t_ms: now_ms(),
            workloads,
        })
    }

    /// Unbind everything (also done when dropped, by the probe's detach).
    pub fn close(mut self) -> anyhow::Result<Snapshot> {
        let mut snapshot = self.poll()?;
        for w in &mut snapshot.workloads {
            w.gone = true;
        }
        for (id, _) in std::mem::take(&mut self.watched) {
            self.probe.unbind(id)?;
        }
        // Sandboxes placed in cgroups of their own that have ended meanwhile.
        self.index.remove_empty_adopted();
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_all_slot_allows_every_index_and_judges_none() {
        let slot = allow_all_slot();
        for i in 0..probe_common::SYSCALL_INDEXES {
            assert_eq!(
                probe_common::decide(&slot, Some(i), &probe_common::UnknownArgs),
                probe_common::Decision::Allow
            );
        }
        // What cannot be classified is still "monitored": counted, no event, no kill.
        assert!(matches!(
            probe_common::decide(&slot, None, &probe_common::UnknownArgs),
            probe_common::Decision::Violation {
                kill: false,
                event: false,
                ..
            }
        ));
    }

    #[test]
    fn a_workload_is_named_by_its_ref() {
        let w = crate::workload::Workload {
            cgroup_id: 7,
            cgroup_path: "a/b".into(),
            runtime: Some(crate::workload::Runtime::Runc),
            pod: Some("web-1".into()),
            namespace: Some("shop".into()),
            container: Some("nginx".into()),
            ..Default::default()
        };
        let id = w.to_ref();
        assert_eq!(id.cgroup, "a/b");
        assert_eq!(id.runtime, "runc");
        assert_eq!(id.display_name(), "shop/web-1/nginx");
    }
}
