//! The per-syscall cost: the setups, the workloads, and one measurement of a workload
//! under a setup.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::{Env, Held, parse_number};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Setup {
    Nothing,
    Floor,
    Unpoliced,
    PolicedMonitor,
    PolicedAudit,
    PolicedEnforce,
    PolicedNoRules,
    PolicedDeny,
    PolicedDenyRing,
    PolicedDaemon,
    PolicedDaemonHelper,
    Seccomp,
    Bpftrace,
}

impl Setup {
    pub(super) const ALL: [Setup; 13] = [
        Setup::Nothing,
        Setup::Floor,
        Setup::Unpoliced,
        Setup::PolicedMonitor,
        Setup::PolicedAudit,
        Setup::PolicedEnforce,
        Setup::PolicedNoRules,
        Setup::PolicedDeny,
        Setup::PolicedDenyRing,
        Setup::PolicedDaemon,
        Setup::PolicedDaemonHelper,
        Setup::Seccomp,
        Setup::Bpftrace,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            Setup::Nothing => "nothing attached",
            Setup::Floor => "empty tp_btf/sys_enter (the floor)",
            Setup::Unpoliced => "sysfence, caller not policed",
            Setup::PolicedMonitor => "sysfence policed, monitor",
            Setup::PolicedAudit => "sysfence policed, audit, allowed",
            Setup::PolicedEnforce => "sysfence policed, enforce, allowed",
            Setup::PolicedNoRules => "sysfence policed, enforce, no argument rules",
            Setup::PolicedDeny => "sysfence policed, deny path (+ sys_exit), allowed",
            Setup::PolicedDenyRing => "the same, the caller owns an io_uring ring",
            Setup::PolicedDaemon => "sysfence policed as the agent runs it, enforce, allowed",
            Setup::PolicedDaemonHelper => {
                "the same, the task read by the helper (kernels before 6.2)"
            }
            Setup::Seccomp => "libseccomp filter, same allowlist",
            Setup::Bpftrace => "bpftrace count per cgroup",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Workload {
    Getppid,
    /// personality(0xffffffff): allowed by the last of runtime-default's five rules.
    Personality,
    Mix,
}

impl Workload {
    pub(super) const ALL: [Workload; 3] = [Workload::Getppid, Workload::Personality, Workload::Mix];
}

impl Workload {
    pub(super) fn arg(self) -> &'static str {
        match self {
            Workload::Getppid => "getppid",
            Workload::Personality => "personality",
            Workload::Mix => "mix",
        }
    }
}

#[derive(Serialize)]
pub(super) struct Row {
    pub(super) workload: Workload,
    pub(super) setup: Setup,
    pub(super) samples_ns: Vec<f64>,
    pub(super) median_ns: f64,
    /// Median minus the median of "nothing attached".
    pub(super) overhead_ns: f64,
    /// Each round's overhead over the same round's floor overhead
    /// ([`per_round`](super::ratios::per_round)), in round order.
    pub(super) round_ratios: Vec<f64>,
    /// Their median and range.
    pub(super) ratio_to_floor: Option<super::ratios::Summary>,
}

#[derive(Serialize)]
pub(super) struct ScaleRow {
    pub(super) workloads: u32,
    pub(super) unpoliced_median_ns: f64,
    pub(super) policed_median_ns: f64,
}

/// Run the workload (optionally inside a cgroup); returns its printed number.
pub(super) fn workload(
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

pub(super) fn measure(env: &Env, setup: Setup, w: Workload, calls: u64) -> anyhow::Result<f64> {
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
        Setup::PolicedMonitor
        | Setup::PolicedAudit
        | Setup::PolicedEnforce
        | Setup::PolicedNoRules => {
            let mode = match setup {
                Setup::PolicedMonitor => "monitor",
                Setup::PolicedAudit => "audit",
                _ => "enforce",
            };
            let policy = if setup == Setup::PolicedNoRules {
                &env.no_rules_policy
            } else {
                &env.policy
            };
            let out = Command::new(&env.sysfence)
                .args(["run", "--quiet", "--mode", mode, "--policy"])
                .arg(policy)
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
        Setup::PolicedDeny | Setup::PolicedDenyRing => {
            let held = Held::start(
                env,
                &[
                    "idle",
                    "--policy",
                    env.deny_policy.to_str().expect("utf-8"),
                    "--caller",
                    "--deny-path",
                ],
            )?;
            let caller = held
                .value("caller-cgroup")
                .context("no caller cgroup")?
                .to_string();
            let ring: &[&str] = if setup == Setup::PolicedDenyRing {
                &["--ring"]
            } else {
                &[]
            };
            workload(env, w, calls, ring, Some(&caller))
        }
        Setup::PolicedDaemon | Setup::PolicedDaemonHelper => {
            // The agent's probe with the node's (enforce) policy: no count on the allowed
            // path, so the memo's hit takes the shortcut. (`sysfence run` above counts
            // every call, for its report, and never does.)
            let mut hold = vec![
                "idle",
                "--policy",
                env.policy.to_str().expect("utf-8"),
                "--caller",
            ];
            if setup == Setup::PolicedDaemonHelper {
                hold.push("--no-task-cast");
            }
            let held = Held::start(env, &hold)?;
            let caller = held
                .value("caller-cgroup")
                .context("no caller cgroup")?
                .to_string();
            workload(env, w, calls, &[], Some(&caller))
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
            // Drain its map dump so it can exit.
            std::thread::spawn(move || {
                let mut sink = String::new();
                while out.read_line(&mut sink).unwrap_or(0) > 0 {
                    sink.clear();
                }
            });
            // bpftrace prints "Attaching" before it handles SIGINT: one sent in between is
            // lost and it would run on. Ask once a second; after 30 s, SIGKILL.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                if bt.try_wait()?.is_some() {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    bt.kill()?;
                    bt.wait()?;
                    bail!("bpftrace did not stop on SIGINT within 30 s: killed");
                }
                // SAFETY: signalling the bpftrace process started above, not yet reaped.
                unsafe { libc::kill(bt.id() as i32, libc::SIGINT) };
                for _ in 0..10 {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    if bt.try_wait()?.is_some() {
                        break;
                    }
                }
            }
            ns
        }
    }
}
