//! Runtime state: what runc, crun, runsc and youki keep about their containers, the
//! OCI bundle's annotations, the processes of a cgroup, and placing a sandbox the
//! runtime left in the cgroup v2 root into a v2 cgroup of its own (hybrid hosts).
//!
//! State layouts (one directory, the runtime's `--root`, per runtime instance):
//!
//! | runtime | file | fields used |
//! | --- | --- | --- |
//! | runc | `ROOT/ID/state.json` | `init_process_pid`, `cgroup_paths[""]`, `config.labels` (`bundle=…`) |
//! | crun | `ROOT/ID/status` | `pid`, `bundle` |
//! | youki | `ROOT/ID/state.json` | `pid`, `bundle` |
//! | runsc | `ROOT/SANDBOX_sandbox:ID.state` | `sandbox.pid`, `goferPid`, `bundleDir`, `sandbox.cgroup` |
//!
//! Any other runtime: `RUNTIME --root ROOT state ID` (the OCI `state` operation).

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

use super::Runtime;

/// Default state roots, with the runtime each belongs to. containerd's runc shim keeps
/// one root per namespace below `/run/containerd/runc`.
pub const DEFAULT_ROOTS: &[(&str, &str)] = &[
    ("/run/runc", "runc"),
    ("/run/crun", "crun"),
    ("/run/youki", "youki"),
    ("/var/run/runsc", "runsc"),
    ("/run/runsc", "runsc"),
];

/// Parents whose subdirectories are state roots (containerd namespaces, Docker's `moby`).
pub const DEFAULT_ROOT_PARENTS: &[(&str, &str)] = &[
    ("/run/containerd/runc", "runc"),
    ("/run/containerd/runsc", "runsc"),
    ("/run/docker/runtime-runc", "runc"),
];

/// One container in a runtime's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateEntry {
    pub runtime: Runtime,
    pub id: String,
    pub root: PathBuf,
    /// The container's init process (runsc: the sandbox process).
    pub pid: Option<u32>,
    /// More processes of the container that the state names (runsc: the gofer).
    pub other_pids: Vec<u32>,
    pub bundle: Option<PathBuf>,
    /// The cgroup v1 path the runtime used, when the state names one (runsc).
    pub v1_cgroup: Option<String>,
    /// Created but not started: the runtime's init waits on its exec FIFO (runc, crun
    /// and youki keep `ROOT/ID/exec.fifo` until `start` opens it).
    pub pending_start: bool,
}

/// Parse a runc/youki `state.json`.
pub fn parse_state_json(root: &Path, id: &str, json: &Value) -> Option<StateEntry> {
    let (runtime, pid) = if let Some(pid) = json.get("init_process_pid").and_then(Value::as_u64) {
        (Runtime::Runc, pid)
    } else {
        (Runtime::Youki, json.get("pid").and_then(Value::as_u64)?)
    };
    let bundle = json
        .get("bundle")
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .or_else(|| {
            json.pointer("/config/labels")?
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .find_map(|l| l.strip_prefix("bundle="))
                .map(PathBuf::from)
        });
    Some(StateEntry {
        runtime,
        id: json
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or(id)
            .to_string(),
        root: root.to_path_buf(),
        pid: u32::try_from(pid).ok().filter(|&p| p > 0),
        other_pids: Vec::new(),
        bundle,
        v1_cgroup: None,
        pending_start: false,
    })
}

/// Parse a crun `status` file.
pub fn parse_crun_status(root: &Path, id: &str, json: &Value) -> Option<StateEntry> {
    Some(StateEntry {
        runtime: Runtime::Crun,
        id: id.to_string(),
        root: root.to_path_buf(),
        pid: json
            .get("pid")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|&p| p > 0),
        other_pids: Vec::new(),
        bundle: json
            .get("bundle")
            .and_then(Value::as_str)
            .map(PathBuf::from),
        v1_cgroup: None,
        pending_start: false,
    })
}

/// Parse a runsc `SANDBOX_sandbox:ID.state` file.
pub fn parse_runsc_state(root: &Path, json: &Value) -> Option<StateEntry> {
    let id = json.get("id")?.as_str()?.to_string();
    let pid = json
        .pointer("/sandbox/pid")
        .and_then(Value::as_u64)
        .and_then(|p| u32::try_from(p).ok())
        .filter(|&p| p > 0);
    let gofer = json
        .get("goferPid")
        .and_then(Value::as_u64)
        .and_then(|p| u32::try_from(p).ok())
        .filter(|&p| p > 0);
    let v1_cgroup = json
        .pointer("/sandbox/cgroup/cgroupv1/name")
        .and_then(Value::as_str)
        .map(|s| s.trim_start_matches('/').to_string());
    Some(StateEntry {
        runtime: Runtime::Runsc,
        id,
        root: root.to_path_buf(),
        pid,
        other_pids: gofer.into_iter().collect(),
        bundle: json
            .get("bundleDir")
            .and_then(Value::as_str)
            .map(PathBuf::from),
        v1_cgroup,
        pending_start: false,
    })
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// What one read of a state root found: the containers whose state is written, and
/// whether a runtime is still creating one there.
#[derive(Debug, Default)]
pub struct RootScan {
    pub states: Vec<StateEntry>,
    /// runc, crun and youki make a container's directory first, then its cgroup, and
    /// write its state file once the container is set up: a directory without a
    /// state file that reads as whole JSON is a container being created, unless it is
    /// older than [`CREATING_AT_MOST`] (a create that died left it behind).
    pub creating: bool,
}

/// How long a runtime may take to write a new container's state file. A directory
/// without one that is older was left by a create that died: counting it as a create
/// in progress would hold discovery back from binding, for good.
pub const CREATING_AT_MOST: std::time::Duration = std::time::Duration::from_secs(60);

/// Read a state root: runc/youki `ID/state.json`, crun `ID/status`, runsc
/// `*_sandbox:ID.state`. Each file is read once, so that what is called created and
/// what is called creating come from the same look (a state file written between two
/// looks would otherwise be neither).
pub fn scan_root(root: &Path) -> RootScan {
    let mut scan = RootScan::default();
    let Ok(entries) = fs::read_dir(root) else {
        return scan;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if name.ends_with(".state") && name.contains("_sandbox:") {
            if let Some(s) = read_json(&path).and_then(|j| parse_runsc_state(root, &j)) {
                scan.states.push(s);
            }
        } else if path.is_dir() {
            let pending_start = path.join("exec.fifo").exists();
            let entry = if let Some(j) = read_json(&path.join("state.json")) {
                parse_state_json(root, &name, &j)
            } else if let Some(j) = read_json(&path.join("status")) {
                parse_crun_status(root, &name, &j)
            } else {
                let young = fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().map_or(true, |age| age < CREATING_AT_MOST));
                scan.creating |= young;
                None
            };
            scan.states
                .extend(entry.map(|e| StateEntry { pending_start, ..e }));
        }
    }
    scan.states.sort_by(|a, b| a.id.cmp(&b.id));
    scan
}

/// The default state root of a runtime, by its binary's name.
pub fn default_root(runtime: &Runtime) -> Option<PathBuf> {
    DEFAULT_ROOTS
        .iter()
        .find(|(dir, name)| Runtime::from_name(name) == *runtime && Path::new(dir).is_dir())
        .map(|(dir, _)| PathBuf::from(dir))
}

/// One container's state: from the root's files when their format is known, else
/// through `RUNTIME [--root ROOT] state ID`, where RUNTIME is a runtime this agent knows
/// by name (runc, crun, runsc, youki), found on the agent's own PATH: a path a client
/// sends is never executed.
pub fn read_state(runtime: &Runtime, root: Option<&Path>, id: &str) -> anyhow::Result<StateEntry> {
    let root = root
        .map(Path::to_path_buf)
        .or_else(|| default_root(runtime));
    if let Some(root) = &root {
        let dir = root.join(id);
        let pending_start = dir.join("exec.fifo").exists();
        if let Some(j) = read_json(&dir.join("state.json"))
            && let Some(s) = parse_state_json(root, id, &j)
        {
            return Ok(StateEntry { pending_start, ..s });
        }
        if let Some(j) = read_json(&dir.join("status"))
            && let Some(s) = parse_crun_status(root, id, &j)
        {
            return Ok(StateEntry { pending_start, ..s });
        }
        if let Ok(entries) = fs::read_dir(root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(&format!(":{id}.state"))
                    && let Some(s) = read_json(&e.path()).and_then(|j| parse_runsc_state(root, &j))
                {
                    return Ok(s);
                }
            }
        }
    }
    // The OCI `state` operation, which every runtime has; only of a runtime known by
    // name, from the agent's own PATH.
    if !matches!(
        runtime,
        Runtime::Runc | Runtime::Crun | Runtime::Runsc | Runtime::Youki
    ) {
        bail!(
            "container {id}: no state files under its root, and `{}` is not a runtime this agent runs `state` of (runc, crun, runsc, youki)",
            runtime.name()
        );
    }
    let program = PathBuf::from(runtime.name());
    let mut cmd = Command::new(&program);
    if let Some(root) = &root {
        cmd.arg("--root").arg(root);
    }
    let out = cmd
        .args(["state", id])
        .output()
        .with_context(|| format!("running {} state {id}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} state {id} failed: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let j: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{} state {id}: not JSON", program.display()))?;
    Ok(StateEntry {
        runtime: runtime.clone(),
        id: id.to_string(),
        root: root.unwrap_or_default(),
        pid: j
            .get("pid")
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|&p| p > 0),
        other_pids: Vec::new(),
        bundle: j.get("bundle").and_then(Value::as_str).map(PathBuf::from),
        v1_cgroup: None,
        pending_start: j.get("status").and_then(Value::as_str) == Some("created"),
    })
}

/// Metadata an OCI bundle's `config.json` annotations carry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Annotations {
    pub container: Option<String>,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    pub namespace: Option<String>,
    pub image: Option<String>,
    pub sandbox_id: Option<String>,
    /// `Some(true)` for the pod's infrastructure container.
    pub sandbox: Option<bool>,
    pub runtime_handler: Option<String>,
}

/// Read what containerd's CRI (`io.kubernetes.cri.*`) and CRI-O (`io.kubernetes.pod.*`,
/// `io.kubernetes.cri-o.*`) write into a container's annotations.
pub fn parse_annotations(a: &BTreeMap<String, String>) -> Annotations {
    let get = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| a.get(*k))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let kind = get(&[
        "io.kubernetes.cri.container-type",
        "io.kubernetes.cri-o.ContainerType",
        "io.kubernetes.docker.type",
    ]);
    Annotations {
        container: get(&[
            "io.kubernetes.cri.container-name",
            "io.kubernetes.container.name",
        ]),
        pod: get(&["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"]),
        pod_uid: get(&["io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid"]),
        namespace: get(&[
            "io.kubernetes.cri.sandbox-namespace",
            "io.kubernetes.pod.namespace",
        ]),
        image: get(&[
            "io.kubernetes.cri.image-name",
            "io.kubernetes.cri-o.ImageName",
        ]),
        sandbox_id: get(&[
            "io.kubernetes.cri.sandbox-id",
            "io.kubernetes.cri-o.SandboxID",
        ]),
        sandbox: kind.map(|k| k == "sandbox" || k == "podsandbox"),
        runtime_handler: get(&[
            "io.kubernetes.cri.runtime-handler",
            "io.kubernetes.cri-o.RuntimeHandler",
        ]),
    }
}

/// A bundle's annotations, from `BUNDLE/config.json`.
pub fn bundle_annotations(bundle: &Path) -> BTreeMap<String, String> {
    read_json(&bundle.join("config.json"))
        .map(|j| config_annotations(&j))
        .unwrap_or_default()
}

/// The string annotations of a bundle's `config.json`, read already.
pub fn config_annotations(config: &Value) -> BTreeMap<String, String> {
    config
        .get("annotations")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The v2 cgroup of a process, relative to the v2 root (`""` for the root itself).
pub fn v2_cgroup_of(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    parse_v2_line(&text)
}

/// The `0::` line of `/proc/PID/cgroup`, relative.
pub fn parse_v2_line(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().trim_start_matches('/').to_string())
}

/// The v1 cgroup of a process (the first named hierarchy that has one), relative.
pub fn v1_cgroup_of(text: &str) -> Option<String> {
    text.lines()
        .filter(|l| !l.starts_with("0::"))
        .find_map(|l| l.splitn(3, ':').nth(2))
        .map(|p| p.trim().trim_start_matches('/').to_string())
        .filter(|p| !p.is_empty())
}

/// A process's executable name: `argv[0]` (which runsc sets to `runsc-sandbox`), else
/// the target of `/proc/PID/exe`.
pub fn process_name(pid: u32) -> Option<String> {
    let argv0 = fs::read(format!("/proc/{pid}/cmdline")).ok().and_then(|c| {
        let first = c.split(|&b| b == 0).next()?;
        (!first.is_empty()).then(|| String::from_utf8_lossy(first).into_owned())
    });
    argv0.or_else(|| {
        fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.display().to_string())
    })
}

/// Every process whose v1 cgroup is `v1` and whose v2 cgroup is the root: what a
/// runtime put in the container's v1 cgroups only.
pub fn processes_left_in_v2_root(v1: &str) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|t| {
                parse_v2_line(&t).is_some_and(|p| p.is_empty())
                    && v1_cgroup_of(&t).as_deref() == Some(v1)
            })
        })
        .collect()
}

/// Move `pids` into the v2 cgroup `root/rel`, creating it (and its parents). Returns
/// whether this call created the leaf.
pub fn adopt(root: &Path, rel: &str, pids: &[u32]) -> anyhow::Result<bool> {
    if rel.is_empty() || rel.split('/').any(|c| c == ".." || c == ".") {
        return Err(anyhow!("refusing to adopt into cgroup `{rel}`"));
    }
    let dir = root.join(rel);
    let created = !dir.exists();
    fs::create_dir_all(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
    for pid in pids {
        // A process may be gone already; that is fine.
        let _ = fs::write(dir.join("cgroup.procs"), pid.to_string());
    }
    Ok(created)
}
