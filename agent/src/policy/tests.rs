//! Parsing and compilation tests: pure, no root.

use std::path::{Path, PathBuf};

use probe_common::{Abi, action, mode};

use super::{compile::compile, model, *};
use crate::syscall_table::index_of;

fn policy(text: &str) -> Result<(CompiledPolicy, Vec<Diagnostic>), Vec<Diagnostic>> {
    let path = Path::new("p.yaml");
    let doc = match model::parse(path, text) {
        Ok(model::Document::Policy(p)) => p,
        Ok(model::Document::Set(_)) => panic!("expected a policy"),
        Err(d) => return Err(vec![d]),
    };
    compile(path, &doc, &shipped_catalog())
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match policy(text) {
        Ok(_) => panic!("expected errors"),
        Err(d) => d.into_iter().filter(Diagnostic::is_error).collect(),
    }
}

const HEAD: &str = "apiVersion: sysfence.dev/v1\nkind: SyscallPolicy\nmetadata:\n  name: t\n";

#[test]
fn minimal_policy_compiles_to_every_abi() {
    let (p, warnings) = policy(&format!(
        "{HEAD}spec:\n  selector:\n    cgroupPath: /a/*\n  mode: enforce\n  allow: [getppid, mount]\n"
    ))
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(p.mode, Mode::Enforce);
    assert_eq!(p.cgroup_path.as_deref(), Some("a/*"));
    for abi in [Abi::X86_64, Abi::Ia32, Abi::X32] {
        assert!(
            p.allowed.contains(&index_of(abi, "getppid").unwrap()),
            "{abi:?}"
        );
    }
    // x86_64 21 is access, which was not allowed; i386 21 is mount, which was.
    assert!(!p.allowed.contains(&21));
    assert!(p.allowed.contains(&(512 + 21)));
}

#[test]
fn include_deny_and_defaults() {
    let (p, _) = policy(&format!(
        "{HEAD}spec:\n  selector: {{cgroupPath: x}}\n  include: [runtime-default]\n  deny: [mkdir, socketcall]\n"
    ))
    .unwrap();
    assert_eq!(p.mode, Mode::Audit, "audit is the default mode");
    assert_eq!(p.action, Action::Kill);
    assert!(p.allowed_names.contains("openat"));
    assert!(!p.allowed_names.contains("mkdir"));
    assert!(!p.allowed.contains(&index_of(Abi::X86_64, "mkdir").unwrap()));
    assert!(
        !p.allowed
            .contains(&index_of(Abi::Ia32, "socketcall").unwrap())
    );
    // The shipped baseline never allows io_uring or the agent-blinding calls.
    for n in [
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "bpf",
        "ptrace",
        "perf_event_open",
    ] {
        assert!(!p.allowed_names.contains(n), "{n}");
    }
}

#[test]
fn unknown_syscall_names_line_column_and_suggestion() {
    let e = errors(&format!(
        "{HEAD}spec:\n  allow:\n    - getppid\n    - getpidd\n"
    ));
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].line, e[0].column), (8, 7));
    assert!(
        e[0].message.contains("unknown syscall `getpidd`"),
        "{}",
        e[0]
    );
    assert!(
        e[0].help
            .as_deref()
            .unwrap()
            .contains("did you mean `getpid`"),
        "{:?}",
        e[0].help
    );
    assert!(
        e[0].to_string()
            .starts_with("p.yaml:8:7: error: unknown syscall")
    );
}

#[test]
fn bad_mode_and_unknown_field_and_unknown_set() {
    let e = errors(&format!("{HEAD}spec:\n  mode: enforcing\n"));
    assert_eq!(e[0].line, 6);
    assert!(e[0].message.contains("unknown mode `enforcing`"));
    assert!(
        e[0].help
            .as_deref()
            .unwrap()
            .contains("monitor, audit, enforce")
    );

    let e = errors(&format!("{HEAD}spec:\n  alow: [read]\n"));
    assert!(e[0].message.contains("unknown field `alow`"), "{}", e[0]);
    assert_eq!(e[0].line, 6);

    let e = errors(&format!("{HEAD}spec:\n  include: [runtime-defualt]\n"));
    assert!(e[0].message.contains("unknown set `runtime-defualt`"));
    assert!(e[0].help.as_deref().unwrap().contains("runtime-default"));
}

#[test]
fn syntax_errors_have_positions() {
    let e = errors("apiVersion: sysfence.dev/v1\nkind: SyscallPolicy\nspec: [unclosed\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].line >= 3, "{}", e[0]);
    assert!(e[0].message.starts_with("YAML syntax"), "{}", e[0]);

    let e = errors(&format!("{HEAD}spec: {{}}\nspec: {{}}\n"));
    assert!(e[0].message.contains("duplicate key `spec`"), "{}", e[0]);

    let e =
        errors("apiVersion: sysfence.dev/v2\nkind: SyscallPolicy\nmetadata: {name: a}\nspec: {}\n");
    assert!(e[0].message.contains("unsupported apiVersion"), "{}", e[0]);
    let e = errors("apiVersion: sysfence.dev/v1\nkind: Policy\n");
    assert!(e[0].message.contains("unknown kind `Policy`"), "{}", e[0]);
    assert_eq!(e[0].line, 2);
}

#[test]
fn warnings_for_overlap_and_sensitive_calls() {
    let (_, w) = policy(&format!(
        "{HEAD}spec:\n  selector: {{cgroupPath: x}}\n  allow: [read, bpf]\n  deny: [read]\n  fallback: allow\n"
    ))
    .unwrap();
    let text: Vec<String> = w.iter().map(|d| d.to_string()).collect();
    assert!(
        text.iter().any(|t| t.contains("both allow and deny")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.contains("allowing `bpf`")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.contains("`fallback` has no effect")),
        "{text:?}"
    );
}

#[test]
fn enforcement_degrades_deny_without_lsm_and_says_so() {
    let (p, _) = policy(&format!(
        "{HEAD}spec:\n  selector: {{cgroupPath: x}}\n  mode: enforce\n  action: deny\n  fallback: allow\n  allow: [read]\n"
    ))
    .unwrap();
    let e = p.enforcement(Err("`bpf` missing from the lsm list"));
    assert_eq!(e.slot.mode, mode::ENFORCE);
    assert_eq!(e.slot.action, action::ALLOW);
    let note = e.degraded.unwrap();
    assert!(
        note.contains("needs BPF LSM: `bpf` missing from the lsm list"),
        "{note}"
    );
    assert!(note.contains("falling back to `allow`"), "{note}");
    assert!(p.wants_deny());
    let with_lsm = p.enforcement(Ok(()));
    assert_eq!(with_lsm.slot.action, action::DENY_OR_ALLOW);
    assert!(with_lsm.degraded.is_none());
    assert!(e.slot.allows(index_of(Abi::X86_64, "read").unwrap()));
    assert!(!e.slot.allows(index_of(Abi::X86_64, "write").unwrap()));

    let (k, _) = policy(&format!(
        "{HEAD}spec:\n  mode: enforce\n  action: kill\n  allow: [read]\n"
    ))
    .unwrap();
    let e = k.enforcement(Err("no LSM"));
    assert!(!k.wants_deny());
    assert_eq!(e.slot.action, action::KILL);
    assert!(e.degraded.is_none());
}

#[test]
fn shipped_sets_are_valid() {
    let catalog = shipped_catalog();
    let diags = catalog.validate();
    assert!(diags.is_empty(), "{diags:#?}");
    assert!(catalog.get("runtime-default").is_some());
}

#[test]
fn load_files_reports_duplicates_and_finds_sets_beside_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("mine.yaml");
    std::fs::write(&set, "apiVersion: sysfence.dev/v1\nkind: SyscallSet\nmetadata: {name: mine}\nspec: {syscalls: [getppid]}\n").unwrap();
    let a = dir.path().join("a.yaml");
    std::fs::write(
        &a,
        format!("{HEAD}spec:\n  selector: {{cgroupPath: x}}\n  include: [mine]\n"),
    )
    .unwrap();
    let loaded = load_files(std::slice::from_ref(&a));
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    assert!(loaded.policies[0].allowed_names.contains("getppid"));

    let b = dir.path().join("b.yaml");
    std::fs::write(&b, format!("{HEAD}spec: {{}}\n")).unwrap();
    let loaded = load_files(&[a, b]);
    assert!(
        loaded
            .diagnostics
            .iter()
            .any(|d| d.message.contains("already used"))
    );

    let missing = load_files(&[PathBuf::from("/nonexistent/p.yaml")]);
    assert!(missing.has_errors());
}

#[test]
fn abi_choices_same_deny_and_list() {
    let (p, _) = policy(&format!(
        "{HEAD}spec:\n  allow: [getpid, read, ioctl]\n  abi:\n    ia32: deny\n    x32: [read]\n"
    ))
    .unwrap();
    assert!(
        p.allowed
            .contains(&index_of(Abi::X86_64, "getpid").unwrap())
    );
    assert!(
        p.allowed.iter().all(|&i| !(512..1024).contains(&i)),
        "no i386 index: {:?}",
        p.allowed
    );
    assert!(
        p.allowed.contains(&index_of(Abi::X32, "read").unwrap()),
        "x32 read"
    );
    assert!(
        !p.allowed.contains(&(1024 + 514)),
        "x32 ioctl not listed for x32"
    );
    assert_eq!(p.abi_names[&Abi::X32].len(), 1);

    let (same, _) = policy(&format!(
        "{HEAD}spec:\n  allow: [ioctl, execve]\n  abi: {{ia32: same}}\n"
    ))
    .unwrap();
    // x32 has its own numbers for ioctl and execve; x86_64's 16 and 59 are not x32's.
    assert!(same.allowed.contains(&(1024 + 514)) && same.allowed.contains(&(1024 + 520)));
    assert!(!same.allowed.contains(&(1024 + 16)) && !same.allowed.contains(&(1024 + 59)));
    assert!(same.allowed.contains(&16) && same.allowed.contains(&59));
    assert!(
        same.allowed.contains(&(512 + 54)) && same.allowed.contains(&(512 + 11)),
        "i386 ioctl 54, execve 11"
    );

    let e = errors(&format!("{HEAD}spec:\n  abi: {{ia32: maybe}}\n"));
    assert!(
        e[0].message.contains("unknown ABI choice `maybe`"),
        "{}",
        e[0]
    );
    let e = errors(&format!("{HEAD}spec:\n  abi: {{ia64: deny}}\n"));
    assert!(e[0].message.contains("unknown field `ia64`"), "{}", e[0]);
}

#[test]
fn names_of_one_abi_are_handled_explicitly() {
    let (p, w) = policy(&format!(
        "{HEAD}spec:\n  allow: [socketcall, read]\n  abi: {{ia32: deny}}\n"
    ))
    .unwrap();
    assert!(
        !p.allowed
            .contains(&index_of(Abi::Ia32, "socketcall").unwrap())
    );
    assert!(
        w.iter()
            .any(|d| d.message.contains("`socketcall` exists only for i386")),
        "{w:?}"
    );

    let (_, w) = policy(&format!(
        "{HEAD}spec:\n  allow: [read]\n  abi:\n    ia32: [read, newfstatat]\n"
    ))
    .unwrap();
    assert!(
        w.iter()
            .any(|d| d.message.contains("`newfstatat` has no i386 number")),
        "{w:?}"
    );
}

#[test]
fn multiplexers_and_io_uring_draw_warnings() {
    let (p, w) = policy(&format!(
        "{HEAD}spec:\n  include: [runtime-default, ia32-multiplexers]\n"
    ))
    .unwrap();
    assert!(
        p.allowed
            .contains(&index_of(Abi::Ia32, "socketcall").unwrap())
    );
    let text: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("allowing `socketcall` (i386) widens the policy")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("allowing `ipc` (i386) widens the policy")),
        "{text:?}"
    );

    let (_, w) = policy(&format!(
        "{HEAD}spec:\n  include: [runtime-default]\n  allow: [io_uring_setup, io_uring_enter]\n"
    ))
    .unwrap();
    let ring = w
        .iter()
        .find(|d| d.message.contains("io_uring"))
        .expect("io_uring warning");
    assert!(ring.message.contains("never pass sys_enter"), "{ring}");
    assert_eq!(ring.line, 7, "points at the allow entry: {ring}");

    // The shipped baseline draws neither; only the namespace warning below.
    let (_, w) = policy(&format!("{HEAD}spec:\n  include: [runtime-default]\n")).unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].message.starts_with("`unshare` is not allowed"),
        "{w:?}"
    );
}

#[test]
fn denying_unshare_while_clone_is_allowed_draws_a_warning() {
    // runtime-default leaves out unshare and allows clone and clone3.
    let (_, w) = policy(&format!(
        "{HEAD}spec:\n  include: [runtime-default]\n  deny: [unshare]\n"
    ))
    .unwrap();
    let ns = w
        .iter()
        .find(|d| d.message.contains("`unshare` is not allowed"))
        .expect("namespace warning");
    assert!(
        ns.message.contains("but `clone` and `clone3` are")
            && ns.message.contains("does not stop new namespaces"),
        "{ns}"
    );
    assert_eq!(ns.line, 7, "points at the deny entry: {ns}");
    // Only clone3 left: named alone.
    let (_, w) = policy(&format!(
        "{HEAD}spec:\n  include: [runtime-default]\n  deny: [clone]\n"
    ))
    .unwrap();
    assert!(
        w.iter()
            .any(|d| d.message.contains("but `clone3` is: they create")),
        "{w:?}"
    );
    // unshare allowed, or neither clone: nothing to say.
    for spec in [
        "  include: [runtime-default]\n  allow: [unshare]\n",
        "  include: [runtime-default]\n  deny: [clone, clone3]\n",
    ] {
        let (_, w) = policy(&format!("{HEAD}spec:\n{spec}")).unwrap();
        assert!(
            !w.iter()
                .any(|d| d.message.contains("`unshare` is not allowed")),
            "{spec}: {w:?}"
        );
    }
}

#[test]
fn selector_errors_have_positions() {
    let e = errors(&format!(
        "{HEAD}spec:\n  selector:\n    podLabels:\n      matchExpressions:\n        - {{key: app, operator: Among, values: [a]}}\n"
    ));
    assert!(
        e[0].message.contains("unknown operator `Among`"),
        "{}",
        e[0]
    );
    assert_eq!((e[0].line, e[0].column), (9, 32), "{}", e[0]);
    assert!(
        e[0].help
            .as_deref()
            .unwrap()
            .contains("In, NotIn, Exists, DoesNotExist")
    );

    let e = errors(&format!(
        "{HEAD}spec:\n  selector:\n    podLabels:\n      matchExpressions:\n        - {{key: app, operator: In}}\n"
    ));
    assert!(
        e[0].message
            .contains("`In` needs a non-empty `values` list"),
        "{}",
        e[0]
    );
    assert_eq!(e[0].line, 9);

    let e = errors(&format!(
        "{HEAD}spec:\n  selector:\n    podLabels:\n      matchExpressions:\n        - {{key: app, operator: Exists, values: [x]}}\n"
    ));
    assert!(
        e[0].message.contains("`Exists` takes no `values`"),
        "{}",
        e[0]
    );

    let e = errors(&format!(
        "{HEAD}spec:\n  selector:\n    podLabels: {{matchLabels: {{\"bad key!\": web}}}}\n"
    ));
    assert!(
        e[0].message.contains("invalid label key `bad key!`"),
        "{}",
        e[0]
    );
    assert_eq!(e[0].line, 7);

    let e = errors(&format!(
        "{HEAD}spec:\n  selector:\n    namespace: Shop_1\n"
    ));
    assert!(
        e[0].message.contains("invalid namespace `Shop_1`"),
        "{}",
        e[0]
    );
    assert_eq!((e[0].line, e[0].column), (7, 16));

    let e = errors(&format!("{HEAD}spec:\n  selector:\n    pod: web\n"));
    assert!(e[0].message.contains("unknown field `pod`"), "{}", e[0]);
    assert!(
        e[0].help.as_deref().unwrap().contains("podLabels"),
        "{:?}",
        e[0].help
    );

    let e = errors(&format!(
        "{HEAD}spec:\n  selector:\n    image: \"nginx:[\"\n"
    ));
    assert!(e[0].message.contains("invalid image glob"), "{}", e[0]);

    let (p, w) = policy(&format!(
        "{HEAD}spec:\n  selector:\n    runtime: gvisor\n    namespace: shop\n"
    ))
    .unwrap();
    assert_eq!(p.selector.runtime.as_deref(), Some("gvisor"));
    assert!(
        w.iter().any(|d| d
            .message
            .contains("matches a CRI runtime handler of that name only")),
        "{w:?}"
    );
    let (_, w) = policy(&format!(
        "{HEAD}spec:\n  selector:\n    podLabels:\n      matchLabels: {{app: web}}\n      matchExpressions: [{{key: app, operator: NotIn, values: [web]}}]\n"
    ))
    .unwrap();
    assert!(
        w.iter()
            .any(|d| d.message.contains("contradict each other")),
        "{w:?}"
    );
}

#[test]
fn load_files_reports_selector_conflicts_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, selector: &str| {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: sysfence.dev/v1\nkind: SyscallPolicy\nmetadata:\n  name: {name}\nspec:\n  selector:\n{selector}"
            ),
        )
        .unwrap();
        path
    };
    let a = write("a", "    namespace: shop\n    container: web\n");
    let b = write("b", "    podLabels: {matchLabels: {app: web, tier: fe}}\n");
    let c = write("c", "    namespace: bank\n    container: web\n");
    let loaded = load_files(&[a.clone(), b.clone(), c.clone()]);
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].starts_with(&format!(
            "{}:7:16: error: selector conflict: policies `a` and `b`",
            b.display()
        )),
        "{errors:#?}"
    );
    assert!(errors[1].contains("policies `b` and `c`"), "{errors:#?}");
    // a and c differ in namespace: no conflict between them.
    assert!(!errors.iter().any(|e| e.contains("`a` and `c`")));
    // The same selectors with one more field are not a conflict.
    let d = write(
        "d",
        "    namespace: shop\n    container: web\n    runtime: runc\n",
    );
    let loaded = load_files(&[a, d]);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
}

#[test]
fn oversized_and_deeply_nested_files_are_refused_before_parsing() {
    let path = Path::new("big.yaml");
    let big = format!("{HEAD}spec:\n  allow: [{}]\n", "read, ".repeat(200_000));
    let e = model::parse(path, &big).unwrap_err();
    assert!(e.to_string().contains("at most 1048576"), "{e}");
    assert!(e.to_string().starts_with("big.yaml:1:1"), "{e}");
    let deep = format!(
        "{HEAD}spec:\n  allow: {}read{}\n",
        "[".repeat(100),
        "]".repeat(100)
    );
    let e = model::parse(path, &deep).unwrap_err();
    assert!(e.to_string().contains("nested deeper than 64"), "{e}");
    assert!(e.to_string().starts_with("big.yaml:6:"), "{e}");
    let spread = format!(
        "{HEAD}spec:\n  allow:\n{}",
        (0..80)
            .map(|i| format!("{}[\n", " ".repeat(4 + i)))
            .collect::<String>()
    );
    assert!(
        model::parse(path, &spread)
            .unwrap_err()
            .to_string()
            .contains("nested deeper")
    );
    // A quote in a comment or plain text does not hide brackets after it.
    let ok = format!("{HEAD}spec:\n  # it's fine\n  allow: [read]\n");
    assert!(model::parse(path, &ok).is_ok());
}

#[test]
fn include_chains_are_bounded_and_diamonds_expand_once() {
    let dir = tempfile::tempdir().unwrap();
    let set = |name: &str, includes: &[String]| {
        format!(
            "apiVersion: sysfence.dev/v1\nkind: SyscallSet\nmetadata:\n  name: {name}\nspec:\n  include: [{}]\n  syscalls: [getpid]\n",
            includes.join(", ")
        )
    };
    // A diamond 24 levels deep: each level includes the next one twice (through two
    // sets). Expanded naively that is 2^24 expansions; once per set it is instant.
    let mut files = Vec::new();
    for level in 0..24 {
        for side in ["a", "b"] {
            let next: Vec<String> = if level + 1 < 24 {
                vec![format!("l{}a", level + 1), format!("l{}b", level + 1)]
            } else {
                Vec::new()
            };
            let f = dir.path().join(format!("l{level}{side}.yaml"));
            std::fs::write(&f, set(&format!("l{level}{side}"), &next)).unwrap();
            files.push(f);
        }
    }
    let started = std::time::Instant::now();
    let loaded = load_files(&files);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let too_deep = loaded
        .diagnostics
        .iter()
        .find(|d| d.message.contains("nested deeper than 16 sets"))
        .expect("a chain deeper than 16 sets is refused");
    assert!(too_deep.is_error());
}
