//! Selector matching, specificity and runtime recognition: pure, no root.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    path::{Path, PathBuf},
};

use super::{Runtime, Workload, runtime, wrap};
use crate::policy::{
    CompiledPolicy, compile,
    model::{self, Document},
    selector::{CompiledSelector, Glob, LabelSelector, Op, Requirement},
    shipped_catalog,
};

pub(super) fn policy(name: &str, selector: &str) -> CompiledPolicy {
    let text = format!(
        "apiVersion: sysfence.dev/v1\nkind: SyscallPolicy\nmetadata:\n  name: {name}\nspec:\n  selector:\n{selector}  include: [runtime-default]\n"
    );
    let path = PathBuf::from(format!("{name}.yaml"));
    let Document::Policy(doc) = model::parse(&path, &text).unwrap_or_else(|d| panic!("{d}")) else {
        panic!("not a policy")
    };
    compile::compile(&path, &doc, &shipped_catalog())
        .unwrap_or_else(|d| panic!("{d:?}"))
        .0
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn web_pod() -> Workload {
    Workload {
        cgroup_id: 42,
        cgroup_path: "kubepods/besteffort/pod1234/abcdef".into(),
        runtime: Some(Runtime::Runc),
        runtime_handler: Some("runc".into()),
        container_id: Some("abcdef".into()),
        container: Some("nginx".into()),
        pod: Some("web-7d9f".into()),
        pod_uid: Some("1234".into()),
        namespace: Some("shop".into()),
        labels: labels(&[("app", "web"), ("tier", "frontend")]),
        image: Some("docker.io/library/nginx:1.25".into()),
        ..Workload::default()
    }
}

fn req(key: &str, op: Op, values: &[&str]) -> Requirement {
    Requirement {
        key: key.into(),
        op,
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

#[test]
fn every_field_matches_and_all_must() {
    let w = web_pod();
    for sel in [
        "    namespace: shop\n",
        "    podLabels: {matchLabels: {app: web}}\n",
        "    container: nginx\n",
        "    image: \"docker.io/library/nginx:*\"\n",
        "    image: \"*nginx*\"\n",
        "    runtime: runc\n",
        "    cgroupPath: \"kubepods/*/pod*/*\"\n",
        "    namespace: shop\n    container: nginx\n    runtime: runc\n",
    ] {
        assert!(policy("p", sel).selector.matches(&w), "{sel}");
    }
    for sel in [
        "    namespace: other\n",
        "    podLabels: {matchLabels: {app: db}}\n",
        "    container: sidecar\n",
        "    image: \"docker.io/library/redis:*\"\n",
        "    runtime: runsc\n",
        "    cgroupPath: \"kubepods/*\"\n",
        "    namespace: shop\n    container: sidecar\n",
    ] {
        assert!(!policy("p", sel).selector.matches(&w), "{sel}");
    }
}

#[test]
fn an_empty_selector_binds_nothing() {
    let s = CompiledSelector::default();
    assert!(s.is_empty());
    assert!(!s.matches(&web_pod()));
    assert_eq!(s.specificity(), 0);
}

#[test]
fn label_selector_operators_follow_kubernetes() {
    let l = labels(&[("app", "web"), ("tier", "frontend")]);
    let m = |r: Requirement| {
        LabelSelector {
            requirements: vec![r],
        }
        .matches(&l)
    };
    assert!(m(req("app", Op::In, &["web", "api"])));
    assert!(!m(req("app", Op::In, &["api"])));
    assert!(!m(req("missing", Op::In, &["x"])), "In needs the key");
    assert!(m(req("app", Op::NotIn, &["api"])));
    assert!(!m(req("app", Op::NotIn, &["web"])));
    assert!(
        m(req("missing", Op::NotIn, &["x"])),
        "NotIn holds without the key"
    );
    assert!(m(req("tier", Op::Exists, &[])));
    assert!(!m(req("missing", Op::Exists, &[])));
    assert!(m(req("missing", Op::DoesNotExist, &[])));
    assert!(!m(req("app", Op::DoesNotExist, &[])));
    // Empty selector: every pod.
    assert!(LabelSelector::default().matches(&l));
    assert!(LabelSelector::default().matches(&BTreeMap::new()));
}

#[test]
fn pod_labels_from_yaml_and_workloads_outside_pods() {
    let p = policy(
        "p",
        "    podLabels:\n      matchLabels: {app: web}\n      matchExpressions:\n        - {key: tier, operator: In, values: [frontend, edge]}\n        - {key: canary, operator: DoesNotExist}\n",
    );
    assert_eq!(p.selector.specificity(), 3);
    assert!(p.selector.matches(&web_pod()));
    let mut canary = web_pod();
    canary.labels.insert("canary".into(), "true".into());
    assert!(!p.selector.matches(&canary));
    // A container outside any pod has no labels to match, even for NotIn-only selectors.
    let q = policy(
        "q",
        "    podLabels:\n      matchExpressions:\n        - {key: app, operator: NotIn, values: [db]}\n",
    );
    let plain = Workload {
        cgroup_path: "system.slice/docker-abc.scope".into(),
        runtime: Some(Runtime::Runc),
        container_id: Some("abc".into()),
        ..Workload::default()
    };
    assert!(!q.selector.matches(&plain));
    assert!(q.selector.matches(&web_pod()));
}

#[test]
fn specificity_counts_fields_and_label_requirements() {
    assert_eq!(
        policy("a", "    namespace: shop\n").selector.specificity(),
        1
    );
    assert_eq!(
        policy(
            "b",
            "    namespace: shop\n    podLabels: {matchLabels: {app: web}}\n"
        )
        .selector
        .specificity(),
        2
    );
    assert_eq!(
        policy(
            "c",
            "    namespace: shop\n    podLabels: {matchLabels: {app: web, tier: frontend}}\n"
        )
        .selector
        .specificity(),
        3
    );
    assert_eq!(
        policy("d", "    podLabels: {}\n").selector.specificity(),
        1,
        "an empty podLabels counts one"
    );
    assert_eq!(
        policy(
            "e",
            "    namespace: shop\n    container: nginx\n    image: x\n    runtime: runc\n    cgroupPath: a\n"
        )
        .selector
        .specificity(),
        5
    );
}

#[test]
fn overlap_is_decided_per_field() {
    let o = |a: &str, b: &str| {
        policy("a", a)
            .selector
            .may_overlap(&policy("b", b).selector)
    };
    assert!(o("    namespace: shop\n", "    container: nginx\n"));
    assert!(!o("    namespace: shop\n", "    namespace: bank\n"));
    assert!(!o("    container: a\n", "    container: b\n"));
    assert!(!o("    runtime: runc\n", "    runtime: runsc\n"));
    assert!(
        o("    runtime: runc\n", "    runtime: my-handler\n"),
        "a CRI handler name may be any runtime"
    );
    assert!(!o(
        "    podLabels: {matchLabels: {app: web}}\n",
        "    podLabels: {matchLabels: {app: db}}\n"
    ));
    assert!(o(
        "    podLabels: {matchLabels: {app: web}}\n",
        "    podLabels: {matchLabels: {tier: frontend}}\n"
    ));
    assert!(!o(
        "    podLabels: {matchLabels: {app: web}}\n",
        "    podLabels: {matchExpressions: [{key: app, operator: DoesNotExist}]}\n"
    ));
    assert!(!o(
        "    podLabels: {matchExpressions: [{key: app, operator: In, values: [a, b]}]}\n",
        "    podLabels: {matchExpressions: [{key: app, operator: NotIn, values: [a, b]}]}\n"
    ));
    assert!(o(
        "    podLabels: {matchExpressions: [{key: app, operator: In, values: [a, b]}]}\n",
        "    podLabels: {matchExpressions: [{key: app, operator: NotIn, values: [a]}]}\n"
    ));
    // Globs.
    assert!(!o(
        "    cgroupPath: \"sysfence-demo/*\"\n",
        "    cgroupPath: \"sysfence-enforced/*\"\n"
    ));
    assert!(!o(
        "    cgroupPath: \"a/*\"\n",
        "    cgroupPath: \"a/*/*\"\n"
    ));
    assert!(o("    cgroupPath: \"a/*\"\n", "    cgroupPath: \"*/b\"\n"));
    assert!(o(
        "    cgroupPath: \"a/**\"\n",
        "    cgroupPath: \"a/b/c\"\n"
    ));
    assert!(!o(
        "    image: \"docker.io/library/nginx:*\"\n",
        "    image: \"quay.io/*\"\n"
    ));
    assert!(o("    image: \"docker.io/*\"\n", "    image: \"*:1.25\"\n"));
    assert!(!o("    image: \"nginx:1\"\n", "    image: \"redis*\"\n"));
}

#[test]
fn glob_flavours() {
    let path = Glob::path("kubepods/*/pod*/*").unwrap();
    assert!(path.matches("kubepods/besteffort/pod1/c"));
    assert!(
        !path.matches("kubepods/besteffort/pod1/c/sub"),
        "* stops at /"
    );
    let image = Glob::image("docker.io/*").unwrap();
    assert!(image.matches("docker.io/library/nginx:1.25"), "* crosses /");
}

#[test]
fn the_most_specific_policy_wins_and_ties_are_conflicts() {
    let general = policy("general", "    namespace: shop\n");
    let web = policy(
        "web",
        "    namespace: shop\n    podLabels: {matchLabels: {app: web}}\n",
    );
    let w = web_pod();
    let best = [&general, &web]
        .into_iter()
        .filter(|p| p.selector.matches(&w))
        .max_by_key(|p| p.selector.specificity())
        .unwrap();
    assert_eq!(best.name, "web");
    assert!(compile::conflicts(&[general.clone(), web.clone()]).is_empty());

    let by_container = policy("by-container", "    container: nginx\n    runtime: runc\n");
    let d = compile::conflicts(&[web.clone(), by_container]);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].is_error());
    assert!(
        d[0].message
            .contains("policies `web` and `by-container` can select the same workload with equal specificity 2"),
        "{}",
        d[0]
    );
    assert_eq!((d[0].line, d[0].column), (7, 16), "{}", d[0]);
    assert!(
        d[0].to_string()
            .starts_with("by-container.yaml:7:16: error: selector conflict")
    );
    assert!(
        d[0].help.as_deref().unwrap().contains("web.yaml:7:16"),
        "{d:?}"
    );

    // Disjoint selectors of equal specificity are fine.
    let bank = policy("bank", "    namespace: bank\n");
    assert!(compile::conflicts(&[general, bank]).is_empty());
}

#[test]
fn runtime_names_and_handlers() {
    let mut w = web_pod();
    w.runtime = Some(Runtime::Runsc);
    w.runtime_handler = Some("gvisor".into());
    assert!(w.sandboxed());
    assert!(w.runtime_is("runsc"));
    assert!(w.runtime_is("gvisor"), "a handler name matches the handler");
    assert!(!w.runtime_is("runc"));
    assert!(
        policy("g", "    runtime: runsc\n")
            .selector
            .names_runtime_of(&w)
    );
    assert!(
        !policy("n", "    namespace: shop\n")
            .selector
            .names_runtime_of(&w)
    );
    assert_eq!(Runtime::from_name("/usr/sbin/runc"), Runtime::Runc);
    assert_eq!(Runtime::from_name("runsc"), Runtime::Runsc);
    assert_eq!(Runtime::from_name("kata-qemu"), Runtime::Kata);
    assert_eq!(Runtime::from_name("crun"), Runtime::Crun);
    assert!(!Runtime::Crun.sandboxed() && !Runtime::Runc.sandboxed());
    assert!(
        Runtime::Runsc
            .sandbox_note()
            .unwrap()
            .contains("host sees the gVisor Sentry's syscalls, not the application's")
    );
}

#[test]
fn runtime_state_formats() {
    let root = Path::new("/run/runc");
    let runc = serde_json::json!({
        "id": "c1", "init_process_pid": 4242,
        "config": {"labels": ["bundle=/b/c1"]},
        "cgroup_paths": {"": "/sys/fs/cgroup/unified/x/c1"}
    });
    let s = runtime::parse_state_json(root, "c1", &runc).unwrap();
    assert_eq!(
        (s.runtime, s.pid, s.bundle),
        (Runtime::Runc, Some(4242), Some(PathBuf::from("/b/c1")))
    );
    let youki = serde_json::json!({"id": "y", "pid": 7, "bundle": "/b/y", "status": "created"});
    let s = runtime::parse_state_json(root, "y", &youki).unwrap();
    assert_eq!((s.runtime, s.pid), (Runtime::Youki, Some(7)));
    let crun = serde_json::json!({"pid": 139179, "cgroup-path": "/busybox1", "bundle": "/home/b", "rootfs": "rootfs"});
    let s = runtime::parse_crun_status(root, "busybox1", &crun).unwrap();
    assert_eq!((s.runtime, s.pid), (Runtime::Crun, Some(139179)));
    let runsc = serde_json::json!({
        "id": "r1", "bundleDir": "/b/r1", "goferPid": 100, "status": "running",
        "sandbox": {"id": "r1", "pid": 101, "cgroup": {"cgroupv1": {"name": "/sysfence/r1"}}}
    });
    let s = runtime::parse_runsc_state(root, &runsc).unwrap();
    assert_eq!(s.runtime, Runtime::Runsc);
    assert_eq!(s.pid, Some(101));
    assert_eq!(s.other_pids, vec![100]);
    assert_eq!(s.v1_cgroup.as_deref(), Some("sysfence/r1"));
}

#[test]
fn proc_cgroup_lines() {
    let hybrid = "9:name=systemd:/sysfence-exp/r1\n4:memory:/sysfence-exp/r1\n0::/\n";
    assert_eq!(runtime::parse_v2_line(hybrid).as_deref(), Some(""));
    assert_eq!(
        runtime::v1_cgroup_of(hybrid).as_deref(),
        Some("sysfence-exp/r1")
    );
    assert_eq!(
        runtime::parse_v2_line("0::/kubepods/besteffort/pod1/c\n").as_deref(),
        Some("kubepods/besteffort/pod1/c")
    );
    assert_eq!(runtime::v1_cgroup_of("0::/a\n"), None);
}

#[test]
fn annotations_of_containerd_and_cri_o() {
    let containerd = labels(&[
        ("io.kubernetes.cri.container-type", "container"),
        ("io.kubernetes.cri.container-name", "app"),
        ("io.kubernetes.cri.sandbox-name", "victim"),
        ("io.kubernetes.cri.sandbox-namespace", "sysfence-test"),
        ("io.kubernetes.cri.sandbox-id", "p1"),
        ("io.kubernetes.cri.image-name", "localhost/busybox:local"),
    ]);
    let a = runtime::parse_annotations(&containerd);
    assert_eq!(a.container.as_deref(), Some("app"));
    assert_eq!(a.pod.as_deref(), Some("victim"));
    assert_eq!(a.namespace.as_deref(), Some("sysfence-test"));
    assert_eq!(a.sandbox_id.as_deref(), Some("p1"));
    assert_eq!(a.sandbox, Some(false));
    assert_eq!(a.image.as_deref(), Some("localhost/busybox:local"));
    let crio = labels(&[
        ("io.kubernetes.cri-o.ContainerType", "sandbox"),
        ("io.kubernetes.pod.name", "web"),
        ("io.kubernetes.pod.namespace", "shop"),
    ]);
    let a = runtime::parse_annotations(&crio);
    assert_eq!(a.sandbox, Some(true));
    assert_eq!(a.pod.as_deref(), Some("web"));
    assert_eq!(a.namespace.as_deref(), Some("shop"));
    assert_eq!(
        runtime::parse_annotations(&BTreeMap::new()),
        Default::default()
    );
}

#[test]
fn wrapper_finds_subcommand_id_and_root() {
    let args = |v: &[&str]| -> Vec<OsString> { v.iter().map(OsString::from).collect() };
    // containerd's runc shim.
    let p = wrap::parse_runtime_args(&args(&[
        "--root",
        "/run/containerd/runc/k8s.io",
        "--log",
        "/run/x/log.json",
        "--log-format",
        "json",
        "--systemd-cgroup",
        "start",
        "abc123",
    ]));
    assert_eq!(p.subcommand.as_deref(), Some("start"));
    assert_eq!(p.id.as_deref(), Some("abc123"));
    assert_eq!(
        p.root.as_deref(),
        Some(Path::new("/run/containerd/runc/k8s.io"))
    );
    // runsc style flags.
    let p = wrap::parse_runtime_args(&args(&["-root=/tmp/r", "--network=none", "start", "r1"]));
    assert_eq!(
        (p.subcommand.as_deref(), p.id.as_deref(), p.root.as_deref()),
        (Some("start"), Some("r1"), Some(Path::new("/tmp/r")))
    );
    // Other commands are passed through; their id is found too.
    let p = wrap::parse_runtime_args(&args(&[
        "create",
        "--bundle",
        "/b",
        "--pid-file",
        "/p",
        "c9",
    ]));
    assert_eq!(
        (p.subcommand.as_deref(), p.id.as_deref(), p.root),
        (Some("create"), Some("c9"), None)
    );
    let p = wrap::parse_runtime_args(&args(&["--version"]));
    assert_eq!(p.subcommand, None);
}

#[test]
fn state_roots_tell_created_from_started_and_creating() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Being created: the directory exists, the state file not yet.
    std::fs::create_dir_all(root.join("c1")).unwrap();
    let scan = runtime::scan_root(root);
    assert!(scan.creating);
    assert!(scan.states.is_empty());
    // A state file still being written is not written yet.
    std::fs::write(root.join("c1/state.json"), r#"{"id":"c1","init_pro"#).unwrap();
    assert!(runtime::scan_root(root).creating);
    // Created, waiting for `start`: state file and exec FIFO.
    std::fs::write(
        root.join("c1/state.json"),
        r#"{"id":"c1","init_process_pid":1,"config":{"labels":["bundle=/b"]}}"#,
    )
    .unwrap();
    std::fs::write(root.join("c1/exec.fifo"), "").unwrap();
    let scan = runtime::scan_root(root);
    assert!(!scan.creating);
    let s = scan.states;
    assert_eq!(s.len(), 1);
    assert!(s[0].pending_start);
    assert_eq!(s[0].bundle.as_deref(), Some(Path::new("/b")));
    // Started: the FIFO is gone.
    std::fs::remove_file(root.join("c1/exec.fifo")).unwrap();
    assert!(!runtime::scan_root(root).states[0].pending_start);
    // A directory left by a create that died long ago is no create in progress.
    std::fs::create_dir_all(root.join("dead")).unwrap();
    assert!(runtime::scan_root(root).creating);
    let long_ago = std::time::SystemTime::now() - runtime::CREATING_AT_MOST * 2;
    std::fs::File::open(root.join("dead"))
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    let scan = runtime::scan_root(root);
    assert!(!scan.creating);
    assert_eq!(scan.states.len(), 1, "c1 is still read");
    std::fs::remove_dir(root.join("dead")).unwrap();
    // crun's status file, and a runsc state file.
    std::fs::create_dir_all(root.join("k1")).unwrap();
    std::fs::write(root.join("k1/status"), r#"{"pid":2,"bundle":"/k"}"#).unwrap();
    std::fs::write(
        root.join("r1_sandbox:r1.state"),
        r#"{"id":"r1","bundleDir":"/r","sandbox":{"pid":3}}"#,
    )
    .unwrap();
    let all = runtime::scan_root(root).states;
    let names: Vec<(&str, &str)> = all
        .iter()
        .map(|s| (s.id.as_str(), s.runtime.name()))
        .collect();
    assert_eq!(names, [("c1", "runc"), ("k1", "crun"), ("r1", "runsc")]);
    let r = runtime::read_state(&Runtime::Crun, Some(root), "k1").unwrap();
    assert_eq!(r.pid, Some(2));
    let r = runtime::read_state(&Runtime::Runsc, Some(root), "r1").unwrap();
    assert_eq!(r.pid, Some(3));
}

#[test]
fn a_cgroup_keeps_its_identity_when_its_runtime_state_goes_first() {
    let earlier = Workload {
        cgroup_id: 7,
        cgroup_path: "k/pod/ctr".into(),
        runtime: Some(Runtime::Runc),
        container_id: Some("ctr".into()),
        pod: Some("web-1".into()),
        namespace: Some("shop".into()),
        ..Workload::default()
    };
    // `runc delete` removed the state: only the cgroup is left to classify.
    let mut now = Workload {
        cgroup_id: 7,
        cgroup_path: "k/pod/ctr".into(),
        ..Workload::default()
    };
    now.keep_identity_from(&earlier);
    assert_eq!(now.container_id.as_deref(), Some("ctr"));
    assert_eq!(now.pod.as_deref(), Some("web-1"));
    assert!(now.is_container());
    // What is known now wins; another cgroup's identity is never taken.
    let mut other = Workload {
        cgroup_id: 8,
        container: Some("nginx".into()),
        ..Workload::default()
    };
    other.keep_identity_from(&earlier);
    assert_eq!(other.container_id, None);
    assert_eq!(other.container.as_deref(), Some("nginx"));
}

#[test]
fn a_field_the_workload_does_not_know_yet_could_match_but_does_not_match() {
    let selectors = [
        ("namespace", "    namespace: shop\n"),
        ("container", "    container: nginx\n"),
        ("image", "    image: \"docker.io/library/nginx:*\"\n"),
        ("runtime", "    runtime: runc\n"),
        ("labels", "    podLabels:\n      matchLabels: {app: web}\n"),
    ];
    for (field, selector) in selectors {
        let s = policy(field, selector).selector;
        // Known and equal: both.
        let known = web_pod();
        assert!(s.matches(&known) && s.could_match(&known), "{field}");
        // Known and different: neither.
        let mut other = web_pod();
        match field {
            "namespace" => other.namespace = Some("bank".into()),
            "container" => other.container = Some("redis".into()),
            "image" => other.image = Some("docker.io/library/redis:7".into()),
            "runtime" => {
                other.runtime = Some(Runtime::Crun);
                other.runtime_handler = Some("crun".into());
            }
            _ => other.labels = labels(&[("app", "db")]),
        }
        assert!(!s.matches(&other) && !s.could_match(&other), "{field}");
        // Not known yet: could match, does not match.
        let mut unknown = other;
        match field {
            "namespace" => unknown.namespace = None,
            "container" => unknown.container = None,
            "image" => unknown.image = None,
            "runtime" => {
                unknown.runtime = None;
                unknown.runtime_handler = None;
            }
            _ => unknown.unknown = Some("the CRI is down".into()),
        }
        assert!(!s.matches(&unknown), "{field}: matched while unknown");
        assert!(
            s.could_match(&unknown),
            "{field}: could not match while unknown"
        );
    }
    // The cgroup path is always known: a different one never could match.
    let s = policy("path", "    cgroupPath: \"kubepods/*\"\n").selector;
    let mut elsewhere = web_pod();
    elsewhere.cgroup_path = "system.slice/x".into();
    assert!(!s.could_match(&elsewhere));
}
