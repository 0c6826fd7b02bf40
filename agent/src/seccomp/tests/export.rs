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
