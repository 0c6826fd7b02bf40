//! The deny path: BPF LSM hooks fail a denied syscall with EPERM before its side
//! effects. The CI host refuses BPF LSM programs, so these tests are `#[ignore]`d there
//! (reported as ignored, never as passed) and run inside the QEMU VMs, where
//! `cargo xtask vm-test` passes `--include-ignored`.

use serde_json::Value;
use sysfence_tests::{namespaces::*, *};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_sf-syscalls");

fn deny_policy(dir: &std::path::Path, denied: &str, fallback: &str) -> std::path::PathBuf {
    write_policy(
        dir,
        "deny.yaml",
        &policy_yaml(
            "deny",
            &format!(
                "  mode: enforce\n  action: deny\n  fallback: {fallback}\n  include: [runtime-default]\n  deny: [{denied}]\n"
            ),
        ),
    )
}

/// Run `sf-syscalls try OP` under a policy denying `syscall`; check EPERM, no side
/// effect, and a `denied` report naming the hook.
fn assert_denied(syscall: &str, op: &str) -> Value {
    assert_denied_with(syscall, op, "Operation not permitted")
}

fn assert_denied_with(syscall: &str, op: &str, error: &str) -> Value {
    assert!(privileged(op));
    let dir = tempfile::tempdir().unwrap();
    let p = deny_policy(dir.path(), syscall, "kill");
    let target = dir.path().join("target");
    let (code, report, stdout, stderr) =
        run(&p, None, &[WORKLOAD, "try", op, target.to_str().unwrap()]);
    assert_eq!(code, 0, "the workload survives a denial: {stdout}{stderr}");
    assert!(
        stdout.contains(&format!("{op}: error: {error}")),
        "{op}: {stdout}"
    );
    assert!(
        !stdout.contains("side-effect: present"),
        "{op} had its effect: {stdout}"
    );
    let v =
        violation(&report, syscall).unwrap_or_else(|| panic!("no {syscall} violation: {report:#}"));
    assert_eq!(v["outcome"], "denied", "{v:#}");
    assert!(v["hook"].is_string(), "the denying hook is named: {v:#}");
    report
}

#[test]
#[ignore = "needs BPF LSM: runs in the QEMU VMs (cargo xtask vm-test)"]
fn denied_mkdir_fails_with_eperm_and_creates_nothing() {
    let report = assert_denied("mkdir", "mkdir");
    assert_eq!(violation(&report, "mkdir").unwrap()["comm"], "sf-syscalls");
}

#[test]
#[ignore = "needs BPF LSM: runs in the QEMU VMs (cargo xtask vm-test)"]
fn denied_mount_fails_before_mounting() {
    assert_denied("mount", "mount");
}

#[test]
#[ignore = "needs BPF LSM: runs in the QEMU VMs (cargo xtask vm-test)"]
fn denied_unshare_creates_no_user_namespace() {
    assert_denied("unshare", "unshare-user");
}

#[test]
#[ignore = "needs BPF LSM: runs in the QEMU VMs (cargo xtask vm-test)"]
fn denied_ptrace_attaches_nothing() {
    assert_denied("ptrace", "ptrace-attach");
}

#[test]
#[ignore = "needs BPF LSM: runs in the QEMU VMs (cargo xtask vm-test)"]
fn denied_bpf_creates_no_map() {
    assert_denied("bpf", "bpf");
}

#[test]
#[ignore = "needs BPF LSM: runs in the QEMU VMs (cargo xtask vm-test)"]
fn denied_keyctl_creates_no_keyring() {
    assert_denied("keyctl", "keyctl");
}

#[test]
#[ignore = "needs BPF LSM: runs in the QEMU VMs (cargo xtask vm-test)"]
fn denied_init_module_loads_nothing() {
    assert_denied("init_module", "init_module");
}

#[test]
#[ignore = "needs BPF LSM: runs in the QEMU VMs (cargo xtask vm-test)"]
fn denied_open_by_handle_at_opens_nothing() {
    assert_denied("open_by_handle_at", "open_by_handle_at");
}

#[test]
#[ignore = "needs BPF LSM: runs in the QEMU VMs (cargo xtask vm-test)"]
fn denied_perf_event_open_opens_nothing() {
    // Debian's kernels keep perf_event_paranoid at 3 and check capable(CAP_SYS_ADMIN)
    // first, turning the `capable` hook's EPERM into EACCES; elsewhere the
    // perf_event_open hook denies with EPERM. Either way it fails before any effect.
    let paranoid =
        std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").unwrap_or_default();
    let error = if paranoid.trim() == "3" {
        "Permission denied"
    } else {
        "Operation not permitted"
    };
    let report = assert_denied_with("perf_event_open", "perf_event_open", error);
    let hook = violation(&report, "perf_event_open").unwrap()["hook"].clone();
    assert!(hook == "capable" || hook == "perf_event_open", "{hook}");
}

/// getppid passes no LSM hook: it cannot be prevented; the fallback decides.
#[test]
#[ignore = "needs BPF LSM: runs in the QEMU VMs (cargo xtask vm-test)"]
fn a_syscall_no_hook_sees_is_not_preventable_and_the_fallback_applies() {
    assert!(privileged("not-preventable"));
    let dir = tempfile::tempdir().unwrap();
    let allow = deny_policy(dir.path(), "getppid", "allow");
    let (code, report, stdout, _) = run(&allow, None, &[WORKLOAD, "try", "getppid"]);
    assert_eq!(code, 0, "fallback allow lets it run: {stdout}");
    assert!(stdout.contains("getppid: ok"), "{stdout}");
    let v = violation(&report, "getppid").expect("getppid violation");
    assert_eq!(v["outcome"], "not-preventable", "{v:#}");
    assert_eq!(v.get("fallback_killed"), None);

    let kill = deny_policy(dir.path(), "getppid", "kill");
    let (code, report, _, _) = run(&kill, None, &[WORKLOAD, "try", "getppid"]);
    assert_eq!(
        code, 137,
        "fallback kill kills after the syscall: {report:#}"
    );
    let v = violation(&report, "getppid").expect("getppid violation");
    assert_eq!(v["outcome"], "not-preventable", "{v:#}");
    assert_eq!(v["fallback_killed"], true, "{v:#}");
}

/// With the deny path attached, everything the policy allows behaves as before.
#[test]
#[ignore = "needs BPF LSM: runs in the QEMU VMs (cargo xtask vm-test)"]
fn allowed_syscalls_behave_as_before() {
    assert!(privileged("allowed_syscalls_behave_as_before"));
    let dir = tempfile::tempdir().unwrap();
    let p = deny_policy(dir.path(), "mount", "kill");
    let file = dir.path().join("f");
    let script = format!(
        "echo hello > {0} && cat {0} && mkdir {0}.d && ls -d {0}.d",
        file.display()
    );
    let (code, report, stdout, stderr) = run(&p, None, &["/bin/sh", "-c", &script]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("hello"), "{stdout}");
    assert!(
        report["violations"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    let (code, report, _, _) = run(&p, None, &[WORKLOAD, "getppid", "1000"]);
    assert_eq!(code, 0);
    assert_eq!(count_of(&report, "x86_64", "getppid"), 1000);
}

/// io_uring operations never pass sys_enter, but they reach the LSM hooks: a denied
/// mkdirat submitted through a ring fails with EPERM too, and is reported as such.
#[test]
#[ignore = "needs BPF LSM: runs in the QEMU VMs (cargo xtask vm-test)"]
fn io_uring_work_reaching_the_hooks_is_denied_too() {
    assert!(privileged("io_uring_work_reaching_the_hooks_is_denied_too"));
    let dir = tempfile::tempdir().unwrap();
    let p = write_policy(
        dir.path(),
        "uring.yaml",
        &policy_yaml(
            "uring",
            "  mode: enforce\n  action: deny\n  fallback: kill\n  include: [runtime-default]\n  allow: [io_uring_setup, io_uring_enter]\n  deny: [mkdir, mkdirat]\n",
        ),
    );
    let target = dir.path().join("made-through-the-ring");
    let (code, report, stdout, stderr) = run(
        &p,
        None,
        &[WORKLOAD, "try", "uring-mkdirat", target.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("uring-mkdirat: error: Operation not permitted"),
        "{stdout}"
    );
    assert!(!target.exists(), "the ring's mkdirat ran");
    let v = violation(&report, "mkdirat").expect("mkdirat violation through io_uring");
    assert_eq!(v["outcome"], "denied", "{v:#}");
    assert_eq!(v["via_io_uring"], true, "{v:#}");
    assert_eq!(v["hook"], "inode_mkdir", "{v:#}");
}

/// io_uring work that runs after the syscall that submitted it has returned is judged
/// by its owner's policy too. io_uring's task_work runs it in the submitting task,
/// between its syscalls: a recv armed with `IORING_RECVSEND_POLL_FIRST` once a write
/// of the task makes it ready, an accept armed with `IORING_ACCEPT_POLL_FIRST` (kernels
/// from 6.10) once a connect does, an accept linked after a nop once the nop is done.
/// Each is checked to work where the policy allows it, then to fail with EPERM, having
/// received or accepted nothing, where it denies recv and accept.
#[test]
#[ignore = "needs BPF LSM: runs in the QEMU VMs (cargo xtask vm-test)"]
fn io_uring_work_deferred_past_its_syscall_is_denied_too() {
    assert!(privileged(
        "io_uring_work_deferred_past_its_syscall_is_denied_too"
    ));
    let dir = tempfile::tempdir().unwrap();
    let spec = |deny: &str| {
        format!(
            "  mode: enforce\n  action: deny\n  fallback: kill\n  include: [runtime-default]\n  allow: [io_uring_setup, io_uring_enter]\n  deny: [{deny}]\n"
        )
    };
    let allowing = write_policy(
        dir.path(),
        "ring.yaml",
        &policy_yaml("ring", &spec("mkdir")),
    );
    let denying = write_policy(
        dir.path(),
        "no-recv.yaml",
        &policy_yaml(
            "no-recv",
            &spec("recvfrom, recvmsg, recvmmsg, accept, accept4"),
        ),
    );
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut numbers = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let kernel = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    for (op, syscall, hook) in [
        ("uring-recv-poll-first", "recvmsg", "socket_recvmsg"),
        ("uring-accept-poll-first", "accept4", "socket_accept"),
        ("uring-linked-accept", "accept4", "socket_accept"),
    ] {
        let (code, _, stdout, stderr) = run(&allowing, None, &[WORKLOAD, "try", op]);
        assert_eq!(code, 0, "{op} allowed: {stdout}{stderr}");
        if stdout.contains(&format!("{op}: unsupported")) {
            assert!(kernel < (6, 10), "{op} refused by {release}");
            eprintln!("{op}: not on {}: the flag came in 6.10", release.trim());
            continue;
        }
        assert!(
            stdout.contains(&format!("{op}: ok")) && stdout.contains("side-effect: present"),
            "{op} allowed: {stdout}"
        );

        let (code, report, stdout, stderr) = run(&denying, None, &[WORKLOAD, "try", op]);
        assert_eq!(code, 0, "{op} denied: {stdout}{stderr}");
        assert!(
            stdout.contains(&format!("{op}: error: Operation not permitted")),
            "{op} denied: {stdout}"
        );
        assert!(stdout.contains("side-effect: none"), "{op} ran: {stdout}");
        let v = violation(&report, syscall)
            .unwrap_or_else(|| panic!("no {syscall} violation for {op}: {report:#}"));
        assert_eq!(v["outcome"], "denied", "{v:#}");
        assert_eq!(v["via_io_uring"], true, "{v:#}");
        assert_eq!(v["hook"], hook, "{v:#}");
    }
}

/// Self-protection: a policed task may not signal the agent nor change bpffs, whatever
/// its policy allows; the same calls from outside any policed cgroup work.
#[test]
#[ignore = "needs BPF LSM: runs in the QEMU VMs (cargo xtask vm-test)"]
fn a_policed_task_cannot_signal_the_agent_or_write_bpffs() {
    assert!(privileged(
        "a_policed_task_cannot_signal_the_agent_or_write_bpffs"
    ));
    let (base, _base, _dir, policies) = scene("guard");
    // Audit: nothing in the policy itself stops kill(2) or mkdir(2).
    write_policy(
        &policies,
        "p.yaml",
        &policy_yaml(
            "guarded",
            &format!(
                "  selector:\n    cgroupPath: \"{base}/*\"\n  mode: audit\n  include: [runtime-default]\n"
            ),
        ),
    );
    let work = TestCgroup::create(&format!("{base}/w"));
    let agent = sysfence_tests::agent::Agent::builder(&policies)
        .no_cri()
        .start();
    let guard = agent.wait_line("self-protection", |v| {
        v["event"] == "self_protection" || v["event"] == "self_protection_unavailable"
    });
    assert_eq!(guard["event"], "self_protection", "{guard}");
    agent.wait_line("the binding of w", |v| v["event"] == "bound");
    let pid = agent.pid().to_string();

    for sig in ["0", "9"] {
        let out = work
            .command(WORKLOAD)
            .args(["kill", &pid, sig])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("kill: Operation not permitted"),
            "signal {sig} to the agent: {stdout}"
        );
    }
    let status = agent.api(&serde_json::json!({"op": "status"}));
    assert_eq!(status["ok"], true, "the agent survived: {status}");
    let v = agent.wait_line("the refused kill", |v| {
        v["event"] == "violation" && v["self_protection"] == true && v["hook"] == "task_kill"
    });
    assert_eq!(v["outcome"], "denied", "{v}");
    assert_eq!(v["syscall"], "kill", "{v}");

    let target = format!("/sys/fs/bpf/sysfence-guard-{}", std::process::id());
    let out = work
        .command(WORKLOAD)
        .args(["mkdir", &target])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("mkdir: Operation not permitted"),
        "mkdir on bpffs: {stdout}"
    );
    assert!(!std::path::Path::new(&target).exists());
    let pin = agent.pin_path.join(PIN_LAYOUT).join("WORKLOADS");
    let out = work
        .command("/bin/rm")
        .arg("-f")
        .arg(&pin)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a pin was removed from a policed task"
    );
    assert!(pin.exists());

    // From outside any policed cgroup: allowed.
    let out = std::process::Command::new(WORKLOAD)
        .args(["kill", &pid, "0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("kill: ok"));
    std::fs::create_dir(&target).unwrap();
    std::fs::remove_dir(&target).unwrap();
}

/// Under `action: deny`, clone and clone3 asking for new namespaces fail (EPERM, or the
/// errno chosen) before any child exists, and the caller lives on; threads and forks
/// keep working. The race on clone3's flags in memory gets no child into a new
/// namespace either.
#[test]
#[ignore = "needs BPF LSM: runs in the QEMU VMs (cargo xtask vm-test)"]
fn namespace_flags_are_denied_with_their_errno_before_any_child_exists() {
    assert!(privileged(
        "namespace_flags_are_denied_with_their_errno_before_any_child_exists"
    ));
    let own = own_user_namespace();
    let dir = tempfile::tempdir().unwrap();
    // runtime-default (namespaces: deny, Docker's clone rule), and Docker's way of
    // failing clone3 with ENOSYS.
    let shipped = write_policy(
        dir.path(),
        "shipped.yaml",
        &policy_yaml(
            "ns-deny",
            "  mode: enforce\n  action: deny\n  include: [runtime-default]\n",
        ),
    );
    let enosys = write_policy(
        dir.path(),
        "enosys.yaml",
        &policy_yaml(
            "ns-enosys",
            "  mode: enforce\n  action: deny\n  include: [runtime-default]\n  namespaces: allow\n  deny: [clone3]\n  errno: {clone3: ENOSYS}\n",
        ),
    );
    // Each run loads the probe and its hooks (slow under TCG): the clone entries once,
    // under the shipped policy; clone3's errno under both.
    // (verb, flags, the error the caller sees)
    type Attempt<'a> = (&'a str, &'a str, &'a str);
    let cases: [(&std::path::Path, &[Attempt]); 2] = [
        (
            &shipped,
            &[
                ("clone", NEW_USER_NET_UTS, "Operation not permitted"),
                ("clone80", NEW_USER_NET_UTS, "Operation not permitted"),
                ("clone3", NEW_USER_NET_UTS, "Operation not permitted"),
            ],
        ),
        (
            &enosys,
            &[("clone3", NEW_USER_NET_UTS, "Function not implemented")],
        ),
    ];
    for (policy, attempts) in cases {
        for &(verb, flags, error) in attempts {
            let marker = dir.path().join(format!("{verb}-{flags}"));
            let _ = std::fs::remove_file(&marker);
            let (code, report, stdout, stderr) = run(
                policy,
                None,
                &[WORKLOAD, verb, flags, marker.to_str().unwrap()],
            );
            assert!(
                stdout.contains(&format!("error: {error}")),
                "{verb} {flags}: {stdout}{stderr}"
            );
            assert_ne!(code, 137, "{verb} {flags}: denied, not killed: {stdout}");
            assert!(
                children_namespaces(&marker).is_empty(),
                "{verb} {flags}: a child ran"
            );
            let syscall = if verb == "clone3" { "clone3" } else { "clone" };
            let v = violation(&report, syscall).unwrap_or_else(|| panic!("{report:#}"));
            assert_eq!(v["outcome"], "denied", "{v:#}");
            // The report names the flags that decided it (clone3 denied outright, as
            // under `enosys`, was decided by its number alone).
            if policy == shipped.as_path() {
                let args = v["args"].as_str().unwrap_or_default();
                assert!(args.contains("NEWUSER"), "{v:#}");
            }
        }
        // Threads (glibc tries clone3, and falls back to clone on ENOSYS) and forks.
        let (code, _, stdout, stderr) = run(
            policy,
            None,
            &[
                "/bin/sh",
                "-c",
                &format!("{WORKLOAD} threads 8 && {WORKLOAD} fork-exec /bin/true"),
            ],
        );
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(stdout.contains("threads: ok 28"), "{stdout}");
        assert!(stdout.contains("fork-exec: ok 0"), "{stdout}");
    }
    // The race and the untouched mapping: whatever happens to the caller, no child
    // ever runs in another user namespace.
    for verb in [
        vec!["clone3-race", NEW_USER_NET_UTS, "", "200"],
        vec!["clone3-unmapped", NEW_USER_NET_UTS, ""],
    ] {
        let marker = dir.path().join(verb[0]);
        let mut cmd: Vec<&str> = vec![WORKLOAD];
        cmd.extend(verb.iter().map(|a| {
            if a.is_empty() {
                marker.to_str().unwrap()
            } else {
                a
            }
        }));
        let (_, report, stdout, _) = run(&shipped, None, &cmd);
        for ns in children_namespaces(&marker) {
            assert_eq!(
                ns, own,
                "{}: a child ran in another user namespace: {stdout}\n{report:#}",
                verb[0]
            );
        }
    }
}

/// Docker's default seccomp profile, imported as is and enforced with `action: deny`:
/// clone asking for namespaces fails with EPERM, clone3 with Docker's own ENOSYS, and
/// glibc's threads fall back to clone and work.
#[test]
#[ignore = "needs BPF LSM: runs in the QEMU VMs (cargo xtask vm-test)"]
fn docker_default_imported_denies_namespaces_with_its_errnos() {
    assert!(privileged(
        "docker_default_imported_denies_namespaces_with_its_errnos"
    ));
    let own = own_user_namespace();
    let dir = tempfile::tempdir().unwrap();
    let yaml = import_docker_default(dir.path());
    let p = dir.path().join("docker-deny.yaml");
    std::fs::write(
        &p,
        yaml.replace("mode: audit", "mode: enforce\n  action: deny"),
    )
    .unwrap();
    for (verb, error) in [
        ("clone", "Operation not permitted"),
        ("clone3", "Function not implemented"),
    ] {
        let marker = dir.path().join(verb);
        let (code, report, stdout, stderr) = run(
            &p,
            None,
            &[WORKLOAD, verb, NEW_USER_NET_UTS, marker.to_str().unwrap()],
        );
        assert!(
            stdout.contains(&format!("error: {error}")),
            "{verb}: {stdout}{stderr}\n{report:#}"
        );
        assert_ne!(code, 137, "{verb}: denied, not killed");
        assert!(children_namespaces(&marker).iter().all(|ns| *ns == own));
        assert!(
            children_namespaces(&marker).is_empty(),
            "{verb}: a child ran"
        );
    }
    let (code, _, stdout, stderr) = run(
        &p,
        None,
        &[
            "/bin/sh",
            "-c",
            &format!("{WORKLOAD} threads 8 && {WORKLOAD} fork-exec /bin/true"),
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("threads: ok 28") && stdout.contains("fork-exec: ok 0"),
        "{stdout}"
    );
}
