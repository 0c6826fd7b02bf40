use std::path::PathBuf;

use super::*;
use crate::{
    model::WorkloadRef,
    record::{RECORDING_FORMAT, RECORDING_VERSION, RecordedSyscall, RecordedWorkload},
    report::command::{Format, ReportOptions, run},
};

use crate::report::tests::sys;

fn x(name: &str, count: u64) -> RecordedSyscall {
    sys("x86_64", name, count)
}

/// A workload under `runtime`: `syscalls` the application's when `host` is given (traced
/// inside the sandbox), else what reached the host.
fn workload(
    runtime: &str,
    syscalls: Vec<RecordedSyscall>,
    host: Option<Vec<RecordedSyscall>>,
) -> RecordedWorkload {
    RecordedWorkload {
        identity: WorkloadRef {
            cgroup_id: 7,
            cgroup: "sysfence/record-1".into(),
            container_id: "0123456789abcdef".into(),
            runtime: runtime.into(),
            ..WorkloadRef::default()
        },
        first_ms: Some(1_000),
        last_ms: Some(2_000),
        syscalls,
        inside_sandbox: host.is_some(),
        host_syscalls: host.unwrap_or_default(),
    }
}

fn recording(duration_ms: u64, workloads: Vec<RecordedWorkload>) -> Recording {
    Recording {
        format: RECORDING_FORMAT.into(),
        version: RECORDING_VERSION,
        sysfence: "test".into(),
        command: Some(vec!["/bin/app".into()]),
        exit_code: Some(0),
        filters: Default::default(),
        started_ms: 1_000_000,
        ended_ms: 1_000_000 + duration_ms,
        sample_ms: 100,
        workloads,
    }
}

/// runc over 10 s; runsc over 5 s, traced inside its sandbox.
fn runc_and_traced_runsc() -> Vec<(PathBuf, Recording)> {
    let runc = recording(
        10_000,
        vec![workload(
            "runc",
            vec![
                x("read", 100),
                x("write", 50),
                x("mkdir", 10),
                sys("i386", "mount", 5),
            ],
            None,
        )],
    );
    let runsc = recording(
        5_000,
        vec![workload(
            "runsc",
            vec![x("read", 100), x("write", 50), x("mkdir", 10)],
            Some(vec![x("read", 30), x("futex", 20), x("ptrace", 5)]),
        )],
    );
    vec![("runc.json".into(), runc), ("runsc.json".into(), runsc)]
}

fn compared() -> Comparison {
    compare(&runc_and_traced_runsc()).expect("two recordings compare")
}

#[test]
fn each_column_counts_its_distinct_host_syscalls_calls_and_rate() {
    let c = compared();
    assert_eq!(c.baseline, "runc");
    let labels: Vec<&str> = c.columns.iter().map(|c| c.label.as_str()).collect();
    assert_eq!(labels, ["runc", "runsc"]);
    let (runc, runsc) = (&c.columns[0], &c.columns[1]);
    assert_eq!(runc.host.distinct, 4);
    assert_eq!(runc.host.calls, 165);
    assert_eq!(runc.host.calls_per_second, Some(16.5));
    assert_eq!(runc.duration_ms, Some(10_000));
    assert_eq!(runsc.host.distinct, 3);
    assert_eq!(runsc.host.calls, 55);
    assert_eq!(runsc.host.calls_per_second, Some(11.0));
}

#[test]
fn the_application_is_the_host_under_runc_and_traced_under_runsc() {
    let c = compared();
    let (runc, runsc) = (&c.columns[0], &c.columns[1]);
    assert_eq!(runc.application.seen, Seen::Host);
    assert_eq!(runc.application.surface.as_ref(), Some(&runc.host));
    assert!(
        runc.application
            .note
            .contains("the application's calls are the host's")
    );
    assert!(
        c.notes
            .iter()
            .any(|n| n.starts_with("runc: the application's calls are the host's"))
    );
    assert_eq!(runsc.application.seen, Seen::InsideSandbox);
    let app = runsc.application.surface.as_ref().expect("traced");
    assert_eq!((app.distinct, app.calls), (3, 160));
    assert_eq!(app.calls_per_second, Some(32.0));
}

#[test]
fn ratios_and_the_summary_are_relative_to_the_first_recording() {
    let c = compared();
    let v = &c.versus_baseline;
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].label, "runsc");
    assert_eq!(v[0].distinct_host_ratio, Some(0.75));
    let rate = v[0].host_rate_ratio.expect("both rates known");
    assert!((rate - 11.0 / 16.5).abs() < 1e-9, "{rate}");
    let summary = v[0].summary.join("\n");
    assert!(
        summary.contains("runsc exposes 3 distinct host syscalls where runc exposes 4 (0.75×)"),
        "{summary}"
    );
    assert!(
        summary.contains("host calls/s: 0.67× of runc's"),
        "{summary}"
    );
    assert!(
        summary.contains("the application asks for 3 distinct syscalls under runsc, 4 under runc"),
        "{summary}"
    );
}

#[test]
fn the_host_syscalls_only_one_side_reaches_are_listed_most_called_first() {
    let c = compared();
    let v = &c.versus_baseline[0];
    assert_eq!(v.only_here, ["futex", "ptrace"]);
    assert_eq!(v.only_baseline, ["write", "mkdir", "mount (i386)"]);
    let summary = v.summary.join("\n");
    assert!(
        summary.contains("reach the host only under runsc (2): futex, ptrace"),
        "{summary}"
    );
    assert!(
        summary.contains("reach the host only under runc (3): write, mkdir, mount (i386)"),
        "{summary}"
    );
}

#[test]
fn a_runsc_recording_without_a_trace_session_does_not_see_the_application() {
    let mut inputs = runc_and_traced_runsc();
    // The probe alone: the Sentry's host calls, in `syscalls`.
    inputs[1].1.workloads = vec![workload("runsc", vec![x("futex", 40), x("read", 8)], None)];
    let c = compare(&inputs).expect("compares");
    let runsc = &c.columns[1];
    assert_eq!(runsc.application.seen, Seen::NotSeen);
    assert_eq!(runsc.application.surface, None, "no numbers invented");
    assert_eq!(
        runsc.application.note,
        "not seen (only the sandbox's host calls were recorded)"
    );
    assert_eq!((runsc.host.distinct, runsc.host.calls), (2, 48));
    assert!(c.notes.contains(
        &"runsc: the application's calls: not seen (only the sandbox's host calls were recorded)"
            .to_string()
    ));
    assert!(c.syscalls.iter().all(|r| r.cells[1].application.is_none()));
    assert!(
        !c.versus_baseline[0]
            .summary
            .iter()
            .any(|s| s.contains("the application asks")),
        "no application comparison without the application"
    );
    let md = markdown(&c);
    assert!(
        md.contains("| distinct application syscalls | 4 | not seen |"),
        "{md}"
    );
    assert!(!md.contains("runsc application"), "{md}");
}

#[test]
fn the_per_syscall_table_has_every_syscall_seen_anywhere_sorted_by_name() {
    let c = compared();
    let labels: Vec<&str> = c.syscalls.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(
        labels,
        ["futex", "mkdir", "mount (i386)", "ptrace", "read", "write"]
    );
    let read = &c.syscalls[4];
    assert_eq!(
        read.cells[0],
        SyscallCell {
            host: 100,
            application: None
        }
    );
    assert_eq!(
        read.cells[1],
        SyscallCell {
            host: 30,
            application: Some(100)
        }
    );
    let futex = &c.syscalls[0];
    assert_eq!(
        futex.cells[1],
        SyscallCell {
            host: 20,
            application: Some(0)
        }
    );
}

#[test]
fn forks_into_a_new_namespace_are_a_row_but_not_a_syscall() {
    let mut inputs = runc_and_traced_runsc();
    inputs[0].1.workloads[0]
        .syscalls
        .push(sys("any", "new-namespace", 3));
    let c = compare(&inputs).expect("compares");
    assert_eq!(c.columns[0].host.distinct, 4);
    assert_eq!(c.columns[0].host.calls, 165);
    assert!(
        !c.versus_baseline[0]
            .only_baseline
            .iter()
            .any(|s| s.contains("namespace"))
    );
    let last = c.syscalls.last().expect("rows");
    assert_eq!(last.label, "fork into a new namespace (CLONE_NEW*)");
    assert_eq!(last.cells[0].host, 3);
}

#[test]
fn columns_that_would_read_alike_are_told_apart() {
    let one = |rt: &str| recording(1_000, vec![workload(rt, vec![x("read", 1)], None)]);
    let c = compare(&[
        ("out/a.json".into(), one("runc")),
        ("out/b.json".into(), one("runc")),
        ("c.json".into(), one("")),
    ])
    .expect("compares");
    let labels: Vec<&str> = c.columns.iter().map(|c| c.label.as_str()).collect();
    assert_eq!(labels, ["runc (a)", "runc (b)", "host"]);
    assert_eq!(c.baseline, "runc (a)");

    let c = compare(&[
        ("x/rec.json".into(), one("runsc")),
        ("y/rec.json".into(), one("runsc")),
    ])
    .expect("compares");
    let labels: Vec<&str> = c.columns.iter().map(|c| c.label.as_str()).collect();
    assert_eq!(labels, ["runsc (rec) #1", "runsc (rec) #2"]);

    let mut mixed = one("runc");
    mixed
        .workloads
        .push(workload("crun", vec![x("read", 1)], None));
    let c = compare(&[("m.json".into(), mixed), ("n.json".into(), one("runc"))]).expect("compares");
    assert_eq!(c.columns[0].label, "mixed");
    assert_eq!(c.columns[0].runtimes, ["crun", "runc"]);
    assert!(
        c.notes
            .iter()
            .any(|n| n.contains("several runtimes (crun, runc)"))
    );
}

#[test]
fn fewer_than_two_recordings_is_an_error_naming_the_fix() {
    let inputs = runc_and_traced_runsc();
    let e = compare(&inputs[..1]).expect_err("one is not a comparison");
    let text = e.to_string();
    assert!(text.contains("at least two recordings, got 1"), "{text}");
    assert!(
        text.contains("--compare runc.json --compare runsc.json"),
        "{text}"
    );
    assert!(compare(&[]).is_err());
}

#[test]
fn without_a_duration_rates_are_not_available() {
    let mut inputs = runc_and_traced_runsc();
    inputs[1].1.ended_ms = inputs[1].1.started_ms;
    let c = compare(&inputs).expect("compares");
    assert_eq!(c.columns[1].duration_ms, None);
    assert_eq!(c.columns[1].host.calls_per_second, None);
    assert_eq!(c.versus_baseline[0].host_rate_ratio, None);
    assert!(c.notes.iter().any(|n| n.contains("rates are n/a")));
    let t = table(&c);
    assert!(
        t.contains("host calls/s: not comparable (runsc n/a, runc 16.5)"),
        "{t}"
    );
    let rate_line = t
        .lines()
        .find(|l| l.trim_start().starts_with("host calls/s "))
        .expect("a rate row");
    assert!(rate_line.trim_end().ends_with("n/a"), "{rate_line}");
}

#[test]
fn the_table_is_aligned_plain_text() {
    let t = table(&compared());
    assert!(t.starts_with("sysfence runtime comparison: 2 recordings compared: runc vs runsc\n"));
    let header = t
        .lines()
        .find(|l| l.trim_start().starts_with("syscall "))
        .expect("per-syscall header");
    let read = t
        .lines()
        .find(|l| l.trim_start().starts_with("read "))
        .expect("read row");
    assert_eq!(header.len(), read.len(), "right-aligned:\n{header}\n{read}");
    assert!(header.contains("runc host") && header.contains("runsc application"));
    assert!(t.contains("runsc vs runc:\n  runsc exposes 3"), "{t}");
    assert!(t.contains("legend: host: what reached the host kernel"));
}

#[test]
fn markdown_has_the_overview_and_the_per_syscall_table() {
    let md = markdown(&compared());
    assert!(md.starts_with("# sysfence runtime comparison\n"));
    assert!(
        md.contains("|  | runc | runsc |\n| --- | ---: | ---: |\n"),
        "{md}"
    );
    assert!(
        md.contains(
            "| syscall | runc host | runsc host | runsc application |\n| --- | ---: | ---: | ---: |\n"
        ),
        "{md}"
    );
    assert!(md.contains("| `read` | 100 | 30 | 100 |"), "{md}");
    assert!(md.contains("| `futex` | - | 20 | - |"), "{md}");
    assert!(md.contains("## runsc vs runc\n"), "{md}");
    assert!(
        md.contains("| application | the host's | traced inside the sandbox |"),
        "{md}"
    );
}

#[test]
fn html_is_self_contained_and_escapes_what_it_prints() {
    let mut inputs = runc_and_traced_runsc();
    inputs[1].0 = "<script>alert(1)</script>.json".into();
    inputs[1].1.workloads[0].identity.runtime = "run<sc>".into();
    let page = html(&compare(&inputs).expect("compares"));
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("<title>sysfence runtime comparison</title>"));
    assert!(page.contains(super::STYLE), "the dry-run report's style");
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains("run<sc>"), "{page}");
    assert!(page.contains("run&lt;sc&gt; host"), "{page}");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;.json"));
    for external in ["http://", "https://", "src="] {
        assert!(!page.contains(external), "no network: {external}");
    }
}

#[test]
fn json_round_trips_the_comparison() {
    let c = compared();
    let text = json(&c);
    let back: Comparison = serde_json::from_str(&text).expect("parses back");
    assert_eq!(back, c);
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["format"], "sysfence-runtime-comparison");
    assert_eq!(v["baseline"], "runc");
    assert_eq!(v["columns"][1]["application"]["seen"], "inside_sandbox");
    assert_eq!(v["columns"][0]["host"]["distinct"], 4);
    assert_eq!(v["versus_baseline"][0]["only_here"][0], "futex");
    assert!(v["syscalls"][0]["cells"][0].get("application").is_none());
}

fn options(compare: Vec<PathBuf>, output: Option<PathBuf>) -> ReportOptions {
    ReportOptions {
        policy: None,
        from: None,
        events: None,
        compare,
        api: "/nonexistent/api.sock".into(),
        format: Format::Markdown,
        output,
    }
}

#[test]
fn the_command_reads_recordings_writes_the_report_and_judges_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for (name, rec) in runc_and_traced_runsc() {
        let path = dir.path().join(name);
        std::fs::write(&path, serde_json::to_string(&rec).expect("serializes")).expect("write");
        files.push(path);
    }
    let out = dir.path().join("cmp.md");
    let code = run(options(files.clone(), Some(out.clone()))).expect("runs");
    assert_eq!(code, 0);
    let md = std::fs::read_to_string(&out).expect("written");
    assert!(md.contains("| syscall | runc host | runsc host | runsc application |"));

    let e = run(options(files[..1].to_vec(), None)).expect_err("one recording");
    assert!(e.to_string().contains("needs a second recording"), "{e}");

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"format\": \"other\"}").expect("write");
    let e = run(options(vec![files[0].clone(), bad], None)).expect_err("not a recording");
    assert!(e.to_string().contains("not a sysfence recording"), "{e}");

    let mut with_policy = options(files, None);
    with_policy.policy = Some("p.yaml".into());
    let e = run(with_policy).expect_err("a comparison judges no policy");
    assert!(e.to_string().contains("drop `--policy`"), "{e}");
}
