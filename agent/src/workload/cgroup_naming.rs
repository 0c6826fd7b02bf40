//! What a cgroup path says about its workload: the container engine, the container id,
//! the Kubernetes pod UID and QoS class. Pure string parsing, no I/O.
//!
//! Shapes recognised (paths relative to the cgroup v2 root):
//!
//! | setup | container cgroup |
//! | --- | --- |
//! | kubelet, systemd driver, containerd | `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope` |
//! | kubelet, systemd driver, CRI-O | `…/kubepods-besteffort-pod<uid>.slice/crio-<id>.scope` (its monitor: `crio-conmon-<id>.scope`) |
//! | kubelet, systemd driver, cri-dockerd | `…/kubepods-pod<uid>.slice/docker-<id>.scope` (guaranteed QoS has no QoS slice) |
//! | kubelet, cgroupfs driver | `kubepods/besteffort/pod<uid>/<id>`, `kubepods/pod<uid>/<id>`, CRI-O: `…/pod<uid>/crio-<id>` |
//! | kind and other nested kubelets | `kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope` |
//! | Docker | `system.slice/docker-<id>.scope`, cgroupfs: `docker/<id>` |
//! | Podman | `machine.slice/libpod-<id>.scope` (and its `container` child), `…/user@1000.service/user.slice/libpod-<id>.scope`, cgroupfs: `libpod_parent/libpod-<id>`; monitor: `libpod-conmon-<id>.scope` |
//! | Kata (`sandbox_cgroup_only`) | `…/pod<uid>/kata_<sandbox-id>`; the VMM overhead: `kata_overhead/<id>` |

use serde::Serialize;

pub use crate::model::{Engine, Kind};

/// Kubernetes QoS class, from the pod cgroup's parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// What a cgroup path says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CgroupName {
    pub kind: Kind,
    pub engine: Option<Engine>,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
    pub qos: Option<Qos>,
}

/// Parse a cgroup path relative to the v2 root (a leading `/` is ignored). `None`: not
/// a container, pod or runtime cgroup as far as its name tells.
pub fn parse(rel: &str) -> Option<CgroupName> {
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    let last = *parts.last()?;
    // Pod: find the deepest pod component, and what follows it.
    let mut pod: Option<(usize, String, Option<Qos>)> = None;
    for (i, p) in parts.iter().enumerate() {
        if let Some((uid, qos)) = pod_component(&parts[..i], p) {
            pod = Some((i, uid, qos));
        }
    }
    let (pod_uid, qos) = match &pod {
        Some((_, uid, qos)) => (Some(uid.clone()), *qos),
        None => (None, None),
    };
    if let Some((i, _, _)) = &pod
        && *i == parts.len() - 1
    {
        return Some(CgroupName {
            kind: Kind::Pod,
            engine: None,
            container_id: None,
            pod_uid,
            qos,
        });
    }
    // Kata's overhead cgroup holds VMMs of every sandbox.
    if parts.first() == Some(&"kata_overhead") {
        return Some(CgroupName {
            kind: Kind::Overhead,
            engine: Some(Engine::Kata),
            container_id: parts.get(1).map(|s| s.to_string()),
            pod_uid,
            qos,
        });
    }
    // Podman's systemd scope may hold the container in a `container` child.
    let (leaf, leaf_index) =
        if last == "container" && parts.len() >= 2 && parts[parts.len() - 2].starts_with("libpod-")
        {
            (parts[parts.len() - 2], parts.len() - 2)
        } else {
            (last, parts.len() - 1)
        };
    if let Some((kind, engine, id)) = scope_component(leaf) {
        return Some(CgroupName {
            kind,
            engine: Some(engine),
            container_id: Some(id),
            pod_uid,
            qos,
        });
    }
    // cgroupfs driver: the direct child of a pod cgroup is a container, named by its id.
    if let Some((i, _, _)) = &pod
        && *i + 1 == leaf_index
    {
        return Some(CgroupName {
            kind: Kind::Container,
            engine: None,
            container_id: Some(leaf.to_string()),
            pod_uid,
            qos,
        });
    }
    // Docker's cgroupfs driver: docker/<id>.
    if parts.len() >= 2 && parts[parts.len() - 2] == "docker" && is_hex_id(last) {
        return Some(CgroupName {
            kind: Kind::Container,
            engine: Some(Engine::Docker),
            container_id: Some(last.to_string()),
            pod_uid: None,
            qos: None,
        });
    }
    None
}

/// `kubepods-besteffort-pod<uid>.slice` (systemd) or `pod<uid>` under `kubepods`
/// (cgroupfs): the pod UID (dashes restored) and the QoS class.
fn pod_component(before: &[&str], p: &str) -> Option<(String, Option<Qos>)> {
    if let Some(stem) = p.strip_suffix(".slice") {
        // kubepods-pod<uid>, kubepods-burstable-pod<uid>, kubelet-kubepods-besteffort-pod<uid>
        let i = stem.find("kubepods")?;
        let rest = &stem[i + "kubepods".len()..];
        let (qos, uid) = if let Some(u) = rest.strip_prefix("-besteffort-pod") {
            (Qos::BestEffort, u)
        } else if let Some(u) = rest.strip_prefix("-burstable-pod") {
            (Qos::Burstable, u)
        } else if let Some(u) = rest.strip_prefix("-pod") {
            (Qos::Guaranteed, u)
        } else {
            return None;
        };
        if uid.is_empty() {
            return None;
        }
        return Some((uid.replace('_', "-"), Some(qos)));
    }
    let uid = p.strip_prefix("pod")?;
    if uid.is_empty() || !before.contains(&"kubepods") {
        return None;
    }
    let qos = match before.last() {
        Some(&"besteffort") => Some(Qos::BestEffort),
        Some(&"burstable") => Some(Qos::Burstable),
        Some(&"kubepods") => Some(Qos::Guaranteed),
        _ => None,
    };
    Some((uid.to_string(), qos))
}

/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`,
/// `libpod-<id>.scope`, their monitors, `kata_<id>`; `.scope` is optional (cgroupfs).
fn scope_component(p: &str) -> Option<(Kind, Engine, String)> {
    let stem = p.strip_suffix(".scope").unwrap_or(p);
    let table: &[(&str, Kind, Engine)] = &[
        ("cri-containerd-", Kind::Container, Engine::Containerd),
        ("crio-conmon-", Kind::Monitor, Engine::CriO),
        ("crio-", Kind::Container, Engine::CriO),
        ("docker-", Kind::Container, Engine::Docker),
        ("libpod-conmon-", Kind::Monitor, Engine::Podman),
        ("libpod-", Kind::Container, Engine::Podman),
        ("kata_", Kind::Container, Engine::Kata),
    ];
    for (prefix, kind, engine) in table {
        if let Some(id) = stem.strip_prefix(prefix)
            && !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            // `docker-<id>` must look like an id: `docker-compose.scope` is not a container.
            if matches!(engine, Engine::Docker | Engine::Podman | Engine::CriO) && !is_hex_id(id) {
                continue;
            }
            return Some((*kind, *engine, id.to_string()));
        }
    }
    None
}

/// A container id as engines make them: 12 to 64 lowercase hex digits.
fn is_hex_id(s: &str) -> bool {
    (12..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4e0a3f1c9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";
    const UID: &str = "1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e";

    fn uid_us() -> String {
        UID.replace('-', "_")
    }

    fn container(rel: &str) -> CgroupName {
        let n = parse(rel).unwrap_or_else(|| panic!("{rel}: not recognised"));
        assert_eq!(n.kind, Kind::Container, "{rel}");
        n
    }

    #[test]
    fn systemd_driver_containerd_every_qos() {
        for (slices, qos) in [
            (
                format!(
                    "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
                    uid_us()
                ),
                Qos::BestEffort,
            ),
            (
                format!(
                    "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
                    uid_us()
                ),
                Qos::Burstable,
            ),
            (
                format!("kubepods.slice/kubepods-pod{}.slice", uid_us()),
                Qos::Guaranteed,
            ),
        ] {
            let n = container(&format!("{slices}/cri-containerd-{ID}.scope"));
            assert_eq!(n.engine, Some(Engine::Containerd));
            assert_eq!(n.container_id.as_deref(), Some(ID));
            assert_eq!(n.pod_uid.as_deref(), Some(UID), "dashes restored");
            assert_eq!(n.qos, Some(qos));
            // The pod cgroup itself.
            let p = parse(&slices).unwrap();
            assert_eq!(p.kind, Kind::Pod);
            assert_eq!(p.pod_uid.as_deref(), Some(UID));
            assert_eq!(p.qos, Some(qos));
            assert_eq!(p.container_id, None);
        }
    }

    #[test]
    fn systemd_driver_crio_and_its_monitor() {
        let base = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            uid_us()
        );
        let n = container(&format!("{base}/crio-{ID}.scope"));
        assert_eq!(n.engine, Some(Engine::CriO));
        assert_eq!(n.container_id.as_deref(), Some(ID));
        let m = parse(&format!("{base}/crio-conmon-{ID}.scope")).unwrap();
        assert_eq!(m.kind, Kind::Monitor);
        assert_eq!(m.container_id.as_deref(), Some(ID));
        assert_eq!(m.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn systemd_driver_cri_dockerd() {
        let n = container(&format!(
            "kubepods.slice/kubepods-pod{}.slice/docker-{ID}.scope",
            uid_us()
        ));
        assert_eq!(n.engine, Some(Engine::Docker));
        assert_eq!(n.qos, Some(Qos::Guaranteed));
    }

    #[test]
    fn cgroupfs_driver_every_qos() {
        for (base, qos) in [
            (format!("kubepods/besteffort/pod{UID}"), Qos::BestEffort),
            (format!("kubepods/burstable/pod{UID}"), Qos::Burstable),
            (format!("kubepods/pod{UID}"), Qos::Guaranteed),
        ] {
            let n = container(&format!("{base}/{ID}"));
            assert_eq!(n.engine, None, "cgroupfs names do not tell the engine");
            assert_eq!(n.container_id.as_deref(), Some(ID));
            assert_eq!(n.pod_uid.as_deref(), Some(UID));
            assert_eq!(n.qos, Some(qos));
            assert_eq!(parse(&base).unwrap().kind, Kind::Pod);
            // CRI-O under the cgroupfs driver names its scopes anyway.
            let c = container(&format!("{base}/crio-{ID}"));
            assert_eq!(c.engine, Some(Engine::CriO));
            assert_eq!(
                parse(&format!("{base}/crio-conmon-{ID}")).unwrap().kind,
                Kind::Monitor
            );
        }
    }

    #[test]
    fn cgroupfs_driver_short_ids_and_leading_slash() {
        // Test clusters and `ctr` use ids that are not 64 hex digits.
        let n = container(&format!("/kubepods/besteffort/pod{UID}/my-container-1"));
        assert_eq!(n.container_id.as_deref(), Some("my-container-1"));
    }

    #[test]
    fn nested_kubelet_as_in_kind() {
        let rel = format!(
            "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
            uid_us()
        );
        let n = container(&rel);
        assert_eq!(n.pod_uid.as_deref(), Some(UID));
        assert_eq!(n.qos, Some(Qos::BestEffort));
        // Under a kind node's own cgroup as well.
        let n = container(&format!("system.slice/docker-{ID}.scope/{rel}"));
        assert_eq!(n.engine, Some(Engine::Containerd));
        assert_eq!(n.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn docker_without_kubernetes() {
        let n = container(&format!("system.slice/docker-{ID}.scope"));
        assert_eq!(n.engine, Some(Engine::Docker));
        assert_eq!(n.pod_uid, None);
        assert_eq!(n.qos, None);
        let n = container(&format!("docker/{ID}"));
        assert_eq!(n.engine, Some(Engine::Docker));
        // Not containers: docker's own service, a unit that merely starts with docker-.
        assert_eq!(parse("system.slice/docker.service"), None);
        assert_eq!(parse("system.slice/docker-compose@web.service"), None);
        assert_eq!(parse("system.slice/docker-compose.scope"), None);
        assert_eq!(parse("docker"), None);
        assert_eq!(parse("docker/not-an-id"), None);
    }

    #[test]
    fn podman_root_rootless_and_cgroupfs() {
        let n = container(&format!("machine.slice/libpod-{ID}.scope"));
        assert_eq!(n.engine, Some(Engine::Podman));
        assert_eq!(n.container_id.as_deref(), Some(ID));
        let n = container(&format!("machine.slice/libpod-{ID}.scope/container"));
        assert_eq!(n.container_id.as_deref(), Some(ID));
        let n = container(&format!(
            "user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
        ));
        assert_eq!(n.engine, Some(Engine::Podman));
        let n = container(&format!("libpod_parent/libpod-{ID}"));
        assert_eq!(n.engine, Some(Engine::Podman));
        let m = parse(&format!("machine.slice/libpod-conmon-{ID}.scope")).unwrap();
        assert_eq!(m.kind, Kind::Monitor);
    }

    #[test]
    fn kata_sandbox_and_overhead() {
        let n = container(&format!("kubepods/besteffort/pod{UID}/kata_{ID}"));
        assert_eq!(n.engine, Some(Engine::Kata));
        assert_eq!(n.container_id.as_deref(), Some(ID));
        let o = parse(&format!("kata_overhead/{ID}")).unwrap();
        assert_eq!(o.kind, Kind::Overhead);
        assert_eq!(o.engine, Some(Engine::Kata));
    }

    #[test]
    fn ordinary_cgroups_are_not_workloads() {
        for rel in [
            "",
            "/",
            "init.scope",
            "system.slice",
            "system.slice/containerd.service",
            "system.slice/kubelet.service",
            "user.slice/user-0.slice/session-1.scope",
            "kubepods",
            "kubepods.slice",
            "kubepods/besteffort",
            "kubepods.slice/kubepods-besteffort.slice",
            "sysfence/run-1234",
            "my-app/pod-ish",
            "podman/pod123",
        ] {
            assert_eq!(parse(rel), None, "{rel}");
        }
    }

    #[test]
    fn deeper_than_a_container_is_not_the_container() {
        // A cgroup a container made for itself: the ancestor fallback covers it, the
        // name does not make it a second workload.
        assert_eq!(
            parse(&format!("kubepods/besteffort/pod{UID}/{ID}/sub")),
            None
        );
    }
}
