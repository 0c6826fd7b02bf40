//! The probe's pins on bpffs, so that enforcement outlives the agent.
//!
//! Layout, under the pin root (`/sys/fs/bpf/sysfence` by default):
//!
//! ```text
//! v<LAYOUT_VERSION>/<MAP>           every map the agent and the programs share
//! v<LAYOUT_VERSION>/links/<PROGRAM> the attachment of each program (bpf_link)
//! ```
//!
//! A pinned link keeps its program attached after the agent exits, even by SIGKILL;
//! the pinned maps keep the bindings, policies and counters it reads. A restarted agent
//! of the same layout opens the same maps and keeps the attached programs (or, when
//! its build differs, attaches its own and then drops the old link). A different layout
//! lives in another `v<N>` directory: the new agent builds its probe beside it and
//! removes the old one only once it polices everything (see
//! [`super::Probe::retire_stale_layouts`]).

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    maps::MapInfo,
    programs::{
        links::{FdLink, PinnedLink},
        loaded_programs,
    },
};
use probe_common::{
    Binding, COUNTERS_PER_SLOT, CacheEntry, DenyMark, PolicySlot, ProbeSettings, RateKey,
    RateState, maps,
};

/// Bump when a pinned map's key, value, size or meaning changes: agents of different
/// layouts never share maps.
pub const LAYOUT_VERSION: u32 = 7;

/// Where the node agent pins its probe unless told otherwise.
pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/sysfence";

/// `statfs` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The maps shared by the programs and the agent, pinned by name. (The programs'
/// `.rodata` and the log channel are per load and stay unpinned.)
pub const PINNED_MAPS: &[&str] = maps::ALL;

/// A prepared pin directory.
#[derive(Debug)]
pub struct Pinned {
    /// `<root>/v<LAYOUT_VERSION>`.
    pub dir: PathBuf,
    /// `Some(capacity in slots)` when a probe of this layout is pinned there already.
    pub adopted_slots: Option<u32>,
    /// Pinned probes of other layouts.
    pub stale: Vec<PathBuf>,
}

/// How a program came to be attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attached {
    /// No pinned link: attached now and pinned.
    New,
    /// The pinned link runs the very same program: kept, never detached.
    Kept,
    /// The pinned link ran another build: this build's program was attached first,
    /// then the old link removed (for that instant, both ran).
    Replaced,
}

/// Make sure `root` is on bpffs (mounting bpffs on `/sys/fs/bpf` if nothing is
/// mounted there), create the layout directory, and check a pinned probe found there.
pub fn prepare(root: &Path, min_slots: u32) -> anyhow::Result<Pinned> {
    ensure_bpffs(root)?;
    let dir = root.join(format!("v{LAYOUT_VERSION}"));
    std::fs::create_dir_all(dir.join("links"))
        .with_context(|| format!("creating the pin directory {}", dir.display()))?;
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(root).with_context(|| format!("reading {}", root.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.path() != dir && name.starts_with('v') && name[1..].parse::<u32>().is_ok() {
            stale.push(entry.path());
        }
    }
    stale.sort();
    let adopted_slots = if dir.join(maps::POLICIES).exists() {
        let capacity = check_layout(&dir)?;
        if capacity < min_slots {
            bail!(
                "the probe pinned in {} has {capacity} policy slots and this agent needs \
                 {min_slots}: stop the agent and run `sysfence agent --uninstall` to start \
                 afresh with more (the node is unpoliced until the agent is back), or load \
                 fewer policies",
                dir.display()
            );
        }
        Some(capacity)
    } else {
        // A half-made directory (an agent killed while loading) holds nothing in use.
        for name in PINNED_MAPS {
            let _ = std::fs::remove_file(dir.join(name));
        }
        None
    };
    Ok(Pinned {
        dir,
        adopted_slots,
        stale,
    })
}

/// Compare the pinned maps with the maps this build would create; the capacity in
/// slots of the pinned probe.
fn check_layout(dir: &Path) -> anyhow::Result<u32> {
    let size = |n: usize| n as u32;
    // (map, key size, value size, max entries if fixed)
    let expected: [(&str, u32, u32, Option<u32>); 26] = [
        (maps::WORKLOADS, 8, size(size_of::<Binding>()), None),
        (maps::POLICIES, 4, size(size_of::<PolicySlot>()), None),
        (maps::COUNTS, 4, 8, None),
        (
            maps::CGROUP_CACHE,
            4,
            size(size_of::<CacheEntry>()),
            Some(probe_common::CGROUP_CACHE_SIZE),
        ),
        (maps::SETTINGS, 4, size(size_of::<ProbeSettings>()), Some(1)),
        (
            maps::EVENT_LIMITS,
            size(size_of::<RateKey>()),
            size(size_of::<RateState>()),
            None,
        ),
        (
            maps::EVENT_BUDGETS,
            8,
            size(size_of::<probe_common::EventBudget>()),
            None,
        ),
        (
            maps::PROCESS_SLOTS,
            4,
            size(size_of::<probe_common::ProcessPolicy>()),
            None,
        ),
        (
            maps::STRAYS,
            4,
            size(size_of::<probe_common::ProcessPolicy>()),
            None,
        ),
        (maps::STRAY_COUNT, 4, 8, Some(1)),
        (maps::DOOMED_WORKLOADS, 8, 8, None),
        (maps::DOOMED_COUNT, 4, 8, Some(1)),
        (maps::STATS, 4, 8, Some(probe_common::stat::COUNT)),
        // Task storage: keyed by a task (an fd, from user space); no capacity.
        (maps::DENY_MARKS, 4, size(size_of::<DenyMark>()), Some(0)),
        (maps::DENY_PENDING, 4, 8, Some(1)),
        (
            maps::RING_OWNERS,
            4,
            size(size_of::<probe_common::RingOwner>()),
            Some(0),
        ),
        (maps::RING_OWNER_COUNT, 4, 8, Some(1)),
        (maps::GUARDED, 4, 4, Some(1)),
        (
            maps::GENERATION,
            4,
            8,
            Some(probe_common::generation::COUNT),
        ),
        (
            maps::KERNEL_STATE,
            4,
            size(size_of::<probe_common::KernelState>()),
            Some(1),
        ),
        (
            maps::TASK_MEMO,
            4,
            size(size_of::<probe_common::TaskMemo>()),
            Some(probe_common::TASK_MEMO_SIZE),
        ),
        (maps::REGS_SCRATCH, 4, 8, Some(1)),
        (
            maps::SETUP_UNTIL_EXEC,
            4,
            8,
            Some(probe_common::setup::MAX_SETUPS),
        ),
        (maps::SETUP_COUNT, 4, 8, Some(1)),
        (maps::HOLD_ROOTS, 8, 1, Some(1024)),
        (maps::HELD, 4, 8, Some(4096)),
    ];
    let mut problems = Vec::new();
    let mut infos = std::collections::HashMap::new();
    for (name, key, value, max) in expected {
        let path = dir.join(name);
        if !path.exists() && name != maps::POLICIES {
            // A map this build added: it is created, and the pinned programs do not
            // use it.
            continue;
        }
        let info = match MapInfo::from_pin(&path) {
            Ok(i) => i,
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        if info.key_size() != key || info.value_size() != value {
            problems.push(format!(
                "{name}: key/value {}/{} bytes, this agent's {key}/{value}",
                info.key_size(),
                info.value_size()
            ));
        }
        if let Some(max) = max
            && info.max_entries() != max
        {
            problems.push(format!(
                "{name}: {} entries, this agent's {max}",
                info.max_entries()
            ));
        }
        infos.insert(name, info.max_entries());
    }
    let slots = infos.get(maps::POLICIES).copied().unwrap_or(0);
    if let Some(&counts) = infos.get(maps::COUNTS)
        && counts != slots * COUNTERS_PER_SLOT
    {
        problems.push(format!(
            "COUNTS: {counts} counters for {slots} slots, this agent keeps {COUNTERS_PER_SLOT} per slot"
        ));
    }
    if !problems.is_empty() {
        bail!(
            "the probe pinned in {} does not have this agent's layout v{LAYOUT_VERSION} \
             ({}). It was pinned by a build of the same layout version with other maps: \
             stop that agent and run `sysfence agent --uninstall`, then start this one",
            dir.display(),
            problems.join("; ")
        );
    }
    Ok(slots)
}

fn ensure_bpffs(root: &Path) -> anyhow::Result<()> {
    let mut probe_dir = root.to_path_buf();
    while !probe_dir.exists() {
        if !probe_dir.pop() {
            bail!("{} has no existing parent", root.display());
        }
    }
    if is_bpffs(&probe_dir)? {
        return Ok(());
    }
    let default_mount = Path::new("/sys/fs/bpf");
    if root.starts_with(default_mount) && probe_dir == default_mount {
        let source = CString::new("bpf").expect("no NUL");
        let target = CString::new(default_mount.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: plain mount(2) with valid C strings and no data.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                source.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            bail!(
                "mounting bpffs on /sys/fs/bpf: {}",
                std::io::Error::last_os_error()
            );
        }
        tracing::info!(event = "bpffs_mounted", path = "/sys/fs/bpf");
        return Ok(());
    }
    bail!(
        "{} is not on a BPF filesystem: pins need bpffs (`mount -t bpf bpf /sys/fs/bpf`), \
         or choose a --pin-path under it",
        root.display()
    )
}

fn is_bpffs(path: &Path) -> anyhow::Result<bool> {
    let c = CString::new(path.as_os_str().as_bytes()).context("path with NUL")?;
    // SAFETY: statfs into a zeroed struct with a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statfs {}", path.display()));
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// The tag (hash of the instructions) of the program behind a pinned link.
fn pinned_program_tag(path: &Path) -> anyhow::Result<u64> {
    let link: FdLink = PinnedLink::from_pin(path)
        .map_err(|e| anyhow!("opening {}: {e}", path.display()))?
        .into();
    let prog_id = link.info()?.program_id();
    for info in loaded_programs() {
        let info = info?;
        if info.id() == prog_id {
            return Ok(info.tag());
        }
    }
    bail!("program {prog_id} of {} is gone", path.display())
}

/// Attach `program` (already loaded) through a pinned link named `name`, or keep the
/// pinned link when it runs the same program.
pub fn attach_pinned<P: Attach>(
    dir: &Path,
    name: &str,
    program: &mut P,
) -> anyhow::Result<Attached> {
    let path = dir.join("links").join(name);
    let old_tag = if path.exists() {
        match pinned_program_tag(&path) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(event = "pinned_link_unreadable", link = %path.display(), error = %format!("{e:#}"), "replacing it");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    } else {
        None
    };
    if let Some(old) = old_tag
        && old == program.tag()?
    {
        return Ok(Attached::Kept);
    }
    let link = program.attach_link()?;
    // No dots: bpffs refuses them in names (EPERM), they are reserved.
    let fresh = dir.join("links").join(format!("{name}_new"));
    let _ = std::fs::remove_file(&fresh);
    link.pin(&fresh)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("pinning the {name} link at {}", fresh.display()))?;
    // rename(2) over the old pin: the old link loses its last reference and detaches
    // only now, after the new program is attached.
    std::fs::rename(&fresh, &path)
        .with_context(|| format!("moving the {name} link pin into place"))?;
    Ok(if old_tag.is_some() {
        Attached::Replaced
    } else {
        Attached::New
    })
}

/// A loaded program that can be attached, pinned or not.
pub trait Attach {
    /// The tag (hash of the instructions) of the loaded program.
    fn tag(&self) -> anyhow::Result<u64>;
    /// Attach, and hand the attachment over as a link to pin.
    fn attach_link(&mut self) -> anyhow::Result<FdLink>;
    /// Attach for as long as the program object lives.
    fn attach_unpinned(&mut self) -> anyhow::Result<()>;
}

macro_rules! impl_attach {
    ($($program:ty),*) => {$(
        impl Attach for $program {
            fn tag(&self) -> anyhow::Result<u64> {
                Ok(self.info()?.tag())
            }

            fn attach_link(&mut self) -> anyhow::Result<FdLink> {
                let id = self.attach()?;
                Ok(self.take_link(id)?.into())
            }

            fn attach_unpinned(&mut self) -> anyhow::Result<()> {
                self.attach()?;
                Ok(())
            }
        }
    )*};
}
impl_attach!(aya::programs::BtfTracePoint, aya::programs::Lsm);

/// Attach a loaded program: through a pinned link in `pinned` (recorded in
/// `attached`), or for as long as the probe lives.
pub fn attach(
    pinned: Option<&Pinned>,
    attached: &mut Vec<(&'static str, Attached)>,
    name: &'static str,
    program: &mut impl Attach,
) -> anyhow::Result<()> {
    match pinned {
        Some(p) => {
            let how = attach_pinned(&p.dir, name, program)?;
            attached.push((name, how));
        }
        None => program.attach_unpinned()?,
    }
    Ok(())
}

/// Remove a pin tree (links first, so programs detach before their maps go); the
/// paths removed.
pub fn remove_tree(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    if !dir.exists() {
        return Ok(removed);
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    // "links" sorts before the upper-case map names: detach first.
    entries.sort_by_key(|p| !p.ends_with("links"));
    for path in entries {
        if path.is_dir() {
            removed.extend(remove_tree(&path)?);
        } else {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            removed.push(path);
        }
    }
    std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))?;
    removed.push(dir.to_path_buf());
    Ok(removed)
}

/// Links pinned under `dir` that `keep` does not name (programs no longer wanted,
/// such as the deny path when no policy asks for `deny` any more).
pub fn unwanted_links(dir: &Path, keep: &[&str]) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir.join("links")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            !keep.iter().any(|k| *k == n)
        })
        .map(|e| e.path())
        .collect()
}
