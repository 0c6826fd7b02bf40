//! Setups that `cargo xtask bench` measures against: each is held until stdin closes.

use std::{io::Read as _, path::Path};

use anyhow::bail;

use crate::{
    cgroup::{self, OwnedCgroup},
    policy,
    probe::{Probe, ProbeOptions},
};

/// Hold one setup: `floor` (the empty program alone) or `idle` (sysfence attached with
/// `policy` bound to an empty cgroup, so the caller is not policed).
pub fn hold(what: &str, policy_file: Option<&Path>) -> anyhow::Result<()> {
    let _held: (Probe, Option<OwnedCgroup>) = match what {
        "floor" => {
            let mut probe = Probe::load(ProbeOptions {
                max_slots: 1,
                attach: false,
            })?;
            probe.attach_floor()?;
            (probe, None)
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
            let cg = OwnedCgroup::create(
                &root,
                &format!("sysfence/bench-idle-{}", std::process::id()),
            )?;
            probe.bind(cg.id, 0)?;
            // As the agent does: every other cgroup is known to be unpoliced.
            for (_, abs) in cgroup::walk(&root) {
                if let Ok(id) = cgroup::id_of(&abs)
                    && id != cg.id
                {
                    probe.mark_unpoliced(id)?;
                }
            }
            probe.mark_unpoliced(cgroup::id_of(&root)?)?;
            (probe, Some(cg))
        }
        other => bail!("unknown setup {other}: floor or idle"),
    };
    println!("ready");
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;
    Ok(())
}
