//! Parsing and compilation tests: pure, no root.

use std::path::{Path, PathBuf};

use probe_common::{Abi, action, mode};

use super::{args, compile::compile, model, *};
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
fn a_name_allowed_on_its_arguments_alone_is_not_called_useless() {
    // What `sysfence record` writes for a workload that cloned: clone in `allow`, its
    // flags judged by `namespaces: deny`, and no 32-bit ABI.
    let (p, w) = policy(&format!(
        "{HEAD}spec:\n  allow: [clone, read]\n  namespaces: deny\n  abi: {{ia32: deny, x32: deny}}\n"
    ))
    .unwrap();
    assert!(p.rules.contains_key("clone"), "{:?}", p.rules);
    assert!(
        !w.iter().any(|d| d.message.contains("`clone` exists only")),
        "{w:?}"
    );
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

    // The shipped baseline draws none.
    let (_, w) = policy(&format!("{HEAD}spec:\n  include: [runtime-default]\n")).unwrap();
    assert!(w.is_empty(), "{w:?}");
}

#[test]
fn denying_unshare_while_clone_is_allowed_draws_a_warning() {
    // With namespaces allowed and clone allowed outright, both clone and clone3 can
    // make what unshare may not.
    let (_, w) = policy(&format!(
        "{HEAD}spec:\n  include: [runtime-default]\n  namespaces: allow\n  allow: [clone]\n  deny: [unshare]\n"
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
    assert_eq!(ns.line, 9, "points at the deny entry: {ns}");
    // clone under runtime-default's rule (no CLONE_NEW* flag): only clone3 is named,
    // and the help says how to judge it.
    let (_, w) = policy(&format!(
        "{HEAD}spec:\n  include: [runtime-default]\n  namespaces: allow\n"
    ))
    .unwrap();
    let ns = w
        .iter()
        .find(|d| d.message.contains("but `clone3` is: they create"))
        .unwrap_or_else(|| panic!("{w:?}"));
    assert!(ns.help.as_deref().unwrap_or("").contains("ENOSYS"), "{ns}");
    // unshare allowed, neither clone, or namespaces denied: nothing to say.
    for spec in [
        "  include: [runtime-default]\n  namespaces: allow\n  allow: [unshare]\n",
        "  include: [runtime-default]\n  namespaces: allow\n  deny: [clone, clone3]\n",
        "  include: [runtime-default]\n",
        "  allow: [clone, clone3, read]\n  namespaces: deny\n",
    ] {
        let (_, w) = policy(&format!("{HEAD}spec:\n{spec}")).unwrap();
        assert!(
            !w.iter()
                .any(|d| d.message.contains("`unshare` is not allowed")),
            "{spec}: {w:?}"
        );
    }
}

fn slot_of(p: &CompiledPolicy) -> probe_common::PolicySlot {
    p.enforcement(Ok(())).slot
}

#[test]
fn argument_rules_compile_for_every_abi_into_the_slot() {
    let (p, w) = policy(&format!(
        "{HEAD}spec:\n  mode: enforce\n  allow: [read]\n  rules:\n    - names: [socket, personality]\n      args:\n        - {{index: 0, op: NE, value: 40}}\n        - {{index: 1, op: SCMP_CMP_MASKED_EQ, value: 0xff, valueTwo: 0x1}}\n    - names: [personality]\n      args: [{{index: 0, op: eq, value: 0xffffffff}}]\n"
    ))
    .unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(p.rules["socket"].len(), 1);
    assert_eq!(p.rules["personality"].len(), 2);
    assert!(!p.allowed_names.contains("socket"));
    let slot = slot_of(&p);
    let socket: Vec<u32> = Abi::ALL
        .into_iter()
        .filter_map(|abi| index_of(abi, "socket"))
        .collect();
    assert_eq!(socket.len(), 3, "socket exists in every ABI");
    for &i in &socket {
        assert!(slot.is_conditional(i) && !slot.allows(i), "{i}");
    }
    // One probe rule per rule, serving all three ABIs.
    let used: Vec<&probe_common::ArgRule> = slot
        .rules
        .iter()
        .filter(|r| r.syscalls != [probe_common::NO_SYSCALL; 3])
        .collect();
    assert_eq!(used.len(), 3, "{used:?}");
    let socket_rule = used
        .iter()
        .find(|r| r.syscalls.contains(&socket[0]))
        .unwrap();
    assert_eq!(socket_rule.count, 2);
    // socket's family and type are ints to the kernel: 32-bit compares.
    assert_eq!(socket_rule.conds[0].bits, 32);
    assert_eq!(socket_rule.conds[0].op, probe_common::arg_op::NE);
    assert_eq!(socket_rule.conds[1].op, probe_common::arg_op::MASKED_EQ);
    assert_eq!(
        (socket_rule.conds[1].value, socket_rule.conds[1].value_two),
        (0xff, 1)
    );
    // The decision, on the compiled slot.
    let d = |index: u32, args: [u64; 6]| probe_common::decide(&slot, Some(index), &Args(args));
    assert_eq!(
        d(socket[0], [2, 1, 0, 0, 0, 0]),
        probe_common::Decision::Allow
    );
    assert_ne!(
        d(socket[0], [40, 1, 0, 0, 0, 0]),
        probe_common::Decision::Allow
    );
    assert_ne!(
        d(socket[0], [2, 2, 0, 0, 0, 0]),
        probe_common::Decision::Allow
    );
    let personality = index_of(Abi::Ia32, "personality").unwrap();
    assert_eq!(
        d(personality, [0xffff_ffff, 0, 0, 0, 0, 0]),
        probe_common::Decision::Allow
    );
}

struct Args([u64; 6]);
impl probe_common::CallArgs for Args {
    fn registers(&self) -> [u64; 6] {
        self.0
    }
    fn clone3_flags(&self) -> Option<u64> {
        None
    }
}

#[test]
fn bad_argument_rules_are_errors_at_their_position() {
    let cases = [
        ("[{index: 6, op: EQ, value: 1}]", "argument index `6`", 8),
        (
            "[{index: 0, op: ABOUT, value: 1}]",
            "unknown operator `ABOUT`",
            8,
        ),
        (
            "[{index: 0, op: EQ, value: lots}]",
            "`lots` is not a number",
            8,
        ),
        ("[]", "an argument rule with no condition", 7),
    ];
    for (args, message, line) in cases {
        let e = errors(&format!(
            "{HEAD}spec:\n  rules:\n    - names: [socket]\n      args: {args}\n"
        ));
        assert!(e[0].message.contains(message), "{args}: {}", e[0]);
        assert_eq!(e[0].line, line, "{args}: {}", e[0]);
    }
    let seven = (0..7)
        .map(|i| format!("{{index: {}, op: EQ, value: 1}}", i % 6))
        .collect::<Vec<_>>()
        .join(", ");
    let e = errors(&format!(
        "{HEAD}spec:\n  rules:\n    - names: [socket]\n      args: [{seven}]\n"
    ));
    assert!(
        e[0].message.contains("7 conditions in one rule"),
        "{}",
        e[0]
    );
    let e = errors(&format!(
        "{HEAD}spec:\n  rules:\n    - names: [sockett]\n      args: [{{index: 0, op: EQ}}]\n"
    ));
    assert!(
        e[0].message.contains("unknown syscall `sockett`"),
        "{}",
        e[0]
    );
    let e = errors(&format!("{HEAD}spec:\n  errno: {{clone3: ENOTANERRNO}}\n"));
    assert!(
        e[0].message.contains("unknown errno `ENOTANERRNO`"),
        "{}",
        e[0]
    );
    let e = errors(&format!("{HEAD}spec:\n  errno: {{clonee: ENOSYS}}\n"));
    assert!(
        e[0].message.contains("unknown syscall `clonee`"),
        "{}",
        e[0]
    );
    let e = errors(&format!("{HEAD}spec:\n  namespaces: maybe\n"));
    assert!(
        e[0].message.contains("unknown namespaces choice `maybe`"),
        "{}",
        e[0]
    );
    assert_eq!(e[0].line, 6);
    // More rules than a slot holds.
    let many: String = (0..=probe_common::MAX_ARG_RULES)
        .map(|i| {
            format!("    - names: [personality]\n      args: [{{index: 0, op: EQ, value: {i}}}]\n")
        })
        .collect();
    let e = errors(&format!("{HEAD}spec:\n  rules:\n{many}"));
    assert!(
        e[0].message.contains("17 argument rules; a slot holds 16"),
        "{}",
        e[0]
    );
}

#[test]
fn rules_on_allowed_or_denied_names_say_they_do_nothing() {
    let (p, w) = policy(&format!(
        "{HEAD}spec:\n  allow: [socket]\n  deny: [personality]\n  rules:\n    - names: [socket, personality]\n      args: [{{index: 0, op: EQ, value: 2}}]\n"
    ))
    .unwrap();
    assert!(p.rules.is_empty(), "{:?}", p.rules);
    assert!(p.allowed_names.contains("socket"));
    let text: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("`socket` is allowed whatever its arguments")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("`personality` is denied: its argument rule has no effect")),
        "{text:?}"
    );
    // A 32-bit argument with a value that does not fit.
    let (_, w) = policy(&format!(
        "{HEAD}spec:\n  rules:\n    - names: [socket]\n      args: [{{index: 0, op: EQ, value: 0x100000002}}]\n"
    ))
    .unwrap();
    assert!(
        w.iter().any(|d| d.message.contains("only the low 32 bits")),
        "{w:?}"
    );
}

#[test]
fn namespaces_deny_covers_unshare_setns_clone_and_clone3() {
    let (p, w) = policy(&format!(
        "{HEAD}spec:\n  mode: enforce\n  allow: [clone, clone3, unshare, setns, read]\n  namespaces: deny\n"
    ))
    .unwrap();
    assert!(p.deny_namespaces);
    for n in ["unshare", "setns", "clone"] {
        assert!(!p.allowed_names.contains(n), "{n}");
    }
    assert!(p.allowed_names.contains("clone3"), "judged on its flags");
    assert_eq!(p.rules["clone"][0].conds, vec![args::NO_NEW_NAMESPACE]);
    let text: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("`namespaces: deny` denies `unshare`")),
        "{text:?}"
    );
    let slot = slot_of(&p);
    assert_ne!(slot.flags & probe_common::SLOT_DENY_NAMESPACES, 0);
    let clone = index_of(Abi::X86_64, "clone").unwrap();
    let d = |flags: u64| probe_common::decide(&slot, Some(clone), &Args([flags, 0, 0, 0, 0, 0]));
    assert_eq!(d(0x3d0f00), probe_common::Decision::Allow, "a thread");
    assert_ne!(
        d(0x1000_0000),
        probe_common::Decision::Allow,
        "CLONE_NEWUSER"
    );
    // A clone rule of its own gets the condition added (AND).
    let (p, _) = policy(&format!(
        "{HEAD}spec:\n  namespaces: deny\n  rules:\n    - names: [clone]\n      args: [{{index: 1, op: EQ, value: 0}}]\n"
    ))
    .unwrap();
    assert_eq!(p.rules["clone"][0].conds.len(), 2);
    assert!(p.rules["clone"][0].conds.contains(&args::NO_NEW_NAMESPACE));
    // runtime-default says `namespaces: deny`; a policy may say otherwise.
    let (p, _) = policy(&format!("{HEAD}spec:\n  include: [runtime-default]\n")).unwrap();
    assert!(p.deny_namespaces);
    let (p, _) = policy(&format!(
        "{HEAD}spec:\n  include: [runtime-default]\n  namespaces: allow\n"
    ))
    .unwrap();
    assert!(!p.deny_namespaces);
    assert_eq!(slot_of(&p).flags & probe_common::SLOT_DENY_NAMESPACES, 0);
}

#[test]
fn errno_reaches_the_slot_for_every_abi_and_warns_under_kill() {
    let (p, w) = policy(&format!(
        "{HEAD}spec:\n  mode: enforce\n  action: deny\n  allow: [read]\n  errno: {{clone3: ENOSYS, mkdir: 13, getppid: EPERM}}\n"
    ))
    .unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(p.errnos.get("clone3"), Some(&38));
    assert_eq!(p.errnos.get("mkdir"), Some(&13));
    assert_eq!(p.errnos.get("getppid"), None, "EPERM is the default");
    let slot = slot_of(&p);
    for abi in Abi::ALL {
        let i = index_of(abi, "clone3").unwrap();
        assert_eq!(slot.errno_for(i), 38, "{abi:?}");
        assert_eq!(
            probe_common::decide(&slot, Some(i), &Args([0; 6])),
            probe_common::Decision::Deny {
                fallback_kill: true,
                errno: 38
            }
        );
    }
    assert_eq!(slot.errno_for(index_of(Abi::X86_64, "getppid").unwrap()), 1);
    let (_, w) = policy(&format!(
        "{HEAD}spec:\n  mode: enforce\n  allow: [read]\n  errno: {{clone3: ENOSYS}}\n"
    ))
    .unwrap();
    assert!(
        w.iter().any(|d| d.message.contains("under `action: kill`")),
        "{w:?}"
    );
    let (_, w) = policy(&format!(
        "{HEAD}spec:\n  allow: [clone3]\n  errno: {{clone3: ENOSYS}}\n"
    ))
    .unwrap();
    assert!(
        w.iter().any(|d| d
            .message
            .contains("`clone3` is allowed: its errno has no effect")),
        "{w:?}"
    );
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

#[test]
fn kill_scope_defaults_to_the_workload_and_says_when_it_does_nothing() {
    let (p, w) = policy(&format!("{HEAD}spec:\n  mode: enforce\n  allow: [read]\n")).unwrap();
    assert_eq!(p.kill_scope, KillScope::Workload);
    assert!(w.is_empty(), "{w:?}");
    assert_ne!(slot_of(&p).flags & probe_common::SLOT_KILL_WORKLOAD, 0);
    let (p, _) = policy(&format!(
        "{HEAD}spec:\n  mode: enforce\n  killScope: process\n  allow: [read]\n"
    ))
    .unwrap();
    assert_eq!(p.kill_scope, KillScope::Process);
    assert_eq!(slot_of(&p).flags & probe_common::SLOT_KILL_WORKLOAD, 0);
    let e = errors(&format!(
        "{HEAD}spec:\n  mode: enforce\n  killScope: pod\n  allow: [read]\n"
    ));
    let text = e[0].to_string();
    assert!(
        text.contains(":7:14: error: unknown killScope `pod`"),
        "{text}"
    );
    assert!(
        text.contains("killScope is one of: workload, process"),
        "{text}"
    );
    let (_, w) = policy(&format!(
        "{HEAD}spec:\n  mode: audit\n  killScope: process\n  allow: [read]\n"
    ))
    .unwrap();
    assert!(
        w.iter()
            .any(|d| d.to_string().contains("`killScope` has no effect")),
        "{w:?}"
    );
}

#[test]
fn target_defaults_to_the_application_and_a_sandbox_target_needs_a_sandboxed_runtime() {
    let (p, _) = policy(&format!("{HEAD}spec:\n  allow: [read]\n")).unwrap();
    assert_eq!(p.target, Target::Application);
    let (p, w) = policy(&format!(
        "{HEAD}spec:\n  target: sandbox\n  selector:\n    runtime: runsc\n  allow: [read]\n"
    ))
    .unwrap();
    assert_eq!(p.target, Target::Sandbox);
    assert!(w.is_empty(), "{w:?}");
    let (_, w) = policy(&format!(
        "{HEAD}spec:\n  target: sandbox\n  selector:\n    runtime: runc\n  allow: [read]\n"
    ))
    .unwrap();
    assert!(
        w.iter().any(|d| d.to_string().contains(
            ":6:11: warning: `target: sandbox` never binds: runtime `runc` runs no sandbox"
        )),
        "{w:?}"
    );
    let e = errors(&format!("{HEAD}spec:\n  target: sentry\n  allow: [read]\n"));
    let text = e[0].to_string();
    assert!(
        text.contains(":6:11: error: unknown target `sentry`"),
        "{text}"
    );
    assert!(
        text.contains("target is one of: application, sandbox"),
        "{text}"
    );
}

#[test]
fn an_application_policy_and_a_sandbox_policy_with_one_selector_do_not_conflict() {
    let app = format!("{HEAD}spec:\n  selector:\n    runtime: runsc\n  allow: [read]\n");
    let sandbox = "apiVersion: sysfence.dev/v1\nkind: SyscallPolicy\nmetadata:\n  name: s\nspec:\n  target: sandbox\n  selector:\n    runtime: runsc\n  allow: [read]\n".to_string();
    let app2 = "apiVersion: sysfence.dev/v1\nkind: SyscallPolicy\nmetadata:\n  name: u\nspec:\n  selector:\n    runtime: runsc\n  allow: [write]\n".to_string();
    let compiled: Vec<CompiledPolicy> = [app, sandbox, app2]
        .iter()
        .map(|t| policy(t).unwrap().0)
        .collect();
    let c = compile::conflicts(&compiled);
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(
        c[0].to_string().contains("policies `t` and `u`"),
        "{}",
        c[0]
    );
}

#[test]
fn a_call_is_allowed_in_user_space_as_the_probe_would_allow_it() {
    let (p, _) = policy(&format!(
        "{HEAD}spec:\n  allow: [clone, read]\n  namespaces: deny\n  rules:\n    - names: [socket]\n      args: [{{index: 0, op: NE, value: 40}}]\n"
    ))
    .unwrap();
    let none = [0u64; 6];
    assert!(p.allows_call(Abi::X86_64, 0, &none), "read");
    assert!(!p.allows_call(Abi::X86_64, 83, &none), "mkdir");
    assert!(
        !p.allows_call(Abi::X86_64, 100_000, &none),
        "unknown number"
    );
    // clone (56): allowed without CLONE_NEWUSER, not with it.
    assert!(p.allows_call(Abi::X86_64, 56, &[0x11, 0, 0, 0, 0, 0]));
    assert!(!p.allows_call(Abi::X86_64, 56, &[0x1000_0011, 0, 0, 0, 0, 0]));
    // socket (41): not AF_VSOCK (40); the family is an int, so only the low 32 bits count.
    assert!(p.allows_call(Abi::X86_64, 41, &[2, 1, 0, 0, 0, 0]));
    assert!(!p.allows_call(Abi::X86_64, 41, &[40, 1, 0, 0, 0, 0]));
    assert!(!p.allows_call(Abi::X86_64, 41, &[0xffff_ffff_0000_0028, 1, 0, 0, 0, 0]));
}

#[test]
fn two_conditions_on_one_argument_are_anded_and_check_says_profiles_cannot_hold_them() {
    let (p, w) = policy(&format!(
        "{HEAD}spec:\n  allow: [read]\n  rules:\n    - names: [umask]\n      args:\n        - {{index: 0, op: GE, value: 0o22}}\n        - {{index: 0, op: LE, value: 0o77}}\n"
    ))
    .unwrap();
    let umask = u64::from(crate::syscall_table::number(Abi::X86_64, "umask").unwrap());
    for (mask, allowed) in [(0o22u64, true), (0o77, true), (0o777, false), (0o2, false)] {
        assert_eq!(
            p.allows_call(Abi::X86_64, umask, &[mask, 0, 0, 0, 0, 0]),
            allowed,
            "umask({mask:o})"
        );
    }
    assert!(
        w.iter().any(|d| d
            .to_string()
            .contains(":8:12: warning: two conditions on argument 0: sysfence ANDs them")),
        "{w:?}"
    );
}
