//! The loaded kernel side: programs attached, and typed handles on its maps.

use std::path::{Path, PathBuf};

mod events;
mod hold;
mod layout;
pub mod pins;
pub mod task_cast;
#[cfg(test)]
mod tests;

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, Lsm},
};
use probe_common::{
    Binding, CACHE_COLLISION, COUNTERS_PER_SLOT, CacheEntry, LSM_HOOK_NAMES, LSM_PROGRAM_NAMES,
    NO_SLOT, PolicySlot, ProbeSettings, RateKey, RateState, ViolationEvent, cache_index,
    generation, maps, programs,
};

/// The probe object, built by `build.rs` from `probe-ebpf`.
static PROBE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sysfence-probe"));

pub use layout::KernelLayout;

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Clone, Copy, Debug)]
pub struct ProbeOptions {
    /// Capacity of the POLICIES map (and of the counters).
    pub max_slots: u32,
    /// Attach the `sys_enter` program. Off only for the benchmark's own floor program.
    pub attach: bool,
    /// Read the memoised task through `bpf_rdonly_cast` where the kernel has it (see
    /// [`task_cast`]). Off only for the benchmark's side-by-side with the helper.
    pub task_cast: bool,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            max_slots: 64,
            attach: true,
            task_cast: true,
        }
    }
}

/// The kernel side, loaded and attached. Dropping it detaches everything.
pub struct Probe {
    ebpf: Ebpf,
    /// The kernel's BTF, parsed once, until [`Probe::settle`]: attaching programs needs it.
    btf: Option<Btf>,
    workloads: HashMap<MapData, u64, Binding>,
    cache: Array<MapData, CacheEntry>,
    /// What the agent has written to WORKLOADS, and which cgroups share each cache index.
    book: CacheBook,
    policies: Array<MapData, PolicySlot>,
    counts: Array<MapData, u64>,
    settings: Array<MapData, ProbeSettings>,
    current_settings: ProbeSettings,
    stats: PerCpuArray<MapData, u64>,
    limits: HashMap<MapData, RateKey, RateState>,
    budgets: HashMap<MapData, u64, probe_common::EventBudget>,
    doomed: HashMap<MapData, u64, u64>,
    /// `HOLD_ROOTS`, and the roots (cgroup id → level) as last written.
    hold_roots: HashMap<MapData, u64, u8>,
    current_hold_roots: std::collections::BTreeMap<u64, u32>,
    held: HashMap<MapData, u32, u64>,
    layout: KernelLayout,
    /// The pin directory, when the probe is pinned.
    pinned: Option<pins::Pinned>,
    attached: Vec<(&'static str, pins::Attached)>,
    /// `GENERATION`, and the agent's entry of it as last written.
    generation: Array<MapData, u64>,
    agent_generation: u64,
    /// The programs that invalidate `TASK_MEMO` are attached: the memo is on.
    memo: bool,
    // Owns the AYA_LOGS map; dropping it would break the loaded program.
    _logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    max_slots: u32,
}

/// The agent's record of WORKLOADS and of the cache entries it derived from it.
#[derive(Default)]
struct CacheBook {
    known: std::collections::HashMap<u64, u32>,
    by_index: std::collections::HashMap<u32, std::collections::BTreeSet<u64>>,
    cache: std::collections::HashMap<u32, u64>,
}

/// Probe health counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ProbeStats {
    pub events_dropped: u64,
    pub kill_failed: u64,
    pub mark_failed: u64,
    pub events_suppressed: u64,
    /// Of those suppressed, the events held back by a workload's budget.
    pub events_held: u64,
    /// Processes that left their workload's cgroup (or were born outside it) and are
    /// policed by the policy they carried.
    pub strays: u64,
    /// Of those, the ones that could not be recorded: the mover was killed.
    pub stray_failed: u64,
    /// Processes a runtime put into a policed cgroup as its setup, judged from their
    /// exec on (the exec boundary).
    pub setups: u64,
    /// Of those, the ones that could not be recorded: judged by the policy at once.
    pub setup_failed: u64,
    /// Execs held in a new cgroup until the agent had looked at it (the start hold).
    pub holds: u64,
    /// Execs that should have been held and were not (`HELD` full, or the stop failed).
    pub hold_failed: u64,
}

/// The deny path as attached: which LSM hooks this kernel let us attach.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DenySupport {
    pub hooks: Vec<&'static str>,
    /// Hooks this kernel refused or lacks, with the reason.
    pub unavailable: Vec<(&'static str, String)>,
}

const LSM_LIST: &str = "/sys/kernel/security/lsm";

/// Why BPF LSM cannot be used here, in a sentence that says what to do. `None` when
/// the LSM list names `bpf`, or cannot be read (then loading a program tells).
pub fn lsm_unavailable_reason() -> Option<String> {
    match std::fs::read_to_string(LSM_LIST) {
        Ok(list) if list.trim().split(',').any(|l| l == "bpf") => None,
        Ok(list) => Some(format!(
            "BPF LSM is not enabled: `bpf` is missing from {LSM_LIST} ({}); add \
             `lsm={},bpf` to the kernel command line",
            list.trim(),
            list.trim()
        )),
        Err(_) => None,
    }
}

/// Check what the probe needs before trying to load it, and say what is missing.
pub fn preflight() -> anyhow::Result<()> {
    // SAFETY: plain libc call.
    if unsafe { libc::geteuid() } != 0 {
        bail!("loading the probe needs root (CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN): run as root");
    }
    if !Path::new(VMLINUX_BTF).exists() {
        bail!(
            "{VMLINUX_BTF} is missing: this kernel was built without CONFIG_DEBUG_INFO_BTF, \
             which sysfence needs for its tp_btf probe"
        );
    }
    Ok(())
}

/// Whether `sys_enter`'s per-task memo is worth turning on: it replaces one helper call
/// with per-CPU array lookups, which kernels from 6.10 inline on x86-64 (before, each is
/// a helper call itself).
fn memo_pays_off() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    cfg!(target_arch = "x86_64") && version >= (6, 10)
}

fn take<T>(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("probe object has no map {name}"))?;
    T::try_from(map).with_context(|| format!("map {name}"))
}

impl Probe {
    /// Load and attach a probe of its own: everything goes when it is dropped.
    pub fn load(options: ProbeOptions) -> anyhow::Result<Probe> {
        Self::load_inner(options, None)
    }

    /// Load the node's probe pinned under `root` (see [`pins`]): maps and links
    /// outlive the agent, and a probe pinned by an earlier agent of the same layout is
    /// adopted, with its bindings, policies and counters, without a moment unpoliced.
    /// `options.max_slots` is a minimum: an adopted probe keeps its capacity.
    pub fn load_pinned(options: ProbeOptions, root: &Path) -> anyhow::Result<Probe> {
        Self::load_inner(options, Some(root))
    }

    fn load_inner(mut options: ProbeOptions, pin_root: Option<&Path>) -> anyhow::Result<Probe> {
        preflight()?;
        let layout = KernelLayout::read()?;
        let btf = Btf::from_sys_fs().context("reading kernel BTF")?;
        let pinned = match pin_root {
            Some(root) => Some(pins::prepare(root, options.max_slots)?),
            None => None,
        };
        if let Some(p) = &pinned
            && let Some(capacity) = p.adopted_slots
        {
            options.max_slots = capacity;
        }
        let counters = options
            .max_slots
            .checked_mul(COUNTERS_PER_SLOT)
            .ok_or_else(|| anyhow!("too many slots: {}", options.max_slots))?;
        let cast_ids = if options.task_cast {
            task_cast::kernel_ids(&btf)
        } else {
            None
        };
        let task_cast_on = u32::from(cast_ids.is_some());
        let object = task_cast::patch(PROBE_OBJECT, cast_ids)?;
        let mut loader = EbpfLoader::new();
        loader
            .btf(Some(&btf))
            // The task storage maps (`DENY_MARKS`, `RING_OWNERS`): aya has no type for
            // them, and the agent never reads them; they are created and pinned.
            .allow_unsupported_maps()
            .override_global("CGROUP_ID_PATH", &layout.cgroup_id_path, true)
            .override_global("TASK_FLAGS_OFFSET", &layout.task_flags, true)
            .override_global("TASK_STATUS_OFFSET", &layout.task_status, true)
            .override_global("GUARD_OFFSETS", &layout.guard, true)
            .override_global("TASK_IO_URING_OFFSET", &layout.task_io_uring, true)
            .override_global("CONTAINMENT_OFFSETS", &layout.containment, true)
            .override_global("PID_LEVEL_PATH", &layout.pid_level, true)
            .override_global("SETUP_OFFSETS", &layout.setup, true)
            .override_global("TASK_CAST", &task_cast_on, true)
            .map_max_entries(maps::POLICIES, options.max_slots)
            .map_max_entries(maps::COUNTS, counters);
        if let Some(p) = &pinned {
            for name in pins::PINNED_MAPS {
                loader.map_pin_path(name, p.dir.join(name));
            }
        }
        let mut ebpf = loader
            .load(object.bytes())
            .context("loading the sysfence probe into the kernel")?;
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::debug!(error = %e, "probe log channel unavailable");
                None
            }
        };
        let mut attached = Vec::new();
        // The programs that invalidate sys_enter's per-task memo go first (pinned with
        // the rest: a memo left without them would outlive a task's move); without them
        // the memo stays off.
        let memo = options.attach
            && memo_pays_off()
            && [
                (programs::MEMO_CGROUP_ATTACH, "cgroup_attach_task"),
                (programs::MEMO_TASK_EXIT, "sched_process_exit"),
            ]
            .into_iter()
            .all(|(name, tp)| {
                let result = (|| -> anyhow::Result<()> {
                    let program: &mut BtfTracePoint = ebpf
                        .program_mut(name)
                        .ok_or_else(|| anyhow!("probe object has no {name} program"))?
                        .try_into()?;
                    program.load(tp, &btf)?;
                    pins::attach(pinned.as_ref(), &mut attached, name, program)
                })();
                if let Err(e) = &result {
                    tracing::debug!(error = %format!("{e:#}"), "{name}: per-task memo off");
                }
                result.is_ok()
            });
        if options.attach {
            let program: &mut BtfTracePoint = ebpf
                .program_mut(programs::SYS_ENTER)
                .ok_or_else(|| anyhow!("probe object has no sys_enter program"))?
                .try_into()?;
            program
                .load("sys_enter", &btf)
                .context("verifying the sys_enter program")?;
            pins::attach(pinned.as_ref(), &mut attached, programs::SYS_ENTER, program)
                .context("attaching to raw_syscalls:sys_enter")?;
            // The kernel's copy of every fork's flags (`namespaces: deny`) and children
            // that carry their parent's policy; the cleanup of marks of tasks that die
            // mid-syscall or before their first one; processes that move out of their
            // workload's cgroup. Each runs per fork, exit or move, not per syscall.
            for (name, tp) in [
                (programs::CLONE_GUARD, "task_newtask"),
                (programs::SCHED_PROCESS_EXIT, "sched_process_exit"),
                (programs::FOLLOW_CGROUP_MOVE, "cgroup_attach_task"),
                (programs::LIFT_DOOM, "cgroup_notify_populated"),
                (programs::EXEC_BOUNDARY, "sched_process_exec"),
            ] {
                let program: &mut BtfTracePoint = ebpf
                    .program_mut(name)
                    .ok_or_else(|| anyhow!("probe object has no {name} program"))?
                    .try_into()?;
                program
                    .load(tp, &btf)
                    .with_context(|| format!("verifying the {name} program"))?;
                pins::attach(pinned.as_ref(), &mut attached, name, program)
                    .with_context(|| format!("attaching {name} to {tp}"))?;
            }
        }
        let adopted = pinned.as_ref().is_some_and(|p| p.adopted_slots.is_some());
        let mut probe = Probe {
            layout,
            pinned,
            attached,
            workloads: take(&mut ebpf, maps::WORKLOADS)?,
            cache: take(&mut ebpf, maps::CGROUP_CACHE)?,
            book: CacheBook::default(),
            policies: take(&mut ebpf, maps::POLICIES)?,
            counts: take(&mut ebpf, maps::COUNTS)?,
            settings: take(&mut ebpf, maps::SETTINGS)?,
            stats: take(&mut ebpf, maps::STATS)?,
            limits: take(&mut ebpf, maps::EVENT_LIMITS)?,
            budgets: take(&mut ebpf, maps::EVENT_BUDGETS)?,
            doomed: take(&mut ebpf, maps::DOOMED_WORKLOADS)?,
            hold_roots: take(&mut ebpf, maps::HOLD_ROOTS)?,
            current_hold_roots: Default::default(),
            held: take(&mut ebpf, maps::HELD)?,
            generation: take(&mut ebpf, maps::GENERATION)?,
            agent_generation: 0,
            memo: false,
            ebpf,
            _logger: logger,
            max_slots: options.max_slots,
            btf: Some(btf),
            current_settings: ProbeSettings::default(),
        };
        if adopted {
            // The pinned probe is live: take its settings and bindings as they are.
            probe.current_settings = probe.settings.get(&0, 0).context("reading SETTINGS")?;
            probe.read_back_bindings()?;
        } else {
            // Until written, SETTINGS holds zeros: no rate limit. Write the defaults now.
            probe.write_settings()?;
        }
        if memo {
            // Go on from the pinned value: a generation must never come back, or a stale
            // memo entry would be taken as current.
            probe.agent_generation = probe.generation.get(&generation::AGENT, 0).unwrap_or(0);
            probe.memo = true;
            probe.turn_generation()?;
        } else {
            // A kept sys_enter of an earlier agent may have had the memo on: off.
            probe
                .generation
                .set(generation::AGENT, 0, 0)
                .context("writing GENERATION")?;
        }
        Ok(probe)
    }

    /// Whether this probe took over a pinned probe left by an earlier agent.
    pub fn adopted(&self) -> bool {
        self.pinned
            .as_ref()
            .is_some_and(|p| p.adopted_slots.is_some())
    }

    /// Where this probe is pinned, if it is.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pinned.as_ref().map(|p| p.dir.as_path())
    }

    /// How each pinned program came to be attached (kept from the earlier agent,
    /// replaced by this build's, or new).
    pub fn attachments(&self) -> &[(&'static str, pins::Attached)] {
        &self.attached
    }

    /// Pinned probes of other layouts, left by agents of other versions.
    pub fn stale_layouts(&self) -> &[PathBuf] {
        self.pinned.as_ref().map_or(&[], |p| p.stale.as_slice())
    }

    /// Remove the pinned probes of other layouts: their programs detach. Call once
    /// this probe polices everything they did (after the first bind pass), so that
    /// the handover leaves no moment unpoliced.
    pub fn retire_stale_layouts(&mut self) -> anyhow::Result<Vec<PathBuf>> {
        let Some(p) = &mut self.pinned else {
            return Ok(Vec::new());
        };
        let mut removed = Vec::new();
        for dir in std::mem::take(&mut p.stale) {
            removed.extend(pins::remove_tree(&dir)?);
        }
        Ok(removed)
    }

    /// Remove pinned links this agent did not attach or keep (the deny path of an
    /// earlier agent, when no policy asks for `deny` now); their programs detach.
    pub fn retire_unwanted_links(&mut self) -> anyhow::Result<Vec<PathBuf>> {
        let Some(p) = &self.pinned else {
            return Ok(Vec::new());
        };
        let keep: Vec<&str> = self.attached.iter().map(|(n, _)| *n).collect();
        let mut removed = Vec::new();
        for path in pins::unwanted_links(&p.dir, &keep) {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            removed.push(path);
        }
        Ok(removed)
    }

    /// Rebuild the book from the pinned WORKLOADS and CGROUP_CACHE, and mend any
    /// cache entry that disagrees with it.
    fn read_back_bindings(&mut self) -> anyhow::Result<()> {
        let mut known = Vec::new();
        for item in self.workloads.iter() {
            let (id, binding) = item.context("reading WORKLOADS")?;
            known.push((id, binding.slot));
        }
        for (id, slot) in known {
            self.book.known.insert(id, slot);
            self.book
                .by_index
                .entry(cache_index(id))
                .or_default()
                .insert(id);
        }
        let mut wrong = Vec::new();
        for index in 0..probe_common::CGROUP_CACHE_SIZE {
            let entry = self.cache.get(&index, 0).context("reading CGROUP_CACHE")?;
            if entry.cgroup_id != 0 {
                self.book.cache.insert(index, entry.cgroup_id);
            }
            let ids = self.book.by_index.get(&index);
            let expected = match ids.map_or(0, |s| s.len()) {
                0 => 0,
                1 => *ids.and_then(|s| s.first()).expect("one id"),
                _ => CACHE_COLLISION,
            };
            let slot_ok = expected == 0
                || expected == CACHE_COLLISION
                || self.book.known.get(&expected) == Some(&entry.slot);
            if entry.cgroup_id != expected || !slot_ok {
                wrong.push(index);
            }
        }
        for index in wrong {
            self.write_cache(index)?;
        }
        Ok(())
    }

    /// A slot's policy as the kernel holds it.
    pub fn read_slot(&self, slot: u32) -> anyhow::Result<PolicySlot> {
        self.check_slot(slot)?;
        self.policies.get(&slot, 0).context("reading POLICIES")
    }

    /// Load and attach one `tp_btf` program of the object by name, at `tracepoint`
    /// (e.g. the empty `sys_enter_floor` program that benchmarks measure against).
    pub fn attach_btf_tracepoint(&mut self, name: &str, tracepoint: &str) -> anyhow::Result<()> {
        let btf = self.btf()?;
        let program: &mut BtfTracePoint = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("probe object has no {name} program"))?
            .try_into()?;
        program
            .load(tracepoint, &btf)
            .with_context(|| format!("verifying {name}"))?;
        program
            .attach()
            .with_context(|| format!("attaching {name}"))?;
        Ok(())
    }

    /// Attach the deny path: `sys_exit` and every LSM hook the
    /// kernel allows. Fails, saying why, when no LSM hook can be attached.
    pub fn enable_deny(&mut self) -> anyhow::Result<DenySupport> {
        if let Some(reason) = lsm_unavailable_reason() {
            bail!(reason);
        }
        let btf = self.btf()?;
        let mut support = DenySupport::default();
        for (prog, hook) in LSM_PROGRAM_NAMES.iter().zip(LSM_HOOK_NAMES) {
            let result = (|| -> anyhow::Result<()> {
                let program: &mut Lsm = self
                    .ebpf
                    .program_mut(prog)
                    .ok_or_else(|| anyhow!("probe object has no {prog}"))?
                    .try_into()?;
                program.load(hook, &btf)?;
                pins::attach(self.pinned.as_ref(), &mut self.attached, prog, program)?;
                Ok(())
            })();
            match result {
                Ok(()) => support.hooks.push(hook),
                Err(e) => support.unavailable.push((hook, format!("{e:#}"))),
            }
        }
        if support.hooks.is_empty() {
            let first = support
                .unavailable
                .first()
                .map(|(h, e)| format!("{h}: {e}"))
                .unwrap_or_default();
            bail!(
                "BPF LSM programs are refused by this kernel ({first}); `deny` needs a kernel \
                 that allows them (CONFIG_BPF_LSM, `bpf` in the `lsm=` list, no lockdown \
                 or sandbox refusing BPF LSM)"
            );
        }
        let name = programs::SYS_EXIT;
        let program: &mut BtfTracePoint = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("probe object has no {name}"))?
            .try_into()?;
        program
            .load(name, &btf)
            .with_context(|| format!("verifying {name}"))?;
        pins::attach(self.pinned.as_ref(), &mut self.attached, name, program)
            .with_context(|| format!("attaching {name}"))?;
        Ok(support)
    }

    /// Attach the self-protection hooks (BPF LSM): a policed task may not signal
    /// `agent_tgid`, nor write bpffs. The number of hooks attached.
    pub fn enable_guards(&mut self, agent_tgid: u32) -> anyhow::Result<usize> {
        if let Some(reason) = lsm_unavailable_reason() {
            bail!(reason);
        }
        if self.layout.guard == [0; 5] {
            bail!(
                "the kernel's BTF lacks a member the guards read (task_struct.tgid, inode.i_sb, super_block.s_magic, file.f_inode or file.f_mode)"
            );
        }
        let btf = self.btf()?;
        let mut guarded: Array<MapData, u32> = take(&mut self.ebpf, maps::GUARDED)?;
        guarded.set(0, agent_tgid, 0).context("writing GUARDED")?;
        for (prog, hook) in programs::GUARDS {
            let program: &mut Lsm = self
                .ebpf
                .program_mut(prog)
                .ok_or_else(|| anyhow!("probe object has no {prog}"))?
                .try_into()?;
            if let Err(e) = program.load(hook, &btf) {
                let text = format!("{e:#}");
                if text.contains("Operation not permitted") {
                    bail!(
                        "BPF LSM programs are refused by this kernel (loading {prog} fails with \
                         EPERM), although `bpf` is in {LSM_LIST}"
                    );
                }
                return Err(anyhow::Error::from(e).context(format!("verifying {prog}")));
            }
            pins::attach(self.pinned.as_ref(), &mut self.attached, prog, program)
                .with_context(|| format!("attaching {prog}"))?;
        }
        Ok(programs::GUARDS.len())
    }

    fn btf(&mut self) -> anyhow::Result<Btf> {
        match self.btf.take() {
            Some(btf) => Ok(btf),
            None => Btf::from_sys_fs().context("reading kernel BTF"),
        }
    }

    /// Done attaching: drop the parsed kernel BTF and give the memory back to the
    /// system (it is most of a fresh agent's footprint).
    pub fn settle(&mut self) {
        self.btf = None;
        // SAFETY: plain glibc call; trims free heap memory.
        unsafe { libc::malloc_trim(0) };
    }

    pub fn max_slots(&self) -> u32 {
        self.max_slots
    }

    /// The violation ring buffer; can be taken once.
    pub fn take_violations(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        take(&mut self.ebpf, maps::VIOLATIONS)
    }

    /// Write a policy into a slot, zeroing its counters first so they start at 0.
    pub fn fill_slot(&mut self, slot: u32, policy: &PolicySlot) -> anyhow::Result<()> {
        self.zero_counts(slot)?;
        self.write_slot(slot, policy)
    }

    /// Write a policy into a slot whose counters are known to be zero.
    pub fn write_slot(&mut self, slot: u32, policy: &PolicySlot) -> anyhow::Result<()> {
        self.check_slot(slot)?;
        self.policies
            .set(slot, policy, 0)
            .context("writing POLICIES")
    }

    /// Zero a slot's counters (no workload may be bound to it).
    pub fn zero_counts(&mut self, slot: u32) -> anyhow::Result<()> {
        self.check_slot(slot)?;
        for i in 0..COUNTERS_PER_SLOT {
            self.counts.set(slot * COUNTERS_PER_SLOT + i, 0, 0)?;
        }
        Ok(())
    }

    /// Empty a slot: a workload still bound to it would have every syscall judged a
    /// violation, so unbind its workloads first.
    pub fn free_slot(&mut self, slot: u32) -> anyhow::Result<()> {
        self.check_slot(slot)?;
        self.policies
            .set(slot, PolicySlot::EMPTY, 0)
            .context("writing POLICIES")?;
        Ok(())
    }

    fn check_slot(&self, slot: u32) -> anyhow::Result<()> {
        if slot >= self.max_slots {
            bail!(
                "slot {slot} out of range (probe has {} slots)",
                self.max_slots
            );
        }
        Ok(())
    }

    /// Point a cgroup at a slot: one map write, effective for the next syscall.
    pub fn bind(&mut self, cgroup_id: u64, slot: u32) -> anyhow::Result<()> {
        self.check_slot(slot)?;
        self.set_binding(cgroup_id, slot)
    }

    /// Record a cgroup as known and unpoliced, so its tasks cost one array access.
    pub fn mark_unpoliced(&mut self, cgroup_id: u64) -> anyhow::Result<()> {
        self.set_binding(cgroup_id, NO_SLOT)
    }

    fn set_binding(&mut self, cgroup_id: u64, slot: u32) -> anyhow::Result<()> {
        self.workloads
            .insert(cgroup_id, Binding { slot, _reserved: 0 }, 0)
            .context("writing WORKLOADS")?;
        self.book.known.insert(cgroup_id, slot);
        let index = cache_index(cgroup_id);
        self.book
            .by_index
            .entry(index)
            .or_default()
            .insert(cgroup_id);
        let written = self.write_cache(index);
        self.turn_generation()?;
        written
    }

    /// After a change to what `sys_enter` looks up (WORKLOADS, CGROUP_CACHE, SETTINGS):
    /// a new generation, so that no CPU's per-task memo (`TASK_MEMO`) answers from
    /// before the change. No-op while the memo is off.
    fn turn_generation(&mut self) -> anyhow::Result<()> {
        if !self.memo {
            return Ok(());
        }
        self.agent_generation += 1;
        self.generation
            .set(generation::AGENT, self.agent_generation, 0)
            .context("writing GENERATION")
    }

    /// Forget a cgroup: its tasks go back to the slow path (ancestors, or nothing).
    pub fn unbind(&mut self, cgroup_id: u64) -> anyhow::Result<()> {
        let index = cache_index(cgroup_id);
        self.book.known.remove(&cgroup_id);
        if let Some(ids) = self.book.by_index.get_mut(&index) {
            ids.remove(&cgroup_id);
            if ids.is_empty() {
                self.book.by_index.remove(&index);
            }
        }
        // Cache first: it must never name a cgroup WORKLOADS no longer has.
        let written =
            self.write_cache(index)
                .and_then(|()| match self.workloads.remove(&cgroup_id) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                    Err(e) => Err(e).context("removing from WORKLOADS"),
                });
        self.turn_generation()?;
        written
    }

    /// Bring one cache entry in line with the book. A reader sees either the old entry,
    /// an empty one (and asks WORKLOADS), or the new one: a new owner is written in two
    /// steps, id 0 first, so an id is never paired with another cgroup's slot.
    fn write_cache(&mut self, index: u32) -> anyhow::Result<()> {
        let ids = self.book.by_index.get(&index);
        let want = match ids.map(|s| s.len()).unwrap_or(0) {
            0 => CacheEntry {
                cgroup_id: 0,
                slot: 0,
                _reserved: 0,
            },
            1 => {
                let id = *ids.and_then(|s| s.first()).expect("one id");
                CacheEntry {
                    cgroup_id: id,
                    slot: self.book.known[&id],
                    _reserved: 0,
                }
            }
            _ => CacheEntry {
                cgroup_id: CACHE_COLLISION,
                slot: 0,
                _reserved: 0,
            },
        };
        let current = self.book.cache.get(&index).copied().unwrap_or(0);
        if current != want.cgroup_id && current != 0 {
            self.cache
                .set(
                    index,
                    CacheEntry {
                        cgroup_id: 0,
                        slot: want.slot,
                        _reserved: 0,
                    },
                    0,
                )
                .context("writing CGROUP_CACHE")?;
        }
        self.cache
            .set(index, want, 0)
            .context("writing CGROUP_CACHE")?;
        self.book.cache.insert(index, want.cgroup_id);
        Ok(())
    }

    /// The cgroups this probe has an entry for (bound or known unpoliced), with their
    /// slot ([`NO_SLOT`] for unpoliced).
    pub fn bindings(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.book.known.iter().map(|(id, slot)| (*id, *slot))
    }

    /// The cgroup ids in `WORKLOADS`, read back from the kernel (read-only).
    pub fn workload_keys(&self) -> anyhow::Result<Vec<u64>> {
        let mut keys = self
            .workloads
            .keys()
            .collect::<Result<Vec<u64>, _>>()
            .context("reading WORKLOADS")?;
        keys.sort_unstable();
        Ok(keys)
    }

    /// Levels (bit per level) at which bindings sit, for the ancestor fallback.
    pub fn set_ancestor_levels(&mut self, levels: u32) -> anyhow::Result<()> {
        self.current_settings.ancestor_levels = levels & !1;
        self.write_settings()
    }

    /// Violation events per (workload, syscall) per second, and per workload whatever
    /// the syscall (its budget); 0 = no limit.
    pub fn set_event_rate(&mut self, per_key: u32, per_workload: u32) -> anyhow::Result<()> {
        self.current_settings.events_per_second = per_key;
        self.current_settings.workload_events_per_second = per_workload;
        self.write_settings()
    }

    fn write_settings(&mut self) -> anyhow::Result<()> {
        self.settings
            .set(0, self.current_settings, 0)
            .context("writing SETTINGS")?;
        self.turn_generation()
    }

    /// Exact per-index counts of a slot, non-zero ones only (every call under `monitor`
    /// and `audit`, violations only under `enforce`): the
    /// syscall indexes and the unclassified counter (not the namespace forks).
    pub fn slot_counts(&self, slot: u32) -> anyhow::Result<Vec<(u32, u64)>> {
        self.check_slot(slot)?;
        let mut out = Vec::new();
        for i in 0..=probe_common::UNCLASSIFIED_INDEX {
            let total = self.counts.get(&(slot * COUNTERS_PER_SLOT + i), 0)?;
            if total > 0 {
                out.push((i, total));
            }
        }
        Ok(out)
    }

    /// Forks into a new namespace the slot's workloads made (`NEW_NAMESPACE_INDEX`).
    pub fn slot_new_namespaces(&self, slot: u32) -> anyhow::Result<u64> {
        self.check_slot(slot)?;
        Ok(self.counts.get(
            &(slot * COUNTERS_PER_SLOT + probe_common::NEW_NAMESPACE_INDEX),
            0,
        )?)
    }
}

/// Decode one ring buffer record.
pub fn decode_violation(bytes: &[u8]) -> Option<ViolationEvent> {
    if bytes.len() < std::mem::size_of::<ViolationEvent>() {
        return None;
    }
    // SAFETY: ViolationEvent is plain old data of this size; read_unaligned copes with
    // the ring buffer's 8-byte alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ViolationEvent>()) })
}

/// A task's comm as text.
pub fn comm_str(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}
