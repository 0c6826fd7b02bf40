//! `cargo xtask bench`: what sysfence costs, measured in one run.
//!
//! - Per-syscall cost of getppid(2), and of an openat+read+write+close mix on tmpfs,
//!   under every setup, the setups interleaved round by round so that drift on this
//!   shared machine hits all of them alike; medians, and overheads as ratios to the
//!   floor (an empty `tp_btf/sys_enter` program) measured in the same run.
//! - Scale: the cost with 1, 100 and 1,000 bound workloads, and the kernel memory of
//!   the probe's maps.
//! - Kernel map memory (`maps`): the maps' own accounting with 1, 100 and 1,000
//!   workloads bound on 1, 10 and 100 policies, measured here and computed for 64 and
//!   256 CPUs from the map definitions; per workload, and per map.
//! - nginx in a runc container under wrk (see `nginx.rs`): requests per second and p99
//!   latency, policed in enforce mode against unpoliced.
//! - The agent: time from start to programs attached, RSS with 1,000 workloads bound,
//!   and the violation event path under a flood.
//!
//! Files: `syscalls` (the per-syscall setups and workloads), `held` (a probe setup held
//! by a helper process), `maps` (kernel map memory), `nginx`, `agent` (the agent's
//! own figures), `table` (the printed summary).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow, bail};
use serde::Serialize;

use crate::packages;

mod agent;
mod held;
mod maps;
mod nginx;
mod ratios;
mod start;
mod syscalls;
mod table;

use agent::{AgentFigures, agent_figures};
use held::Held;
use syscalls::{Row, ScaleRow, Setup, Workload, measure, workload};
use table::print_table;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Rounds; every setup is measured once per round.
    #[arg(long, default_value_t = 8)]
    rounds: usize,
    /// Syscalls per measurement.
    #[arg(long, default_value_t = 1_000_000)]
    calls: u64,
    /// Write the results as JSON here (default: target/bench/results.json).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Skip the agent measurements (start time, RSS, event flood).
    #[arg(long)]
    no_agent: bool,
    /// Skip the nginx + wrk measurement.
    #[arg(long)]
    no_nginx: bool,
    /// nginx rounds; every nginx setup is measured once per round.
    #[arg(long, default_value_t = 8)]
    nginx_rounds: usize,
    /// Seconds of wrk load per nginx sample.
    #[arg(long, default_value_t = 3)]
    nginx_seconds: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 32)]
    nginx_connections: u32,
    /// Skip the container start latency (plain, wrapped, discovery with the hold).
    #[arg(long)]
    no_start: bool,
    /// Container starts per setup (at least 1).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    start_runs: u64,
    /// Only the container start latency (no syscall, nginx or agent figures).
    #[arg(long)]
    only_start: bool,
    /// Only the kernel map memory (1/100/1,000 workloads on 1/10/100 policies; about a
    /// minute).
    #[arg(long, conflicts_with = "only_start")]
    only_memory: bool,
}

#[derive(Serialize, Default)]
struct Results {
    machine: String,
    rounds: usize,
    calls: u64,
    rows: Vec<Row>,
    scale: Vec<ScaleRow>,
    map_memory_bytes: BTreeMap<u32, u64>,
    /// Kernel map memory by workloads and policies, measured and computed per CPU count.
    memory: Option<maps::MemoryReport>,
    nginx: Option<nginx::NginxFigures>,
    agent: Option<AgentFigures>,
    start: Option<start::StartFigures>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn parse_number(stdout: &[u8]) -> anyhow::Result<f64> {
    let text = String::from_utf8_lossy(stdout);
    text.lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| anyhow!("no measurement in output: {text:?}"))
}

struct Env {
    root: PathBuf,
    sysfence: PathBuf,
    /// `sf-bench-hold` (bench/src/hold.rs): holds a probe setup while a workload runs.
    hold: PathBuf,
    workload: PathBuf,
    policy: PathBuf,
    /// The same allowlist without any argument rule.
    no_rules_policy: PathBuf,
    /// The same allowlist under `action: deny`, for the deny path's setups.
    deny_policy: PathBuf,
    profile: PathBuf,
    tmpfs: PathBuf,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cpus} CPUs, kernel {}", kernel.trim())
}

/// tracefs, mounted for bpftrace if it was not; unmounted again on drop.
struct Tracefs {
    mounted_here: bool,
}

impl Tracefs {
    const PATH: &'static str = "/sys/kernel/tracing";

    fn ensure() -> anyhow::Result<Tracefs> {
        if Path::new(Self::PATH).join("events").exists() {
            return Ok(Tracefs {
                mounted_here: false,
            });
        }
        let status = Command::new("mount")
            .args(["-t", "tracefs", "tracefs", Self::PATH])
            .status()?;
        if !status.success() {
            bail!(
                "mounting tracefs at {} failed: bpftrace needs it",
                Self::PATH
            );
        }
        Ok(Tracefs { mounted_here: true })
    }
}

impl Drop for Tracefs {
    fn drop(&mut self) {
        if self.mounted_here {
            let _ = Command::new("umount").arg(Self::PATH).status();
        }
    }
}

pub fn run(root: &Path, bin: &Path, args: BenchArgs) -> anyhow::Result<()> {
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let env = Env {
        root: root.to_path_buf(),
        sysfence: bin.join("sysfence"),
        hold: bin.join("sf-bench-hold"),
        workload: bin.join("sf-bench"),
        policy: root.join("bench/getppid-policy.yaml"),
        no_rules_policy: root.join("bench/norules-policy.yaml"),
        deny_policy: root.join("bench/deny-policy.yaml"),
        profile: out_dir.join("getppid-policy.seccomp.json"),
        tmpfs: PathBuf::from("/dev/shm"),
    };
    let mut results = Results {
        machine: machine(),
        rounds: args.rounds,
        calls: args.calls,
        ..Default::default()
    };
    let json = args.json.unwrap_or_else(|| out_dir.join("results.json"));
    if args.only_memory {
        results.memory = Some(maps::measure(&env).context("kernel map memory")?);
        return write_results(&results, &json);
    }
    packages::install(&["bpftrace"])?;
    let _tracefs = Tracefs::ensure()?;
    let status = Command::new(&env.sysfence)
        .args(["policy", "export-seccomp"])
        .arg(&env.policy)
        .arg("-o")
        .arg(&env.profile)
        .status()?;
    if !status.success() {
        bail!("exporting the bench policy as a seccomp profile failed");
    }

    if !args.no_start {
        results.start =
            Some(start::run(&env, args.start_runs as usize).context("container start latency")?);
    }
    let rounds = if args.only_start { 0 } else { args.rounds };
    let mut samples: BTreeMap<(Workload, Setup), Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        eprint!("\rxtask: bench round {}/{}", round + 1, args.rounds);
        for w in Workload::ALL {
            let calls = if w == Workload::Mix {
                args.calls / 4
            } else {
                args.calls
            };
            for setup in Setup::ALL {
                let ns = measure(&env, setup, w, calls)
                    .with_context(|| format!("{:?}: {}", w, setup.label()))?;
                samples.entry((w, setup)).or_default().push(ns);
            }
        }
    }
    eprintln!();
    for w in Workload::ALL {
        if args.only_start {
            break;
        }
        let nothing = samples[&(w, Setup::Nothing)].clone();
        let floor = samples[&(w, Setup::Floor)].clone();
        let base = median(&nothing);
        for setup in Setup::ALL {
            let s = samples.remove(&(w, setup)).unwrap_or_default();
            let med = median(&s);
            let round_ratios = if setup == Setup::Nothing {
                Vec::new()
            } else {
                ratios::per_round(&nothing, &floor, &s)
            };
            results.rows.push(Row {
                workload: w,
                setup,
                median_ns: med,
                overhead_ns: med - base,
                ratio_to_floor: ratios::summary(&round_ratios),
                round_ratios,
                samples_ns: s,
            });
        }
    }

    // Scale: the cost of a syscall with 1, 100 and 1000 bound workloads.
    for n in [1u32, 100, 1000].into_iter().filter(|_| !args.only_start) {
        eprintln!("xtask: bench scale, {n} bound workloads");
        let held = Held::start(
            &env,
            &[
                "idle",
                "--policy",
                env.policy.to_str().expect("utf-8"),
                "--workloads",
                &n.to_string(),
                "--caller",
            ],
        )?;
        let caller = held
            .value("caller-cgroup")
            .ok_or_else(|| anyhow!("no caller cgroup"))?
            .to_string();
        let memory: u64 = held
            .value("map-memory")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        results.map_memory_bytes.insert(n, memory);
        let mut unpoliced = Vec::new();
        let mut policed = Vec::new();
        for _ in 0..args.rounds.min(5) {
            unpoliced.push(workload(&env, Workload::Getppid, args.calls, &[], None)?);
            policed.push(workload(
                &env,
                Workload::Getppid,
                args.calls,
                &[],
                Some(&caller),
            )?);
        }
        drop(held);
        results.scale.push(ScaleRow {
            workloads: n,
            unpoliced_median_ns: median(&unpoliced),
            policed_median_ns: median(&policed),
        });
    }

    if !args.only_start {
        results.memory = Some(maps::measure(&env).context("kernel map memory")?);
    }

    if !args.no_nginx && !args.only_start {
        results.nginx = Some(
            nginx::run(
                &env,
                nginx::NginxArgs {
                    rounds: args.nginx_rounds,
                    seconds: args.nginx_seconds,
                    connections: args.nginx_connections,
                },
            )
            .context("nginx measurements")?,
        );
    }

    if !args.no_agent && !args.only_start {
        results.agent = Some(agent_figures(&env).context("agent measurements")?);
    }

    write_results(&results, &json)
}

/// Print the summary and write the JSON.
fn write_results(results: &Results, json: &Path) -> anyhow::Result<()> {
    print_table(results);
    std::fs::write(json, serde_json::to_string_pretty(results)? + "\n")?;
    eprintln!("xtask: wrote {}", json.display());
    Ok(())
}

/// The cgroup v2 mount point (the shortest of the cgroup2 mounts).
fn cgroup_v2_root() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            left.split_whitespace().nth(4).map(PathBuf::from)
        })
        .min_by_key(|p| p.as_os_str().len())
}
