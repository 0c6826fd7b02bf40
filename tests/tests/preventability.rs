//! Which syscalls `action: deny` prevents on this kernel, measured: every entry of the
//! catalog (tests/src/catalog.rs) runs under a policy that denies it, with
//! `fallback: allow`, and the outcome the probe reports is recorded: `denied` (an LSM
//! hook failed it with EPERM) or `not-preventable` (it ran).
//!
//! Runs in the QEMU VMs (`cargo xtask vm-test`), where BPF LSM is allowed. It prints the
//! table as one `SYSFENCE-PREVENTABILITY {json}` line, which
//! `cargo xtask vm-test --measure-preventability` stores in
//! policies/preventability/kernels.json; and it checks the committed table for this
//! kernel, so a change in what is preventable cannot go unnoticed.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sysfence_tests::{catalog, *};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_sf-syscalls");

/// What must be preventable on every kernel we support (issue 4).
const MUST_BE_DENIED: &[&str] = &[
    "mkdir",
    "mount",
    "unshare",
    "ptrace",
    "bpf",
    "keyctl",
    "init_module",
    "open_by_handle_at",
    "perf_event_open",
];

fn measure(denied: &[&str], setup: &[&str]) -> BTreeMap<String, (String, Option<String>)> {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = String::from(
        "  mode: enforce\n  action: deny\n  fallback: allow\n  include: [runtime-default]\n",
    );
    if !setup.is_empty() {
        spec += &format!("  allow: [{}]\n", setup.join(", "));
    }
    spec += &format!("  deny: [{}]\n", denied.join(", "));
    let p = write_policy(dir.path(), "measure.yaml", &policy_yaml("measure", &spec));
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut cmd = vec![WORKLOAD, "try-all", work.to_str().unwrap()];
    cmd.extend(denied);
    let (code, report, stdout, stderr) = run(&p, None, &cmd);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let mut out = BTreeMap::new();
    for name in denied {
        let v = violation(&report, name).unwrap_or_else(|| {
            panic!("{name}: no violation reported; workload said:\n{stdout}\n{report:#}")
        });
        // Several calls of one syscall can settle differently (glibc's getrlimit is a
        // read-only prlimit64 in another entry's setup): the catalog's own call decides,
        // and it is the one that failed where any call was denied.
        let mut outcome = v["outcome"].as_str().unwrap().to_string();
        if v["outcomes"].get("denied").is_some() && stdout.contains(&format!("{name}: error")) {
            outcome = "denied".to_string();
        }
        let hook = v["hook"].as_str().map(str::to_string);
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name}: ")))
            .unwrap_or("");
        if outcome == "denied" {
            // EPERM from the hook, or what the kernel made of it: Debian's
            // perf_event_open turns the `capable` hook's EPERM into EACCES ("other").
            assert!(
                line.contains(": error"),
                "{name} reported denied, but: {line}"
            );
        }
        out.insert(name.to_string(), (outcome, hook));
    }
    out
}

#[test]
#[ignore = "needs BPF LSM: runs in the QEMU VMs (cargo xtask vm-test)"]
fn measure_what_deny_prevents() {
    assert!(privileged("measure_what_deny_prevents"));
    let mut table = measure(&catalog::first_batch(), &[]);
    for (denied, setup) in catalog::BATCHES {
        table.extend(measure(denied, setup));
    }
    assert_eq!(table.len(), catalog::CATALOG.len());
    assert!(table.len() >= 60);
    for name in MUST_BE_DENIED {
        assert_eq!(
            table[*name].0, "denied",
            "{name} must be preventable: {:?}",
            table[*name]
        );
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string();
    let syscalls: serde_json::Map<String, Value> = table
        .iter()
        .map(|(name, (outcome, hook))| {
            let mut m = json!({ "outcome": outcome });
            if let Some(h) = hook {
                m["hook"] = json!(h);
            }
            (name.clone(), m)
        })
        .collect();
    let measured = json!({
        "kernel": release,
        "measured_with": "cargo xtask vm-test --measure-preventability (tests/tests/preventability.rs)",
        "syscalls": syscalls,
    });
    // Straight to the process's stdout: the test harness captures `println!`, and the
    // VM harness reads this line from the console.
    {
        use std::io::Write as _;
        let mut out = std::io::stdout();
        writeln!(out, "SYSFENCE-PREVENTABILITY {measured}").unwrap();
        out.flush().unwrap();
    }
    let denied = table.values().filter(|(o, _)| o == "denied").count();
    eprintln!(
        "{release}: {denied} of {} catalog syscalls preventable",
        table.len()
    );

    if std::env::var_os("SYSFENCE_MEASURE").is_some() {
        return;
    }
    // The committed table for this kernel line must still be true.
    let committed: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("policies/preventability/kernels.json"))
            .unwrap(),
    )
    .unwrap();
    let mm = |r: &str| r.split(['.', '-']).take(2).collect::<Vec<_>>().join(".");
    match committed
        .iter()
        .find(|t| mm(t["kernel"].as_str().unwrap_or("")) == mm(&release))
    {
        Some(t) => assert_eq!(
            t["syscalls"],
            measured["syscalls"],
            "committed table for {} is out of date",
            mm(&release)
        ),
        None => panic!(
            "no committed preventability table for {}: run `cargo xtask vm-test --measure-preventability` and commit policies/preventability/kernels.json",
            mm(&release)
        ),
    }
}
