//! Export, and round trips through import.

use super::*;

fn policy(spec: &str) -> CompiledPolicy {
    compile_yaml(&format!(
        "apiVersion: sysfence.dev/v1\nkind: SyscallPolicy\nmetadata:\n  name: web\nspec:\n{spec}"
    ))
}

#[test]
fn export_writes_an_errno_profile_for_the_allowed_abis() {
    let p = policy("  mode: enforce\n  allow: [write, read, _llseek]\n  abi: {x32: deny}\n");
    let v = export(&p);
    assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(v["defaultErrnoRet"], 1);
    assert_eq!(
        v["architectures"],
        json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
    );
    assert_eq!(v["syscalls"].as_array().unwrap().len(), 1);
    assert_eq!(v["syscalls"][0]["action"], "SCMP_ACT_ALLOW");
    assert_eq!(
        v["syscalls"][0]["names"],
        json!(["_llseek", "read", "write"])
    );
    // The text form starts with defaultAction, and imports back.
    let text = export_string(&p);
    assert!(
        text.starts_with("{\n  \"defaultAction\": \"SCMP_ACT_ERRNO\""),
        "{text}"
    );
    let back = import(&text, &opts()).unwrap();
    assert_eq!(back.allowed, names(&["_llseek", "read", "write"]));
    assert_eq!(back.abis, BTreeSet::from([Abi::X86_64, Abi::Ia32]));
}

#[test]
fn export_only_lists_abis_with_something_allowed() {
    let p = policy("  allow: [read]\n  abi: {ia32: deny, x32: deny}\n");
    assert_eq!(export(&p)["architectures"], json!(["SCMP_ARCH_X86_64"]));
    let empty = policy("  allow: []\n");
    let v = export(&empty);
    assert_eq!(v["architectures"], json!(["SCMP_ARCH_X86_64"]));
    assert_eq!(v["syscalls"], json!([]));
}

#[test]
fn export_warns_where_a_profile_cannot_tell_abis_apart() {
    let p = policy("  allow: [read, getpid]\n  abi: {ia32: [getpid], x32: same}\n");
    let e = export_with(&p, &ExportOptions::default());
    assert_eq!(e.profile["syscalls"][0]["names"], json!(["getpid", "read"]));
    assert_eq!(e.warnings.len(), 1, "{:?}", e.warnings);
    assert!(e.warnings[0].contains("i386 `read`"), "{:?}", e.warnings);
}

#[test]
fn export_log_for_audit_mode() {
    let p = policy("  mode: audit\n  allow: [read]\n");
    let o = ExportOptions::for_mode(p.mode);
    assert_eq!(o.default_action, ExportDefault::Log);
    let e = export_with(&p, &o);
    assert_eq!(e.profile["defaultAction"], "SCMP_ACT_LOG");
    assert!(e.profile.get("defaultErrnoRet").is_none());
    assert_eq!(
        ExportOptions::for_mode(crate::policy::Mode::Enforce).default_action,
        ExportDefault::Errno
    );
    // The default export ignores the mode.
    assert_eq!(export(&p)["defaultAction"], "SCMP_ACT_ERRNO");
    // A log-only profile allows everything: it imports back as a denylist of nothing.
    let back = import(&e.json, &opts()).unwrap();
    assert!(has_warning(&back, &["denylist", "minus the 0"]));
    assert!(back.allowed.contains("mount") && back.allowed.contains("read"));
}

#[test]
fn handcrafted_round_trip_is_stable() {
    let i = import_ok(&json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X32"]}],
        "syscalls": [
            {"names": ["read", "write", "exit_group", "recv"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
        ],
    }));
    let exported = export_string(&compile_yaml(&i.policy_yaml));
    let again = import(&exported, &opts()).unwrap();
    assert_eq!(again.allowed, i.allowed);
    assert_eq!(again.abis, i.abis);
    assert_eq!(export_string(&compile_yaml(&again.policy_yaml)), exported);
}

/// umask(2) allowed for 0o022 ≤ mask ≤ 0o077: two conditions on argument 0, ANDed by
/// sysfence. In a seccomp profile runc and gVisor OR the conditions of such an entry
/// (umask(0o777) would pass `GE 0o022`), so the export leaves the rule out: the
/// profile refuses umask rather than allow more than the policy.
#[test]
fn a_rule_with_two_conditions_on_one_argument_is_left_out_of_the_profile() {
    let p = policy(
        "  mode: enforce\n  allow: [read]\n  rules:\n    - names: [umask]\n      args:\n        - {index: 0, op: GE, value: 0o22}\n        - {index: 0, op: LE, value: 0o77}\n    - names: [personality]\n      args: [{index: 0, op: EQ, value: 0}]\n",
    );
    let out = export_with(&p, &ExportOptions::default());
    let names: Vec<String> = out.profile["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["names"].as_array().unwrap().clone())
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect();
    assert!(!names.contains(&"umask".to_string()), "{}", out.json);
    assert!(names.contains(&"personality".to_string()), "{}", out.json);
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("`umask`: a rule with two conditions on argument 0 is left out")),
        "{:?}",
        out.warnings
    );
}

/// The other way: a profile entry with two conditions on one argument means OR (runc's
/// and gVisor's reading), so the import makes a rule of each.
#[test]
fn an_imported_entry_with_two_conditions_on_one_argument_allows_either() {
    let i = import_ok(&deny_profile(json!([
        {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [
            {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
            {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}
        ]}
    ])));
    let rules = &i.rules["personality"];
    assert_eq!(rules.len(), 2, "{}", i.policy_yaml);
    assert!(
        rules.iter().all(|r| r.conds.len() == 1),
        "{}",
        i.policy_yaml
    );
    let p = compile_yaml(&i.policy_yaml);
    let personality = crate::syscall_table::number(Abi::X86_64, "personality").unwrap();
    for (value, allowed) in [(0u64, true), (8, true), (4, false)] {
        assert_eq!(
            p.allows_call(Abi::X86_64, u64::from(personality), &[value, 0, 0, 0, 0, 0]),
            allowed,
            "personality({value})"
        );
    }
}
