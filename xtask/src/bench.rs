//! `cargo xtask bench`: what sysfence costs, measured in one run.
//!
//! - Per-syscall cost of getppid(2), and of an openat+read+write+close mix on tmpfs,
//!   under every setup, the setups interleaved round by round so that drift on this
//!   shared machine hits all of them alike; medians, and overheads as ratios to the
//!   floor (an empty `tp_btf/sys_enter` program) measured in the same run.
//! - Scale: the cost with 1, 100 and 1,000 bound workloads, and the kernel memory of
//!   the probe's maps.
//! - nginx in a runc container under wrk (see `nginx.rs`): requests per second and p99
//!   latency, policed in enforce mode against unpoliced.
//! - Kernel map memory per bound workload, from the maps' own accounting.
//! - The agent: time from start to programs attached, RSS with 1,000 workloads bound,
//!   and the violation event path under a flood.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use serde::Serialize;

use crate::packages;

mod nginx;

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
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
enum Setup {
    Nothing,
    Floor,
    Unpoliced,
    PolicedMonitor,
    PolicedAudit,
    PolicedEnforce,
    Seccomp,
    Bpftrace,
}

impl Setup {
    const ALL: [Setup; 8] = [
        Setup::Nothing,
        Setup::Floor,
        Setup::Unpoliced,
        Setup::PolicedMonitor,
        Setup::PolicedAudit,
        Setup::PolicedEnforce,
        Setup::Seccomp,
        Setup::Bpftrace,
    ];

    fn label(self) -> &'static str {
        match self {
            Setup::Nothing => "nothing attached",
            Setup::Floor => "empty tp_btf/sys_enter (the floor)",
            Setup::Unpoliced => "sysfence, caller not policed",
            Setup::PolicedMonitor => "sysfence policed, monitor",
            Setup::PolicedAudit => "sysfence policed, audit, allowed",
            Setup::PolicedEnforce => "sysfence policed, enforce, allowed",
            Setup::Seccomp => "libseccomp filter, same allowlist",
            Setup::Bpftrace => "bpftrace count per cgroup",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
enum Workload {
    Getppid,
    Mix,
}

impl Workload {
    fn arg(self) -> &'static str {
        match self {
            Workload::Getppid => "getppid",
            Workload::Mix => "mix",
        }
    }
}

#[derive(Serialize)]
struct Row {
    workload: Workload,
    setup: Setup,
    samples_ns: Vec<f64>,
    median_ns: f64,
    /// Median minus the median of "nothing attached".
    overhead_ns: f64,
    /// overhead / the floor's overhead.
    ratio_to_floor: Option<f64>,
}

#[derive(Serialize, Default)]
struct Results {
    machine: String,
    rounds: usize,
    calls: u64,
    rows: Vec<Row>,
    scale: Vec<ScaleRow>,
    map_memory_bytes: BTreeMap<u32, u64>,
    /// The probe's maps as the kernel reports them, with 1,000 workloads bound.
    maps: Vec<MapLine>,
    memory_per_workload: Option<MemoryPerWorkload>,
    nginx: Option<nginx::NginxFigures>,
    agent: Option<AgentFigures>,
}

/// One map of the probe, from `bpf_map_info` and its fdinfo (`memlock` is the kernel's
/// own accounting of the map's memory).
#[derive(Serialize, Clone)]
struct MapLine {
    name: String,
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    memlock: u64,
}

impl MapLine {
    fn parse(line: &str) -> Option<MapLine> {
        let mut f = line.strip_prefix("map ")?.split_whitespace();
        Some(MapLine {
            name: f.next()?.to_string(),
            map_type: f.next()?.parse().ok()?,
            key_size: f.next()?.parse().ok()?,
            value_size: f.next()?.parse().ok()?,
            max_entries: f.next()?.parse().ok()?,
            memlock: f.next()?.parse().ok()?,
        })
    }

    fn per_entry(&self) -> f64 {
        self.memlock as f64 / f64::from(self.max_entries.max(1))
    }
}

/// Kernel map memory per bound workload, from the maps' own accounting: a binding
/// costs one `WORKLOADS` entry and one `CGROUP_CACHE` entry, and its policy's slot (one
/// `POLICIES` entry and the slot's per-CPU `COUNTS`) is shared by every workload bound
/// to that policy.
#[derive(Serialize)]
struct MemoryPerWorkload {
    workloads_entry_bytes: f64,
    cache_entry_bytes: f64,
    /// One policy slot: its POLICIES entry and its COUNTS (per CPU).
    slot_bytes: f64,
    possible_cpus: u32,
    /// A workload whose policy no other workload shares.
    own_policy_bytes: f64,
    /// 1,000 workloads sharing one policy (the bench's scale setup).
    shared_by_1000_bytes: f64,
    /// Everything else, preallocated once whatever is bound (ring buffer, deny marks,
    /// rate limits, the WORKLOADS and cache capacity not in use, ...).
    total_bytes: u64,
}

fn possible_cpus() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .map(|s| {
            s.trim()
                .split(',')
                .filter_map(|r| {
                    let (a, b) = r.split_once('-').unwrap_or((r, r));
                    Some(b.parse::<u32>().ok()? - a.parse::<u32>().ok()? + 1)
                })
                .sum()
        })
        .unwrap_or(0)
}

fn memory_per_workload(maps: &[MapLine]) -> Option<MemoryPerWorkload> {
    let find = |n: &str| maps.iter().find(|m| m.name == n);
    let workloads = find("WORKLOADS")?;
    let cache = find("CGROUP_CACHE")?;
    let policies = find("POLICIES")?;
    let counts = find("COUNTS")?;
    let slots = f64::from(policies.max_entries.max(1));
    let slot_bytes = policies.per_entry() + counts.memlock as f64 / slots;
    let binding = workloads.per_entry() + cache.per_entry();
    Some(MemoryPerWorkload {
        workloads_entry_bytes: workloads.per_entry(),
        cache_entry_bytes: cache.per_entry(),
        slot_bytes,
        possible_cpus: possible_cpus(),
        own_policy_bytes: binding + slot_bytes,
        shared_by_1000_bytes: binding + slot_bytes / 1000.0,
        total_bytes: maps.iter().map(|m| m.memlock).sum(),
    })
}

#[derive(Serialize)]
struct ScaleRow {
    workloads: u32,
    unpoliced_median_ns: f64,
    policed_median_ns: f64,
}

#[derive(Serialize)]
struct AgentFigures {
    start_to_attached_ms: f64,
    rss_kib_1000_workloads: u64,
    bind_1000_workloads_ms: f64,
    flood_calls: u64,
    flood_calls_per_sec: f64,
    flood_events_logged: u64,
    flood_events_dropped: u64,
    flood_agent_cpu_percent: f64,
    flood_agent_rss_kib: u64,
    /// Policy file renamed into place to the reload's log line, median.
    reload_end_to_end_us: f64,
    /// The agent's own figure: first inotify event to the last map write, median.
    reload_agent_us: f64,
    reload_count: usize,
    /// A change of the policy bound to 1,000 workloads.
    reload_1000_rebound: u64,
    reload_1000_us: f64,
}

/// Policy changes timed by `agent_figures`.
const RELOADS: usize = 21;

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
    workload: PathBuf,
    policy: PathBuf,
    profile: PathBuf,
    tmpfs: PathBuf,
}

/// A `sysfence bench-hold` setup, released when dropped (or by [`Held::finish`]).
struct Held {
    child: Child,
    out: Option<BufReader<std::process::ChildStdout>>,
    lines: Vec<String>,
}

impl Held {
    fn start(env: &Env, args: &[&str]) -> anyhow::Result<Held> {
        let mut child = Command::new(&env.sysfence)
            .arg("bench-hold")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut lines = Vec::new();
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        loop {
            let mut line = String::new();
            if out.read_line(&mut line)? == 0 {
                let _ = child.wait();
                bail!("bench-hold {} did not start", args.join(" "));
            }
            let line = line.trim().to_string();
            if line == "ready" {
                break;
            }
            lines.push(line);
        }
        Ok(Held {
            child,
            out: Some(out),
            lines,
        })
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
    }

    /// Release the setup; the lines it printed on the way out (the slot's counts).
    fn finish(mut self) -> anyhow::Result<Vec<String>> {
        drop(self.child.stdin.take());
        let mut lines = Vec::new();
        if let Some(out) = self.out.take() {
            for line in out.lines() {
                lines.push(line?.trim().to_string());
            }
        }
        let status = self.child.wait()?;
        if !status.success() {
            bail!("bench-hold failed on release ({status})");
        }
        Ok(lines)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        // Drain what it prints on the way out, so that it exits cleanly.
        if let Some(out) = self.out.take() {
            for _ in out.lines().map_while(Result::ok) {}
        }
        let _ = self.child.wait();
    }
}

/// Run the workload (optionally inside a cgroup); returns its printed number.
fn workload(
    env: &Env,
    w: Workload,
    calls: u64,
    extra: &[&str],
    cgroup: Option<&str>,
) -> anyhow::Result<f64> {
    let calls = calls.to_string();
    let out = match cgroup {
        None => Command::new(&env.workload)
            .args([w.arg(), &calls])
            .args(extra)
            .env("SF_BENCH_TMPFS", &env.tmpfs)
            .output()?,
        Some(cg) => Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("echo $$ > {cg}/cgroup.procs && exec \"$0\" \"$@\""))
            .arg(&env.workload)
            .args([w.arg(), &calls])
            .args(extra)
            .env("SF_BENCH_TMPFS", &env.tmpfs)
            .output()?,
    };
    if !out.status.success() {
        bail!(
            "workload failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_number(&out.stdout)
}

fn measure(env: &Env, setup: Setup, w: Workload, calls: u64) -> anyhow::Result<f64> {
    match setup {
        Setup::Nothing => workload(env, w, calls, &[], None),
        Setup::Seccomp => workload(
            env,
            w,
            calls,
            &["--seccomp", env.profile.to_str().expect("utf-8")],
            None,
        ),
        Setup::Floor => {
            let _held = Held::start(env, &["floor"])?;
            workload(env, w, calls, &[], None)
        }
        Setup::Unpoliced => {
            let _held = Held::start(
                env,
                &["idle", "--policy", env.policy.to_str().expect("utf-8")],
            )?;
            workload(env, w, calls, &[], None)
        }
        Setup::PolicedMonitor | Setup::PolicedAudit | Setup::PolicedEnforce => {
            let mode = match setup {
                Setup::PolicedMonitor => "monitor",
                Setup::PolicedAudit => "audit",
                _ => "enforce",
            };
            let out = Command::new(&env.sysfence)
                .args(["run", "--quiet", "--mode", mode, "--policy"])
                .arg(&env.policy)
                .arg("--")
                .arg(&env.workload)
                .args([w.arg(), &calls.to_string()])
                .env("SF_BENCH_TMPFS", &env.tmpfs)
                .output()?;
            if !out.status.success() {
                bail!(
                    "policed run failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            parse_number(&out.stdout)
        }
        Setup::Bpftrace => {
            let mut bt = Command::new("bpftrace")
                .env("BPFTRACE_NO_USER_SYMBOLS", "1")
                .args([
                    "-e",
                    "tracepoint:raw_syscalls:sys_enter { @[cgroup, args->id] = count(); }",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting bpftrace")?;
            let mut out = BufReader::new(bt.stdout.take().expect("piped"));
            let mut line = String::new();
            out.read_line(&mut line)?;
            if !line.contains("Attaching") {
                let _ = bt.kill();
                let _ = bt.wait();
                bail!("bpftrace did not attach: {line:?}");
            }
            let ns = workload(env, w, calls, &[], None);
            // SAFETY: signalling the bpftrace process started above.
            unsafe { libc::kill(bt.id() as i32, libc::SIGINT) };
            // Drain its map dump so it can exit.
            std::thread::spawn(move || {
                let mut sink = String::new();
                while out.read_line(&mut sink).unwrap_or(0) > 0 {
                    sink.clear();
                }
            });
            bt.wait()?;
            ns
        }
    }
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
    packages::install(&["bpftrace"])?;
    let _tracefs = Tracefs::ensure()?;
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let env = Env {
        root: root.to_path_buf(),
        sysfence: bin.join("sysfence"),
        workload: bin.join("sf-bench"),
        policy: root.join("bench/getppid-policy.yaml"),
        profile: out_dir.join("getppid-policy.seccomp.json"),
        tmpfs: PathBuf::from("/dev/shm"),
    };
    let status = Command::new(&env.sysfence)
        .args(["policy", "export-seccomp"])
        .arg(&env.policy)
        .arg("-o")
        .arg(&env.profile)
        .status()?;
    if !status.success() {
        bail!("exporting the bench policy as a seccomp profile failed");
    }

    let mut results = Results {
        machine: machine(),
        rounds: args.rounds,
        calls: args.calls,
        ..Default::default()
    };
    let mut samples: BTreeMap<(Workload, Setup), Vec<f64>> = BTreeMap::new();
    for round in 0..args.rounds {
        eprint!("\rxtask: bench round {}/{}", round + 1, args.rounds);
        for w in [Workload::Getppid, Workload::Mix] {
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
    for w in [Workload::Getppid, Workload::Mix] {
        let base = median(&samples[&(w, Setup::Nothing)]);
        let floor = median(&samples[&(w, Setup::Floor)]) - base;
        for setup in Setup::ALL {
            let s = samples.remove(&(w, setup)).unwrap_or_default();
            let med = median(&s);
            results.rows.push(Row {
                workload: w,
                setup,
                median_ns: med,
                overhead_ns: med - base,
                ratio_to_floor: (setup != Setup::Nothing && floor > 0.0)
                    .then(|| (med - base) / floor),
                samples_ns: s,
            });
        }
    }

    // Scale: the cost of a syscall with 1, 100 and 1000 bound workloads.
    for n in [1u32, 100, 1000] {
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
        if n == 1000 {
            results.maps = held
                .lines
                .iter()
                .filter_map(|l| MapLine::parse(l))
                .collect();
            results.memory_per_workload = memory_per_workload(&results.maps);
        }
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

    if !args.no_nginx {
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

    if !args.no_agent {
        results.agent = Some(agent_figures(&env).context("agent measurements")?);
    }

    print_table(&results);
    let json = args.json.unwrap_or_else(|| out_dir.join("results.json"));
    std::fs::write(&json, serde_json::to_string_pretty(&results)? + "\n")?;
    eprintln!("xtask: wrote {}", json.display());
    Ok(())
}

fn print_table(r: &Results) {
    println!("machine: {}", r.machine);
    println!(
        "{} rounds interleaved; medians; overhead = median - median(nothing attached) of the same run",
        r.rounds
    );
    for w in [Workload::Getppid, Workload::Mix] {
        println!();
        println!(
            "{} (ns per syscall)",
            match w {
                Workload::Getppid => format!("getppid(2), {} calls per sample", r.calls),
                Workload::Mix => format!(
                    "openat+read+write+close on tmpfs, {} rounds per sample",
                    r.calls / 4
                ),
            }
        );
        println!("| setup | median | overhead | x floor |");
        println!("| --- | ---: | ---: | ---: |");
        for row in r.rows.iter().filter(|row| row.workload == w) {
            println!(
                "| {} | {:.1} | {:.1} | {} |",
                row.setup.label(),
                row.median_ns,
                row.overhead_ns,
                row.ratio_to_floor
                    .map_or("-".to_string(), |x| format!("{x:.2}"))
            );
        }
    }
    println!();
    println!("scale: getppid ns per call with N workloads bound");
    println!("| workloads bound | caller not policed | caller policed | probe map memory |");
    println!("| ---: | ---: | ---: | ---: |");
    for s in &r.scale {
        println!(
            "| {} | {:.1} | {:.1} | {} KiB |",
            s.workloads,
            s.unpoliced_median_ns,
            s.policed_median_ns,
            r.map_memory_bytes.get(&s.workloads).copied().unwrap_or(0) / 1024
        );
    }
    if let Some(m) = &r.memory_per_workload {
        println!();
        println!(
            "kernel map memory per bound workload (the maps' memlock / max_entries; {} possible CPUs)",
            m.possible_cpus
        );
        println!("| item | bytes |");
        println!("| --- | ---: |");
        println!("| WORKLOADS entry | {:.0} |", m.workloads_entry_bytes);
        println!("| CGROUP_CACHE entry | {:.0} |", m.cache_entry_bytes);
        println!(
            "| one policy slot (POLICIES entry + per-CPU COUNTS) | {:.0} |",
            m.slot_bytes
        );
        println!(
            "| per workload, policy not shared | {:.0} |",
            m.own_policy_bytes
        );
        println!(
            "| per workload, 1,000 sharing one policy | {:.0} |",
            m.shared_by_1000_bytes
        );
        println!(
            "| all maps, preallocated (does not grow) | {} |",
            m.total_bytes
        );
        println!("maps: name type key value max_entries memlock");
        for map in &r.maps {
            println!(
                "  {} {} {} {} {} {}",
                map.name, map.map_type, map.key_size, map.value_size, map.max_entries, map.memlock
            );
        }
    }
    if let Some(n) = &r.nginx {
        println!();
        println!(
            "nginx in a runc container ({}, 1 worker, a {}-byte file), {} on loopback, {} rounds interleaved; medians",
            n.nginx_version, 15, n.wrk, n.rounds
        );
        println!("| setup | requests/s | p99 latency | nginx CPU per request |");
        println!("| --- | ---: | ---: | ---: |");
        for row in &n.rows {
            println!(
                "| {} | {:.0} | {:.0} us | {:.2} us |",
                row.setup.label(),
                row.rps_median,
                row.p99_us_median,
                row.cpu_us_per_request_median
            );
        }
        println!(
            "policed vs unpoliced: throughput loss {:.2}%; p99 x{:.2}; nginx CPU per request {:+.2}%; {:.1} syscalls per request",
            n.throughput_loss_percent,
            n.p99_ratio,
            n.cpu_per_request_increase_percent,
            n.syscalls_per_request
        );
        println!(
            "policy: runtime-default + {} learned ({}); {} syscalls policed, {} violations",
            n.learned_beyond_runtime_default.len(),
            n.learned_beyond_runtime_default.join(", "),
            n.policed_syscalls,
            n.policed_violations
        );
    }
    if let Some(a) = &r.agent {
        println!();
        println!("agent");
        println!("| figure | value |");
        println!("| --- | ---: |");
        println!(
            "| start to programs attached | {:.0} ms |",
            a.start_to_attached_ms
        );
        println!(
            "| 1,000 cgroups created to all bound | {:.0} ms |",
            a.bind_1000_workloads_ms
        );
        println!(
            "| RSS with 1,000 workloads bound | {} KiB |",
            a.rss_kib_1000_workloads
        );
        println!(
            "| flood: denied syscalls (audit) | {} at {:.0}/s |",
            a.flood_calls, a.flood_calls_per_sec
        );
        println!(
            "| flood: events logged / dropped (counted) | {} / {} |",
            a.flood_events_logged, a.flood_events_dropped
        );
        println!(
            "| flood: agent CPU, RSS | {:.0}% of one core, {} KiB |",
            a.flood_agent_cpu_percent, a.flood_agent_rss_kib
        );
        println!(
            "| policy change to maps written: file renamed in to the reload logged (median of {}) | {:.1} ms |",
            a.reload_count,
            a.reload_end_to_end_us / 1e3
        );
        println!(
            "| policy change to maps written: the agent's own figure, inotify event to last map write | {:.1} ms |",
            a.reload_agent_us / 1e3
        );
        println!(
            "| change of the policy of 1,000 workloads: rebound, inotify event to last map write | {} in {:.1} ms |",
            a.reload_1000_rebound,
            a.reload_1000_us / 1e3
        );
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// The agent, with its stdout lines counted in the background. It pins its probe and
/// listens in places of its own; the pins are removed when it is dropped.
struct AgentRun {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    sysfence: PathBuf,
    pin_path: PathBuf,
}

impl AgentRun {
    fn start(env: &Env, policies: &Path) -> anyhow::Result<AgentRun> {
        let pin_path = PathBuf::from(format!("/sys/fs/bpf/sysfence-bench-{}", std::process::id()));
        let run = policies.with_extension("run");
        std::fs::create_dir_all(&run)?;
        let mut child = Command::new(&env.sysfence)
            .args(["agent", "--no-cri", "--rescan-every", "1", "--policies"])
            .arg(policies)
            .arg("--pin-path")
            .arg(&pin_path)
            .arg("--api-socket")
            .arg(run.join("api.sock"))
            .arg("--runtime-socket")
            .arg(run.join("runtime.sock"))
            .env("SYSFENCE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let out = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().expect("lock").push(l);
            }
        });
        Ok(AgentRun {
            child,
            lines,
            sysfence: env.sysfence.clone(),
            pin_path,
        })
    }

    /// The JSON lines holding `needle`.
    fn json_lines(&self, needle: &str) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .filter(|l| l.contains(needle))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn count(&self, needle: &str) -> u64 {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .filter(|l| l.contains(needle))
            .count() as u64
    }

    fn wait_for(&self, needle: &str, n: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.count(needle) < n {
            if Instant::now() > deadline {
                bail!(
                    "agent logged {} of {n} `{needle}` lines",
                    self.count(needle)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    fn stop(mut self) -> Vec<String> {
        // SAFETY: signalling the agent started above.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        self.lines.lock().expect("lock").clone()
    }
}

impl Drop for AgentRun {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = Command::new(&self.sysfence)
            .args(["agent", "--uninstall", "--pin-path"])
            .arg(&self.pin_path)
            .output();
    }
}

fn write_policy(
    dir: &Path,
    name: &str,
    selector: &str,
    mode: &str,
    deny: &str,
) -> anyhow::Result<()> {
    let mut f = std::fs::File::create(dir.join(format!("{name}.yaml")))?;
    write!(
        f,
        "apiVersion: sysfence.dev/v1\nkind: SyscallPolicy\nmetadata:\n  name: {name}\nspec:\n  selector:\n    cgroupPath: \"{selector}\"\n  mode: {mode}\n  include: [runtime-default]\n  deny: [{deny}]\n"
    )?;
    Ok(())
}

fn agent_figures(env: &Env) -> anyhow::Result<AgentFigures> {
    let cg_root = cgroup_v2_root().ok_or_else(|| anyhow!("no cgroup v2 hierarchy mounted"))?;
    let base = cg_root.join(format!("sysfence-bench-{}", std::process::id()));
    let policies = env
        .root
        .join(format!("target/bench/policies-{}", std::process::id()));
    std::fs::create_dir_all(&policies)?;
    let name = base
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    write_policy(
        &policies,
        "bench-many",
        &format!("{name}/w*"),
        "enforce",
        "mount",
    )?;
    write_policy(
        &policies,
        "bench-flood",
        &format!("{name}/flood"),
        "audit",
        "getppid",
    )?;
    std::fs::create_dir_all(base.join("flood"))?;
    let cleanup = || {
        if let Ok(entries) = std::fs::read_dir(&base) {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir(e.path());
            }
        }
        let _ = std::fs::remove_dir(&base);
        let _ = std::fs::remove_dir_all(&policies);
    };
    let result = (|| -> anyhow::Result<AgentFigures> {
        let started = Instant::now();
        let agent = AgentRun::start(env, &policies)?;
        agent.wait_for("\"started\"", 1, Duration::from_secs(30))?;
        let start_to_attached_ms = started.elapsed().as_secs_f64() * 1e3;

        let t = Instant::now();
        for i in 0..1000 {
            std::fs::create_dir(base.join(format!("w{i}")))?;
        }
        // `flood` is bound at start; the 1000 come on top.
        agent.wait_for("\"bound\"", 1001, Duration::from_secs(60))?;
        let bind_1000_workloads_ms = t.elapsed().as_secs_f64() * 1e3;
        let pid = agent.child.id();
        let rss_kib_1000_workloads = rss_kib(pid);

        let calls: u64 = 1_000_000;
        let ticks0 = cpu_ticks(pid);
        let t = Instant::now();
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec \"$0\" loop-denied {calls}",
                base.join("flood").display()
            ))
            .arg(&env.workload)
            .output()?;
        let flood_calls_per_sec = parse_number(&out.stdout)?;
        // Let the agent drain what is in the ring buffer.
        std::thread::sleep(Duration::from_millis(500));
        let elapsed = t.elapsed().as_secs_f64();
        let ticks = cpu_ticks(pid) - ticks0;
        // SAFETY: sysconf is always safe.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let flood_agent_cpu_percent = ticks as f64 / hz / elapsed * 100.0;
        let flood_agent_rss_kib = rss_kib(pid);

        // Policy change to enforcement: the flood policy's deny list flips (`uname` is in
        // runtime-default, so each version is new content:
        // a fresh slot, its workload switched), written beside the directory and renamed
        // in, as kubelet and editors do. End to end is from the rename to the log line
        // (polled every 0.2 ms); the agent's own figure runs from the inotify event to
        // the last map write.
        let staging = policies.with_extension("staging");
        std::fs::create_dir_all(&staging)?;
        let mut end_to_end_us = Vec::new();
        for i in 0..RELOADS {
            let deny = if i % 2 == 0 {
                "getppid, uname"
            } else {
                "getppid"
            };
            write_policy(
                &staging,
                "bench-flood",
                &format!("{name}/flood"),
                "audit",
                deny,
            )?;
            let before = agent.count("\"policies_reloaded\"");
            let t = Instant::now();
            std::fs::rename(
                staging.join("bench-flood.yaml"),
                policies.join("bench-flood.yaml"),
            )?;
            let deadline = t + Duration::from_secs(10);
            while agent.count("\"policies_reloaded\"") <= before {
                if Instant::now() > deadline {
                    bail!("reload {i} never logged");
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            end_to_end_us.push(t.elapsed().as_secs_f64() * 1e6);
            // One change at a time, as people and kubelet make them: the agent zeroes
            // the slots it freed once their quarantine ends (250 ms), off the reload path.
            std::thread::sleep(Duration::from_millis(400));
        }
        let reloads = agent.json_lines("\"policies_reloaded\"");
        if reloads.iter().any(|v| v["result"] != "applied") {
            bail!("a policy change was not applied: {reloads:?}");
        }
        let agent_us: Vec<f64> = reloads
            .iter()
            .filter(|v| v["result"] == "applied")
            .filter_map(|v| v["change_to_applied_us"].as_f64())
            .collect();
        // The 1,000-workload policy changed: 1,000 bindings switched.
        write_policy(
            &staging,
            "bench-many",
            &format!("{name}/w*"),
            "enforce",
            "mount, uname",
        )?;
        let before = agent.count("\"policies_reloaded\"");
        std::fs::rename(
            staging.join("bench-many.yaml"),
            policies.join("bench-many.yaml"),
        )?;
        agent.wait_for("\"policies_reloaded\"", before + 1, Duration::from_secs(30))?;
        let many = agent.json_lines("\"policies_reloaded\"");
        let many = many.last().expect("one reload");
        let reload_1000_rebound = many["rebound"].as_u64().unwrap_or(0);
        let reload_1000_us = many["change_to_applied_us"].as_f64().unwrap_or(f64::NAN);
        let _ = std::fs::remove_dir_all(&staging);
        let lines = agent.stop();
        let flood_events_logged =
            lines.iter().filter(|l| l.contains("\"violation\"")).count() as u64;
        let flood_events_dropped = lines
            .iter()
            .find(|l| l.contains("\"stopping\""))
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .and_then(|v| v["events_dropped"].as_u64())
            .unwrap_or(0);
        Ok(AgentFigures {
            start_to_attached_ms,
            rss_kib_1000_workloads,
            bind_1000_workloads_ms,
            flood_calls: calls,
            flood_calls_per_sec,
            flood_events_logged,
            flood_events_dropped,
            flood_agent_cpu_percent,
            flood_agent_rss_kib,
            reload_end_to_end_us: median(&end_to_end_us),
            reload_agent_us: median(&agent_us),
            reload_count: agent_us.len(),
            reload_1000_rebound,
            reload_1000_us,
        })
    })();
    cleanup();
    result
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
