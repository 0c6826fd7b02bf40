//! The CRI API of containerd and CRI-O over their unix socket (`k8s-cri` types,
//! `tonic` client): pod names, namespaces, labels, container names, images and runtime
//! handlers. [`CriClient`] also creates pods and containers, as kubelet does, for tests.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    self as cri, image_service_client::ImageServiceClient,
    runtime_service_client::RuntimeServiceClient,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The CRI v1 message types, for callers that build requests (tests).
pub use k8s_cri::v1 as api;

/// Sockets looked for when none is given.
pub const DEFAULT_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/crio/crio.sock",
];

/// Limit for one CRI call: the agent must never hang on a busy runtime.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// A connected CRI client.
#[derive(Clone)]
pub struct CriClient {
    pub socket: PathBuf,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(anyhow!(
            "CRI {what}: {} ({:?})",
            status.message(),
            status.code()
        )),
        Err(_) => Err(anyhow!("CRI {what}: no answer in {CALL_TIMEOUT:?}")),
    }
}

impl CriClient {
    pub async fn connect(socket: &Path) -> anyhow::Result<CriClient> {
        let path = socket.to_path_buf();
        let channel = tokio::time::timeout(
            CALL_TIMEOUT,
            Endpoint::try_from("http://[::]:50051")?.connect_with_connector(tower::service_fn(
                move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                },
            )),
        )
        .await
        .map_err(|_| anyhow!("connecting to {}: timed out", socket.display()))?
        .with_context(|| format!("connecting to the CRI socket {}", socket.display()))?;
        Ok(CriClient {
            socket: socket.to_path_buf(),
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    /// (runtime name, runtime version), e.g. ("containerd", "1.6.20").
    pub async fn version(&mut self) -> anyhow::Result<(String, String)> {
        let v = timed(
            "Version",
            self.runtime.version(cri::VersionRequest {
                version: "v1".into(),
            }),
        )
        .await?;
        Ok((v.runtime_name, v.runtime_version))
    }

    pub async fn pods(&mut self) -> anyhow::Result<Vec<cri::PodSandbox>> {
        Ok(timed(
            "ListPodSandbox",
            self.runtime
                .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }),
        )
        .await?
        .items)
    }

    pub async fn containers(&mut self) -> anyhow::Result<Vec<cri::Container>> {
        Ok(timed(
            "ListContainers",
            self.runtime
                .list_containers(cri::ListContainersRequest { filter: None }),
        )
        .await?
        .containers)
    }

    /// A container's status; `verbose` adds the runtime's `info` map (containerd: the
    /// pid and the OCI spec).
    pub async fn container_status(
        &mut self,
        id: &str,
        verbose: bool,
    ) -> anyhow::Result<cri::ContainerStatusResponse> {
        timed(
            "ContainerStatus",
            self.runtime.container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose,
            }),
        )
        .await
    }

    pub async fn run_pod_sandbox(
        &mut self,
        config: cri::PodSandboxConfig,
        runtime_handler: &str,
    ) -> anyhow::Result<String> {
        Ok(timed(
            "RunPodSandbox",
            self.runtime.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: runtime_handler.into(),
            }),
        )
        .await?
        .pod_sandbox_id)
    }

    pub async fn create_container(
        &mut self,
        pod_sandbox_id: &str,
        config: cri::ContainerConfig,
        sandbox_config: cri::PodSandboxConfig,
    ) -> anyhow::Result<String> {
        Ok(timed(
            "CreateContainer",
            self.runtime.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod_sandbox_id.into(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            }),
        )
        .await?
        .container_id)
    }

    pub async fn start_container(&mut self, id: &str) -> anyhow::Result<()> {
        timed(
            "StartContainer",
            self.runtime.start_container(cri::StartContainerRequest {
                container_id: id.into(),
            }),
        )
        .await
        .map(|_| ())
    }

    /// ExecSync, as `kubectl exec` and `crictl exec` ask: run `cmd` in container `id`
    /// and wait for it (at most `timeout_secs`): (exit code, stdout, stderr).
    pub async fn exec_sync(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout_secs: i64,
    ) -> anyhow::Result<(i32, Vec<u8>, Vec<u8>)> {
        let r = timed(
            "ExecSync",
            self.runtime.exec_sync(cri::ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|c| c.to_string()).collect(),
                timeout: timeout_secs,
            }),
        )
        .await?;
        Ok((r.exit_code, r.stdout, r.stderr))
    }

    pub async fn stop_pod_sandbox(&mut self, id: &str) -> anyhow::Result<()> {
        timed(
            "StopPodSandbox",
            self.runtime.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            }),
        )
        .await
        .map(|_| ())
    }

    pub async fn remove_pod_sandbox(&mut self, id: &str) -> anyhow::Result<()> {
        timed(
            "RemovePodSandbox",
            self.runtime
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: id.into(),
                }),
        )
        .await
        .map(|_| ())
    }

    /// Image names (repo tags) the runtime has.
    pub async fn image_names(&mut self) -> anyhow::Result<Vec<String>> {
        Ok(timed(
            "ListImages",
            self.images
                .list_images(cri::ListImagesRequest { filter: None }),
        )
        .await?
        .images
        .into_iter()
        .flat_map(|i| i.repo_tags)
        .collect())
    }
}

/// A pod as the CRI knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub id: String,
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub runtime_handler: String,
}

/// A container as the CRI knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub pod_id: String,
    pub name: String,
    pub image: String,
}

/// What the CRI says about one container id (an application container, or a pod's
/// sandbox, whose id is the pod's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriMeta {
    pub pod: PodInfo,
    pub container: Option<ContainerInfo>,
}

/// The CRI's pods and containers, refreshed on demand. Failures are kept, not fatal:
/// the agent goes on with what cgroupfs and the runtime state say.
pub struct CriCache {
    pub socket: PathBuf,
    client: Option<CriClient>,
    pub runtime: Option<(String, String)>,
    pods: HashMap<String, PodInfo>,
    containers: HashMap<String, ContainerInfo>,
    pub last_error: Option<String>,
    /// After a slow failure, no new attempt before this: a hung runtime must not stall
    /// every rescan (and the `start` requests queued behind it).
    retry_at: Option<std::time::Instant>,
}

/// Pause between attempts after the CRI failed.
const RETRY_AFTER: Duration = Duration::from_secs(10);

fn pod_info(p: cri::PodSandbox) -> PodInfo {
    let meta = p.metadata.unwrap_or_default();
    PodInfo {
        id: p.id,
        name: meta.name,
        uid: meta.uid,
        namespace: meta.namespace,
        labels: p.labels.into_iter().collect(),
        runtime_handler: p.runtime_handler,
    }
}

impl CriCache {
    pub fn new(socket: PathBuf) -> CriCache {
        CriCache {
            socket,
            client: None,
            runtime: None,
            pods: HashMap::new(),
            containers: HashMap::new(),
            last_error: None,
            retry_at: None,
        }
    }

    async fn client(&mut self) -> anyhow::Result<&mut CriClient> {
        if self.client.is_none() {
            let mut c = CriClient::connect(&self.socket).await?;
            self.runtime = c.version().await.ok();
            self.client = Some(c);
        }
        Ok(self.client.as_mut().expect("just set"))
    }

    /// Re-read every pod and container. Image names come from ContainerStatus, once per
    /// new container (ListContainers gives the image id only).
    pub async fn refresh(&mut self) -> anyhow::Result<()> {
        if let Some(at) = self.retry_at
            && std::time::Instant::now() < at
        {
            return Err(anyhow!(
                "{} (retrying in {:?})",
                self.last_error.as_deref().unwrap_or("CRI unavailable"),
                at - std::time::Instant::now()
            ));
        }
        let began = std::time::Instant::now();
        let result = self.refresh_inner().await;
        match &result {
            Ok(()) => {
                self.last_error = None;
                self.retry_at = None;
            }
            Err(e) => {
                self.last_error = Some(format!("{e:#}"));
                // A quick failure (no socket, connection refused) costs nothing to
                // retry; a slow one (a hung runtime) is not retried for a while.
                if began.elapsed() > Duration::from_secs(1) {
                    self.retry_at = Some(std::time::Instant::now() + RETRY_AFTER);
                }
                // Reconnect next time: the runtime may have restarted.
                self.client = None;
            }
        }
        result
    }

    async fn refresh_inner(&mut self) -> anyhow::Result<()> {
        let client = self.client().await?;
        let pods = client.pods().await?;
        let containers = client.containers().await?;
        let mut client = client.clone();
        self.pods = pods
            .into_iter()
            .map(|p| (p.id.clone(), pod_info(p)))
            .collect();
        let mut next = HashMap::new();
        for c in containers {
            if let Some(known) = self.containers.remove(&c.id) {
                next.insert(c.id.clone(), known);
                continue;
            }
            let mut image = c
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default();
            if let Ok(status) = client.container_status(&c.id, false).await
                && let Some(s) = status.status
                && let Some(spec) = s.image
                && !spec.image.is_empty()
            {
                image = spec.image;
            }
            let info = ContainerInfo {
                id: c.id.clone(),
                pod_id: c.pod_sandbox_id,
                name: c.metadata.map(|m| m.name).unwrap_or_default(),
                image,
            };
            next.insert(c.id, info);
        }
        self.containers = next;
        Ok(())
    }

    /// What the CRI says about a container id, or a pod sandbox id.
    pub fn lookup(&self, id: &str) -> Option<CriMeta> {
        if let Some(c) = self.containers.get(id) {
            return Some(CriMeta {
                pod: self.pods.get(&c.pod_id).cloned().unwrap_or_default(),
                container: Some(c.clone()),
            });
        }
        self.pods.get(id).map(|p| CriMeta {
            pod: p.clone(),
            container: None,
        })
    }

    pub fn pod(&self, id: &str) -> Option<&PodInfo> {
        self.pods.get(id)
    }

    pub fn knows(&self, id: &str) -> bool {
        self.containers.contains_key(id) || self.pods.contains_key(id)
    }
}
