//! `cargo xtask fuzz`: bounded cargo-fuzz runs of the policy parser and compiler and of
//! the seccomp importer (the `fuzz/` crate, outside the workspace).
//!
//! - cargo-fuzz is installed, once, into the tools cache (`$CARGO_HOME/sysfence-tools`)
//!   next to bpf-linker; the fuzz build needs both (the agent's build.rs builds the
//!   probe: `AYA_BUILD_SKIP` leaves `include_bytes_aligned!` without its object).
//! - Each target starts from its committed seeds (`fuzz/corpus/<target>/`, read only)
//!   and a scratch corpus that grows from run to run (`target/fuzz-corpus/<target>/`),
//!   with a dictionary (`fuzz/dict/<target>.dict`).
//! - Any crash, panic, timeout (an input slower than [`INPUT_TIMEOUT_SECS`]) or
//!   out-of-memory fails the run; the input is left in `fuzz/artifacts/<target>/` and
//!   its path is printed.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::toolchain::Tools;

/// The fuzz targets, in the order they run.
pub const TARGETS: &[&str] = &["policy", "seccomp_import"];
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// An input that takes longer than this is a finding (libFuzzer writes `timeout-*`).
const INPUT_TIMEOUT_SECS: u64 = 25;

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds of fuzzing in all, split evenly over the targets (building is extra).
    #[arg(long, default_value_t = 600, value_name = "N")]
    pub seconds: u64,
    /// Fuzz only this target.
    #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub target: Option<String>,
}

/// What one target's run did.
struct Outcome {
    target: &'static str,
    runs: Option<u64>,
    seconds: f64,
    result: anyhow::Result<()>,
}

pub fn run(root: &Path, tools: &Tools, args: &FuzzArgs) -> anyhow::Result<()> {
    let targets: Vec<&'static str> = TARGETS
        .iter()
        .copied()
        .filter(|t| args.target.as_deref().is_none_or(|only| only == *t))
        .collect();
    if args.seconds == 0 {
        eprintln!("xtask: fuzz: 0 seconds: nothing to do");
        return Ok(());
    }
    let per_target = (args.seconds / targets.len() as u64).max(1);
    ensure_cargo_fuzz(tools)?;

    let started = Instant::now();
    crate::run_step(
        "cargo fuzz build (nightly, ASan, the probe through bpf-linker)",
        fuzz_command(root, tools).args(["build", "--fuzz-dir", "fuzz"]),
    )?;
    eprintln!(
        "xtask: fuzz targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let outcomes: Vec<Outcome> = targets
        .iter()
        .map(|&target| run_target(root, tools, target, per_target))
        .collect();
    eprintln!("xtask: fuzz summary ({per_target} s per target):");
    for o in &outcomes {
        let runs = o.runs.map_or_else(|| "?".to_string(), |r| r.to_string());
        let status = match &o.result {
            Ok(()) => "ok, 0 crashes".to_string(),
            Err(e) => format!("FAILED: {e:#}"),
        };
        eprintln!(
            "xtask:   {:<16} {runs:>9} executions in {:>4.0} s  {status}",
            o.target, o.seconds
        );
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.result.is_err())
        .map(|o| o.target)
        .collect();
    if !failed.is_empty() {
        bail!("fuzzing found problems in: {}", failed.join(", "));
    }
    Ok(())
}

/// `cargo fuzz` on the nightly toolchain, with the eBPF tools and cargo-fuzz on PATH.
fn fuzz_command(root: &Path, tools: &Tools) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "fuzz"])
        .current_dir(root);
    tools.apply(&mut cmd);
    cmd
}

fn ensure_cargo_fuzz(tools: &Tools) -> anyhow::Result<()> {
    let bin = tools.dir.join("bin/cargo-fuzz");
    let installed = Command::new(&bin).arg("--version").output().is_ok_and(|o| {
        o.status.success()
            && String::from_utf8_lossy(&o.stdout).trim()
                == format!("cargo-fuzz {CARGO_FUZZ_VERSION}")
    });
    if installed {
        return Ok(());
    }
    crate::run_step(
        &format!(
            "installing cargo-fuzz {CARGO_FUZZ_VERSION} into {} (once)",
            tools.dir.display()
        ),
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "install",
                "cargo-fuzz",
                "--version",
                CARGO_FUZZ_VERSION,
                "--locked",
                "--force",
            ])
            .arg("--root")
            .arg(&tools.dir),
    )
}

fn artifacts(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// libFuzzer's progress lines, and its recommended dictionary: counted, not echoed.
fn is_noise(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let progress = words.next().is_some_and(|w| w.starts_with('#'))
        && words
            .next()
            .is_some_and(|w| matches!(w, "NEW" | "REDUCE" | "pulse"));
    progress || line.starts_with("\tNEW_FUNC[") || line.contains("\" # Uses: ")
}

/// `Done 31039 runs in 31 second(s)` → 31039.
fn done_runs(line: &str) -> Option<u64> {
    line.strip_prefix("Done ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn run_target(root: &Path, tools: &Tools, target: &'static str, seconds: u64) -> Outcome {
    let started = Instant::now();
    let mut runs = None;
    let result = (|| -> anyhow::Result<()> {
        let scratch = crate::target_dir(root).join("fuzz-corpus").join(target);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let seeds = root.join("fuzz/corpus").join(target);
        let dict = root.join("fuzz/dict").join(format!("{target}.dict"));
        let artifact_dir = root.join("fuzz/artifacts").join(target);
        let before = artifacts(&artifact_dir);

        let mut cmd = fuzz_command(root, tools);
        cmd.args(["run", "--fuzz-dir", "fuzz", target])
            .arg(&scratch)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
            .arg("-print_final_stats=1");
        if dict.exists() {
            cmd.arg(format!("-dict={}", dict.display()));
        }
        eprintln!(
            "xtask: fuzz {target} for {seconds} s (seeds: {})",
            seeds.display()
        );
        let mut child = cmd
            .stderr(Stdio::piped())
            .spawn()
            .context("starting cargo fuzz run")?;
        let mut skipped = 0u64;
        for line in BufReader::new(child.stderr.take().expect("piped")).lines() {
            let line = line?;
            if let Some(n) = done_runs(&line) {
                runs = Some(n);
            } else if let Some(n) = line
                .strip_prefix("stat::number_of_executed_units:")
                .and_then(|n| n.trim().parse().ok())
            {
                runs = Some(n);
            }
            if is_noise(&line) {
                skipped += 1;
            } else {
                eprintln!("{line}");
            }
        }
        let status = child.wait()?;
        eprintln!("xtask: fuzz {target}: {skipped} progress lines not shown");
        let new: Vec<PathBuf> = artifacts(&artifact_dir)
            .into_iter()
            .filter(|a| !before.contains(a))
            .collect();
        if !status.success() || !new.is_empty() {
            let inputs: Vec<String> = new.iter().map(|p| p.display().to_string()).collect();
            bail!(
                "{target}: {status}; crashing input{}: {}; reproduce with `cargo xtask fuzz \
                 --target {target}` or `rustup run nightly cargo fuzz run --fuzz-dir fuzz \
                 {target} INPUT`",
                if inputs.len() == 1 { "" } else { "s" },
                if inputs.is_empty() {
                    "none written (see the output above)".to_string()
                } else {
                    inputs.join(", ")
                }
            );
        }
        if runs.is_none() {
            bail!("{target}: no `Done N runs` line from libFuzzer: did it run?");
        }
        Ok(())
    })();
    Outcome {
        target,
        runs,
        seconds: started.elapsed().as_secs_f64(),
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_lines() {
        assert_eq!(done_runs("Done 31039 runs in 31 second(s)"), Some(31039));
        assert_eq!(done_runs("#2 INITED cov: 1"), None);
        assert!(is_noise("#4096\tNEW    cov: 6440 ft: 12259 corp: 141/37Kb"));
        assert!(is_noise("#8192\tpulse  cov: 6440 ft: 12259 corp: 141/37Kb"));
        assert!(is_noise("\"removexattr\" # Uses: 32"));
        assert!(is_noise(
            "\tNEW_FUNC[1/4]: 0x5575f49da4b0 in <alloc::string::String"
        ));
        assert!(!is_noise("#160\tINITED cov: 6440 ft: 12259 corp: 141/37Kb"));
        assert!(!is_noise("==1234== ERROR: libFuzzer: deadly signal"));
    }
}
