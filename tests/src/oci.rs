//! Container runtimes for the integration tests: root filesystems from busybox-static,
//! OCI bundles, a hand-made static entrypoint, containerd with its own state, and guards
//! that clean all of it up (on failure too). The agent lives in [`crate::agent`]; it is
//! re-exported here, where the tests first found it.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

pub use crate::agent::{Agent, AgentBuilder};
use crate::{cgroup_root, remove_cgroup_tree, wait_for};

/// Whether this runs inside the QEMU VM of `cargo xtask vm-test` (its /init says so).
pub fn in_sysfence_vm() -> bool {
    fs::read_to_string("/init").is_ok_and(|s| s.contains("sysfence VM test runner"))
}

/// Whether cgroup v1 controllers are mounted beside cgroup v2 (a hybrid host).
pub fn is_hybrid() -> bool {
    fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines().any(|l| {
            l.split_once(" - ")
                .is_some_and(|(_, r)| r.split_whitespace().next() == Some("cgroup"))
        })
    })
}

/// The cgroup v1 hierarchies mounted (their mount points).
pub fn v1_mounts() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines()
                .filter_map(|l| {
                    let (left, right) = l.split_once(" - ")?;
                    (right.split_whitespace().next()? == "cgroup")
                        .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A program on PATH (or the sbin directories, which a test's PATH may lack).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The binaries a test needs. Missing ones: under CI=true the test fails with the
/// reason; elsewhere it says what is missing and is skipped. In the QEMU VM, whose
/// initramfs carries no container runtime, tests of host runtimes are not run (they run
/// on the host in the same `cargo xtask test`), unless `in_vm_too`.
pub fn require(test: &str, binaries: &[&str], in_vm_too: bool) -> Option<Vec<PathBuf>> {
    let found: Vec<Option<PathBuf>> = binaries.iter().map(|b| which(b)).collect();
    let missing: Vec<&str> = binaries
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(b, _)| *b)
        .collect();
    if missing.is_empty() {
        return Some(found.into_iter().map(Option::unwrap).collect());
    }
    let why = format!(
        "missing {} (Debian packages: runc, crun, runsc, containerd; `cargo xtask test` installs them)",
        missing.join(", ")
    );
    if in_sysfence_vm() && !in_vm_too {
        eprintln!(
            "{test}: host-only test, not run in the VM ({why}); it runs on the host in `cargo xtask test`"
        );
        return None;
    }
    crate::skip(test, &why);
    None
}

/// A root filesystem: busybox and the applets asked for, and the mount points.
pub fn busybox_rootfs(dir: &Path, applets: &[&str]) -> PathBuf {
    let rootfs = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("busybox-static is installed");
    fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    for a in applets {
        let link = rootfs.join("bin").join(a);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    rootfs
}

/// A static x86_64 executable whose very first instruction after `execve` is syscall
/// `nr` (no arguments); if it survives, it writes `SURVIVED\n` to stdout and exits 0.
/// 169 bytes: an ELF header, one program header, the code and the message.
pub fn first_syscall_elf(nr: u32) -> Vec<u8> {
    let mut code = Vec::new();
    code.push(0xb8);
    code.extend(nr.to_le_bytes()); // mov eax, nr
    code.extend([0x0f, 0x05]); // syscall
    code.extend([0xb8, 1, 0, 0, 0]); // mov eax, 1 (write)
    code.extend([0xbf, 1, 0, 0, 0]); // mov edi, 1
    code.extend([0x48, 0x8d, 0x35, 16, 0, 0, 0]); // lea rsi, [rip + 16] (the message)
    code.extend([0xba, 9, 0, 0, 0]); // mov edx, 9
    code.extend([0x0f, 0x05]); // syscall
    code.extend([0xb8, 231, 0, 0, 0]); // mov eax, 231 (exit_group)
    code.extend([0x31, 0xff]); // xor edi, edi
    code.extend([0x0f, 0x05]); // syscall
    assert_eq!(code.len(), 40);
    code.extend(b"SURVIVED\n");
    static_elf(&code)
}

/// Write `BUNDLE/config.json` from `RUNTIME spec`, without `process.rlimits` (raising
/// them needs CAP_SYS_RESOURCE, which the CI host lacks), no terminal, `args`, and the
/// cgroup `cgroups_path`.
pub fn write_bundle_config(bundle: &Path, runtime: &Path, args: &[&str], cgroups_path: &str) {
    let _ = fs::remove_file(bundle.join("config.json"));
    let out = Command::new(runtime)
        .arg("spec")
        .current_dir(bundle)
        .output()
        .expect("runtime spec");
    assert!(
        out.status.success(),
        "{} spec: {}",
        runtime.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut config: Value =
        serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    set_bundle_process(&mut config, args, cgroups_path);
    fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
}

/// Edit a parsed `config.json`: args, cgroup path, no rlimits, no terminal.
pub fn set_bundle_process(config: &mut Value, args: &[&str], cgroups_path: &str) {
    let process = config["process"].as_object_mut().expect("process");
    process.remove("rlimits");
    process.insert("terminal".into(), json!(false));
    process.insert("args".into(), json!(args));
    config["linux"]["cgroupsPath"] = json!(cgroups_path);
}

/// A wrapper script that runs `runtime` through `sysfence wrap` with `socket`, as a
/// node would install it.
pub fn write_wrapper(dir: &Path, runtime: &Path, socket: &Path) -> PathBuf {
    let bin = crate::bin_dir().join("sysfence");
    let path = dir.join(format!(
        "sysfence-{}",
        runtime.file_name().unwrap().to_string_lossy()
    ));
    fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec {} wrap --socket {} --runtime {} -- \"$@\"\n",
            bin.display(),
            socket.display(),
            runtime.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Whether a runtime's error says the container does not exist (runc, crun: "does not
/// exist"; runsc: "not found" / "no such file").
fn gone(stderr: &[u8]) -> bool {
    let e = String::from_utf8_lossy(stderr).to_lowercase();
    ["does not exist", "not found", "no such file", "not exist"]
        .iter()
        .any(|s| e.contains(s))
}

/// Containers of one runtime root, deleted (forcibly) on drop.
pub struct Containers {
    pub runtime: PathBuf,
    pub root: PathBuf,
    ids: Vec<String>,
}

impl Containers {
    pub fn new(runtime: &Path, root: &Path) -> Containers {
        Containers {
            runtime: runtime.to_path_buf(),
            root: root.to_path_buf(),
            ids: Vec::new(),
        }
    }

    pub fn track(&mut self, id: &str) {
        self.ids.push(id.to_string());
    }

    /// `RUNTIME --root ROOT ARGS`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.runtime);
        c.arg("--root").arg(&self.root).args(args);
        c
    }

    /// `create` (stdout to `out`, stderr beside it), then `start`; the container's init
    /// pid and how long `start` took. The init inherits the output files (files, not
    /// pipes: reading a pipe to its end would wait for the container).
    pub fn create_and_start(&mut self, bundle: &Path, id: &str, out: &Path) -> (i32, Duration) {
        let runtime = self.runtime.file_name().unwrap_or_default().to_owned();
        let runtime = runtime.to_string_lossy();
        let pid_file = bundle.join(format!("{id}.pid"));
        let err_file = out.with_extension("err");
        let created = self
            .cmd(&["create", "--bundle"])
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(fs::File::create(out).unwrap())
            .stderr(fs::File::create(&err_file).unwrap())
            .status()
            .unwrap();
        self.track(id);
        assert!(
            created.success(),
            "{runtime} create {id}: {}",
            fs::read_to_string(&err_file).unwrap_or_default()
        );
        let pid: i32 = fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let t = Instant::now();
        let started = self.cmd(&["start", id]).output().unwrap();
        let took = t.elapsed();
        assert!(
            started.status.success(),
            "{runtime} start {id}: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        (pid, took)
    }

    /// `delete --force ID`, tried up to three times: on a loaded machine a runtime can
    /// fail it once (runsc's sandbox may not answer in time). A last failure is said on
    /// stderr, so that a test that then waits for the container to go can tell why.
    pub fn delete(&mut self, id: &str) {
        for attempt in 1..=3 {
            let out = self
                .cmd(&["delete", "--force", id])
                .stdin(Stdio::null())
                .output();
            match out {
                Ok(o) if o.status.success() || gone(&o.stderr) => break,
                Ok(o) if attempt == 3 => eprintln!(
                    "{} delete --force {id}: {}: {}",
                    self.runtime.display(),
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) if attempt == 3 => {
                    eprintln!("{} delete --force {id}: {e}", self.runtime.display())
                }
                _ => std::thread::sleep(Duration::from_millis(500)),
            }
        }
        self.ids.retain(|i| i != id);
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        for id in self.ids.clone() {
            self.delete(&id);
        }
    }
}

/// Cgroup subtrees a runtime made for a test (below the v2 root and below every v1
/// hierarchy), removed deepest first on drop.
pub struct CgroupTrees(pub Vec<String>);

impl Drop for CgroupTrees {
    fn drop(&mut self) {
        for rel in &self.0 {
            if let Some(root) = cgroup_root() {
                remove_cgroup_tree(&root.join(rel));
            }
            for v1 in v1_mounts() {
                remove_cgroup_tree(&v1.join(rel));
            }
        }
    }
}

/// Make this process the reaper of orphaned descendants (a container's init, once
/// `RUNTIME create` exits), so that their exit status can be read.
pub fn become_subreaper() {
    // SAFETY: plain prctl on this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER");
}

/// Wait for a (reparented) child to exit; its raw wait status.
pub fn wait_pid(pid: i32, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on a specific pid with a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(status);
        }
        if r < 0 || Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Unmount everything mounted below `dir`, deepest first (lazily).
pub fn unmount_below(dir: &Path) {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(PathBuf::from))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        if let Ok(c) = std::ffi::CString::new(p.into_os_string().into_encoded_bytes()) {
            // SAFETY: a valid C string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Processes whose program is named `program*` and whose command line contains
/// `needle` (how the test finds the containerd shims its own containerd started: their
/// `-address` names the test's socket).
pub fn pids_with_cmdline(program: &str, needle: &str) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let argv0 = c.split(|&b| b == 0).next().unwrap_or_default();
                let argv0 = String::from_utf8_lossy(argv0);
                argv0.rsplit('/').next().unwrap_or("").starts_with(program)
                    && String::from_utf8_lossy(&c).contains(needle)
            })
        })
        .collect()
}

/// A docker-archive (`docker save` format) image of one layer holding `rootfs`.
pub fn docker_archive(rootfs: &Path, tag: &str, cmd: &[&str], out: &Path) {
    use sha2::Digest as _;
    let work = out.with_extension("d");
    fs::create_dir_all(&work).unwrap();
    let layer = work.join("layer.tar");
    let st = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(rootfs)
        .arg("-cf")
        .arg(&layer)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar of the layer");
    let diff_id = format!(
        "sha256:{:x}",
        sha2::Sha256::digest(fs::read(&layer).unwrap())
    );
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{:x}.json", sha2::Sha256::digest(&config_bytes));
    fs::write(work.join(&config_name), config_bytes).unwrap();
    fs::write(
        work.join("manifest.json"),
        serde_json::to_vec(&json!([{
            "Config": config_name,
            "RepoTags": [tag],
            "Layers": ["layer.tar"],
        }]))
        .unwrap(),
    )
    .unwrap();
    let st = Command::new("tar")
        .arg("-C")
        .arg(&work)
        .arg("-cf")
        .arg(out)
        .args(["manifest.json", &config_name, "layer.tar"])
        .status()
        .unwrap();
    assert!(st.success(), "tar of the image");
    fs::remove_dir_all(&work).unwrap();
}

/// containerd started by a test: its config, state and socket in `dir`. Dropping it
/// kills the shims it started and containerd itself (by PID), unmounts what it left
/// below `dir`, and removes the cgroups its pods used.
pub struct Containerd {
    child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub cgroups: Vec<String>,
    log: PathBuf,
}

impl Containerd {
    /// Start containerd with the CRI plugin, runc through `runtime_binary` (the
    /// sysfence wrapper), images `localhost/pause:local` and `localhost/busybox:local`
    /// imported from `rootfs`.
    pub fn start(dir: &Path, runtime_binary: &Path, rootfs: &Path) -> Containerd {
        fs::create_dir_all(dir).unwrap();
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        fs::write(
            &config,
            format!(
                r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:local"
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{binary}"
        Root = "{dir}/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{dir}/cni/bin"
    conf_dir = "{dir}/cni/conf"
"#,
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                socket = socket.display(),
                dir = dir.display(),
                binary = runtime_binary.display(),
            ),
        )
        .unwrap();
        let log = dir.join("containerd.log");
        let child = Command::new(which("containerd").expect("containerd"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("start containerd");
        let mut c = Containerd {
            child,
            dir: dir.to_path_buf(),
            socket: socket.clone(),
            cgroups: Vec::new(),
            log,
        };
        if wait_for(Duration::from_secs(30), || socket.exists().then_some(())).is_none() {
            panic!(
                "containerd did not listen on {}:\n{}",
                socket.display(),
                c.log_tail()
            );
        }
        for (tag, cmd) in [
            ("localhost/pause:local", vec!["/bin/sleep", "inf"]),
            ("localhost/busybox:local", vec!["/bin/sh"]),
        ] {
            let archive = dir.join(format!("{}.tar", tag.replace(['/', ':'], "_")));
            docker_archive(rootfs, tag, &cmd, &archive);
            let out = Command::new(which("ctr").expect("ctr"))
                .arg("--address")
                .arg(&socket)
                .args(["-n", "k8s.io", "images", "import"])
                .arg(&archive)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ctr images import {tag}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        c.cgroups.clear();
        c
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(40).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let needle = self.socket.display().to_string();
        for pid in pids_with_cmdline("containerd-shim", &needle) {
            if pid as u32 != self.child.id() {
                // SAFETY: a shim started for our containerd (its command line names
                // our private socket), by PID.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        // SAFETY: the containerd we started, by PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let stopped = wait_for(Duration::from_secs(10), || {
            self.child.try_wait().ok().flatten().map(|_| ())
        });
        if stopped.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        unmount_below(&self.dir);
        drop(CgroupTrees(self.cgroups.clone()));
    }
}

/// The labels kubelet puts on a pod sandbox, plus the pod's own labels.
pub fn kubelet_pod_labels(
    name: &str,
    namespace: &str,
    uid: &str,
    pod_labels: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> = pod_labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.insert("io.kubernetes.pod.name".into(), name.into());
    l.insert("io.kubernetes.pod.namespace".into(), namespace.into());
    l.insert("io.kubernetes.pod.uid".into(), uid.into());
    l
}

/// The labels kubelet puts on a container.
pub fn kubelet_container_labels(
    container: &str,
    pod: &str,
    namespace: &str,
    uid: &str,
) -> BTreeMap<String, String> {
    let mut l = kubelet_pod_labels(pod, namespace, uid, &[]);
    l.insert("io.kubernetes.container.name".into(), container.into());
    l
}

/// A static x86_64 executable that makes each `(nr, times)` syscall `times` times (at
/// least once), in order, with `rdi` = the path `"/d"` and `rsi` = 0o755 (so `mkdir` and
/// the like have valid arguments; other calls ignore them), then `exit_group(0)`. Its
/// only syscalls are those: nothing runs before its first instruction.
pub fn repeat_syscalls_elf(calls: &[(u32, u32)]) -> Vec<u8> {
    let mut code = Vec::new();
    let mut path_refs = Vec::new();
    for &(nr, times) in calls {
        assert!(times >= 1, "syscall {nr}: at least once");
        code.extend([0x41, 0xbc]);
        code.extend(times.to_le_bytes()); // mov r12d, times
        let top = code.len();
        code.push(0xb8);
        code.extend(nr.to_le_bytes()); // mov eax, nr
        code.extend([0x48, 0x8d, 0x3d]); // lea rdi, [rip + rel32] (the path)
        path_refs.push(code.len());
        code.extend([0u8; 4]);
        code.extend([0xbe, 0xed, 0x01, 0, 0]); // mov esi, 0o755
        code.extend([0x0f, 0x05]); // syscall
        code.extend([0x41, 0xff, 0xcc]); // dec r12d
        let back = i8::try_from(top as isize - (code.len() as isize + 2)).expect("short loop");
        code.extend([0x75, back as u8]); // jnz top
    }
    code.extend([0xb8, 231, 0, 0, 0]); // mov eax, 231 (exit_group)
    code.extend([0x31, 0xff]); // xor edi, edi
    code.extend([0x0f, 0x05]); // syscall
    let path_at = code.len();
    code.extend(b"/d\0");
    for at in path_refs {
        let rel = i32::try_from(path_at - (at + 4)).expect("small program");
        code[at..at + 4].copy_from_slice(&rel.to_le_bytes());
    }
    static_elf(&code)
}

/// `code` as a static x86_64 executable: an ELF header, one R+X `PT_LOAD` program
/// header at 0x400000, the code right after them (its entry point).
fn static_elf(code: &[u8]) -> Vec<u8> {
    let base: u64 = 0x40_0000;
    let total = (64 + 56 + code.len()) as u64;
    let mut elf = Vec::new();
    elf.extend([0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    elf.extend([0u8; 8]);
    elf.extend(2u16.to_le_bytes()); // ET_EXEC
    elf.extend(0x3eu16.to_le_bytes()); // x86_64
    elf.extend(1u32.to_le_bytes());
    elf.extend((base + 64 + 56).to_le_bytes()); // entry
    elf.extend(64u64.to_le_bytes()); // phoff
    elf.extend(0u64.to_le_bytes()); // shoff
    elf.extend(0u32.to_le_bytes()); // flags
    elf.extend(64u16.to_le_bytes()); // ehsize
    elf.extend(56u16.to_le_bytes()); // phentsize
    elf.extend(1u16.to_le_bytes()); // phnum
    elf.extend([0u8; 6]); // shentsize, shnum, shstrndx
    elf.extend(1u32.to_le_bytes()); // PT_LOAD
    elf.extend(5u32.to_le_bytes()); // R+X
    elf.extend(0u64.to_le_bytes()); // offset
    elf.extend(base.to_le_bytes()); // vaddr
    elf.extend(base.to_le_bytes()); // paddr
    elf.extend(total.to_le_bytes()); // filesz
    elf.extend(total.to_le_bytes()); // memsz
    elf.extend(0x1000u64.to_le_bytes()); // align
    elf.extend(code);
    elf
}
