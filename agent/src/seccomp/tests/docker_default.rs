//! Docker's default profile, from Debian: imported as Docker allows it on amd64.

use std::{path::PathBuf, process::Command, sync::OnceLock};

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
