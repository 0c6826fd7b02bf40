//! Import and export tests: pure, no root. Docker's default profile comes from Debian's
//! `golang-github-docker-docker-dev` package (moby's source), located or unpacked at run
//! time: see [`docker_default`].

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

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

fn deny_profile(syscalls: Value) -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": syscalls,
    })
}

// ---------------------------------------------------------------------------------------
// Docker's default profile, from Debian.

const DEB_PACKAGE: &str = "golang-github-docker-docker-dev";
const ENV_PATH: &str = "SYSFENCE_DOCKER_SECCOMP_JSON";
/// Where the package installs it (`dpkg -L golang-github-docker-docker-dev`).
const INSTALLED: &str =
    "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json";
const IN_TREE: &str = "profiles/seccomp/default.json";

/// Docker's default profile, or `None` (with a message) when it cannot be had outside
/// CI. Under `CI=true` a missing profile fails the test.
///
/// Looked up in order: `$SYSFENCE_DOCKER_SECCOMP_JSON`; the installed package; a cache
/// from an earlier run; and, as root, `apt-get download` of the package and
/// `dpkg-deb -x` into a temporary directory (one .deb of about 1 MB).
fn docker_default() -> Option<&'static str> {
    static PROFILE: OnceLock<Result<String, String>> = OnceLock::new();
    match PROFILE.get_or_init(locate_docker_default) {
        Ok(text) => Some(text),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and Docker's default seccomp profile is missing: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED: Docker's default seccomp profile is missing: {why}");
            None
        }
    }
}

fn locate_docker_default() -> Result<String, String> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    if let Some(p) = std::env::var_os(ENV_PATH) {
        // Asked for explicitly: a bad path is an error everywhere.
        return Ok(read(Path::new(&p)).unwrap_or_else(|e| panic!("{ENV_PATH}: {e}")));
    }
    if Path::new(INSTALLED).is_file() {
        return read(Path::new(INSTALLED));
    }
    let cache = std::env::temp_dir()
        .join("sysfence-test-data")
        .join("docker-seccomp-default.json");
    if cache.is_file() {
        return read(&cache);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(format!(
            "not at {INSTALLED} and not root, so not downloading it: install \
             {DEB_PACKAGE} (apt-get install -y {DEB_PACKAGE}), or set {ENV_PATH} to the \
             path of moby's profiles/seccomp/default.json"
        ));
    }
    let text = download_deb_profile().map_err(|e| {
        format!(
            "not at {INSTALLED}, and fetching it from Debian failed: {e}; install \
             {DEB_PACKAGE}, or set {ENV_PATH}"
        )
    })?;
    // Keep a copy for the next run; written aside, then renamed, so that a concurrent
    // run never reads half a file.
    if let Some(dir) = cache.parent()
        && std::fs::create_dir_all(dir).is_ok()
    {
        let aside = dir.join(format!(".default.json.{}", std::process::id()));
        if std::fs::write(&aside, &text).is_ok() && std::fs::rename(&aside, &cache).is_err() {
            let _ = std::fs::remove_file(&aside);
        }
    }
    Ok(text)
}

/// Run a command (no shell); its output, or why it failed.
fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `apt-get download` the package into a temporary directory (removed afterwards),
/// unpack it there, and return the profile.
fn download_deb_profile() -> Result<String, String> {
    let tmp = tempfile::Builder::new()
        .prefix("sysfence-docker-deb")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let dir = tmp.path();
    let download = || {
        run(Command::new("apt-get")
            .args(["download", "-q"])
            // The directory is root's; the _apt sandbox user could not write to it.
            .args(["-o", "APT::Sandbox::User=root"])
            .args([
                "-o",
                "Acquire::Retries=2",
                "-o",
                "Acquire::http::Timeout=30",
            ])
            .arg(DEB_PACKAGE)
            .current_dir(dir))
    };
    if let Err(first) = download() {
        // Most likely no package lists yet (a fresh container): fetch them, once.
        eprintln!("apt-get download failed ({first}); running apt-get update once");
        run(Command::new("apt-get").args(["update", "-q"]))?;
        download()?;
    }
    let deb = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download left no .deb")?;
    let root = dir.join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    let known = root.join(INSTALLED.trim_start_matches('/'));
    let found = if known.is_file() {
        known
    } else {
        find_suffix(&root, Path::new(IN_TREE))
            .ok_or_else(|| format!("{DEB_PACKAGE} has no {IN_TREE} (the package changed?)"))?
    };
    std::fs::read_to_string(&found).map_err(|e| format!("cannot read {}: {e}", found.display()))
}

fn find_suffix(dir: &Path, suffix: &Path) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.filter_map(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            if let Some(found) = find_suffix(&p, suffix) {
                return Some(found);
            }
        } else if p.ends_with(suffix) {
            return Some(p);
        }
    }
    None
}

/// What a profile allows on amd64 with Docker's default capabilities and kernel 6.1,
/// computed independently of `import`, and as simply as possible: the names of the
/// `SCMP_ACT_ALLOW` rules that apply, arguments ignored.
fn reference_allowlist(profile: &Value) -> BTreeSet<String> {
    const CAPS: &[&str] = &[
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let version = |v: &Value| -> Option<(u32, u32)> {
        let (a, b) = v.as_str()?.split_once('.')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    let kernel = (6, 1);
    let mut out = BTreeSet::new();
    for rule in profile["syscalls"].as_array().expect("syscalls") {
        if rule["action"] != "SCMP_ACT_ALLOW" {
            continue;
        }
        let (inc, exc) = (&rule["includes"], &rule["excludes"]);
        let inc_arches = strings(&inc["arches"]);
        let included = (inc_arches.is_empty() || inc_arches.iter().any(|a| a == "amd64"))
            && strings(&inc["caps"])
                .iter()
                .all(|c| CAPS.contains(&c.as_str()))
            && version(&inc["minKernel"]).is_none_or(|v| kernel >= v);
        let excluded = strings(&exc["arches"]).iter().any(|a| a == "amd64")
            || strings(&exc["caps"])
                .iter()
                .any(|c| CAPS.contains(&c.as_str()))
            || version(&exc["minKernel"]).is_some_and(|v| kernel >= v);
        if included && !excluded {
            out.extend(strings(&rule["names"]));
            if let Some(n) = rule["name"].as_str() {
                out.insert(n.to_string());
            }
        }
    }
    out
}

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

#[test]
fn docker_default_imports_as_docker_allows_it_on_amd64() {
    let Some(text) = docker_default() else { return };
    let profile: Value = serde_json::from_str(text).unwrap();
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    let expected = reference_allowlist(&profile);
    let imported = import(text, &opts()).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "Docker default, amd64, default capabilities, kernel 6.1: reference allowlist {} \
         names, imported {} names, {} unknown to sysfence's tables: {:?}",
        expected.len(),
        imported.allowed.len(),
        imported.skipped_unknown.len(),
        imported.skipped_unknown
    );
    for w in &imported.warnings {
        println!("warning: {w}");
    }
    let known = crate::syscall_table::all_names();
    let unknown: BTreeSet<String> = expected
        .iter()
        .filter(|n| !known.contains(n.as_str()))
        .cloned()
        .collect();
    let expected_known: BTreeSet<String> = expected.difference(&unknown).cloned().collect();
    assert_eq!(
        imported.allowed,
        expected_known,
        "missing: {:?}; extra: {:?}",
        expected_known
            .difference(&imported.allowed)
            .collect::<Vec<_>>(),
        imported
            .allowed
            .difference(&expected_known)
            .collect::<Vec<_>>()
    );
    assert_eq!(imported.skipped_unknown, unknown);
    assert_eq!(unknown_in_warnings(&imported), unknown);
    assert_eq!(
        imported.abis,
        BTreeSet::from([Abi::X86_64, Abi::Ia32, Abi::X32])
    );
    // What Docker allows on amd64 by default, and what it does not.
    for n in [
        "read",
        "clone",
        "personality",
        "arch_prctl",
        "modify_ldt",
        "ptrace",
    ] {
        assert!(imported.allowed.contains(n), "{n}");
    }
    for n in [
        "clone3",
        "mount",
        "bpf",
        "open_by_handle_at",
        "reboot",
        "set_tls",
    ] {
        assert!(!imported.allowed.contains(n), "{n}");
    }
    // clone and personality are allowed for some arguments only; clone3 fails with ENOSYS.
    assert!(has_warning(
        &imported,
        &["`clone`", "some argument values only"]
    ));
    assert!(has_warning(
        &imported,
        &["`personality`", "some argument values only"]
    ));
    assert!(has_warning(&imported, &["`clone3`", "ENOSYS"]));
    // The policy passes sysfence's loader and allows exactly that.
    let compiled = compile_yaml(&imported.policy_yaml);
    assert_eq!(compiled.allowed_names, imported.allowed);
    assert_eq!(compiled.mode, crate::policy::Mode::Audit);
    assert_eq!(compiled.name, "imported-seccomp");
}

#[test]
fn docker_default_strict_args_leaves_out_clone_and_personality() {
    let Some(text) = docker_default() else { return };
    let strict = import(
        text,
        &ImportOptions {
            strict_args: true,
            ..opts()
        },
    )
    .unwrap();
    let loose = import(text, &opts()).unwrap();
    let dropped: BTreeSet<&str> = loose
        .allowed
        .difference(&strict.allowed)
        .map(String::as_str)
        .collect();
    assert_eq!(dropped, BTreeSet::from(["clone", "personality"]));
    assert!(strict.allowed.is_subset(&loose.allowed));
    assert!(has_warning(&strict, &["`clone`", "left out (strict_args)"]));
    compile_yaml(&strict.policy_yaml);
}

#[test]
fn docker_default_round_trip_is_stable() {
    let Some(text) = docker_default() else { return };
    let first = import(text, &opts()).unwrap();
    let policy = compile_yaml(&first.policy_yaml);
    let exported = export_string(&policy);
    let second = import(&exported, &opts()).unwrap_or_else(|e| panic!("{e}\n{exported}"));
    assert_eq!(second.allowed, first.allowed);
    assert_eq!(second.abis, first.abis);
    assert!(second.skipped_unknown.is_empty());
    // And once more: the export of the re-import is the same profile.
    let again = export_string(&compile_yaml(&second.policy_yaml));
    assert_eq!(again, exported);
}

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
    // personality has an unconditional rule: no approximation.
    assert_eq!(
        i.allowed,
        names(&["clone", "personality", "read", "socket"])
    );
    assert!(!has_warning(&i, &["`personality`"]));
    assert!(has_warning(
        &i,
        &[
            "`clone`: allowed for some argument values only",
            "arg0 & 0x7e020000 == 0x0",
            "no namespaces",
            "sysfence allows all of them"
        ]
    ));
    // Allowed with args, denied by another applicable rule.
    assert!(has_warning(
        &i,
        &[
            "`socket`",
            "arg0 != 0x28",
            "also denied by syscalls[4] (SCMP_ACT_ERRNO)"
        ]
    ));
    compile_yaml(&i.policy_yaml);

    let strict = import_with(
        &profile,
        &ImportOptions {
            strict_args: true,
            ..opts()
        },
    );
    assert_eq!(strict.allowed, names(&["personality", "read"]));
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
    assert!(has_warning(&i, &["`clone3`", "ENOSYS", "kills the task"]));
    assert!(!has_warning(&i, &["`mount`"]));
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

// ---------------------------------------------------------------------------------------
// Export.

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
