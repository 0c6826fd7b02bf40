//! Syscall ABIs on x86_64: one process, three numberings. The policy is exact about
//! each: an i386 number is judged as the i386 syscall it names.

use sysfence_tests::{agent::Agent, *};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_sf-syscalls");

fn policy(dir: &std::path::Path, spec: &str) -> std::path::PathBuf {
    write_policy(dir, "p.yaml", &policy_yaml("abi", spec))
}

/// i386 21 is `mount`; x86_64 21 is `access`, which runtime-default allows.
#[test]
fn i386_mount_behind_the_number_of_access_is_a_violation() {
    if !privileged("i386_mount_behind_the_number_of_access_is_a_violation") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = policy(dir.path(), "  include: [runtime-default]\n");
    let (code, report, _, _) = run(&p, Some("enforce"), &[WORKLOAD, "int80", "21"]);
    assert_eq!(code, 137, "{report:#}");
    let v = violation(&report, "mount").expect("mount violation");
    assert_eq!(
        (v["abi"].as_str(), v["nr"].as_u64(), v["outcome"].as_str()),
        (Some("i386"), Some(21), Some("killed-after"))
    );
    assert!(violation(&report, "access").is_none());

    // audit: survived, reported as i386 mount, counted once.
    let (code, report, stdout, stderr) = run(&p, Some("audit"), &[WORKLOAD, "int80", "21"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("int80 21 = "), "{stdout}");
    let v = violation(&report, "mount").expect("mount violation");
    assert_eq!(
        (
            v["abi"].as_str(),
            v["outcome"].as_str(),
            v["count"].as_u64()
        ),
        (Some("i386"), Some("audited"), Some(1))
    );
    assert!(
        stderr.contains("mount (i386)"),
        "the summary names the ABI: {stderr}"
    );
    assert_eq!(count_of(&report, "i386", "mount"), 1);
}

/// Under the agent, a process the memo knows (a warm one) has the calls its `enforce`
/// policy allows outright judged by the shortcut, which reads the ABI through the
/// memoised task pointer (`bpf_rdonly_cast`, not the helper). After 10,000 x86_64
/// `access` calls, i386 21 is still `mount`: killed, reported as i386.
#[test]
fn a_warm_process_cannot_pass_i386_mount_as_access_under_the_daemon() {
    if !privileged("a_warm_process_cannot_pass_i386_mount_as_access_under_the_daemon") {
        return;
    }
    let (base, _base, dir, policies) = scene("abi-warm");
    write_policy(
        &policies,
        "p.yaml",
        &policy_yaml(
            "abi-warm",
            &format!(
                "  selector:\n    cgroupPath: \"{base}/*\"\n  mode: enforce\n  include: [runtime-default]\n"
            ),
        ),
    );
    let work = TestCgroup::create(&format!("{base}/w"));
    let agent = Agent::builder(&policies)
        .runtime_socket(&dir.path().join("runtime.sock"))
        .no_cri()
        .start();
    agent.wait_bound_to(&format!("{base}/w"));
    let status = work.run(WORKLOAD, &["int80-warm", "21"]);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "i386 mount after 10,000 x86_64 access calls was not killed: {status:?}"
    );
    let v = agent.wait_line("the i386 mount", |v| {
        v["event"] == "violation"
            && v["syscall"]
                .as_str()
                .is_some_and(|s| s.starts_with("mount"))
    });
    assert_eq!(v["abi"], "i386", "{v}");
    assert_eq!(v["outcome"], "killed-after", "{v}");
}

/// i386 310 is `unshare`; x86_64 310 is `process_vm_readv`.
#[test]
fn i386_unshare_behind_the_number_of_process_vm_readv_is_a_violation() {
    if !privileged("i386_unshare_behind_the_number_of_process_vm_readv_is_a_violation") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = policy(
        dir.path(),
        "  include: [runtime-default]\n  allow: [process_vm_readv]\n",
    );
    let (code, report, _, _) = run(&p, Some("enforce"), &[WORKLOAD, "int80", "310"]);
    assert_eq!(code, 137, "{report:#}");
    let v = violation(&report, "unshare").expect("unshare violation");
    assert_eq!(
        (v["abi"].as_str(), v["nr"].as_u64()),
        (Some("i386"), Some(310))
    );
}

/// An i386 syscall whose name the policy allows passes, and is counted as i386.
#[test]
fn an_allowed_i386_syscall_passes() {
    if !privileged("an_allowed_i386_syscall_passes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = policy(dir.path(), "  include: [runtime-default]\n");
    let (code, report, stdout, stderr) = run(&p, Some("enforce"), &[WORKLOAD, "int80", "20"]);
    assert_eq!(code, 0, "{stderr}");
    let ret: i64 = stdout.trim().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(ret > 0, "i386 getpid returned a pid: {stdout}");
    assert_eq!(count_of(&report, "i386", "getpid"), 1, "{report:#}");
    assert!(
        report["violations"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
}

/// `spec.abi.ia32: deny` stops every int 0x80 syscall, allowed names included.
#[test]
fn ia32_deny_stops_every_i386_syscall() {
    if !privileged("ia32_deny_stops_every_i386_syscall") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = policy(
        dir.path(),
        "  include: [runtime-default]\n  abi:\n    ia32: deny\n",
    );
    let (code, report, _, _) = run(&p, Some("enforce"), &[WORKLOAD, "int80", "20"]);
    assert_eq!(code, 137, "{report:#}");
    let v = violation(&report, "getpid").expect("getpid (i386) violation");
    assert_eq!(v["abi"], "i386");
    // The same name through the x86_64 entry is still allowed.
    let (code, _, _, stderr) = run(&p, Some("enforce"), &[WORKLOAD, "getppid", "3"]);
    assert_eq!(code, 0, "{stderr}");
}

/// What the probe cannot classify (a number past any table) is denied, never allowed.
#[test]
fn an_unclassifiable_syscall_is_a_violation() {
    if !privileged("an_unclassifiable_syscall_is_a_violation") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = policy(dir.path(), "  include: [runtime-default]\n");
    let (code, report, _, _) = run(&p, Some("enforce"), &[WORKLOAD, "raw", "600"]);
    assert_eq!(code, 137, "{report:#}");
    let v = violation(&report, "unclassified").expect("unclassified violation");
    assert_eq!(v["abi"], "unknown");
    assert_eq!(v["outcome"], "killed-after");
}

/// `check` warns about a policy that lets io_uring bypass it, about multiplexers, and
/// that denying `unshare` does not stop namespaces while `clone` is allowed outright.
#[test]
fn check_warns_about_io_uring_and_multiplexers() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(
        dir.path(),
        "  include: [runtime-default, ia32-multiplexers]\n  allow: [io_uring_setup, io_uring_enter, clone]\n  namespaces: allow\n",
    );
    let out = sysfence().arg("check").arg(&p).output().unwrap();
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "warnings do not fail check: {stderr}");
    assert!(
        stderr.contains("p.yaml:7:")
            && stderr.contains("io_uring ring")
            && stderr.contains("never pass sys_enter"),
        "{stderr}"
    );
    assert!(
        stderr.contains("allowing `socketcall` (i386) widens the policy"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`unshare` is not allowed, but `clone` and `clone3` are"),
        "{stderr}"
    );
    assert!(stderr.contains("4 warnings"), "{stderr}");
}

/// x32: x86_64 numbers with `__X32_SYSCALL_BIT`, judged in the x32 table. The CI host
/// has x32 off; the VMs boot with `syscall.x32=y` and run this.
#[test]
#[ignore = "needs a kernel with x32 syscalls on: runs in the QEMU VMs (syscall.x32=y)"]
fn x32_syscalls_are_judged_as_x32() {
    assert!(privileged("x32_syscalls_are_judged_as_x32"));
    let x32_getpid = (0x4000_0000u64 + 39).to_string();
    let out = std::process::Command::new(WORKLOAD)
        .args(["raw", &x32_getpid])
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    let ret: i64 = stdout.trim().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        ret > 0,
        "x32 syscalls are not enabled on this kernel: {stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    let p = policy(dir.path(), "  include: [runtime-default]\n");
    let (code, report, stdout, stderr) = run(&p, Some("enforce"), &[WORKLOAD, "raw", &x32_getpid]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(count_of(&report, "x32", "getpid"), 1, "{report:#}");

    let p = policy(
        dir.path(),
        "  include: [runtime-default]\n  abi:\n    x32: deny\n",
    );
    let (code, report, _, _) = run(&p, Some("enforce"), &[WORKLOAD, "raw", &x32_getpid]);
    assert_eq!(code, 137, "{report:#}");
    let v = violation(&report, "getpid").expect("getpid (x32) violation");
    assert_eq!(v["abi"], "x32");
    assert_eq!(v["outcome"], "killed-after");
}
