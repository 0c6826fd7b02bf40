//! The test kit of sysfence's integration tests: privilege gates, the binaries under
//! test, cgroups that clean up after themselves and workloads run in them (here); the
//! agent ([`agent`]), its metrics ([`metrics`]), children whose output is collected
//! ([`process`]), container runtimes and bundles ([`oci`]), the syscall catalog
//! ([`catalog`]).

pub mod agent;
pub mod catalog;
pub mod gate;
pub mod metrics;
pub mod namespaces;
pub mod oci;
pub mod process;

use std::{
    ffi::OsStr,
    fs,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output},
    time::{Duration, Instant},
};

pub use gate::{ci, skip};

/// Whether the privileged parts of a test can run here. Under `CI=true` a missing
/// feature is a failure, never a skip; elsewhere the test prints what is missing and
/// returns early.
pub fn privileged(test: &str) -> bool {
    match missing_privilege() {
        None => true,
        Some(why) => {
            skip(test, &why);
            false
        }
    }
}

/// Whether `program` is on PATH; if not, the test is skipped (or fails under CI) with
/// the Debian `package` to install.
pub fn tool(test: &str, program: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()));
    if !found {
        skip(
            test,
            &format!(
                "`{program}` not found (Debian package `{package}`, installed by `cargo xtask test`)"
            ),
        );
    }
    found
}

fn missing_privilege() -> Option<String> {
    // SAFETY: plain libc call.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (BPF programs and cgroups)".into());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("kernel BTF (/sys/kernel/btf/vmlinux) missing".into());
    }
    if cgroup_root().is_none() {
        return Some("no cgroup v2 hierarchy mounted".into());
    }
    None
}

/// The cgroup v2 mount point.
pub fn cgroup_root() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .collect();
    found.sort_by_key(|p| p.as_os_str().len());
    found.into_iter().next()
}

/// Directory of the workspace's built binaries (next to this test's `deps/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("deps dir");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("profile dir")
    } else {
        dir
    };
    dir.to_path_buf()
}

/// The `sysfence` binary under test (built by `cargo xtask test` before the tests).
pub fn sysfence() -> Command {
    let bin = bin_dir().join("sysfence");
    assert!(
        bin.exists(),
        "{} is missing: run the tests through `cargo xtask test`",
        bin.display()
    );
    Command::new(bin)
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// Write a policy file into `dir` and return its path.
pub fn write_policy(dir: &Path, file: &str, body: &str) -> PathBuf {
    let path = dir.join(file);
    fs::write(&path, body).expect("write policy");
    path
}

/// A test's cgroup `sysfence-TAG-PID` (removed on drop), a temporary directory, and
/// an empty policy directory in it: (the cgroup's path under the v2 root, the cgroup,
/// the directory, the policy directory).
pub fn scene(tag: &str) -> (String, TestCgroup, tempfile::TempDir, PathBuf) {
    let base = format!("sysfence-{tag}-{}", std::process::id());
    let cgroup = TestCgroup::create(&base);
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = dir.path().join("policies");
    fs::create_dir(&policies).expect("policy directory");
    (base, cgroup, dir, policies)
}

/// The agent's pin layout directory (`v` and `LAYOUT_VERSION` in agent/src/probe/pins.rs).
pub const PIN_LAYOUT: &str = "v7";

/// A policy document with `spec` lines (indented by 2) after a standard header.
pub fn policy_yaml(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: sysfence.dev/v1\nkind: SyscallPolicy\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

/// A cgroup created by a test, removed on drop even when the test fails.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn create(rel: &str) -> TestCgroup {
        let root = cgroup_root().expect("cgroup v2");
        let path = root.join(rel);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TestCgroup { path }
    }

    /// A command that joins this cgroup before it executes.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        command_in_cgroup(&self.path, program)
    }
}

/// A command that joins the cgroup at `path` (absolute) before it executes.
pub fn command_in_cgroup(path: &Path, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let procs = path.join("cgroup.procs");
    let mut cmd = Command::new(program);
    // SAFETY: only async-signal-safe calls (open/write/close through std's fs is not;
    // use raw libc) between fork and exec.
    let procs = std::ffi::CString::new(procs.into_os_string().into_encoded_bytes()).expect("path");
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
    cmd
}

impl TestCgroup {
    /// Run `program args` in this cgroup (joined before exec) and return how it ended.
    pub fn run(&self, program: impl AsRef<OsStr>, args: &[&str]) -> ExitStatus {
        self.command(program)
            .args(args)
            .status()
            .expect("run a workload in the test cgroup")
    }
}

/// Start `program args` so that it joins `cgroup` before it executes, exactly as
/// `sysfence run` and `sysfence record -- CMD` start their command: the open
/// `cgroup.procs` is inherited and the child's only call before exec is the write(2)
/// that moves it (its sys_enter runs in the old cgroup, so it is not counted); its
/// `execve` is the first call counted. ([`TestCgroup::command`] opens the file in the
/// child: a call or two more, counted.)
pub fn spawn_joined(cgroup: &Path, program: &str, args: &[&str]) -> Child {
    let procs = fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))
        .expect("open cgroup.procs");
    let fd = procs.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: only write(2), async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn workload");
    drop(procs);
    child
}

/// [`spawn_joined`], and wait for it.
pub fn run_joined(cgroup: &Path, program: &str, args: &[&str]) -> ExitStatus {
    spawn_joined(cgroup, program, args).wait().unwrap()
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.path);
    }
}

/// Kill what is left in a cgroup tree and remove it, deepest first.
pub fn remove_cgroup_tree(path: &Path) {
    if !path.exists() {
        return;
    }
    if let Ok(entries) = fs::read_dir(path) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = fs::write(path.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs::remove_dir(path).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Poll `f` until it returns Some or the timeout passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sysfence run` with a policy; returns (exit code, JSON report, stdout, stderr).
pub fn run(
    policy: &Path,
    mode: Option<&str>,
    cmd: &[&str],
) -> (i32, serde_json::Value, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report.json");
    let mut c = sysfence();
    c.arg("run")
        .arg("--policy")
        .arg(policy)
        .arg("--json-report")
        .arg(&report);
    if let Some(m) = mode {
        c.args(["--mode", m]);
    }
    let out = c.arg("--").args(cmd).output().expect("run sysfence");
    let (stdout, stderr) = text(&out);
    let json =
        fs::read_to_string(&report).unwrap_or_else(|e| panic!("no report ({e}); stderr: {stderr}"));
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(&json).expect("report is JSON"),
        stdout,
        stderr,
    )
}

/// The exact count of `syscall` in `abi` in a run report (0 if absent).
pub fn count_of(report: &serde_json::Value, abi: &str, syscall: &str) -> u64 {
    report["counts"]
        .as_array()
        .expect("counts")
        .iter()
        .find(|c| c["abi"] == abi && c["syscall"] == syscall)
        .map_or(0, |c| c["count"].as_u64().expect("count"))
}

/// The violation row of `syscall` in a run report.
pub fn violation<'a>(
    report: &'a serde_json::Value,
    syscall: &str,
) -> Option<&'a serde_json::Value> {
    report["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .find(|v| v["syscall"] == syscall)
}
