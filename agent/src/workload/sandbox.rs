//! A policy inside gVisor: what the wrapper writes into a runsc bundle before `create`.
//!
//! runsc runs the application's syscalls in its own user-space kernel (the Sentry):
//! they never reach the host's `sys_enter`, so the probe cannot judge them. gVisor
//! judges them itself when runsc runs with `--oci-seccomp`: it then applies the
//! bundle's `linux.seccomp` to the application, inside the sandbox. So, for a runsc
//! container, the wrapper asks the agent which policy the container gets
//! ([`super::socket::SandboxRequest`]) before `create`, and the agent answers with
//! that policy as an OCI seccomp profile ([`sandbox_profile`]), which the wrapper
//! installs ([`install_profile`]).
//!
//! What gVisor's seccomp can do, and so what a policy means inside the sandbox:
//!
//! - **x86_64 only.** gVisor runs no 32-bit syscalls; its seccomp ignores
//!   `architectures` and judges native numbers.
//! - **`enforce` with `action: deny`**: `SCMP_ACT_ERRNO`, EPERM by default and the
//!   policy's `errno` per name (gVisor releases before 2023 return EPERM for all).
//!   The syscall does not run.
//! - **`enforce` with `action: kill`**: `SCMP_ACT_KILL`, the strongest action gVisor
//!   knows (it has no `KILL_PROCESS`): the syscall does not run and the calling
//!   *thread* dies. The agent then kills what the policy's `killScope` names.
//! - **`monitor` and `audit`**: no profile (gVisor has no `SCMP_ACT_LOG`). Nothing is
//!   stopped; the agent sees every syscall through its trace session.
//! - Argument rules become seccomp argument conditions, as for runc (see
//!   [`crate::seccomp`]).

use std::path::Path;

use serde_json::Value;

use super::runtime::{self, Annotations};
use crate::{
    model::{Kind, Runtime, Workload},
    policy::{Action, CompiledPolicy, Mode},
    seccomp::{ExportDefault, ExportOptions, export_with},
};

/// The OCI seccomp profile that makes gVisor apply `policy` to the application, or
/// `None` when the policy stops nothing (`monitor`, `audit`).
pub fn sandbox_profile(policy: &CompiledPolicy) -> Option<Value> {
    sandbox_profile_with_warnings(policy).map(|(profile, _)| profile)
}

/// [`sandbox_profile`], with what the profile cannot say as the policy does (each a
/// sentence: where it refuses more than the policy).
pub fn sandbox_profile_with_warnings(policy: &CompiledPolicy) -> Option<(Value, Vec<String>)> {
    if policy.mode != Mode::Enforce {
        return None;
    }
    let default_action = match policy.action {
        Action::Deny => ExportDefault::Errno,
        Action::Kill => ExportDefault::KillThread,
    };
    let options = ExportOptions {
        default_action,
        native_only: true,
    };
    let exported = export_with(policy, &options);
    Some((exported.profile, exported.warnings))
}

/// Put `profile` in a bundle's `config.json` as `linux.seccomp`. Returns the profile it
/// replaced, if the bundle had one (runsc applies a bundle's profile only with
/// `--oci-seccomp`, so before sysfence it was not applied at all).
pub fn install_profile(config: &mut Value, profile: Value) -> anyhow::Result<Option<Value>> {
    let root = config
        .as_object_mut()
        .ok_or_else(|| anyhow::anyhow!("config.json is not a JSON object"))?;
    let linux = root
        .entry("linux")
        .or_insert_with(|| Value::Object(Default::default()));
    let linux = linux
        .as_object_mut()
        .ok_or_else(|| anyhow::anyhow!("config.json's `linux` is not an object"))?;
    Ok(linux.insert("seccomp".to_string(), profile))
}

/// The container a runsc bundle is about to become, as far as its `config.json` tells
/// before `create`: its id, its annotations (written by the CRI or whoever made the
/// bundle, never by the workload, which does not run yet) and its `cgroupsPath`; and
/// its pod's sandbox id, if the annotations name one (for the CRI's labels).
pub fn prospective_workload(
    id: &str,
    runtime: Runtime,
    config: &Value,
) -> (Workload, Option<String>) {
    let Annotations {
        container,
        pod,
        pod_uid,
        namespace,
        image,
        sandbox_id,
        sandbox,
        runtime_handler,
    } = runtime::parse_annotations(&runtime::config_annotations(config));
    let w = Workload {
        cgroup_path: config
            .pointer("/linux/cgroupsPath")
            .and_then(Value::as_str)
            .map(|p| p.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        runtime: Some(runtime),
        runtime_handler,
        kind: Some(Kind::Container),
        container_id: Some(id.to_string()),
        container,
        pod,
        pod_uid,
        namespace,
        image,
        sandbox_container: sandbox == Some(true),
        vouched: true,
        ..Workload::default()
    };
    (w, sandbox_id)
}

/// Read a bundle's `config.json` (at most 4 MiB: a spec is a few KiB).
pub fn read_config(bundle: &Path) -> anyhow::Result<Value> {
    use std::io::Read as _;
    let path = bundle.join("config.json");
    let mut text = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(4 << 20).read_to_end(&mut text))
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| anyhow::anyhow!("parsing {}: {e}", path.display()))
}

/// Write a bundle's `config.json` in place of the old one, atomically (a temporary file
/// in the bundle, renamed over it), keeping its mode.
pub fn write_config(bundle: &Path, config: &Value) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = bundle.join("config.json");
    let mode = std::fs::metadata(&path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    let tmp = bundle.join(".config.json.sysfence");
    let mut text = serde_json::to_vec_pretty(config)?;
    text.push(b'\n');
    std::fs::write(&tmp, &text).map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, &path)
        .map_err(|e| anyhow::anyhow!("replacing {}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{model, shipped_catalog};

    fn policy(spec: &str) -> CompiledPolicy {
        let text = format!(
            "apiVersion: sysfence.dev/v1\nkind: SyscallPolicy\nmetadata: {{name: p}}\nspec:\n  selector: {{cgroupPath: \"x/*\"}}\n{spec}"
        );
        let path = Path::new("p.yaml");
        let Ok(model::Document::Policy(doc)) = model::parse(path, &text) else {
            panic!("not a policy: {text}");
        };
        match crate::policy::compile::compile(path, &doc, &shipped_catalog()) {
            Ok((p, _)) => p,
            Err(d) => panic!("{}\n{text}", crate::policy::Rejected(d)),
        }
    }

    #[test]
    fn an_enforced_deny_policy_becomes_an_errno_profile_for_x86_64_only() {
        let p = policy("  mode: enforce\n  action: deny\n  allow: [read, write, exit_group]\n");
        let v = sandbox_profile(&p).expect("a profile");
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(v["defaultErrnoRet"], 1);
        assert_eq!(v["architectures"], serde_json::json!(["SCMP_ARCH_X86_64"]));
        let names = &v["syscalls"][0]["names"];
        assert_eq!(names, &serde_json::json!(["exit_group", "read", "write"]));
        assert_eq!(v["syscalls"][0]["action"], "SCMP_ACT_ALLOW");
    }

    #[test]
    fn an_enforced_kill_policy_kills_the_thread_in_the_sandbox() {
        let p = policy("  mode: enforce\n  action: kill\n  allow: [read]\n");
        let v = sandbox_profile(&p).expect("a profile");
        assert_eq!(v["defaultAction"], "SCMP_ACT_KILL");
        assert!(v.get("defaultErrnoRet").is_none(), "{v}");
    }

    #[test]
    fn monitor_and_audit_policies_install_nothing() {
        for mode in ["monitor", "audit"] {
            let p = policy(&format!("  mode: {mode}\n  allow: [read]\n"));
            assert_eq!(sandbox_profile(&p), None, "{mode}");
        }
    }

    #[test]
    fn the_profile_replaces_the_bundles_own_and_says_so() {
        let mut config =
            serde_json::json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW"}}});
        let old = install_profile(
            &mut config,
            serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO"}),
        )
        .unwrap();
        assert_eq!(
            old,
            Some(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW"}))
        );
        assert_eq!(
            config["linux"]["seccomp"]["defaultAction"],
            "SCMP_ACT_ERRNO"
        );
        let mut bare = serde_json::json!({"process": {}});
        assert_eq!(
            install_profile(&mut bare, serde_json::json!({})).unwrap(),
            None
        );
        assert!(bare["linux"]["seccomp"].is_object());
        assert!(install_profile(&mut serde_json::json!([]), serde_json::json!({})).is_err());
    }

    #[test]
    fn a_bundle_names_its_container_by_its_annotations_and_cgroups_path() {
        let config = serde_json::json!({
            "annotations": {
                "io.kubernetes.cri.container-name": "web",
                "io.kubernetes.cri.sandbox-name": "shop-1",
                "io.kubernetes.cri.sandbox-namespace": "shop",
                "io.kubernetes.cri.image-name": "nginx:1",
            },
            "linux": {"cgroupsPath": "/kubepods/besteffort/pod1/abc"},
        });
        let (w, pod_id) = prospective_workload("abc", Runtime::Runsc, &config);
        assert_eq!(pod_id, None);
        assert_eq!(w.container.as_deref(), Some("web"));
        assert_eq!(w.pod.as_deref(), Some("shop-1"));
        assert_eq!(w.namespace.as_deref(), Some("shop"));
        assert_eq!(w.image.as_deref(), Some("nginx:1"));
        assert_eq!(w.cgroup_path, "kubepods/besteffort/pod1/abc");
        assert_eq!(w.container_id.as_deref(), Some("abc"));
        assert!(w.sandboxed());
    }
}
