//! `sf-bench-hold`: the setups that `cargo xtask bench` measures against, each held
//! until stdin closes. Built on the `sysfence` library (the probe, cgroups, policies),
//! outside the product binary.
//!
//! sf-bench-hold floor                     the empty `sys_enter` program alone
//! sf-bench-hold idle --policy FILE [--workloads N] [--policies P] [--caller] [--bind CGROUP]
//!                    [--deny-path] [--no-task-cast]
//!                                         sysfence attached as the agent runs it
//!
//! What each prints is documented on [`hold`].

use std::{io::Read as _, path::PathBuf, process::ExitCode};

use anyhow::bail;

use clap::Parser;
use sysfence::{
    cgroup::{self, OwnedCgroup},
    policy,
    probe::{Probe, ProbeOptions},
    syscall_table,
    workload::table::slots_needed,
};

/// Bytes of kernel memory charged to this process's BPF maps (`memlock` in the maps'
/// fdinfo), i.e. the probe's maps as the kernel accounts them.
fn map_memory() -> u64 {
    let Ok(fds) = std::fs::read_dir("/proc/self/fdinfo") else {
        return 0;
    };
    fds.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter(|info| info.contains("map_type:"))
        .filter_map(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("memlock:")
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
        })
        .sum()
}

/// One line per BPF map this process holds, as the kernel reports it (`bpf_map_info`
/// for the name, the map's fdinfo for the rest, `memlock` being the kernel's own
/// `bpf_map_memory_usage`):
/// `map NAME TYPE KEY_SIZE VALUE_SIZE MAX_ENTRIES MEMLOCK MAP_FLAGS` (`MAP_FLAGS` in hex,
/// as fdinfo gives it, e.g. `0x1` for `BPF_F_NO_PREALLOC`).
fn map_info_lines() -> Vec<String> {
    let Ok(fds) = std::fs::read_dir("/proc/self/fdinfo") else {
        return Vec::new();
    };
    let mut lines: Vec<String> = fds
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter(|info| info.contains("map_type:"))
        .filter_map(|info| {
            let raw = |k: &str| {
                info.lines().find_map(|l| {
                    l.strip_prefix(k)
                        .and_then(|v| v.strip_prefix(':'))
                        .map(str::trim)
                })
            };
            let field = |k: &str| raw(k).and_then(|v| v.parse::<u64>().ok());
            let flags = raw("map_flags")
                .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
                .unwrap_or(0);
            let id = field("map_id")? as u32;
            let name = aya::maps::MapInfo::from_id(id)
                .ok()
                .and_then(|i| i.name_as_str().map(str::to_string))
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| format!("id{id}"));
            Some(format!(
                "map {name} {} {} {} {} {} {flags:#x}",
                field("map_type")?,
                field("key_size")?,
                field("value_size")?,
                field("max_entries")?,
                field("memlock")?
            ))
        })
        .collect();
    lines.sort();
    lines.dedup();
    lines
}

/// Hold one setup until stdin closes, after printing `ready`:
/// - `floor`: the empty `sys_enter` program alone;
/// - `idle`: sysfence attached as the agent runs it, with as many policy slots as the
///   agent gives `policies` policies ([`slots_needed`]); `policy` fills `policies` of
///   them (a slot is per policy, so each stands for a distinct policy), and `workloads`
///   fresh cgroups are bound to them round-robin, every other cgroup known unpoliced;
///   with `caller`, one more cgroup is created and bound to slot 0 for the benchmark's
///   workload, and its path is printed as `caller-cgroup PATH`; with `bind`, that
///   existing cgroup (a path under the cgroup v2 root, or absolute) is bound to slot 0
///   too. `map-memory BYTES` and one `map` line per map ([`map_info_lines`]) are
///   printed too. When stdin closes, slot 0's exact counts are printed,
///   `count ABI NAME N allowed|violation`. With `deny_path`, the policy is compiled as
///   on a kernel with BPF LSM (an `action: deny` policy keeps it) and `sys_exit` is
///   attached too, as the agent does then; no LSM hook is.
fn hold(args: &Args) -> anyhow::Result<()> {
    let (what, policy_file, workloads, policies, caller, bind, deny_path) = (
        args.what.as_str(),
        args.policy.as_deref(),
        args.workloads,
        args.policies,
        args.caller,
        args.bind.as_deref(),
        args.deny_path,
    );
    let mut cgroups: Vec<OwnedCgroup> = Vec::new();
    let mut slot_policy = None;
    let probe: Probe = match what {
        "floor" => {
            let mut probe = Probe::load(ProbeOptions {
                max_slots: 1,
                attach: false,
                ..ProbeOptions::default()
            })?;
            probe.attach_btf_tracepoint(probe_common::programs::SYS_ENTER_FLOOR, "sys_enter")?;
            probe
        }
        "idle" => {
            let Some(file) = policy_file else {
                bail!("idle needs --policy")
            };
            let (mut loaded, _) = policy::load_files(&[file.to_path_buf()]).into_result()?;
            let Some(p) = loaded.pop() else {
                bail!("{}: no policy", file.display())
            };
            if policies == 0 {
                bail!("--policies must be at least 1")
            }
            let mut probe = Probe::load(ProbeOptions {
                max_slots: slots_needed(policies as usize),
                attach: true,
                task_cast: !args.no_task_cast,
            })?;
            let slot = p
                .enforcement(if deny_path {
                    Ok(())
                } else {
                    Err("the benchmark attaches no LSM hook")
                })
                .slot;
            for s in 0..policies {
                probe.fill_slot(s, &slot)?;
            }
            if deny_path {
                probe.attach_btf_tracepoint(probe_common::programs::SYS_EXIT, "sys_exit")?;
            }
            slot_policy = Some(slot);
            let root = cgroup::v2_root()?;
            let base = format!("sysfence/bench-{}", std::process::id());
            for i in 0..workloads {
                let cg = OwnedCgroup::create(&root, &format!("{base}/w{i}"))?;
                probe.bind(cg.id, i % policies)?;
                cgroups.push(cg);
            }
            let mut bound: Vec<u64> = cgroups.iter().map(|c| c.id).collect();
            if let Some(path) = bind {
                let id = cgroup::id_of(&root.join(path))?;
                probe.bind(id, 0)?;
                bound.push(id);
            }
            if caller {
                let cg = OwnedCgroup::create(&root, &format!("{base}/caller"))?;
                probe.bind(cg.id, 0)?;
                println!("caller-cgroup {}", cg.path.display());
                cgroups.push(cg);
            }
            // As the agent does: every other cgroup is known to be unpoliced.
            bound.extend(cgroups.iter().map(|c| c.id));
            for (_, abs) in cgroup::walk(&root) {
                if let Ok(id) = cgroup::id_of(&abs)
                    && !bound.contains(&id)
                {
                    probe.mark_unpoliced(id)?;
                }
            }
            probe.mark_unpoliced(cgroup::id_of(&root)?)?;
            probe
        }
        other => bail!("unknown setup {other}: floor or idle"),
    };
    println!("map-memory {}", map_memory());
    for line in map_info_lines() {
        println!("{line}");
    }
    println!("ready");
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;
    if let Some(slot) = slot_policy {
        for (index, n) in probe.slot_counts(0)? {
            let (abi, name) = syscall_table::describe_index(index);
            let verdict = match probe_common::decide(&slot, Some(index), &probe_common::UnknownArgs)
            {
                probe_common::Decision::Allow if abi.is_some() => "allowed",
                _ => "violation",
            };
            println!(
                "count {} {name} {n} {verdict}",
                abi.map_or("unknown", |a| a.name())
            );
        }
    }
    drop(probe);
    // Children first: a cgroup is removed only once empty, its parent after it.
    while let Some(cg) = cgroups.pop() {
        drop(cg);
    }
    if let Ok(root) = cgroup::v2_root() {
        let _ = std::fs::remove_dir(root.join(format!("sysfence/bench-{}", std::process::id())));
    }
    Ok(())
}

/// Hold a benchmark setup until stdin closes (used by `cargo xtask bench`).
#[derive(Parser)]
#[command(name = "sf-bench-hold")]
struct Args {
    /// `floor` or `idle`.
    what: String,
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Cgroups to bind, round-robin over the policies' slots (idle).
    #[arg(long, default_value_t = 1)]
    workloads: u32,
    /// Distinct policies: the probe gets the slots the agent gives that many, and that
    /// many are filled with the policy (idle).
    #[arg(long, default_value_t = 1)]
    policies: u32,
    /// Also create a bound cgroup for the workload and print its path (idle).
    #[arg(long)]
    caller: bool,
    /// Also bind this existing cgroup (under the cgroup v2 root) (idle).
    #[arg(long)]
    bind: Option<PathBuf>,
    /// Compile the policy as on a kernel with BPF LSM and attach `sys_exit` (idle).
    #[arg(long)]
    deny_path: bool,
    /// Read the memoised task with the helper, not through `bpf_rdonly_cast` (idle): the
    /// probe as on a kernel before 6.2, to measure what the cast saves.
    #[arg(long)]
    no_task_cast: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match hold(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sf-bench-hold: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
