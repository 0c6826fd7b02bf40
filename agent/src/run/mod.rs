//! `sysfence run`: one command, in a fresh cgroup, under one policy.

use std::{
    ffi::OsString,
    io,
    os::{
        fd::AsRawFd as _,
        unix::process::{CommandExt as _, ExitStatusExt as _},
    },
    path::PathBuf,
    process::{Child, Command, ExitStatus},
    sync::atomic::{AtomicI32, Ordering},
    thread,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use serde::Serialize;

use crate::{
    cgroup::{self, OwnedCgroup},
    event::Violation,
    policy::{self, Mode},
    probe::{self, Probe, ProbeOptions},
};

mod sentinel;
pub mod summary;

use summary::{CountRow, ViolationRow};

pub struct RunOptions {
    pub policy: PathBuf,
    /// `--sets DIR`: where includes are looked for besides the policy's directory.
    pub sets: Option<PathBuf>,
    pub mode: Option<Mode>,
    pub json_report: Option<PathBuf>,
    pub quiet: bool,
    pub command: Vec<OsString>,
}

/// What `--json-report` holds.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub policy: String,
    pub mode: &'static str,
    pub action: String,
    pub command: Vec<String>,
    pub cgroup: String,
    pub counts: Vec<CountRow>,
    pub violations: Vec<ViolationRow>,
    pub events_dropped: u64,
    /// Events not sent because of the per-(workload, syscall) rate limit; the counts
    /// above are exact all the same.
    pub events_suppressed: u64,
}

static PENDING_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn remember_signal(sig: libc::c_int) {
    PENDING_SIGNAL.store(sig, Ordering::SeqCst);
}

/// While the command runs, SIGINT/SIGTERM/SIGHUP are passed on to it, so that sysfence
/// itself lives to tear the cgroup down. `exec` resets these handlers in the child.
fn forward_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installing an async-signal-safe handler that only stores an atomic.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = remember_signal as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

pub fn run(options: RunOptions) -> anyhow::Result<i32> {
    if options.command.is_empty() {
        bail!("no command given: `sysfence run --policy FILE -- CMD [ARGS...]`");
    }
    // First, while this process has one thread.
    let _sentinel = sentinel::Sentinel::start();
    let loaded = policy::load(
        std::slice::from_ref(&options.policy),
        options.sets.as_deref(),
    );
    for s in loaded.skipped.iter().filter(|_| !options.quiet) {
        eprintln!("sysfence: skipped {s}");
    }
    let (mut policies, warnings) = loaded.into_result()?;
    for w in &warnings {
        eprintln!("{w}");
    }
    let mut policy = match policies.len() {
        1 => policies.remove(0),
        0 => bail!(
            "{}: holds no SyscallPolicy (a SyscallSet cannot be run)",
            options.policy.display()
        ),
        n => bail!(
            "{}: holds {n} policies; `run` takes one",
            options.policy.display()
        ),
    };
    if let Some(mode) = options.mode {
        policy.mode = mode;
    }

    let mut probe = Probe::load(ProbeOptions {
        max_slots: 1,
        attach: true,
        ..ProbeOptions::default()
    })?;
    let deny = if policy.wants_deny() {
        probe
            .enable_deny()
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    } else {
        Err("not asked for".to_string())
    };
    probe.settle();
    let enforcement = policy.enforcement(deny.as_ref().map(|_| ()).map_err(String::as_str));
    if let Some(note) = &enforcement.degraded {
        eprintln!("sysfence: {note}");
    }
    let slot = 0;
    // The report counts every call, under `enforce` too (which the node agent counts
    // only for its violations).
    probe.fill_slot(slot, &enforcement.slot.counting_every_call())?;
    let mut ring = probe.take_violations()?;

    let root = cgroup::v2_root()?;
    let cg = OwnedCgroup::create(&root, &format!("sysfence/run-{}", std::process::id()))?;
    probe.bind(cg.id, slot)?;

    let mut child = spawn_in_cgroup(&cg, &options.command)?;

    let mut events: Vec<Violation> = Vec::new();
    let drain = |ring: &mut aya::maps::RingBuf<aya::maps::MapData>, events: &mut Vec<Violation>| {
        while let Some(item) = ring.next() {
            if let Some(e) = probe::decode_violation(&item) {
                if let Some((pid, level)) = crate::undo::killed_attach(&e) {
                    crate::undo::resume_stopped(
                        crate::undo::host_pids(pid, level, Some(&cg.path)),
                        format!("ptrace by pid {}", e.tgid),
                    );
                }
                events.push(Violation::from_event(&e));
            }
        }
    };
    let status = wait_forwarding(&mut child, || {
        drain(&mut ring, &mut events);
        Ok(())
    })?;
    // What the command left behind does not outlive `run`.
    cg.kill_all(Duration::from_secs(5))?;
    drain(&mut ring, &mut events);
    let counts = probe.slot_counts(slot)?;
    let stats = probe.stats()?;
    probe.unbind(cg.id)?;
    let cgroup_rel = cg.rel.clone();
    drop(cg);

    let (count_rows, violations) = summary::summarize(&enforcement.slot, &counts, &events);
    let exit_code = exit_code(&status)?;
    let signal = status.signal();
    let run_report = RunReport {
        exit_code,
        signal,
        policy: policy.name.clone(),
        mode: policy.mode.as_str(),
        action: format!("{:?}", policy.action).to_lowercase(),
        command: options
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        cgroup: cgroup_rel,
        counts: count_rows,
        violations,
        events_dropped: stats.events_dropped,
        events_suppressed: stats.events_suppressed,
    };
    if !options.quiet {
        print_summary(&run_report);
    }
    if let Some(path) = &options.json_report {
        let json = serde_json::to_string_pretty(&run_report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(exit_code)
}

/// Start `command` so that it joins `cg` before it executes: its first syscall is
/// already in the cgroup (the write that moves it is not; `execve` is).
pub fn spawn_in_cgroup(cg: &OwnedCgroup, command: &[OsString]) -> anyhow::Result<Child> {
    let Some(program) = command.first() else {
        bail!("no command given");
    };
    let procs = cg.procs_file()?;
    let procs_fd = procs.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.args(&command[1..]);
    // SAFETY: the closure only calls write(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // Join the cgroup before exec: the command's first syscall is in it.
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    forward_signals();
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", program.to_string_lossy()))?;
    drop(procs);
    Ok(child)
}

/// Wait for `child`, passing SIGINT/SIGTERM/SIGHUP on to it, and calling `tick` every
/// few milliseconds meanwhile.
pub fn wait_forwarding(
    child: &mut Child,
    mut tick: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<ExitStatus> {
    loop {
        tick()?;
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        let sig = PENDING_SIGNAL.swap(0, Ordering::SeqCst);
        if sig != 0 {
            // SAFETY: plain libc call on our own child.
            unsafe { libc::kill(child.id() as i32, sig) };
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// The status as a shell reports it: the exit code, or 128+N for signal N.
pub fn exit_code(status: &ExitStatus) -> anyhow::Result<i32> {
    match (status.code(), status.signal()) {
        (Some(code), _) => Ok(code),
        (None, Some(sig)) => Ok(128 + sig),
        (None, None) => Err(anyhow!("child ended with unknown status {status:?}")),
    }
}

fn print_summary(r: &RunReport) {
    let total: u64 = r.counts.iter().map(|c| c.count).sum();
    let how = match r.signal {
        Some(sig) => format!("was killed by signal {sig}"),
        None => format!("exited with status {}", r.exit_code),
    };
    eprintln!(
        "sysfence: `{}` {how}; policy `{}` ({}), {total} syscalls, {} distinct",
        r.command.join(" "),
        r.policy,
        r.mode,
        r.counts.len()
    );
    if r.violations.is_empty() {
        return;
    }
    let n = r.violations.len();
    let plural = if n == 1 { "" } else { "s" };
    match r.mode {
        "enforce" => eprintln!("sysfence: {n} syscall{plural} in violation:"),
        _ => eprintln!("sysfence: {n} syscall{plural} would be stopped under enforce:"),
    }
    for v in &r.violations {
        let name = crate::syscall_table::label(
            probe_common::Abi::ALL
                .into_iter()
                .find(|a| a.name() == v.abi),
            &v.syscall,
        );
        let who = match (v.pid, &v.comm) {
            (Some(pid), Some(comm)) => format!("pid {pid} ({comm})"),
            _ => String::new(),
        };
        let how = match (&v.hook, v.fallback_killed) {
            (Some(hook), _) => format!(" by LSM {hook}"),
            (None, true) => " (fallback: killed)".to_string(),
            _ => String::new(),
        };
        let args = v
            .args
            .as_deref()
            .map_or(String::new(), |a| format!("  {a}"));
        eprintln!(
            "  {name:<24} {:>8}  {}{how:<12} {who}{args}",
            v.count, v.outcome
        );
    }
    if r.events_dropped > 0 {
        eprintln!(
            "sysfence: {} violation events were dropped (counts above are exact)",
            r.events_dropped
        );
    }
}
