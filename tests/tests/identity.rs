//! Identity from trusted sources only (issue 14): what a workload says about itself —
//! its `comm`, its `argv[0]`, the names of the cgroups it creates — and what a local
//! client sends on the agent's sockets must never take a workload out of its policy.
//! Each test is an attack, run against the real agent and probe. Run with
//! `cargo xtask test` (as root; one at a time).

use std::{
    fs,
    os::unix::{fs::PermissionsExt as _, process::ExitStatusExt as _},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};
use sysfence_tests::{oci::*, *};

mod cri;
use cri::{Kubelet, Kubepods, container_config, pod_config, pod_uid};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_sf-syscalls");
const SYS_GETPPID: u32 = 110;
const NOBODY: u32 = 65534;

/// [`scene`], with the policy `held` on every cgroup below the base: enforce,
/// runtime-default without getppid.
fn held_scene(tag: &str) -> (String, TestCgroup, tempfile::TempDir, PathBuf) {
    let (base, cgroup, dir, policies) = scene(tag);
    write_policy(
        &policies,
        "held.yaml",
        &policy_yaml("held", &enforce_no_getppid(&format!("{base}/*"))),
    );
    (base, cgroup, dir, policies)
}

/// A held scene whose cgroup `base/w` has a resident process and is bound to `held`
/// by a running agent (no CRI), beside a second policy, `tenant` (audit), that `w`
/// would get if the agent believed it were another tenant's.
struct HeldW {
    agent: Agent,
    /// The bindings once `w` is bound.
    before: (Vec<(String, String, bool)>, Vec<u64>),
    victim: Proc,
    w: TestCgroup,
    dir: tempfile::TempDir,
    _base: TestCgroup,
}

fn held_w_beside_a_tenant_policy(tag: &str) -> HeldW {
    let (base, base_cgroup, dir, policies) = held_scene(tag);
    write_policy(
        &policies,
        "tenant.yaml",
        &policy_yaml(
            "tenant",
            &format!(
                "  selector:\n    namespace: other-tenant\n    cgroupPath: \"{base}/*\"\n  mode: audit\n  include: [runtime-default]\n"
            ),
        ),
    );
    let w = TestCgroup::create(&format!("{base}/w"));
    let victim = resident(&w);
    let agent = Agent::start(&policies, &dir.path().join("runtime.sock"), &["--no-cri"]);
    agent.wait_line("the binding of w", |v| {
        v["event"] == "bound" && v["cgroup"] == format!("{base}/w")
    });
    let before = bindings(&agent);
    assert!(
        before
            .0
            .contains(&(format!("{base}/w"), "held".into(), false)),
        "{before:?}"
    );
    HeldW {
        agent,
        before,
        victim,
        w,
        dir,
        _base: base_cgroup,
    }
}

/// `cgroupPath: SELECTOR`, enforce, runtime-default without getppid; a kill takes the
/// calling process only (`killScope: process`): these tests probe with children of a
/// long-lived process, which must outlive them.
fn enforce_no_getppid(selector: &str) -> String {
    format!(
        "  selector:\n    cgroupPath: \"{selector}\"\n  mode: enforce\n  killScope: process\n  include: [runtime-default]\n  deny: [getppid]\n"
    )
}

/// A 64-hex-digit id, as containerd, CRI-O and Docker make them, unique to this test.
fn hex_id(seed: &str) -> String {
    use sha2::Digest as _;
    format!(
        "{:x}",
        sha2::Sha256::digest(format!("{seed}-{}", std::process::id()))
    )
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// A process of ours, killed (by PID) and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A resident process (`sf-syscalls sleep`) in `cg`.
fn resident(cg: &TestCgroup) -> Proc {
    Proc(
        cg.command(WORKLOAD)
            .args(["sleep", "600000"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The agent's bindings as it reports them: cgroup path → (policy, monitor-only), and
/// the cgroup ids in the kernel's `WORKLOADS`.
fn bindings(agent: &Agent) -> (Vec<(String, String, bool)>, Vec<u64>) {
    let v = agent.workloads();
    let mut bound: Vec<(String, String, bool)> = v["bound"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["cgroup"].as_str().unwrap().to_string(),
                b["policy"].as_str().unwrap().to_string(),
                b["monitor_only"].as_bool().unwrap(),
            )
        })
        .collect();
    bound.sort();
    let mut kernel: Vec<u64> = v["kernel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_u64().unwrap())
        .collect();
    kernel.sort_unstable();
    (bound, kernel)
}

/// `sf-syscalls getppid 1` in the cgroup at `cg`: whether the probe killed it.
fn getppid_killed_in(cg: &Path) -> bool {
    command_in_cgroup(cg, WORKLOAD)
        .args(["getppid", "1"])
        .status()
        .unwrap()
        .signal()
        == Some(libc::SIGKILL)
}

// ---------------------------------------------------------------------------------
// A workload names itself: comm and argv[0], across a SIGKILL and restart of the agent.
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Spoof {
    /// `prctl(PR_SET_NAME, "runc:[2:INIT]")`: an OCI runtime's init, to the agent.
    Comm,
    /// Re-executed with `argv[0] = "firecracker"`: Kata's VMM, to the agent.
    Argv0,
}

/// A bound cgroup (`base/w`, or `base/docker-<64 hex>.scope` with no runtime state)
/// whose only processes claim to be a runtime's: a prober that, once a second, forks a
/// child making a denied getppid. It runs before, while the agent is SIGKILLed and
/// down, and after a new agent adopted the pinned probe; every child must be killed.
fn spoofed_workload_stays_policed_across_a_restart(test: &str, spoof: Spoof, docker: bool) {
    if !privileged(test) {
        return;
    }
    let (base, _base, dir, policies) = held_scene(&format!(
        "spoof-{}{}",
        match spoof {
            Spoof::Comm => "comm",
            Spoof::Argv0 => "argv0",
        },
        if docker { "-docker" } else { "" }
    ));
    let leaf = if docker {
        format!("docker-{}.scope", hex_id(test))
    } else {
        "w".to_string()
    };
    let rel = format!("{base}/{leaf}");
    let cg = TestCgroup::create(&rel);
    // An honest process first: the cgroup is bound as what it is.
    let anchor = resident(&cg);
    let agent = Agent::start(&policies, &dir.path().join("runtime.sock"), &["--no-cri"]);
    agent.wait_line("the binding of the workload", |v| {
        v["event"] == "bound" && v["cgroup"] == rel.as_str()
    });

    const PROBES: u32 = 14;
    let out_path = dir.path().join("prober.out");
    let spoof_args: Vec<&str> = match spoof {
        Spoof::Comm => vec!["prctl-name", "runc:[2:INIT]"],
        Spoof::Argv0 => vec!["exec-argv0", "firecracker"],
    };
    let probes = PROBES.to_string();
    let nr = SYS_GETPPID.to_string();
    let prober = Proc(
        cg.command(WORKLOAD)
            .args(&spoof_args)
            .args(["probe-every", "1000", &probes, &nr])
            .stdout(fs::File::create(&out_path).unwrap())
            .spawn()
            .unwrap(),
    );
    // The honest process leaves: every process left claims to be a runtime's.
    drop(anchor);
    std::thread::sleep(Duration::from_millis(3500));
    let t_kill = unix_ms();
    let (agent, _old_log) =
        agent.restart_after_sigkill_with(|| std::thread::sleep(Duration::from_secs(3)));
    let t_back = unix_ms();
    let finished = wait_for(Duration::from_secs(30), || {
        fs::read_to_string(&out_path)
            .ok()
            .filter(|t| t.contains("probes "))
    });
    drop(prober);
    let out = fs::read_to_string(&out_path).unwrap_or_default();
    let annotated: Vec<String> = out
        .lines()
        .map(|l| {
            let t: u128 = l
                .split_whitespace()
                .nth(2)
                .and_then(|t| t.trim_end_matches(':').parse().ok())
                .unwrap_or(0);
            let phase = if t == 0 {
                ""
            } else if t < t_kill {
                " (agent up)"
            } else if t < t_back {
                " (agent down)"
            } else {
                " (agent restarted)"
            };
            format!("{l}{phase}")
        })
        .collect();
    let log: Vec<String> = agent
        .events()
        .iter()
        .filter(|v| {
            v["cgroup"] == rel.as_str()
                || v["event"] == "adoption_finished"
                || v["event"] == "adopted"
        })
        .map(Value::to_string)
        .collect();
    assert!(
        finished.is_some(),
        "the prober did not finish:\n{}",
        annotated.join("\n")
    );
    let probed = |how: &str| {
        annotated
            .iter()
            .filter(|l| l.starts_with("probe ") && l.contains(how))
            .count()
    };
    let (survived, killed) = (probed(": survived"), probed(": killed"));
    assert!(
        survived == 0 && killed == PROBES as usize,
        "{spoof:?} spoof in {rel}: {survived} of {PROBES} denied calls ran unpoliced, {killed} \
         killed:\n{}\nthe restarted agent on this cgroup:\n{}",
        annotated.join("\n"),
        log.join("\n")
    );
    let (bound, _) = bindings(&agent);
    assert!(
        bound.contains(&(rel.clone(), "held".into(), false)),
        "{rel} is not bound to `held` as written: {bound:?}"
    );
}

#[test]
fn a_process_named_like_runc_init_stays_policed_across_a_restart() {
    spoofed_workload_stays_policed_across_a_restart(
        "a_process_named_like_runc_init_stays_policed_across_a_restart",
        Spoof::Comm,
        false,
    );
}

#[test]
fn a_process_named_like_runc_init_in_a_docker_named_cgroup_stays_policed_across_a_restart() {
    spoofed_workload_stays_policed_across_a_restart(
        "a_process_named_like_runc_init_in_a_docker_named_cgroup_stays_policed_across_a_restart",
        Spoof::Comm,
        true,
    );
}

#[test]
fn a_process_with_argv0_firecracker_stays_policed_across_a_restart() {
    spoofed_workload_stays_policed_across_a_restart(
        "a_process_with_argv0_firecracker_stays_policed_across_a_restart",
        Spoof::Argv0,
        false,
    );
}

#[test]
fn a_process_with_argv0_firecracker_in_a_docker_named_cgroup_stays_policed_across_a_restart() {
    spoofed_workload_stays_policed_across_a_restart(
        "a_process_with_argv0_firecracker_in_a_docker_named_cgroup_stays_policed_across_a_restart",
        Spoof::Argv0,
        true,
    );
}

// ---------------------------------------------------------------------------------
// A workload names the cgroups it creates.
// ---------------------------------------------------------------------------------

/// A runc-style runtime root with one container, `id`, whose init is `pid` and whose
/// bundle's annotations say it is container `other` of pod `other-pod` in namespace
/// `other-tenant`: another tenant's real container, as far as the runtime state goes.
fn fake_runtime_state(root: &Path, id: &str, pid: u32, bundle: &Path, exec_fifo: bool) {
    fs::create_dir_all(bundle).unwrap();
    fs::write(
        bundle.join("config.json"),
        serde_json::to_vec(&json!({
            "ociVersion": "1.0.2",
            "annotations": {
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.container-name": "other",
                "io.kubernetes.cri.sandbox-name": "other-pod",
                "io.kubernetes.cri.sandbox-namespace": "other-tenant",
            }
        }))
        .unwrap(),
    )
    .unwrap();
    let dir = root.join(id);
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("state.json"),
        serde_json::to_vec(&json!({
            "id": id,
            "init_process_pid": pid,
            "config": {"labels": [format!("bundle={}", bundle.display())]},
        }))
        .unwrap(),
    )
    .unwrap();
    if exec_fifo {
        fs::write(dir.join("exec.fifo"), "").unwrap();
    }
}

/// Below a bound cgroup, the workload creates cgroups named like containers: after
/// another tenant's real container (`docker-<its id>.scope`,
/// `cri-containerd-<its id>.scope`), like a Kata sandbox (`kata_x`), like a CRI id (64
/// hex digits), like a Docker container no runtime knows. Each keeps its ancestor's
/// policy, as written: a denied call in it is killed.
#[test]
fn nested_cgroups_named_like_containers_keep_the_ancestors_policy() {
    let test = "nested_cgroups_named_like_containers_keep_the_ancestors_policy";
    if !privileged(test) {
        return;
    }
    let (base, _base, dir, policies) = scene("nested");
    write_policy(
        &policies,
        "parent.yaml",
        &policy_yaml("parent", &enforce_no_getppid(&format!("{base}/**"))),
    );
    // Another tenant's policy: more specific, audit only.
    write_policy(
        &policies,
        "tenant.yaml",
        &policy_yaml(
            "tenant",
            "  selector:\n    namespace: other-tenant\n    container: other\n  mode: audit\n  include: [runtime-default]\n",
        ),
    );
    // The other tenant's container: a process in `base/other`, in a runtime's state.
    let other_id = hex_id("other");
    let other = TestCgroup::create(&format!("{base}/other"));
    let other_proc = resident(&other);
    let state_root = dir.path().join("state");
    fake_runtime_state(
        &state_root,
        &other_id,
        other_proc.0.id(),
        &dir.path().join("bundle"),
        false,
    );
    let w = TestCgroup::create(&format!("{base}/w"));
    let agent = Agent::start(
        &policies,
        &dir.path().join("runtime.sock"),
        &["--no-cri", "--runtime-root", state_root.to_str().unwrap()],
    );
    agent.wait_line("the binding of w", |v| {
        v["event"] == "bound" && v["cgroup"] == format!("{base}/w")
    });
    agent.wait_line("the other tenant's binding", |v| {
        v["event"] == "bound" && v["cgroup"] == format!("{base}/other")
    });
    assert!(getppid_killed_in(&w.path), "w itself is not policed");

    let unknown = hex_id("unknown");
    let names = [
        format!("docker-{other_id}.scope"),
        format!("cri-containerd-{other_id}.scope"),
        "kata_x".to_string(),
        unknown.clone(),
        format!("docker-{unknown}.scope"),
    ];
    let nested: Vec<TestCgroup> = names
        .iter()
        .map(|n| TestCgroup::create(&format!("{base}/w/{n}")))
        .collect();
    let _residents: Vec<Proc> = nested.iter().map(resident).collect();
    // Discovery: inotify at once, and rescans every 0.5 s.
    std::thread::sleep(Duration::from_secs(2));
    let (bound, _) = bindings(&agent);
    let mut escaped = Vec::new();
    for (name, cg) in names.iter().zip(&nested) {
        let rel = format!("{base}/w/{name}");
        let own = bound.iter().find(|(c, _, _)| *c == rel);
        let killed = getppid_killed_in(&cg.path);
        let weaker = own.is_some_and(|(_, p, m)| p != "parent" || *m);
        if !killed || weaker {
            escaped.push(format!(
                "{name}: getppid {}; own binding {own:?}",
                if killed { "killed" } else { "RAN" }
            ));
        }
    }
    let log: Vec<String> = agent
        .events()
        .iter()
        .filter(|v| {
            v["cgroup"]
                .as_str()
                .is_some_and(|c| c.starts_with(&format!("{base}/w/")))
        })
        .map(Value::to_string)
        .collect();
    assert!(
        escaped.is_empty(),
        "nested cgroups out of their ancestor's policy:\n{}\nagent:\n{}",
        escaped.join("\n"),
        log.join("\n")
    );
    drop(_residents);
    drop(other_proc);
}

// ---------------------------------------------------------------------------------
// The local sockets.
// ---------------------------------------------------------------------------------

/// Make the agent's sockets reachable by anyone (parent directory 0755, socket 0666),
/// so that only the agent's own peer check stands between `nobody` and them.
fn open_up(socket: &Path) {
    let dir = socket.parent().unwrap();
    if dir != Path::new("/tmp") {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::set_permissions(socket, fs::Permissions::from_mode(0o666)).unwrap();
}

/// One request line on `socket` as uid `uid`: the answer line, `closed`, or `error: …`.
fn send_as(uid: u32, socket: &Path, line: &str) -> String {
    let out = std::process::Command::new(WORKLOAD)
        .args(["as-user", &uid.to_string(), "send"])
        .arg(socket)
        .arg(line)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sf-syscalls as-user: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Root's request on a socket: the first answer line.
fn send_root(socket: &Path, bytes: &[u8]) -> String {
    use std::io::{BufRead as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The agent may refuse (and hang up) before all of a long line is written.
    let _ = s.write_all(bytes);
    let mut answer = String::new();
    match std::io::BufReader::new(s).read_line(&mut answer) {
        Ok(0) => "closed".to_string(),
        Ok(_) => answer.trim().to_string(),
        Err(e) => format!("error: {e}"),
    }
}

fn answered_ok(answer: &str) -> bool {
    serde_json::from_str::<Value>(answer).is_ok_and(|v| v["ok"] == true)
}

fn refused(answer: &str) -> bool {
    answer == "closed" || serde_json::from_str::<Value>(answer).is_ok_and(|v| v["ok"] == false)
}

/// A process that is not root gets nothing from `runtime.sock` or `api.sock`, even when
/// the socket files' modes would let it connect.
#[test]
fn runtime_and_api_sockets_refuse_a_non_root_peer() {
    let test = "runtime_and_api_sockets_refuse_a_non_root_peer";
    if !privileged(test) {
        return;
    }
    let (_, _base, dir, policies) = held_scene("peer");
    let agent = Agent::start(&policies, &dir.path().join("runtime.sock"), &["--no-cri"]);
    open_up(&agent.socket);
    open_up(&agent.api);
    let mut failures = Vec::new();
    for (socket, line) in [
        (&agent.socket, r#"{"op":"workloads"}"#),
        (&agent.api, r#"{"op":"status"}"#),
    ] {
        let answer = send_as(NOBODY, socket, line);
        assert!(
            !answer.starts_with("error: connect"),
            "the test could not reach {} as nobody: {answer}",
            socket.display()
        );
        if !refused(&answer) || answered_ok(&answer) {
            failures.push(format!(
                "{}: uid {NOBODY} was answered {}",
                socket.display(),
                answer.chars().take(300).collect::<String>()
            ));
        }
    }
    // Root still is.
    assert!(answered_ok(&send_root(
        &agent.socket,
        b"{\"op\":\"workloads\"}\n"
    )));
    assert!(answered_ok(&send_root(
        &agent.api,
        b"{\"op\":\"status\"}\n"
    )));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `--runtime-socket-uid UID` admits that uid (a runtime that does not run as root).
#[test]
fn the_runtime_socket_admits_a_configured_uid() {
    let test = "the_runtime_socket_admits_a_configured_uid";
    if !privileged(test) {
        return;
    }
    let help = sysfence().args(["agent", "--help"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("--runtime-socket-uid"),
        "`sysfence agent` has no --runtime-socket-uid option"
    );
    let (_, _base, dir, policies) = held_scene("peer-uid");
    let agent = Agent::start(
        &policies,
        &dir.path().join("runtime.sock"),
        &["--no-cri", "--runtime-socket-uid", &NOBODY.to_string()],
    );
    open_up(&agent.socket);
    let answer = send_as(NOBODY, &agent.socket, r#"{"op":"workloads"}"#);
    assert!(answered_ok(&answer), "{answer}");
    // Another uid still is not.
    let answer = send_as(NOBODY - 1, &agent.socket, r#"{"op":"workloads"}"#);
    assert!(refused(&answer) && !answered_ok(&answer), "{answer}");
}

/// The agent's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A request line past the limit is refused (even a valid request, padded), and a line
/// that never ends does not grow the agent's memory.
#[test]
fn oversized_request_lines_are_refused() {
    let test = "oversized_request_lines_are_refused";
    if !privileged(test) {
        return;
    }
    let (_, _base, dir, policies) = held_scene("lines");
    let agent = Agent::start(&policies, &dir.path().join("runtime.sock"), &["--no-cri"]);
    let pad = "x".repeat(1 << 20);
    let mut failures = Vec::new();
    for (socket, op) in [(&agent.socket, "workloads"), (&agent.api, "status")] {
        let long = format!("{{\"op\":\"{op}\",\"pad\":\"{pad}\"}}\n");
        let answer = send_root(socket, long.as_bytes());
        if !refused(&answer) || answered_ok(&answer) {
            failures.push(format!(
                "{}: a 1 MiB request line was answered {}",
                socket.display(),
                answer.chars().take(200).collect::<String>()
            ));
        }
        // 64 MiB without a newline, held open while the agent's memory is measured.
        let before = rss_kib(agent.pid());
        let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let chunk = vec![b'x'; 1 << 20];
        let mut sent = 0usize;
        for _ in 0..64 {
            if std::io::Write::write_all(&mut s, &chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        std::thread::sleep(Duration::from_millis(300));
        let after = rss_kib(agent.pid());
        drop(s);
        if after > before + 16 * 1024 {
            failures.push(format!(
                "{}: an endless line ({} MiB sent) grew the agent from {before} to {after} KiB",
                socket.display(),
                sent >> 20
            ));
        }
        // Still serving.
        let ok = format!("{{\"op\":\"{op}\"}}\n");
        assert!(
            answered_ok(&send_root(socket, ok.as_bytes())),
            "{} stopped serving",
            socket.display()
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The bindings, and a `w` workload whose denied call is killed, before and after a
/// request: nothing changed, also after a few rescans.
fn assert_nothing_changed(
    agent: &Agent,
    before: &(Vec<(String, String, bool)>, Vec<u64>),
    w: &Path,
    what: &str,
) {
    let after = bindings(agent);
    assert_eq!(&after, before, "{what} changed the bindings");
    std::thread::sleep(Duration::from_millis(1200));
    let later = bindings(agent);
    assert_eq!(&later, before, "{what} changed the bindings (at a rescan)");
    assert!(
        getppid_killed_in(w),
        "{what}: w's denied call is no longer killed"
    );
}

/// A `start` whose id is a path (`/`, `..`) is refused, and the agent never executes a
/// path a client sends (`runtime_path`).
#[test]
fn ids_with_a_path_are_refused_and_no_client_path_is_executed() {
    let test = "ids_with_a_path_are_refused_and_no_client_path_is_executed";
    if !privileged(test) {
        return;
    }
    // Bindings are dropped in reverse: the agent first, the base cgroup last.
    let HeldW {
        _base,
        dir,
        w,
        victim,
        before,
        agent,
    } = held_w_beside_a_tenant_policy("ids");
    // State the client wrote, outside the root it names, reached through `..`.
    let root = dir.path().join("root");
    fs::create_dir_all(&root).unwrap();
    fake_runtime_state(
        dir.path(),
        "escape",
        victim.0.id(),
        &dir.path().join("bundle"),
        false,
    );
    let marker = dir.path().join("executed");
    let evil = dir.path().join("evil-runtime");
    fs::write(
        &evil,
        format!("#!/bin/sh\ntouch {}\nexit 1\n", marker.display()),
    )
    .unwrap();
    fs::set_permissions(&evil, fs::Permissions::from_mode(0o755)).unwrap();
    let start = |id: &str, root: &Path, runtime_path: &Path| {
        json!({"op": "start", "runtime": "runc", "runtime_path": runtime_path, "root": root,
               "id": id, "sent_ns": 0})
        .to_string()
    };
    let mut failures = Vec::new();
    for id in ["../escape", "a/b", "..", "/abs", "../../../../etc/passwd"] {
        let line = start(id, &root, Path::new("/usr/sbin/runc"));
        let answer = send_root(&agent.socket, format!("{line}\n").as_bytes());
        if answered_ok(&answer) {
            failures.push(format!("id {id:?} was accepted: {answer}"));
        }
        let after = bindings(&agent);
        if after != before {
            failures.push(format!(
                "id {id:?} changed the bindings: {:?} -> {:?}",
                before.0, after.0
            ));
        }
    }
    // A valid id, no state for it: the agent must not run the client's runtime_path.
    let empty_root = dir.path().join("empty-root");
    fs::create_dir_all(&empty_root).unwrap();
    let answer = send_root(
        &agent.socket,
        format!("{}\n", start("nosuch", &empty_root, &evil)).as_bytes(),
    );
    std::thread::sleep(Duration::from_millis(200));
    if marker.exists() {
        failures.push(format!(
            "the agent executed the client's runtime_path {} (answer: {answer})",
            evil.display()
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_nothing_changed(&agent, &before, &w.path, "the refused starts");
}

/// A `start` for a container the agent cannot know from a trusted source (no state, or
/// state in a directory the client chose that names a policed process) changes no
/// binding: not unbound, not rebound to a weaker policy.
#[test]
fn a_start_for_an_unknown_container_changes_nothing() {
    let test = "a_start_for_an_unknown_container_changes_nothing";
    if !privileged(test) {
        return;
    }
    // Bindings are dropped in reverse: the agent first, the base cgroup last.
    let HeldW {
        _base,
        dir,
        w,
        victim,
        before,
        agent,
    } = held_w_beside_a_tenant_policy("unknown");
    let start = |id: &str, root: &Path| {
        format!(
            "{}\n",
            json!({"op": "start", "runtime": "runc", "root": root, "id": id, "sent_ns": 0})
        )
    };
    // No state anywhere.
    let empty_root = dir.path().join("empty-root");
    fs::create_dir_all(&empty_root).unwrap();
    let answer = send_root(&agent.socket, start("nosuch", &empty_root).as_bytes());
    assert!(!answered_ok(&answer), "a start for nothing: {answer}");
    assert_nothing_changed(&agent, &before, &w.path, "a start for an unknown id");
    // State in a root of the client's choosing, naming w's process, claiming another
    // tenant's pod; and one still waiting for `start` (exec.fifo).
    for (id, fifo) in [("fake-1", false), ("fake-2", true)] {
        let fake_root = dir.path().join(format!("fake-root-{id}"));
        fake_runtime_state(
            &fake_root,
            id,
            victim.0.id(),
            &dir.path().join(format!("bundle-{id}")),
            fifo,
        );
        let answer = send_root(&agent.socket, start(id, &fake_root).as_bytes());
        let after = bindings(&agent);
        assert_eq!(
            after, before,
            "a start of {id}, in a state directory the client chose, changed the bindings \
             (answer: {answer})"
        );
        assert_nothing_changed(&agent, &before, &w.path, &format!("a start of {id}"));
    }
}

// ---------------------------------------------------------------------------------
// The CRI is down when a container starts.
// ---------------------------------------------------------------------------------

/// A unix socket that forwards to `target` once [`CriProxy::up`] is called; until then
/// its path does not exist (a CRI that is down). Stopped, and its path removed, on drop.
struct CriProxy {
    path: PathBuf,
    target: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CriProxy {
    fn down(path: &Path, target: &Path) -> CriProxy {
        let _ = fs::remove_file(path);
        CriProxy {
            path: path.to_path_buf(),
            target: target.to_path_buf(),
            stop: Default::default(),
        }
    }

    fn up(&self) {
        let listener = std::os::unix::net::UnixListener::bind(&self.path).unwrap();
        let (target, stop) = (self.target.clone(), self.stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = std::os::unix::net::UnixStream::connect(&target) else {
                    continue;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut c, mut s) = (client, server);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c, &mut s);
                    let _ = s.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
    }
}

impl Drop for CriProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so that it sees `stop`.
        let _ = std::os::unix::net::UnixStream::connect(&self.path);
        let _ = fs::remove_file(&self.path);
    }
}

/// A policy selects pods by namespace and label; the CRI, the only source of labels,
/// is down when two pods start. Both are bound at `start` all the same (fail closed: the
/// policy may select them), and `status` says why; the victim's denied call is killed.
/// Once the CRI answers, the precise choice replaces it: the bystander (other labels)
/// is let go and its same call runs; the victim stays bound.
#[test]
fn a_cri_outage_at_start_binds_fail_closed_then_the_precise_policy() {
    let name = "a_cri_outage_at_start_binds_fail_closed_then_the_precise_policy";
    if !privileged(name) {
        return;
    }
    let Some(bins) = require(
        name,
        &["containerd", "ctr", "runc", "containerd-shim-runc-v2"],
        false,
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    fs::create_dir_all(&policies).unwrap();
    write_policy(
        &policies,
        "victims.yaml",
        &policy_yaml(
            "victims",
            "  selector:\n    namespace: sysfence-test\n    podLabels:\n      matchLabels: {app: victim}\n  mode: enforce\n  killScope: process\n  include: [runtime-default]\n  deny: [mkdir]\n",
        ),
    );
    let cdir = dir.path().join("containerd");
    let socket = dir.path().join("runtime.sock");
    let wrapper = write_wrapper(dir.path(), &bins[2], &socket);
    let rootfs_dir = dir.path().join("image");
    fs::create_dir_all(&rootfs_dir).unwrap();
    let rootfs = busybox_rootfs(&rootfs_dir, &["sh", "sleep", "mkdir", "echo", "cat"]);
    let kubepods = Kubepods::before();
    let proxy = CriProxy::down(
        &dir.path().join("cri-proxy.sock"),
        &cdir.join("containerd.sock"),
    );
    let agent = Agent::start(
        &policies,
        &socket,
        &[
            "--cri-socket",
            proxy.path.to_str().unwrap(),
            "--runtime-root",
            cdir.join("runc/k8s.io").to_str().unwrap(),
        ],
    );
    let mut containerd = Containerd::start(&cdir, &wrapper, &rootfs);
    // Uids apart from those of the other CRI test (containers.rs).
    let pods = [
        (
            "victim",
            pod_uid(1, 16),
            "echo started; sleep 1; mkdir /tmp/made && echo SURVIVED; sleep 60",
        ),
        (
            "bystander",
            pod_uid(2, 16),
            "echo started; sleep 15; mkdir /tmp/made && echo SURVIVED; sleep 60",
        ),
    ];
    containerd
        .cgroups
        .extend(kubepods.made(&[&pods[0].1, &pods[1].1]));
    let mut kubelet = Kubelet::connect(&containerd.socket);
    let logs = dir.path().join("logs");
    let mut started = Vec::new();
    for (pod, u, script) in &pods {
        let sandbox = pod_config(pod, u, &[("app", pod)], &logs);
        let (_, cid) = kubelet.start_pod(sandbox, container_config(pod, u, script), &|| {
            containerd.log_tail()
        });
        started.push(cid);
    }
    let t_started = Instant::now();
    let (victim, bystander) = (&started[0], &started[1]);
    let bound_at_start = |cid: &str| {
        agent
            .events()
            .into_iter()
            .find(|v| v["event"] == "bound" && v["container_id"] == cid && v["via"] == "start")
    };
    let mut failures = Vec::new();
    // During the outage: both bound before their entrypoint, the victim killed.
    for (who, cid) in [("victim", victim), ("bystander", bystander)] {
        match bound_at_start(cid) {
            Some(b) if b["policy"] == "victims" && b["mode"] == "enforce" => {}
            other => failures.push(format!(
                "{who} was not bound fail-closed at start while the CRI was down: {other:?}"
            )),
        }
    }
    let status = agent.api(&json!({"op": "status"}));
    let row = status["workloads"].as_array().and_then(|rows| {
        rows.iter()
            .find(|r| r["container_id"] == bystander.as_str())
    });
    if !row.is_some_and(|r| r.to_string().contains("fail-closed")) {
        failures.push(format!(
            "status does not say that the bystander is bound fail-closed: {row:?}"
        ));
    }
    // The victim's mkdir (1 s after its start) is killed: its shell says `Killed`, and
    // never `SURVIVED` (the shell itself goes on sleeping).
    let victim_log = wait_for(Duration::from_secs(8), || {
        let text = fs::read_to_string(logs.join("victim/app.log")).ok()?;
        (text.contains("Killed") || text.contains("SURVIVED")).then_some(text)
    });
    if !victim_log
        .as_deref()
        .is_some_and(|t| t.contains("Killed") && !t.contains("SURVIVED"))
    {
        failures.push(format!(
            "the victim's mkdir, during the CRI outage, was not killed: log {victim_log:?}"
        ));
    }
    // The CRI answers: the bystander is let go before its mkdir (15 s after start).
    proxy.up();
    let let_go = wait_for(Duration::from_secs(8), || {
        agent.events().into_iter().find(|v| {
            v["event"] == "unbound"
                && bound_at_start(bystander).is_some_and(|b| b["cgroup_id"] == v["cgroup_id"])
        })
    });
    if let_go.is_none() {
        failures.push(format!(
            "the bystander was not let go once the CRI answered ({:?} after start)",
            t_started.elapsed()
        ));
    }
    let bystander_log = wait_for(Duration::from_secs(30), || {
        let text = fs::read_to_string(logs.join("bystander/app.log")).ok()?;
        (text.contains("SURVIVED") || text.contains("exited")).then_some(text)
    });
    let by_exit = kubelet
        .rt
        .block_on(kubelet.cri.container_status(bystander, false))
        .ok()
        .and_then(|s| s.status)
        .map(|s| (s.state, s.exit_code));
    if !bystander_log
        .as_deref()
        .is_some_and(|t| t.contains("SURVIVED"))
    {
        failures.push(format!(
            "the bystander's mkdir, after the CRI answered, did not run: log {bystander_log:?}, \
             status {by_exit:?}"
        ));
    }
    let (bound, _) = bindings(&agent);
    let victim_pod_bound = bound.iter().any(|(c, p, m)| {
        c.starts_with(&format!("kubepods/besteffort/pod{}", pods[0].1)) && p == "victims" && !m
    });
    if !victim_pod_bound {
        failures.push(format!(
            "nothing of the victim's pod is bound to `victims` once the CRI answered: {bound:?}"
        ));
    }
    let log: Vec<String> = agent
        .events()
        .iter()
        .filter(|v| {
            [
                "bound",
                "unbound",
                "workload",
                "cri_unavailable",
                "start_failed",
            ]
            .contains(&v["event"].as_str().unwrap_or(""))
        })
        .map(Value::to_string)
        .collect();
    drop(kubelet);
    drop(containerd);
    assert!(
        failures.is_empty(),
        "{}\nagent:\n{}",
        failures.join("\n"),
        log.join("\n")
    );
}
