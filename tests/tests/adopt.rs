//! Adopting a policy in four steps, end to end: watch, record (learn), report (dry
//! run), enforce. Privileged tests follow tests/tests/host.rs: under `CI=true` a test
//! that cannot run fails with the reason; elsewhere it says what is missing and stops.
//! Run with `cargo xtask test` (as root; one at a time).

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader},
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use sysfence_tests::{agent::Agent, oci, process::Collected, *};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_sf-syscalls");

/// `strace -f -c` of `program args`: calls per syscall name.
fn strace_counts(program: &str, args: &[&str]) -> BTreeMap<String, u64> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("strace.txt");
    let status = Command::new("strace")
        .args(["-f", "-c", "-U", "name,calls", "-o"])
        .arg(&out)
        .arg(program)
        .args(args)
        .status()
        .expect("run strace");
    assert!(status.success(), "strace {program}: {status:?}");
    let text = fs::read_to_string(&out).unwrap();
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        if let (Some(name), Some(calls), None) = (f.next(), f.next(), f.next())
            && let Ok(calls) = calls.parse::<u64>()
            && name != "total"
        {
            counts.insert(name.to_string(), calls);
        }
    }
    assert!(!counts.is_empty(), "no strace table in:\n{text}");
    counts
}

/// x86_64 counts of the first workload of a recording.
fn recording_counts(rec: &Value) -> BTreeMap<String, u64> {
    rec["workloads"][0]["syscalls"]
        .as_array()
        .expect("syscalls")
        .iter()
        .map(|s| {
            assert_eq!(s["abi"], "x86_64", "{s}");
            (
                s["syscall"].as_str().unwrap().to_string(),
                s["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn diff(
    a_name: &str,
    a: &BTreeMap<String, u64>,
    b_name: &str,
    b: &BTreeMap<String, u64>,
) -> String {
    let mut out = String::new();
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let (x, y) = (
            a.get(k).copied().unwrap_or(0),
            b.get(k).copied().unwrap_or(0),
        );
        if x != y {
            out.push_str(&format!("  {k}: {a_name} {x}, {b_name} {y}\n"));
        }
    }
    out
}

fn record_command(dir: &Path, args: &[&str]) -> (Value, String) {
    let out = sysfence()
        .args(["record", "--no-include", "-o"])
        .arg(dir)
        .arg("--")
        .arg(WORKLOAD)
        .args(args)
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "record failed: {stderr}");
    let rec: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("recording.json")).unwrap()).unwrap();
    (rec, stderr)
}

/// strace -c tallies a call when it returns; `exit_group` never returns, so strace
/// leaves it out while sysfence (which counts at sys_enter) has it, once.
fn strace_with_exit_group(mut strace: BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    assert!(
        !strace.contains_key("exit_group"),
        "this strace counts exit_group: drop the adjustment"
    );
    strace.insert("exit_group".into(), 1);
    strace
}

fn names_except(rec: &Value, except: &[&str]) -> Vec<String> {
    recording_counts(rec)
        .into_keys()
        .filter(|n| !except.contains(&n.as_str()))
        .collect()
}

/// `report --format json` → {label: count} of its first workload, and its exit code.
fn report_denials(args: &[&Path], flags: &[&str]) -> (i32, BTreeMap<String, u64>, Value) {
    let mut cmd = sysfence();
    cmd.arg("report").args(flags);
    for a in args {
        cmd.arg(a);
    }
    let out = cmd.args(["--format", "json"]).output().unwrap();
    let (stdout, stderr) = text(&out);
    let v: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("report output is not JSON ({e}): {stdout}\n{stderr}"));
    let denials = v["workloads"][0]["denials"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    (
                        d["label"].as_str().unwrap().to_string(),
                        d["count"].as_u64().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (out.status.code().unwrap_or(-1), denials, v)
}

/// A stand-in for the agent's API (the real server is the agent's): answers `watch`
/// with two cumulative frames and `events` with one answer, lines as in the contract
/// (agent/src/watch/api.rs). Returns the request lines it received.
fn fake_agent_api(socket: &Path) -> Arc<Mutex<Vec<String>>> {
    use std::io::Write as _;
    let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind fake API");
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_err() {
                continue;
            }
            seen.lock().unwrap().push(line.trim().to_string());
            let request: Value = serde_json::from_str(&line).unwrap_or_default();
            let identity = r#""cgroup_id":4242,"cgroup":"kubepods/pod1/c1","namespace":"shop","pod":"web-1","container":"web","container_id":"abc""#;
            let answer = match request["op"].as_str() {
                Some("watch") => format!(
                    "{{\"t_ms\":1764374400000,\"workloads\":[{{{identity},\"policy\":\"web\",\"mode\":\"audit\",\"counts\":{{\"x86_64:read\":10,\"i386:mount\":1}},\"violations\":{{\"x86_64:ptrace\":1}}}}]}}\n\
                     {{\"t_ms\":1764374401000,\"workloads\":[{{{identity},\"policy\":\"web\",\"mode\":\"audit\",\"counts\":{{\"x86_64:read\":25,\"i386:mount\":1}},\"violations\":{{\"x86_64:ptrace\":3}}}}]}}\n\
                     {{\"t_ms\":1764374402000,\"workloads\":[]}}\n"
                ),
                Some("events") => format!(
                    "{{\"since_ms\":1764374400000,\"workloads\":[{{{identity},\"policy\":\"web\",\"mode\":\"audit\",\"bound_ms\":1764374400000}}],\"violations\":[\
                     {{\"timestamp\":\"2025-11-29T00:00:05.000000Z\",\"level\":\"WARN\",\"event\":\"violation\",\"policy\":\"web\",\"monitor_only\":false,{identity},\"pid\":17,\"tid\":17,\"comm\":\"nginx\",\"exe\":\"/usr/sbin/nginx\",\"abi\":\"x86_64\",\"syscall\":\"ptrace\",\"nr\":101,\"outcome\":\"audited\",\"runtime\":\"runc\",\"sandboxed\":false,\"image\":\"nginx:1.25\",\"hook\":\"\",\"via_io_uring\":false,\"suppressed\":4}},\
                     {{\"timestamp\":\"2025-11-29T00:00:09.000000Z\",\"level\":\"WARN\",\"event\":\"violation\",\"policy\":\"web\",\"monitor_only\":false,{identity},\"pid\":18,\"tid\":18,\"comm\":\"nginx\",\"abi\":\"i386\",\"syscall\":\"mount (i386)\",\"nr\":21,\"outcome\":\"audited\",\"runtime\":\"runc\",\"sandboxed\":false,\"image\":\"nginx:1.25\",\"hook\":\"\",\"via_io_uring\":false,\"suppressed\":0}}]}}\n"
                ),
                _ => "{\"error\":\"unknown op\"}\n".to_string(),
            };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    requests
}

#[test]
fn watch_and_record_refuse_a_cri_socket_that_is_not_there() {
    // No root: refused before any probe is loaded, with nothing written.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("containerd.sock");
    let out_dir = dir.path().join("learned");
    for args in [
        vec!["watch", "--standalone", "--json", "--count", "1"],
        vec!["record", "--namespace", "shop", "--duration", "1s", "-o"],
    ] {
        let mut cmd = sysfence();
        cmd.args(&args);
        if args[0] == "record" {
            cmd.arg(&out_dir);
        }
        let out = cmd.arg("--cri-socket").arg(&missing).output().unwrap();
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "--cri-socket {}: no such socket",
                missing.display()
            )),
            "{args:?}: {stderr}"
        );
    }
    assert!(!out_dir.join("policy.yaml").exists(), "nothing learned");
}

#[test]
fn watch_and_report_read_the_agent_api() {
    // No root: the data comes from the (stand-in) agent.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let requests = fake_agent_api(&socket);

    let out = sysfence()
        .args(["watch", "--json", "--namespace", "shop", "--api"])
        .arg(&socket)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("agent mode"), "the mode is said: {stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    // The third frame lacks the workload: its last line says it is gone.
    assert_eq!(lines[2]["gone"], true);
    assert_eq!(lines[2]["total"], 0);
    for l in &lines {
        assert_eq!(l["source"], "agent");
        assert_eq!(l["policy"], "web");
        assert_eq!(l["mode"], "audit");
        assert_eq!(l["pod"], "web-1");
    }
    // Deltas of cumulative frames.
    assert_eq!(lines[0]["deltas"]["x86_64:read"], 10);
    assert_eq!(lines[0]["deltas"]["i386:mount"], 1);
    assert_eq!(lines[1]["deltas"]["x86_64:read"], 15);
    assert!(lines[1]["deltas"].get("i386:mount").is_none());
    assert_eq!(lines[1]["violations"]["x86_64:ptrace"], 2);
    assert_eq!(lines[1]["interval_ms"], 1000);
    let request: Value = serde_json::from_str(&requests.lock().unwrap()[0]).unwrap();
    assert_eq!(request["op"], "watch");
    assert_eq!(request["namespace"], "shop");

    let out = sysfence()
        .args(["report", "--format", "json", "--api"])
        .arg(&socket)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "would-be denials: exit 1; {stderr}"
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let w = &report["workloads"][0];
    assert_eq!(w["name"], "shop/web-1/web");
    assert_eq!(w["denials"][0]["label"], "ptrace");
    assert_eq!(w["denials"][0]["count"], 5, "1 event + 4 suppressed");
    assert_eq!(w["denials"][0]["exe"], "/usr/sbin/nginx");
    assert_eq!(w["denials"][1]["label"], "mount (i386)");
    assert_eq!(
        w["verdict"]["text"],
        "not safe: 6 would-be denials of 2 syscalls"
    );
    assert!(
        w["suggestion"]
            .as_str()
            .unwrap()
            .contains("allow: [mount, ptrace]"),
        "{w}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(requests.lock().unwrap().last().unwrap()).unwrap()["op"],
        "events"
    );
}

/// Tests that need the host: its tools (strace, chromium, runc), or that add nothing on
/// the VM kernels (no BPF LSM involved). `cargo xtask vm-test` runs the test
/// executables with `--skip host_only::`, as for tests/tests/containers.rs.
mod host_only {
    use super::*;

    #[test]
    fn watch_and_record_count_what_strace_counts() {
        const TEST: &str = "watch_and_record_count_what_strace_counts";
        if !privileged(TEST) || !tool(TEST, "strace", "strace") {
            return;
        }
        const N: &str = "1234";
        let args = ["getppid", N];
        // strace -f -c: from the traced child's execve (strace's own fork and
        // PTRACE_TRACEME come before it and are not the program's). sysfence counts from
        // the cgroup join, which happens in the child just before the same execve: the
        // execve is the first call both count. So the tables must agree call for call,
        // but for exit_group (see strace_with_exit_group).
        let expected = strace_with_exit_group(strace_counts(WORKLOAD, &args));
        assert_eq!(expected["getppid"], 1234);
        assert_eq!(expected["execve"], 1);

        // record -- CMD
        let dir = tempfile::tempdir().unwrap();
        let (rec, _) = record_command(dir.path(), &args);
        let recorded = recording_counts(&rec);
        let d = diff("strace", &expected, "record", &recorded);
        assert!(d.is_empty(), "record and strace differ:\n{d}");

        // watch --json, standalone, on a cgroup the workload joins before exec.
        let base = format!("sysfence-test-adopt-{}", std::process::id());
        let _base = TestCgroup::create(&base);
        let work = TestCgroup::create(&format!("{base}/watch"));
        let rel = format!("{base}/watch");
        let mut cmd = sysfence();
        cmd.args([
            "watch",
            "--json",
            "--standalone",
            "--interval",
            "0.2",
            "--cgroup",
            &rel,
        ]);
        let watch = Collected::start(cmd);
        watch.wait_stderr("the mode line", "standalone mode");
        // The first line for the cgroup means its slot is bound.
        watch.wait_json("the cgroup's first line", |v| v["cgroup"] == rel.as_str());
        let status = run_joined(&work.path, WORKLOAD, &args);
        assert!(status.success(), "{status:?}");
        std::thread::sleep(Duration::from_millis(600));
        let (code, lines) = watch.stop(libc::SIGINT);
        assert_eq!(
            code,
            0,
            "watch exits cleanly on SIGINT; {}",
            lines.join("\n")
        );
        let mut watched: BTreeMap<String, u64> = BTreeMap::new();
        let mut saw_last = false;
        for l in &lines {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert_eq!(v["source"], "standalone");
            if v["cgroup"] != rel.as_str() {
                continue;
            }
            saw_last |= v["gone"] == true;
            for (k, n) in v["deltas"].as_object().unwrap() {
                let (abi, name) = k.split_once(':').unwrap();
                assert_eq!(abi, "x86_64", "{l}");
                *watched.entry(name.to_string()).or_default() += n.as_u64().unwrap();
            }
        }
        assert!(saw_last, "the last line of a stopped watch says gone: true");
        let d = diff("strace", &expected, "watch", &watched);
        assert!(d.is_empty(), "watch --json and strace differ:\n{d}");
        eprintln!(
            "{TEST}: {} syscalls, {} distinct, equal in strace (+exit_group), record and watch: {:?}",
            expected.values().sum::<u64>(),
            expected.len(),
            expected
        );
    }

    #[test]
    fn a_learned_policy_enforced_lets_the_workload_run_clean() {
        const TEST: &str = "a_learned_policy_enforced_lets_the_workload_run_clean";
        if !privileged(TEST) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (rec, stderr) = record_command(dir.path(), &["getppid", "100"]);
        assert!(stderr.contains("passes `sysfence check`"), "{stderr}");
        let learned = dir.path().join("policy.yaml");
        let check = sysfence().arg("check").arg(&learned).output().unwrap();
        assert!(check.status.success(), "{}", text(&check).1);

        let (code, report, _, stderr) =
            run(&learned, Some("enforce"), &[WORKLOAD, "getppid", "100"]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(report["mode"], "enforce");
        assert_eq!(report["violations"], Value::Array(vec![]), "{report}");
        assert_eq!(count_of(&report, "x86_64", "getppid"), 100);

        // The control: the same policy without getppid kills the workload, so the clean
        // run above was policed.
        let names = names_except(&rec, &["getppid"]);
        let narrower = write_policy(
            dir.path(),
            "narrower.yaml",
            &policy_yaml(
                "narrower",
                &format!("  mode: enforce\n  allow: [{}]\n", names.join(", ")),
            ),
        );
        let (code, report, _, _) = run(&narrower, None, &[WORKLOAD, "getppid", "100"]);
        assert_eq!(code, 137, "{report}");
        assert!(violation(&report, "getppid").is_some(), "{report}");
    }

    #[test]
    fn offline_dry_run_agrees_with_live_audit() {
        const TEST: &str = "offline_dry_run_agrees_with_live_audit";
        if !privileged(TEST) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // The candidate: what `getppid 1` did, minus getppid. The workload also sleeps,
        // which the candidate never saw either.
        let learn = dir.path().join("learn");
        let (rec, _) = record_command(&learn, &["getppid", "1"]);
        let names = names_except(&rec, &["getppid"]);
        let base = format!("sysfence-test-adopt-audit-{}", std::process::id());
        let _base = TestCgroup::create(&base);
        let work = TestCgroup::create(&format!("{base}/w"));
        let rel = format!("{base}/w");
        let policies = dir.path().join("policies");
        fs::create_dir_all(&policies).unwrap();
        let candidate = write_policy(
            &policies,
            "candidate.yaml",
            &policy_yaml(
                "candidate",
                &format!(
                    "  selector:\n    cgroupPath: \"{rel}\"\n  mode: audit\n  allow: [{}]\n",
                    names.join(", ")
                ),
            ),
        );

        // 1. `run --mode audit`: exact counts from the kernel's counters.
        let (code, audit, _, stderr) =
            run(&candidate, Some("audit"), &[WORKLOAD, "getppid", "300"]);
        assert_eq!(code, 0, "{stderr}");
        let run_denials: BTreeMap<String, u64> = audit["violations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["syscall"].as_str().unwrap().to_string(),
                    v["count"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(run_denials.get("getppid"), Some(&300), "{audit}");
        let rec_dir = dir.path().join("rec300");
        record_command(&rec_dir, &["getppid", "300"]);
        let (code, offline, _) = report_denials(
            &[],
            &[
                "--policy",
                candidate.to_str().unwrap(),
                "--from",
                rec_dir.join("recording.json").to_str().unwrap(),
            ],
        );
        assert_eq!(code, 1, "would-be denials make the exit status 1");
        let d = diff("run --mode audit", &run_denials, "report --from", &offline);
        assert!(d.is_empty(), "offline and audit run differ:\n{d}");

        // 2. The agent in audit mode, and a live recording of the same calls at once. The
        // burst of 300 getppid exceeds the kernel's event rate limit (20/s): the events
        // that were held back ride, as `suppressed`, on the next event, which the final
        // `getppid 1` after a pause sends.
        // Its own pins and sockets, removed when it is dropped.
        let mut agent = Agent::builder(&policies).no_cri().start();
        agent.wait_bound_to(&rel);
        let live = dir.path().join("live");
        let mut cmd = sysfence();
        cmd.args([
            "record",
            "--duration",
            "60s",
            "--no-include",
            "--cgroup",
            &rel,
            "-o",
        ])
        .arg(&live);
        let recorder = Collected::start(cmd);
        recorder.wait_stderr("the recorder's start", "recording for");
        std::thread::sleep(Duration::from_millis(1500));
        for args in [
            &["getppid", "300"][..],
            &["sleep", "1100"],
            &["getppid", "1"],
        ] {
            let status = run_joined(&work.path, WORKLOAD, args);
            assert!(status.success(), "{args:?}: {status:?}");
        }
        std::thread::sleep(Duration::from_millis(1500));
        let (code, _) = recorder.stop(libc::SIGINT);
        assert_eq!(code, 0, "record ends early on SIGINT and writes its files");
        assert_eq!(agent.terminate(), 0);
        let log_path = dir.path().join("agent.log");
        fs::write(&log_path, agent.stdout_lines().join("\n") + "\n").unwrap();

        let (code, from_log, report) =
            report_denials(&[], &["--events", log_path.to_str().unwrap()]);
        assert_eq!(code, 1, "{report}");
        assert_eq!(from_log.get("getppid"), Some(&301), "{report}");
        let example = &report["workloads"][0]["denials"][0];
        assert_eq!(example["comm"], "sf-syscalls", "{report}");
        assert!(example["pid"].as_u64().unwrap() > 0);
        let (code, from_live_rec, _) = report_denials(
            &[],
            &[
                "--policy",
                candidate.to_str().unwrap(),
                "--from",
                live.join("recording.json").to_str().unwrap(),
            ],
        );
        assert_eq!(code, 1);
        let d = diff("agent log", &from_log, "live recording", &from_live_rec);
        assert!(d.is_empty(), "audit log and offline dry run differ:\n{d}");
        drop(work);
    }

    #[test]
    fn html_report_renders_in_chromium() {
        const TEST: &str = "html_report_renders_in_chromium";
        // No root needed: the report is offline.
        if !tool(TEST, "chromium", "chromium") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let rec = serde_json::json!({
            "format": "sysfence-recording", "version": 1, "sysfence": "test",
            "started_ms": 1_764_374_400_000u64, "ended_ms": 1_764_385_200_000u64, "sample_ms": 1000,
            "workloads": [
                {"cgroup_id": 1, "cgroup": "kubepods/pod1/c1", "namespace": "shop", "pod": "web-1",
                 "container": "web", "first_ms": null, "last_ms": null, "syscalls": [
                    {"abi": "x86_64", "syscall": "read", "count": 5000},
                    {"abi": "x86_64", "syscall": "ptrace", "count": 42},
                    {"abi": "i386", "syscall": "mount", "count": 7}]},
                {"cgroup_id": 2, "cgroup": "kubepods/pod2/c1", "namespace": "shop", "pod": "web-2",
                 "container": "web", "first_ms": null, "last_ms": null, "syscalls": [
                    {"abi": "x86_64", "syscall": "read", "count": 4000},
                    {"abi": "x86_64", "syscall": "getppid", "count": 1300}]}
            ]
        });
        let rec_path = dir.path().join("recording.json");
        fs::write(&rec_path, rec.to_string()).unwrap();
        let candidate = write_policy(
            dir.path(),
            "candidate.yaml",
            &policy_yaml("web", "  mode: audit\n  allow: [read]\n"),
        );
        let html = dir.path().join("report.html");
        let out = sysfence()
            .arg("report")
            .arg("--policy")
            .arg(&candidate)
            .arg("--from")
            .arg(&rec_path)
            .args(["--format", "html", "-o"])
            .arg(&html)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out).1);

        let url = format!("file://{}", html.display());
        let chromium = |extra: &[&str]| -> (String, String) {
            // Bounded: a browser that hangs fails the test (timeout exits 124).
            let out = Command::new("timeout")
                .args([
                    "120",
                    "chromium",
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                ])
                .arg(format!(
                    "--user-data-dir={}",
                    dir.path().join("profile").display()
                ))
                .args(extra)
                .arg(&url)
                .output()
                .expect("run chromium");
            assert!(out.status.success(), "chromium {extra:?}: {}", text(&out).1);
            text(&out)
        };
        let (dom, _) = chromium(&["--dump-dom"]);
        assert!(
            dom.contains("<title>sysfence dry-run report</title>"),
            "{dom}"
        );
        let bars: Vec<&str> = dom
            .match_indices("<g class=\"bar\"")
            .map(|(i, _)| &dom[i..])
            .collect();
        assert_eq!(
            bars.len(),
            3,
            "one bar per (workload, denied syscall): {dom}"
        );
        for (pod, syscall, n) in [
            ("shop/web-2/web", "getppid", 1300),
            ("shop/web-1/web", "ptrace", 42),
            ("shop/web-1/web", "mount (i386)", 7),
        ] {
            assert!(
                bars.iter().any(|b| b.starts_with(&format!(
                    "<g class=\"bar\" data-workload=\"{pod}\" data-syscall=\"{syscall}\" data-count=\"{n}\""
                ))),
                "no bar for {pod} {syscall} {n}: {dom}"
            );
        }
        assert!(
            dom.contains("not safe: 1300 would-be denials of 1 syscall"),
            "{dom}"
        );
        assert!(dom.contains("2 of 2 workloads not safe to enforce: 1349 would-be denials"));

        let png_path = dir.path().join("report.png");
        chromium(&[
            &format!("--screenshot={}", png_path.display()),
            "--window-size=1200,900",
        ]);
        let decoder = png::Decoder::new(BufReader::new(
            fs::File::open(&png_path).expect("screenshot"),
        ));
        let mut reader = decoder.read_info().expect("a PNG");
        let mut buf = vec![0; reader.output_buffer_size().expect("size")];
        let info = reader.next_frame(&mut buf).expect("PNG frame");
        assert_eq!((info.width, info.height), (1200, 900));
        let channels = info.color_type.samples();
        let mut colours = std::collections::HashSet::new();
        // Bar colours: the first workload's #d9480f, the second's #1971c2.
        let (mut orange, mut blue) = (0, 0);
        for px in buf[..info.buffer_size()].chunks(channels) {
            let rgb = (px[0], px[1], px[2]);
            colours.insert(rgb);
            match rgb {
                (0xd9, 0x48, 0x0f) => orange += 1,
                (0x19, 0x71, 0xc2) => blue += 1,
                _ => {}
            }
        }
        assert!(
            colours.len() > 20,
            "a blank or near-blank screenshot: {} colours",
            colours.len()
        );
        // getppid's 1300 is the longest bar, 420 x 18 px; ptrace (42) and mount (7) are
        // short ones, drawn to scale.
        assert!(blue >= 7000, "the longest bar is not drawn: {blue} px");
        assert!((150..2000).contains(&orange), "short bars: {orange} px");
    }

    #[test]
    fn live_record_of_two_runc_replicas_makes_one_policy() {
        const TEST: &str = "live_record_of_two_runc_replicas_makes_one_policy";
        if !privileged(TEST) {
            return;
        }
        let Some(bins) = oci::require(TEST, &["runc"], false) else {
            return;
        };
        oci::become_subreaper();
        let dir = tempfile::tempdir().unwrap();
        let base = format!("sysfence-adopt-runc-{}", std::process::id());
        let _cgroups = oci::CgroupTrees(vec![base.clone()]);
        let root = dir.path().join("runc-root");
        let bundle = dir.path().join("bundle");
        fs::create_dir_all(&bundle).unwrap();
        oci::busybox_rootfs(&bundle, &["sh", "sleep", "mkdir", "cat"]);
        let mut containers = oci::Containers::new(&bins[0], &root);

        let out = dir.path().join("learned");
        let glob = format!("{base}/*");
        let mut cmd = sysfence();
        cmd.args([
            "record",
            "--duration",
            "60s",
            "--no-include",
            "--cgroup",
            &glob,
        ])
        .arg("--runtime-root")
        .arg(&root)
        .arg("-o")
        .arg(&out);
        let recorder = Collected::start(cmd);
        recorder.wait_stderr("the recorder's start", "recording for");

        // Two replicas of one workload, each doing something the other does not. Each
        // sleeps first: a live recording binds a started container at its next rescan.
        let mut pids = Vec::new();
        for (id, script) in [
            ("a", "sleep 2; mkdir /tmp/made; sleep 1"),
            ("b", "sleep 2; cat /etc/passwd; sleep 1"),
        ] {
            oci::write_bundle_config(
                &bundle,
                &bins[0],
                &["/bin/sh", "-c", script],
                &format!("/{base}/{id}"),
            );
            let log = dir.path().join(format!("{id}.out"));
            let (pid, _) = containers.create_and_start(&bundle, id, &log);
            pids.push(pid);
        }
        for pid in pids {
            let status = oci::wait_pid(pid, Duration::from_secs(30)).expect("the container exits");
            assert_eq!(status, 0, "container init status {status:#x}");
        }
        std::thread::sleep(Duration::from_millis(1500));
        let (code, _) = recorder.stop(libc::SIGINT);
        assert_eq!(code, 0, "record ends early on SIGINT and writes its files");

        let rec: Value =
            serde_json::from_str(&fs::read_to_string(out.join("recording.json")).unwrap()).unwrap();
        let workloads = rec["workloads"].as_array().unwrap();
        let by_id = |id: &str| -> BTreeMap<String, u64> {
            let w = workloads
                .iter()
                .find(|w| w["container_id"] == id)
                .unwrap_or_else(|| panic!("no workload with container id {id}: {rec}"));
            assert_eq!(w["runtime"], "runc", "{w}");
            assert_eq!(w["cgroup"], format!("{base}/{id}"));
            w["syscalls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s["syscall"].as_str().unwrap().to_string(),
                        s["count"].as_u64().unwrap(),
                    )
                })
                .collect()
        };
        let (a, b) = (by_id("a"), by_id("b"));
        assert_eq!(workloads.len(), 2, "{rec}");
        let made_dir =
            |c: &BTreeMap<String, u64>| c.contains_key("mkdir") || c.contains_key("mkdirat");
        assert!(made_dir(&a) && !made_dir(&b), "a: {a:?}\nb: {b:?}");
        assert!(
            b.contains_key("openat") && !a.contains_key("openat"),
            "a: {a:?}\nb: {b:?}"
        );
        // The runtime's own setup (mount, pivot_root, ...) is not the workload's.
        assert!(!a.contains_key("pivot_root"), "{a:?}");

        // One policy, the union, selected by the filter.
        let policy = out.join("policy.yaml");
        let yaml = fs::read_to_string(&policy).unwrap();
        let check = sysfence().arg("check").arg(&policy).output().unwrap();
        assert!(check.status.success(), "{}\n{yaml}", text(&check).1);
        assert!(yaml.contains(&format!("cgroupPath: \"{glob}\"")), "{yaml}");
        for name in a.keys().chain(b.keys()) {
            assert!(
                yaml.contains(&format!(" {name},"))
                    || yaml.contains(&format!(" {name}]"))
                    || yaml.contains(&format!("[{name},")),
                "{name} missing from the learned allowlist:\n{yaml}"
            );
        }
    }
}
