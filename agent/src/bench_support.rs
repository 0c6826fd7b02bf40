//! Setups that `cargo xtask bench` measures against: each is held until stdin closes.

use std::{io::Read as _, path::Path};

use anyhow::bail;

use crate::{
    cgroup::{self, OwnedCgroup},
    policy,
    probe::{Probe, ProbeOptions},
};

/// Bytes of kernel memory charged to this process's BPF maps (`memlock` in the maps'
/// fdinfo), i.e. the probe's maps as the kernel accounts them.
pub fn map_memory() -> u64 {
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

/// Hold one setup until stdin closes, after printing `ready`:
/// - `floor`: the empty `sys_enter` program alone;
/// - `idle`: sysfence attached as the agent runs it, `policy` in a slot bound to
///   `workloads` fresh cgroups and every other cgroup known unpoliced; with `caller`,
///   one more bound cgroup is created for the benchmark's workload, and its path is
///   printed as `caller-cgroup PATH`. `map-memory BYTES` is printed too.
pub fn hold(
    what: &str,
    policy_file: Option<&Path>,
    workloads: u32,
    caller: bool,
) -> anyhow::Result<()> {
    let mut cgroups: Vec<OwnedCgroup> = Vec::new();
    let _probe: Probe = match what {
        "floor" => {
            let mut probe = Probe::load(ProbeOptions {
                max_slots: 1,
                attach: false,
            })?;
            probe.attach_floor()?;
            probe
        }
        "idle" => {
            let Some(file) = policy_file else {
                bail!("idle needs --policy")
            };
            let (mut policies, _) = policy::load_files(&[file.to_path_buf()]).into_result()?;
            let Some(p) = policies.pop() else {
                bail!("{}: no policy", file.display())
            };
            let mut probe = Probe::load(ProbeOptions {
                max_slots: 1,
                attach: true,
            })?;
            probe.fill_slot(
                0,
                &p.enforcement(Err("the benchmark attaches no LSM hook"))
                    .slot,
            )?;
            let root = cgroup::v2_root()?;
            let base = format!("sysfence/bench-{}", std::process::id());
            for i in 0..workloads.max(1) {
                let cg = OwnedCgroup::create(&root, &format!("{base}/w{i}"))?;
                probe.bind(cg.id, 0)?;
                cgroups.push(cg);
            }
            if caller {
                let cg = OwnedCgroup::create(&root, &format!("{base}/caller"))?;
                probe.bind(cg.id, 0)?;
                println!("caller-cgroup {}", cg.path.display());
                cgroups.push(cg);
            }
            // As the agent does: every other cgroup is known to be unpoliced.
            let bound: Vec<u64> = cgroups.iter().map(|c| c.id).collect();
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
    println!("ready");
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;
    // Children first: a cgroup is removed only once empty, its parent after it.
    while let Some(cg) = cgroups.pop() {
        drop(cg);
    }
    if let Ok(root) = cgroup::v2_root() {
        let _ = std::fs::remove_dir(root.join(format!("sysfence/bench-{}", std::process::id())));
    }
    Ok(())
}
