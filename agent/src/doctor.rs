//! `sysfence doctor`: what this kernel lets sysfence do, and which syscalls it can
//! prevent (not merely kill after the fact).

use std::{collections::BTreeMap, fs, io::Read as _, path::Path};

use serde::{Deserialize, Serialize};

use crate::{cgroup, probe};

/// One capability of the running kernel.
#[derive(Debug, Serialize)]
pub struct Capability {
    pub name: &'static str,
    pub state: State,
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Yes,
    No,
    Unknown,
}

/// Per-syscall preventability measured on one kernel (committed data, see
/// `policies/preventability/`).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Preventability {
    /// `uname -r` of the measured kernel.
    pub kernel: String,
    /// How the table was made.
    pub measured_with: String,
    /// syscall → outcome under `action: deny` (`denied` or `not-preventable`), and the
    /// hook that denied it.
    pub syscalls: BTreeMap<String, Measured>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Measured {
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
}

/// The measured tables shipped in the binary (a JSON list of [`Preventability`]).
const MEASURED_JSON: &str = include_str!("../../policies/preventability/kernels.json");

/// Every shipped table. The file is part of the binary: failing to parse is a bug.
pub fn measured() -> Vec<Preventability> {
    serde_json::from_str(MEASURED_JSON).expect("policies/preventability/kernels.json parses")
}

/// `major.minor` of a kernel release string.
pub fn major_minor(release: &str) -> Option<String> {
    let mut parts = release.split(['.', '-']);
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    Some(format!("{major}.{minor}"))
}

/// The shipped table for a kernel release, if one was measured for its `major.minor`.
pub fn table_for(release: &str) -> Option<Preventability> {
    let mm = major_minor(release)?;
    measured()
        .into_iter()
        .find(|t| major_minor(&t.kernel).as_deref() == Some(mm.as_str()))
}

fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The kernel's build configuration, from /proc/config.gz or /boot/config-RELEASE.
fn kernel_config(release: &str) -> Option<String> {
    if let Ok(text) = fs::read_to_string(format!("/boot/config-{release}")) {
        return Some(text);
    }
    let file = fs::File::open("/proc/config.gz").ok()?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

fn config_flag(config: Option<&str>, flag: &str) -> Option<bool> {
    let config = config?;
    Some(config.lines().any(|l| l == format!("{flag}=y")))
}

fn cmdline() -> String {
    fs::read_to_string("/proc/cmdline").unwrap_or_default()
}

/// Probe every capability sysfence cares about. Loading programs needs root; without
/// it those rows say `unknown`.
pub fn capabilities() -> Vec<Capability> {
    let release = kernel_release();
    let config = kernel_config(&release);
    let config = config.as_deref();
    let cmdline = cmdline();
    let mut rows = Vec::new();
    let mut row = |name, state, detail: String| {
        rows.push(Capability {
            name,
            state,
            detail,
        })
    };

    row("kernel", State::Yes, release.clone());
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    row(
        "BTF",
        if btf { State::Yes } else { State::No },
        if btf {
            "/sys/kernel/btf/vmlinux".into()
        } else {
            "missing: sysfence needs CONFIG_DEBUG_INFO_BTF".into()
        },
    );

    // Loading the probe tells whether tp_btf programs and the helpers it uses verify.
    let loaded = probe::Probe::load(probe::ProbeOptions {
        max_slots: 1,
        attach: true,
        ..probe::ProbeOptions::default()
    });
    match &loaded {
        Ok(_) => row(
            "tp_btf sys_enter",
            State::Yes,
            "the probe loads and attaches to raw_syscalls:sys_enter".into(),
        ),
        Err(e) => row("tp_btf sys_enter", State::Unknown, format!("{e:#}")),
    }
    row(
        "bpf_send_signal",
        if loaded.is_ok() {
            State::Yes
        } else {
            State::Unknown
        },
        "SIGKILL from sys_enter: the syscall body still runs first (outcome killed-after)".into(),
    );
    match (probe::lsm_unavailable_reason(), loaded) {
        (Some(why), _) => row(
            "BPF LSM",
            State::No,
            format!("{why}; action `deny` falls back"),
        ),
        (None, Ok(mut p)) => match p.enable_deny() {
            Ok(support) => row(
                "BPF LSM",
                State::Yes,
                format!(
                    "{} hooks attached, {} unavailable{}",
                    support.hooks.len(),
                    support.unavailable.len(),
                    if support.unavailable.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " ({})",
                            support
                                .unavailable
                                .iter()
                                .map(|(h, _)| *h)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                ),
            ),
            Err(e) => row(
                "BPF LSM",
                State::No,
                format!("{e:#}; action `deny` falls back"),
            ),
        },
        (None, Err(_)) => row(
            "BPF LSM",
            State::Unknown,
            "the probe could not be loaded".into(),
        ),
    }

    match cgroup::v2_root() {
        Ok(root) => {
            let hybrid = root != Path::new("/sys/fs/cgroup");
            row(
                "cgroup v2",
                State::Yes,
                if hybrid {
                    format!(
                        "hybrid: v2 at {}, v1 controllers at /sys/fs/cgroup",
                        root.display()
                    )
                } else {
                    format!("unified at {}", root.display())
                },
            );
        }
        Err(e) => row("cgroup v2", State::No, format!("{e:#}")),
    }

    let ia32 = config_flag(config, "CONFIG_IA32_EMULATION");
    let ia32_off = cmdline
        .split_whitespace()
        .any(|a| a == "ia32_emulation=0" || a == "ia32_emulation=false");
    row(
        "ia32 syscalls",
        match (ia32, ia32_off) {
            (Some(true), false) => State::Yes,
            (Some(false), _) | (_, true) => State::No,
            (None, _) => State::Unknown,
        },
        "int 0x80 from any process; policed per ABI (i386 numbers judged as i386 names)".into(),
    );
    let x32 = config_flag(config, "CONFIG_X86_X32_ABI");
    let x32_on = cmdline
        .split_whitespace()
        .any(|a| a == "syscall.x32=y" || a == "syscall.x32=1");
    let x32_default_off = config_flag(config, "CONFIG_X86_X32_DISABLED").unwrap_or(false);
    row(
        "x32 syscalls",
        match x32 {
            Some(true) if x32_on || !x32_default_off => State::Yes,
            Some(_) => State::No,
            None => State::Unknown,
        },
        "syscall ids with __X32_SYSCALL_BIT; policed per ABI".into(),
    );
    let lockdown = fs::read_to_string("/sys/kernel/security/lockdown").ok();
    row(
        "lockdown",
        match &lockdown {
            Some(l) if l.contains("[none]") => State::No,
            Some(_) => State::Yes,
            None => State::Unknown,
        },
        lockdown.map_or("securityfs not mounted".into(), |l| l.trim().to_string()),
    );
    let uring = fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok();
    row(
        "io_uring",
        match uring.as_deref().map(str::trim) {
            Some("2") => State::No,
            _ => State::Yes,
        },
        "a ring's operations never pass sys_enter. Under `action: deny` (BPF LSM) the hooks \
         judge each as the syscall it stands for wherever it runs: inline in io_uring_enter, \
         in io-wq and SQPOLL threads (their cgroup's policy), in task_work between the \
         owner's syscalls (POLL_FIRST, poll-armed and linked requests: the owner's policy); \
         no ring mode or flag is refused. Under `kill` or `audit`, keep io_uring_* out of \
         allowlists"
            .into(),
    );
    let runsc = gvisor_support();
    row(
        "gVisor (runsc)",
        if runsc.is_some() {
            State::Yes
        } else {
            State::No
        },
        match runsc {
            Some(points) => format!(
                "the application's syscalls never reach the host. Through `sysfence wrap`, \
                 its policy is enforced inside the sandbox by gVisor's seccomp \
                 (--oci-seccomp; deny: EPERM, kill: the thread, then `runsc kill`), \
                 refusals read from the Sentry's debug log, and its syscalls seen through \
                 a trace session ({points} points). On the host, the Sentry and gofer get \
                 a `target: sandbox` policy (shipped: gvisor-sandbox), else the \
                 application's monitor-only. Without the wrapper: nothing inside"
            ),
            None => "runsc not found on PATH (or it has no `trace metadata`)".into(),
        },
    );
    row(
        "Kata",
        State::No,
        "a Kata workload runs in a VM: the host sees the VMM and its threads, never a \
         guest syscall. Recognised by its runtime handler or its cgroup's name; the VMM \
         gets a `target: sandbox` policy that selects it, else the application's \
         monitor-only unless it names `runtime: kata`. sysfence has no agent inside the \
         guest"
            .into(),
    );
    rows
}

/// Whether runsc is on PATH and traces, and how many trace points it has.
fn gvisor_support() -> Option<usize> {
    crate::gvisor::session::query_supported_points(Path::new("runsc"))
        .ok()
        .map(|p| p.len())
}

#[derive(Serialize)]
struct Report<'a> {
    capabilities: &'a [Capability],
    preventability: Option<&'a Preventability>,
    preventability_note: String,
    /// Where a policy's `errno` is returned on this host, and what happens elsewhere.
    errno: Vec<String>,
}

/// Where `spec.errno` can be delivered: only where a hook fails the call.
fn errno_notes(lsm: bool) -> Vec<String> {
    let mut notes = vec![
        "`errno` (spec.errno, EPERM by default) is what `action: deny` fails a syscall with: \
         it is returned only where a hook prevents the call (the preventable syscalls above); \
         a not-preventable syscall runs, and under `action: kill` every denied syscall kills \
         its task: no errno is returned"
            .to_string(),
    ];
    if lsm {
        notes.push(
            "clone3 with ENOSYS (Docker's way of sending glibc to clone): failed in the \
             task_alloc hook; glibc 2.34 and later then create threads with clone"
                .to_string(),
        );
    } else {
        notes.push(
            "clone3 with ENOSYS: no hook can return it on this host, and glibc 2.34 and later \
             call clone3 for every new thread; so clone3 is allowed where clone is, without \
             CLONE_NEW* flags when clone's rules keep them clear (judged at sys_enter and on \
             the kernel's copy at task_newtask)"
                .to_string(),
        );
    }
    notes
}

pub fn run(json: bool) -> anyhow::Result<()> {
    let rows = capabilities();
    let release = kernel_release();
    let table = table_for(&release);
    let note = match &table {
        Some(t) => format!(
            "measured on {} ({}); this kernel is {release}",
            t.kernel, t.measured_with
        ),
        None => {
            let kernels: Vec<String> = measured().into_iter().map(|t| t.kernel).collect();
            format!(
                "no measurement for {release}; measured kernels: {}",
                if kernels.is_empty() {
                    "none".to_string()
                } else {
                    kernels.join(", ")
                }
            )
        }
    };
    let lsm = rows
        .iter()
        .find(|r| r.name == "BPF LSM")
        .is_some_and(|r| r.state == State::Yes);
    if json {
        let report = Report {
            capabilities: &rows,
            preventability: table.as_ref(),
            preventability_note: note,
            errno: errno_notes(lsm),
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{:<18} {:<8} detail", "capability", "state");
    for r in &rows {
        let state = match r.state {
            State::Yes => "yes",
            State::No => "no",
            State::Unknown => "unknown",
        };
        println!("{:<18} {:<8} {}", r.name, state, r.detail);
    }
    println!();
    println!("preventability under `action: deny`: {note}");
    if let Some(t) = &table {
        if !lsm {
            println!(
                "  (BPF LSM is not usable here: nothing is preventable on this host; `deny` falls back)"
            );
        }
        let (denied, not): (Vec<_>, Vec<_>) =
            t.syscalls.iter().partition(|(_, m)| m.outcome == "denied");
        println!("  preventable ({}):", denied.len());
        for (name, m) in &denied {
            println!("    {name:<22} by {}", m.hook.as_deref().unwrap_or("?"));
        }
        println!(
            "  not preventable ({}): they run; the fallback (kill or allow) applies",
            not.len()
        );
        for chunk in not.chunks(6) {
            println!(
                "    {}",
                chunk
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    println!();
    for n in errno_notes(lsm) {
        println!("{n}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_tables_parse_and_say_what_they_measured() {
        for t in measured() {
            assert!(major_minor(&t.kernel).is_some(), "{}", t.kernel);
            assert!(
                t.syscalls.len() >= 60,
                "{}: {} syscalls",
                t.kernel,
                t.syscalls.len()
            );
            for (name, m) in &t.syscalls {
                assert!(
                    matches!(m.outcome.as_str(), "denied" | "not-preventable"),
                    "{name}: {}",
                    m.outcome
                );
                assert_eq!(m.hook.is_some(), m.outcome == "denied", "{name}");
            }
        }
    }

    #[test]
    fn kernel_versions_match_by_major_minor() {
        assert_eq!(major_minor("6.1.0-28-amd64").as_deref(), Some("6.1"));
        assert_eq!(major_minor("6.12.12+bpo-amd64").as_deref(), Some("6.12"));
        assert_eq!(major_minor("6.18.44-fc-v669").as_deref(), Some("6.18"));
        assert_eq!(major_minor("garbage"), None);
    }
}
