//! `cargo xtask vm-test`: the integration tests inside QEMU VMs booted from Debian's
//! kernels (6.1 and 6.12) with BPF LSM on, from an initramfs holding busybox, the test
//! executables and `sysfence` at their host paths, and the libraries they need.
//!
//! TCG only: `-enable-kvm` hangs on the CI host. Installs what is missing with apt-get.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::packages;
use anyhow::{Context as _, bail};

use crate::{Tally, cargo, target_dir, toolchain::Tools};

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
const APPEND: &str =
    "console=ttyS0 panic=-1 lsm=lockdown,capability,landlock,yama,bpf syscall.x32=y";
/// Prefix of every line the guest's /init prints about the run itself.
const MARK: &str = "SYSFENCE-VM:";

#[derive(clap::Args)]
pub struct VmArgs {
    /// Boot only the kernels whose release contains this, not followed by a digit
    /// (`6.1` picks 6.1.x, not 6.12.x); default: the newest /boot/vmlinuz-* of each
    /// series (6.1, 6.12).
    #[arg(long, value_name = "SUBSTRING")]
    kernel: Option<String>,
    /// Limit per kernel, boot and tests together.
    #[arg(long, default_value_t = 1200)]
    timeout_secs: u64,
    /// Run only the tests whose name contains this (passed to each test executable).
    filter: Option<String>,
    /// Only measure which syscalls `deny` prevents on each kernel, and store the tables
    /// in policies/preventability/kernels.json (commit them; `doctor` shows them).
    #[arg(long)]
    measure_preventability: bool,
}

impl Default for VmArgs {
    fn default() -> Self {
        VmArgs {
            kernel: None,
            timeout_secs: 1200,
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
    let mm = |t: &serde_json::Value| {
        let k = t["kernel"].as_str().unwrap_or("");
        k.split(['.', '-']).take(2).collect::<Vec<_>>().join(".")
    };
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

    let mut failures = Vec::new();
    let mut rows = Vec::new();
    for k in &kernels {
        eprintln!(
            "xtask: vm-test: booting {} ({})",
            k.release,
            k.path.display()
        );
        let r = boot(
            k,
            &initrd,
            exes.len(),
            Duration::from_secs(args.timeout_secs),
            tally,
        );
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

    eprintln!("xtask: vm-test summary (TCG, -smp 2, -m 1536):");
    for (release, r) in &rows {
        eprintln!(
            "xtask:   {release:<28} {:>4} passed {:>3} failed   boot {:>6} s   tests {:>6} s   total {:>6} s   {}",
            r.passed,
            r.failed,
            secs(r.boot),
            secs(r.boot.map(|b| r.total - b)),
            secs(Some(r.total)),
            if r.error.is_some() { "FAILED" } else { "ok" },
        );
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

// ---------------------------------------------------------------------------------------
// Kernels

fn boot_has_6_12() -> bool {
    kernels(Some("6.12")).is_ok()
}

struct Kernel {
    release: String,
    path: PathBuf,
}

/// Sort key of a kernel release: digit runs compare as numbers (6.1.0-9 < 6.1.0-10).
fn version_key(release: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut rest = release;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (n, tail) = rest.split_at(digits);
        let text_len = tail.len() - tail.trim_start_matches(|c: char| !c.is_ascii_digit()).len();
        let (text, tail) = tail.split_at(text_len);
        key.push((n.parse().unwrap_or(0), text.to_string()));
        rest = tail;
    }
    key
}

/// Whether `release` contains `pat` not followed by a digit (`6.1` is not in `6.12.5`).
fn release_matches(release: &str, pat: &str) -> bool {
    release.match_indices(pat).any(|(i, _)| {
        !release[i + pat.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

fn kernels(pat: Option<&str>) -> anyhow::Result<Vec<Kernel>> {
    let mut all: Vec<Kernel> = fs::read_dir("/boot")
        .context("reading /boot")?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let release = name.strip_prefix("vmlinuz-")?.to_string();
            Some(Kernel {
                release,
                path: e.path(),
            })
        })
        .collect();
    all.sort_by_key(|k| version_key(&k.release));
    let found: Vec<String> = all.iter().map(|k| k.release.clone()).collect();
    if let Some(pat) = pat {
        all.retain(|k| release_matches(&k.release, pat));
    }
    // The newest of each series (6.1, 6.12): older ABIs stay in /boot after upgrades.
    let series = |k: &Kernel| k.release.split('.').take(2).collect::<Vec<_>>().join(".");
    let mut newest: Vec<Kernel> = Vec::new();
    for k in all {
        if newest.last().is_some_and(|last| series(last) == series(&k)) {
            newest.pop();
        }
        newest.push(k);
    }
    let all = newest;
    if all.is_empty() {
        bail!(
            "no kernel {}in /boot (found: {})",
            pat.map_or(String::new(), |p| format!("matching `{p}` ")),
            if found.is_empty() {
                "none".into()
            } else {
                found.join(", ")
            }
        );
    }
    Ok(all)
}

// ---------------------------------------------------------------------------------------
// Initramfs

/// The test executables of `sysfence-tests`, from cargo's JSON messages.
fn test_executables(tools: &Tools) -> anyhow::Result<Vec<PathBuf>> {
    eprintln!("xtask: vm-test: building the test executables");
    let out = cargo(tools)
        .args([
            "test",
            "-p",
            "sysfence-tests",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("cargo test --no-run failed ({})", out.status);
    }
    let mut exes = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["profile"]["test"] == true
            && let Some(exe) = msg["executable"].as_str()
        {
            exes.push(PathBuf::from(exe));
        }
    }
    if exes.is_empty() {
        bail!("cargo test --no-run reported no test executable");
    }
    Ok(exes)
}

/// The staging directory under target/, removed on drop (errors and panics included).
struct Stage(PathBuf);

impl Stage {
    fn new(dir: &Path) -> anyhow::Result<Stage> {
        // Leftovers of runs that were killed before they could clean up.
        if let Ok(entries) = fs::read_dir(dir.parent().expect("under target/")) {
            for e in entries.filter_map(Result::ok) {
                let name = e.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("vm-test-")) else {
                    continue;
                };
                if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Stage(dir.to_path_buf()))
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("xtask: could not remove {}: {e}", self.0.display());
        }
    }
}

/// `host` inside the guest root `rootfs`, at the same absolute path.
fn in_root(rootfs: &Path, host: &Path) -> PathBuf {
    rootfs.join(host.strip_prefix("/").unwrap_or(host))
}

fn copy_file(rootfs: &Path, host: &Path) -> anyhow::Result<()> {
    let dest = in_root(rootfs, host);
    if dest.exists() {
        return Ok(());
    }
    fs::create_dir_all(dest.parent().expect("an absolute path has a parent"))?;
    fs::copy(host, &dest).with_context(|| format!("copying {}", host.display()))?;
    Ok(())
}

fn copy_tree(rootfs: &Path, host: &Path) -> anyhow::Result<()> {
    for e in fs::read_dir(host).with_context(|| format!("reading {}", host.display()))? {
        let path = e?.path();
        if path.is_dir() {
            copy_tree(rootfs, &path)?;
        } else {
            copy_file(rootfs, &path)?;
        }
    }
    Ok(())
}

/// The shared objects an executable loads, the dynamic loader included (from `ldd`).
fn shared_libraries(exe: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(exe)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "not a dynamic executable": nothing to add.
        return Ok(Vec::new());
    }
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.split(" (0x").next()?;
            let path = l.rsplit("=> ").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// Single-quote `s` for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn init_script(exes: &[PathBuf], cwd: &Path, filter: Option<&str>) -> String {
    let mut s = String::from(
        r#"#!/bin/sh
# sysfence VM test runner (generated by `cargo xtask vm-test`).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
status=pass
fail() { echo "SYSFENCE-VM: FAIL: $*"; status=fail; }
# The initramfs is the kernel's rootfs, which pivot_root(2) refuses to move (container
# runtimes fail with "pivot_root: Invalid argument"): first put a bind mount of it on
# top as /, and start over from there.
if [ "$1" != on-bind-root ]; then
    mkdir -p /bind-root
    mount --bind / /bind-root && cd /bind-root && mount --move . / \
        && exec chroot . /init on-bind-root
    fail "could not bind-mount the root over itself; staying on rootfs"
fi
export HOME=/root TMPDIR=/tmp RUST_BACKTRACE=1
mnt() { mount -t "$1" "$1" "$2" || fail "mount -t $1 $2"; }
mnt proc /proc
mnt sysfs /sys
mnt devtmpfs /dev
mnt cgroup2 /sys/fs/cgroup
mnt bpf /sys/fs/bpf
mnt securityfs /sys/kernel/security
mnt tracefs /sys/kernel/tracing
# No tmpfs over /tmp: the root is already in memory, and the workspace (whose absolute
# paths the test binaries carry) may itself live under /tmp.
mkdir -p /tmp && chmod 1777 /tmp
# Loopback, for the agent's metrics endpoint.
ip link set lo up || fail "ip link set lo up"
# Only errors from the kernel on the console from now on (panics and oopses still show).
dmesg -n 4
echo "SYSFENCE-VM: START"
echo "SYSFENCE-VM: uname -r: $(uname -r)"
lsm=$(cat /sys/kernel/security/lsm)
echo "SYSFENCE-VM: /sys/kernel/security/lsm: $lsm"
case ",$lsm," in
*,bpf,*) echo "SYSFENCE-VM: BPF LSM active: yes" ;;
*) echo "SYSFENCE-VM: BPF LSM active: no"
   fail "BPF LSM is not active: /sys/kernel/security/lsm ($lsm) does not contain bpf" ;;
esac
echo "SYSFENCE-VM: cgroup mounts: $(grep cgroup /proc/mounts | tr '\n' ';')"
"#,
    );
    if ci() {
        s.push_str("export CI=true\n");
    }
    if std::env::var_os("SYSFENCE_MEASURE").is_some() {
        s.push_str("export SYSFENCE_MEASURE=1\n");
    }
    s.push_str(&format!(
        "echo \"SYSFENCE-VM: CI=${{CI:-}}\"\ncd {}\n",
        sh_quote(&cwd.display().to_string())
    ));
    let filter = filter.map_or(String::new(), |f| format!(" -- {}", sh_quote(f)));
    for exe in exes {
        let exe = sh_quote(&exe.display().to_string());
        // `--include-ignored`: tests that need what only the VMs have (BPF LSM, pure
        // cgroup v2) are `#[ignore]`d on the host and run here (tests/tests/lsm.rs).
        // `--skip host_only::`: tests of the host's container runtimes, which the guest
        // does not carry (tests/tests/containers.rs); they run on the host.
        s.push_str(&format!(
            "echo \"SYSFENCE-VM: RUN \"{exe}\n{exe} --test-threads=1 --include-ignored \
             --skip host_only::{filter}\nrc=$?\n\
             echo \"SYSFENCE-VM: EXIT $rc \"{exe}\n[ $rc = 0 ] || fail {exe}\" exited with $rc\"\n"
        ));
    }
    s.push_str(
        r#"if [ $status != pass ]; then
    echo "SYSFENCE-VM: kernel log (errors and warnings):"
    dmesg -r | grep -E '^<[0-4]>' | tail -n 40
fi
echo "SYSFENCE-VM: DONE $status"
sync
poweroff -f
"#,
    );
    s
}

/// Stage the guest root and pack it as a gzip'd newc cpio archive.
fn build_initramfs(
    stage: &Path,
    root: &Path,
    kernels: &[Kernel],
    exes: &[PathBuf],
    filter: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let started = Instant::now();
    let rootfs = stage.join("root");
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "root", "etc",
    ] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    // busybox and every applet link: /bin/sh, /usr/bin/touch, /sbin/poweroff, ...
    let busybox = Path::new("/bin/busybox");
    copy_file(&rootfs, busybox)?;
    let list = Command::new(busybox)
        .arg("--list-full")
        .output()
        .context("busybox --list-full")?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = rootfs.join(applet.trim());
        if applet.trim().is_empty() || link.exists() {
            continue;
        }
        fs::create_dir_all(link.parent().expect("applet paths have a directory"))?;
        std::os::unix::fs::symlink("/bin/busybox", &link)?;
    }
    // The console, for /init's stdio before devtmpfs is mounted.
    let console = std::ffi::CString::new(
        rootfs
            .join("dev/console")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .expect("no NUL in a path");
    // SAFETY: a valid C string; mknod has no other preconditions.
    if unsafe { libc::mknod(console.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(5, 1)) } != 0 {
        bail!("mknod dev/console: {}", std::io::Error::last_os_error());
    }

    // The tests, and the binaries they run, at their host paths.
    let bin = target_dir(root).join("debug");
    let mut files: Vec<PathBuf> = exes.to_vec();
    files.push(bin.join("sysfence"));
    files.push(bin.join("sf-syscalls"));
    files.extend(GUEST_PROGRAMS.iter().map(PathBuf::from));
    for f in &files {
        copy_file(&rootfs, f)?;
        for lib in shared_libraries(f)? {
            copy_file(&rootfs, &lib)?;
        }
    }
    copy_tree(&rootfs, &root.join("policies"))?;
    // Each kernel's build configuration, where `sysfence doctor` reads it (Debian's
    // kernels have no /proc/config.gz).
    for k in kernels {
        let config = Path::new("/boot").join(format!("config-{}", k.release));
        if config.exists() {
            copy_file(&rootfs, &config)?;
        }
    }
    // `cargo test` runs tests from the package directory.
    let cwd = root.join("tests");
    fs::create_dir_all(in_root(&rootfs, &cwd))?;

    let init = rootfs.join("init");
    fs::write(&init, init_script(exes, &cwd, filter))?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;

    // Pack: parents before children, as cpio -o wants them.
    let mut paths = Vec::new();
    let mut stack = vec![PathBuf::from(".")];
    while let Some(p) = stack.pop() {
        let full = rootfs.join(&p);
        paths.push(p.clone());
        if fs::symlink_metadata(&full)?.is_dir() {
            let mut children: Vec<PathBuf> = fs::read_dir(&full)?
                .filter_map(Result::ok)
                .map(|e| p.join(e.file_name()))
                .collect();
            children.sort();
            children.reverse();
            stack.extend(children);
        }
    }
    let cpio_path = stage.join("initrd.cpio");
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "-R", "0:0", "--quiet"])
        .current_dir(&rootfs)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&cpio_path)?)
        .spawn()
        .context("running cpio")?;
    {
        let mut stdin = cpio.stdin.take().expect("piped");
        for p in &paths {
            stdin.write_all(p.as_os_str().as_encoded_bytes())?;
            stdin.write_all(b"\n")?;
        }
    }
    if !cpio.wait()?.success() {
        bail!("cpio failed");
    }
    let status = Command::new("gzip")
        .args(["-1", "-n", "-f"])
        .arg(&cpio_path)
        .status()
        .context("running gzip")?;
    if !status.success() {
        bail!("gzip failed");
    }
    let gz = stage.join("initrd.cpio.gz");
    eprintln!(
        "xtask: vm-test: initramfs {} ({:.1} MiB, {} entries) in {:.1} s",
        gz.display(),
        fs::metadata(&gz)?.len() as f64 / (1 << 20) as f64,
        paths.len(),
        started.elapsed().as_secs_f64()
    );
    fs::remove_dir_all(&rootfs)?;
    Ok(gz)
}

// ---------------------------------------------------------------------------------------
// Boot

struct BootResult {
    passed: u64,
    /// The preventability table the guest printed, if any.
    preventability: Option<String>,
    failed: u64,
    /// Until /init's first line.
    boot: Option<Duration>,
    total: Duration,
    error: Option<String>,
}

/// The QEMU process; killed (by its PID) and reaped on drop if still running.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn boot(
    k: &Kernel,
    initrd: &Path,
    expected_exes: usize,
    timeout: Duration,
    tally: &mut Tally,
) -> BootResult {
    let started = Instant::now();
    let mut r = BootResult {
        passed: 0,
        preventability: None,
        failed: 0,
        boot: None,
        total: Duration::ZERO,
        error: None,
    };
    let spawned = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "1536", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(&k.path)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", APPEND])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn();
    let mut qemu = match spawned {
        Ok(c) => Qemu(c),
        Err(e) => {
            r.error = Some(format!("starting qemu-system-x86_64: {e}"));
            return r;
        }
    };
    let stdout = qemu.0.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut buf = Vec::new();
        while stdout.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            let line = String::from_utf8_lossy(&buf);
            if tx
                .send(line.trim_end_matches(['\r', '\n']).to_string())
                .is_err()
            {
                break;
            }
            buf.clear();
        }
    });

    let deadline = started + timeout;
    let mut done: Option<String> = None;
    let mut panicked: Option<String> = None;
    let mut exits = 0usize;
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let line = printable(&line);
                println!("{line}");
                // The test harness may print the test's name on the same line first.
                if let Some(at) = line.find(PREVENTABILITY) {
                    r.preventability = Some(line[at + PREVENTABILITY.len()..].trim().to_string());
                }
                if let Some((p, f)) = tally.count(&line) {
                    r.passed += p;
                    r.failed += f;
                }
                if let Some(rest) = line.strip_prefix(MARK).map(str::trim) {
                    if rest == "START" {
                        r.boot = Some(started.elapsed());
                    } else if rest.starts_with("EXIT ") {
                        exits += 1;
                    } else if let Some(s) = rest.strip_prefix("DONE ") {
                        done = Some(s.trim().to_string());
                    }
                }
                if panicked.is_none() && line.contains("Kernel panic") {
                    panicked = Some(line.trim().to_string());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if timed_out {
        // Kill the QEMU we started, by its PID (Child::kill), then reap it.
        let _ = qemu.0.kill();
    }
    let status = qemu.0.wait();
    let _ = reader.join();
    r.total = started.elapsed();

    let mut errors = Vec::new();
    if timed_out {
        errors.push(format!(
            "timed out after {} s; qemu killed",
            timeout.as_secs()
        ));
    }
    if let Some(p) = panicked {
        errors.push(format!("kernel panic: {p}"));
    }
    match done.as_deref() {
        Some("pass") => {}
        Some(other) => errors.push(format!("the guest reported DONE {other}")),
        None => errors.push(format!("no `{MARK} DONE` line from the guest")),
    }
    if exits != expected_exes {
        errors.push(format!(
            "{exits} of {expected_exes} test executables ran to completion"
        ));
    }
    if r.failed > 0 {
        errors.push(format!("{} test(s) failed", r.failed));
    }
    if !timed_out {
        match status {
            Ok(s) if !s.success() => errors.push(format!("qemu exited with {s}")),
            Err(e) => errors.push(format!("waiting for qemu: {e}")),
            _ => {}
        }
    }
    if !errors.is_empty() {
        r.error = Some(errors.join("; "));
    }
    r
}

/// A console line without terminal control sequences (SeaBIOS resets and clears the
/// screen: `ESC c`, `ESC [2J`) or other control characters.
fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.next_if_eq(&'[').is_some() {
                    // CSI: parameters and intermediates up to a final byte in @..~.
                    while chars.next().is_some_and(|c| !('@'..='~').contains(&c)) {}
                } else {
                    chars.next();
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_patterns_do_not_cross_minor_versions() {
        assert!(release_matches("6.1.0-37-amd64", "6.1"));
        assert!(!release_matches("6.12.38+deb12-amd64", "6.1"));
        assert!(release_matches("6.12.38+deb12-amd64", "6.12"));
        assert!(release_matches("6.12.38+deb12-amd64", "amd64"));
    }

    #[test]
    fn console_lines_lose_terminal_controls() {
        assert_eq!(
            printable("\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16)"),
            "SeaBIOS (version 1.16)"
        );
        assert_eq!(printable("test result: ok.\r"), "test result: ok.");
    }

    #[test]
    fn the_init_script_is_valid_sh() {
        let exes = [
            PathBuf::from("/w/target/debug/deps/host-1"),
            PathBuf::from("/w/it's"),
        ];
        let script = init_script(&exes, Path::new("/w/tests"), Some("a 'b' $c"));
        assert!(
            script
                .contains("'/w/it'\\''s' --test-threads=1 --include-ignored --skip host_only:: -- 'a '\\''b'\\'' $c'")
        );
        let out = Command::new("sh")
            .args(["-n", "-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn releases_sort_as_versions() {
        let mut r = [
            "6.1.0-10-amd64",
            "6.12.9+deb12-amd64",
            "6.1.0-9-amd64",
            "6.12.117+deb12-amd64",
        ];
        r.sort_by_key(|r| version_key(r));
        assert_eq!(
            r,
            [
                "6.1.0-9-amd64",
                "6.1.0-10-amd64",
                "6.12.9+deb12-amd64",
                "6.12.117+deb12-amd64"
            ]
        );
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
    }
}
