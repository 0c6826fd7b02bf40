//! sysfence build and test driver.
//!
//! Every subcommand first makes sure the eBPF toolchain is there (the nightly's
//! `rust-src`, and `bpf-linker` built against the nightly's own LLVM), installing what
//! is missing into a cache outside the source tree, so a fresh clone needs nothing done
//! by hand and a second run rebuilds nothing.

mod bench;
mod fuzz;
mod image;
mod packages;
mod toolchain;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Build, run, test and benchmark sysfence")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the eBPF toolchain if missing, then build the workspace.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build, then run `sysfence` with ARGS. `run -- agent` with no `--policies` runs the
    /// agent on the shipped `policies/` directory.
    Run {
        #[arg(long)]
        release: bool,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Every check and test: fmt, clippy, unit tests, and the privileged integration
    /// tests (real cgroups, the real probe) on the host, then in QEMU VMs (`vm-test`),
    /// the container image (`image`) and a short fuzz run (`fuzz`).
    /// Under CI=true a privileged test that cannot run fails.
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Seconds of fuzzing (`fuzz`), split over the fuzz targets; 0 skips it.
        #[arg(long, default_value_t = 60, value_name = "N")]
        fuzz_seconds: u64,
    },
    /// Per-syscall cost side by side in one run: nothing attached, the empty-program
    /// floor, sysfence unpoliced, sysfence policed.
    Bench(bench::BenchArgs),
    /// The integration tests inside QEMU VMs (TCG) booted from Debian's 6.1 and 6.12
    /// kernels with BPF LSM on; installs QEMU, the kernels and busybox if missing.
    VmTest(vm::VmArgs),
    /// The container image (deploy/Containerfile) from a static binary, built offline
    /// with podman; checks that its binary runs `--version`, and removes the image.
    Image(image::ImageArgs),
    /// Bounded cargo-fuzz runs of the policy parser and compiler and the seccomp
    /// importer (nightly; installs cargo-fuzz if missing). Any crash fails.
    Fuzz(fuzz::FuzzArgs),
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    let tools = toolchain::ensure()?;
    packages::ensure(matches!(cli.command, Cmd::Test { .. } | Cmd::VmTest(_)))?;
    match cli.command {
        Cmd::Build { release } => build(&tools, release),
        Cmd::Run { release, mut args } => {
            build(&tools, release)?;
            if args.first().map(String::as_str) == Some("agent")
                && !args.iter().any(|a| a.starts_with("--policies"))
            {
                args.push("--policies".into());
                args.push(root.join("policies").display().to_string());
            }
            let bin = target_dir(&root)
                .join(if release { "release" } else { "debug" })
                .join("sysfence");
            let status = Command::new(&bin)
                .args(&args)
                .status()
                .with_context(|| format!("running {}", bin.display()))?;
            std::process::exit(status.code().unwrap_or(128 + 9));
        }
        Cmd::Test {
            no_lint,
            fuzz_seconds,
        } => test(&tools, no_lint, fuzz_seconds),
        Cmd::Image(args) => image::run(&root, &tools, &args),
        Cmd::Fuzz(args) => fuzz::run(&root, &tools, &args),
        Cmd::Bench(args) => {
            build(&tools, true)?;
            bench::run(&root, &target_dir(&root).join("release"), args)
        }
        Cmd::VmTest(args) => {
            build(&tools, false)?;
            let mut tally = Tally::default();
            let vm = vm::run(&root, &tools, args, &mut tally);
            println!("xtask: {} passed, {} failed", tally.passed, tally.failed);
            vm
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// `cargo` with the eBPF tools on PATH.
fn cargo(tools: &toolchain::Tools) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    tools.apply(&mut cmd);
    cmd
}

/// PATH with the eBPF tools first.
fn tools_path(tools: &toolchain::Tools) -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![tools.dir.join("bin")];
    paths.extend(std::env::split_paths(&path));
    std::env::join_paths(paths).expect("PATH entries are valid")
}

fn run_step(name: &str, cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: {name}");
    let status = cmd.status().with_context(|| format!("starting {name}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}

fn build(tools: &toolchain::Tools, release: bool) -> anyhow::Result<()> {
    let mut cmd = cargo(tools);
    cmd.args(["build", "--workspace", "--exclude", "probe-ebpf", "--bins"]);
    if release {
        cmd.arg("--release");
    }
    run_step("build", &mut cmd)
}

fn test(tools: &toolchain::Tools, no_lint: bool, fuzz_seconds: u64) -> anyhow::Result<()> {
    if !no_lint {
        run_step(
            "cargo fmt --check",
            cargo(tools).args(["fmt", "--all", "--check"]),
        )?;
        run_step(
            "clippy",
            cargo(tools).args([
                "clippy",
                "--workspace",
                "--exclude",
                "probe-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        )?;
        run_step(
            "clippy (kernel side)",
            Command::new("rustup")
                .args([
                    "run",
                    "nightly",
                    "cargo",
                    "clippy",
                    "--release",
                    "--target",
                    "bpfel-unknown-none",
                ])
                .args(["-Z", "build-std=core", "--", "-D", "warnings"])
                .current_dir("probe-ebpf")
                .env("PATH", tools_path(tools)),
        )?;
    }
    build(tools, false)?;
    // Unit tests need no privileges; the integration tests share the kernel (one probe
    // at a time keeps their counts and kills independent), so they run one by one.
    let mut tally = Tally::default();
    let unit = tally.run(
        "unit tests",
        cargo(tools).args([
            "test",
            "--no-fail-fast",
            "--workspace",
            "--exclude",
            "probe-ebpf",
            "--exclude",
            "sysfence-tests",
        ]),
    );
    let host = tally.run(
        "host integration tests (root, cgroups, BPF)",
        cargo(tools).args([
            "test",
            "--no-fail-fast",
            "-p",
            "sysfence-tests",
            "--",
            "--test-threads=1",
        ]),
    );
    eprintln!("xtask: integration tests in QEMU VMs (BPF LSM kernels)");
    let vm = vm::run(&workspace_root(), tools, vm::VmArgs::default(), &mut tally);
    let image = image::run(&workspace_root(), tools, &image::ImageArgs::default());
    let fuzz = fuzz::run(
        &workspace_root(),
        tools,
        &fuzz::FuzzArgs {
            seconds: fuzz_seconds,
            target: None,
        },
    );
    println!("xtask: {} passed, {} failed", tally.passed, tally.failed);
    unit.and(host).and(vm).and(image).and(fuzz)
}

/// Test counts over several `cargo test` runs, read from their `test result:` lines.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

impl Tally {
    /// Run a `cargo test`, echoing its output, and add up its results.
    fn run(&mut self, name: &str, cmd: &mut Command) -> anyhow::Result<()> {
        use std::io::{BufRead as _, BufReader};
        eprintln!("xtask: {name}");
        let mut child = cmd.stdout(std::process::Stdio::piped()).spawn()?;
        for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
            let line = line?;
            println!("{line}");
            self.count(&line);
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("{name} failed ({status})");
        }
        Ok(())
    }

    /// Add up one output line if it is a `test result:` line; returns its counts.
    fn count(&mut self, line: &str) -> Option<(u64, u64)> {
        let rest = line.strip_prefix("test result: ")?;
        let number = |word: &str| -> u64 {
            rest.split(';')
                .find_map(|part| {
                    part.trim()
                        .strip_suffix(word)?
                        .split_whitespace()
                        .last()?
                        .parse()
                        .ok()
                })
                .unwrap_or(0)
        };
        let (passed, failed) = (number(" passed"), number(" failed"));
        self.passed += passed;
        self.failed += failed;
        Some((passed, failed))
    }
}
