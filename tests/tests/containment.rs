//! Containment (issue 15): a policed process cannot leave its policy behind, and a
//! workload keeps nothing a killed syscall made. Each test is an attack by a root
//! process inside the workload, against the real agent and probe:
//! - it moves itself, a child, or a sibling to a cgroup its policy is not bound to (by
//!   `cgroup.procs` or `clone3(CLONE_INTO_CGROUP)`), then makes the syscall its policy
//!   denies; the test fails if that syscall runs;
//! - a sibling that shares its file table (or its memory) makes a denied
//!   `userfaultfd`, `perf_event_open`, `io_uring_setup` (or `shmat`) and is killed after
//!   it ran; the test fails if the fd (or the mapping) survives in the workload.
//!
//! Run with `cargo xtask test` (as root; one at a time).

use std::{os::unix::process::ExitStatusExt as _, path::PathBuf};

use sysfence_tests::{agent::Agent, process::KillOnDrop, *};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_sf-syscalls");
const SYS_GETPID: &str = "39";
const SYS_GETPPID: &str = "110";

/// A running agent with the policy `held` (enforce, runtime-default without getppid,
/// `killScope: process`: these tests are about where a policy applies)
/// on every cgroup below `sysfence-TAG-PID`, its workload `w` bound, and two cgroups
/// to escape to: `outside` (bound to nothing) and `other/x`, bound to the policy
/// `other`, which allows getppid (and denies getuid).
struct Scene {
    agent: Agent,
    w: TestCgroup,
    outside: TestCgroup,
    other: TestCgroup,
    _dir: tempfile::TempDir,
    _base: TestCgroup,
    _other_base: TestCgroup,
}

fn scene(tag: &str) -> Scene {
    let base = format!("sysfence-{tag}-{}", std::process::id());
    let other_base = format!("sysfence-{tag}-other-{}", std::process::id());
    let base_cgroup = TestCgroup::create(&base);
    let other_base_cgroup = TestCgroup::create(&other_base);
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    write_policy(
        &policies,
        "held.yaml",
        &policy_yaml(
            "held",
            &format!(
                "  selector:\n    cgroupPath: \"{base}/*\"\n  mode: enforce\n  killScope: process\n  include: [runtime-default]\n  deny: [getppid]\n"
            ),
        ),
    );
    write_policy(
        &policies,
        "other.yaml",
        &policy_yaml(
            "other",
            &format!(
                "  selector:\n    cgroupPath: \"{other_base}/*\"\n  mode: enforce\n  include: [runtime-default]\n  deny: [getuid]\n"
            ),
        ),
    );
    let w = TestCgroup::create(&format!("{base}/w"));
    let other = TestCgroup::create(&format!("{other_base}/x"));
    let outside = TestCgroup::create(&format!("sysfence-{tag}-outside-{}", std::process::id()));
    let agent = Agent::builder(&policies)
        .runtime_socket(&dir.path().join("runtime.sock"))
        .no_cri()
        .start();
    agent.wait_bound(2);
    Scene {
        agent,
        w,
        outside,
        other,
        _dir: dir,
        _base: base_cgroup,
        _other_base: other_base_cgroup,
    }
}

fn procs(cg: &TestCgroup) -> String {
    cg.path.join("cgroup.procs").display().to_string()
}

fn dir(cg: &TestCgroup) -> String {
    PathBuf::from(&cg.path).display().to_string()
}

/// Run an escape verb in `w`; (stdout, how the process ended).
fn attempt(s: &Scene, args: &[&str]) -> (String, std::process::ExitStatus) {
    let out = s.w.command(WORKLOAD).args(args).output().unwrap();
    (String::from_utf8_lossy(&out.stdout).to_string(), out.status)
}

/// The escape worked, and the process that made the allowed call after it ran it:
/// without this, a passing attack test could mean the escape itself failed.
fn escape_works(s: &Scene, verb: &str, target: &str) {
    let (out, status) = attempt(s, &[verb, target, SYS_GETPID]);
    assert!(
        status.success() && (out.contains("39: survived") || out.contains("child exited 0")),
        "{verb} {target} then getpid: {status:?} {out}"
    );
}

#[test]
fn a_process_that_moves_itself_out_of_its_workload_keeps_its_policy() {
    if !privileged("a_process_that_moves_itself_out_of_its_workload_keeps_its_policy") {
        return;
    }
    let s = scene("move-self");
    escape_works(&s, "move-self", &procs(&s.outside));
    for to in [&s.outside, &s.other] {
        let (out, status) = attempt(&s, &["move-self", &procs(to), SYS_GETPPID]);
        assert_eq!(
            status.signal(),
            Some(9),
            "moved to {} then getppid: {status:?} {out}",
            to.path.display()
        );
        assert!(!out.contains("survived"), "{out}");
    }
    let status = s.agent.status();
    assert!(
        status["probe"]["stats"]["strays"].as_u64().unwrap_or(0) >= 2,
        "{status}"
    );
}

#[test]
fn the_child_of_a_process_that_moved_out_keeps_its_policy() {
    if !privileged("the_child_of_a_process_that_moved_out_keeps_its_policy") {
        return;
    }
    let s = scene("move-fork");
    escape_works(&s, "move-self-fork", &procs(&s.outside));
    let (out, status) = attempt(&s, &["move-self-fork", &procs(&s.outside), SYS_GETPPID]);
    assert!(
        status.success(),
        "the parent made no denied call: {status:?} {out}"
    );
    assert!(out.contains("child killed by signal 9"), "{out}");
}

#[test]
fn a_process_moved_out_by_a_sibling_keeps_its_policy() {
    if !privileged("a_process_moved_out_by_a_sibling_keeps_its_policy") {
        return;
    }
    let s = scene("move-child");
    escape_works(&s, "move-child", &procs(&s.outside));
    for to in [&s.outside, &s.other] {
        let (out, status) = attempt(&s, &["move-child", &procs(to), SYS_GETPPID]);
        assert!(status.success(), "{status:?} {out}");
        assert!(
            out.contains("child killed by signal 9"),
            "moved to {}: {out}",
            to.path.display()
        );
    }
}

/// The tracepoint that follows moves fires after the move: a child whose first syscall
/// comes in between must be judged by its policy all the same (CI once saw a child moved
/// to `other` run getppid there). Thousands of children, each making its first call at
/// another delay after its parent starts moving it; every one must die. (Against the
/// probe without the fix, 1 to 4 in 3,000 lived, in each of six runs.)
#[test]
fn a_child_whose_first_call_races_its_move_keeps_its_policy() {
    if !privileged("a_child_whose_first_call_races_its_move_keeps_its_policy") {
        return;
    }
    let s = scene("move-race");
    let (out, status) = attempt(
        &s,
        &["move-child-race", &procs(&s.other), SYS_GETPID, "200"],
    );
    assert!(
        status.success() && out.contains("200 exited 0"),
        "getpid is allowed: every child lives: {status:?} {out}"
    );
    let moved: u32 = out
        .split(", ")
        .find_map(|part| part.strip_suffix(" moved")?.parse().ok())
        .unwrap_or_else(|| panic!("no count of moves in: {out}"));
    assert!(moved > 0, "no child was moved, so nothing raced: {out}");
    for to in [&s.other, &s.outside] {
        let (out, status) = attempt(&s, &["move-child-race", &procs(to), SYS_GETPPID, "3000"]);
        assert!(status.success(), "{status:?} {out}");
        assert!(
            out.contains("3000 killed by signal 9"),
            "moved to {}: a child ran getppid: {out}",
            to.path.display()
        );
    }
}

#[test]
fn a_child_cloned_into_another_cgroup_keeps_its_parents_policy() {
    if !privileged("a_child_cloned_into_another_cgroup_keeps_its_parents_policy") {
        return;
    }
    let s = scene("clone-into");
    escape_works(&s, "clone-into", &dir(&s.outside));
    for to in [&s.outside, &s.other] {
        let (out, status) = attempt(&s, &["clone-into", &dir(to), SYS_GETPPID]);
        assert!(status.success(), "{status:?} {out}");
        assert!(
            out.contains("child killed by signal 9"),
            "cloned into {}: {out}",
            to.path.display()
        );
    }
}

/// Processes that never were in a policed cgroup are not followed: a process started
/// outside, moved into `outside`, makes getppid and lives.
#[test]
fn a_process_never_policed_is_not_followed() {
    if !privileged("a_process_never_policed_is_not_followed") {
        return;
    }
    let s = scene("never");
    let out = s
        .outside
        .command(WORKLOAD)
        .args(["move-self", &procs(&s.outside), SYS_GETPPID])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("110: survived"),
        "{text}"
    );
}

/// The calls the harvest tests make a sibling die for.
const HARVESTED: [&str; 4] = ["userfaultfd", "perf_event_open", "io_uring_setup", "shmat"];

/// A running agent with the policy `harvest` on `sysfence-TAG-PID/*` (enforce, kill,
/// runtime-default without the calls of [`HARVESTED`], `killScope` as given, or the
/// default), and its workload `w` bound.
fn harvest_scene(
    tag: &str,
    scope: Option<&str>,
) -> (Agent, TestCgroup, tempfile::TempDir, TestCgroup) {
    let base = format!("sysfence-{tag}-{}", std::process::id());
    let base_cgroup = TestCgroup::create(&base);
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let scope = scope.map_or(String::new(), |s| format!("  killScope: {s}\n"));
    write_policy(
        &policies,
        "harvest.yaml",
        &policy_yaml(
            "harvest",
            &format!(
                "  selector:\n    cgroupPath: \"{base}/*\"\n  mode: enforce\n  action: kill\n{scope}  include: [runtime-default]\n  deny: [{}]\n",
                HARVESTED.join(", ")
            ),
        ),
    );
    let w = TestCgroup::create(&format!("{base}/w"));
    let agent = Agent::builder(&policies)
        .runtime_socket(&dir.path().join("runtime.sock"))
        .no_cri()
        .start();
    agent.wait_bound(1);
    (agent, w, dir, base_cgroup)
}

/// `harvest CALL` in `w`: (stdout, how it ended). Removes the SysV segment it made.
fn harvest(w: &TestCgroup, call: &str) -> (String, std::process::ExitStatus) {
    let out = w
        .command(WORKLOAD)
        .args(["harvest", call])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    for id in text
        .lines()
        .filter_map(|l| l.strip_prefix("harvest: shm "))
        .filter_map(|id| id.trim().parse::<i32>().ok())
    {
        // SAFETY: removing the segment the workload made for the test.
        unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    }
    (text, out.status)
}

/// The default `killScope: workload`: the sibling's call dooms the workload, so the
/// process that shares the fd table (or the memory) dies before its next syscall, and
/// so does every other process of the workload.
#[test]
fn nothing_a_killed_sibling_made_survives_in_the_workload() {
    if !privileged("nothing_a_killed_sibling_made_survives_in_the_workload") {
        return;
    }
    let (agent, _w, _dir, base) = harvest_scene("harvest", None);
    for call in HARVESTED {
        // A workload of its own for each, with a bystander in it.
        let rel = format!(
            "{}/w-{call}",
            base.path.file_name().unwrap().to_string_lossy()
        );
        let w = TestCgroup::create(&rel);
        agent.wait_bound_to(&rel);
        let mut bystander = w
            .command(WORKLOAD)
            .args(["sleep", "60000"])
            .spawn()
            .unwrap();
        // The bystander is running (its first syscalls made) before the attack.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (out, status) = harvest(&w, call);
        assert!(
            out.contains("harvest:") || call != "shmat",
            "{call}: the attack did not start: {out}"
        );
        assert!(
            !out.contains("present"),
            "{call}: survived in the workload: {out}"
        );
        assert_eq!(
            status.signal(),
            Some(9),
            "{call}: the sharer lived: {status:?} {out}"
        );
        let end = bystander.wait().unwrap();
        assert_eq!(
            end.signal(),
            Some(9),
            "{call}: the rest of the workload lived: {end:?}"
        );
        let killed = agent.wait_line("the violation", |v| {
            v["event"] == "violation" && v["cgroup"] == rel.as_str()
        });
        assert_eq!(killed["syscall"], call, "{killed}");
        assert_eq!(killed["outcome"], "killed-after", "{killed}");
        assert_eq!(killed["workload_killed"], true, "{killed}");
        agent.wait_line("the workload's kill", |v| {
            v["event"] == "workload_killed" && v["cgroup"] == rel.as_str()
        });
    }
}

/// `killScope: process` kills the caller only: the attack works, which is why it is not
/// the default (and the reason the test above is not vacuous).
#[test]
fn under_kill_scope_process_a_sibling_keeps_what_the_killed_call_made() {
    if !privileged("under_kill_scope_process_a_sibling_keeps_what_the_killed_call_made") {
        return;
    }
    let (_agent, w, _dir, _base) = harvest_scene("harvest-process", Some("process"));
    let (out, status) = harvest(&w, "userfaultfd");
    assert!(status.success(), "{status:?} {out}");
    assert!(out.contains("child killed by signal 9"), "{out}");
    assert!(
        out.contains("harvest: fd present: anon_inode:[userfaultfd], usable: yes"),
        "{out}"
    );
    let (out, _) = harvest(&w, "shmat");
    assert!(out.contains("harvest: mapping present"), "{out}");
}

/// The state letter of a task (`/proc/PID/stat`), `None` once it is gone.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// A `PTRACE_ATTACH` killed after it ran has stopped its target (SIGSTOP), and its
/// tracer is gone: the agent resumes the target. The target here lives outside the
/// workload, in the host's pid namespace, as the parent of a `sysfence run` command or a
/// host process seen from a hostPID pod would.
#[test]
fn a_killed_ptrace_attach_leaves_no_process_stopped() {
    if !privileged("a_killed_ptrace_attach_leaves_no_process_stopped") {
        return;
    }
    let s = scene("attach");
    let mut victim = s
        .outside
        .command(WORKLOAD)
        .args(["sleep", "60000"])
        .spawn()
        .unwrap();
    let pid = victim.id();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let (out, status) = attempt(&s, &["attach", &pid.to_string()]);
    assert_eq!(
        status.signal(),
        Some(9),
        "the attacher lived: {status:?} {out}"
    );
    let line = s.agent.wait_line("the violation", |v| {
        v["event"] == "violation" && v["syscall"] == "ptrace"
    });
    assert_eq!(
        line["args"],
        format!("request=PTRACE_ATTACH pid={pid}"),
        "{line}"
    );
    let resumed = s
        .agent
        .wait_line("the resume", |v| v["event"] == "resumed" && v["pid"] == pid);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while state(pid) == Some('T') && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let end = state(pid);
    let _ = victim.kill();
    let _ = victim.wait();
    assert_ne!(end, Some('T'), "the target stayed stopped ({resumed})");
}

/// How long `run` may be seen stopped before the test calls it left stopped.
const STOPPED_FOR: std::time::Duration = std::time::Duration::from_secs(3);
/// How long `run` (probe load included) may take in all.
const RUN_BOUND: std::time::Duration = std::time::Duration::from_secs(180);

/// The issue's own case: the command attaches to its parent, `sysfence run` itself.
/// The attacher is killed; `run` does not stay stopped, and ends with its command.
#[test]
fn sysfence_run_is_not_left_stopped_by_its_commands_attach() {
    if !privileged("sysfence_run_is_not_left_stopped_by_its_commands_attach") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(
        dir.path(),
        "p.yaml",
        &policy_yaml("attach", "  mode: enforce\n  include: [runtime-default]\n"),
    );
    let mut run = sysfence()
        .args(["run", "--policy"])
        .arg(&policy)
        .args(["--", WORKLOAD, "attach", "parent"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Loading the probe can take long on a busy VM: the bound is on how long `run`
    // stays stopped (the sentinel resumes it within 20 ms), not on how long it runs.
    let started = std::time::Instant::now();
    let mut stopped_since: Option<std::time::Instant> = None;
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        let now = std::time::Instant::now();
        let stuck = match state(run.id()) {
            Some('T') => now - *stopped_since.get_or_insert(now) > STOPPED_FOR,
            _ => {
                stopped_since = None;
                false
            }
        };
        if stuck || now - started > RUN_BOUND {
            let last = state(run.id());
            let _ = run.kill();
            let out = run.wait_with_output().unwrap();
            panic!(
                "sysfence run {} (state {last:?} after {:?}); stderr:\n{}",
                if stuck {
                    "stayed stopped"
                } else {
                    "did not end"
                },
                now - started,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(137), "the command is killed: {stderr}");
    assert!(stderr.contains("ptrace"), "{stderr}");
}

/// Threads of one workload blocked in denied syscalls cannot change how another
/// workload's denials are enforced. Each denial is marked in its task's own storage;
/// the marks were once one node-wide table of 16,384 entries, and a workload that left
/// that many threads in a denied syscall that passes no hook (i386 `pause`: its mark
/// lasts until it returns) made every other workload's `deny` fall back (here `allow`:
/// the victim's mkdir ran).
#[test]
#[ignore = "needs BPF LSM: runs in the QEMU VMs (cargo xtask vm-test)"]
fn blocked_denials_of_one_workload_leave_another_workloads_deny_intact() {
    use std::io::BufRead as _;
    assert!(privileged(
        "blocked_denials_of_one_workload_leave_another_workloads_deny_intact"
    ));
    const THREADS: usize = 16_384;
    let (base, _base, dir, policies) = sysfence_tests::scene("marks");
    write_policy(
        &policies,
        "marks.yaml",
        &policy_yaml(
            "marks",
            &format!(
                "  selector:\n    cgroupPath: \"{base}/*\"\n  mode: enforce\n  action: deny\n  fallback: allow\n  include: [runtime-default]\n  deny: [pause, mkdir]\n"
            ),
        ),
    );
    let filler = TestCgroup::create(&format!("{base}/filler"));
    let victim = TestCgroup::create(&format!("{base}/victim"));
    let agent = Agent::builder(&policies)
        .runtime_socket(&dir.path().join("runtime.sock"))
        .no_cri()
        .start();
    agent.wait_bound(2);
    // Room for that many threads in one process: each costs a few mappings (its stack,
    // guard pages), past the default 65,530 of `vm.max_map_count`.
    let _maps = AtLeast::set("/proc/sys/vm/max_map_count", 8 * THREADS as u64);
    let _threads = AtLeast::set("/proc/sys/kernel/threads-max", 2 * THREADS as u64);

    // Killed however the test ends.
    let mut blocker = KillOnDrop(
        filler
            .command(WORKLOAD)
            .args(["block-pause", &THREADS.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = blocker.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let started = std::time::Instant::now();
    let blocked = loop {
        match rx.recv_timeout(std::time::Duration::from_secs(600)) {
            Ok(line) if line.starts_with("blocked: ") => break line,
            Ok(line) => eprintln!("block-pause: {line}"),
            Err(e) => panic!("block-pause never reported its threads blocked: {e}"),
        }
    };
    let blocked_count: usize = blocked["blocked: ".len()..].trim().parse().unwrap();
    assert!(blocked_count >= THREADS, "{blocked}");
    eprintln!(
        "marks test: {blocked_count} threads of one workload blocked in a denied pause after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let target = dir.path().join("made-by-the-victim");
    let out = victim
        .command(WORKLOAD)
        .args(["try", "mkdir", target.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?} {text}", out.status);
    assert!(
        text.contains("mkdir: error: Operation not permitted"),
        "the other workload's denied mkdir: {text}"
    );
    assert!(!target.exists(), "the other workload's denied mkdir ran");
    let victim_rel = victim
        .path
        .strip_prefix(cgroup_root().unwrap())
        .unwrap()
        .display()
        .to_string();
    let v = agent.wait_line("the victim's mkdir violation", |v| {
        v["event"] == "violation" && v["syscall"] == "mkdir" && v["cgroup"] == victim_rel
    });
    assert_eq!(v["outcome"], "denied", "{v}");
    let status = agent.status();
    assert_eq!(
        status["probe"]["stats"]["mark_failed"].as_u64(),
        Some(0),
        "{status}"
    );
    blocker.kill().unwrap();
    blocker.wait().unwrap();
}

/// A sysctl raised to at least a value for the test, restored when dropped.
struct AtLeast {
    path: &'static str,
    was: Option<String>,
}

impl AtLeast {
    fn set(path: &'static str, min: u64) -> AtLeast {
        let was = std::fs::read_to_string(path).unwrap();
        if was.trim().parse::<u64>().unwrap() >= min {
            return AtLeast { path, was: None };
        }
        std::fs::write(path, min.to_string()).unwrap();
        AtLeast {
            path,
            was: Some(was),
        }
    }
}

impl Drop for AtLeast {
    fn drop(&mut self) {
        if let Some(was) = &self.was {
            let _ = std::fs::write(self.path, was.trim());
        }
    }
}

// The exec boundary (issue 16). The test process plays the container runtime: its
// child makes itself non-dumpable, as runc's and crun's init do, and is put into the
// workload's cgroup by it (or born there by clone3(CLONE_INTO_CGROUP)). That child is
// the runtime's setup: not judged by the workload's policy until it execs. The attacks
// are the workload's own processes trying to become setup, or to use one.

/// The runtime's setup process runs its own calls unjudged (`getppid`, which `held`
/// denies: runc's init makes it), and from its exec on the policy judges it: the same
/// call kills the program it exec'd. A child it forks is setup too until its exec.
#[test]
fn a_runtimes_setup_process_is_judged_from_its_exec_on() {
    if !privileged("a_runtimes_setup_process_is_judged_from_its_exec_on") {
        return;
    }
    let s = scene("setup");
    let exec_then_getppid = [WORKLOAD, "raw", SYS_GETPPID];
    for (verb, target) in [("as-runtime", procs(&s.w)), ("as-runtime-clone", dir(&s.w))] {
        let out = std::process::Command::new(WORKLOAD)
            .args([verb, &target, SYS_GETPPID])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                && text.contains("110: survived")
                && text.contains("child exited 0"),
            "{verb}: the runtime's setup is not the workload: {text}"
        );
        let out = std::process::Command::new(WORKLOAD)
            .args([verb, &target, SYS_GETPPID])
            .args(exec_then_getppid)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("110: survived") && text.contains("child killed by signal 9"),
            "{verb}: after its exec, the policy judges it: {text}"
        );
    }
    let out = std::process::Command::new(WORKLOAD)
        .args(["as-runtime-fork", &procs(&s.w), SYS_GETPPID])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("110: survived") && !text.contains("killed"),
        "the setup's own child is setup: {text} {}",
        s.agent.status()["probe"]["stats"]
    );
    let v = s.agent.wait_line("the violation after exec", |v| {
        v["event"] == "violation" && v["syscall"] == "getppid"
    });
    assert_eq!(v["policy"], "held", "{v}");
    let status = s.agent.status();
    assert!(
        status["probe"]["stats"]["setups"].as_u64().unwrap_or(0) >= 5,
        "every setup process counted: {status}"
    );
    // Only the two exec'd programs' calls were judged violations.
    let violations = s
        .agent
        .events()
        .into_iter()
        .filter(|v| v["event"] == "violation")
        .count();
    assert_eq!(violations, 2, "{:#?}", s.agent.events());
}

/// The workload cannot make a process of its own the runtime's setup: a root process in
/// it does what the runtime does (a non-dumpable child, moved into a bound cgroup, its
/// own or another workload's, or born there by clone3), and the child's denied call
/// still kills it. Its mover is policed, so the child carries the policy.
#[test]
fn a_workload_cannot_make_a_process_of_its_own_the_runtimes_setup() {
    if !privileged("a_workload_cannot_make_a_process_of_its_own_the_runtimes_setup") {
        return;
    }
    let s = scene("setup-attack");
    // The verbs work from inside: the allowed call after them runs.
    let (out, status) = attempt(&s, &["as-runtime", &procs(&s.other), SYS_GETPID]);
    assert!(status.success() && out.contains("39: survived"), "{out}");
    for (verb, target) in [
        ("as-runtime", procs(&s.other)),
        ("as-runtime", procs(&s.w)),
        ("as-runtime-clone", dir(&s.other)),
        ("as-runtime-clone", dir(&s.w)),
        ("as-runtime-fork", procs(&s.other)),
    ] {
        let (out, status) = attempt(&s, &[verb, &target, SYS_GETPPID]);
        assert!(
            !out.contains("110: survived") && out.contains("child killed by signal 9"),
            "{verb} {target} from inside the workload: {status:?} {out}"
        );
    }
    let status = s.agent.status();
    assert_eq!(
        status["probe"]["stats"]["setups"].as_u64(),
        Some(0),
        "no setup process was made: {status}"
    );
}

/// A policed tracer may not ptrace the runtime's setup process, nor write its memory:
/// it would run its own code there, unjudged. (runc makes its init non-dumpable, which
/// stops a tracer without CAP_SYS_PTRACE; a root workload has that capability.) The
/// policy allows ptrace and process_vm_writev, so what refuses is the guard: the same
/// tracer attaches to a process of its own workload.
#[test]
#[ignore = "needs BPF LSM: runs in the QEMU VMs (cargo xtask vm-test)"]
fn a_policed_tracer_cannot_touch_a_runtimes_setup_process() {
    use std::io::BufRead as _;
    assert!(privileged(
        "a_policed_tracer_cannot_touch_a_runtimes_setup_process"
    ));
    let (base, _base, dir, policies) = sysfence_tests::scene("setup-ptrace");
    write_policy(
        &policies,
        "tracer.yaml",
        &policy_yaml(
            "tracer",
            &format!(
                "  selector:\n    cgroupPath: \"{base}/*\"\n  mode: enforce\n  include: [runtime-default]\n  allow: [ptrace, process_vm_writev]\n"
            ),
        ),
    );
    let w = TestCgroup::create(&format!("{base}/w"));
    let agent = Agent::builder(&policies)
        .runtime_socket(&dir.path().join("runtime.sock"))
        .no_cri()
        .start();
    agent.wait_bound(1);
    let holder = std::process::Command::new(WORKLOAD)
        .args(["as-runtime-hold", &procs(&w)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut holder = KillOnDrop(holder);
    let mut line = String::new();
    std::io::BufReader::new(holder.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let held: u32 = line
        .strip_prefix("held: ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("the holder said {line:?}"));
    /// The setup process is the holder's child: killed by pid when the test ends.
    struct Held(u32);
    impl Drop for Held {
        fn drop(&mut self) {
            // SAFETY: plain kill(2) of a process this test started.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
    let _held = Held(held);
    // The control: a process of the workload, which the tracer may attach to.
    let sibling = w
        .command(WORKLOAD)
        .args(["sleep", "60000"])
        .spawn()
        .unwrap();
    let sibling = KillOnDrop(sibling);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let run = |args: &[&str]| {
        let out = w.command(WORKLOAD).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let control = run(&["attach", &sibling.0.id().to_string()]);
    assert!(control.contains("attach: ok"), "the control: {control}");
    let control = run(&["poke-mem", &sibling.0.id().to_string()]);
    assert!(
        control.contains("mem: ok") && control.contains("vm_writev: Bad address"),
        "the control: {control}"
    );
    let attach = run(&["attach", &held.to_string()]);
    assert!(
        attach.contains("Operation not permitted"),
        "PTRACE_ATTACH to the setup process: {attach}"
    );
    let poke = run(&["poke-mem", &held.to_string()]);
    assert!(
        // /proc/PID/mem says EACCES for any refusal of ptrace_may_access.
        poke.contains("mem: Permission denied")
            && poke.contains("vm_writev: Operation not permitted"),
        "its memory: {poke}"
    );
    let v = agent.wait_line("the refusal", |v| {
        v["event"] == "violation" && v["self_protection"] == true
    });
    assert_eq!(v["hook"], "ptrace_access_check", "{v}");
    assert_eq!(v["syscall"], "ptrace", "{v}");
    assert_eq!(v["policy"], "tracer", "{v}");
}

// The start hold (issue 16): no new workload's program runs before its policy is bound,
// without the wrapper and without a runtime. The selector names `sysfence-hold-PID/w-*`;
// each test cgroup is made just before a program is started in it, as a runtime does,
// so the agent's discovery (inotify, then a rescan) races the program's first syscall.

/// A program whose first syscall is denied, started in a cgroup made a moment before,
/// dies of it, 20 of 20: its exec was held until the agent had bound the cgroup. A
/// clean one runs, and so does a program in a cgroup below the root that no policy
/// selects (held, looked at, let go).
#[test]
fn a_new_cgroups_first_exec_waits_until_its_policy_is_bound() {
    if !privileged("a_new_cgroups_first_exec_waits_until_its_policy_is_bound") {
        return;
    }
    const RUNS: usize = 20;
    let (base, _base, dir, policies) = sysfence_tests::scene("hold");
    write_policy(
        &policies,
        "fresh.yaml",
        &policy_yaml(
            "fresh",
            &format!(
                "  selector:\n    cgroupPath: \"{base}/w-*\"\n  mode: enforce\n  killScope: process\n  include: [runtime-default]\n  deny: [getppid]\n"
            ),
        ),
    );
    let agent = Agent::builder(&policies)
        .runtime_socket(&dir.path().join("runtime.sock"))
        .no_cri()
        .start();
    agent.wait_line("started", |v| v["event"] == "started");
    let mut wrong = Vec::new();
    let mut cgroups = Vec::new();
    for i in 0..RUNS {
        let denied = TestCgroup::create(&format!("{base}/w-{i}"));
        let status = run_joined(&denied.path, WORKLOAD, &["raw", SYS_GETPPID]);
        if status.signal() != Some(9) {
            wrong.push(format!("w-{i}, getppid first: {status:?}"));
        }
        let clean = TestCgroup::create(&format!("{base}/w-clean-{i}"));
        let status = run_joined(&clean.path, WORKLOAD, &["raw", SYS_GETPID]);
        if !status.success() {
            wrong.push(format!("w-clean-{i}, getpid first: {status:?}"));
        }
        let unselected = TestCgroup::create(&format!("{base}/other-{i}"));
        let status = run_joined(&unselected.path, WORKLOAD, &["raw", SYS_GETPPID]);
        if !status.success() {
            wrong.push(format!("other-{i}, selected by no policy: {status:?}"));
        }
        cgroups.extend([denied, clean, unselected]);
    }
    assert!(wrong.is_empty(), "{wrong:#?}\n{}", agent.log());
    let released = |policy: &str| {
        agent
            .events()
            .iter()
            .filter(|v| v["event"] == "hold_released" && v["policy"] == policy)
            .count()
    };
    // The agent's log is read as it comes: its last lines may be on their way.
    wait_for(std::time::Duration::from_secs(10), || {
        (released("") >= RUNS).then_some(())
    });
    // A selected cgroup the agent found before the exec was bound already: not held.
    eprintln!(
        "held until bound: {} of {}; held and let go unbound: {}",
        released("fresh"),
        2 * RUNS,
        released("")
    );
    assert!(
        released("") >= RUNS,
        "the unselected ones were let go: {}",
        agent.log()
    );
    let stats = &agent.status()["probe"]["stats"];
    assert_eq!(stats["hold_failed"], 0, "{stats}");
}
