//! The probe's maps as the kernel accounts them, and what one bound workload costs.

use probe_common::maps;
use serde::Serialize;

/// One map of the probe, from `bpf_map_info` and its fdinfo (`memlock` is the kernel's
/// own accounting of the map's memory).
#[derive(Serialize, Clone)]
pub(super) struct MapLine {
    pub(super) name: String,
    pub(super) map_type: u32,
    pub(super) key_size: u32,
    pub(super) value_size: u32,
    pub(super) max_entries: u32,
    pub(super) memlock: u64,
}

impl MapLine {
    pub(super) fn parse(line: &str) -> Option<MapLine> {
        let mut f = line.strip_prefix("map ")?.split_whitespace();
        Some(MapLine {
            name: f.next()?.to_string(),
            map_type: f.next()?.parse().ok()?,
            key_size: f.next()?.parse().ok()?,
            value_size: f.next()?.parse().ok()?,
            max_entries: f.next()?.parse().ok()?,
            memlock: f.next()?.parse().ok()?,
        })
    }

    pub(super) fn per_entry(&self) -> f64 {
        self.memlock as f64 / f64::from(self.max_entries.max(1))
    }
}

/// Kernel map memory per bound workload, from the maps' own accounting: a binding
/// costs one `WORKLOADS` entry and one `CGROUP_CACHE` entry, and its policy's slot (one
/// `POLICIES` entry and the slot's per-CPU `COUNTS`) is shared by every workload bound
/// to that policy.
#[derive(Serialize)]
pub(super) struct MemoryPerWorkload {
    pub(super) workloads_entry_bytes: f64,
    pub(super) cache_entry_bytes: f64,
    /// One policy slot: its POLICIES entry and its COUNTS (per CPU).
    pub(super) slot_bytes: f64,
    pub(super) possible_cpus: u32,
    /// A workload whose policy no other workload shares.
    pub(super) own_policy_bytes: f64,
    /// 1,000 workloads sharing one policy (the bench's scale setup).
    pub(super) shared_by_1000_bytes: f64,
    /// Everything else, preallocated once whatever is bound (ring buffer, deny marks,
    /// rate limits, the WORKLOADS and cache capacity not in use, ...).
    pub(super) total_bytes: u64,
}

pub(super) fn possible_cpus() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .map(|s| {
            s.trim()
                .split(',')
                .filter_map(|r| {
                    let (a, b) = r.split_once('-').unwrap_or((r, r));
                    Some(b.parse::<u32>().ok()? - a.parse::<u32>().ok()? + 1)
                })
                .sum()
        })
        .unwrap_or(0)
}

pub(super) fn memory_per_workload(maps: &[MapLine]) -> Option<MemoryPerWorkload> {
    let find = |n: &str| maps.iter().find(|m| m.name == n);
    let workloads = find(maps::WORKLOADS)?;
    let cache = find(maps::CGROUP_CACHE)?;
    let policies = find(maps::POLICIES)?;
    let counts = find(maps::COUNTS)?;
    let slots = f64::from(policies.max_entries.max(1));
    let slot_bytes = policies.per_entry() + counts.memlock as f64 / slots;
    let binding = workloads.per_entry() + cache.per_entry();
    Some(MemoryPerWorkload {
        workloads_entry_bytes: workloads.per_entry(),
        cache_entry_bytes: cache.per_entry(),
        slot_bytes,
        possible_cpus: possible_cpus(),
        own_policy_bytes: binding + slot_bytes,
        shared_by_1000_bytes: binding + slot_bytes / 1000.0,
        total_bytes: maps.iter().map(|m| m.memlock).sum(),
    })
}
