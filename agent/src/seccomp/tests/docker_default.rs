//! Docker's default profile, from Debian: imported as Docker allows it on amd64.

use std::{collections::BTreeMap, path::PathBuf, process::Command, sync::OnceLock};

use super::*;

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
/// applicable `SCMP_ACT_ALLOW` rules without `args`, and per name the `args` of those
/// with.
type Reference = (BTreeSet<String>, BTreeMap<String, Vec<Value>>);

fn reference_allowlist(profile: &Value) -> Reference {
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
    let mut conditional: BTreeMap<String, Vec<Value>> = BTreeMap::new();
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
            let mut names = strings(&rule["names"]);
            names.extend(rule["name"].as_str().map(String::from));
            let has_args = rule["args"].as_array().is_some_and(|a| !a.is_empty());
            for n in names {
                if has_args {
                    conditional.entry(n).or_default().push(rule["args"].clone());
                } else {
                    out.insert(n);
                }
            }
        }
    }
    conditional.retain(|n, _| !out.contains(n));
    (out, conditional)
}

#[test]
fn docker_default_imports_as_docker_allows_it_on_amd64() {
    let Some(text) = docker_default() else { return };
    let profile: Value = serde_json::from_str(text).unwrap();
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    let (expected, conditional) = reference_allowlist(&profile);
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
    // The names allowed for some arguments only, with exactly Docker's conditions.
    assert_eq!(
        imported.rules.keys().collect::<Vec<_>>(),
        conditional.keys().collect::<Vec<_>>()
    );
    for (name, rules) in &conditional {
        let got: Vec<Value> = imported.rules[name]
            .iter()
            .map(|r| {
                Value::Array(
                    r.conds
                        .iter()
                        .map(|c| {
                            let mut v = json!({"index": c.index, "value": c.value, "op": c.op.seccomp_name()});
                            if c.op == crate::policy::args::CondOp::MaskedEq && c.value_two != 0 {
                                v["valueTwo"] = json!(c.value_two);
                            }
                            v
                        })
                        .collect(),
                )
            })
            .collect();
        assert_eq!(&got, rules, "{name}");
    }
    assert_eq!(
        imported.errnos,
        BTreeMap::from([("clone3".to_string(), 38)]),
        "clone3 fails with ENOSYS"
    );
    // What Docker allows on amd64 by default, and what it does not.
    for n in ["read", "arch_prctl", "modify_ldt", "ptrace"] {
        assert!(imported.allowed.contains(n), "{n}");
    }
    for n in ["clone", "personality"] {
        assert!(imported.rules.contains_key(n), "{n}");
    }
    for n in [
        "clone3",
        "mount",
        "bpf",
        "open_by_handle_at",
        "reboot",
        "set_tls",
        "unshare",
        "setns",
    ] {
        assert!(!imported.allowed.contains(n), "{n}");
        assert!(!imported.rules.contains_key(n), "{n}");
    }
    assert!(!has_warning(&imported, &["sysfence allows all of them"]));
    assert!(has_warning(&imported, &["`clone3`", "ENOSYS"]));
    // The policy passes sysfence's loader and allows exactly that, arguments
    // included: the compiled slot decides calls as Docker's filter does.
    let compiled = compile_yaml(&imported.policy_yaml);
    assert_eq!(compiled.allowed_names, imported.allowed);
    assert_eq!(compiled.mode, crate::policy::Mode::Audit);
    assert_eq!(compiled.name, "imported-seccomp");
    let slot = compiled.enforcement(Ok(())).slot;
    let allows = |name: &str, abi: Abi, arg0: u64| {
        let index = crate::syscall_table::index_of(abi, name).unwrap();
        probe_common::decide(&slot, Some(index), &Arg0(arg0)) == probe_common::Decision::Allow
    };
    for abi in [Abi::X86_64, Abi::Ia32] {
        assert!(allows("clone", abi, 0x3d0f00), "{abi:?}: a thread");
        assert!(allows("clone", abi, 0x11), "{abi:?}: a fork");
        for flag in [
            0x1000_0000,
            0x4000_0000,
            0x0400_0000,
            0x2_0000,
            0x0200_0000,
            0x0800_0000,
            0x2000_0000,
        ] {
            assert!(!allows("clone", abi, flag | 0x11), "{abi:?}: {flag:#x}");
        }
        for ok in [0, 8, 0x20000, 0x20008, 0xffff_ffff] {
            assert!(allows("personality", abi, ok), "{abi:?}: {ok:#x}");
        }
        for bad in [0x40_0000, 0x0800_0000, 1] {
            assert!(!allows("personality", abi, bad), "{abi:?}: {bad:#x}");
        }
        assert!(!allows("unshare", abi, 0));
        // Under `action: kill` no hook can return clone3's ENOSYS: clone3 is allowed
        // where clone is, without namespace flags.
        let clone3 = crate::syscall_table::index_of(abi, "clone3").unwrap();
        let with_flags = |flags: u64| probe_common::decide(&slot, Some(clone3), &Clone3(flags));
        assert_eq!(
            with_flags(0x3d0f00),
            probe_common::Decision::Allow,
            "{abi:?}"
        );
        assert_ne!(
            with_flags(0x1000_0000),
            probe_common::Decision::Allow,
            "{abi:?}"
        );
        // Under `action: deny`, clone3 fails with ENOSYS, as in Docker.
        let mut deny = compiled.clone();
        deny.mode = crate::policy::Mode::Enforce;
        deny.action = crate::policy::Action::Deny;
        let deny_slot = deny.enforcement(Ok(())).slot;
        assert_eq!(
            probe_common::decide(&deny_slot, Some(clone3), &Clone3(0x3d0f00)),
            probe_common::Decision::Deny {
                fallback_kill: true,
                errno: 38
            }
        );
    }
}

struct Clone3(u64);
impl probe_common::CallArgs for Clone3 {
    fn registers(&self) -> [u64; 6] {
        [0; 6]
    }
    fn clone3_flags(&self) -> Option<u64> {
        Some(self.0)
    }
}

struct Arg0(u64);
impl probe_common::CallArgs for Arg0 {
    fn registers(&self) -> [u64; 6] {
        [self.0, 0, 0, 0, 0, 0]
    }
    fn clone3_flags(&self) -> Option<u64> {
        Some(0)
    }
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
    assert_eq!(strict.allowed, loose.allowed);
    assert!(strict.rules.is_empty());
    assert_eq!(
        loose
            .rules
            .keys()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["clone", "personality"])
    );
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
    assert_eq!(second.rules, first.rules);
    assert_eq!(second.errnos, first.errnos);
    assert_eq!(second.abis, first.abis);
    assert!(second.skipped_unknown.is_empty());
    // And once more: the export of the re-import is the same profile.
    let again = export_string(&compile_yaml(&second.policy_yaml));
    assert_eq!(again, exported);
}
