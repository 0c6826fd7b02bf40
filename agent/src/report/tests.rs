use std::path::Path;

use super::*;
use crate::record::{RECORDING_FORMAT, RecordedSyscall, RecordedWorkload};

fn candidate(spec: &str) -> (tempfile::TempDir, Candidate) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("candidate.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: sysfence.dev/v1\nkind: SyscallPolicy\nmetadata:\n  name: cand\nspec:\n  mode: audit\n{spec}"
        ),
    )
    .unwrap();
    let c = load_candidate(&path).unwrap();
    (dir, c)
}

/// One recorded syscall, seen between 1 s and 2 s (also for the comparison's tests).
pub(super) fn sys(abi: &str, name: &str, count: u64) -> RecordedSyscall {
    RecordedSyscall {
        abi: abi.into(),
        syscall: name.into(),
        nr: None,
        count,
        first_ms: Some(1_000),
        last_ms: Some(2_000),
    }
}

fn rec(syscalls: Vec<RecordedSyscall>) -> Recording {
    Recording {
        format: RECORDING_FORMAT.into(),
        version: 1,
        sysfence: "test".into(),
        command: Some(vec!["/bin/x".into()]),
        exit_code: Some(0),
        filters: Default::default(),
        started_ms: 0,
        ended_ms: 3 * 3600 * 1000,
        sample_ms: 100,
        workloads: vec![RecordedWorkload {
            identity: WorkloadRef {
                cgroup_id: 9,
                cgroup: "sysfence/record-1".into(),
                ..WorkloadRef::default()
            },
            first_ms: Some(1_000),
            last_ms: Some(2_000),
            syscalls,
            inside_sandbox: false,
            host_syscalls: Vec::new(),
        }],
    }
}

#[test]
fn offline_counts_what_the_candidate_does_not_allow_exactly() {
    let (_d, c) = candidate("  allow: [read, write]\n  abi: {ia32: deny}\n");
    let r = rec(vec![
        sys("x86_64", "read", 100),
        sys("x86_64", "write", 7),
        sys("x86_64", "getppid", 3),
        sys("i386", "read", 2),
        sys("unknown", "unclassified", 1),
    ]);
    let report = from_recording(&r, Path::new("rec.json"), &c);
    let w = &report.workloads[0];
    assert_eq!(w.total_calls, Some(113));
    let got: Vec<(String, u64)> = w
        .denials
        .iter()
        .map(|d| (d.label.clone(), d.count))
        .collect();
    assert_eq!(
        got,
        vec![
            ("getppid".to_string(), 3),
            ("read (i386)".to_string(), 2),
            ("unclassified".to_string(), 1)
        ]
    );
    assert_eq!(w.would_be_denials, 6);
    assert!(!w.verdict.safe);
    assert_eq!(w.verdict.text, "not safe: 6 would-be denials of 3 syscalls");
    assert_eq!(w.name, "command `/bin/x`");
    let s = w.suggestion.as_deref().unwrap();
    assert!(s.contains("allow: [getppid]"), "{s}");
    assert!(
        s.contains("ia32: [read]"),
        "narrowed ABI gets its own list: {s}"
    );
    assert!(s.contains("cannot be allowed by name"), "{s}");
    assert!(!report.safe());
}

#[test]
fn offline_safe_verdict_names_the_window() {
    let (_d, c) = candidate("  allow: [read]\n");
    let report = from_recording(&rec(vec![sys("x86_64", "read", 4)]), Path::new("r"), &c);
    assert!(report.safe());
    assert_eq!(
        report.workloads[0].verdict.text,
        "safe to enforce: 0 would-be denials in 3h 0m"
    );
    assert_eq!(report.workloads[0].suggestion, None);
}

#[test]
fn suggestions_undeny_and_extend_narrowed_abis() {
    let (_d, c) = candidate("  allow: [read, mount]\n  deny: [ptrace]\n  abi: {ia32: [read]}\n");
    let keys = vec![
        SyscallKey::new("x86_64", "ptrace"),
        SyscallKey::new("i386", "mount"),
        SyscallKey::new("x86_64", "getpid"),
    ];
    let s = suggestion("cand", &keys, Some(&c)).unwrap();
    assert!(
        s.contains("remove from spec.deny (deny wins over allow): ptrace"),
        "{s}"
    );
    assert!(s.contains("allow: [getpid, ptrace]"), "{s}");
    assert!(s.contains("ia32: [mount, read]"), "{s}");
    // The suggestion, applied, makes the policy allow every key.
    let (_d2, fixed) =
        candidate("  allow: [read, mount, getpid, ptrace]\n  abi: {ia32: [mount, read]}\n");
    let slot = fixed.policy.enforcement(Ok(())).slot;
    for k in &keys {
        assert!(slot.allows(k.index().unwrap()), "{k}");
    }
    // Without the candidate: allow additions, and a hint per other ABI.
    let s = suggestion("web", &keys[1..], None).unwrap();
    assert!(s.contains("allow: [getpid, mount]"), "{s}");
    assert!(s.contains("i386 calls: if spec.abi.ia32 narrows"), "{s}");
    assert_eq!(suggestion("web", &[], None), None);
}

fn violation(
    t: &str,
    cgroup_id: u64,
    syscall: &str,
    pid: u32,
    suppressed: u64,
) -> crate::event::Violation {
    crate::event::Violation {
        timestamp: t.into(),
        policy: "web".into(),
        workload: WorkloadRef {
            cgroup: format!("pods/w{cgroup_id}"),
            cgroup_id,
            namespace: "shop".into(),
            pod: format!("web-{cgroup_id}"),
            container: "web".into(),
            ..WorkloadRef::default()
        },
        pid,
        tid: pid,
        comm: "server".into(),
        exe: "/usr/bin/server".into(),
        abi: "x86_64".into(),
        syscall: syscall.into(),
        outcome: "audited".into(),
        suppressed,
        ..Default::default()
    }
}

fn binding(cgroup_id: u64, mode: &str, since: u64) -> input::BindingSpan {
    input::BindingSpan {
        identity: WorkloadRef {
            cgroup_id,
            cgroup: format!("pods/w{cgroup_id}"),
            namespace: "shop".into(),
            pod: format!("web-{cgroup_id}"),
            container: "web".into(),
            ..WorkloadRef::default()
        },
        policy: "web".into(),
        mode: mode.into(),
        since_ms: Some(since),
        until_ms: None,
    }
}

#[test]
fn audit_counts_include_suppressed_and_keep_the_earliest_example() {
    let t0 = crate::clock::parse_rfc3339_ms("2026-01-01T00:00:00Z").unwrap();
    let mut enforce_line = violation("2026-01-01T00:00:09Z", 3, "mount", 9, 0);
    enforce_line.outcome = "killed-after".into();
    let mut monitor_only = violation("2026-01-01T00:00:09Z", 1, "mount", 9, 0);
    monitor_only.monitor_only = true;
    let ev = input::AuditEvidence {
        source: "test".into(),
        bindings: vec![
            binding(1, "audit", t0),
            binding(2, "audit", t0),
            binding(3, "enforce", t0),
        ],
        violations: vec![
            violation("2026-01-01T00:00:05Z", 1, "ptrace", 200, 4),
            violation("2026-01-01T00:00:02Z", 1, "ptrace", 100, 0),
            violation("2026-01-01T00:01:00Z", 1, "mount (x86_64)", 300, 0),
            enforce_line,
            monitor_only,
        ],
        from_ms: Some(t0),
        to_ms: Some(t0 + 3 * 3600 * 1000),
        skipped_lines: 0,
    };
    let report = from_audit(&ev, None);
    assert_eq!(report.workloads.len(), 2, "the enforce binding is left out");
    let w1 = &report.workloads[0];
    assert_eq!(w1.workload.cgroup_id, 1);
    let ptrace = &w1.denials[0];
    assert_eq!(ptrace.label, "ptrace");
    assert_eq!(ptrace.count, 6, "1 + 4 suppressed + 1");
    assert_eq!(ptrace.pid, Some(100), "the earliest event is the example");
    assert_eq!(ptrace.exe.as_deref(), Some("/usr/bin/server"));
    assert_eq!(ptrace.first_ms, Some(t0 + 2000));
    assert_eq!(ptrace.last_ms, Some(t0 + 5000));
    assert_eq!(w1.denials[1].syscall, "mount");
    assert_eq!(
        w1.verdict.text,
        "not safe: 7 would-be denials of 2 syscalls"
    );
    let w2 = &report.workloads[1];
    assert!(w2.verdict.safe);
    assert_eq!(
        w2.verdict.text,
        "safe to enforce: 0 would-be denials in 3h 0m"
    );
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("`enforce` mode left out")),
        "{:?}",
        report.notes
    );
    assert!(report.notes.iter().any(|n| n.contains("killed-after")));
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("monitored") || n.contains("audited"))
    );
}

#[test]
fn renderings_carry_the_same_numbers() {
    let (_d, c) = candidate("  allow: [read]\n");
    let report = from_recording(
        &rec(vec![
            sys("x86_64", "read", 4),
            sys("x86_64", "getppid", 1234),
        ]),
        Path::new("r"),
        &c,
    );
    let table = render::table(&report);
    assert!(
        table.contains("getppid") && table.contains("1234"),
        "{table}"
    );
    assert!(table.contains("not safe: 1234 would-be denials of 1 syscall"));
    let md = render::markdown(&report);
    assert!(md.contains("| `getppid` | 1234 |"), "{md}");
    let json: serde_json::Value = serde_json::from_str(&render::json(&report)).unwrap();
    assert_eq!(json["workloads"][0]["denials"][0]["count"], 1234);
    assert_eq!(json["format"], "sysfence-dry-run");
    let html = render::html(&report);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<title>sysfence dry-run report</title>"));
    assert_eq!(html.matches("<g class=\"bar\"").count(), 1);
    assert!(html.contains("data-count=\"1234\""));
    for external in ["src=", "href=", "url(", "@import"] {
        assert!(!html.contains(external), "no network: {external}");
    }
    assert!(!html.contains("<script"), "no script");
}

#[test]
fn html_escapes_what_it_prints() {
    let (_d, c) = candidate("  allow: [read]\n");
    let mut r = rec(vec![sys("x86_64", "getppid", 1)]);
    r.workloads[0].identity.pod = "<b>evil</b>".into();
    r.workloads[0].identity.namespace = "ns".into();
    let html = render::html(&from_recording(&r, Path::new("r"), &c));
    assert!(!html.contains("<b>evil</b>"));
    assert!(html.contains("&lt;b&gt;evil&lt;/b&gt;"));
}

#[test]
fn a_sandboxed_workloads_note_says_whose_calls_its_counts_are() {
    let mut w = rec(vec![sys("x86_64", "read", 1)]).workloads.remove(0);
    assert_eq!(sandbox_note(&w), None, "runc or none: the host's own");
    w.identity.runtime = "runsc".into();
    let host = sandbox_note(&w).unwrap();
    assert!(host.contains("the sandbox's own host syscalls"), "{host}");
    w.inside_sandbox = true;
    let inside = sandbox_note(&w).unwrap();
    assert!(
        inside.contains("the application's syscalls inside"),
        "{inside}"
    );
    w.identity.runtime = "kata".into();
    let kata = sandbox_note(&w).unwrap();
    assert!(kata.contains("nothing inside the VM"), "{kata}");
}
