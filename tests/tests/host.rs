//! Host integration tests: the real probe on the running kernel, real cgroups.
//! Run with `cargo xtask test` (as root; one at a time).

use std::{
    process::{Child, Command},
    time::Duration,
};

use serde_json::Value;
use sysfence_tests::{agent::Agent, process::KillOnDrop, *};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_sf-syscalls");

#[test]
fn run_counts_exactly_the_calls_made() {
    if !privileged("run_counts_exactly_the_calls_made") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = write_policy(
        dir.path(),
        "p.yaml",
        &policy_yaml("count", "  mode: audit\n  include: [runtime-default]\n"),
    );
    for n in [1u64, 1000, 123_457] {
        let (code, report, _, stderr) = run(&p, None, &[WORKLOAD, "getppid", &n.to_string()]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(count_of(&report, "x86_64", "getppid"), n, "{report:#}");
        assert!(
            report["violations"].as_array().unwrap().is_empty(),
            "{report:#}"
        );
        assert_eq!(report["signal"], Value::Null);
        assert_eq!(report["events_dropped"], 0);
    }
}

fn mkdir_policy(dir: &std::path::Path) -> std::path::PathBuf {
    write_policy(
        dir,
        "p.yaml",
        &policy_yaml(
            "no-mkdir",
            "  include: [runtime-default]\n  deny: [mkdir]\n",
        ),
    )
}

#[test]
fn enforce_kills_a_denied_syscall_after_it_ran() {
    if !privileged("enforce_kills_a_denied_syscall_after_it_ran") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = mkdir_policy(dir.path());
    let target = dir.path().join("made-by-the-workload");
    let (code, report, stdout, _) = run(
        &p,
        Some("enforce"),
        &[WORKLOAD, "mkdir", target.to_str().unwrap()],
    );
    assert_eq!(code, 137, "killed by SIGKILL: {report:#}");
    assert_eq!(report["signal"], 9);
    assert!(
        !stdout.contains("mkdir: ok"),
        "the workload must not get to print: {stdout}"
    );
    let v = violation(&report, "mkdir").expect("mkdir violation");
    assert_eq!(v["outcome"], "killed-after");
    assert_eq!(v["abi"], "x86_64");
    assert_eq!(v["count"], 1);
    assert_eq!(v["comm"], "sf-syscalls");
    assert!(v["pid"].as_u64().unwrap() > 0);
    // Honesty check: a kill from sys_enter lands after the syscall body ran. The report
    // says `killed-after`, and the directory is indeed there.
    assert!(target.exists(), "killed-after means the mkdir happened");
}

#[test]
fn audit_reports_a_denied_syscall_and_lets_it_run() {
    if !privileged("audit_reports_a_denied_syscall_and_lets_it_run") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = mkdir_policy(dir.path());
    let target = dir.path().join("d");
    let (code, report, stdout, stderr) = run(
        &p,
        Some("audit"),
        &[WORKLOAD, "mkdir", target.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("mkdir: ok"));
    let v = violation(&report, "mkdir").expect("mkdir violation");
    assert_eq!(v["outcome"], "audited");
    assert_eq!(v["count"], 1);
    assert_eq!(v["comm"], "sf-syscalls");
    assert!(
        stderr.contains("would be stopped under enforce"),
        "{stderr}"
    );
    assert!(target.exists());

    // monitor: counted as a would-be violation, no event, so no example pid.
    let (code, report, _, _) = run(
        &p,
        Some("monitor"),
        &[WORKLOAD, "mkdir", dir.path().join("e").to_str().unwrap()],
    );
    assert_eq!(code, 0);
    let v = violation(&report, "mkdir").expect("mkdir counted");
    assert_eq!(v["outcome"], "monitored");
    assert_eq!(v["pid"], Value::Null);
}

#[test]
fn run_passes_the_exit_status_through() {
    if !privileged("run_passes_the_exit_status_through") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = write_policy(
        dir.path(),
        "p.yaml",
        &policy_yaml("status", "  include: [runtime-default]\n"),
    );
    let (code, report, _, _) = run(&p, Some("enforce"), &["/bin/sh", "-c", "exit 7"]);
    assert_eq!(code, 7);
    assert_eq!(report["exit_code"], 7);
    // The run's cgroup is gone afterwards.
    let cg = cgroup_root()
        .unwrap()
        .join(report["cgroup"].as_str().unwrap());
    assert!(!cg.exists(), "{} left behind", cg.display());
}

#[test]
fn agent_binds_new_cgroups_and_leaves_everything_else_alone() {
    if !privileged("agent_binds_new_cgroups_and_leaves_everything_else_alone") {
        return;
    }
    let base = format!("sysfence-test-{}", std::process::id());
    let _base = TestCgroup::create(&base);
    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        "no-getppid.yaml",
        &policy_yaml(
            "no-getppid",
            &format!(
                "  selector:\n    cgroupPath: \"{base}/*\"\n  mode: enforce\n  include: [runtime-default]\n  deny: [getppid]\n"
            ),
        ),
    );
    let agent = Agent::builder(dir.path()).no_cri().start();

    // A cgroup created after the agent started is bound as it appears.
    let work = TestCgroup::create(&format!("{base}/w1"));
    agent.wait_bound_to(&format!("{base}/w1"));

    // Outside any policed cgroup: untouched, while the agent runs.
    let outside = Command::new(WORKLOAD)
        .args(["getppid", "10000"])
        .status()
        .unwrap();
    assert!(
        outside.success(),
        "an unpoliced process was touched: {outside:?}"
    );

    // Inside: the first getppid kills it.
    let inside = work.run(WORKLOAD, &["getppid", "1"]);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&inside),
        Some(9),
        "{inside:?}"
    );
    let v = agent.wait_line("the violation", |v| v["event"] == "violation");
    assert_eq!(v["syscall"], "getppid");
    assert_eq!(v["abi"], "x86_64");
    assert_eq!(v["outcome"], "killed-after");
    assert_eq!(v["policy"], "no-getppid");
    assert_eq!(v["cgroup"], format!("{base}/w1"));
    assert_eq!(v["comm"], "sf-syscalls");

    // A removed cgroup is unbound.
    drop(work);
    agent.wait_line("the unbinding of w1", |v| v["event"] == "unbound");

    let (code, log) = agent.stop();
    assert_eq!(code, 0, "clean stop on SIGTERM; log:\n{log}");
    assert!(log.contains("\"stopped\""), "{log}");
}

#[test]
fn a_bad_policy_is_rejected_with_its_position_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_policy(
        dir.path(),
        "bad.yaml",
        &policy_yaml(
            "bad",
            "  mode: enforce\n  allow:\n    - read\n    - getpidd\n",
        ),
    );
    // check: no root needed.
    let out = sysfence().arg("check").arg(&bad).output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(&format!(
            "{}:9:7: error: unknown syscall `getpidd`",
            bad.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `getpid`"), "{stderr}");

    if !privileged("a_bad_policy_is_rejected_with_its_position_and_changes_nothing") {
        return;
    }
    // run: rejected before anything is loaded or started.
    let marker = dir.path().join("ran");
    let out = sysfence()
        .arg("run")
        .arg("--policy")
        .arg(&bad)
        .args(["--", "/usr/bin/touch"])
        .arg(&marker)
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unknown syscall `getpidd`") && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert!(
        !marker.exists(),
        "the command must not run under a rejected policy"
    );

    // agent: refuses to start on a directory with a bad policy; nothing gets bound.
    let out = Agent::builder(dir.path()).run_to_exit();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("bad.yaml:9:7"), "{stderr}");
    assert!(!stdout.contains("\"bound\""), "{stdout}");
}

#[test]
fn shipped_policies_pass_check() {
    let out = sysfence()
        .arg("check")
        .arg(workspace_root().join("policies"))
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.starts_with("ok:") || stderr.contains("\nok:"),
        "{stderr}"
    );
}

/// `doctor` tells whether BPF LSM is usable, and `action: deny` does what it says:
/// EPERM where it is, the configured fallback (here `kill`) where it is not.
#[test]
fn doctor_reports_lsm_and_deny_falls_back_accordingly() {
    if !privileged("doctor_reports_lsm_and_deny_falls_back_accordingly") {
        return;
    }
    let out = sysfence().args(["doctor", "--json"]).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let doctor: Value = serde_json::from_str(&stdout).unwrap();
    let caps = doctor["capabilities"].as_array().unwrap();
    let lsm = caps
        .iter()
        .find(|c| c["name"] == "BPF LSM")
        .expect("BPF LSM row");
    for name in ["BTF", "tp_btf sys_enter", "cgroup v2", "ia32 syscalls"] {
        let row = caps
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} row"));
        assert_eq!(row["state"], "yes", "{row}");
    }

    let dir = tempfile::tempdir().unwrap();
    let p = write_policy(
        dir.path(),
        "deny.yaml",
        &policy_yaml(
            "deny-mkdir",
            "  mode: enforce\n  action: deny\n  fallback: kill\n  include: [runtime-default]\n  deny: [mkdir]\n",
        ),
    );
    let target = dir.path().join("d");
    let (code, report, stdout, stderr) =
        run(&p, None, &[WORKLOAD, "mkdir", target.to_str().unwrap()]);
    let v = violation(&report, "mkdir").expect("mkdir violation");
    if lsm["state"] == "yes" {
        assert_eq!(code, 1, "{stdout}{stderr}");
        assert!(stdout.contains("Operation not permitted"), "{stdout}");
        assert_eq!(v["outcome"], "denied");
        assert!(!target.exists());
    } else {
        assert_eq!(lsm["state"], "no", "{lsm}");
        assert!(
            lsm["detail"].as_str().unwrap().contains("falls back"),
            "{lsm}"
        );
        assert!(
            stderr.contains("action `deny` needs BPF LSM")
                && stderr.contains("falling back to `kill`"),
            "{stderr}"
        );
        assert_eq!(code, 137);
        assert_eq!(v["outcome"], "killed-after");
    }
}

/// Wait up to `secs` for a child to exit; its status, or `None` (then it is killed).
fn exit_within(child: &mut Child, secs: u64) -> Option<std::process::ExitStatus> {
    let status = wait_for(Duration::from_secs(secs), || {
        child.try_wait().ok().flatten()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

/// `sys_enter` remembers, per CPU, what it found for the tasks it saw last (so that an
/// unpoliced task skips the lookup). A task that keeps making syscalls must still be
/// policed from the moment its cgroup is bound, and from the moment it is moved into a
/// bound cgroup.
#[test]
fn a_running_task_is_policed_once_bound_or_moved_into_a_bound_cgroup() {
    if !privileged("a_running_task_is_policed_once_bound_or_moved_into_a_bound_cgroup") {
        return;
    }
    let base = format!("sysfence-test-memo-{}", std::process::id());
    let _base = TestCgroup::create(&base);
    // Running, and making syscalls, before any policy exists.
    let early = TestCgroup::create(&format!("{base}/early"));
    // Neither loop outlives a failing test.
    let mut before = KillOnDrop(
        early
            .command(WORKLOAD)
            .args(["getppid", "100000000000"])
            .spawn()
            .unwrap(),
    );
    let mut outside = KillOnDrop(
        Command::new(WORKLOAD)
            .args(["getppid", "100000000000"])
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));

    let dir = tempfile::tempdir().unwrap();
    write_policy(
        dir.path(),
        "no-getppid.yaml",
        &policy_yaml(
            "no-getppid",
            &format!(
                "  selector:\n    cgroupPath: \"{base}/*\"\n  mode: enforce\n  include: [runtime-default]\n  deny: [getppid]\n"
            ),
        ),
    );
    let agent = Agent::builder(dir.path()).no_cri().start();

    // Bound while it runs: killed at its next getppid.
    let status = exit_within(&mut before.0, 10);
    assert_eq!(
        status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)),
        Some(9),
        "a task in a cgroup bound while it ran was not policed: {status:?}"
    );

    // Unpoliced, and still running, while the agent runs.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        outside.try_wait().unwrap().is_none(),
        "an unpoliced process was touched"
    );
    // Moved into a bound cgroup while it runs: killed at its next getppid.
    let work = TestCgroup::create(&format!("{base}/w1"));
    agent.wait_bound_to(&format!("{base}/w1"));
    std::fs::write(work.path.join("cgroup.procs"), outside.id().to_string()).unwrap();
    let status = exit_within(&mut outside.0, 10);
    assert_eq!(
        status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)),
        Some(9),
        "a task moved into a bound cgroup was not policed: {status:?}"
    );
    let (code, log) = agent.stop();
    assert_eq!(code, 0, "{log}");
}
