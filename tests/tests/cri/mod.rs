//! Pods as kubelet asks containerd's CRI for them: sandbox and container configs with
//! kubelet's labels, and a guard that stops and removes the sandboxes (on failure too).
//!
//! A module of the two test files that use the CRI (`mod cri;`), not of the test kit's
//! library: through `sysfence::workload::cri` it links the agent's CRI client (tonic,
//! the CRI protobufs), which would make every test executable, and the VM tests'
//! initramfs, several times larger.
// Each test file uses part of it.
#![allow(dead_code)]

use std::{fs, path::Path, path::PathBuf};

use sysfence::workload::cri::{CriClient, api};

use sysfence_tests::oci::{kubelet_container_labels, kubelet_pod_labels};

/// The Kubernetes namespace every test pod lives in.
pub const NAMESPACE: &str = "sysfence-test";

/// Pod sandboxes stopped and removed on drop, through a CRI connection of their own.
pub struct PodGuard {
    pub socket: PathBuf,
    pub ids: Vec<String>,
}

impl Drop for PodGuard {
    fn drop(&mut self) {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(mut cri) = CriClient::connect(&self.socket).await else {
                return;
            };
            for id in &self.ids {
                let _ = cri.stop_pod_sandbox(id).await;
                let _ = cri.remove_pod_sandbox(id).await;
            }
        });
    }
}

/// The namespaces of a pod on the node's network (no CNI), with its own PIDs.
fn namespaces() -> api::NamespaceOption {
    api::NamespaceOption {
        network: api::NamespaceMode::Node as i32,
        pid: api::NamespaceMode::Container as i32,
        ipc: api::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// A pod as kubelet asks for it: host network, kubelet's labels plus `labels`, and
/// its cgroup parent below `kubepods/besteffort`. Its logs go to `logs/POD/`.
pub fn pod_config(
    pod: &str,
    uid: &str,
    labels: &[(&str, &str)],
    logs: &Path,
) -> api::PodSandboxConfig {
    let log_dir = logs.join(pod);
    fs::create_dir_all(&log_dir).unwrap();
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: pod.into(),
            uid: uid.into(),
            namespace: NAMESPACE.into(),
            attempt: 0,
        }),
        log_directory: log_dir.display().to_string(),
        labels: kubelet_pod_labels(pod, NAMESPACE, uid, labels)
            .into_iter()
            .collect(),
        annotations: [("kubernetes.io/config.source".to_string(), "api".to_string())]
            .into_iter()
            .collect(),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod's one container, `app`, from the busybox image the test imported, running
/// `/bin/sh -c SCRIPT`; its output goes to `app.log` in the pod's log directory.
pub fn container_config(pod: &str, uid: &str, script: &str) -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: "localhost/busybox:local".into(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        labels: kubelet_container_labels("app", pod, NAMESPACE, uid)
            .into_iter()
            .collect(),
        annotations: [(
            "io.kubernetes.container.restartCount".to_string(),
            "0".to_string(),
        )]
        .into_iter()
        .collect(),
        log_path: "app.log".into(),
        linux: Some(api::LinuxContainerConfig {
            security_context: Some(api::LinuxContainerSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A pod uid unique to this test process: the `n`th of its pods (`offset` keeps the
/// pods of two tests in one process apart).
pub fn pod_uid(n: u32, offset: u32) -> String {
    let n = n + offset;
    format!(
        "5f5e{:04x}-{:04x}-4000-8000-{:012x}",
        std::process::id() & 0xffff,
        n,
        n
    )
}

/// Whether kubelet's parent cgroups existed before the test: those that did not, and
/// the pods' own, are the test's to remove.
pub struct Kubepods(Vec<bool>);

const KUBEPODS: [&str; 2] = ["kubepods", "kubepods/besteffort"];

impl Kubepods {
    /// Look now, before containerd makes any.
    pub fn before() -> Kubepods {
        let root = sysfence_tests::cgroup_root().expect("a cgroup v2 root");
        Kubepods(KUBEPODS.iter().map(|p| root.join(p).exists()).collect())
    }

    /// The cgroups the test made for pods `uids`, deepest first (the order to remove
    /// them in).
    pub fn made(&self, uids: &[&str]) -> Vec<String> {
        let mut made: Vec<String> = uids
            .iter()
            .map(|u| format!("kubepods/besteffort/pod{u}"))
            .collect();
        for (p, existed) in KUBEPODS.iter().zip(&self.0).rev() {
            if !existed {
                made.push(p.to_string());
            }
        }
        made
    }
}

/// kubelet's side of the CRI: a client on a runtime of its own, and the sandboxes it
/// ran (stopped and removed on drop).
pub struct Kubelet {
    /// Dropped first: the sandboxes go while the CRI is still there.
    pub sandboxes: PodGuard,
    pub cri: CriClient,
    pub rt: tokio::runtime::Runtime,
}

impl Kubelet {
    pub fn connect(socket: &Path) -> Kubelet {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cri = rt.block_on(CriClient::connect(socket)).unwrap();
        Kubelet {
            sandboxes: PodGuard {
                socket: socket.to_path_buf(),
                ids: Vec::new(),
            },
            cri,
            rt,
        }
    }

    /// RunPodSandbox, CreateContainer and StartContainer for a pod with one container
    /// running `script`: the pod sandbox's id and the container's. `why` is what to
    /// show when a call fails (containerd's log).
    pub fn start_pod(
        &mut self,
        sandbox: api::PodSandboxConfig,
        container: api::ContainerConfig,
        why: &dyn Fn() -> String,
    ) -> (String, String) {
        let pod = sandbox
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let pod_id = self
            .rt
            .block_on(self.cri.run_pod_sandbox(sandbox.clone(), ""))
            .unwrap_or_else(|e| panic!("RunPodSandbox {pod}: {e:#}\n{}", why()));
        self.sandboxes.ids.push(pod_id.clone());
        let cid = self
            .rt
            .block_on(self.cri.create_container(&pod_id, container, sandbox))
            .unwrap_or_else(|e| panic!("CreateContainer {pod}: {e:#}\n{}", why()));
        self.rt
            .block_on(self.cri.start_container(&cid))
            .unwrap_or_else(|e| panic!("StartContainer {pod}: {e:#}\n{}", why()));
        (pod_id, cid)
    }
}
