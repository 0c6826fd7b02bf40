//! Where the start hold applies: the cgroups below which a new container may appear.
//! An exec in a cgroup no binding knows, below one of these, waits until the agent has
//! looked at it (see the probe's `hold`).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// The hold roots, as paths relative to the cgroup v2 root:
/// - for each selector's `cgroupPath`, the directory its literal part names (for
///   `pods/web-*`, `pods`); a pattern with no literal directory (`*`, `*/x`) gives none,
///   rather than holding every new cgroup on the node;
/// - for each container found, the cgroup its own sits in (a pod's, a runtime's parent);
/// - for each container found below kubelet's `kubepods` tree, its top (new pods appear
///   anywhere below it).
///
/// Every one of these was named by the node's configuration or by a runtime's state,
/// never by a workload: a container's processes cannot create cgroups outside their own.
pub fn hold_root_paths<'a>(
    selector_paths: impl IntoIterator<Item = &'a str>,
    container_paths: impl IntoIterator<Item = &'a str>,
) -> BTreeSet<String> {
    let mut roots = BTreeSet::new();
    for pattern in selector_paths {
        let literal: Vec<&str> = pattern
            .split('/')
            .filter(|c| !c.is_empty())
            .take_while(|c| !c.contains(['*', '?', '[', '{']))
            .collect();
        // The literal components name the directory only when a pattern follows them;
        // a fully literal path names the container's cgroup itself: its parent holds.
        let whole = literal.len() == pattern.split('/').filter(|c| !c.is_empty()).count();
        let dir = if whole {
            &literal[..literal.len().saturating_sub(1)]
        } else {
            &literal[..]
        };
        if !dir.is_empty() {
            roots.insert(dir.join("/"));
        }
    }
    for path in container_paths {
        let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        if components.len() >= 2 {
            roots.insert(components[..components.len() - 1].join("/"));
        }
        if let Some(top) = components.iter().position(|c| c.starts_with("kubepods"))
            && top + 1 < components.len()
        {
            roots.insert(components[..=top].join("/"));
        }
    }
    roots
}

/// The hold roots of the policies in `table` and the containers in `index`, by cgroup id,
/// with their levels.
pub fn roots(
    index: &super::index::CgroupIndex,
    table: &super::table::PolicyTable,
) -> BTreeMap<u64, u32> {
    let selectors = table
        .entries()
        .iter()
        .filter_map(|e| Some(e.policy.selector.cgroup_path.as_ref()?.text.as_str()));
    let containers = index.workloads().values().filter(|w| w.is_container());
    resolve(
        index.root(),
        selectors,
        containers.map(|w| w.cgroup_path.as_str()),
    )
}

/// [`hold_root_paths`] that exist below `root`, by cgroup id, with their levels.
pub fn resolve<'a>(
    root: &Path,
    selector_paths: impl IntoIterator<Item = &'a str>,
    container_paths: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<u64, u32> {
    hold_root_paths(selector_paths, container_paths)
        .into_iter()
        .filter_map(|rel| {
            let id = crate::cgroup::id_of(&root.join(&rel)).ok()?;
            Some((id, crate::cgroup::level(&rel)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::hold_root_paths;

    fn roots(selectors: &[&str], containers: &[&str]) -> Vec<String> {
        hold_root_paths(selectors.iter().copied(), containers.iter().copied())
            .into_iter()
            .collect()
    }

    #[test]
    fn a_selectors_literal_directory_is_a_root() {
        assert_eq!(roots(&["pods/web-*"], &[]), ["pods"]);
        assert_eq!(roots(&["/a/b/*/c"], &[]), ["a/b"]);
        assert_eq!(
            roots(&["system.slice/docker-?*.scope"], &[]),
            ["system.slice"]
        );
        assert_eq!(roots(&["a/b/exact"], &[]), ["a/b"]);
    }

    #[test]
    fn a_pattern_with_no_literal_directory_holds_nothing() {
        assert!(roots(&["*", "*/x", "[ab]/c", "top"], &[]).is_empty());
    }

    #[test]
    fn a_found_containers_parent_and_kubepods_top_are_roots() {
        assert_eq!(
            roots(
                &[],
                &[
                    "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-ab.scope"
                ]
            ),
            [
                "kubepods.slice",
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice"
            ]
        );
        assert_eq!(
            roots(&[], &["machine.slice/libpod-1.scope"]),
            ["machine.slice"]
        );
        assert!(roots(&[], &["lonely"]).is_empty(), "the root is never one");
    }
}
