//! `cargo xtask bench`: nanoseconds per getppid(2) under each setup, measured in one
//! run with the setups interleaved round by round, so drift hits all of them alike.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, anyhow, bail};
use serde::Serialize;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Rounds; every setup is measured once per round.
    #[arg(long, default_value_t = 8)]
    rounds: usize,
    /// getppid calls per measurement.
    #[arg(long, default_value_t = 2_000_000)]
    calls: u64,
    /// Also write the results as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    Nothing,
    Floor,
    Unpoliced,
    Policed,
}

impl Setup {
    const ALL: [Setup; 4] = [
        Setup::Nothing,
        Setup::Floor,
        Setup::Unpoliced,
        Setup::Policed,
    ];

    fn label(self) -> &'static str {
        match self {
            Setup::Nothing => "nothing attached",
            Setup::Floor => "empty tp_btf/sys_enter (floor)",
            Setup::Unpoliced => "sysfence, caller not policed",
            Setup::Policed => "sysfence, caller policed (enforce, allowed)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Setup::Nothing => "nothing",
            Setup::Floor => "floor",
            Setup::Unpoliced => "unpoliced",
            Setup::Policed => "policed_enforce_allowed",
        }
    }
}

#[derive(Serialize)]
struct Row {
    setup: &'static str,
    samples_ns: Vec<f64>,
    best_ns: f64,
    median_ns: f64,
    /// Median minus the median of "nothing attached".
    overhead_ns: f64,
    /// overhead / the floor's overhead.
    ratio_to_floor: Option<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn parse_ns(stdout: &[u8]) -> anyhow::Result<f64> {
    let text = String::from_utf8_lossy(stdout);
    text.lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| anyhow!("no measurement in output: {text:?}"))
}

fn measure(setup: Setup, bin: &Path, policy: &Path, calls: u64) -> anyhow::Result<f64> {
    let sysfence = bin.join("sysfence");
    let workload = bin.join("sf-syscalls");
    let calls = calls.to_string();
    match setup {
        Setup::Nothing => {
            let out = Command::new(&workload)
                .args(["bench-getppid", &calls])
                .output()?;
            parse_ns(&out.stdout)
        }
        Setup::Policed => {
            let out = Command::new(&sysfence)
                .args(["run", "--quiet", "--mode", "enforce", "--policy"])
                .arg(policy)
                .arg("--")
                .arg(&workload)
                .args(["bench-getppid", &calls])
                .output()?;
            if !out.status.success() {
                bail!(
                    "policed run failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            parse_ns(&out.stdout)
        }
        Setup::Floor | Setup::Unpoliced => {
            let mut hold = Command::new(&sysfence);
            hold.arg("bench-hold");
            if setup == Setup::Floor {
                hold.arg("floor");
            } else {
                hold.arg("idle").arg("--policy").arg(policy);
            }
            let mut child = hold.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
            if line.trim() != "ready" {
                let _ = child.wait();
                bail!("{} did not start", setup.label());
            }
            let out = Command::new(&workload)
                .args(["bench-getppid", &calls])
                .output();
            drop(child.stdin.take());
            child.wait()?;
            parse_ns(&out?.stdout)
        }
    }
}

pub fn run(root: &Path, bin: &Path, args: BenchArgs) -> anyhow::Result<()> {
    let policy = root.join("bench/getppid-policy.yaml");
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); Setup::ALL.len()];
    for round in 0..args.rounds {
        eprint!("\rxtask: bench round {}/{}", round + 1, args.rounds);
        for (i, setup) in Setup::ALL.into_iter().enumerate() {
            let ns = measure(setup, bin, &policy, args.calls).with_context(|| setup.label())?;
            samples[i].push(ns);
        }
    }
    eprintln!();
    let base = median(&samples[0]);
    let floor_overhead = median(&samples[1]) - base;
    let rows: Vec<Row> = Setup::ALL
        .into_iter()
        .zip(samples)
        .map(|(setup, s)| {
            let med = median(&s);
            let overhead = med - base;
            Row {
                setup: setup.key(),
                best_ns: s.iter().copied().fold(f64::INFINITY, f64::min),
                median_ns: med,
                overhead_ns: overhead,
                ratio_to_floor: (setup != Setup::Nothing && floor_overhead > 0.0)
                    .then(|| overhead / floor_overhead),
                samples_ns: s,
            }
        })
        .collect();
    println!(
        "getppid(2), {} calls per sample, {} rounds interleaved, ns per call",
        args.calls, args.rounds
    );
    println!(
        "{:<46} {:>8} {:>8} {:>10} {:>12}",
        "setup", "best", "median", "overhead", "x floor"
    );
    for (setup, r) in Setup::ALL.into_iter().zip(&rows) {
        println!(
            "{:<46} {:>8.1} {:>8.1} {:>10.1} {:>12}",
            setup.label(),
            r.best_ns,
            r.median_ns,
            r.overhead_ns,
            r.ratio_to_floor
                .map_or("-".to_string(), |x| format!("{x:.2}"))
        );
    }
    println!("overhead = median - median(nothing attached); x floor = overhead / floor overhead");
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows)? + "\n")?;
        eprintln!("xtask: wrote {}", path.display());
    }
    Ok(())
}
