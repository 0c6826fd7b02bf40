//! Import and export tests: pure, no root. Docker's default profile comes from Debian's
//! `golang-github-docker-docker-dev` package (moby's source), located or unpacked at run
//! time: see [`docker_default`].

use std::{collections::BTreeSet, path::Path};

use probe_common::Abi;
use serde_json::{Value, json};

use super::*;
use crate::policy::{CompiledPolicy, model, shipped_catalog};

// ---------------------------------------------------------------------------------------
// Helpers.

fn opts() -> ImportOptions {
    ImportOptions::default()
}

fn import_ok(profile: &Value) -> Imported {
    import(&profile.to_string(), &opts()).unwrap_or_else(|e| panic!("{e}"))
}

fn import_with(profile: &Value, options: &ImportOptions) -> Imported {
    import(&profile.to_string(), options).unwrap_or_else(|e| panic!("{e}"))
}

fn import_err(text: &str) -> ImportError {
    match import(text, &opts()) {
        Ok(i) => panic!("expected an error, got {:?}", i.allowed),
        Err(e) => e,
    }
}

/// Load a policy as `sysfence check` does; fail on any error.
fn compile_yaml(text: &str) -> CompiledPolicy {
    let path = Path::new("imported.yaml");
    let doc = match model::parse(path, text) {
        Ok(model::Document::Policy(p)) => p,
        Ok(model::Document::Set(_)) => panic!("expected a policy"),
        Err(d) => panic!("{d}\n{text}"),
    };
    match crate::policy::compile::compile(path, &doc, &shipped_catalog()) {
        Ok((p, _)) => p,
        Err(d) => panic!("{}\n{text}", crate::policy::Rejected(d)),
    }
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn has_warning(i: &Imported, needles: &[&str]) -> bool {
    i.warnings
        .iter()
        .any(|w| needles.iter().all(|n| w.contains(n)))
}

/// The names in the warning about unknown names, if any.
fn unknown_in_warnings(i: &Imported) -> BTreeSet<String> {
    let w: Vec<&String> = i
        .warnings
        .iter()
        .filter(|w| w.starts_with(UNKNOWN_PREFIX))
        .collect();
    assert!(w.len() <= 1, "{w:?}");
    w.first()
        .map(|w| {
            w[UNKNOWN_PREFIX.len() + 2..]
                .split(", ")
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn deny_profile(syscalls: Value) -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": syscalls,
    })
}

mod docker_default;
mod export;

// ---------------------------------------------------------------------------------------
// Handcrafted profiles.

#[test]
fn arch_map_form_takes_the_x86_64_entry() {
    let i = import_ok(&json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "archMap": [
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
        ],
        "syscalls": [{"names": ["read", "write", "_llseek"], "action": "SCMP_ACT_ALLOW"}],
    }));
    assert_eq!(i.abis, BTreeSet::from([Abi::X86_64, Abi::Ia32]));
    assert_eq!(i.allowed, names(&["_llseek", "read", "write"]));
    assert!(i.policy_yaml.contains("x32: deny"), "{}", i.policy_yaml);
    assert!(!i.policy_yaml.contains("ia32: deny"), "{}", i.policy_yaml);
    let p = compile_yaml(&i.policy_yaml);
    assert!(p.abi_names[&Abi::X32].is_empty());
    assert!(p.abi_names[&Abi::Ia32].contains("_llseek"));
}

#[test]
fn no_architectures_means_x86_64_only() {
    let i = import_ok(&json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["read", "mmap2"], "action": "SCMP_ACT_ALLOW"}],
    }));
    assert_eq!(i.abis, BTreeSet::from([Abi::X86_64]));
    // mmap2 is i386 only.
    assert_eq!(i.allowed, names(&["read"]));
    assert!(has_warning(&i, &["`mmap2`", "only in ABIs"]));
    assert!(has_warning(&i, &["lists no architectures"]));
    let p = compile_yaml(&i.policy_yaml);
    assert!(p.abi_names[&Abi::Ia32].is_empty() && p.abi_names[&Abi::X32].is_empty());
}

#[test]
fn legacy_name_field() {
    let i = import_ok(&deny_profile(json!([
        {"name": "read", "action": "SCMP_ACT_ALLOW", "args": []},
        {"name": "write", "action": "SCMP_ACT_ALLOW", "args": null},
        {"names": ["close"], "action": "SCMP_ACT_ALLOW"},
    ])));
    assert_eq!(i.allowed, names(&["close", "read", "write"]));
    compile_yaml(&i.policy_yaml);
    let e = import_err(
        &deny_profile(json!([{"name": "read", "names": ["write"], "action": "SCMP_ACT_ALLOW"}]))
            .to_string(),
    );
    assert!(matches!(e, ImportError::NameAndNames { .. }), "{e}");
    assert!(e.to_string().contains("syscalls[0]"), "{e}");
}

#[test]
fn includes_and_excludes() {
    let profile = deny_profile(json!([
        {"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {}, "excludes": {}},
        // caps
        {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["chroot"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_CHROOT", "CAP_CHOWN"]}},
        {"names": ["unshare"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["setns"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_KILL"]}},
        // kernel
        {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
        {"names": ["futex_waitv"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
        {"names": ["uselib"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "5.0"}},
        {"names": ["getpid"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": ""}},
        // arches: Docker matches the host's, amd64
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
        {"names": ["set_tls"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm", "arm64"]}},
        {"names": ["vm86"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["x86"]}},
        {"names": ["iopl"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}},
        {"names": ["ioperm"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["s390x"]}},
    ]));
    let i = import_ok(&profile);
    assert_eq!(
        i.allowed,
        names(&[
            "arch_prctl",
            "chroot",
            "getpid",
            "ioperm",
            "ptrace",
            "read",
            "unshare"
        ])
    );
    assert!(has_warning(&i, &["syscalls[11]", "x86", "does not apply"]));
    compile_yaml(&i.policy_yaml);

    // Other capabilities (written without the prefix), an older kernel.
    let i = import_with(
        &profile,
        &ImportOptions {
            capabilities: names(&["SYS_ADMIN", "cap_sys_chroot"]),
            kernel: KernelVersion::new(4, 4),
            ..opts()
        },
    );
    assert_eq!(
        i.allowed,
        names(&[
            "arch_prctl",
            "getpid",
            "ioperm",
            "mount",
            "read",
            "setns",
            "uselib"
        ])
    );
    assert!(i.policy_yaml.contains("kernel 4.4"), "{}", i.policy_yaml);
}

#[test]
fn invalid_min_kernel_is_an_error() {
    let e = import_err(
        &deny_profile(json!([
            {"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8.1"}}
        ]))
        .to_string(),
    );
    assert!(matches!(e, ImportError::InvalidMinKernel { .. }), "{e}");
    assert!(
        e.to_string().contains("syscalls[0].includes.minKernel"),
        "{e}"
    );
    assert_eq!(
        KernelVersion::parse("5.10"),
        Some(KernelVersion::new(5, 10))
    );
    assert_eq!(KernelVersion::parse("0.0"), None);
    assert!(KernelVersion::new(5, 10) > KernelVersion::new(5, 9));
}

#[test]
fn argument_conditions_warn_and_strict_args_leaves_them_out() {
    let profile = deny_profile(json!([
        {"names": ["read", "personality"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
         "comment": "no namespaces"},
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]},
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO"},
    ]));
    let i = import_ok(&profile);
    // personality has an unconditional rule: allowed whatever its arguments.
    assert_eq!(i.allowed, names(&["personality", "read"]));
    assert!(!has_warning(&i, &["`personality`"]));
    // clone and socket are allowed for some arguments: the same rules, exactly.
    assert_eq!(
        i.rules["clone"][0].conds,
        vec![crate::policy::args::Cond {
            index: 0,
            op: crate::policy::args::CondOp::MaskedEq,
            value: 0x7e02_0000,
            value_two: 0
        }]
    );
    assert_eq!(
        i.rules["clone"][0].comment.as_deref(),
        Some("no namespaces")
    );
    assert_eq!(
        i.rules["socket"][0].conds[0].op,
        crate::policy::args::CondOp::Ne
    );
    assert!(!has_warning(&i, &["sysfence allows all of them"]));
    // Allowed with args, denied by another applicable rule: the allowing rules win.
    assert!(has_warning(
        &i,
        &[
            "`socket`",
            "also denied by syscalls[4] (SCMP_ACT_ERRNO)",
            "follows the allowing rules"
        ]
    ));
    let compiled = compile_yaml(&i.policy_yaml);
    assert_eq!(compiled.rules.len(), 2);

    let strict = import_with(
        &profile,
        &ImportOptions {
            strict_args: true,
            ..opts()
        },
    );
    assert_eq!(strict.allowed, names(&["personality", "read"]));
    assert!(strict.rules.is_empty());
    assert!(has_warning(&strict, &["`clone`", "left out (strict_args)"]));
    assert!(has_warning(
        &strict,
        &["`socket`", "left out (strict_args)"]
    ));
    compile_yaml(&strict.policy_yaml);
}

#[test]
fn conflicting_unconditional_rules_deny() {
    let i = import_ok(&deny_profile(json!([
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["write"], "action": "SCMP_ACT_KILL"},
    ])));
    assert_eq!(i.allowed, names(&["read"]));
    assert!(has_warning(&i, &["`write`", "both allowed", "left out"]));
}

#[test]
fn log_allows_and_trace_trap_notify_deny_with_warnings() {
    let i = import_ok(&deny_profile(json!([
        {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["write"], "action": "SCMP_ACT_LOG"},
        {"names": ["mount"], "action": "SCMP_ACT_TRACE"},
        {"names": ["umount2"], "action": "SCMP_ACT_TRAP"},
        {"names": ["ioctl"], "action": "SCMP_ACT_NOTIFY"},
        {"names": ["bpf"], "action": "SCMP_ACT_KILL_PROCESS"},
    ])));
    assert_eq!(i.allowed, names(&["read", "write"]));
    assert!(has_warning(&i, &["SCMP_ACT_LOG", "`write`"]));
    assert!(has_warning(
        &i,
        &["syscalls[2]", "SCMP_ACT_TRACE", "`mount`", "denied"]
    ));
    assert!(has_warning(
        &i,
        &["syscalls[3]", "SCMP_ACT_TRAP", "`umount2`"]
    ));
    assert!(has_warning(
        &i,
        &["syscalls[4]", "SCMP_ACT_NOTIFY", "`ioctl`"]
    ));
    assert!(!has_warning(&i, &["`bpf`"]));
    let e = import_err(
        &deny_profile(json!([{"names": ["read"], "action": "SCMP_ACT_MAYBE"}])).to_string(),
    );
    assert!(matches!(e, ImportError::UnknownAction { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("syscalls[0]: unknown action `SCMP_ACT_MAYBE`"),
        "{e}"
    );
}

#[test]
fn enosys_denials_warn_that_sysfence_cannot_return_errno() {
    let i = import_ok(&deny_profile(json!([
        {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        {"names": ["mount"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
    ])));
    assert!(has_warning(
        &i,
        &[
            "`clone3`",
            "ENOSYS (38)",
            "imported as `errno`",
            "clone3 is allowed when its flags ask for no namespace"
        ]
    ));
    assert!(!has_warning(&i, &["`mount`"]));
    assert_eq!(
        i.errnos,
        std::collections::BTreeMap::from([("clone3".to_string(), 38)])
    );
    let compiled = compile_yaml(&i.policy_yaml);
    assert_eq!(compiled.errnos.get("clone3"), Some(&38));
    assert!(
        i.policy_yaml.contains("clone3: ENOSYS"),
        "{}",
        i.policy_yaml
    );
}

#[test]
fn denylist_profile_becomes_the_complement() {
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": ["ptrace", "bpf", "frobnicate"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 3, "value": 0, "op": "SCMP_CMP_EQ"}]},
        ],
    });
    let i = import_ok(&profile);
    let known = crate::syscall_table::all_names();
    let universe: BTreeSet<String> = known
        .iter()
        .filter(|n| crate::syscall_table::number(Abi::X86_64, n).is_some())
        .map(|n| n.to_string())
        .collect();
    let expected: BTreeSet<String> = universe
        .iter()
        .filter(|n| !["ptrace", "bpf"].contains(&n.as_str()))
        .cloned()
        .collect();
    assert_eq!(i.allowed, expected);
    assert!(i.allowed.contains("kill") && i.allowed.contains("mount"));
    assert!(
        !i.allowed.contains("socketcall"),
        "i386 only, and i386 is not listed"
    );
    assert!(has_warning(&i, &["denylist", "minus the 2"]));
    assert!(has_warning(
        &i,
        &["`kill`", "denied by syscalls[1]", "arg1 == 0x9"]
    ));
    compile_yaml(&i.policy_yaml);

    let strict = import_with(
        &profile,
        &ImportOptions {
            strict_args: true,
            ..opts()
        },
    );
    assert!(!strict.allowed.contains("kill"));
    assert!(strict.allowed.contains("mount"));
}

#[test]
fn unknown_names_are_skipped_and_named() {
    let i = import_ok(&deny_profile(json!([
        {"names": ["read", "recv", "send", "frobnicate"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["also_unknown"], "action": "SCMP_ACT_ERRNO"},
    ])));
    assert_eq!(i.allowed, names(&["read"]));
    let unknown = names(&["frobnicate", "recv", "send"]);
    assert_eq!(i.skipped_unknown, unknown);
    assert_eq!(unknown_in_warnings(&i), unknown);
    compile_yaml(&i.policy_yaml);
}

#[test]
fn invalid_json_reports_the_position() {
    let e = import_err("{\n  \"defaultAction\": \"SCMP_ACT_ERRNO\",\n  \"syscalls\": [,]\n}");
    match &e {
        ImportError::Syntax { line, column, .. } => assert_eq!((*line, *column), (3, 16)),
        other => panic!("{other}"),
    }
    assert!(
        e.to_string()
            .starts_with("invalid JSON at line 3, column 16"),
        "{e}"
    );
    assert!(e.to_string().contains("help:"), "{e}");

    let e = import_err(
        "{\"defaultAction\": \"SCMP_ACT_ERRNO\",\n \"syscalls\": [{\"names\": \"read\"}]}",
    );
    match &e {
        ImportError::Shape {
            field,
            line,
            message,
            ..
        } => {
            assert_eq!(field.as_deref(), Some("syscalls[0].names"));
            assert_eq!(*line, 2);
            assert!(message.contains("invalid type"), "{message}");
        }
        other => panic!("{other}"),
    }
    let text = e.to_string();
    assert!(text.contains("`syscalls[0].names`: invalid type"), "{text}");
    assert!(text.contains("line 2"), "{text}");
    // Deeper, and a missing required field.
    let field = |profile: Value| match import_err(&profile.to_string()) {
        ImportError::Shape { field, .. } => field,
        other => panic!("{other}"),
    };
    assert_eq!(
        field(deny_profile(json!([
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["read", 7], "action": "SCMP_ACT_ALLOW"},
        ]))),
        Some("syscalls[1].names[1]".to_string())
    );
    assert_eq!(
        field(deny_profile(json!([
            {"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": 4.8}},
        ]))),
        Some("syscalls[0].includes.minKernel".to_string())
    );
    assert_eq!(
        field(deny_profile(json!([
            {"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1}]},
        ]))),
        Some("syscalls[0].args[0].op".to_string())
    );
    assert_eq!(
        field(json!({"defaultAction": "SCMP_ACT_ERRNO", "archMap": [{"architecture": 1}]})),
        Some("archMap[0].architecture".to_string())
    );
    assert_eq!(
        field(json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": -1})),
        Some("defaultErrnoRet".to_string())
    );
    assert!(matches!(import_err("[]"), ImportError::Shape { .. }));
    // A byte-order mark is tolerated.
    let bom = format!("\u{feff}{}", deny_profile(json!([])));
    assert!(import(&bom, &opts()).unwrap().allowed.is_empty());
    assert!(matches!(
        import_err("{\"syscalls\": []}"),
        ImportError::MissingDefaultAction
    ));
    assert!(matches!(
        import_err(&deny_profile(json!([{"names": ["read"]}])).to_string()),
        ImportError::MissingAction { .. }
    ));
}

#[test]
fn profiles_for_other_architectures_are_errors() {
    let e = import_err(
        &json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}],
        })
        .to_string(),
    );
    assert!(matches!(e, ImportError::NoAmd64 { .. }), "{e}");
    assert!(
        e.to_string().contains("SCMP_ARCH_AARCH64, SCMP_ARCH_ARM"),
        "{e}"
    );
    let e = import_err(
        &json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "archMap": [{"architecture": "SCMP_ARCH_S390X", "subArchitectures": ["SCMP_ARCH_S390"]}],
        })
        .to_string(),
    );
    assert!(matches!(e, ImportError::NoAmd64 { .. }), "{e}");
    let e = import_err(
        &json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64"],
            "archMap": [{"architecture": "SCMP_ARCH_X86_64"}],
        })
        .to_string(),
    );
    assert!(matches!(e, ImportError::ArchitecturesAndArchMap), "{e}");
}

#[test]
fn invalid_policy_name_is_an_error() {
    let e = import(
        &deny_profile(json!([])).to_string(),
        &ImportOptions {
            name: "Web_App".to_string(),
            ..opts()
        },
    )
    .unwrap_err();
    assert!(matches!(e, ImportError::InvalidName { .. }), "{e}");
}

#[test]
fn generated_policy_shape() {
    let i = import_with(
        &json!({
            "defaultAction": "SCMP_ACT_KILL_PROCESS",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"],
            "syscalls": [{"names": ["write", "read", "ptrace"], "action": "SCMP_ACT_ALLOW"}],
        }),
        &ImportOptions {
            name: "web".to_string(),
            ..opts()
        },
    );
    let body: serde_yaml::Value = serde_yaml::from_str(&i.policy_yaml).unwrap();
    assert_eq!(body["apiVersion"], "sysfence.dev/v1");
    assert_eq!(body["kind"], "SyscallPolicy");
    assert_eq!(body["metadata"]["name"], "web");
    assert_eq!(body["spec"]["mode"], "audit");
    let allow: Vec<&str> = body["spec"]["allow"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(allow, ["ptrace", "read", "write"]);
    assert_eq!(body["spec"]["abi"]["ia32"], "deny");
    assert!(body["spec"]["abi"].get("x32").is_none());
    // The loader's own warnings come along, and the header repeats every warning.
    assert!(has_warning(&i, &["sysfence check:", "ptrace"]));
    for w in &i.warnings {
        assert!(i.policy_yaml.contains(w.as_str()), "{w}");
    }
    let p = compile_yaml(&i.policy_yaml);
    assert_eq!(p.name, "web");
}
