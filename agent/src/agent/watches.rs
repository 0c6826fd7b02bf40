//! `watch` through the agent: each watched workload is counted in a slot of its own
//! while a client looks at it, and a frame a second goes to the client.

use std::{
    collections::{BTreeMap, HashMap},
    time::SystemTime,
};

use serde_json::Value;
use tokio::sync::mpsc;
use tracing::warn;

use super::Agent;
use crate::{
    api::protocol::{Filters, FrameWorkload, WatchFrame},
    clock::unix_ms,
    model::{Binding, Counts, SyscallKey},
};

/// A `watch` client: its filter, the workloads it looks at (each counted in a slot
/// of its own meanwhile), and their counts when it began looking.
pub struct Watch {
    pub filter: Filters,
    pub reply: mpsc::Sender<Value>,
    pub baseline: HashMap<u64, BTreeMap<u32, u64>>,
    /// Violations per workload when the watch began looking at it.
    pub violations_before: HashMap<u64, Counts>,
    /// The application's syscalls inside a gVisor sandbox when the watch began looking
    /// at it (x86_64 number → calls), per workload.
    pub inside_before: HashMap<u64, BTreeMap<u64, u64>>,
}

impl Watch {
    pub fn new(filter: Filters, reply: mpsc::Sender<Value>) -> Watch {
        Watch {
            filter,
            reply,
            baseline: HashMap::new(),
            violations_before: HashMap::new(),
            inside_before: HashMap::new(),
        }
    }
}

impl Agent {
    /// The bound workloads a watch's filter selects (as `sysfence watch` filters; an
    /// empty filter matches everything).
    fn watch_rows(&self, filters: &Filters) -> Vec<Binding> {
        let given = |f: &Option<String>| f.clone().filter(|v| !v.is_empty());
        let filters = Filters {
            namespace: given(&filters.namespace),
            pod: given(&filters.pod),
            container: given(&filters.container),
            cgroup: given(&filters.cgroup),
        };
        self.workloads
            .bound_rows()
            .into_iter()
            .filter(|r| filters.matches(&r.workload))
            .collect()
    }

    /// One frame of a watch: cumulative counts since the watch began, per workload
    /// (each counted in a slot of its own while watched), and its violations. Workloads
    /// that appear are taken on, those gone are let go.
    pub(super) fn watch_frame(&mut self, w: &mut Watch) -> Value {
        let rows = self.watch_rows(&w.filter);
        let ids: Vec<u64> = rows.iter().map(|r| r.workload.cgroup_id).collect();
        let new: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| !w.baseline.contains_key(id))
            .collect();
        let gone: Vec<u64> = w
            .baseline
            .keys()
            .copied()
            .filter(|id| !ids.contains(id))
            .collect();
        if let Err(e) = self.workloads.watch_release(&mut self.probe, &gone) {
            warn!(event = "watch_failed", error = %format!("{e:#}"));
        }
        for id in &gone {
            w.baseline.remove(id);
            w.violations_before.remove(id);
            w.inside_before.remove(id);
        }
        if !new.is_empty() {
            match self.workloads.watch_acquire(&mut self.probe, &new) {
                Ok(shared) if !shared.is_empty() => {
                    warn!(
                        event = "watch_slots_exhausted",
                        workloads = shared.len(),
                        "no free slot to count these workloads apart"
                    )
                }
                Ok(_) => {}
                Err(e) => warn!(event = "watch_failed", error = %format!("{e:#}")),
            }
            for id in &new {
                let now = self.workloads.workload_counts(&self.probe, *id);
                w.baseline.insert(*id, now);
                let seen = self
                    .telemetry
                    .watch_violations
                    .get(id)
                    .cloned()
                    .unwrap_or_default();
                w.violations_before.insert(*id, seen);
                if let Some(inside) = self.inside_counts_of(&rows, *id) {
                    w.inside_before.insert(*id, inside.clone());
                }
            }
        }
        let workloads = rows
            .into_iter()
            .map(|binding| {
                let id = binding.workload.cgroup_id;
                let base = w.baseline.get(&id);
                let mut frame = FrameWorkload {
                    binding,
                    ..FrameWorkload::default()
                };
                if let Some(inside) =
                    self.inside_counts_of(std::slice::from_ref(&frame.binding), id)
                {
                    // gVisor: the application's own syscalls, from its trace session.
                    let before = w.inside_before.entry(id).or_default();
                    for (&nr, &n) in inside {
                        let was = before.get(&nr).copied().unwrap_or(0);
                        let index = probe_common::syscall_index(probe_common::Abi::X86_64, nr);
                        if let Some(index) = index
                            && n > was
                        {
                            frame.counts.insert(SyscallKey::of_index(index), n - was);
                        }
                    }
                    frame.inside_sandbox = true;
                } else if self.workloads.counted_apart(id) {
                    for (index, n) in self.workloads.workload_counts(&self.probe, id) {
                        let before = base.and_then(|b| b.get(&index)).copied().unwrap_or(0);
                        if n > before {
                            frame.counts.insert(SyscallKey::of_index(index), n - before);
                        }
                    }
                } else {
                    frame.note = Some(
                        "no free policy slot to count this workload apart: counts not shown".into(),
                    );
                }
                if let Some(v) = self.telemetry.watch_violations.get(&id) {
                    let before = w.violations_before.get(&id);
                    for (key, n) in v {
                        let since = n - before.and_then(|b| b.get(key)).copied().unwrap_or(0);
                        if since > 0 {
                            frame.violations.insert(key.clone(), since);
                            if let Some(args) = self
                                .telemetry
                                .watch_violation_args
                                .get(&id)
                                .and_then(|a| a.get(key))
                            {
                                frame.violation_args.insert(key.clone(), args.clone());
                            }
                        }
                    }
                }
                frame
            })
            .collect();
        let frame = WatchFrame {
            t_ms: unix_ms(SystemTime::now()),
            workloads,
        };
        serde_json::to_value(frame)
            .unwrap_or_else(|e| crate::api::protocol::error(format!("watch: {e}")))
    }

    /// The application's syscalls inside the gVisor sandbox of workload `id` (one of
    /// `rows`), when its trace session reports them.
    fn inside_counts_of(&self, rows: &[Binding], id: u64) -> Option<&BTreeMap<u64, u64>> {
        let row = rows.iter().find(|r| r.workload.cgroup_id == id)?;
        // The runtime may not be known yet of a sandbox just placed in a cgroup of its
        // own; its container id is (and only ids the wrapper asked about are counted).
        let runtime = row.workload.runtime.as_str();
        if !runtime.is_empty() && runtime != crate::model::Runtime::Runsc.name() {
            return None;
        }
        self.sandboxes.counts.get(&row.workload.container_id)
    }

    /// A watch ended: let its workloads go.
    pub(super) fn watch_end(&mut self, w: &Watch) {
        let ids: Vec<u64> = w.baseline.keys().copied().collect();
        if let Err(e) = self.workloads.watch_release(&mut self.probe, &ids) {
            warn!(event = "watch_failed", error = %format!("{e:#}"));
        }
    }
}
