//! `cargo xtask vm-test`: the integration tests inside QEMU VMs booted from Debian's
//! kernels (6.1 and 6.12) with BPF LSM on, from an initramfs holding busybox, the test
//! executables and `sysfence` at their host paths, and the libraries they need.
//!
//! TCG only: `-enable-kvm` hangs on the CI host. Installs what is missing with apt-get.
//!
//! Files: `kernels` (which kernels to boot), `initramfs` (the guest root and its
//! /init), `boot` (QEMU, and what the guest prints).

use std::{fs, path::Path, process::Command, time::Duration};

use crate::packages;
use anyhow::{Context as _, bail};

use crate::{Tally, target_dir, toolchain::Tools};

mod boot;
mod initramfs;
mod kernels;

use boot::{BootResult, boot};
use initramfs::{Stage, build_initramfs, test_executables};
use kernels::{Kernel, boot_has_6_12, kernels, series};

/// Packages the VM tests cannot run without.
const REQUIRED: &[&str] = &[
    "qemu-system-x86",
    "linux-image-amd64",
    "busybox-static",
    "cpio",
    "crun",
];
/// Host programs the guest carries at their host paths, with their libraries: the crun
/// test of tests/tests/containers.rs needs pure cgroup v2, so it runs in the VMs only.
const GUEST_PROGRAMS: &[&str] = &["/usr/bin/crun"];
/// The second kernel: Debian bookworm's 6.12 (bookworm-security or bookworm-backports).
const KERNEL_6_12: &str = "linux-image-6.12-amd64";
/// QEMU's accelerator: TCG (KVM is not available here), with both vCPUs of a guest run in
/// turn by one host thread. Multi-threaded TCG broke the guest kernels' own code
/// patching: when a tracepoint's static key flips (the agent attaching or detaching
/// sys_enter), another vCPU could still run the patched site's old translation and trap
/// on the int3 of text_poke_bp after it was gone (`Oops: int3` at syscall_trace_enter
/// or do_exit on 6.12, a 23 s soft lockup there on 6.1; three times in two CI runs).
/// One thread per guest also lets the kernels boot side by side on two cores.
pub(super) const ACCEL: &str = "tcg,thread=single";
/// The guests' kernel command line. `softlockup_panic=1`: a vCPU stuck for 20 s
/// panics the guest, with its report, instead of hanging it until the timeout (both
/// vCPUs were once seen stuck for good at the sys_enter tracepoint's jump label under
/// TCG); `boot` then treats it as any panic.
const APPEND: &str = "console=ttyS0 panic=-1 softlockup_panic=1 \
     lsm=lockdown,capability,landlock,yama,bpf syscall.x32=y";
/// Prefix of every line the guest's /init prints about the run itself.
const MARK: &str = "SYSFENCE-VM:";

#[derive(clap::Args)]
pub struct VmArgs {
    /// Boot only the kernels whose release contains this, not followed by a digit
    /// (`6.1` picks 6.1.x, not 6.12.x); default: the newest /boot/vmlinuz-* of each
    /// series (6.1, 6.12).
    #[arg(long, value_name = "SUBSTRING")]
    kernel: Option<String>,
    /// Limit per kernel, boot and tests together (the 6.1 suite, the slower, takes about
    /// 2,550 s on one host thread, beside the 6.12 suite on the other core).
    #[arg(long, default_value_t = VM_TIMEOUT_SECS)]
    timeout_secs: u64,
    /// Run only the tests whose name contains this (passed to each test executable).
    filter: Option<String>,
    /// Only measure which syscalls `deny` prevents on each kernel, and store the tables
    /// in policies/preventability/kernels.json (commit them; `doctor` shows them).
    #[arg(long)]
    measure_preventability: bool,
}

/// Limit per kernel of `vm-test`, boot and tests together.
const VM_TIMEOUT_SECS: u64 = 3600;

/// The guests' memory, in MiB (QEMU's `-m`). The guest root lives in it (about
/// 540 MiB unpacked), next to the kernel, the agent and the containers of the tests:
/// 3 GiB leaves them the room a node would have. QEMU only backs what the guest
/// touches.
const VM_MEMORY_MIB: u64 = 3072;

impl Default for VmArgs {
    fn default() -> Self {
        VmArgs {
            kernel: None,
            timeout_secs: VM_TIMEOUT_SECS,
            filter: None,
            measure_preventability: false,
        }
    }
}

/// Marker of the preventability table a guest prints (tests/tests/preventability.rs).
const PREVENTABILITY: &str = "SYSFENCE-PREVENTABILITY ";

/// Store measured tables in policies/preventability/kernels.json, replacing the table
/// of the same `major.minor`.
fn store_preventability(root: &Path, measured: &[String]) -> anyhow::Result<()> {
    let path = root.join("policies/preventability/kernels.json");
    let mut tables: Vec<serde_json::Value> = serde_json::from_str(&fs::read_to_string(&path)?)?;
    let mm = |t: &serde_json::Value| series(t["kernel"].as_str().unwrap_or(""));
    for m in measured {
        let table: serde_json::Value = serde_json::from_str(m)?;
        tables.retain(|t| mm(t) != mm(&table));
        tables.push(table);
    }
    tables.sort_by_key(|t| mm(t));
    fs::write(&path, serde_json::to_string_pretty(&tables)? + "\n")?;
    eprintln!(
        "xtask: wrote {} table(s) to {}",
        measured.len(),
        path.display()
    );
    Ok(())
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Build the test executables, boot every selected kernel on one initramfs, and add the
/// guests' `test result:` lines to `tally`.
pub fn run(root: &Path, tools: &Tools, args: VmArgs, tally: &mut Tally) -> anyhow::Result<()> {
    // SAFETY: plain libc call.
    if unsafe { libc::geteuid() } != 0 {
        bail!("vm-test needs root (apt-get, device nodes in the initramfs)");
    }
    let missing_6_12 = ensure_packages()?;
    if let Some(why) = &missing_6_12 {
        eprintln!("xtask: vm-test: no 6.12 kernel: {why}; continuing with 6.1 only");
    }
    let kernels = kernels(args.kernel.as_deref())?;
    let missing_6_12 = match missing_6_12 {
        None if !boot_has_6_12() => Some(format!(
            "{KERNEL_6_12} is installed but there is no /boot/vmlinuz-6.12*"
        )),
        m => m,
    }
    // An explicit --kernel choice needs only what it names.
    .filter(|_| args.kernel.is_none());
    let mut args = args;
    if args.measure_preventability {
        // The guest's test then prints its table without comparing it to the committed one.
        // SAFETY: single-threaded at this point.
        unsafe { std::env::set_var("SYSFENCE_MEASURE", "1") };
        args.filter = Some("measure_what_deny_prevents".to_string());
    }
    let exes = test_executables(tools)?;
    let stage = Stage::new(&target_dir(root).join(format!("vm-test-{}", std::process::id())))?;
    let initrd = build_initramfs(&stage.0, root, &kernels, &exes, args.filter.as_deref())?;

    // The kernels boot side by side, one host thread each (ACCEL): the suite takes as
    // long as its slowest kernel, not as long as all of them.
    let timeout = Duration::from_secs(args.timeout_secs);
    let booted: Vec<BootResult> = std::thread::scope(|s| {
        let runs: Vec<_> = kernels
            .iter()
            .map(|k| s.spawn(|| boot_and_retry(k, &initrd, exes.len(), timeout)))
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("a vm-test boot thread panicked"))
            .collect()
    });
    let mut failures = Vec::new();
    let mut panics = Vec::new();
    let mut rows = Vec::new();
    for (k, r) in kernels.iter().zip(booted) {
        tally.passed += r.passed;
        tally.failed += r.failed;
        if let Some(p) = &r.first_panic {
            panics.push(format!("{}: {p}", k.release));
        }
        match &r.error {
            Some(e) => {
                eprintln!("xtask: vm-test {}: FAILED: {e}", k.release);
                failures.push(format!("{}: {e}", k.release));
            }
            None => eprintln!("xtask: vm-test {}: ok", k.release),
        }
        rows.push((k.release.clone(), r));
    }
    drop(stage);
    if args.measure_preventability {
        let measured: Vec<String> = rows
            .iter()
            .filter_map(|(_, r)| r.preventability.clone())
            .collect();
        if measured.len() != rows.len() {
            failures.push(format!(
                "{} of {} kernels printed a preventability table",
                measured.len(),
                rows.len()
            ));
        }
        store_preventability(root, &measured)?;
    }

    eprintln!(
        "xtask: vm-test summary ({ACCEL}, -smp 2, -m {VM_MEMORY_MIB}, kernels side by side):"
    );
    for (release, r) in &rows {
        eprintln!(
            "xtask:   {release:<28} {:>4} passed {:>3} failed   boot {:>6} s   tests {:>6} s   total {:>6} s   {}",
            r.passed,
            r.failed,
            secs(r.boot),
            secs(r.boot.map(|b| r.total - b)),
            secs(Some(r.total)),
            match (&r.error, r.first_panic.is_some()) {
                (Some(_), _) => "FAILED",
                (None, false) => "ok",
                (None, true) => "ok on a second boot: the first panicked",
            },
        );
    }
    for p in &panics {
        eprintln!("xtask: vm-test: WARNING: a guest kernel panicked on its first boot:\n  {p}");
    }
    if let Some(why) = missing_6_12 {
        if ci() {
            failures.push(format!("no 6.12 kernel under CI=true: {why}"));
        } else {
            eprintln!("xtask: vm-test: 6.12 not tested: {why}");
        }
    }
    if !failures.is_empty() {
        bail!("vm-test failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

/// Boot `k` and run the suite; a guest kernel that panics while no test has failed is
/// booted once more, the whole suite again. A panic with no failing test has been seen
/// in about one run in twenty (TCG), without a trace to tell whose it is. The first
/// boot's report stays in the log and in the result, to be repeated at the end, and the
/// row says so; a second panic, or any failed test, fails the run.
fn boot_and_retry(
    k: &Kernel,
    initrd: &Path,
    expected_exes: usize,
    timeout: Duration,
) -> BootResult {
    eprintln!(
        "xtask: vm-test: booting {} ({})",
        k.release,
        k.path.display()
    );
    let r = boot(k, initrd, expected_exes, timeout);
    let (Some(p), 0) = (&r.panic, r.failed) else {
        return r;
    };
    eprintln!(
        "xtask: vm-test {}: the kernel panicked with no test failed; booting it once more \
         (the panic is reported again at the end):\n  {p}",
        k.release
    );
    let first = p.clone();
    let mut r = boot(k, initrd, expected_exes, timeout);
    r.first_panic = Some(first);
    r
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64()))
}

// ---------------------------------------------------------------------------------------
// Packages

/// `Candidate:` of `apt-cache policy`, None when unknown or `(none)`.
fn candidate(pkg: &str) -> Option<String> {
    let out = Command::new("apt-cache")
        .args(["policy", pkg])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(|c| c.trim().to_string())
        .filter(|c| c != "(none)")
}

/// Install what is missing. Returns why there is no 6.12 kernel, if there is none.
fn ensure_packages() -> anyhow::Result<Option<String>> {
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|p| !packages::installed(p))
        .collect();
    if !missing.is_empty() {
        packages::install(&missing).context("installing the VM test packages")?;
    }
    if packages::installed(KERNEL_6_12) || boot_has_6_12() {
        return Ok(None);
    }
    if candidate(KERNEL_6_12).is_none() {
        eprintln!("xtask: {KERNEL_6_12} has no candidate; running apt-get update");
        packages::apt_get(&["update"])?;
    }
    let Some(version) = candidate(KERNEL_6_12) else {
        return Ok(Some(format!(
            "{KERNEL_6_12} is not installable: `apt-cache policy {KERNEL_6_12}` shows no \
             candidate in the configured apt sources (bookworm ships it in bookworm-security \
             and bookworm-backports; neither offers it here)"
        )));
    };
    match packages::install(&[KERNEL_6_12]) {
        Ok(()) => Ok(None),
        Err(e) => Ok(Some(format!(
            "{KERNEL_6_12} {version} is offered but did not install: {e:#}"
        ))),
    }
}
