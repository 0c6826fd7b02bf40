use probe_common::PolicySlot;

use super::*;
use crate::workload::tests::{policy, web_pod};

fn entries(policies: Vec<CompiledPolicy>) -> Vec<PolicyEntry> {
    policies
        .into_iter()
        .enumerate()
        .map(|(i, policy)| PolicyEntry {
            content: policy.enforcement(Ok(())).slot,
            policy,
            slot: 2 * i as u32,
            monitor_slot: 2 * i as u32 + 1,
        })
        .collect()
}

#[test]
fn the_most_specific_matching_policy_is_chosen() {
    let table = entries(vec![
        policy("shop", "    namespace: shop\n"),
        policy("web", "    namespace: shop\n    container: nginx\n"),
        policy("other", "    namespace: bank\n"),
    ]);
    let c = choose(&table, &web_pod()).expect("a policy matches");
    assert_eq!(table[c.policy].policy.name, "web");
    assert!(!c.monitor_only);
    let mut elsewhere = web_pod();
    elsewhere.namespace = Some("hr".into());
    assert_eq!(choose(&table, &elsewhere), None, "nothing selects it");
}

#[test]
fn a_sandboxed_workload_gets_monitor_only_unless_its_runtime_is_named() {
    let mut gvisor = web_pod();
    gvisor.runtime = Some(Runtime::Runsc);
    let table = entries(vec![policy("shop", "    namespace: shop\n")]);
    assert!(choose(&table, &gvisor).unwrap().monitor_only);
    let named = entries(vec![policy(
        "shop-gvisor",
        "    namespace: shop\n    runtime: runsc\n",
    )]);
    assert!(!choose(&named, &gvisor).unwrap().monitor_only);
    let _: PolicySlot = named[0].content;
}

fn with_target(mut p: CompiledPolicy, target: Target) -> CompiledPolicy {
    p.target = target;
    p
}

#[test]
fn a_sandbox_policy_polices_only_a_sandboxed_runtimes_host_processes() {
    let mut gvisor = web_pod();
    gvisor.runtime = Some(Runtime::Runsc);
    // The application's policy is more specific; the sandbox policy still takes the
    // sandbox's host cgroup, as written.
    let table = entries(vec![
        policy("web", "    namespace: shop\n    container: nginx\n"),
        with_target(policy("sentry", "    runtime: runsc\n"), Target::Sandbox),
    ]);
    let (c, why) = choose_why(&table, &gvisor, None).unwrap();
    assert_eq!(table[c.policy].policy.name, "sentry", "{why}");
    assert!(!c.monitor_only);
    assert!(why.contains("target: sandbox"), "{why}");
    // Inside the sandbox, the application's policy.
    let (c, _) = choose_inside_why(&table, &gvisor, None).unwrap();
    assert_eq!(table[c.policy].policy.name, "web");
    assert!(!c.monitor_only);
    // Under runc, never the sandbox policy, even one whose selector would match.
    let mut runc = web_pod();
    runc.runtime = Some(Runtime::Runc);
    let loose = entries(vec![with_target(
        policy("any", "    namespace: shop\n"),
        Target::Sandbox,
    )]);
    assert_eq!(choose(&loose, &runc), None);
    assert!(choose(&loose, &gvisor).is_some());
    assert_eq!(choose_inside_why(&loose, &gvisor, None), None);
    // Without a sandbox policy: the application's, monitor-only, as before.
    let app_only = entries(vec![policy("web", "    namespace: shop\n")]);
    assert!(choose(&app_only, &gvisor).unwrap().monitor_only);
    // A default policy is taken only for its own target.
    let mut unknown = gvisor.clone();
    unknown.unknown = Some("no CRI answer yet".into());
    let defaults = entries(vec![with_target(
        policy("sentry", "    runtime: kata\n"),
        Target::Sandbox,
    )]);
    let (c, why) = choose_why(&defaults, &unknown, Some("sentry")).unwrap();
    assert_eq!(defaults[c.policy].policy.name, "sentry", "{why}");
    assert_eq!(choose_inside_why(&defaults, &unknown, Some("sentry")), None);
}

fn with_mode(mut p: CompiledPolicy, mode: Mode) -> CompiledPolicy {
    p.mode = mode;
    p
}

#[test]
fn no_binding_is_weakened_and_ties_keep_the_workloads_own_choice() {
    let table = entries(vec![
        with_mode(policy("audit", "    namespace: shop\n"), Mode::Audit),
        with_mode(policy("enforce", "    namespace: shop\n"), Mode::Enforce),
        with_mode(
            policy("enforce-too", "    namespace: bank\n"),
            Mode::Enforce,
        ),
    ]);
    let c = |policy, monitor_only| Choice {
        policy,
        monitor_only,
    };
    let own = (c(0, false), "selector".to_string());
    let other = |ch| Some((ch, "other".to_string()));
    // Stricter wins; no other keeps its own.
    assert_eq!(
        never_weaker(&table, own.clone(), other(c(1, false))).0,
        c(1, false)
    );
    assert_eq!(never_weaker(&table, own.clone(), None), own);
    // A weaker other (monitor-only enforce counts as monitor) does not.
    assert_eq!(never_weaker(&table, own.clone(), other(c(1, true))), own);
    // Equally strict: the workload's own choice and reason stay.
    let own = (c(1, false), "selector".to_string());
    assert_eq!(never_weaker(&table, own.clone(), other(c(2, false))), own);
    // A choice of no policy in the table is the weakest.
    assert_eq!(never_weaker(&table, own.clone(), other(c(9, false))), own);
}

#[test]
fn an_unknown_identity_fails_closed_to_the_strictest_policy_that_could_select_it() {
    let table = entries(vec![
        with_mode(policy("shop-audit", "    namespace: shop\n"), Mode::Audit),
        with_mode(
            policy(
                "web-enforce",
                "    podLabels:\n      matchLabels: {app: web}\n",
            ),
            Mode::Enforce,
        ),
    ]);
    // The CRI is down: namespace and pod are known from the bundle, labels are not.
    let mut w = web_pod();
    w.labels.clear();
    w.unknown = Some("the CRI does not know container abcdef".into());
    let (c, why) = choose_why(&table, &w, None).unwrap();
    assert_eq!(table[c.policy].policy.name, "web-enforce");
    assert!(why.starts_with("fail-closed"), "{why}");
    // Once the CRI answers, the precise policy.
    let mut known = web_pod();
    known.labels = [("app".to_string(), "db".to_string())].into();
    let (c, why) = choose_why(&table, &known, None).unwrap();
    assert_eq!(
        (table[c.policy].policy.name.as_str(), why.as_str()),
        ("shop-audit", "selector")
    );
}

#[test]
fn the_default_policy_covers_unknown_containers_no_policy_could_select() {
    let table = entries(vec![
        policy("bank", "    namespace: bank\n"),
        policy("fallback", "    cgroupPath: nowhere/*\n"),
    ]);
    let mut w = web_pod();
    w.unknown = Some("no runtime state".into());
    assert_eq!(choose_why(&table, &w, None), None);
    let (c, why) = choose_why(&table, &w, Some("fallback")).unwrap();
    assert_eq!(table[c.policy].policy.name, "fallback");
    assert!(why.starts_with("default policy"), "{why}");
    // A known identity is never bound by the default.
    assert_eq!(choose_why(&table, &web_pod(), Some("fallback")), None);
}

#[test]
fn a_nested_cgroup_finds_its_nearest_bound_ancestor() {
    let bound: HashMap<&str, u8> = [("kubepods/pod1", 1), ("kubepods/pod1/c1", 2)].into();
    assert_eq!(
        nearest_ancestor(&bound, "kubepods/pod1/c1/kata_x"),
        Some(&2)
    );
    assert_eq!(nearest_ancestor(&bound, "kubepods/pod1/c2"), Some(&1));
    assert_eq!(
        nearest_ancestor(&bound, "kubepods/pod1"),
        None,
        "itself is no ancestor"
    );
    assert_eq!(nearest_ancestor(&bound, "system.slice/x"), None);
}

#[test]
fn strictness_orders_the_modes() {
    assert!(strictness(Mode::Enforce, false) > strictness(Mode::Audit, false));
    assert!(strictness(Mode::Audit, false) > strictness(Mode::Monitor, false));
    assert_eq!(
        strictness(Mode::Enforce, true),
        0,
        "monitor-only counts as monitor"
    );
}

#[test]
fn a_sandbox_record_keeps_what_the_agent_answered() {
    let record = SandboxRecord {
        request: crate::workload::socket::SandboxRequest {
            runtime: "runsc".into(),
            id: "c1".into(),
            bundle: "/run/bundles/c1".into(),
            root: Some("/run/runsc".into()),
        },
        policy: Some("no-mkdir".into()),
        enforced: true,
        since_ms: 5,
    };
    let text = serde_json::to_string(&record).unwrap();
    assert_eq!(
        serde_json::from_str::<SandboxRecord>(&text).unwrap(),
        record
    );
    let entry = SandboxEntry {
        policy: record.policy.clone(),
        workload: web_pod(),
        enforced: true,
        root: record.request.root.clone(),
        since_ms: 5,
    };
    assert_eq!(entry.record(record.request.clone()), record);
}
