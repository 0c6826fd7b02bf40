//! The probe's kernel map memory: measured at 1, 100 and 1,000 bound workloads with 1, 10
//! and 100 distinct policies (the maps' own accounting), and computed for other CPU
//! counts from the map definitions with a model of that accounting.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use probe_common::maps;
use serde::Serialize;

use super::{Env, held::Held};

/// Bound workloads the memory is measured with.
pub(super) const WORKLOADS: [u32; 3] = [1, 100, 1000];
/// Distinct policies the memory is measured with.
pub(super) const POLICIES: [u32; 3] = [1, 10, 100];
/// CPU counts the memory is computed for, from the map definitions.
pub(super) const TARGET_CPUS: [u32; 2] = [64, 256];
/// The goal: kernel map memory per workload at most this, at [`GOAL_WORKLOADS`] workloads,
/// [`GOAL_POLICIES`] policies and [`GOAL_CPUS`] CPUs.
pub(super) const GOAL_BYTES: f64 = 8192.0;
pub(super) const GOAL_WORKLOADS: u32 = 1000;
pub(super) const GOAL_POLICIES: u32 = 100;
pub(super) const GOAL_CPUS: u32 = 64;

/// One map of the probe, from `bpf_map_info` and its fdinfo (`memlock` is the kernel's
/// own accounting of the map's memory, `bpf_map_memory_usage`).
#[derive(Serialize, Clone, Debug, PartialEq)]
pub(super) struct MapLine {
    pub(super) name: String,
    pub(super) map_type: u32,
    pub(super) key_size: u32,
    pub(super) value_size: u32,
    pub(super) max_entries: u32,
    pub(super) memlock: u64,
    /// `map_flags` (0 when the line has none).
    pub(super) map_flags: u32,
}

// `enum bpf_map_type` (include/uapi/linux/bpf.h).
const HASH: u32 = 1;
const ARRAY: u32 = 2;
const PERF_EVENT_ARRAY: u32 = 4;
const PERCPU_HASH: u32 = 5;
const PERCPU_ARRAY: u32 = 6;
const LRU_HASH: u32 = 9;
const LRU_PERCPU_HASH: u32 = 10;
const HASH_OF_MAPS: u32 = 13;
const SK_STORAGE: u32 = 24;
const RINGBUF: u32 = 27;
const INODE_STORAGE: u32 = 28;
const TASK_STORAGE: u32 = 29;
const CGRP_STORAGE: u32 = 32;
const BPF_F_NO_PREALLOC: u32 = 0x1;

/// `sizeof(struct htab_elem)` on 64-bit kernels: the hash node (16 bytes), the LRU node
/// or per-CPU pointer (24) and the hash (4), the key 8-aligned after it.
const HTAB_ELEM: u64 = 48;
/// `sizeof(int) * HASHTAB_MAP_LOCK_COUNT`: a hash map's per-CPU lock counters, as
/// `htab_map_mem_usage` counts them.
const HTAB_LOCK_COUNTERS: u64 = 4 * 8;
/// `sizeof(struct bpf_local_storage_map_bucket)`: a list head and a 4-byte lock.
const LOCAL_STORAGE_BUCKET: u64 = 16;

fn round8(n: u32) -> u64 {
    u64::from(n).div_ceil(8) * 8
}

impl MapLine {
    /// `map NAME TYPE KEY VALUE MAX_ENTRIES MEMLOCK [MAP_FLAGS]`, flags in hex (`0x1`).
    pub(super) fn parse(line: &str) -> Option<MapLine> {
        let mut f = line.strip_prefix("map ")?.split_whitespace();
        Some(MapLine {
            name: f.next()?.to_string(),
            map_type: f.next()?.parse().ok()?,
            key_size: f.next()?.parse().ok()?,
            value_size: f.next()?.parse().ok()?,
            max_entries: f.next()?.parse().ok()?,
            memlock: f.next()?.parse().ok()?,
            map_flags: match f.next() {
                Some(v) => u32::from_str_radix(v.trim_start_matches("0x"), 16).ok()?,
                None => 0,
            },
        })
    }

    /// The part of the kernel's accounting of this map that depends on the number of
    /// possible CPUs, with `cpus` of them. Linux 6.x `*_map_mem_usage`:
    ///
    /// - `htab_map_mem_usage` (kernel/bpf/hashtab.c), every hash map:
    ///   `sizeof(int) * num_possible_cpus() * HASHTAB_MAP_LOCK_COUNT` (still counted since
    ///   the bucket locks became rqspinlocks in 6.15, though no longer allocated); when
    ///   preallocated, `num_possible_cpus()` extra elements for a plain hash
    ///   (`htab_has_extra_elems`) plus one `struct htab_elem *` per CPU for any non-LRU
    ///   one, and `round_up(value_size, 8) * num_possible_cpus() * max_entries` for a
    ///   per-CPU one. `elem_size` is `sizeof(struct htab_elem) + round_up(key_size, 8)`
    ///   plus `round_up(value_size, 8)`, or a pointer for a per-CPU hash. Without
    ///   preallocation only the elements in use count: per CPU only for a per-CPU hash,
    ///   taken here at `max_entries` in use (an upper bound).
    /// - `array_map_mem_usage` (kernel/bpf/arraymap.c): `max_entries * elem_size *
    ///   num_possible_cpus()` for a per-CPU array (`elem_size = round_up(value_size, 8)`);
    ///   nothing per CPU for the others (plain, `PROG`/`PERF_EVENT`/cgroup arrays).
    /// - `bpf_local_storage_map_mem_usage` (kernel/bpf/bpf_local_storage.c), task, inode,
    ///   socket and cgroup storage: one bucket per possible CPU, rounded up to a power of
    ///   two and at least 2 (`bpf_local_storage_map_alloc`); the elements themselves are
    ///   charged to their owners, not counted.
    /// - `ringbuf_map_mem_usage`: the data pages and their page pointers, nothing per CPU.
    ///
    /// Any other type is taken as not depending on the CPU count. (An LRU hash with
    /// `BPF_F_NO_COMMON_LRU` rounds `max_entries` to a multiple of the CPU count, and a
    /// loader usually sizes a `PERF_EVENT_ARRAY` to the CPU count: neither is modelled.)
    pub(super) fn cpu_bytes(&self, cpus: u32) -> u64 {
        let cpus = u64::from(cpus);
        let entries = u64::from(self.max_entries);
        let value = round8(self.value_size);
        match self.map_type {
            HASH | PERCPU_HASH | LRU_HASH | LRU_PERCPU_HASH | HASH_OF_MAPS => {
                let percpu = matches!(self.map_type, PERCPU_HASH | LRU_PERCPU_HASH);
                let lru = matches!(self.map_type, LRU_HASH | LRU_PERCPU_HASH);
                let prealloc = lru || self.map_flags & BPF_F_NO_PREALLOC == 0;
                let elem_size = HTAB_ELEM + round8(self.key_size) + if percpu { 8 } else { value };
                let mut per_cpu = HTAB_LOCK_COUNTERS;
                if percpu {
                    per_cpu += value * entries;
                } else if prealloc && !lru {
                    if self.map_type == HASH {
                        per_cpu += elem_size;
                    }
                    per_cpu += 8;
                }
                per_cpu * cpus
            }
            PERCPU_ARRAY => value * entries * cpus,
            SK_STORAGE | INODE_STORAGE | TASK_STORAGE | CGRP_STORAGE => {
                LOCAL_STORAGE_BUCKET * cpus.next_power_of_two().max(2)
            }
            // ARRAY, PERF_EVENT_ARRAY, RINGBUF and the rest.
            _ => 0,
        }
    }

    /// This map's memory as the kernel would account it with `cpus` possible CPUs, from
    /// its `memlock` measured with `measured_cpus`: only the per-CPU terms change.
    pub(super) fn memlock_at(&self, measured_cpus: u32, cpus: u32) -> u64 {
        (self.memlock + self.cpu_bytes(cpus)).saturating_sub(self.cpu_bytes(measured_cpus))
    }

    fn per_entry_at(&self, measured_cpus: u32, cpus: u32) -> f64 {
        self.memlock_at(measured_cpus, cpus) as f64 / f64::from(self.max_entries.max(1))
    }
}

/// A readable name for a map type.
pub(super) fn type_name(map_type: u32) -> String {
    match map_type {
        HASH => "hash".into(),
        ARRAY => "array".into(),
        PERF_EVENT_ARRAY => "perf_event_array".into(),
        PERCPU_HASH => "percpu_hash".into(),
        PERCPU_ARRAY => "percpu_array".into(),
        LRU_HASH => "lru_hash".into(),
        LRU_PERCPU_HASH => "lru_percpu_hash".into(),
        HASH_OF_MAPS => "hash_of_maps".into(),
        SK_STORAGE => "sk_storage".into(),
        RINGBUF => "ringbuf".into(),
        INODE_STORAGE => "inode_storage".into(),
        TASK_STORAGE => "task_storage".into(),
        CGRP_STORAGE => "cgrp_storage".into(),
        other => format!("type {other}"),
    }
}

/// All the maps' memory at `cpus` CPUs.
fn total_at(maps: &[MapLine], measured_cpus: u32, cpus: u32) -> u64 {
    maps.iter().map(|m| m.memlock_at(measured_cpus, cpus)).sum()
}

/// Kernel map memory at one CPU count: all of it, and divided by the workloads bound.
#[derive(Serialize, Clone, Copy)]
pub(super) struct AtCpus {
    pub(super) cpus: u32,
    pub(super) total_bytes: u64,
    pub(super) per_workload_bytes: f64,
}

/// One measured setup.
#[derive(Serialize)]
pub(super) struct MemoryRow {
    pub(super) workloads: u32,
    pub(super) policies: u32,
    /// `POLICIES` capacity: the slots the agent gives that many policies.
    pub(super) slots: u32,
    /// On this machine, the kernel's own accounting.
    pub(super) measured: AtCpus,
    /// At [`TARGET_CPUS`], from the map definitions.
    pub(super) computed: Vec<AtCpus>,
}

/// One map at 1,000 workloads and 100 policies, with its memory at [`TARGET_CPUS`].
#[derive(Serialize)]
pub(super) struct MapRow {
    #[serde(flatten)]
    pub(super) line: MapLine,
    /// CPUs → computed memlock.
    pub(super) computed_memlock: BTreeMap<u32, u64>,
}

/// What one item costs (map memory divided by entries), at one CPU count: a binding
/// costs one `WORKLOADS` entry and one `CGROUP_CACHE` entry; a policy's slot (one
/// `POLICIES` entry and its share of `COUNTS`) is shared by every workload bound to it.
#[derive(Serialize)]
pub(super) struct MemoryItems {
    pub(super) cpus: u32,
    pub(super) workloads_entry_bytes: f64,
    pub(super) cache_entry_bytes: f64,
    /// One policy slot: its `POLICIES` entry and `COUNTS` / slots.
    pub(super) slot_bytes: f64,
    /// One more workload with a policy of its own: a binding and a slot.
    pub(super) own_policy_bytes: f64,
    /// One more workload on a policy 10 workloads share (1,000 on 100 policies).
    pub(super) ten_per_policy_bytes: f64,
    /// All the maps.
    pub(super) total_bytes: u64,
}

/// The goal, [`GOAL_BYTES`] per workload at [`GOAL_WORKLOADS`] workloads,
/// [`GOAL_POLICIES`] policies and [`GOAL_CPUS`] CPUs.
#[derive(Serialize)]
pub(super) struct MemoryGoal {
    pub(super) limit_bytes: f64,
    pub(super) workloads: u32,
    pub(super) policies: u32,
    pub(super) cpus: u32,
    /// At `cpus`, from the map definitions.
    pub(super) computed_bytes: f64,
    pub(super) computed_met: bool,
    /// Measured at this machine's possible CPUs.
    pub(super) measured_cpus: u32,
    pub(super) measured_bytes: f64,
    pub(super) measured_met: bool,
}

#[derive(Serialize)]
pub(super) struct MemoryReport {
    /// This machine's possible CPUs (`num_possible_cpus()`, what the kernel sizes
    /// per-CPU memory by).
    pub(super) possible_cpus: u32,
    pub(super) rows: Vec<MemoryRow>,
    /// The maps at [`GOAL_WORKLOADS`] workloads and [`GOAL_POLICIES`] policies.
    pub(super) maps: Vec<MapRow>,
    /// Per item in that setup, at this machine's CPUs and at [`TARGET_CPUS`].
    pub(super) items: Vec<MemoryItems>,
    pub(super) goal: Option<MemoryGoal>,
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

fn items(maps: &[MapLine], measured_cpus: u32, cpus: u32) -> Option<MemoryItems> {
    let find = |n: &str| maps.iter().find(|m| m.name == n);
    let workloads = find(maps::WORKLOADS)?;
    let cache = find(maps::CGROUP_CACHE)?;
    let policies = find(maps::POLICIES)?;
    let counts = find(maps::COUNTS)?;
    let slots = f64::from(policies.max_entries.max(1));
    let slot_bytes = policies.per_entry_at(measured_cpus, cpus)
        + counts.memlock_at(measured_cpus, cpus) as f64 / slots;
    let binding =
        workloads.per_entry_at(measured_cpus, cpus) + cache.per_entry_at(measured_cpus, cpus);
    Some(MemoryItems {
        cpus,
        workloads_entry_bytes: workloads.per_entry_at(measured_cpus, cpus),
        cache_entry_bytes: cache.per_entry_at(measured_cpus, cpus),
        slot_bytes,
        own_policy_bytes: binding + slot_bytes,
        ten_per_policy_bytes: binding + slot_bytes / 10.0,
        total_bytes: total_at(maps, measured_cpus, cpus),
    })
}

fn at(maps: &[MapLine], measured_cpus: u32, cpus: u32, workloads: u32) -> AtCpus {
    let total_bytes = total_at(maps, measured_cpus, cpus);
    AtCpus {
        cpus,
        total_bytes,
        per_workload_bytes: total_bytes as f64 / f64::from(workloads.max(1)),
    }
}

/// The report from the map lines of each setup, `(workloads, policies, maps)`,
/// measured at `measured_cpus`.
pub(super) fn report(measured_cpus: u32, setups: &[(u32, u32, Vec<MapLine>)]) -> MemoryReport {
    let rows = setups
        .iter()
        .map(|(w, p, maps)| MemoryRow {
            workloads: *w,
            policies: *p,
            slots: maps
                .iter()
                .find(|m| m.name == maps::POLICIES)
                .map_or(0, |m| m.max_entries),
            measured: at(maps, measured_cpus, measured_cpus, *w),
            computed: TARGET_CPUS
                .iter()
                .map(|&c| at(maps, measured_cpus, c, *w))
                .collect(),
        })
        .collect();
    let goal_maps = setups
        .iter()
        .find(|(w, p, _)| (*w, *p) == (GOAL_WORKLOADS, GOAL_POLICIES))
        .map(|(_, _, maps)| maps.as_slice())
        .unwrap_or_default();
    let maps = goal_maps
        .iter()
        .map(|m| MapRow {
            line: m.clone(),
            computed_memlock: TARGET_CPUS
                .iter()
                .map(|&c| (c, m.memlock_at(measured_cpus, c)))
                .collect(),
        })
        .collect();
    let items = std::iter::once(measured_cpus)
        .chain(TARGET_CPUS)
        .filter_map(|c| items(goal_maps, measured_cpus, c))
        .collect();
    let goal = (!goal_maps.is_empty()).then(|| {
        let computed = at(goal_maps, measured_cpus, GOAL_CPUS, GOAL_WORKLOADS);
        let measured = at(goal_maps, measured_cpus, measured_cpus, GOAL_WORKLOADS);
        MemoryGoal {
            limit_bytes: GOAL_BYTES,
            workloads: GOAL_WORKLOADS,
            policies: GOAL_POLICIES,
            cpus: GOAL_CPUS,
            computed_bytes: computed.per_workload_bytes,
            computed_met: computed.per_workload_bytes <= GOAL_BYTES,
            measured_cpus,
            measured_bytes: measured.per_workload_bytes,
            measured_met: measured.per_workload_bytes <= GOAL_BYTES,
        }
    });
    MemoryReport {
        possible_cpus: measured_cpus,
        rows,
        maps,
        items,
        goal,
    }
}

/// Hold each setup of [`WORKLOADS`] × [`POLICIES`] (`sf-bench-hold idle --policies P`),
/// read its maps, release it; then the report.
pub(super) fn measure(env: &Env) -> anyhow::Result<MemoryReport> {
    let policy = env.policy.to_str().context("policy path is not UTF-8")?;
    let mut setups = Vec::new();
    for w in WORKLOADS {
        for p in POLICIES {
            eprintln!("xtask: bench memory, {w} workloads on {p} policies");
            let (w_arg, p_arg) = (w.to_string(), p.to_string());
            let held = Held::start(
                env,
                &[
                    "idle",
                    "--policy",
                    policy,
                    "--workloads",
                    &w_arg,
                    "--policies",
                    &p_arg,
                ],
            )?;
            let maps: Vec<MapLine> = held
                .lines
                .iter()
                .filter_map(|l| MapLine::parse(l))
                .collect();
            held.finish()
                .with_context(|| format!("{w} workloads on {p} policies"))?;
            if maps.is_empty() {
                bail!("sf-bench-hold printed no maps ({w} workloads on {p} policies)");
            }
            setups.push((w, p, maps));
        }
    }
    Ok(report(possible_cpus(), &setups))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(map_type: u32, key: u32, value: u32, entries: u32, flags: u32) -> MapLine {
        MapLine {
            name: "M".into(),
            map_type,
            key_size: key,
            value_size: value,
            max_entries: entries,
            memlock: 1_000_000,
            map_flags: flags,
        }
    }

    #[test]
    fn parses_lines_with_and_without_flags() {
        let with = MapLine::parse("map HELD 1 4 8 4096 66432 0x1").unwrap();
        assert_eq!(with.map_flags, 1);
        assert_eq!(with.memlock, 66432);
        let without = MapLine::parse("map WORKLOADS 1 8 8 16384 1311760").unwrap();
        assert_eq!(without.map_flags, 0);
        assert_eq!(without.max_entries, 16384);
        assert!(MapLine::parse("map X 1 8 8 16384 1311760 nothex").is_none());
        assert!(MapLine::parse("map-memory 123").is_none());
    }

    #[test]
    fn percpu_array_grows_by_its_values_per_cpu() {
        // 2,050 u64 counters: 16,400 bytes per CPU.
        let m = map(PERCPU_ARRAY, 4, 8, 2050, 0);
        assert_eq!(m.memlock_at(2, 3) - m.memlock, 16_400);
        assert_eq!(m.memlock_at(2, 64), 1_000_000 + 62 * 16_400);
        // Values are 8-aligned per CPU.
        assert_eq!(map(PERCPU_ARRAY, 4, 12, 10, 0).cpu_bytes(1), 160);
    }

    #[test]
    fn plain_array_and_ringbuf_do_not_grow() {
        for t in [ARRAY, RINGBUF] {
            let m = map(t, 4, 8, 2050, 0);
            assert_eq!(m.memlock_at(2, 256), m.memlock);
        }
    }

    #[test]
    fn hash_grows_by_its_lock_counters_and_extra_elements() {
        // Not preallocated: only the lock counters.
        assert_eq!(map(HASH, 4, 8, 4096, BPF_F_NO_PREALLOC).cpu_bytes(1), 32);
        // Preallocated: one extra element (48 + 8 + 8) and its pointer per CPU.
        assert_eq!(map(HASH, 8, 8, 16384, 0).cpu_bytes(1), 32 + 64 + 8);
        // LRU: preallocated, no extra elements.
        assert_eq!(map(LRU_HASH, 8, 32, 16384, 0).cpu_bytes(1), 32);
        // Per-CPU hash: its values per CPU.
        assert_eq!(map(PERCPU_HASH, 8, 12, 100, 0).cpu_bytes(1), 32 + 1600);
        // Measured on 2 CPUs (6.18): WORKLOADS, 8-byte key and value, 16,384 entries,
        // memlock 1,311,760 = 832 + 16,384 buckets of 16 + 16,386 elements of 64 + 2 × 8
        // + 2 × 32.
        let mut w = map(HASH, 8, 8, 16384, 0);
        w.memlock = 1_311_760;
        assert_eq!(w.cpu_bytes(2), 2 * 32 + 2 * 64 + 2 * 8);
        assert_eq!(w.memlock_at(2, 64), 1_311_760 + 62 * 104);
    }

    #[test]
    fn task_storage_has_a_power_of_two_of_buckets() {
        let m = map(TASK_STORAGE, 4, 72, 0, BPF_F_NO_PREALLOC);
        assert_eq!(m.cpu_bytes(1), 32);
        assert_eq!(m.cpu_bytes(2), 32);
        assert_eq!(m.cpu_bytes(3), 64);
        assert_eq!(m.cpu_bytes(64), 1024);
    }

    #[test]
    fn fewer_cpus_than_measured_shrink() {
        let m = map(PERCPU_ARRAY, 4, 8, 1, 0);
        assert_eq!(m.memlock_at(4, 2), 1_000_000 - 16);
    }

    #[test]
    fn report_divides_by_workloads_and_checks_the_goal() {
        let mut policies = map(ARRAY, 4, 3216, 204, 0);
        policies.name = maps::POLICIES.into();
        let mut counts = map(PERCPU_ARRAY, 4, 8, 204 * 2050, 0);
        counts.name = maps::COUNTS.into();
        let mut workloads = map(HASH, 8, 8, 16384, 0);
        workloads.name = maps::WORKLOADS.into();
        let mut cache = map(ARRAY, 4, 16, 16384, 0);
        cache.name = maps::CGROUP_CACHE.into();
        let maps = vec![policies, counts.clone(), workloads, cache];
        let r = report(2, &[(1000, 100, maps)]);
        assert_eq!(r.rows[0].slots, 204);
        assert_eq!(r.rows[0].measured.total_bytes, 4_000_000);
        assert!((r.rows[0].measured.per_workload_bytes - 4000.0).abs() < 1e-9);
        let at64 = r.rows[0].computed[0];
        assert_eq!(at64.cpus, 64);
        let counts_growth = 62 * 204 * 2050 * 8;
        assert_eq!(at64.total_bytes, 4_000_000 + counts_growth + 62 * 104);
        let goal = r.goal.unwrap();
        assert!(goal.measured_met);
        assert!(!goal.computed_met);
        assert_eq!(r.items.len(), 3);
        assert_eq!(r.maps[1].computed_memlock[&256], counts.memlock_at(2, 256));
    }
}
