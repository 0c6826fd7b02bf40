//! The eBPF toolchain: nightly with `rust-src`, and `bpf-linker` built against the
//! nightly's own LLVM (no prebuilt binary, no recent enough LLVM in Debian).
//!
//! Cache: `$CARGO_HOME/sysfence-tools` (outside the clone, survives `cargo clean`):
//! - `llvm/lib/libLLVM.so` → the nightly's `libLLVM.so.*` (bpf-linker's rpath);
//! - `bin/bpf-linker`;
//! - `stamp`: the nightly and bpf-linker versions it was built for.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow, bail};

const NIGHTLY: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";

pub struct Tools {
    pub dir: PathBuf,
}

impl Tools {
    /// Put the tools on a command's PATH and tell the agent's build.rs where they are.
    pub fn apply(&self, cmd: &mut Command) {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.dir.join("bin")];
        paths.extend(std::env::split_paths(&path));
        cmd.env(
            "PATH",
            std::env::join_paths(paths).expect("PATH entries are valid"),
        );
        cmd.env("SYSFENCE_TOOLS", &self.dir);
    }
}

fn cargo_home() -> anyhow::Result<PathBuf> {
    if let Some(h) = std::env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(h));
    }
    let home =
        std::env::var_os("HOME").ok_or_else(|| anyhow!("neither CARGO_HOME nor HOME is set"))?;
    Ok(PathBuf::from(home).join(".cargo"))
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn rustup(args: &[&str]) -> Command {
    let mut c = Command::new("rustup");
    c.args(args);
    c
}

pub fn ensure() -> anyhow::Result<Tools> {
    let toolchains = output(&mut rustup(&["toolchain", "list"]))
        .context("rustup is needed to build the eBPF side")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        eprintln!("xtask: installing the nightly toolchain");
        let status = rustup(&["toolchain", "install", NIGHTLY, "--profile", "minimal"]).status()?;
        if !status.success() {
            bail!(
                "`rustup toolchain install nightly` failed: the eBPF side needs a nightly compiler"
            );
        }
    }
    let sysroot = PathBuf::from(output(
        Command::new("rustc").args(["+nightly", "--print", "sysroot"]),
    )?);
    if !sysroot.join("lib/rustlib/src/rust/library/core").exists() {
        eprintln!("xtask: adding rust-src to the nightly toolchain");
        let status = rustup(&["component", "add", "rust-src", "--toolchain", NIGHTLY]).status()?;
        if !status.success() {
            bail!("`rustup component add rust-src --toolchain nightly` failed");
        }
    }
    let nightly_version = output(Command::new("rustc").args(["+nightly", "--version"]))?;
    let dir = cargo_home()?.join("sysfence-tools");
    let stamp =
        format!("{nightly_version}\nbpf-linker {BPF_LINKER_VERSION} {BPF_LINKER_LLVM_FEATURE}\n");
    let linker = dir.join("bin/bpf-linker");
    let fresh = std::fs::read_to_string(dir.join("stamp")).ok().as_deref() == Some(stamp.as_str())
        && Command::new(&linker)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !fresh {
        build_bpf_linker(&dir, &sysroot)?;
        std::fs::write(dir.join("stamp"), &stamp)?;
    }
    Ok(Tools { dir })
}

fn build_bpf_linker(dir: &Path, sysroot: &Path) -> anyhow::Result<()> {
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM (about a minute, once)"
    );
    let lib = sysroot.join("lib");
    let llvm = std::fs::read_dir(&lib)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        })
        .ok_or_else(|| {
            anyhow!(
                "no libLLVM.so.* in {}: this nightly cannot host bpf-linker",
                lib.display()
            )
        })?;
    let prefix = dir.join("llvm");
    std::fs::create_dir_all(prefix.join("lib"))?;
    // `libLLVM.so` for the build, and the soname for the loader at run time (rustup sets
    // LD_LIBRARY_PATH for rustc's children, but not for `bpf-linker --version`).
    let soname = llvm.file_name().expect("a file name").to_owned();
    for name in [std::ffi::OsString::from("libLLVM.so"), soname] {
        let link = prefix.join("lib").join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm, &link)?;
    }
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--force",
        ])
        .args([
            "--no-default-features",
            "--features",
            BPF_LINKER_LLVM_FEATURE,
        ])
        .arg("--root")
        .arg(dir)
        .env("LLVM_PREFIX", &prefix)
        .status()?;
    if !status.success() {
        bail!("building bpf-linker failed");
    }
    Ok(())
}
