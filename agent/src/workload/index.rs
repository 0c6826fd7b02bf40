//! The cgroup index: which cgroups exist and what each one is (a [`Workload`]), from
//! cgroupfs, the runtimes' state directories and the CRI. It binds nothing: the
//! [`super::binder`] decides what each workload gets.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{
    Engine, Kind, Runtime, Workload, cgroup_naming,
    cri::{self, CriCache},
    runtime::{self, Annotations, StateEntry},
    socket::StartRequest,
};
use crate::cgroup;

/// Workloads kept after their cgroup went, to name late violation events.
const DEPARTED_KEPT: usize = 512;

/// Where the index looks.
pub struct IndexOptions {
    /// Mount point of the cgroup v2 hierarchy.
    pub cgroup_root: PathBuf,
    /// CRI sockets to ask; `None`: those of [`cri::DEFAULT_SOCKETS`] that exist.
    pub cri_sockets: Option<Vec<PathBuf>>,
    /// Runtime state roots to read besides the default ones.
    pub runtime_roots: Vec<PathBuf>,
}

pub struct CgroupIndex {
    root: PathBuf,
    hybrid: bool,
    workloads: HashMap<u64, Workload>,
    by_path: HashMap<String, u64>,
    /// Recently removed workloads, to name late violation events.
    departed: VecDeque<Workload>,
    extra_roots: Vec<PathBuf>,
    /// Containers in the runtimes' state, by v2 cgroup path and by id.
    states: Vec<StateEntry>,
    state_by_cgroup: HashMap<String, usize>,
    state_by_id: HashMap<String, usize>,
    /// Containers whose state was read for a `start` but whose root is not scanned.
    started: HashMap<String, StateEntry>,
    annotations: HashMap<PathBuf, Annotations>,
    cri: Vec<CriCache>,
    /// v2 cgroups made for sandboxes a runtime left in the v2 root: path → whether
    /// this agent created the directory.
    adopted: HashMap<String, bool>,
    /// A runtime is creating a container (its state directory exists, its state file
    /// not yet): new empty cgroups may be that container's.
    creating: bool,
    /// Processes the probe held at an exec (the start hold): a container whose init is
    /// one has exec'd its entrypoint, whatever its runtime's state still says.
    execd: std::collections::HashSet<u32>,
}

impl CgroupIndex {
    /// An empty index; [`CgroupIndex::rescan`] fills it.
    pub fn new(options: IndexOptions) -> CgroupIndex {
        let cri_sockets = options.cri_sockets.unwrap_or_else(|| {
            cri::DEFAULT_SOCKETS
                .iter()
                .map(PathBuf::from)
                .filter(|p| p.exists())
                .collect()
        });
        CgroupIndex {
            hybrid: is_hybrid(&options.cgroup_root),
            root: options.cgroup_root,
            workloads: HashMap::new(),
            by_path: HashMap::new(),
            departed: VecDeque::new(),
            extra_roots: options.runtime_roots,
            states: Vec::new(),
            state_by_cgroup: HashMap::new(),
            state_by_id: HashMap::new(),
            started: HashMap::new(),
            annotations: HashMap::new(),
            cri: cri_sockets.into_iter().map(CriCache::new).collect(),
            adopted: HashMap::new(),
            creating: false,
            execd: Default::default(),
        }
    }

    /// Mount point of the cgroup v2 hierarchy.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every workload now, by cgroup id.
    pub fn workloads(&self) -> &HashMap<u64, Workload> {
        &self.workloads
    }

    pub fn get(&self, id: u64) -> Option<&Workload> {
        self.workloads.get(&id)
    }

    /// The directory of the cgroup `id` (under the v2 root), if indexed.
    pub fn dir_of(&self, id: u64) -> Option<PathBuf> {
        self.get(id).map(|w| self.root.join(&w.cgroup_path))
    }

    /// The processes the probe holds at their exec now (replacing the last ones).
    pub fn note_execd(&mut self, pids: impl IntoIterator<Item = u32>) {
        self.execd = pids.into_iter().collect();
    }

    /// Whether the last rescan knew that `pid` was held at its exec (it was noted
    /// before that rescan read the runtimes' state).
    pub fn execd_noted(&self, pid: u32) -> bool {
        self.execd.contains(&pid)
    }

    /// The cgroup id of a path relative to the v2 root, if indexed.
    pub fn id_of_path(&self, rel: &str) -> Option<u64> {
        self.by_path.get(rel).copied()
    }

    /// Whether binding this workload now would judge its runtime's own setup: a
    /// container that waits for `start` (its runtime's state says so: `exec.fifo`), an
    /// empty container cgroup its runtime is about to fill, or, while a runtime is
    /// creating a container (a state directory without its state file yet), a cgroup no
    /// runtime state accounts for. Only the runtimes' state decides: the names the
    /// processes inside give themselves (`runc:[2:INIT]`) are the workload's claims.
    pub fn runtime_busy(&self, w: &Workload) -> bool {
        if let Some(&i) = self.state_by_cgroup.get(&w.cgroup_path) {
            let s = &self.states[i];
            // `runc run` removes `exec.fifo` only after its init has exec'd.
            return s.pending_start && !s.pid.is_some_and(|p| self.execd.contains(&p));
        }
        let empty = cgroup_is_empty(&self.root.join(&w.cgroup_path));
        if empty {
            return w.kind == Some(Kind::Container) || self.creating;
        }
        self.creating && matches!(w.kind, None | Some(Kind::Container))
    }

    /// The state roots read on every rescan (defaults that exist, and extra ones).
    pub fn state_roots(&self) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = runtime::DEFAULT_ROOTS
            .iter()
            .map(|(d, _)| PathBuf::from(d))
            .filter(|p| p.is_dir())
            .collect();
        for (parent, _) in runtime::DEFAULT_ROOT_PARENTS {
            if let Ok(dir) = std::fs::read_dir(parent) {
                roots.extend(dir.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
        }
        roots.extend(self.extra_roots.iter().cloned());
        roots.sort();
        roots.dedup();
        roots
    }

    /// Watch the cgroup tree and the runtime state roots; each change sends a wake-up.
    pub fn spawn_watcher(&self, wake: mpsc::Sender<()>) -> anyhow::Result<()> {
        use inotify::{Inotify, WatchMask};
        let root = self.root.clone();
        let state_roots = self.state_roots();
        let mut inotify = Inotify::init().context("inotify_init")?;
        let mask = WatchMask::CREATE | WatchMask::DELETE | WatchMask::ONLYDIR;
        let state_mask = WatchMask::CREATE | WatchMask::DELETE | WatchMask::MOVED_TO;
        let mut watches = inotify.watches();
        watches
            .add(&root, mask)
            .with_context(|| format!("watching {}", root.display()))?;
        for (_, abs) in cgroup::walk(&root) {
            let _ = watches.add(&abs, mask);
        }
        for r in &state_roots {
            let _ = watches.add(r, state_mask);
        }
        std::thread::Builder::new()
            .name("workload-watch".into())
            .spawn(move || {
                let mut buffer = [0u8; 8192];
                loop {
                    if let Err(e) = inotify.read_events_blocking(&mut buffer) {
                        warn!(error = %e, "cgroup watch stopped; relying on periodic rescans");
                        return;
                    }
                    // New directories need watches of their own; adding one twice is harmless.
                    let mut w = inotify.watches();
                    for (_, abs) in cgroup::walk(&root) {
                        let _ = w.add(&abs, mask);
                    }
                    if wake.blocking_send(()).is_err() {
                        return;
                    }
                }
            })?;
        Ok(())
    }

    pub async fn refresh_cri(&mut self) {
        for cache in &mut self.cri {
            let had_error = cache.last_error.is_some();
            if let Err(e) = cache.refresh().await
                && !had_error
            {
                warn!(event = "cri_unavailable", socket = %cache.socket.display(), error = %format!("{e:#}"), "CRI metadata unavailable; going on with cgroupfs and runtime state");
            }
        }
    }

    fn refresh_states(&mut self) {
        self.states.clear();
        self.creating = false;
        for root in self.state_roots() {
            let scan = runtime::scan_root(&root);
            self.states.extend(scan.states);
            self.creating |= scan.creating;
        }
        let scanned: HashSet<(PathBuf, String)> = self
            .states
            .iter()
            .map(|s| (s.root.clone(), s.id.clone()))
            .collect();
        // Containers started through the wrapper whose root is not a scanned one: keep
        // them while their init process lives.
        self.started.retain(|_, s| {
            s.pid
                .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
        });
        for s in self.started.values_mut() {
            s.pending_start &= s.root.join(&s.id).join("exec.fifo").exists();
        }
        for s in self.started.values() {
            if !scanned.contains(&(s.root.clone(), s.id.clone())) {
                self.states.push(s.clone());
            }
        }
        // Annotations of bundles that are gone would pile up on a busy node.
        let bundles: HashSet<&PathBuf> = self
            .states
            .iter()
            .filter_map(|s| s.bundle.as_ref())
            .collect();
        self.annotations.retain(|b, _| bundles.contains(b));
        self.index_states();
    }

    fn index_states(&mut self) {
        self.state_by_cgroup.clear();
        self.state_by_id.clear();
        for (i, s) in self.states.iter().enumerate() {
            self.state_by_id.insert(s.id.clone(), i);
            let Some(pid) = s.pid else { continue };
            match runtime::v2_cgroup_of(pid) {
                Some(rel) if !rel.is_empty() => {
                    self.state_by_cgroup.insert(rel, i);
                }
                // Left in the v2 root (hybrid): known by its adopted cgroup, if any.
                Some(_) => {
                    if let Some(v1) = self.v1_of(s)
                        && self.adopted.contains_key(&v1)
                    {
                        self.state_by_cgroup.insert(v1, i);
                    }
                }
                None => {}
            }
        }
    }

    fn v1_of(&self, s: &StateEntry) -> Option<String> {
        s.v1_cgroup.clone().or_else(|| {
            let text = std::fs::read_to_string(format!("/proc/{}/cgroup", s.pid?)).ok()?;
            runtime::v1_cgroup_of(&text)
        })
    }

    /// Read every source again and rebuild the table: what exists, and what it is.
    /// `wanted` says whether a policy would bind a workload (a sandbox left in the v2
    /// root is placed in a cgroup of its own only then).
    pub async fn rescan(&mut self, wanted: &dyn Fn(&Workload) -> bool) {
        // The cgroups are walked before the runtimes' state is read. runc, crun and
        // youki make a container's state directory before its cgroup, so every cgroup
        // seen here that a runtime is still setting up shows as `creating` (or as a
        // state that waits for `start`) in the read that follows. The other way round,
        // a container created between the two reads would look settled and be bound
        // under its runtime's own setup.
        let walk = |root: &Path| -> Vec<(u64, String)> {
            cgroup::walk(root)
                .into_iter()
                .filter_map(|(rel, abs)| Some((cgroup::id_of(&abs).ok()?, rel)))
                .collect()
        };
        let mut seen = walk(&self.root);
        self.refresh_cri().await;
        self.refresh_states();
        if self.adopt_sandboxes(wanted) {
            seen = walk(&self.root);
        }
        let mut next = HashMap::new();
        for (id, rel) in seen {
            let mut w = self.classify(id, &rel);
            if let Some(earlier) = self.workloads.get(&id) {
                w.keep_identity_from(earlier);
            }
            if w.is_container() && !self.workloads.contains_key(&id) {
                log_workload(&w);
            }
            next.insert(id, w);
        }
        let old = std::mem::replace(&mut self.workloads, next);
        for (id, w) in old {
            if !self.workloads.contains_key(&id) {
                self.departed.push_back(w);
                if self.departed.len() > DEPARTED_KEPT {
                    self.departed.pop_front();
                }
            }
        }
        self.by_path = self
            .workloads
            .iter()
            .map(|(id, w)| (w.cgroup_path.clone(), *id))
            .collect();
    }

    /// A runtime is about to start container `s.id`: read its state, find (or, on a
    /// hybrid host, make) its v2 cgroup, and index it now. `None`: it stays in the v2
    /// root on a hybrid host because no policy would bind it.
    pub async fn admit_start(
        &mut self,
        s: &StartRequest,
        wanted: &dyn Fn(&Workload) -> bool,
    ) -> anyhow::Result<Option<(u64, String)>> {
        let runtime = Runtime::from_name(&s.runtime);
        // A client names the container; where its state is read from must be a root
        // this agent reads anyway, or a client could hand it any state it wrote.
        if let Some(root) = &s.root {
            let known = self.state_roots();
            let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            if !known.iter().any(|k| canonical(k) == canonical(root)) {
                return Err(anyhow!(
                    "container {}: runtime root {} is not one this agent reads (the runtimes' defaults that exist, their containerd and Docker namespaces, and --runtime-root); refused",
                    s.id,
                    root.display()
                ));
            }
        }
        let state = runtime::read_state(&runtime, s.root.as_deref(), &s.id)?;
        let pid = state
            .pid
            .ok_or_else(|| anyhow!("{} state of {} names no process", s.runtime, s.id))?;
        let mut rel = runtime::v2_cgroup_of(pid)
            .ok_or_else(|| anyhow!("process {pid} of container {} is gone", s.id))?;
        if rel.is_empty() {
            if !self.hybrid {
                return Err(anyhow!(
                    "container {} runs in the cgroup v2 root: it cannot be told apart from the host",
                    s.id
                ));
            }
            match self.adopt_state(&state, wanted)? {
                Some(r) => rel = r,
                None => return Ok(None),
            }
        }
        let id = cgroup::id_of(&self.root.join(&rel))?;
        self.started.insert(
            format!("{}/{}", state.root.display(), state.id),
            state.clone(),
        );
        if let Some(i) = self
            .states
            .iter()
            .position(|x| x.root == state.root && x.id == state.id)
        {
            self.states[i] = state;
        } else {
            self.states.push(state);
        }
        self.index_states();
        // The CRI may not have this container yet (a pod's sandbox starts before the
        // pod is listed); ask again once.
        if !self.cri.is_empty() && !self.cri.iter().any(|c| c.knows(&s.id)) {
            self.refresh_cri().await;
        }
        let w = self.classify(id, &rel);
        if self.workloads.get(&id) != Some(&w) {
            log_workload(&w);
        }
        self.by_path.insert(rel.clone(), id);
        self.workloads.insert(id, w);
        Ok(Some((id, rel)))
    }

    /// Everything the sources say about one cgroup.
    fn classify(&mut self, id: u64, rel: &str) -> Workload {
        let mut w = Workload {
            cgroup_id: id,
            cgroup_path: rel.to_string(),
            ..Workload::default()
        };
        if let Some(n) = cgroup_naming::parse(rel) {
            w.kind = Some(n.kind);
            w.engine = n.engine;
            w.container_id = n.container_id;
            w.pod_uid = n.pod_uid;
            if n.engine == Some(Engine::Kata) {
                w.runtime = Some(Runtime::Kata);
            }
        }
        // The runtime's state vouches for this cgroup when the container's init
        // process is in it; a container id read from the cgroup's name is only a claim.
        w.vouched = self.state_by_cgroup.contains_key(rel);
        let state = self.state_by_cgroup.get(rel).copied().or_else(|| {
            w.container_id
                .as_ref()
                .and_then(|c| self.state_by_id.get(c).copied())
        });
        let mut labels_known = false;
        if let Some(i) = state {
            let s = self.states[i].clone();
            if w.runtime.is_none() {
                w.runtime = Some(s.runtime.clone());
            }
            w.container_id.get_or_insert(s.id.clone());
            w.kind.get_or_insert(Kind::Container);
            w.adopted = self.adopted.contains_key(rel);
            if let Some(bundle) = &s.bundle {
                let a = self
                    .annotations
                    .entry(bundle.clone())
                    .or_insert_with(|| {
                        runtime::parse_annotations(&runtime::bundle_annotations(bundle))
                    })
                    .clone();
                w.container = a.container;
                w.pod = a.pod;
                w.namespace = a.namespace;
                w.image = a.image;
                w.runtime_handler = a.runtime_handler;
                if w.pod_uid.is_none() {
                    w.pod_uid = a.pod_uid;
                }
                w.sandbox_container = a.sandbox == Some(true);
                if let Some(pod_id) = &a.sandbox_id
                    && let Some(pod) = self.cri.iter().find_map(|c| c.pod(pod_id))
                {
                    labels_known = true;
                    w.labels = pod.labels.clone();
                    if !pod.runtime_handler.is_empty() {
                        w.runtime_handler = Some(pod.runtime_handler.clone());
                    }
                }
            }
        }
        if let Some(cid) = &w.container_id
            && let Some(meta) = self.cri.iter().find_map(|c| c.lookup(cid))
        {
            let p = meta.pod;
            w.pod = Some(p.name).filter(|s| !s.is_empty()).or(w.pod);
            w.namespace = Some(p.namespace).filter(|s| !s.is_empty()).or(w.namespace);
            w.pod_uid = Some(p.uid).filter(|s| !s.is_empty()).or(w.pod_uid);
            w.labels = p.labels;
            labels_known = true;
            if !p.runtime_handler.is_empty() {
                w.runtime_handler = Some(p.runtime_handler);
            }
            match meta.container {
                Some(c) => {
                    w.container = Some(c.name).filter(|s| !s.is_empty()).or(w.container);
                    w.image = Some(c.image).filter(|s| !s.is_empty()).or(w.image);
                    w.sandbox_container = false;
                }
                None => w.sandbox_container = true,
            }
            w.kind.get_or_insert(Kind::Container);
        }
        // The runtime comes from the runtime's own state, the CRI's runtime handler, the
        // wrapper's `--runtime`, or the name the runtime gave the cgroup: never from the
        // names of the processes inside, which are the workload's own claims.
        if w.runtime.is_none()
            && let Some(h) = &w.runtime_handler
            && matches!(Runtime::from_name(h), Runtime::Runsc | Runtime::Kata)
        {
            w.runtime = Some(Runtime::from_name(h));
        }
        w.unknown = self.unknown_identity(&w, state.is_some(), labels_known);
        w.awaiting_cri = w.kind == Some(Kind::Container)
            && !labels_known
            && (w.pod_uid.is_some() || w.namespace.is_some())
            && self.cri.iter().any(|c| c.last_error.is_none());
        w
    }

    /// The state root of container `id` (a runtime's `--root`), as of the last rescan.
    pub fn state_root(&self, id: &str) -> Option<&Path> {
        self.state_by_id
            .get(id)
            .map(|&i| self.states[i].root.as_path())
    }

    /// Whether a runtime's state names container `id` (as of the last rescan).
    pub fn runtime_knows(&self, id: &str) -> bool {
        self.state_by_id.contains_key(id)
    }

    /// Complete a container that a bundle describes before `create` (see
    /// [`super::sandbox::prospective_workload`]) with what the CRI says of it and of its
    /// pod (`pod_id`, the bundle's sandbox id): labels, names, runtime handler.
    pub fn complete_from_cri(&self, w: &mut Workload, pod_id: Option<&str>) {
        let mut labels_known = false;
        if let Some(pod) = pod_id.and_then(|id| self.cri.iter().find_map(|c| c.pod(id))) {
            labels_known = true;
            w.labels = pod.labels.clone();
            if !pod.runtime_handler.is_empty() {
                w.runtime_handler = Some(pod.runtime_handler.clone());
            }
        }
        if let Some(meta) = w
            .container_id
            .as_deref()
            .and_then(|cid| self.cri.iter().find_map(|c| c.lookup(cid)))
        {
            let p = meta.pod;
            w.pod = Some(p.name).filter(|s| !s.is_empty()).or(w.pod.take());
            w.namespace = Some(p.namespace)
                .filter(|s| !s.is_empty())
                .or(w.namespace.take());
            w.labels = p.labels;
            labels_known = true;
            if let Some(c) = meta.container {
                w.container = Some(c.name)
                    .filter(|s| !s.is_empty())
                    .or(w.container.take());
                w.image = Some(c.image).filter(|s| !s.is_empty()).or(w.image.take());
            }
        }
        w.unknown = self.unknown_identity(w, true, labels_known);
    }

    /// Why a container's identity cannot be established, if it cannot: in a pod while
    /// the CRI is unavailable, so its labels are unknown; or no runtime state and no
    /// CRI accounts for it at all (a cgroup named like a container). A CRI that answers
    /// but does not list a container yet (a pod sandbox starting inside RunPodSandbox)
    /// is not an outage: such a container gets the policy its known fields select.
    fn unknown_identity(&self, w: &Workload, state: bool, labels_known: bool) -> Option<String> {
        if w.kind != Some(Kind::Container) {
            return None;
        }
        let cid = w.container_id.as_deref().unwrap_or("?");
        let in_pod = w.pod_uid.is_some() || w.namespace.is_some();
        if in_pod
            && !labels_known
            && let Some(error) = self.cri.iter().find_map(|c| c.last_error.clone())
        {
            return Some(format!(
                "the CRI is unavailable ({error}): the pod labels of container {cid} are unknown"
            ));
        }
        if !state && !labels_known && w.runtime.is_none() {
            return Some(format!(
                "no runtime state and no CRI account for container {cid}: its name is its only claim"
            ));
        }
        None
    }

    /// Place sandboxes that a runtime left in the v2 root (runsc on a hybrid host) in a
    /// v2 cgroup named after their v1 cgroup, when a policy would bind them.
    /// Whether a container was moved (its new cgroup is then to be walked).
    fn adopt_sandboxes(&mut self, wanted: &dyn Fn(&Workload) -> bool) -> bool {
        if !self.hybrid {
            return false;
        }
        let candidates: Vec<StateEntry> = self
            .states
            .iter()
            .filter(|s| {
                s.pid
                    .is_some_and(|p| runtime::v2_cgroup_of(p).is_some_and(|r| r.is_empty()))
            })
            .cloned()
            .collect();
        let mut changed = false;
        for s in candidates {
            match self.adopt_state(&s, wanted) {
                Ok(Some(_)) => changed = true,
                Ok(None) => {}
                Err(e) => {
                    warn!(event = "adopt_failed", container_id = %s.id, error = %format!("{e:#}"))
                }
            }
        }
        if changed {
            self.index_states();
        }
        changed
    }

    /// Adopt one container's processes into the v2 mirror of its v1 cgroup, if a policy
    /// would bind it there. Returns the v2 path used.
    fn adopt_state(
        &mut self,
        s: &StateEntry,
        wanted: &dyn Fn(&Workload) -> bool,
    ) -> anyhow::Result<Option<String>> {
        let v1 = self
            .v1_of(s)
            .ok_or_else(|| anyhow!("container {} has no v1 cgroup to mirror", s.id))?;
        // Would any policy bind it? Classify as if it were there.
        let probe_w = {
            let mut w = Workload {
                cgroup_path: v1.clone(),
                runtime: Some(s.runtime.clone()),
                container_id: Some(s.id.clone()),
                kind: Some(Kind::Container),
                ..Workload::default()
            };
            if let Some(b) = &s.bundle {
                let a = runtime::parse_annotations(&runtime::bundle_annotations(b));
                w.container = a.container;
                w.namespace = a.namespace;
                w.pod = a.pod;
                w.image = a.image;
            }
            w
        };
        if !wanted(&probe_w) {
            return Ok(None);
        }
        let mut pids: Vec<u32> = s
            .pid
            .into_iter()
            .chain(s.other_pids.iter().copied())
            .collect();
        pids.extend(runtime::processes_left_in_v2_root(&v1));
        pids.sort_unstable();
        pids.dedup();
        let created = runtime::adopt(&self.root, &v1, &pids)?;
        // Processes forked meanwhile by one not yet moved: a second pass.
        let late = runtime::processes_left_in_v2_root(&v1);
        runtime::adopt(&self.root, &v1, &late)?;
        let was = self.adopted.insert(v1.clone(), created);
        if was.is_none() {
            info!(
                event = "adopted",
                container_id = %s.id,
                runtime = s.runtime.name(),
                cgroup = %v1,
                processes = pids.len() + late.len(),
                "hybrid cgroups: the runtime left the sandbox in the cgroup v2 root; sysfence placed it in a v2 cgroup of its own to police it"
            );
        }
        Ok(Some(v1))
    }

    /// Remove adopted cgroups whose sandbox is gone (only those this agent created).
    pub fn remove_empty_adopted(&mut self) {
        let root = self.root.clone();
        self.adopted.retain(|rel, created| {
            let dir = root.join(rel.as_str());
            let empty = std::fs::read_to_string(dir.join("cgroup.procs"))
                .map(|t| t.trim().is_empty())
                .unwrap_or(true);
            if !empty {
                return true;
            }
            if *created {
                let _ = std::fs::remove_dir(&dir);
                // Parents this agent may have created along the way stay: another
                // sandbox may be using them, and they cost nothing.
            }
            false
        });
    }

    /// The workload a cgroup id belongs to: its own entry, or for a cgroup below a
    /// container, the container's; also recently removed ones.
    pub fn describe(&self, cgroup_id: u64) -> Option<&Workload> {
        let own = self.workloads.get(&cgroup_id).or_else(|| {
            self.departed
                .iter()
                .rev()
                .find(|w| w.cgroup_id == cgroup_id)
        })?;
        if own.is_container() {
            return Some(own);
        }
        let mut path = own.cgroup_path.as_str();
        while let Some((parent, _)) = path.rsplit_once('/') {
            if let Some(w) = self
                .by_path
                .get(parent)
                .and_then(|id| self.workloads.get(id))
                && w.is_container()
            {
                return Some(w);
            }
            path = parent;
        }
        Some(own)
    }
}

/// Whether a cgroup holds no process (or cannot be read).
fn cgroup_is_empty(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.procs")).map_or(true, |t| t.trim().is_empty())
}

fn log_workload(w: &Workload) {
    info_workload!(
        w,
        event = "workload",
        kind = w.kind.map_or("", |k| match k {
            Kind::Container if w.sandbox_container => "pod-sandbox",
            Kind::Container => "container",
            Kind::Pod => "pod",
            Kind::Monitor => "runtime-monitor",
            Kind::Overhead => "runtime-overhead",
        }),
        runtime_handler = w.runtime_handler.as_deref().unwrap_or(""),
        engine = w.engine.map_or("", |e| e.name()),
        labels = %serde_json::to_string(&w.labels).unwrap_or_default(),
        adopted = w.adopted,
        note = w.runtime.as_ref().and_then(Runtime::sandbox_note).unwrap_or(""),
    );
}

/// Whether cgroup v1 controllers are mounted beside the v2 hierarchy at `v2_root`.
fn is_hybrid(v2_root: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines().any(|l| {
            l.split_once(" - ")
                .is_some_and(|(_, right)| right.split_whitespace().next() == Some("cgroup"))
        })
    }) && v2_root != Path::new("/sys/fs/cgroup")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory tree shaped like a cgroup v2 hierarchy (ids are inode numbers).
    fn tree(paths: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for p in paths {
            std::fs::create_dir_all(dir.path().join(p)).unwrap();
        }
        dir
    }

    fn index_of(root: &Path) -> CgroupIndex {
        CgroupIndex::new(IndexOptions {
            cgroup_root: root.to_path_buf(),
            cri_sockets: Some(Vec::new()),
            runtime_roots: Vec::new(),
        })
    }

    #[tokio::test]
    async fn a_rescan_indexes_every_cgroup_and_names_what_its_path_says() {
        let cid = "a".repeat(64);
        let container = format!("kubepods/besteffort/pod1234-5678/{cid}");
        let root = tree(&[&container, &format!("{container}/inner"), "system.slice"]);
        let mut index = index_of(root.path());
        index.rescan(&|_| false).await;
        let id = cgroup::id_of(&root.path().join(&container)).unwrap();
        let w = index.get(id).expect("indexed");
        assert_eq!(w.kind, Some(Kind::Container));
        assert_eq!(w.container_id.as_deref(), Some(cid.as_str()));
        assert_eq!(w.pod_uid.as_deref(), Some("1234-5678"));
        assert_eq!(index.id_of_path(&container), Some(id));
        // A cgroup below a container is described as that container.
        let inner = cgroup::id_of(&root.path().join(&container).join("inner")).unwrap();
        assert_eq!(index.describe(inner).map(|w| w.cgroup_id), Some(id));
        assert!(
            index
                .get(cgroup::id_of(&root.path().join("system.slice")).unwrap())
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_cgroup_that_went_away_still_names_its_late_events() {
        let root = tree(&["docker/abc"]);
        let mut index = index_of(root.path());
        index.rescan(&|_| false).await;
        let id = cgroup::id_of(&root.path().join("docker/abc")).unwrap();
        std::fs::remove_dir(root.path().join("docker/abc")).unwrap();
        index.rescan(&|_| false).await;
        assert!(index.get(id).is_none(), "gone from the table");
        assert_eq!(
            index.describe(id).map(|w| w.cgroup_path.as_str()),
            Some("docker/abc"),
            "kept among the departed"
        );
    }

    #[tokio::test]
    async fn only_the_runtimes_state_says_a_container_is_being_set_up() {
        let empty = format!("docker/{}", "e".repeat(64));
        let full = format!("docker/{}", "f".repeat(64));
        let root = tree(&[&full, &empty]);
        // A process whose name may claim to be runc's init: the index never reads it.
        std::fs::write(root.path().join(&full).join("cgroup.procs"), "4242\n").unwrap();
        let mut index = index_of(root.path());
        index.rescan(&|_| false).await;
        let busy = |rel: &str| {
            let id = cgroup::id_of(&root.path().join(rel)).unwrap();
            index.runtime_busy(index.get(id).unwrap())
        };
        assert!(
            !busy(&full),
            "a container with processes and no runtime state is bound"
        );
        assert!(busy(&empty), "an empty container cgroup waits for its init");
    }

    #[tokio::test]
    async fn a_container_id_from_a_cgroup_name_is_a_claim() {
        let root = tree(&[&format!("docker-{}.scope", "b".repeat(64))]);
        let mut index = index_of(root.path());
        index.rescan(&|_| false).await;
        let w = index
            .workloads()
            .values()
            .find(|w| w.container_id.is_some())
            .unwrap();
        assert!(!w.vouched, "no runtime state vouches for it");
        assert_eq!(
            w.runtime, None,
            "and no runtime is guessed from its processes"
        );
    }
}
