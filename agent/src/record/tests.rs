use super::*;
use crate::watch::snapshot::WorkloadCounts;

fn key(abi: &str, name: &str) -> SyscallKey {
    SyscallKey::new(abi, name)
}

fn snapshot(t_ms: u64, id: u64, counts: &[(&str, &str, u64)]) -> Snapshot {
    Snapshot {
        t_ms,
        workloads: vec![WorkloadCounts {
            identity: WorkloadRef {
                cgroup_id: id,
                cgroup: format!("test/w{id}"),
                namespace: "shop".into(),
                pod: format!("web-{id}"),
                container: "web".into(),
                labels: [
                    ("app".to_string(), "web".to_string()),
                    ("pod-template-hash".to_string(), format!("h{id}")),
                ]
                .into(),
                ..WorkloadRef::default()
            },
            counts: counts.iter().map(|(a, n, c)| (key(a, n), *c)).collect(),
            ..WorkloadCounts::default()
        }],
    }
}

fn recording(filters: Filters, command: Option<Vec<String>>) -> Recording {
    let mut r = Recorder::default();
    r.observe(&snapshot(1000, 1, &[("x86_64", "read", 5)]));
    r.observe(&snapshot(
        2000,
        1,
        &[("x86_64", "read", 9), ("x86_64", "openat", 2)],
    ));
    r.observe(&snapshot(
        3000,
        2,
        &[
            ("x86_64", "read", 1),
            ("i386", "mount", 1),
            ("unknown", "unclassified", 3),
        ],
    ));
    let mut base = base_recording(filters, command, Duration::from_millis(100));
    base.started_ms = 500;
    base.ended_ms = 3500;
    r.finish(base)
}

#[test]
fn recorder_keeps_cumulative_counts_and_first_last_seen() {
    let rec = recording(Filters::default(), None);
    let w1 = &rec.workloads[0];
    let read = w1.syscalls.iter().find(|s| s.syscall == "read").unwrap();
    assert_eq!(read.count, 9);
    assert_eq!((read.first_ms, read.last_ms), (Some(1000), Some(2000)));
    assert_eq!(read.nr, Some(0));
    let openat = w1.syscalls.iter().find(|s| s.syscall == "openat").unwrap();
    assert_eq!((openat.first_ms, openat.last_ms), (Some(2000), Some(2000)));
    assert_eq!((w1.first_ms, w1.last_ms), (Some(1000), Some(2000)));
    let union = rec.union();
    assert_eq!(union[&key("x86_64", "read")], 10);
    assert_eq!(union[&key("i386", "mount")], 1);
}

#[test]
fn recording_round_trips_and_refuses_what_it_cannot_read() {
    let rec = recording(Filters::default(), Some(vec!["/bin/true".into()]));
    let text = serde_json::to_string_pretty(&rec).unwrap();
    let back = Recording::parse(Path::new("r.json"), &text).unwrap();
    assert_eq!(back, rec);

    let newer = text.replace("\"version\": 1", "\"version\": 99");
    let e = Recording::parse(Path::new("r.json"), &newer).unwrap_err();
    assert!(format!("{e}").contains("version 99"), "{e}");

    let e = Recording::parse(Path::new("r.json"), "{\n  \"format\": ").unwrap_err();
    assert!(format!("{e}").starts_with("r.json:2:"), "{e}");

    let e = Recording::parse(Path::new("x.json"), r#"{"format":"other"}"#).unwrap_err();
    assert!(format!("{e}").contains("not a sysfence recording"), "{e}");
}

/// The learned YAML, written to a file and loaded as `sysfence check` loads it.
fn check(yaml: &str) -> crate::policy::CompiledPolicy {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, yaml).unwrap();
    let loaded = policy::load_files(std::slice::from_ref(&path));
    assert!(
        !loaded.has_errors(),
        "learned policy fails check:\n{yaml}\n{:#?}",
        loaded.diagnostics
    );
    assert_eq!(loaded.policies.len(), 1);
    loaded.policies.into_iter().next().unwrap()
}

#[test]
fn learned_policy_passes_check_and_allows_exactly_what_was_seen() {
    let filters = Filters {
        namespace: Some("shop".into()),
        container: Some("web".into()),
        cgroup: Some("test/*".into()),
        pod: None,
    };
    let rec = recording(filters, None);
    let yaml = learned_policy_yaml(
        &rec,
        &LearnOptions {
            name: "learned-web".into(),
            mode: Mode::Audit,
            include: Vec::new(),
            from_first_syscall: false,
            written_to: None,
            sets_dir: None,
            target: crate::policy::Target::Application,
        },
    )
    .unwrap();
    let p = check(&yaml);
    assert_eq!(p.name, "learned-web");
    assert_eq!(p.mode, Mode::Audit);
    // x86_64: what was seen; i386: only mount; x32: nothing.
    let want: BTreeSet<u32> = [
        crate::syscall_table::index_of(Abi::X86_64, "read").unwrap(),
        crate::syscall_table::index_of(Abi::X86_64, "openat").unwrap(),
        crate::syscall_table::index_of(Abi::Ia32, "mount").unwrap(),
    ]
    .into();
    assert_eq!(p.allowed, want, "\n{yaml}");
    // The selector is the filters.
    let w = crate::workload::Workload {
        cgroup_path: "test/w1".into(),
        namespace: Some("shop".into()),
        container: Some("web".into()),
        ..Default::default()
    };
    assert!(p.selector.matches(&w));
    let other = crate::workload::Workload {
        namespace: Some("other".into()),
        ..w.clone()
    };
    assert!(!p.selector.matches(&other));
    // What cannot be named is said, not silently dropped.
    assert!(yaml.contains("unclassified (3 calls)"), "{yaml}");
}

#[test]
fn learned_policy_with_runtime_default_says_what_it_adds() {
    let rec = recording(Filters::default(), None);
    let yaml = learned_policy_yaml(
        &rec,
        &LearnOptions {
            name: "learned-all".into(),
            mode: Mode::Enforce,
            include: vec!["runtime-default".into()],
            from_first_syscall: false,
            written_to: None,
            sets_dir: None,
            target: crate::policy::Target::Application,
        },
    )
    .unwrap();
    let p = check(&yaml);
    let set = set_names("runtime-default", None, None).unwrap();
    assert!(set.len() > 300);
    assert!(set.iter().all(|n| p.allowed_names.contains(n)));
    let unobserved = set
        .iter()
        .filter(|n| !["read", "openat", "mount"].contains(&n.as_str()))
        .count();
    assert!(
        yaml.contains(&format!("It allows {unobserved} syscall names")),
        "{yaml}"
    );
    assert!(yaml.contains("include: [runtime-default]"));
    assert!(p.selector.is_empty(), "no filter, no selector");
    assert!(yaml.contains("# No selector"), "{yaml}");
}

#[test]
fn pod_filter_becomes_the_replicas_common_stable_labels() {
    let filters = Filters {
        pod: Some("web-1".into()),
        ..Filters::default()
    };
    let rec = recording(filters, None);
    let yaml = learned_policy_yaml(
        &rec,
        &LearnOptions {
            name: "learned-web-1".into(),
            mode: Mode::Audit,
            include: Vec::new(),
            from_first_syscall: false,
            written_to: None,
            sets_dir: None,
            target: crate::policy::Target::Application,
        },
    )
    .unwrap();
    check(&yaml);
    assert!(yaml.contains("\"app\": \"web\""), "{yaml}");
    assert!(!yaml.contains("pod-template-hash\":"), "{yaml}");
}

#[test]
fn a_learned_selector_leaves_out_what_kubelet_gives_each_new_pod() {
    let kubelet = |extra: &[(&str, &str)]| -> BTreeMap<String, String> {
        [
            ("io.kubernetes.pod.name", "web"),
            ("io.kubernetes.pod.namespace", "shop"),
            (
                "io.kubernetes.pod.uid",
                "5f5e0001-0001-4000-8000-000000000001",
            ),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let keys = |l: BTreeMap<String, String>| l.into_keys().collect::<Vec<_>>();
    // Labels of its own: those name it, with the namespace.
    assert_eq!(
        keys(selector_labels(kubelet(&[("app", "web")]), false)),
        ["app", "io.kubernetes.pod.namespace"]
    );
    assert_eq!(
        keys(selector_labels(kubelet(&[("app", "web")]), true)),
        ["app"]
    );
    // None: its name is all there is (a bare pod keeps it across restarts).
    assert_eq!(
        keys(selector_labels(kubelet(&[]), true)),
        ["io.kubernetes.pod.name"]
    );
}

#[test]
fn names_are_kubernetes_names() {
    assert_eq!(sanitize_name("learned-SF_Syscalls"), "learned-sf-syscalls");
    assert_eq!(sanitize_name("--"), "learned");
    assert_eq!(sanitize_name(&"a".repeat(100)).len(), 63);
    assert!(crate::policy::compile::valid_name(&sanitize_name(
        "learned-my app!!"
    )));
}

#[test]
fn flow_lists_wrap_and_stay_valid_yaml() {
    let names: Vec<String> = (0..40).map(|i| format!("name{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let text = flow_list(&refs, 4);
    assert!(text.lines().count() > 3);
    assert!(text.lines().all(|l| l.len() <= 84), "{text}");
    let parsed: Vec<String> = serde_yaml::from_str(&format!("{text}\n")).unwrap();
    assert_eq!(parsed, names);
}

#[test]
fn learned_policy_denies_namespaces_unless_the_workload_made_one() {
    let options = LearnOptions {
        name: "learned".into(),
        mode: Mode::Enforce,
        include: Vec::new(),
        from_first_syscall: true,
        written_to: None,
        sets_dir: None,
        target: crate::policy::Target::Application,
    };
    // clone and clone3 seen, no fork into a namespace: deny.
    let learn = |counts: &[(&str, &str, u64)]| {
        let mut r = Recorder::default();
        r.observe(&snapshot(1000, 1, counts));
        let rec = r.finish(base_recording(
            Filters::default(),
            None,
            Duration::from_millis(100),
        ));
        learned_policy_yaml(&rec, &options).unwrap()
    };
    let yaml = learn(&[("x86_64", "clone", 3), ("x86_64", "clone3", 2)]);
    assert!(yaml.contains("namespaces: deny"), "{yaml}");
    let p = check(&yaml);
    assert!(p.deny_namespaces);
    assert!(
        p.rules.contains_key("clone"),
        "clone is judged on its flags"
    );
    assert!(p.allowed_names.contains("clone3"));
    // A fork into a namespace was seen: allow, and say why.
    let yaml = learn(&[("x86_64", "clone", 3), ("any", "new-namespace", 1)]);
    assert!(yaml.contains("namespaces: allow"), "{yaml}");
    assert!(yaml.contains("1 fork with CLONE_NEW* flags"), "{yaml}");
    assert!(
        !yaml.contains("new-namespace (1 calls)"),
        "not an unnameable syscall: {yaml}"
    );
    let p = check(&yaml);
    assert!(!p.deny_namespaces);
    assert!(p.allowed_names.contains("clone"));
    // unshare seen: allow.
    let yaml = learn(&[("x86_64", "unshare", 1)]);
    assert!(
        yaml.contains("namespaces: allow") && yaml.contains("`unshare`"),
        "{yaml}"
    );
    assert!(check(&yaml).allowed_names.contains("unshare"));
}

/// A runsc workload traced inside its sandbox: the application's counts are its
/// syscalls, and the sandbox's own host calls are kept beside them.
fn sandboxed_snapshot(t_ms: u64, app: u64, host: u64) -> Snapshot {
    let mut s = snapshot(t_ms, 7, &[("x86_64", "mkdir", app)]);
    let w = &mut s.workloads[0];
    w.identity.runtime = "runsc".into();
    w.inside_sandbox = true;
    w.host_counts = [(key("x86_64", "ptrace"), host)].into();
    s
}

#[test]
fn a_sandboxed_workloads_recording_keeps_the_host_calls_beside_the_applications() {
    let mut r = Recorder::default();
    r.observe(&sandboxed_snapshot(1000, 2, 40));
    r.observe(&sandboxed_snapshot(2000, 5, 90));
    let rec = r.finish(base_recording(
        Filters::default(),
        None,
        Duration::from_millis(100),
    ));
    let w = &rec.workloads[0];
    assert!(w.inside_sandbox);
    assert_eq!(w.syscalls.len(), 1);
    assert_eq!(
        (w.syscalls[0].syscall.as_str(), w.syscalls[0].count),
        ("mkdir", 5)
    );
    assert_eq!(w.host_syscalls.len(), 1);
    let ptrace = &w.host_syscalls[0];
    assert_eq!((ptrace.syscall.as_str(), ptrace.count), ("ptrace", 90));
    assert_eq!((ptrace.first_ms, ptrace.last_ms), (Some(1000), Some(2000)));
    assert_eq!(w.host_side(), &w.host_syscalls[..]);
    // Round trip; an unsandboxed workload writes neither field.
    let text = serde_json::to_string(&rec).unwrap();
    assert_eq!(Recording::parse(Path::new("r.json"), &text).unwrap(), rec);
    let plain = serde_json::to_string(&recording(Filters::default(), None)).unwrap();
    assert!(!plain.contains("inside_sandbox") && !plain.contains("host_syscalls"));
}

#[test]
fn a_sandbox_process_recording_learns_a_sandbox_policy_for_its_runtime() {
    let mut r = Recorder::default();
    let mut s = snapshot(1000, 3, &[("x86_64", "ptrace", 10), ("x86_64", "futex", 4)]);
    s.workloads[0].identity.runtime = "runsc".into();
    r.observe(&s);
    let rec = r.finish(base_recording(
        Filters {
            cgroup: Some("kubepods/*".into()),
            ..Filters::default()
        },
        None,
        Duration::from_millis(100),
    ));
    let yaml = learned_policy_yaml(
        &rec,
        &LearnOptions {
            name: "learned-sentry".into(),
            mode: Mode::Enforce,
            include: Vec::new(),
            from_first_syscall: false,
            written_to: None,
            sets_dir: None,
            target: crate::policy::Target::Sandbox,
        },
    )
    .unwrap();
    assert!(yaml.contains("\n  target: sandbox\n"), "{yaml}");
    assert!(yaml.contains("    runtime: \"runsc\"\n"), "{yaml}");
    assert!(!yaml.contains("monitor-only"), "{yaml}");
    let p = check(&yaml);
    assert_eq!(p.target, crate::policy::Target::Sandbox);
    assert!(p.allowed_names.contains("ptrace"), "{yaml}");
}
