//! Argument rules on the host (kill path): the real probe judges the registers of
//! clone, personality and socket. The workload is the attacker: it asks clone for new
//! namespaces through the x86_64 and the i386 entry, with garbage in the upper half of
//! the register, and checks whether a child ever ran in a new user namespace.
//! Run with `cargo xtask test` (as root; one at a time).

use std::path::Path;

use serde_json::Value;
use sysfence_tests::{namespaces::*, *};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_sf-syscalls");

/// Whether to run here: the kill path is tested on the host; in the QEMU VMs (TCG,
/// where each run loads the probe slowly) the deny path's own tests (tests/lsm.rs)
/// cover argument rules on 6.1 and 6.12.
fn on_host(test: &str) -> bool {
    if sysfence_tests::oci::in_sysfence_vm() {
        eprintln!(
            "{test}: host-only test (the kill path), not run in the VM; it runs on the host in `cargo xtask test`"
        );
        return false;
    }
    privileged(test)
}

fn policy(dir: &Path, extra: &str) -> std::path::PathBuf {
    write_policy(
        dir,
        "p.yaml",
        &policy_yaml(
            "args",
            &format!("  mode: enforce\n  include: [runtime-default]\n{extra}"),
        ),
    )
}

/// Run one verb under the policy; (exit code, report, stdout).
fn attempt(policy: &Path, verb: &[&str]) -> (i32, Value, String) {
    let mut cmd = vec![WORKLOAD];
    cmd.extend_from_slice(verb);
    let (code, report, stdout, stderr) = run(policy, None, &cmd);
    assert!(
        !stderr.contains("error:"),
        "sysfence run failed: {stderr}\n{stdout}"
    );
    (code, report, stdout)
}

/// The attack: clone for new namespaces. It must be killed before any child exists.
fn assert_no_child_in_new_namespaces(policy: &Path, entry: &str, flags: &str) {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("child-ran");
    let (code, report, stdout) = attempt(policy, &[entry, flags, marker.to_str().unwrap()]);
    assert_eq!(
        code, 137,
        "{entry} {flags}: the caller must be killed: {stdout}\n{report:#}"
    );
    assert!(
        !marker.exists(),
        "{entry} {flags}: a child ran (in user namespace {:?})",
        std::fs::read_to_string(&marker)
    );
    let v = violation(&report, "clone").unwrap_or_else(|| panic!("no clone violation: {report:#}"));
    assert_eq!(v["abi"], if entry == "clone80" { "i386" } else { "x86_64" });
    // The report names the flags that decided it.
    let args = v["args"].as_str().unwrap_or_default();
    assert!(args.starts_with("flags=") && args.contains("NEW"), "{v:#}");
}

/// Ordinary clone flags pass, and the child runs in the caller's user namespace.
fn assert_clone_allowed(policy: &Path, entry: &str, flags: &str) {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("child-ran");
    let (code, report, stdout) = attempt(policy, &[entry, flags, marker.to_str().unwrap()]);
    assert_eq!(code, 0, "{entry} {flags}: {stdout}\n{report:#}");
    assert!(stdout.contains("clone: ok child exited 0"), "{stdout}");
    assert_eq!(
        children_namespaces(&marker),
        vec![own_user_namespace()],
        "one child, in the caller's user namespace"
    );
}

fn assert_ordinary_programs_work(policy: &Path) {
    let (code, report, stdout) = attempt(policy, &["threads", "8"]);
    assert_eq!(code, 0, "threads: {stdout}\n{report:#}");
    assert!(stdout.contains("threads: ok 28"), "{stdout}");
    let (code, report, stdout) = attempt(policy, &["fork-exec", "/bin/true"]);
    assert_eq!(code, 0, "fork-exec: {stdout}\n{report:#}");
    assert!(stdout.contains("fork-exec: ok 0"), "{stdout}");
}

#[test]
fn clone_asking_for_namespaces_is_killed_before_the_child_exists() {
    if !on_host("clone_asking_for_namespaces_is_killed_before_the_child_exists") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // runtime-default's own rule (Docker's MASKED_EQ 0x7E020000 == 0), and the same
    // through `namespaces: deny` with clone allowed outright.
    let shipped = policy(dir.path(), "");
    let sub = tempfile::tempdir().unwrap();
    let by_keyword = policy(sub.path(), "  allow: [clone]\n  namespaces: deny\n");
    for p in [&shipped, &by_keyword] {
        assert_no_child_in_new_namespaces(p, "clone", NEW_USER_NET_UTS);
        // Garbage in the upper half changes nothing: the kernel reads the low 32 bits.
        assert_no_child_in_new_namespaces(p, "clone", "0xffffffff54000000");
        // The i386 entry passes the flags in ebx.
        assert_no_child_in_new_namespaces(p, "clone80", NEW_USER_NET_UTS);
        // One flag is enough.
        assert_no_child_in_new_namespaces(p, "clone", "0x10000000");
        assert_no_child_in_new_namespaces(p, "clone", "0x20000");
        assert_clone_allowed(p, "clone", "0");
        assert_clone_allowed(p, "clone", "0xffffffff00000000");
        assert_clone_allowed(p, "clone80", "0");
        assert_ordinary_programs_work(p);
    }
}

#[test]
fn clone3_asking_for_namespaces_never_gives_a_child_a_new_namespace() {
    if !on_host("clone3_asking_for_namespaces_never_gives_a_child_a_new_namespace") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = policy(dir.path(), "");
    let own = own_user_namespace();
    // Honest: the flags are in memory when sys_enter reads them.
    let marker = dir.path().join("honest");
    let (code, report, stdout) =
        attempt(&p, &["clone3", NEW_USER_NET_UTS, marker.to_str().unwrap()]);
    assert_eq!(code, 137, "{stdout}\n{report:#}");
    assert!(
        children_namespaces(&marker).is_empty(),
        "a child ran: {:?}",
        children_namespaces(&marker)
    );
    assert!(violation(&report, "clone3").is_some(), "{report:#}");
    // The race: another thread flips the flags between 0 and NEWUSER|NEWNET|NEWUTS
    // while clone3 runs, so that sys_enter may read 0 and the kernel copy the rest.
    // Whichever way each call goes, no child may run in another user namespace, and
    // the caller dies at the first call that asks for one.
    for round in 0..5 {
        let marker = dir.path().join(format!("race-{round}"));
        let (code, report, stdout) = attempt(
            &p,
            &[
                "clone3-race",
                NEW_USER_NET_UTS,
                marker.to_str().unwrap(),
                "2000",
            ],
        );
        assert_eq!(
            code, 137,
            "round {round}: the caller must die: {stdout}\n{report:#}"
        );
        for ns in children_namespaces(&marker) {
            assert_eq!(
                ns, own,
                "round {round}: a child ran in another user namespace"
            );
        }
    }
    // The flags where sys_enter cannot read them (an untouched file mapping: its
    // non-faulting read fails; the kernel's copy faults the page in). sys_enter lets
    // the call go; the kernel's copy is judged at task_newtask: the caller dies, and
    // the child dies at its first syscall, before it can write the marker.
    for round in 0..3 {
        let marker = dir.path().join(format!("unmapped-{round}"));
        let (code, report, stdout) = attempt(
            &p,
            &[
                "clone3-unmapped",
                NEW_USER_NET_UTS,
                marker.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 137, "{stdout}\n{report:#}");
        assert!(
            children_namespaces(&marker).is_empty(),
            "a child ran: {:?}",
            children_namespaces(&marker)
        );
        assert!(violation(&report, "clone3").is_some(), "{report:#}");
    }
    // Ordinary clone3 (a fork, or glibc's threads) passes, from an untouched mapping too.
    let marker = dir.path().join("plain-unmapped");
    let (code, report, stdout) = attempt(&p, &["clone3-unmapped", "0", marker.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}\n{report:#}");
    assert_eq!(children_namespaces(&marker), vec![own.clone()]);
    // Ordinary clone3 (a fork, or glibc's threads) passes.
    let marker = dir.path().join("plain");
    let (code, report, stdout) = attempt(&p, &["clone3", "0", marker.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}\n{report:#}");
    assert_eq!(children_namespaces(&marker), vec![own.clone()]);
    assert_ordinary_programs_work(&p);
    // Without `namespaces: deny` (the policy says `allow`), the same call gives the
    // child a new user namespace: the attack this rule stops is real.
    let sub = tempfile::tempdir().unwrap();
    let open = policy(sub.path(), "  namespaces: allow\n");
    let marker = dir.path().join("allowed");
    let (code, _, stdout) = attempt(
        &open,
        &["clone3", NEW_USER_NET_UTS, marker.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{stdout}");
    let seen = children_namespaces(&marker);
    assert_eq!(seen.len(), 1, "{stdout}");
    assert_ne!(
        seen[0], own,
        "with namespaces allowed, the child has its own user namespace"
    );
}

#[test]
fn docker_default_imported_as_is_stops_namespaces_and_keeps_threads() {
    let test = "docker_default_imported_as_is_stops_namespaces_and_keeps_threads";
    if !on_host(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let yaml = import_docker_default(dir.path());
    assert!(yaml.contains("clone3: ENOSYS"), "{yaml}");
    // As is, but enforced (the import comes out in audit mode).
    let enforced = dir.path().join("docker-enforce.yaml");
    std::fs::write(&enforced, yaml.replace("mode: audit", "mode: enforce")).unwrap();
    assert_no_child_in_new_namespaces(&enforced, "clone", NEW_USER_NET_UTS);
    assert_no_child_in_new_namespaces(&enforced, "clone80", NEW_USER_NET_UTS);
    assert_clone_allowed(&enforced, "clone", "0");
    // clone3: Docker returns ENOSYS, which no hook can return under `kill`; clone3 is
    // then judged as its fallback clone would be.
    let marker = dir.path().join("clone3");
    let (code, report, stdout) = attempt(
        &enforced,
        &["clone3", NEW_USER_NET_UTS, marker.to_str().unwrap()],
    );
    assert_eq!(code, 137, "{stdout}\n{report:#}");
    assert!(children_namespaces(&marker).is_empty());
    let marker = dir.path().join("clone3-unmapped");
    let (code, report, stdout) = attempt(
        &enforced,
        &[
            "clone3-unmapped",
            NEW_USER_NET_UTS,
            marker.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 137, "{stdout}\n{report:#}");
    assert!(children_namespaces(&marker).is_empty());
    assert_ordinary_programs_work(&enforced);
}

#[test]
fn record_learns_whether_the_workload_makes_namespaces() {
    if !on_host("record_learns_whether_the_workload_makes_namespaces") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let learn = |name: &str, verb: &[&str]| -> String {
        let out_dir = dir.path().join(name);
        let out = sysfence()
            .args(["record", "-q", "-o"])
            .arg(&out_dir)
            .arg("--")
            .arg(WORKLOAD)
            .args(verb)
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}{stderr}");
        std::fs::read_to_string(out_dir.join("policy.yaml")).unwrap()
    };
    let marker = dir.path().join("m");
    let plain = learn("plain", &["clone", "0", marker.to_str().unwrap()]);
    assert!(plain.contains("namespaces: deny"), "{plain}");
    let _ = std::fs::remove_file(&marker);
    let ns = learn(
        "ns",
        &["clone3", NEW_USER_NET_UTS, marker.to_str().unwrap()],
    );
    assert!(
        ns.contains("namespaces: allow") && ns.contains("1 fork with CLONE_NEW* flags"),
        "{ns}"
    );
    // The learned policies run what was recorded, in enforce.
    for (name, yaml, verb) in [("plain", &plain, "clone"), ("ns", &ns, "clone3")] {
        let p = write_policy(
            dir.path(),
            &format!("{name}-enforce.yaml"),
            &yaml.replace("mode: audit", "mode: enforce"),
        );
        let flags = if verb == "clone" {
            "0"
        } else {
            NEW_USER_NET_UTS
        };
        let m = dir.path().join(format!("{name}-again"));
        let (code, report, stdout) = attempt(&p, &[verb, flags, m.to_str().unwrap()]);
        assert_eq!(code, 0, "{name}: {stdout}\n{report:#}");
    }
}

#[test]
fn personality_and_socket_are_judged_on_the_bits_the_kernel_reads() {
    if !on_host("personality_and_socket_are_judged_on_the_bits_the_kernel_reads") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = policy(dir.path(), "");
    // personality: Docker's values pass; READ_IMPLIES_EXEC does not.
    for ok in ["0xffffffff", "0x0"] {
        let (code, report, stdout) = attempt(&p, &["personality", ok]);
        assert_eq!(code, 0, "personality {ok}: {stdout}\n{report:#}");
        assert!(violation(&report, "personality").is_none(), "{report:#}");
    }
    let (code, report, _) = attempt(&p, &["personality", "0x400000"]);
    assert_eq!(code, 137, "{report:#}");
    assert!(violation(&report, "personality").is_some(), "{report:#}");
    // socket: AF_INET passes, AF_VSOCK (40) does not, with or without garbage above
    // the 32 bits the kernel reads. (A seccomp rule `arg0 != 40` lets the second by.)
    for ok in ["2", "0x100000002"] {
        let (code, report, stdout) = attempt(&p, &["socket", ok]);
        assert_eq!(code, 0, "socket {ok}: {stdout}\n{report:#}");
        assert!(stdout.contains("socket: ok"), "{stdout}");
    }
    for vsock in ["40", "0x100000028"] {
        let (code, report, stdout) = attempt(&p, &["socket", vsock]);
        assert_eq!(code, 137, "socket {vsock}: {stdout}\n{report:#}");
        assert!(!stdout.contains("socket: ok"), "{stdout}");
        assert!(violation(&report, "socket").is_some(), "{report:#}");
    }
}

#[test]
fn audit_reports_a_call_its_arguments_did_not_allow() {
    if !on_host("audit_reports_a_call_its_arguments_did_not_allow") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = write_policy(
        dir.path(),
        "p.yaml",
        &policy_yaml(
            "args-audit",
            "  mode: audit\n  include: [runtime-default]\n",
        ),
    );
    let (code, report, stdout) = attempt(&p, &["socket", "40"]);
    assert_ne!(code, 137, "audit kills nothing: {stdout}");
    let v = violation(&report, "socket").unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(v["outcome"], "audited");
    // Allowed calls of the same syscall are no violation.
    let (_, report, _) = attempt(&p, &["socket", "2"]);
    assert!(violation(&report, "socket").is_none(), "{report:#}");
}
