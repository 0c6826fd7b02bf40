//! Builds the kernel side (`probe-ebpf`) with nightly and bpf-linker, and leaves the
//! object in OUT_DIR for `include_bytes_aligned!`. `cargo xtask` installs the tools;
//! this script also finds them where xtask caches them, so a plain `cargo build` works
//! after the first `cargo xtask` run.
use std::{env, path::PathBuf};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let tools = env::var_os("SYSFENCE_TOOLS")
        .map(PathBuf::from)
        .or_else(|| {
            let cargo_home = env::var_os("CARGO_HOME")
                .map(PathBuf::from)
                .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
            Some(cargo_home.join("sysfence-tools"))
        });
    if let Some(bin) = tools
        .map(|t| t.join("bin"))
        .filter(|b| b.join("bpf-linker").exists())
    {
        let path = env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin];
        paths.extend(env::split_paths(&path));
        // SAFETY: build scripts are single-threaded at this point.
        unsafe { env::set_var("PATH", env::join_paths(paths)?) };
    }
    println!("cargo:rerun-if-env-changed=SYSFENCE_TOOLS");
    if env::var_os("AYA_BUILD_SKIP").is_none() && which_bpf_linker().is_none() {
        return Err(anyhow!(
            "bpf-linker not found: run `cargo xtask build` once; it installs the eBPF \
             toolchain (nightly rust-src, bpf-linker) outside the source tree"
        ));
    }
    // aya-build relays the inner cargo's progress lines as warnings; keep only real ones.
    // SAFETY: as above.
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../probe-ebpf");
    let root = root.canonicalize().context("probe-ebpf directory")?;
    let root = root.to_str().context("probe-ebpf path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "probe-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

fn which_bpf_linker() -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|p| p.join("bpf-linker"))
        .find(|p| p.exists())
}
